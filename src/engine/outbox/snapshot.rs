//! What the outbox reports about itself: status, the queue in run order, a
//! task's state, metrics and the health verdict.

use super::*;

impl<P: Ports> Outbox<P> {
    pub(super) fn emit_status(&self) {
        self.events.emit(Event::Status(self.status()));
    }

    pub fn status(&self) -> Status {
        let state = self.state.borrow();
        Status {
            pending_count: state.schedule.len(),
            failed_count: state.failed_count,
            in_flight_count: state.in_flight.len(),
            online: state.online,
            circuit: state.breaker.state().as_str(),
            auth_required: state.auth_paused,
            last_sync_at: state.last_sync_at,
            last_sync_ok: state.last_sync_ok,
            total_synced: state.metrics.completed,
            is_sync_in_progress: state.flushing,
        }
    }

    /// Queued tasks in the order they would run (priority, then seq).
    pub fn queued_tasks(&self) -> Vec<Task> {
        let mut tasks: Vec<Task> = self.state.borrow().schedule.tasks().cloned().collect();
        tasks.sort_by_key(|t| (t.priority, t.seq));
        tasks
    }

    pub async fn task_status(&self, id: &str) -> Result<Option<TaskStatus>, StoreError> {
        {
            let state = self.state.borrow();
            if let Some(task) = state.schedule.get(id) {
                let state_name = if state.in_flight.contains(id) {
                    TaskState::InFlight
                } else {
                    TaskState::Pending
                };
                return Ok(Some(TaskStatus {
                    id: id.to_owned(),
                    state: state_name,
                    attempts: task.attempts,
                    next_attempt_at: task.next_attempt_at,
                    last_error: task.last_error().cloned(),
                }));
            }
        }
        if let Some(failed) = self
            .store
            .list_failed()
            .await?
            .into_iter()
            .find(|f| f.id == id)
        {
            return Ok(Some(TaskStatus {
                id: id.to_owned(),
                state: TaskState::Failed,
                attempts: failed.task.attempts,
                next_attempt_at: None,
                last_error: failed.task.last_error().cloned(),
            }));
        }
        let completed = self
            .state
            .borrow()
            .recently_completed
            .iter()
            .any(|done| done == id);
        Ok(completed.then(|| TaskStatus {
            id: id.to_owned(),
            state: TaskState::Complete,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
        }))
    }

    pub fn metrics(&self) -> Metrics {
        self.state.borrow().metrics.clone()
    }

    /// A verdict with reasons and what to do, from the current state.
    pub fn health(&self) -> Health {
        let status = self.status();
        let now = self.clock.now();
        let oldest = self
            .state
            .borrow()
            .schedule
            .tasks()
            .map(|t| t.created_at)
            .reduce(f64::min);
        let state = self.state.borrow();
        health::assess(&health::HealthInputs {
            status: &status,
            oldest_wait_ms: oldest.map(|at| now - at),
            storage: state.storage.as_ref(),
            eviction: state.eviction.as_ref(),
        })
    }
}
