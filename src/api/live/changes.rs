//! Which entity types just changed, here and in other tabs.
//!
//! [`ObservedRecords`] is the replicator's record store: it delegates every
//! call to IndexedDB and, after each write that succeeded (a local
//! `put`/`delete`, a pulled page, a push answer, a settled conflict, a
//! repair), tells the [`ChangeFeed`] the entity types it touched. The feed
//! re-runs the subscriptions of those types once per tick and announces the
//! types on the database's `BroadcastChannel`, so the other tabs and
//! workers of the origin re-run theirs (they read the same IndexedDB). The
//! same channel carries the live connection's status from the tab that
//! holds it (see [`super::link`]).

use crate::api::client::Inner;
use crate::api::live::subscriptions::{self, Subscription};
use crate::engine::ports::{RecordChange, RecordStore, StoreError};
use crate::engine::replication::LocalRecord;
use crate::engine::task::Task;
use crate::platform::global;
use crate::store::idb::IdbStore;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BroadcastChannel, MessageEvent};

type MessageListener = Closure<dyn FnMut(MessageEvent)>;

#[derive(Default)]
pub(crate) struct ChangeFeed {
    inner: RefCell<Weak<Inner>>,
    channel: RefCell<Option<BroadcastChannel>>,
    on_message: RefCell<Option<MessageListener>>,
    /// Types whose subscriptions must re-run.
    pending: RefCell<Vec<String>>,
    /// Types changed here, to announce to the other tabs.
    outgoing: RefCell<Vec<String>>,
    scheduled: Cell<bool>,
    pub(crate) subscriptions: RefCell<Vec<Rc<Subscription>>>,
}

impl ChangeFeed {
    /// Opens the channel `tidesync:<name>:live` (none where the scope has
    /// no BroadcastChannel: changes then stay in this realm).
    pub(crate) fn attach(self: &Rc<Self>, inner: &Rc<Inner>) {
        *self.inner.borrow_mut() = Rc::downgrade(inner);
        let Ok(channel) = BroadcastChannel::new(&format!("tidesync:{}:live", inner.name())) else {
            return;
        };
        let feed = Rc::downgrade(self);
        let listener = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            if let Some(feed) = feed.upgrade() {
                feed.on_message(event.data());
            }
        });
        channel.set_onmessage(Some(listener.as_ref().unchecked_ref()));
        *self.on_message.borrow_mut() = Some(listener);
        *self.channel.borrow_mut() = Some(channel);
    }

    pub(crate) fn detach(&self) {
        if let Some(channel) = self.channel.borrow_mut().take() {
            channel.set_onmessage(None);
            channel.close();
        }
        self.on_message.borrow_mut().take();
        self.subscriptions.borrow_mut().clear();
    }

    /// Posts `message` to the other tabs and workers of this database.
    pub(crate) fn post(&self, message: &JsValue) {
        if let Some(channel) = self.channel.borrow().as_ref() {
            let _ = channel.post_message(message);
        }
    }

    fn on_message(self: &Rc<Self>, data: JsValue) {
        let kind = global::prop(&data, "kind").as_string().unwrap_or_default();
        if kind == "changed" {
            let types = js_sys::Array::from(&global::prop(&data, "types"));
            self.changed(types.iter().filter_map(|t| t.as_string()).collect(), false);
            return;
        }
        if let Some(inner) = self.inner.borrow().upgrade() {
            super::link::on_channel_message(&inner, &kind, &data);
        }
    }

    /// `types` changed (`local`: in this realm, so the other tabs are told).
    pub(crate) fn changed(self: &Rc<Self>, types: Vec<String>, local: bool) {
        for entity_type in types {
            if local {
                add(&self.outgoing, &entity_type);
            }
            add(&self.pending, &entity_type);
        }
        if self.pending.borrow().is_empty() || self.scheduled.replace(true) {
            return;
        }
        let feed = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            // One tick: every write of this task and the microtasks queued
            // with it make one announcement and one re-run.
            let _ = wasm_bindgen_futures::JsFuture::from(js_sys::Promise::resolve(&JsValue::NULL))
                .await;
            feed.scheduled.set(false);
            let pending = std::mem::take(&mut *feed.pending.borrow_mut());
            let outgoing = std::mem::take(&mut *feed.outgoing.borrow_mut());
            if !outgoing.is_empty() {
                let message = js_sys::Object::new();
                let _ = js_sys::Reflect::set(&message, &"kind".into(), &"changed".into());
                let types: js_sys::Array = outgoing.iter().map(|t| JsValue::from_str(t)).collect();
                let _ = js_sys::Reflect::set(&message, &"types".into(), &types);
                feed.post(&message);
            }
            let Some(inner) = feed.inner.borrow().upgrade() else {
                return;
            };
            let due: Vec<Rc<Subscription>> = feed
                .subscriptions
                .borrow()
                .iter()
                .filter(|s| pending.iter().any(|t| t == s.entity_type()))
                .cloned()
                .collect();
            for subscription in due {
                subscriptions::refresh(&inner, subscription);
            }
        });
    }
}

/// Adds `entity_type` to a set kept as a short list (a handful of types).
fn add(set: &RefCell<Vec<String>>, entity_type: &str) {
    let mut set = set.borrow_mut();
    if !set.iter().any(|t| t == entity_type) {
        set.push(entity_type.to_owned());
    }
}

/// The replicator's record store: IndexedDB, observed.
pub struct ObservedRecords {
    store: Rc<IdbStore>,
    feed: Rc<ChangeFeed>,
}

impl ObservedRecords {
    pub(crate) fn new(store: Rc<IdbStore>, feed: Rc<ChangeFeed>) -> Self {
        Self { store, feed }
    }
}

impl RecordStore for ObservedRecords {
    async fn get_record(
        &self,
        entity_type: &str,
        id: &str,
    ) -> Result<Option<LocalRecord>, StoreError> {
        self.store.get_record(entity_type, id).await
    }

    async fn get_records(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<LocalRecord>>, StoreError> {
        self.store.get_records(keys).await
    }

    async fn records_of(&self, entity_type: &str) -> Result<Vec<LocalRecord>, StoreError> {
        self.store.records_of(entity_type).await
    }

    async fn mutation_chains(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Vec<Task>>, StoreError> {
        self.store.mutation_chains(keys).await
    }

    async fn write_local(&self, record: &LocalRecord, task: Task) -> Result<Task, StoreError> {
        let stored = self.store.write_local(record, task).await?;
        self.feed.changed(vec![record.entity_type.clone()], true);
        Ok(stored)
    }

    async fn apply(&self, change: RecordChange) -> Result<Vec<Task>, StoreError> {
        let types: Vec<String> = change
            .writes
            .iter()
            .map(|w| w.record.entity_type.clone())
            .chain(change.delete_records.iter().map(|(t, _)| t.clone()))
            .collect();
        let registered = self.store.apply(change).await?;
        self.feed.changed(types, true);
        Ok(registered)
    }

    async fn mark_dispatched(&self, tasks: &[Task]) -> Result<Vec<bool>, StoreError> {
        self.store.mark_dispatched(tasks).await
    }

    async fn get_meta_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.store.get_meta_text(key).await
    }

    async fn put_meta_text(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.store.put_meta_text(key, value).await
    }
}
