//! Integration suite of the push/pull protocol against a real server
//! process, run on SQLite and on PostgreSQL (see tests/common).

mod common;

use common::{delete, token_with, unix_now, upsert, Api, Backend, Options, Server, SECRET};
use serde_json::{json, Value};

const PUSH: &str = "/api/client/sync/push";
const PULL: &str = "/api/client/sync/pull";
const PENDING: &str = "/api/client/sync/pull-pending";
const VERIFY: &str = "/api/client/sync/verify";
const FETCH: &str = "/api/client/sync/fetch";

on_both_backends!(
    seed_003_client_flow_works_unchanged,
    replayed_push_is_duplicate_and_applied_once,
    stale_base_version_server_wins_keeps_server_copy,
    stale_base_version_client_wins_applies_client_change,
    stale_base_version_last_write_wins_compares_timestamps,
    stale_base_version_merge_keeps_fields_client_did_not_send,
    stale_merge_with_changed_fields_keeps_server_values_of_other_fields,
    delete_leaves_a_tombstone_that_pull_returns,
    tenant_cannot_read_or_write_another_tenants_rows,
    missing_bad_or_expired_token_is_401,
    malformed_json_and_wrong_types_are_400_naming_the_field,
    unknown_entity_type_rejects_whole_push,
    oversized_body_and_too_many_mutations_are_413,
    sql_looking_strings_are_stored_verbatim,
    invalid_mutation_is_rejected_alone,
    pull_pages_with_has_more_and_exact_cursor,
    verify_and_fetch_match_protocol_checksum,
);

async fn seed_003_client_flow_works_unchanged(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    // SyncClient.pushChanges({ end_user: [ … ] }) exactly as seed 003 sends it.
    let pushed = api
        .ok(
            PUSH,
            json!({"changes": {"end_user": [{
                "id": null, "name": "Integration Test User",
                "email": "integration@test.com", "sync_status": "pending",
                "server_synced": 0, "version": 1
            }]}}),
        )
        .await;
    let rec = &pushed["data"][0];
    let id = rec["id"].as_str().expect("server-generated id").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "not a UUID: {id}");
    assert_eq!(rec["name"], "Integration Test User");
    assert_eq!(rec["version"], 1);
    assert_eq!(rec["sync_status"], "synced", "seed 003's updateSyncStatus");
    assert_eq!(rec["server_synced"], 1);
    assert!(pushed["syncTimestamp"].as_str().is_some());
    // SyncClient.pullData with lastSyncTimestamp = epoch.
    let pulled = api
        .ok(
            PULL,
            json!({"lastSyncTimestamp": "1970-01-01T00:00:00.000Z",
                   "entityTypes": ["end_user", "interactions"]}),
        )
        .await;
    let users = pulled["data"]["end_user"].as_array().expect("end_user");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["id"], id.as_str());
    assert_eq!(users[0]["email"], "integration@test.com");
    assert_eq!(pulled["data"]["interactions"], json!([]));
    assert!(pulled["syncTimestamp"].as_str().is_some());
    // SyncClient.pullPendingData: the push delivered it, nothing is pending.
    let pending = api.ok(PENDING, json!({"entityTypes": ["end_user"]})).await;
    assert_eq!(pending["data"]["end_user"], json!([]));
    // A record stored as pending by another writer (the mutation form keeps
    // data verbatim, e.g. a server job) is listed until a seed push
    // delivers it.
    api.push(
        "job",
        vec![upsert(
            "j1",
            "end_user",
            &id,
            1,
            json!({"name": "queued", "sync_status": "pending"}),
        )],
    )
    .await;
    let pending = api.ok(PENDING, json!({"entityTypes": ["end_user"]})).await;
    assert_eq!(pending["data"]["end_user"][0]["id"], id.as_str());
    let v = api
        .ok(
            PUSH,
            json!({"changes": {"end_user": [{"id": id, "name": "x", "sync_status": "pending", "version": 2}]}}),
        )
        .await;
    assert_eq!(v["data"][0]["sync_status"], "synced");
    let pending = api.ok(PENDING, json!({"entityTypes": ["end_user"]})).await;
    assert_eq!(pending["data"]["end_user"], json!([]));
}

