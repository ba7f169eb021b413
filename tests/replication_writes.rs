#![cfg(not(target_arch = "wasm32"))]
//! Replication: local writes (put, delete, unknown types, fresh ids) and
//! what a new write or the app's retry does to a record's dead letters.
//!
//! A device's outbox and replicator over the in-memory record store against
//! the fake push/pull server of `support`; one situation per test. The rules
//! are listed in docs/replication.md and docs/architecture.md.

mod support;

use support::replication::*;

#[test]
fn an_unknown_entity_type_is_an_error_that_names_it() {
    let b = bench(Strategy::ServerWins);
    let r = &b.replicator;

    let errors = [
        block_on(r.put("ghost", None, Map::new())).map(|_| ()),
        block_on(r.delete("ghost", "x")).map(|_| ()),
        block_on(r.get("ghost", "x")).map(|_| ()),
        block_on(r.query("ghost")).map(|_| ()),
    ];

    for error in errors {
        let error = error.unwrap_err();
        assert_eq!(error, ReplicationError::UnknownEntityType("ghost".into()));
        assert!(error.to_string().contains("\"ghost\""), "{error}");
    }
    assert!(b.queued().is_empty());
}

#[test]
fn deleting_a_missing_record_returns_none_and_queues_nothing() {
    let b = bench(Strategy::ServerWins);

    assert_eq!(block_on(b.replicator.delete("task", "nope")).unwrap(), None);
    assert!(b.queued().is_empty());
}

#[test]
fn a_put_without_id_gets_a_fresh_id_and_a_pending_status() {
    let b = bench(Strategy::ServerWins);

    let (record, task) = block_on(
        b.replicator
            .put("note", None, object(json!({"text": "hi"}))),
    )
    .unwrap();

    assert!(!record.id.is_empty());
    assert_eq!(record.sync_status, RecordStatus::Pending);
    assert_eq!(record.version, 0);
    assert_eq!(task.kind, TaskKind::Mutation);
    assert_eq!(task.id, mutation_task_id("note", &record.id));
    assert_eq!(b.query("note"), [record.id]);
}

#[test]
fn a_local_delete_hides_the_record_and_pushes_a_delete() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "x"}));
    b.flush();

    b.delete("task", "t1");

    assert!(b.query("task").is_empty());
    assert_eq!(block_on(b.replicator.get("task", "t1")).unwrap(), None);
    b.flush();
    let last = b.pushes().pop().unwrap();
    assert_eq!(last.mutations[0].op, protocol::Op::Delete);
    assert_eq!(last.mutations[0].base_version, Some(1));
    let server = b.server.borrow().get("task", "t1");
    assert!(server.is_deleted);
    let t1 = b.record("task", "t1");
    assert!(t1.is_deleted);
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
}

#[test]
fn a_new_write_supersedes_the_record_s_failed_mutation() {
    let b = bench(Strategy::ServerWins);
    b.server
        .borrow_mut()
        .reject
        .insert("t1".into(), "title too long".into());
    b.put("task", "t1", json!({"title": "x".repeat(300)}));
    b.flush();
    assert_eq!(b.failed().len(), 1);
    assert_eq!(b.outbox.status().failed_count, 1);
    b.server.borrow_mut().reject.clear();

    b.put("task", "t1", json!({"title": "short"}));
    assert!(
        b.failed().is_empty(),
        "the old data can no longer be retried over the new"
    );
    b.flush();

    assert_eq!(b.outbox.status().failed_count, 0);
    let t1 = b.record("task", "t1");
    assert_eq!(
        (t1.sync_status, t1.data["title"].clone()),
        (RecordStatus::Synced, json!("short"))
    );
    assert_eq!(b.server.borrow().get("task", "t1").version, 1);
}

#[test]
fn a_rejected_mutation_retried_by_the_app_and_accepted_syncs_its_record() {
    let b = bench(Strategy::ServerWins);
    b.server
        .borrow_mut()
        .reject
        .insert("t1".into(), "quota exceeded".into());
    b.put("task", "t1", json!({"title": "x"}));
    b.flush();
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Rejected);
    b.server.borrow_mut().reject.clear();

    assert!(block_on(b.outbox.retry_failed(&mutation_task_id("task", "t1"))).unwrap());
    b.flush();

    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, t1.sync_status), (1, RecordStatus::Synced));
    assert_eq!(t1.sync_error, None);
    assert!(b.failed().is_empty());
}

#[test]
fn an_old_dead_letter_retried_after_a_newer_edit_leaves_the_record_equal_to_the_server() {
    let b = bench(Strategy::ServerWins);
    b.server
        .borrow_mut()
        .reject
        .insert("t1".into(), "title is reserved".into());
    b.put("task", "t1", json!({"title": "bad"}));
    b.flush();
    b.server.borrow_mut().reject.clear();
    b.put("task", "t1", json!({"title": "good"}));
    b.flush();

    block_on(b.outbox.retry_failed(&mutation_task_id("task", "t1"))).unwrap();
    b.flush();

    let server = b.server.borrow().get("task", "t1");
    let t1 = b.record("task", "t1");
    assert_eq!(
        (t1.version, data(&t1)),
        (server.version, Value::Object(server.data)),
        "never a local copy the server does not hold under the same version"
    );
    assert_eq!(t1.sync_status, RecordStatus::Synced);
}
