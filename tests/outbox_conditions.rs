#![cfg(not(target_arch = "wasm32"))]
//! Retention and dependent requests in the outbox engine, by example:
//! `Outbox<TestPorts>` over an in-memory store, a scripted transport and a
//! virtual clock. An expired task is a dead letter with reason `expired`,
//! never dropped; a dependent waits for its dependency, is filled in from
//! its kept answer, and is dead-lettered with the reason when it cannot be.

use futures::executor::block_on;
use serde_json::json;
use std::rc::Rc;
use tidesync::engine::task::Dependency;
use tidesync::engine::time::Millis;
use tidesync::engine::{
    Body, BreakerOptions, Clock, ErrorClass, Event, HttpRequest, HttpResponse, NewTask, Outbox,
    OutboxOptions, OutboxPorts, Priority, ResponseBody, RetryOptions, TransportError,
};
use tidesync::store::MemoryStore;
use tidesync::testing::{
    LocalLock, ManualClock, QueuedTokens, RecordingEvents, ScriptedTransport, TestPorts,
};

const T0: Millis = 1_764_000_000_000.0;
const DAY: Millis = 86_400_000.0;

struct Bench {
    outbox: Outbox<TestPorts>,
    store: Rc<MemoryStore>,
    transport: Rc<ScriptedTransport>,
    clock: Rc<ManualClock>,
    events: Rc<RecordingEvents>,
}

fn bench_with(max_retention_time: Option<Millis>) -> Bench {
    let store = Rc::new(MemoryStore::new());
    let clock = Rc::new(ManualClock::new(T0));
    let transport = Rc::new(ScriptedTransport::new(clock.clone()));
    let events = Rc::new(RecordingEvents::default());
    let mut options = OutboxOptions {
        retry: RetryOptions {
            jitter: false,
            ..RetryOptions::default()
        },
        circuit_breaker: BreakerOptions {
            failure_threshold: 1_000,
            ..BreakerOptions::default()
        },
        ..OutboxOptions::default()
    };
    if let Some(ms) = max_retention_time {
        options.max_retention_time = ms;
    }
    let outbox = block_on(Outbox::<TestPorts>::open(
        OutboxPorts {
            store: store.clone(),
            transport: transport.clone(),
            clock: clock.clone(),
            locks: Rc::new(LocalLock::default()),
            events: events.clone(),
            tokens: Rc::new(QueuedTokens::default()),
        },
        options,
        None,
    ))
    .expect("open");
    Bench {
        outbox,
        store,
        transport,
        clock,
        events,
    }
}

fn post(id: &str, url: &str, body: serde_json::Value) -> NewTask {
    NewTask {
        id: id.into(),
        priority: Priority::Normal,
        ordering_key: None,
        request: HttpRequest {
            url: url.into(),
            method: "POST".into(),
            headers: Default::default(),
            body: Some(Body::Json(body)),
        },
        retry_on_failure: true,
        max_retention_time: None,
        depends_on: None,
    }
}

fn depending_on(mut task: NewTask, dependency: &str, values: &[(&str, &str)]) -> NewTask {
    task.depends_on = Some(Dependency {
        task: dependency.into(),
        values: values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    });
    task
}

fn json_answer(status: u16, body: serde_json::Value) -> Result<HttpResponse, TransportError> {
    let mut response = HttpResponse::new(status);
    response.body = ResponseBody::Json(body);
    Ok(response)
}

impl Bench {
    fn register(&self, mut task: NewTask) {
        if task.depends_on.is_some() {
            block_on(self.outbox.place_dependent(&mut task))
                .expect("store")
                .expect("dependency known");
        }
        block_on(self.outbox.register(task)).expect("register");
    }

    fn flush(&self) -> tidesync::engine::FlushReport {
        block_on(self.outbox.flush()).expect("flush")
    }

    fn failed(&self) -> Vec<tidesync::engine::FailedTask> {
        block_on(self.outbox.list_failed()).expect("list")
    }

    fn failures(&self) -> Vec<(String, ErrorClass, String)> {
        self.events
            .events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Event::Failed { failed, error } => {
                    Some((failed.id.clone(), error.class, failed.reason.clone()))
                }
                _ => None,
            })
            .collect()
    }
}

// ----- retention -----