async fn replayed_push_is_duplicate_and_applied_once(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    let m = vec![upsert("m1", "end_user", "u1", 0, json!({"name": "Ada"}))];
    let first = api.push("c1", m.clone()).await;
    assert_eq!(first["results"][0]["status"], "applied");
    assert_eq!(first["results"][0]["record"]["version"], 1);
    let again = api.push("c1", m.clone()).await;
    assert_eq!(again["results"][0]["status"], "duplicate");
    assert_eq!(again["results"][0]["mutationId"], "m1");
    assert_eq!(again["results"][0]["record"]["version"], 1);
    // A different client may use the same mutation id: it is its own.
    let other = api
        .push(
            "c2",
            vec![upsert("m1", "end_user", "u1", 1, json!({"name": "Bea"}))],
        )
        .await;
    assert_eq!(other["results"][0]["status"], "applied");
    assert_eq!(other["results"][0]["record"]["version"], 2);
    // Replaying c1's m1 now answers with the current record, unchanged.
    let third = api.push("c1", m).await;
    assert_eq!(third["results"][0]["status"], "duplicate");
    assert_eq!(third["results"][0]["record"]["version"], 2);
    assert_eq!(third["results"][0]["record"]["name"], "Bea");
    let (all, _) = api.pull_all(&["end_user"], None, 100).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["version"], 2);
}

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

async fn delete_leaves_a_tombstone_that_pull_returns(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    api.push(
        "c",
        vec![upsert("m1", "interactions", "i1", 0, json!({"title": "t"}))],
    )
    .await;
    let (_, cursor) = api.pull_all(&["interactions"], None, 100).await;
    let v = api
        .push("c", vec![delete("m2", "interactions", "i1", 1)])
        .await;
    assert_eq!(v["results"][0]["status"], "applied");
    assert_eq!(v["results"][0]["record"]["isDeleted"], true);
    let (changes, _) = api.pull_all(&["interactions"], cursor, 100).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["id"], "i1");
    assert_eq!(changes[0]["isDeleted"], true);
    assert_eq!(changes[0]["version"], 2);
    assert_eq!(
        api.verify(&["interactions"]).await["interactions"]["count"],
        0
    );
    // Seed 003 form delete: is_deleted: 1.
    api.push(
        "c",
        vec![upsert("m3", "end_user", "u1", 0, json!({"name": "x"}))],
    )
    .await;
    let v = api
        .ok(
            PUSH,
            json!({"changes": {"end_user": [{"id": "u1", "is_deleted": 1, "version": 1}]}}),
        )
        .await;
    assert_eq!(v["data"][0]["isDeleted"], true);
}

async fn tenant_cannot_read_or_write_another_tenants_rows(b: Backend) {
    let s = Server::start(&b);
    let a = Api::for_tenant(&s, &common::tenant());
    let bb = Api::for_tenant(&s, &common::tenant());
    a.push(
        "c",
        vec![upsert(
            "m1",
            "end_user",
            "shared-id",
            0,
            json!({"name": "A", "sync_status": "pending"}),
        )],
    )
    .await;
    // B sees nothing of A's through pull, pull-pending, verify and fetch.
    let (rows, _) = bb.pull_all(&["end_user"], None, 100).await;
    assert!(rows.is_empty(), "{rows:?}");
    let v = bb
        .ok(
            PULL,
            json!({"lastSyncTimestamp": "1970-01-01T00:00:00Z", "entityTypes": ["end_user"]}),
        )
        .await;
    assert_eq!(v["data"]["end_user"], json!([]));
    let v = bb.ok(PENDING, json!({"entityTypes": ["end_user"]})).await;
    assert_eq!(v["data"]["end_user"], json!([]));
    assert_eq!(bb.verify(&["end_user"]).await["end_user"]["count"], 0);
    assert_eq!(current(&bb, "end_user", "shared-id").await, Value::Null);
    // B writing the same id creates B's own row; A's is untouched.
    let v = bb
        .push(
            "c",
            vec![upsert(
                "m1",
                "end_user",
                "shared-id",
                5,
                json!({"name": "B"}),
            )],
        )
        .await;
    assert_eq!(v["results"][0]["status"], "applied");
    assert_eq!(v["results"][0]["record"]["version"], 1);
    let mine = current(&a, "end_user", "shared-id").await;
    assert_eq!(mine["name"], "A");
    assert_eq!(mine["version"], 1);
    // B's delete of that id touches only B's row.
    bb.push("c", vec![delete("m2", "end_user", "shared-id", 1)])
        .await;
    assert_eq!(
        current(&a, "end_user", "shared-id").await["isDeleted"],
        false
    );
    // Same client and mutation ids in two tenants are not duplicates.
    let v = a
        .push("c", vec![upsert("m2", "end_user", "x", 0, json!({}))])
        .await;
    assert_eq!(v["results"][0]["status"], "applied");
}

