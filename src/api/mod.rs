//! The JavaScript surface: the only layer that knows JavaScript names. It
//! validates options, translates between JS values and engine types, turns
//! engine events into listener calls, and maps errors to `TidesyncError`
//! with a stable `code`. It converts and delegates; it does not decide.

mod capture;
mod client;
mod devtools;
mod error;
mod events;
mod guard;
mod input;
mod live;
mod log;
mod options;
mod relay;
mod replication;
mod storage;
mod typescript;

pub use client::SyncClient;
pub use error::ApiError;

use wasm_bindgen::prelude::*;

/// The SDK's version, e.g. `"0.1.0"`.
#[wasm_bindgen]
pub fn version() -> String {
    crate::VERSION.to_owned()
}
