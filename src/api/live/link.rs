//! The live connection of one database, carried out in the browser.
//!
//! Every client with `live` on asks for the Web Lock
//! `tidesync:<name>:live` (the same lock adapter as flushing); the one tab
//! or worker holding it runs the connection for the whole origin, and the
//! browser hands the lock to a waiting client when the holder closes or
//! dies. The holder feeds what happens (stream events, timers,
//! connectivity, pull results) to the engine's [`LiveLink`] and carries out
//! its commands: fetch a ticket and open the `EventSource`, close it, pull,
//! emit `live:open` / `live:closed`. Its pulls write IndexedDB, which the
//! change feed announces to every tab; its status goes out on the same
//! channel, so every tab's `getLiveStatus()` and events follow it.
//!
//! Callbacks from the browser (timers, stream events, connectivity) only
//! schedule work; nothing runs inside a closure that the work might drop.

use crate::api::client::Inner;
use crate::api::live::Status;
use crate::api::replication::pull_and_adopt;
use crate::engine::live::{Command, Failure, LinkState, LiveLink, LiveOptions, PullOutcome};
use crate::engine::ports::{Locks, TokenSource, Transport};
use crate::engine::task::{Body, HttpRequest, ResponseBody};
use crate::platform::event_source::{LiveSource, StreamEvent};
use crate::platform::global;
use crate::platform::listener::EventListener;
use crate::platform::locks::{FlushLock, FlushLockGuard};
use crate::transport::http::HttpTransport;
use gloo_timers::callback::Timeout;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use tidesync_protocol as protocol;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

/// Something that happened, for the engine.
enum Input {
    /// The lock is ours: connect.
    Lead,
    Tick,
    /// An event of the stream opened as this generation.
    Stream(u32, StreamEvent),
    /// No ticket, or the stream could not be created.
    ConnectFailed(u32, Failure),
    Online(bool),
    PullDone(PullOutcome),
    Token,
}

pub(crate) struct LinkDriver {
    inner: Weak<Inner>,
    server_url: String,
    request_timeout: u32,
    machine: RefCell<LiveLink>,
    source: RefCell<Option<LiveSource>>,
    timer: RefCell<Option<Timeout>>,
    /// Tells a stream's events from those of a stream already replaced.
    generation: Cell<u32>,
    guard: RefCell<Option<FlushLockGuard>>,
    leader: Cell<bool>,
    stopped: Cell<bool>,
    /// In a tab that does not hold the connection: the holder's status as
    /// last announced.
    remote: RefCell<Status>,
    listeners: RefCell<Vec<EventListener>>,
}

fn now() -> f64 {
    js_sys::Date::now()
}

fn state_name(state: LinkState) -> &'static str {
    match state {
        LinkState::Off => "off",
        LinkState::Connecting => "connecting",
        LinkState::Open => "open",
        LinkState::Closed => "closed",
    }
}

impl LinkDriver {
    /// Waits for the live lock in the background, then connects.
    pub(crate) fn start(inner: &Rc<Inner>, options: LiveOptions, server_url: String) -> Rc<Self> {
        let driver = Rc::new(Self {
            inner: Rc::downgrade(inner),
            server_url,
            request_timeout: inner.outbox().options().request_timeout,
            machine: RefCell::new(LiveLink::new(options)),
            source: RefCell::new(None),
            timer: RefCell::new(None),
            generation: Cell::new(0),
            guard: RefCell::new(None),
            leader: Cell::new(false),
            stopped: Cell::new(false),
            remote: RefCell::new(Status {
                state: "connecting",
                leader: false,
                retry_at: None,
            }),
            listeners: RefCell::new(Vec::new()),
        });
        driver.listen_for_connectivity();
        let lock = FlushLock::for_purpose(inner.outbox().store().name(), "live");
        let waiting = driver.clone();
        spawn_local(async move {
            let guard = lock.acquire().await;
            if waiting.stopped.get() {
                return; // closed while waiting: the guard releases the lock
            }
            *waiting.guard.borrow_mut() = Some(guard);
            waiting.leader.set(true);
            waiting.on_input(Input::Lead);
        });
        // A tab that holds the connection says how it is.
        driver.post(&message("live?", None));
        driver
    }

    /// Closes the connection and gives the lock back.
    pub(crate) fn stop(self: &Rc<Self>) {
        if self.stopped.replace(true) {
            return;
        }
        let commands = self.machine.borrow_mut().stop();
        self.execute(commands);
        self.timer.borrow_mut().take();
        self.listeners.borrow_mut().clear();
        if self.leader.replace(false) {
            self.announce();
        }
        self.guard.borrow_mut().take();
    }

    pub(crate) fn status(&self) -> Status {
        if !self.leader.get() {
            return self.remote.borrow().clone();
        }
        let link = self.machine.borrow();
        Status {
            state: state_name(link.state()),
            leader: true,
            retry_at: link.retry_at(),
        }
    }

