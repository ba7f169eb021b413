//! The traits through which the engine reaches the world. Each has a browser
//! implementation (IndexedDB, fetch, timers, Web Locks, JavaScript callbacks)
//! and an in-memory one in [`crate::testing`]. They are shaped by what the
//! engine needs, not by the APIs they wrap.
//!
//! Everything runs on one thread (a JavaScript realm), so the traits use
//! `async fn` without `Send` bounds.
#![allow(async_fn_in_trait)]

use crate::engine::events::Event;
use crate::engine::task::{FailedTask, HttpRequest, HttpResponse, Task, TaskError};
use crate::engine::time::Millis;

/// Errors of the storage layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The origin's storage quota is exhausted; nothing of the write was kept.
    #[error("storage quota exceeded: {0}")]
    Quota(String),
    /// The database cannot be opened or used (private mode, blocked upgrade, …).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored value does not have the expected shape.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Durable storage of the outbox. Every method is one atomic transaction.
pub trait Store {
    /// Every queued task, in no particular order.
    async fn load_tasks(&self) -> Result<Vec<Task>, StoreError>;

    /// Writes a group of registrations in one transaction. Every task gets
    /// the next value of the persisted counter as its `revision` (so a
    /// revision never repeats for an id); a new id also takes it as its
    /// `seq`, while an id already queued keeps its `seq` and `created_at`
    /// (its place). Returns the tasks as stored, in input order.
    async fn register_tasks(&self, tasks: Vec<Task>) -> Result<Vec<Task>, StoreError>;

    /// Replaces a task's retry state, unless it was re-registered meanwhile
    /// (stored revision differs). Returns whether it wrote.
    async fn update_task(&self, task: &Task) -> Result<bool, StoreError>;

    /// Deletes an acknowledged task, unless it was re-registered meanwhile.
    /// Returns whether it deleted.
    async fn complete_task(&self, id: &str, revision: u64) -> Result<bool, StoreError>;

    /// Deletes acknowledged tasks in one transaction (a push's answer),
    /// each unless it was re-registered meanwhile.
    async fn complete_tasks(&self, done: &[(String, u64)]) -> Result<(), StoreError>;

    /// Moves a task to the dead letters in one transaction (unless it was
    /// re-registered meanwhile). Returns whether it moved.
    async fn dead_letter(&self, failed: &FailedTask) -> Result<bool, StoreError>;

    async fn list_failed(&self) -> Result<Vec<FailedTask>, StoreError>;

    async fn count_failed(&self) -> Result<u32, StoreError>;

    /// Moves a dead letter back into the queue with a fresh retry budget, at
    /// the end of the queue. Returns the task as stored.
    async fn requeue_failed(&self, id: &str, now: Millis) -> Result<Option<Task>, StoreError>;

    /// Deletes a dead letter. Returns whether it existed.
    async fn discard_failed(&self, id: &str) -> Result<bool, StoreError>;

    /// Keeps the answer of a delivered task that queued tasks depend on
    /// (see [`crate::engine::dependency`]), until [`Store::delete_answer`].
    async fn put_answer(&self, id: &str, answer: &serde_json::Value) -> Result<(), StoreError>;

    async fn get_answer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError>;

    async fn delete_answer(&self, id: &str) -> Result<(), StoreError>;

    /// Writes tasks back exactly as given (their seq, revision and keys
    /// kept) into a store that lost them, and moves the persisted counter
    /// past every seq and revision among them.
    async fn restore_tasks(&self, tasks: &[Task]) -> Result<(), StoreError>;
}

/// Errors of the transport: the request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    #[error("network error: {0}")]
    Network(String),
    #[error("no response within {0} ms")]
    Timeout(u32),
}

/// Sends HTTP requests. An HTTP error status is a response, not an error.
pub trait Transport {
    /// Sends `request`, aborting after `timeout_ms`. With `max_body`, the
    /// answer's body is read only up to that many bytes (the rest is never
    /// buffered) and kept as text when cut; without it, the whole body is
    /// read and parsed (protocol answers, whatever their size).
    async fn send(
        &self,
        request: &HttpRequest,
        timeout_ms: u32,
        max_body: Option<usize>,
    ) -> Result<HttpResponse, TransportError>;
}

