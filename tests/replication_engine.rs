#![cfg(not(target_arch = "wasm32"))]
//! Replication, specified by example: a [`Replicator`] over the in-memory
//! record store, wired into an [`Outbox`] that sends its mutation tasks in
//! batches, against a small fake of the push/pull server answering through
//! the scripted transport. Each test sets up one situation, acts once, and
//! checks one rule of ARCHITECTURE.md ("Replication") and issue 5.

mod support;

use support::*;

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
    diverged(
        &b,
        Divergence {
            local_at: T0 + 1_000.0,
            remote_at: T0 + 1_000.0,
        },
    );

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
    assert_eq!(
        Value::Object(b.server.borrow().get("task", "t1").data),
        merged
    );
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), merged);
    assert_eq!(t1.sync_status, RecordStatus::Synced);
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
    assert_eq!(
        Value::Object(b.server.borrow().get("task", "t1").data),
        settled
    );
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), settled);
    assert_eq!(t1.sync_status, RecordStatus::Synced);
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
    assert_eq!(
        Value::Object(b.server.borrow().get("task", "t1").data),
        merged
    );
    let t1 = b.record("task", "t1");
    assert_eq!(data(&t1), merged);
    assert_eq!(t1.sync_status, RecordStatus::Synced);
    assert!(b.queued().is_empty());
}

#[test]
fn last_write_wins_on_a_conflict_push_result_gives_a_tie_to_the_server() {
    let b = bench(Strategy::LastWriteWins);
    diverged(
        &b,
        Divergence {
            local_at: T0 + 1_000.0,
            remote_at: T0 + 1_000.0,
        },
    );

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

// ----- coalescing -----

#[test]
fn several_puts_to_one_record_before_a_flush_send_one_mutation_with_the_latest_data() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "a"}));
    let task_id = b.queued()[0].id.clone();
    let b_first_revision = b.queued()[0].revision;
    b.put("task", "t1", json!({"title": "ab"}));
    b.put("task", "t1", json!({"title": "abc"}));

    let queued = b.queued();
    assert_eq!(queued.len(), 1, "one mutation task");
    assert_eq!(queued[0].id, task_id, "the same task id");
    assert!(queued[0].revision > b_first_revision, "re-registered");

    b.flush();

    let pushes = b.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].mutations.len(), 1);
    assert_eq!(pushes[0].mutations[0].data, Some(json!({"title": "abc"})));
    let server = b.server.borrow().get("task", "t1");
    assert_eq!(
        (server.version, server.data["title"].clone()),
        (1, json!("abc"))
    );
}

#[test]
fn a_put_while_its_mutation_is_in_flight_is_sent_after_it_on_the_acknowledged_version() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "first"}));

    let edit_during_push = async {
        while b.transport.sent.borrow().is_empty() {
            YieldOnce::new().await;
        }
        let (_, task) = b
            .replicator
            .put(
                "task",
                Some("t1".into()),
                object(json!({"title": "second"})),
            )
            .await
            .unwrap();
        b.outbox.adopt(task);
    };
    let (report, ()) = block_on(join(b.outbox.flush(), edit_during_push));

    assert_eq!(report.unwrap().completed, 2);
    let pushes = b.pushes();
    assert_eq!(pushes.len(), 2, "both are sent, one after the other");
    assert_eq!(pushes[0].mutations[0].data, Some(json!({"title": "first"})));
    assert_eq!(pushes[0].mutations[0].base_version, Some(0));
    assert_eq!(
        pushes[1].mutations[0].data,
        Some(json!({"title": "second"}))
    );
    assert_eq!(
        pushes[1].mutations[0].base_version,
        Some(1),
        "based on the version the first one's answer set"
    );
    let server = b.server.borrow().get("task", "t1");
    assert_eq!(
        (server.version, server.data["title"].clone()),
        (2, json!("second"))
    );
    let t1 = b.record("task", "t1");
    assert_eq!((t1.version, t1.sync_status), (2, RecordStatus::Synced));
    assert!(b.queued().is_empty());
}

// ----- batching -----

