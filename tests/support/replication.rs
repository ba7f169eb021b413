//! The replication bench shared by the replication spec files: a device
//! (outbox + replicator over the in-memory record store) against a small
//! fake of the push/pull server answering through the scripted transport.
#![allow(dead_code, unused_imports)]

pub use futures::executor::block_on;
pub use futures::future::join;
pub use serde_json::{json, Map, Value};
pub use std::cell::{Cell, RefCell};
pub use std::collections::{BTreeMap, HashMap, HashSet};
pub use std::rc::Rc;
pub use tidesync::engine::events::ConflictEvent;
pub use tidesync::engine::ports::{ConflictResolver, RecordStore, Replica, PULL_CURSOR_KEY};
pub use tidesync::engine::replication::replicator::{mutation_task_id, ReplicaPorts};
pub use tidesync::engine::replication::{
    LocalRecord, PullReport, RecordStatus, ReplicationError, ReplicationOptions, Replicator,
    ReplicatorPorts, Strategy,
};
pub use tidesync::engine::time::{to_iso, Millis};
pub use tidesync::engine::{
    Body, BreakerOptions, Clock, Event, FailedTask, FlushReport, HttpRequest, HttpResponse,
    NewTask, Outbox, OutboxOptions, OutboxPorts, Ports, Priority, ResponseBody, RetryOptions,
    Store, StoreError, Task, TaskKind, TransportError,
};
pub use tidesync::store::MemoryRecords;
pub use tidesync::testing::{
    LocalLock, ManualClock, QueuedTokens, RecordingEvents, ScriptedTransport, YieldOnce,
};
pub use tidesync_protocol as protocol;

pub use super::fake_server::{FakeServer, ServerRecord, SERVER};

// ----- the ports -----

pub const T0: Millis = 1_764_000_000_000.0;

/// The replicator's ports: everything in memory, conflicts settled by the
/// strategy unless a test installs an `onConflict` callback.
pub struct MemoryReplica;

impl ReplicaPorts for MemoryReplica {
    type Records = Rc<MemoryRecords>;
    type Transport = Rc<ScriptedTransport>;
    type Clock = Rc<ManualClock>;
    type Events = Rc<RecordingEvents>;
    type Resolver = Rc<OnConflict>;
}

pub type Callback = Box<dyn Fn(&Value, &Value) -> Result<Map<String, Value>, String>>;

/// The app's `onConflict(local, remote)`: unset by default.
#[derive(Default)]
pub struct OnConflict {
    pub callback: RefCell<Option<Callback>>,
    pub calls: Cell<usize>,
}

impl ConflictResolver for OnConflict {
    fn is_set(&self) -> bool {
        self.callback.borrow().is_some()
    }

    async fn resolve(
        &self,
        _entity_type: &str,
        local: &Value,
        remote: &Value,
    ) -> Result<Map<String, Value>, String> {
        self.calls.set(self.calls.get() + 1);
        match self.callback.borrow().as_ref() {
            Some(callback) => callback(local, remote),
            None => Err("no callback".into()),
        }
    }
}

/// The outbox's task store: the tasks the replicator writes next to the
/// records (`MemoryRecords.tasks`), so the outbox loads exactly those.
pub struct SharedTasks(Rc<MemoryRecords>);

impl Store for SharedTasks {
    async fn load_tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.0.tasks.load_tasks().await
    }
    async fn register_tasks(&self, tasks: Vec<Task>) -> Result<Vec<Task>, StoreError> {
        self.0.tasks.register_tasks(tasks).await
    }
    async fn update_task(&self, task: &Task) -> Result<bool, StoreError> {
        self.0.tasks.update_task(task).await
    }
    async fn complete_task(&self, id: &str, revision: u64) -> Result<bool, StoreError> {
        self.0.tasks.complete_task(id, revision).await
    }
    async fn complete_tasks(&self, done: &[(String, u64)]) -> Result<(), StoreError> {
        self.0.tasks.complete_tasks(done).await
    }
    async fn dead_letter(&self, failed: &FailedTask) -> Result<bool, StoreError> {
        self.0.tasks.dead_letter(failed).await
    }
    async fn list_failed(&self) -> Result<Vec<FailedTask>, StoreError> {
        self.0.tasks.list_failed().await
    }
    async fn count_failed(&self) -> Result<u32, StoreError> {
        self.0.tasks.count_failed().await
    }
    async fn requeue_failed(&self, id: &str, now: Millis) -> Result<Option<Task>, StoreError> {
        self.0.tasks.requeue_failed(id, now).await
    }
    async fn discard_failed(&self, id: &str) -> Result<bool, StoreError> {
        self.0.tasks.discard_failed(id).await
    }
    async fn put_answer(&self, id: &str, answer: &Value) -> Result<(), StoreError> {
        self.0.tasks.put_answer(id, answer).await
    }
    async fn get_answer(&self, id: &str) -> Result<Option<Value>, StoreError> {
        self.0.tasks.get_answer(id).await
    }
    async fn delete_answer(&self, id: &str) -> Result<(), StoreError> {
        self.0.tasks.delete_answer(id).await
    }
    async fn restore_tasks(&self, tasks: &[Task]) -> Result<(), StoreError> {
        self.0.tasks.restore_tasks(tasks).await
    }
}

