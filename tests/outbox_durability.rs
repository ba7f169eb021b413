#![cfg(not(target_arch = "wasm32"))]
//! Outbox: durability: a task leaves the store only when answered, only
//! at the revision sent, and the store is the queue (reopening, other tabs).
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;

#[test]
fn a_store_failure_while_settling_leaves_the_task_queued_and_retryable() {
    let b = bench();
    b.register(post("t"));
    b.register(post("u").key("t"));
    let store = b.store.clone();
    let mut first = true;
    b.respond(move |_, _| {
        if std::mem::take(&mut first) {
            *store.fail_writes.borrow_mut() = Some(StoreError::Unavailable("aborted".into()));
        }
        answer(200)
    });

    assert!(block_on(b.outbox.flush()).is_err());
    *b.store.fail_writes.borrow_mut() = None;
    b.flush();

    assert_eq!(b.store.task_count(), 0, "nothing stuck");
    assert_eq!(b.outbox.status().in_flight_count, 0);
    assert_eq!(b.sent_ids(), ["t", "t", "u"], "t is replayed, then u");
    let keys: Vec<String> = (0..2)
        .map(|i| b.sent_header(i, "Idempotency-Key").unwrap())
        .collect();
    assert_eq!(keys[0], keys[1], "the replay is harmless");
}

#[test]
fn reopening_over_the_same_store_finds_every_unfinished_task() {
    let b = bench();
    b.register_posts(0..3);
    let reopened = block_on(Outbox::<TestPorts>::open(
        OutboxPorts {
            store: b.store.clone(),
            transport: b.transport.clone(),
            clock: b.clock.clone(),
            locks: b.lock.clone(),
            events: b.events.clone(),
            tokens: b.tokens.clone(),
        },
        OutboxOptions::default(),
        None,
    ))
    .unwrap();

    block_on(reopened.flush()).unwrap();

    assert_eq!(b.sent_ids(), ["t0", "t1", "t2"]);
    assert_eq!(b.store.task_count(), 0);
}

#[test]
fn tasks_registered_by_another_tab_are_picked_up_by_the_next_flush() {
    let b = bench();
    let other_tab = bench_with(OutboxOptions::default(), None);
    let shared = block_on(Outbox::<TestPorts>::open(
        OutboxPorts {
            store: b.store.clone(),
            transport: other_tab.transport.clone(),
            clock: other_tab.clock.clone(),
            locks: other_tab.lock.clone(),
            events: other_tab.events.clone(),
            tokens: other_tab.tokens.clone(),
        },
        OutboxOptions::default(),
        None,
    ))
    .unwrap();
    block_on(shared.register(post("from-the-other-tab"))).unwrap();

    b.flush();

    assert_eq!(b.sent_ids(), ["from-the-other-tab"]);
    assert_eq!(b.store.task_count(), 0);
}

#[test]
fn answers_that_arrive_together_leave_the_store_in_one_transaction() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 4,
            ..OutboxOptions::default()
        },
        None,
    );
    b.register_posts(0..8);

    b.flush();

    let metrics = b.outbox.metrics();
    assert_eq!(metrics.completed, 8);
    assert_eq!(b.store.task_count(), 0);
    assert!(
        metrics.ack_transactions < 8,
        "group-committed: {} transactions for 8 answers",
        metrics.ack_transactions
    );
    assert_eq!(b.events_named("sync:complete").len(), 8);
}
