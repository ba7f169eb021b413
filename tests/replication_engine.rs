#![cfg(not(target_arch = "wasm32"))]
//! Replication, specified by example: a [`Replicator`] over the in-memory
//! record store, wired into an [`Outbox`] that sends its mutation tasks in
//! batches, against a small fake of the push/pull server answering through
//! the scripted transport. Each test sets up one situation, acts once, and
//! checks one rule of ARCHITECTURE.md ("Replication") and issue 5.

use futures::executor::block_on;
use futures::future::join;
use serde_json::{json, Map, Value};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use tidesync::engine::events::ConflictEvent;
use tidesync::engine::ports::{ConflictResolver, RecordStore, Replica};
use tidesync::engine::replication::replicator::{mutation_task_id, ReplicaPorts};
use tidesync::engine::replication::{
    LocalRecord, PullReport, RecordStatus, ReplicationError, ReplicationOptions, Replicator,
    Strategy,
};
use tidesync::engine::time::{to_iso, Millis};
use tidesync::engine::{
    Body, BreakerOptions, Clock, Event, FailedTask, FlushReport, HttpRequest, HttpResponse,
    NewTask, Outbox, OutboxOptions, Ports, Priority, ResponseBody, RetryOptions, Store, StoreError,
    Task, TaskKind, TransportError,
};
use tidesync::store::MemoryRecords;
use tidesync::testing::{
    LocalLock, ManualClock, QueuedTokens, RecordingEvents, ScriptedTransport, YieldOnce,
};
use tidesync_protocol as protocol;

// ----- the ports -----

const T0: Millis = 1_764_000_000_000.0;
const SERVER: &str = "https://sync.test";

/// The replicator's ports: everything in memory, conflicts settled by the
/// strategy unless a test installs an `onConflict` callback.
struct MemoryReplica;

impl ReplicaPorts for MemoryReplica {
    type Records = Rc<MemoryRecords>;
    type Transport = Rc<ScriptedTransport>;
    type Clock = Rc<ManualClock>;
    type Events = Rc<RecordingEvents>;
    type Resolver = Rc<OnConflict>;
}

type Callback = Box<dyn Fn(&Value, &Value) -> Result<Map<String, Value>, String>>;

/// The app's `onConflict(local, remote)`: unset by default.
#[derive(Default)]
struct OnConflict {
    callback: RefCell<Option<Callback>>,
    calls: Cell<usize>,
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
struct SharedTasks(Rc<MemoryRecords>);

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
    async fn complete_task(&self, id: &str, revision: u32) -> Result<bool, StoreError> {
        self.0.tasks.complete_task(id, revision).await
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
}

/// The outbox's ports: replication through the replicator above.
struct DevicePorts;

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
struct ServerRecord {
    data: Map<String, Value>,
    version: i64,
    updated_at: Millis,
    is_deleted: bool,
    /// Position in the change log (the pull cursor is the last one seen).
    seq: u64,
}

/// The server's side of the protocol, kept to what the client relies on:
/// versions, a change log for exact cursors, per-mutation results (a stale
/// `baseVersion` is a conflict the server settles for itself), duplicates,
/// and the verify summary. Tests can make it reject a record, drop a result,
/// fail a pull call, or go down.
#[derive(Default)]
struct FakeServer {
    records: BTreeMap<(String, String), ServerRecord>,
    seq: u64,
    seen_mutations: HashSet<String>,
    /// Record ids whose mutations are rejected, with the error message.
    reject: HashMap<String, String>,
    /// Record ids whose results the push answer leaves out.
    drop_results: HashSet<String>,
    /// Pull calls (counted from 1) that fail with a network error.
    fail_pull_calls: HashSet<usize>,
    pull_calls: usize,
    /// Every call fails with a network error.
    down: bool,
    /// Pushes are applied, but their answers are lost on the way back.
    lose_push_answers: bool,
    /// Every result answered, in order: (record id, status).
    answered: Vec<(String, protocol::MutationStatus)>,
}

impl FakeServer {
    /// Another device writes a record at `at`: a new version.
    fn write(&mut self, entity_type: &str, id: &str, data: Value, at: Millis) -> i64 {
        self.seq += 1;
        let record = self
            .records
            .entry((entity_type.to_owned(), id.to_owned()))
            .or_insert(ServerRecord {
                data: Map::new(),
                version: 0,
                updated_at: at,
                is_deleted: false,
                seq: 0,
            });
        record.data = data.as_object().cloned().expect("an object");
        record.version += 1;
        record.updated_at = at;
        record.is_deleted = false;
        record.seq = self.seq;
        record.version
    }

    /// Another device deletes a record: a tombstone with a new version.
    fn delete(&mut self, entity_type: &str, id: &str, at: Millis) {
        self.seq += 1;
        let record = self
            .records
            .get_mut(&(entity_type.to_owned(), id.to_owned()))
            .expect("a server record");
        record.version += 1;
        record.is_deleted = true;
        record.updated_at = at;
        record.seq = self.seq;
    }

    /// The record vanishes without a tombstone (a purge, a restore).
    fn purge(&mut self, entity_type: &str, id: &str) {
        self.records
            .remove(&(entity_type.to_owned(), id.to_owned()));
    }

    fn get(&self, entity_type: &str, id: &str) -> ServerRecord {
        self.records[&(entity_type.to_owned(), id.to_owned())].clone()
    }

    fn json(&self, entity_type: &str, id: &str) -> Value {
        let record = self.get(entity_type, id);
        let mut object = record.data.clone();
        object.insert("id".into(), json!(id));
        object.insert("version".into(), json!(record.version));
        object.insert("updatedAt".into(), json!(to_iso(record.updated_at)));
        object.insert("isDeleted".into(), json!(record.is_deleted));
        Value::Object(object)
    }