/// Time, randomness and ids: injected so tests run hours of backoff in
/// microseconds and get repeatable jitter.
pub trait Clock {
    fn now(&self) -> Millis;
    /// A uniformly distributed number in `[0, 1)`.
    fn random(&self) -> f64;
    /// A fresh unique id (a UUID in the browser).
    fn unique_id(&self) -> String;
    /// Resolves after `ms` milliseconds.
    async fn sleep(&self, ms: Millis);
    /// Lets everything already queued on this thread run first (one
    /// microtask in the browser): used to group registrations made in the
    /// same tick into one transaction.
    async fn yield_now(&self);
}

/// Mutual exclusion of flushes across tabs and workers of one origin.
pub trait Locks {
    type Guard;
    /// Waits for the flush lock of this database; released when the guard drops.
    async fn acquire(&self) -> Self::Guard;
}

/// Receives the engine's events (the API forwards them to JS listeners).
pub trait EventSink {
    fn emit(&self, event: Event);
}

/// Supplies a fresh bearer token when the server answers 401/403 (the
/// `getToken` option). `None` means the app has no better token.
pub trait TokenSource {
    async fn fresh_token(&self) -> Option<String>;
}

/// The bundle of implementations an [`crate::engine::Outbox`] runs on.
pub trait Ports {
    type Replica: Replica;
    type Store: Store;
    type Transport: Transport;
    type Clock: Clock;
    type Locks: Locks;
    type Events: EventSink;
    type Tokens: TokenSource;
}

// Shared handles implement the traits too, so a test (or the API) can keep
// a reference to the implementation the engine owns.
impl<S: Store> Store for std::rc::Rc<S> {
    async fn load_tasks(&self) -> Result<Vec<Task>, StoreError> {
        (**self).load_tasks().await
    }
    async fn register_tasks(&self, tasks: Vec<Task>) -> Result<Vec<Task>, StoreError> {
        (**self).register_tasks(tasks).await
    }
    async fn update_task(&self, task: &Task) -> Result<bool, StoreError> {
        (**self).update_task(task).await
    }
    async fn complete_task(&self, id: &str, revision: u64) -> Result<bool, StoreError> {
        (**self).complete_task(id, revision).await
    }
    async fn complete_tasks(&self, done: &[(String, u64)]) -> Result<(), StoreError> {
        (**self).complete_tasks(done).await
    }
    async fn dead_letter(&self, failed: &FailedTask) -> Result<bool, StoreError> {
        (**self).dead_letter(failed).await
    }
    async fn list_failed(&self) -> Result<Vec<FailedTask>, StoreError> {
        (**self).list_failed().await
    }
    async fn count_failed(&self) -> Result<u32, StoreError> {
        (**self).count_failed().await
    }
    async fn requeue_failed(&self, id: &str, now: Millis) -> Result<Option<Task>, StoreError> {
        (**self).requeue_failed(id, now).await
    }
    async fn discard_failed(&self, id: &str) -> Result<bool, StoreError> {
        (**self).discard_failed(id).await
    }
    async fn put_answer(&self, id: &str, answer: &serde_json::Value) -> Result<(), StoreError> {
        (**self).put_answer(id, answer).await
    }
    async fn get_answer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        (**self).get_answer(id).await
    }
    async fn delete_answer(&self, id: &str) -> Result<(), StoreError> {
        (**self).delete_answer(id).await
    }
    async fn restore_tasks(&self, tasks: &[Task]) -> Result<(), StoreError> {
        (**self).restore_tasks(tasks).await
    }
}

impl<T: Transport> Transport for std::rc::Rc<T> {
    async fn send(
        &self,
        request: &HttpRequest,
        timeout_ms: u32,
        max_body: Option<usize>,
    ) -> Result<HttpResponse, TransportError> {
        (**self).send(request, timeout_ms, max_body).await
    }
}

impl<C: Clock> Clock for std::rc::Rc<C> {
    fn now(&self) -> Millis {
        (**self).now()
    }
    fn random(&self) -> f64 {
        (**self).random()
    }
    fn unique_id(&self) -> String {
        (**self).unique_id()
    }
    async fn sleep(&self, ms: Millis) {
        (**self).sleep(ms).await
    }
    async fn yield_now(&self) {
        (**self).yield_now().await
    }
}

impl<E: EventSink> EventSink for std::rc::Rc<E> {
    fn emit(&self, event: Event) {
        (**self).emit(event)
    }
}

impl<T: TokenSource> TokenSource for std::rc::Rc<T> {
    async fn fresh_token(&self) -> Option<String> {
        (**self).fresh_token().await
    }
}

impl<L: Locks> Locks for std::rc::Rc<L> {
    type Guard = L::Guard;
    async fn acquire(&self) -> Self::Guard {
        (**self).acquire().await
    }
}

// ----- replication -----