#[test]
fn with_batch_size_n_2n_plus_1_mutations_go_in_pushes_of_n_n_and_1() {
    let b = bench_with(Config {
        batch_size: 3,
        ..Config::default()
    });
    for i in 0..7 {
        b.put("task", &format!("t{i}"), json!({ "n": i }));
    }

    let report = b.flush();

    let sizes: Vec<usize> = b.pushes().iter().map(|p| p.mutations.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(report.completed, 7);
    let all: HashSet<String> = b.pushed_ids().into_iter().flatten().collect();
    assert_eq!(all.len(), 7, "each mutation is sent once");
}

#[test]
fn plain_request_tasks_are_never_put_into_a_push_batch() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"n": 1}));
    block_on(b.outbox.register(NewTask {
        id: "upload".into(),
        priority: Priority::Normal,
        ordering_key: None,
        request: HttpRequest {
            url: "/api/upload".into(),
            method: "POST".into(),
            headers: BTreeMap::new(),
            body: Some(Body::Json(json!({"file": "a.png"}))),
        },
        retry_on_failure: true,
        max_retention_time: None,
        depends_on: None,
    }))
    .unwrap();
    b.put("task", "t2", json!({"n": 2}));

    b.flush();

    assert_eq!(b.pushed_ids(), [vec!["t1".to_owned(), "t2".to_owned()]]);
    let sent = b.transport.sent.borrow();
    let upload: Vec<&HttpRequest> = sent
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.url == "/api/upload")
        .collect();
    assert_eq!(upload.len(), 1, "sent on its own, as registered");
    assert_eq!(upload[0].body, Some(Body::Json(json!({"file": "a.png"}))));
    assert!(b.queued().is_empty());
}

#[test]
fn no_push_carries_two_mutations_of_one_record() {
    let b = bench_with(Config {
        batch_size: 10,
        ..Config::default()
    });
    b.put("task", "t1", json!({"v": 1}));
    b.put("task", "t2", json!({"v": 1}));

    let edit_during_push = async {
        while b.transport.sent.borrow().is_empty() {
            YieldOnce::new().await;
        }
        for (id, v) in [("t1", 2), ("t3", 1), ("t1", 3)] {
            let (_, task) = b
                .replicator
                .put("task", Some(id.into()), object(json!({ "v": v })))
                .await
                .unwrap();
            b.outbox.adopt(task);
        }
    };
    let (flushed, ()) = block_on(join(b.outbox.flush(), edit_during_push));
    flushed.unwrap();

    let pushed = b.pushed_ids();
    for ids in &pushed {
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "a record twice in {ids:?}");
    }
    let t1_data: Vec<Value> = b
        .pushes()
        .iter()
        .flat_map(|p| p.mutations.clone())
        .filter(|m| m.id.as_deref() == Some("t1"))
        .map(|m| m.data.unwrap()["v"].clone())
        .collect();
    assert_eq!(t1_data, [1, 3], "two pushes of t1, the second coalesced");
    assert_eq!(b.server.borrow().get("task", "t1").data["v"], 3);
    assert_eq!(b.server.borrow().get("task", "t3").version, 1);
}

// ----- partial failure -----

#[test]
fn a_rejected_mutation_goes_to_the_dead_letters_and_the_rest_of_the_batch_is_synced() {
    let b = bench(Strategy::ServerWins);
    b.server
        .borrow_mut()
        .reject
        .insert("t2".into(), "title must not be empty".into());
    for id in ["t1", "t2", "t3"] {
        b.put("task", id, json!({"title": id}));
    }

    b.flush();

    assert_eq!(b.pushes().len(), 1, "one batch");
    let failed = b.failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, mutation_task_id("task", "t2"));
    let error = failed[0].task.last_error().unwrap();
    assert!(
        error.message.contains("title must not be empty"),
        "{}",
        error.message
    );
    let t2 = b.record("task", "t2");
    assert_eq!(t2.sync_status, RecordStatus::Rejected);
    assert!(t2.sync_error.unwrap().contains("title must not be empty"));
    for id in ["t1", "t3"] {
        let record = b.record("task", id);
        assert_eq!(
            (record.version, record.sync_status),
            (1, RecordStatus::Synced)
        );
    }
    assert!(b.queued().is_empty());
}

