#![cfg(not(target_arch = "wasm32"))]
//! Replication: conflicts, met on a pull or in a push result, settled by
//! each strategy or by the app's `onConflict`, and reported as events.
//!
//! A device's outbox and replicator over the in-memory record store against
//! the fake push/pull server of `support`; one situation per test. The rules
//! are listed in docs/replication.md and docs/architecture.md.

mod support;

use support::replication::*;

#[test]
fn server_wins_on_pull_takes_the_server_copy_and_drops_the_local_mutation() {
    let b = bench(Strategy::ServerWins);
    diverged(&b, LOCAL_FIRST);

    let report = b.pull();

    assert_eq!(report.conflicts, 1);
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
    assert!(b.queued().is_empty(), "the local mutation is dropped");
    assert_eq!(b.flush().sent, 0, "nothing is pushed");
}

#[test]
fn client_wins_on_pull_keeps_the_local_copy_and_queues_a_mutation_on_the_server_version() {
    let b = bench(Strategy::ClientWins);
    diverged(&b, REMOTE_FIRST);

    b.pull();

    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "mine", "done": false}));
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Pending));
    let mutation = queued_mutation(&b).expect("a mutation is queued");
    assert_eq!(mutation.base_version, Some(2));
    assert_eq!(mutation.data, Some(json!({"title": "mine", "done": false})));

    b.flush();

    let server = b.server.borrow().get("task", "t1");
    assert_eq!(server.version, 3, "applied on top of the server's version");
    assert_eq!(
        Value::Object(server.data),
        json!({"title": "mine", "done": false})
    );
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Synced);
}

#[test]
fn last_write_wins_on_pull_keeps_a_newer_local_change_and_sends_it() {
    let b = bench(Strategy::LastWriteWins);
    diverged(&b, REMOTE_FIRST);

    b.pull();
    b.flush();

    let server = b.server.borrow().get("task", "t1");
    assert_eq!(
        Value::Object(server.data),
        json!({"title": "mine", "done": false})
    );
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "mine", "done": false}));
    assert_eq!((t1.version, t1.sync_status), (3, RecordStatus::Synced));
}

#[test]
fn last_write_wins_on_pull_takes_a_newer_server_copy() {
    let b = bench(Strategy::LastWriteWins);
    diverged(&b, LOCAL_FIRST);

    b.pull();

    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
    assert!(b.queued().is_empty());
}

#[test]
fn last_write_wins_on_pull_gives_a_tie_to_the_server() {
    let b = bench(Strategy::LastWriteWins);
    diverged(&b, AT_THE_SAME_TIME);

    b.pull();

    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!(t1.sync_status, RecordStatus::Synced);
    assert!(b.queued().is_empty());
    assert_eq!(b.conflicts()[0].outcome, "server");
}

#[test]
fn merge_on_pull_keeps_the_fields_the_client_changed_and_the_server_s_others() {
    let b = bench(Strategy::Merge);
    diverged(&b, LOCAL_FIRST);

    b.pull();

    let merged = json!({"title": "mine", "done": true});
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), merged);
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Pending));
    assert_eq!(queued_mutation(&b).unwrap().data, Some(merged.clone()));

    b.flush();

    assert_eq!(
        Value::Object(b.server.borrow().get("task", "t1").data),
        merged
    );
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Synced);
}

#[test]
fn server_wins_on_a_conflict_push_result_takes_the_server_copy() {
    let b = bench(Strategy::ServerWins);
    diverged(&b, LOCAL_FIRST);

    b.flush();

    assert_eq!(b.pushes().len(), 1);
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
    assert!(b.queued().is_empty());
    assert!(b.failed().is_empty(), "a conflict is not a dead letter");
}

#[test]
fn client_wins_on_a_conflict_push_result_sends_the_local_copy_again_on_the_server_version() {
    let b = bench(Strategy::ClientWins);
    diverged(&b, LOCAL_FIRST);

    b.flush();

    let pushes = b.pushes();
    assert_eq!(pushes.len(), 2, "the stale push, then the resolved one");
    assert_eq!(pushes[0].mutations[0].base_version, Some(1));
    assert_eq!(pushes[1].mutations[0].base_version, Some(2));
    assert_ne!(
        pushes[0].mutations[0].mutation_id, pushes[1].mutations[0].mutation_id,
        "the resolution is a new mutation"
    );
    let server = b.server.borrow().get("task", "t1");
    assert_eq!(server.version, 3);
    assert_eq!(
        Value::Object(server.data),
        json!({"title": "mine", "done": false})
    );
    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, t1.sync_status), (3, RecordStatus::Synced));
    assert!(b.queued().is_empty());
}

#[test]
fn last_write_wins_on_a_conflict_push_result_follows_the_newer_side() {
    let local_newer = bench(Strategy::LastWriteWins);
    diverged(&local_newer, REMOTE_FIRST);
    let remote_newer = bench(Strategy::LastWriteWins);
    diverged(&remote_newer, LOCAL_FIRST);

    local_newer.flush();
    remote_newer.flush();

    assert_eq!(
        data(&local_newer.record("task", "t1")),
        json!({"title": "mine", "done": false})
    );
    assert_eq!(local_newer.server.borrow().get("task", "t1").version, 3);
    assert_eq!(
        data(&remote_newer.record("task", "t1")),
        json!({"title": "draft", "done": true})
    );
    assert_eq!(remote_newer.server.borrow().get("task", "t1").version, 2);
    assert_eq!(remote_newer.pushes().len(), 1, "nothing more to send");
}

