//! The repository: every SQL statement of the server, over `sqlx::Any` so
//! that one code path serves SQLite (the embedded default) and PostgreSQL.
//! Every query is parameterized (`$n` placeholders, which both accept); the
//! few statements that differ per backend are chosen by [`Backend`].
//!
//! Exactness of pull cursors rests on one rule: a push transaction first
//! upserts the tenant's row in `tenant_counters` (taking that row's lock in
//! PostgreSQL, the database's write lock in SQLite) and holds it until
//! commit, so sequence numbers are handed out, and become visible, in order.
//!
//! `push` holds the write transaction; `read` the pull, verify and fetch
//! queries.

mod push;
mod quarantine;
mod read;

pub use read::{Page, PageBounds};

use serde_json::{Map, Value};
use sqlx::any::{install_default_drivers, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::sync::{record_json, record_json_owned};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Advisory lock key that serializes migrations across processes (PostgreSQL).
const MIGRATION_LOCK_KEY: i64 = 0x7469_6465_7379_6e63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Normalizes `--db`: a bare path or `sqlite:` URL becomes a SQLite URL that
/// creates the file; `postgres://` / `postgresql://` pass through.
pub fn normalize_url(db: &str) -> (Backend, String) {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        return (Backend::Postgres, db.to_owned());
    }
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .unwrap_or(db);
    if path == ":memory:" {
        return (Backend::Sqlite, "sqlite::memory:".to_owned());
    }
    if path.contains("mode=") {
        return (Backend::Sqlite, format!("sqlite://{path}"));
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    (Backend::Sqlite, format!("sqlite://{path}{sep}mode=rwc"))
}

/// Where a pull starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Changes with a sequence number greater than this.
    Seq(i64),
    /// Changes stored after this time (ms; seed 003's `lastSyncTimestamp`).
    Time(i64),
}

/// A stored record.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub entity_type: String,
    pub id: String,
    pub data: Map<String, Value>,
    pub version: i64,
    pub updated_at: i64,
    /// When the stored change was made on its client; `None` for rows
    /// written before the column existed.
    pub changed_at: Option<i64>,
    pub is_deleted: bool,
    pub seq: i64,
    /// Length of the stored data's JSON text.
    pub data_len: usize,
}

impl StoredRecord {
    pub fn to_json(&self) -> Value {
        record_json(
            &self.id,
            &self.data,
            self.version,
            self.updated_at,
            self.changed_at.unwrap_or(self.updated_at),
            self.is_deleted,
        )
    }

    /// The record as clients see it, without copying its data.
    pub fn into_json(self) -> Value {
        let changed_at = self.changed_at.unwrap_or(self.updated_at);
        record_json_owned(
            &self.id,
            self.data,
            self.version,
            self.updated_at,
            changed_at,
            self.is_deleted,
        )
    }

    /// An upper bound of the length of [`Self::to_json`] serialized: the
    /// stored data text (written by `serde_json`, so the same length when
    /// serialized again), the id (twice: every byte escaped at worst; ids
    /// hold no control characters) and the reserved fields.
    pub fn wire_size(&self) -> usize {
        const RESERVED: usize = 160;
        self.data_len + 2 * self.id.len() + RESERVED
    }
}

pub(crate) const COLUMNS: &str =
    "entity_type, id, data, version, updated_at, changed_at, is_deleted, seq, quarantined";

#[derive(Debug, Clone)]
pub struct Repo {
    pool: AnyPool,
    backend: Backend,
    /// Rows found unreadable and quarantined (exported by `/metrics`).
    quarantined: prometheus::IntCounter,
}

impl Repo {
    /// Connects and runs the migrations (serialized across processes).
    pub async fn connect(db: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        install_default_drivers();
        let (backend, url) = normalize_url(db);
        // An in-memory SQLite database lives as long as its one connection:
        // keep exactly one, forever.
        let in_memory = backend == Backend::Sqlite && url.contains(":memory:");
        let max_connections = if in_memory { 1 } else { max_connections.max(1) };
        let mut options = AnyPoolOptions::new();
        if in_memory {
            options = options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = options
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA busy_timeout = 30000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let quarantined = prometheus::IntCounter::new(
            "tidesync_quarantined_records_total",
            "Stored records found unreadable and quarantined",
        )
        .map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let repo = Repo {
            pool,
            backend,
            quarantined,
        };
        repo.migrate().await?;
        Ok(repo)
    }

    /// The counter of quarantined rows, for the metrics registry.
    pub fn quarantined_counter(&self) -> prometheus::IntCounter {
        self.quarantined.clone()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for the live hub's own statements (NOTIFY, cursor reads).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        match self.backend {
            Backend::Sqlite => {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                MIGRATOR.run(&mut *conn).await?;
            }
            Backend::Postgres => {
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(MIGRATION_LOCK_KEY)
                    .execute(&mut *conn)
                    .await?;
                let result = MIGRATOR.run(&mut *conn).await;
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(MIGRATION_LOCK_KEY)
                    .execute(&mut *conn)
                    .await?;
                result?;
            }
        }
        Ok(())
    }

    pub async fn health(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// SQL fragment: `entity_type` is one of the JSON array bound at `$n`.
    pub(crate) fn type_filter(&self, n: usize) -> String {
        match self.backend {
            Backend::Sqlite => format!("entity_type IN (SELECT value FROM json_each(${n}))"),
            Backend::Postgres => {
                format!("entity_type IN (SELECT jsonb_array_elements_text(${n}::jsonb))")
            }
        }
    }

    pub(crate) fn id_filter(&self, n: usize) -> String {
        self.type_filter(n).replacen("entity_type", "id", 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(
            normalize_url("tidesync.db"),
            (Backend::Sqlite, "sqlite://tidesync.db?mode=rwc".into())
        );
        assert_eq!(
            normalize_url("sqlite://x.db"),
            (Backend::Sqlite, "sqlite://x.db?mode=rwc".into())
        );
        assert_eq!(normalize_url("postgres://u@h/d").0, Backend::Postgres);
        assert_eq!(normalize_url(":memory:").1, "sqlite::memory:");
        assert_eq!(normalize_url("sqlite::memory:").1, "sqlite::memory:");
    }
}