#[test]
fn a_request_not_delivered_within_its_retention_becomes_an_expired_dead_letter() {
    let b = bench_with(Some(60_000.0));
    b.transport
        .respond_with(|_, _| Err(TransportError::Network("offline".into())));
    b.register(post("note", "/api/notes", json!({"t": 1})));
    // Offline for a while: network failures never spend the budget, so only
    // retention ends the wait.
    while b.clock.now() < T0 + 60_000.0 {
        let report = b.flush();
        assert_eq!(report.failed, 0);
        b.clock.set(
            report
                .next_wakeup_at
                .expect("waiting")
                .max(b.clock.now() + 1.0),
        );
    }
    let sent_before = b.transport.sent.borrow().len();
    assert!(
        sent_before > 3,
        "retried while offline ({sent_before} attempts)"
    );
    let report = b.flush();
    assert_eq!(report.failed, 1);
    assert_eq!(report.sent, 0, "an expired task is not sent again");
    assert_eq!(b.transport.sent.borrow().len(), sent_before);
    let failed = b.failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].reason, "expired");
    let error = failed[0].task.errors.last().cloned();
    assert_eq!(
        b.failures(),
        vec![("note".into(), ErrorClass::Expired, "expired".into())]
    );
    assert!(
        error.is_some_and(|e| e.class == ErrorClass::Network),
        "the errors it met are kept"
    );
    assert_eq!(b.outbox.status().pending_count, 0);
}

#[test]
fn the_default_is_seven_days_and_a_task_may_set_its_own() {
    let b = bench_with(None);
    b.transport
        .respond_with(|_, _| Err(TransportError::Network("offline".into())));
    b.register(post("week", "/a", json!({})));
    let mut short = post("short", "/b", json!({}));
    short.max_retention_time = Some(DAY);
    b.register(short);
    let stored = b.store.task("week").expect("stored");
    assert_eq!(stored.expires_at, Some(T0 + 7.0 * DAY));
    assert_eq!(
        b.store.task("short").expect("stored").expires_at,
        Some(T0 + DAY)
    );

    b.clock.set(T0 + 2.0 * DAY);
    b.flush();
    assert_eq!(
        b.failures(),
        vec![("short".into(), ErrorClass::Expired, "expired".into())]
    );
    b.clock.set(T0 + 6.9 * DAY);
    b.flush();
    assert_eq!(b.failed().len(), 1, "still within a week");
    b.clock.set(T0 + 7.0 * DAY);
    b.flush();
    assert_eq!(b.failed().len(), 2);
}

#[test]
fn an_expired_task_behind_a_retrying_one_is_given_up_without_waiting_its_turn() {
    let b = bench_with(Some(1_000.0));
    b.transport.respond_with(|_, _| {
        let mut busy = HttpResponse::new(503);
        busy.headers.insert("retry-after".into(), "3600".into());
        Ok(busy)
    });
    let mut head = post("head", "/a", json!({}));
    head.ordering_key = Some("k".into());
    head.max_retention_time = Some(10.0 * DAY);
    b.register(head);
    let mut behind = post("behind", "/b", json!({}));
    behind.ordering_key = Some("k".into());
    b.register(behind);
    b.flush();
    assert_eq!(
        b.transport.sent_urls(),
        vec!["/a"],
        "the head waits an hour"
    );
    b.clock.advance(2_000.0);
    let report = b.flush();
    assert_eq!(report.failed, 1);
    assert_eq!(
        b.failures(),
        vec![("behind".into(), ErrorClass::Expired, "expired".into())]
    );
    assert_eq!(
        b.transport.sent_urls(),
        vec!["/a"],
        "the expired one was never sent"
    );
}

#[test]
fn retry_failed_gives_an_expired_task_a_fresh_window() {
    let b = bench_with(Some(1_000.0));
    b.transport
        .respond_with(|_, _| Err(TransportError::Network("offline".into())));
    b.register(post("note", "/api/notes", json!({})));
    b.flush();
    b.clock.advance(1_000.0);
    b.flush();
    assert_eq!(b.failed().len(), 1);
    b.transport.respond_with(|_, _| Ok(HttpResponse::new(201)));
    assert!(block_on(b.outbox.retry_failed("note")).expect("retry"));
    assert_eq!(
        b.store.task("note").expect("queued").expires_at,
        Some(b.clock.now() + 1_000.0)
    );
    let report = b.flush();
    assert_eq!(report.completed, 1);
}

// ----- dependent requests -----

