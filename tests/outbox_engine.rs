#![cfg(not(target_arch = "wasm32"))]
//! The outbox engine, specified by example: `Outbox<TestPorts>` over an
//! in-memory store, a scripted transport and a virtual clock. Each test sets
//! up one situation, acts once, and checks one rule of
//! ARCHITECTURE.md ("Outbox", "Flush and retry").

use futures::executor::block_on;
use futures::future::join_all;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use tidesync::engine::time::Millis;
use tidesync::engine::{
    Body, BreakerOptions, Clock, ErrorClass, Event, HealthStatus, HttpRequest, HttpResponse,
    NewTask, Outbox, OutboxOptions, OutboxPorts, Priority, RetryOptions, StoreError, TaskState,
    TransportError,
};
use tidesync::store::MemoryStore;
use tidesync::testing::{
    LocalLock, ManualClock, QueuedTokens, RecordingEvents, ScriptedTransport, TestPorts, YieldOnce,
};

// ----- the test bench -----

const T0: Millis = 1_764_000_000_000.0;

struct Bench {
    outbox: Outbox<TestPorts>,
    store: Rc<MemoryStore>,
    transport: Rc<ScriptedTransport>,
    clock: Rc<ManualClock>,
    lock: Rc<LocalLock>,
    events: Rc<RecordingEvents>,
    tokens: Rc<QueuedTokens>,
}

fn bench() -> Bench {
    bench_with(OutboxOptions::default(), None)
}

fn bench_with(options: OutboxOptions, token: Option<&str>) -> Bench {
    let store = Rc::new(MemoryStore::new());
    let clock = Rc::new(ManualClock::new(T0));
    let transport = Rc::new(ScriptedTransport::new(clock.clone()));
    let lock = Rc::new(LocalLock::default());
    let events = Rc::new(RecordingEvents::default());
    let tokens = Rc::new(QueuedTokens::default());
    let outbox = block_on(Outbox::<TestPorts>::open(
        OutboxPorts {
            store: store.clone(),
            transport: transport.clone(),
            clock: clock.clone(),
            locks: lock.clone(),
            events: events.clone(),
            tokens: tokens.clone(),
        },
        options,
        token.map(str::to_owned),
    ))
    .expect("open");
    Bench {
        outbox,
        store,
        transport,
        clock,
        lock,
        events,
        tokens,
    }
}

/// Options where only the rule under test can intervene: no jitter, and a
/// breaker that never opens unless the test asks for one.
fn quiet_options() -> OutboxOptions {
    OutboxOptions {
        retry: RetryOptions {
            jitter: false,
            ..RetryOptions::default()
        },
        circuit_breaker: BreakerOptions {
            failure_threshold: 1_000,
            ..BreakerOptions::default()
        },
        ..OutboxOptions::default()
    }
}

/// A POST to `/items/{id}` whose body names its id and payload version.
fn post(id: &str) -> NewTask {
    let mut headers = std::collections::BTreeMap::new();
    headers.insert("x-id".to_owned(), id.to_owned());
    NewTask {
        id: id.into(),
        priority: Priority::Normal,
        ordering_key: None,
        request: HttpRequest {
            url: format!("/items/{id}"),
            method: "POST".into(),
            headers,
            body: Some(Body::Json(serde_json::json!({ "id": id, "v": 1 }))),
        },
        retry_on_failure: true,
        max_retention_time: None,
        depends_on: None,
    }
}

trait NewTaskExt {
    fn priority(self, priority: Priority) -> Self;
    fn key(self, key: &str) -> Self;
    fn url(self, url: &str) -> Self;
    fn version(self, v: u32) -> Self;
    fn without_retry(self) -> Self;
}

impl NewTaskExt for NewTask {
    fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }
    fn key(mut self, key: &str) -> Self {
        self.ordering_key = Some(key.into());
        self.request.headers.insert("x-key".into(), key.into());
        self
    }
    fn url(mut self, url: &str) -> Self {
        self.request.url = url.into();
        self
    }
    fn version(mut self, v: u32) -> Self {
        self.request.body = Some(Body::Json(
            serde_json::json!({ "id": self.id.clone(), "v": v }),
        ));
        self
    }
    fn without_retry(mut self) -> Self {
        self.retry_on_failure = false;
        self
    }
}

fn id_of(request: &HttpRequest) -> String {
    request.headers["x-id"].clone()
}

fn key_of(request: &HttpRequest) -> String {
    request
        .headers
        .get("x-key")
        .cloned()
        .unwrap_or_else(|| id_of(request))
}

