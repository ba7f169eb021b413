//! `sync()`, `pull()` and `verify()` as decisions, with the wait times of
//! the flush loop: the client core that the API layer drives.
//!
//! - A sync pushes what is due, stops with `auth-required` when the server
//!   refused the credentials, pulls until the server has no more, and
//!   pushes again what conflict resolution queued, so a settled conflict
//!   reaches the server in the same sync.
//! - One sync at a time: a call during a sync waits for it, then runs (in
//!   call order).
//! - Pulls take turns (the app's and the ones the live connection asks
//!   for) instead of failing `busy` (docs/decisions.md, 17).
//! - A pull or verify refused with 401/403 asks for a fresh token once, as
//!   the queue does for its requests, and runs again with it.
//!
//! The host ([`SyncHost`]) carries out what is not a decision: a flush with
//! its browser effects, measures for DevTools, events.

#![allow(async_fn_in_trait)]

use crate::engine::events::Event;
use crate::engine::outbox::{FlushReport, Outbox};
use crate::engine::ports::{Ports, StoreError};
use crate::engine::replication::replicator::ReplicaPorts;
use crate::engine::replication::{PullReport, ReplicationError, Replicator, VerifyReport};
use crate::engine::task::Task;
use crate::engine::time::Millis;
use futures::channel::oneshot;
use futures::lock::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

/// The shortest wait before a wake-up flush: a due time in the past (or
/// now) still lets the current task finish first.
pub const MIN_WAKE_DELAY_MS: Millis = 20.0;
/// The longest a browser timer can wait (a 32-bit signed count of ms).
pub const MAX_WAKE_DELAY_MS: Millis = 2_147_000_000.0;

/// How long to sleep before the flush due at `at` (a backoff expiry or the
/// breaker's probe), seen at `now`.
pub fn wake_delay(at: Millis, now: Millis) -> Millis {
    (at - now).clamp(MIN_WAKE_DELAY_MS, MAX_WAKE_DELAY_MS)
}

/// What `sync()` resolves with.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub pushed: usize,
    pub pulled: usize,
    pub pages: usize,
    pub conflicts: usize,
    pub remaining: usize,
}

/// Why a sync stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("the server refused the credentials; call setToken() with a fresh token")]
    AuthRequired,
}

/// What a sync needs from the client that runs it.
pub trait SyncHost {
    type Ports: Ports;
    type Replica: ReplicaPorts;

    fn outbox(&self) -> &Outbox<Self::Ports>;
    fn replicator(&self) -> &Replicator<Self::Replica>;
    /// One flush, with what the host does around it (in a browser: the
    /// `tidesync:flush` measure, the storage estimate, the wake timer).
    async fn flush(&self) -> Result<FlushReport, StoreError>;
    fn emit(&self, event: Event);
    /// A time to measure a phase from (DevTools' clock).
    fn phase_started(&self) -> f64;
    /// A phase (`"tidesync:push"`, `"tidesync:pull"`) ended, with counts.
    fn phase_done(&self, name: &str, started: f64, detail: &Value);
}

/// Turn-taking for syncs and pulls, owned by one client.
#[derive(Default)]
pub struct Syncs {
    running: Cell<bool>,
    waiters: RefCell<VecDeque<oneshot::Sender<()>>>,
    pull_turn: Mutex<()>,
}

impl Syncs {
    /// Runs one sync after any running one (see the module's rules).
    pub async fn sync<H: SyncHost>(&self, host: &H) -> Result<SyncReport, SyncError> {
        if self.running.replace(true) {
            let (sender, receiver) = oneshot::channel();
            self.waiters.borrow_mut().push_back(sender);
            let _ = receiver.await;
            self.running.set(true);
        }
        let result = self.sync_once(host).await;
        let next = self.waiters.borrow_mut().pop_front();
        match next {
            Some(waiter) => {
                let _ = waiter.send(());
            }
            None => self.running.set(false),
        }
        result
    }

    async fn sync_once<H: SyncHost>(&self, host: &H) -> Result<SyncReport, SyncError> {
        let pending = host.outbox().status().pending_count;
        host.emit(Event::Progress {
            phase: "push",
            done: 0,
            total: pending,
        });
        let push_started = host.phase_started();
        let pushed = host.flush().await?;
        host.phase_done(
            "tidesync:push",
            push_started,
            &serde_json::json!({"mutations": pushed.completed, "failed": pushed.failed}),
        );
        host.emit(Event::Progress {
            phase: "push",
            done: pushed.completed,
            total: pending.max(pushed.completed),
        });
        if host.outbox().status().auth_required {
            return Err(SyncError::AuthRequired);
        }
        let (pulled, requeued) = self
            .pull(host, |done| {
                host.emit(Event::Progress {
                    phase: "pull",
                    done,
                    total: done,
                })
            })
            .await?;
        let resolved = !requeued.is_empty();
        for task in requeued {
            host.outbox().adopt(task);
        }
        let mut report = SyncReport {
            pushed: pushed.completed,
            pulled: pulled.pulled,
            pages: pulled.pages,
            conflicts: pulled.conflicts,
            remaining: pushed.remaining,
        };
        if resolved {
            // Conflicts settled for the client are pushed in the same sync.
            let again = host.flush().await?;
            report.pushed += again.completed;
            report.remaining = again.remaining;
        }
        Ok(report)
    }

    /// Pulls until the server has no more, after any pull under way, as a
    /// `tidesync:pull` phase. Returns the counts and the tasks conflict
    /// resolution queued (for the caller to hand to the outbox).
    pub async fn pull<H: SyncHost>(
        &self,
        host: &H,
        mut progress: impl FnMut(usize),
    ) -> Result<(PullReport, Vec<Task>), ReplicationError> {
        let _turn = self.pull_turn.lock().await;
        let replicator = host.replicator();
        replicator.set_token(host.outbox().token());
        let started = host.phase_started();
        // One call site, so the pull future is built into the wasm once.
        let mut renewed = false;
        let (report, requeued) = loop {
            match replicator.pull(&mut progress).await {
                Err(ReplicationError::Auth(_)) if !renewed && renewed_token(host).await => {
                    renewed = true;
                }
                other => break other?,
            }
        };
        let detail = serde_json::to_value(&report).unwrap_or(Value::Null);
        host.phase_done("tidesync:pull", started, &detail);
        Ok((report, requeued))
    }
}

/// Verifies with the server (see [`Replicator::verify`]), renewing the
/// token once on a 401/403.
pub async fn verify<H: SyncHost>(host: &H) -> Result<Vec<VerifyReport>, ReplicationError> {
    let replicator = host.replicator();
    replicator.set_token(host.outbox().token());
    let mut renewed = false;
    loop {
        match replicator.verify().await {
            Err(ReplicationError::Auth(_)) if !renewed && renewed_token(host).await => {
                renewed = true;
            }
            other => break other,
        }
    }
}

/// After a 401/403 on a pull or verify: asks for a fresh token once.
/// Returns whether there is one to run again with.
async fn renewed_token<H: SyncHost>(host: &H) -> bool {
    match host.outbox().renew_token().await {
        Some(token) => {
            host.replicator().set_token(Some(token));
            true
        }
        None => false,
    }
}
