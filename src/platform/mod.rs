//! Browser adapters that are neither storage nor transport: time and ids,
//! the flush lock, connectivity, and the global scope. All reach the global
//! object through `js_sys::global()`, so they work in a window, a dedicated
//! worker and a service worker.

pub mod clock;
pub mod global;
pub mod locks;
