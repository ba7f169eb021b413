//! The flush loop: one flush at a time (this realm's flag, other realms'
//! lock), up to `concurrency` requests in flight across ordering keys, each
//! sent and settled inside its own future; due mutations batched into pushes.

use super::conditions::Prepared;
use super::settle::{Sent, Settled};
use super::*;
use crate::engine::credentials::{authorize, has_header, token_reaches};

impl<P: Ports> Outbox<P> {
    /// Runs due work now. A call while a flush runs waits for it (and for
    /// one more pass if work arrived meanwhile) instead of overlapping.
    pub async fn flush(&self) -> Result<FlushReport, StoreError> {
        let waiter = {
            let mut state = self.state.borrow_mut();
            if state.flushing {
                state.rerun_requested = true;
                let (sender, receiver) = oneshot::channel();
                state.flush_waiters.push(sender);
                Some(receiver)
            } else {
                state.flushing = true;
                None
            }
        };
        if let Some(waiter) = waiter {
            let _ = waiter.await;
            return Ok(self.idle_report());
        }
        let mut total = FlushReport::default();
        let result = loop {
            self.state.borrow_mut().rerun_requested = false;
            match self.flush_once().await {
                Ok(report) => {
                    total.sent += report.sent;
                    total.completed += report.completed;
                    total.failed += report.failed;
                    total.retried += report.retried;
                    total.remaining = report.remaining;
                    total.next_wakeup_at = report.next_wakeup_at;
                }
                Err(error) => break Err(error),
            }
            let state = self.state.borrow();
            if !state.rerun_requested
                || state.closed
                || total.sent == 0 && !self.has_due_work(&state)
            {
                break Ok(total.clone());
            }
        };
        let waiters = {
            let mut state = self.state.borrow_mut();
            state.flushing = false;
            std::mem::take(&mut state.flush_waiters)
        };
        for waiter in waiters {
            let _ = waiter.send(());
        }
        self.emit_status();
        result
    }

    pub(super) fn cannot_send(&self) -> bool {
        let state = self.state.borrow();
        state.closed || state.auth_paused || !state.breaker.would_allow(self.clock.now())
    }

    pub(super) fn has_due_work(&self, state: &State) -> bool {
        let now = self.clock.now();
        !state.auth_paused && state.schedule.next_due_at().is_some_and(|at| at <= now)
    }

    pub(super) fn idle_report(&self) -> FlushReport {
        let state = self.state.borrow();
        FlushReport {
            remaining: state.schedule.len(),
            next_wakeup_at: self.next_wakeup(&state),
            ..Default::default()
        }
    }

    pub(super) fn next_wakeup(&self, state: &State) -> Option<Millis> {
        if state.auth_paused || state.closed {
            return None;
        }
        let due = state.schedule.next_due_at()?;
        Some(match state.breaker.open_until() {
            Some(until) => due.max(until),
            None => due,
        })
    }

    pub(super) async fn flush_once(&self) -> Result<FlushReport, StoreError> {
        // Nothing can be sent (the circuit is open, or credentials were
        // refused): do not read the whole queue back from storage for
        // nothing — with a long queue that made every registration cost
        // O(queue). The wake timer comes back when the breaker lets a probe.
        if self.cannot_send() {
            return Ok(self.idle_report());
        }
        let _guard = self.locks.acquire().await;
        if self.is_closed() {
            return Ok(self.idle_report());
        }
        self.reload_from_store().await?;
        let expired = self.expire_overdue().await?;
        let started = self.clock.now();
        let total = {
            let mut state = self.state.borrow_mut();
            if std::mem::take(&mut state.make_all_due) {
                state.schedule.make_all_due();
            }
            state.metrics.flushes += 1;
            state.token_refreshed = false;
            state.schedule.len()
        };
        self.emit_status();
        let mut report = FlushReport {
            failed: expired,
            ..Default::default()
        };
        let mut running = FuturesUnordered::new();
        // Each request is sent and settled inside its own future, so every
        // one in flight keeps being polled while another is settled (a
        // store transaction must never wait on a future nobody polls).
        // A store error while settling stops dispatching, but the requests
        // already in flight are still settled (their keys released) before
        // the error is returned, so nothing stays marked busy.
        let mut store_error = None;
        loop {
            while store_error.is_none() && running.len() < self.options.concurrency.max(1) {
                let Some(task) = self.take_dispatchable(running.len()) else {
                    break;
                };
                let batch = if task.kind == TaskKind::Mutation {
                    self.take_mutation_batch(task)
                } else {
                    vec![task]
                };
                running.push(self.attempt_and_settle(batch));
            }
            let Some(result) = running.next().await else {
                break;
            };
            match result {
                Ok(settled) => {
                    for one in settled {
                        match one {
                            Settled::Completed => report.completed += 1,
                            Settled::Failed => report.failed += 1,
                            Settled::Retried => report.retried += 1,
                            Settled::Sent(n) => report.sent += n,
                            Settled::Paused | Settled::Deferred => {}
                        }
                    }
                }
                Err(error) => {
                    store_error.get_or_insert(error);
                }
            }
            let done = report.completed + report.failed + report.retried;
            self.events.emit(Event::Progress {
                phase: "flush",
                done,
                total: total.max(done),
            });
        }
        if let Some(error) = store_error {
            return Err(error);
        }
        let mut state = self.state.borrow_mut();
        let elapsed = self.clock.now() - started;
        state.metrics.last_flush_duration_ms = elapsed;
        if report.sent > 0 {
            state.last_sync_at = Some(self.clock.now());
            state.last_sync_ok = Some(report.failed == 0 && report.retried == 0);
        }
        report.remaining = state.schedule.len();
        report.next_wakeup_at = self.next_wakeup(&state);
        Ok(report)
    }

