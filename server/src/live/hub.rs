//! The poke hub of one server process: the latest cursor of every tenant
//! that has a stream open here, how pokes reach it, and how many streams
//! each token holds.
//!
//! Per tenant the hub keeps one `tokio::sync::watch` channel holding the
//! tenant's latest sequence number. A commit advances it (never backwards),
//! and every stream of that tenant wakes and sends one `poke`; a stream that
//! is slow to send sees only the newest value, so pokes coalesce by
//! themselves. Tenants without a stream here cost nothing.
//!
//! Pokes from other processes: on PostgreSQL every commit also sends
//! `NOTIFY tidesync_poke, '<seq>:<tenant>'` and a `PgListener` task feeds
//! what it hears into the same channels. A periodic sweep re-reads
//! `tenant_counters` for the tenants with streams here, so a notification
//! lost while the listener reconnects (or a commit by a process that died
//! before notifying, or a second process over one SQLite file) still
//! reaches its streams, late but surely.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{AnyPool, Row};
use tokio::sync::watch;

use crate::db::Backend;

/// The PostgreSQL notification channel of pokes.
pub const NOTIFY_CHANNEL: &str = "tidesync_poke";

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token holds its maximum number of streams in this process.
    TooManyForToken(usize),
    /// This process holds its maximum number of streams.
    TooManyInProcess(usize),
    /// The server is shutting down.
    ShuttingDown,
}

pub struct Hub {
    tenants: Mutex<HashMap<String, watch::Sender<i64>>>,
    per_token: Mutex<HashMap<String, usize>>,
    streams: AtomicUsize,
    pokes: AtomicU64,
    max_per_token: usize,
    max_streams: usize,
    shutdown: watch::Sender<bool>,
    pool: AnyPool,
    backend: Backend,
}

/// A stream's place in the hub; dropping it gives the place back.
pub struct Membership {
    hub: Arc<Hub>,
    tenant: String,
    token_key: String,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.tenant, &self.token_key);
    }
}