    /// A new token: a connection refused for its credentials retries now.
    pub(crate) fn token_changed(self: &Rc<Self>) {
        self.on_input(Input::Token);
    }

    /// Hands `input` over from a browser callback: it is handled on a later
    /// microtask, outside the callback (which the handling may drop).
    fn later(driver: &Weak<Self>, input: Input) {
        let driver = driver.clone();
        spawn_local(async move {
            if let Some(driver) = driver.upgrade() {
                driver.on_input(input);
            }
        });
    }

    /// Feeds the engine and carries out what it decides.
    fn on_input(self: &Rc<Self>, input: Input) {
        if self.stopped.get() || !self.leader.get() {
            return;
        }
        let (at, random) = (now(), js_sys::Math::random());
        let current = self.generation.get();
        let commands = {
            let link = &mut *self.machine.borrow_mut();
            match input {
                Input::Lead => link.start(at, global::navigator_online()),
                Input::Tick => link.on_tick(at, random),
                // A replaced stream's last words.
                Input::Stream(generation, _) | Input::ConnectFailed(generation, _)
                    if generation != current =>
                {
                    vec![]
                }
                Input::Stream(_, StreamEvent::Ready { heartbeat }) => link.on_open(at, heartbeat),
                Input::Stream(_, StreamEvent::Poke { cursor }) => link.on_poke(at, &cursor),
                Input::Stream(_, StreamEvent::Heartbeat) => {
                    link.on_heartbeat(at);
                    vec![]
                }
                Input::Stream(_, StreamEvent::Goodbye { .. }) => {
                    link.on_failure(at, Failure::Goodbye, random)
                }
                Input::Stream(_, StreamEvent::Failed) => {
                    link.on_failure(at, Failure::Network, random)
                }
                Input::ConnectFailed(_, failure) => link.on_failure(at, failure, random),
                Input::Online(online) => link.set_online(at, online),
                Input::PullDone(outcome) => link.on_pull_done(at, outcome),
                Input::Token => link.reconnect_now(at),
            }
        };
        self.execute(commands);
        self.arm_timer();
    }