    /// Merges what other tabs and workers registered or finished.
    pub(super) async fn reload_from_store(&self) -> Result<(), StoreError> {
        // A task registered, adopted or requeued while this read is under way
        // may be missing from it: it is not gone.
        self.state.borrow_mut().added_since_load.clear();
        let stored = self.store.load_tasks().await?;
        // Dead letters change outside this engine too (other tabs, a local
        // write superseding a failed mutation).
        let failed_count = self.store.count_failed().await?;
        let mut state = self.state.borrow_mut();
        state.failed_count = failed_count;
        let stored_ids: HashSet<String> = stored.iter().map(|t| t.id.clone()).collect();
        let gone: Vec<String> = state
            .schedule
            .tasks()
            .filter(|t| {
                !stored_ids.contains(&t.id)
                    && !state.in_flight.contains(&t.id)
                    && !state.added_since_load.contains(&t.id)
            })
            .map(|t| t.id.clone())
            .collect();
        for id in gone {
            state.schedule.remove(&id);
        }
        for task in stored {
            let in_flight = state.in_flight.contains(&task.id);
            let keep_ours = state.schedule.get(&task.id).is_some_and(|t| {
                // The stored copy wins a tie: another tab may have
                // dispatched (frozen) it without changing its revision.
                t.revision > task.revision
                    || (t.revision == task.revision && (in_flight || t.attempts > task.attempts))
            });
            if !keep_ours {
                state.schedule.upsert(task);
            }
        }
        Ok(())
    }

    pub(super) fn take_dispatchable(&self, running: usize) -> Option<Task> {
        let now = self.clock.now();
        let mut state = self.state.borrow_mut();
        if state.closed || state.auth_paused {
            return None;
        }
        // Without evidence of a network, send one probe at a time.
        if !state.online && running > 0 {
            return None;
        }
        if !state.breaker.would_allow(now) {
            return None;
        }
        let task = state.schedule.take_next(now)?;
        state.breaker.try_acquire(now);
        state.in_flight.insert(task.id.clone());
        Some(task)
    }

    /// More due mutation tasks (of other records) to send with `first` in
    /// one push, up to the replica's batch size.
    /// Stops at the replica's batch size, at a smaller limit learnt from a
    /// 413, and before the body passes [`PUSH_BODY_BUDGET`] (a mutation
    /// larger than that goes alone).
    pub(super) fn take_mutation_batch(&self, first: Task) -> Vec<Task> {
        let mut state = self.state.borrow_mut();
        let limit = self
            .replica
            .as_ref()
            .map_or(1, |r| r.batch_size().max(1))
            .min(state.push_limit.unwrap_or(usize::MAX))
            .max(1);
        let now = self.clock.now();
        let mut bytes = first.request.estimated_body_size();
        let mut batch = vec![first];
        while batch.len() < limit {
            let Some(task) = state.schedule.take_next_where(now, |t| {
                t.kind == TaskKind::Mutation
                    && bytes + t.request.estimated_body_size() <= PUSH_BODY_BUDGET
            }) else {
                break;
            };
            bytes += task.request.estimated_body_size();
            state.in_flight.insert(task.id.clone());
            batch.push(task);
        }
        batch
    }