impl Hub {
    pub fn new(pool: AnyPool, backend: Backend, max_per_token: usize, max_streams: usize) -> Self {
        Hub {
            tenants: Mutex::new(HashMap::new()),
            per_token: Mutex::new(HashMap::new()),
            streams: AtomicUsize::new(0),
            pokes: AtomicU64::new(0),
            max_per_token: max_per_token.max(1),
            max_streams: max_streams.max(1),
            shutdown: watch::Sender::new(false),
            pool,
            backend,
        }
    }

    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Pokes this process has delivered into tenant channels.
    pub fn pokes(&self) -> u64 {
        self.pokes.load(Ordering::Relaxed)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Ends every stream (each says goodbye first) and refuses new ones.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Takes a stream's place for `tenant` and `token_key`, and returns the
    /// tenant's channel. The caller then loads the tenant's current cursor
    /// with [`Hub::refresh`].
    pub fn join(
        self: &Arc<Self>,
        tenant: &str,
        token_key: &str,
    ) -> Result<(Membership, watch::Receiver<i64>), Refusal> {
        if *self.shutdown.borrow() {
            return Err(Refusal::ShuttingDown);
        }
        {
            let mut per_token = lock(&self.per_token);
            let held = per_token.entry(token_key.to_owned()).or_insert(0);
            if *held >= self.max_per_token {
                return Err(Refusal::TooManyForToken(self.max_per_token));
            }
            if self.streams.fetch_add(1, Ordering::SeqCst) >= self.max_streams {
                self.streams.fetch_sub(1, Ordering::SeqCst);
                if *held == 0 {
                    per_token.remove(token_key);
                }
                return Err(Refusal::TooManyInProcess(self.max_streams));
            }
            *held += 1;
        }
        let receiver = lock(&self.tenants)
            .entry(tenant.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        let membership = Membership {
            hub: self.clone(),
            tenant: tenant.to_owned(),
            token_key: token_key.to_owned(),
        };
        Ok((membership, receiver))
    }

    fn leave(&self, tenant: &str, token_key: &str) {
        self.streams.fetch_sub(1, Ordering::SeqCst);
        {
            let mut per_token = lock(&self.per_token);
            if let Some(held) = per_token.get_mut(token_key) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    per_token.remove(token_key);
                }
            }
        }
        // The stream's receiver is dropped before its membership, so a
        // channel nobody listens to any more is forgotten here.
        let mut tenants = lock(&self.tenants);
        if tenants
            .get(tenant)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            tenants.remove(tenant);
        }
    }

    /// Moves `tenant`'s cursor forward to `seq` (never back) and wakes its
    /// streams in this process. Returns whether anything moved.
    pub fn advance(&self, tenant: &str, seq: i64) -> bool {
        let tenants = lock(&self.tenants);
        let Some(sender) = tenants.get(tenant) else {
            return false;
        };
        let moved = sender.send_if_modified(|latest| {
            if seq > *latest {
                *latest = seq;
                true
            } else {
                false
            }
        });
        if moved {
            self.pokes.fetch_add(1, Ordering::Relaxed);
        }
        moved
    }

    /// After a commit that stored changes up to `seq`: wake this process's
    /// streams now, and the other processes' through PostgreSQL.
    pub fn publish(&self, tenant: &str, seq: i64) {
        self.advance(tenant, seq);
        if self.backend == Backend::Postgres {
            let pool = self.pool.clone();
            let payload = format!("{seq}:{tenant}");
            tokio::spawn(async move {
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(NOTIFY_CHANNEL)
                    .bind(payload)
                    .execute(&pool)
                    .await;
                if let Err(e) = sent {
                    // The sweep delivers it later.
                    tracing::warn!(error = %e, "could not NOTIFY a poke");
                }
            });
        }
    }

    /// Reads the current cursor of `tenants` from the database and
    /// advances their channels.
    pub async fn refresh(&self, tenants: &[String]) -> Result<(), sqlx::Error> {
        for chunk in tenants.chunks(500) {
            let list = serde_json::to_string(chunk).unwrap_or_else(|_| "[]".into());
            let filter = match self.backend {
                Backend::Sqlite => "tenant_id IN (SELECT value FROM json_each($1))",
                Backend::Postgres => "tenant_id IN (SELECT jsonb_array_elements_text($1::jsonb))",
            };
            let rows = sqlx::query(&format!(
                "SELECT tenant_id, seq FROM tenant_counters WHERE {filter}"
            ))
            .bind(list)
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let tenant: String = row.try_get("tenant_id")?;
                let seq: i64 = row.try_get("seq")?;
                self.advance(&tenant, seq);
            }
        }
        Ok(())
    }

    /// Re-reads the cursor of every tenant with a stream here.
    pub async fn sweep(&self) -> Result<(), sqlx::Error> {
        let tenants: Vec<String> = lock(&self.tenants).keys().cloned().collect();
        if tenants.is_empty() {
            return Ok(());
        }
        self.refresh(&tenants).await
    }

    /// Applies one `NOTIFY` payload (`<seq>:<tenant>`).
    pub fn on_notification(&self, payload: &str) {
        match payload
            .split_once(':')
            .and_then(|(seq, tenant)| Some((seq.parse::<i64>().ok()?, tenant)))
        {
            Some((seq, tenant)) => {
                self.advance(tenant, seq);
            }
            None => tracing::warn!(payload, "ignoring a malformed poke notification"),
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of a
/// counter; the map itself is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs forever: listens for other processes' pokes on PostgreSQL.
/// Reconnects with backoff; after every (re)connection it sweeps, because
/// notifications sent while it was away are gone.
pub async fn listen_for_pokes(hub: Arc<Hub>, database_url: String) {
    let mut delay = Duration::from_millis(250);
    loop {
        match sqlx::postgres::PgListener::connect(&database_url).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN {NOTIFY_CHANNEL} failed; retrying");
                } else {
                    delay = Duration::from_millis(250);
                    tracing::debug!("listening for pokes on {NOTIFY_CHANNEL}");
                    if let Err(e) = hub.sweep().await {
                        tracing::warn!(error = %e, "poke sweep after LISTEN failed");
                    }
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(notification)) => hub.on_notification(notification.payload()),
                            // Connection lost; the next call reconnects
                            // and re-listens. Catch up on what was missed.
                            Ok(None) => {
                                tracing::warn!("poke listener lost its connection; reconnecting");
                                if let Err(e) = hub.sweep().await {
                                    tracing::warn!(error = %e, "poke sweep failed");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "poke listener failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "poke listener cannot connect; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Runs forever: the safety-net sweep every `every`.
pub async fn sweep_periodically(hub: Arc<Hub>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = hub.sweep().await {
            tracing::warn!(error = %e, "poke sweep failed");
        }
    }
}
