//! Levelled console logging: `[tidesync:<name>] message {details}`, with
//! structured objects passed to the console as objects, not string soup.

use wasm_bindgen::JsValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Silent,
}

impl LogLevel {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "warn" => Some(Self::Warn),
            "error" => Some(Self::Error),
            "silent" => Some(Self::Silent),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Logger {
    level: LogLevel,
    prefix: String,
    client: String,
}

impl Logger {
    pub fn new(name: &str, level: LogLevel) -> Self {
        Self {
            level,
            prefix: format!("[tidesync:{name}]"),
            client: name.to_owned(),
        }
    }

    /// The name of the client this logger speaks for.
    pub fn client(&self) -> &str {
        &self.client
    }

    pub fn log(&self, level: LogLevel, message: &str, details: Option<&JsValue>) {
        if level < self.level || level == LogLevel::Silent {
            return;
        }
        let line = JsValue::from_str(&format!("{} {message}", self.prefix));
        let details = details.cloned().unwrap_or(JsValue::UNDEFINED);
        match level {
            LogLevel::Debug => web_sys::console::debug_2(&line, &details),
            LogLevel::Info => web_sys::console::info_2(&line, &details),
            LogLevel::Warn => web_sys::console::warn_2(&line, &details),
            LogLevel::Error | LogLevel::Silent => web_sys::console::error_2(&line, &details),
        }
    }

    pub fn debug(&self, message: &str, details: Option<&JsValue>) {
        self.log(LogLevel::Debug, message, details)
    }

    pub fn warn(&self, message: &str, details: Option<&JsValue>) {
        self.log(LogLevel::Warn, message, details)
    }

    pub fn error(&self, message: &str, details: Option<&JsValue>) {
        self.log(LogLevel::Error, message, details)
    }
}