    fn answer(
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

    fn push(&mut self, push: protocol::PushRequest, now: Millis) -> Value {
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

    fn pull(&mut self, pull: protocol::PullRequest, now: Millis) -> Value {
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

    fn verify(&mut self, verify: protocol::VerifyRequest, now: Millis) -> Value {
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

struct Config {
    strategy: Strategy,
    batch_size: usize,
    page_size: u32,
    outbox: OutboxOptions,
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
struct Bench {
    outbox: Outbox<DevicePorts>,
    replicator: Rc<Replicator<MemoryReplica>>,
    records: Rc<MemoryRecords>,
    server: Rc<RefCell<FakeServer>>,
    transport: Rc<ScriptedTransport>,
    clock: Rc<ManualClock>,
    events: Rc<RecordingEvents>,
    on_conflict: Rc<OnConflict>,
}

fn bench(strategy: Strategy) -> Bench {
    bench_with(Config {
        strategy,
        ..Config::default()
    })
}

fn bench_with(config: Config) -> Bench {
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
        SharedTasks(records.clone()),
        transport.clone(),
        clock.clone(),
        Rc::new(LocalLock::default()),
        events.clone(),
        Rc::new(QueuedTokens::default()),
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

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("an object")
}

fn data(record: &LocalRecord) -> Value {
    Value::Object(record.data.clone())
}

impl Bench {
    /// `put` as the API does it: write locally, then hand the task to the outbox.
    fn put(&self, entity_type: &str, id: &str, fields: Value) -> LocalRecord {
        let (record, task) = block_on(self.replicator.put(
            entity_type,
            Some(id.to_owned()),
            object(fields),
        ))
        .expect("put");
        self.outbox.adopt(task);
        record
    }

    fn delete(&self, entity_type: &str, id: &str) -> LocalRecord {
        let (record, task) = block_on(self.replicator.delete(entity_type, id))
            .expect("delete")
            .expect("a live record");
        self.outbox.adopt(task);
        record
    }

    fn flush(&self) -> FlushReport {
        block_on(self.outbox.flush()).expect("flush")
    }

    /// `pull` as the API does it: tasks queued by conflict resolution go to
    /// the outbox.
    fn pull(&self) -> PullReport {
        let (report, requeued) = block_on(self.replicator.pull(|_| {})).expect("pull");
        for task in requeued {
            self.outbox.adopt(task);
        }
        report
    }

    /// The server's record as another device writes it.
    fn server_writes(&self, entity_type: &str, id: &str, fields: Value, at: Millis) -> i64 {
        self.server.borrow_mut().write(entity_type, id, fields, at)
    }

    /// The local copy, tombstones included.
    fn record(&self, entity_type: &str, id: &str) -> LocalRecord {
        self.stored(entity_type, id).expect("a local record")
    }

    fn stored(&self, entity_type: &str, id: &str) -> Option<LocalRecord> {
        block_on(self.records.get_record(entity_type, id)).unwrap()
    }

    fn query(&self, entity_type: &str) -> Vec<String> {
        block_on(self.replicator.query(entity_type))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    fn queued(&self) -> Vec<Task> {
        block_on(self.records.tasks.load_tasks()).unwrap()
    }

    fn failed(&self) -> Vec<FailedTask> {
        block_on(self.outbox.list_failed()).unwrap()
    }

    fn cursor(&self) -> Option<String> {
        block_on(self.records.get_meta_text("pullCursor")).unwrap()
    }

    /// The body of every push sent, in order.
    fn pushes(&self) -> Vec<protocol::PushRequest> {
        self.requests_to(protocol::PUSH_PATH)
            .into_iter()
            .map(|body| serde_json::from_value(body).unwrap())
            .collect()
    }

    fn pulls(&self) -> Vec<protocol::PullRequest> {
        self.requests_to(protocol::PULL_PATH)
            .into_iter()
            .map(|body| serde_json::from_value(body).unwrap())
            .collect()
    }

    fn requests_to(&self, path: &str) -> Vec<Value> {
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
    fn pushed_ids(&self) -> Vec<Vec<String>> {
        self.pushes()
            .iter()
            .map(|p| p.mutations.iter().map(|m| m.id.clone().unwrap()).collect())
            .collect()
    }

    fn conflicts(&self) -> Vec<ConflictEvent> {
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
struct Divergence {
    local_at: Millis,
    remote_at: Millis,
}

const LOCAL_FIRST: Divergence = Divergence {
    local_at: T0 + 1_000.0,
    remote_at: T0 + 2_000.0,
};
const REMOTE_FIRST: Divergence = Divergence {
    local_at: T0 + 2_000.0,
    remote_at: T0 + 1_000.0,
};

/// `task/t1` synced at version 1 as `{title: "draft", done: false}`; then
/// this device retitles it to "mine" (unsent) while another device marks
/// it done on the server (version 2).
fn diverged(b: &Bench, when: Divergence) {
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
fn queued_mutation(b: &Bench) -> Option<protocol::Mutation> {
    b.queued()
        .into_iter()
        .find(|t| t.id == mutation_task_id("task", "t1"))
        .map(|t| match t.request.body {
            Some(Body::Json(value)) => serde_json::from_value(value).unwrap(),
            other => panic!("unexpected body {other:?}"),
        })
}

#[test]
fn server_wins_on_pull_takes_the_server_copy_and_drops_the_local_mutation() {
    let b = bench(Strategy::ServerWins);
    diverged(&b, LOCAL_FIRST);

    let report = b.pull();

    assert_eq!(report.conflicts, 1);
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
    assert!(b.queued().is_empty(), "the local mutation is dropped");
    assert_eq!(b.flush().sent, 0, "nothing is pushed");
}

#[test]
fn client_wins_on_pull_keeps_the_local_copy_and_queues_a_mutation_on_the_server_version() {
    let b = bench(Strategy::ClientWins);
    diverged(&b, REMOTE_FIRST);

    b.pull();

    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "mine", "done": false}));
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Pending));
    let mutation = queued_mutation(&b).expect("a mutation is queued");
    assert_eq!(mutation.base_version, Some(2));
    assert_eq!(mutation.data, Some(json!({"title": "mine", "done": false})));

    b.flush();

    let server = b.server.borrow().get("task", "t1");
    assert_eq!(server.version, 3, "applied on top of the server's version");
    assert_eq!(
        Value::Object(server.data),
        json!({"title": "mine", "done": false})
    );
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Synced);
}

#[test]
fn last_write_wins_on_pull_keeps_a_newer_local_change_and_sends_it() {
    let b = bench(Strategy::LastWriteWins);
    diverged(&b, REMOTE_FIRST);

    b.pull();
    b.flush();

    let server = b.server.borrow().get("task", "t1");
    assert_eq!(
        Value::Object(server.data),
        json!({"title": "mine", "done": false})
    );
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "mine", "done": false}));
    assert_eq!((t1.version, t1.sync_status), (3, RecordStatus::Synced));
}

#[test]
fn last_write_wins_on_pull_takes_a_newer_server_copy() {
    let b = bench(Strategy::LastWriteWins);
    diverged(&b, LOCAL_FIRST);

    b.pull();

    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
    assert!(b.queued().is_empty());
}

#[test]
fn last_write_wins_on_pull_gives_a_tie_to_the_server() {
    let b = bench(Strategy::LastWriteWins);
    diverged(
        &b,
        Divergence {
            local_at: T0 + 1_000.0,
            remote_at: T0 + 1_000.0,
        },
    );

    b.pull();

    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!(t1.sync_status, RecordStatus::Synced);
    assert!(b.queued().is_empty());
    assert_eq!(b.conflicts()[0].outcome, "server");
}

#[test]
fn merge_on_pull_keeps_the_fields_the_client_changed_and_the_server_s_others() {
    let b = bench(Strategy::Merge);
    diverged(&b, LOCAL_FIRST);

    b.pull();

    let merged = json!({"title": "mine", "done": true});
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), merged);
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Pending));
    assert_eq!(queued_mutation(&b).unwrap().data, Some(merged.clone()));

    b.flush();

    assert_eq!(
        Value::Object(b.server.borrow().get("task", "t1").data),
        merged
    );
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Synced);
}

