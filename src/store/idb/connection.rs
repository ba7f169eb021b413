//! The connection of an [`IdbStore`]: opening the database with its schema,
//! opening it again after the browser closed it, and the second connection
//! that listens for that close.

use super::{IdbStore, FAILED, META, RECORDS, SCHEMA_VERSION, TASKS};
use crate::engine::ports::StoreError;
use crate::platform::global;
use rexie::{Index, ObjectStore, Rexie};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::JsValue;

impl IdbStore {
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
}

/// Opens (creating or upgrading) a database with Tidesync's schema.
pub(super) async fn connect(name: &str) -> Result<Rexie, StoreError> {
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
