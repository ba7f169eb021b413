#![cfg(not(target_arch = "wasm32"))]
//! Replication under races and late answers (issue 17): every write is
//! sent, in edit order, on the version it was made on; a late answer never
//! removes a newer write; conflicts keep the edit time of the edit; and
//! last-write-wins compares edit times with edit times. Also the push's
//! limits (issue 10): a 413 splits a push, an unreadable answer is replayed
//! without spending the retry budget, a malformed pulled record stops the
//! page. One situation per test, against the fake server of `support`.

mod support;

use support::replication::*;
use tidesync::testing::YieldOnce;

/// Runs `during` while a push's answer is held (the server applied it),
/// then releases the answer and lets the flush finish.
fn with_late_push_answer(b: &Bench, during: impl std::future::Future<Output = ()>) {
    b.transport.hold_answers_to(protocol::PUSH_PATH);
    let meanwhile = async {
        while b.transport.held_count() == 0 {
            YieldOnce::new().await;
        }
        during.await;
        b.transport.release_held();
    };
    let (flushed, ()) = block_on(join(b.outbox.flush(), meanwhile));
    flushed.expect("flush");
}

async fn put_async(b: &Bench, id: &str, fields: Value) {
    let (_, task) = b
        .replicator
        .put("task", Some(id.to_owned()), object(fields))
        .await
        .expect("put");
    b.outbox.adopt(task);
}

async fn pull_async(b: &Bench) {
    let (_, requeued) = b.replicator.pull(|_| {}).await.expect("pull");
    for task in requeued {
        b.outbox.adopt(task);
    }
}

fn settle_everything(b: &Bench) {
    for _ in 0..4 {
        b.clock.advance(120_000.0);
        b.flush();
        b.pull();
    }
}

fn server_title(b: &Bench, id: &str) -> Value {
    b.server.borrow().get("task", id).data["title"].clone()
}

#[test]
fn a_late_push_answer_never_removes_a_write_made_after_a_pull() {
    let b = bench(Strategy::LastWriteWins);
    b.put("task", "t1", json!({"title": "D1"}));

    with_late_push_answer(&b, async {
        pull_async(&b).await;
        b.clock.advance(1_000.0);
        put_async(&b, "t1", json!({"title": "D2"})).await;
    });
    settle_everything(&b);

    assert_eq!(
        server_title(&b, "t1"),
        "D2",
        "the later write reached the server"
    );
    let record = b.record("task", "t1");
    assert_eq!(
        (record.data["title"].clone(), record.sync_status),
        (json!("D2"), RecordStatus::Synced)
    );
    assert!(b.queued().is_empty(), "nothing left pending");
}

#[test]
fn a_write_queued_behind_an_unanswered_push_never_overwrites_a_newer_edit_of_another_device() {
    let b = bench(Strategy::LastWriteWins);
    b.server_writes("task", "t1", json!({"title": "v1"}), T0);
    b.pull();
    b.clock.set(T0 + 1_000.0);
    b.put("task", "t1", json!({"title": "D1"}));

    with_late_push_answer(&b, async {
        b.clock.set(T0 + 2_000.0);
        put_async(&b, "t1", json!({"title": "D2"})).await;
        // Another device edits last.
        b.server_writes("task", "t1", json!({"title": "E1"}), T0 + 3_000.0);
    });
    settle_everything(&b);

    assert_eq!(server_title(&b, "t1"), "E1", "the last edit by edit time");
    assert_eq!(b.record("task", "t1").data["title"], "E1");
    let pushed_d2 = b
        .pushes()
        .iter()
        .flat_map(|p| p.mutations.clone())
        .find(|m| m.data == Some(json!({"title": "D2"})))
        .expect("D2 was pushed");
    assert_eq!(
        pushed_d2.base_version,
        Some(2),
        "D2 was made on D1 (version 2), not on E1"
    );
}