use crate::engine::replication::record::LocalRecord;

/// Durable storage of replicated records, next to the outbox's tasks.
pub trait RecordStore {
    async fn get_record(
        &self,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<LocalRecord>, StoreError>;

    /// Several records in one read transaction; `None` where absent.
    async fn get_records(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<LocalRecord>>, StoreError>;

    /// Every record of a type, tombstones included, read with a cursor.
    async fn records_of(&self, entity_type: &str) -> Result<Vec<LocalRecord>, StoreError>;

    /// The queued mutation tasks of each record (its chain: ids
    /// [`crate::engine::replication::replicator::mutation_task_id`] and
    /// that id followed by `#…`), oldest first.
    async fn mutation_chains(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Vec<Task>>, StoreError>;

    /// A local write: the record and its mutation task in one transaction.
    /// The task's id is chosen by
    /// [`crate::engine::replication::replicator::place_in_chain`] from the
    /// record's chain as stored in that transaction, then registered as by
    /// [`Store::register_tasks`].
    async fn write_local(&self, record: &LocalRecord, task: Task) -> Result<Task, StoreError>;

    /// Applies a [`RecordChange`] in one transaction. Returns the tasks it
    /// registered, as stored.
    async fn apply(&self, change: RecordChange) -> Result<Vec<Task>, StoreError>;

    /// Marks mutation tasks as dispatched and stores their frozen bodies,
    /// each only if it is still stored at the same revision (it was not
    /// replaced or cancelled meanwhile, by this tab or another). Returns,
    /// per task, whether it was.
    async fn mark_dispatched(&self, tasks: &[Task]) -> Result<Vec<bool>, StoreError>;

    async fn get_meta_text(&self, key: &str) -> Result<Option<String>, StoreError>;

    async fn put_meta_text(&self, key: &str, value: &str) -> Result<(), StoreError>;
}

/// One atomic change of the replicated state (a pulled page, a push
/// answer, a repair).
#[derive(Default, Debug, Clone)]
pub struct RecordChange {
    pub writes: Vec<RecordWrite>,
    /// Records to remove; one with an unsent change is kept.
    pub delete_records: Vec<(String, String)>,
    /// The new pull cursor, stored as meta text under [`PULL_CURSOR_KEY`]
    /// in the same transaction (an empty text: start over).
    pub cursor: Option<String>,
}

/// The meta key a store keeps the pull cursor under (see
/// [`RecordChange::cursor`]); the one spelling of it.
pub const PULL_CURSOR_KEY: &str = "pullCursor";

/// A record write decided from the record as it was read. Stores apply it
/// only if the record still has the same unsent change
/// (`pending_mutation_id`), and its `cancel` still names a stored,
/// never-dispatched task at that revision; otherwise the whole write is
/// skipped: a local write made since wins, and its push meets the server's
/// copy as a conflict.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    pub record: LocalRecord,
    /// The `pending_mutation_id` the decision was made on (`None`: the
    /// record was absent or had no unsent change).
    pub expect_pending: Option<String>,
    /// The record's queued mutation (id, revision) this write replaces.
    pub cancel: Option<(String, u64)>,
    /// A mutation to queue (a settled conflict to push).
    pub register: Option<Task>,
}

impl RecordWrite {
    /// A write that replaces nothing and queues nothing.
    pub fn plain(record: LocalRecord, expect_pending: Option<String>) -> Self {
        Self {
            record,
            expect_pending,
            cancel: None,
            register: None,
        }
    }
}

/// What became of one mutation of a pushed batch.
#[derive(Debug, Clone, PartialEq)]
pub enum MutationVerdict {
    /// Applied, duplicate or conflict-resolved: the task is done. Carries
    /// the mutation's own result from the push answer (what its
    /// `sync:complete` listeners receive as the body).
    Done(serde_json::Value),
    /// The server rejected it; sending it again cannot help.
    Rejected(TaskError),
    /// No usable result for it: send it again later.
    Retry(TaskError),
}

/// A push ready to send: the request, the tasks it carries (dispatched,
/// with their frozen bodies), and the tasks left out because another write
/// or another tab replaced or cancelled them since they were scheduled.
#[derive(Debug, Clone)]
pub struct PushPlan {
    pub request: HttpRequest,
    pub tasks: Vec<Task>,
    pub dropped: Vec<Task>,
}

/// The outbox's view of replication: how to send a batch of mutation tasks
/// as one push, and how to apply its answer.
pub trait Replica {
    /// Mutations per push.
    fn batch_size(&self) -> usize;
    /// Freezes and marks the tasks as dispatched, and builds their push.
    async fn prepare_push(&self, tasks: Vec<Task>) -> Result<PushPlan, StoreError>;
    /// Applies a 2xx push answer: one verdict per task, in order, and the
    /// tasks queued as a consequence (a conflict resolved for the client).
    async fn apply_push(
        &self,
        tasks: &[Task],
        response: &HttpResponse,
    ) -> Result<(Vec<MutationVerdict>, Vec<Task>), StoreError>;
    /// A mutation task went to the dead letters without a per-mutation
    /// result (the push was refused as a whole, or its retries ran out):
    /// its record must not stay `pending`.
    async fn abandon(&self, _task: &Task, _error: &TaskError) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A client without replication: mutation tasks cannot exist.
pub struct NoReplica;

impl Replica for NoReplica {
    fn batch_size(&self) -> usize {
        1
    }
    async fn prepare_push(&self, _tasks: Vec<Task>) -> Result<PushPlan, StoreError> {
        Err(StoreError::Corrupt("a mutation task is queued but replication is not configured (serverUrl and entityTypes)".into()))
    }
    async fn apply_push(
        &self,
        tasks: &[Task],
        _response: &HttpResponse,
    ) -> Result<(Vec<MutationVerdict>, Vec<Task>), StoreError> {
        Ok((
            tasks
                .iter()
                .map(|_| MutationVerdict::Done(serde_json::Value::Null))
                .collect(),
            Vec::new(),
        ))
    }
}

impl<R: Replica> Replica for std::rc::Rc<R> {
    fn batch_size(&self) -> usize {
        (**self).batch_size()
    }
    async fn prepare_push(&self, tasks: Vec<Task>) -> Result<PushPlan, StoreError> {
        (**self).prepare_push(tasks).await
    }
    async fn apply_push(
        &self,
        tasks: &[Task],
        response: &HttpResponse,
    ) -> Result<(Vec<MutationVerdict>, Vec<Task>), StoreError> {
        (**self).apply_push(tasks, response).await
    }
    async fn abandon(&self, task: &Task, error: &TaskError) -> Result<(), StoreError> {
        (**self).abandon(task, error).await
    }
}

/// The app's `onConflict(local, remote)` callback.
pub trait ConflictResolver {
    fn is_set(&self) -> bool;
    /// The data the record should have; `Err` when the callback failed.
    async fn resolve(
        &self,
        entity_type: &str,
        local: &serde_json::Value,
        remote: &serde_json::Value,
    ) -> Result<serde_json::Map<String, serde_json::Value>, String>;
}

/// No callback: the configured strategy decides.
pub struct NoResolver;

impl ConflictResolver for NoResolver {
    fn is_set(&self) -> bool {
        false
    }
    async fn resolve(
        &self,
        _entity_type: &str,
        _local: &serde_json::Value,
        _remote: &serde_json::Value,
    ) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        Err("no onConflict callback".into())
    }
}

impl<S: RecordStore> RecordStore for std::rc::Rc<S> {
    async fn get_record(
        &self,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<LocalRecord>, StoreError> {
        (**self).get_record(entity_type, id).await
    }
    async fn get_records(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<LocalRecord>>, StoreError> {
        (**self).get_records(keys).await
    }
    async fn records_of(&self, entity_type: &str) -> Result<Vec<LocalRecord>, StoreError> {
        (**self).records_of(entity_type).await
    }
    async fn mutation_chains(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Vec<Task>>, StoreError> {
        (**self).mutation_chains(keys).await
    }
    async fn write_local(&self, record: &LocalRecord, task: Task) -> Result<Task, StoreError> {
        (**self).write_local(record, task).await
    }
    async fn mark_dispatched(&self, tasks: &[Task]) -> Result<Vec<bool>, StoreError> {
        (**self).mark_dispatched(tasks).await
    }
    async fn apply(&self, change: RecordChange) -> Result<Vec<Task>, StoreError> {
        (**self).apply(change).await
    }
    async fn get_meta_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        (**self).get_meta_text(key).await
    }
    async fn put_meta_text(&self, key: &str, value: &str) -> Result<(), StoreError> {
        (**self).put_meta_text(key, value).await
    }
}

impl<C: ConflictResolver> ConflictResolver for std::rc::Rc<C> {
    fn is_set(&self) -> bool {
        (**self).is_set()
    }
    async fn resolve(
        &self,
        entity_type: &str,
        local: &serde_json::Value,
        remote: &serde_json::Value,
    ) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        (**self).resolve(entity_type, local, remote).await
    }
}
