//! The IndexedDB [`Store`], through rexie. Owns the database schema (one
//! place, versioned) and the translation between engine types and the plain
//! objects stored, which read well in DevTools → Application → IndexedDB.
//!
//! Database `tidesync:<name>`, version [`SCHEMA_VERSION`]:
//! - `tasks`   key `id`, index `seq`: queued work
//! - `failed`  key `id`: dead letters
//! - `records` key `[entityType, id]`, index `entityType`: replicated records
//! - `meta`    key `key`: `{key, value}` pairs (task seq counter, client id,
//!   cursors, schema version, `answer:<task id>`: the kept answers of tasks
//!   that queued tasks depend on)
//!
//! It also notices the database being deleted under it (the browser closes
//! its connections: site data cleared, eviction) and opens it again
//! ([`IdbStore::watch_for_loss`], [`IdbStore::reconnect`]).
//!
//! Every method is one transaction; writes issue all their requests and
//! await the transaction once (awaiting each put would cost ~3x).

use crate::engine::ports::{RecordChange, RecordStore, RecordWrite, Store, StoreError};
use crate::engine::replication::record::LocalRecord;
use crate::engine::replication::replicator::{in_chain, mutation_task_id, place_in_chain};
use crate::engine::task::{FailedTask, Task};
use crate::engine::time::Millis;
use crate::platform::global;
use rexie::{Index, ObjectStore, Rexie, TransactionMode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::JsValue;

/// Version of the IndexedDB schema. Raising it runs the upgrade path, which
/// rexie applies by creating the stores and indexes that are missing.
pub const SCHEMA_VERSION: u32 = 1;

pub const TASKS: &str = "tasks";
pub const FAILED: &str = "failed";
pub const RECORDS: &str = "records";
pub const META: &str = "meta";

const SEQ_KEY: &str = "taskSeq";
/// Prefix of the `meta` keys under which answers are kept for dependents.
const ANSWER_KEY: &str = "answer:";
/// Must match the replicator's cursor key.
const CURSOR_KEY: &str = "pullCursor";

/// The IndexedDB-backed store of one client.
pub struct IdbStore {
    /// Replaced when the database vanished under the client and was
    /// opened again (see [`IdbStore::reconnect`]).
    db: RefCell<Rexie>,
    name: String,
    /// The open connection that only listens for `close` (see
    /// [`IdbStore::watch_for_loss`]).
    watcher: Rc<RefCell<Option<JsValue>>>,
    created: Cell<bool>,
}

impl IdbStore {
    /// The database name for a client name.
    pub fn database_name(client_name: &str) -> String {
        format!("tidesync:{client_name}")
    }

    /// Opens (creating or upgrading) the database of a client
    /// ([`IdbStore::created`] says whether this open created it).
    pub async fn open(client_name: &str) -> Result<Self, StoreError> {
        let name = Self::database_name(client_name);
        let db = connect(&name).await?;
        let store = Self {
            db: RefCell::new(db),
            name,
            watcher: Rc::new(RefCell::new(None)),
            created: Cell::new(false),
        };
        store.created.set(store.identify().await?);
        Ok(store)
    }

    /// Whether the open that made this store created the database.
    pub fn created(&self) -> bool {
        self.created.get()
    }

    /// Whether the database was created by the open just made: every
    /// open writes the schema version, so a database without one is new.
    async fn identify(&self) -> Result<bool, StoreError> {
        let fresh = self.get_meta::<u32>("schemaVersion").await?.is_none();
        self.put_meta("schemaVersion", &SCHEMA_VERSION).await?;
        Ok(fresh)
    }

    /// Opens the database again after its connection was closed by the
    /// browser; says whether it came back empty (deleted meanwhile).
    pub async fn reconnect(&self) -> Result<bool, StoreError> {
        let db = connect(&self.name).await?;
        let old = self.db.replace(db);
        old.close();
        self.identify().await
    }

    /// Calls `on_loss` when the browser closes the database's connections
    /// (it does so when it deletes the database under a running page: site
    /// data cleared, eviction). Rexie does not expose its connection's
    /// `close` event, so a second connection listens; it steps aside for
    /// another tab's upgrade or deletion (`versionchange`).
    pub fn watch_for_loss(&self, on_loss: impl FnOnce() + 'static) {
        self.stop_watching();
        let Ok(request) = global::call(
            &global::get("indexedDB"),
            "open",
            &[JsValue::from_str(&self.name)],
        ) else {
            return;
        };
        let slot = self.watcher.clone();
        let opened = request.clone();
        let on_success = Closure::once_into_js(move |_: JsValue| {
            let db = global::prop(&opened, "result");
            let on_close = Closure::once_into_js(move |_: JsValue| on_loss());
            let _ = js_sys::Reflect::set(&db, &"onclose".into(), &on_close);
            let watched = db.clone();
            let step_aside = Closure::once_into_js(move |_: JsValue| {
                let _ = global::call(&watched, "close", &[]);
            });
            let _ = js_sys::Reflect::set(&db, &"onversionchange".into(), &step_aside);
            *slot.borrow_mut() = Some(db);
        });
        let _ = js_sys::Reflect::set(&request, &"onsuccess".into(), &on_success);
    }

    /// Closes the listening connection (on close, before reconnecting).
    pub fn stop_watching(&self) {
        if let Some(db) = self.watcher.borrow_mut().take() {
            let _ = js_sys::Reflect::set(&db, &"onclose".into(), &JsValue::NULL);
            let _ = global::call(&db, "close", &[]);
        }
    }

    fn transaction(
        &self,
        stores: &[&str],
        mode: TransactionMode,
    ) -> Result<rexie::Transaction, StoreError> {
        self.db
            .borrow()
            .transaction(stores, mode)
            .map_err(map_error)
    }

    /// Every value of one object store, in one read transaction.
    async fn read_all<T: DeserializeOwned>(&self, store: &str) -> Result<Vec<T>, StoreError> {
        let tx = self.transaction(&[store], TransactionMode::ReadOnly)?;
        let values = tx
            .store(store)
            .map_err(map_error)?
            .get_all(None, None)
            .await
            .map_err(map_error)?;
        values.into_iter().map(from_js).collect()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes the connection (the data stays).
    pub fn close(self) {
        self.stop_watching();
        self.db.into_inner().close();
    }

    /// Deletes a client's database entirely.
    pub async fn delete(client_name: &str) -> Result<(), StoreError> {
        Rexie::delete(&Self::database_name(client_name))
            .await
            .map_err(map_error)
    }

    pub async fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let tx = self.transaction(&[META], TransactionMode::ReadOnly)?;
        let meta = tx.store(META).map_err(map_error)?;
        let Some(entry) = meta.get(JsValue::from_str(key)).await.map_err(map_error)? else {
            return Ok(None);
        };
        let value =
            js_sys::Reflect::get(&entry, &JsValue::from_str("value")).unwrap_or(JsValue::UNDEFINED);
        if value.is_undefined() {
            return Ok(None);
        }
        from_js(value).map(Some)
    }

    pub async fn put_meta<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let tx = self.transaction(&[META], TransactionMode::ReadWrite)?;
        let meta = tx.store(META).map_err(map_error)?;
        meta.put(&meta_entry(key, value)?, None)
            .await
            .map_err(map_error)?;
        finish(tx).await?;
        Ok(())
    }
}