fn version_of(request: &HttpRequest) -> u64 {
    match &request.body {
        Some(Body::Json(value)) => value["v"].as_u64().unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

fn answer(status: u16) -> Result<HttpResponse, TransportError> {
    Ok(HttpResponse::new(status))
}

fn answer_with_retry_after(status: u16, value: &str) -> Result<HttpResponse, TransportError> {
    let mut response = HttpResponse::new(status);
    response
        .headers
        .insert("retry-after".into(), value.to_owned());
    Ok(response)
}

fn network_down() -> Result<HttpResponse, TransportError> {
    Err(TransportError::Network("connection refused".into()))
}

impl Bench {
    fn register(&self, task: NewTask) -> tidesync::engine::Task {
        block_on(self.outbox.register(task)).expect("register")
    }

    fn flush(&self) -> tidesync::engine::FlushReport {
        block_on(self.outbox.flush()).expect("flush")
    }

    /// Flushes, then moves the clock to the next wakeup, until nothing is
    /// left to do (or `rounds` flushes ran).
    fn drive(&self, rounds: usize) {
        for _ in 0..rounds {
            let report = self.flush();
            if report.remaining == 0 {
                return;
            }
            match report.next_wakeup_at {
                Some(at) if at > self.clock.now() => self.clock.set(at),
                Some(_) => {}
                None => return,
            }
        }
        panic!("the outbox did not settle in {rounds} flushes");
    }

    fn sent_ids(&self) -> Vec<String> {
        self.transport
            .sent
            .borrow()
            .iter()
            .map(|(r, _)| id_of(r))
            .collect()
    }

    fn sent_count(&self) -> usize {
        self.transport.sent.borrow().len()
    }

    fn sent_header(&self, index: usize, name: &str) -> Option<String> {
        self.transport.sent.borrow()[index]
            .0
            .headers
            .get(name)
            .cloned()
    }

    fn respond(
        &self,
        responder: impl FnMut(&HttpRequest, Millis) -> Result<HttpResponse, TransportError> + 'static,
    ) {
        self.transport.respond_with(responder);
    }

    /// Answers with `statuses` in turn (then 200), whatever the request.
    fn respond_in_turn(&self, statuses: &[u16]) {
        let mut script = std::collections::VecDeque::from(statuses.to_vec());
        self.respond(move |_, _| answer(script.pop_front().unwrap_or(200)));
    }

    /// Wraps a responder so that every answer also checks that no other
    /// request of the same ordering key is in flight; returns the highest
    /// number of same-key requests seen in flight together.
    fn respond_watching_keys(
        &self,
        mut responder: impl FnMut(&HttpRequest, Millis) -> Result<HttpResponse, TransportError>
            + 'static,
    ) -> Rc<Cell<usize>> {
        let worst = Rc::new(Cell::new(0));
        let seen = worst.clone();
        let transport: Weak<ScriptedTransport> = Rc::downgrade(&self.transport);
        let mut finished: HashMap<String, usize> = HashMap::new();
        self.respond(move |request, now| {
            let key = key_of(request);
            let transport = transport.upgrade().unwrap();
            let started = transport
                .sent
                .borrow()
                .iter()
                .filter(|(r, _)| key_of(r) == key)
                .count();
            let done = finished.entry(key).or_default();
            seen.set(seen.get().max(started - *done));
            *done += 1;
            responder(request, now)
        });
        worst
    }

    fn events_named(&self, name: &str) -> Vec<Event> {
        self.events
            .events
            .borrow()
            .iter()
            .filter(|e| e.name() == name)
            .cloned()
            .collect()
    }

    fn failed_ids(&self) -> Vec<String> {
        block_on(self.outbox.list_failed())
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect()
    }

    fn state_of(&self, id: &str) -> Option<TaskState> {
        block_on(self.outbox.task_status(id))
            .unwrap()
            .map(|s| s.state)
    }
}

// ----- ordering -----

#[test]
fn higher_priority_runs_first_then_registration_order() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        None,
    );
    b.register(post("low-1").priority(Priority::Low));
    b.register(post("normal-2"));
    b.register(post("high-3").priority(Priority::High));
    b.register(post("low-4").priority(Priority::Low));
    b.register(post("high-5").priority(Priority::High));

    b.flush();

    assert_eq!(
        b.sent_ids(),
        ["high-3", "high-5", "normal-2", "low-1", "low-4"]
    );
}

#[test]
fn tasks_sharing_an_ordering_key_run_in_registration_order_whatever_their_priority() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        None,
    );
    b.register(post("doc-edit-1").key("doc").priority(Priority::Low));
    b.register(post("doc-edit-2").key("doc").priority(Priority::High));
    b.register(post("other").priority(Priority::Normal));

    b.flush();

    assert_eq!(b.sent_ids(), ["other", "doc-edit-1", "doc-edit-2"]);
}

#[test]
fn two_tasks_of_one_key_are_never_in_flight_together() {
    let b = bench();
    b.transport.latency.set(50.0);
    for i in 0..6 {
        b.register(post(&format!("a{i}")).key("a"));
        b.register(post(&format!("b{i}")).key("b"));
    }
    let overlap = b.respond_watching_keys(|_, _| answer(200));

    b.flush();

    assert_eq!(b.sent_count(), 12);
    assert_eq!(overlap.get(), 1, "one request per key at a time");
    assert_eq!(
        b.transport.max_in_flight.get(),
        2,
        "the two keys run side by side"
    );
    let a_order: Vec<String> = b
        .sent_ids()
        .into_iter()
        .filter(|id| id.starts_with('a'))
        .collect();
    assert_eq!(a_order, ["a0", "a1", "a2", "a3", "a4", "a5"]);
}

#[test]
fn up_to_concurrency_requests_are_in_flight_across_keys() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 3,
            ..OutboxOptions::default()
        },
        None,
    );
    b.transport.latency.set(100.0);
    for i in 0..10 {
        b.register(post(&format!("t{i}")));
    }

    let report = b.flush();

    assert_eq!(report.completed, 10);
    assert_eq!(b.transport.max_in_flight.get(), 3);
}

#[test]
fn a_task_waiting_for_its_retry_holds_back_its_key_and_no_other() {
    let b = bench_with(quiet_options(), None);
    b.register(post("a1").key("a"));
    b.register(post("a2").key("a"));
    b.register(post("b1").key("b"));
    let mut first = true;
    b.respond(move |request, _| {
        if id_of(request) == "a1" && std::mem::take(&mut first) {
            answer(503)
        } else {
            answer(200)
        }
    });

    let report = b.flush();

    assert_eq!(
        b.sent_ids(),
        ["a1", "b1"],
        "a2 waits behind a1, b1 does not"
    );
    assert_eq!(report.remaining, 2);
    assert_eq!(report.next_wakeup_at, Some(T0 + 1000.0));

    b.clock.set(T0 + 1000.0);
    b.flush();

    assert_eq!(b.sent_ids(), ["a1", "b1", "a1", "a2"]);
    assert_eq!(b.store.task_count(), 0);
}

// ----- registration -----

#[test]
fn a_thousand_registrations_in_one_tick_share_a_handful_of_transactions() {
    let b = bench();

    let results = block_on(join_all(
        (0..1000).map(|i| b.outbox.register(post(&format!("t{i}")))),
    ));

    assert!(results.iter().all(Result::is_ok));
    assert_eq!(b.store.task_count(), 1000);
    assert!(
        b.store.transactions.get() <= 3,
        "{} transactions for 1000 registrations",
        b.store.transactions.get()
    );
    assert_eq!(b.outbox.metrics().registered, 1000);
    assert_eq!(
        b.outbox.metrics().register_transactions,
        b.store.transactions.get()
    );
    let seqs: Vec<u64> = results.into_iter().map(|r| r.unwrap().seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq follows call order"
    );
}

