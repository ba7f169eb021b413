//! The outbox bench shared by the outbox spec files: `Outbox<TestPorts>`
//! over an in-memory store, a scripted transport and a virtual clock, plus
//! tasks and answers to feed it.
#![allow(dead_code, unused_imports)]

pub use futures::executor::block_on;
pub use futures::future::join_all;
pub use std::cell::Cell;
pub use std::collections::HashMap;
pub use std::rc::{Rc, Weak};
pub use tidesync::engine::time::Millis;
pub use tidesync::engine::{
    Body, BreakerOptions, Clock, ErrorClass, Event, HealthStatus, HttpRequest, HttpResponse,
    NewTask, Outbox, OutboxOptions, OutboxPorts, Priority, RetryOptions, StoreError, TaskState,
    TransportError,
};
pub use tidesync::store::MemoryStore;
pub use tidesync::testing::{
    LocalLock, ManualClock, QueuedTokens, RecordingEvents, ScriptedTransport, TestPorts, YieldOnce,
};

pub const T0: Millis = 1_764_000_000_000.0;

pub struct Bench {
    pub outbox: Outbox<TestPorts>,
    pub store: Rc<MemoryStore>,
    pub transport: Rc<ScriptedTransport>,
    pub clock: Rc<ManualClock>,
    pub lock: Rc<LocalLock>,
    pub events: Rc<RecordingEvents>,
    pub tokens: Rc<QueuedTokens>,
}

pub fn bench() -> Bench {
    bench_with(OutboxOptions::default(), None)
}

pub fn bench_with(options: OutboxOptions, token: Option<&str>) -> Bench {
    let store = Rc::new(MemoryStore::new());
    let clock = Rc::new(ManualClock::new(T0));
    let transport = Rc::new(ScriptedTransport::new(clock.clone()));
    let lock = Rc::new(LocalLock::default());
    let events = Rc::new(RecordingEvents::default());
    let tokens = Rc::new(QueuedTokens::default());
    let outbox = block_on(Outbox::<TestPorts>::open(
        OutboxPorts {
            store: store.clone(),
            transport: transport.clone(),
            clock: clock.clone(),
            locks: lock.clone(),
            events: events.clone(),
            tokens: tokens.clone(),
        },
        options,
        token.map(str::to_owned),
    ))
    .expect("open");
    Bench {
        outbox,
        store,
        transport,
        clock,
        lock,
        events,
        tokens,
    }
}

/// Options where only the rule under test can intervene: no jitter, and a
/// breaker that never opens unless the test asks for one.
pub fn quiet_options() -> OutboxOptions {
    OutboxOptions {
        retry: RetryOptions {
            jitter: false,
            ..RetryOptions::default()
        },
        circuit_breaker: BreakerOptions {
            failure_threshold: 1_000,
            ..BreakerOptions::default()
        },
        ..OutboxOptions::default()
    }
}

/// A POST to `/items/{id}` whose body names its id and payload version.
pub fn post(id: &str) -> NewTask {
    let mut headers = std::collections::BTreeMap::new();
    headers.insert("x-id".to_owned(), id.to_owned());
    NewTask {
        id: id.into(),
        priority: Priority::Normal,
        ordering_key: None,
        request: HttpRequest {
            url: format!("/items/{id}"),
            method: "POST".into(),
            headers,
            body: Some(Body::Json(serde_json::json!({ "id": id, "v": 1 }))),
        },
        retry_on_failure: true,
        max_retention_time: None,
        depends_on: None,
    }
}

pub trait NewTaskExt {
    fn priority(self, priority: Priority) -> Self;
    fn key(self, key: &str) -> Self;
    fn url(self, url: &str) -> Self;
    fn version(self, v: u32) -> Self;
    fn without_retry(self) -> Self;
}

impl NewTaskExt for NewTask {
    fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }
    fn key(mut self, key: &str) -> Self {
        self.ordering_key = Some(key.into());
        self.request.headers.insert("x-key".into(), key.into());
        self
    }
    fn url(mut self, url: &str) -> Self {
        self.request.url = url.into();
        self
    }
    fn version(mut self, v: u32) -> Self {
        self.request.body = Some(Body::Json(
            serde_json::json!({ "id": self.id.clone(), "v": v }),
        ));
        self
    }
    fn without_retry(mut self) -> Self {
        self.retry_on_failure = false;
        self
    }
}

pub fn id_of(request: &HttpRequest) -> String {
    request.headers["x-id"].clone()
}

pub fn key_of(request: &HttpRequest) -> String {
    request
        .headers
        .get("x-key")
        .cloned()
        .unwrap_or_else(|| id_of(request))
}

