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
use crate::engine::events::{Event, Health, Metrics, Status, TaskState, TaskStatus};
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

mod conditions;
mod flush;
pub mod health;
pub mod inspect;
mod register;
mod settle;
mod snapshot;
mod storage;

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
type Acknowledgement = (Vec<(String, u64)>, oneshot::Sender<Result<(), StoreError>>);

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
    /// Tasks put in the schedule since the last read of the whole queue
    /// began: that read may predate them, so it must not drop them.
    added_since_load: HashSet<String>,
    /// Answered tasks waiting to leave the store in the next group commit.
    pending_acks: Vec<Acknowledgement>,
    acknowledging: bool,
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
    /// Tasks whose answer a dependent being registered will need.
    awaited: HashSet<String>,
    /// The origin's storage, as last measured.
    storage: Option<crate::engine::storage::StorageUsage>,
    /// The database vanished, if it did.
    eviction: Option<crate::engine::storage::Eviction>,
}

/// The implementations an outbox runs on, handed over together.
pub struct OutboxPorts<P: Ports> {
    pub store: P::Store,
    pub transport: P::Transport,
    pub clock: P::Clock,
    pub locks: P::Locks,
    pub events: P::Events,
    pub tokens: P::Tokens,
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
    pub async fn open(
        ports: OutboxPorts<P>,
        options: OutboxOptions,
        token: Option<String>,
    ) -> Result<Self, StoreError> {
        let OutboxPorts {
            store,
            transport,
            clock,
            locks,
            events,
            tokens,
        } = ports;
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
            added_since_load: HashSet::new(),
            pending_acks: Vec::new(),
            acknowledging: false,
            failed_count,
            metrics: Metrics::default(),
            last_sync_at: None,
            last_sync_ok: None,
            recently_completed: VecDeque::new(),
            closed: false,
            periodic_generation: 0,
            push_limit: None,
            awaited: HashSet::new(),
            storage: None,
            eviction: None,
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
            state.added_since_load.insert(task.id.clone());
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

    pub async fn list_failed(&self) -> Result<Vec<FailedTask>, StoreError> {
        self.store.list_failed().await
    }

    /// Puts a dead letter back in the queue with a fresh retry budget.
    pub async fn retry_failed(&self, id: &str) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let Some(mut task) = self.store.requeue_failed(id, now).await? else {
            return Ok(false);
        };
        let renewed =
            crate::engine::retention::renewed(&task, now, self.options.max_retention_time);
        if renewed.is_some() && renewed != task.expires_at {
            task.expires_at = renewed;
            self.store.update_task(&task).await?;
        }
        let mut state = self.state.borrow_mut();
        state.failed_count = state.failed_count.saturating_sub(1);
        state.added_since_load.insert(task.id.clone());
        state.schedule.upsert(task);
        state.rerun_requested |= state.flushing;
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
}