/// Opens (creating or upgrading) a database with Tidesync's schema.
async fn connect(name: &str) -> Result<Rexie, StoreError> {
    Rexie::builder(name)
        .version(SCHEMA_VERSION)
        .add_object_store(
            ObjectStore::new(TASKS)
                .key_path("id")
                .add_index(Index::new("seq", "seq")),
        )
        .add_object_store(ObjectStore::new(FAILED).key_path("id"))
        .add_object_store(
            ObjectStore::new(RECORDS)
                .key_path_array(["entityType", "id"])
                .add_index(Index::new("entityType", "entityType")),
        )
        .add_object_store(ObjectStore::new(META).key_path("key"))
        .build()
        .await
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open IndexedDB database {name}: {e:?}"))
        })
}

/// Serializes to a plain object (maps as objects), as DevTools shows best.
pub fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, StoreError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true))
        .map_err(|e| StoreError::Corrupt(format!("cannot store value: {e}")))
}

pub fn from_js<T: DeserializeOwned>(value: JsValue) -> Result<T, StoreError> {
    serde_wasm_bindgen::from_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn meta_entry<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<JsValue, StoreError> {
    #[derive(Serialize)]
    struct Entry<'a, T: ?Sized> {
        key: &'a str,
        value: &'a T,
    }
    to_js(&Entry { key, value })
}

/// Waits for a write transaction to end, and fails unless it committed:
/// rexie reports an aborted transaction as a result, not an error, and an
/// abort at commit time (no request failed) is the browser refusing to
/// persist the data, which in practice means the storage quota.
async fn finish(tx: rexie::Transaction) -> Result<(), StoreError> {
    match tx.done().await.map_err(map_error)? {
        rexie::TransactionResult::Committed => Ok(()),
        rexie::TransactionResult::Aborted => Err(StoreError::Quota(
            "the browser aborted the write at commit (QuotaExceededError): this origin's storage is full".into(),
        )),
    }
}

/// Maps rexie's errors to the store's: quota errors are told apart because
/// the app must react to them (free space, or ask for persistence).
pub fn map_error(error: rexie::Error) -> StoreError {
    let text = format!("{error:?}");
    if text.contains("QuotaExceeded") {
        StoreError::Quota("the browser refused to store more data for this origin".into())
    } else {
        StoreError::Unavailable(text)
    }
}

