//! Settling an answered (or failed) request: the one path for a plain
//! request and a push alike — delivered, retried with backoff, dead-lettered,
//! or paused for credentials — and what it means for the breaker and for the
//! online evidence.

use super::*;

impl<P: Ports> Outbox<P> {
    /// Settles one request — a plain task, or a push of mutations (a plain
    /// task is settled as a batch of one): what the answer (or its absence)
    /// means for each task, for the breaker and for the online evidence.
    /// `token_reached` says whether our token could have gone with the
    /// request (not to a third party, not over the app's own header).
    pub(super) async fn settle(
        &self,
        tasks: Vec<Task>,
        result: Result<HttpResponse, TransportError>,
        sent: Sent,
    ) -> Result<Vec<Settled>, StoreError> {
        let now = self.clock.now();
        let push = tasks[0].kind == TaskKind::Mutation;
        if push && tasks.len() > 1 && matches!(&result, Ok(response) if response.status == 413) {
            // The push was larger than the server takes: split it. Nothing
            // was applied, so the tasks stay due, unchanged.
            let mut state = self.state.borrow_mut();
            state.push_limit = Some(tasks.len() / 2);
            for task in &tasks {
                state.in_flight.remove(&task.id);
            }
            state.rerun_requested = true;
            return Ok(vec![Settled::Deferred]);
        }
        let outcome = match classify(result, now) {
            // A refusal our token never reached: no new token can help, so
            // the tasks are rejected instead of pausing all work behind them.
            Outcome::NeedsAuth { error } if !sent.token_reached => Outcome::Reject { error },
            other => other,
        };
        self.note_attempt(&tasks, sent.at, now);
        self.note_reachability(&outcome);
        let mut settled = Vec::with_capacity(tasks.len());
        match outcome {
            Outcome::Delivered(response) => {
                self.breaker_success();
                let (verdicts, requeued) = self.verdicts(&tasks, response).await?;
                let mut done = Vec::new();
                for (task, verdict) in tasks.into_iter().zip(verdicts) {
                    match verdict {
                        Verdict::Done(response) => done.push((task, response)),
                        Verdict::Rejected(error) => settled.push(self.reject(task, error).await?),
                        Verdict::Retry(error) => {
                            settled.push(self.retry_or_give_up(task, error, None, now).await?)
                        }
                    }
                }
                settled.extend(self.deliver_all(done).await?);
                for task in requeued {
                    self.adopt(task);
                }
            }
            Outcome::Retry { error, retry_after } => {
                self.breaker_failure(now);
                for task in tasks {
                    settled.push(
                        self.retry_or_give_up(task, error.clone(), retry_after, now)
                            .await?,
                    );
                }
            }
            Outcome::Reject { error } => {
                self.breaker_success();
                for task in tasks {
                    settled.push(self.reject(task, error.clone()).await?);
                }
            }
            Outcome::NeedsAuth { error } => {
                self.breaker_success();
                settled.push(self.needs_auth(&tasks[0], error, sent.token).await);
            }
        }
        Ok(settled)
    }

    /// What a 2xx answer means for each task: a plain task is done with the
    /// answer; a push's mutations each get the replica's verdict (and the
    /// replica may queue mutations for conflicts it settled).
    async fn verdicts(
        &self,
        tasks: &[Task],
        response: HttpResponse,
    ) -> Result<(Vec<Verdict>, Vec<Task>), StoreError> {
        let (TaskKind::Mutation, Some(replica)) = (tasks[0].kind, &self.replica) else {
            return Ok((vec![Verdict::Done(response)], Vec::new()));
        };
        let (verdicts, requeued) = replica.apply_push(tasks, &response).await?;
        let verdicts = verdicts
            .into_iter()
            .map(|verdict| match verdict {
                MutationVerdict::Done(result) => {
                    let mut own = HttpResponse::new(response.status);
                    own.body = ResponseBody::Json(result);
                    Verdict::Done(own)
                }
                MutationVerdict::Rejected(error) => Verdict::Rejected(error),
                MutationVerdict::Retry(error) => Verdict::Retry(error),
            })
            .collect();
        Ok((verdicts, requeued))
    }

    pub(super) fn note_attempt(&self, tasks: &[Task], sent_at: Millis, now: Millis) {
        let mut state = self.state.borrow_mut();
        for task in tasks {
            state.in_flight.remove(&task.id);
        }
        state.metrics.requests_sent += 1;
        state.metrics.total_request_ms += now - sent_at;
        state.metrics.average_request_ms =
            state.metrics.total_request_ms / state.metrics.requests_sent as f64;
    }

