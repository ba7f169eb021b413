//! What a person sees in DevTools: `performance.measure` entries named
//! `tidesync:flush` (Performance panel), and the console hook
//! `globalThis.__TIDESYNC__ = {version, clients: Map(name → inspector)}`.

use crate::api::client::Inner;
use crate::engine::outbox::FlushReport;
use crate::platform::global;
use crate::store::idb::to_js;
use js_sys::{Map, Object, Reflect};
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

pub fn performance_now() -> f64 {
    global::prop(&global::get("performance"), "now")
        .dyn_into::<js_sys::Function>()
        .ok()
        .and_then(|f| f.call0(&global::get("performance")).ok())
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}

/// Records a `performance.measure(name, {start, end, detail})` entry.
pub fn measure(name: &str, start: f64, client: &str, report: &FlushReport) {
    let performance = global::get("performance");
    if performance.is_undefined() {
        return;
    }
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        client: &'a str,
        sent: usize,
        completed: usize,
        failed: usize,
        retried: usize,
        remaining: usize,
    }
    let detail = to_js(&Detail {
        client,
        sent: report.sent,
        completed: report.completed,
        failed: report.failed,
        retried: report.retried,
        remaining: report.remaining,
    })
    .unwrap_or(JsValue::UNDEFINED);
    let options = Object::new();
    let _ = Reflect::set(&options, &"start".into(), &start.into());
    let _ = Reflect::set(&options, &"end".into(), &performance_now().into());
    let _ = Reflect::set(&options, &"detail".into(), &detail);
    let _ = global::call(
        &performance,
        "measure",
        &[JsValue::from_str(name), options.into()],
    );
}

fn hook() -> Option<Map> {
    let global_object = global::global();
    let key = JsValue::from_str("__TIDESYNC__");
    let mut existing = Reflect::get(&global_object, &key).unwrap_or(JsValue::UNDEFINED);
    if existing.is_undefined() {
        let object = Object::new();
        let _ = Reflect::set(
            &object,
            &"version".into(),
            &JsValue::from_str(crate::VERSION),
        );
        let _ = Reflect::set(&object, &"clients".into(), &Map::new());
        let _ = Reflect::set(&global_object, &key, &object);
        existing = object.into();
    }
    global::prop(&existing, "clients").dyn_into::<Map>().ok()
}

fn method(
    target: &Object,
    name: &str,
    f: impl Fn(&Rc<Inner>) -> JsValue + 'static,
    weak: Weak<Inner>,
) {
    let closure = Closure::<dyn Fn() -> JsValue>::new(move || match weak.upgrade() {
        Some(inner) => f(&inner),
        None => JsValue::UNDEFINED,
    });
    let _ = Reflect::set(target, &JsValue::from_str(name), &closure.into_js_value());
}

/// Adds a client to `__TIDESYNC__.clients` for console inspection.
pub(crate) fn register_client(inner: &Rc<Inner>) {
    let Some(clients) = hook() else { return };
    let entry = Object::new();
    let weak = Rc::downgrade(inner);
    method(
        &entry,
        "status",
        |i| to_js(&i.outbox().status()).unwrap_or_default(),
        weak.clone(),
    );
    method(
        &entry,
        "tasks",
        |i| to_js(&i.outbox().queued_tasks()).unwrap_or_default(),
        weak.clone(),
    );
    method(
        &entry,
        "metrics",
        |i| to_js(&i.outbox().metrics()).unwrap_or_default(),
        weak.clone(),
    );
    method(
        &entry,
        "health",
        |i| to_js(&i.outbox().health()).unwrap_or_default(),
        weak.clone(),
    );
    method(
        &entry,
        "failed",
        |i| {
            let inner = i.clone();
            future_to_promise(async move {
                let failed = inner
                    .outbox()
                    .list_failed()
                    .await
                    .map_err(|e| JsValue::from_str(&e.to_string()))?;
                Ok(to_js(&failed).unwrap_or_default())
            })
            .into()
        },
        weak,
    );
    clients.set(&JsValue::from_str(inner.name()), &entry);
}

pub(crate) fn unregister_client(name: &str) {
    if let Some(clients) = hook() {
        clients.delete(&JsValue::from_str(name));
    }
}
