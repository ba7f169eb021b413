//! Retention (Workbox's `maxRetentionTime`): how long a plain request may
//! wait undelivered. Past it, the task is given up — moved to the dead
//! letters with reason [`REASON`], never silently dropped — instead of being
//! sent again. Replicated mutations have no retention: the record they
//! carry is the user's data, and dropping its change would lose it.

use crate::engine::task::{ErrorClass, Task, TaskError, TaskKind};
use crate::engine::time::{to_iso, Millis};

/// Seven days, as Workbox.
pub const DEFAULT_MAX_RETENTION: Millis = 7.0 * 86_400_000.0;

/// The dead letter's `reason` (and its error's `class`).
pub const REASON: &str = "expired";

/// When a task registered at `now` expires: `own` (the task's
/// `maxRetentionTime`) or the client's `default`. `None` for mutations.
pub fn expires_at(
    kind: TaskKind,
    now: Millis,
    own: Option<Millis>,
    default: Millis,
) -> Option<Millis> {
    (kind == TaskKind::Request).then(|| now + own.unwrap_or(default))
}

pub fn is_expired(task: &Task, now: Millis) -> bool {
    task.expires_at.is_some_and(|at| at <= now)
}

/// The error an expired task is dead-lettered with.
pub fn expired_error(task: &Task, now: Millis) -> TaskError {
    let at = task.expires_at.unwrap_or(now);
    TaskError {
        class: ErrorClass::Expired,
        message: format!(
            "not delivered within its retention time ({}): queued at {}, expired at {}, after {} attempt(s)",
            span(at - task.created_at),
            to_iso(task.created_at),
            to_iso(at),
            task.attempts
        ),
        status: None,
        at: now,
    }
}

/// A dead letter put back in the queue (`retryFailed`) gets a fresh
/// retention window of the client's default, as it gets a fresh retry
/// budget; otherwise an expired task would expire again at once.
pub fn renewed(task: &Task, now: Millis, default: Millis) -> Option<Millis> {
    task.expires_at.map(|_| now + default)
}

/// A duration the way a person reads it: `250 ms`, `90 s`, `3 h`, `7 d`.
fn span(ms: Millis) -> String {
    let ms = ms.max(0.0);
    let (value, unit) = if ms < 10_000.0 {
        (ms, "ms")
    } else if ms < 7_200_000.0 {
        (ms / 1000.0, "s")
    } else if ms < 172_800_000.0 {
        (ms / 3_600_000.0, "h")
    } else {
        (ms / 86_400_000.0, "d")
    };
    format!("{} {unit}", value.round())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::task::{HttpRequest, Priority};

    fn task(created_at: Millis, expires_at: Option<Millis>) -> Task {
        Task {
            id: "t".into(),
            kind: TaskKind::Request,
            priority: Priority::Normal,
            seq: 1,
            ordering_key: None,
            request: HttpRequest {
                url: "/x".into(),
                method: "POST".into(),
                headers: Default::default(),
                body: None,
            },
            revision: 1,
            idempotency_key: "k".into(),
            retry_on_failure: true,
            attempts: 3,
            next_attempt_at: None,
            created_at,
            errors: Vec::new(),
            dispatched: false,
            expires_at,
            depends_on: None,
        }
    }

    #[test]
    fn requests_expire_after_their_own_or_the_default_retention() {
        assert_eq!(
            expires_at(TaskKind::Request, 1000.0, None, 500.0),
            Some(1500.0)
        );
        assert_eq!(
            expires_at(TaskKind::Request, 1000.0, Some(20.0), 500.0),
            Some(1020.0)
        );
        assert_eq!(
            expires_at(TaskKind::Mutation, 1000.0, Some(20.0), 500.0),
            None
        );
    }

    #[test]
    fn expiry_is_inclusive_and_absent_expiry_never_expires() {
        assert!(!is_expired(&task(0.0, Some(100.0)), 99.0));
        assert!(is_expired(&task(0.0, Some(100.0)), 100.0));
        assert!(!is_expired(&task(0.0, None), f64::MAX));
    }

    #[test]
    fn the_error_says_when_and_how_long() {
        let day = 86_400_000.0;
        let error = expired_error(&task(0.0, Some(7.0 * day)), 8.0 * day);
        assert_eq!(error.class, ErrorClass::Expired);
        assert_eq!(error.at, 8.0 * day);
        assert!(error.message.contains("(7 d)"), "{}", error.message);
        assert!(
            error.message.contains("1970-01-08T00:00:00.000Z"),
            "{}",
            error.message
        );
        assert!(error.message.contains("3 attempt(s)"), "{}", error.message);
        assert!(expired_error(&task(0.0, Some(300.0)), 400.0)
            .message
            .contains("(300 ms)"));
    }

    #[test]
    fn a_requeued_dead_letter_gets_a_fresh_window() {
        assert_eq!(renewed(&task(0.0, Some(10.0)), 50.0, 100.0), Some(150.0));
        assert_eq!(renewed(&task(0.0, None), 50.0, 100.0), None);
    }
}