/// The outbox's ports: replication through the replicator above.
pub struct DevicePorts;

impl Ports for DevicePorts {
    type Replica = Rc<Replicator<MemoryReplica>>;
    type Store = SharedTasks;
    type Transport = Rc<ScriptedTransport>;
    type Clock = Rc<ManualClock>;
    type Locks = Rc<LocalLock>;
    type Events = Rc<RecordingEvents>;
    type Tokens = Rc<QueuedTokens>;
}

// ----- the test bench -----

pub struct Config {
    pub strategy: Strategy,
    pub batch_size: usize,
    pub page_size: u32,
    pub outbox: OutboxOptions,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            strategy: Strategy::ServerWins,
            batch_size: 50,
            page_size: 100,
            // Only the rule under test intervenes: no jitter, and a breaker
            // that never opens unless the test asks for one.
            outbox: OutboxOptions {
                server_url: Some(SERVER.into()),
                ..super::outbox::quiet_options()
            },
        }
    }
}

/// One device: its outbox and replicator over one record store, and the
/// server they talk to.
pub struct Bench {
    pub outbox: Outbox<DevicePorts>,
    pub replicator: Rc<Replicator<MemoryReplica>>,
    pub records: Rc<MemoryRecords>,
    pub server: Rc<RefCell<FakeServer>>,
    pub transport: Rc<ScriptedTransport>,
    pub clock: Rc<ManualClock>,
    pub events: Rc<RecordingEvents>,
    pub on_conflict: Rc<OnConflict>,
}

pub fn bench(strategy: Strategy) -> Bench {
    bench_with(Config {
        strategy,
        ..Config::default()
    })
}

pub fn bench_with(config: Config) -> Bench {
    let records = Rc::new(MemoryRecords::new());
    let clock = Rc::new(ManualClock::new(T0));
    let transport = Rc::new(ScriptedTransport::new(clock.clone()));
    let events = Rc::new(RecordingEvents::default());
    let on_conflict = Rc::new(OnConflict::default());
    let server = Rc::new(RefCell::new(FakeServer::default()));
    let answering = server.clone();
    transport.respond_with(move |request, now| answering.borrow_mut().answer(request, now));
    let replicator = Rc::new(
        block_on(Replicator::<MemoryReplica>::open(
            ReplicatorPorts {
                records: records.clone(),
                transport: transport.clone(),
                clock: clock.clone(),
                events: events.clone(),
                resolver: on_conflict.clone(),
            },
            ReplicationOptions {
                server_url: SERVER.into(),
                entity_types: vec!["task".into(), "note".into()],
                strategy: config.strategy,
                batch_size: config.batch_size,
                page_size: config.page_size,
                request_timeout: 30_000,
            },
        ))
        .expect("open the replicator"),
    );
    let mut outbox = block_on(Outbox::<DevicePorts>::open(
        OutboxPorts {
            store: SharedTasks(records.clone()),
            transport: transport.clone(),
            clock: clock.clone(),
            locks: Rc::new(LocalLock::default()),
            events: events.clone(),
            tokens: Rc::new(QueuedTokens::default()),
        },
        config.outbox,
        Some("token-a".into()),
    ))
    .expect("open the outbox");
    outbox.set_replica(replicator.clone());
    Bench {
        outbox,
        replicator,
        records,
        server,
        transport,
        clock,
        events,
        on_conflict,
    }
}

/// Another device wrote tasks `t1` … `t{count}` (`{"n": i}`) on the server.
pub fn seed_server(b: &Bench, count: usize) {
    for i in 1..=count {
        b.server_writes("task", &format!("t{i}"), json!({ "n": i }), T0);
    }
}

pub fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("an object")
}

pub fn data(record: &LocalRecord) -> Value {
    Value::Object(record.data.clone())
}

impl Bench {
    /// `put` as the API does it: write locally, then hand the task to the outbox.
    /// The device's ports, for opening another replicator over them.
    pub fn replicator_ports(&self) -> ReplicatorPorts<MemoryReplica> {
        ReplicatorPorts {
            records: self.records.clone(),
            transport: self.transport.clone(),
            clock: self.clock.clone(),
            events: self.events.clone(),
            resolver: self.on_conflict.clone(),
        }
    }

    pub fn put(&self, entity_type: &str, id: &str, fields: Value) -> LocalRecord {
        let (record, task) = block_on(self.replicator.put(
            entity_type,
            Some(id.to_owned()),
            object(fields),
        ))
        .expect("put");
        self.outbox.adopt(task);
        record
    }

    pub fn delete(&self, entity_type: &str, id: &str) -> LocalRecord {
        let (record, task) = block_on(self.replicator.delete(entity_type, id))
            .expect("delete")
            .expect("a live record");
        self.outbox.adopt(task);
        record
    }

