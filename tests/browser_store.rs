#![cfg(target_arch = "wasm32")]
//! The IndexedDB store in a real Chromium: what is written reads back, the
//! schema is there, seq is persisted, and dead letters move atomically; and
//! the store contract (`tests/support/store_contract/`), the same cases the
//! in-memory store passes natively in `tests/store_contract.rs`.

mod support;

use support::store_contract::{self as contract, StoreUnderTest};
use tidesync::engine::ports::Store;
use tidesync::engine::task::{FailedTask, HttpRequest, Priority, Task, TaskKind};
use tidesync::store::idb::IdbStore;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn task(id: &str, priority: Priority) -> Task {
    Task {
        id: id.into(),
        kind: TaskKind::Request,
        priority,
        seq: 0,
        ordering_key: None,
        request: HttpRequest {
            url: "/api/items".into(),
            method: "POST".into(),
            headers: Default::default(),
            body: Some(tidesync::engine::task::Body::Json(
                serde_json::json!({"name": "Ada", "tags": [1, 2]}),
            )),
        },
        revision: 0,
        idempotency_key: format!("key-{id}"),
        retry_on_failure: true,
        attempts: 0,
        next_attempt_at: None,
        created_at: 1_764_000_000_000.0,
        errors: vec![],
        dispatched: false,
        expires_at: None,
        depends_on: None,
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", js_sys::Math::random())
}

#[wasm_bindgen_test]
async fn written_tasks_read_back_after_reopening_the_database() {
    let name = unique("store-reopen");
    let store = IdbStore::open(&name).await.expect("open");
    let stored = store
        .register_tasks(vec![task("a", Priority::Low), task("b", Priority::High)])
        .await
        .unwrap();
    assert_eq!(stored.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![1, 2]);
    store.close();

    let reopened = IdbStore::open(&name).await.expect("reopen");
    let mut tasks = reopened.load_tasks().await.unwrap();
    tasks.sort_by_key(|t| t.seq);
    assert_eq!(tasks, stored);
    let more = reopened
        .register_tasks(vec![task("c", Priority::Normal)])
        .await
        .unwrap();
    assert_eq!(more[0].seq, 3, "seq is persisted across connections");
}

#[wasm_bindgen_test]
async fn re_registering_keeps_seq_and_bumps_revision() {
    let store = IdbStore::open(&unique("store-replace")).await.unwrap();
    let first = store
        .register_tasks(vec![
            task("a", Priority::Normal),
            task("b", Priority::Normal),
        ])
        .await
        .unwrap();
    let mut again = task("a", Priority::Normal);
    again.request.url = "/api/v2".into();
    let replaced = store.register_tasks(vec![again]).await.unwrap();
    assert_eq!(replaced[0].seq, 1, "keeps its place");
    assert!(replaced[0].revision > first[0].revision);
    assert!(
        !store.complete_task("a", first[0].revision).await.unwrap(),
        "an older revision does not delete the newer payload"
    );
    let tasks = store.load_tasks().await.unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(store
        .complete_task("a", replaced[0].revision)
        .await
        .unwrap());
    assert_eq!(store.load_tasks().await.unwrap().len(), 1);
}

#[wasm_bindgen_test]
async fn an_id_registered_again_after_completion_never_reuses_a_revision() {
    let store = IdbStore::open(&unique("store-revision")).await.unwrap();
    let first = store
        .register_tasks(vec![task("a", Priority::Normal)])
        .await
        .unwrap();
    assert!(store.complete_task("a", first[0].revision).await.unwrap());
    let second = store
        .register_tasks(vec![task("a", Priority::Normal)])
        .await
        .unwrap();
    assert_ne!(second[0].revision, first[0].revision);
    assert!(
        !store.complete_task("a", first[0].revision).await.unwrap(),
        "a late completion of the old task leaves the new one queued"
    );
    assert_eq!(store.load_tasks().await.unwrap().len(), 1);
}

#[wasm_bindgen_test]
async fn dead_letters_move_out_of_the_queue_and_back() {
    let store = IdbStore::open(&unique("store-failed")).await.unwrap();
    let stored = store
        .register_tasks(vec![task("a", Priority::Normal)])
        .await
        .unwrap();
    let failed = FailedTask {
        id: "a".into(),
        task: stored[0].clone(),
        reason: "rejected".into(),
        failed_at: 5.0,
    };
    assert!(store.dead_letter(&failed).await.unwrap());
    assert!(store.load_tasks().await.unwrap().is_empty());
    assert_eq!(store.count_failed().await.unwrap(), 1);
    assert_eq!(store.list_failed().await.unwrap(), vec![failed]);
    let requeued = store
        .requeue_failed("a", 10.0)
        .await
        .unwrap()
        .expect("requeued");
    assert_eq!(requeued.attempts, 0);
    assert_eq!(store.count_failed().await.unwrap(), 0);
    assert_eq!(store.load_tasks().await.unwrap().len(), 1);
    assert!(!store.discard_failed("a").await.unwrap());
}

#[wasm_bindgen_test]
async fn meta_values_round_trip() {
    let store = IdbStore::open(&unique("store-meta")).await.unwrap();
    store.put_meta("cursor", "42").await.unwrap();
    assert_eq!(
        store.get_meta::<String>("cursor").await.unwrap(),
        Some("42".to_owned())
    );
    assert_eq!(store.get_meta::<String>("missing").await.unwrap(), None);
    assert_eq!(
        store.get_meta::<u32>("schemaVersion").await.unwrap(),
        Some(tidesync::store::idb::SCHEMA_VERSION)
    );
}

// ----- the store contract -----

/// A fresh IndexedDB database: the outbox's tasks and the replicated
/// records are one database, one store.
struct Idb(IdbStore);

impl StoreUnderTest for Idb {
    type Tasks = IdbStore;
    type Records = IdbStore;

    fn tasks(&self) -> &IdbStore {
        &self.0
    }

    fn records(&self) -> &IdbStore {
        &self.0
    }
}

macro_rules! on_indexeddb {
    ($case:ident) => {
        #[wasm_bindgen_test]
        async fn $case() {
            let store = IdbStore::open(&unique(stringify!($case)))
                .await
                .expect("open");
            contract::$case(&Idb(store)).await;
        }
    };
}

contract::cases!(on_indexeddb);
