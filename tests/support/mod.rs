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
pub use tidesync::engine::ports::{ConflictResolver, RecordStore, Replica};
pub use tidesync::engine::replication::replicator::{mutation_task_id, ReplicaPorts};
pub use tidesync::engine::replication::{
    LocalRecord, PullReport, RecordStatus, ReplicationError, ReplicationOptions, Replicator,
    Strategy,
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

// ----- the ports -----

pub const T0: Millis = 1_764_000_000_000.0;
pub const SERVER: &str = "https://sync.test";

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

// ----- a fake of the push/pull server -----

#[derive(Clone, Debug)]
pub struct ServerRecord {
    pub data: Map<String, Value>,
    pub version: i64,
    pub updated_at: Millis,
    /// When the edit that made this version was made (`changedAt`).
    pub changed_at: Millis,
    pub is_deleted: bool,
    /// Position in the change log (the pull cursor is the last one seen).
    pub seq: u64,
}

/// The server's side of the protocol, kept to what the client relies on:
/// versions, a change log for exact cursors, per-mutation results (a stale
/// `baseVersion` is a conflict the server settles for itself), duplicates,
/// and the verify summary. Tests can make it reject a record, drop a result,
/// fail a pull call, or go down.
#[derive(Default)]
pub struct FakeServer {
    pub records: BTreeMap<(String, String), ServerRecord>,
    pub seq: u64,
    pub seen_mutations: HashSet<String>,
    /// Record ids whose mutations are rejected, with the error message.
    pub reject: HashMap<String, String>,
    /// Record ids whose results the push answer leaves out.
    pub drop_results: HashSet<String>,
    /// Pull calls (counted from 1) that fail with a network error.
    pub fail_pull_calls: HashSet<usize>,
    pub pull_calls: usize,
    /// Every call fails with a network error.
    pub down: bool,
    /// Pushes are applied, but their answers are lost on the way back.
    pub lose_push_answers: bool,
    /// Every result answered, in order: (record id, status).
    pub answered: Vec<(String, protocol::MutationStatus)>,
}

impl FakeServer {
    /// Another device writes a record at `at`: a new version.
    pub fn write(&mut self, entity_type: &str, id: &str, data: Value, at: Millis) -> i64 {
        self.seq += 1;
        let record = self
            .records
            .entry((entity_type.to_owned(), id.to_owned()))
            .or_insert(ServerRecord {
                data: Map::new(),
                version: 0,
                updated_at: at,
                changed_at: at,
                is_deleted: false,
                seq: 0,
            });
        record.data = data.as_object().cloned().expect("an object");
        record.version += 1;
        record.updated_at = at;
        record.changed_at = at;
        record.is_deleted = false;
        record.seq = self.seq;
        record.version
    }

    /// Another device deletes a record: a tombstone with a new version.
    pub fn delete(&mut self, entity_type: &str, id: &str, at: Millis) {
        self.seq += 1;
        let record = self
            .records
            .get_mut(&(entity_type.to_owned(), id.to_owned()))
            .expect("a server record");
        record.version += 1;
        record.is_deleted = true;
        record.updated_at = at;
        record.changed_at = at;
        record.seq = self.seq;
    }

    /// The record vanishes without a tombstone (a purge, a restore).
    pub fn purge(&mut self, entity_type: &str, id: &str) {
        self.records
            .remove(&(entity_type.to_owned(), id.to_owned()));
    }

    pub fn get(&self, entity_type: &str, id: &str) -> ServerRecord {
        self.records[&(entity_type.to_owned(), id.to_owned())].clone()
    }

    pub fn json(&self, entity_type: &str, id: &str) -> Value {
        let record = self.get(entity_type, id);
        let mut object = record.data.clone();
        object.insert("id".into(), json!(id));
        object.insert("version".into(), json!(record.version));
        object.insert("updatedAt".into(), json!(to_iso(record.updated_at)));
        object.insert("changedAt".into(), json!(to_iso(record.changed_at)));
        object.insert("isDeleted".into(), json!(record.is_deleted));
        Value::Object(object)
    }

    pub fn answer(
        &mut self,
        request: &HttpRequest,
        now: Millis,
    ) -> Result<HttpResponse, TransportError> {
        if self.down {
            return Err(TransportError::Network("connection refused".into()));
        }
        let body = match &request.body {
            Some(Body::Json(value)) => value.clone(),
            _ => Value::Null,
        };
        let path = request.url.strip_prefix(SERVER).unwrap_or(&request.url);
        let answer = match path {
            protocol::PUSH_PATH => {
                let answer = self.push(serde_json::from_value(body).expect("a push"), now);
                if self.lose_push_answers {
                    return Err(TransportError::Network("connection reset".into()));
                }
                answer
            }
            protocol::PULL_PATH => {
                self.pull_calls += 1;
                if self.fail_pull_calls.contains(&self.pull_calls) {
                    return Err(TransportError::Network("connection reset".into()));
                }
                self.pull(serde_json::from_value(body).expect("a pull"), now)
            }
            protocol::VERIFY_PATH => {
                self.verify(serde_json::from_value(body).expect("a verify"), now)
            }
            // A plain outbox task: the app's own endpoint.
            _ => return Ok(HttpResponse::new(204)),
        };
        let mut response = HttpResponse::new(200);
        response.body = ResponseBody::Json(answer);
        Ok(response)
    }

    pub fn push(&mut self, push: protocol::PushRequest, now: Millis) -> Value {
        let mut results = Vec::new();
        for mutation in push.mutations {
            let id = mutation.id.clone().expect("the client names its records");
            if self.drop_results.contains(&id) {
                continue;
            }
            let result = |status, record: Option<Value>| protocol::MutationResult {
                mutation_id: Some(mutation.mutation_id.clone()),
                entity_type: Some(mutation.entity_type.clone()),
                id: Some(id.clone()),
                status,
                record,
                resolution: None,
                winner: None,
                error: None,
            };
            let key = (mutation.entity_type.clone(), id.clone());
            if self.seen_mutations.contains(&mutation.mutation_id) {
                let record = self.json(&key.0, &key.1);
                results.push(result(protocol::MutationStatus::Duplicate, Some(record)));
                continue;
            }
            if let Some(message) = self.reject.get(&id) {
                results.push(protocol::MutationResult {
                    error: Some(protocol::ErrorBody {
                        code: "validation".into(),
                        message: message.clone(),
                        details: None,
                    }),
                    ..result(protocol::MutationStatus::Rejected, None)
                });
                continue;
            }
            self.seen_mutations.insert(mutation.mutation_id.clone());
            let current = self.records.get(&key).map_or(0, |r| r.version);
            if current > 0 && mutation.base_version.is_some_and(|base| base != current) {
                // Stale: the server keeps its copy (server-wins on its side).
                let record = self.json(&key.0, &key.1);
                results.push(protocol::MutationResult {
                    resolution: Some(protocol::Strategy::ServerWins),
                    winner: Some(protocol::Winner::Server),
                    ..result(protocol::MutationStatus::Conflict, Some(record))
                });
                continue;
            }
            match mutation.op {
                protocol::Op::Upsert => {
                    self.write(&key.0, &key.1, mutation.data.clone().expect("data"), now);
                }
                protocol::Op::Delete => self.delete(&key.0, &key.1, now),
            }
            // Stored now, edited when the client says (as the reference
            // server keeps `changed_at`).
            if let Some(edited) = mutation
                .client_timestamp
                .as_deref()
                .and_then(tidesync::engine::time::from_iso)
            {
                if let Some(record) = self.records.get_mut(&key) {
                    record.changed_at = edited.min(now);
                }
            }
            let record = self.json(&key.0, &key.1);
            results.push(result(protocol::MutationStatus::Applied, Some(record)));
        }
        self.answered.extend(
            results
                .iter()
                .map(|r| (r.id.clone().unwrap_or_default(), r.status)),
        );
        serde_json::to_value(protocol::PushResponse {
            success: true,
            data: Vec::new(),
            results,
            cursor: None,
            sync_timestamp: to_iso(now),
        })
        .unwrap()
    }

    pub fn pull(&mut self, pull: protocol::PullRequest, now: Millis) -> Value {
        let after: u64 = pull.cursor.as_deref().map_or(0, |c| c.parse().unwrap());
        let limit = pull.limit.unwrap_or(100) as usize;
        let mut changes: Vec<(&(String, String), &ServerRecord)> = self
            .records
            .iter()
            .filter(|((t, _), r)| pull.entity_types.contains(t) && r.seq > after)
            .collect();
        changes.sort_by_key(|(_, r)| r.seq);
        let has_more = changes.len() > limit;
        changes.truncate(limit);
        let cursor = changes.last().map_or(after, |(_, r)| r.seq);
        let mut data: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for ((entity_type, id), _) in &changes {
            data.entry(entity_type.clone())
                .or_default()
                .push(self.json(entity_type, id));
        }
        serde_json::to_value(protocol::PullResponse {
            success: true,
            data,
            cursor: Some(cursor.to_string()),
            has_more,
            sync_timestamp: to_iso(now),
        })
        .unwrap()
    }

    pub fn verify(&mut self, verify: protocol::VerifyRequest, now: Millis) -> Value {
        let mut data = BTreeMap::new();
        for entity_type in verify.entity_types {
            let live: Vec<(&str, i64)> = self
                .records
                .iter()
                .filter(|((t, _), r)| *t == entity_type && !r.is_deleted)
                .map(|((_, id), r)| (id.as_str(), r.version))
                .collect();
            data.insert(
                entity_type,
                protocol::TypeSummary {
                    count: live.len() as u64,
                    checksum: protocol::record_checksum(live),
                },
            );
        }
        serde_json::to_value(protocol::VerifyResponse {
            success: true,
            data,
            sync_timestamp: to_iso(now),
        })
        .unwrap()
    }
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
                retry: RetryOptions {
                    jitter: false,
                    ..RetryOptions::default()
                },
                circuit_breaker: BreakerOptions {
                    failure_threshold: 1_000,
                    ..BreakerOptions::default()
                },
                server_url: Some(SERVER.into()),
                ..OutboxOptions::default()
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
            records.clone(),
            transport.clone(),
            clock.clone(),
            events.clone(),
            on_conflict.clone(),
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

pub fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("an object")
}

pub fn data(record: &LocalRecord) -> Value {
    Value::Object(record.data.clone())
}

impl Bench {
    /// `put` as the API does it: write locally, then hand the task to the outbox.
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
        block_on(self.records.get_meta_text("pullCursor")).unwrap()
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