    /// The server took these tasks (one push): they leave the queue in one
    /// transaction.
    pub(super) async fn deliver_all(
        &self,
        done: Vec<(Task, HttpResponse)>,
    ) -> Result<Vec<Settled>, StoreError> {
        if let Some(keeping) = self.keep_answers(&done) {
            keeping.await?;
        }
        let ids: Vec<(String, u64)> = done
            .iter()
            .map(|(t, _)| (t.id.clone(), t.revision))
            .collect();
        self.acknowledge(ids).await?;
        Ok(done
            .into_iter()
            .map(|(task, response)| self.delivered(task, response))
            .collect())
    }

    /// Removes answered tasks from the store by group commit: the first
    /// answer of a tick yields once and deletes every task answered
    /// meanwhile in one transaction; answers that arrive during that commit
    /// form the next group. A task is removed only after its answer, and its
    /// `sync:complete` fires only once the removal is durable.
    async fn acknowledge(&self, ids: Vec<(String, u64)>) -> Result<(), StoreError> {
        let (sender, receiver) = oneshot::channel();
        let (lead, others_in_flight) = {
            let mut state = self.state.borrow_mut();
            state.pending_acks.push((ids, sender));
            (
                !std::mem::replace(&mut state.acknowledging, true),
                !state.in_flight.is_empty(),
            )
        };
        if lead {
            // Waiting for company only pays when other answers may come.
            if others_in_flight {
                self.clock.yield_now().await;
            }
            loop {
                let group = std::mem::take(&mut self.state.borrow_mut().pending_acks);
                if group.is_empty() {
                    self.state.borrow_mut().acknowledging = false;
                    break;
                }
                let ids: Vec<(String, u64)> = group
                    .iter()
                    .flat_map(|(ids, _)| ids.iter().cloned())
                    .collect();
                let result = self.store.complete_tasks(&ids).await;
                self.state.borrow_mut().metrics.ack_transactions += 1;
                for (_, sender) in group {
                    let _ = sender.send(result.clone());
                }
            }
        }
        receiver.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the acknowledgement was abandoned".into(),
            ))
        })
    }

    pub(super) fn delivered(&self, task: Task, response: HttpResponse) -> Settled {
        {
            let mut state = self.state.borrow_mut();
            if state
                .schedule
                .get(&task.id)
                .is_some_and(|t| t.revision == task.revision)
            {
                state.schedule.remove(&task.id);
            }
            state.metrics.completed += 1;
            if state.recently_completed.len() >= COMPLETED_MEMORY {
                state.recently_completed.pop_front();
            }
            state.recently_completed.push_back(task.id.clone());
        }
        self.events.emit(Event::Complete { task, response });
        Settled::Completed
    }

    /// A retryable failure: back off, or give up when the budget is spent.
    pub(super) async fn retry_or_give_up(
        &self,
        mut task: Task,
        error: TaskError,
        retry_after: Option<Millis>,
        now: Millis,
    ) -> Result<Settled, StoreError> {
        task.attempts += 1;
        push_error(&mut task, error.clone(), self.errors_kept());
        let counts_against_budget = spends_budget(error.class);
        let budget_used = task
            .errors
            .iter()
            .filter(|e| spends_budget(e.class))
            .count() as u32;
        let exhausted = counts_against_budget
            && (!task.retry_on_failure || budget_used > self.options.retry.max_retries);
        if exhausted {
            let reason = if task.retry_on_failure {
                format!("gave up after {} attempts", task.attempts)
            } else {
                "failed and retryOnFailure is false".to_owned()
            };
            self.dead_letter(task.clone(), error, reason).await?;
            Ok(Settled::Failed)
        } else {
            let delay = retry_after.unwrap_or_else(|| {
                retry_delay(&self.options.retry, task.attempts, self.clock.random())
            });
            task.next_attempt_at = Some(now + delay);
            self.store.update_task(&task).await?;
            {
                let mut state = self.state.borrow_mut();
                state.metrics.retried += 1;
                if error.class == ErrorClass::Network {
                    state.metrics.network_errors += 1;
                }
                if state
                    .schedule
                    .get(&task.id)
                    .is_some_and(|t| t.revision == task.revision)
                {
                    state.schedule.upsert(task.clone());
                }
            }
            self.events.emit(Event::Retry {
                task: task.clone(),
                error,
                delay,
            });
            Ok(Settled::Retried)
        }
    }

    /// Sending it again cannot help: a dead letter.
    pub(super) async fn reject(
        &self,
        mut task: Task,
        error: TaskError,
    ) -> Result<Settled, StoreError> {
        task.attempts += 1;
        push_error(&mut task, error.clone(), self.errors_kept());
        let reason = format!("rejected: {}", error.message);
        self.dead_letter(task, error, reason).await?;
        Ok(Settled::Failed)
    }

    /// 401/403: renew the token once through `getToken`, else pause.
    pub(super) async fn needs_auth(
        &self,
        task: &Task,
        error: TaskError,
        sent_token: Option<String>,
    ) -> Settled {
        let (current, refreshed) = {
            let state = self.state.borrow();
            (state.token.clone(), state.token_refreshed)
        };
        // Sent with a token replaced since (by getToken or setToken):
        // simply due again, with the current token.
        let stale = sent_token.is_some() && sent_token != current;
        if !stale {
            let fresh = if refreshed {
                None
            } else {
                self.tokens.fresh_token().await
            };
            let renewed = fresh.is_some() && fresh != current;
            let newly_paused = {
                let mut state = self.state.borrow_mut();
                if renewed {
                    state.token = fresh;
                    state.token_refreshed = true;
                    false
                } else {
                    !std::mem::replace(&mut state.auth_paused, true)
                }
            };
            if newly_paused {
                self.events.emit(Event::AuthRequired {
                    status: error.status,
                    task_id: task.id.clone(),
                });
            }
        }
        Settled::Paused
    }

    pub(super) async fn dead_letter(
        &self,
        task: Task,
        error: TaskError,
        reason: String,
    ) -> Result<(), StoreError> {
        if let (TaskKind::Mutation, Some(replica)) = (task.kind, &self.replica) {
            replica.abandon(&task, &error).await?;
        }
        let failed = FailedTask {
            id: task.id.clone(),
            task,
            reason,
            failed_at: self.clock.now(),
        };
        let moved = self.store.dead_letter(&failed).await?;
        {
            let mut state = self.state.borrow_mut();
            if moved {
                state.failed_count += 1;
            }
            if state
                .schedule
                .get(&failed.id)
                .is_some_and(|t| t.revision == failed.task.revision)
            {
                state.schedule.remove(&failed.id);
            }
            state.metrics.failed += 1;
        }
        self.events.emit(Event::Failed { failed, error });
        Ok(())
    }

    pub(super) fn errors_kept(&self) -> usize {
        ERRORS_KEPT.max(self.options.retry.max_retries as usize + 2)
    }

    pub(super) fn note_reachability(&self, outcome: &Outcome) {
        let network_failure =
            matches!(outcome, Outcome::Retry { error, .. } if error.class == ErrorClass::Network);
        let reached = outcome.reached_server();
        let event = {
            let mut state = self.state.borrow_mut();
            if reached && !state.online {
                state.online = true;
                Some(Event::Online)
            } else if network_failure && state.online {
                state.online = false;
                Some(Event::Offline)
            } else {
                None
            }
        };
        if let Some(event) = event {
            self.events.emit(event);
        }
    }

    pub(super) fn breaker_success(&self) {
        let transition = self.state.borrow_mut().breaker.on_success();
        self.emit_transition(transition);
    }

    pub(super) fn breaker_failure(&self, now: Millis) {
        let transition = self.state.borrow_mut().breaker.on_failure(now);
        self.emit_transition(transition);
    }

    pub(super) fn emit_transition(&self, transition: Option<Transition>) {
        match transition {
            Some(Transition::Opened { until, cooldown }) => {
                self.events.emit(Event::CircuitOpen { until, cooldown })
            }
            Some(Transition::Closed) => self.events.emit(Event::CircuitClose),
            None => {}
        }
    }
}

