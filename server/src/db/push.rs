//! The push transaction: takes the tenant's write lock, decides each
//! mutation against the stored record and writes the outcome.

use serde_json::Value;
use sqlx::Row;
use tidesync_protocol::{MutationStatus, Strategy, Winner};

use super::quarantine::{quarantine_in, CorruptRecord, Decoded};
use super::{Repo, StoredRecord, COLUMNS};
use crate::sync::{decide, Existing, PushItem, Write};

/// Outcome of one valid push item.
#[derive(Debug, Clone)]
pub struct ItemOutcome {
    pub entity_type: String,
    pub id: String,
    pub status: MutationStatus,
    pub resolution: Option<Strategy>,
    pub winner: Option<Winner>,
    /// The record as stored afterwards (shaped for the wire after commit).
    pub record: Option<StoredRecord>,
}

impl Repo {
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
        let now = change_time(now);
        let mut seq = start_seq;
        let mut corrupt: Vec<CorruptRecord> = Vec::new();
        let mut out = Vec::with_capacity(items.len());
        for (index, mut item) in items {
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
                    let record = match fetch_one_record(&mut tx, tenant, &et, &rid).await? {
                        Some(Decoded::Record(r)) => Some(r),
                        Some(Decoded::Corrupt(c)) => {
                            quarantine_in(&mut tx, tenant, &c).await?;
                            corrupt.push(c);
                            None
                        }
                        None => None,
                    };
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
            // An unreadable stored row is quarantined, and the write goes on
            // from its version with no data (never from a made-up `{}`
            // served as the record).
            let mut unreadable = false;
            let mut current =
                match fetch_one_record(&mut tx, tenant, &item.entity_type, &id).await? {
                    Some(Decoded::Record(r)) => Some(r),
                    Some(Decoded::Corrupt(c)) => {
                        quarantine_in(&mut tx, tenant, &c).await?;
                        unreadable = true;
                        let placeholder = StoredRecord {
                            entity_type: c.entity_type.clone(),
                            id: c.id.clone(),
                            data: serde_json::Map::new(),
                            version: c.version,
                            updated_at: c.updated_at,
                            changed_at: c.changed_at,
                            is_deleted: c.is_deleted,
                            seq: c.seq,
                            data_len: 2,
                        };
                        corrupt.push(c);
                        Some(placeholder)
                    }
                    None => None,
                };
            // The stored data moves into the decision and back: no copy of a
            // large record while the lock is held.
            let existing = current.as_mut().map(|r| Existing {
                data: std::mem::take(&mut r.data),
                version: r.version,
                updated_at: r.updated_at,
                changed_at: r.changed_at.unwrap_or(r.updated_at),
                is_deleted: r.is_deleted,
            });
            let decision = decide(strategy(&item.entity_type), existing.as_ref(), &item, now);
            if let (Some(r), Some(e)) = (current.as_mut(), existing) {
                r.data = e.data;
            }
            let record = match decision.write {
                Some(Write {
                    data,
                    is_deleted,
                    changed_at,
                    data_is_client,
                }) => {
                    seq += 1;
                    let version = current.as_ref().map_or(1, |r| r.version + 1);
                    let updated_at = current.as_ref().map_or(now, |r| r.updated_at.max(now));
                    // The client's own data was serialized before the
                    // transaction; only a merge or a delete's kept fields
                    // are serialized here.
                    let data_text = if data_is_client {
                        std::mem::take(&mut item.data_text)
                    } else {
                        Value::Object(data.clone()).to_string()
                    };
                    let sync_status = data
                        .get("sync_status")
                        .and_then(Value::as_str)
                        // PostgreSQL text cannot hold NUL; such a value is
                        // never "pending" anyway.
                        .filter(|s| !s.contains('\0'))
                        .map(str::to_owned);
                    let data_len = data_text.len();
                    sqlx::query(
                        "INSERT INTO records \
                         (tenant_id, entity_type, id, data, version, updated_at, is_deleted, seq, sync_status, changed_at, quarantined) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0) \
                         ON CONFLICT (tenant_id, entity_type, id) DO UPDATE SET \
                         data = excluded.data, version = excluded.version, \
                         updated_at = excluded.updated_at, is_deleted = excluded.is_deleted, \
                         seq = excluded.seq, sync_status = excluded.sync_status, \
                         changed_at = excluded.changed_at, quarantined = 0",
                    )
                    .bind(tenant)
                    .bind(&item.entity_type)
                    .bind(&id)
                    .bind(data_text)
                    .bind(version)
                    .bind(updated_at)
                    .bind(i64::from(is_deleted))
                    .bind(seq)
                    .bind(sync_status)
                    .bind(changed_at)
                    .execute(&mut *tx)
                    .await?;
                    Some(StoredRecord {
                        entity_type: item.entity_type.clone(),
                        id: id.clone(),
                        data,
                        version,
                        updated_at,
                        changed_at: Some(changed_at),
                        is_deleted,
                        seq,
                        data_len,
                    })
                }
                None if unreadable => None,
                None => current,
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
        for c in &corrupt {
            self.report(tenant, c);
        }
        Ok((out, (seq != start_seq).then_some(seq)))
    }
}

async fn fetch_one_record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    entity_type: &str,
    id: &str,
) -> Result<Option<Decoded>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND entity_type = $2 AND id = $3"
    ))
    .bind(tenant)
    .bind(entity_type)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(Decoded::from_row).transpose()
}

/// The time a push's changes are stamped with, `request_start` being when
/// the push arrived: taken after the tenant's lock, so that per tenant
/// `updatedAt` follows commit order (on one clock) and seed 003's
/// timestamp pulls miss as little as a timestamp can.
#[cfg(not(feature = "naive-cursor"))]
fn change_time(request_start: i64) -> i64 {
    request_start.max(crate::sync::now_ms())
}

/// The naive-cursor test build keeps the request's start time, as seed 003
/// did (see the `cursor` module).
#[cfg(feature = "naive-cursor")]
fn change_time(request_start: i64) -> i64 {
    request_start
}
