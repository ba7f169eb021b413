//! `SyncClient`: the object a web app holds. It wires the engine to the
//! browser ports (IndexedDB, fetch, timers, Web Locks, connectivity events)
//! and exposes the API of docs/api.md.

use crate::api::error::{tidesync_error, ApiError};
use crate::api::events::{JsEvents, EVENT_NAMES};
use crate::api::guard;
use crate::api::input;
use crate::api::log::Logger;
use crate::api::options::{encode_body, parse_client_options, parse_register};
use crate::engine::outbox::{FlushReport, Outbox, OutboxPorts};
use crate::engine::ports::{Clock, Ports, StoreError, TokenSource};
use crate::engine::replication::replicator::ReplicaPorts;
use crate::engine::replication::{Replicator, ReplicatorPorts};
use crate::platform::clock::BrowserClock;
use crate::platform::global;
use crate::platform::listener::EventListener;
use crate::platform::locks::FlushLock;
use crate::store::idb::{to_js, IdbStore};
use crate::transport::http::HttpTransport;
use gloo_timers::callback::Timeout;
use js_sys::{Function, Promise};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};

/// The browser implementations of the engine's ports.
pub struct BrowserPorts;

impl Ports for BrowserPorts {
    type Replica = Rc<Replicator<BrowserReplica>>;
    type Store = Rc<IdbStore>;
    type Transport = HttpTransport;
    type Clock = BrowserClock;
    type Locks = FlushLock;
    type Events = Rc<JsEvents>;
    type Tokens = JsTokens;
}

/// The browser implementations of the replicator's ports.
pub struct BrowserReplica;

impl ReplicaPorts for BrowserReplica {
    type Records = crate::api::live::ObservedRecords;
    type Transport = HttpTransport;
    type Clock = BrowserClock;
    type Events = Rc<JsEvents>;
    type Resolver = crate::api::replication::JsResolver;
}

/// The `getToken` option: called when the server refuses the credentials.
pub struct JsTokens(pub(crate) Option<Function>);

impl TokenSource for JsTokens {
    async fn fresh_token(&self) -> Option<String> {
        let function = self.0.as_ref()?;
        let value = function.call0(&JsValue::NULL).ok()?;
        let value = match value.dyn_into::<Promise>() {
            Ok(promise) => JsFuture::from(promise).await.ok()?,
            Err(value) => value,
        };
        value.as_string().filter(|t| !t.is_empty())
    }
}

pub(crate) struct Inner {
    name: String,
    outbox: Outbox<BrowserPorts>,
    pub(crate) replicator: Option<Rc<Replicator<BrowserReplica>>>,
    /// `sync()` one at a time, pulls taking turns.
    pub(crate) syncs: crate::engine::sync::Syncs,
    pub(crate) events: Rc<JsEvents>,
    auto_flush: bool,
    closed: Cell<bool>,
    flush_scheduled: Cell<bool>,
    wake_timer: RefCell<Option<Timeout>>,
    /// `online`/`offline` on the global scope, removed on close.
    global_listeners: RefCell<Vec<EventListener>>,
    /// When `getHealth().storage` was last measured (`Date.now()`).
    pub(crate) estimated_at: Cell<f64>,
    pub(crate) live: crate::api::live::LiveParts,
}

/// An offline-first sync client over one IndexedDB database.
#[wasm_bindgen]
pub struct SyncClient {
    pub(crate) inner: Rc<Inner>,
}

pub(crate) fn store_error(error: StoreError) -> JsValue {
    ApiError::from(error).into()
}

pub(crate) fn to_js_value<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    to_js(value).map_err(store_error)
}

