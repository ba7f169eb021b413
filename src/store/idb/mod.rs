//! The IndexedDB [`Store`], through the `idb` crate. Owns the database schema (one
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

mod connection;
mod error;
mod records;
mod requests;
mod tasks;

pub use error::map_error;

use crate::engine::ports::StoreError;
use connection::Connection;
use error::finish;
use idb::TransactionMode;
use requests::Tx;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::rc::Rc;
use wasm_bindgen::JsValue;

/// Version of the IndexedDB schema. Raising it runs the upgrade path, which
/// creates the stores and indexes that are missing.
pub const SCHEMA_VERSION: u32 = 1;

pub const TASKS: &str = "tasks";
pub const FAILED: &str = "failed";
pub const RECORDS: &str = "records";
pub const META: &str = "meta";

const SEQ_KEY: &str = "taskSeq";
/// Prefix of the `meta` keys under which answers are kept for dependents.
const ANSWER_KEY: &str = "answer:";
/// The pull cursor's meta key, spelled once in the engine's ports.
use crate::engine::ports::PULL_CURSOR_KEY as CURSOR_KEY;

/// The IndexedDB-backed store of one client.
pub struct IdbStore {
    connection: Rc<Connection>,
    name: String,
    created: bool,
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
        let (connection, created) = Connection::open(name.clone()).await?;
        Ok(Self {
            connection,
            name,
            created,
        })
    }

    /// Whether the open that made this store created the database.
    pub fn created(&self) -> bool {
        self.created
    }

    /// A transaction over `stores`, on a connection opened again if the
    /// browser took it away (see [`connection`]).
    async fn transaction(&self, stores: &[&str], mode: TransactionMode) -> Result<Tx, StoreError> {
        self.connection.transaction(stores, mode).await
    }

    /// Every value of one object store, in one read transaction.
    async fn read_all<T: DeserializeOwned>(&self, store: &str) -> Result<Vec<T>, StoreError> {
        let tx = self
            .transaction(&[store], TransactionMode::ReadOnly)
            .await?;
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
        self.connection.close();
    }

    /// Deletes a client's database entirely.
    pub async fn delete(client_name: &str) -> Result<(), StoreError> {
        idb::Factory::new()
            .and_then(|factory| factory.delete(&Self::database_name(client_name)))
            .map_err(map_error)?
            .await
            .map_err(map_error)
    }

    pub async fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let tx = self.transaction(&[META], TransactionMode::ReadOnly).await?;
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
        let tx = self
            .transaction(&[META], TransactionMode::ReadWrite)
            .await?;
        let meta = tx.store(META).map_err(map_error)?;
        meta.put(&meta_entry(key, value)?, None)
            .await
            .map_err(map_error)?;
        finish(tx).await?;
        Ok(())
    }
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
