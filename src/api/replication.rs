//! The replication half of `SyncClient`: `put`, `delete`, `get`, `query`,
//! `sync`, `pull`, `verify`, and the `onConflict` callback. Converts and
//! delegates to [`crate::engine::replication::Replicator`].

use crate::api::client::{run_flush, schedule_flush, store_error, to_js_value, Inner, SyncClient};
use crate::api::devtools;
use crate::api::error::tidesync_error;
use crate::api::error::ApiError;
use crate::api::guard;
use crate::api::input;
use crate::engine::events::Event;
use crate::engine::outbox::{FlushReport, Outbox};
use crate::engine::ports::StoreError;
use crate::engine::ports::{ConflictResolver, EventSink};
use crate::engine::replication::replicator::ReplicationError;
use crate::engine::replication::{PullReport, Replicator};
use crate::engine::sync::{self, SyncError, SyncHost};
use crate::engine::task::Task;
use crate::platform::global;
use js_sys::{Function, Promise};
use serde_json::{Map, Value};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::client::{BrowserPorts, BrowserReplica};

/// The app's `onConflict(local, remote)`: returns the record to keep (or a
/// promise of it). A throw or rejection leaves the record in
/// `syncStatus: "conflict"` for the app to settle.
pub struct JsResolver(pub Option<Function>);

impl ConflictResolver for JsResolver {
    fn is_set(&self) -> bool {
        self.0.is_some()
    }

    async fn resolve(
        &self,
        _entity_type: &str,
        local: &Value,
        remote: &Value,
    ) -> Result<Map<String, Value>, String> {
        let Some(callback) = &self.0 else {
            return Err("no onConflict callback".into());
        };
        let to_js = |v: &Value| input::to_js_json(v).map_err(|e| input::thrown(&e));
        let returned = callback
            .call2(&JsValue::NULL, &to_js(local)?, &to_js(remote)?)
            .map_err(|e| format!("onConflict threw: {}", describe(&e)))?;
        let value = match returned.dyn_into::<Promise>() {
            Ok(promise) => JsFuture::from(promise)
                .await
                .map_err(|e| format!("onConflict rejected: {}", describe(&e)))?,
            Err(value) => value,
        };
        let object = input::json_object(&value, "the record onConflict returned", |why| {
            ApiError::InvalidRecord(format!("onConflict must return the record to keep: {why}"))
        })
        .map_err(|e| e.to_string())?;
        Ok(strip_reserved(object))
    }
}

fn describe(value: &JsValue) -> String {
    input::thrown(value)
}

/// Fields the SDK and the server own; an app's copy of them is ignored.
const RESERVED: [&str; 6] = [
    "id",
    "version",
    "updatedAt",
    "isDeleted",
    "syncStatus",
    "syncError",
];

fn strip_reserved(mut object: Map<String, Value>) -> Map<String, Value> {
    for field in RESERVED {
        object.remove(field);
    }
    object
}

fn replication_error(error: ReplicationError) -> JsValue {
    let code = match &error {
        ReplicationError::Store(inner) => return store_error(inner.clone()),
        ReplicationError::UnknownEntityType(_) => "unknown-entity-type",
        ReplicationError::InvalidRecord(_) => "invalid-record",
        ReplicationError::Network(_) => "network",
        ReplicationError::Http { .. } => "http",
        ReplicationError::Auth(_) => "auth-required",
        ReplicationError::Busy => "busy",
    };
    tidesync_error(code, &error.to_string())
}

pub(crate) fn replicator(inner: &Inner) -> Result<Rc<Replicator<BrowserReplica>>, JsValue> {
    inner.replicator.clone().ok_or_else(|| {
        tidesync_error(
            "replication-not-configured",
            "records need replication: open the client with serverUrl and entityTypes",
        )
    })
}

pub(crate) fn entity_type_arg(value: &JsValue) -> Result<String, JsValue> {
    let text = input::string(value, "entityType", 200, ApiError::InvalidRecord)?;
    if text.is_empty() {
        return Err(ApiError::InvalidRecord(
            "`entityType` must be a non-empty string, e.g. \"end_user\"".into(),
        )
        .into());
    }
    Ok(text)
}

/// A record id argument (`get`, `delete`).
fn record_id(value: &JsValue) -> Result<String, JsValue> {
    Ok(input::string(
        value,
        "id",
        crate::api::options::MAX_TEXT,
        ApiError::InvalidRecord,
    )?)
}

fn view(record: &crate::engine::replication::LocalRecord) -> Result<JsValue, JsValue> {
    input::to_js_json(&record.view())
}

