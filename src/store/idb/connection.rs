//! The connection of an [`IdbStore`]: opening the database with its schema,
//! and opening it again whenever the browser took it away.
//!
//! The browser closes a connection under a running page when it deletes the
//! database (site data cleared, eviction: `close` fires), and asks it to
//! step aside when a script deletes or upgrades the database
//! (`versionchange`: the store closes it, or the deletion would wait
//! forever). Either way the connection is dropped and the next call opens
//! the database again; a transaction refused because the connection is
//! closing (`InvalidStateError`) also reopens and tries once more.
//!
//! A database found empty by such a reopen was lost: until the client wrote
//! back what it holds ([`IdbStore::restore_tasks`](crate::engine::ports::Store::restore_tasks)),
//! full reads of the queue refuse (an empty read would make the client
//! forget its queue), and the loss callback of
//! [`IdbStore::watch_for_loss`] runs (it writes back and reports
//! `storage:evicted`, see `api/storage.rs`).

use super::error::{exception_name, map_error, INVALID_STATE};
use super::requests::Tx;
use super::{meta_entry, IdbStore, FAILED, META, RECORDS, SCHEMA_VERSION, TASKS};
use crate::engine::ports::StoreError;
use idb::builder::{DatabaseBuilder, IndexBuilder, ObjectStoreBuilder};
use idb::{KeyPath, TransactionMode};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Event, IdbDatabase, IdbVersionChangeEvent};

type Handler = Closure<dyn FnMut(Event)>;

/// The connection and what is known about it.
pub(super) struct Connection {
    name: String,
    /// `None` once the browser closed it (or asked it to step aside).
    db: RefCell<Option<IdbDatabase>>,
    /// A reopen found the database empty: lost, not yet written back.
    lost: Cell<bool>,
    on_loss: RefCell<Option<Box<dyn FnOnce()>>>,
    /// `onclose` and `onversionchange` of every connection this opens.
    handlers: Option<(Handler, Handler)>,
}

impl Connection {
    /// Opens the database (see [`IdbStore::created`] for the flag).
    pub(super) async fn open(name: String) -> Result<(Rc<Self>, bool), StoreError> {
        let (db, fresh) = connect(&name).await?;
        let connection = Rc::new_cyclic(|weak: &Weak<Self>| {
            let on_close = weak.clone();
            let on_versionchange = weak.clone();
            Self {
                name,
                db: RefCell::new(None),
                lost: Cell::new(false),
                on_loss: RefCell::new(None),
                handlers: Some((
                    Closure::new(move |event: Event| {
                        if let Some(connection) = on_close.upgrade() {
                            connection.closed_by_browser(&event);
                        }
                    }),
                    Closure::new(move |event: Event| {
                        if let Some(connection) = on_versionchange.upgrade() {
                            connection.version_change(&event);
                        }
                    }),
                )),
            }
        });
        connection.install(db);
        Ok((connection, fresh))
    }

    fn install(&self, db: IdbDatabase) {
        if let Some((on_close, on_versionchange)) = &self.handlers {
            db.set_onclose(Some(on_close.as_ref().unchecked_ref()));
            db.set_onversionchange(Some(on_versionchange.as_ref().unchecked_ref()));
        }
        if let Some(old) = self.db.replace(Some(db)) {
            forget(&old);
        }
    }

    /// Whether `event` is about the current connection (not one replaced).
    fn current(&self, event: &Event) -> bool {
        let target: Option<JsValue> = event.target().map(Into::into);
        let db = self.db.borrow();
        match (target, db.as_ref()) {
            (Some(target), Some(db)) => &target == AsRef::<JsValue>::as_ref(db),
            _ => false,
        }
    }

    /// `close`: the browser deleted the database under the page.
    fn closed_by_browser(&self, event: &Event) {
        if self.current(event) {
            self.db.borrow_mut().take();
            self.report_loss();
        }
    }

    /// `versionchange`: a script deletes (new version `null`) or upgrades
    /// the database; step aside so it can. A deletion is a loss.
    fn version_change(&self, event: &Event) {
        if !self.current(event) {
            return;
        }
        if let Some(db) = self.db.borrow_mut().take() {
            forget(&db);
        }
        let deleted = event
            .dyn_ref::<IdbVersionChangeEvent>()
            .is_some_and(|e| e.new_version().is_none());
        if deleted {
            self.report_loss();
        }
    }

    fn report_loss(&self) {
        let on_loss = self.on_loss.borrow_mut().take();
        if let Some(on_loss) = on_loss {
            on_loss();
        }
    }

    /// The open connection, opening the database again if it was taken away.
    async fn ensure_open(&self) -> Result<IdbDatabase, StoreError> {
        if let Some(db) = self.db.borrow().as_ref() {
            return Ok(db.clone());
        }
        let (db, fresh) = connect(&self.name).await?;
        // Another call may have reopened it meanwhile: keep that one.
        if let Some(current) = self.db.borrow().as_ref() {
            db.close();
            if fresh {
                self.lost.set(true);
            }
            return Ok(current.clone());
        }
        self.install(db.clone());
        if fresh {
            self.lost.set(true);
            self.report_loss();
        }
        Ok(db)
    }

