//! `client.subscribe(entityType, { where, orderBy, limit }, callback)`: the
//! callback gets the query's result now, then again each time a local
//! write, a pull, a push answer or another tab changes that result (not on
//! every write: results are compared). Each result is a frozen array that
//! stays the same object until the next change, the stable snapshot that
//! `useSyncExternalStore`, Vue's `shallowRef` and Svelte's `readable` bind
//! to as they are.

use crate::api::client::{Inner, SyncClient};
use crate::api::error::tidesync_error;
use crate::api::replication::{entity_type_arg, replicator};
use crate::engine::query::{Direction, Query};
use crate::platform::global;
use crate::store::idb::to_js;
use js_sys::{Function, Object};
use serde_json::{Map, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;

pub(crate) struct Subscription {
    entity_type: String,
    query: Query,
    /// `where` given as a function.
    predicate: Option<Function>,
    callback: Function,
    /// The result last delivered.
    last: RefCell<Option<Vec<Value>>>,
    running: Cell<bool>,
    again: Cell<bool>,
    active: Cell<bool>,
}

impl Subscription {
    pub(crate) fn entity_type(&self) -> &str {
        &self.entity_type
    }
}

fn invalid(message: &str) -> JsValue {
    tidesync_error("invalid-query", message)
}

/// Reads `{ where, orderBy, limit }`; every error names the field.
fn parse_options(options: &JsValue) -> Result<(Query, Option<Function>), JsValue> {
    let mut query = Query::default();
    if options.is_undefined() || options.is_null() {
        return Ok((query, None));
    }
    if !options.is_object() || js_sys::Array::is_array(options) {
        return Err(invalid("the query must be an object like { where: { done: false }, orderBy: \"title\", limit: 20 }"));
    }
    for key in Object::keys(options.unchecked_ref::<Object>()).iter() {
        let key = key.as_string().unwrap_or_default();
        if !["where", "orderBy", "limit"].contains(&key.as_str()) {
            return Err(invalid(&format!(
                "unknown query option `{key}`; expected where, orderBy or limit"
            )));
        }
    }
    let mut predicate = None;
    let filter = global::prop(options, "where");
    if filter.is_function() {
        predicate = Some(filter.unchecked_into::<Function>());
    } else if !filter.is_undefined() && !filter.is_null() {
        let fields: Map<String, Value> = serde_wasm_bindgen::from_value(filter).map_err(|_| {
            invalid("`where` must be an object of field values (compared for equality) or a function (record) => boolean")
        })?;
        query.filter = fields.into_iter().collect();
    }
    let order = global::prop(options, "orderBy");
    if let Some(field) = order.as_string() {
        query.order_by = Some((field, Direction::Asc));
    } else if js_sys::Array::is_array(&order) {
        let pair = js_sys::Array::from(&order);
        let field = pair.get(0).as_string();
        let direction = match pair.get(1).as_string().as_deref() {
            None | Some("asc") => Some(Direction::Asc),
            Some("desc") => Some(Direction::Desc),
            Some(_) => None,
        };
        match (field, direction, pair.length()) {
            (Some(field), Some(direction), 1 | 2) if !field.is_empty() => {
                query.order_by = Some((field, direction))
            }
            _ => {
                return Err(invalid(
                    "`orderBy` must be a field name or [field, \"asc\" | \"desc\"]",
                ))
            }
        }
    } else if !order.is_undefined() && !order.is_null() {
        return Err(invalid(
            "`orderBy` must be a field name or [field, \"asc\" | \"desc\"]",
        ));
    }
    let limit = global::prop(options, "limit");
    if !limit.is_undefined() && !limit.is_null() {
        match limit.as_f64() {
            Some(n) if n.fract() == 0.0 && n >= 1.0 => query.limit = Some(n as usize),
            _ => return Err(invalid("`limit` must be a positive integer")),
        }
    }
    Ok((query, predicate))
}

#[wasm_bindgen]
impl SyncClient {
    /// Calls `callback` with the records of `entityType` that match the
    /// query, now and after every change of that result; returns a function
    /// that unsubscribes. Typed in src/api/typescript.rs.
    #[wasm_bindgen(skip_typescript)]
    pub fn subscribe(
        &self,
        entity_type: JsValue,
        options: JsValue,
        callback: JsValue,
    ) -> Result<Function, JsValue> {
        let inner = &self.inner;
        inner.ensure_open()?;
        // subscribe(type, callback) leaves the query out.
        let (options, callback) = if options.is_function() && callback.is_undefined() {
            (JsValue::UNDEFINED, options)
        } else {
            (options, callback)
        };
        let callback: Function = callback
            .dyn_into()
            .map_err(|_| invalid("`callback` must be a function (records) => void"))?;
        let replicator = replicator(inner)?;
        let entity_type = entity_type_arg(&entity_type)?;
        if !replicator.options().entity_types.contains(&entity_type) {
            return Err(tidesync_error(
                "unknown-entity-type",
                &format!("entity type {entity_type:?} is not one of this client's entityTypes; add it to SyncClient.open({{entityTypes}})"),
            ));
        }
        let (query, predicate) = parse_options(&options)?;
        let subscription = Rc::new(Subscription {
            entity_type,
            query,
            predicate,
            callback,
            last: RefCell::new(None),
            running: Cell::new(false),
            again: Cell::new(false),
            active: Cell::new(true),
        });
        inner
            .live
            .feed
            .subscriptions
            .borrow_mut()
            .push(subscription.clone());
        refresh(inner, subscription.clone());
        let feed = Rc::downgrade(&inner.live.feed);
        let unsubscribe = Closure::once_into_js(move || {
            subscription.active.set(false);
            if let Some(feed) = feed.upgrade() {
                feed.subscriptions
                    .borrow_mut()
                    .retain(|s| !Rc::ptr_eq(s, &subscription));
            }
        });
        Ok(unsubscribe.unchecked_into())
    }
}

/// Re-runs a subscription's query, once more if asked again meanwhile,
/// and calls back when the result changed.
pub(crate) fn refresh(inner: &Rc<Inner>, subscription: Rc<Subscription>) {
    if !subscription.active.get() {
        return;
    }
    if subscription.running.replace(true) {
        subscription.again.set(true);
        return;
    }
    let inner = inner.clone();
    spawn_local(async move {
        loop {
            subscription.again.set(false);
            let result = evaluate(&inner, &subscription).await;
            if !subscription.active.get() {
                break;
            }
            match result {
                Ok(views) => deliver(&inner, &subscription, views),
                Err(message) => inner.events.logger().warn(
                    &format!(
                        "a subscription to {:?} could not read its records: {message}",
                        subscription.entity_type
                    ),
                    None,
                ),
            }
            if !subscription.again.get() {
                break;
            }
        }
        subscription.running.set(false);
    });
}

async fn evaluate(inner: &Rc<Inner>, subscription: &Subscription) -> Result<Vec<Value>, String> {
    let replicator = replicator(inner).map_err(|_| "replication is not configured".to_owned())?;
    let records = replicator
        .query(&subscription.entity_type)
        .await
        .map_err(|e| e.to_string())?;
    let mut views: Vec<Value> = records.iter().map(|r| r.view()).collect();
    if let Some(predicate) = &subscription.predicate {
        views.retain(|view| {
            to_js(view)
                .ok()
                .and_then(|record| predicate.call1(&JsValue::NULL, &record).ok())
                .is_some_and(|kept| kept.is_truthy())
        });
    }
    Ok(subscription.query.apply(views))
}

fn deliver(inner: &Inner, subscription: &Subscription, views: Vec<Value>) {
    if subscription.last.borrow().as_ref() == Some(&views) {
        return;
    }
    let snapshot = js_sys::Array::new();
    for view in &views {
        if let Ok(record) = to_js(view) {
            snapshot.push(&Object::freeze(record.unchecked_ref::<Object>()));
        }
    }
    Object::freeze(&snapshot);
    *subscription.last.borrow_mut() = Some(views);
    if let Err(thrown) = subscription.callback.call1(&JsValue::NULL, &snapshot) {
        inner.events.logger().error(
            "a subscribe() callback threw; the subscription goes on",
            Some(&thrown),
        );
    }
}
