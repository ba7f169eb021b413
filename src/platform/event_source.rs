//! The live stream's transport: the browser's `EventSource`, read as the
//! four events of Tidesync's stream (`ready`, `poke`, `heartbeat`,
//! `goodbye`) plus failure. It only translates; reconnection is decided in
//! [`crate::engine::live`], so on any error the source is closed rather
//! than left to the browser's own silent retries (whose ticket would have
//! expired anyway). Dropping a [`LiveSource`] closes it.

use crate::platform::global;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{EventSource, MessageEvent};

/// What the stream said.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Connected; the server's heartbeat period in ms.
    Ready {
        heartbeat: Option<f64>,
    },
    /// The tenant's cursor is now `cursor`.
    Poke {
        cursor: String,
    },
    Heartbeat,
    /// The server is ending the stream (`server-shutdown`, `token-expired`).
    Goodbye {
        reason: String,
    },
    /// The connection failed or was refused.
    Failed,
}

type Listener = Closure<dyn FnMut(JsValue)>;

pub struct LiveSource {
    source: EventSource,
    listeners: Vec<(&'static str, Listener)>,
}

/// Whether this scope has `EventSource` (service workers do not).
pub fn supported() -> bool {
    !global::get("EventSource").is_undefined()
}

fn field(data: &JsValue, name: &str) -> JsValue {
    let parsed = data
        .as_string()
        .and_then(|text| js_sys::JSON::parse(&text).ok())
        .unwrap_or(JsValue::UNDEFINED);
    global::prop(&parsed, name)
}

impl LiveSource {
    /// Opens `url` and calls `on_event` for each event, until dropped.
    pub fn open(url: &str, on_event: Rc<dyn Fn(StreamEvent)>) -> Result<Self, JsValue> {
        let source = EventSource::new(url)?;
        let mut listeners = Vec::new();
        for name in ["ready", "poke", "heartbeat", "goodbye", "error"] {
            let on_event = on_event.clone();
            let listener = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                let data = event
                    .dyn_ref::<MessageEvent>()
                    .map(MessageEvent::data)
                    .unwrap_or(JsValue::UNDEFINED);
                on_event(match name {
                    "ready" => StreamEvent::Ready {
                        heartbeat: field(&data, "heartbeat").as_f64(),
                    },
                    "poke" => StreamEvent::Poke {
                        cursor: field(&data, "cursor").as_string().unwrap_or_default(),
                    },
                    "heartbeat" => StreamEvent::Heartbeat,
                    "goodbye" => StreamEvent::Goodbye {
                        reason: field(&data, "reason").as_string().unwrap_or_default(),
                    },
                    _ => StreamEvent::Failed,
                });
            });
            source.add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())?;
            listeners.push((name, listener));
        }
        Ok(Self { source, listeners })
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.source.close();
        for (name, listener) in &self.listeners {
            let _ = self
                .source
                .remove_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
        }
    }
}
