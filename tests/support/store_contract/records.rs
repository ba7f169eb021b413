//! The store contract, the replicated records' side: mutation chains
//! (`write_local`, `mark_dispatched`) and guarded record changes (`apply`).

use super::*;

pub async fn write_local_coalesces_into_a_mutation_never_dispatched<S: StoreUnderTest>(s: &S) {
    let head = mutation_task_id("task", "t1");
    let first = local_write(s, "t1", 1, "m1").await;
    assert_eq!(first.id, head, "the first write's task is the chain's head");
    let second = local_write(s, "t1", 2, "m2").await;
    assert_eq!(second.id, head, "coalesced into the queued mutation");
    assert_eq!(second.seq, first.seq, "which keeps its place");
    assert!(second.revision > first.revision);
    assert_eq!(chain(s, "t1").await, vec![second]);
    assert_eq!(
        stored(s, "t1").await,
        Some(record("t1", json!({"n": 2}), Some("m2")))
    );
}

pub async fn write_local_places_a_write_behind_a_dispatched_mutation<S: StoreUnderTest>(s: &S) {
    let first = local_write(s, "t1", 1, "m1").await;
    let mut sent = first.clone();
    sent.dispatched = true;
    assert_eq!(
        s.records().mark_dispatched(&[sent.clone()]).await.unwrap(),
        [true]
    );

    let behind = local_write(s, "t1", 2, "m2").await;
    assert_ne!(
        behind.id, first.id,
        "a dispatched mutation is never replaced"
    );
    assert!(
        behind.id.starts_with(&format!("{}#", first.id)),
        "{}",
        behind.id
    );
    assert_eq!(chain(s, "t1").await, vec![sent.clone(), behind.clone()]);

    let third = local_write(s, "t1", 3, "m3").await;
    assert_eq!(third.id, behind.id, "the write behind coalesces in turn");
    assert_eq!(chain(s, "t1").await, vec![sent, third]);
    assert!(
        chain(s, "t2").await.is_empty(),
        "another record has no chain"
    );
}

pub async fn write_local_drops_the_record_s_dead_letters_and_no_other<S: StoreUnderTest>(s: &S) {
    for id in ["t1", "t2"] {
        let task = local_write(s, id, 1, "m1").await;
        assert!(s.tasks().dead_letter(&failed(&task)).await.unwrap());
    }
    let plain = register(s, vec![request_task("a")]).await;
    assert!(s.tasks().dead_letter(&failed(&plain[0])).await.unwrap());

    local_write(s, "t1", 2, "m2").await;
    let mut left: Vec<String> = s
        .tasks()
        .list_failed()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["a".to_owned(), mutation_task_id("task", "t2")],
        "a newer write supersedes only its own record's failed mutations"
    );
}

pub async fn mark_dispatched_refuses_a_task_replaced_since_it_was_scheduled<S: StoreUnderTest>(
    s: &S,
) {
    let scheduled = local_write(s, "t1", 1, "m1").await;
    let other = local_write(s, "t2", 1, "m1").await;
    let newer = local_write(s, "t1", 2, "m2").await;

    let mut frozen = scheduled.clone();
    frozen.dispatched = true;
    let mut other_frozen = other.clone();
    other_frozen.dispatched = true;
    let marked = s
        .records()
        .mark_dispatched(&[frozen, other_frozen.clone()])
        .await
        .unwrap();
    assert_eq!(marked, [false, true]);
    assert_eq!(
        chain(s, "t1").await,
        vec![newer],
        "the newer write stays open"
    );
    assert_eq!(chain(s, "t2").await, vec![other_frozen.clone()]);

    assert!(s
        .tasks()
        .complete_task(&other.id, other.revision)
        .await
        .unwrap());
    assert_eq!(
        s.records().mark_dispatched(&[other_frozen]).await.unwrap(),
        [false],
        "nor a task no longer stored"
    );
    assert!(
        chain(s, "t2").await.is_empty(),
        "and does not bring it back"
    );
}

