//! The outbox side of the IndexedDB store ([`Store`]): queued tasks, dead
//! letters, the seq counter and kept answers.

use super::requests::{try_issue_all, ObjectStore};
use super::{
    finish, from_js, map_error, meta_entry, to_js, IdbStore, ANSWER_KEY, FAILED, META, SEQ_KEY,
    TASKS,
};
use crate::engine::ports::{Store, StoreError};
use crate::engine::task::{FailedTask, Task};
use crate::engine::time::Millis;
use crate::store::salvage::quarantine;
use idb::TransactionMode;
use std::collections::HashSet;
use wasm_bindgen::JsValue;

impl Store for IdbStore {
    async fn load_tasks(&self) -> Result<Vec<Task>, StoreError> {
        if self.connection.is_lost() {
            // Read now, the empty database would make the client forget
            // the queue it holds and is about to write back.
            return Err(StoreError::Unavailable(
                "the database was deleted under the client and is being restored from the tasks it holds; try again".into(),
            ));
        }
        let tx = self
            .transaction(&[TASKS], TransactionMode::ReadOnly)
            .await?;
        let values = tx
            .store(TASKS)
            .map_err(map_error)?
            .get_all(None, None)
            .await
            .map_err(map_error)?;
        let mut tasks = Vec::with_capacity(values.len());
        let mut corrupt = Vec::new();
        for value in values {
            match from_js::<Task>(value.clone()) {
                Ok(task) => tasks.push(task),
                Err(error) => corrupt.push((value, error.to_string())),
            }
        }
        if !corrupt.is_empty() {
            self.quarantine(corrupt).await?;
        }
        Ok(tasks)
    }

