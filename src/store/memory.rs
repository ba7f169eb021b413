//! An in-memory [`Store`]: the same contract as IndexedDB, without
//! durability. Used by native tests and as the reference the IndexedDB
//! adapter is compared against.

use crate::engine::ports::{Store, StoreError};
use crate::engine::task::{FailedTask, Task};
use crate::engine::time::Millis;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct MemoryStore {
    tasks: RefCell<BTreeMap<String, Task>>,
    failed: RefCell<BTreeMap<String, FailedTask>>,
    seq: Cell<u64>,
    /// Number of write transactions, so tests can check group commit.
    pub transactions: Cell<u64>,
    /// When set, every write fails with this error (quota, unavailable…).
    pub fail_writes: RefCell<Option<StoreError>>,
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
}

impl Store for MemoryStore {
    async fn load_tasks(&self) -> Result<Vec<Task>, StoreError> {
        Ok(self.tasks.borrow().values().cloned().collect())
    }

    async fn register_tasks(&self, tasks: Vec<Task>) -> Result<Vec<Task>, StoreError> {
        self.write()?;
        let mut stored_tasks = self.tasks.borrow_mut();
        let mut out = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            match stored_tasks.get(&task.id) {
                Some(existing) => {
                    task.seq = existing.seq;
                    task.created_at = existing.created_at;
                    task.revision = existing.revision + 1;
                }
                None => {
                    self.seq.set(self.seq.get() + 1);
                    task.seq = self.seq.get();
                }
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

    async fn complete_task(&self, id: &str, revision: u32) -> Result<bool, StoreError> {
        self.write()?;
        let mut tasks = self.tasks.borrow_mut();
        if tasks.get(id).is_some_and(|t| t.revision == revision) {
            tasks.remove(id);
            return Ok(true);
        }
        Ok(false)
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
        let mut task = failed.task;
        self.seq.set(self.seq.get() + 1);
        task.seq = self.seq.get();
        task.attempts = 0;
        task.errors.clear();
        task.next_attempt_at = None;
        task.revision += 1;
        self.tasks
            .borrow_mut()
            .insert(task.id.clone(), task.clone());
        Ok(Some(task))
    }

    async fn discard_failed(&self, id: &str) -> Result<bool, StoreError> {
        self.write()?;
        Ok(self.failed.borrow_mut().remove(id).is_some())
    }
}
