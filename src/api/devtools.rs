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
//!   nothing else: no shared memory, no polling of IndexedDB.

use crate::api::client::Inner;
use crate::api::log::LogLevel;
use crate::engine::events::{Event, Health, Metrics, Status, TaskState};
use crate::engine::outbox::FlushReport;
use crate::engine::ports::Clock;
use crate::engine::task::{FailedTask, Task, TaskError};
use crate::engine::time::to_iso;
use crate::platform::global;
use crate::store::idb::to_js;
use futures::FutureExt;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Map, Object, Reflect};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::{BroadcastChannel, MessageEvent};

/// At most one change-driven snapshot per this many milliseconds.
pub const THROTTLE_MS: f64 = 150.0;

/// Tasks listed per priority (and dead letters) in a snapshot; the counts
/// are always complete.
const LIST_LIMIT: usize = 100;

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
    let removed = INSPECTORS.with(|all| all.borrow_mut().remove(name));
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

// ----- the BroadcastChannel inspector feed -----

thread_local! {
    static INSPECTORS: RefCell<HashMap<String, Rc<Inspector>>> = RefCell::new(HashMap::new());
}

fn inspector(client: &str) -> Option<Rc<Inspector>> {
    INSPECTORS.with(|all| all.borrow().get(client).cloned())
}

type MessageListener = Closure<dyn FnMut(MessageEvent)>;
type PageListener = (&'static str, Closure<dyn FnMut(JsValue)>);

/// One client's channel: throttling state and a cache of its dead letters
/// (re-read from IndexedDB only when their count changes or a task fails).
struct Inspector {
    name: String,
    /// Tells apart two contexts (a page and its worker) with the same client.
    instance: String,
    inner: Weak<Inner>,
    /// `None` where the scope has no BroadcastChannel: no live inspector,
    /// but the phase logs still find their client here.
    channel: Option<BroadcastChannel>,
    on_message: RefCell<Option<MessageListener>>,
    /// `pagehide`/`pageshow` on a window: the inspector learns that the
    /// page went away (or came back from the back/forward cache).
    page_listeners: RefCell<Vec<PageListener>>,
    pending: Cell<bool>,
    /// An inspector said hello: from then on every change is posted. Until
    /// then only the announcement at open is, so an app nobody inspects
    /// pays nothing for snapshots (they read the whole queue).
    observed: Cell<bool>,
    last_post: Cell<f64>,
    seq: Cell<u64>,
    failed: RefCell<Option<Vec<FailedTask>>>,
    shut: Cell<bool>,
}

fn open_inspector(inner: &Rc<Inner>) {
    let channel = BroadcastChannel::new(&format!("tidesync:{}", inner.name())).ok();
    let inspector = Rc::new(Inspector {
        name: inner.name().to_owned(),
        instance: inner.outbox().clock().unique_id(),
        inner: Rc::downgrade(inner),
        channel,
        on_message: RefCell::new(None),
        page_listeners: RefCell::new(Vec::new()),
        pending: Cell::new(false),
        observed: Cell::new(false),
        last_post: Cell::new(0.0),
        seq: Cell::new(0),
        failed: RefCell::new(None),
        shut: Cell::new(false),
    });
    let weak = Rc::downgrade(&inspector);
    let listener = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        if let Some(inspector) = weak.upgrade() {
            inspector.on_message(event.data());
        }
    });
    if let Some(channel) = &inspector.channel {
        channel.set_onmessage(Some(listener.as_ref().unchecked_ref()));
        *inspector.on_message.borrow_mut() = Some(listener);
        if global::is_window() {
            listen_to_page(&inspector);
        }
    }
    let previous = INSPECTORS.with(|all| {
        all.borrow_mut()
            .insert(inspector.name.clone(), inspector.clone())
    });
    if let Some(previous) = previous {
        previous.shut();
    }
    inspector.post_now();
}

fn listen_to_page(inspector: &Rc<Inspector>) {
    let target = global::global();
    for name in ["pagehide", "pageshow"] {
        let weak = Rc::downgrade(inspector);
        let listener = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let Some(inspector) = weak.upgrade() else {
                return;
            };
            if name == "pagehide" {
                inspector.send_closed("pagehide");
            } else if global::prop(&event, "persisted").as_bool() == Some(true) {
                inspector.post_now(); // back from the back/forward cache
            }
        });
        if global::call(
            &target,
            "addEventListener",
            &[JsValue::from_str(name), listener.as_ref().clone()],
        )
        .is_ok()
        {
            inspector.page_listeners.borrow_mut().push((name, listener));
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskView<'a> {
    id: &'a str,
    priority: &'static str,
    method: &'a str,
    url: &'a str,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ordering_key: Option<&'a str>,
    next_attempt_at: Option<String>,
    last_error: Option<&'a TaskError>,
    created_at: String,
}

