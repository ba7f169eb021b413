//! Read queries: pull pages, pull-pending, verify summaries and fetch.

use futures_util::{Stream, TryStreamExt};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::quarantine::{CorruptRecord, Decoded};
use super::{After, Repo, StoredRecord, COLUMNS};

/// How large a page may be.
#[derive(Debug, Clone, Copy)]
pub struct PageBounds {
    /// Most records.
    pub count: u32,
    /// Most bytes of record JSON (an upper estimate, see
    /// [`StoredRecord::wire_size`]); a first record larger than this still
    /// makes a page of one.
    pub bytes: usize,
}

/// Records of one answer, and whether more were left out.
#[derive(Debug)]
pub struct Page {
    pub rows: Vec<StoredRecord>,
    pub has_more: bool,
}

/// Rows read for one answer.
struct Collected {
    rows: Vec<StoredRecord>,
    /// The first row left out, if the bounds cut the page.
    next: Option<StoredRecord>,
    /// Unreadable rows met on the way (not in `rows`, not counted).
    corrupt: Vec<CorruptRecord>,
}

/// Reads rows while they fit `bounds`, without reading further. Rows are
/// streamed, so a page of large records never holds more than the page in
/// memory.
async fn collect_page(
    stream: impl Stream<Item = Result<AnyRow, sqlx::Error>>,
    bounds: PageBounds,
) -> Result<Collected, sqlx::Error> {
    let mut stream = std::pin::pin!(stream);
    let mut out = Collected {
        rows: Vec::new(),
        next: None,
        corrupt: Vec::new(),
    };
    let mut bytes = 0usize;
    while let Some(row) = stream.try_next().await? {
        let record = match Decoded::from_row(&row)? {
            Decoded::Record(r) => r,
            Decoded::Corrupt(c) => {
                out.corrupt.push(c);
                continue;
            }
        };
        let size = record.wire_size();
        let full = out.rows.len() >= bounds.count as usize
            || (!out.rows.is_empty() && bytes.saturating_add(size) > bounds.bytes);
        if full {
            out.next = Some(record);
            return Ok(out);
        }
        bytes = bytes.saturating_add(size);
        out.rows.push(record);
    }
    Ok(out)
}

impl Repo {
    /// One pull page: the changes after `after` of the given types
    /// (tombstones included), in sequence order (`After::Seq`) or in
    /// `updated_at` order (`After::Time`), at most `bounds.count` of them and
    /// at most `bounds.bytes` of record JSON, but always at least one.
    ///
    /// With `complete_millisecond` (seed 003's timestamp form, whose next
    /// pull asks for changes stored after the page's last millisecond) a
    /// page never ends inside a millisecond: it is cut back to the end of
    /// the previous one, or, when the whole page is one millisecond,
    /// completed with the rest of it whatever the bounds.
    pub async fn pull_page(
        &self,
        tenant: &str,
        types: &[String],
        after: After,
        bounds: PageBounds,
        complete_millisecond: bool,
    ) -> Result<Page, sqlx::Error> {
        let types_json = serde_json::to_string(types).unwrap_or_else(|_| "[]".into());
        let (column, value) = match after {
            After::Seq(s) => ("seq", s),
            After::Time(t) => ("updated_at", t),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND {} AND {column} > $3 \
             AND quarantined = 0 ORDER BY {} LIMIT $4",
            self.type_filter(2),
            match after {
                After::Time(_) => "updated_at, seq",
                After::Seq(_) => "seq",
            }
        );
        let stream = sqlx::query(&sql)
            .bind(tenant)
            .bind(types_json)
            .bind(value)
            .bind(i64::from(bounds.count) + 1)
            .fetch(&self.pool);
        let Collected {
            mut rows,
            next,
            mut corrupt,
        } = collect_page(stream, bounds).await?;
        if let (true, Some(next), Some(last)) = (complete_millisecond, &next, rows.last()) {
            let (last_at, last_seq) = (last.updated_at, last.seq);
            if next.updated_at == last_at {
                match rows.iter().position(|r| r.updated_at == last_at) {
                    Some(first) if first > 0 => rows.truncate(first),
                    _ => {
                        let rest = self
                            .same_time_after(tenant, types, last_at, last_seq)
                            .await?;
                        rows.extend(rest.rows);
                        corrupt.extend(rest.corrupt);
                    }
                }
            }
        }
        self.finish_page(
            tenant,
            Collected {
                rows,
                next,
                corrupt,
            },
        )
        .await
    }

