//! An in-memory [`Store`]: the same contract as IndexedDB, without
//! durability. Used by native tests and as the reference the IndexedDB
//! adapter is compared against.

use crate::engine::ports::{
    RecordChange, RecordStore, RecordWrite, Store, StoreError, PULL_CURSOR_KEY,
};
use crate::engine::replication::record::LocalRecord;
use crate::engine::replication::replicator::{in_chain, mutation_task_id, place_in_chain};
use crate::engine::task::{FailedTask, Task};
use crate::engine::time::Millis;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct MemoryStore {
    tasks: RefCell<BTreeMap<String, Task>>,
    pub(crate) failed: RefCell<BTreeMap<String, FailedTask>>,
    seq: Cell<u64>,
    /// Number of write transactions, so tests can check group commit.
    pub transactions: Cell<u64>,
    /// Number of full reads of the queue (`load_tasks`).
    pub loads: Cell<u64>,
    /// When set, every write fails with this error (quota, unavailable…).
    pub fail_writes: RefCell<Option<StoreError>>,
    /// Answers kept for dependent tasks.
    pub answers: RefCell<BTreeMap<String, serde_json::Value>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> Result<(), StoreError> {
        if let Some(error) = self.fail_writes.borrow().clone() {
            return Err(error);
        }
        self.transactions.set(self.transactions.get() + 1);
        Ok(())
    }

    pub fn task(&self, id: &str) -> Option<Task> {
        self.tasks.borrow().get(id).cloned()
    }

    pub fn task_count(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Loses everything, as a browser deleting the database does.
    pub fn wipe(&self) {
        self.tasks.borrow_mut().clear();
        self.failed.borrow_mut().clear();
        self.answers.borrow_mut().clear();
        self.seq.set(0);
    }
}

impl Store for MemoryStore {
    async fn load_tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.loads.set(self.loads.get() + 1);
        Ok(self.tasks.borrow().values().cloned().collect())
    }

    async fn register_tasks(&self, tasks: Vec<Task>) -> Result<Vec<Task>, StoreError> {
        self.write()?;
        let mut stored_tasks = self.tasks.borrow_mut();
        let mut out = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            self.seq.set(self.seq.get() + 1);
            task.revision = self.seq.get();
            match stored_tasks.get(&task.id) {
                Some(existing) => {
                    task.seq = existing.seq;
                    task.created_at = existing.created_at;
                }
                None => task.seq = self.seq.get(),
            }
            stored_tasks.insert(task.id.clone(), task.clone());
            out.push(task);
        }
        Ok(out)
    }

    async fn update_task(&self, task: &Task) -> Result<bool, StoreError> {
        self.write()?;
        let mut tasks = self.tasks.borrow_mut();
        match tasks.get_mut(&task.id) {
            Some(stored) if stored.revision == task.revision => {
                *stored = task.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn complete_task(&self, id: &str, revision: u64) -> Result<bool, StoreError> {
        self.write()?;
        let mut tasks = self.tasks.borrow_mut();
        if tasks.get(id).is_some_and(|t| t.revision == revision) {
            tasks.remove(id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn complete_tasks(&self, done: &[(String, u64)]) -> Result<(), StoreError> {
        self.write()?;
        let mut tasks = self.tasks.borrow_mut();
        for (id, revision) in done {
            if tasks.get(id).is_some_and(|t| t.revision == *revision) {
                tasks.remove(id);
            }
        }
        Ok(())
    }

    async fn dead_letter(&self, failed: &FailedTask) -> Result<bool, StoreError> {
        self.write()?;
        let mut tasks = self.tasks.borrow_mut();
        if tasks
            .get(&failed.id)
            .is_none_or(|t| t.revision != failed.task.revision)
        {
            return Ok(false);
        }
        tasks.remove(&failed.id);
        self.failed
            .borrow_mut()
            .insert(failed.id.clone(), failed.clone());
        Ok(true)
    }

    async fn list_failed(&self) -> Result<Vec<FailedTask>, StoreError> {
        Ok(self.failed.borrow().values().cloned().collect())
    }

    async fn count_failed(&self) -> Result<u32, StoreError> {
        Ok(self.failed.borrow().len() as u32)
    }

    async fn requeue_failed(&self, id: &str, _now: Millis) -> Result<Option<Task>, StoreError> {
        self.write()?;
        let Some(failed) = self.failed.borrow_mut().remove(id) else {
            return Ok(None);
        };
        if let Some(queued) = self.tasks.borrow().get(id) {
            // The app registered this id again since it failed: the newer
            // payload wins (as in IndexedDB).
            return Ok(Some(queued.clone()));
        }
        let mut task = failed.task;
        self.seq.set(self.seq.get() + 1);
        task.seq = self.seq.get();
        task.attempts = 0;
        task.errors.clear();
        task.next_attempt_at = None;
        task.dispatched = false;
        task.revision = self.seq.get();
        self.tasks
            .borrow_mut()
            .insert(task.id.clone(), task.clone());
        Ok(Some(task))
    }

    async fn discard_failed(&self, id: &str) -> Result<bool, StoreError> {
        self.write()?;
        Ok(self.failed.borrow_mut().remove(id).is_some())
    }

    async fn put_answer(&self, id: &str, answer: &serde_json::Value) -> Result<(), StoreError> {
        self.write()?;
        self.answers
            .borrow_mut()
            .insert(id.to_owned(), answer.clone());
        Ok(())
    }

    async fn get_answer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.answers.borrow().get(id).cloned())
    }

    async fn delete_answer(&self, id: &str) -> Result<(), StoreError> {
        self.write()?;
        self.answers.borrow_mut().remove(id);
        Ok(())
    }

    async fn restore_tasks(&self, tasks: &[Task]) -> Result<(), StoreError> {
        self.write()?;
        let mut stored = self.tasks.borrow_mut();
        for task in tasks {
            self.seq
                .set(self.seq.get().max(task.seq).max(task.revision));
            stored.insert(task.id.clone(), task.clone());
        }
        Ok(())
    }
}

/// The in-memory record store, for the replication engine's native tests.
#[derive(Default)]
pub struct MemoryRecords {
    pub tasks: MemoryStore,
    records: RefCell<BTreeMap<(String, String), LocalRecord>>,
    meta: RefCell<BTreeMap<String, String>>,
}

impl MemoryRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces a record behind the engine's back (tests of repair).
    pub fn tamper(&self, record: LocalRecord) {
        self.records
            .borrow_mut()
            .insert((record.entity_type.clone(), record.id.clone()), record);
    }

    /// The record's queued mutations, oldest first.
    fn chain(&self, entity_type: &str, id: &str) -> Vec<Task> {
        let head = mutation_task_id(entity_type, id);
        let mut chain: Vec<Task> = self
            .tasks
            .tasks
            .borrow()
            .values()
            .filter(|t| in_chain(&head, &t.id))
            .cloned()
            .collect();
        chain.sort_by_key(|t| t.seq);
        chain
    }

    /// Whether a write's guards still hold (see [`RecordWrite`]).
    fn still_applies(&self, write: &RecordWrite) -> bool {
        let key = (write.record.entity_type.clone(), write.record.id.clone());
        let pending = self
            .records
            .borrow()
            .get(&key)
            .and_then(|r| r.pending_mutation_id.clone());
        if pending != write.expect_pending {
            return false;
        }
        write.cancel.as_ref().is_none_or(|(id, revision)| {
            self.tasks
                .task(id)
                .is_some_and(|t| t.revision == *revision && !t.dispatched)
        })
    }

    pub fn remove(&self, entity_type: &str, id: &str) {
        self.records
            .borrow_mut()
            .remove(&(entity_type.to_owned(), id.to_owned()));
    }
}

impl RecordStore for MemoryRecords {
    async fn get_record(
        &self,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<LocalRecord>, StoreError> {
        Ok(self
            .records
            .borrow()
            .get(&(entity_type.to_owned(), id.to_owned()))
            .cloned())
    }

    async fn get_records(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<LocalRecord>>, StoreError> {
        let records = self.records.borrow();
        Ok(keys.iter().map(|k| records.get(k).cloned()).collect())
    }

    async fn records_of(&self, entity_type: &str) -> Result<Vec<LocalRecord>, StoreError> {
        Ok(self
            .records
            .borrow()
            .values()
            .filter(|r| r.entity_type == entity_type)
            .cloned()
            .collect())
    }

    async fn mutation_chains(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Vec<Task>>, StoreError> {
        Ok(keys.iter().map(|(t, id)| self.chain(t, id)).collect())
    }

    async fn write_local(&self, record: &LocalRecord, task: Task) -> Result<Task, StoreError> {
        let mut task = task;
        place_in_chain(&self.chain(&record.entity_type, &record.id), &mut task);
        let stored = self.tasks.register_tasks(vec![task]).await?;
        let head = mutation_task_id(&record.entity_type, &record.id);
        self.tasks
            .failed
            .borrow_mut()
            .retain(|id, _| !in_chain(&head, id));
        self.records.borrow_mut().insert(
            (record.entity_type.clone(), record.id.clone()),
            record.clone(),
        );
        stored
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt("no task stored".into()))
    }

    async fn apply(&self, change: RecordChange) -> Result<Vec<Task>, StoreError> {
        let mut register = Vec::new();
        for write in change.writes {
            if !self.still_applies(&write) {
                continue;
            }
            let RecordWrite {
                record,
                cancel,
                register: task,
                ..
            } = write;
            if let Some((id, _)) = cancel {
                self.tasks.tasks.borrow_mut().remove(&id);
            }
            register.extend(task);
            self.records
                .borrow_mut()
                .insert((record.entity_type.clone(), record.id.clone()), record);
        }
        let registered = if register.is_empty() {
            Vec::new()
        } else {
            self.tasks.register_tasks(register).await?
        };
        let mut records = self.records.borrow_mut();
        for key in change.delete_records {
            if records.get(&key).is_some_and(|r| r.has_unsent_change()) {
                continue;
            }
            records.remove(&key);
        }
        if let Some(cursor) = change.cursor {
            self.meta
                .borrow_mut()
                .insert(PULL_CURSOR_KEY.into(), cursor);
        }
        Ok(registered)
    }

    async fn mark_dispatched(&self, tasks: &[Task]) -> Result<Vec<bool>, StoreError> {
        self.tasks.write()?;
        let mut stored = self.tasks.tasks.borrow_mut();
        Ok(tasks
            .iter()
            .map(|task| match stored.get_mut(&task.id) {
                Some(current) if current.revision == task.revision => {
                    *current = task.clone();
                    true
                }
                _ => false,
            })
            .collect())
    }

    async fn get_meta_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.meta.borrow().get(key).cloned())
    }

    async fn put_meta_text(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta
            .borrow_mut()
            .insert(key.to_owned(), value.to_owned());
        Ok(())
    }
}
