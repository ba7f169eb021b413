#![cfg(not(target_arch = "wasm32"))]
//! Outbox: retries: which failures are retried, the retry budget, backoff
//! with and without jitter, `Retry-After`, and the idempotency key.
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;

#[test]
fn network_failures_retry_forever_with_capped_backoff_and_never_exhaust_the_budget() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 2,
                base_delay: 1000.0,
                max_delay: 4000.0,
                backoff_multiplier: 2.0,
                jitter: false,
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("t"));
    let mut failures = 10;
    b.respond(move |_, _| {
        if failures > 0 {
            failures -= 1;
            network_down()
        } else {
            answer(200)
        }
    });

    b.drive(50);

    assert!(b.failed_ids().is_empty());
    assert_eq!(b.sent_count(), 11);
    assert_eq!(b.events_named("sync:complete").len(), 1);
    let delays: Vec<Millis> = b
        .events_named("sync:retry")
        .into_iter()
        .map(|e| match e {
            Event::Retry { delay, .. } => delay,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        delays,
        [1000.0, 2000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0]
    );
}

#[test]
fn a_timeout_is_retried_and_counts_against_the_budget() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 1,
                ..quiet_options().retry
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("slow"));
    b.respond(|_, _| Err(TransportError::Timeout(30_000)));

    b.drive(10);

    assert_eq!(b.sent_count(), 2);
    let failed = block_on(b.outbox.list_failed()).unwrap();
    let classes: Vec<ErrorClass> = failed[0].task.errors.iter().map(|e| e.class).collect();
    assert_eq!(classes, [ErrorClass::Timeout, ErrorClass::Timeout]);
}

#[test]
fn statuses_408_429_and_5xx_are_retried_then_delivered() {
    for status in [408, 429, 500, 502, 503, 504] {
        let b = bench_with(quiet_options(), None);
        b.register(post("t"));
        b.respond_in_turn(&[status]);

        b.drive(10);

        let retries = b.events_named("sync:retry");
        assert_eq!(retries.len(), 1, "{status}");
        assert!(
            matches!(&retries[0], Event::Retry { error, .. }
                if error.class == ErrorClass::Retryable && error.status == Some(status)),
            "{status}"
        );
        assert_eq!(b.events_named("sync:complete").len(), 1, "{status}");
        assert!(b.failed_ids().is_empty(), "{status}");
    }
}

#[test]
fn retry_after_sets_the_next_attempt_exactly() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t"));
    b.respond_once_then_ok(answer_with_retry_after(429, "7"));

    let report = b.flush();

    assert_eq!(
        b.store.task("t").unwrap().next_attempt_at,
        Some(T0 + 7000.0)
    );
    assert_eq!(report.next_wakeup_at, Some(T0 + 7000.0));
    assert!(matches!(
        &b.events_named("sync:retry")[0],
        Event::Retry { delay, .. } if *delay == 7000.0
    ));

    b.clock.set(T0 + 6999.0);
    b.flush();
    assert_eq!(b.sent_count(), 1, "not before Retry-After");

    b.clock.set(T0 + 7000.0);
    b.flush();
    assert_eq!(b.sent_count(), 2);
    assert_eq!(b.store.task_count(), 0);
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t"));
    b.respond_once_then_ok(answer_with_retry_after(
        503,
        "Mon, 24 Nov 2025 16:00:30 GMT",
    ));

    b.flush();

    assert_eq!(b.clock.now(), T0, "T0 is 2025-11-24T16:00:00Z");
    assert_eq!(
        b.store.task("t").unwrap().next_attempt_at,
        Some(T0 + 30_000.0)
    );
}

#[test]
fn the_idempotency_key_is_stable_across_retries_and_new_for_a_new_payload() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t").version(1));
    b.respond_in_turn(&[503, 503]);

    b.drive(10);
    b.register(post("t").version(2));
    b.drive(10);

    let keys: Vec<String> = (0..4)
        .map(|i| b.sent_header(i, "Idempotency-Key").unwrap())
        .collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[1], keys[2]);
    assert_ne!(keys[2], keys[3], "a new payload is a new operation");
}

#[test]
fn backoff_without_jitter_doubles_up_to_max_delay() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 6,
                base_delay: 1000.0,
                max_delay: 8000.0,
                backoff_multiplier: 2.0,
                jitter: false,
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("t"));
    b.respond(|_, _| answer(503));

    b.drive(20);

    let delays: Vec<Millis> = b
        .events_named("sync:retry")
        .into_iter()
        .map(|e| match e {
            Event::Retry { delay, .. } => delay,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(delays, [1000.0, 2000.0, 4000.0, 8000.0, 8000.0, 8000.0]);
}

#[test]
fn jittered_delays_fall_between_zero_and_the_ceiling_of_their_attempt() {
    let options = OutboxOptions {
        retry: RetryOptions {
            max_retries: 6,
            base_delay: 1000.0,
            max_delay: 16_000.0,
            backoff_multiplier: 2.0,
            jitter: true,
        },
        ..quiet_options()
    };
    let b = bench_with(options.clone(), None);
    b.register_posts(0..20);
    b.respond(|_, _| answer(503));

    b.drive(500);

    let mut delays = Vec::new();
    for event in b.events_named("sync:retry") {
        let Event::Retry { task, delay, .. } = event else {
            unreachable!()
        };
        let ceiling = (options.retry.base_delay * 2f64.powi(task.attempts as i32 - 1))
            .min(options.retry.max_delay);
        assert!(
            (0.0..=ceiling).contains(&delay),
            "attempt {}: {delay} outside [0, {ceiling}]",
            task.attempts
        );
        delays.push((delay / ceiling * 10.0) as usize);
    }
    assert_eq!(delays.len(), 20 * 6);
    let distinct_deciles: std::collections::HashSet<usize> = delays.into_iter().collect();
    assert!(
        distinct_deciles.len() >= 8,
        "jitter spreads delays over the range: {distinct_deciles:?}"
    );
}

#[test]
fn network_failures_between_server_errors_do_not_reset_the_retry_budget() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 2,
                ..quiet_options().retry
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("t"));
    let mut sent = 0;
    // 503, then a long offline spell, then 503 forever.
    b.respond(move |_, _| {
        sent += 1;
        match sent {
            1 => answer(503),
            2..=40 => network_down(),
            _ => answer(503),
        }
    });

    b.drive(200);

    let failed = block_on(b.outbox.list_failed()).unwrap();
    assert_eq!(failed.len(), 1);
    let server_errors = failed[0]
        .task
        .errors
        .iter()
        .filter(|e| e.class == ErrorClass::Retryable)
        .count();
    assert_eq!(server_errors, 3, "every budget-counting error is kept");
    assert_eq!(b.sent_count(), 42);
}
