//! Stored records whose JSON cannot be read: detected wherever a row is
//! decoded, reported (an error log line and
//! `tidesync_quarantined_records_total`) and quarantined (flagged in
//! `records`, raw text copied to `quarantined_records`), never served as
//! something else.

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Repo, StoredRecord};

/// A row whose `data` is not a JSON object.
#[derive(Debug, Clone)]
pub struct CorruptRecord {
    pub entity_type: String,
    pub id: String,
    pub version: i64,
    pub updated_at: i64,
    pub changed_at: Option<i64>,
    pub is_deleted: bool,
    pub seq: i64,
    pub raw: String,
    pub reason: String,
    /// Quarantined before (found again by a write to its id): not reported
    /// twice.
    pub already: bool,
}

/// A decoded row.
pub enum Decoded {
    Record(StoredRecord),
    Corrupt(CorruptRecord),
}

impl Decoded {
    pub fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let raw: String = row.try_get("data")?;
        let entity_type: String = row.try_get("entity_type")?;
        let id: String = row.try_get("id")?;
        let version: i64 = row.try_get("version")?;
        let updated_at: i64 = row.try_get("updated_at")?;
        let changed_at: Option<i64> = row.try_get("changed_at")?;
        let is_deleted = row.try_get::<i64, _>("is_deleted")? != 0;
        let seq: i64 = row.try_get("seq")?;
        let already = row.try_get::<i64, _>("quarantined")? != 0;
        let data: Result<Map<String, Value>, String> = match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(format!("data is JSON but not an object: {}", kind(&other))),
            Err(e) => Err(format!("data is not JSON: {e}")),
        };
        Ok(match data {
            Ok(data) => Decoded::Record(StoredRecord {
                entity_type,
                id,
                data,
                version,
                updated_at,
                changed_at,
                is_deleted,
                seq,
                data_len: raw.len(),
            }),
            Err(reason) => Decoded::Corrupt(CorruptRecord {
                entity_type,
                id,
                version,
                updated_at,
                changed_at,
                is_deleted,
                seq,
                raw,
                reason,
                already,
            }),
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Repo {
    /// Quarantines rows found unreadable by a read (in their own
    /// transaction), logging each.
    pub(crate) async fn quarantine(
        &self,
        tenant: &str,
        corrupt: &[CorruptRecord],
    ) -> Result<(), sqlx::Error> {
        if corrupt.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for c in corrupt {
            quarantine_in(&mut tx, tenant, c).await?;
        }
        tx.commit().await?;
        for c in corrupt {
            self.report(tenant, c);
        }
        Ok(())
    }

    pub(crate) fn report(&self, tenant: &str, c: &CorruptRecord) {
        if c.already {
            return;
        }
        tracing::error!(
            tenant = %tenant,
            entity_type = %c.entity_type,
            id = %c.id,
            version = c.version,
            seq = c.seq,
            reason = %c.reason,
            "stored record is unreadable; quarantined (see quarantined_records)"
        );
        self.quarantined.inc();
    }
}

/// Copies the raw row to `quarantined_records` and flags it, unless it
/// changed meanwhile (the flag is set only on the same `seq`) or was
/// quarantined before.
pub(crate) async fn quarantine_in(
    conn: &mut AnyConnection,
    tenant: &str,
    c: &CorruptRecord,
) -> Result<(), sqlx::Error> {
    if c.already {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO quarantined_records \
         (tenant_id, entity_type, id, version, seq, data, reason, found_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant_id, entity_type, id, seq) DO NOTHING",
    )
    .bind(tenant)
    .bind(&c.entity_type)
    .bind(&c.id)
    .bind(c.version)
    .bind(c.seq)
    .bind(c.raw.replace('\0', ""))
    .bind(&c.reason)
    .bind(crate::sync::now_ms())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE records SET quarantined = 1 \
         WHERE tenant_id = $1 AND entity_type = $2 AND id = $3 AND seq = $4",
    )
    .bind(tenant)
    .bind(&c.entity_type)
    .bind(&c.id)
    .bind(c.seq)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