#[test]
fn merge_on_a_conflict_push_result_sends_the_merged_record() {
    let b = bench(Strategy::Merge);
    diverged(&b, LOCAL_FIRST);

    b.flush();

    let merged = json!({"title": "mine", "done": true});
    assert_eq!(b.pushes()[1].mutations[0].data, Some(merged.clone()));
    b.assert_synced_everywhere("task", "t1", &merged);
}

#[test]
fn the_on_conflict_callback_s_data_becomes_the_record_and_is_pushed() {
    let b = bench(Strategy::ServerWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|local, remote| {
        Ok(object(json!({
            "title": format!("{} / {}", local["title"].as_str().unwrap(), remote["title"].as_str().unwrap()),
            "done": remote["done"],
        })))
    }));
    diverged(&b, LOCAL_FIRST);

    b.pull();
    b.flush();

    let settled = json!({"title": "mine / draft", "done": true});
    assert_eq!(b.on_conflict.calls.get(), 1);
    assert_eq!(b.conflicts()[0].outcome, "callback");
    b.assert_synced_everywhere("task", "t1", &settled);
}

#[test]
fn a_failing_on_conflict_callback_leaves_the_record_in_conflict_with_both_sides() {
    let b = bench(Strategy::ClientWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);

    b.pull();

    let t1 = b.record("task", "t1");
    assert_eq!(t1.sync_status, RecordStatus::Conflict);
    assert_eq!(
        data(&t1),
        json!({"title": "mine", "done": false}),
        "local side kept"
    );
    assert_eq!(
        t1.conflict_remote.clone().map(Value::Object),
        Some(json!({"title": "draft", "done": true})),
        "server side kept"
    );
    assert!(t1.sync_error.as_deref().unwrap().contains("the app threw"));
    assert_eq!(t1.view()["syncStatus"], "conflict");
    assert!(b.queued().is_empty(), "no mutation is queued");
    assert_eq!(b.flush().sent, 0);
    assert_eq!(b.conflicts()[0].outcome, "unresolved");
}

#[test]
fn a_failing_on_conflict_callback_on_a_push_result_leaves_the_record_in_conflict() {
    let b = bench(Strategy::ClientWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);

    b.flush();

    let t1 = b.record("task", "t1");
    assert_eq!(t1.sync_status, RecordStatus::Conflict);
    assert_eq!(data(&t1), json!({"title": "mine", "done": false}));
    assert!(t1.conflict_remote.is_some());
    assert_eq!(
        b.pushes().len(),
        1,
        "nothing is sent for it until the app settles"
    );
    assert!(b.queued().is_empty());
    assert!(b.failed().is_empty());
}

#[test]
fn a_settled_conflict_emits_sync_conflict_with_both_sides_and_the_outcome() {
    let b = bench(Strategy::Merge);
    diverged(&b, LOCAL_FIRST);

    b.pull();

    let events = b.conflicts();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(
        (event.entity_type.as_str(), event.id.as_str()),
        ("task", "t1")
    );
    assert_eq!(event.local["title"], "mine");
    assert_eq!(event.local["done"], false);
    assert_eq!(event.remote["done"], true);
    assert_eq!(event.remote["version"], 2);
    assert_eq!(event.resolved["title"], "mine");
    assert_eq!(event.resolved["done"], true);
    assert_eq!(event.outcome, "merged");
}

#[test]
fn a_conflict_for_a_change_superseded_in_flight_is_still_settled_by_the_strategy() {
    let b = bench(Strategy::Merge);
    diverged(&b, LOCAL_FIRST);

    let edit_during_push = async {
        while b.transport.sent.borrow().is_empty() {
            YieldOnce::new().await;
        }
        let fields = object(json!({"title": "mine 2", "done": false}));
        let (_, task) = b
            .replicator
            .put("task", Some("t1".into()), fields)
            .await
            .unwrap();
        b.outbox.adopt(task);
    };
    let (flushed, ()) = block_on(join(b.outbox.flush(), edit_during_push));
    flushed.unwrap();

    // The newer change must meet the other device's `done: true` as a
    // conflict too, not overwrite it from a base version it never saw.
    let merged = json!({"title": "mine 2", "done": true});
    b.assert_synced_everywhere("task", "t1", &merged);
    assert!(b.queued().is_empty());
}

#[test]
fn last_write_wins_on_a_conflict_push_result_gives_a_tie_to_the_server() {
    let b = bench(Strategy::LastWriteWins);
    diverged(&b, AT_THE_SAME_TIME);

    b.flush();

    assert_eq!(b.pushes().len(), 1);
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), json!({"title": "draft", "done": true}));
    assert_eq!(t1.sync_status, RecordStatus::Synced);
}

#[test]
fn the_app_settles_a_conflict_by_writing_the_record_which_is_pushed_on_the_server_version() {
    let b = bench(Strategy::ServerWins);
    *b.on_conflict.callback.borrow_mut() = Some(Box::new(|_, _| Err("the app threw".into())));
    diverged(&b, LOCAL_FIRST);
    b.pull();

    b.put("task", "t1", json!({"title": "settled", "done": true}));
    b.flush();

    let server = b.server.borrow().get("task", "t1");
    assert_eq!(server.version, 3);
    assert_eq!(server.data["title"], "settled");
    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, t1.sync_status), (3, RecordStatus::Synced));
    assert_eq!(t1.conflict_remote, None);
}
