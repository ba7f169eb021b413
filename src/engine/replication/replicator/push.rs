//! Push planning: the replicator as the outbox's [`Replica`] (freezing
//! mutations on their base versions, building one `/push` per batch), and
//! giving up on a mutation.

use super::{mutation_of, ReplicaPorts, Replicator};
use crate::engine::ports::{
    MutationVerdict, PushPlan, RecordChange, RecordStore, RecordWrite, Replica, StoreError,
};
use crate::engine::replication::record::RecordStatus;
use crate::engine::task::{Body, HttpRequest, HttpResponse, Task, TaskError};
use std::collections::BTreeMap;
use tidesync_protocol as protocol;

impl<R: ReplicaPorts> Replica for Replicator<R> {
    fn batch_size(&self) -> usize {
        self.options.batch_size
    }

    async fn prepare_push(&self, tasks: Vec<Task>) -> Result<PushPlan, StoreError> {
        // A mutation never dispatched is frozen now, on the version its
        // record is based on at this moment: the acknowledged versions of
        // its own earlier mutations (a record has at most one undispatched
        // mutation, and it runs after the others), or the server version a
        // settled conflict put it on. A dispatched one goes out exactly as
        // it went before, since the server may have applied it.
        let fresh: Vec<(String, String)> = tasks
            .iter()
            .filter(|t| !t.dispatched)
            .filter_map(mutation_of)
            .map(|m| (m.entity_type, m.id.unwrap_or_default()))
            .collect();
        let mut locals = self.records.get_records(&fresh).await?.into_iter();
        let mut frozen = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            if !task.dispatched {
                if let Some(mut mutation) = mutation_of(&task) {
                    if let Some(local) = locals.next().flatten() {
                        mutation.base_version = Some(local.version);
                        // Lets a `merge` conflict on the server keep the
                        // fields this client did not touch.
                        if local.version > 0
                            && local.pending_mutation_id.as_deref()
                                == Some(mutation.mutation_id.as_str())
                        {
                            mutation.changed_fields = Some(local.changed_fields.clone());
                        }
                    }
                    let body = serde_json::to_value(&mutation)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    task.request.body = Some(Body::Json(body));
                }
                task.dispatched = true;
            }
            frozen.push(task);
        }
        let still_queued = self.records.mark_dispatched(&frozen).await?;
        let mut tasks = Vec::with_capacity(frozen.len());
        let mut dropped = Vec::new();
        for (task, queued) in frozen.into_iter().zip(still_queued) {
            if queued {
                tasks.push(task);
            } else {
                dropped.push(task);
            }
        }
        let push = protocol::PushRequest {
            client_id: self.client_id.clone(),
            mutations: tasks.iter().filter_map(mutation_of).collect(),
        };
        let body = serde_json::to_value(&push).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The outbox adds the bearer token, as for every request to the server.
        Ok(PushPlan {
            request: HttpRequest {
                url: self.url(protocol::PUSH_PATH),
                method: "POST".into(),
                headers: BTreeMap::new(),
                body: Some(Body::Json(body)),
            },
            tasks,
            dropped,
        })
    }

    async fn apply_push(
        &self,
        tasks: &[Task],
        response: &HttpResponse,
    ) -> Result<(Vec<MutationVerdict>, Vec<Task>), StoreError> {
        self.apply_results(tasks, response).await
    }

    async fn abandon(&self, task: &Task, error: &TaskError) -> Result<(), StoreError> {
        let Some(mutation) = mutation_of(task) else {
            return Ok(());
        };
        let id = mutation.id.unwrap_or_default();
        let Some(mut local) = self.records.get_record(&mutation.entity_type, &id).await? else {
            return Ok(());
        };
        // Only the record's latest change: an older mutation given up on
        // says nothing about a newer one still queued.
        if local.pending_mutation_id.as_deref() != Some(mutation.mutation_id.as_str()) {
            return Ok(());
        }
        let expect = local.pending_mutation_id.take();
        local.sync_status = RecordStatus::Rejected;
        local.sync_error = Some(error.message.clone());
        self.records
            .apply(RecordChange {
                writes: vec![RecordWrite::plain(local, expect)],
                ..Default::default()
            })
            .await?;
        Ok(())
    }
}
