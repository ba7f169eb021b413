//! The pull cursor: `c1.<seq>`, an exact position in the tenant's change
//! log, opaque to clients. A cursor `t.<ms>` reads by time, as seed 003's
//! `lastSyncTimestamp` does. This module owns the codec and where a page
//! ends; the handlers only pass pages through it.
//!
//! The `naive-cursor` cargo feature (test builds only, never deployable)
//! swaps in seed 003's own rule, a time cursor on every page, to show that
//! `tests/concurrency.rs` catches what it loses; it is chosen here, at
//! compile time, and nowhere else.

use crate::db::{After, StoredRecord};
use crate::error::{clip, ApiError};

/// The cursor of a position in the change log.
pub fn encode(seq: i64) -> String {
    format!("c1.{seq}")
}

/// Reads a cursor this server issued.
pub fn decode(cursor: &str) -> Result<After, ApiError> {
    let bad = || {
        ApiError::Validation(format!(
            "cursor: not a cursor this server issued: {:?}",
            clip(cursor)
        ))
    };
    if let Some(n) = cursor.strip_prefix("c1.") {
        return n.parse::<i64>().map(After::Seq).map_err(|_| bad());
    }
    if let Some(n) = cursor.strip_prefix("t.") {
        return n.parse::<i64>().map(After::Time).map_err(|_| bad());
    }
    Err(bad())
}

/// How a page of a pull ends.
#[derive(Debug, PartialEq)]
pub struct PageEnd {
    /// Where the next pull starts (`None`: the client goes on by time).
    pub cursor: Option<String>,
    /// The time to answer as `syncTimestamp` when it is not "now": the
    /// page's last millisecond, from which a timestamp-form client pulls
    /// the rest.
    pub synced_until: Option<i64>,
}

/// Whether a page read after `after` must hold whole milliseconds: the
/// timestamp form's next pull asks for changes stored after the page's last
/// millisecond, so a page must not end inside one.
#[cfg(not(feature = "naive-cursor"))]
pub fn whole_milliseconds(after: After) -> bool {
    matches!(after, After::Time(_))
}

/// Where the next pull starts after `rows`, read after `after` (`sent`:
/// the cursor the pull came with).
#[cfg(not(feature = "naive-cursor"))]
pub fn page_end(
    after: After,
    _sent: Option<&str>,
    rows: &[StoredRecord],
    has_more: bool,
) -> PageEnd {
    match after {
        After::Seq(s) => PageEnd {
            cursor: Some(encode(rows.last().map_or(s, |r| r.seq))),
            synced_until: None,
        },
        // Timestamp form: rows come in `updatedAt` order and a page holds
        // whole milliseconds. With more to come, `syncTimestamp` is the
        // page's last millisecond, so a seed 003 client that pulls again
        // from it gets the rest. Once complete, the answer also carries an
        // exact cursor to switch to.
        After::Time(_) if has_more => PageEnd {
            cursor: None,
            synced_until: rows.last().map(|r| r.updated_at),
        },
        After::Time(_) => PageEnd {
            cursor: rows.iter().map(|r| r.seq).max().map(encode),
            synced_until: None,
        },
    }
}

#[cfg(feature = "naive-cursor")]
pub fn whole_milliseconds(_after: After) -> bool {
    false
}

/// Seed 003's rule: the last row's `updatedAt`, whatever the form.
#[cfg(feature = "naive-cursor")]
pub fn page_end(
    _after: After,
    sent: Option<&str>,
    rows: &[StoredRecord],
    _has_more: bool,
) -> PageEnd {
    PageEnd {
        cursor: rows
            .last()
            .map(|r| format!("t.{}", r.updated_at))
            .or_else(|| sent.map(str::to_owned)),
        synced_until: None,
    }
}
