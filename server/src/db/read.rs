//! Read queries: pull pages, pull-pending, verify summaries and fetch.

use sqlx::Row;

use super::{After, Repo, StoredRecord, COLUMNS};

impl Repo {
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
