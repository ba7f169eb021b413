#![cfg(not(target_arch = "wasm32"))]
//! Outbox: one flush at a time (in this tab and across tabs), periodic
//! flushes, and closing.
//!
//! The outbox engine over in-memory ports (`support::outbox`); one situation
//! per test. The rules are listed in docs/outbox.md and docs/architecture.md.

mod support;

use support::outbox::*;

#[test]
fn a_flush_requested_during_a_flush_waits_for_it_instead_of_overlapping() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        None,
    );
    b.transport.latency.set(100.0);
    b.register_posts(0..3);

    let (first, second) = block_on(futures::future::join(b.outbox.flush(), async {
        YieldOnce::new().await;
        let report = b.outbox.flush().await;
        (report, b.store.task_count())
    }));

    first.unwrap();
    assert_eq!(
        second.1, 0,
        "the second flush returned after the first ended"
    );
    assert_eq!(b.transport.max_in_flight.get(), 1);
    assert_eq!(b.sent_count(), 3);
}

#[test]
fn a_flush_waits_for_the_lock_held_by_another_tab() {
    let b = bench();
    b.register(post("t"));
    b.lock.held.set(true);

    let sent_while_locked = block_on(futures::future::join(b.outbox.flush(), async {
        for _ in 0..10 {
            YieldOnce::new().await;
        }
        let sent = b.sent_count();
        b.lock.held.set(false);
        sent
    }))
    .1;

    assert_eq!(sent_while_locked, 0);
    assert_eq!(b.sent_count(), 1);
}

#[test]
fn periodic_flushes_never_overlap_even_when_a_flush_outlasts_the_interval() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        None,
    );
    b.transport.latency.set(5000.0);
    let lock = b.lock.clone();
    let unlocked_requests = Rc::new(Cell::new(0));
    let unlocked = unlocked_requests.clone();
    b.respond(move |_, _| {
        if !lock.held.get() {
            unlocked.set(unlocked.get() + 1);
        }
        answer(200)
    });

    block_on(futures::future::join(
        b.outbox.run_periodic(1000.0),
        async {
            for i in 0..4 {
                b.outbox.register(post(&format!("t{i}"))).await.unwrap();
                b.outbox.register(post(&format!("u{i}"))).await.unwrap();
                while b.outbox.metrics().completed < 2 * (i + 1) {
                    YieldOnce::new().await;
                }
            }
            b.outbox.stop_periodic();
        },
    ));

    assert_eq!(b.sent_count(), 8);
    assert_eq!(b.transport.max_in_flight.get(), 1);
    assert_eq!(
        unlocked_requests.get(),
        0,
        "every request ran under the lock"
    );
    assert_eq!(b.lock.acquisitions.get(), b.outbox.metrics().flushes);
    assert!(b.clock.sleeps.borrow().iter().all(|ms| *ms == 1000.0));
}

#[test]
fn stop_periodic_ends_the_loop_and_no_flush_follows() {
    let b = bench();

    block_on(futures::future::join(
        b.outbox.run_periodic(1000.0),
        async {
            while b.outbox.metrics().flushes < 3 {
                YieldOnce::new().await;
            }
            b.outbox.stop_periodic();
        },
    ));
    let flushes = b.outbox.metrics().flushes;
    b.register(post("late"));

    assert_eq!(flushes, 3);
    assert_eq!(b.sent_count(), 0);
    assert_eq!(
        b.clock.sleeps.borrow().len(),
        4,
        "three ticks and the last sleep"
    );
}

#[test]
fn close_during_a_flush_waits_for_it_and_leaves_unfinished_tasks_queued() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        None,
    );
    b.register_posts(0..5);

    let (flushed, closed_in_time) = block_on(futures::future::join(b.outbox.flush(), async {
        while b.sent_count() == 0 {
            YieldOnce::new().await;
        }
        b.outbox.close().await
    }));
    flushed.unwrap();

    assert!(closed_in_time);
    let delivered = b.events_named("sync:complete").len();
    assert!((1..5).contains(&delivered));
    assert_eq!(b.sent_count(), delivered, "every request sent was answered");
    assert_eq!(b.store.task_count(), 5 - delivered);
    assert!(block_on(b.outbox.register(post("after"))).is_err());
    b.flush();
    assert_eq!(b.sent_count(), delivered, "nothing is sent after close");
}

#[test]
fn close_gives_up_waiting_after_close_timeout() {
    let b = bench_with(
        OutboxOptions {
            close_timeout: 2500.0,
            ..OutboxOptions::default()
        },
        None,
    );
    b.register(post("t"));
    // Another tab holds the lock, so the flush cannot finish.
    b.lock.held.set(true);

    let closed_in_time = block_on(futures::future::join(b.outbox.flush(), async {
        YieldOnce::new().await;
        let closed = b.outbox.close().await;
        b.lock.held.set(false);
        closed
    }))
    .1;

    assert!(!closed_in_time);
    assert_eq!(*b.clock.sleeps.borrow(), [2500.0]);
    assert_eq!(b.sent_count(), 0);
    assert_eq!(b.store.task_count(), 1, "the task stays in the outbox");
}

#[test]
fn close_stops_the_periodic_loop() {
    let b = bench();

    block_on(futures::future::join(
        b.outbox.run_periodic(1000.0),
        async {
            while b.outbox.metrics().flushes < 2 {
                YieldOnce::new().await;
            }
            assert!(b.outbox.close().await);
        },
    ));

    assert!(b.outbox.is_closed());
    assert_eq!(b.outbox.metrics().flushes, 2);
}
