#![cfg(not(target_arch = "wasm32"))]
//! Outbox: the circuit breaker: opening, half-open probes, cooldowns.
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;

#[test]
fn the_breaker_opens_after_the_threshold_and_lets_nothing_through_while_open() {
    let b = bench_with(breaker_options(), None);
    b.register_posts(0..3);
    b.respond(|_, _| answer(503));

    let report = b.flush();

    assert!(matches!(
        b.events_named("circuit:open").as_slice(),
        [Event::CircuitOpen { until, cooldown: 1000.0 }] if *until == T0 + 1000.0
    ));
    assert_eq!(b.outbox.status().circuit, "open");
    assert_eq!(report.next_wakeup_at, Some(T0 + 1000.0));

    b.clock.set(T0 + 999.0);
    b.flush();

    assert_eq!(
        b.sent_count(),
        3,
        "nothing is sent while the circuit is open"
    );
}

#[test]
fn a_flush_behind_an_open_circuit_does_not_read_the_queue_back_from_storage() {
    let b = bench_with(breaker_options(), None);
    b.register_posts(0..3);
    b.respond(|_, _| answer(503));
    b.flush();
    assert_eq!(b.outbox.status().circuit, "open");
    let loads = b.store.loads.get();

    b.register(post("while-open"));
    let report = b.flush();

    assert_eq!(
        b.store.loads.get(),
        loads,
        "no O(queue) read when nothing can be sent"
    );
    assert_eq!(
        report.next_wakeup_at,
        Some(T0 + 1000.0),
        "woken for the probe"
    );
    assert_eq!(b.outbox.status().pending_count, 4);
}

#[test]
fn a_half_open_breaker_sends_one_probe_and_a_failed_probe_doubles_the_cooldown() {
    let b = bench_with(breaker_options(), None);
    b.register_posts(0..3);
    b.respond(|_, _| answer(503));
    b.flush();

    b.clock.set(T0 + 1000.0);
    b.flush();

    assert_eq!(b.sent_count(), 4, "exactly one probe");
    let cooldowns = b.cooldowns();
    assert_eq!(cooldowns, [1000.0, 2000.0]);

    b.clock.set(T0 + 3000.0);
    b.flush();
    b.clock.set(T0 + 7000.0);
    b.flush();
    b.clock.set(T0 + 11_000.0);
    b.flush();
    let cooldowns = b.cooldowns();
    assert_eq!(
        cooldowns,
        [1000.0, 2000.0, 4000.0, 4000.0, 4000.0],
        "capped"
    );
}

#[test]
fn a_successful_probe_closes_the_breaker_and_the_rest_follows() {
    let b = bench_with(breaker_options(), None);
    b.transport.latency.set(10.0);
    b.register_posts(0..3);
    b.respond(|_, _| answer(503));
    let opened = b.flush();
    b.transport.max_in_flight.set(0);
    b.respond(|_, _| answer(200));

    b.clock.set(opened.next_wakeup_at.unwrap());
    b.flush();

    let sent = b.transport.sent.borrow();
    let probe_at = sent[3].1;
    assert!(
        sent[4..].iter().all(|(_, at)| *at >= probe_at + 10.0),
        "the others wait for the probe's answer"
    );
    drop(sent);
    assert_eq!(b.events_named("circuit:close").len(), 1);
    assert_eq!(b.outbox.status().circuit, "closed");
    assert_eq!(b.store.task_count(), 0);
}

#[test]
fn a_closed_breaker_starts_again_from_the_first_cooldown() {
    let b = bench_with(breaker_options(), None);
    b.register_posts(0..3);
    b.respond(|_, _| answer(503));
    b.flush();
    b.clock.set(T0 + 1000.0);
    b.flush(); // the probe fails: cooldown 2000
    b.respond(|_, _| answer(200));
    b.clock.set(T0 + 3000.0);
    b.flush(); // the probe succeeds: closed
    b.register_posts(3..6);
    b.respond(|_, _| answer(503));

    b.flush();

    let cooldowns = b.cooldowns();
    assert_eq!(cooldowns, [1000.0, 2000.0, 1000.0]);
    assert_eq!(b.events_named("circuit:close").len(), 1);
}
