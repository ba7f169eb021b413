//! Storage loss and quota at the JavaScript boundary: notices that the
//! database vanished — missing when the client opens though this browser
//! had opened it (the cookie mark of [`crate::platform::marker`]), or
//! deleted under the running client (its connection closed by the browser)
//! — reopens it, lets the engine write back what it holds and report
//! `storage:evicted`, and keeps `getHealth().storage` measured
//! (`navigator.storage.estimate()`, at most every [`ESTIMATE_EVERY_MS`]).

use crate::api::client::Inner;
use crate::engine::ports::EventSink;
use crate::engine::storage::{lost_on_open, StorageUsage};
use crate::engine::Event;
use crate::platform::{global, marker};
use js_sys::Promise;
use std::rc::{Rc, Weak};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::{spawn_local, JsFuture};

/// Reopening after a loss is tried this many times, 0.1 s, 0.2 s… apart.
const RECONNECT_ATTEMPTS: u32 = 8;

/// Estimates are cheap but not free: one per flush at most this often.
const ESTIMATE_EVERY_MS: f64 = 10_000.0;

/// Right after the client opened: a database created by this open while
/// the browser remembers having opened it was lost since the last visit
/// (reported once the app's listeners can hear it: after the `open()`
/// promise resolved); then watches for a loss while open.
pub(crate) fn after_open(inner: &Rc<Inner>) {
    let fresh = inner.outbox().store().created();
    if lost_on_open(fresh, marker::remembered(inner.name()).unwrap_or(false)) {
        let eviction = inner.outbox().note_lost_on_open();
        let events = inner.events.clone();
        gloo_timers::callback::Timeout::new(0, move || {
            events.emit(Event::StorageEvicted(eviction));
        })
        .forget();
    }
    marker::remember(inner.name());
    watch(inner);
    refresh_estimate(inner, true);
}

fn watch(inner: &Rc<Inner>) {
    let weak: Weak<Inner> = Rc::downgrade(inner);
    inner.outbox().store().watch_for_loss(move || {
        if let Some(inner) = weak.upgrade() {
            spawn_local(recover(inner));
        }
    });
}

/// The database was taken away (its connection closed by the browser,
/// deleted by a script, or found empty by the store's own reopen): open it
/// again; if it came back empty, the engine writes back the queue it holds
/// and reports the loss.
async fn recover(inner: Rc<Inner>) {
    if inner.ensure_open().is_err() {
        return;
    }
    // The deletion that closed the connection may still be running: an
    // open right away is aborted. Try again, a little later each time.
    let mut reopened = inner.outbox().store().reconnect().await;
    for attempt in 1..=RECONNECT_ATTEMPTS {
        if reopened.is_ok() || inner.ensure_open().is_err() {
            break;
        }
        gloo_timers::future::TimeoutFuture::new(100 * attempt).await;
        reopened = inner.outbox().store().reconnect().await;
    }
    let recovered = match reopened {
        Ok(true) => inner.outbox().recover_lost_store().await.map(|_| ()),
        Ok(false) => Ok(()),
        Err(error) => Err(error),
    };
    if let Err(error) = recovered {
        let message =
            format!("the database was closed by the browser and could not be restored: {error}");
        inner.events.logger().error(&message, None);
        // The store reopens the database on the next call, and reports a
        // loss it finds then: listen again, a little later (no busy loop
        // while the browser keeps refusing).
        let weak = Rc::downgrade(&inner);
        gloo_timers::callback::Timeout::new(1_000, move || {
            if let Some(inner) = weak.upgrade() {
                if inner.ensure_open().is_ok() {
                    watch(&inner);
                }
            }
        })
        .forget();
        return;
    }
    marker::remember(inner.name());
    watch(&inner);
    refresh_estimate(&inner, true);
}

/// Measures the origin's storage for `getHealth()` (unless it was measured
/// less than [`ESTIMATE_EVERY_MS`] ago, or `now`).
pub(crate) fn refresh_estimate(inner: &Rc<Inner>, now: bool) {
    let at = js_sys::Date::now();
    if !now && at - inner.estimated_at.get() < ESTIMATE_EVERY_MS {
        return;
    }
    inner.estimated_at.set(at);
    let inner = inner.clone();
    spawn_local(async move {
        if let Some(usage) = estimate().await {
            inner.outbox().note_storage(usage);
        }
    });
}

/// `navigator.storage.estimate()` and `persisted()`; `None` where the
/// browser has no Storage API.
pub(crate) async fn estimate() -> Option<StorageUsage> {
    let storage = global::prop(&global::get("navigator"), "storage");
    let pending = global::call(&storage, "estimate", &[]).ok()?;
    let estimate = JsFuture::from(Promise::from(pending)).await.ok()?;
    let persisted = match global::call(&storage, "persisted", &[]) {
        Ok(p) => JsFuture::from(Promise::from(p))
            .await
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        Err(_) => false,
    };
    let number = |name: &str| global::prop(&estimate, name).as_f64().unwrap_or(0.0);
    Some(StorageUsage::new(
        number("usage"),
        number("quota"),
        persisted,
    ))
}

/// What `getStorageEstimate()` resolves with.
pub(crate) async fn estimate_js() -> Result<JsValue, JsValue> {
    match estimate().await {
        Some(usage) => crate::api::client::to_js_value(&usage),
        None => Ok(JsValue::NULL),
    }
}
