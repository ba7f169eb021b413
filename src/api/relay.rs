//! Task outcomes across realms. A page and its service worker (or two tabs)
//! open clients of one database, and whichever holds the flush lock sends a
//! task; its `sync:complete` / `sync:failed` would reach only that realm's
//! listeners. So a client posts the outcome of each plain request task on
//! its channel (`tidesync:<name>`, shared with the inspector) as
//! `{type: "outcome", event, args}`, and every other client of the database
//! hands it to its own listeners: each client hears every task's outcome
//! once, whichever realm sent it — a page learns the answer to a request its
//! service worker captured and replayed. Replicated mutations are not relayed:
//! their records change in the shared database, which every client reads.

use crate::api::client::Inner;
use crate::engine::events::Event;
use crate::engine::task::TaskKind;
use crate::platform::global;
use js_sys::{Array, Object, Reflect};
use wasm_bindgen::JsValue;

/// Posts a plain request task's outcome for the database's other clients.
pub(crate) fn post(client: &str, event: &Event, args: &[JsValue]) {
    let kind = match event {
        Event::Complete { task, .. } => task.kind,
        Event::Failed { failed, .. } => failed.task.kind,
        _ => return,
    };
    if kind != TaskKind::Request {
        return;
    }
    let message = Object::new();
    let _ = Reflect::set(&message, &"type".into(), &"outcome".into());
    let _ = Reflect::set(&message, &"event".into(), &JsValue::from_str(event.name()));
    let _ = Reflect::set(&message, &"args".into(), &args.iter().collect::<Array>());
    crate::api::devtools::broadcast(client, &message.into());
}

/// Hands an outcome posted by another client to this client's listeners.
pub(crate) fn receive(inner: &Inner, data: &JsValue) {
    let name = global::prop(data, "event").as_string().unwrap_or_default();
    if name != "sync:complete" && name != "sync:failed" {
        return;
    }
    let args = global::prop(data, "args");
    if !Array::is_array(&args) {
        return;
    }
    let args: Vec<JsValue> = Array::from(&args).iter().collect();
    inner.events.dispatch(&name, &args);
}