// ----- record changes -----

/// Record `t1` with an unsent change `m1` and its queued mutation.
async fn pending_record<S: StoreUnderTest>(s: &S) -> Task {
    local_write(s, "t1", 1, "m1").await
}

pub async fn a_record_write_applies_only_to_the_unsent_change_it_was_decided_on<
    S: StoreUnderTest,
>(
    s: &S,
) {
    let task = pending_record(s).await;
    // Decided while the record had no unsent change: the local write since wins.
    let stale = RecordWrite {
        record: record("t1", json!({"n": "server"}), None),
        expect_pending: None,
        cancel: Some((task.id.clone(), task.revision)),
        register: Some(request_task("queued-by-stale")),
    };
    let registered = apply_writes(s, vec![stale]).await;
    assert!(registered.is_empty(), "the skipped write queues nothing");
    assert_eq!(
        stored(s, "t1").await,
        Some(record("t1", json!({"n": 1}), Some("m1")))
    );
    assert_eq!(chain(s, "t1").await, vec![task], "nor cancels anything");
    assert!(queued(s).await.iter().all(|t| t.id != "queued-by-stale"));

    // A write decided on `m1` applies; one for a record absent when read
    // applies to a record still absent.
    let writes = vec![
        RecordWrite::plain(
            record("t1", json!({"n": "merged"}), Some("m1")),
            Some("m1".into()),
        ),
        RecordWrite::plain(record("t9", json!({"n": "new"}), None), None),
    ];
    apply_writes(s, writes).await;
    assert_eq!(
        stored(s, "t1").await,
        Some(record("t1", json!({"n": "merged"}), Some("m1")))
    );
    assert_eq!(
        stored(s, "t9").await,
        Some(record("t9", json!({"n": "new"}), None))
    );
}

pub async fn a_record_write_cancels_its_mutation_and_queues_its_replacement<S: StoreUnderTest>(
    s: &S,
) {
    let task = pending_record(s).await;
    let replacement = mutation_task("t1", 2);
    let registered = apply_writes(
        s,
        vec![RecordWrite {
            record: record("t1", json!({"n": 2}), Some("m2")),
            expect_pending: Some("m1".into()),
            cancel: Some((task.id.clone(), task.revision)),
            register: Some(replacement.clone()),
        }],
    )
    .await;
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].id, replacement.id);
    assert!(registered[0].revision > task.revision);
    assert_eq!(chain(s, "t1").await, registered, "the old mutation is gone");
    assert_eq!(version_of(&registered[0]), 2);
    assert_eq!(
        stored(s, "t1").await,
        Some(record("t1", json!({"n": 2}), Some("m2")))
    );
}

pub async fn a_record_write_that_would_cancel_a_dispatched_mutation_is_skipped<
    S: StoreUnderTest,
>(
    s: &S,
) {
    let task = pending_record(s).await;
    let mut sent = task.clone();
    sent.dispatched = true;
    assert_eq!(
        s.records().mark_dispatched(&[sent.clone()]).await.unwrap(),
        [true]
    );
    apply_writes(s, vec![server_copy_cancelling(&task)]).await;
    assert_eq!(
        chain(s, "t1").await,
        vec![sent],
        "a mutation that may have reached the server goes out as it was"
    );
    assert_eq!(
        stored(s, "t1").await,
        Some(record("t1", json!({"n": 1}), Some("m1"))),
        "and the whole write is skipped"
    );
}

pub async fn a_record_write_that_would_cancel_a_replaced_mutation_is_skipped<S: StoreUnderTest>(
    s: &S,
) {
    let task = pending_record(s).await;
    let newer = local_write(s, "t1", 2, "m1").await;
    apply_writes(s, vec![server_copy_cancelling(&task)]).await;
    assert_eq!(chain(s, "t1").await, vec![newer]);
    assert_eq!(
        stored(s, "t1").await,
        Some(record("t1", json!({"n": 2}), Some("m1")))
    );
}

