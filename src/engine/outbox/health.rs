//! The health verdict as a pure function of what the outbox knows: a table
//! of rules, each a condition with its severity, the issue it reports and
//! what the app can do. The verdict is the worst severity that applies.

use crate::engine::events::{Health, HealthStatus, Status};
use crate::engine::storage::{self, Eviction, StorageUsage};
use crate::engine::time::Millis;

/// A task waiting longer than this makes the outbox degraded.
const LONG_WAIT_MS: Millis = 3_600_000.0;

/// What the rules look at.
pub struct HealthInputs<'a> {
    pub status: &'a Status,
    /// How long the oldest queued task has waited, if any is queued.
    pub oldest_wait_ms: Option<Millis>,
    /// The origin's storage, once measured.
    pub storage: Option<&'a StorageUsage>,
    /// The database vanished (and how), if it did.
    pub eviction: Option<&'a Eviction>,
}

fn usage_ratio(i: &HealthInputs) -> f64 {
    i.storage.map_or(0.0, |s| s.usage_ratio)
}

struct Rule {
    severity: HealthStatus,
    applies: fn(&HealthInputs) -> bool,
    issue: fn(&HealthInputs) -> String,
    recommendation: Option<&'static str>,
}

const RULES: [Rule; 8] = [
    Rule {
        severity: HealthStatus::Critical,
        applies: |i| i.status.auth_required,
        issue: |_| "the server refused the credentials; sync is paused".into(),
        recommendation: Some("call setToken() with a fresh token, or provide getToken"),
    },
    Rule {
        severity: HealthStatus::Critical,
        applies: |i| i.status.circuit != "closed",
        issue: |i| {
            format!(
                "the circuit breaker is {}: the server keeps failing",
                i.status.circuit
            )
        },
        recommendation: Some("check the server's health; the client probes it automatically"),
    },
    Rule {
        severity: HealthStatus::Degraded,
        applies: |i| !i.status.online,
        issue: |_| "offline: requests are queued until the network returns".into(),
        recommendation: None,
    },
    Rule {
        severity: HealthStatus::Degraded,
        applies: |i| i.status.failed_count > 0,
        issue: |i| format!("{} task(s) in the dead letters", i.status.failed_count),
        recommendation: Some("inspect listFailed(), then retryFailed(id) or discardFailed(id)"),
    },
    Rule {
        severity: HealthStatus::Degraded,
        applies: |i| i.oldest_wait_ms.is_some_and(|w| w > LONG_WAIT_MS),
        issue: |_| "a task has waited for more than an hour".into(),
        recommendation: Some("check connectivity and the server; call flush() to retry now"),
    },
    Rule {
        severity: HealthStatus::Critical,
        applies: |i| usage_ratio(i) >= storage::CRITICAL_RATIO,
        issue: |i| i.storage.map(storage::usage_issue).unwrap_or_default(),
        recommendation: Some(storage::USAGE_ADVICE),
    },
    Rule {
        severity: HealthStatus::Degraded,
        applies: |i| (storage::FULL_RATIO..storage::CRITICAL_RATIO).contains(&usage_ratio(i)),
        issue: |i| i.storage.map(storage::usage_issue).unwrap_or_default(),
        recommendation: Some(storage::USAGE_ADVICE),
    },
    Rule {
        severity: HealthStatus::Degraded,
        applies: |i| i.eviction.is_some(),
        issue: |i| i.eviction.map(storage::eviction_issue).unwrap_or_default(),
        recommendation: Some(storage::EVICTION_ADVICE),
    },
];

/// The verdict, the issues and the recommendations, in the table's order.
pub fn assess(inputs: &HealthInputs) -> Health {
    let mut health = Health {
        status: HealthStatus::Healthy,
        issues: Vec::new(),
        recommendations: Vec::new(),
        storage: inputs.storage.cloned(),
    };
    for rule in RULES.iter().filter(|r| (r.applies)(inputs)) {
        health.status = worse(health.status, rule.severity);
        health.issues.push((rule.issue)(inputs));
        health
            .recommendations
            .extend(rule.recommendation.map(str::to_owned));
    }
    health
}

fn worse(a: HealthStatus, b: HealthStatus) -> HealthStatus {
    let rank = |s| match s {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Critical => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}