#[wasm_bindgen]
impl SyncClient {
    /// Opens (or creates) the client's database and starts listening for
    /// connectivity. Rejects with `TidesyncError` `invalid-options` naming the
    /// field, or `storage-unavailable`.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncClient>")]
    pub fn open(
        #[wasm_bindgen(unchecked_param_type = "SyncClientOptions")] options: JsValue,
    ) -> Promise {
        guard::install();
        guard::promise(async move {
            let options = parse_client_options(&options)?;
            let logger = Logger::new(&options.name, options.log_level);
            let store = Rc::new(IdbStore::open(&options.name).await.map_err(store_error)?);
            let events = Rc::new(JsEvents::new(logger));
            let live = crate::api::live::LiveParts::new(
                options.live.clone().zip(options.outbox.server_url.clone()),
                JsTokens(options.get_token.clone()),
            );
            let mut outbox = Outbox::<BrowserPorts>::open(
                OutboxPorts {
                    store: store.clone(),
                    transport: HttpTransport,
                    clock: BrowserClock,
                    locks: FlushLock::new(store.name()),
                    events: events.clone(),
                    tokens: JsTokens(options.get_token),
                },
                options.outbox,
                options.token,
            )
            .await
            .map_err(store_error)?;
            let replicator = match options.replication {
                Some(setup) => {
                    let replicator = Replicator::<BrowserReplica>::open(
                        ReplicatorPorts {
                            records: live.observe(store.clone()),
                            transport: HttpTransport,
                            clock: BrowserClock,
                            events: events.clone(),
                            resolver: crate::api::replication::JsResolver(setup.on_conflict),
                        },
                        setup.options,
                    )
                    .await
                    .map_err(store_error)?;
                    let replicator = Rc::new(replicator);
                    outbox.set_replica(replicator.clone());
                    Some(replicator)
                }
                None => None,
            };
            let inner = Rc::new(Inner {
                name: options.name,
                outbox,
                replicator,
                syncs: Default::default(),
                events,
                auto_flush: options.auto_flush,
                closed: Cell::new(false),
                flush_scheduled: Cell::new(false),
                wake_timer: RefCell::new(None),
                global_listeners: RefCell::new(Vec::new()),
                live,
                estimated_at: Cell::new(0.0),
            });
            crate::api::storage::after_open(&inner);
            crate::api::live::start(&inner);
            listen_for_connectivity(&inner);
            let online = global::navigator_online();
            inner.outbox.set_online(online);
            if inner.auto_flush && online && inner.outbox.status().pending_count > 0 {
                schedule_flush(&inner);
            }
            crate::api::devtools::register_client(&inner);
            Ok(SyncClient { inner }.into())
        })
    }

