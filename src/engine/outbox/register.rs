//! Registration by group commit: the first `register` of a tick yields once
//! and commits everything registered meanwhile in one store transaction.

use super::*;

impl<P: Ports> Outbox<P> {
    /// Queues a task. Registrations made in the same tick share one store
    /// transaction. Re-registering a queued id replaces its payload and keeps
    /// its place.
    pub async fn register(&self, new: NewTask) -> Result<Task, StoreError> {
        if self.is_closed() {
            return Err(StoreError::Unavailable("the client is closed".into()));
        }
        let now = self.clock.now();
        let task = Task {
            expires_at: crate::engine::retention::expires_at(
                TaskKind::Request,
                now,
                new.max_retention_time,
                self.options.max_retention_time,
            ),
            depends_on: new.depends_on,
            id: new.id,
            kind: TaskKind::Request,
            priority: new.priority,
            seq: 0,
            ordering_key: new.ordering_key,
            request: new.request,
            revision: 0,
            idempotency_key: self.clock.unique_id(),
            retry_on_failure: new.retry_on_failure,
            attempts: 0,
            next_attempt_at: None,
            created_at: now,
            errors: Vec::new(),
            dispatched: false,
        };
        let (sender, receiver) = oneshot::channel();
        let lead = {
            let mut state = self.state.borrow_mut();
            state.pending_registrations.push((task, sender));
            !std::mem::replace(&mut state.committing, true)
        };
        if lead {
            self.clock.yield_now().await;
            self.commit_registrations().await;
        }
        receiver.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the registration was abandoned".into(),
            ))
        })
    }

    pub(super) async fn commit_registrations(&self) {
        loop {
            let batch = std::mem::take(&mut self.state.borrow_mut().pending_registrations);
            if batch.is_empty() {
                self.state.borrow_mut().committing = false;
                return;
            }
            let (tasks, senders): (Vec<Task>, Vec<_>) = batch.into_iter().unzip();
            let result = self.store.register_tasks(tasks).await;
            let mut state = self.state.borrow_mut();
            state.metrics.register_transactions += 1;
            match result {
                Ok(stored) => {
                    for (task, sender) in stored.into_iter().zip(senders) {
                        state.metrics.registered += 1;
                        state.added_since_load.insert(task.id.clone());
                        state.schedule.upsert(task.clone());
                        state.rerun_requested |= state.flushing;
                        let _ = sender.send(Ok(task));
                    }
                }
                Err(error) => {
                    for sender in senders {
                        let _ = sender.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}
