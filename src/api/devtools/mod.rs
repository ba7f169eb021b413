//! What a person sees in DevTools and in `www/inspector.html`:
//!
//! - `performance.measure` entries named `tidesync:flush` (and
//!   `tidesync:push` / `tidesync:pull` through [`measure_phase`]) with task
//!   counts in `detail`, shown in the Performance panel's Timings track;
//! - the console hook `globalThis.__TIDESYNC__ = {version, clients: Map(name →
//!   {status(), tasks(), failed(), metrics(), health(), snapshot()})}`;
//! - a `BroadcastChannel("tidesync:<name>")` per client on which the client
//!   posts `{type: "snapshot", …}` when its state changes (throttled to one
//!   every [`THROTTLE_MS`], plus one at the end of every flush), answers
//!   `{type: "hello"}` at once, and obeys `{type: "retryFailed", id}` and
//!   `{type: "discardFailed", id}`. The inspector page in another tab needs
//!   nothing else: no shared memory, no polling of IndexedDB. The feed is
//!   [`inspector`]; what it shows of the outbox is the engine's
//!   [`crate::engine::outbox::inspect::Inspection`].

mod inspector;

use inspector::{inspector, open_inspector};

use crate::api::client::Inner;
use crate::api::log::LogLevel;
use crate::engine::events::Event;
use crate::engine::outbox::FlushReport;
use crate::platform::global;
use crate::store::idb::to_js;
use js_sys::{Map, Object, Reflect};
use serde::Serialize;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;

/// At most one change-driven snapshot per this many milliseconds.
pub const THROTTLE_MS: f64 = 150.0;

pub fn performance_now() -> f64 {
    global::prop(&global::get("performance"), "now")
        .dyn_into::<js_sys::Function>()
        .ok()
        .and_then(|f| f.call0(&global::get("performance")).ok())
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}

/// Records `performance.measure(name, {start, end: now, detail})` for one
/// phase of a sync cycle, so it shows in DevTools → Performance → Timings.
///
/// - `name`: `"tidesync:push"`, `"tidesync:pull"` (or `"tidesync:flush"`);
/// - `start`: [`performance_now`] taken when the phase began;
/// - `client`: the client's name, added to `detail` as `client`;
/// - `detail`: a plain object of counts (e.g. `{records: 12, batches: 1}`);
///   it is copied, not modified. Anything else is replaced by `{client}`.
///
/// Never fails: where `performance` is missing it records nothing. The end
/// of a phase is also logged (`[tidesync:<name>] push {…}` at `info`; an
/// idle flush at `debug`) and refreshes the client's inspector snapshot
/// (throttled; at once for a flush).
pub fn measure_phase(name: &str, start: f64, client: &str, detail: &JsValue) {
    let copy = Object::new();
    if detail.is_object() {
        if let Some(object) = detail.dyn_ref::<Object>() {
            Object::assign(&copy, object);
        }
    }
    let _ = Reflect::set(&copy, &"client".into(), &JsValue::from_str(client));
    let detail: JsValue = copy.into();
    record_measure(name, start, &detail);
    if let Some(inspector) = inspector(client) {
        if let Some(inner) = inspector.inner.upgrade() {
            // `[tidesync:<name>] flush {client, sent, …}`: at info when the
            // phase did something, at debug for an idle flush.
            let idle = name == "tidesync:flush"
                && Reflect::get(&detail, &"sent".into())
                    .ok()
                    .and_then(|v| v.as_f64())
                    == Some(0.0);
            let level = if idle {
                LogLevel::Debug
            } else {
                LogLevel::Info
            };
            let phase = name.strip_prefix("tidesync:").unwrap_or(name);
            inner.events.logger().log(level, phase, Some(&detail));
        }
        if name == "tidesync:flush" {
            if inspector.observed.get() {
                inspector.post_now();
            }
        } else {
            inspector.schedule();
        }
    }
}

/// The `tidesync:flush` entry after each flush, with the flush's counts in
/// `detail`; also posts a fresh snapshot to the inspector at once.
pub fn measure(name: &str, start: f64, client: &str, report: &FlushReport) {
    #[derive(Serialize)]
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
    measure_phase(name, start, client, &detail);
}

fn record_measure(name: &str, start: f64, detail: &JsValue) {
    let performance = global::get("performance");
    if performance.is_undefined() {
        return;
    }
    let options = Object::new();
    let _ = Reflect::set(&options, &"start".into(), &start.into());
    let _ = Reflect::set(&options, &"end".into(), &performance_now().into());
    let _ = Reflect::set(&options, &"detail".into(), detail);
    let _ = global::call(
        &performance,
        "measure",
        &[JsValue::from_str(name), options.into()],
    );
}

/// Called for every engine event of the client `client` (from
/// `JsEvents::emit`): schedules a throttled snapshot. It must not touch the
/// outbox synchronously, since the engine may be mid-update.
pub(crate) fn on_event(client: &str, event: &Event) {
    let Some(inspector) = inspector(client) else {
        return;
    };
    if matches!(event, Event::Failed { .. }) {
        inspector.failed.borrow_mut().take();
    }
    inspector.schedule();
}

/// The client's state changed without an engine event (a registration,
/// which emits none while offline): schedules a throttled snapshot.
pub(crate) fn changed(client: &str) {
    if let Some(inspector) = inspector(client) {
        inspector.schedule();
    }
}

// ----- the console hook -----

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
    let closure = Closure::<dyn Fn() -> Result<JsValue, JsValue>>::new(move || {
        crate::api::guard::check()?;
        Ok(match weak.upgrade() {
            Some(inner) => f(&inner),
            None => JsValue::UNDEFINED,
        })
    });
    let _ = Reflect::set(target, &JsValue::from_str(name), &closure.into_js_value());
}

/// Adds a client to `__TIDESYNC__.clients` for console inspection and opens
/// its inspector channel.
pub(crate) fn register_client(inner: &Rc<Inner>) {
    open_inspector(inner);
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
            crate::api::guard::promise(async move {
                let failed = inner
                    .outbox()
                    .list_failed()
                    .await
                    .map_err(crate::api::client::store_error)?;
                Ok(to_js(&failed).unwrap_or_default())
            })
            .into()
        },
        weak.clone(),
    );
    method(
        &entry,
        "snapshot",
        |i| {
            let name = i.name().to_owned();
            crate::api::guard::promise(async move {
                match inspector(&name) {
                    Some(inspector) => Ok(inspector.snapshot().await.unwrap_or_default()),
                    None => Ok(JsValue::UNDEFINED),
                }
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
    let removed = inspector::remove(name);
    if let Some(inspector) = removed {
        inspector.send_closed("close");
        inspector.shut();
    }
}

/// Posts `message` on the client's channel (see [`crate::api::relay`]).
pub(crate) fn broadcast(client: &str, message: &JsValue) {
    if let Some(inspector) = inspector(client) {
        inspector.send(message);
    }
}