pub async fn delete_records_keeps_a_record_with_an_unsent_change<S: StoreUnderTest>(s: &S) {
    pending_record(s).await;
    apply_writes(
        s,
        vec![RecordWrite::plain(
            record("t2", json!({"n": 2}), None),
            None,
        )],
    )
    .await;
    s.records()
        .apply(RecordChange {
            delete_records: vec![key("t1"), key("t2"), key("absent")],
            ..RecordChange::default()
        })
        .await
        .expect("apply");
    assert!(stored(s, "t1").await.is_some(), "an unsent change is kept");
    assert_eq!(stored(s, "t2").await, None);
}

pub async fn a_change_s_cursor_is_the_pull_cursor_read_back<S: StoreUnderTest>(s: &S) {
    assert_eq!(
        s.records().get_meta_text(PULL_CURSOR_KEY).await.unwrap(),
        None
    );
    s.records()
        .apply(RecordChange {
            cursor: Some("c1.42".into()),
            ..RecordChange::default()
        })
        .await
        .expect("apply");
    assert_eq!(
        s.records()
            .get_meta_text(PULL_CURSOR_KEY)
            .await
            .unwrap()
            .as_deref(),
        Some("c1.42")
    );
    s.records()
        .put_meta_text("clientId", "device-1")
        .await
        .expect("put_meta_text");
    assert_eq!(
        s.records()
            .get_meta_text("clientId")
            .await
            .unwrap()
            .as_deref(),
        Some("device-1")
    );
}

pub async fn records_read_back_by_key_and_by_type_tombstones_included<S: StoreUnderTest>(s: &S) {
    let mut tombstone = record("t2", json!({}), None);
    tombstone.is_deleted = true;
    let mut note = record("n1", json!({"text": "x"}), None);
    note.entity_type = "note".into();
    let written = [record("t1", json!({"n": 1}), None), tombstone.clone(), note];
    apply_writes(
        s,
        written
            .iter()
            .cloned()
            .map(|r| RecordWrite::plain(r, None))
            .collect(),
    )
    .await;
    let by_key = s
        .records()
        .get_records(&[key("t2"), key("absent"), key("t1")])
        .await
        .unwrap();
    assert_eq!(
        by_key,
        vec![Some(tombstone.clone()), None, Some(written[0].clone())],
        "in the order asked, None where absent"
    );
    let mut tasks = s.records().records_of("task").await.unwrap();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(tasks, vec![written[0].clone(), tombstone]);
    assert!(s.records().records_of("nothing").await.unwrap().is_empty());
}

/// Writes record `{id}` locally as the replicator does: data `{"n": v}`,
/// unsent change `pending`, and its mutation task (version `v`).
async fn local_write<S: StoreUnderTest>(s: &S, id: &str, v: u32, pending: &str) -> Task {
    s.records()
        .write_local(
            &record(id, json!({ "n": v }), Some(pending)),
            mutation_task(id, v),
        )
        .await
        .expect("write_local")
}

/// Applies a change of `writes` alone; the tasks it registered.
async fn apply_writes<S: StoreUnderTest>(s: &S, writes: Vec<RecordWrite>) -> Vec<Task> {
    s.records()
        .apply(RecordChange {
            writes,
            ..RecordChange::default()
        })
        .await
        .expect("apply")
}

/// The server's copy of `t1`, decided while `t1` had the unsent change
/// `m1`, replacing (cancelling) its queued mutation `task`.
fn server_copy_cancelling(task: &Task) -> RecordWrite {
    RecordWrite {
        record: record("t1", json!({"n": "server"}), None),
        expect_pending: Some("m1".into()),
        cancel: Some((task.id.clone(), task.revision)),
        register: None,
    }
}