    /// The client's name (its database is `tidesync:<name>`).
    #[wasm_bindgen(getter)]
    pub fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// Queues an HTTP request under `id`. Registering an id that is already
    /// queued replaces its payload and keeps its place. Resolves with the
    /// stored task once it is durable in IndexedDB.
    #[wasm_bindgen(unchecked_return_type = "Promise<QueuedTask>")]
    pub fn register(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
        #[wasm_bindgen(unchecked_param_type = "RegisterOptions")] options: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            inner.ensure_open()?;
            let options = encode_body(&options).await?;
            let mut task = parse_register(&id, &options)?;
            if let Err(why) = inner
                .outbox
                .place_dependent(&mut task)
                .await
                .map_err(store_error)?
            {
                return Err(ApiError::InvalidTask(why).into());
            }
            let stored = inner.outbox.register(task).await.map_err(store_error)?;
            crate::api::devtools::changed(&inner.name);
            if inner.auto_flush && global::navigator_online() {
                schedule_flush(&inner);
            }
            input::to_js_json(&stored)
        })
    }

    /// Runs due work now; resolves with a report when the flush ends.
    #[wasm_bindgen(unchecked_return_type = "Promise<FlushReport>")]
    pub fn flush(&self) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            inner.ensure_open()?;
            let report = run_flush(&inner).await.map_err(store_error)?;
            flush_report_js(&report)
        })
    }

    /// Stops timers and listeners, waits for the flush in progress (up to
    /// `closeTimeout`), and leaves every unfinished task queued.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn close(&self) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            if inner.closed.replace(true) {
                return Ok(JsValue::UNDEFINED);
            }
            inner.wake_timer.borrow_mut().take();
            inner.outbox.store().stop_watching();
            inner.global_listeners.borrow_mut().clear();
            crate::api::live::stop(&inner);
            let finished = inner.outbox.close().await;
            if !finished {
                inner.events.logger().warn(
                    "close() timed out waiting for the flush; unfinished tasks stay queued",
                    None,
                );
            }
            crate::api::devtools::unregister_client(&inner.name);
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Flushes every `intervalMs` (chained timers: no overlap, no pile-up).
    #[wasm_bindgen(js_name = startPeriodicSync)]
    pub fn start_periodic_sync(
        &self,
        #[wasm_bindgen(unchecked_param_type = "number")] interval_ms: JsValue,
    ) -> Result<(), JsValue> {
        self.inner.ensure_open()?;
        // At most 24.8 days: setTimeout's limit.
        let interval_ms = input::number(
            &interval_ms,
            "intervalMs",
            100.0,
            2_147_000_000.0,
            ApiError::InvalidOptions,
        )?;
        let inner = self.inner.clone();
        spawn_local(async move { inner.outbox.run_periodic(interval_ms).await });
        Ok(())
    }

    #[wasm_bindgen(js_name = stopPeriodicSync)]
    pub fn stop_periodic_sync(&self) {
        if guard::halted() {
            return;
        }
        self.inner.outbox.stop_periodic();
    }

    /// Subscribes to an event; returns a function that unsubscribes.
    /// Typed in src/api/typescript.rs (`on<K extends SyncEventName>`).
    #[wasm_bindgen(skip_typescript)]
    pub fn on(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] event: JsValue,
        listener: JsValue,
    ) -> Result<Function, JsValue> {
        guard::check()?;
        let expected = || format!("expected one of: {}", EVENT_NAMES.join(", "));
        let name = input::string(&event, "event", 64, ApiError::InvalidEvent)
            .map_err(|e| ApiError::InvalidEvent(format!("{e}; {}", expected())))?;
        if !EVENT_NAMES.contains(&name.as_str()) {
            return Err(
                ApiError::InvalidEvent(format!("unknown event {name:?}; {}", expected())).into(),
            );
        }
        let listener = input::function(
            &listener,
            "listener",
            "(...args) => void",
            ApiError::InvalidEvent,
        )?;
        let id = self.inner.events.add(&name, listener);
        let events = Rc::downgrade(&self.inner.events);
        let off = Closure::once_into_js(move || {
            if let Some(events) = events.upgrade() {
                events.remove(id);
            }
        });
        Ok(off.unchecked_into())
    }

    /// `{pendingCount, failedCount, inFlightCount, online, circuit, …}`.
    #[wasm_bindgen(js_name = getStatus, unchecked_return_type = "SyncStatus")]
    pub fn get_status(&self) -> Result<JsValue, JsValue> {
        guard::check()?;
        to_js_value(&self.inner.outbox.status())
    }

    /// One task's state, or `null` when the id is unknown.
    #[wasm_bindgen(js_name = getTaskStatus, unchecked_return_type = "Promise<TaskStatus | null>")]
    pub fn get_task_status(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            let id = task_id(&id)?;
            match inner.outbox.task_status(&id).await.map_err(store_error)? {
                Some(status) => to_js_value(&status),
                None => Ok(JsValue::NULL),
            }
        })
    }

    #[wasm_bindgen(js_name = getMetrics, unchecked_return_type = "SyncMetrics")]
    pub fn get_metrics(&self) -> Result<JsValue, JsValue> {
        guard::check()?;
        to_js_value(&self.inner.outbox.metrics())
    }

    #[wasm_bindgen(js_name = getHealth, unchecked_return_type = "SyncHealth")]
    pub fn get_health(&self) -> Result<JsValue, JsValue> {
        guard::check()?;
        to_js_value(&self.inner.outbox.health())
    }

    /// Queued tasks in the order they would run.
    #[wasm_bindgen(js_name = listQueued, unchecked_return_type = "QueuedTask[]")]
    pub fn list_queued(&self) -> Result<JsValue, JsValue> {
        guard::check()?;
        to_js_value(&self.inner.outbox.queued_tasks())
    }

    /// Dead letters: tasks that will not be retried, with every error.
    #[wasm_bindgen(js_name = listFailed, unchecked_return_type = "Promise<FailedTask[]>")]
    pub fn list_failed(&self) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            to_js_value(&inner.outbox.list_failed().await.map_err(store_error)?)
        })
    }

    /// Puts a dead letter back in the queue with a fresh retry budget.
    #[wasm_bindgen(js_name = retryFailed, unchecked_return_type = "Promise<boolean>")]
    pub fn retry_failed(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            inner.ensure_open()?;
            let id = task_id(&id)?;
            let requeued = inner.outbox.retry_failed(&id).await.map_err(store_error)?;
            if requeued && inner.auto_flush {
                schedule_flush(&inner);
            }
            Ok(JsValue::from_bool(requeued))
        })
    }

    #[wasm_bindgen(js_name = discardFailed, unchecked_return_type = "Promise<boolean>")]
    pub fn discard_failed(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            let id = task_id(&id)?;
            Ok(JsValue::from_bool(
                inner
                    .outbox
                    .discard_failed(&id)
                    .await
                    .map_err(store_error)?,
            ))
        })
    }

    /// A new bearer token: resumes work paused by `auth:required`.
    #[wasm_bindgen(js_name = setToken)]
    pub fn set_token(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] token: JsValue,
    ) -> Result<(), JsValue> {
        guard::check()?;
        let token = match input::present(token) {
            None => None,
            Some(token) => Some(input::string(
                &token,
                "token",
                crate::api::options::MAX_TEXT,
                ApiError::InvalidOptions,
            )?),
        };
        self.inner.outbox.set_token(token.filter(|t| !t.is_empty()));
        crate::api::live::token_changed(&self.inner);
        if self.inner.auto_flush && !self.inner.closed.get() {
            schedule_flush(&self.inner);
        }
        Ok(())
    }

    /// Asks the browser to keep this origin's storage under pressure
    /// (`navigator.storage.persist()`), so the outbox is not evicted.
    /// Resolves whether storage is persistent; `false` where the API is missing.
    #[wasm_bindgen(js_name = requestPersistentStorage, unchecked_return_type = "Promise<boolean>")]
    pub fn request_persistent_storage(&self) -> Promise {
        guard::promise(async move {
            let storage = global::prop(&global::get("navigator"), "storage");
            let Ok(pending) = global::call(&storage, "persist", &[]) else {
                return Ok(JsValue::FALSE);
            };
            let granted = JsFuture::from(Promise::from(pending))
                .await
                .unwrap_or(JsValue::FALSE);
            Ok(JsValue::from_bool(granted.as_bool() == Some(true)))
        })
    }

    /// `{usage, quota, persisted}` in bytes for this origin
    /// (`navigator.storage.estimate()`), or `null` where the API is missing.
    #[wasm_bindgen(js_name = getStorageEstimate, unchecked_return_type = "Promise<StorageEstimate | null>")]
    pub fn get_storage_estimate(&self) -> Promise {
        guard::promise(crate::api::storage::estimate_js())
    }

    /// Page side: registers a Background Sync tag (default `"tidesync"`).
    /// Resolves `false` where the browser has no Background Sync API; the
    /// client then relies on `online` events and flushing on load.
    #[wasm_bindgen(js_name = requestBackgroundSync, unchecked_return_type = "Promise<boolean>")]
    pub fn request_background_sync(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] tag: JsValue,
    ) -> Promise {
        guard::promise(async move {
            let tag = sync_tag(tag)?.unwrap_or_else(|| "tidesync".into());
            let container = global::prop(&global::get("navigator"), "serviceWorker");
            let ready = global::prop(&container, "ready");
            let Ok(ready) = ready.dyn_into::<Promise>() else {
                return Ok(JsValue::FALSE);
            };
            let registration = JsFuture::from(ready).await?;
            let sync = global::prop(&registration, "sync");
            if sync.is_undefined() {
                return Ok(JsValue::FALSE);
            }
            let pending = global::call(&sync, "register", &[JsValue::from_str(&tag)])?;
            JsFuture::from(Promise::from(pending)).await?;
            Ok(JsValue::TRUE)
        })
    }

    /// Worker side, for `self.addEventListener("sync", e =>
    /// e.waitUntil(client.handleSyncEvent(e.tag)))`: flushes, and rejects
    /// when work remains so the browser schedules another sync.
    #[wasm_bindgen(js_name = handleSyncEvent, unchecked_return_type = "Promise<FlushReport>")]
    pub fn handle_sync_event(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] tag: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            inner.ensure_open()?;
            let tag = sync_tag(tag)?;
            inner
                .events
                .logger()
                .debug(&format!("sync event {:?}", tag.unwrap_or_default()), None);
            inner.outbox.set_online(true);
            let report = run_flush(&inner).await.map_err(store_error)?;
            if report.remaining > 0 {
                return Err(tidesync_error(
                    "sync-incomplete",
                    &format!(
                        "{} task(s) remain queued; the browser will retry the sync",
                        report.remaining
                    ),
                ));
            }
            flush_report_js(&report)
        })
    }
}

