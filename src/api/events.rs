//! Engine events to JavaScript listeners. Each event name maps to a fixed
//! argument list (typed in the `.d.ts`); a listener that throws is logged
//! and does not stop the engine or the other listeners.

use crate::api::log::Logger;
use crate::engine::events::Event;
use crate::engine::ports::EventSink;
use crate::engine::task::ResponseBody;
use crate::engine::time::to_iso;
use crate::store::idb::to_js;
use js_sys::Function;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use wasm_bindgen::JsValue;

/// Every event name `on()` accepts.
pub const EVENT_NAMES: &[&str] = &[
    "sync:complete",
    "sync:failed",
    "sync:retry",
    "sync:conflict",
    "sync:progress",
    "status",
    "online",
    "offline",
    "circuit:open",
    "circuit:close",
    "auth:required",
    "pull:complete",
    "live:open",
    "live:closed",
    "storage:evicted",
];

pub struct JsEvents {
    listeners: RefCell<Vec<(u32, String, Function)>>,
    next_id: Cell<u32>,
    logger: Logger,
}

impl JsEvents {
    pub fn new(logger: Logger) -> Self {
        Self {
            listeners: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
            logger,
        }
    }

    pub fn add(&self, name: &str, listener: Function) -> u32 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.listeners
            .borrow_mut()
            .push((id, name.to_owned(), listener));
        id
    }

    pub fn remove(&self, id: u32) {
        self.listeners.borrow_mut().retain(|(lid, _, _)| *lid != id);
    }

    /// Calls every listener of `name` with `args`.
    pub fn dispatch(&self, name: &str, args: &[JsValue]) {
        // Clone first: a listener may subscribe or unsubscribe while called.
        let targets: Vec<Function> = self
            .listeners
            .borrow()
            .iter()
            .filter(|(_, n, _)| n == name)
            .map(|(_, _, f)| f.clone())
            .collect();
        let array = js_sys::Array::new();
        for arg in args {
            array.push(arg);
        }
        for listener in targets {
            if let Err(thrown) = listener.apply(&JsValue::NULL, &array) {
                self.logger.error(
                    &format!("a \"{name}\" listener threw; the engine goes on"),
                    Some(&thrown),
                );
            }
        }
    }

    pub fn logger(&self) -> &Logger {
        &self.logger
    }
}

fn js<T: Serialize + ?Sized>(value: &T) -> JsValue {
    to_js(value).unwrap_or(JsValue::UNDEFINED)
}

fn response_body(body: &ResponseBody) -> JsValue {
    match body {
        ResponseBody::Empty => JsValue::NULL,
        ResponseBody::Json(value) => js(value),
        ResponseBody::Text(text) => JsValue::from_str(text),
    }
}

/// The listener arguments of an engine event.
pub fn event_args(event: &Event) -> Vec<JsValue> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Retry<'a> {
        error: &'a crate::engine::task::TaskError,
        delay: f64,
        attempt: u32,
        next_attempt_at: Option<String>,
    }
    match event {
        Event::Complete { task, response } => {
            let object = js_sys::Object::new();
            let _ =
                js_sys::Reflect::set(&object, &"status".into(), &JsValue::from(response.status));
            let _ = js_sys::Reflect::set(&object, &"headers".into(), &js(&response.headers));
            let _ = js_sys::Reflect::set(&object, &"body".into(), &response_body(&response.body));
            vec![js(task), object.into()]
        }
        Event::Failed { failed, error } => {
            let error_value = js(error);
            let _ = js_sys::Reflect::set(
                &error_value,
                &"reason".into(),
                &JsValue::from_str(&failed.reason),
            );
            vec![js(&failed.task), error_value]
        }
        Event::Retry { task, error, delay } => vec![
            js(task),
            js(&Retry {
                error,
                delay: *delay,
                attempt: task.attempts,
                next_attempt_at: task.next_attempt_at.map(to_iso),
            }),
        ],
        Event::Progress { phase, done, total } => {
            #[derive(Serialize)]
            struct Progress<'a> {
                phase: &'a str,
                done: usize,
                total: usize,
            }
            vec![js(&Progress {
                phase,
                done: *done,
                total: *total,
            })]
        }
        Event::Status(status) => vec![js(status)],
        Event::Online | Event::Offline | Event::CircuitClose => vec![],
        Event::CircuitOpen { until, cooldown } => {
            #[derive(Serialize)]
            struct Open {
                until: String,
                cooldown: f64,
            }
            vec![js(&Open {
                until: to_iso(*until),
                cooldown: *cooldown,
            })]
        }
        Event::Conflict(conflict) => vec![js(conflict)],
        Event::StorageEvicted(eviction) => vec![js(eviction)],
        Event::PullComplete {
            pulled,
            pages,
            conflicts,
        } => {
            #[derive(Serialize)]
            struct Pulled {
                pulled: usize,
                pages: usize,
                conflicts: usize,
            }
            vec![js(&Pulled {
                pulled: *pulled,
                pages: *pages,
                conflicts: *conflicts,
            })]
        }
        Event::AuthRequired { status, task_id } => {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Auth<'a> {
                status: Option<u16>,
                task_id: &'a str,
            }
            vec![js(&Auth {
                status: *status,
                task_id,
            })]
        }
    }
}

impl EventSink for JsEvents {
    fn emit(&self, event: Event) {
        let name = event.name();
        let args = event_args(&event);
        match &event {
            Event::Failed { .. }
            | Event::AuthRequired { .. }
            | Event::CircuitOpen { .. }
            | Event::StorageEvicted(_) => self.logger.warn(name, args.first()),
            Event::Progress { .. } | Event::Status(_) => {}
            _ => self.logger.debug(name, args.first()),
        }
        self.dispatch(name, &args);
        crate::api::relay::post(self.logger.client(), &event, &args);
        crate::api::devtools::on_event(self.logger.client(), &event);
    }
}