    pub fn flush(&self) -> FlushReport {
        block_on(self.outbox.flush()).expect("flush")
    }

    /// `pull` as the API does it: tasks queued by conflict resolution go to
    /// the outbox.
    pub fn pull(&self) -> PullReport {
        let (report, requeued) = block_on(self.replicator.pull(|_| {})).expect("pull");
        for task in requeued {
            self.outbox.adopt(task);
        }
        report
    }

    /// The server's record as another device writes it.
    pub fn server_writes(&self, entity_type: &str, id: &str, fields: Value, at: Millis) -> i64 {
        self.server.borrow_mut().write(entity_type, id, fields, at)
    }

    /// The local copy, tombstones included.
    /// The record's data is `expected` on the server and here, where it is
    /// synced.
    pub fn assert_synced_everywhere(&self, entity_type: &str, id: &str, expected: &Value) {
        assert_eq!(
            &Value::Object(self.server.borrow().get(entity_type, id).data),
            expected
        );
        let local = self.record(entity_type, id);
        assert_eq!(&data(&local), expected);
        assert_eq!(local.sync_status, RecordStatus::Synced);
    }

    pub fn record(&self, entity_type: &str, id: &str) -> LocalRecord {
        self.stored(entity_type, id).expect("a local record")
    }

    pub fn stored(&self, entity_type: &str, id: &str) -> Option<LocalRecord> {
        block_on(self.records.get_record(entity_type, id)).unwrap()
    }

    pub fn query(&self, entity_type: &str) -> Vec<String> {
        block_on(self.replicator.query(entity_type))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    pub fn queued(&self) -> Vec<Task> {
        block_on(self.records.tasks.load_tasks()).unwrap()
    }

    pub fn failed(&self) -> Vec<FailedTask> {
        block_on(self.outbox.list_failed()).unwrap()
    }

    pub fn cursor(&self) -> Option<String> {
        block_on(self.records.get_meta_text(PULL_CURSOR_KEY)).unwrap()
    }

    /// The body of every push sent, in order.
    pub fn pushes(&self) -> Vec<protocol::PushRequest> {
        self.requests_to(protocol::PUSH_PATH)
            .into_iter()
            .map(|body| serde_json::from_value(body).unwrap())
            .collect()
    }

    pub fn pulls(&self) -> Vec<protocol::PullRequest> {
        self.requests_to(protocol::PULL_PATH)
            .into_iter()
            .map(|body| serde_json::from_value(body).unwrap())
            .collect()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Value> {
        self.transport
            .sent
            .borrow()
            .iter()
            .filter(|(r, _)| r.url == format!("{SERVER}{path}"))
            .map(|(r, _)| match &r.body {
                Some(Body::Json(value)) => value.clone(),
                other => panic!("unexpected body {other:?}"),
            })
            .collect()
    }

    /// The record ids of every push, in order.
    pub fn pushed_ids(&self) -> Vec<Vec<String>> {
        self.pushes()
            .iter()
            .map(|p| p.mutations.iter().map(|m| m.id.clone().unwrap()).collect())
            .collect()
    }

    pub fn conflicts(&self) -> Vec<ConflictEvent> {
        self.events
            .events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Event::Conflict(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }
}

// ----- conflicts -----

/// When the local edit and the server's edit of `task/t1` are made.
pub struct Divergence {
    pub local_at: Millis,
    pub remote_at: Millis,
}

pub const LOCAL_FIRST: Divergence = Divergence {
    local_at: T0 + 1_000.0,
    remote_at: T0 + 2_000.0,
};
pub const REMOTE_FIRST: Divergence = Divergence {
    local_at: T0 + 2_000.0,
    remote_at: T0 + 1_000.0,
};
/// Both edits made in the same millisecond (a tie).
pub const AT_THE_SAME_TIME: Divergence = Divergence {
    local_at: T0 + 1_000.0,
    remote_at: T0 + 1_000.0,
};

/// `task/t1` synced at version 1 as `{title: "draft", done: false}`; then
/// this device retitles it to "mine" (unsent) while another device marks
/// it done on the server (version 2).
pub fn diverged(b: &Bench, when: Divergence) {
    b.server_writes("task", "t1", json!({"title": "draft", "done": false}), T0);
    b.pull();
    assert_eq!(b.record("task", "t1").version, 1);
    b.clock.set(when.local_at);
    b.put("task", "t1", json!({"title": "mine", "done": false}));
    b.server_writes(
        "task",
        "t1",
        json!({"title": "draft", "done": true}),
        when.remote_at,
    );
    b.clock.set(T0 + 5_000.0);
}

/// The queued mutation of `task/t1`, as it would be sent.
pub fn queued_mutation(b: &Bench) -> Option<protocol::Mutation> {
    b.queued()
        .into_iter()
        .find(|t| t.id == mutation_task_id("task", "t1"))
        .map(|t| match t.request.body {
            Some(Body::Json(value)) => serde_json::from_value(value).unwrap(),
            other => panic!("unexpected body {other:?}"),
        })
}