#[test]
fn a_replayed_mutation_goes_out_exactly_as_it_first_went() {
    let b = bench(Strategy::ServerWins);
    b.server_writes("task", "t1", json!({"title": "v1"}), T0);
    b.pull();
    b.put("task", "t1", json!({"title": "mine"}));
    b.server.borrow_mut().lose_push_answers = true;
    b.flush();
    // A pull brings another device's edit while the answer is unknown.
    b.server.borrow_mut().lose_push_answers = false;
    b.server_writes("task", "t1", json!({"title": "theirs"}), T0 + 10.0);
    b.pull();
    b.clock.advance(60_000.0);
    b.flush();

    let pushes = b.pushes();
    assert_eq!(pushes.len(), 2);
    assert_eq!(
        pushes[0].mutations, pushes[1].mutations,
        "the replay is byte for byte the first push"
    );
    let answered = b.server.borrow().answered.clone();
    assert_eq!(answered[1].1, protocol::MutationStatus::Duplicate);
    assert!(b.queued().is_empty());
}

#[test]
fn a_pull_leaves_a_record_whose_push_is_unanswered_to_that_push_and_stores_each_edit_once() {
    let b = bench(Strategy::ClientWins);
    b.server_writes("task", "t1", json!({"title": "v1"}), T0);
    b.pull();
    b.clock.set(T0 + 2_000.0);
    b.put("task", "t1", json!({"title": "mine"}));

    with_late_push_answer(&b, async {
        b.server_writes("task", "t1", json!({"title": "theirs"}), T0 + 1_000.0);
        pull_async(&b).await;
    });
    settle_everything(&b);

    let mine: Vec<_> = b
        .pushes()
        .iter()
        .flat_map(|p| p.mutations.clone())
        .filter(|m| m.data == Some(json!({"title": "mine"})))
        .map(|m| m.mutation_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "one edit, one mutation id (not settled again by the pull while its push was out)"
    );
    assert!(b.queued().is_empty());
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Synced);
}

#[test]
fn a_conflict_settled_on_pull_replaces_the_queued_mutation_and_queues_one_at_the_end() {
    let b = bench(Strategy::LastWriteWins);
    diverged(&b, REMOTE_FIRST);
    b.put("task", "other", json!({"title": "queued after t1's edit"}));
    let before = b.queued();
    let t1_seq = before
        .iter()
        .find(|t| t.id == mutation_task_id("task", "t1"))
        .expect("t1 queued")
        .seq;

    b.pull();

    let chain: Vec<Task> = b
        .queued()
        .into_iter()
        .filter(|t| t.ordering_key.as_deref() == Some("record:task:t1"))
        .collect();
    assert_eq!(chain.len(), 1, "one outstanding mutation for the record");
    assert!(chain[0].seq > t1_seq, "the settled mutation is queued anew");
    b.flush();
    assert_eq!(server_title(&b, "t1"), "mine");
}

#[test]
fn settling_a_conflict_keeps_the_edit_time_of_the_edit() {
    let b = bench(Strategy::LastWriteWins);
    diverged(&b, REMOTE_FIRST); // local edit at T0 + 2 s, settled at T0 + 5 s

    b.pull();

    let mutation = queued_mutation(&b).expect("the local edit won and is queued");
    assert_eq!(
        mutation.client_timestamp.as_deref(),
        Some(to_iso(REMOTE_FIRST.local_at).as_str()),
        "pushed with the time of the edit, not of the settling"
    );
    assert_eq!(b.record("task", "t1").updated_at, REMOTE_FIRST.local_at);
}

