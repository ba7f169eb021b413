//! Test harness: spawns the real `tidesync-server` binary on 127.0.0.1 (a
//! free port chosen by the OS) over SQLite (a temp file) or PostgreSQL
//! (`TIDESYNC_TEST_DATABASE_URL`), mints tokens, and speaks JSON to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

pub const SECRET: &str = "integration-test-secret-of-32-bytes-at-least";

/// Where the server keeps its data.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A fresh SQLite file per test.
    Sqlite,
    /// A shared PostgreSQL database; tests keep apart by tenant.
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend when `TIDESYNC_TEST_DATABASE_URL` is set.
    /// With `TIDESYNC_TEST_REQUIRE_POSTGRES=1` a missing URL is a failure.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("TIDESYNC_TEST_DATABASE_URL") {
            Ok(u) if !u.is_empty() => Some(Backend::Postgres(u)),
            _ => {
                assert!(
                    std::env::var("TIDESYNC_TEST_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                    "TIDESYNC_TEST_REQUIRE_POSTGRES=1 but TIDESYNC_TEST_DATABASE_URL is unset"
                );
                eprintln!("skipped: TIDESYNC_TEST_DATABASE_URL is not set");
                None
            }
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("tidesync-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server process; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Base URL of `--metrics-bind`'s listener, when given.
    pub metrics_url: Option<String>,
    pub db: String,
    pub dir: std::sync::Arc<TempDir>,
}

#[derive(Default)]
pub struct Options {
    pub extra_args: Vec<String>,
    pub config: Option<String>,
    /// Reuse another server's database (several processes, one database).
    pub db: Option<(String, std::sync::Arc<TempDir>)>,
    /// Start without `TIDESYNC_JWT_SECRET` (dev mode).
    pub dev_mode: bool,
}

/// Registry used by the conflict tests: one type per strategy.
pub const STRATEGY_CONFIG: &str = r#"
[entities.end_user]
[entities.interactions]
[entities.sw]
strategy = "server-wins"
[entities.cw]
strategy = "client-wins"
[entities.lww]
strategy = "last-write-wins"
[entities.merge]
strategy = "merge"
"#;

impl Server {
    /// A SQLite server with these extra command-line arguments.
    pub fn with_args(args: &[&str]) -> Server {
        Server::start_with(
            &Backend::Sqlite,
            Options {
                extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
                ..Options::default()
            },
        )
    }

    pub fn start(backend: &Backend) -> Server {
        Server::start_with(backend, Options::default())
    }

    pub fn start_with(backend: &Backend, opts: Options) -> Server {
        let (db, dir) = match opts.db {
            Some(x) => x,
            None => {
                let dir = std::sync::Arc::new(TempDir::new());
                let db = match backend {
                    Backend::Sqlite => format!("sqlite://{}", dir.0.join("test.db").display()),
                    Backend::Postgres(url) => url.clone(),
                };
                (db, dir)
            }
        };
        let config_path = dir.0.join("tidesync.toml");
        std::fs::write(
            &config_path,
            opts.config.as_deref().unwrap_or(STRATEGY_CONFIG),
        )
        .expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidesync-server"));
        if opts.dev_mode {
            command.env_remove("TIDESYNC_JWT_SECRET");
        } else {
            command.env("TIDESYNC_JWT_SECRET", SECRET);
        }
        let mut child = command
            .args(["--bind", "127.0.0.1:0", "--db", &db])
            .arg("--config")
            .arg(&config_path)
            .arg("--www")
            .arg(dir.0.join("www"))
            .arg("--pkg")
            .arg(dir.0.join("pkg"))
            .args(&opts.extra_args)
            .env("RUST_LOG", "warn")
            // Tests hammer one token; the rate-limit test turns it back on.
            .env("TIDESYNC_RATE_LIMIT", "0")
            .env_remove("DATABASE_URL")
            .env_remove("TIDESYNC_CORS_ORIGIN")
            .env_remove("TIDESYNC_BIND")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tidesync-server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut metrics = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("metrics on ") {
                    metrics = Some(url.trim().trim_end_matches("/metrics").to_owned());
                }
                if let Some(url) = line.strip_prefix("tidesync-server listening on ") {
                    let _ = tx.send((url.trim().to_owned(), metrics.take()));
                }
            }
        });
        let (base, metrics_url) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not print its URL within 60 s");
            }
        };
        Server {
            child,
            base,
            metrics_url,
            db,
            dir,
        }
    }

    /// Options that make another process over this server's database.
    pub fn same_db(&self) -> Options {
        Options {
            db: Some((self.db.clone(), self.dir.clone())),
            ..Options::default()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn token_with(secret: &str, tenant: &str, sub: &str, exp: u64) -> String {
    encode(
        &Header::default(),
        &json!({"sub": sub, "tenant": tenant, "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

pub fn token(tenant: &str) -> String {
    token_with(SECRET, tenant, "user-1", unix_now() + 3600)
}

/// A fresh tenant name, so tests sharing a database never see each other.
pub fn tenant() -> String {
    format!("t-{}", uuid::Uuid::new_v4())
}

/// A client bound to one server and one token.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Api {
    pub fn new(server: &Server, token: Option<String>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            token,
        }
    }

    pub fn for_tenant(server: &Server, tenant: &str) -> Api {
        Api::new(server, Some(token(tenant)))
    }

    /// POSTs raw bytes; returns status and the parsed body (Null if empty).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, body.to_string().into_bytes()).await
    }

    /// POSTs and asserts 200.
    pub async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, 200, "POST {path}: {v}");
        assert_eq!(v["success"], true, "{v}");
        v
    }

    pub async fn push(&self, client_id: &str, mutations: Vec<Value>) -> Value {
        self.ok(
            "/api/client/sync/push",
            json!({"clientId": client_id, "mutations": mutations}),
        )
        .await
    }

    /// Pulls every page from `cursor`; returns records by id and the final cursor.
    pub async fn pull_all(
        &self,
        types: &[&str],
        cursor: Option<String>,
        limit: u32,
    ) -> (Vec<Value>, Option<String>) {
        let mut cursor = cursor;
        let mut out = Vec::new();
        loop {
            let v = self
                .ok(
                    "/api/client/sync/pull",
                    json!({"cursor": cursor, "entityTypes": types, "limit": limit}),
                )
                .await;
            for t in types {
                if let Some(a) = v["data"][*t].as_array() {
                    out.extend(a.iter().cloned());
                }
            }
            cursor = v["cursor"].as_str().map(str::to_owned);
            if v["hasMore"] != true {
                return (out, cursor);
            }
        }
    }

    pub async fn verify(&self, types: &[&str]) -> Value {
        self.ok("/api/client/sync/verify", json!({"entityTypes": types}))
            .await["data"]
            .clone()
    }
}

pub fn upsert(mid: &str, ty: &str, id: &str, base: i64, data: Value) -> Value {
    json!({"mutationId": mid, "entityType": ty, "op": "upsert", "id": id,
           "baseVersion": base, "data": data})
}

pub fn delete(mid: &str, ty: &str, id: &str, base: i64) -> Value {
    json!({"mutationId": mid, "entityType": ty, "op": "delete", "id": id, "baseVersion": base})
}

/// Runs each named scenario on SQLite and (when configured) PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(b) = super::common::Backend::postgres() {
                        super::$name(b).await
                    }
                }
            )*
        }
    };
}

/// Sends a raw HTTP/1.1 request (`head` without the blank line; the
/// request asks to close the connection) and then `body` in `chunk`-sized
/// writes, then reads the whole answer. Blocking; run it off the runtime.
pub fn raw_request(addr: &str, head: &str, body: &[u8], chunk: usize) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    conn.set_write_timeout(Some(Duration::from_secs(20)))?;
    write!(conn, "{head}\r\nConnection: close\r\n\r\n")?;
    for part in body.chunks(chunk.max(1)) {
        conn.write_all(part)?;
    }
    conn.flush()?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// `body` in HTTP/1.1 chunked encoding, `chunk` bytes per chunk.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk.max(1) * 12 + 8);
    for part in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

impl Server {
    /// `host:port` of the server.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }
}
