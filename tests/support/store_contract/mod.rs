//! The store contract: what the engine relies on from a [`Store`] and a
//! [`RecordStore`], as one set of cases run against every store. The
//! in-memory store runs them natively (`tests/store_contract.rs`),
//! IndexedDB in headless Chromium (`tests/browser_store.rs`): a case that
//! passes on one and fails on the other is a bug in one of them.
//!
//! Each case is an `async fn` over a [`StoreUnderTest`] holding a fresh,
//! empty store; [`cases!`] lists them all, so a runner cannot leave one out.
//! The cases are in [`tasks`] (the outbox's side) and [`records`]
//! (replicated records and their mutation chains).

use serde_json::{json, Value};
use tidesync::engine::ports::{RecordChange, RecordStore, RecordWrite, Store, PULL_CURSOR_KEY};
use tidesync::engine::replication::record::{LocalRecord, RecordStatus};
use tidesync::engine::replication::replicator::mutation_task_id;
use tidesync::engine::task::{
    Body, ErrorClass, FailedTask, HttpRequest, Priority, Task, TaskError, TaskKind,
};

/// A fresh, empty store: its task side and its record side (one database).
pub trait StoreUnderTest {
    type Tasks: Store;
    type Records: RecordStore;
    fn tasks(&self) -> &Self::Tasks;
    fn records(&self) -> &Self::Records;
}

/// Every case, for a runner macro `$run!(case_name)` that turns one case
/// into one test.
macro_rules! cases {
    ($run:ident) => {
        $run!(registration_keeps_a_queued_id_in_place_and_never_repeats_a_revision);
        $run!(registering_a_batch_numbers_it_in_order_in_one_go);
        $run!(complete_task_removes_only_the_exact_revision);
        $run!(complete_tasks_removes_only_the_exact_revisions);
        $run!(update_task_refuses_a_task_registered_again_since);
        $run!(a_dead_letter_leaves_the_queue_only_at_the_revision_sent);
        $run!(a_requeued_dead_letter_goes_to_the_end_of_the_queue_with_a_fresh_budget);
        $run!(requeueing_a_dead_letter_whose_id_was_registered_again_keeps_the_newer_payload);
        $run!(discarding_a_dead_letter_says_whether_it_existed);
        $run!(kept_answers_read_back_until_deleted);
        $run!(restored_tasks_come_back_exactly_and_the_counter_moves_past_them);
        $run!(write_local_coalesces_into_a_mutation_never_dispatched);
        $run!(write_local_places_a_write_behind_a_dispatched_mutation);
        $run!(write_local_drops_the_record_s_dead_letters_and_no_other);
        $run!(mark_dispatched_refuses_a_task_replaced_since_it_was_scheduled);
        $run!(a_record_write_applies_only_to_the_unsent_change_it_was_decided_on);
        $run!(a_record_write_cancels_its_mutation_and_queues_its_replacement);
        $run!(a_record_write_that_would_cancel_a_dispatched_mutation_is_skipped);
        $run!(a_record_write_that_would_cancel_a_replaced_mutation_is_skipped);
        $run!(delete_records_keeps_a_record_with_an_unsent_change);
        $run!(a_change_s_cursor_is_the_pull_cursor_read_back);
        $run!(records_read_back_by_key_and_by_type_tombstones_included);
    };
}
pub(crate) use cases;

mod records;
mod tasks;

pub use records::*;
pub use tasks::*;

// ----- what the cases store -----

pub(super) const T0: f64 = 1_764_000_000_000.0;

/// A plain request task, as the outbox hands it to the store.
pub(super) fn request_task(id: &str) -> Task {
    Task {
        id: id.into(),
        kind: TaskKind::Request,
        priority: Priority::Normal,
        seq: 0,
        ordering_key: None,
        request: HttpRequest {
            url: format!("/api/items/{id}"),
            method: "POST".into(),
            headers: Default::default(),
            body: Some(Body::Json(json!({ "id": id, "v": 1 }))),
        },
        revision: 0,
        idempotency_key: format!("key-{id}"),
        retry_on_failure: true,
        attempts: 0,
        next_attempt_at: None,
        created_at: T0,
        errors: vec![],
        dispatched: false,
        expires_at: None,
        depends_on: None,
    }
}

/// The same task with another payload version (a re-registration).
pub(super) fn with_version(mut task: Task, v: u32) -> Task {
    task.request.body = Some(Body::Json(json!({ "id": task.id.clone(), "v": v })));
    task.idempotency_key = format!("key-{}-{v}", task.id);
    task
}

/// A mutation task of record `task/{id}`, as the replicator makes it
/// (before the store places it in the record's chain).
pub(super) fn mutation_task(id: &str, v: u32) -> Task {
    let task_id = mutation_task_id("task", id);
    Task {
        kind: TaskKind::Mutation,
        ordering_key: Some(task_id.clone()),
        idempotency_key: format!("m-{id}-{v}"),
        request: HttpRequest {
            url: "https://sync.test/api/client/sync/push".into(),
            method: "POST".into(),
            headers: Default::default(),
            body: Some(Body::Json(json!({ "id": id, "v": v }))),
        },
        ..request_task(&task_id)
    }
}

pub(super) fn record(id: &str, fields: Value, pending: Option<&str>) -> LocalRecord {
    LocalRecord {
        entity_type: "task".into(),
        id: id.into(),
        data: fields.as_object().cloned().unwrap_or_default(),
        version: 1,
        is_deleted: false,
        sync_status: if pending.is_some() {
            RecordStatus::Pending
        } else {
            RecordStatus::Synced
        },
        updated_at: T0,
        pending_mutation_id: pending.map(str::to_owned),
        changed_fields: vec![],
        conflict_remote: None,
        sync_error: None,
    }
}

pub(super) fn failed(task: &Task) -> FailedTask {
    FailedTask {
        id: task.id.clone(),
        task: task.clone(),
        reason: "rejected".into(),
        failed_at: T0 + 5.0,
    }
}

pub(super) fn key(id: &str) -> (String, String) {
    ("task".into(), id.into())
}

pub(super) fn version_of(task: &Task) -> u64 {
    match &task.request.body {
        Some(Body::Json(value)) => value["v"].as_u64().unwrap_or(0),
        _ => 0,
    }
}

pub(super) async fn queued<S: StoreUnderTest>(s: &S) -> Vec<Task> {
    let mut tasks = s.tasks().load_tasks().await.expect("load_tasks");
    tasks.sort_by_key(|t| t.seq);
    tasks
}

pub(super) async fn register<S: StoreUnderTest>(s: &S, tasks: Vec<Task>) -> Vec<Task> {
    s.tasks()
        .register_tasks(tasks)
        .await
        .expect("register_tasks")
}

pub(super) async fn stored<S: StoreUnderTest>(s: &S, id: &str) -> Option<LocalRecord> {
    s.records()
        .get_record("task", id)
        .await
        .expect("get_record")
}

pub(super) async fn chain<S: StoreUnderTest>(s: &S, id: &str) -> Vec<Task> {
    let mut chains = s
        .records()
        .mutation_chains(&[key(id)])
        .await
        .expect("mutation_chains");
    chains.pop().unwrap_or_default()
}