#[test]
fn server_wins_on_a_conflict_push_result_takes_the_server_copy() {
    let b = bench(Strategy::ServerWins);
    diverged(&b, LOCAL_FIRST);

    b.flush();

    assert_eq!(b.pushes().len(), 1);
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
    assert!(b.queued().is_empty());
    assert!(b.failed().is_empty(), "a conflict is not a dead letter");
}

#[test]
fn client_wins_on_a_conflict_push_result_sends_the_local_copy_again_on_the_server_version() {
    let b = bench(Strategy::ClientWins);
    diverged(&b, LOCAL_FIRST);

    b.flush();

    let pushes = b.pushes();
    assert_eq!(pushes.len(), 2, "the stale push, then the resolved one");
    assert_eq!(pushes[0].mutations[0].base_version, Some(1));
    assert_eq!(pushes[1].mutations[0].base_version, Some(2));
    assert_ne!(
        pushes[0].mutations[0].mutation_id, pushes[1].mutations[0].mutation_id,
        "the resolution is a new mutation"
    );
    let server = b.server.borrow().get("task", "t1");
    assert_eq!(server.version, 3);
    assert_eq!(
        Value::Object(server.data),
        json!({"title": "mine", "done": false})
    );
    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, t1.sync_status), (3, RecordStatus::Synced));
    assert!(b.queued().is_empty());
}

#[test]
fn last_write_wins_on_a_conflict_push_result_follows_the_newer_side() {
    let local_newer = bench(Strategy::LastWriteWins);
    diverged(&local_newer, REMOTE_FIRST);
    let remote_newer = bench(Strategy::LastWriteWins);
    diverged(&remote_newer, LOCAL_FIRST);

    local_newer.flush();
    remote_newer.flush();

    assert_eq!(
        data(&local_newer.record("task", "t1")),
        json!({"title": "mine", "done": false})
    );
    assert_eq!(local_newer.server.borrow().get("task", "t1").version, 3);
    assert_eq!(
        data(&remote_newer.record("task", "t1")),
        json!({"title": "draft", "done": true})
    );
    assert_eq!(remote_newer.server.borrow().get("task", "t1").version, 2);
    assert_eq!(remote_newer.pushes().len(), 1, "nothing more to send");
}

#[test]
fn merge_on_a_conflict_push_result_sends_the_merged_record() {
    let b = bench(Strategy::Merge);
    diverged(&b, LOCAL_FIRST);

    b.flush();

    let merged = json!({"title": "mine", "done": true});
    assert_eq!(b.pushes()[1].mutations[0].data, Some(merged.clone()));
    assert_eq!(
        Value::Object(b.server.borrow().get("task", "t1").data),
        merged
    );
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), merged);
    assert_eq!(t1.sync_status, RecordStatus::Synced);
}

#[test]
fn the_on_conflict_callback_s_data_becomes_the_record_and_is_pushed() {
    let b = bench(Strategy::ServerWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|local, remote| {
        Ok(object(json!({
            "title": format!("{} / {}", local["title"].as_str().unwrap(), remote["title"].as_str().unwrap()),
            "done": remote["done"],
        })))
    }));
    diverged(&b, LOCAL_FIRST);

    b.pull();
    b.flush();

    let settled = json!({"title": "mine / draft", "done": true});
    assert_eq!(b.on_conflict.calls.get(), 1);
    assert_eq!(b.conflicts()[0].outcome, "callback");
    assert_eq!(
        Value::Object(b.server.borrow().get("task", "t1").data),
        settled
    );
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), settled);
    assert_eq!(t1.sync_status, RecordStatus::Synced);
}

