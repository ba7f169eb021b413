//! The protocol contract the SDK's replication relies on (issues 10 and 17):
//! every record carries its edit time (`changedAt`) and last-write-wins
//! compares edit time with edit time; a push answer carries each record
//! once; pull pages are bounded in bytes as well as in count; a body over
//! the limit is a JSON 413 the client can act on. SQLite and PostgreSQL.

mod common;

use common::{upsert, Api, Backend, Options, Server};
use serde_json::{json, Value};

const PUSH: &str = "/api/client/sync/push";
const PULL: &str = "/api/client/sync/pull";
const PENDING: &str = "/api/client/sync/pull-pending";
const FETCH: &str = "/api/client/sync/fetch";

on_both_backends!(
    every_returned_record_carries_changed_at,
    last_write_wins_compares_edit_time_with_edit_time,
    push_answer_carries_each_record_once,
    pull_pages_are_bounded_in_bytes_and_reach_every_record_once,
    seed_timestamp_pages_are_bounded_at_millisecond_boundaries,
    pull_pending_and_fetch_are_bounded_in_bytes,
    oversized_push_is_a_json_413_the_client_can_split,
);

const T2020: &str = "2020-01-01T00:00:00.000Z";
const T2020_06: &str = "2020-06-01T00:00:00.000Z";
const T2021: &str = "2021-01-01T00:00:00.000Z";

fn at(mut m: Value, time: &str) -> Value {
    m["clientTimestamp"] = json!(time);
    m
}

async fn every_returned_record_carries_changed_at(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    let m = at(
        upsert(
            "m1",
            "lww",
            "r",
            0,
            // A `changedAt` in data is the server's field: ignored.
            json!({"name": "Ada", "sync_status": "pending", "changedAt": "bogus"}),
        ),
        T2020,
    );
    let v = api.push("c", vec![m.clone()]).await;
    let rec = &v["results"][0]["record"];
    assert_eq!(rec["changedAt"], T2020, "push result: {v}");
    assert_ne!(rec["updatedAt"], T2020, "updatedAt is when it was stored");
    let replay = api.push("c", vec![m]).await;
    assert_eq!(replay["results"][0]["status"], "duplicate");
    assert_eq!(replay["results"][0]["record"]["changedAt"], T2020);
    let (pulled, _) = api.pull_all(&["lww"], None, 10).await;
    assert_eq!(pulled[0]["changedAt"], T2020, "cursor pull");
    let seed_pull = api
        .ok(
            PULL,
            json!({"lastSyncTimestamp": "1970-01-01T00:00:00.000Z", "entityTypes": ["lww"]}),
        )
        .await;
    assert_eq!(seed_pull["data"]["lww"][0]["changedAt"], T2020);
    let pending = api.ok(PENDING, json!({"entityTypes": ["lww"]})).await;
    assert_eq!(pending["data"]["lww"][0]["changedAt"], T2020, "{pending}");
    let fetched = api
        .ok(FETCH, json!({"entityType": "lww", "ids": ["r"]}))
        .await;
    assert_eq!(fetched["data"]["lww"][0]["changedAt"], T2020);
    // Seed 003 form: the record's `updatedAt` is its edit time.
    let seed = api
        .ok(
            PUSH,
            json!({"changes": {"end_user": [{"id": "s", "name": "x", "updatedAt": T2021}]}}),
        )
        .await;
    assert_eq!(seed["data"][0]["changedAt"], T2021, "{seed}");
    // No client time: the edit is as old as its arrival.
    let v = api
        .push("c", vec![upsert("m2", "lww", "now", 0, json!({}))])
        .await;
    let rec = &v["results"][0]["record"];
    assert_eq!(rec["changedAt"], rec["updatedAt"], "{rec}");
    // A clock ahead of the server's is capped at the server's.
    let v = api
        .push(
            "c",
            vec![at(
                upsert("m3", "lww", "future", 0, json!({})),
                "2999-01-01T00:00:00.000Z",
            )],
        )
        .await;
    let rec = &v["results"][0]["record"];
    assert_eq!(rec["changedAt"], rec["updatedAt"], "{rec}");
    // A delete's tombstone carries the delete's edit time.
    let v = api
        .push(
            "c",
            vec![at(
                common::delete("m4", "lww", "now", 1),
                "2030-01-01T00:00:00.000Z",
            )],
        )
        .await;
    let rec = &v["results"][0]["record"];
    assert_eq!(rec["isDeleted"], true);
    assert!(
        rec["changedAt"].as_str().is_some_and(|t| t < "2030"),
        "{rec}"
    );
}

