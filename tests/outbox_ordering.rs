#![cfg(not(target_arch = "wasm32"))]
//! Outbox: which task runs next: priority, then registration order; one
//! task at a time per ordering key; up to `concurrency` across keys.
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;

#[test]
fn higher_priority_runs_first_then_registration_order() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        None,
    );
    b.register(post("low-1").priority(Priority::Low));
    b.register(post("normal-2"));
    b.register(post("high-3").priority(Priority::High));
    b.register(post("low-4").priority(Priority::Low));
    b.register(post("high-5").priority(Priority::High));

    b.flush();

    assert_eq!(
        b.sent_ids(),
        ["high-3", "high-5", "normal-2", "low-1", "low-4"]
    );
}

#[test]
fn tasks_sharing_an_ordering_key_run_in_registration_order_whatever_their_priority() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        None,
    );
    b.register(post("doc-edit-1").key("doc").priority(Priority::Low));
    b.register(post("doc-edit-2").key("doc").priority(Priority::High));
    b.register(post("other").priority(Priority::Normal));

    b.flush();

    assert_eq!(b.sent_ids(), ["other", "doc-edit-1", "doc-edit-2"]);
}

#[test]
fn two_tasks_of_one_key_are_never_in_flight_together() {
    let b = bench();
    b.transport.latency.set(50.0);
    for i in 0..6 {
        b.register(post(&format!("a{i}")).key("a"));
        b.register(post(&format!("b{i}")).key("b"));
    }
    let overlap = b.respond_watching_keys(|_, _| answer(200));

    b.flush();

    assert_eq!(b.sent_count(), 12);
    assert_eq!(overlap.get(), 1, "one request per key at a time");
    assert_eq!(
        b.transport.max_in_flight.get(),
        2,
        "the two keys run side by side"
    );
    let a_order: Vec<String> = b
        .sent_ids()
        .into_iter()
        .filter(|id| id.starts_with('a'))
        .collect();
    assert_eq!(a_order, ["a0", "a1", "a2", "a3", "a4", "a5"]);
}

#[test]
fn up_to_concurrency_requests_are_in_flight_across_keys() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 3,
            ..OutboxOptions::default()
        },
        None,
    );
    b.transport.latency.set(100.0);
    b.register_posts(0..10);

    let report = b.flush();

    assert_eq!(report.completed, 10);
    assert_eq!(b.transport.max_in_flight.get(), 3);
}

#[test]
fn a_task_waiting_for_its_retry_holds_back_its_key_and_no_other() {
    let b = bench_with(quiet_options(), None);
    b.register(post("a1").key("a"));
    b.register(post("a2").key("a"));
    b.register(post("b1").key("b"));
    let mut first = true;
    b.respond(move |request, _| {
        if id_of(request) == "a1" && std::mem::take(&mut first) {
            answer(503)
        } else {
            answer(200)
        }
    });

    let report = b.flush();

    assert_eq!(
        b.sent_ids(),
        ["a1", "b1"],
        "a2 waits behind a1, b1 does not"
    );
    assert_eq!(report.remaining, 2);
    assert_eq!(report.next_wakeup_at, Some(T0 + 1000.0));

    b.clock.set(T0 + 1000.0);
    b.flush();

    assert_eq!(b.sent_ids(), ["a1", "b1", "a1", "a2"]);
    assert_eq!(b.store.task_count(), 0);
}