#[test]
fn a_failing_on_conflict_callback_leaves_the_record_in_conflict_with_both_sides() {
    let b = bench(Strategy::ClientWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);

    b.pull();

    let t1 = b.record("task", "t1");
    assert_eq!(t1.sync_status, RecordStatus::Conflict);
    assert_eq!(
        data(&t1),
        json!({"title": "mine", "done": false}),
        "local side kept"
    );
    assert_eq!(
        t1.conflict_remote.clone().map(Value::Object),
        Some(json!({"title": "draft", "done": true})),
        "server side kept"
    );
    assert!(t1.sync_error.as_deref().unwrap().contains("the app threw"));
    assert_eq!(t1.view()["syncStatus"], "conflict");
    assert!(b.queued().is_empty(), "no mutation is queued");
    assert_eq!(b.flush().sent, 0);
    assert_eq!(b.conflicts()[0].outcome, "unresolved");
}

#[test]
fn a_failing_on_conflict_callback_on_a_push_result_leaves_the_record_in_conflict() {
    let b = bench(Strategy::ClientWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);

    b.flush();

    let t1 = b.record("task", "t1");
    assert_eq!(t1.sync_status, RecordStatus::Conflict);
    assert_eq!(data(&t1), json!({"title": "mine", "done": false}));
    assert!(t1.conflict_remote.is_some());
    assert_eq!(
        b.pushes().len(),
        1,
        "nothing is sent for it until the app settles"
    );
    assert!(b.queued().is_empty());
    assert!(b.failed().is_empty());
}

#[test]
fn a_settled_conflict_emits_sync_conflict_with_both_sides_and_the_outcome() {
    let b = bench(Strategy::Merge);
    diverged(&b, LOCAL_FIRST);

    b.pull();

    let events = b.conflicts();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(
        (event.entity_type.as_str(), event.id.as_str()),
        ("task", "t1")
    );
    assert_eq!(event.local["title"], "mine");
    assert_eq!(event.local["done"], false);
    assert_eq!(event.remote["done"], true);
    assert_eq!(event.remote["version"], 2);
    assert_eq!(event.resolved["title"], "mine");
    assert_eq!(event.resolved["done"], true);
    assert_eq!(event.outcome, "merged");
}

#[test]
fn a_conflict_for_a_change_superseded_in_flight_is_still_settled_by_the_strategy() {
    let b = bench(Strategy::Merge);
    diverged(&b, LOCAL_FIRST);

    let edit_during_push = async {
        while b.transport.sent.borrow().is_empty() {
            YieldOnce::new().await;
        }
        let fields = object(json!({"title": "mine 2", "done": false}));
        let (_, task) = b
            .replicator
            .put("task", Some("t1".into()), fields)
            .await
            .unwrap();
        b.outbox.adopt(task);
    };
    let (flushed, ()) = block_on(join(b.outbox.flush(), edit_during_push));
    flushed.unwrap();

    // The newer change must meet the other device's `done: true` as a
    // conflict too, not overwrite it from a base version it never saw.
    let merged = json!({"title": "mine 2", "done": true});
    assert_eq!(
        Value::Object(b.server.borrow().get("task", "t1").data),
        merged
    );
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), merged);
    assert_eq!(t1.sync_status, RecordStatus::Synced);
    assert!(b.queued().is_empty());
}

#[test]
fn last_write_wins_on_a_conflict_push_result_gives_a_tie_to_the_server() {
    let b = bench(Strategy::LastWriteWins);
    diverged(
        &b,
        Divergence {
            local_at: T0 + 1_000.0,
            remote_at: T0 + 1_000.0,
        },
    );

    b.flush();

    assert_eq!(b.pushes().len(), 1);
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!(t1.sync_status, RecordStatus::Synced);
}

#[test]
fn the_app_settles_a_conflict_by_writing_the_record_which_is_pushed_on_the_server_version() {
    let b = bench(Strategy::ServerWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);
    b.pull();

    b.put("task", "t1", json!({"title": "settled", "done": true}));
    b.flush();

    let server = b.server.borrow().get("task", "t1");
    assert_eq!(server.version, 3);
    assert_eq!(server.data["title"], "settled");
    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, t1.sync_status), (3, RecordStatus::Synced));
    assert_eq!(t1.conflict_remote, None);
}

// ----- coalescing -----

#[test]
fn several_puts_to_one_record_before_a_flush_send_one_mutation_with_the_latest_data() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "a"}));
    let task_id = b.queued()[0].id.clone();
    b.put("task", "t1", json!({"title": "ab"}));
    b.put("task", "t1", json!({"title": "abc"}));

    let queued = b.queued();
    assert_eq!(queued.len(), 1, "one mutation task");
    assert_eq!(queued[0].id, task_id, "the same task id");
    assert_eq!(queued[0].revision, 2, "re-registered twice");

    b.flush();

    let pushes = b.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].mutations.len(), 1);
    assert_eq!(pushes[0].mutations[0].data, Some(json!({"title": "abc"})));
    let server = b.server.borrow().get("task", "t1");
    assert_eq!(
        (server.version, server.data["title"].clone()),
        (1, json!("abc"))
    );
}

#[test]
fn a_put_while_its_mutation_is_in_flight_is_sent_after_it_on_the_acknowledged_version() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "first"}));

    let edit_during_push = async {
        while b.transport.sent.borrow().is_empty() {
            YieldOnce::new().await;
        }
        let (_, task) = b
            .replicator
            .put(
                "task",
                Some("t1".into()),
                object(json!({"title": "second"})),
            )
            .await
            .unwrap();
        b.outbox.adopt(task);
    };
    let (report, ()) = block_on(join(b.outbox.flush(), edit_during_push));

    assert_eq!(report.unwrap().completed, 2);
    let pushes = b.pushes();
    assert_eq!(pushes.len(), 2, "both are sent, one after the other");
    assert_eq!(pushes[0].mutations[0].data, Some(json!({"title": "first"})));
    assert_eq!(pushes[0].mutations[0].base_version, Some(0));
    assert_eq!(
        pushes[1].mutations[0].data,
        Some(json!({"title": "second"}))
    );
    assert_eq!(
        pushes[1].mutations[0].base_version,
        Some(1),
        "based on the version the first one's answer set"
    );
    let server = b.server.borrow().get("task", "t1");
    assert_eq!(
        (server.version, server.data["title"].clone()),
        (2, json!("second"))
    );
    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
    assert!(b.queued().is_empty());
}

