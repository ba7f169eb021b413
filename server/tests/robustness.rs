//! Issue 11's server items: a stored record whose JSON cannot be read is
//! reported and quarantined, never served as `{}`. SQLite and PostgreSQL
//! (the rows are damaged by hand, through the database itself).

mod common;

use common::{upsert, Api, Backend, Server};
use serde_json::{json, Value};
use sqlx::Row;

const PULL: &str = "/api/client/sync/pull";
const FETCH: &str = "/api/client/sync/fetch";

on_both_backends!(an_unreadable_stored_record_is_quarantined_not_served_as_empty);

async fn pool(s: &Server) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&s.db)
        .await
        .expect("open the test database")
}

/// Overwrites a stored record's JSON text, as a broken tool or disk would.
async fn damage(db: &sqlx::AnyPool, tenant: &str, id: &str, text: &str) {
    let done = sqlx::query(
        "UPDATE records SET data = $1 WHERE tenant_id = $2 AND entity_type = 'end_user' AND id = $3",
    )
    .bind(text)
    .bind(tenant)
    .bind(id)
    .execute(db)
    .await
    .expect("damage");
    assert_eq!(done.rows_affected(), 1);
}

async fn an_unreadable_stored_record_is_quarantined_not_served_as_empty(b: Backend) {
    let s = Server::start(&b);
    let tenant = common::tenant();
    let api = Api::for_tenant(&s, &tenant);
    let pushed = api
        .push(
            "c",
            ["r1", "r2", "r3"]
                .iter()
                .enumerate()
                .map(|(i, id)| upsert(&format!("m{i}"), "end_user", id, 0, json!({"name": id})))
                .collect(),
        )
        .await;
    assert_eq!(pushed["results"][2]["status"], "applied");
    let db = pool(&s).await;
    damage(&db, &tenant, "r2", r#"{"name": "trunc"#).await;
    damage(&db, &tenant, "r3", "[1, 2]").await;

    // Pulls (both forms), fetch and verify pass over them; nothing comes
    // back with its fields missing.
    let (rows, _) = api.pull_all(&["end_user"], None, 100).await;
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["r1"], "{rows:?}");
    let seed = api
        .ok(
            PULL,
            json!({"lastSyncTimestamp": "1970-01-01T00:00:00Z", "entityTypes": ["end_user"]}),
        )
        .await;
    assert_eq!(
        seed["data"]["end_user"].as_array().map(Vec::len),
        Some(1),
        "{seed}"
    );
    let fetched = api
        .ok(
            FETCH,
            json!({"entityType": "end_user", "ids": ["r1", "r2", "r3"]}),
        )
        .await;
    assert_eq!(
        fetched["data"]["end_user"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(api.verify(&["end_user"]).await["end_user"]["count"], 1);

    // Reported: counted, and the raw text kept with the reason.
    let metrics = reqwest::get(s.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("tidesync_quarantined_records_total 2"),
        "{metrics}"
    );
    let kept = sqlx::query(
        "SELECT id, data, reason FROM quarantined_records WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(&tenant)
    .fetch_all(&db)
    .await
    .expect("quarantined rows");
    let kept: Vec<(String, String, String)> = kept
        .iter()
        .map(|r| (r.get("id"), r.get("data"), r.get("reason")))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0].0, "r2");
    assert_eq!(kept[0].1, r#"{"name": "trunc"#);
    assert!(kept[0].2.contains("not JSON"), "{}", kept[0].2);
    assert!(kept[1].2.contains("not an object"), "{}", kept[1].2);

    // A replay of the mutation that wrote it answers without a made-up
    // record.
    let replay = api
        .push(
            "c",
            vec![upsert("m1", "end_user", "r2", 0, json!({"name": "r2"}))],
        )
        .await;
    assert_eq!(replay["results"][0]["status"], "duplicate");
    assert!(replay["results"][0].get("record").is_none(), "{replay}");

    // A new write repairs it, continuing its version.
    let v = api
        .push(
            "c",
            vec![upsert("fix", "end_user", "r2", 1, json!({"name": "again"}))],
        )
        .await;
    assert_eq!(v["results"][0]["status"], "applied", "{v}");
    assert_eq!(v["results"][0]["record"]["version"], 2);
    let (rows, _) = api.pull_all(&["end_user"], None, 100).await;
    let r2: Vec<&Value> = rows.iter().filter(|r| r["id"] == "r2").collect();
    assert_eq!(r2.len(), 1);
    assert_eq!(r2[0]["name"], "again");
    assert_eq!(api.verify(&["end_user"]).await["end_user"]["count"], 2);
    // Each damaged row was reported once, however often it was met.
    let metrics = reqwest::get(s.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("tidesync_quarantined_records_total 2"),
        "{metrics}"
    );
}
