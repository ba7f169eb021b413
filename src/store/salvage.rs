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
use serde_json::{Map, Value};

/// A readable dead letter for the task stored under `id` as `stored`,
/// which did not read as a task (`error` says why).
pub fn quarantine(id: &str, stored: &Value, error: &str, now: Millis) -> FailedTask {
    let (task, unreadable) = salvage(id, stored, now);
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
fn salvage(id: &str, stored: &Value, now: Millis) -> (Task, Vec<String>) {
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
    let Ok(Value::Object(mut fields)) = serde_json::to_value(&task) else {
        return (task, vec!["every field".into()]);
    };
    let empty = Map::new();
    let given = stored.as_object().unwrap_or(&empty);
    let mut unreadable: Vec<String> = fields
        .keys()
        .filter(|key| key.as_str() != "id" && !given.contains_key(key.as_str()))
        .cloned()
        .collect();
    for (key, value) in given {
        if key == "id" {
            continue;
        }
        let previous = fields.insert(key.clone(), value.clone());
        match serde_json::from_value::<Task>(Value::Object(fields.clone())) {
            Ok(read) => task = read,
            Err(_) => {
                match previous {
                    Some(previous) => fields.insert(key.clone(), previous),
                    None => fields.remove(key),
                };
                unreadable.push(key.clone());
            }
        }
    }
    unreadable.sort();
    (task, unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let (task, unreadable) = salvage("b", &stored(), 0.0);
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
        let failed = quarantine("b", &value, "invalid type: integer `42`", 5.0);
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
        let failed = quarantine("bad", &value, "unknown variant", 0.0);
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
        let failed = quarantine("x", &json!(42), "expected a map", 1.0);
        assert_eq!(failed.task.id, "x");
        assert!(failed.reason.contains("request"), "{}", failed.reason);
    }
}
