//! The outbox and the storage under it: the quota measured by the
//! platform, and what to do when the database vanishes (see
//! [`crate::engine::storage`]).

use super::*;
use crate::engine::storage::{Eviction, LossSeen, StorageUsage};

impl<P: Ports> Outbox<P> {
    /// The origin's storage as the platform measured it (for `getHealth()`).
    pub fn note_storage(&self, usage: StorageUsage) {
        self.state.borrow_mut().storage = Some(usage);
    }

    /// The database was missing when the client opened, though it had
    /// existed: nothing in memory to write back. Returns the report for the
    /// `storage:evicted` event, which the caller emits once listeners can
    /// hear it.
    pub fn note_lost_on_open(&self) -> Eviction {
        let eviction = Eviction {
            seen: LossSeen::OnOpen,
            detected_at: self.clock.now(),
            restored_tasks: 0,
            lost_failed_tasks: 0,
        };
        self.state.borrow_mut().eviction = Some(eviction.clone());
        eviction
    }

    /// The database vanished under the running client (its store already
    /// points at the new, empty one): writes back every task this client
    /// holds — exactly, with their places, revisions and idempotency keys —
    /// so nothing it had queued is lost, and emits `storage:evicted`.
    pub async fn recover_lost_store(&self) -> Result<Eviction, StoreError> {
        let tasks: Vec<Task> = self.state.borrow().schedule.tasks().cloned().collect();
        self.store.restore_tasks(&tasks).await?;
        let eviction = {
            let mut state = self.state.borrow_mut();
            let eviction = Eviction {
                seen: LossSeen::WhileOpen,
                detected_at: self.clock.now(),
                restored_tasks: tasks.len(),
                lost_failed_tasks: std::mem::take(&mut state.failed_count),
            };
            state.awaited.clear();
            state.eviction = Some(eviction.clone());
            eviction
        };
        self.events.emit(Event::StorageEvicted(eviction.clone()));
        self.emit_status();
        Ok(eviction)
    }
}