#[test]
fn registrations_in_one_tick_all_fail_together_when_the_store_refuses_the_write() {
    let b = bench();
    *b.store.fail_writes.borrow_mut() = Some(StoreError::Quota("full".into()));

    let results = block_on(join_all(
        (0..5).map(|i| b.outbox.register(post(&format!("t{i}")))),
    ));

    assert!(results
        .iter()
        .all(|r| matches!(r, Err(StoreError::Quota(_)))));
    assert_eq!(b.outbox.status().pending_count, 0);
}

#[test]
fn re_registering_a_queued_id_replaces_its_payload_and_keeps_its_place() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        None,
    );
    let first = b.register(post("profile").version(1));
    b.register(post("later"));

    let second = b.register(post("profile").version(2));
    b.flush();

    assert_eq!(second.seq, first.seq);
    assert!(
        second.revision > first.revision,
        "a re-registration is a new revision"
    );
    assert_eq!(
        b.sent_ids(),
        ["profile", "later"],
        "sent once, in its old place"
    );
    assert_eq!(version_of(&b.transport.sent.borrow()[0].0), 2);
}

#[test]
fn re_registering_while_in_flight_sends_the_new_payload_after_the_old_one() {
    let b = bench();
    let v1 = b.register(post("profile").version(1));
    let store = b.store.clone();
    let stored_revision_when_v1_answered = Rc::new(Cell::new(None));
    let seen = stored_revision_when_v1_answered.clone();
    b.respond(move |request, _| {
        if version_of(request) == 1 {
            seen.set(store.task("profile").map(|t| t.revision));
        }
        answer(200)
    });

    // The re-registration is issued first so that its commit lands while
    // the flush's request is in flight.
    let (registered, flushed) = block_on(futures::future::join(
        b.outbox.register(post("profile").version(2)),
        b.outbox.flush(),
    ));
    registered.unwrap();
    flushed.unwrap();
    b.drive(5);

    assert!(
        stored_revision_when_v1_answered
            .get()
            .is_some_and(|r| r > v1.revision),
        "v2 was stored while v1 was in flight"
    );
    let versions: Vec<u64> = b
        .transport
        .sent
        .borrow()
        .iter()
        .map(|(r, _)| version_of(r))
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(b.store.task_count(), 0);
    assert_eq!(b.events_named("sync:complete").len(), 2);
}

// ----- error classes -----

#[test]
fn network_failures_retry_forever_with_capped_backoff_and_never_exhaust_the_budget() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 2,
                base_delay: 1000.0,
                max_delay: 4000.0,
                backoff_multiplier: 2.0,
                jitter: false,
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("t"));
    let mut failures = 10;
    b.respond(move |_, _| {
        if failures > 0 {
            failures -= 1;
            network_down()
        } else {
            answer(200)
        }
    });

    b.drive(50);

    assert!(b.failed_ids().is_empty());
    assert_eq!(b.sent_count(), 11);
    assert_eq!(b.events_named("sync:complete").len(), 1);
    let delays: Vec<Millis> = b
        .events_named("sync:retry")
        .into_iter()
        .map(|e| match e {
            Event::Retry { delay, .. } => delay,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        delays,
        [1000.0, 2000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0, 4000.0]
    );
}

#[test]
fn a_timeout_is_retried_and_counts_against_the_budget() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 1,
                ..quiet_options().retry
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("slow"));
    b.respond(|_, _| Err(TransportError::Timeout(30_000)));

    b.drive(10);

    assert_eq!(b.sent_count(), 2);
    let failed = block_on(b.outbox.list_failed()).unwrap();
    let classes: Vec<ErrorClass> = failed[0].task.errors.iter().map(|e| e.class).collect();
    assert_eq!(classes, [ErrorClass::Timeout, ErrorClass::Timeout]);
}

#[test]
fn statuses_408_429_and_5xx_are_retried_then_delivered() {
    for status in [408, 429, 500, 502, 503, 504] {
        let b = bench_with(quiet_options(), None);
        b.register(post("t"));
        b.respond_in_turn(&[status]);

        b.drive(10);

        let retries = b.events_named("sync:retry");
        assert_eq!(retries.len(), 1, "{status}");
        assert!(
            matches!(&retries[0], Event::Retry { error, .. }
                if error.class == ErrorClass::Retryable && error.status == Some(status)),
            "{status}"
        );
        assert_eq!(b.events_named("sync:complete").len(), 1, "{status}");
        assert!(b.failed_ids().is_empty(), "{status}");
    }
}

#[test]
fn retry_after_sets_the_next_attempt_exactly() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t"));
    let mut first = true;
    b.respond(move |_, _| {
        if std::mem::take(&mut first) {
            answer_with_retry_after(429, "7")
        } else {
            answer(200)
        }
    });

    let report = b.flush();

    assert_eq!(
        b.store.task("t").unwrap().next_attempt_at,
        Some(T0 + 7000.0)
    );
    assert_eq!(report.next_wakeup_at, Some(T0 + 7000.0));
    assert!(matches!(
        &b.events_named("sync:retry")[0],
        Event::Retry { delay, .. } if *delay == 7000.0
    ));

    b.clock.set(T0 + 6999.0);
    b.flush();
    assert_eq!(b.sent_count(), 1, "not before Retry-After");

    b.clock.set(T0 + 7000.0);
    b.flush();
    assert_eq!(b.sent_count(), 2);
    assert_eq!(b.store.task_count(), 0);
}