#[test]
fn a_mutation_missing_from_the_push_answer_is_retried() {
    let b = bench(Strategy::ServerWins);
    b.server.borrow_mut().drop_results.insert("t2".into());
    for id in ["t1", "t2", "t3"] {
        b.put("task", id, json!({"title": id}));
    }

    let report = b.flush();

    assert_eq!((report.completed, report.retried), (2, 1));
    let queued = b.queued();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, mutation_task_id("task", "t2"));
    assert_eq!(queued[0].attempts, 1);
    assert_eq!(queued[0].next_attempt_at, Some(b.clock.now() + 1_000.0));
    assert_eq!(b.record("task", "t2").sync_status, RecordStatus::Pending);
    assert_eq!(b.record("task", "t1").sync_status, RecordStatus::Synced);

    b.server.borrow_mut().drop_results.clear();
    b.clock.advance(1_000.0);
    b.flush();

    assert_eq!(b.pushed_ids()[1], ["t2"]);
    assert_eq!(b.record("task", "t2").sync_status, RecordStatus::Synced);
    assert!(b.queued().is_empty());
}

#[test]
fn a_failed_push_retries_every_mutation_of_the_batch_and_counts_one_breaker_failure() {
    let mut config = Config::default();
    config.outbox.circuit_breaker.failure_threshold = 2;
    let b = bench_with(config);
    for id in ["t1", "t2", "t3"] {
        b.put("task", id, json!({"title": id}));
    }
    b.server.borrow_mut().down = true;

    let report = b.flush();

    assert_eq!(report.retried, 3);
    assert_eq!(b.outbox.metrics().requests_sent, 1, "one push");
    let queued = b.queued();
    assert_eq!(queued.len(), 3);
    for task in &queued {
        assert_eq!(task.attempts, 1);
        assert_eq!(task.next_attempt_at, Some(b.clock.now() + 1_000.0));
    }
    assert_eq!(
        b.outbox.status().circuit,
        "closed",
        "one failure of a threshold of two"
    );

    b.clock.advance(1_000.0);
    b.flush();

    assert_eq!(
        b.outbox.status().circuit,
        "open",
        "the second failed push opens it"
    );
}

// ----- pull -----

fn seed_server(b: &Bench, count: usize) {
    for i in 1..=count {
        b.server_writes("task", &format!("t{i}"), json!({ "n": i }), T0);
    }
}

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
    block_on(b.records.put_meta_text("pullCursor", "")).unwrap();

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
        b.records.clone(),
        b.transport.clone(),
        b.clock.clone(),
        b.events.clone(),
        b.on_conflict.clone(),
        ReplicationOptions {
            server_url: SERVER.into(),
            entity_types: vec!["task".into(), "note".into(), "tag".into()],
            strategy: Strategy::ServerWins,
            batch_size: 50,
            page_size: 100,
            request_timeout: 30_000,
        },
    ))
    .unwrap();
    block_on(reopened.pull(|_| {})).unwrap();

    assert_eq!(b.pulls().last().unwrap().cursor, None);
    assert_eq!(b.query("task"), ["t1", "t2"]);
}

// ----- verify -----

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

// ----- lost answers -----