#[wasm_bindgen]
impl SyncClient {
    /// Writes a record locally (offline or not) and queues its push in the
    /// same transaction. Assigns a UUID when `id` is absent. Resolves with
    /// the record as stored (`syncStatus: "pending"`).
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncedRecord>")]
    pub fn put(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] entity_type: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Record<string, JsonValue>")] record: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            let (replicator, entity_type) = records_call(&inner, &entity_type, Access::Write)?;
            let object = input::json_object(&record, "record", ApiError::InvalidRecord)?;
            let id = match object.get("id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id.clone()),
                Some(_) => {
                    return Err(tidesync_error(
                        "invalid-record",
                        "`record.id` must be a string (or absent)",
                    ))
                }
            };
            let (stored, task) = replicator
                .put(&entity_type, id, strip_reserved(object))
                .await
                .map_err(replication_error)?;
            adopt_all(&inner, vec![task]);
            view(&stored)
        })
    }

    /// Deletes a record locally (a tombstone, pushed as a delete). Resolves
    /// `false` when there was no such live record.
    #[wasm_bindgen(unchecked_return_type = "Promise<boolean>")]
    pub fn delete(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] entity_type: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            let (replicator, entity_type) = records_call(&inner, &entity_type, Access::Write)?;
            let id = record_id(&id)?;
            let deleted = replicator.delete(&entity_type, &id).await;
            let Some((_, task)) = deleted.map_err(replication_error)? else {
                return Ok(JsValue::FALSE);
            };
            adopt_all(&inner, vec![task]);
            Ok(JsValue::TRUE)
        })
    }

    /// A live record, or `null`.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncedRecord | null>")]
    pub fn get(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] entity_type: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] id: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            let (replicator, entity_type) = records_call(&inner, &entity_type, Access::Read)?;
            let id = record_id(&id)?;
            let record = replicator.get(&entity_type, &id).await;
            record
                .map_err(replication_error)?
                .map_or(Ok(JsValue::NULL), |record| view(&record))
        })
    }

    /// Every live record of a type, ordered by id.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncedRecord[]>")]
    pub fn query(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] entity_type: JsValue,
    ) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            let (replicator, entity_type) = records_call(&inner, &entity_type, Access::Read)?;
            let records = replicator
                .query(&entity_type)
                .await
                .map_err(replication_error)?;
            let views: Vec<Value> = records.iter().map(|r| r.view()).collect();
            input::to_js_json(&views)
        })
    }

    /// Pushes everything due, then pulls until the server has no more.
    /// One sync at a time: a call during a sync waits for it, then runs.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncReport>")]
    pub fn sync(&self) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            inner.ensure_open()?;
            let host = BrowserSync::of(&inner)?;
            let report = inner.syncs.sync(&host).await.map_err(sync_error)?;
            to_js_value(&report)
        })
    }

    /// Pulls changes after the stored cursor until the server has no more.
    #[wasm_bindgen(unchecked_return_type = "Promise<PullReport>")]
    pub fn pull(&self) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            inner.ensure_open()?;
            to_js_value(&pull_and_adopt(&inner).await?)
        })
    }

    /// Compares counts and checksums per entity type with the server and
    /// repairs what differs. Resolves with one report per type.
    #[wasm_bindgen(unchecked_return_type = "Promise<VerifyReport[]>")]
    pub fn verify(&self) -> Promise {
        let inner = self.inner.clone();
        guard::promise(async move {
            inner.ensure_open()?;
            let host = BrowserSync::of(&inner)?;
            let reports = sync::verify(&host).await.map_err(replication_error)?;
            to_js_value(&reports)
        })
    }
}

/// Pulls until the server has no more and hands the tasks conflict
/// resolution queued to the outbox: `pull()`, and the live connection's
/// pulls when the server pokes.
pub(crate) async fn pull_and_adopt(inner: &Rc<Inner>) -> Result<PullReport, JsValue> {
    let host = BrowserSync::of(inner)?;
    let (report, requeued) = inner
        .syncs
        .pull(&host, |_| {})
        .await
        .map_err(replication_error)?;
    adopt_all(inner, requeued);
    Ok(report)
}

/// The client as the engine's sync sees it: flushes as the client does,
/// and measures phases for DevTools.
struct BrowserSync<'a> {
    inner: &'a Rc<Inner>,
    replicator: Rc<Replicator<BrowserReplica>>,
}

impl<'a> BrowserSync<'a> {
    fn of(inner: &'a Rc<Inner>) -> Result<Self, JsValue> {
        Ok(Self {
            inner,
            replicator: replicator(inner)?,
        })
    }
}

impl SyncHost for BrowserSync<'_> {
    type Ports = BrowserPorts;
    type Replica = BrowserReplica;

    fn outbox(&self) -> &Outbox<BrowserPorts> {
        self.inner.outbox()
    }

    fn replicator(&self) -> &Replicator<BrowserReplica> {
        &self.replicator
    }

    async fn flush(&self) -> Result<FlushReport, StoreError> {
        run_flush(self.inner).await
    }

    fn emit(&self, event: Event) {
        self.inner.events.emit(event);
    }

    fn phase_started(&self) -> f64 {
        devtools::performance_now()
    }

    fn phase_done(&self, name: &str, started: f64, detail: &Value) {
        if let Ok(detail) = to_js_value(detail) {
            devtools::measure_phase(name, started, self.inner.name(), &detail);
        }
    }
}

fn sync_error(error: SyncError) -> JsValue {
    match error {
        SyncError::Store(error) => store_error(error),
        SyncError::Replication(error) => replication_error(error),
        SyncError::AuthRequired => tidesync_error("auth-required", &error.to_string()),
    }
}

/// What a record call does: a write needs the client open (a read of a
/// closed client answers from what is stored).
#[derive(PartialEq)]
enum Access {
    Read,
    Write,
}

/// The client's replicator and the validated entity type of a record call
/// (`put`, `delete`, `get`, `query`).
fn records_call(
    inner: &Inner,
    entity_type: &JsValue,
    access: Access,
) -> Result<(Rc<Replicator<BrowserReplica>>, String), JsValue> {
    if access == Access::Write {
        inner.ensure_open()?;
    }
    Ok((replicator(inner)?, entity_type_arg(entity_type)?))
}

/// Hands tasks written to IndexedDB by replication to the outbox's
/// schedule, and flushes them soon when the client flushes by itself.
fn adopt_all(inner: &Rc<Inner>, tasks: Vec<Task>) {
    if tasks.is_empty() {
        return;
    }
    for task in tasks {
        inner.outbox().adopt(task);
    }
    devtools::changed(inner.name());
    if inner.auto_flush() && global::navigator_online() {
        schedule_flush(inner);
    }
}