// ----- batching -----

#[test]
fn with_batch_size_n_2n_plus_1_mutations_go_in_pushes_of_n_n_and_1() {
    let b = bench_with(Config {
        batch_size: 3,
        ..Config::default()
    });
    for i in 0..7 {
        b.put("task", &format!("t{i}"), json!({ "n": i }));
    }

    let report = b.flush();

    let sizes: Vec<usize> = b.pushes().iter().map(|p| p.mutations.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(report.completed, 7);
    let all: HashSet<String> = b.pushed_ids().into_iter().flatten().collect();
    assert_eq!(all.len(), 7, "each mutation is sent once");
}

#[test]
fn plain_request_tasks_are_never_put_into_a_push_batch() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"n": 1}));
    block_on(b.outbox.register(NewTask {
        id: "upload".into(),
        priority: Priority::Normal,
        ordering_key: None,
        request: HttpRequest {
            url: "/api/upload".into(),
            method: "POST".into(),
            headers: BTreeMap::new(),
            body: Some(Body::Json(json!({"file": "a.png"}))),
        },
        retry_on_failure: true,
    }))
    .unwrap();
    b.put("task", "t2", json!({"n": 2}));

    b.flush();

    assert_eq!(b.pushed_ids(), [vec!["t1".to_owned(), "t2".to_owned()]]);
    let sent = b.transport.sent.borrow();
    let upload: Vec<&HttpRequest> = sent
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.url == "/api/upload")
        .collect();
    assert_eq!(upload.len(), 1, "sent on its own, as registered");
    assert_eq!(upload[0].body, Some(Body::Json(json!({"file": "a.png"}))));
    assert!(b.queued().is_empty());
}

#[test]
fn no_push_carries_two_mutations_of_one_record() {
    let b = bench_with(Config {
        batch_size: 10,
        ..Config::default()
    });
    b.put("task", "t1", json!({"v": 1}));
    b.put("task", "t2", json!({"v": 1}));

    let edit_during_push = async {
        while b.transport.sent.borrow().is_empty() {
            YieldOnce::new().await;
        }
        for (id, v) in [("t1", 2), ("t3", 1), ("t1", 3)] {
            let (_, task) = b
                .replicator
                .put("task", Some(id.into()), object(json!({ "v": v })))
                .await
                .unwrap();
            b.outbox.adopt(task);
        }
    };
    let (flushed, ()) = block_on(join(b.outbox.flush(), edit_during_push));
    flushed.unwrap();

    let pushed = b.pushed_ids();
    for ids in &pushed {
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "a record twice in {ids:?}");
    }
    let t1_data: Vec<Value> = b
        .pushes()
        .iter()
        .flat_map(|p| p.mutations.clone())
        .filter(|m| m.id.as_deref() == Some("t1"))
        .map(|m| m.data.unwrap()["v"].clone())
        .collect();
    assert_eq!(t1_data, [1, 3], "two pushes of t1, the second coalesced");
    assert_eq!(b.server.borrow().get("task", "t1").data["v"], 3);
    assert_eq!(b.server.borrow().get("task", "t3").version, 1);
}

// ----- partial failure -----

#[test]
fn a_rejected_mutation_goes_to_the_dead_letters_and_the_rest_of_the_batch_is_synced() {
    let b = bench(Strategy::ServerWins);
    b.server
        .borrow_mut()
        .reject
        .insert("t2".into(), "title must not be empty".into());
    for id in ["t1", "t2", "t3"] {
        b.put("task", id, json!({"title": id}));
    }

    b.flush();

    assert_eq!(b.pushes().len(), 1, "one batch");
    let failed = b.failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, mutation_task_id("task", "t2"));
    let error = failed[0].task.last_error().unwrap();
    assert!(
        error.message.contains("title must not be empty"),
        "{}",
        error.message
    );
    let t2 = b.record("task", "t2");
    assert_eq!(t2.sync_status, RecordStatus::Rejected);
    assert!(t2.sync_error.unwrap().contains("title must not be empty"));
    for id in ["t1", "t3"] {
        let record = b.record("task", id);
        assert_eq!(
            (record.version, record.sync_status),
            (1, RecordStatus::Synced)
        );
    }
    assert!(b.queued().is_empty());
}

#[test]
fn a_mutation_missing_from_the_push_answer_is_retried() {
    let b = bench(Strategy::ServerWins);
    b.server.borrow_mut().drop_results.insert("t2".into());
    for id in ["t1", "t2", "t3"] {
        b.put("task", id, json!({"title": id}));
    }

    let report = b.flush();

    assert_eq!((report.completed, report.retried), (2, 1));
    let queued = b.queued();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, mutation_task_id("task", "t2"));
    assert_eq!(queued[0].attempts, 1);
    assert_eq!(queued[0].next_attempt_at, Some(b.clock.now() + 1_000.0));
    assert_eq!(b.record("task", "t2").sync_status, RecordStatus::Pending);
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Synced);

    b.server.borrow_mut().drop_results.clear();
    b.clock.advance(1_000.0);
    b.flush();

    assert_eq!(b.pushed_ids()[1], ["t2"]);
    assert_eq!(b.record("task", "t2").sync_status, RecordStatus::Synced);
    assert!(b.queued().is_empty());
}