#[test]
fn validation_errors_go_to_the_dead_letters_and_are_never_retried() {
    for status in [400, 404, 422] {
        let b = bench();
        b.register(post("bad"));
        b.respond(move |_, _| answer(status));

        b.flush();
        b.clock.advance(3_600_000.0);
        b.flush();

        assert_eq!(b.sent_count(), 1, "{status}");
        assert_eq!(b.store.task_count(), 0, "{status}");
        let failed = block_on(b.outbox.list_failed()).unwrap();
        assert_eq!(failed.len(), 1, "{status}");
        assert_eq!(failed[0].task.errors.len(), 1);
        assert_eq!(failed[0].task.errors[0].class, ErrorClass::Validation);
        assert_eq!(failed[0].task.errors[0].status, Some(status));
        assert_eq!(b.events_named("sync:failed").len(), 1, "{status}");
        assert!(b.events_named("sync:retry").is_empty(), "{status}");
    }
}

#[test]
fn a_conflict_goes_to_the_dead_letters_as_a_conflict() {
    let b = bench();
    b.register(post("stale"));
    b.respond(|_, _| answer(409));

    b.flush();

    let failed = block_on(b.outbox.list_failed()).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].task.errors[0].class, ErrorClass::Conflict);
    assert!(matches!(
        &b.events_named("sync:failed")[0],
        Event::Failed { error, .. } if error.status == Some(409)
    ));
}

#[test]
fn refused_credentials_pause_everything_until_a_new_token_is_set() {
    for status in [401, 403] {
        let b = bench_with(OutboxOptions::default(), Some("expired"));
        b.register(post("t1"));
        b.register(post("t2"));
        b.respond(move |request, _| {
            if request.headers.get("Authorization").map(String::as_str) == Some("Bearer renewed") {
                answer(200)
            } else {
                answer(status)
            }
        });
        b.transport.latency.set(10.0);

        b.flush();
        let sent_while_refused = b.sent_count();
        b.clock.advance(3_600_000.0);
        b.flush();

        assert_eq!(
            b.events_named("auth:required").len(),
            1,
            "{status}: auth:required emitted once"
        );
        assert!(b.outbox.status().auth_required);
        assert_eq!(b.outbox.health().status, HealthStatus::Critical);
        assert_eq!(b.sent_count(), sent_while_refused, "{status}: paused");
        assert_eq!(b.store.task_count(), 2, "{status}: nothing lost");

        b.outbox.set_token(Some("renewed".into()));
        b.flush();

        assert_eq!(b.store.task_count(), 0, "{status}: resumed");
        assert_eq!(b.events_named("sync:complete").len(), 2);
        assert!(!b.outbox.status().auth_required);
        assert!(b.failed_ids().is_empty());
    }
}

#[test]
fn a_refused_token_emits_auth_required_once_naming_the_task() {
    let b = bench_with(OutboxOptions::default(), Some("expired"));
    b.register(post("t1"));
    b.respond(|_, _| answer(401));

    b.flush();

    assert!(matches!(
        b.events_named("auth:required").as_slice(),
        [Event::AuthRequired { status: Some(401), task_id }] if task_id == "t1"
    ));
    assert_eq!(
        b.store.task("t1").unwrap().attempts,
        0,
        "not a failed attempt"
    );
}

#[test]
fn a_fresh_token_from_get_token_retries_transparently() {
    let b = bench_with(OutboxOptions::default(), Some("expired"));
    b.tokens.tokens.borrow_mut().push("fresh".into());
    b.register(post("t"));
    b.respond(
        |request, _| match request.headers.get("Authorization").map(String::as_str) {
            Some("Bearer fresh") => answer(200),
            _ => answer(401),
        },
    );

    b.flush();

    assert!(b.events_named("auth:required").is_empty());
    assert_eq!(b.store.task_count(), 0);
    assert_eq!(b.sent_count(), 2);
    assert_eq!(b.tokens.asked.get(), 1);
    assert_eq!(b.outbox.token().as_deref(), Some("fresh"));
}

#[test]
fn concurrent_requests_refused_for_the_same_stale_token_need_only_one_fresh_token() {
    let b = bench_with(OutboxOptions::default(), Some("expired"));
    b.tokens.tokens.borrow_mut().push("fresh".into());
    for i in 0..4 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(
        |request, _| match request.headers.get("Authorization").map(String::as_str) {
            Some("Bearer fresh") => answer(200),
            _ => answer(401),
        },
    );

    b.flush();

    assert_eq!(b.transport.max_in_flight.get(), 4);
    assert!(b.events_named("auth:required").is_empty());
    assert!(!b.outbox.status().auth_required);
    assert_eq!(b.store.task_count(), 0);
    assert_eq!(b.tokens.asked.get(), 1);
}

#[test]
fn a_server_refusing_every_token_does_not_loop_through_get_token() {
    let b = bench_with(OutboxOptions::default(), Some("t0"));
    *b.tokens.tokens.borrow_mut() = (1..=100).map(|i| format!("t{i}")).collect();
    b.register(post("t"));
    b.respond(|_, _| answer(401));

    b.flush();

    assert!(b.sent_count() <= 2, "{} requests", b.sent_count());
    assert_eq!(b.events_named("auth:required").len(), 1);
    assert!(b.outbox.status().auth_required);
}

#[test]
fn the_bearer_token_goes_to_the_app_and_its_server_only() {
    let b = bench_with(
        OutboxOptions {
            server_url: Some("https://api.example.com".into()),
            concurrency: 1,
            ..OutboxOptions::default()
        },
        Some("secret"),
    );
    let cases = [
        ("relative", "/items/1", true),
        ("server", "https://api.example.com/items/1", true),
        ("server-query", "https://api.example.com?x=1", true),
        (
            "third-party",
            "https://analytics.example.net/collect",
            false,
        ),
        ("lookalike", "https://api.example.com.evil.net/items", false),
        ("userinfo", "https://api.example.com@evil.net/items", false),
        ("protocol-relative", "//evil.net/items", false),
        ("backslash", "/\\evil.net/items", false),
    ];
    for (id, url, _) in cases {
        b.register(post(id).url(url));
    }

    b.flush();

    for (index, (id, url, expected)) in cases.iter().enumerate() {
        assert_eq!(b.sent_ids()[index], *id);
        let sent = b.sent_header(index, "Authorization");
        assert_eq!(sent.is_some(), *expected, "{url}: Authorization = {sent:?}");
        if *expected {
            assert_eq!(sent.as_deref(), Some("Bearer secret"));
        }
    }
}

