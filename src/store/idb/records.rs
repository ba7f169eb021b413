//! The replication side of the IndexedDB store ([`RecordStore`]): local
//! records, mutation chains, guarded record writes, the pull cursor.

use super::requests::{try_issue_all, ObjectStore};
use super::tasks::{register_in, stored_revision};
use super::{
    finish, from_js, map_error, meta_entry, to_js, IdbStore, CURSOR_KEY, FAILED, META, RECORDS,
    TASKS,
};
use crate::engine::ports::{RecordChange, RecordStore, RecordWrite, StoreError};
use crate::engine::replication::record::LocalRecord;
use crate::engine::replication::replicator::{in_chain, mutation_task_id, place_in_chain};
use crate::engine::task::Task;
use idb::TransactionMode;
use wasm_bindgen::JsValue;

/// The keys of a record's chain of mutations (`head` and every `head#…`),
/// and a few other ids that sort between them, which readers filter out
/// with [`in_chain`].
fn chain_range(head: &str) -> Result<idb::KeyRange, StoreError> {
    idb::KeyRange::bound(
        &JsValue::from_str(head),
        &JsValue::from_str(&format!("{head}#\u{ffff}")),
        Some(false),
        Some(false),
    )
    .map_err(map_error)
}

/// The queued mutations of a record, oldest first, read inside an open
/// transaction: its head id and every `head#…` id, one key range.
async fn chain_in(
    tasks: &ObjectStore,
    entity_type: &str,
    id: &str,
) -> Result<Vec<Task>, StoreError> {
    let head = mutation_task_id(entity_type, id);
    let values = tasks
        .get_all(Some(chain_range(&head)?), None)
        .await
        .map_err(map_error)?;
    let mut chain = Vec::new();
    for value in values {
        let task: Task = from_js(value)?;
        if in_chain(&head, &task.id) {
            chain.push(task);
        }
    }
    chain.sort_by_key(|t| t.seq);
    Ok(chain)
}

fn record_key(entity_type: &str, id: &str) -> JsValue {
    let key = js_sys::Array::new();
    key.push(&JsValue::from_str(entity_type));
    key.push(&JsValue::from_str(id));
    key.into()
}