pub fn version_of(request: &HttpRequest) -> u64 {
    match &request.body {
        Some(Body::Json(value)) => value["v"].as_u64().unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

pub fn answer(status: u16) -> Result<HttpResponse, TransportError> {
    Ok(HttpResponse::new(status))
}

pub fn answer_with_retry_after(status: u16, value: &str) -> Result<HttpResponse, TransportError> {
    let mut response = HttpResponse::new(status);
    response
        .headers
        .insert("retry-after".into(), value.to_owned());
    Ok(response)
}

pub fn network_down() -> Result<HttpResponse, TransportError> {
    Err(TransportError::Network("connection refused".into()))
}

impl Bench {
    pub fn register(&self, task: NewTask) -> tidesync::engine::Task {
        block_on(self.outbox.register(task)).expect("register")
    }

    pub fn flush(&self) -> tidesync::engine::FlushReport {
        block_on(self.outbox.flush()).expect("flush")
    }

    /// Flushes, then moves the clock to the next wakeup, until nothing is
    /// left to do (or `rounds` flushes ran).
    pub fn drive(&self, rounds: usize) {
        for _ in 0..rounds {
            let report = self.flush();
            if report.remaining == 0 {
                return;
            }
            match report.next_wakeup_at {
                Some(at) if at > self.clock.now() => self.clock.set(at),
                Some(_) => {}
                None => return,
            }
        }
        panic!("the outbox did not settle in {rounds} flushes");
    }

    pub fn sent_ids(&self) -> Vec<String> {
        self.transport
            .sent
            .borrow()
            .iter()
            .map(|(r, _)| id_of(r))
            .collect()
    }

    pub fn sent_count(&self) -> usize {
        self.transport.sent.borrow().len()
    }

    pub fn sent_header(&self, index: usize, name: &str) -> Option<String> {
        self.transport.sent.borrow()[index]
            .0
            .headers
            .get(name)
            .cloned()
    }

    pub fn respond(
        &self,
        responder: impl FnMut(&HttpRequest, Millis) -> Result<HttpResponse, TransportError> + 'static,
    ) {
        self.transport.respond_with(responder);
    }

    /// Answers with `statuses` in turn (then 200), whatever the request.
    pub fn respond_in_turn(&self, statuses: &[u16]) {
        let mut script = std::collections::VecDeque::from(statuses.to_vec());
        self.respond(move |_, _| answer(script.pop_front().unwrap_or(200)));
    }

    /// Wraps a responder so that every answer also checks that no other
    /// request of the same ordering key is in flight; returns the highest
    /// number of same-key requests seen in flight together.
    pub fn respond_watching_keys(
        &self,
        mut responder: impl FnMut(&HttpRequest, Millis) -> Result<HttpResponse, TransportError>
            + 'static,
    ) -> Rc<Cell<usize>> {
        let worst = Rc::new(Cell::new(0));
        let seen = worst.clone();
        let transport: Weak<ScriptedTransport> = Rc::downgrade(&self.transport);
        let mut finished: HashMap<String, usize> = HashMap::new();
        self.respond(move |request, now| {
            let key = key_of(request);
            let transport = transport.upgrade().unwrap();
            let started = transport
                .sent
                .borrow()
                .iter()
                .filter(|(r, _)| key_of(r) == key)
                .count();
            let done = finished.entry(key).or_default();
            seen.set(seen.get().max(started - *done));
            *done += 1;
            responder(request, now)
        });
        worst
    }

    pub fn events_named(&self, name: &str) -> Vec<Event> {
        self.events
            .events
            .borrow()
            .iter()
            .filter(|e| e.name() == name)
            .cloned()
            .collect()
    }

    pub fn failed_ids(&self) -> Vec<String> {
        block_on(self.outbox.list_failed())
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect()
    }

    pub fn state_of(&self, id: &str) -> Option<TaskState> {
        block_on(self.outbox.task_status(id))
            .unwrap()
            .map(|s| s.state)
    }
}

/// Options for the breaker tests: retries every millisecond without jitter,
/// a breaker that opens after three failures with a short cooldown.
pub fn breaker_options() -> OutboxOptions {
    OutboxOptions {
        retry: RetryOptions {
            max_retries: 100,
            base_delay: 1.0,
            max_delay: 1.0,
            backoff_multiplier: 1.0,
            jitter: false,
        },
        circuit_breaker: BreakerOptions {
            failure_threshold: 3,
            cooldown: 1000.0,
            max_cooldown: 4000.0,
        },
        ..OutboxOptions::default()
    }
}