async fn missing_bad_or_expired_token_is_401(b: Backend) {
    let s = Server::start(&b);
    let t = common::tenant();
    let bodies = [
        (
            PUSH,
            json!({"clientId": "c", "mutations": [upsert("m", "end_user", "u", 0, json!({}))]}),
        ),
        (PULL, json!({"cursor": null, "entityTypes": ["end_user"]})),
        (PENDING, json!({"entityTypes": ["end_user"]})),
        (VERIFY, json!({"entityTypes": ["end_user"]})),
        (FETCH, json!({"entityType": "end_user", "ids": ["u"]})),
    ];
    let tokens = [
        None,
        Some(token_with("some-other-secret", &t, "u", unix_now() + 3600)),
        Some(token_with(SECRET, &t, "u", unix_now() - 3600)),
        Some("not-a-jwt".to_owned()),
    ];
    for tok in tokens {
        let api = Api::new(&s, tok.clone());
        for (path, body) in &bodies {
            let (status, v) = api.post(path, body.clone()).await;
            assert_eq!(status, 401, "{path} with {tok:?}: {v}");
            assert_eq!(v["success"], false);
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
    // Nothing was written.
    let good = Api::for_tenant(&s, &t);
    assert_eq!(good.verify(&["end_user"]).await["end_user"]["count"], 0);
}

async fn malformed_json_and_wrong_types_are_400_naming_the_field(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    let (status, v) = api
        .post_raw(PUSH, b"{\"clientId\": \"c\", \"mutations\": [".to_vec())
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "validation");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("malformed JSON"),
        "{v}"
    );
    let (status, _) = api.post_raw(PULL, b"".to_vec()).await;
    assert_eq!(status, 400);
    let cases = [
        (PUSH, json!({"clientId": "c", "mutations": {}}), "mutations"),
        (PUSH, json!({"clientId": 5, "mutations": []}), "clientId"),
        (PUSH, json!({"mutations": []}), "clientId"),
        (
            PUSH,
            json!({"changes": {"end_user": {}}}),
            "changes.end_user",
        ),
        (PUSH, json!([1, 2]), "request body"),
        (PULL, json!({"entityTypes": "end_user"}), "entityTypes"),
        (
            PULL,
            json!({"entityTypes": ["end_user"], "limit": -1}),
            "limit",
        ),
        (
            PULL,
            json!({"entityTypes": ["end_user"], "cursor": 12}),
            "cursor",
        ),
        (
            PULL,
            json!({"entityTypes": ["end_user"], "cursor": "bogus"}),
            "cursor",
        ),
        (
            PULL,
            json!({"entityTypes": ["end_user"], "lastSyncTimestamp": "yesterday"}),
            "lastSyncTimestamp",
        ),
        (PENDING, json!({"entityTypes": [1]}), "entityTypes[0]"),
        (VERIFY, json!({}), "entityTypes"),
        (FETCH, json!({"entityType": "end_user", "ids": "x"}), "ids"),
    ];
    for (path, body, field) in cases {
        let (status, v) = api.post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert_eq!(v["success"], false);
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(field),
            "{path} {body}: message {msg:?} should name {field}"
        );
    }
    // A wrong type inside one mutation rejects that mutation only.
    let v = api
        .push(
            "c",
            vec![
                json!({"mutationId": "m", "entityType": "end_user", "op": "upsert",
                               "id": "u", "baseVersion": "three", "data": {}}),
            ],
        )
        .await;
    assert_eq!(v["results"][0]["status"], "rejected");
    assert!(v["results"][0]["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("baseVersion"));
    assert_eq!(api.verify(&["end_user"]).await["end_user"]["count"], 0);
}

async fn unknown_entity_type_rejects_whole_push(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    let (status, v) = api
        .post(
            PUSH,
            json!({"clientId": "c", "mutations": [
                upsert("m1", "end_user", "u1", 0, json!({"name": "ok"})),
                upsert("m2", "invoices", "x", 0, json!({})),
            ]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["message"], "Entity type invoices not registered");
    let (status, v) = api
        .post(
            PUSH,
            json!({"changes": {"end_user": [{"id": null, "name": "x"}], "invoices": []}}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = api
        .post(PULL, json!({"entityTypes": ["end_user", "invoices"]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["message"], "Entity type invoices not registered");
    assert_eq!(api.verify(&["end_user"]).await["end_user"]["count"], 0);
    // The valid mutation was not applied: pushing it now is not a duplicate.
    let v = api
        .push("c", vec![upsert("m1", "end_user", "u1", 0, json!({}))])
        .await;
    assert_eq!(v["results"][0]["status"], "applied");
}

async fn oversized_body_and_too_many_mutations_are_413(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, v) = api
        .post(PUSH, json!({"clientId": "c", "mutations": [upsert("m", "end_user", "u", 0, json!({"blob": big}))]}))
        .await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["code"], "payload-too-large");
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"mutationId": format!("m{i}"), "entityType": "end_user", "op": "upsert", "id": format!("{i}"), "data": {}}))
        .collect();
    let (status, v) = api
        .post(PUSH, json!({"clientId": "c", "mutations": many}))
        .await;
    assert_eq!(status, 413, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("10001"),
        "{v}"
    );
    assert_eq!(api.verify(&["end_user"]).await["end_user"]["count"], 0);
    // Exactly at the limit is fine.
    let thousand: Vec<Value> = (0..1000)
        .map(|i| upsert(&format!("m{i}"), "end_user", &format!("{i}"), 0, json!({})))
        .collect();
    api.push("c", thousand).await;
    assert_eq!(api.verify(&["end_user"]).await["end_user"]["count"], 1000);
}

async fn sql_looking_strings_are_stored_verbatim(b: Backend) {
    let s = Server::start(&b);
    let tenant = format!("{}'; DROP TABLE records; --", common::tenant());
    let api = Api::for_tenant(&s, &tenant);
    let evil = "Robert'); DROP TABLE records;-- \" OR 1=1 /* $1 ? :name */";
    let id = "x' OR '1'='1";
    let v = api
        .push(
            "c'; DELETE FROM applied_mutations; --",
            vec![upsert(
                "m'--",
                "end_user",
                id,
                0,
                json!({"name": evil, "sync_status": "pending' OR 1=1 --"}),
            )],
        )
        .await;
    assert_eq!(v["results"][0]["status"], "applied");
    let (rows, _) = api.pull_all(&["end_user"], None, 10).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], id);
    assert_eq!(rows[0]["name"], evil);
    assert_eq!(rows[0]["sync_status"], "pending' OR 1=1 --");
    let fetched = api
        .ok(
            FETCH,
            json!({"entityType": "end_user", "ids": [id, "' OR 1=1 --"]}),
        )
        .await;
    assert_eq!(
        fetched["data"]["end_user"].as_array().map(Vec::len),
        Some(1)
    );
    // NUL and control characters: refused in ids, stored verbatim in data.
    let v = api
        .push(
            "c",
            vec![
                upsert("m-nul", "end_user", "a\u{0}b", 0, json!({})),
                upsert(
                    "m-ok",
                    "end_user",
                    "nul-data",
                    0,
                    json!({"s": "a\u{0}b", "sync_status": "\u{0}"}),
                ),
            ],
        )
        .await;
    assert_eq!(v["results"][0]["status"], "rejected", "{v}");
    assert_eq!(v["results"][1]["status"], "applied", "{v}");
    assert_eq!(current(&api, "end_user", "nul-data").await["s"], "a\u{0}b");
    let (status, _) = api
        .post(FETCH, json!({"entityType": "end_user", "ids": ["a\u{0}b"]}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .post(PUSH, json!({"clientId": "c\u{0}", "mutations": []}))
        .await;
    assert_eq!(status, 400);
    // The tables are all still there and another tenant is unaffected.
    let other = Api::for_tenant(&s, &common::tenant());
    other
        .push("c", vec![upsert("m", "end_user", "y", 0, json!({}))])
        .await;
    assert_eq!(other.verify(&["end_user"]).await["end_user"]["count"], 1);
}

async fn invalid_mutation_is_rejected_alone(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    let v = api
        .push(
            "c",
            vec![
                upsert("m1", "end_user", "u1", 0, json!({"name": "a"})),
                json!({"mutationId": "m2", "entityType": "end_user", "op": "upsert", "id": "u2", "data": "not an object"}),
                json!({"mutationId": "m3", "entityType": "end_user", "op": "explode", "id": "u3"}),
                json!("not even an object"),
                upsert("m5", "end_user", "u5", 0, json!({"name": "e"})),
            ],
        )
        .await;
    let statuses: Vec<&str> = v["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["status"].as_str().unwrap_or(""))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        statuses,
        ["applied", "rejected", "rejected", "rejected", "applied"]
    );
    assert_eq!(v["results"][1]["mutationId"], "m2");
    assert_eq!(v["results"][1]["error"]["code"], "validation");
    assert_eq!(v["data"], json!([]), "the records travel in results only");
    assert_eq!(v["results"][0]["record"]["name"], "a");
    assert!(v["results"][1].get("record").is_none());
    assert_eq!(api.verify(&["end_user"]).await["end_user"]["count"], 2);
}

async fn pull_pages_with_has_more_and_exact_cursor(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    let muts: Vec<Value> = (0..25)
        .map(|i| {
            upsert(
                &format!("m{i}"),
                if i % 2 == 0 {
                    "end_user"
                } else {
                    "interactions"
                },
                &format!("r{i}"),
                0,
                json!({"n": i}),
            )
        })
        .collect();
    api.push("c", muts).await;
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    loop {
        let v = api
            .ok(
                PULL,
                json!({"cursor": cursor, "entityTypes": ["end_user", "interactions"], "limit": 10}),
            )
            .await;
        let n = v["data"]["end_user"].as_array().map_or(0, Vec::len)
            + v["data"]["interactions"].as_array().map_or(0, Vec::len);
        for t in ["end_user", "interactions"] {
            for r in v["data"][t].as_array().cloned().unwrap_or_default() {
                seen.push(r["id"].as_str().unwrap_or("").to_owned());
            }
        }
        pages.push((n, v["hasMore"] == true));
        cursor = v["cursor"].as_str().map(str::to_owned);
        if v["hasMore"] != true {
            break;
        }
    }
    assert_eq!(pages, [(10, true), (10, true), (5, false)]);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25);
    // Nothing new: an empty page, same cursor.
    let v = api
        .ok(PULL, json!({"cursor": cursor, "entityTypes": ["end_user"]}))
        .await;
    assert_eq!(v["data"]["end_user"], json!([]));
    assert_eq!(v["cursor"].as_str(), cursor.as_deref());
    // One type only.
    let (users, _) = api.pull_all(&["end_user"], None, 1000).await;
    assert_eq!(users.len(), 13);
    // A huge limit is capped, not an error.
    let v = api
        .ok(
            PULL,
            json!({"entityTypes": ["end_user"], "limit": 4_000_000}),
        )
        .await;
    assert_eq!(v["data"]["end_user"].as_array().map(Vec::len), Some(13));
}

async fn verify_and_fetch_match_protocol_checksum(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    api.push(
        "c",
        vec![
            upsert("m1", "end_user", "a", 0, json!({})),
            upsert("m2", "end_user", "b", 0, json!({})),
            upsert("m3", "end_user", "b", 1, json!({"x": 1})),
            upsert("m4", "end_user", "c", 0, json!({})),
            delete("m5", "end_user", "c", 1),
        ],
    )
    .await;
    let v = api.verify(&["end_user", "interactions"]).await;
    assert_eq!(v["end_user"]["count"], 2);
    assert_eq!(
        v["end_user"]["checksum"],
        tidesync_protocol::record_checksum([("a", 1), ("b", 2)])
    );
    assert_eq!(v["interactions"]["count"], 0);
    assert_eq!(v["interactions"]["checksum"], "0000000000000000");
    let f = api
        .ok(
            FETCH,
            json!({"entityType": "end_user", "ids": ["b", "c", "zzz"]}),
        )
        .await;
    let recs = f["data"]["end_user"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(recs.len(), 2);
    assert!(recs
        .iter()
        .any(|r| r["id"] == "c" && r["isDeleted"] == true));
    let (status, _) = api
        .post(FETCH, json!({"entityType": "nope", "ids": []}))
        .await;
    assert_eq!(status, 400);
}

// ---- server-level behaviour (SQLite only; nothing backend-specific) ----

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let s = Server::start_with(
        &Backend::Sqlite,
        Options {
            extra_args: vec![
                "--rate-limit".into(),
                "2".into(),
                "--rate-burst".into(),
                "2".into(),
            ],
            ..Options::default()
        },
    );
    let api = Api::for_tenant(&s, "t");
    let body = json!({"entityTypes": ["end_user"]});
    let mut limited = None;
    for _ in 0..5 {
        let resp = api
            .http
            .post(s.url(PULL))
            .bearer_auth(api.token.clone().unwrap_or_default())
            .json(&body)
            .send()
            .await
            .expect("send");
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("some request was rate limited");
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "rate-limited");
    // Another token is not limited.
    Api::for_tenant(&s, "other").ok(PULL, body).await;
}

#[tokio::test]
async fn configured_mutation_limit_applies() {
    let s = Server::start_with(
        &Backend::Sqlite,
        Options {
            extra_args: vec!["--max-mutations".into(), "3".into()],
            ..Options::default()
        },
    );
    let api = Api::for_tenant(&s, "t");
    let muts: Vec<Value> = (0..4)
        .map(|i| upsert(&format!("m{i}"), "end_user", &format!("{i}"), 0, json!({})))
        .collect();
    let (status, _) = api
        .post(PUSH, json!({"clientId": "c", "mutations": muts}))
        .await;
    assert_eq!(status, 413);
    let (status, _) = api
        .post(
            PUSH,
            json!({"changes": {"end_user": [{}, {}], "interactions": [{}, {}]}}),
        )
        .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn drop_next_push_hook_commits_then_fails_the_response() {
    let s = Server::start_with(
        &Backend::Sqlite,
        Options {
            extra_args: vec!["--test-hooks".into()],
            ..Options::default()
        },
    );
    let api = Api::for_tenant(&s, "t");
    let (status, _) = api.post("/__test/drop-next-push-response", json!({})).await;
    assert_eq!(status, 200);
    let m = vec![upsert("m1", "end_user", "u1", 0, json!({"name": "Ada"}))];
    let (status, body) = api
        .post(PUSH, json!({"clientId": "c", "mutations": m.clone()}))
        .await;
    assert_eq!(status, 500);
    assert_eq!(body, Value::Null, "no body");
    // It was committed: the replay is a duplicate, and only once.
    let v = api.push("c", m).await;
    assert_eq!(v["results"][0]["status"], "duplicate");
    assert_eq!(v["results"][0]["record"]["version"], 1);
    // The hook is off by default.
    let plain = Server::start(&Backend::Sqlite);
    let (status, _) = Api::for_tenant(&plain, "t")
        .post("/__test/drop-next-push-response", json!({}))
        .await;
    assert_ne!(status, 200);
}

#[tokio::test]
async fn health_metrics_static_files_and_cors() {
    let s = Server::start(&Backend::Sqlite);
    std::fs::create_dir_all(s.dir.0.join("www")).expect("www");
    std::fs::create_dir_all(s.dir.0.join("pkg")).expect("pkg");
    std::fs::write(s.dir.0.join("www/index.html"), "<h1>demo</h1>").expect("index");
    std::fs::write(s.dir.0.join("pkg/tidesync_bg.wasm"), b"\0asm\x01\0\0\0").expect("wasm");
    let http = reqwest::Client::new();
    let h: Value = http
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(h["status"], "ok");
    let page = http.get(s.url("/")).send().await.expect("index");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap_or_default().contains("demo"));
    let wasm = http
        .get(s.url("/pkg/tidesync_bg.wasm"))
        .send()
        .await
        .expect("wasm");
    assert_eq!(wasm.status(), 200);
    assert_eq!(wasm.headers()["content-type"], "application/wasm");
    let missing = http.get(s.url("/pkg/nope.js")).send().await.expect("404");
    assert_eq!(missing.status(), 404);
    let api = Api::for_tenant(&s, "t");
    api.push("c", vec![upsert("m1", "end_user", "u", 0, json!({}))])
        .await;
    api.push("c", vec![upsert("m1", "end_user", "u", 0, json!({}))])
        .await;
    let metrics = http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(metrics.contains("tidesync_pushes_total 2"), "{metrics}");
    assert!(
        metrics.contains("tidesync_mutations_total{status=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidesync_mutations_total{status=\"duplicate\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidesync_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    let pre = http
        .request(reqwest::Method::OPTIONS, s.url(PUSH))
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(pre.status().is_success());
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let mut s = Server::start(&Backend::Sqlite);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(exit) = s.child.try_wait().expect("wait") {
            assert!(exit.success(), "exit status {exit}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not stop on SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn sigterm_lets_an_in_flight_push_finish() {
    use std::io::{Read, Write};
    let mut s = Server::start(&Backend::Sqlite);
    let addr = s.base.trim_start_matches("http://").to_owned();
    let body = json!({"clientId": "c", "mutations": [upsert("m1", "end_user", "u1", 0, json!({"name": "Ada"}))]})
        .to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        conn,
        "POST {PUSH} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        common::token("t"),
        body.len()
    )
    .expect("send head");
    conn.flush().expect("flush");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The request started before the signal: it is still answered.
    conn.write_all(tail.as_bytes()).expect("send tail");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("read answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"applied\""), "{answer}");
    let exit = s.child.wait().expect("wait");
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn token_subcommand_mints_a_token_the_server_accepts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidesync-server"))
        .args(["token", "--tenant", "acme", "--sub", "ada", "--ttl", "60"])
        .env("TIDESYNC_JWT_SECRET", SECRET)
        .output()
        .expect("run token");
    assert!(out.status.success());
    let tok = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp"]);
    let data = jsonwebtoken::decode::<Value>(
        &tok,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &v,
    )
    .expect("valid token");
    assert_eq!(data.claims["tenant"], "acme");
    assert_eq!(data.claims["sub"], "ada");
}

#[tokio::test]
async fn tenant_restricted_entity_type_is_403() {
    let config = format!(
        "{}\n[tenants.acme]\nentity_types = [\"end_user\"]\n",
        common::STRATEGY_CONFIG
    );
    let s = Server::start_with(
        &Backend::Sqlite,
        Options {
            config: Some(config),
            ..Options::default()
        },
    );
    let acme = Api::for_tenant(&s, "acme");
    let (status, v) = acme
        .post(PULL, json!({"entityTypes": ["end_user", "interactions"]}))
        .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "forbidden");
    let (status, _) = acme
        .post(
            PUSH,
            json!({"clientId": "c", "mutations": [upsert("m", "interactions", "i", 0, json!({}))]}),
        )
        .await;
    assert_eq!(status, 403);
    // An empty type list means every type the tenant may use.
    let v = acme.ok(VERIFY, json!({"entityTypes": []})).await;
    assert_eq!(v["data"].as_object().map(|m| m.len()), Some(1), "{v}");
    // Other tenants are not restricted.
    Api::for_tenant(&s, "other")
        .ok(PULL, json!({"entityTypes": ["interactions"]}))
        .await;
}

#[tokio::test]
async fn seed_timestamp_pull_pages_through_sync_timestamp() {
    let s = Server::start(&Backend::Sqlite);
    let api = Api::for_tenant(&s, "t");
    for batch in 0..4 {
        let recs: Vec<Value> = (0..5)
            .map(|i| json!({"id": format!("b{batch}-{i}"), "name": "x"}))
            .collect();
        api.ok(PUSH, json!({"changes": {"end_user": recs}})).await;
    }
    // A seed 003 client loop: lastSyncTimestamp = previous syncTimestamp.
    let mut last = "1970-01-01T00:00:00.000Z".to_owned();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let v = api
            .ok(
                PULL,
                json!({"lastSyncTimestamp": last, "entityTypes": ["end_user"], "limit": 3}),
            )
            .await;
        for r in v["data"]["end_user"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            seen.insert(r["id"].as_str().unwrap_or("").to_owned());
        }
        last = v["syncTimestamp"].as_str().unwrap_or("").to_owned();
        if v["hasMore"] != true {
            break;
        }
    }
    assert_eq!(seen.len(), 20);
    // A complete timestamp answer offers an exact cursor to switch to.
    let v = api
        .ok(
            PULL,
            json!({"lastSyncTimestamp": "1970-01-01T00:00:00Z", "entityTypes": ["end_user"]}),
        )
        .await;
    assert_eq!(v["data"]["end_user"].as_array().map(Vec::len), Some(20));
    assert_eq!(v["hasMore"], false);
    assert_eq!(v["cursor"], "c1.20");
}

#[tokio::test]
async fn cors_origin_list_allows_only_listed_origins() {
    let s = Server::start_with(
        &Backend::Sqlite,
        Options {
            extra_args: vec![
                "--cors-origin".into(),
                "http://app.example, http://admin.example".into(),
            ],
            ..Options::default()
        },
    );
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, s.url(PULL))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight("http://admin.example").await.expect("preflight");
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://admin.example"
    );
    let other = preflight("http://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
