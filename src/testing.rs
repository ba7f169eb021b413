//! Deterministic in-memory implementations of the engine's ports, for
//! native tests: a clock that advances only when told (or when slept on), a
//! transport that answers from a script and records what it was sent, and an
//! event recorder. They are part of the design (the engine is written against
//! traits), not stand-ins for the browser adapters, which have their own
//! tests in Chromium.

use crate::engine::events::Event;
use crate::engine::ports::{
    Clock, EventSink, Locks, Ports, TokenSource, Transport, TransportError,
};
use crate::engine::task::{HttpRequest, HttpResponse};
use crate::engine::time::Millis;
use crate::store::MemoryStore;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// A future that is pending once, then ready: lets other tasks on the same
/// executor run.
pub struct YieldOnce(bool);

impl YieldOnce {
    pub fn new() -> Self {
        Self(false)
    }
}

impl Default for YieldOnce {
    fn default() -> Self {
        Self::new()
    }
}

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Virtual time. `sleep` advances it by the slept duration, so a periodic
/// loop or a close timeout runs instantly and deterministically.
#[derive(Default)]
pub struct ManualClock {
    now: Cell<Millis>,
    ids: Cell<u64>,
    seed: Cell<u64>,
    /// Every `sleep` requested, in order.
    pub sleeps: RefCell<Vec<Millis>>,
}

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        Self {
            now: Cell::new(start),
            seed: Cell::new(0x2545_f491_4f6c_dd1d),
            ..Default::default()
        }
    }

    pub fn advance(&self, ms: Millis) {
        self.now.set(self.now.get() + ms);
    }

    pub fn set(&self, at: Millis) {
        self.now.set(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.now.get()
    }

    fn random(&self) -> f64 {
        // xorshift64*: repeatable, good enough for jitter.
        let mut x = self.seed.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn unique_id(&self) -> String {
        self.ids.set(self.ids.get() + 1);
        format!("id-{}", self.ids.get())
    }

    async fn sleep(&self, ms: Millis) {
        self.sleeps.borrow_mut().push(ms);
        YieldOnce::new().await;
        self.advance(ms);
    }

    async fn yield_now(&self) {
        YieldOnce::new().await;
    }
}

type Responder = Box<dyn FnMut(&HttpRequest, Millis) -> Result<HttpResponse, TransportError>>;

/// A transport that answers from a responder function and records requests.
pub struct ScriptedTransport {
    clock: Rc<ManualClock>,
    responder: RefCell<Responder>,
    /// Every request sent, with the virtual time it was sent at.
    pub sent: RefCell<Vec<(HttpRequest, Millis)>>,
    /// Virtual time each request takes.
    pub latency: Cell<Millis>,
    in_flight: Cell<usize>,
    /// Highest number of requests in flight at once.
    pub max_in_flight: Cell<usize>,
    /// Requests whose URL ends with this are answered by the responder (the
    /// server has them) but their answers wait until [`Self::release_held`]:
    /// a late answer.
    hold_url: RefCell<Option<String>>,
    held: RefCell<Vec<futures::channel::oneshot::Sender<()>>>,
}

impl ScriptedTransport {
    /// Answers 200 to everything.
    pub fn new(clock: Rc<ManualClock>) -> Self {
        Self {
            clock,
            responder: RefCell::new(Box::new(|_, _| Ok(HttpResponse::new(200)))),
            sent: RefCell::new(Vec::new()),
            latency: Cell::new(0.0),
            in_flight: Cell::new(0),
            max_in_flight: Cell::new(0),
            hold_url: RefCell::new(None),
            held: RefCell::new(Vec::new()),
        }
    }

    /// From now on, answers to URLs ending with `suffix` arrive only when
    /// released.
    pub fn hold_answers_to(&self, suffix: &str) {
        *self.hold_url.borrow_mut() = Some(suffix.to_owned());
    }

    /// How many answers are waiting.
    pub fn held_count(&self) -> usize {
        self.held.borrow().len()
    }

    /// Delivers every waiting answer and stops holding new ones.
    pub fn release_held(&self) {
        *self.hold_url.borrow_mut() = None;
        for sender in self.held.borrow_mut().drain(..) {
            let _ = sender.send(());
        }
    }

    pub fn respond_with(
        &self,
        responder: impl FnMut(&HttpRequest, Millis) -> Result<HttpResponse, TransportError> + 'static,
    ) {
        *self.responder.borrow_mut() = Box::new(responder);
    }

    pub fn sent_urls(&self) -> Vec<String> {
        self.sent
            .borrow()
            .iter()
            .map(|(r, _)| r.url.clone())
            .collect()
    }
}

impl Transport for ScriptedTransport {
    async fn send(
        &self,
        request: &HttpRequest,
        _timeout_ms: u32,
        _max_body: Option<usize>,
    ) -> Result<HttpResponse, TransportError> {
        self.sent
            .borrow_mut()
            .push((request.clone(), self.clock.now()));
        self.in_flight.set(self.in_flight.get() + 1);
        self.max_in_flight
            .set(self.max_in_flight.get().max(self.in_flight.get()));
        YieldOnce::new().await;
        self.clock.advance(self.latency.get());
        self.in_flight.set(self.in_flight.get() - 1);
        let now = self.clock.now();
        let answer = (self.responder.borrow_mut())(request, now);
        let hold = self
            .hold_url
            .borrow()
            .as_deref()
            .is_some_and(|suffix| request.url.ends_with(suffix));
        if hold {
            let (sender, receiver) = futures::channel::oneshot::channel();
            self.held.borrow_mut().push(sender);
            let _ = receiver.await;
        }
        answer
    }
}

/// Records every event.
#[derive(Default)]
pub struct RecordingEvents {
    pub events: RefCell<Vec<Event>>,
}

impl RecordingEvents {
    pub fn names(&self) -> Vec<&'static str> {
        self.events.borrow().iter().map(Event::name).collect()
    }

    pub fn count(&self, name: &str) -> usize {
        self.events
            .borrow()
            .iter()
            .filter(|e| e.name() == name)
            .count()
    }
}