    /// A transaction over `stores`; a connection found closing is dropped
    /// and the database opened again, once.
    pub(super) async fn transaction(
        &self,
        stores: &[&str],
        mode: TransactionMode,
    ) -> Result<Tx, StoreError> {
        let db = self.ensure_open().await?;
        match idb::Database::from(db.clone()).transaction(stores, mode) {
            Ok(tx) => Ok(Tx(tx)),
            Err(error) if exception_name(&error).as_deref() == Some(INVALID_STATE) => {
                self.drop_if_current(&db);
                let db = self.ensure_open().await?;
                idb::Database::from(db)
                    .transaction(stores, mode)
                    .map(Tx)
                    .map_err(map_error)
            }
            Err(error) => Err(map_error(error)),
        }
    }

    /// Drops `db` unless another call already replaced it.
    fn drop_if_current(&self, db: &IdbDatabase) {
        let mut current = self.db.borrow_mut();
        if current.as_ref() == Some(db) {
            if let Some(db) = current.take() {
                forget(&db);
            }
        }
    }

    pub(super) fn is_lost(&self) -> bool {
        self.lost.get()
    }

    pub(super) fn written_back(&self) {
        self.lost.set(false);
    }

    pub(super) fn close(&self) {
        self.on_loss.borrow_mut().take();
        if let Some(db) = self.db.borrow_mut().take() {
            forget(&db);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Its handlers go with it: the connection must not call them.
        self.close();
    }
}

/// Closes a connection without hearing from it again.
fn forget(db: &IdbDatabase) {
    db.set_onclose(None);
    db.set_onversionchange(None);
    db.close();
}

impl IdbStore {
    /// Makes sure the database is open again after the browser took it
    /// away; says whether it was found lost (deleted meanwhile) and not yet
    /// written back.
    pub async fn reconnect(&self) -> Result<bool, StoreError> {
        self.connection.ensure_open().await?;
        Ok(self.connection.is_lost())
    }

    /// Calls `on_loss` (once) when the database is found deleted under the
    /// running client: its connection closed by the browser (site data
    /// cleared, eviction), deleted by a script, or found empty by a reopen.
    pub fn watch_for_loss(&self, on_loss: impl FnOnce() + 'static) {
        *self.connection.on_loss.borrow_mut() = Some(Box::new(on_loss));
        if self.connection.is_lost() {
            self.connection.report_loss();
        }
    }

    /// Stops calling the loss callback (the client is closing). The
    /// connection still steps aside for a deletion or an upgrade.
    pub fn stop_watching(&self) {
        self.connection.on_loss.borrow_mut().take();
    }
}

/// Opens (creating or upgrading) a database with Tidesync's schema; says
/// whether this open created it (every open writes the schema version, so
/// a database without one is new).
async fn connect(name: &str) -> Result<(IdbDatabase, bool), StoreError> {
    let db = DatabaseBuilder::new(name)
        .version(SCHEMA_VERSION)
        .add_object_store(
            ObjectStoreBuilder::new(TASKS)
                .key_path(Some(KeyPath::new_single("id")))
                .add_index(IndexBuilder::new("seq".into(), KeyPath::new_single("seq"))),
        )
        .add_object_store(ObjectStoreBuilder::new(FAILED).key_path(Some(KeyPath::new_single("id"))))
        .add_object_store(
            ObjectStoreBuilder::new(RECORDS)
                .key_path(Some(KeyPath::new_array(["entityType", "id"])))
                .add_index(IndexBuilder::new(
                    "entityType".into(),
                    KeyPath::new_single("entityType"),
                )),
        )
        .add_object_store(ObjectStoreBuilder::new(META).key_path(Some(KeyPath::new_single("key"))))
        .build()
        .await
        .map_err(|error| match map_error(error) {
            StoreError::Unavailable(text) => {
                StoreError::Unavailable(format!("cannot open IndexedDB database {name}: {text}"))
            }
            other => other,
        })?;
    let db = IdbDatabase::from(db);
    match identify(&db).await {
        Ok(fresh) => Ok((db, fresh)),
        Err(error) => {
            db.close();
            Err(error)
        }
    }
}

async fn identify(db: &IdbDatabase) -> Result<bool, StoreError> {
    let tx = idb::Database::from(db.clone())
        .transaction(&[META], TransactionMode::ReadWrite)
        .map(Tx)
        .map_err(map_error)?;
    let meta = tx.store(META).map_err(map_error)?;
    let fresh = meta
        .get(JsValue::from_str("schemaVersion"))
        .await
        .map_err(map_error)?
        .is_none();
    meta.put(&meta_entry("schemaVersion", &SCHEMA_VERSION)?, None)
        .await
        .map_err(map_error)?;
    super::error::finish(tx).await?;
    Ok(fresh)
}