impl Store for IdbStore {
    async fn load_tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.read_all(TASKS).await
    }

    async fn register_tasks(&self, batch: Vec<Task>) -> Result<Vec<Task>, StoreError> {
        let tx = self.transaction(&[TASKS, META], TransactionMode::ReadWrite)?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        let meta = tx.store(META).map_err(map_error)?;
        let stored = register_in(&tasks, &meta, batch).await?;
        finish(tx).await?;
        Ok(stored)
    }

    async fn update_task(&self, task: &Task) -> Result<bool, StoreError> {
        let tx = self.transaction(&[TASKS], TransactionMode::ReadWrite)?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        if !same_revision(&tasks, &task.id, task.revision).await? {
            return Ok(false);
        }
        tasks.put(&to_js(task)?, None).await.map_err(map_error)?;
        finish(tx).await?;
        Ok(true)
    }

    async fn complete_task(&self, id: &str, revision: u64) -> Result<bool, StoreError> {
        let tx = self.transaction(&[TASKS], TransactionMode::ReadWrite)?;
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
        let tx = self.transaction(&[TASKS], TransactionMode::ReadWrite)?;
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
        let tx = self.transaction(&[TASKS, FAILED], TransactionMode::ReadWrite)?;
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
        let tx = self.transaction(&[FAILED], TransactionMode::ReadOnly)?;
        let failed = tx.store(FAILED).map_err(map_error)?;
        failed.count(None).await.map_err(map_error)
    }

    async fn requeue_failed(&self, id: &str, _now: Millis) -> Result<Option<Task>, StoreError> {
        let tx = self.transaction(&[TASKS, FAILED, META], TransactionMode::ReadWrite)?;
        let failed_store = tx.store(FAILED).map_err(map_error)?;
        let Some(value) = failed_store
            .get(JsValue::from_str(id))
            .await
            .map_err(map_error)?
        else {
            return Ok(None);
        };
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
        let tx = self.transaction(&[FAILED], TransactionMode::ReadWrite)?;
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
        let tx = self.transaction(&[META], TransactionMode::ReadWrite)?;
        let meta = tx.store(META).map_err(map_error)?;
        meta.delete(JsValue::from_str(&format!("{ANSWER_KEY}{id}")))
            .await
            .map_err(map_error)?;
        finish(tx).await
    }

    async fn restore_tasks(&self, restored: &[Task]) -> Result<(), StoreError> {
        let tx = self.transaction(&[TASKS, META], TransactionMode::ReadWrite)?;
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
        finish(tx).await
    }
}