async fn last_write_wins_compares_edit_time_with_edit_time(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    // Edited in 2020, stored now: `updatedAt` is now, `changedAt` 2020.
    api.push(
        "a",
        vec![at(upsert("a1", "lww", "r", 0, json!({"v": "A"})), T2020)],
    )
    .await;
    // B edited in 2021 on version 0: stale, but its edit is the later one.
    // Comparing with `updatedAt` (now) would keep A's.
    let v = api
        .push(
            "b",
            vec![at(upsert("b1", "lww", "r", 0, json!({"v": "B"})), T2021)],
        )
        .await;
    let r = &v["results"][0];
    assert_eq!(r["status"], "conflict", "{v}");
    assert_eq!(r["winner"], "client", "{v}");
    assert_eq!(r["record"]["v"], "B");
    assert_eq!(r["record"]["changedAt"], T2021);
    // C's edit from mid-2020 arrives last but was made before B's: it loses.
    let v = api
        .push(
            "c",
            vec![at(upsert("c1", "lww", "r", 1, json!({"v": "C"})), T2020_06)],
        )
        .await;
    let r = &v["results"][0];
    assert_eq!(r["winner"], "server", "{v}");
    assert_eq!(r["record"]["v"], "B");
    assert_eq!(r["record"]["changedAt"], T2021);
    // A merge of two edits is as recent as the later one.
    api.push(
        "a",
        vec![at(upsert("a2", "merge", "m", 0, json!({"x": 1})), T2021)],
    )
    .await;
    let v = api
        .push(
            "b",
            vec![at(upsert("b2", "merge", "m", 0, json!({"y": 2})), T2020)],
        )
        .await;
    let r = &v["results"][0]["record"];
    assert_eq!((r["x"].clone(), r["y"].clone()), (json!(1), json!(2)));
    assert_eq!(r["changedAt"], T2021, "{r}");
}

