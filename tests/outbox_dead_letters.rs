#![cfg(not(target_arch = "wasm32"))]
//! Outbox: dead letters: what goes there (validation errors, conflicts, an
//! exhausted budget, no retry wanted) and what the app can do with them.
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;

#[test]
fn validation_errors_go_to_the_dead_letters_and_are_never_retried() {
    for status in [400, 404, 422] {
        let b = bench();
        b.register(post("bad"));
        b.respond(move |_, _| answer(status));

        b.flush();
        b.clock.advance(3_600_000.0);
        b.flush();

        assert_eq!(b.sent_count(), 1, "{status}");
        assert_eq!(b.store.task_count(), 0, "{status}");
        let failed = block_on(b.outbox.list_failed()).unwrap();
        assert_eq!(failed.len(), 1, "{status}");
        assert_eq!(failed[0].task.errors.len(), 1);
        assert_eq!(failed[0].task.errors[0].class, ErrorClass::Validation);
        assert_eq!(failed[0].task.errors[0].status, Some(status));
        assert_eq!(b.events_named("sync:failed").len(), 1, "{status}");
        assert!(b.events_named("sync:retry").is_empty(), "{status}");
    }
}

#[test]
fn a_conflict_goes_to_the_dead_letters_as_a_conflict() {
    let b = bench();
    b.register(post("stale"));
    b.respond(|_, _| answer(409));

    b.flush();

    let failed = block_on(b.outbox.list_failed()).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].task.errors[0].class, ErrorClass::Conflict);
    assert!(matches!(
        &b.events_named("sync:failed")[0],
        Event::Failed { error, .. } if error.status == Some(409)
    ));
}

#[test]
fn exceeding_max_retries_dead_letters_the_task_with_every_error_seen() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 3,
                ..quiet_options().retry
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("doomed"));
    b.respond_in_turn(&[500, 503, 502, 504]);

    b.drive(20);

    assert_eq!(b.sent_count(), 4, "the first attempt and three retries");
    let failed = block_on(b.outbox.list_failed()).unwrap();
    assert_eq!(failed.len(), 1);
    let statuses: Vec<Option<u16>> = failed[0].task.errors.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [Some(500), Some(503), Some(502), Some(504)]);
    assert_eq!(b.events_named("sync:failed").len(), 1);
    assert_eq!(b.events_named("sync:retry").len(), 3);
    assert_eq!(b.store.task_count(), 0);
}

#[test]
fn without_retry_on_failure_the_first_retryable_failure_is_a_dead_letter() {
    let b = bench();
    b.register(post("once").without_retry());
    b.respond(|_, _| answer(503));

    b.flush();

    assert_eq!(b.sent_count(), 1);
    assert_eq!(b.failed_ids(), ["once"]);
    assert!(b.events_named("sync:retry").is_empty());
}

#[test]
fn a_dead_letter_retried_by_the_app_runs_again_with_a_fresh_budget() {
    let b = bench();
    b.register(post("t"));
    b.respond_in_turn(&[422]);
    b.flush();

    assert!(block_on(b.outbox.retry_failed("t")).unwrap());
    b.flush();

    assert_eq!(b.sent_count(), 2);
    assert!(b.failed_ids().is_empty());
    assert_eq!(b.outbox.status().failed_count, 0);
    assert_eq!(b.state_of("t"), Some(TaskState::Complete));
}

#[test]
fn a_discarded_dead_letter_is_gone_for_good() {
    let b = bench();
    b.register(post("t"));
    b.respond(|_, _| answer(400));
    b.flush();

    assert!(block_on(b.outbox.discard_failed("t")).unwrap());

    assert!(b.failed_ids().is_empty());
    assert_eq!(b.outbox.status().failed_count, 0);
    assert_eq!(b.state_of("t"), None);
    assert!(!block_on(b.outbox.retry_failed("t")).unwrap());
}