#[test]
fn last_write_wins_on_pull_compares_edit_times_not_when_the_server_stored_them() {
    let b = bench(Strategy::LastWriteWins);
    b.server_writes("task", "t1", json!({"title": "v1"}), T0);
    b.pull();
    b.clock.set(T0 + 2_000.0);
    b.put("task", "t1", json!({"title": "mine, edited at 2 s"}));
    // Another device edited at 1 s; its write reached the server at 3 s.
    b.server_writes(
        "task",
        "t1",
        json!({"title": "theirs, edited at 1 s"}),
        T0 + 1_000.0,
    );
    b.server
        .borrow_mut()
        .records
        .get_mut(&("task".to_owned(), "t1".to_owned()))
        .expect("server copy")
        .updated_at = T0 + 3_000.0;
    b.clock.set(T0 + 4_000.0);

    b.pull();
    b.flush();

    assert_eq!(server_title(&b, "t1"), "mine, edited at 2 s");
    assert_eq!(b.record("task", "t1").data["title"], "mine, edited at 2 s");
}

#[test]
fn a_task_registered_again_after_it_completed_gets_a_revision_never_used_before() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "a"}));
    let first = b.queued()[0].clone();
    b.flush();
    assert!(b.queued().is_empty());

    b.put("task", "t1", json!({"title": "b"}));

    let second = b.queued()[0].clone();
    assert_eq!(second.id, first.id);
    assert_ne!(second.revision, first.revision);
    assert!(
        !block_on(b.records.tasks.complete_task(&first.id, first.revision)).unwrap(),
        "completing the old revision cannot remove the new task"
    );
}

#[test]
fn a_push_refused_with_413_is_split_until_it_fits() {
    let b = bench(Strategy::ServerWins);
    for i in 0..5 {
        b.put("task", &format!("t{i}"), json!({"title": i}));
    }
    let server = b.server.clone();
    b.transport.respond_with(move |request, now| {
        let mutations = match &request.body {
            Some(Body::Json(body)) => body["mutations"].as_array().map_or(0, Vec::len),
            _ => 0,
        };
        if mutations > 2 {
            return Ok(HttpResponse::new(413));
        }
        server.borrow_mut().answer(request, now)
    });

    b.flush();

    assert!(b.failed().is_empty(), "nothing dead-lettered");
    assert!(b.queued().is_empty(), "everything pushed");
    assert_eq!(b.server.borrow().records.len(), 5);
}

#[test]
fn an_unreadable_push_answer_is_replayed_without_spending_the_retry_budget() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "x"}));
    let server = b.server.clone();
    let unreadable = Rc::new(Cell::new(10));
    let left = unreadable.clone();
    b.transport.respond_with(move |request, now| {
        let answer = server.borrow_mut().answer(request, now)?;
        if left.get() > 0 && request.url.ends_with(protocol::PUSH_PATH) {
            left.set(left.get() - 1);
            let mut cut = HttpResponse::new(200);
            cut.body = ResponseBody::Text("{\"success\":true,\"resu".into());
            return Ok(cut);
        }
        Ok(answer)
    });

    for _ in 0..12 {
        b.clock.advance(600_000.0);
        b.flush();
    }

    assert!(b.failed().is_empty(), "never dead-lettered");
    assert!(b.queued().is_empty(), "confirmed by the replay's answer");
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Synced);
    assert_eq!(
        b.server.borrow().get("task", "t1").version,
        1,
        "applied once"
    );
}

#[test]
fn a_malformed_pulled_record_stops_the_page_before_anything_of_it_is_applied() {
    let b = bench(Strategy::ServerWins);
    b.transport.respond_with(|_, now| {
        let mut response = HttpResponse::new(200);
        response.body = ResponseBody::Json(json!({
            "success": true,
            "data": {"task": [
                {"id": "good", "version": 1, "updatedAt": to_iso(now), "title": "a"},
                {"id": "bad", "title": "no version"}
            ]},
            "cursor": "2",
            "hasMore": false,
            "syncTimestamp": to_iso(now)
        }));
        Ok(response)
    });

    let error = block_on(b.replicator.pull(|_| {})).expect_err("the page is refused");

    assert!(
        error.to_string().contains("record 1 of \"task\""),
        "names the record: {error}"
    );
    assert!(
        b.stored("task", "good").is_none(),
        "nothing of the page applied"
    );
    assert_ne!(b.cursor().as_deref(), Some("2"), "the cursor did not move");
}