async fn push_answer_carries_each_record_once(b: Backend) {
    let s = Server::start(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    let blob = "x".repeat(2_000);
    let muts: Vec<Value> = (0..100)
        .map(|i| {
            upsert(
                &format!("m{i}"),
                "end_user",
                &format!("u{i}"),
                0,
                json!({"blob": blob}),
            )
        })
        .chain([json!({"mutationId": "bad", "entityType": "end_user", "op": "upsert", "data": 7})])
        .collect();
    let (status, raw) = api
        .post_raw(
            PUSH,
            json!({"clientId": "c", "mutations": muts})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 200);
    let size = raw.to_string().len();
    assert!(
        size < 100 * 2_000 * 3 / 2,
        "a push answer of 100 records of 2 kB is {size} bytes: some travel twice"
    );
    assert_eq!(
        raw["data"],
        json!([]),
        "Tidesync form: records only in results"
    );
    let results = raw["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 101);
    assert!(results[..100]
        .iter()
        .all(|r| r["status"] == "applied" && r["record"]["blob"] == blob.as_str()));
    assert!(results[100].get("record").is_none(), "{}", results[100]);
    // The wire type reads the answer, and reads one without `data` too.
    let parsed: tidesync_protocol::PushResponse =
        serde_json::from_value(raw.clone()).expect("PushResponse");
    assert_eq!(parsed.results.len(), 101);
    let mut without_data = raw;
    without_data.as_object_mut().map(|o| o.remove("data"));
    serde_json::from_value::<tidesync_protocol::PushResponse>(without_data)
        .expect("PushResponse without data");

    // Seed 003 form: `data` carries the records, results carry none, and
    // a delivered record says so (seed 003's integration test).
    let v = api
        .ok(
            PUSH,
            json!({"changes": {
                "end_user": [
                    {"name": "Integration Test User", "email": "integration@test.com",
                     "sync_status": "pending"},
                    {"id": "plain", "name": "no status field"},
                    {"id": "flagged", "sync_status": "pending", "server_synced": 0}
                ],
                "interactions": [{"id": "i1", "title": "t"}]
            }}),
        )
        .await;
    let data = v["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(data.len(), 4, "{v}");
    assert_eq!(data[0]["sync_status"], "synced");
    assert_eq!(data[0]["name"], "Integration Test User");
    assert!(data[1].get("sync_status").is_none(), "no field is invented");
    assert_eq!(data[2]["sync_status"], "synced");
    assert_eq!(data[2]["server_synced"], 1);
    assert_eq!(data[3]["id"], "i1");
    for r in v["results"].as_array().cloned().unwrap_or_default() {
        assert!(
            r.get("record").is_none(),
            "seed form result with a record: {r}"
        );
        assert_eq!(r["status"], "applied");
    }
    // What the answer says is what is stored.
    let stored = api
        .ok(FETCH, json!({"entityType": "end_user", "ids": ["flagged"]}))
        .await;
    assert_eq!(stored["data"]["end_user"][0]["sync_status"], "synced");
}

const PAGE_BYTES: usize = 100_000;
/// Room for the envelope (`success`, type keys, cursor, syncTimestamp).
const ENVELOPE: usize = 400;

fn small_pages(b: &Backend) -> Server {
    Server::start_with(
        b,
        Options {
            extra_args: vec!["--max-page-bytes".into(), PAGE_BYTES.to_string()],
            ..Options::default()
        },
    )
}

fn ids_of(v: &Value, ty: &str) -> Vec<String> {
    v["data"][ty]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["id"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pushes `n` records of about `size` bytes, `per_push` per push.
async fn push_blobs(api: &Api, prefix: &str, n: usize, size: usize, per_push: usize) {
    let blob = "b".repeat(size);
    let all: Vec<Value> = (0..n)
        .map(|i| {
            upsert(
                &format!("{prefix}-m{i}"),
                "end_user",
                &format!("{prefix}{i:03}"),
                0,
                json!({"blob": blob, "sync_status": "pending"}),
            )
        })
        .collect();
    for chunk in all.chunks(per_push) {
        api.push("c", chunk.to_vec()).await;
    }
}

async fn pull_pages_are_bounded_in_bytes_and_reach_every_record_once(b: Backend) {
    let s = small_pages(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    push_blobs(&api, "r", 60, 20_000, 15).await;
    // One record larger than a page goes alone.
    push_blobs(&api, "huge", 1, 150_000, 1).await;
    push_blobs(&api, "z", 5, 20_000, 5).await;
    let mut cursor: Option<String> = None;
    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        let v = api
            .ok(
                PULL,
                json!({"cursor": cursor, "entityTypes": ["end_user"], "limit": 1000}),
            )
            .await;
        pages += 1;
        let ids = ids_of(&v, "end_user");
        let size = v.to_string().len();
        assert!(!ids.is_empty(), "every page has a record: {v}");
        if ids.iter().any(|i| i.starts_with("huge")) {
            assert_eq!(ids.len(), 1, "the large record goes alone");
        } else {
            assert!(size <= PAGE_BYTES + ENVELOPE, "page of {size} bytes");
        }
        seen.extend(ids);
        cursor = v["cursor"].as_str().map(str::to_owned);
        if v["hasMore"] != true {
            break;
        }
        assert!(pages < 100, "runaway paging");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 66, "every record exactly once");
    assert_eq!(unique.len(), 66);
    assert!(pages >= 66 * 20_000 / PAGE_BYTES, "{pages} pages");
    // The cursor is exact: a change after the last page is the next page.
    push_blobs(&api, "late", 1, 10, 1).await;
    let v = api
        .ok(PULL, json!({"cursor": cursor, "entityTypes": ["end_user"]}))
        .await;
    assert_eq!(ids_of(&v, "end_user"), ["late000"]);
    assert_eq!(v["hasMore"], false);
}

/// Follows seed 003's client: `lastSyncTimestamp` = last `syncTimestamp`.
async fn seed_pull_all(api: &Api, max_pages: usize) -> (Vec<String>, Vec<(usize, usize)>) {
    let mut last = "1970-01-01T00:00:00.000Z".to_owned();
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        let v = api
            .ok(
                PULL,
                json!({"lastSyncTimestamp": last, "entityTypes": ["end_user"]}),
            )
            .await;
        let ids = ids_of(&v, "end_user");
        pages.push((ids.len(), v.to_string().len()));
        seen.extend(ids);
        last = v["syncTimestamp"].as_str().unwrap_or("").to_owned();
        if v["hasMore"] != true {
            return (seen, pages);
        }
        assert!(pages.len() < max_pages, "runaway paging");
    }
}

async fn seed_timestamp_pages_are_bounded_at_millisecond_boundaries(b: Backend) {
    let s = small_pages(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    // One record per push, pushes milliseconds apart: pages can be cut
    // between milliseconds and stay under the bound.
    for i in 0..8 {
        push_blobs(&api, &format!("s{i}-"), 1, 30_000, 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let (seen, pages) = seed_pull_all(&api, 50).await;
    assert_eq!(seen.len(), 8, "each record once: {seen:?}");
    assert!(pages.len() >= 3, "{pages:?}");
    assert!(
        pages
            .iter()
            .all(|(n, size)| *n >= 1 && *size <= PAGE_BYTES + ENVELOPE),
        "{pages:?}"
    );
    // A push stored in one millisecond and larger than a page cannot be cut
    // for a timestamp client: its page holds the whole millisecond.
    push_blobs(&api, "burst", 10, 20_000, 10).await;
    let (seen, _) = seed_pull_all(&api, 50).await;
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (18, 18), "{seen:?}");
}

async fn pull_pending_and_fetch_are_bounded_in_bytes(b: Backend) {
    let s = small_pages(&b);
    let api = Api::for_tenant(&s, &common::tenant());
    push_blobs(&api, "p", 10, 30_000, 10).await;
    let v = api.ok(PENDING, json!({"entityTypes": ["end_user"]})).await;
    let n = ids_of(&v, "end_user").len();
    assert!((1..10).contains(&n), "{n} of 10 records of 30 kB");
    assert_eq!(v["hasMore"], true);
    assert!(v.to_string().len() <= PAGE_BYTES + ENVELOPE);
    // Fetch: what did not fit is absent and `hasMore` says so; asking for
    // the rest gets it.
    let mut wanted: Vec<String> = (0..10).map(|i| format!("p{i:03}")).collect();
    let mut rounds = 0;
    while !wanted.is_empty() {
        let v = api
            .ok(FETCH, json!({"entityType": "end_user", "ids": wanted}))
            .await;
        let got = ids_of(&v, "end_user");
        assert!(!got.is_empty());
        assert!(v.to_string().len() <= PAGE_BYTES + ENVELOPE);
        assert_eq!(v["hasMore"], got.len() < wanted.len(), "{got:?}");
        wanted.retain(|w| !got.contains(w));
        rounds += 1;
        assert!(rounds < 20);
    }
    assert!(rounds >= 3, "{rounds}");
}

fn assert_413_json(v: &Value) {
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], "payload-too-large", "{v}");
    assert_eq!(v["error"]["details"]["maxBodyBytes"], 1024 * 1024, "{v}");
    assert_eq!(v["error"]["details"]["maxMutations"], 1000, "{v}");
}

/// The JSON body of a raw HTTP answer, after asserting its status line.
fn raw_json(answer: &str, status: u16) -> Value {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{}",
        answer.chars().take(300).collect::<String>()
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

async fn oversized_push_is_a_json_413_the_client_can_split(b: Backend) {
    let s = Server::start(&b);
    let tenant = common::tenant();
    let api = Api::for_tenant(&s, &tenant);
    let blob = "x".repeat(40_000);
    let batch: Vec<Value> = (0..40)
        .map(|i| {
            upsert(
                &format!("m{i}"),
                "end_user",
                &format!("u{i}"),
                0,
                json!({"blob": blob}),
            )
        })
        .collect();
    let body = json!({"clientId": "c", "mutations": batch}).to_string();
    assert!(body.len() > 1024 * 1024);
    let (status, v) = api.post_raw(PUSH, body.clone().into_bytes()).await;
    assert_eq!(status, 413);
    assert_413_json(&v);
    // The client is still sending when the server decides: it must get to
    // read the answer, with Content-Length and chunked alike. (Answering
    // at once and closing made the sender's TCP reset: a broken pipe for an
    // 8 MB body on loopback, a network error instead of a 413 in a browser.)
    let big = json!({"clientId": "c", "mutations": [
        upsert("big", "end_user", "big", 0, json!({"blob": "y".repeat(8_000_000)}))
    ]})
    .to_string();
    let addr = s.addr();
    let head = format!(
        "POST {PUSH} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json",
        common::token(&tenant)
    );
    let sized = format!("{head}\r\nContent-Length: {}", big.len());
    let (a, bytes) = (addr.clone(), big.clone().into_bytes());
    let answer =
        tokio::task::spawn_blocking(move || common::raw_request(&a, &sized, &bytes, 16 * 1024))
            .await
            .expect("join")
            .expect("the 413 is readable after sending a body of known length");
    assert_413_json(&raw_json(&answer, 413));
    let chunked_head = format!("{head}\r\nTransfer-Encoding: chunked");
    let bytes = common::chunked(big.as_bytes(), 64 * 1024);
    let answer = tokio::task::spawn_blocking(move || {
        common::raw_request(&addr, &chunked_head, &bytes, 16 * 1024)
    })
    .await
    .expect("join")
    .expect("the 413 is readable after sending a chunked body");
    assert_413_json(&raw_json(&answer, 413));
    assert_eq!(api.verify(&["end_user"]).await["end_user"]["count"], 0);
    // Split in two, the same mutations land.
    let (first, second) = batch.split_at(20);
    api.push("c", first.to_vec()).await;
    api.push("c", second.to_vec()).await;
    assert_eq!(api.verify(&["end_user"]).await["end_user"]["count"], 40);
    // Over the mutation limit: the same JSON 413.
    let many: Vec<Value> = (0..1001)
        .map(|i| upsert(&format!("n{i}"), "end_user", &format!("n{i}"), 0, json!({})))
        .collect();
    let (status, v) = api
        .post(PUSH, json!({"clientId": "c", "mutations": many}))
        .await;
    assert_eq!(status, 413);
    assert_413_json(&v);
}