impl<'a> TaskView<'a> {
    fn of(task: &'a Task) -> Self {
        Self {
            id: &task.id,
            priority: task.priority.as_str(),
            method: &task.request.method,
            url: &task.request.url,
            attempts: task.attempts,
            ordering_key: task.ordering_key.as_deref(),
            next_attempt_at: task.next_attempt_at.map(to_iso),
            last_error: task.last_error(),
            created_at: to_iso(task.created_at),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FailedView<'a> {
    id: &'a str,
    priority: &'static str,
    method: &'a str,
    url: &'a str,
    attempts: u32,
    reason: &'a str,
    failed_at: String,
    errors: &'a [TaskError],
}

#[derive(Serialize, Default)]
struct ByPriority<T> {
    high: T,
    normal: T,
    low: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    instance: &'a str,
    scope: &'static str,
    version: &'static str,
    seq: u64,
    at: String,
    status: &'a Status,
    online: bool,
    circuit: &'static str,
    auth_required: bool,
    queued: ByPriority<Vec<TaskView<'a>>>,
    queued_counts: ByPriority<usize>,
    in_flight: Vec<TaskView<'a>>,
    failed: Vec<FailedView<'a>>,
    failed_count: usize,
    metrics: &'a Metrics,
    health: &'a Health,
}

impl Drop for Inspector {
    fn drop(&mut self) {
        self.shut();
    }
}

impl Inspector {
    fn shut(&self) {
        if self.shut.replace(true) {
            return;
        }
        if let Some(channel) = &self.channel {
            channel.set_onmessage(None);
            channel.close();
        }
        self.on_message.borrow_mut().take();
        let target = global::global();
        for (name, listener) in self.page_listeners.borrow_mut().drain(..) {
            let _ = global::call(
                &target,
                "removeEventListener",
                &[JsValue::from_str(name), listener.as_ref().clone()],
            );
        }
    }

    /// `{type: "closed", name, instance, reason, at}`: the client was closed
    /// (`reason: "close"`) or its page is going away (`"pagehide"`).
    fn send_closed(&self, reason: &str) {
        #[derive(Serialize)]
        struct Closed<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            name: &'a str,
            instance: &'a str,
            reason: &'a str,
            at: String,
        }
        if let Ok(message) = to_js(&Closed {
            kind: "closed",
            name: &self.name,
            instance: &self.instance,
            reason,
            at: to_iso(js_sys::Date::now()),
        }) {
            self.send(&message);
        }
    }

    fn send(&self, message: &JsValue) {
        if let (Some(channel), false) = (&self.channel, self.shut.get()) {
            let _ = channel.post_message(message);
        }
    }

    /// A snapshot after at most [`THROTTLE_MS`] since the previous one;
    /// changes in the meantime fold into it.
    fn schedule(self: &Rc<Self>) {
        if !self.observed.get()
            || self.channel.is_none()
            || self.shut.get()
            || self.pending.replace(true)
        {
            return;
        }
        let wait =
            (self.last_post.get() + THROTTLE_MS - js_sys::Date::now()).clamp(0.0, THROTTLE_MS);
        let weak = Rc::downgrade(self);
        spawn_local(async move {
            TimeoutFuture::new(wait as u32).await;
            if let Some(inspector) = weak.upgrade() {
                inspector.pending.set(false);
                inspector.post().await;
            }
        });
    }

    fn post_now(self: &Rc<Self>) {
        let inspector = self.clone();
        spawn_local(async move { inspector.post().await });
    }

    async fn post(&self) {
        if self.channel.is_none() || self.shut.get() {
            return;
        }
        let Some(snapshot) = self.snapshot().await else {
            return;
        };
        if self.shut.get() {
            return;
        }
        self.last_post.set(js_sys::Date::now());
        self.send(&snapshot);
    }

    async fn failed_tasks(&self, inner: &Inner, expected: usize) -> Vec<FailedTask> {
        let cached = self.failed.borrow().clone();
        if let Some(cached) = cached.as_ref().filter(|c| c.len() == expected) {
            return cached.clone();
        }
        match inner.outbox().list_failed().await {
            Ok(list) => {
                *self.failed.borrow_mut() = Some(list.clone());
                list
            }
            Err(_) => cached.unwrap_or_default(),
        }
    }

    async fn snapshot(&self) -> Option<JsValue> {
        let inner = self.inner.upgrade()?;
        let expected_failed = inner.outbox().status().failed_count as usize;
        let failed = self.failed_tasks(&inner, expected_failed).await;
        // Everything below is read in one go, without awaiting, so the
        // snapshot is consistent.
        let outbox = inner.outbox();
        let status = outbox.status();
        let metrics = outbox.metrics();
        let health = outbox.health();
        let tasks = outbox.queued_tasks();
        let mut queued: ByPriority<Vec<TaskView>> = ByPriority::default();
        let mut counts: ByPriority<usize> = ByPriority::default();
        let mut in_flight = Vec::new();
        for task in &tasks {
            // A queued task's status is answered from memory (ready at
            // once); anything that would need the store counts as pending.
            let state = outbox
                .task_status(&task.id)
                .now_or_never()
                .and_then(|r| r.ok().flatten())
                .map(|s| s.state);
            if state == Some(TaskState::InFlight) {
                in_flight.push(TaskView::of(task));
                continue;
            }
            let (list, count) = match task.priority {
                crate::engine::task::Priority::High => (&mut queued.high, &mut counts.high),
                crate::engine::task::Priority::Normal => (&mut queued.normal, &mut counts.normal),
                crate::engine::task::Priority::Low => (&mut queued.low, &mut counts.low),
            };
            *count += 1;
            if list.len() < LIST_LIMIT {
                list.push(TaskView::of(task));
            }
        }
        let failed_views = failed
            .iter()
            .take(LIST_LIMIT)
            .map(|f| FailedView {
                id: &f.id,
                priority: f.task.priority.as_str(),
                method: &f.task.request.method,
                url: &f.task.request.url,
                attempts: f.task.attempts,
                reason: &f.reason,
                failed_at: to_iso(f.failed_at),
                errors: &f.task.errors,
            })
            .collect();
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        to_js(&Snapshot {
            kind: "snapshot",
            name: &self.name,
            instance: &self.instance,
            scope: if global::is_window() {
                "window"
            } else {
                "worker"
            },
            version: crate::VERSION,
            seq,
            at: to_iso(js_sys::Date::now()),
            status: &status,
            online: status.online,
            circuit: status.circuit,
            auth_required: status.auth_required,
            queued,
            queued_counts: counts,
            in_flight,
            failed: failed_views,
            failed_count: failed.len().max(status.failed_count as usize),
            metrics: &metrics,
            health: &health,
        })
        .ok()
    }

    fn on_message(self: &Rc<Self>, data: JsValue) {
        if crate::api::guard::halted() {
            return;
        }
        let kind = global::prop(&data, "type").as_string().unwrap_or_default();
        match kind.as_str() {
            "hello" => {
                self.observed.set(true);
                self.post_now();
            }
            "outcome" => {
                if let Some(inner) = self.inner.upgrade() {
                    crate::api::relay::receive(&inner, &data);
                }
            }
            "retryFailed" | "discardFailed" => {
                let Some(id) = global::prop(&data, "id").as_string() else {
                    return;
                };
                let inspector = self.clone();
                spawn_local(async move { inspector.command(&kind, &id).await });
            }
            _ => {}
        }
    }

    /// Runs a command from the inspector, answers `{type: "commandResult",
    /// command, id, ok, error?}`, then posts a fresh snapshot.
    async fn command(self: &Rc<Self>, command: &str, id: &str) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let result = if command == "retryFailed" {
            inner.outbox().retry_failed(id).await.inspect(|requeued| {
                if *requeued {
                    inner.flush_soon();
                }
            })
        } else {
            inner.outbox().discard_failed(id).await
        };
        self.failed.borrow_mut().take();
        #[derive(Serialize)]
        struct Answer<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            name: &'a str,
            instance: &'a str,
            command: &'a str,
            id: &'a str,
            ok: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<String>,
        }
        let (ok, error) = match result {
            Ok(true) => (true, None),
            Ok(false) => (false, Some(format!("no failed task {id:?}"))),
            Err(e) => (false, Some(e.to_string())),
        };
        if let Ok(answer) = to_js(&Answer {
            kind: "commandResult",
            name: &self.name,
            instance: &self.instance,
            command,
            id,
            ok,
            error,
        }) {
            self.send(&answer);
        }
        self.post().await;
    }
}
