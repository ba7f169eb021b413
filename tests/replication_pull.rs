#![cfg(not(target_arch = "wasm32"))]
//! Replication: pulling: pages in order with their cursor, resuming an
//! interrupted pull, tombstones, unsent changes, new entity types.
//!
//! A device's outbox and replicator over the in-memory record store against
//! the fake push/pull server of `support`; one situation per test. The rules
//! are listed in docs/replication.md and docs/architecture.md.

mod support;

use support::replication::*;

#[test]
fn pull_applies_pages_in_order_with_their_cursor() {
    let b = bench_with(Config {
        page_size: 2,
        ..Config::default()
    });
    seed_server(&b, 5);

    let report = b.pull();

    assert_eq!(
        report,
        PullReport {
            pulled: 5,
            pages: 3,
            conflicts: 0
        }
    );
    let cursors: Vec<Option<String>> = b.pulls().into_iter().map(|p| p.cursor).collect();
    assert_eq!(cursors, [None, Some("2".into()), Some("4".into())]);
    assert_eq!(b.cursor().as_deref(), Some("5"));
    assert_eq!(b.query("task"), ["t1", "t2", "t3", "t4", "t5"]);
    assert_eq!(b.events.count("pull:complete"), 1);
}

#[test]
fn an_interrupted_pull_keeps_the_last_applied_page_s_cursor_and_resumes_from_it() {
    let b = bench_with(Config {
        page_size: 2,
        ..Config::default()
    });
    seed_server(&b, 5);
    b.server.borrow_mut().fail_pull_calls.insert(2);

    let interrupted = block_on(b.replicator.pull(|_| {}));

    assert!(matches!(interrupted, Err(ReplicationError::Network(_))));
    assert_eq!(b.cursor().as_deref(), Some("2"), "page 1's cursor");
    assert_eq!(b.query("task"), ["t1", "t2"]);

    let resumed = b.pull();

    assert_eq!(b.pulls()[2].cursor.as_deref(), Some("2"), "resumes there");
    assert_eq!(resumed.pulled, 3);
    assert_eq!(b.query("task"), ["t1", "t2", "t3", "t4", "t5"], "each once");
    assert_eq!(b.cursor().as_deref(), Some("5"));
}

#[test]
fn a_pulled_tombstone_removes_the_record_from_query() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 2);
    b.pull();
    b.server.borrow_mut().delete("task", "t1", T0 + 1_000.0);

    b.pull();

    assert_eq!(b.query("task"), ["t2"]);
    assert_eq!(block_on(b.replicator.get("task", "t1")).unwrap(), None);
    let tombstone = b.record("task", "t1");
    assert!(tombstone.is_deleted);
    assert_eq!(tombstone.version, 2);
}

#[test]
fn a_pull_never_overwrites_an_unsent_change_with_the_server_version_it_is_based_on() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 1);
    b.pull();
    b.put("task", "t1", json!({"n": 100}));
    // Pull everything again (as after a change of entityTypes): the server
    // sends version 1, which the local change is based on.
    block_on(b.records.put_meta_text(PULL_CURSOR_KEY, "")).unwrap();

    let report = b.pull();

    assert_eq!(report.conflicts, 0);
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"n": 100}));
    assert_eq!((t1.version, t1.sync_status), (1, RecordStatus::Pending));
    assert_eq!(b.queued().len(), 1, "its mutation is still queued");
}

#[test]
fn a_new_entity_type_list_pulls_from_the_beginning() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 2);
    b.pull();
    assert_eq!(b.cursor().as_deref(), Some("2"));

    let reopened = block_on(Replicator::<MemoryReplica>::open(
        b.replicator_ports(),
        ReplicationOptions {
            entity_types: vec!["task".into(), "note".into(), "tag".into()],
            ..b.replicator.options().clone()
        },
    ))
    .unwrap();
    block_on(reopened.pull(|_| {})).unwrap();

    assert_eq!(b.pulls().last().unwrap().cursor, None);
    assert_eq!(b.query("task"), ["t1", "t2"]);
}