impl EventSink for RecordingEvents {
    fn emit(&self, event: Event) {
        self.events.borrow_mut().push(event);
    }
}

/// A lock that is always free (one realm), counting acquisitions.
#[derive(Default)]
pub struct LocalLock {
    pub held: Rc<Cell<bool>>,
    pub acquisitions: Cell<u64>,
}

/// Releases a [`LocalLock`] on drop.
pub struct LocalLockGuard(Rc<Cell<bool>>);

impl Drop for LocalLockGuard {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Locks for LocalLock {
    type Guard = LocalLockGuard;
    async fn acquire(&self) -> LocalLockGuard {
        while self.held.get() {
            YieldOnce::new().await;
        }
        self.held.set(true);
        self.acquisitions.set(self.acquisitions.get() + 1);
        LocalLockGuard(self.held.clone())
    }
}

/// A `getToken` that hands out the next token from a list.
#[derive(Default)]
pub struct QueuedTokens {
    pub tokens: RefCell<Vec<String>>,
    pub asked: Cell<u32>,
}

impl TokenSource for QueuedTokens {
    async fn fresh_token(&self) -> Option<String> {
        self.asked.set(self.asked.get() + 1);
        let mut tokens = self.tokens.borrow_mut();
        (!tokens.is_empty()).then(|| tokens.remove(0))
    }
}

/// The in-memory port bundle.
pub struct TestPorts;

impl Ports for TestPorts {
    type Replica = crate::engine::ports::NoReplica;
    type Store = Rc<MemoryStore>;
    type Transport = Rc<ScriptedTransport>;
    type Clock = Rc<ManualClock>;
    type Locks = Rc<LocalLock>;
    type Events = Rc<RecordingEvents>;
    type Tokens = Rc<QueuedTokens>;
}
