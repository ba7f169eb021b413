//! `client.subscribe(entityType, { where, orderBy, limit }, callback)`: the
//! callback gets the query's result now, then again each time a local
//! write, a pull, a push answer or another tab changes that result (not on
//! every write: results are compared). Each result is a frozen array that
//! stays the same object until the next change, the stable snapshot that
//! `useSyncExternalStore`, Vue's `shallowRef` and Svelte's `readable` bind
//! to as they are.

use crate::api::client::{Inner, SyncClient};
use crate::api::error::{tidesync_error, ApiError};
use crate::api::input;
use crate::api::replication::{entity_type_arg, replicator};
use crate::engine::query::{Direction, Query};
use js_sys::{Function, Object};
use serde_json::Value;
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
    let error = ApiError::InvalidQuery;
    input::object(
        options,
        "query",
        "{ where: { done: false }, orderBy: \"title\", limit: 20 }",
        error,
    )?;
    for key in input::keys(options, "query", error)? {
        if !["where", "orderBy", "limit"].contains(&key.as_str()) {
            return Err(invalid(&format!(
                "unknown query option `{}`; expected where, orderBy or limit",
                input::shorten(&key, 40)
            )));
        }
    }
    let mut predicate = None;
    let filter = input::get(options, "where", "where", error)?;
    if filter.is_function() {
        predicate = Some(filter.unchecked_into::<Function>());
    } else if let Some(filter) = input::present(filter) {
        let fields = input::json_object(&filter, "where", |why| {
            ApiError::InvalidQuery(format!("{why} (`where` must be an object of field values, compared for equality, or a function (record) => boolean)"))
        })?;
        query.filter = fields.into_iter().collect();
    }
    let order_error = || invalid("`orderBy` must be a field name or [field, \"asc\" | \"desc\"]");
    if let Some(order) = input::present(input::get(options, "orderBy", "orderBy", error)?) {
        let order = input::json(&order, "orderBy", error)?;
        let (field, direction) = match &order {
            Value::String(field) => (Some(field.as_str()), Some(Direction::Asc)),
            Value::Array(pair) if (1..=2).contains(&pair.len()) => (
                pair[0].as_str(),
                match pair.get(1) {
                    None => Some(Direction::Asc),
                    Some(Value::String(d)) if d == "asc" => Some(Direction::Asc),
                    Some(Value::String(d)) if d == "desc" => Some(Direction::Desc),
                    Some(_) => None,
                },
            ),
            _ => (None, None),
        };
        match (field, direction) {
            (Some(field), Some(direction)) if !field.is_empty() => {
                query.order_by = Some((field.to_owned(), direction))
            }
            _ => return Err(order_error()),
        }
    }
    if let Some(limit) = input::present(input::get(options, "limit", "limit", error)?) {
        match limit.as_f64() {
            Some(n) if n.fract() == 0.0 && (1.0..=1e9).contains(&n) => {
                query.limit = Some(n as usize)
            }
            _ => return Err(invalid("`limit` must be a positive integer (at most 1e9)")),
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
        let callback = input::function(
            &callback,
            "callback",
            "(records) => void",
            ApiError::InvalidQuery,
        )?;
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
            input::to_js_json(view)
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
        if let Ok(record) = input::to_js_json(view) {
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
