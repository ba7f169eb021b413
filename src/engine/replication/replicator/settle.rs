//! Conflict settlement: a local change that met a newer server copy is
//! settled by the strategy or the app's `onConflict`, and a result that
//! differs from the server's copy is queued to be pushed.

use super::{ReplicaPorts, Replicator};
use crate::engine::events::{ConflictEvent, Event};
use crate::engine::ports::{Clock, ConflictResolver, EventSink};
use crate::engine::replication::conflict::{resolve, Side};
use crate::engine::replication::record::{LocalRecord, RecordStatus, RemoteRecord};
use crate::engine::task::Task;

/// How a conflict ended: the record's new state, and its mutation to push
/// when the result differs from the server's copy.
pub(super) struct Settlement {
    pub(super) record: LocalRecord,
    pub(super) requeue: Option<Task>,
}

impl<R: ReplicaPorts> Replicator<R> {
    /// Settles a local change that met a newer server copy.
    pub(super) async fn settle_conflict(
        &self,
        local: LocalRecord,
        remote: RemoteRecord,
    ) -> Settlement {
        let now = self.clock.now();
        let local_view = local.view();
        let remote_view = remote.clone().into_local(&local.entity_type).view();
        let outcome = if self.resolver.is_set() {
            match self
                .resolver
                .resolve(&local.entity_type, &local_view, &remote_view)
                .await
            {
                Ok(data) => {
                    let push = data != remote.data || remote.is_deleted;
                    Ok((data, false, push, "callback"))
                }
                Err(message) => Err(message),
            }
        } else {
            let o = resolve(
                self.options.strategy,
                &Side {
                    data: &local.data,
                    is_deleted: local.is_deleted,
                    updated_at: local.updated_at,
                },
                &Side {
                    data: &remote.data,
                    is_deleted: remote.is_deleted,
                    updated_at: remote.changed_at,
                },
                &local.changed_fields,
            );
            Ok((o.data, o.is_deleted, o.push, o.winner))
        };
        let entity_type = local.entity_type.clone();
        let id = local.id.clone();
        match outcome {
            Ok((data, is_deleted, push, winner)) => {
                let settlement = if push {
                    let mutation_id = self.clock.unique_id();
                    // The edit time is when the user edited, not when the
                    // conflict was settled: a result made of both sides is
                    // as recent as the newer of them.
                    let edited_at = if winner == "client" {
                        local.updated_at
                    } else {
                        local.updated_at.max(remote.changed_at)
                    };
                    let record = LocalRecord {
                        data,
                        is_deleted,
                        version: remote.version,
                        sync_status: RecordStatus::Pending,
                        updated_at: edited_at,
                        pending_mutation_id: Some(mutation_id.clone()),
                        conflict_remote: None,
                        sync_error: None,
                        ..local
                    };
                    let task = self.mutation_task(&record, mutation_id, now);
                    Settlement {
                        record,
                        requeue: Some(task),
                    }
                } else {
                    let mut record = remote.clone().into_local(&entity_type);
                    record.data = data;
                    record.is_deleted = is_deleted;
                    Settlement {
                        record,
                        requeue: None,
                    }
                };
                self.events.emit(Event::Conflict(ConflictEvent {
                    entity_type,
                    id,
                    local: local_view,
                    remote: remote_view,
                    resolved: settlement.record.view(),
                    outcome: winner.to_owned(),
                }));
                settlement
            }
            Err(message) => {
                let record = LocalRecord {
                    version: remote.version,
                    sync_status: RecordStatus::Conflict,
                    pending_mutation_id: None,
                    conflict_remote: Some(remote.data.clone()),
                    sync_error: Some(format!("onConflict failed: {message}")),
                    ..local
                };
                self.events.emit(Event::Conflict(ConflictEvent {
                    entity_type,
                    id,
                    local: local_view,
                    remote: remote_view,
                    resolved: record.view(),
                    outcome: "unresolved".to_owned(),
                }));
                Settlement {
                    record,
                    requeue: None,
                }
            }
        }
    }
}