/// The last task `seq` given out, read inside an open transaction.
async fn last_seq(meta: &rexie::Store) -> Result<u64, StoreError> {
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
///
/// Two round trips to the browser's IndexedDB backend, whatever the batch:
/// the reads (the counter, and the queued copies) are placed together, then
/// every write (the tasks and the counter) is placed together. Awaiting each
/// request in turn cost four round trips per `register()` awaited alone
/// (docs/benchmarks.md, "Where the time of an enqueue goes").
async fn register_in(
    tasks: &rexie::Store,
    meta: &rexie::Store,
    mut batch: Vec<Task>,
) -> Result<Vec<Task>, StoreError> {
    if batch.is_empty() {
        return Ok(batch);
    }
    let (mut seq, queued): (u64, Vec<Option<Task>>) = if batch.len() == 1 {
        // One lookup beats listing every key of a long queue; a `get`
        // rather than a key test, so a re-registration needs no third read.
        let (seq, stored) =
            futures::future::join(last_seq(meta), tasks.get(JsValue::from_str(&batch[0].id))).await;
        let stored = stored.map_err(map_error)?.map(from_js).transpose()?;
        (seq?, vec![stored])
    } else {
        let (seq, keys) =
            futures::future::join(last_seq(meta), tasks.get_all_keys(None, None)).await;
        let existing: HashSet<String> = keys
            .map_err(map_error)?
            .into_iter()
            .filter_map(|k| k.as_string())
            .collect();
        let stored = try_issue_all(batch.iter().map(|t| {
            let queued = existing.contains(&t.id);
            let id = JsValue::from_str(&t.id);
            async move {
                match queued {
                    true => tasks.get(id).await,
                    false => Ok(None),
                }
            }
        }))
        .await
        .map_err(map_error)?
        .into_iter()
        .map(|stored| stored.map(from_js).transpose())
        .collect::<Result<Vec<_>, _>>()?;
        (seq?, stored)
    };
    for (task, stored) in batch.iter_mut().zip(queued) {
        seq += 1;
        task.revision = seq;
        task.seq = seq;
        if let Some(stored) = stored {
            task.seq = stored.seq;
            task.created_at = stored.created_at;
        }
    }
    let values = batch
        .iter()
        .map(|t| to_js(t).map(|v| (v, None)))
        .collect::<Result<Vec<_>, _>>()?;
    let counter = meta_entry(SEQ_KEY, &seq)?;
    let (put, counted) =
        futures::future::join(tasks.put_all(values.into_iter()), meta.put(&counter, None)).await;
    put.map_err(map_error)?;
    counted.map_err(map_error)?;
    Ok(batch)
}

/// The keys of a record's chain of mutations (`head` and every `head#…`),
/// and a few other ids that sort between them, which readers filter out
/// with [`in_chain`].
fn chain_range(head: &str) -> Result<rexie::KeyRange, StoreError> {
    rexie::KeyRange::bound(
        &JsValue::from_str(head),
        &JsValue::from_str(&format!("{head}#\u{ffff}")),
        Some(false),
        Some(false),
    )
    .map_err(|e| map_error(e.into()))
}

/// The queued mutations of a record, oldest first, read inside an open
/// transaction: its head id and every `head#…` id, one key range.
async fn chain_in(
    tasks: &rexie::Store,
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
        let tx = self.transaction(&[RECORDS], TransactionMode::ReadOnly)?;
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
        let tx = self.transaction(&[RECORDS], TransactionMode::ReadOnly)?;
        let records = tx.store(RECORDS).map_err(map_error)?;
        read_records(
            &records,
            keys.iter().map(|(t, id)| (t.as_str(), id.as_str())),
        )
        .await
    }

    async fn records_of(&self, entity_type: &str) -> Result<Vec<LocalRecord>, StoreError> {
        let tx = self.transaction(&[RECORDS], TransactionMode::ReadOnly)?;
        let records = tx.store(RECORDS).map_err(map_error)?;
        let index = records.index("entityType").map_err(map_error)?;
        let range = rexie::KeyRange::only(&JsValue::from_str(entity_type))
            .map_err(|e| map_error(e.into()))?;
        let values = index.get_all(Some(range), None).await.map_err(map_error)?;
        values.into_iter().map(from_js).collect()
    }

    async fn mutation_chains(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Vec<Task>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.transaction(&[TASKS], TransactionMode::ReadOnly)?;
        let tasks = tx.store(TASKS).map_err(map_error)?;
        try_issue_all(keys.iter().map(|(t, id)| chain_in(&tasks, t, id))).await
    }

    async fn write_local(&self, record: &LocalRecord, task: Task) -> Result<Task, StoreError> {
        let tx = self.transaction(&[TASKS, META, RECORDS, FAILED], TransactionMode::ReadWrite)?;
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
        let tx = self.transaction(&[TASKS, META, RECORDS], TransactionMode::ReadWrite)?;
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
        let tx = self.transaction(&[TASKS], TransactionMode::ReadWrite)?;
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
    records: &rexie::Store,
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

/// The revision of a stored task, if it is stored.
async fn stored_revision(tasks: &rexie::Store, id: &str) -> Result<Option<u64>, StoreError> {
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

async fn same_revision(tasks: &rexie::Store, id: &str, revision: u64) -> Result<bool, StoreError> {
    Ok(stored_revision(tasks, id).await? == Some(revision))
}

/// Runs requests of one transaction together: the first poll issues every
/// request, in order (rexie places a request when its future is first
/// polled), so the transaction never waits on a request not yet placed even
/// if this future is polled late. IndexedDB answers a transaction's
/// requests in the order they were placed, so later polls resume at the
/// first unanswered one. Lighter than `futures`' joins, which each bring a
/// queue of their own into the wasm.
async fn issue_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    let mut first_unanswered = 0;
    let mut issued = false;
    std::future::poll_fn(|cx| {
        let first_pass = !std::mem::replace(&mut issued, true);
        for (index, future) in pending.iter_mut().enumerate().skip(first_unanswered) {
            if outputs[index].is_some() {
                continue;
            }
            match future.as_mut().poll(cx) {
                Poll::Ready(output) => outputs[index] = Some(output),
                // Every request is placed by the first pass; after it, stop at
                // the first one still waiting (the rest answer after it).
                Poll::Pending if !first_pass => break,
                Poll::Pending => {}
            }
        }
        while first_unanswered < outputs.len() && outputs[first_unanswered].is_some() {
            first_unanswered += 1;
        }
        if first_unanswered == outputs.len() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// [`issue_all`] for fallible requests: the first error, or every output.
async fn try_issue_all<T, E, F: Future<Output = Result<T, E>>>(
    futures: impl IntoIterator<Item = F>,
) -> Result<Vec<T>, E> {
    issue_all(futures).await.into_iter().collect()
}
