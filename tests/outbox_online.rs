#![cfg(not(target_arch = "wasm32"))]
//! Outbox: online and offline: what coming online does, probes after a
//! network failure, and when the browser's `online` event is believed.
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;

#[test]
fn coming_online_makes_every_waiting_task_due_now_once() {
    let b = bench_with(slow_retry_options(), None);
    b.register_posts(0..3);
    b.respond(|_, _| answer(503));
    b.flush();
    assert_eq!(b.sent_count(), 3);

    b.outbox.set_online(true);
    assert!(b
        .outbox
        .queued_tasks()
        .iter()
        .all(|t| t.next_attempt_at.is_none()));
    b.flush();
    b.flush();

    assert_eq!(
        b.sent_count(),
        6,
        "each waiting task once, then backoff again"
    );
    assert!(b
        .outbox
        .queued_tasks()
        .iter()
        .all(|t| t.next_attempt_at.unwrap() > b.clock.now()));
}

#[test]
fn after_a_network_failure_only_one_probe_is_in_flight_at_a_time() {
    let b = bench_with(quiet_options(), None);
    b.transport.latency.set(10.0);
    b.register_posts(0..8);
    b.respond(|_, _| network_down());
    b.flush();
    assert!(!b.outbox.is_online());
    assert_eq!(b.events_named("offline").len(), 1);

    b.transport.max_in_flight.set(0);
    b.clock.advance(3_600_000.0);
    b.flush();

    assert_eq!(b.transport.max_in_flight.get(), 1);
    assert_eq!(b.sent_count(), 16);
}

#[test]
fn an_http_answer_is_evidence_of_being_online_again() {
    let b = bench_with(quiet_options(), None);
    b.transport.latency.set(10.0);
    b.register_posts(0..8);
    b.respond(|_, _| network_down());
    b.flush();
    b.respond(|_, _| answer(200));
    b.transport.max_in_flight.set(0);

    b.clock.advance(3_600_000.0);
    b.flush();

    assert!(b.outbox.is_online());
    assert_eq!(b.events_named("online").len(), 1);
    assert_eq!(b.store.task_count(), 0);
    assert_eq!(
        b.transport.max_in_flight.get(),
        OutboxOptions::default().concurrency,
        "full concurrency again"
    );
}

#[test]
fn the_online_event_is_believed_only_after_a_probe_gets_an_answer() {
    let b = bench_with(quiet_options(), None);
    b.transport.latency.set(10.0);
    b.outbox.set_online(false);
    b.register_posts(0..8);
    b.outbox.set_online(true);
    assert!(
        !b.outbox.is_online(),
        "navigator.onLine alone is not evidence"
    );
    assert_eq!(b.events_named("online").len(), 0);

    b.flush();

    let sent_at: Vec<f64> = b
        .transport
        .sent
        .borrow()
        .iter()
        .map(|(_, at)| *at)
        .collect();
    assert!(
        sent_at[1..].iter().all(|at| *at > sent_at[0]),
        "one probe first, the rest after its answer: {sent_at:?}"
    );
    assert!(b.outbox.is_online(), "the probe's answer is");
    assert_eq!(b.events_named("online").len(), 1);
    assert_eq!(b.sent_count(), 8, "then every waiting task goes");
    assert_eq!(
        b.transport.max_in_flight.get(),
        OutboxOptions::default().concurrency,
        "at full concurrency after the probe"
    );
}

#[test]
fn the_online_event_is_believed_at_once_when_nothing_waits() {
    let b = bench_with(quiet_options(), None);
    b.outbox.set_online(false);
    b.outbox.set_online(true);
    assert!(b.outbox.is_online());
    assert_eq!(b.events_named("online").len(), 1);
}
