//! The outbox driver: group-committed registration, the flush loop (up to
//! `concurrency` requests in flight across ordering keys), retries with
//! backoff, dead letters, the circuit breaker, pause on 401/403, online
//! evidence, and a graceful close. One flush runs at a time per database:
//! in this realm by the `flushing` flag, across tabs and workers by
//! [`Locks`].
//!
//! Durability rule: a task leaves the `tasks` store only when the server has
//! answered it (delivered or rejected); anything else leaves it queued, so a
//! reload or crash at any point loses nothing. Replays after a lost response
//! carry the same `Idempotency-Key`.

use crate::engine::backoff::retry_delay;
use crate::engine::breaker::{CircuitBreaker, Transition};
use crate::engine::classify::{classify, Outcome};
use crate::engine::events::{Event, Health, HealthStatus, Metrics, Status, TaskState, TaskStatus};
use crate::engine::options::OutboxOptions;
use crate::engine::ports::{
    Clock, EventSink, Locks, MutationVerdict, Ports, Replica, Store, StoreError, TokenSource,
    Transport, TransportError,
};
use crate::engine::schedule::Schedule;
use crate::engine::task::{
    ErrorClass, FailedTask, HttpRequest, NewTask, Task, TaskError, TaskKind,
    APP_RESPONSE_BODY_LIMIT,
};
use crate::engine::task::{HttpResponse, ResponseBody};
use crate::engine::time::Millis;
use futures::channel::oneshot;
use futures::stream::{FuturesUnordered, StreamExt};
use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};

/// How many recently completed task ids `task_status` remembers.
const COMPLETED_MEMORY: usize = 1000;
/// Errors kept on a task; older ones are dropped so an offline week does not
/// grow a record without bound.
const ERRORS_KEPT: usize = 20;
/// A push stops growing before its body passes this (the reference server
/// accepts 1 MiB by default); a 413 halves the batch on top of it.
pub const PUSH_BODY_BUDGET: usize = 512 * 1024;

/// The result of one flush.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlushReport {
    pub sent: usize,
    pub completed: usize,
    pub failed: usize,
    pub retried: usize,
    /// Tasks still queued when the flush ended.
    pub remaining: usize,
    /// When the next task (or the breaker's probe) becomes due, if any.
    pub next_wakeup_at: Option<Millis>,
}

type Registration = (Task, oneshot::Sender<Result<Task, StoreError>>);

struct State {
    schedule: Schedule,
    breaker: CircuitBreaker,
    online: bool,
    auth_paused: bool,
    token: Option<String>,
    /// Whether this flush pass already obtained a token from `getToken`: a
    /// request refused with that one pauses instead of asking again, so a
    /// server that refuses every token cannot loop through `getToken`.
    token_refreshed: bool,
    in_flight: HashSet<String>,
    flushing: bool,
    rerun_requested: bool,
    flush_waiters: Vec<oneshot::Sender<()>>,
    make_all_due: bool,
    pending_registrations: Vec<Registration>,
    committing: bool,
    failed_count: u32,
    metrics: Metrics,
    last_sync_at: Option<Millis>,
    last_sync_ok: Option<bool>,
    recently_completed: VecDeque<String>,
    closed: bool,
    periodic_generation: u64,
    /// Mutations per push the server accepted after refusing a larger push
    /// with 413 (the body limit), if it did.
    push_limit: Option<usize>,
}

/// The outbox engine, generic over its [`Ports`].
pub struct Outbox<P: Ports> {
    store: P::Store,
    transport: P::Transport,
    clock: P::Clock,
    locks: P::Locks,
    events: P::Events,
    tokens: P::Tokens,
    replica: Option<P::Replica>,
    options: OutboxOptions,
    state: RefCell<State>,
}