impl RecordStore for IdbStore {
    async fn get_record(
        &self,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<LocalRecord>, StoreError> {
        let tx = self
            .transaction(&[RECORDS], TransactionMode::ReadOnly)
            .await?;
        let records = tx.store(RECORDS).map_err(map_error)?;
        match records
            .get(record_key(entity_type, id))
            .await
            .map_err(map_error)?
        {
            Some(value) => from_js(value).map(Some),
            None => Ok(None),
        }
    }

    async fn get_records(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<LocalRecord>>, StoreError> {
        let tx = self
            .transaction(&[RECORDS], TransactionMode::ReadOnly)
            .await?;
        let records = tx.store(RECORDS).map_err(map_error)?;
        read_records(
            &records,
            keys.iter().map(|(t, id)| (t.as_str(), id.as_str())),
        )
        .await
    }

    async fn records_of(&self, entity_type: &str) -> Result<Vec<LocalRecord>, StoreError> {
        let tx = self
            .transaction(&[RECORDS], TransactionMode::ReadOnly)
            .await?;
        let records = tx.store(RECORDS).map_err(map_error)?;
        let range = idb::KeyRange::only(&JsValue::from_str(entity_type)).map_err(map_error)?;
        let values = records
            .index_get_all("entityType", range)
            .await
            .map_err(map_error)?;
        values.into_iter().map(from_js).collect()
    }

    async fn mutation_chains(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Vec<Task>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self
            .transaction(&[TASKS], TransactionMode::ReadOnly)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        try_issue_all(keys.iter().map(|(t, id)| chain_in(&tasks, t, id))).await
    }

    async fn write_local(&self, record: &LocalRecord, task: Task) -> Result<Task, StoreError> {
        let tx = self
            .transaction(&[TASKS, META, RECORDS, FAILED], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        let meta = tx.store(META).map_err(map_error)?;
        let records = tx.store(RECORDS).map_err(map_error)?;
        let mut task = task;
        let chain = chain_in(&tasks, &record.entity_type, &record.id).await?;
        place_in_chain(&chain, &mut task);
        let stored = register_in(&tasks, &meta, vec![task]).await?;
        // A newer write supersedes the record's failed mutations: retrying
        // one later would send older data over the newer.
        let failed = tx.store(FAILED).map_err(map_error)?;
        let head = mutation_task_id(&record.entity_type, &record.id);
        let failed_keys = failed
            .get_all_keys(Some(chain_range(&head)?), None)
            .await
            .map_err(map_error)?;
        for key in failed_keys {
            if key.as_string().is_some_and(|id| in_chain(&head, &id)) {
                failed.delete(key).await.map_err(map_error)?;
            }
        }
        records
            .put(&to_js(record)?, None)
            .await
            .map_err(map_error)?;
        finish(tx).await?;
        stored
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt("no task stored".into()))
    }

    async fn apply(&self, change: RecordChange) -> Result<Vec<Task>, StoreError> {
        let tx = self
            .transaction(&[TASKS, META, RECORDS], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        let meta = tx.store(META).map_err(map_error)?;
        let records = tx.store(RECORDS).map_err(map_error)?;
        // The guards: each write applies only to the record state it was
        // decided on (see RecordWrite), read here in the same transaction.
        let current = read_records(
            &records,
            change
                .writes
                .iter()
                .map(|w| (w.record.entity_type.as_str(), w.record.id.as_str())),
        )
        .await?;
        let cancels = try_issue_all(change.writes.iter().map(|w| async {
            match &w.cancel {
                Some((id, _)) => tasks.get(JsValue::from_str(id)).await.map_err(map_error),
                None => Ok(None),
            }
        }))
        .await?;
        let mut register = Vec::new();
        let mut values = Vec::new();
        for ((write, current), cancel) in change.writes.into_iter().zip(current).zip(cancels) {
            let pending = current.and_then(|r| r.pending_mutation_id);
            if pending != write.expect_pending {
                continue;
            }
            if let Some((id, revision)) = &write.cancel {
                let Some(stored) = cancel else { continue };
                let stored: Task = from_js(stored)?;
                if stored.revision != *revision || stored.dispatched {
                    continue;
                }
                tasks
                    .delete(JsValue::from_str(id))
                    .await
                    .map_err(map_error)?;
            }
            let RecordWrite {
                record,
                register: task,
                ..
            } = write;
            register.extend(task);
            values.push((to_js(&record)?, None));
        }
        let registered = register_in(&tasks, &meta, register).await?;
        records
            .put_all(values.into_iter())
            .await
            .map_err(map_error)?;
        if !change.delete_records.is_empty() {
            let doomed = read_records(
                &records,
                change
                    .delete_records
                    .iter()
                    .map(|(t, id)| (t.as_str(), id.as_str())),
            )
            .await?;
            for ((entity_type, id), record) in change.delete_records.iter().zip(doomed) {
                if record.is_some_and(|r| r.has_unsent_change()) {
                    continue;
                }
                records
                    .delete(record_key(entity_type, id))
                    .await
                    .map_err(map_error)?;
            }
        }
        if let Some(cursor) = &change.cursor {
            meta.put(&meta_entry(CURSOR_KEY, cursor)?, None)
                .await
                .map_err(map_error)?;
        }
        finish(tx).await?;
        Ok(registered)
    }

    async fn mark_dispatched(&self, batch: &[Task]) -> Result<Vec<bool>, StoreError> {
        let tx = self
            .transaction(&[TASKS], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        let stored = try_issue_all(batch.iter().map(|t| stored_revision(&tasks, &t.id))).await?;
        let mut marked = Vec::with_capacity(batch.len());
        let mut values = Vec::new();
        for (task, revision) in batch.iter().zip(stored) {
            let same = revision == Some(task.revision);
            if same {
                values.push((to_js(task)?, None));
            }
            marked.push(same);
        }
        tasks.put_all(values.into_iter()).await.map_err(map_error)?;
        finish(tx).await?;
        Ok(marked)
    }

    async fn get_meta_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.get_meta::<String>(key).await
    }

    async fn put_meta_text(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.put_meta(key, value).await
    }
}

/// Several records read inside an open transaction, all requests issued at
/// once: awaiting them one by one would let the transaction commit in
/// between whenever this future is polled late (rexie#36).
async fn read_records<'a>(
    records: &ObjectStore,
    keys: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Option<LocalRecord>>, StoreError> {
    let values = try_issue_all(keys.map(|(t, id)| records.get(record_key(t, id))))
        .await
        .map_err(map_error)?;
    values
        .into_iter()
        .map(|v| v.map(from_js).transpose())
        .collect()
}