#[test]
fn the_idempotency_key_is_stable_across_retries_and_new_for_a_new_payload() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t").version(1));
    b.respond_in_turn(&[503, 503]);

    b.drive(10);
    b.register(post("t").version(2));
    b.drive(10);

    let keys: Vec<String> = (0..4)
        .map(|i| b.sent_header(i, "Idempotency-Key").unwrap())
        .collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[1], keys[2]);
    assert_ne!(keys[2], keys[3], "a new payload is a new operation");
}

// ----- backoff -----

#[test]
fn backoff_without_jitter_doubles_up_to_max_delay() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 6,
                base_delay: 1000.0,
                max_delay: 8000.0,
                backoff_multiplier: 2.0,
                jitter: false,
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("t"));
    b.respond(|_, _| answer(503));

    b.drive(20);

    let delays: Vec<Millis> = b
        .events_named("sync:retry")
        .into_iter()
        .map(|e| match e {
            Event::Retry { delay, .. } => delay,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(delays, [1000.0, 2000.0, 4000.0, 8000.0, 8000.0, 8000.0]);
}

#[test]
fn jittered_delays_fall_between_zero_and_the_ceiling_of_their_attempt() {
    let options = OutboxOptions {
        retry: RetryOptions {
            max_retries: 6,
            base_delay: 1000.0,
            max_delay: 16_000.0,
            backoff_multiplier: 2.0,
            jitter: true,
        },
        ..quiet_options()
    };
    let b = bench_with(options.clone(), None);
    for i in 0..20 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| answer(503));

    b.drive(500);

    let mut delays = Vec::new();
    for event in b.events_named("sync:retry") {
        let Event::Retry { task, delay, .. } = event else {
            unreachable!()
        };
        let ceiling = (options.retry.base_delay * 2f64.powi(task.attempts as i32 - 1))
            .min(options.retry.max_delay);
        assert!(
            (0.0..=ceiling).contains(&delay),
            "attempt {}: {delay} outside [0, {ceiling}]",
            task.attempts
        );
        delays.push((delay / ceiling * 10.0) as usize);
    }
    assert_eq!(delays.len(), 20 * 6);
    let distinct_deciles: std::collections::HashSet<usize> = delays.into_iter().collect();
    assert!(
        distinct_deciles.len() >= 8,
        "jitter spreads delays over the range: {distinct_deciles:?}"
    );
}

#[test]
fn exceeding_max_retries_dead_letters_the_task_with_every_error_seen() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 3,
                ..quiet_options().retry
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("doomed"));
    b.respond_in_turn(&[500, 503, 502, 504]);

    b.drive(20);

    assert_eq!(b.sent_count(), 4, "the first attempt and three retries");
    let failed = block_on(b.outbox.list_failed()).unwrap();
    assert_eq!(failed.len(), 1);
    let statuses: Vec<Option<u16>> = failed[0].task.errors.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [Some(500), Some(503), Some(502), Some(504)]);
    assert_eq!(b.events_named("sync:failed").len(), 1);
    assert_eq!(b.events_named("sync:retry").len(), 3);
    assert_eq!(b.store.task_count(), 0);
}

#[test]
fn network_failures_between_server_errors_do_not_reset_the_retry_budget() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                max_retries: 2,
                ..quiet_options().retry
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("t"));
    let mut sent = 0;
    // 503, then a long offline spell, then 503 forever.
    b.respond(move |_, _| {
        sent += 1;
        match sent {
            1 => answer(503),
            2..=40 => network_down(),
            _ => answer(503),
        }
    });

    b.drive(200);

    let failed = block_on(b.outbox.list_failed()).unwrap();
    assert_eq!(failed.len(), 1);
    let server_errors = failed[0]
        .task
        .errors
        .iter()
        .filter(|e| e.class == ErrorClass::Retryable)
        .count();
    assert_eq!(server_errors, 3, "every budget-counting error is kept");
    assert_eq!(b.sent_count(), 42);
}

#[test]
fn without_retry_on_failure_the_first_retryable_failure_is_a_dead_letter() {
    let b = bench();
    b.register(post("once").without_retry());
    b.respond(|_, _| answer(503));

    b.flush();

    assert_eq!(b.sent_count(), 1);
    assert_eq!(b.failed_ids(), ["once"]);
    assert!(b.events_named("sync:retry").is_empty());
}

// ----- circuit breaker -----

fn breaker_options() -> OutboxOptions {
    OutboxOptions {
        retry: RetryOptions {
            max_retries: 100,
            base_delay: 1.0,
            max_delay: 1.0,
            backoff_multiplier: 1.0,
            jitter: false,
        },
        circuit_breaker: BreakerOptions {
            failure_threshold: 3,
            cooldown: 1000.0,
            max_cooldown: 4000.0,
        },
        ..OutboxOptions::default()
    }
}

#[test]
fn the_breaker_opens_after_the_threshold_and_lets_nothing_through_while_open() {
    let b = bench_with(breaker_options(), None);
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| answer(503));

    let report = b.flush();

    assert!(matches!(
        b.events_named("circuit:open").as_slice(),
        [Event::CircuitOpen { until, cooldown: 1000.0 }] if *until == T0 + 1000.0
    ));
    assert_eq!(b.outbox.status().circuit, "open");
    assert_eq!(report.next_wakeup_at, Some(T0 + 1000.0));

    b.clock.set(T0 + 999.0);
    b.flush();

    assert_eq!(
        b.sent_count(),
        3,
        "nothing is sent while the circuit is open"
    );
}

