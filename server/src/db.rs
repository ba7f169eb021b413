//! The repository: every SQL statement of the server, over `sqlx::Any` so
//! that one code path serves SQLite (the embedded default) and PostgreSQL.
//! Every query is parameterized (`$n` placeholders, which both accept); the
//! few statements that differ per backend are chosen by [`Backend`].
//!
//! Exactness of pull cursors rests on one rule: a push transaction first
//! upserts the tenant's row in `tenant_counters` (taking that row's lock in
//! PostgreSQL, the database's write lock in SQLite) and holds it until
//! commit, so sequence numbers are handed out, and become visible, in order.

use serde_json::{Map, Value};
use sqlx::any::{install_default_drivers, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use tidesync_protocol::{MutationStatus, Strategy, Winner};

use crate::sync::{decide, record_json, Existing, PushItem};

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
}

impl StoredRecord {
    pub fn to_json(&self) -> Value {
        record_json(
            &self.id,
            &self.data,
            self.version,
            self.updated_at,
            self.is_deleted,
        )
    }

    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let data_text: String = row.try_get("data")?;
        let data = match serde_json::from_str::<Value>(&data_text) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Ok(StoredRecord {
            entity_type: row.try_get("entity_type")?,
            id: row.try_get("id")?,
            data,
            version: row.try_get("version")?,
            updated_at: row.try_get("updated_at")?,
            changed_at: row.try_get::<Option<i64>, _>("changed_at")?,
            is_deleted: row.try_get::<i64, _>("is_deleted")? != 0,
            seq: row.try_get("seq")?,
        })
    }
}

/// Outcome of one valid push item.
#[derive(Debug, Clone)]
pub struct ItemOutcome {
    pub entity_type: String,
    pub id: String,
    pub status: MutationStatus,
    pub resolution: Option<Strategy>,
    pub winner: Option<Winner>,
    pub record: Value,
}

const COLUMNS: &str = "entity_type, id, data, version, updated_at, changed_at, is_deleted, seq";

