//! Integration suite of the push/pull protocol against a real server
//! process, run on SQLite and on PostgreSQL (see tests/common).

mod common;

use common::{delete, token_with, unix_now, upsert, Api, Backend, Server, SECRET};
use serde_json::{json, Value};

const PUSH: &str = "/api/client/sync/push";
const PULL: &str = "/api/client/sync/pull";
const PENDING: &str = "/api/client/sync/pull-pending";
const VERIFY: &str = "/api/client/sync/verify";
const FETCH: &str = "/api/client/sync/fetch";

on_both_backends!(
    seed_003_client_flow_works_unchanged,
    replayed_push_is_duplicate_and_applied_once,
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

async fn current(api: &Api, ty: &str, id: &str) -> Value {
    let v = api.ok(FETCH, json!({"entityType": ty, "ids": [id]})).await;
    v["data"][ty][0].clone()
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
