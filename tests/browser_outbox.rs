#![cfg(target_arch = "wasm32")]
//! The outbox on its browser ports in a real Chromium: IndexedDB, fetch to a
//! real HTTP endpoint on 127.0.0.1 (the e2e test server, whose URL
//! scripts/test.sh passes in TIDESYNC_TEST_ENDPOINT), Web Locks.

use futures::future::join_all;
use std::rc::Rc;
use tidesync::engine::events::Event;
use tidesync::engine::options::OutboxOptions;
use tidesync::engine::ports::{Ports, Store};
use tidesync::engine::task::{Body, HttpRequest, NewTask, Priority};
use tidesync::engine::{Outbox, OutboxPorts};
use tidesync::platform::clock::BrowserClock;
use tidesync::platform::locks::FlushLock;
use tidesync::store::idb::IdbStore;
use tidesync::testing::{QueuedTokens, RecordingEvents};
use tidesync::transport::http::HttpTransport;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

struct Browser;
impl Ports for Browser {
    type Replica = tidesync::engine::ports::NoReplica;
    type Store = Rc<IdbStore>;
    type Transport = HttpTransport;
    type Clock = BrowserClock;
    type Locks = FlushLock;
    type Events = Rc<RecordingEvents>;
    type Tokens = Rc<QueuedTokens>;
}

fn endpoint() -> &'static str {
    match option_env!("TIDESYNC_TEST_ENDPOINT") {
        Some(url) => url,
        None => panic!("TIDESYNC_TEST_ENDPOINT must name the e2e test server; run the suite through `npm test`"),
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", (js_sys::Math::random() * 1e9) as u64)
}

async fn open(db: &str, options: OutboxOptions) -> (Outbox<Browser>, Rc<RecordingEvents>) {
    let store = Rc::new(IdbStore::open(db).await.expect("open IndexedDB"));
    let events = Rc::new(RecordingEvents::default());
    let outbox = Outbox::<Browser>::open(
        OutboxPorts {
            store: store.clone(),
            transport: HttpTransport,
            clock: BrowserClock,
            locks: FlushLock::new(store.name()),
            events: events.clone(),
            tokens: Rc::new(QueuedTokens::default()),
        },
        options,
        None,
    )
    .await
    .expect("open outbox");
    (outbox, events)
}

fn task(id: &str, bucket: &str, priority: Priority, key: Option<&str>) -> NewTask {
    NewTask {
        id: id.into(),
        priority,
        ordering_key: key.map(Into::into),
        request: HttpRequest {
            url: format!("{}/api/collect/{bucket}", endpoint()),
            method: "POST".into(),
            headers: Default::default(),
            body: Some(Body::Json(serde_json::json!({ "taskId": id }))),
        },
        retry_on_failure: true,
        max_retention_time: None,
        depends_on: None,
    }
}

fn completed_ids(events: &RecordingEvents) -> Vec<String> {
    events
        .events
        .borrow()
        .iter()
        .filter_map(|e| match e {
            Event::Complete { task, .. } => Some(task.id.clone()),
            _ => None,
        })
        .collect()
}

async fn received(bucket: &str) -> Vec<String> {
    let url = format!("{}/__requests?prefix=/api/collect/{bucket}", endpoint());
    let list: Vec<serde_json::Value> = gloo_net::http::Request::get(&url)
        .send()
        .await
        .expect("ask the server")
        .json()
        .await
        .expect("json");
    list.iter()
        .filter_map(|r| r["body"]["taskId"].as_str().map(str::to_owned))
        .collect()
}

#[wasm_bindgen_test]
async fn tasks_survive_closing_and_reopening_the_client() {
    let db = unique("reopen");
    let bucket = unique("reopen");
    {
        let (outbox, _) = open(&db, OutboxOptions::default()).await;
        for id in ["a", "b", "c"] {
            outbox
                .register(task(id, &bucket, Priority::Normal, None))
                .await
                .unwrap();
        }
        assert!(outbox.close().await);
    }
    let (outbox, events) = open(&db, OutboxOptions::default()).await;
    assert_eq!(
        outbox.status().pending_count,
        3,
        "the queue is back after reopening"
    );
    let report = outbox.flush().await.unwrap();
    assert_eq!(report.completed, 3);
    let mut ids = completed_ids(&events);
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(
        outbox.store().load_tasks().await.unwrap().is_empty(),
        "acknowledged tasks leave IndexedDB"
    );
}

#[wasm_bindgen_test]
async fn priority_then_seq_and_ordering_keys_decide_the_order_on_the_wire() {
    let bucket = unique("order");
    let options = OutboxOptions {
        concurrency: 1,
        ..OutboxOptions::default()
    };
    let (outbox, _) = open(&unique("order"), options).await;
    outbox
        .register(task("low-1", &bucket, Priority::Low, None))
        .await
        .unwrap();
    outbox
        .register(task("k-first", &bucket, Priority::Low, Some("k")))
        .await
        .unwrap();
    outbox
        .register(task("normal-1", &bucket, Priority::Normal, None))
        .await
        .unwrap();
    outbox
        .register(task("k-second", &bucket, Priority::High, Some("k")))
        .await
        .unwrap();
    outbox
        .register(task("high-1", &bucket, Priority::High, None))
        .await
        .unwrap();
    outbox.flush().await.unwrap();
    assert_eq!(
        received(&bucket).await,
        ["high-1", "normal-1", "low-1", "k-first", "k-second"]
    );
}

#[wasm_bindgen_test]
async fn a_thousand_concurrent_registrations_share_a_few_transactions() {
    let bucket = unique("group");
    let (outbox, _) = open(&unique("group"), OutboxOptions::default()).await;
    let registrations =
        (0..1000).map(|i| outbox.register(task(&format!("t{i}"), &bucket, Priority::Normal, None)));
    let stored = join_all(registrations).await;
    assert!(stored.iter().all(Result::is_ok));
    assert_eq!(
        outbox.store().load_tasks().await.unwrap().len(),
        1000,
        "all persisted"
    );
    let transactions = outbox.metrics().register_transactions;
    assert!(
        transactions <= 3,
        "1,000 registrations took {transactions} transactions"
    );
}

#[wasm_bindgen_test]
async fn two_clients_flushing_one_database_at_once_send_each_task_once() {
    let db = unique("locks");
    let bucket = unique("locks");
    let (first, first_events) = open(&db, OutboxOptions::default()).await;
    for i in 0..40 {
        first
            .register(task(&format!("t{i}"), &bucket, Priority::Normal, None))
            .await
            .unwrap();
    }
    let (second, second_events) = open(&db, OutboxOptions::default()).await;
    let (a, b) = futures::join!(first.flush(), second.flush());
    a.unwrap();
    b.unwrap();
    let mut delivered = received(&bucket).await;
    delivered.sort();
    delivered.dedup();
    assert_eq!(
        received(&bucket).await.len(),
        40,
        "each task sent exactly once"
    );
    assert_eq!(delivered.len(), 40);
    assert_eq!(
        completed_ids(&first_events).len() + completed_ids(&second_events).len(),
        40
    );
}