#[test]
fn a_dependent_waits_for_its_dependency_and_is_filled_from_its_answer() {
    let b = bench_with(None);
    b.transport
        .respond_with(|_, _| Err(TransportError::Network("offline".into())));
    b.register(post("create", "/api/notes", json!({"title": "Trip"})));
    b.register(depending_on(
        post(
            "attach",
            "/api/notes/{{noteId}}/files",
            json!({"note": "{{noteId}}", "caption": "for {{title}}"}),
        ),
        "create",
        &[("noteId", "body.id"), ("title", "body.title")],
    ));
    assert_eq!(
        b.store
            .task("attach")
            .expect("queued")
            .ordering_key
            .as_deref(),
        Some("create"),
        "the dependent runs in its dependency's chain"
    );
    b.flush();
    // Back online: the server creates note 42.
    b.transport
        .respond_with(|request, _| match request.url.as_str() {
            "/api/notes" => json_answer(201, json!({"id": 42, "title": "Trip"})),
            _ => json_answer(201, json!({"ok": true})),
        });
    b.outbox.set_online(true);
    let report = b.flush();
    assert_eq!(report.completed, 2);
    let sent = b.transport.sent.borrow();
    let delivered: Vec<&HttpRequest> = sent
        .iter()
        .map(|(r, _)| r)
        .filter(|r| !r.url.is_empty())
        .collect();
    let last_two = &delivered[delivered.len() - 2..];
    assert_eq!(last_two[0].url, "/api/notes");
    assert_eq!(
        last_two[1].url, "/api/notes/42/files",
        "filled at send time, after the answer"
    );
    assert_eq!(
        last_two[1].body,
        Some(Body::Json(json!({"note": 42, "caption": "for Trip"})))
    );
    assert!(
        b.store.answers.borrow().is_empty(),
        "the kept answer goes once its last dependent is delivered"
    );
}

#[test]
fn a_dependent_of_a_failed_task_is_a_dead_letter_that_says_why() {
    let b = bench_with(None);
    b.transport
        .respond_with(|request, _| match request.url.as_str() {
            "/api/notes" => json_answer(422, json!({"error": "title missing"})),
            _ => json_answer(201, json!({})),
        });
    b.outbox.set_online(false);
    b.register(post("create", "/api/notes", json!({})));
    b.register(depending_on(
        post("attach", "/api/notes/{{noteId}}/files", json!({})),
        "create",
        &[("noteId", "body.id")],
    ));
    b.outbox.set_online(true);
    let report = b.flush();
    assert_eq!(report.failed, 2);
    assert_eq!(
        b.transport.sent_urls(),
        vec!["/api/notes"],
        "the dependent is never sent"
    );
    let failures = b.failures();
    assert_eq!(failures[0].1, ErrorClass::Validation);
    assert_eq!(failures[1].0, "attach");
    assert_eq!(failures[1].1, ErrorClass::Dependency);
    assert!(
        failures[1].2.starts_with("dependency failed: ")
            && failures[1].2.contains("\"create\"")
            && failures[1].2.contains("rejected: HTTP 422"),
        "{}",
        failures[1].2
    );
}

#[test]
fn an_answer_without_the_value_blocks_the_dependent() {
    let b = bench_with(None);
    b.transport
        .respond_with(|_, _| json_answer(201, json!({"ok": true})));
    b.outbox.set_online(false);
    b.register(post("create", "/api/notes", json!({})));
    b.register(depending_on(
        post("attach", "/api/notes/{{noteId}}", json!({})),
        "create",
        &[("noteId", "body.id")],
    ));
    b.outbox.set_online(true);
    b.flush();
    let failures = b.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].1, ErrorClass::Dependency);
    assert!(failures[0].2.contains("\"body.id\""), "{}", failures[0].2);
}

#[test]
fn placing_a_dependent_needs_a_known_dependency() {
    let b = bench_with(None);
    let mut orphan = depending_on(
        post("orphan", "/x/{{id}}", json!({})),
        "nobody",
        &[("id", "body.id")],
    );
    let refused = block_on(b.outbox.place_dependent(&mut orphan)).expect("store");
    assert!(refused.unwrap_err().contains("`dependsOn`"));

    // A dependency that already failed: the dependent is accepted and
    // dead-lettered at its turn, with the reason.
    b.transport.respond_with(|_, _| json_answer(400, json!({})));
    b.register(post("bad", "/api/bad", json!({})));
    b.flush();
    b.register(depending_on(
        post("after-bad", "/x/{{id}}", json!({})),
        "bad",
        &[("id", "body.id")],
    ));
    b.flush();
    let failures = b.failures();
    assert_eq!(failures.last().map(|f| f.1), Some(ErrorClass::Dependency));
}