#[test]
fn a_flush_behind_an_open_circuit_does_not_read_the_queue_back_from_storage() {
    let b = bench_with(breaker_options(), None);
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| answer(503));
    b.flush();
    assert_eq!(b.outbox.status().circuit, "open");
    let loads = b.store.loads.get();

    b.register(post("while-open"));
    let report = b.flush();

    assert_eq!(
        b.store.loads.get(),
        loads,
        "no O(queue) read when nothing can be sent"
    );
    assert_eq!(
        report.next_wakeup_at,
        Some(T0 + 1000.0),
        "woken for the probe"
    );
    assert_eq!(b.outbox.status().pending_count, 4);
}

#[test]
fn a_half_open_breaker_sends_one_probe_and_a_failed_probe_doubles_the_cooldown() {
    let b = bench_with(breaker_options(), None);
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| answer(503));
    b.flush();

    b.clock.set(T0 + 1000.0);
    b.flush();

    assert_eq!(b.sent_count(), 4, "exactly one probe");
    let cooldowns: Vec<Millis> = b
        .events_named("circuit:open")
        .into_iter()
        .map(|e| match e {
            Event::CircuitOpen { cooldown, .. } => cooldown,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(cooldowns, [1000.0, 2000.0]);

    b.clock.set(T0 + 3000.0);
    b.flush();
    b.clock.set(T0 + 7000.0);
    b.flush();
    b.clock.set(T0 + 11_000.0);
    b.flush();
    let cooldowns: Vec<Millis> = b
        .events_named("circuit:open")
        .into_iter()
        .map(|e| match e {
            Event::CircuitOpen { cooldown, .. } => cooldown,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        cooldowns,
        [1000.0, 2000.0, 4000.0, 4000.0, 4000.0],
        "capped"
    );
}

#[test]
fn a_successful_probe_closes_the_breaker_and_the_rest_follows() {
    let b = bench_with(breaker_options(), None);
    b.transport.latency.set(10.0);
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| answer(503));
    let opened = b.flush();
    b.transport.max_in_flight.set(0);
    b.respond(|_, _| answer(200));

    b.clock.set(opened.next_wakeup_at.unwrap());
    b.flush();

    let sent = b.transport.sent.borrow();
    let probe_at = sent[3].1;
    assert!(
        sent[4..].iter().all(|(_, at)| *at >= probe_at + 10.0),
        "the others wait for the probe's answer"
    );
    drop(sent);
    assert_eq!(b.events_named("circuit:close").len(), 1);
    assert_eq!(b.outbox.status().circuit, "closed");
    assert_eq!(b.store.task_count(), 0);
}

// ----- online and offline -----

#[test]
fn coming_online_makes_every_waiting_task_due_now_once() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                base_delay: 60_000.0,
                ..quiet_options().retry
            },
            ..quiet_options()
        },
        None,
    );
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| answer(503));
    b.flush();
    assert_eq!(b.sent_count(), 3);

    b.outbox.set_online(true);
    assert!(b
        .outbox
        .queued_tasks()
        .iter()
        .all(|t| t.next_attempt_at.is_none()));
    b.flush();
    b.flush();

    assert_eq!(
        b.sent_count(),
        6,
        "each waiting task once, then backoff again"
    );
    assert!(b
        .outbox
        .queued_tasks()
        .iter()
        .all(|t| t.next_attempt_at.unwrap() > b.clock.now()));
}

#[test]
fn after_a_network_failure_only_one_probe_is_in_flight_at_a_time() {
    let b = bench_with(quiet_options(), None);
    b.transport.latency.set(10.0);
    for i in 0..8 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| network_down());
    b.flush();
    assert!(!b.outbox.is_online());
    assert_eq!(b.events_named("offline").len(), 1);

    b.transport.max_in_flight.set(0);
    b.clock.advance(3_600_000.0);
    b.flush();

    assert_eq!(b.transport.max_in_flight.get(), 1);
    assert_eq!(b.sent_count(), 16);
}

#[test]
fn an_http_answer_is_evidence_of_being_online_again() {
    let b = bench_with(quiet_options(), None);
    b.transport.latency.set(10.0);
    for i in 0..8 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| network_down());
    b.flush();
    b.respond(|_, _| answer(200));
    b.transport.max_in_flight.set(0);

    b.clock.advance(3_600_000.0);
    b.flush();

    assert!(b.outbox.is_online());
    assert_eq!(b.events_named("online").len(), 1);
    assert_eq!(b.store.task_count(), 0);
    assert_eq!(
        b.transport.max_in_flight.get(),
        OutboxOptions::default().concurrency,
        "full concurrency again"
    );
}

#[test]
fn the_online_event_is_believed_only_after_a_probe_gets_an_answer() {
    let b = bench_with(quiet_options(), None);
    b.transport.latency.set(10.0);
    b.outbox.set_online(false);
    for i in 0..8 {
        b.register(post(&format!("t{i}")));
    }
    b.outbox.set_online(true);
    assert!(
        !b.outbox.is_online(),
        "navigator.onLine alone is not evidence"
    );
    assert_eq!(b.events_named("online").len(), 0);

    b.flush();

    let sent_at: Vec<f64> = b
        .transport
        .sent
        .borrow()
        .iter()
        .map(|(_, at)| *at)
        .collect();
    assert!(
        sent_at[1..].iter().all(|at| *at > sent_at[0]),
        "one probe first, the rest after its answer: {sent_at:?}"
    );
    assert!(b.outbox.is_online(), "the probe's answer is");
    assert_eq!(b.events_named("online").len(), 1);
    assert_eq!(b.sent_count(), 8, "then every waiting task goes");
    assert_eq!(
        b.transport.max_in_flight.get(),
        OutboxOptions::default().concurrency,
        "at full concurrency after the probe"
    );
}

#[test]
fn the_online_event_is_believed_at_once_when_nothing_waits() {
    let b = bench_with(quiet_options(), None);
    b.outbox.set_online(false);
    b.outbox.set_online(true);
    assert!(b.outbox.is_online());
    assert_eq!(b.events_named("online").len(), 1);
}

// ----- one flush at a time, periodic sync, close -----

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
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }

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
    for i in 0..5 {
        b.register(post(&format!("t{i}")));
    }

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

