//! Property tests of request parsing against the real server (issue 11,
//! item 6): valid push, pull, pull-pending, verify and fetch requests with
//! one field replaced by an arbitrary JSON value (or removed), and
//! arbitrary bytes. The server never fails (no 5xx, no dropped connection,
//! still alive afterwards) and every refusal is a JSON error; a
//! `validation` error names the field that was changed (or says the JSON
//! is malformed), and so does a `rejected` mutation.
//!
//! `PROPTEST_CASES` sets the cases per property (default 64).

mod common;

use common::{Api, Server};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

/// Arbitrary JSON: every kind, strings with control characters and
/// non-ASCII, numbers at the edges, a few levels of nesting.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        Just(json!(-1)),
        Just(json!(0)),
        "\\PC{0,12}".prop_map(Value::from),
        "[\\x00-\\x1f\"\\\\]{0,4}".prop_map(Value::from),
        Just(Value::from("end_user")),
        Just(Value::from("2026-01-01T00:00:00Z")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid request per route.
fn templates() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/api/client/sync/push",
            json!({"clientId": "c", "mutations": [{
                "mutationId": "m1", "entityType": "end_user", "op": "upsert", "id": "u1",
                "baseVersion": 0, "data": {"name": "x"},
                "clientTimestamp": "2026-01-01T00:00:00.000Z", "changedFields": ["name"]
            }]}),
        ),
        (
            "/api/client/sync/push",
            json!({"changes": {"end_user": [{"id": "u2", "name": "x", "version": 1,
                                             "isDeleted": false, "updatedAt": "2026-01-01T00:00:00Z"}]}}),
        ),
        (
            "/api/client/sync/pull",
            json!({"cursor": null, "entityTypes": ["end_user"], "limit": 10}),
        ),
        (
            "/api/client/sync/pull",
            json!({"lastSyncTimestamp": "1970-01-01T00:00:00Z", "entityTypes": ["end_user"]}),
        ),
        (
            "/api/client/sync/pull-pending",
            json!({"entityTypes": ["end_user"]}),
        ),
        (
            "/api/client/sync/verify",
            json!({"entityTypes": ["end_user"]}),
        ),
        (
            "/api/client/sync/fetch",
            json!({"entityType": "end_user", "ids": ["u1"]}),
        ),
    ]
}

/// Every path to a value inside `v` (object keys and array indexes).
fn paths(v: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(Step::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(Step::Index(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Replaces (or, with `None`, removes) the value at `path`.
fn set(v: &mut Value, path: &[Step], new: Option<Value>) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut parent = v;
    for step in parent_path {
        parent = match step {
            Step::Key(k) => &mut parent[k.as_str()],
            Step::Index(i) => &mut parent[*i],
        };
    }
    match (last, parent, new) {
        (Step::Key(k), Value::Object(m), Some(n)) => {
            m.insert(k.clone(), n);
        }
        (Step::Key(k), Value::Object(m), None) => {
            m.remove(k);
        }
        (Step::Index(i), Value::Array(a), Some(n)) => a[*i] = n,
        (Step::Index(i), Value::Array(a), None) => {
            a.remove(*i);
        }
        _ => {}
    }
}

/// The name a message must use for the field at `path`: its own key (the
/// last one on the path).
fn names(path: &[Step]) -> Vec<String> {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Step::Key(k) => Some(k.clone()),
            Step::Index(_) => None,
        })
        .into_iter()
        .collect()
}

/// Checks one answer; `Err` describes what is wrong.
fn check(status: u16, body: &Value, changed: &[String]) -> Result<(), String> {
    if status >= 500 || status == 0 {
        return Err(format!("status {status}: {body}"));
    }
    let names_field = |msg: &str| {
        msg.contains("malformed JSON")
            || msg.contains("request body")
            || changed.iter().any(|n| msg.contains(n.as_str()))
    };
    if status == 200 {
        // A rejected mutation names its field too.
        for r in body["results"].as_array().into_iter().flatten() {
            if r["status"] == "rejected" {
                let msg = r["error"]["message"].as_str().unwrap_or("");
                if !names_field(msg) {
                    return Err(format!("rejection does not name {changed:?}: {msg}"));
                }
            }
        }
        return Ok(());
    }
    if body["success"] != false || !body["error"]["code"].is_string() {
        return Err(format!("status {status} without a JSON error: {body}"));
    }
    let msg = body["error"]["message"].as_str().unwrap_or("");
    if msg.is_empty() {
        return Err(format!("empty message: {body}"));
    }
    if body["error"]["code"] == "validation" && !names_field(msg) {
        return Err(format!("validation error does not name {changed:?}: {msg}"));
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

#[test]
fn changed_fields_are_refused_with_a_json_error_naming_them() {
    let server = Server::start(&common::Backend::Sqlite);
    let api = Api::for_tenant(&server, "fuzz");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    for (route, template) in templates() {
        let mut all = Vec::new();
        paths(&template, &mut Vec::new(), &mut all);
        let strategy = (0..all.len(), prop::option::weighted(0.9, arb_json()));
        runner
            .run(&strategy, |(which, new)| {
                let path = &all[which];
                let mut body = template.clone();
                set(&mut body, path, new);
                let (status, answer) = rt.block_on(api.post(route, body.clone()));
                check(status, &answer, &names(path))
                    .map_err(|e| TestCaseError::fail(format!("{route} {body}: {e}")))
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        rt.block_on(reqwest::get(server.url("/healthz")))
            .is_ok_and(|r| r.status() == 200),
        "the server is still up"
    );
}

#[test]
fn arbitrary_bytes_and_json_are_refused_as_malformed_or_invalid() {
    let server = Server::start(&common::Backend::Sqlite);
    let api = Api::for_tenant(&server, "fuzz");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let routes: Vec<&str> = templates().into_iter().map(|(r, _)| r).collect();
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
    ];
    runner
        .run(&(0..routes.len(), body), |(which, bytes)| {
            let route = routes[which];
            let (status, answer) = rt.block_on(api.post_raw(route, bytes.clone()));
            // Anything may be wrong here, so any field may be named: only the
            // shape of the answer is checked.
            let top: Vec<String> = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.as_object().map(|m| m.keys().cloned().collect()))
                .unwrap_or_default();
            let mut named = top;
            named.extend(
                [
                    "entityTypes",
                    "entityType",
                    "ids",
                    "mutations",
                    "clientId",
                    "changes",
                    "cursor",
                ]
                .map(String::from),
            );
            check(status, &answer, &named).map_err(|e| {
                TestCaseError::fail(format!(
                    "{route} {:?}: {e}",
                    String::from_utf8_lossy(&bytes)
                ))
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rt
        .block_on(reqwest::get(server.url("/healthz")))
        .is_ok_and(|r| r.status() == 200));
}