#[test]
fn a_dependency_answered_while_its_dependent_is_being_registered_keeps_its_answer() {
    let b = bench_with(None);
    b.transport
        .respond_with(|request, _| match request.url.as_str() {
            "/api/notes" => json_answer(201, json!({"id": "n-7"})),
            _ => json_answer(201, json!({})),
        });
    b.outbox.set_online(false);
    b.register(post("create", "/api/notes", json!({})));
    let mut attach = depending_on(
        post("attach", "/api/notes/{{id}}/files", json!({})),
        "create",
        &[("id", "body.id")],
    );
    block_on(b.outbox.place_dependent(&mut attach))
        .expect("store")
        .expect("known");
    // The dependency is delivered before the dependent's registration commits.
    b.outbox.set_online(true);
    b.flush();
    assert!(b.store.answers.borrow().contains_key("create"));
    block_on(b.outbox.register(attach)).expect("register");
    b.flush();
    assert_eq!(
        b.transport.sent_urls(),
        vec!["/api/notes", "/api/notes/n-7/files"]
    );
    assert!(b.store.answers.borrow().is_empty());
}

// ----- storage: quota and loss -----

use tidesync::engine::storage::{LossSeen, StorageUsage};
use tidesync::engine::HealthStatus;

#[test]
fn health_reports_storage_past_eighty_and_ninety_five_percent() {
    let b = bench_with(None);
    assert_eq!(b.outbox.health().storage, None, "unknown until measured");
    b.outbox.note_storage(StorageUsage::new(50.0, 100.0, false));
    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.storage.map(|s| s.usage_ratio), Some(0.5));

    b.outbox.note_storage(StorageUsage::new(
        85.0 * 1_048_576.0,
        100.0 * 1_048_576.0,
        false,
    ));
    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(
        health
            .issues
            .contains(&"storage is 85% full (85.0 MB of 100.0 MB)".to_string()),
        "{health:?}"
    );
    assert!(health
        .recommendations
        .iter()
        .any(|r| r.contains("requestPersistentStorage()")));

    b.outbox.note_storage(StorageUsage::new(96.0, 100.0, true));
    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Critical);
    assert_eq!(
        health.issues.len(),
        1,
        "one storage issue, not two: {health:?}"
    );
}

#[test]
fn a_store_lost_under_the_client_gets_its_queue_back_exactly() {
    let b = bench_with(None);
    b.transport
        .respond_with(|request, _| match request.url.as_str() {
            "/bad" => json_answer(422, json!({})),
            _ => Err(TransportError::Network("offline".into())),
        });
    b.register(post("bad", "/bad", json!({})));
    b.flush();
    b.register(post("a", "/a", json!({"n": 1})));
    let mut second = post("b", "/b", json!({"n": 2}));
    second.ordering_key = Some("k".into());
    b.register(second);
    b.flush();
    let before: Vec<_> = ["a", "b"]
        .iter()
        .map(|id| b.store.task(id).expect("queued"))
        .collect();
    assert_eq!(b.outbox.status().failed_count, 1);

    b.store.wipe();
    let eviction = block_on(b.outbox.recover_lost_store()).expect("recover");
    assert_eq!(eviction.seen, LossSeen::WhileOpen);
    assert_eq!(eviction.restored_tasks, 2);
    assert_eq!(eviction.lost_failed_tasks, 1);
    for task in &before {
        assert_eq!(
            b.store.task(&task.id).as_ref(),
            Some(task),
            "written back exactly"
        );
    }
    assert_eq!(b.events.count("storage:evicted"), 1);
    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(
        health
            .issues
            .iter()
            .any(|i| i.contains("2 queued task(s) were written back")),
        "{health:?}"
    );

    // The counter moved past the restored tasks: a new registration takes a
    // later place, and the restored ones are delivered once online.
    b.register(post("c", "/c", json!({})));
    assert!(b.store.task("c").expect("queued").seq > before.iter().map(|t| t.seq).max().unwrap());
    b.transport.respond_with(|_, _| json_answer(201, json!({})));
    b.outbox.set_online(true);
    assert_eq!(b.flush().completed, 3);
}

#[test]
fn a_database_missing_on_open_is_reported_without_anything_to_restore() {
    let b = bench_with(None);
    let eviction = b.outbox.note_lost_on_open();
    assert_eq!(eviction.seen, LossSeen::OnOpen);
    assert_eq!(eviction.restored_tasks, 0);
    assert!(b
        .outbox
        .health()
        .issues
        .iter()
        .any(|i| i.contains("missing when the client opened")));
}
