#![cfg(not(target_arch = "wasm32"))]
//! Outbox: what the app can observe: status, task status, metrics,
//! progress and health.
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;
use tidesync::engine::outbox::inspect::{ByPriority, LIST_LIMIT};

#[test]
fn status_and_task_status_follow_a_task_from_pending_to_in_flight_to_complete() {
    let b = bench();
    b.register(post("t"));
    assert_eq!(b.outbox.status().pending_count, 1);
    assert_eq!(b.state_of("t"), Some(TaskState::Pending));

    let during = block_on(futures::future::join(b.outbox.flush(), async {
        while b.sent_count() == 0 {
            YieldOnce::new().await;
        }
        let state = b.outbox.task_status("t").await.unwrap().unwrap().state;
        (b.outbox.status(), state)
    }))
    .1;

    assert_eq!(during.0.in_flight_count, 1);
    assert!(during.0.is_sync_in_progress);
    assert_eq!(during.1, TaskState::InFlight);
    let after = b.outbox.status();
    assert_eq!(after.pending_count, 0);
    assert_eq!(after.in_flight_count, 0);
    assert_eq!(after.total_synced, 1);
    assert_eq!(after.last_sync_ok, Some(true));
    assert!(!after.is_sync_in_progress);
    assert_eq!(b.state_of("t"), Some(TaskState::Complete));
    assert_eq!(b.state_of("unknown"), None);
}

#[test]
fn task_status_of_a_retrying_task_shows_attempts_and_the_next_attempt() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t"));
    b.respond(|_, _| answer(503));

    b.flush();

    let status = block_on(b.outbox.task_status("t")).unwrap().unwrap();
    assert_eq!(status.state, TaskState::Pending);
    assert_eq!(status.attempts, 1);
    assert_eq!(status.next_attempt_at, Some(T0 + 1000.0));
    assert_eq!(status.last_error.unwrap().status, Some(503));
    assert_eq!(b.outbox.status().last_sync_ok, Some(false));
}

#[test]
fn a_dead_letter_shows_as_failed_and_degrades_health() {
    let b = bench();
    assert_eq!(b.outbox.health().status, HealthStatus::Healthy);
    b.register(post("bad"));
    b.respond(|_, _| answer(422));

    b.flush();

    assert_eq!(b.state_of("bad"), Some(TaskState::Failed));
    assert_eq!(b.outbox.status().failed_count, 1);
    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(health.issues.iter().any(|i| i.contains("dead letters")));
    assert!(!health.recommendations.is_empty());
}

#[test]
fn metrics_count_registrations_requests_outcomes_and_flushes() {
    let b = bench_with(quiet_options(), None);
    b.transport.latency.set(20.0);
    b.register(post("ok"));
    b.register(post("bad"));
    b.register(post("flaky"));
    b.respond(|request, _| match id_of(request).as_str() {
        "bad" => answer(422),
        "flaky" => network_down(),
        _ => answer(200),
    });

    b.flush();

    let m = b.outbox.metrics();
    assert_eq!(m.registered, 3);
    assert_eq!(m.flushes, 1);
    assert_eq!(m.requests_sent, 3);
    assert_eq!(m.completed, 1);
    assert_eq!(m.failed, 1);
    assert_eq!(m.retried, 1);
    assert_eq!(m.network_errors, 1);
    assert!(m.average_request_ms > 0.0);
}

#[test]
fn an_open_circuit_makes_health_critical() {
    let b = bench_with(breaker_options(), None);
    b.register_posts(0..3);
    b.respond(|_, _| answer(503));

    b.flush();

    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Critical);
    assert!(health.issues.iter().any(|i| i.contains("circuit")));
}

#[test]
fn a_flush_reports_progress_for_every_settled_task() {
    let b = bench();
    b.register_posts(0..3);

    b.flush();

    let progress: Vec<(usize, usize)> = b
        .events_named("sync:progress")
        .into_iter()
        .map(|e| match e {
            Event::Progress { done, total, .. } => (done, total),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(progress, [(1, 3), (2, 3), (3, 3)]);
    assert!(
        b.events_named("status").len() >= 2,
        "status before and after"
    );
}

#[test]
fn a_task_waiting_for_more_than_an_hour_degrades_health() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t"));
    b.respond(|_, _| network_down());
    b.flush();
    b.outbox.set_online(true);

    b.clock.advance(3_600_001.0);

    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(health
        .issues
        .iter()
        .any(|i| i.contains("more than an hour")));
}

#[test]
fn the_inspection_lists_the_queue_by_priority_the_tasks_in_flight_and_the_dead_letters() {
    let b = bench();
    b.register(NewTask {
        priority: Priority::High,
        ..post("urgent")
    });
    b.register(post("plain"));
    b.register(post("bad"));
    b.respond(|request, _| match id_of(request).as_str() {
        "bad" => answer(422),
        _ => answer(200),
    });
    b.outbox.set_online(false);

    let before = b.outbox.inspect(&[]);
    assert_eq!(before.queued_counts.high, 1);
    assert_eq!(before.queued_counts.normal, 2);
    assert_eq!(before.queued.high[0].id, "urgent");
    let normal: Vec<&str> = before.queued.normal.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(normal, ["plain", "bad"]);
    assert!(before.in_flight.is_empty());
    assert_eq!(before.failed_count, 0);

    b.outbox.set_online(true);
    let during = block_on(futures::future::join(b.outbox.flush(), async {
        while b.sent_count() == 0 {
            YieldOnce::new().await;
        }
        b.outbox.inspect(&[])
    }))
    .1;
    assert!(!during.in_flight.is_empty());
    assert_eq!(
        during.in_flight.len() + during.queued_counts.high + during.queued_counts.normal,
        3,
        "a task in flight is listed there, not in the queue"
    );

    let failed = block_on(b.outbox.list_failed()).unwrap();
    let after = b.outbox.inspect(&failed);
    assert_eq!(after.queued_counts, ByPriority::default());
    assert_eq!(after.failed_count, 1);
    assert_eq!(after.failed[0].id, "bad");
    assert_eq!(after.failed[0].errors[0].status, Some(422));
    assert_eq!(after.status, b.outbox.status());
}

#[test]
fn the_inspection_lists_at_most_the_limit_per_priority_and_counts_them_all() {
    let b = bench();
    b.outbox.set_online(false);
    b.register_posts(0..LIST_LIMIT + 5);

    let inspection = b.outbox.inspect(&[]);

    assert_eq!(inspection.queued.normal.len(), LIST_LIMIT);
    assert_eq!(inspection.queued_counts.normal, LIST_LIMIT + 5);
}
