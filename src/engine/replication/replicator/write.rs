//! Local writes: a record and its mutation task in one transaction, and
//! reads of the live records.

use super::{mutation_task_id, ReplicaPorts, ReplicationError, Replicator};
use crate::engine::ports::{Clock, RecordStore};
use crate::engine::replication::conflict::changed_fields;
use crate::engine::replication::record::{LocalRecord, RecordStatus};
use crate::engine::task::{Body, HttpRequest, Priority, Task, TaskKind};
use crate::engine::time::to_iso;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tidesync_protocol as protocol;

impl<R: ReplicaPorts> Replicator<R> {
    /// Writes a record locally (creating an id when absent) and queues its
    /// mutation in the same transaction. Returns the record and the task.
    pub async fn put(
        &self,
        entity_type: &str,
        id: Option<String>,
        data: Map<String, Value>,
    ) -> Result<(LocalRecord, Task), ReplicationError> {
        self.check_type(entity_type)?;
        let id = match id {
            Some(id) if id.is_empty() || id.len() > 200 => {
                return Err(ReplicationError::InvalidRecord(
                    "`id` must be 1 to 200 characters".into(),
                ))
            }
            Some(id) => id,
            None => self.clock.unique_id(),
        };
        let existing = self.records.get_record(entity_type, &id).await?;
        self.write(entity_type, id, data, false, existing).await
    }

    /// Deletes a record locally (a tombstone) and queues the delete.
    /// Returns `None` when there is no such live record.
    pub async fn delete(
        &self,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<(LocalRecord, Task)>, ReplicationError> {
        self.check_type(entity_type)?;
        let Some(existing) = self.records.get_record(entity_type, id).await? else {
            return Ok(None);
        };
        if existing.is_deleted {
            return Ok(None);
        }
        let data = existing.data.clone();
        self.write(entity_type, id.to_owned(), data, true, Some(existing))
            .await
            .map(Some)
    }

    async fn write(
        &self,
        entity_type: &str,
        id: String,
        data: Map<String, Value>,
        is_deleted: bool,
        existing: Option<LocalRecord>,
    ) -> Result<(LocalRecord, Task), ReplicationError> {
        let now = self.clock.now();
        let mutation_id = self.clock.unique_id();
        let (version, mut changed) = match &existing {
            Some(e) => (e.version, e.changed_fields.clone()),
            None => (0, Vec::new()),
        };
        let before = existing
            .as_ref()
            .map(|e| e.data.clone())
            .unwrap_or_default();
        changed.extend(changed_fields(&before, &data));
        changed.sort();
        changed.dedup();
        let record = LocalRecord {
            entity_type: entity_type.to_owned(),
            id: id.clone(),
            data,
            version,
            is_deleted,
            sync_status: RecordStatus::Pending,
            updated_at: now,
            pending_mutation_id: Some(mutation_id.clone()),
            changed_fields: changed,
            conflict_remote: None,
            sync_error: None,
        };
        let task = self.mutation_task(&record, mutation_id, now);
        let stored = self.records.write_local(&record, task).await?;
        Ok((record, stored))
    }

    pub(super) fn mutation_task(
        &self,
        record: &LocalRecord,
        mutation_id: String,
        now: f64,
    ) -> Task {
        let mutation = protocol::Mutation {
            mutation_id: mutation_id.clone(),
            entity_type: record.entity_type.clone(),
            op: if record.is_deleted {
                protocol::Op::Delete
            } else {
                protocol::Op::Upsert
            },
            id: Some(record.id.clone()),
            base_version: Some(record.version),
            data: (!record.is_deleted).then(|| Value::Object(record.data.clone())),
            client_timestamp: Some(to_iso(record.updated_at)),
            changed_fields: None,
        };
        Task {
            id: mutation_task_id(&record.entity_type, &record.id),
            kind: TaskKind::Mutation,
            priority: Priority::Normal,
            seq: 0,
            ordering_key: Some(format!("record:{}:{}", record.entity_type, record.id)),
            request: HttpRequest {
                url: self.url(protocol::PUSH_PATH),
                method: "POST".into(),
                headers: BTreeMap::new(),
                body: serde_json::to_value(&mutation).ok().map(Body::Json),
            },
            revision: 0,
            idempotency_key: mutation_id,
            retry_on_failure: true,
            attempts: 0,
            next_attempt_at: None,
            created_at: now,
            errors: Vec::new(),
            dispatched: false,
            expires_at: None,
            depends_on: None,
        }
    }

    pub async fn get(
        &self,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<LocalRecord>, ReplicationError> {
        self.check_type(entity_type)?;
        Ok(self
            .records
            .get_record(entity_type, id)
            .await?
            .filter(|r| !r.is_deleted))
    }

    /// The live records of a type.
    pub async fn query(&self, entity_type: &str) -> Result<Vec<LocalRecord>, ReplicationError> {
        self.check_type(entity_type)?;
        let mut records: Vec<LocalRecord> = self
            .records
            .records_of(entity_type)
            .await?
            .into_iter()
            .filter(|r| !r.is_deleted)
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }
}
