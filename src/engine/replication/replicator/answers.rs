//! Push answers: each mutation's result applied to its record, and the
//! verdict the outbox settles its task by.

use super::{is_held, mutation_of, ReplicaPorts, Replicator};
use crate::engine::ports::{
    Clock, MutationVerdict, RecordChange, RecordStore, RecordWrite, StoreError,
};
use crate::engine::replication::record::{RecordStatus, RemoteRecord};
use crate::engine::task::{ErrorClass, HttpResponse, ResponseBody, Task, TaskError};
use serde_json::Value;
use std::collections::HashMap;
use tidesync_protocol as protocol;

impl<R: ReplicaPorts> Replicator<R> {
    pub(super) async fn apply_results(
        &self,
        tasks: &[Task],
        response: &HttpResponse,
    ) -> Result<(Vec<MutationVerdict>, Vec<Task>), StoreError> {
        let now = self.clock.now();
        let parsed: Option<protocol::PushResponse> = match &response.body {
            ResponseBody::Json(value) => serde_json::from_value(value.clone()).ok(),
            _ => None,
        };
        let Some(parsed) = parsed else {
            // The server may have applied every mutation: replay them (their
            // ids make that harmless) without spending the retry budget.
            let error = TaskError {
                class: ErrorClass::Unconfirmed,
                message: "the push answer was not a readable Tidesync push response; the mutations are sent again and confirmed by their ids".into(),
                status: Some(response.status),
                at: now,
            };
            return Ok((vec![MutationVerdict::Retry(error); tasks.len()], Vec::new()));
        };
        let results: HashMap<String, protocol::MutationResult> = parsed
            .results
            .into_iter()
            .filter_map(|r| r.mutation_id.clone().map(|id| (id, r)))
            .collect();
        let mutations: Vec<Option<protocol::Mutation>> = tasks.iter().map(mutation_of).collect();
        let keys: Vec<(String, String)> = mutations
            .iter()
            .map(|m| {
                m.as_ref().map_or((String::new(), String::new()), |m| {
                    (m.entity_type.clone(), m.id.clone().unwrap_or_default())
                })
            })
            .collect();
        let locals = self.records.get_records(&keys).await?;
        let mut verdicts = Vec::with_capacity(tasks.len());
        let mut change = RecordChange::default();
        for (mutation, local) in mutations.into_iter().zip(locals) {
            let Some(mutation) = mutation else {
                verdicts.push(MutationVerdict::Rejected(TaskError {
                    class: ErrorClass::Validation,
                    message: "the task does not hold a readable mutation".into(),
                    status: None,
                    at: now,
                }));
                continue;
            };
            let Some(result) = results.get(&mutation.mutation_id) else {
                verdicts.push(MutationVerdict::Retry(TaskError {
                    class: ErrorClass::Retryable,
                    message: format!(
                        "the push answer has no result for mutation {}",
                        mutation.mutation_id
                    ),
                    status: Some(response.status),
                    at: now,
                }));
                continue;
            };
            let remote = result.record.as_ref().and_then(RemoteRecord::from_json);
            let expect = local.as_ref().and_then(|l| l.pending_mutation_id.clone());
            let ours = expect.as_deref() == Some(mutation.mutation_id.as_str());
            match result.status {
                protocol::MutationStatus::Rejected => {
                    let message = result.error.as_ref().map_or("rejected".to_owned(), |e| {
                        format!("{}: {}", e.code, e.message)
                    });
                    if let (Some(mut local), true) = (local, ours) {
                        local.sync_status = RecordStatus::Rejected;
                        local.sync_error = Some(message.clone());
                        local.pending_mutation_id = None;
                        change.writes.push(RecordWrite::plain(local, expect));
                    }
                    verdicts.push(MutationVerdict::Rejected(TaskError {
                        class: ErrorClass::Validation,
                        message,
                        status: Some(response.status),
                        at: now,
                    }));
                }
                protocol::MutationStatus::Conflict if ours && remote.is_some() => {
                    let (Some(local), Some(remote)) = (local, remote) else {
                        continue;
                    };
                    // The server settled it by its strategy; the client's
                    // strategy (or callback) has the last word locally.
                    if remote.data == local.data && remote.is_deleted == local.is_deleted {
                        change.writes.push(RecordWrite::plain(
                            remote.into_local(&mutation.entity_type),
                            expect,
                        ));
                    } else {
                        let settled = self.settle_conflict(local, remote).await;
                        change.writes.push(RecordWrite {
                            record: settled.record,
                            expect_pending: expect,
                            cancel: None,
                            register: settled.requeue,
                        });
                    }
                    verdicts.push(MutationVerdict::Done(result_json(result)));
                }
                status => {
                    // Applied, duplicate, or a conflict for a change since
                    // superseded (or a dead letter the app sent again).
                    if let (Some(mut local), Some(remote)) = (local, remote) {
                        if ours || !is_held(&local) {
                            // Nothing unsent locally: the copy is the server's
                            // (unless a pull brought a newer one already).
                            if ours || remote.version >= local.version {
                                change.writes.push(RecordWrite::plain(
                                    remote.into_local(&mutation.entity_type),
                                    expect,
                                ));
                            }
                        } else if status == protocol::MutationStatus::Applied
                            || (status == protocol::MutationStatus::Duplicate
                                && holds_mutation(&remote, &mutation))
                        {
                            // Our own earlier change is on the server at this
                            // version, and the newer one was made on top of
                            // it: it builds on that version. A duplicate's
                            // answer carries the current record, which may
                            // hold another device's edit made since: only
                            // when it still is our change does the newer one
                            // build on it; otherwise it meets that edit as a
                            // conflict instead of overwriting it blindly.
                            local.version = local.version.max(remote.version);
                            change.writes.push(RecordWrite::plain(local, expect));
                        }
                    }
                    verdicts.push(MutationVerdict::Done(result_json(result)));
                }
            }
        }
        let requeued = self.records.apply(change).await?;
        Ok((verdicts, requeued))
    }
}

/// A mutation's result as its `sync:complete` listeners see it.
fn result_json(result: &protocol::MutationResult) -> Value {
    serde_json::to_value(result).unwrap_or(Value::Null)
}

/// Whether the server's copy is exactly what a mutation wrote.
fn holds_mutation(remote: &RemoteRecord, mutation: &protocol::Mutation) -> bool {
    match mutation.op {
        protocol::Op::Delete => remote.is_deleted,
        protocol::Op::Upsert => {
            !remote.is_deleted
                && mutation
                    .data
                    .as_ref()
                    .and_then(Value::as_object)
                    .is_some_and(|data| *data == remote.data)
        }
    }
}
