#![cfg(not(target_arch = "wasm32"))]
//! Outbox: registration: group commit of the registrations of one tick, and
//! what re-registering a queued, in-flight or waiting id does.
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;

#[test]
fn a_thousand_registrations_in_one_tick_share_a_handful_of_transactions() {
    let b = bench();

    let results = block_on(join_all(
        (0..1000).map(|i| b.outbox.register(post(&format!("t{i}")))),
    ));

    assert!(results.iter().all(Result::is_ok));
    assert_eq!(b.store.task_count(), 1000);
    assert!(
        b.store.transactions.get() <= 3,
        "{} transactions for 1000 registrations",
        b.store.transactions.get()
    );
    assert_eq!(b.outbox.metrics().registered, 1000);
    assert_eq!(
        b.outbox.metrics().register_transactions,
        b.store.transactions.get()
    );
    let seqs: Vec<u64> = results.into_iter().map(|r| r.unwrap().seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq follows call order"
    );
}

#[test]
fn registrations_in_one_tick_all_fail_together_when_the_store_refuses_the_write() {
    let b = bench();
    *b.store.fail_writes.borrow_mut() = Some(StoreError::Quota("full".into()));

    let results = block_on(join_all(
        (0..5).map(|i| b.outbox.register(post(&format!("t{i}")))),
    ));

    assert!(results
        .iter()
        .all(|r| matches!(r, Err(StoreError::Quota(_)))));
    assert_eq!(b.outbox.status().pending_count, 0);
}

#[test]
fn re_registering_a_queued_id_replaces_its_payload_and_keeps_its_place() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        None,
    );
    let first = b.register(post("profile").version(1));
    b.register(post("later"));

    let second = b.register(post("profile").version(2));
    b.flush();

    assert_eq!(second.seq, first.seq);
    assert!(
        second.revision > first.revision,
        "a re-registration is a new revision"
    );
    assert_eq!(
        b.sent_ids(),
        ["profile", "later"],
        "sent once, in its old place"
    );
    assert_eq!(version_of(&b.transport.sent.borrow()[0].0), 2);
}

#[test]
fn re_registering_while_in_flight_sends_the_new_payload_after_the_old_one() {
    let b = bench();
    let v1 = b.register(post("profile").version(1));
    let store = b.store.clone();
    let stored_revision_when_v1_answered = Rc::new(Cell::new(None));
    let seen = stored_revision_when_v1_answered.clone();
    b.respond(move |request, _| {
        if version_of(request) == 1 {
            seen.set(store.task("profile").map(|t| t.revision));
        }
        answer(200)
    });

    // The re-registration is issued first so that its commit lands while
    // the flush's request is in flight.
    let (registered, flushed) = block_on(futures::future::join(
        b.outbox.register(post("profile").version(2)),
        b.outbox.flush(),
    ));
    registered.unwrap();
    flushed.unwrap();
    b.drive(5);

    assert!(
        stored_revision_when_v1_answered
            .get()
            .is_some_and(|r| r > v1.revision),
        "v2 was stored while v1 was in flight"
    );
    let versions: Vec<u64> = b
        .transport
        .sent
        .borrow()
        .iter()
        .map(|(r, _)| version_of(r))
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(b.store.task_count(), 0);
    assert_eq!(b.events_named("sync:complete").len(), 2);
}

#[test]
fn re_registering_a_task_waiting_for_a_retry_makes_the_new_payload_due_with_a_fresh_budget() {
    let b = bench_with(slow_retry_options(), None);
    b.register(post("t").version(1));
    b.respond_in_turn(&[503]);
    b.flush();

    let again = b.register(post("t").version(2));
    b.flush();

    assert_eq!(again.attempts, 0);
    assert!(again.errors.is_empty());
    assert_eq!(
        b.sent_count(),
        2,
        "sent at once, without waiting for v1's backoff"
    );
    assert_eq!(version_of(&b.transport.sent.borrow()[1].0), 2);
    assert_eq!(b.store.task_count(), 0);
}