    /// Ends a read: quarantines the rows that could not be read, and
    /// answers the page.
    async fn finish_page(&self, tenant: &str, collected: Collected) -> Result<Page, sqlx::Error> {
        let Collected {
            rows,
            next,
            corrupt,
        } = collected;
        self.quarantine(tenant, &corrupt).await?;
        Ok(Page {
            rows,
            has_more: next.is_some(),
        })
    }

    /// The changes stored at exactly `updated_at` with a sequence number
    /// above `after_seq` (the rest of a timestamp page's last millisecond).
    async fn same_time_after(
        &self,
        tenant: &str,
        types: &[String],
        updated_at: i64,
        after_seq: i64,
    ) -> Result<Collected, sqlx::Error> {
        let types_json = serde_json::to_string(types).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND {} \
             AND updated_at = $3 AND seq > $4 AND quarantined = 0 ORDER BY seq",
            self.type_filter(2)
        );
        let stream = sqlx::query(&sql)
            .bind(tenant)
            .bind(types_json)
            .bind(updated_at)
            .bind(after_seq)
            .fetch(&self.pool);
        let unbounded = PageBounds {
            count: u32::MAX,
            bytes: usize::MAX,
        };
        collect_page(stream, unbounded).await
    }

    /// Live records whose `sync_status` is `pending` (seed 003), in
    /// sequence order, within `bounds`.
    pub async fn pending(
        &self,
        tenant: &str,
        types: &[String],
        bounds: PageBounds,
    ) -> Result<Page, sqlx::Error> {
        let types_json = serde_json::to_string(types).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND {} \
             AND is_deleted = 0 AND sync_status = $3 AND quarantined = 0 ORDER BY seq LIMIT $4",
            self.type_filter(2)
        );
        let stream = sqlx::query(&sql)
            .bind(tenant)
            .bind(types_json)
            .bind(tidesync_protocol::SYNC_STATUS_PENDING)
            .bind(i64::from(bounds.count) + 1)
            .fetch(&self.pool);
        let collected = collect_page(stream, bounds).await?;
        self.finish_page(tenant, collected).await
    }

    /// `(id, version)` of every live record of one type.
    pub async fn live_versions(
        &self,
        tenant: &str,
        entity_type: &str,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, version FROM records \
             WHERE tenant_id = $1 AND entity_type = $2 AND is_deleted = 0 AND quarantined = 0",
        )
        .bind(tenant)
        .bind(entity_type)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("version")?)))
            .collect()
    }

    /// Specific records of one type (tombstones included), in sequence
    /// order, within `max_bytes` of record JSON (at least one record).
    pub async fn fetch(
        &self,
        tenant: &str,
        entity_type: &str,
        ids: &[String],
        max_bytes: usize,
    ) -> Result<Page, sqlx::Error> {
        let ids_json = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let sql = format!(
            "SELECT {COLUMNS} FROM records WHERE tenant_id = $1 AND entity_type = $2 AND {} \
             AND quarantined = 0 ORDER BY seq",
            self.id_filter(3)
        );
        let stream = sqlx::query(&sql)
            .bind(tenant)
            .bind(entity_type)
            .bind(ids_json)
            .fetch(&self.pool);
        let bounds = PageBounds {
            count: u32::try_from(ids.len()).unwrap_or(u32::MAX),
            bytes: max_bytes,
        };
        let collected = collect_page(stream, bounds).await?;
        self.finish_page(tenant, collected).await
    }
}