// ----- status, metrics, health -----

#[test]
fn status_and_task_status_follow_a_task_from_pending_to_in_flight_to_complete() {
    let b = bench();
    b.register(post("t"));
    assert_eq!(b.outbox.status().pending_count, 1);
    assert_eq!(b.state_of("t"), Some(TaskState::Pending));

    let during = block_on(futures::future::join(b.outbox.flush(), async {
        while b.sent_count() == 0 {
            YieldOnce::new().await;
        }
        let state = b.outbox.task_status("t").await.unwrap().unwrap().state;
        (b.outbox.status(), state)
    }))
    .1;

    assert_eq!(during.0.in_flight_count, 1);
    assert!(during.0.is_sync_in_progress);
    assert_eq!(during.1, TaskState::InFlight);
    let after = b.outbox.status();
    assert_eq!(after.pending_count, 0);
    assert_eq!(after.in_flight_count, 0);
    assert_eq!(after.total_synced, 1);
    assert_eq!(after.last_sync_ok, Some(true));
    assert!(!after.is_sync_in_progress);
    assert_eq!(b.state_of("t"), Some(TaskState::Complete));
    assert_eq!(b.state_of("unknown"), None);
}

#[test]
fn task_status_of_a_retrying_task_shows_attempts_and_the_next_attempt() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t"));
    b.respond(|_, _| answer(503));

    b.flush();

    let status = block_on(b.outbox.task_status("t")).unwrap().unwrap();
    assert_eq!(status.state, TaskState::Pending);
    assert_eq!(status.attempts, 1);
    assert_eq!(status.next_attempt_at, Some(T0 + 1000.0));
    assert_eq!(status.last_error.unwrap().status, Some(503));
    assert_eq!(b.outbox.status().last_sync_ok, Some(false));
}

#[test]
fn a_dead_letter_shows_as_failed_and_degrades_health() {
    let b = bench();
    assert_eq!(b.outbox.health().status, HealthStatus::Healthy);
    b.register(post("bad"));
    b.respond(|_, _| answer(422));

    b.flush();

    assert_eq!(b.state_of("bad"), Some(TaskState::Failed));
    assert_eq!(b.outbox.status().failed_count, 1);
    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(health.issues.iter().any(|i| i.contains("dead letters")));
    assert!(!health.recommendations.is_empty());
}

#[test]
fn metrics_count_registrations_requests_outcomes_and_flushes() {
    let b = bench_with(quiet_options(), None);
    b.transport.latency.set(20.0);
    b.register(post("ok"));
    b.register(post("bad"));
    b.register(post("flaky"));
    b.respond(|request, _| match id_of(request).as_str() {
        "bad" => answer(422),
        "flaky" => network_down(),
        _ => answer(200),
    });

    b.flush();

    let m = b.outbox.metrics();
    assert_eq!(m.registered, 3);
    assert_eq!(m.flushes, 1);
    assert_eq!(m.requests_sent, 3);
    assert_eq!(m.completed, 1);
    assert_eq!(m.failed, 1);
    assert_eq!(m.retried, 1);
    assert_eq!(m.network_errors, 1);
    assert!(m.average_request_ms > 0.0);
}

#[test]
fn an_open_circuit_makes_health_critical() {
    let b = bench_with(breaker_options(), None);
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| answer(503));

    b.flush();

    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Critical);
    assert!(health.issues.iter().any(|i| i.contains("circuit")));
}

// ----- dead letters and durability -----

#[test]
fn a_dead_letter_retried_by_the_app_runs_again_with_a_fresh_budget() {
    let b = bench();
    b.register(post("t"));
    b.respond_in_turn(&[422]);
    b.flush();

    assert!(block_on(b.outbox.retry_failed("t")).unwrap());
    b.flush();

    assert_eq!(b.sent_count(), 2);
    assert!(b.failed_ids().is_empty());
    assert_eq!(b.outbox.status().failed_count, 0);
    assert_eq!(b.state_of("t"), Some(TaskState::Complete));
}

#[test]
fn a_store_failure_while_settling_leaves_the_task_queued_and_retryable() {
    let b = bench();
    b.register(post("t"));
    b.register(post("u").key("t"));
    let store = b.store.clone();
    let mut first = true;
    b.respond(move |_, _| {
        if std::mem::take(&mut first) {
            *store.fail_writes.borrow_mut() = Some(StoreError::Unavailable("aborted".into()));
        }
        answer(200)
    });

    assert!(block_on(b.outbox.flush()).is_err());
    *b.store.fail_writes.borrow_mut() = None;
    b.flush();

    assert_eq!(b.store.task_count(), 0, "nothing stuck");
    assert_eq!(b.outbox.status().in_flight_count, 0);
    assert_eq!(b.sent_ids(), ["t", "t", "u"], "t is replayed, then u");
    let keys: Vec<String> = (0..2)
        .map(|i| b.sent_header(i, "Idempotency-Key").unwrap())
        .collect();
    assert_eq!(keys[0], keys[1], "the replay is harmless");
}

#[test]
fn reopening_over_the_same_store_finds_every_unfinished_task() {
    let b = bench();
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }
    let reopened = block_on(Outbox::<TestPorts>::open(
        OutboxPorts {
            store: b.store.clone(),
            transport: b.transport.clone(),
            clock: b.clock.clone(),
            locks: b.lock.clone(),
            events: b.events.clone(),
            tokens: b.tokens.clone(),
        },
        OutboxOptions::default(),
        None,
    ))
    .unwrap();

    block_on(reopened.flush()).unwrap();

    assert_eq!(b.sent_ids(), ["t0", "t1", "t2"]);
    assert_eq!(b.store.task_count(), 0);
}

