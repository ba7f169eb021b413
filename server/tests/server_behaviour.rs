//! Server-level behaviour of the real binary that does not depend on the
//! database (SQLite only): rate limit, configured limits, the lost-answer
//! hook, health, metrics, static files, CORS, shutdown on SIGTERM, the
//! `token` subcommand, per-tenant type lists, seed 003's timestamp paging.

mod common;

use common::{upsert, Api, Backend, Options, Server, SECRET};
use serde_json::{json, Value};

const PUSH: &str = "/api/client/sync/push";
const PULL: &str = "/api/client/sync/pull";
const VERIFY: &str = "/api/client/sync/verify";

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
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test-hooks feature (scripts/test-server.sh builds with it)"
)]
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
