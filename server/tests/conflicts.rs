//! Conflicts: a stale `baseVersion` under each strategy (server-wins,
//! client-wins, last-write-wins, merge with and without `changedFields`),
//! on SQLite and PostgreSQL.

mod common;

use common::{upsert, Api, Backend, Server};
use serde_json::{json, Value};

const FETCH: &str = "/api/client/sync/fetch";

on_both_backends!(
    stale_base_version_server_wins_keeps_server_copy,
    stale_base_version_client_wins_applies_client_change,
    stale_base_version_last_write_wins_compares_timestamps,
    stale_base_version_merge_keeps_fields_client_did_not_send,
    stale_merge_with_changed_fields_keeps_server_values_of_other_fields,
);

/// Creates `id` at version 2 (two applied changes by client A) in `ty`.
async fn record_at_version_2(api: &Api, ty: &str, id: &str) {
    api.push(
        "a",
        vec![upsert(
            "a1",
            ty,
            id,
            0,
            json!({"name": "v1", "email": "a@x"}),
        )],
    )
    .await;
    let v = api
        .push(
            "a",
            vec![upsert(
                "a2",
                ty,
                id,
                1,
                json!({"name": "server", "email": "a@x"}),
            )],
        )
        .await;
    assert_eq!(v["results"][0]["record"]["version"], 2, "{v}");
}

async fn current(api: &Api, ty: &str, id: &str) -> Value {
    let v = api.ok(FETCH, json!({"entityType": ty, "ids": [id]})).await;
    v["data"][ty][0].clone()
}

async fn stale_base_version_server_wins_keeps_server_copy(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    record_at_version_2(&api, "sw", "r").await;
    let v = api
        .push(
            "b",
            vec![upsert("b1", "sw", "r", 1, json!({"name": "client"}))],
        )
        .await;
    let r = &v["results"][0];
    assert_eq!(r["status"], "conflict");
    assert_eq!(r["resolution"], "server-wins");
    assert_eq!(r["record"]["name"], "server");
    assert_eq!(r["record"]["version"], 2);
    assert_eq!(current(&api, "sw", "r").await["version"], 2);
    // The resolved mutation counts as seen: a replay is a duplicate.
    let again = api
        .push(
            "b",
            vec![upsert("b1", "sw", "r", 1, json!({"name": "client"}))],
        )
        .await;
    assert_eq!(again["results"][0]["status"], "duplicate");
}

async fn stale_base_version_client_wins_applies_client_change(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    record_at_version_2(&api, "cw", "r").await;
    let v = api
        .push(
            "b",
            vec![upsert("b1", "cw", "r", 1, json!({"name": "client"}))],
        )
        .await;
    let r = &v["results"][0];
    assert_eq!(r["status"], "conflict");
    assert_eq!(r["resolution"], "client-wins");
    assert_eq!(r["record"]["name"], "client");
    assert_eq!(r["record"]["version"], 3);
    assert!(
        r["record"].get("email").is_none(),
        "client-wins replaces the record"
    );
    assert_eq!(current(&api, "cw", "r").await["name"], "client");
}

async fn stale_base_version_last_write_wins_compares_timestamps(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    record_at_version_2(&api, "lww", "r").await;
    let mut older = upsert("b1", "lww", "r", 1, json!({"name": "old client"}));
    older["clientTimestamp"] = json!("2000-01-01T00:00:00.000Z");
    let v = api.push("b", vec![older]).await;
    assert_eq!(v["results"][0]["status"], "conflict");
    assert_eq!(v["results"][0]["resolution"], "last-write-wins");
    assert_eq!(v["results"][0]["winner"], "server");
    assert_eq!(v["results"][0]["record"]["name"], "server");
    assert_eq!(current(&api, "lww", "r").await["version"], 2);
    let mut newer = upsert("b2", "lww", "r", 1, json!({"name": "new client"}));
    newer["clientTimestamp"] = json!("2999-01-01T00:00:00.000Z");
    let v = api.push("b", vec![newer]).await;
    assert_eq!(v["results"][0]["status"], "conflict");
    assert_eq!(v["results"][0]["winner"], "client");
    assert_eq!(v["results"][0]["record"]["name"], "new client");
    assert_eq!(v["results"][0]["record"]["version"], 3);
}

async fn stale_base_version_merge_keeps_fields_client_did_not_send(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    record_at_version_2(&api, "merge", "r").await;
    let v = api
        .push(
            "b",
            vec![upsert(
                "b1",
                "merge",
                "r",
                1,
                json!({"name": "client", "phone": "1"}),
            )],
        )
        .await;
    let r = &v["results"][0];
    assert_eq!(r["status"], "conflict");
    assert_eq!(r["resolution"], "merge");
    assert_eq!(r["record"]["name"], "client");
    assert_eq!(r["record"]["phone"], "1");
    assert_eq!(r["record"]["email"], "a@x");
    assert_eq!(r["record"]["version"], 3);
    assert_eq!(current(&api, "merge", "r").await["email"], "a@x");
}

async fn stale_merge_with_changed_fields_keeps_server_values_of_other_fields(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    record_at_version_2(&api, "merge", "r").await;
    // The client edited only `phone`, on a copy from version 1 (name "v1").
    let mut m = upsert(
        "b1",
        "merge",
        "r",
        1,
        json!({"name": "v1", "email": "a@x", "phone": "1"}),
    );
    m["changedFields"] = json!(["phone"]);
    let v = api.push("b", vec![m]).await;
    let r = &v["results"][0];
    assert_eq!(r["status"], "conflict");
    assert_eq!(r["resolution"], "merge");
    assert_eq!(r["record"]["name"], "server", "{r}");
    assert_eq!(r["record"]["phone"], "1");
    assert_eq!(r["record"]["version"], 3);
}
