//! The dead letter of a stored task that can no longer be read (changed by
//! hand, by an extension, by a bug in an older version): one bad value must
//! not stop the client from loading every good task, so the store moves it
//! out of the queue into the dead letters, with a reason that names the
//! task and what was wrong, and keeps every field it could still read, so
//! `listFailed()` and DevTools show what the app had registered.
//!
//! Pure, so it is specified natively; the IndexedDB store uses it while
//! loading the queue (`store/idb/tasks.rs`).

use crate::engine::task::{FailedTask, HttpRequest, Priority, Task, TaskKind};
use crate::engine::time::Millis;
use std::collections::BTreeMap;

/// The fields of a stored value, by name.
pub type Fields<V> = BTreeMap<String, V>;

/// How a store's values are taken apart and read: plain JavaScript objects
/// in IndexedDB (through the same conversion the store reads tasks with,
/// so no second one is built into the wasm), JSON in the native tests.
pub trait Format {
    type Value: Clone;
    /// The fields of a stored value; none if it is not an object.
    fn fields(value: &Self::Value) -> Fields<Self::Value>;
    /// A task's fields as the store writes them.
    fn write(task: &Task) -> Option<Fields<Self::Value>>;
    /// A task from fields, if they read as one.
    fn read(fields: &Fields<Self::Value>) -> Option<Task>;
}

/// A readable dead letter for the task stored under `id` as `stored`,
/// which did not read as a task (`error` says why).
pub fn quarantine<F: Format>(id: &str, stored: &F::Value, error: &str, now: Millis) -> FailedTask {
    let (task, unreadable) = salvage::<F>(id, stored, now);
    let fields = if unreadable.is_empty() {
        String::new()
    } else {
        format!("; unreadable or missing: {}", unreadable.join(", "))
    };
    FailedTask {
        id: id.to_owned(),
        task,
        reason: format!(
            "corrupt: the stored task \"{id}\" could not be read ({error}){fields}; it was moved out of the queue and cannot be retried: register it again"
        ),
        failed_at: now,
    }
}

/// The fields of `stored` that read as a task's, over neutral defaults
/// (no request, nothing attempted), and the names of those that did not.
fn salvage<F: Format>(id: &str, stored: &F::Value, now: Millis) -> (Task, Vec<String>) {
    let mut task = Task {
        id: id.to_owned(),
        kind: TaskKind::Request,
        priority: Priority::Normal,
        seq: 0,
        ordering_key: None,
        request: HttpRequest {
            url: String::new(),
            method: String::new(),
            headers: Default::default(),
            body: None,
        },
        revision: 0,
        idempotency_key: String::new(),
        retry_on_failure: false,
        attempts: 0,
        next_attempt_at: None,
        created_at: now,
        errors: Vec::new(),
        dispatched: false,
        expires_at: None,
        depends_on: None,
    };
    let Some(mut fields) = F::write(&task) else {
        return (task, vec!["every field".into()]);
    };
    let given = F::fields(stored);
    // Missing: required fields absent from the stored value (a field with
    // a default may be absent).
    let mut unreadable: Vec<String> = fields
        .keys()
        .filter(|key| key.as_str() != "id" && !given.contains_key(key.as_str()))
        .filter(|key| {
            let mut without = fields.clone();
            without.remove(key.as_str());
            F::read(&without).is_none()
        })
        .cloned()
        .collect();
    for (key, value) in given {
        if key == "id" {
            continue;
        }
        let previous = fields.insert(key.clone(), value);
        match F::read(&fields) {
            Some(read) => task = read,
            None => {
                match previous {
                    Some(previous) => fields.insert(key.clone(), previous),
                    None => fields.remove(&key),
                };
                unreadable.push(key);
            }
        }
    }
    unreadable.sort();
    (task, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// JSON, as serde writes and reads a task.
    struct Json;

    impl Format for Json {
        type Value = Value;
        fn fields(value: &Value) -> Fields<Value> {
            value
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        }
        fn write(task: &Task) -> Option<Fields<Value>> {
            serde_json::to_value(task).ok().map(|v| Self::fields(&v))
        }
        fn read(fields: &Fields<Value>) -> Option<Task> {
            serde_json::from_value(Value::Object(fields.clone().into_iter().collect())).ok()
        }
    }

    fn stored() -> Value {
        json!({
            "id": "b", "kind": "request", "priority": "high", "seq": 7,
            "request": {"url": "/api/items", "method": "POST"},
            "revision": 7, "idempotencyKey": "key-b", "retryOnFailure": true,
            "attempts": 2, "createdAt": "2025-11-24T16:00:00.000Z",
        })
    }

    #[test]
    fn a_readable_value_would_read_whole() {
        let (task, unreadable) = salvage::<Json>("b", &stored(), 0.0);
        assert!(unreadable.is_empty(), "{unreadable:?}");
        assert_eq!(task.request.url, "/api/items");
        assert_eq!(task.priority, Priority::High);
        assert_eq!(task.attempts, 2);
    }

    #[test]
    fn fields_of_the_wrong_type_are_named_and_the_rest_kept() {
        let mut value = stored();
        value["request"] = json!(42);
        value["seq"] = json!("not a number");
        let failed = quarantine::<Json>("b", &value, "invalid type: integer `42`", 5.0);
        assert_eq!(failed.id, "b");
        assert_eq!(failed.failed_at, 5.0);
        assert_eq!(failed.task.idempotency_key, "key-b", "readable fields kept");
        assert_eq!(failed.task.priority, Priority::High);
        assert_eq!(failed.task.request.url, "", "no request was readable");
        assert!(
            failed.reason.starts_with("corrupt: the stored task \"b\""),
            "{}",
            failed.reason
        );
        assert!(
            failed.reason.contains("invalid type: integer `42`"),
            "{}",
            failed.reason
        );
        assert!(
            failed
                .reason
                .contains("unreadable or missing: request, seq"),
            "{}",
            failed.reason
        );
    }

    #[test]
    fn missing_fields_are_named_too() {
        let value = json!({"id": "bad", "kind": "no such kind", "priority": 7});
        let failed = quarantine::<Json>("bad", &value, "unknown variant", 0.0);
        for field in [
            "kind",
            "priority",
            "request",
            "seq",
            "idempotencyKey",
            "createdAt",
        ] {
            assert!(
                failed.reason.contains(field),
                "{field} in {}",
                failed.reason
            );
        }
        assert_eq!(failed.task.id, "bad");
    }

    #[test]
    fn a_value_that_is_not_an_object_keeps_only_its_id() {
        let failed = quarantine::<Json>("x", &json!(42), "expected a map", 1.0);
        assert_eq!(failed.task.id, "x");
        assert!(failed.reason.contains("request"), "{}", failed.reason);
    }
}
