//! Server hardening (issue 16, items 2–8 and its "to decide" list): a
//! heavy merge does not hold other tenants, dev mode stays on loopback and
//! off other websites, secrets are long enough, token claims are checked,
//! `/api` errors are JSON, echoes are short, test hooks are tenant-scoped,
//! `/metrics` exposure is a choice, static pages carry nosniff and a CSP.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{token_with, unix_now, upsert, Api, Backend, Options, Server, SECRET};
use serde_json::{json, Map, Value};

const PUSH: &str = "/api/client/sync/push";
const PULL: &str = "/api/client/sync/pull";

on_both_backends!(a_huge_merge_push_does_not_hold_other_tenants);

async fn a_huge_merge_push_does_not_hold_other_tenants(b: Backend) {
    let s = Server::start_with(
        &b,
        Options {
            extra_args: vec!["--max-fields".into(), "40000".into()],
            ..Options::default()
        },
    );
    let heavy = Api::for_tenant(&s, &common::tenant());
    let other = Api::for_tenant(&s, &common::tenant());
    heavy
        .push("a", vec![upsert("a1", "merge", "m", 0, json!({"x": 1}))])
        .await;
    // 30,000 fields and 30,000 changedFields none of which is in data, on
    // a stale base: a merge. Quadratic, this took seconds and held the
    // write lock (SQLite's, for every tenant) all along.
    let data: Map<String, Value> = (0..30_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let changed: Vec<String> = (0..30_000).map(|i| format!("c{i}")).collect();
    let mut m = upsert("b1", "merge", "m", 0, Value::Object(data));
    m["changedFields"] = json!(changed);
    let heavy_push = {
        let heavy = heavy.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let v = heavy.push("b", vec![m]).await;
            (v, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    other
        .push("c", vec![upsert("c1", "end_user", "u", 0, json!({}))])
        .await;
    let other_took = start.elapsed();
    let (v, heavy_took) = heavy_push.await.expect("join");
    assert_eq!(
        v["results"][0]["status"], "conflict",
        "{}",
        v["results"][0]["status"]
    );
    assert_eq!(v["results"][0]["winner"], "merged");
    assert!(
        heavy_took < Duration::from_secs(5),
        "the merge push took {heavy_took:?}"
    );
    assert!(
        other_took < Duration::from_secs(2),
        "another tenant waited {other_took:?}"
    );
}

#[tokio::test]
async fn records_over_the_field_limit_are_rejected_naming_the_field() {
    let s = Server::start(&Backend::Sqlite);
    let api = Api::for_tenant(&s, "t");
    let data: Map<String, Value> = (0..1001).map(|i| (format!("k{i}"), json!(i))).collect();
    let v = api
        .push(
            "c",
            vec![upsert("m1", "end_user", "u", 0, Value::Object(data))],
        )
        .await;
    assert_eq!(v["results"][0]["status"], "rejected");
    let msg = v["results"][0]["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("mutations[0].data: 1001 fields; at most 1000"),
        "{msg}"
    );
}

/// Runs the binary with `args` and `secret` (None: unset) and returns its
/// exit success and stderr, for start-up refusals (which exit at once).
fn run(args: &[&str], secret: Option<&str>) -> (bool, String) {
    let dir = common::TempDir::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidesync-server"));
    cmd.args(args);
    if args.first() != Some(&"token") {
        cmd.arg("--db").arg(dir.0.join("x.db"));
    }
    cmd.env_remove("TIDESYNC_JWT_SECRET")
        .env_remove("TIDESYNC_BIND")
        .env_remove("TIDESYNC_CORS_ORIGIN")
        .env("RUST_LOG", "error");
    if let Some(s) = secret {
        cmd.env("TIDESYNC_JWT_SECRET", s);
    }
    let out = cmd.output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dev_mode_refuses_non_loopback_binds() {
    for bind in ["0.0.0.0:0", "[::]:0"] {
        let (ok, err) = run(&["--bind", bind], None);
        assert!(!ok, "dev mode started on {bind}");
        assert!(
            err.contains("TIDESYNC_JWT_SECRET") && err.contains("loopback"),
            "{err}"
        );
    }
    let (ok, err) = run(
        &["--bind", "127.0.0.1:0", "--metrics-bind", "0.0.0.0:0"],
        None,
    );
    assert!(!ok && err.contains("loopback"), "{err}");
}

#[test]
fn an_empty_or_short_secret_is_refused() {
    for secret in ["", "short-secret"] {
        let (ok, err) = run(&["--bind", "127.0.0.1:0"], Some(secret));
        assert!(!ok, "started with secret {secret:?}");
        assert!(err.contains("at least 32"), "{err}");
        let (ok, err) = run(&["token", "--tenant", "t", "--sub", "u"], Some(secret));
        assert!(
            !ok && err.contains("at least 32"),
            "token with {secret:?}: {err}"
        );
    }
}

async fn preflight(s: &Server, origin: &str) -> Option<String> {
    let resp = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, s.url(PULL))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(
        resp.headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "credentials are never allowed"
    );
    resp.headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn dev_mode_cors_allows_only_its_own_and_configured_origins() {
    let dev = Server::start_with(
        &Backend::Sqlite,
        Options {
            dev_mode: true,
            extra_args: vec!["--cors-origin".into(), "http://app.example".into()],
            ..Options::default()
        },
    );
    let port = dev.addr().rsplit(':').next().unwrap_or("").to_owned();
    assert_eq!(preflight(&dev, "http://evil.example").await, None);
    let own = format!("http://localhost:{port}");
    assert_eq!(preflight(&dev, &own).await.as_deref(), Some(own.as_str()));
    assert_eq!(
        preflight(&dev, "http://app.example").await.as_deref(),
        Some("http://app.example")
    );
    let (ok, err) = run(&["--bind", "127.0.0.1:0", "--cors-origin", "*"], None);
    assert!(!ok && err.contains("--cors-origin *"), "{err}");
    // With a secret, the default is any origin, still without credentials.
    let prod = Server::start(&Backend::Sqlite);
    assert_eq!(
        preflight(&prod, "http://evil.example").await.as_deref(),
        Some("*")
    );
}

const ENDPOINTS: [&str; 5] = [
    PUSH,
    PULL,
    "/api/client/sync/pull-pending",
    "/api/client/sync/verify",
    "/api/client/sync/fetch",
];

fn body_for(path: &str) -> Value {
    match path {
        PUSH => json!({"clientId": "c", "mutations": [upsert("m", "end_user", "u", 0, json!({}))]}),
        "/api/client/sync/fetch" => json!({"entityType": "end_user", "ids": ["u"]}),
        _ => json!({"entityTypes": ["end_user"]}),
    }
}

#[tokio::test]
async fn tokens_not_yet_valid_or_with_control_characters_are_401() {
    let s = Server::start(&Backend::Sqlite);
    let now = unix_now();
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    };
    let base = json!({"sub": "u", "tenant": "t", "exp": now + 3600});
    let mut early = base.clone();
    early["nbf"] = json!(now + 3600);
    let mut forged_log = base.clone();
    forged_log["sub"] = json!("ada\n2026-12-01T00:00:00Z INFO admin logged in\u{1b}[0m");
    let mut other_claim = base.clone();
    other_claim["name"] = json!("x\r\ny");
    for (what, token) in [
        ("nbf in the future", sign(early)),
        ("control characters in sub", sign(forged_log)),
        ("control characters in another claim", sign(other_claim)),
    ] {
        let api = Api::new(&s, Some(token));
        for path in ENDPOINTS {
            let (status, v) = api.post(path, body_for(path)).await;
            assert_eq!(status, 401, "{what} on {path}: {v}");
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
    // The same claims without the flaw are accepted.
    let ok = Api::new(&s, Some(token_with(SECRET, "t", "u", now + 3600)));
    ok.ok(PULL, json!({"entityTypes": ["end_user"]})).await;
}

#[tokio::test]
async fn api_errors_are_json_for_unknown_paths_and_wrong_methods() {
    let s = Server::start(&Backend::Sqlite);
    let http = reqwest::Client::new();
    let cases = [
        (reqwest::Method::GET, PUSH, 405, "method-not-allowed"),
        (reqwest::Method::PUT, PULL, 405, "method-not-allowed"),
        (
            reqwest::Method::POST,
            "/api/client/sync/nope",
            404,
            "not-found",
        ),
        (reqwest::Method::GET, "/api/", 404, "not-found"),
        (reqwest::Method::POST, "/healthz", 405, "method-not-allowed"),
    ];
    for (method, path, status, code) in cases {
        let resp = http
            .request(method.clone(), s.url(path))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        assert!(
            resp.headers()
                .get("content-type")
                .map_or("", |v| v.to_str().unwrap_or(""))
                .starts_with("application/json"),
            "{method} {path}: {:?}",
            resp.headers()
        );
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
    }
}

#[tokio::test]
async fn echoed_input_in_errors_is_truncated() {
    let s = Server::start(&Backend::Sqlite);
    let api = Api::for_tenant(&s, "t");
    let huge = "e".repeat(900_000);
    let cases = [
        (
            PUSH,
            json!({"clientId": "c", "mutations": [upsert("m", &huge, "u", 0, json!({}))]}),
        ),
        (PULL, json!({"entityTypes": [huge.clone()]})),
        (
            PULL,
            json!({"entityTypes": ["end_user"], "cursor": huge.clone()}),
        ),
        (
            PULL,
            json!({"entityTypes": ["end_user"], "lastSyncTimestamp": huge.clone()}),
        ),
        (
            PULL,
            json!({"entityTypes": ["end_user"], "limit": huge.clone()}),
        ),
    ];
    for (path, body) in cases {
        let (status, v) = api.post(path, body).await;
        assert_eq!(status, 400, "{path}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.len() < 1200, "{path}: a {} byte message", msg.len());
        assert!(
            msg.contains("900000 bytes") || msg.ends_with('…'),
            "{path}: {msg}"
        );
    }
    // In a rejected mutation too.
    let mut m = upsert("m", "end_user", "u", 0, json!({}));
    m["clientTimestamp"] = json!(huge);
    let v = api.push("c", vec![m]).await;
    let msg = v["results"][0]["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("clientTimestamp") && msg.len() < 1200,
        "{}",
        msg.len()
    );
}

#[tokio::test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test-hooks feature (scripts/test-server.sh builds with it)"
)]
async fn the_test_hook_needs_a_token_and_drops_only_its_tenants_push() {
    let s = Server::with_args(&["--test-hooks"]);
    let (status, v) = Api::new(&s, None)
        .post("/__test/drop-next-push-response", json!({}))
        .await;
    assert_eq!(status, 401, "{v}");
    let a = Api::for_tenant(&s, "a");
    let b = Api::for_tenant(&s, "b");
    let (status, v) = a.post("/__test/drop-next-push-response", json!({})).await;
    assert_eq!((status, v["armed"].clone()), (200, json!("a")));
    // B's push is not dropped; A's next one is.
    b.push("c", vec![upsert("m", "end_user", "u", 0, json!({}))])
        .await;
    let (status, _) = a
        .post(
            PUSH,
            json!({"clientId": "c", "mutations": [upsert("m", "end_user", "u", 0, json!({}))]}),
        )
        .await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn metrics_exposure_is_a_choice() {
    let http = reqwest::Client::new();
    let s = Server::with_args(&["--metrics-token", "scrape-me"]);
    let denied = http.get(s.url("/metrics")).send().await.expect("metrics");
    assert_eq!(denied.status(), 401);
    let allowed = http
        .get(s.url("/metrics"))
        .bearer_auth("scrape-me")
        .send()
        .await
        .expect("metrics");
    assert_eq!(allowed.status(), 200);
    assert!(allowed
        .text()
        .await
        .unwrap_or_default()
        .contains("tidesync_pushes_total"));
    // On its own listener: gone from the main one.
    let s = Server::with_args(&["--metrics-bind", "127.0.0.1:0"]);
    let main = http.get(s.url("/metrics")).send().await.expect("metrics");
    assert_ne!(main.status(), 200);
    assert!(s.metrics_url.is_some(), "the metrics address is printed");
    let side = http
        .get(format!(
            "{}/metrics",
            s.metrics_url.clone().unwrap_or_default()
        ))
        .send()
        .await
        .expect("metrics");
    assert_eq!(side.status(), 200);
}

#[tokio::test]
async fn responses_carry_nosniff_and_static_pages_a_csp() {
    let s = Server::start(&Backend::Sqlite);
    std::fs::create_dir_all(s.dir.0.join("www")).expect("www");
    std::fs::write(s.dir.0.join("www/index.html"), "<h1>demo</h1>").expect("index");
    let http = reqwest::Client::new();
    let page = http.get(s.url("/")).send().await.expect("page");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    for part in [
        "default-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    let api = Api::for_tenant(&s, "t");
    let resp = api
        .http
        .post(s.url(PULL))
        .bearer_auth(api.token.clone().unwrap_or_default())
        .json(&json!({"entityTypes": []}))
        .send()
        .await
        .expect("pull");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let _ = Duration::ZERO;
}