    async fn register_tasks(&self, batch: Vec<Task>) -> Result<Vec<Task>, StoreError> {
        let tx = self
            .transaction(&[TASKS, META], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        let meta = tx.store(META).map_err(map_error)?;
        let stored = register_in(&tasks, &meta, batch).await?;
        finish(tx).await?;
        Ok(stored)
    }

    async fn update_task(&self, task: &Task) -> Result<bool, StoreError> {
        let tx = self
            .transaction(&[TASKS], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        if !same_revision(&tasks, &task.id, task.revision).await? {
            return Ok(false);
        }
        tasks.put(&to_js(task)?, None).await.map_err(map_error)?;
        finish(tx).await?;
        Ok(true)
    }

    async fn complete_task(&self, id: &str, revision: u64) -> Result<bool, StoreError> {
        let tx = self
            .transaction(&[TASKS], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        if !same_revision(&tasks, id, revision).await? {
            return Ok(false);
        }
        tasks
            .delete(JsValue::from_str(id))
            .await
            .map_err(map_error)?;
        finish(tx).await?;
        Ok(true)
    }

    async fn complete_tasks(&self, done: &[(String, u64)]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let tx = self
            .transaction(&[TASKS], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        let stored = try_issue_all(done.iter().map(|(id, _)| stored_revision(&tasks, id))).await?;
        let doomed = done
            .iter()
            .zip(stored)
            .filter(|((_, revision), stored)| *stored == Some(*revision))
            .map(|((id, _), _)| tasks.delete(JsValue::from_str(id)));
        try_issue_all(doomed).await.map_err(map_error)?;
        finish(tx).await
    }

    async fn dead_letter(&self, failed: &FailedTask) -> Result<bool, StoreError> {
        let tx = self
            .transaction(&[TASKS, FAILED], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        if !same_revision(&tasks, &failed.id, failed.task.revision).await? {
            return Ok(false);
        }
        tasks
            .delete(JsValue::from_str(&failed.id))
            .await
            .map_err(map_error)?;
        let failed_store = tx.store(FAILED).map_err(map_error)?;
        failed_store
            .put(&to_js(failed)?, None)
            .await
            .map_err(map_error)?;
        finish(tx).await?;
        Ok(true)
    }

    async fn list_failed(&self) -> Result<Vec<FailedTask>, StoreError> {
        self.read_all(FAILED).await
    }

    async fn count_failed(&self) -> Result<u32, StoreError> {
        let tx = self
            .transaction(&[FAILED], TransactionMode::ReadOnly)
            .await?;
        let failed = tx.store(FAILED).map_err(map_error)?;
        failed.count(None).await.map_err(map_error)
    }

    async fn requeue_failed(&self, id: &str, _now: Millis) -> Result<Option<Task>, StoreError> {
        let tx = self
            .transaction(&[TASKS, FAILED, META], TransactionMode::ReadWrite)
            .await?;
        let failed_store = tx.store(FAILED).map_err(map_error)?;
        let Some(value) = failed_store
            .get(JsValue::from_str(id))
            .await
            .map_err(map_error)?
        else {
            return Ok(None);
        };
        if !js_sys::Reflect::get(&value, &JsValue::from_str(UNREADABLE))
            .unwrap_or(JsValue::UNDEFINED)
            .is_undefined()
        {
            return Err(StoreError::Corrupt(format!(
                "task \"{id}\" was unreadable in storage and cannot be retried: register it again (discardFailed() removes the dead letter)"
            )));
        }
        let failed: FailedTask = from_js(value)?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        let meta = tx.store(META).map_err(map_error)?;
        failed_store
            .delete(JsValue::from_str(id))
            .await
            .map_err(map_error)?;
        if let Some(queued) = tasks.get(JsValue::from_str(id)).await.map_err(map_error)? {
            // The app re-registered this id since it failed: the newer payload wins.
            finish(tx).await?;
            return from_js(queued).map(Some);
        }
        let seq = last_seq(&meta).await? + 1;
        let mut task = failed.task;
        task.seq = seq;
        task.revision = seq;
        task.attempts = 0;
        task.errors.clear();
        task.next_attempt_at = None;
        task.dispatched = false;
        tasks.put(&to_js(&task)?, None).await.map_err(map_error)?;
        meta.put(&meta_entry(SEQ_KEY, &seq)?, None)
            .await
            .map_err(map_error)?;
        finish(tx).await?;
        Ok(Some(task))
    }

    async fn discard_failed(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self
            .transaction(&[FAILED], TransactionMode::ReadWrite)
            .await?;
        let failed = tx.store(FAILED).map_err(map_error)?;
        let existed = failed
            .key_exists(JsValue::from_str(id))
            .await
            .map_err(map_error)?;
        if existed {
            failed
                .delete(JsValue::from_str(id))
                .await
                .map_err(map_error)?;
        }
        finish(tx).await?;
        Ok(existed)
    }

    async fn put_answer(&self, id: &str, answer: &serde_json::Value) -> Result<(), StoreError> {
        self.put_meta(&format!("{ANSWER_KEY}{id}"), answer).await
    }

    async fn get_answer(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.get_meta(&format!("{ANSWER_KEY}{id}")).await
    }

    async fn delete_answer(&self, id: &str) -> Result<(), StoreError> {
        let tx = self
            .transaction(&[META], TransactionMode::ReadWrite)
            .await?;
        let meta = tx.store(META).map_err(map_error)?;
        meta.delete(JsValue::from_str(&format!("{ANSWER_KEY}{id}")))
            .await
            .map_err(map_error)?;
        finish(tx).await
    }

    async fn restore_tasks(&self, restored: &[Task]) -> Result<(), StoreError> {
        let tx = self
            .transaction(&[TASKS, META], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        let meta = tx.store(META).map_err(map_error)?;
        let seq = restored
            .iter()
            .map(|t| t.seq.max(t.revision))
            .max()
            .unwrap_or(0)
            .max(last_seq(&meta).await?);
        let values = restored
            .iter()
            .map(|t| to_js(t).map(|v| (v, None)))
            .collect::<Result<Vec<_>, _>>()?;
        tasks.put_all(values.into_iter()).await.map_err(map_error)?;
        meta.put(&meta_entry(SEQ_KEY, &seq)?, None)
            .await
            .map_err(map_error)?;
        finish(tx).await?;
        // The write-back of a lost database is done: the queue reads again.
        self.connection.written_back();
        Ok(())
    }
}

/// The property of a dead letter that holds the value found unreadable in
/// the queue, as it was (see [`IdbStore::quarantine`]).
const UNREADABLE: &str = "unreadableValue";

impl IdbStore {
    /// Moves stored task values that do not read as tasks out of the queue
    /// into the dead letters, each with a reason naming it and what was
    /// wrong, and the value as found (under [`UNREADABLE`], for DevTools),
    /// in one transaction; a value rewritten readable meanwhile stays.
    async fn quarantine(&self, corrupt: Vec<(JsValue, String)>) -> Result<(), StoreError> {
        let tx = self
            .transaction(&[TASKS, FAILED], TransactionMode::ReadWrite)
            .await?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        let failed = tx.store(FAILED).map_err(map_error)?;
        let keys: Vec<JsValue> = corrupt
            .iter()
            .map(|(value, _)| {
                js_sys::Reflect::get(value, &JsValue::from_str("id")).unwrap_or(JsValue::UNDEFINED)
            })
            .collect();
        let current = try_issue_all(keys.iter().map(|key| tasks.get(key.clone())))
            .await
            .map_err(map_error)?;
        let now = js_sys::Date::now();
        let mut moves = Vec::new();
        for ((key, (_, error)), current) in keys.into_iter().zip(corrupt).zip(current) {
            let Some(value) = current else { continue };
            if from_js::<Task>(value.clone()).is_ok() {
                continue;
            }
            let id = key
                .as_string()
                .unwrap_or_else(|| String::from(js_sys::JsString::from(key.clone())));
            let plain =
                serde_wasm_bindgen::from_value(value.clone()).unwrap_or(serde_json::Value::Null);
            let letter = to_js(&quarantine(&id, &plain, &error, now))?;
            js_sys::Reflect::set(&letter, &JsValue::from_str(UNREADABLE), &value).map_err(
                |_| StoreError::Corrupt(format!("cannot keep the unreadable task \"{id}\"")),
            )?;
            moves.push((key, letter));
        }
        // Every delete and put placed at once (see `issue_all`).
        type Request<'a> =
            std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), idb::Error>> + 'a>>;
        let mut requests: Vec<Request> = Vec::new();
        for (key, letter) in &moves {
            requests.push(Box::pin(tasks.delete(key.clone())));
            requests.push(Box::pin(failed.put(letter, None)));
        }
        try_issue_all(requests).await.map_err(map_error)?;
        finish(tx).await
    }
}

/// The last task `seq` given out, read inside an open transaction.
async fn last_seq(meta: &ObjectStore) -> Result<u64, StoreError> {
    let entry = meta
        .get(JsValue::from_str(SEQ_KEY))
        .await
        .map_err(map_error)?;
    Ok(entry
        .and_then(|e| js_sys::Reflect::get(&e, &JsValue::from_str("value")).ok())
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0) as u64)
}

/// Registers tasks inside an open transaction over `tasks` and `meta`: each
/// task's revision is the next value of the persisted counter; new ids also
/// take it as their seq, queued ids keep their place.
pub(super) async fn register_in(
    tasks: &ObjectStore,
    meta: &ObjectStore,
    mut batch: Vec<Task>,
) -> Result<Vec<Task>, StoreError> {
    if batch.is_empty() {
        return Ok(batch);
    }
    let mut seq = last_seq(meta).await?;
    let existing: HashSet<String> = if batch.len() == 1 {
        // One lookup beats listing every key of a long queue.
        let found = tasks
            .key_exists(JsValue::from_str(&batch[0].id))
            .await
            .map_err(map_error)?;
        found.then(|| batch[0].id.clone()).into_iter().collect()
    } else {
        tasks
            .get_all_keys(None, None)
            .await
            .map_err(map_error)?
            .into_iter()
            .filter_map(|k| k.as_string())
            .collect()
    };
    let queued = try_issue_all(
        batch
            .iter()
            .filter(|t| existing.contains(&t.id))
            .map(|t| tasks.get(JsValue::from_str(&t.id))),
    )
    .await
    .map_err(map_error)?;
    let mut queued = queued.into_iter();
    for task in batch.iter_mut() {
        seq += 1;
        task.revision = seq;
        task.seq = seq;
        if existing.contains(&task.id) {
            if let Some(stored) = queued.next().flatten() {
                let stored: Task = from_js(stored)?;
                task.seq = stored.seq;
                task.created_at = stored.created_at;
            }
        }
    }
    let values = batch
        .iter()
        .map(|t| to_js(t).map(|v| (v, None)))
        .collect::<Result<Vec<_>, _>>()?;
    tasks.put_all(values.into_iter()).await.map_err(map_error)?;
    meta.put(&meta_entry(SEQ_KEY, &seq)?, None)
        .await
        .map_err(map_error)?;
    Ok(batch)
}

/// The revision of a stored task, if it is stored.
pub(super) async fn stored_revision(
    tasks: &ObjectStore,
    id: &str,
) -> Result<Option<u64>, StoreError> {
    let Some(stored) = tasks.get(JsValue::from_str(id)).await.map_err(map_error)? else {
        return Ok(None);
    };
    Ok(
        js_sys::Reflect::get(&stored, &JsValue::from_str("revision"))
            .ok()
            .and_then(|v| v.as_f64())
            .map(|v| v as u64),
    )
}

async fn same_revision(tasks: &ObjectStore, id: &str, revision: u64) -> Result<bool, StoreError> {
    Ok(stored_revision(tasks, id).await? == Some(revision))
}