#[test]
fn a_failed_push_retries_every_mutation_of_the_batch_and_counts_one_breaker_failure() {
    let mut config = Config::default();
    config.outbox.circuit_breaker.failure_threshold = 2;
    let b = bench_with(config);
    for id in ["t1", "t2", "t3"] {
        b.put("task", id, json!({"title": id}));
    }
    b.server.borrow_mut().down = true;

    let report = b.flush();

    assert_eq!(report.retried, 3);
    assert_eq!(b.outbox.metrics().requests_sent, 1, "one push");
    let queued = b.queued();
    assert_eq!(queued.len(), 3);
    for task in &queued {
        assert_eq!(task.attempts, 1);
        assert_eq!(task.next_attempt_at, Some(b.clock.now() + 1_000.0));
    }
    assert_eq!(
        b.outbox.status().circuit,
        "closed",
        "one failure of a threshold of two"
    );

    b.clock.advance(1_000.0);
    b.flush();

    assert_eq!(
        b.outbox.status().circuit,
        "open",
        "the second failed push opens it"
    );
}

// ----- pull -----

fn seed_server(b: &Bench, count: usize) {
    for i in 1..=count {
        b.server_writes("task", &format!("t{i}"), json!({ "n": i }), T0);
    }
}

#[test]
fn pull_applies_pages_in_order_with_their_cursor() {
    let b = bench_with(Config {
        page_size: 2,
        ..Config::default()
    });
    seed_server(&b, 5);

    let report = b.pull();

    assert_eq!(
        report,
        PullReport {
            pulled: 5,
            pages: 3,
            conflicts: 0
        }
    );
    let cursors: Vec<Option<String>> = b.pulls().into_iter().map(|p| p.cursor).collect();
    assert_eq!(cursors, [None, Some("2".into()), Some("4".into())]);
    assert_eq!(b.cursor().as_deref(), Some("5"));
    assert_eq!(b.query("task"), ["t1", "t2", "t3", "t4", "t5"]);
    assert_eq!(b.events.count("pull:complete"), 1);
}

#[test]
fn an_interrupted_pull_keeps_the_last_applied_page_s_cursor_and_resumes_from_it() {
    let b = bench_with(Config {
        page_size: 2,
        ..Config::default()
    });
    seed_server(&b, 5);
    b.server.borrow_mut().fail_pull_calls.insert(2);

    let interrupted = block_on(b.replicator.pull(|_| {}));

    assert!(matches!(interrupted, Err(ReplicationError::Network(_))));
    assert_eq!(b.cursor().as_deref(), Some("2"), "page 1's cursor");
    assert_eq!(b.query("task"), ["t1", "t2"]);

    let resumed = b.pull();

    assert_eq!(b.pulls()[2].cursor.as_deref(), Some("2"), "resumes there");
    assert_eq!(resumed.pulled, 3);
    assert_eq!(b.query("task"), ["t1", "t2", "t3", "t4", "t5"], "each once");
    assert_eq!(b.cursor().as_deref(), Some("5"));
}

#[test]
fn a_pulled_tombstone_removes_the_record_from_query() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 2);
    b.pull();
    b.server.borrow_mut().delete("task", "t1", T0 + 1_000.0);

    b.pull();

    assert_eq!(b.query("task"), ["t2"]);
    assert_eq!(block_on(b.replicator.get("task", "t1")).unwrap(), None);
    let tombstone = b.record("task", "t1");
    assert!(tombstone.is_deleted);
    assert_eq!(tombstone.version, 2);
}

#[test]
fn a_pull_never_overwrites_an_unsent_change_with_the_server_version_it_is_based_on() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 1);
    b.pull();
    b.put("task", "t1", json!({"n": 100}));
    // Pull everything again (as after a change of entityTypes): the server
    // sends version 1, which the local change is based on.
    block_on(b.records.put_meta_text("pullCursor", "")).unwrap();

    let report = b.pull();

    assert_eq!(report.conflicts, 0);
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"n": 100}));
    assert_eq!((t1.version, t1.sync_status), (1, RecordStatus::Pending));
    assert_eq!(b.queued().len(), 1, "its mutation is still queued");
}

#[test]
fn a_new_entity_type_list_pulls_from_the_beginning() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 2);
    b.pull();
    assert_eq!(b.cursor().as_deref(), Some("2"));

    let reopened = block_on(Replicator::<MemoryReplica>::open(
        b.records.clone(),
        b.transport.clone(),
        b.clock.clone(),
        b.events.clone(),
        b.on_conflict.clone(),
        ReplicationOptions {
            server_url: SERVER.into(),
            entity_types: vec!["task".into(), "note".into(), "tag".into()],
            strategy: Strategy::ServerWins,
            batch_size: 50,
            page_size: 100,
            request_timeout: 30_000,
        },
    ))
    .unwrap();
    block_on(reopened.pull(|_| {})).unwrap();

    assert_eq!(b.pulls().last().unwrap().cursor, None);
    assert_eq!(b.query("task"), ["t1", "t2"]);
}

// ----- verify -----

#[test]
fn verify_with_matching_checksums_repairs_nothing() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 3);
    b.pull();
    let pulls = b.pulls().len();

    let reports = block_on(b.replicator.verify()).unwrap();

    assert_eq!(reports.len(), 2, "one report per entity type");
    let task = &reports[0];
    assert_eq!(task.entity_type, "task");
    assert_eq!((task.local_count, task.server_count), (3, 3));
    assert_eq!(task.local_checksum, task.server_checksum);
    assert_eq!(task.repaired, 0);
    assert_eq!(reports[1].repaired, 0);
    assert_eq!(b.pulls().len(), pulls, "nothing re-read");
}