#[derive(Debug, Clone)]
pub struct Repo {
    pool: AnyPool,
    backend: Backend,
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
        let repo = Repo { pool, backend };
        repo.migrate().await?;
        Ok(repo)
    }

    pub fn backend(&self) -> Backend {
        self.backend
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
    fn type_filter(&self, n: usize) -> String {
        match self.backend {
            Backend::Sqlite => format!("entity_type IN (SELECT value FROM json_each(${n}))"),
            Backend::Postgres => {
                format!("entity_type IN (SELECT jsonb_array_elements_text(${n}::jsonb))")
            }
        }
    }

    fn id_filter(&self, n: usize) -> String {
        self.type_filter(n).replacen("entity_type", "id", 1)
    }

    /// Applies a push in one transaction. `items` are the valid mutations
    /// (with their index in the request); `strategy` gives each entity
    /// type's strategy. Returns each item's outcome and the last sequence
    /// number assigned (if any change was stored).
    pub async fn push(
        &self,
        tenant: &str,
        client_id: Option<&str>,
        items: Vec<(usize, PushItem)>,
        strategy: impl Fn(&str) -> Strategy,
        now: i64,
    ) -> Result<(Vec<(usize, ItemOutcome)>, Option<i64>), sqlx::Error> {
        if items.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut tx = self.pool.begin().await?;
        // Take the tenant's write lock first; held until commit.
        let start_seq: i64 = sqlx::query(
            "INSERT INTO tenant_counters (tenant_id, seq) VALUES ($1, 0) \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = tenant_counters.seq \
             RETURNING seq",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?
        .try_get("seq")?;
        // Stamp changes after taking the lock, so that per tenant `updatedAt`
        // follows commit order (on one clock) and seed 003's timestamp pulls
        // miss as little as a timestamp can. The naive-cursor test build
        // keeps the request's start time, as seed 003 did.
        let now = if cfg!(feature = "naive-cursor") {
            now
        } else {
            now.max(crate::sync::now_ms())
        };
        let mut seq = start_seq;
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items {
            // Exactly once: a mutation id already seen is a duplicate.
            if let (Some(cid), Some(mid)) = (client_id, item.mutation_id.as_deref()) {
                let seen = sqlx::query(
                    "SELECT entity_type, record_id FROM applied_mutations \
                     WHERE tenant_id = $1 AND client_id = $2 AND mutation_id = $3",
                )
                .bind(tenant)
                .bind(cid)
                .bind(mid)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = seen {
                    let et: String = row.try_get("entity_type")?;
                    let rid: String = row.try_get("record_id")?;
                    let current = fetch_one_record(&mut tx, tenant, &et, &rid).await?;
                    let record = current
                        .as_ref()
                        .map(StoredRecord::to_json)
                        .unwrap_or(Value::Null);
                    out.push((
                        index,
                        ItemOutcome {
                            entity_type: et,
                            id: rid,
                            status: MutationStatus::Duplicate,
                            resolution: None,
                            winner: None,
                            record,
                        },
                    ));
                    continue;
                }
            }
            let id = item
                .id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let current = fetch_one_record(&mut tx, tenant, &item.entity_type, &id).await?;
            let existing = current.as_ref().map(|r| Existing {
                data: r.data.clone(),
                version: r.version,
                updated_at: r.updated_at,
                changed_at: r.changed_at.unwrap_or(r.updated_at),
                is_deleted: r.is_deleted,
            });
            let decision = decide(strategy(&item.entity_type), existing.as_ref(), &item, now);
            let record = match (&decision.write, &current) {
                (Some((data, deleted)), _) => {
                    seq += 1;
                    let version = current.as_ref().map_or(1, |r| r.version + 1);
                    let updated_at = current.as_ref().map_or(now, |r| r.updated_at.max(now));
                    // A client clock ahead of ours must not win every later conflict.
                    let changed_at = item.client_ts_ms.unwrap_or(now).min(now);
                    let data_text = Value::Object(data.clone()).to_string();
                    let sync_status = data
                        .get("sync_status")
                        .and_then(Value::as_str)
                        // PostgreSQL text cannot hold NUL; such a value is
                        // never "pending" anyway.
                        .filter(|s| !s.contains('\0'))
                        .map(str::to_owned);
                    sqlx::query(
                        "INSERT INTO records \
                         (tenant_id, entity_type, id, data, version, updated_at, is_deleted, seq, sync_status, changed_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (tenant_id, entity_type, id) DO UPDATE SET \
                         data = excluded.data, version = excluded.version, \
                         updated_at = excluded.updated_at, is_deleted = excluded.is_deleted, \
                         seq = excluded.seq, sync_status = excluded.sync_status, \
                         changed_at = excluded.changed_at",
                    )
                    .bind(tenant)
                    .bind(&item.entity_type)
                    .bind(&id)
                    .bind(data_text)
                    .bind(version)
                    .bind(updated_at)
                    .bind(i64::from(*deleted))
                    .bind(seq)
                    .bind(sync_status)
                    .bind(changed_at)
                    .execute(&mut *tx)
                    .await?;
                    record_json(&id, data, version, updated_at, *deleted)
                }
                (None, Some(r)) => r.to_json(),
                (None, None) => Value::Null,
            };
            if let (Some(cid), Some(mid)) = (client_id, item.mutation_id.as_deref()) {
                sqlx::query(
                    "INSERT INTO applied_mutations \
                     (tenant_id, client_id, mutation_id, entity_type, record_id, applied_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(tenant)
                .bind(cid)
                .bind(mid)
                .bind(&item.entity_type)
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            out.push((
                index,
                ItemOutcome {
                    entity_type: item.entity_type,
                    id,
                    status: decision.status,
                    resolution: decision.resolution,
                    winner: decision.winner,
                    record,
                },
            ));
        }
        if seq != start_seq {
            sqlx::query("UPDATE tenant_counters SET seq = $2 WHERE tenant_id = $1")
                .bind(tenant)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((out, (seq != start_seq).then_some(seq)))
    }

    /// Up to `limit + 1` changes after `after`, in sequence order, of the
    /// given types (tombstones included).
    pub async fn changes(
        &self,
        tenant: &str,
        types: &[String],
        after: After,
        limit: u32,
    ) -> Result<Vec<StoredRecord>, sqlx::Error> {
        let types_json = serde_json::to_string(types).unwrap_or_else(|_| "[]".into());
        let (column, value) = match after {
            After::Seq(s) => ("seq", s),
            After::Time(t) => ("updated_at", t),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND {} AND {column} > $3 \
             ORDER BY {} LIMIT $4",
            self.type_filter(2),
            match after {
                After::Time(_) => "updated_at, seq",
                After::Seq(_) => "seq",
            }
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(types_json)
            .bind(value)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(StoredRecord::from_row).collect()
    }

    /// The changes stored at exactly `updated_at` with a sequence number
    /// above `after_seq` (the rest of a timestamp page's last millisecond).
    pub async fn same_time_after(
        &self,
        tenant: &str,
        types: &[String],
        updated_at: i64,
        after_seq: i64,
    ) -> Result<Vec<StoredRecord>, sqlx::Error> {
        let types_json = serde_json::to_string(types).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND {} \
             AND updated_at = $3 AND seq > $4 ORDER BY seq",
            self.type_filter(2)
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(types_json)
            .bind(updated_at)
            .bind(after_seq)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(StoredRecord::from_row).collect()
    }

    /// Live records whose `sync_status` is `pending` (seed 003).
    pub async fn pending(
        &self,
        tenant: &str,
        types: &[String],
        limit: u32,
    ) -> Result<Vec<StoredRecord>, sqlx::Error> {
        let types_json = serde_json::to_string(types).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND {} \
             AND is_deleted = 0 AND sync_status = $3 ORDER BY seq LIMIT $4",
            self.type_filter(2)
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(types_json)
            .bind(tidesync_protocol::SYNC_STATUS_PENDING)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(StoredRecord::from_row).collect()
    }

    /// `(id, version)` of every live record of one type.
    pub async fn live_versions(
        &self,
        tenant: &str,
        entity_type: &str,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, version FROM records \
             WHERE tenant_id = $1 AND entity_type = $2 AND is_deleted = 0",
        )
        .bind(tenant)
        .bind(entity_type)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("version")?)))
            .collect()
    }

    /// Specific records of one type (tombstones included).
    pub async fn fetch(
        &self,
        tenant: &str,
        entity_type: &str,
        ids: &[String],
    ) -> Result<Vec<StoredRecord>, sqlx::Error> {
        let ids_json = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND entity_type = $2 AND {} \
             ORDER BY seq",
            self.id_filter(3)
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(entity_type)
            .bind(ids_json)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(StoredRecord::from_row).collect()
    }
}

async fn fetch_one_record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    entity_type: &str,
    id: &str,
) -> Result<Option<StoredRecord>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND entity_type = $2 AND id = $3"
    ))
    .bind(tenant)
    .bind(entity_type)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(StoredRecord::from_row).transpose()
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