impl<P: Ports> Outbox<P> {
    /// Opens the outbox over a store, loading what it holds.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        store: P::Store,
        transport: P::Transport,
        clock: P::Clock,
        locks: P::Locks,
        events: P::Events,
        tokens: P::Tokens,
        options: OutboxOptions,
        token: Option<String>,
    ) -> Result<Self, StoreError> {
        let mut schedule = Schedule::new();
        for task in store.load_tasks().await? {
            schedule.upsert(task);
        }
        let failed_count = store.count_failed().await?;
        let state = State {
            schedule,
            breaker: CircuitBreaker::new(options.circuit_breaker.clone()),
            online: true,
            auth_paused: false,
            token,
            token_refreshed: false,
            in_flight: HashSet::new(),
            flushing: false,
            rerun_requested: false,
            flush_waiters: Vec::new(),
            make_all_due: false,
            pending_registrations: Vec::new(),
            committing: false,
            failed_count,
            metrics: Metrics::default(),
            last_sync_at: None,
            last_sync_ok: None,
            recently_completed: VecDeque::new(),
            closed: false,
            periodic_generation: 0,
            push_limit: None,
        };
        Ok(Self {
            store,
            replica: None,
            transport,
            clock,
            locks,
            events,
            tokens,
            options,
            state: RefCell::new(state),
        })
    }

    /// Connects replication: mutation tasks are then sent in batches
    /// through it. Call before the outbox is shared.
    pub fn set_replica(&mut self, replica: P::Replica) {
        self.replica = Some(replica);
    }

    /// Takes a task that was stored by another path (a local record write)
    /// into the schedule.
    pub fn adopt(&self, task: Task) {
        let mut state = self.state.borrow_mut();
        // A newer revision of a task in flight waits behind it: its key stays
        // busy until the older one is settled, and that settling removes
        // only the revision it sent.
        if state
            .schedule
            .get(&task.id)
            .is_none_or(|t| t.revision < task.revision)
        {
            state.schedule.upsert(task);
        }
        state.rerun_requested |= state.flushing;
    }

    pub fn options(&self) -> &OutboxOptions {
        &self.options
    }

    pub fn clock(&self) -> &P::Clock {
        &self.clock
    }

    pub fn store(&self) -> &P::Store {
        &self.store
    }

    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    // ----- registration (group commit) -----

    /// Queues a task. Registrations made in the same tick share one store
    /// transaction. Re-registering a queued id replaces its payload and keeps
    /// its place.
    pub async fn register(&self, new: NewTask) -> Result<Task, StoreError> {
        if self.is_closed() {
            return Err(StoreError::Unavailable("the client is closed".into()));
        }
        let task = Task {
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
            created_at: self.clock.now(),
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

    async fn commit_registrations(&self) {
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

    // ----- flushing -----

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

    fn cannot_send(&self) -> bool {
        let state = self.state.borrow();
        state.closed || state.auth_paused || !state.breaker.would_allow(self.clock.now())
    }

    fn has_due_work(&self, state: &State) -> bool {
        let now = self.clock.now();
        !state.auth_paused && state.schedule.next_due_at().is_some_and(|at| at <= now)
    }

    fn idle_report(&self) -> FlushReport {
        let state = self.state.borrow();
        FlushReport {
            remaining: state.schedule.len(),
            next_wakeup_at: self.next_wakeup(&state),
            ..Default::default()
        }
    }

    fn next_wakeup(&self, state: &State) -> Option<Millis> {
        if state.auth_paused || state.closed {
            return None;
        }
        let due = state.schedule.next_due_at()?;
        Some(match state.breaker.open_until() {
            Some(until) => due.max(until),
            None => due,
        })
    }

    async fn flush_once(&self) -> Result<FlushReport, StoreError> {
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
        let mut report = FlushReport::default();
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
    async fn reload_from_store(&self) -> Result<(), StoreError> {
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
            .filter(|t| !stored_ids.contains(&t.id) && !state.in_flight.contains(&t.id))
            .map(|t| t.id.clone())
            .collect();
        for id in gone {
            state.schedule.remove(&id);
        }
        for task in stored {
            let in_flight = state.in_flight.contains(&task.id);
            let keep_ours = state.schedule.get(&task.id).is_some_and(|t| {
                t.revision > task.revision
                    || (t.revision == task.revision && (in_flight || t.attempts >= task.attempts))
            });
            if !keep_ours {
                state.schedule.upsert(task);
            }
        }
        Ok(())
    }

    fn take_dispatchable(&self, running: usize) -> Option<Task> {
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
    fn take_mutation_batch(&self, first: Task) -> Vec<Task> {
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
    async fn attempt_and_settle(&self, tasks: Vec<Task>) -> Result<Vec<Settled>, StoreError> {
        let keys: Vec<String> = tasks.iter().map(|t| t.key().to_owned()).collect();
        let settled = self.attempt(tasks).await;
        let mut state = self.state.borrow_mut();
        for key in keys {
            state.schedule.release(&key);
        }
        settled
    }

    async fn attempt(&self, tasks: Vec<Task>) -> Result<Vec<Settled>, StoreError> {
        let (tasks, request) = match (tasks[0].kind, &self.replica) {
            (TaskKind::Request, _) => {
                let request = tasks[0].request.clone();
                (tasks, request)
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
        let (request, sent_token) = self.with_headers(request, &tasks[0]);
        // An app's own answer is handed to `sync:complete` listeners, so it
        // is capped; a push answer is protocol and read whole.
        let max_body = (tasks[0].kind == TaskKind::Request).then_some(APP_RESPONSE_BODY_LIMIT);
        let sent_at = self.clock.now();
        let result = self
            .transport
            .send(&request, self.options.request_timeout, max_body)
            .await;
        let mut settled = if tasks.len() == 1 && tasks[0].kind == TaskKind::Request {
            let task = tasks.into_iter().next().expect("one task");
            vec![
                self.apply_outcome(task, result, sent_at, sent_token)
                    .await?,
            ]
        } else {
            self.apply_batch_outcome(tasks, result, sent_at, sent_token)
                .await?
        };
        settled.push(Settled::Sent(sent));
        Ok(settled)
    }

    /// Tasks a push left out because they were replaced or cancelled in the
    /// store since they were scheduled: forget this copy; the next pass
    /// reads what the store holds now.
    fn drop_replaced(&self, dropped: Vec<Task>) {
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

    async fn apply_batch_outcome(
        &self,
        tasks: Vec<Task>,
        result: Result<HttpResponse, TransportError>,
        sent_at: Millis,
        sent_token: Option<String>,
    ) -> Result<Vec<Settled>, StoreError> {
        let now = self.clock.now();
        if tasks.len() > 1 && matches!(&result, Ok(response) if response.status == 413) {
            // The push was larger than the server takes: split it. Nothing
            // was applied, so the tasks stay due, unchanged.
            let half = tasks.len() / 2;
            let mut state = self.state.borrow_mut();
            state.push_limit = Some(half);
            for task in &tasks {
                state.in_flight.remove(&task.id);
            }
            state.rerun_requested = true;
            return Ok(vec![Settled::Deferred]);
        }
        let outcome = classify(result, now);
        self.note_attempt(&tasks, sent_at, now);
        self.note_reachability(&outcome);
        let mut settled = Vec::with_capacity(tasks.len());
        match outcome {
            Outcome::Delivered(response) => {
                self.breaker_success();
                let (verdicts, requeued) = match &self.replica {
                    Some(replica) => replica.apply_push(&tasks, &response).await?,
                    None => (
                        vec![MutationVerdict::Done(serde_json::Value::Null); tasks.len()],
                        Vec::new(),
                    ),
                };
                let mut done = Vec::new();
                for (task, verdict) in tasks.into_iter().zip(verdicts) {
                    match verdict {
                        MutationVerdict::Done(result) => {
                            let mut own = HttpResponse::new(response.status);
                            own.body = ResponseBody::Json(result);
                            done.push((task, own));
                        }
                        MutationVerdict::Rejected(error) => {
                            settled.push(self.reject(task, error).await?)
                        }
                        MutationVerdict::Retry(error) => {
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
                let first = tasks[0].clone();
                settled.push(self.needs_auth(&first, error, sent_token).await);
            }
        }
        Ok(settled)
    }

    fn note_attempt(&self, tasks: &[Task], sent_at: Millis, now: Millis) {
        let mut state = self.state.borrow_mut();
        for task in tasks {
            state.in_flight.remove(&task.id);
        }
        state.metrics.requests_sent += 1;
        state.metrics.total_request_ms += now - sent_at;
        state.metrics.average_request_ms =
            state.metrics.total_request_ms / state.metrics.requests_sent as f64;
    }

    /// The request as sent, and the bearer token attached to it (if any).
    fn with_headers(&self, mut request: HttpRequest, task: &Task) -> (HttpRequest, Option<String>) {
        let has = |request: &HttpRequest, name: &str| {
            request.headers.keys().any(|k| k.eq_ignore_ascii_case(name))
        };
        // A push carries its mutations' ids, which make replays harmless; a
        // batch's make-up changes between attempts, so no one key fits it.
        if task.kind == TaskKind::Request && !has(&request, "idempotency-key") {
            request
                .headers
                .insert("Idempotency-Key".into(), task.idempotency_key.clone());
        }
        let mut sent_token = None;
        if !has(&request, "authorization") && self.carries_token(&request.url) {
            if let Some(token) = self.state.borrow().token.clone() {
                request
                    .headers
                    .insert("Authorization".into(), format!("Bearer {token}"));
                sent_token = Some(token);
            }
        }
        (request, sent_token)
    }

    /// Whether the bearer token would go with this request: not when the app
    /// set its own `Authorization` header, nor to another origin.
    fn token_reaches(&self, request: &HttpRequest) -> bool {
        !request
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("authorization"))
            && self.carries_token(&request.url)
    }

    /// The bearer token goes only to the app's own origin (relative URLs)
    /// and to the configured server, never to third parties.
    fn carries_token(&self, url: &str) -> bool {
        // Read the URL as a browser resolves it: surrounding controls and
        // spaces trimmed, tabs and newlines dropped, `\` taken for `/`
        // (so `/\\evil.net` and `//evil.net` are other hosts, not paths).
        let url: String = url
            .trim_matches(|c: char| c <= ' ')
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .map(|c| if c == '\\' { '/' } else { c })
            .collect();
        is_relative(&url)
            || self
                .options
                .server_url
                .as_deref()
                .is_some_and(|base| is_under(&url, base))
    }

    async fn apply_outcome(
        &self,
        task: Task,
        result: Result<crate::engine::task::HttpResponse, crate::engine::ports::TransportError>,
        sent_at: Millis,
        sent_token: Option<String>,
    ) -> Result<Settled, StoreError> {
        let now = self.clock.now();
        let outcome = classify(result, now);
        // A refusal our token never reached (a third-party URL, or the app's
        // own Authorization header): no new token can help, so the task is
        // rejected instead of pausing all work behind it.
        let outcome = match outcome {
            Outcome::NeedsAuth { error } if !self.token_reaches(&task.request) => {
                Outcome::Reject { error }
            }
            other => other,
        };
        {
            let mut state = self.state.borrow_mut();
            state.in_flight.remove(&task.id);
            state.metrics.requests_sent += 1;
            state.metrics.total_request_ms += now - sent_at;
            state.metrics.average_request_ms =
                state.metrics.total_request_ms / state.metrics.requests_sent as f64;
        }
        self.note_reachability(&outcome);
        let settled = match outcome {
            Outcome::Delivered(response) => {
                self.breaker_success();
                self.deliver(task, response).await?
            }
            Outcome::Retry { error, retry_after } => {
                self.breaker_failure(now);
                self.retry_or_give_up(task, error, retry_after, now).await?
            }
            Outcome::Reject { error } => {
                self.breaker_success();
                self.reject(task, error).await?
            }
            Outcome::NeedsAuth { error } => {
                self.breaker_success();
                self.needs_auth(&task, error, sent_token).await
            }
        };
        Ok(settled)
    }

    /// The server took the task: it leaves the queue.
    async fn deliver(&self, task: Task, response: HttpResponse) -> Result<Settled, StoreError> {
        self.store.complete_task(&task.id, task.revision).await?;
        Ok(self.delivered(task, response))
    }

    /// The server took these tasks (one push): they leave the queue in one
    /// transaction.
    async fn deliver_all(
        &self,
        done: Vec<(Task, HttpResponse)>,
    ) -> Result<Vec<Settled>, StoreError> {
        let ids: Vec<(String, u64)> = done
            .iter()
            .map(|(t, _)| (t.id.clone(), t.revision))
            .collect();
        self.store.complete_tasks(&ids).await?;
        Ok(done
            .into_iter()
            .map(|(task, response)| self.delivered(task, response))
            .collect())
    }

    fn delivered(&self, task: Task, response: HttpResponse) -> Settled {
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
    async fn retry_or_give_up(
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
    async fn reject(&self, mut task: Task, error: TaskError) -> Result<Settled, StoreError> {
        task.attempts += 1;
        push_error(&mut task, error.clone(), self.errors_kept());
        let reason = format!("rejected: {}", error.message);
        self.dead_letter(task, error, reason).await?;
        Ok(Settled::Failed)
    }

    /// 401/403: renew the token once through `getToken`, else pause.
    async fn needs_auth(
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

    async fn dead_letter(
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

    fn errors_kept(&self) -> usize {
        ERRORS_KEPT.max(self.options.retry.max_retries as usize + 2)
    }

    fn note_reachability(&self, outcome: &Outcome) {
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

    fn breaker_success(&self) {
        let transition = self.state.borrow_mut().breaker.on_success();
        self.emit_transition(transition);
    }

    fn breaker_failure(&self, now: Millis) {
        let transition = self.state.borrow_mut().breaker.on_failure(now);
        self.emit_transition(transition);
    }

    fn emit_transition(&self, transition: Option<Transition>) {
        match transition {
            Some(Transition::Opened { until, cooldown }) => {
                self.events.emit(Event::CircuitOpen { until, cooldown })
            }
            Some(Transition::Closed) => self.events.emit(Event::CircuitClose),
            None => {}
        }
    }

    fn emit_status(&self) {
        self.events.emit(Event::Status(self.status()));
    }

    // ----- environment changes -----

    /// The platform reports connectivity (`online`/`offline` events).
    /// Coming online makes every waiting task due now, once; the caller then
    /// flushes. Going offline only records it.
    pub fn set_online(&self, online: bool) {
        let changed = {
            let mut state = self.state.borrow_mut();
            // `navigator.onLine` lies (captive portals, flaky links): with
            // work waiting, coming online is only believed once a request
            // gets an HTTP answer. Until then the flush sends one probe at a
            // time; its answer marks the client online and lets the rest go.
            let believed = !online || state.schedule.is_empty();
            let changed = believed && state.online != online;
            if believed {
                state.online = online;
            }
            if online {
                state.make_all_due = true;
                state.schedule.make_all_due();
            }
            changed
        };
        if changed {
            self.events.emit(if online {
                Event::Online
            } else {
                Event::Offline
            });
        }
    }

    pub fn is_online(&self) -> bool {
        self.state.borrow().online
    }

    /// A new bearer token: clears an auth pause. The caller then flushes.
    pub fn set_token(&self, token: Option<String>) {
        let mut state = self.state.borrow_mut();
        state.token = token;
        state.auth_paused = false;
    }

    pub fn token(&self) -> Option<String> {
        self.state.borrow().token.clone()
    }

    /// Asks `getToken` for a token after the server refused the current one
    /// outside the queue (a pull, a verify). Returns the new token when it
    /// differs from the refused one (it is then the token for everything),
    /// `None` when the app has no better one.
    pub async fn renew_token(&self) -> Option<String> {
        let refused = self.token();
        let fresh = self.tokens.fresh_token().await?;
        if Some(&fresh) == refused.as_ref() {
            return None;
        }
        self.set_token(Some(fresh.clone()));
        Some(fresh)
    }

    // ----- periodic sync and close -----

    /// Flushes every `interval_ms` until [`Self::stop_periodic`] or close.
    /// Timers are chained (sleep, flush, sleep…), so flushes never overlap
    /// and missed ticks never pile up. Starting again replaces the loop.
    pub async fn run_periodic(&self, interval_ms: Millis) {
        let generation = {
            let mut state = self.state.borrow_mut();
            state.periodic_generation += 1;
            state.periodic_generation
        };
        loop {
            self.clock.sleep(interval_ms).await;
            let current = {
                let state = self.state.borrow();
                !state.closed && state.periodic_generation == generation
            };
            if !current {
                return;
            }
            let _ = self.flush().await;
        }
    }

    pub fn stop_periodic(&self) {
        self.state.borrow_mut().periodic_generation += 1;
    }

    /// Stops dispatching, waits for the flush in progress (at most
    /// `close_timeout`), and leaves every unfinished task queued.
    /// Returns whether the flush in progress finished in time.
    pub async fn close(&self) -> bool {
        let waiter = {
            let mut state = self.state.borrow_mut();
            state.closed = true;
            state.periodic_generation += 1;
            if state.flushing {
                let (sender, receiver) = oneshot::channel();
                state.flush_waiters.push(sender);
                Some(receiver)
            } else {
                None
            }
        };
        let Some(waiter) = waiter else { return true };
        let timeout = self.clock.sleep(self.options.close_timeout);
        futures::pin_mut!(timeout);
        matches!(
            futures::future::select(waiter, timeout).await,
            futures::future::Either::Left(_)
        )
    }

    // ----- dead letters -----

    pub async fn list_failed(&self) -> Result<Vec<FailedTask>, StoreError> {
        self.store.list_failed().await
    }

    /// Puts a dead letter back in the queue with a fresh retry budget.
    pub async fn retry_failed(&self, id: &str) -> Result<bool, StoreError> {
        let Some(task) = self.store.requeue_failed(id, self.clock.now()).await? else {
            return Ok(false);
        };
        let mut state = self.state.borrow_mut();
        state.failed_count = state.failed_count.saturating_sub(1);
        state.schedule.upsert(task);
        Ok(true)
    }

    pub async fn discard_failed(&self, id: &str) -> Result<bool, StoreError> {
        let discarded = self.store.discard_failed(id).await?;
        if discarded {
            let mut state = self.state.borrow_mut();
            state.failed_count = state.failed_count.saturating_sub(1);
        }
        Ok(discarded)
    }

    // ----- snapshots -----

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
        let mut issues = Vec::new();
        let mut recommendations = Vec::new();
        let mut verdict = HealthStatus::Healthy;
        let mut worsen = |to: HealthStatus| {
            if to == HealthStatus::Critical || verdict == HealthStatus::Healthy {
                verdict = to;
            }
        };
        if status.auth_required {
            worsen(HealthStatus::Critical);
            issues.push("the server refused the credentials; sync is paused".to_owned());
            recommendations
                .push("call setToken() with a fresh token, or provide getToken".to_owned());
        }
        if status.circuit != "closed" {
            worsen(HealthStatus::Critical);
            issues.push(format!(
                "the circuit breaker is {}: the server keeps failing",
                status.circuit
            ));
            recommendations
                .push("check the server's health; the client probes it automatically".to_owned());
        }
        if !status.online {
            worsen(HealthStatus::Degraded);
            issues.push("offline: requests are queued until the network returns".to_owned());
        }
        if status.failed_count > 0 {
            worsen(HealthStatus::Degraded);
            issues.push(format!(
                "{} task(s) in the dead letters",
                status.failed_count
            ));
            recommendations
                .push("inspect listFailed(), then retryFailed(id) or discardFailed(id)".to_owned());
        }
        if let Some(oldest) = oldest {
            if now - oldest > 3_600_000.0 {
                worsen(HealthStatus::Degraded);
                issues.push("a task has waited for more than an hour".to_owned());
                recommendations.push(
                    "check connectivity and the server; call flush() to retry now".to_owned(),
                );
            }
        }
        Health {
            status: verdict,
            issues,
            recommendations,
        }
    }
}

enum Settled {
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
fn spends_budget(class: ErrorClass) -> bool {
    !matches!(class, ErrorClass::Network | ErrorClass::Unconfirmed)
}

/// Records an error, dropping the oldest beyond `keep`. Network errors go
/// first: the others count against the retry budget (and are at most
/// `maxRetries + 1 < keep`), so they are never forgotten and a long offline
/// spell cannot reset the budget.
fn push_error(task: &mut Task, error: TaskError, keep: usize) {
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

/// A URL without a scheme and not protocol-relative: it stays on the app's
/// own origin.
fn is_relative(url: &str) -> bool {
    if url.starts_with("//") {
        return false;
    }
    let scheme_end =
        url.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')));
    let has_scheme = matches!(scheme_end, Some(end) if end > 0
        && url[end..].starts_with(':')
        && url.starts_with(|c: char| c.is_ascii_alphabetic()));
    !has_scheme
}

/// Whether `url` is `base` or below it: the prefix must end at a boundary,
/// so `https://api.example.com.evil.net` and `https://api.example.com@evil.net`
/// are not under `https://api.example.com`.
fn is_under(url: &str, base: &str) -> bool {
    let Some(rest) = url.strip_prefix(base) else {
        return false;
    };
    base.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
}