#[test]
fn verify_repairs_a_record_missing_locally_and_one_with_a_tampered_version() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 3);
    b.server_writes("task", "t2", json!({"n": 22}), T0);
    b.pull();
    b.records.remove("task", "t1");
    let mut tampered = b.record("task", "t2");
    tampered.version = 7;
    b.records.tamper(tampered);

    let reports = block_on(b.replicator.verify()).unwrap();

    assert_eq!(reports[0].local_count, 2);
    assert_eq!(reports[0].server_count, 3);
    assert_eq!(reports[0].repaired, 2);
    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, data(&t1)), (1, json!({"n": 1})));
    let t2 = b.record("task", "t2");
    assert_eq!((t2.version, data(&t2)), (2, json!({"n": 22})));
    let again = block_on(b.replicator.verify()).unwrap();
    assert_eq!(again[0].repaired, 0);
    assert_eq!(again[0].local_checksum, again[0].server_checksum);
}

#[test]
fn verify_deletes_a_synced_local_record_the_server_does_not_have() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 3);
    b.pull();
    b.server.borrow_mut().purge("task", "t3");

    let reports = block_on(b.replicator.verify()).unwrap();

    assert_eq!(reports[0].repaired, 1);
    assert_eq!(b.stored("task", "t3"), None);
    assert_eq!(b.query("task"), ["t1", "t2"]);
}

#[test]
fn verify_leaves_an_unsettled_conflict_to_the_app() {
    let b = bench(Strategy::ServerWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);
    b.pull();
    b.server_writes(
        "task",
        "t1",
        json!({"title": "theirs", "done": true}),
        T0 + 9_000.0,
    );

    block_on(b.replicator.verify()).unwrap();

    let t1 = b.record("task", "t1");
    assert_eq!(t1.sync_status, RecordStatus::Conflict);
    assert_eq!(
        data(&t1),
        json!({"title": "mine", "done": false}),
        "local side kept"
    );
    assert!(t1.conflict_remote.is_some(), "server side kept");
}

#[test]
fn verify_keeps_an_unsettled_conflict_the_server_no_longer_has() {
    let b = bench(Strategy::ServerWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);
    b.pull();
    b.server.borrow_mut().purge("task", "t1");

    block_on(b.replicator.verify()).unwrap();

    let t1 = b
        .stored("task", "t1")
        .expect("still there for the app to settle");
    assert_eq!(t1.sync_status, RecordStatus::Conflict);
}

// ----- lost answers -----

#[test]
fn a_push_whose_answer_was_lost_is_resent_and_answered_duplicate_moving_the_version_once() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "x"}));
    b.put("task", "t2", json!({"title": "y"}));
    b.server.borrow_mut().lose_push_answers = true;
    b.flush();
    assert_eq!(b.queued().len(), 2, "both wait for a retry");
    assert_eq!(b.server.borrow().get("task", "t1").version, 1);

    b.server.borrow_mut().lose_push_answers = false;
    b.clock.advance(1_000.0);
    b.flush();

    let pushes = b.pushes();
    assert_eq!(pushes.len(), 2);
    let ids = |p: &protocol::PushRequest| -> Vec<String> {
        p.mutations.iter().map(|m| m.mutation_id.clone()).collect()
    };
    assert_eq!(ids(&pushes[0]), ids(&pushes[1]), "the same mutation ids");
    let answered = b.server.borrow().answered.clone();
    assert_eq!(
        answered[2..],
        [
            ("t1".to_owned(), protocol::MutationStatus::Duplicate),
            ("t2".to_owned(), protocol::MutationStatus::Duplicate)
        ]
    );
    for id in ["t1", "t2"] {
        assert_eq!(b.server.borrow().get("task", id).version, 1, "applied once");
        let record = b.record("task", id);
        assert_eq!(
            (record.version, record.sync_status),
            (1, RecordStatus::Synced)
        );
    }
    assert!(b.queued().is_empty());
}

#[test]
fn an_edit_after_a_lost_push_answer_is_sent_behind_the_sent_mutation_and_is_kept() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "first"}));
    b.server.borrow_mut().lose_push_answers = true;
    b.flush();
    assert_eq!(
        b.server.borrow().get("task", "t1").version,
        1,
        "applied, answer lost"
    );

    b.put("task", "t1", json!({"title": "second"}));
    assert_eq!(b.queued().len(), 2, "the sent mutation is not folded into");
    b.server.borrow_mut().lose_push_answers = false;
    b.clock.advance(60_000.0);
    b.flush();
    b.flush();

    let answered = b.server.borrow().answered.clone();
    assert_eq!(
        answered[1..],
        [
            ("t1".to_owned(), protocol::MutationStatus::Duplicate),
            ("t1".to_owned(), protocol::MutationStatus::Applied)
        ],
        "the replay is a duplicate, the edit applies on the acknowledged version"
    );
    assert_eq!(b.server.borrow().get("task", "t1").version, 2);
    let record = b.record("task", "t1");
    assert_eq!(record.data["title"], "second", "the later edit survives");
    assert_eq!(
        (record.version, record.sync_status),
        (2, RecordStatus::Synced)
    );
    assert!(b.queued().is_empty());
}

#[test]
fn a_push_refused_as_a_whole_dead_letters_its_mutations_and_marks_their_records_rejected() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "x"}));
    b.put("task", "t2", json!({"title": "y"}));
    b.transport.respond_with(|_, _| Ok(HttpResponse::new(413)));

    b.flush();

    assert_eq!(b.failed().len(), 2);
    for id in ["t1", "t2"] {
        let record = b.record("task", id);
        assert_eq!(record.sync_status, RecordStatus::Rejected, "{id}");
        assert!(record.sync_error.unwrap().contains("413"));
        assert_eq!(record.pending_mutation_id, None);
    }
}