#[test]
fn tasks_registered_by_another_tab_are_picked_up_by_the_next_flush() {
    let b = bench();
    let other_tab = bench_with(OutboxOptions::default(), None);
    let shared = block_on(Outbox::<TestPorts>::open(
        OutboxPorts {
            store: b.store.clone(),
            transport: other_tab.transport.clone(),
            clock: other_tab.clock.clone(),
            locks: other_tab.lock.clone(),
            events: other_tab.events.clone(),
            tokens: other_tab.tokens.clone(),
        },
        OutboxOptions::default(),
        None,
    ))
    .unwrap();
    block_on(shared.register(post("from-the-other-tab"))).unwrap();

    b.flush();

    assert_eq!(b.sent_ids(), ["from-the-other-tab"]);
    assert_eq!(b.store.task_count(), 0);
}

// ----- more retry and lifecycle rules -----

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t"));
    let mut first = true;
    b.respond(move |_, _| {
        if std::mem::take(&mut first) {
            answer_with_retry_after(503, "Mon, 24 Nov 2025 16:00:30 GMT")
        } else {
            answer(200)
        }
    });

    b.flush();

    assert_eq!(b.clock.now(), T0, "T0 is 2025-11-24T16:00:00Z");
    assert_eq!(
        b.store.task("t").unwrap().next_attempt_at,
        Some(T0 + 30_000.0)
    );
}

#[test]
fn re_registering_a_task_waiting_for_a_retry_makes_the_new_payload_due_with_a_fresh_budget() {
    let b = bench_with(
        OutboxOptions {
            retry: RetryOptions {
                base_delay: 60_000.0,
                ..quiet_options().retry
            },
            ..quiet_options()
        },
        None,
    );
    b.register(post("t").version(1));
    b.respond_in_turn(&[503]);
    b.flush();

    let again = b.register(post("t").version(2));
    b.flush();

    assert_eq!(again.attempts, 0);
    assert!(again.errors.is_empty());
    assert_eq!(
        b.sent_count(),
        2,
        "sent at once, without waiting for v1's backoff"
    );
    assert_eq!(version_of(&b.transport.sent.borrow()[1].0), 2);
    assert_eq!(b.store.task_count(), 0);
}

#[test]
fn a_discarded_dead_letter_is_gone_for_good() {
    let b = bench();
    b.register(post("t"));
    b.respond(|_, _| answer(400));
    b.flush();

    assert!(block_on(b.outbox.discard_failed("t")).unwrap());

    assert!(b.failed_ids().is_empty());
    assert_eq!(b.outbox.status().failed_count, 0);
    assert_eq!(b.state_of("t"), None);
    assert!(!block_on(b.outbox.retry_failed("t")).unwrap());
}

#[test]
fn a_flush_reports_progress_for_every_settled_task() {
    let b = bench();
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }

    b.flush();

    let progress: Vec<(usize, usize)> = b
        .events_named("sync:progress")
        .into_iter()
        .map(|e| match e {
            Event::Progress { done, total, .. } => (done, total),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(progress, [(1, 3), (2, 3), (3, 3)]);
    assert!(
        b.events_named("status").len() >= 2,
        "status before and after"
    );
}

#[test]
fn a_task_waiting_for_more_than_an_hour_degrades_health() {
    let b = bench_with(quiet_options(), None);
    b.register(post("t"));
    b.respond(|_, _| network_down());
    b.flush();
    b.outbox.set_online(true);

    b.clock.advance(3_600_001.0);

    let health = b.outbox.health();
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(health
        .issues
        .iter()
        .any(|i| i.contains("more than an hour")));
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

#[test]
fn a_closed_breaker_starts_again_from_the_first_cooldown() {
    let b = bench_with(breaker_options(), None);
    for i in 0..3 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| answer(503));
    b.flush();
    b.clock.set(T0 + 1000.0);
    b.flush(); // the probe fails: cooldown 2000
    b.respond(|_, _| answer(200));
    b.clock.set(T0 + 3000.0);
    b.flush(); // the probe succeeds: closed
    for i in 3..6 {
        b.register(post(&format!("t{i}")));
    }
    b.respond(|_, _| answer(503));

    b.flush();

    let cooldowns: Vec<Millis> = b
        .events_named("circuit:open")
        .into_iter()
        .map(|e| match e {
            Event::CircuitOpen { cooldown, .. } => cooldown,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(cooldowns, [1000.0, 2000.0, 1000.0]);
    assert_eq!(b.events_named("circuit:close").len(), 1);
}

#[test]
fn a_refusal_the_token_never_reached_is_a_dead_letter_not_a_pause() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 1,
            ..OutboxOptions::default()
        },
        Some("secret"),
    );
    b.register(post("third-party").url("https://partner.example.net/hook"));
    let mut own_header = post("own-header");
    own_header
        .request
        .headers
        .insert("Authorization".into(), "Basic dXNlcg==".into());
    b.register(own_header);
    b.register(post("mine"));
    b.respond(|request, _| {
        if request.headers.contains_key("x-key") || request.url.starts_with("/items/mine") {
            answer(200)
        } else {
            answer(401)
        }
    });

    b.flush();

    assert!(b.events_named("auth:required").is_empty());
    assert!(!b.outbox.status().auth_required);
    assert_eq!(b.failed_ids(), ["own-header", "third-party"]);
    let failed = block_on(b.outbox.list_failed()).unwrap();
    assert!(failed
        .iter()
        .all(|f| f.task.errors[0].class == ErrorClass::Permission));
    assert_eq!(
        b.store.task("mine"),
        None,
        "the app's own work went through"
    );
}

#[test]
fn answers_that_arrive_together_leave_the_store_in_one_transaction() {
    let b = bench_with(
        OutboxOptions {
            concurrency: 4,
            ..OutboxOptions::default()
        },
        None,
    );
    for i in 0..8 {
        b.register(post(&format!("t{i}")));
    }

    b.flush();

    let metrics = b.outbox.metrics();
    assert_eq!(metrics.completed, 8);
    assert_eq!(b.store.task_count(), 0);
    assert!(
        metrics.ack_transactions < 8,
        "group-committed: {} transactions for 8 answers",
        metrics.ack_transactions
    );
    assert_eq!(b.events_named("sync:complete").len(), 8);
}
