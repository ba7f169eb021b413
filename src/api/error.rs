//! Errors at the JavaScript boundary: each becomes an `Error` whose `name`
//! is `TidesyncError` and whose `code` is a stable string users switch on.

use crate::engine::ports::StoreError;
use wasm_bindgen::JsValue;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidOptions(String),
    #[error("{0}")]
    InvalidTask(String),
    #[error("{0}")]
    InvalidEvent(String),
    #[error("{0}")]
    InvalidRecord(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("the client is closed; open a new one with SyncClient.open()")]
    Closed,
    /// A Rust panic stopped the module (see `api::guard`).
    #[error("Tidesync stopped after an internal error (logged to the console); reload the page to use it again, queued work is kept")]
    Halted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The stable `code` of the error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidOptions(_) => "invalid-options",
            ApiError::InvalidTask(_) => "invalid-task",
            ApiError::InvalidEvent(_) => "invalid-event",
            ApiError::InvalidRecord(_) => "invalid-record",
            ApiError::InvalidQuery(_) => "invalid-query",
            ApiError::Closed | ApiError::Halted => "closed",
            ApiError::Store(StoreError::Quota(_)) => "storage-quota",
            ApiError::Store(StoreError::Unavailable(_)) => "storage-unavailable",
            ApiError::Store(StoreError::Corrupt(_)) => "storage-corrupt",
        }
    }

    fn advice(&self) -> &'static str {
        match self {
            ApiError::Store(StoreError::Quota(_)) => {
                " Free space (discard failed tasks, clear old records) or call navigator.storage.persist(); nothing of this write was kept."
            }
            ApiError::Store(StoreError::Unavailable(_)) => {
                " IndexedDB is unavailable here (private mode, blocked by another tab's upgrade, or disabled), or the database was deleted under the client: it is opened again on the next call."
            }
            _ => "",
        }
    }
}

impl From<ApiError> for JsValue {
    fn from(error: ApiError) -> Self {
        tidesync_error(error.code(), &format!("{error}{}", error.advice()))
    }
}

/// Builds a `TidesyncError` (`name`, `code`, `message`).
pub fn tidesync_error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    error.set_name("TidesyncError");
    let _ = js_sys::Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code));
    error.into()
}