#[test]
fn a_mutation_that_exhausts_its_retries_marks_its_record_rejected() {
    let mut config = Config::default();
    config.outbox.retry.max_retries = 1;
    let b = bench_with(config);
    b.put("task", "t1", json!({"title": "x"}));
    b.transport.respond_with(|_, _| Ok(HttpResponse::new(503)));

    b.flush();
    b.clock.advance(60_000.0);
    b.flush();

    assert_eq!(b.failed().len(), 1);
    let t1 = b.record("task", "t1");
    assert_eq!(t1.sync_status, RecordStatus::Rejected);
    assert!(t1.sync_error.unwrap().contains("503"));
}

// ----- dead letters sent again -----

#[test]
fn a_new_write_supersedes_the_record_s_failed_mutation() {
    let b = bench(Strategy::ServerWins);
    b.server
        .borrow_mut()
        .reject
        .insert("t1".into(), "title too long".into());
    b.put("task", "t1", json!({"title": "x".repeat(300)}));
    b.flush();
    assert_eq!(b.failed().len(), 1);
    assert_eq!(b.outbox.status().failed_count, 1);
    b.server.borrow_mut().reject.clear();

    b.put("task", "t1", json!({"title": "short"}));
    assert!(
        b.failed().is_empty(),
        "the old data can no longer be retried over the new"
    );
    b.flush();

    assert_eq!(b.outbox.status().failed_count, 0);
    let t1 = b.record("task", "t1");
    assert_eq!(
        (t1.sync_status, t1.data["title"].clone()),
        (RecordStatus::Synced, json!("short"))
    );
    assert_eq!(b.server.borrow().get("task", "t1").version, 1);
}

#[test]
fn a_rejected_mutation_retried_by_the_app_and_accepted_syncs_its_record() {
    let b = bench(Strategy::ServerWins);
    b.server
        .borrow_mut()
        .reject
        .insert("t1".into(), "quota exceeded".into());
    b.put("task", "t1", json!({"title": "x"}));
    b.flush();
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Rejected);
    b.server.borrow_mut().reject.clear();

    assert!(block_on(b.outbox.retry_failed(&mutation_task_id("task", "t1"))).unwrap());
    b.flush();

    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, t1.sync_status), (1, RecordStatus::Synced));
    assert_eq!(t1.sync_error, None);
    assert!(b.failed().is_empty());
}

#[test]
fn an_old_dead_letter_retried_after_a_newer_edit_leaves_the_record_equal_to_the_server() {
    let b = bench(Strategy::ServerWins);
    b.server
        .borrow_mut()
        .reject
        .insert("t1".into(), "title is reserved".into());
    b.put("task", "t1", json!({"title": "bad"}));
    b.flush();
    b.server.borrow_mut().reject.clear();
    b.put("task", "t1", json!({"title": "good"}));
    b.flush();

    block_on(b.outbox.retry_failed(&mutation_task_id("task", "t1"))).unwrap();
    b.flush();

    let server = b.server.borrow().get("task", "t1");
    let t1 = b.record("task", "t1");
    assert_eq!(
        (t1.version, data(&t1)),
        (server.version, Value::Object(server.data)),
        "never a local copy the server does not hold under the same version"
    );
    assert_eq!(t1.sync_status, RecordStatus::Synced);
}

// ----- local writes -----

#[test]
fn an_unknown_entity_type_is_an_error_that_names_it() {
    let b = bench(Strategy::ServerWins);
    let r = &b.replicator;

    let errors = [
        block_on(r.put("ghost", None, Map::new())).map(|_| ()),
        block_on(r.delete("ghost", "x")).map(|_| ()),
        block_on(r.get("ghost", "x")).map(|_| ()),
        block_on(r.query("ghost")).map(|_| ()),
    ];

    for error in errors {
        let error = error.unwrap_err();
        assert_eq!(error, ReplicationError::UnknownEntityType("ghost".into()));
        assert!(error.to_string().contains("\"ghost\""), "{error}");
    }
    assert!(b.queued().is_empty());
}

#[test]
fn deleting_a_missing_record_returns_none_and_queues_nothing() {
    let b = bench(Strategy::ServerWins);

    assert_eq!(block_on(b.replicator.delete("task", "nope")).unwrap(), None);
    assert!(b.queued().is_empty());
}

#[test]
fn a_put_without_id_gets_a_fresh_id_and_a_pending_status() {
    let b = bench(Strategy::ServerWins);

    let (record, task) = block_on(
        b.replicator
            .put("note", None, object(json!({"text": "hi"}))),
    )
    .unwrap();

    assert!(!record.id.is_empty());
    assert_eq!(record.sync_status, RecordStatus::Pending);
    assert_eq!(record.version, 0);
    assert_eq!(task.kind, TaskKind::Mutation);
    assert_eq!(task.id, mutation_task_id("note", &record.id));
    assert_eq!(b.query("note"), [record.id]);
}

#[test]
fn a_local_delete_hides_the_record_and_pushes_a_delete() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "x"}));
    b.flush();

    b.delete("task", "t1");

    assert!(b.query("task").is_empty());
    assert_eq!(block_on(b.replicator.get("task", "t1")).unwrap(), None);
    b.flush();
    let last = b.pushes().pop().unwrap();
    assert_eq!(last.mutations[0].op, protocol::Op::Delete);
    assert_eq!(last.mutations[0].base_version, Some(1));
    let server = b.server.borrow().get("task", "t1");
    assert!(server.is_deleted);
    let t1 = b.record("task", "t1");
    assert!(t1.is_deleted);
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
}

#[test]
fn prepare_push_sends_the_base_version_stored_now_not_the_one_queued() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "x"}));
    let task = b.queued().remove(0);
    let mut record = b.record("task", "t1");
    record.version = 4;
    b.records.tamper(record);

    let request = block_on(b.replicator.prepare_push(&[task])).unwrap();

    let push: protocol::PushRequest = match request.body {
        Some(Body::Json(value)) => serde_json::from_value(value).unwrap(),
        other => panic!("unexpected body {other:?}"),
    };
    assert_eq!(push.mutations[0].base_version, Some(4));
    assert_eq!(push.client_id, b.replicator.client_id());
}