/// A task id argument (`getTaskStatus`, `retryFailed`, `discardFailed`).
fn task_id(id: &JsValue) -> Result<String, ApiError> {
    input::string(id, "id", 500, ApiError::InvalidTask)
}

/// A Background Sync tag argument: a string, or absent.
fn sync_tag(tag: JsValue) -> Result<Option<String>, ApiError> {
    input::present(tag)
        .map(|tag| input::string(&tag, "tag", 200, ApiError::InvalidOptions))
        .transpose()
}

impl Inner {
    pub(crate) fn ensure_open(&self) -> Result<(), JsValue> {
        guard::check()?;
        if self.closed.get() {
            return Err(ApiError::Closed.into());
        }
        Ok(())
    }

    pub(crate) fn auto_flush(&self) -> bool {
        self.auto_flush
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn outbox(&self) -> &Outbox<BrowserPorts> {
        &self.outbox
    }

    /// After a dead letter is requeued from the inspector: flush soon, as
    /// `retryFailed()` does, when the client flushes on its own.
    pub(crate) fn flush_soon(self: &Rc<Self>) {
        if self.auto_flush {
            schedule_flush(self);
        }
    }
}

/// The `FlushReport` handed to JavaScript; a report that cannot be
/// converted rejects the call (it used to resolve `undefined`).
fn flush_report_js(report: &FlushReport) -> Result<JsValue, JsValue> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Report {
        sent: usize,
        completed: usize,
        failed: usize,
        retried: usize,
        remaining: usize,
        next_wakeup_at: Option<String>,
    }
    to_js_value(&Report {
        sent: report.sent,
        completed: report.completed,
        failed: report.failed,
        retried: report.retried,
        remaining: report.remaining,
        next_wakeup_at: report.next_wakeup_at.map(crate::engine::time::to_iso),
    })
}

