#![cfg(not(target_arch = "wasm32"))]
//! Property: whatever the server answers (200, 503, 422, a network error,
//! 401 until the app sets a new token) and however tasks are registered
//! (priorities, ordering keys, re-registrations, bursts in one tick,
//! registrations racing a flush), once the outbox has been driven to rest
//! every registered id has ended exactly once, either delivered (a 2xx for
//! its final payload) or in the dead letters; no payload is delivered
//! twice; and no two requests of one ordering key are ever in flight
//! together.

use futures::executor::block_on;
use futures::future::{join, join_all};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use tidesync::engine::time::Millis;
use tidesync::engine::{
    Body, Clock, Event, HttpRequest, HttpResponse, NewTask, Outbox, OutboxOptions, OutboxPorts,
    Priority, RetryOptions, StoreError, TransportError,
};
use tidesync::store::MemoryStore;
use tidesync::testing::{
    LocalLock, ManualClock, QueuedTokens, RecordingEvents, ScriptedTransport, TestPorts,
};

const T0: Millis = 1_764_000_000_000.0;
const IDS: u8 = 10;

#[derive(Clone, Copy, Debug)]
enum Reply {
    Ok,
    Unavailable,
    Invalid,
    NetworkDown,
    Unauthorized,
}

#[derive(Clone, Copy, Debug)]
struct Registration {
    id: u8,
    priority: Priority,
}

#[derive(Clone, Debug)]
enum Step {
    Register(Registration),
    /// Registrations made in one tick (group commit).
    Burst(Vec<Registration>),
    /// A registration whose commit lands while a flush is running.
    RegisterDuringFlush(Registration),
    Flush,
    Advance(u32),
    GoOnline,
    SetToken,
    /// A flush during which the store starts refusing writes after the
    /// given number of answers (an aborted IndexedDB transaction, a full
    /// quota); the store recovers after the flush.
    FlushWithStoreFailure(usize),
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        4 => Just(Reply::Ok),
        3 => Just(Reply::Unavailable),
        1 => Just(Reply::Invalid),
        2 => Just(Reply::NetworkDown),
        1 => Just(Reply::Unauthorized),
    ]
}

fn registration() -> impl Strategy<Value = Registration> {
    (
        0..IDS,
        prop_oneof![
            Just(Priority::High),
            Just(Priority::Normal),
            Just(Priority::Low)
        ],
    )
        .prop_map(|(id, priority)| Registration { id, priority })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => registration().prop_map(Step::Register),
        2 => prop::collection::vec(registration(), 1..12).prop_map(Step::Burst),
        2 => registration().prop_map(Step::RegisterDuringFlush),
        4 => Just(Step::Flush),
        2 => (0u32..120_000).prop_map(Step::Advance),
        1 => Just(Step::GoOnline),
        1 => Just(Step::SetToken),
    ]
}

fn step_with_store_failures() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => step(),
        1 => (0usize..4).prop_map(Step::FlushWithStoreFailure),
    ]
}

/// What the server saw: one line per answered request.
#[derive(Clone, Debug)]
struct Answered {
    id: String,
    version: u64,
    idempotency_key: String,
    delivered: bool,
}

struct World {
    outbox: Outbox<TestPorts>,
    store: Rc<MemoryStore>,
    transport: Rc<ScriptedTransport>,
    clock: Rc<ManualClock>,
    events: Rc<RecordingEvents>,
    answered: Rc<RefCell<Vec<Answered>>>,
    worst_key_overlap: Rc<Cell<usize>>,
    /// The payload version each id was last registered with.
    final_version: RefCell<BTreeMap<String, u64>>,
    next_version: Cell<u64>,
    tokens_set: Cell<u32>,
    /// Answers left before the store starts failing, when armed.
    store_fails_after: Rc<Cell<Option<usize>>>,
}

fn id_name(id: u8) -> String {
    format!("task-{id}")
}

/// Ids share ordering keys in threes; the last ones have none (their own).
fn ordering_key(id: u8) -> Option<String> {
    (id < 6).then(|| format!("key-{}", id % 3))
}

fn field(request: &HttpRequest, name: &str) -> String {
    request.headers[name].clone()
}

