#![cfg(not(target_arch = "wasm32"))]
//! Replication: pushing: coalescing writes, batches, partial failures,
//! lost answers, and the base version a push carries.
//!
//! A device's outbox and replicator over the in-memory record store against
//! the fake push/pull server of `support`; one situation per test. The rules
//! are listed in docs/replication.md and docs/architecture.md.

mod support;

use support::replication::*;

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
