//! An event listener that is removed when its handle is dropped (as
//! gloo-events does): a client, its live link and its inspector hold the
//! handles and drop them on close, instead of keeping closures in a vector
//! and removing each by hand.

use crate::platform::global;
use wasm_bindgen::prelude::*;

/// `target.addEventListener(name, callback)` until dropped.
pub struct EventListener {
    target: JsValue,
    name: &'static str,
    callback: Closure<dyn FnMut(JsValue)>,
}

impl EventListener {
    /// Listens to `name` on `target`; `None` when the target has no
    /// `addEventListener` (or it threw), so there is nothing to remove.
    pub fn new(
        target: &JsValue,
        name: &'static str,
        callback: impl FnMut(JsValue) + 'static,
    ) -> Option<Self> {
        let callback = Closure::<dyn FnMut(JsValue)>::new(callback);
        global::call(
            target,
            "addEventListener",
            &[JsValue::from_str(name), callback.as_ref().clone()],
        )
        .ok()?;
        Some(Self {
            target: target.clone(),
            name,
            callback,
        })
    }

    /// Listens to `name` on the global scope (a window or a worker).
    pub fn on_global(name: &'static str, callback: impl FnMut(JsValue) + 'static) -> Option<Self> {
        Self::new(&global::global(), name, callback)
    }
}

impl Drop for EventListener {
    fn drop(&mut self) {
        let _ = global::call(
            &self.target,
            "removeEventListener",
            &[JsValue::from_str(self.name), self.callback.as_ref().clone()],
        );
    }
}