fn version_of(request: &HttpRequest) -> u64 {
    match &request.body {
        Some(Body::Json(value)) => value["v"].as_u64().unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

impl World {
    fn new(concurrency: usize, max_retries: u32, replies: Vec<Reply>) -> Self {
        let store = Rc::new(MemoryStore::new());
        let clock = Rc::new(ManualClock::new(T0));
        let transport = Rc::new(ScriptedTransport::new(clock.clone()));
        transport.latency.set(25.0);
        let events = Rc::new(RecordingEvents::default());
        let options = OutboxOptions {
            concurrency,
            retry: RetryOptions {
                max_retries,
                ..RetryOptions::default()
            },
            ..OutboxOptions::default()
        };
        let outbox = block_on(Outbox::<TestPorts>::open(
            OutboxPorts {
                store: store.clone(),
                transport: transport.clone(),
                clock: clock.clone(),
                locks: Rc::new(LocalLock::default()),
                events: events.clone(),
                tokens: Rc::new(QueuedTokens::default()),
            },
            options,
            Some("token-0".into()),
        ))
        .unwrap();

        let answered = Rc::new(RefCell::new(Vec::new()));
        let worst_key_overlap = Rc::new(Cell::new(0));
        let mut script = VecDeque::from(replies);
        let mut finished_per_key: HashMap<String, usize> = HashMap::new();
        let log = answered.clone();
        let worst = worst_key_overlap.clone();
        let sent_log = Rc::downgrade(&transport);
        let store_fails_after = Rc::new(Cell::new(None));
        let countdown = store_fails_after.clone();
        let failing_store = store.clone();
        transport.respond_with(move |request, _| {
            match countdown.get() {
                Some(0) => {
                    *failing_store.fail_writes.borrow_mut() =
                        Some(StoreError::Unavailable("transaction aborted".into()));
                    countdown.set(None);
                }
                Some(n) => countdown.set(Some(n - 1)),
                None => {}
            }
            let key = field(request, "x-key");
            let started = sent_log
                .upgrade()
                .unwrap()
                .sent
                .borrow()
                .iter()
                .filter(|(r, _)| field(r, "x-key") == key)
                .count();
            let finished = finished_per_key.entry(key).or_default();
            worst.set(worst.get().max(started - *finished));
            *finished += 1;

            // Like the protocol's server, a replay of an operation already
            // accepted gets the same answer again.
            let idempotency_key = field(request, "Idempotency-Key");
            let replayed = log
                .borrow()
                .iter()
                .any(|a: &Answered| a.delivered && a.idempotency_key == idempotency_key);
            let reply = if replayed {
                Reply::Ok
            } else {
                script.pop_front().unwrap_or(Reply::Ok)
            };
            let result = match reply {
                Reply::Ok => Ok(HttpResponse::new(200)),
                Reply::Unavailable => Ok(HttpResponse::new(503)),
                Reply::Invalid => Ok(HttpResponse::new(422)),
                Reply::Unauthorized => Ok(HttpResponse::new(401)),
                Reply::NetworkDown => Err(TransportError::Network("unreachable".into())),
            };
            if let Ok(response) = &result {
                log.borrow_mut().push(Answered {
                    id: field(request, "x-id"),
                    version: version_of(request),
                    idempotency_key: field(request, "Idempotency-Key"),
                    delivered: (200..300).contains(&response.status),
                });
            }
            result
        });

        Self {
            outbox,
            store,
            transport,
            clock,
            events,
            answered,
            worst_key_overlap,
            final_version: RefCell::new(BTreeMap::new()),
            next_version: Cell::new(1),
            tokens_set: Cell::new(0),
            store_fails_after,
        }
    }

    /// Builds the task for a registration and records its payload version
    /// as the id's latest.
    fn new_task(&self, registration: Registration) -> NewTask {
        let id = id_name(registration.id);
        let version = self.next_version.get();
        self.next_version.set(version + 1);
        self.final_version.borrow_mut().insert(id.clone(), version);
        let key = ordering_key(registration.id);
        let mut headers = BTreeMap::new();
        headers.insert("x-id".to_owned(), id.clone());
        headers.insert(
            "x-key".to_owned(),
            key.clone().unwrap_or_else(|| id.clone()),
        );
        NewTask {
            id: id.clone(),
            priority: registration.priority,
            ordering_key: key,
            request: HttpRequest {
                url: format!("/items/{id}"),
                method: "PUT".into(),
                headers,
                body: Some(Body::Json(serde_json::json!({ "id": id, "v": version }))),
            },
            retry_on_failure: true,
            max_retention_time: None,
            depends_on: None,
        }
    }

    fn set_token(&self) {
        self.tokens_set.set(self.tokens_set.get() + 1);
        self.outbox
            .set_token(Some(format!("token-{}", self.tokens_set.get())));
    }

    fn run(&self, step: &Step) {
        match step {
            Step::Register(r) => {
                block_on(self.outbox.register(self.new_task(*r))).unwrap();
            }
            Step::Burst(rs) => {
                let tasks: Vec<NewTask> = rs.iter().map(|r| self.new_task(*r)).collect();
                for result in block_on(join_all(tasks.into_iter().map(|t| self.outbox.register(t))))
                {
                    result.unwrap();
                }
            }
            Step::RegisterDuringFlush(r) => {
                let task = self.new_task(*r);
                let (registered, flushed) =
                    block_on(join(self.outbox.register(task), self.outbox.flush()));
                registered.unwrap();
                flushed.unwrap();
            }
            Step::Flush => {
                block_on(self.outbox.flush()).unwrap();
            }
            Step::Advance(ms) => self.clock.advance(*ms as Millis),
            Step::GoOnline => {
                self.outbox.set_online(true);
                block_on(self.outbox.flush()).unwrap();
            }
            Step::SetToken => {
                if self.outbox.status().auth_required {
                    self.set_token();
                }
            }
            Step::FlushWithStoreFailure(after) => {
                self.store_fails_after.set(Some(*after));
                // The flush reports the store's error, or ends before it hit.
                let _ = block_on(self.outbox.flush());
                self.store_fails_after.set(None);
                *self.store.fail_writes.borrow_mut() = None;
            }
        }
    }

    /// Flushes, sets a token when asked for one, and moves the clock to the
    /// next wakeup, until the outbox is empty.
    fn drive_to_rest(&self) -> Result<(), TestCaseError> {
        for _ in 0..400 {
            let report = block_on(self.outbox.flush()).unwrap();
            if self.outbox.status().auth_required {
                self.set_token();
                continue;
            }
            if report.remaining == 0 {
                return Ok(());
            }
            match report.next_wakeup_at {
                Some(at) if at > self.clock.now() => self.clock.set(at),
                Some(_) => {}
                None => {
                    return Err(TestCaseError::fail(format!(
                        "{} tasks left and no wakeup: {:?}",
                        report.remaining,
                        self.outbox.status()
                    )))
                }
            }
        }
        Err(TestCaseError::fail("the outbox did not come to rest"))
    }
}

/// Every final payload delivered once (or, when `replays` are allowed
/// because the store lost acknowledgements, at least once and always under
/// one Idempotency-Key) or dead-lettered, never both.
fn check_every_task_ended(world: &World, replays: bool) -> Result<(), TestCaseError> {
    prop_assert_eq!(world.store.task_count(), 0, "tasks left in the store");
    let status = world.outbox.status();
    prop_assert_eq!(status.pending_count, 0);
    prop_assert_eq!(status.in_flight_count, 0);

    let answered = world.answered.borrow();
    let dead: BTreeMap<String, u64> = block_on(world.outbox.list_failed())
        .unwrap()
        .into_iter()
        .map(|f| (f.id.clone(), version_of(&f.task.request)))
        .collect();
    for (id, version) in world.final_version.borrow().iter() {
        let deliveries = answered
            .iter()
            .filter(|a| a.delivered && &a.id == id && a.version == *version)
            .count();
        let dead_lettered = dead.get(id) == Some(version);
        prop_assert!(
            deliveries <= 1 || replays,
            "{} v{} delivered {} times",
            id,
            version,
            deliveries
        );
        prop_assert!(
            (deliveries >= 1) != dead_lettered,
            "{} v{}: delivered {} times, dead-lettered: {}",
            id,
            version,
            deliveries,
            dead_lettered
        );
    }

    let mut per_idempotency_key: HashMap<&str, usize> = HashMap::new();
    for a in answered.iter().filter(|a| a.delivered) {
        *per_idempotency_key.entry(&a.idempotency_key).or_default() += 1;
    }
    prop_assert!(
        replays || per_idempotency_key.values().all(|n| *n == 1),
        "an Idempotency-Key was delivered twice"
    );
    // A payload has one Idempotency-Key, on every attempt.
    let mut key_of_payload: HashMap<(&str, u64), &str> = HashMap::new();
    for a in answered.iter() {
        let key = key_of_payload
            .entry((&a.id, a.version))
            .or_insert(&a.idempotency_key);
        prop_assert_eq!(*key, a.idempotency_key.as_str());
    }

    let completions_of_final = world
        .events
        .events
        .borrow()
        .iter()
        .filter(|e| match e {
            Event::Complete { task, .. } => {
                world.final_version.borrow().get(&task.id) == Some(&version_of(&task.request))
            }
            _ => false,
        })
        .count();
    let delivered_finals = world
        .final_version
        .borrow()
        .iter()
        .filter(|(id, v)| {
            answered
                .iter()
                .any(|a| a.delivered && &a.id == *id && a.version == **v)
        })
        .count();
    if !replays {
        prop_assert_eq!(
            completions_of_final,
            delivered_finals,
            "one sync:complete each"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_task_is_lost_or_delivered_twice(
        concurrency in 1usize..=4,
        max_retries in 0u32..=4,
        replies in prop::collection::vec(reply(), 0..60),
        steps in prop::collection::vec(step(), 1..30),
    ) {
        let world = World::new(concurrency, max_retries, replies);

        for step in &steps {
            world.run(step);
        }
        world.drive_to_rest()?;

        check_every_task_ended(&world, false)?;
        prop_assert!(world.worst_key_overlap.get() <= 1,
            "two requests of one ordering key were in flight together");
        prop_assert!(world.transport.max_in_flight.get() <= concurrency);
    }

    #[test]
    fn store_failures_mid_flush_lose_nothing_and_replay_under_the_same_key(
        concurrency in 1usize..=4,
        replies in prop::collection::vec(reply(), 0..40),
        steps in prop::collection::vec(step_with_store_failures(), 1..30),
    ) {
        let world = World::new(concurrency, 3, replies);

        for step in &steps {
            world.run(step);
        }
        world.drive_to_rest()?;

        check_every_task_ended(&world, true)?;
        prop_assert!(world.worst_key_overlap.get() <= 1,
            "two requests of one ordering key were in flight together");
    }

    #[test]
    fn a_key_runs_its_payloads_in_registration_order(
        replies in prop::collection::vec(reply(), 0..40),
        registrations in prop::collection::vec(registration(), 1..25),
    ) {
        let world = World::new(4, 3, replies);
        let tasks: Vec<NewTask> = registrations.iter().map(|r| world.new_task(*r)).collect();
        for result in block_on(join_all(tasks.into_iter().map(|t| world.outbox.register(t)))) {
            result.unwrap();
        }

        world.drive_to_rest()?;

        // Per ordering key, the first time each id is sent follows the
        // order of first registration (re-registrations keep their place).
        let mut first_registration: Vec<String> = Vec::new();
        for r in &registrations {
            let id = id_name(r.id);
            if !first_registration.contains(&id) {
                first_registration.push(id);
            }
        }
        let mut first_sent: Vec<String> = Vec::new();
        for (request, _) in world.transport.sent.borrow().iter() {
            let id = field(request, "x-id");
            if !first_sent.contains(&id) {
                first_sent.push(id);
            }
        }
        for key in ["key-0", "key-1", "key-2"] {
            let of_key = |ids: &[String]| -> Vec<String> {
                ids.iter()
                    .filter(|id| field_key(id) == key)
                    .cloned()
                    .collect()
            };
            prop_assert_eq!(of_key(&first_sent), of_key(&first_registration), "{}", key);
        }
        check_every_task_ended(&world, false)?;
    }
}

fn field_key(id: &str) -> String {
    let n: u8 = id.trim_start_matches("task-").parse().unwrap();
    ordering_key(n).unwrap_or_else(|| id.to_owned())
}
