//! Browser adapters that are neither storage nor transport: time and ids,
//! the flush and live locks, the live stream's `EventSource`, connectivity,
//! and the global scope. All reach the global object through
//! `js_sys::global()`, so they work in a window, a dedicated worker and a
//! service worker (which has no `EventSource`).

pub mod clock;
pub mod event_source;
pub mod global;
pub mod listener;
pub mod locks;
pub mod marker;