    /// Sends one request (a plain task as registered, or a batch of
    /// mutations as one push) and settles its outcome, then frees every key
    /// it held, even when the store fails (the tasks then stay queued and
    /// are replayed).
    pub(super) async fn attempt_and_settle(
        &self,
        tasks: Vec<Task>,
    ) -> Result<Vec<Settled>, StoreError> {
        let keys: Vec<String> = tasks.iter().map(|t| t.key().to_owned()).collect();
        let settled = self.attempt(tasks).await;
        let mut state = self.state.borrow_mut();
        for key in keys {
            state.schedule.release(&key);
        }
        settled
    }

    pub(super) async fn attempt(&self, tasks: Vec<Task>) -> Result<Vec<Settled>, StoreError> {
        let (tasks, request) = match (tasks[0].kind, &self.replica) {
            (TaskKind::Request, _) => {
                let prepared = match self.prepare(&tasks[0]) {
                    Some(preparing) => Some(preparing.await?),
                    None => None,
                };
                match prepared {
                    None => {
                        let request = tasks[0].request.clone();
                        (tasks, request)
                    }
                    Some(Prepared::Send(request)) => (tasks, request),
                    Some(Prepared::Settled(settled)) => return Ok(settled),
                }
            }
            (TaskKind::Mutation, replica) => {
                let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
                let plan = match replica {
                    Some(replica) => replica.prepare_push(tasks).await,
                    None => Err(StoreError::Corrupt(
                        "a mutation task is queued but replication is not configured (serverUrl and entityTypes)".into(),
                    )),
                };
                let plan = match plan {
                    Ok(plan) => plan,
                    Err(error) => {
                        let mut state = self.state.borrow_mut();
                        for id in ids {
                            state.in_flight.remove(&id);
                        }
                        return Err(error);
                    }
                };
                self.drop_replaced(plan.dropped);
                if plan.tasks.is_empty() {
                    return Ok(vec![Settled::Deferred]);
                }
                (plan.tasks, plan.request)
            }
        };
        let sent = tasks.len();
        let token_reached = token_reaches(&request, self.options.server_url.as_deref());
        let (request, sent_token) = self.with_headers(request, &tasks[0]);
        // An app's own answer is handed to `sync:complete` listeners, so it
        // is capped; a push answer is protocol and read whole.
        let max_body = (tasks[0].kind == TaskKind::Request).then_some(APP_RESPONSE_BODY_LIMIT);
        let sent_at = self.clock.now();
        let result = self
            .transport
            .send(&request, self.options.request_timeout, max_body)
            .await;
        let mut settled = self
            .settle(
                tasks,
                result,
                Sent {
                    at: sent_at,
                    token: sent_token,
                    token_reached,
                },
            )
            .await?;
        settled.push(Settled::Sent(sent));
        Ok(settled)
    }

    /// Tasks a push left out because they were replaced or cancelled in the
    /// store since they were scheduled: forget this copy; the next pass
    /// reads what the store holds now.
    pub(super) fn drop_replaced(&self, dropped: Vec<Task>) {
        if dropped.is_empty() {
            return;
        }
        let mut state = self.state.borrow_mut();
        for task in dropped {
            state.in_flight.remove(&task.id);
            if state
                .schedule
                .get(&task.id)
                .is_some_and(|t| t.revision == task.revision)
            {
                state.schedule.remove(&task.id);
            }
        }
        state.rerun_requested = true;
    }

    /// The request as sent (our `Idempotency-Key`, the bearer token where
    /// it may go), and the token attached to it (if any).
    pub(super) fn with_headers(
        &self,
        mut request: HttpRequest,
        task: &Task,
    ) -> (HttpRequest, Option<String>) {
        // A push carries its mutations' ids, which make replays harmless; a
        // batch's make-up changes between attempts, so no one key fits it.
        if task.kind == TaskKind::Request && !has_header(&request.headers, "idempotency-key") {
            request
                .headers
                .insert("Idempotency-Key".into(), task.idempotency_key.clone());
        }
        let token = self.state.borrow().token.clone();
        let sent_token = authorize(
            &mut request,
            token.as_deref(),
            self.options.server_url.as_deref(),
        );
        (request, sent_token)
    }
}
