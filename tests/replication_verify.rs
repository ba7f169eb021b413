#![cfg(not(target_arch = "wasm32"))]
//! Replication: verify compares checksums with the server and repairs
//! what differs, leaving unsettled conflicts to the app.
//!
//! A device's outbox and replicator over the in-memory record store against
//! the fake push/pull server of `support`; one situation per test. The rules
//! are listed in docs/replication.md and docs/architecture.md.

mod support;

use support::replication::*;

#[test]
fn verify_with_matching_checksums_repairs_nothing() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 3);
    b.pull();
    let pulls = b.pulls().len();

    let reports = block_on(b.replicator.verify()).unwrap();

    assert_eq!(reports.len(), 2, "one report per entity type");
    let task = &reports[0];
    assert_eq!(task.entity_type, "task");
    assert_eq!((task.local_count, task.server_count), (3, 3));
    assert_eq!(task.local_checksum, task.server_checksum);
    assert_eq!(task.repaired, 0);
    assert_eq!(reports[1].repaired, 0);
    assert_eq!(b.pulls().len(), pulls, "nothing re-read");
}

#[test]
fn verify_repairs_a_record_missing_locally_and_one_with_a_tampered_version() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 3);
    b.server_writes("task", "t2", json!({"n": 22}), T0);
    b.pull();
    b.records.remove("task", "t1");
    let mut tampered = b.record("task", "t2");
    tampered.version = 7;
    b.records.tamper(tampered);

    let reports = block_on(b.replicator.verify()).unwrap();

    assert_eq!(reports[0].local_count, 2);
    assert_eq!(reports[0].server_count, 3);
    assert_eq!(reports[0].repaired, 2);
    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, data(&t1)), (1, json!({"n": 1})));
    let t2 = b.record("task", "t2");
    assert_eq!((t2.version, data(&t2)), (2, json!({"n": 22})));
    let again = block_on(b.replicator.verify()).unwrap();
    assert_eq!(again[0].repaired, 0);
    assert_eq!(again[0].local_checksum, again[0].server_checksum);
}

#[test]
fn verify_deletes_a_synced_local_record_the_server_does_not_have() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 3);
    b.pull();
    b.server.borrow_mut().purge("task", "t3");

    let reports = block_on(b.replicator.verify()).unwrap();

    assert_eq!(reports[0].repaired, 1);
    assert_eq!(b.stored("task", "t3"), None);
    assert_eq!(b.query("task"), ["t1", "t2"]);
}

#[test]
fn verify_leaves_an_unsettled_conflict_to_the_app() {
    let b = bench(Strategy::ServerWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);
    b.pull();
    b.server_writes(
        "task",
        "t1",
        json!({"title": "theirs", "done": true}),
        T0 + 9_000.0,
    );

    block_on(b.replicator.verify()).unwrap();

    let t1 = b.record("task", "t1");
    assert_eq!(t1.sync_status, RecordStatus::Conflict);
    assert_eq!(
        data(&t1),
        json!({"title": "mine", "done": false}),
        "local side kept"
    );
    assert!(t1.conflict_remote.is_some(), "server side kept");
}

#[test]
fn verify_keeps_an_unsettled_conflict_the_server_no_longer_has() {
    let b = bench(Strategy::ServerWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);
    b.pull();
    b.server.borrow_mut().purge("task", "t1");

    block_on(b.replicator.verify()).unwrap();

    let t1 = b
        .stored("task", "t1")
        .expect("still there for the app to settle");
    assert_eq!(t1.sync_status, RecordStatus::Conflict);
}