/// How a request went out.
pub(super) struct Sent {
    pub at: Millis,
    /// The bearer token attached to it, if any.
    pub token: Option<String>,
    /// Whether our token could have gone with it at all.
    pub token_reached: bool,
}

/// What a delivered request means for one of its tasks.
enum Verdict {
    Done(HttpResponse),
    Rejected(TaskError),
    Retry(TaskError),
}

/// What became of one task (or one request) in a flush.
pub(super) enum Settled {
    Completed,
    Failed,
    Retried,
    Paused,
    /// Left queued untouched (a push split after a 413, a task replaced
    /// before it could be sent).
    Deferred,
    /// A request went out carrying this many tasks.
    Sent(usize),
}

/// Whether a failure counts against the retry budget. Not when no HTTP
/// answer came (the request says nothing about itself), nor when the answer
/// was unreadable (the server may hold the work: giving up would
/// dead-letter what it applied).
pub(super) fn spends_budget(class: ErrorClass) -> bool {
    !matches!(class, ErrorClass::Network | ErrorClass::Unconfirmed)
}

/// Records an error, dropping the oldest beyond `keep`. Network errors go
/// first: the others count against the retry budget (and are at most
/// `maxRetries + 1 < keep`), so they are never forgotten and a long offline
/// spell cannot reset the budget.
pub(super) fn push_error(task: &mut Task, error: TaskError, keep: usize) {
    task.errors.push(error);
    while task.errors.len() > keep {
        let oldest = task
            .errors
            .iter()
            .position(|e| !spends_budget(e.class))
            .unwrap_or(0);
        task.errors.remove(oldest);
    }
}