/// Coalesces flush requests made in one tick into one flush.
pub(crate) fn schedule_flush(inner: &Rc<Inner>) {
    if inner.closed.get() || inner.flush_scheduled.replace(true) {
        return;
    }
    let inner = inner.clone();
    spawn_local(async move {
        inner.outbox.clock().yield_now().await;
        inner.flush_scheduled.set(false);
        if let Err(error) = run_flush(&inner).await {
            inner
                .events
                .logger()
                .error(&format!("flush failed: {error}"), None);
        }
    });
}

pub(crate) async fn run_flush(inner: &Rc<Inner>) -> Result<FlushReport, StoreError> {
    let started = crate::api::devtools::performance_now();
    let report = inner.outbox.flush().await?;
    crate::api::storage::refresh_estimate(inner, false);
    crate::api::devtools::measure("tidesync:flush", started, &inner.name, &report);
    arm_wake_timer(inner, report.next_wakeup_at);
    Ok(report)
}

/// One timer for the next backoff expiry or breaker probe.
fn arm_wake_timer(inner: &Rc<Inner>, at: Option<f64>) {
    let Some(at) = at else {
        inner.wake_timer.borrow_mut().take();
        return;
    };
    if inner.closed.get() || !inner.auto_flush {
        return;
    }
    let delay = crate::engine::sync::wake_delay(at, inner.outbox.clock().now());
    let weak: Weak<Inner> = Rc::downgrade(inner);
    let timer = Timeout::new(delay as u32, move || {
        if let Some(inner) = weak.upgrade() {
            schedule_flush(&inner);
        }
    });
    *inner.wake_timer.borrow_mut() = Some(timer);
}

fn listen_for_connectivity(inner: &Rc<Inner>) {
    for (name, online) in [("online", true), ("offline", false)] {
        let weak = Rc::downgrade(inner);
        let listener = EventListener::on_global(name, move |_event| {
            let Some(inner) = weak.upgrade() else { return };
            inner.outbox.set_online(online);
            if online && inner.auto_flush {
                schedule_flush(&inner);
            }
        });
        inner.global_listeners.borrow_mut().extend(listener);
    }
}