#[test]
fn a_push_whose_answer_was_lost_is_resent_and_answered_duplicate_moving_the_version_once() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "x"}));
    b.put("task", "t2", json!({"title": "y"}));
    b.server.borrow_mut().lose_push_answers = true;
    b.flush();
    assert_eq!(b.queued().len(), 2, "both wait for a retry");
    assert_eq!(b.server.borrow().get("task", "t1").version, 1);

    b.server.borrow_mut().lose_push_answers = false;
    b.clock.advance(1_000.0);
    b.flush();

    let pushes = b.pushes();
    assert_eq!(pushes.len(), 2);
    let ids = |p: &protocol::PushRequest| -> Vec<String> {
        p.mutations.iter().map(|m| m.mutation_id.clone()).collect()
    };
    assert_eq!(ids(&pushes[0]), ids(&pushes[1]), "the same mutation ids");
    let answered = b.server.borrow().answered.clone();
    assert_eq!(
        answered[2..],
        [
            ("t1".to_owned(), protocol::MutationStatus::Duplicate),
            ("t2".to_owned(), protocol::MutationStatus::Duplicate)
        ]
    );
    for id in ["t1", "t2"] {
        assert_eq!(b.server.borrow().get("task", id).version, 1, "applied once");
        let record = b.record("task", id);
        assert_eq!(
            (record.version, record.sync_status),
            (1, RecordStatus::Synced)
        );
    }
    assert!(b.queued().is_empty());
}

#[test]
fn an_edit_after_a_lost_push_answer_is_sent_behind_the_sent_mutation_and_is_kept() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "first"}));
    b.server.borrow_mut().lose_push_answers = true;
    b.flush();
    assert_eq!(
        b.server.borrow().get("task", "t1").version,
        1,
        "applied, answer lost"
    );

    b.put("task", "t1", json!({"title": "second"}));
    assert_eq!(b.queued().len(), 2, "the sent mutation is not folded into");
    b.server.borrow_mut().lose_push_answers = false;
    b.clock.advance(60_000.0);
    b.flush();
    b.flush();

    let answered = b.server.borrow().answered.clone();
    assert_eq!(
        answered[1..],
        [
            ("t1".to_owned(), protocol::MutationStatus::Duplicate),
            ("t1".to_owned(), protocol::MutationStatus::Applied)
        ],
        "the replay is a duplicate, the edit applies on the acknowledged version"
    );
    assert_eq!(b.server.borrow().get("task", "t1").version, 2);
    let record = b.record("task", "t1");
    assert_eq!(record.data["title"], "second", "the later edit survives");
    assert_eq!(
        (record.version, record.sync_status),
        (2, RecordStatus::Synced)
    );
    assert!(b.queued().is_empty());
}

#[test]
fn a_push_refused_as_a_whole_dead_letters_its_mutations_and_marks_their_records_rejected() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "x"}));
    b.put("task", "t2", json!({"title": "y"}));
    b.transport.respond_with(|_, _| Ok(HttpResponse::new(413)));

    b.flush();

    assert_eq!(b.failed().len(), 2);
    for id in ["t1", "t2"] {
        let record = b.record("task", id);
        assert_eq!(record.sync_status, RecordStatus::Rejected, "{id}");
        assert!(record.sync_error.unwrap().contains("413"));
        assert_eq!(record.pending_mutation_id, None);
    }
}

#[test]
fn a_mutation_that_exhausts_its_retries_marks_its_record_rejected() {
    let mut config = Config::default();
    config.outbox.retry.max_retries = 1;
    let b = bench_with(config);
    b.put("task", "t1", json!({"title": "x"}));
    b.transport.respond_with(|_, _| Ok(HttpResponse::new(503)));

    b.flush();
    b.clock.advance(60_000.0);
    b.flush();

    assert_eq!(b.failed().len(), 1);
    let t1 = b.record("task", "t1");
    assert_eq!(t1.sync_status, RecordStatus::Rejected);
    assert!(t1.sync_error.unwrap().contains("503"));
}

// ----- dead letters sent again -----

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

// ----- local writes -----

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
fn prepare_push_sends_the_base_version_stored_now_not_the_one_queued() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "t1", json!({"title": "x"}));
    let task = b.queued().remove(0);
    let mut record = b.record("task", "t1");
    record.version = 4;
    b.records.tamper(record);

    let plan = block_on(b.replicator.prepare_push(vec![task])).unwrap();

    let push: protocol::PushRequest = match plan.request.body {
        Some(Body::Json(value)) => serde_json::from_value(value).unwrap(),
        other => panic!("unexpected body {other:?}"),
    };
    assert_eq!(push.mutations[0].base_version, Some(4));
    assert_eq!(push.client_id, b.replicator.client_id());
}
