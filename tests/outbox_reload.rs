#![cfg(not(target_arch = "wasm32"))]
//! Outbox: the read of the whole queue at the start of a flush (what other
//! tabs and workers registered or finished) races this realm's own writes.
//! Its result can be older than the schedule: a task registered while the
//! read was under way is missing from it, and must not be taken for one
//! another tab finished (commit 9441a60: such a task was dropped from the
//! schedule and waited for a later flush — a dead letter retried during a
//! flush waited out the next backoff, the inspector e2e timed out).
//!
//! The store here is the in-memory one behind a wrapper whose `load_tasks`
//! reads, then yields once before answering: what IndexedDB does when a
//! read transaction was created before a write that commits meanwhile.

mod support;

use std::cell::Cell;
use std::rc::Rc;
use support::outbox::*;
use tidesync::engine::ports::NoReplica;
use tidesync::engine::{FailedTask, Ports, Store, Task};

/// `MemoryStore` whose next `load_tasks` answers what it read one turn late.
#[derive(Default)]
struct LateReads {
    inner: MemoryStore,
    late: Cell<bool>,
}

impl Store for LateReads {
    async fn load_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let read = self.inner.load_tasks().await;
        if self.late.replace(false) {
            YieldOnce::new().await;
        }
        read
    }
    async fn register_tasks(&self, tasks: Vec<Task>) -> Result<Vec<Task>, StoreError> {
        self.inner.register_tasks(tasks).await
    }
    async fn update_task(&self, task: &Task) -> Result<bool, StoreError> {
        self.inner.update_task(task).await
    }
    async fn complete_task(&self, id: &str, revision: u64) -> Result<bool, StoreError> {
        self.inner.complete_task(id, revision).await
    }
    async fn complete_tasks(&self, done: &[(String, u64)]) -> Result<(), StoreError> {
        self.inner.complete_tasks(done).await
    }
    async fn dead_letter(&self, failed: &FailedTask) -> Result<bool, StoreError> {
        self.inner.dead_letter(failed).await
    }
    async fn list_failed(&self) -> Result<Vec<FailedTask>, StoreError> {
        self.inner.list_failed().await
    }
    async fn count_failed(&self) -> Result<u32, StoreError> {
        self.inner.count_failed().await
    }
    async fn requeue_failed(&self, id: &str, now: Millis) -> Result<Option<Task>, StoreError> {
        self.inner.requeue_failed(id, now).await
    }
    async fn discard_failed(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.discard_failed(id).await
    }
    async fn put_answer(&self, id: &str, answer: &serde_json::Value) -> Result<(), StoreError> {
        self.inner.put_answer(id, answer).await
    }
    async fn get_answer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.get_answer(id).await
    }
    async fn delete_answer(&self, id: &str) -> Result<(), StoreError> {
        self.inner.delete_answer(id).await
    }
    async fn restore_tasks(&self, tasks: &[Task]) -> Result<(), StoreError> {
        self.inner.restore_tasks(tasks).await
    }
}

struct LateReadPorts;

impl Ports for LateReadPorts {
    type Replica = NoReplica;
    type Store = Rc<LateReads>;
    type Transport = Rc<ScriptedTransport>;
    type Clock = Rc<ManualClock>;
    type Locks = Rc<LocalLock>;
    type Events = Rc<RecordingEvents>;
    type Tokens = Rc<QueuedTokens>;
}

#[test]
fn a_task_registered_while_the_flush_reads_the_queue_is_sent_by_that_flush() {
    let store = Rc::new(LateReads::default());
    let clock = Rc::new(ManualClock::new(T0));
    let transport = Rc::new(ScriptedTransport::new(clock.clone()));
    let outbox = block_on(Outbox::<LateReadPorts>::open(
        OutboxPorts {
            store: store.clone(),
            transport: transport.clone(),
            clock: clock.clone(),
            locks: Rc::new(LocalLock::default()),
            events: Rc::new(RecordingEvents::default()),
            tokens: Rc::new(QueuedTokens::default()),
        },
        quiet_options(),
        None,
    ))
    .expect("open");

    // The registration yields once (group commit); the flush starts its
    // read meanwhile, reads an empty queue, and answers only after the
    // registration has committed and put the task in the schedule.
    store.late.set(true);
    let (registered, flushed) = block_on(futures::future::join(
        outbox.register(post("during-read")),
        outbox.flush(),
    ));
    registered.expect("register");
    let report = flushed.expect("flush");

    let sent: Vec<String> = transport
        .sent
        .borrow()
        .iter()
        .map(|(r, _)| id_of(r))
        .collect();
    assert_eq!(
        sent,
        vec!["during-read".to_owned()],
        "sent by the flush that was reading"
    );
    assert_eq!(report.completed, 1);
    assert_eq!(outbox.status().pending_count, 0);
    assert!(block_on(store.load_tasks()).expect("load").is_empty());
}
