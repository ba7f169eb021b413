//! The inspector feed: a `BroadcastChannel("tidesync:<name>")` per client
//! that posts `{type: "snapshot", …}` (the engine's [`Inspection`] of the
//! outbox, plus who is speaking) when the client's state changes, throttled
//! to one every [`THROTTLE_MS`], answers `{type: "hello"}` at once, and obeys
//! `{type: "retryFailed", id}` and `{type: "discardFailed", id}`.

use super::THROTTLE_MS;
use crate::api::client::Inner;
use crate::engine::outbox::inspect::Inspection;
use crate::engine::ports::Clock;
use crate::engine::task::FailedTask;
use crate::engine::time::to_iso;
use crate::platform::global;
use crate::platform::listener::EventListener;
use crate::store::idb::to_js;
use gloo_timers::future::TimeoutFuture;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::{BroadcastChannel, MessageEvent};

thread_local! {
    static INSPECTORS: RefCell<HashMap<String, Rc<Inspector>>> = RefCell::new(HashMap::new());
}

/// Takes the client's inspector out of the registry (the client closed).
pub(super) fn remove(client: &str) -> Option<Rc<Inspector>> {
    INSPECTORS.with(|all| all.borrow_mut().remove(client))
}

pub(super) fn inspector(client: &str) -> Option<Rc<Inspector>> {
    INSPECTORS.with(|all| all.borrow().get(client).cloned())
}

type MessageListener = Closure<dyn FnMut(MessageEvent)>;

/// One client's channel: throttling state and a cache of its dead letters
/// (re-read from IndexedDB only when their count changes or a task fails).
pub(super) struct Inspector {
    name: String,
    /// Tells apart two contexts (a page and its worker) with the same client.
    instance: String,
    pub(super) inner: Weak<Inner>,
    /// `None` where the scope has no BroadcastChannel: no live inspector,
    /// but the phase logs still find their client here.
    channel: Option<BroadcastChannel>,
    on_message: RefCell<Option<MessageListener>>,
    /// `pagehide`/`pageshow` on a window: the inspector learns that the
    /// page went away (or came back from the back/forward cache).
    page_listeners: RefCell<Vec<EventListener>>,
    pending: Cell<bool>,
    /// An inspector said hello: from then on every change is posted. Until
    /// then only the announcement at open is, so an app nobody inspects
    /// pays nothing for snapshots (they read the whole queue).
    pub(super) observed: Cell<bool>,
    last_post: Cell<f64>,
    seq: Cell<u64>,
    pub(super) failed: RefCell<Option<Vec<FailedTask>>>,
    shut: Cell<bool>,
}

pub(super) fn open_inspector(inner: &Rc<Inner>) {
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
    for name in ["pagehide", "pageshow"] {
        let weak = Rc::downgrade(inspector);
        let listener = EventListener::on_global(name, move |event| {
            let Some(inspector) = weak.upgrade() else {
                return;
            };
            if name == "pagehide" {
                inspector.send_closed("pagehide");
            } else if global::prop(&event, "persisted").as_bool() == Some(true) {
                inspector.post_now(); // back from the back/forward cache
            }
        });
        inspector.page_listeners.borrow_mut().extend(listener);
    }
}

/// The message posted on the channel: who is speaking, then the outbox.
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
    #[serde(flatten)]
    outbox: &'a Inspection,
}

impl Drop for Inspector {
    fn drop(&mut self) {
        self.shut();
    }
}

impl Inspector {
    pub(super) fn shut(&self) {
        if self.shut.replace(true) {
            return;
        }
        if let Some(channel) = &self.channel {
            channel.set_onmessage(None);
            channel.close();
        }
        self.on_message.borrow_mut().take();
        self.page_listeners.borrow_mut().clear();
    }

    /// `{type: "closed", name, instance, reason, at}`: the client was closed
    /// (`reason: "close"`) or its page is going away (`"pagehide"`).
    pub(super) fn send_closed(&self, reason: &str) {
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

    pub(super) fn send(&self, message: &JsValue) {
        if let (Some(channel), false) = (&self.channel, self.shut.get()) {
            let _ = channel.post_message(message);
        }
    }

    /// A snapshot after at most [`THROTTLE_MS`] since the previous one;
    /// changes in the meantime fold into it.
    pub(super) fn schedule(self: &Rc<Self>) {
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

    pub(super) fn post_now(self: &Rc<Self>) {
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

    pub(super) async fn snapshot(&self) -> Option<JsValue> {
        let inner = self.inner.upgrade()?;
        let expected_failed = inner.outbox().status().failed_count as usize;
        let failed = self.failed_tasks(&inner, expected_failed).await;
        let outbox = inner.outbox().inspect(&failed);
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
            outbox: &outbox,
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
