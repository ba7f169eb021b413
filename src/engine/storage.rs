//! What the client knows about its storage: how full the origin's quota is
//! (`navigator.storage.estimate()`), and whether its database vanished —
//! evicted by the browser under storage pressure, or cleared with the
//! site's data — while it was open or since it was last opened. The health
//! rules read it (see [`crate::engine::outbox::health`]).

use crate::engine::time::{iso, Millis};
use serde::Serialize;

/// Past this share of the quota, `getHealth()` is degraded and recommends
/// freeing space; past [`CRITICAL_RATIO`], critical.
pub const FULL_RATIO: f64 = 0.8;
pub const CRITICAL_RATIO: f64 = 0.95;

/// The origin's storage, in bytes, as `getHealth().storage`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageUsage {
    pub usage: f64,
    pub quota: f64,
    /// `usage / quota`, 0 when the quota is unknown.
    pub usage_ratio: f64,
    pub persisted: bool,
}

impl StorageUsage {
    pub fn new(usage: f64, quota: f64, persisted: bool) -> Self {
        let usage_ratio = if quota > 0.0 { usage / quota } else { 0.0 };
        Self {
            usage,
            quota,
            usage_ratio,
            persisted,
        }
    }
}

/// How the loss was noticed.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LossSeen {
    /// The browser closed the open connection and the database came back
    /// empty (site data cleared, or eviction, under a running client).
    WhileOpen,
    /// The database was missing when the client opened, though this
    /// browser had opened it before (eviction since the last visit).
    OnOpen,
}

/// `storage:evicted`: the database vanished. What was in this client's
/// memory — its queued tasks — is written back; dead letters, local records
/// and anything other tabs had queued are gone.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Eviction {
    pub seen: LossSeen,
    #[serde(with = "iso")]
    pub detected_at: Millis,
    /// Queued tasks this client held in memory and wrote back.
    pub restored_tasks: usize,
    /// Dead letters the client knew of, now lost.
    pub lost_failed_tasks: u32,
}

/// An issue and its recommendation for the health rules.
pub fn eviction_issue(eviction: &Eviction) -> String {
    match eviction.seen {
        LossSeen::WhileOpen => format!(
            "the database was deleted while the client was open (site data cleared, or evicted by the browser); {} queued task(s) were written back, {} dead letter(s) and local records were lost",
            eviction.restored_tasks, eviction.lost_failed_tasks
        ),
        LossSeen::OnOpen => "the database was missing when the client opened, though it existed before (evicted by the browser, or site data cleared); what it held was lost".into(),
    }
}

pub const EVICTION_ADVICE: &str =
    "call requestPersistentStorage() so the browser keeps this origin's data under storage pressure";

pub fn usage_issue(usage: &StorageUsage) -> String {
    format!(
        "storage is {:.0}% full ({} of {})",
        usage.usage_ratio * 100.0,
        megabytes(usage.usage),
        megabytes(usage.quota)
    )
}

/// Whether a database found empty when the client opened had vanished:
/// it was `fresh` (created by this open), yet this browser remembers
/// having opened it before (the marker outlives the origin's storage).
pub fn lost_on_open(fresh: bool, remembered: bool) -> bool {
    fresh && remembered
}

pub const USAGE_ADVICE: &str = "free space (discardFailed() dead letters, delete old records, clear caches) or call requestPersistentStorage(); writes fail with storage-quota when it is full";

fn megabytes(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1_048_576.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_of_the_quota() {
        assert_eq!(StorageUsage::new(80.0, 100.0, false).usage_ratio, 0.8);
        assert_eq!(StorageUsage::new(80.0, 0.0, false).usage_ratio, 0.0);
        let issue = usage_issue(&StorageUsage::new(
            850.0 * 1_048_576.0,
            1000.0 * 1_048_576.0,
            false,
        ));
        assert_eq!(issue, "storage is 85% full (850.0 MB of 1000.0 MB)");
    }

    #[test]
    fn a_fresh_database_was_lost_only_if_it_was_known() {
        assert!(lost_on_open(true, true));
        assert!(!lost_on_open(true, false), "a first visit");
        assert!(!lost_on_open(false, true), "the database is there");
    }

    #[test]
    fn the_eviction_issue_says_what_came_back_and_what_was_lost() {
        let issue = eviction_issue(&Eviction {
            seen: LossSeen::WhileOpen,
            detected_at: 0.0,
            restored_tasks: 3,
            lost_failed_tasks: 2,
        });
        assert!(
            issue.contains("3 queued task(s) were written back"),
            "{issue}"
        );
        assert!(issue.contains("2 dead letter(s)"), "{issue}");
    }
}