    fn execute(self: &Rc<Self>, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::Connect { last_event_id } => self.connect(last_event_id),
                Command::Disconnect => self.disconnect(),
                Command::Pull => self.pull(),
                Command::Opened => {
                    self.emit("live:open", None, None);
                    self.announce();
                }
                Command::Closed { reason, retry_at } => {
                    self.emit("live:closed", Some(&reason), retry_at);
                    self.announce();
                }
            }
        }
    }

    fn arm_timer(self: &Rc<Self>) {
        let wake = self.machine.borrow().next_wake();
        let Some(at) = wake else {
            self.timer.borrow_mut().take();
            return;
        };
        let delay = (at - now()).clamp(0.0, 2_147_000_000.0) as u32;
        let driver = Rc::downgrade(self);
        let timer = Timeout::new(delay, move || Self::later(&driver, Input::Tick));
        *self.timer.borrow_mut() = Some(timer);
    }

    fn disconnect(&self) {
        if let Some(source) = self.source.borrow_mut().take() {
            // Dropped on a later microtask: this may run inside one of its
            // own listeners, which must outlive the call.
            spawn_local(async move { drop(source) });
        }
    }

    fn connect(self: &Rc<Self>, last_event_id: Option<i64>) {
        self.disconnect();
        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        let driver = self.clone();
        spawn_local(async move {
            let ticket = driver.fetch_ticket().await;
            if driver.stopped.get() || driver.generation.get() != generation {
                return;
            }
            let opened = ticket.and_then(|ticket| {
                let mut url = format!(
                    "{}{}?ticket={}",
                    driver.server_url,
                    protocol::EVENTS_PATH,
                    String::from(js_sys::encode_uri_component(&ticket))
                );
                if let Some(id) = last_event_id {
                    url.push_str(&format!("&lastEventId={id}"));
                }
                let weak = Rc::downgrade(&driver);
                let listener: Rc<dyn Fn(StreamEvent)> =
                    Rc::new(move |event| Self::later(&weak, Input::Stream(generation, event)));
                LiveSource::open(&url, listener).map_err(|_| Failure::Network)
            });
            match opened {
                Ok(source) => *driver.source.borrow_mut() = Some(source),
                Err(failure) => driver.on_input(Input::ConnectFailed(generation, failure)),
            }
        });
    }

    /// Exchanges the bearer token for a ticket (EventSource cannot send
    /// headers, and the token must not go in the URL). Without a token, or
    /// when the ticket is refused, `getToken` is asked once.
    async fn fetch_ticket(&self) -> Result<String, Failure> {
        let inner = self.inner.upgrade().ok_or(Failure::Network)?;
        let mut token = inner.outbox().token();
        let mut asked = false;
        loop {
            let bearer = match token.take() {
                Some(bearer) => bearer,
                None if !asked => {
                    asked = true;
                    token = fresh_token(&inner).await;
                    continue;
                }
                None => return Err(Failure::Auth),
            };
            let mut headers = BTreeMap::new();
            headers.insert("Authorization".to_owned(), format!("Bearer {bearer}"));
            let request = HttpRequest {
                url: format!("{}{}", self.server_url, protocol::EVENTS_TICKET_PATH),
                method: "POST".into(),
                headers,
                body: Some(Body::Json(serde_json::json!({}))),
            };
            let response = HttpTransport
                .send(&request, self.request_timeout, Some(4096))
                .await
                .map_err(|_| Failure::Network)?;
            return match (response.status, response.body) {
                (200..=299, ResponseBody::Json(body)) => body["ticket"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or(Failure::Network),
                (401 | 403, _) if !asked => {
                    asked = true;
                    token = fresh_token(&inner).await;
                    continue;
                }
                (401 | 403, _) => Err(Failure::Auth),
                _ => Err(Failure::Network),
            };
        }
    }

    fn pull(self: &Rc<Self>) {
        let driver = self.clone();
        spawn_local(async move {
            let outcome = match driver.inner.upgrade() {
                None => PullOutcome::Failed,
                Some(inner) => match pull_and_adopt(&inner).await {
                    Ok(_) => PullOutcome::Done,
                    Err(error) => {
                        if global::prop(&error, "code").as_string().as_deref() == Some("busy") {
                            PullOutcome::Busy
                        } else {
                            inner.events.logger().debug(
                                "live: a pull failed; the next poke or the periodic pull retries",
                                Some(&error),
                            );
                            PullOutcome::Failed
                        }
                    }
                },
            };
            driver.on_input(Input::PullDone(outcome));
        });
    }

    fn emit(&self, name: &str, reason: Option<&str>, retry_at: Option<f64>) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let info = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&info, &"leader".into(), &self.leader.get().into());
        if name == "live:closed" {
            let _ = js_sys::Reflect::set(
                &info,
                &"reason".into(),
                &JsValue::from_str(reason.unwrap_or("closed")),
            );
            let retry = retry_at
                .map(|at| JsValue::from_str(&crate::engine::time::to_iso(at)))
                .unwrap_or(JsValue::NULL);
            let _ = js_sys::Reflect::set(&info, &"retryAt".into(), &retry);
        }
        inner.events.dispatch(name, &[info.into()]);
    }

    fn post(&self, message: &JsValue) {
        if let Some(inner) = self.inner.upgrade() {
            inner.live.feed.post(message);
        }
    }

    /// Tells the other tabs how the connection is.
    fn announce(&self) {
        let status = {
            let link = self.machine.borrow();
            Status {
                state: state_name(link.state()),
                leader: false,
                retry_at: link.retry_at(),
            }
        };
        self.post(&message("live", Some(&status)));
    }

    /// A message of the holder (`live`) or of a new tab (`live?`).
    fn on_message(&self, kind: &str, data: &JsValue) {
        match kind {
            "live?" if self.leader.get() => self.announce(),
            "live" if !self.leader.get() => {
                let state = match global::prop(data, "state").as_string().as_deref() {
                    Some("open") => "open",
                    Some("connecting") => "connecting",
                    Some("closed") => "closed",
                    _ => "off",
                };
                let retry_at = global::prop(data, "retryAt").as_f64();
                let was = std::mem::replace(
                    &mut *self.remote.borrow_mut(),
                    Status {
                        state,
                        leader: false,
                        retry_at,
                    },
                );
                if state == "open" && was.state != "open" {
                    self.emit("live:open", None, None);
                } else if state != "open" && was.state == "open" {
                    self.emit(
                        "live:closed",
                        Some("the tab holding the connection lost it"),
                        retry_at,
                    );
                }
            }
            _ => {}
        }
    }

    fn listen_for_connectivity(self: &Rc<Self>) {
        for (name, online) in [("online", true), ("offline", false)] {
            let driver = Rc::downgrade(self);
            let listener = EventListener::on_global(name, move |_event| {
                Self::later(&driver, Input::Online(online))
            });
            self.listeners.borrow_mut().extend(listener);
        }
    }
}

/// A token from `getToken`, handed to the outbox as `setToken()` would.
async fn fresh_token(inner: &Inner) -> Option<String> {
    let token = inner.live.tokens.fresh_token().await?;
    inner.outbox().set_token(Some(token.clone()));
    Some(token)
}

fn message(kind: &str, status: Option<&Status>) -> JsValue {
    let object = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&object, &"kind".into(), &JsValue::from_str(kind));
    if let Some(status) = status {
        let _ = js_sys::Reflect::set(&object, &"state".into(), &JsValue::from_str(status.state));
        if let Some(at) = status.retry_at {
            let _ = js_sys::Reflect::set(&object, &"retryAt".into(), &JsValue::from_f64(at));
        }
    }
    object.into()
}

/// A message on the database's channel that is about the connection.
pub(crate) fn on_channel_message(inner: &Rc<Inner>, kind: &str, data: &JsValue) {
    let driver = inner.live.link.borrow().clone();
    if let Some(driver) = driver {
        driver.on_message(kind, data);
    }
}
