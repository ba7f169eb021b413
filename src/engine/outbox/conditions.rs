//! What a plain task needs before it is sent, and what its delivery leaves
//! behind: it has not expired ([`crate::engine::retention`]); a dependent
//! is filled in from its dependency's kept answer, or dead-lettered when
//! that cannot be ([`crate::engine::dependency`]); the answer of a task
//! that queued tasks depend on is kept until the last of them is delivered.

use super::settle::Settled;
use super::*;
use crate::engine::dependency::{self, Blocked};
use crate::engine::retention;
use std::future::Future;
use std::pin::Pin;

/// A plain task at its turn: the request to send, or how it was settled
/// without sending.
pub(super) enum Prepared {
    Send(HttpRequest),
    Settled(Vec<Settled>),
}

/// A boxed future for a rare path: it is awaited only when there is work
/// (an expired task, a dependent), and stays out of the state machine of
/// the flush loop that every task goes through.
pub(super) type Rare<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + 'a>>;

impl<P: Ports> Outbox<P> {
    /// Checks a plain task at its turn to be sent: `None` when it is simply
    /// sent as registered, else the check to await.
    pub(super) fn prepare<'a>(&'a self, task: &'a Task) -> Option<Rare<'a, Prepared>> {
        let now = self.clock.now();
        if !retention::is_expired(task, now) && task.depends_on.is_none() {
            return None;
        }
        Some(Box::pin(self.prepare_now(task, now)))
    }

    async fn prepare_now(&self, task: &Task, now: Millis) -> Result<Prepared, StoreError> {
        if retention::is_expired(task, now) {
            let error = retention::expired_error(task, now);
            return self
                .give_up(task.clone(), error, retention::REASON.into())
                .await;
        }
        let Some(dependency) = &task.depends_on else {
            return Ok(Prepared::Send(task.request.clone()));
        };
        let filled = match self.store.get_answer(&dependency.task).await? {
            Some(answer) => dependency::fill(&task.request, dependency, &answer),
            None => Err(self.why_unanswered(&dependency.task).await?),
        };
        match filled {
            Ok(request) => Ok(Prepared::Send(request)),
            Err(blocked) => {
                let (error, reason) = dependency::blocked_error(&dependency.task, &blocked, now);
                self.give_up(task.clone(), error, reason).await
            }
        }
    }

    async fn give_up(
        &self,
        task: Task,
        error: TaskError,
        reason: String,
    ) -> Result<Prepared, StoreError> {
        self.state.borrow_mut().in_flight.remove(&task.id);
        self.dead_letter(task, error, reason).await?;
        Ok(Prepared::Settled(vec![Settled::Failed]))
    }

    async fn why_unanswered(&self, id: &str) -> Result<Blocked, StoreError> {
        if let Some(failed) = self
            .store
            .list_failed()
            .await?
            .into_iter()
            .find(|f| f.id == id)
        {
            return Ok(Blocked::Failed(failed.reason));
        }
        Ok(if self.state.borrow().schedule.get(id).is_some() {
            Blocked::Pending
        } else {
            Blocked::Unknown
        })
    }

    /// Dead-letters every queued task past its retention that is not in
    /// flight, so an expired task never waits behind others to be given up.
    /// Returns how many it gave up.
    pub(super) async fn expire_overdue(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let expired: Vec<Task> = {
            let state = self.state.borrow();
            state
                .schedule
                .tasks()
                .filter(|t| retention::is_expired(t, now) && !state.in_flight.contains(&t.id))
                .cloned()
                .collect()
        };
        let count = expired.len();
        for task in expired {
            let error = retention::expired_error(&task, now);
            self.dead_letter(task, error, retention::REASON.into())
                .await?;
        }
        Ok(count)
    }

    /// Before delivered plain tasks leave the store: keeps the answer of
    /// each that queued tasks depend on (a crash in between replays the
    /// task rather than losing the answer), and drops the answer a
    /// delivered dependent was the last to need. `None` when there is
    /// nothing to keep or drop (no dependents anywhere: the usual case).
    pub(super) fn keep_answers<'a>(
        &'a self,
        done: &'a [(Task, HttpResponse)],
    ) -> Option<Rare<'a, ()>> {
        let mut keep = Vec::new();
        let mut drop = Vec::new();
        {
            let mut state = self.state.borrow_mut();
            for (task, response) in done {
                if task.kind != TaskKind::Request {
                    continue;
                }
                if state.schedule.dependents_of(&task.id) > 0 || state.awaited.remove(&task.id) {
                    keep.push((task.id.as_str(), dependency::kept_answer(response)));
                }
                if let Some(dependency) = &task.depends_on {
                    if state.schedule.dependents_of(&dependency.task) <= 1 {
                        drop.push(dependency.task.as_str());
                    }
                }
            }
        }
        if keep.is_empty() && drop.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            for (id, answer) in keep {
                self.store.put_answer(id, &answer).await?;
            }
            for id in drop {
                self.store.delete_answer(id).await?;
            }
            Ok(())
        }))
    }

    /// Places a dependent before it is registered: in its dependency's
    /// ordering chain when the dependency is queued (so it waits for it),
    /// anywhere when the dependency's answer is already kept or the
    /// dependency failed (then it is dead-lettered at its turn, with the
    /// reason). `Ok(Err(message))` when nothing is known of the dependency.
    pub async fn place_dependent(
        &self,
        new: &mut NewTask,
    ) -> Result<Result<(), String>, StoreError> {
        let Some(dependency) = new.depends_on.clone() else {
            return Ok(Ok(()));
        };
        // From now on a delivery of the dependency keeps its answer, even if
        // it lands before this registration is committed.
        self.state
            .borrow_mut()
            .awaited
            .insert(dependency.task.clone());
        let known = self
            .state
            .borrow()
            .schedule
            .get(&dependency.task)
            .map(|t| t.key().to_owned());
        let key = match known {
            Some(key) => Some(key),
            None => self
                .store
                .load_tasks()
                .await?
                .into_iter()
                .find(|t| t.id == dependency.task)
                .map(|t| t.key().to_owned()),
        };
        if key.is_some() {
            new.ordering_key = key;
            return Ok(Ok(()));
        }
        if self.store.get_answer(&dependency.task).await?.is_some()
            || self
                .store
                .list_failed()
                .await?
                .iter()
                .any(|f| f.id == dependency.task)
        {
            return Ok(Ok(()));
        }
        self.state.borrow_mut().awaited.remove(&dependency.task);
        Ok(Err(format!(
            "`dependsOn`: no task {:?} is queued or failed, and no answer of it was kept; register a dependent while the task it depends on is still queued",
            dependency.task
        )))
    }
}
