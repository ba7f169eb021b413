//! Live pokes over Server-Sent Events against real server processes, on
//! SQLite and PostgreSQL: authentication (bearer header, tickets, never a
//! token in a URL), pokes after commits, tenant isolation, Last-Event-ID,
//! heartbeats, the per-token stream bound, token expiry, clean shutdown,
//! and pokes that cross server processes (LISTEN/NOTIFY, the sweep).

mod common;

use std::time::{Duration, Instant};

use common::{token, token_with, unix_now, upsert, Api, Backend, Options, Server, SECRET};
use serde_json::{json, Value};

const EVENTS: &str = "/api/client/sync/events";
const TICKET: &str = "/api/client/sync/events/ticket";

on_both_backends!(
    a_push_pokes_the_tenants_stream_with_the_new_cursor,
    a_ticket_opens_a_stream_and_tokens_never_go_in_urls,
    a_stream_only_hears_its_own_tenant,
    last_event_id_skips_the_first_poke_when_nothing_changed,
    heartbeats_arrive_on_an_idle_stream,
    streams_per_token_are_bounded,
    a_stream_ends_when_its_token_expires,
    shutdown_says_goodbye_ends_streams_and_exits,
    pokes_cross_server_processes,
    metrics_count_open_streams,
);

#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

#[derive(Debug)]
enum Next {
    Event(SseEvent),
    End,
    Timeout,
}

/// A minimal `text/event-stream` reader over a streaming response.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// GETs the events route; `Err((status, body))` when it is refused.
    async fn open(
        base: &str,
        query: &str,
        headers: &[(&str, String)],
    ) -> Result<EventStream, (u16, Value)> {
        let mut request = reqwest::Client::new().get(format!("{base}{EVENTS}{query}"));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.json().await.unwrap_or(Value::Null);
            return Err((status, body));
        }
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Ok(EventStream {
            response,
            buffer: String::new(),
        })
    }

    async fn with_token(base: &str, token: &str) -> EventStream {
        Self::open(base, "", &[("authorization", format!("Bearer {token}"))])
            .await
            .expect("stream opens")
    }

    fn parse(block: &str) -> Option<SseEvent> {
        let mut event = "message".to_owned();
        let mut id = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if data.is_empty() && id.is_none() && event == "message" {
            return None; // a comment or a bare retry line
        }
        Some(SseEvent {
            event,
            id,
            data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
        })
    }

    async fn next(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = Self::parse(&block) {
                    return Next::Event(event);
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Err(_) => return Next::Timeout,
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) | Ok(Err(_)) => return Next::End,
            }
        }
    }

    /// The next event other than a heartbeat, or `None` on timeout or end.
    async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Event(e) if e.event == "heartbeat" => continue,
                Next::Event(e) => return Some(e),
                Next::End | Next::Timeout => return None,
            }
        }
    }

    /// Reads `ready` and the first poke; returns the poke's cursor.
    async fn opened(&mut self) -> String {
        let ready = self
            .next_event(Duration::from_secs(5))
            .await
            .expect("ready");
        assert_eq!(ready.event, "ready", "{ready:?}");
        assert!(ready.data["heartbeat"].as_u64().is_some(), "{ready:?}");
        let poke = self.next_event(Duration::from_secs(5)).await.expect("poke");
        assert_eq!(poke.event, "poke", "{poke:?}");
        assert_eq!(poke.data["cursor"], ready.data["cursor"]);
        poke.data["cursor"].as_str().unwrap_or_default().to_owned()
    }
}

fn fast(extra: &[&str]) -> Options {
    Options {
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    }
}

async fn push_one(api: &Api, mid: &str, id: &str) -> String {
    let v = api
        .push(
            "c1",
            vec![upsert(mid, "end_user", id, 0, json!({"name": id}))],
        )
        .await;
    v["cursor"].as_str().expect("push cursor").to_owned()
}

async fn a_push_pokes_the_tenants_stream_with_the_new_cursor(b: Backend) {
    let s = Server::start(&b);
    let tenant = common::tenant();
    let api = Api::for_tenant(&s, &tenant);
    let mut stream = EventStream::with_token(&s.base, &token(&tenant)).await;
    assert_eq!(stream.opened().await, "c1.0", "a tenant without changes");
    let pushed_at = Instant::now();
    let cursor = push_one(&api, "m1", "u1").await;
    let poke = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("a poke after the push");
    assert_eq!(poke.event, "poke");
    assert_eq!(poke.data["cursor"], cursor.as_str());
    assert_eq!(poke.id.as_deref(), cursor.strip_prefix("c1."));
    eprintln!("push → poke: {:?}", pushed_at.elapsed());
    // The poked cursor is one a pull accepts.
    let (records, _) = api.pull_all(&["end_user"], None, 100).await;
    assert_eq!(records.len(), 1);
}

async fn a_ticket_opens_a_stream_and_tokens_never_go_in_urls(b: Backend) {
    let s = Server::start(&b);
    let tenant = common::tenant();
    let api = Api::for_tenant(&s, &tenant);
    let issued = api.ok(TICKET, json!({})).await;
    let ticket = issued["ticket"].as_str().expect("ticket").to_owned();
    assert!(issued["expiresIn"]
        .as_u64()
        .is_some_and(|n| n > 0 && n <= 60));
    let mut stream = EventStream::open(&s.base, &format!("?ticket={ticket}"), &[])
        .await
        .expect("a ticket opens a stream");
    stream.opened().await;
    let cursor = push_one(&api, "m1", "u1").await;
    let poke = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("poke");
    assert_eq!(poke.data["cursor"], cursor.as_str());

    // The bearer token in a URL is refused, under any name.
    let long_lived = token(&tenant);
    for query in [
        format!("?token={long_lived}"),
        format!("?access_token={long_lived}"),
        format!("?ticket={long_lived}"),
    ] {
        let (status, body) = EventStream::open(&s.base, &query, &[])
            .await
            .err()
            .expect("refused");
        assert_eq!(status, 401, "{query}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // No credentials at all, or a garbled ticket.
    assert_eq!(
        EventStream::open(&s.base, "", &[]).await.err().map(|e| e.0),
        Some(401)
    );
    assert_eq!(
        EventStream::open(&s.base, "?ticket=garbage", &[])
            .await
            .err()
            .map(|e| e.0),
        Some(401)
    );
    // A ticket is not a bearer token: push and pull refuse it.
    let with_ticket = Api::new(&s, Some(ticket));
    let (status, _) = with_ticket
        .post(
            "/api/client/sync/pull",
            json!({"entityTypes": ["end_user"]}),
        )
        .await;
    assert_eq!(status, 401);
    // A ticket needs a valid bearer token to be issued.
    let (status, _) = Api::new(&s, None).post(TICKET, json!({})).await;
    assert_eq!(status, 401);
}

async fn a_stream_only_hears_its_own_tenant(b: Backend) {
    let s = Server::start_with(&b, fast(&["--live-heartbeat-ms", "200"]));
    let (a, other) = (common::tenant(), common::tenant());
    let mut stream = EventStream::with_token(&s.base, &token(&a)).await;
    stream.opened().await;
    push_one(&Api::for_tenant(&s, &other), "m1", "u1").await;
    assert!(
        stream
            .next_event(Duration::from_millis(1500))
            .await
            .is_none(),
        "no poke for another tenant's commit"
    );
    let cursor = push_one(&Api::for_tenant(&s, &a), "m1", "u1").await;
    let poke = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("poke");
    assert_eq!(poke.data["cursor"], cursor.as_str());
}

async fn last_event_id_skips_the_first_poke_when_nothing_changed(b: Backend) {
    let s = Server::start_with(&b, fast(&["--live-heartbeat-ms", "200"]));
    let tenant = common::tenant();
    let api = Api::for_tenant(&s, &tenant);
    let cursor = push_one(&api, "m1", "u1").await;
    let seq = cursor.strip_prefix("c1.").expect("c1 cursor").to_owned();
    let auth = ("authorization", format!("Bearer {}", token(&tenant)));

    // Seen the latest: ready, then only heartbeats.
    let mut current =
        EventStream::open(&s.base, "", &[auth.clone(), ("last-event-id", seq.clone())])
            .await
            .expect("opens");
    assert_eq!(
        current
            .next_event(Duration::from_secs(5))
            .await
            .map(|e| e.event),
        Some("ready".into())
    );
    assert!(current
        .next_event(Duration::from_millis(800))
        .await
        .is_none());

    // Behind (header or query): the first poke says where the tenant is.
    for (query, headers) in [
        (
            String::new(),
            vec![auth.clone(), ("last-event-id", "0".to_owned())],
        ),
        ("?lastEventId=0".to_owned(), vec![auth.clone()]),
    ] {
        let mut behind = EventStream::open(&s.base, &query, &headers)
            .await
            .expect("opens");
        assert_eq!(behind.opened().await, cursor);
    }
}

async fn heartbeats_arrive_on_an_idle_stream(b: Backend) {
    let s = Server::start_with(&b, fast(&["--live-heartbeat-ms", "300"]));
    let tenant = common::tenant();
    let mut stream = EventStream::with_token(&s.base, &token(&tenant)).await;
    let ready = stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("ready");
    assert_eq!(ready.data["heartbeat"], 300);
    let started = Instant::now();
    let mut beats = 0;
    while beats < 3 && started.elapsed() < Duration::from_secs(5) {
        if let Next::Event(e) = stream.next(Duration::from_secs(5)).await {
            if e.event == "heartbeat" {
                beats += 1;
            }
        }
    }
    assert_eq!(beats, 3, "three heartbeats within 5 s at 300 ms");
}

async fn streams_per_token_are_bounded(b: Backend) {
    let s = Server::start_with(
        &b,
        fast(&[
            "--live-max-streams-per-token",
            "2",
            "--live-heartbeat-ms",
            "100",
        ]),
    );
    let tenant = common::tenant();
    let ada = token_with(SECRET, &tenant, "ada", unix_now() + 3600);
    let first = EventStream::with_token(&s.base, &ada).await;
    let _second = EventStream::with_token(&s.base, &ada).await;
    let (status, body) =
        EventStream::open(&s.base, "", &[("authorization", format!("Bearer {ada}"))])
            .await
            .err()
            .expect("a third stream is refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too-many-streams");
    // Another user of the tenant has streams of their own.
    let bea = token_with(SECRET, &tenant, "bea", unix_now() + 3600);
    let _bea = EventStream::with_token(&s.base, &bea).await;
    // Closing a stream gives its place back (once the server notices, at
    // the latest on the next heartbeat it writes).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match EventStream::open(&s.base, "", &[("authorization", format!("Bearer {ada}"))]).await {
            Ok(_) => break,
            Err((429, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the closed stream's place was not given back: {e:?}"),
        }
    }
}

async fn a_stream_ends_when_its_token_expires(b: Backend) {
    let s = Server::start(&b);
    let tenant = common::tenant();
    let short = token_with(SECRET, &tenant, "ada", unix_now() + 2);
    let mut stream = EventStream::with_token(&s.base, &short).await;
    stream.opened().await;
    let goodbye = stream
        .next_event(Duration::from_secs(6))
        .await
        .expect("goodbye");
    assert_eq!(goodbye.event, "goodbye");
    assert_eq!(goodbye.data["reason"], "token-expired");
    assert!(matches!(
        stream.next(Duration::from_secs(3)).await,
        Next::End
    ));
}

async fn shutdown_says_goodbye_ends_streams_and_exits(b: Backend) {
    let mut s = Server::start(&b);
    let tenant = common::tenant();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = EventStream::with_token(&s.base, &token(&tenant)).await;
        stream.opened().await;
        streams.push(stream);
    }
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .expect("kill");
    assert!(signalled.success());
    for stream in &mut streams {
        let goodbye = stream
            .next_event(Duration::from_secs(5))
            .await
            .expect("goodbye");
        assert_eq!(goodbye.event, "goodbye");
        assert_eq!(goodbye.data["reason"], "server-shutdown");
        assert!(matches!(
            stream.next(Duration::from_secs(5)).await,
            Next::End
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = s.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within 10 s of SIGTERM with streams open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
}

/// A commit on one process pokes a stream held by another process over the
/// same database: through LISTEN/NOTIFY on PostgreSQL (sweep off, so only
/// NOTIFY can do it), through the sweep on SQLite.
async fn pokes_cross_server_processes(b: Backend) {
    let (sweep, within) = match b {
        Backend::Postgres(_) => ("0", Duration::from_secs(3)),
        Backend::Sqlite => ("1", Duration::from_secs(4)),
    };
    let s1 = Server::start_with(&b, fast(&["--live-sweep-secs", sweep]));
    let mut opts = s1.same_db();
    opts.extra_args = vec!["--live-sweep-secs".into(), sweep.into()];
    let s2 = Server::start_with(&b, opts);
    let tenant = common::tenant();
    let mut on_s2 = EventStream::with_token(&s2.base, &token(&tenant)).await;
    on_s2.opened().await;
    let started = Instant::now();
    let cursor = push_one(&Api::for_tenant(&s1, &tenant), "m1", "u1").await;
    let poke = on_s2
        .next_event(within)
        .await
        .expect("a poke from the other process");
    assert_eq!(poke.data["cursor"], cursor.as_str());
    eprintln!("push on s1 → poke on s2: {:?}", started.elapsed());

    if let Backend::Postgres(url) = &b {
        // Cut both processes' LISTEN connections: they reconnect, and what
        // was committed meanwhile still arrives (the sweep after LISTEN).
        let pool = sqlx::postgres::PgPool::connect(url).await.expect("connect");
        let cut: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query ILIKE 'LISTEN%tidesync_poke%' AND pid <> pg_backend_pid()",
        )
        .fetch_all(&pool)
        .await
        .expect("terminate listeners");
        assert!(cut.len() >= 2, "both processes listen: {cut:?}");
        let cursor = push_one(&Api::for_tenant(&s1, &tenant), "m2", "u2").await;
        let poke = on_s2
            .next_event(Duration::from_secs(10))
            .await
            .expect("a poke after the listener reconnected");
        assert_eq!(poke.data["cursor"], cursor.as_str());
        pool.close().await;
    }
}

async fn metrics_count_open_streams(b: Backend) {
    let s = Server::start(&b);
    let tenant = common::tenant();
    let metric = || async {
        let text = reqwest::get(s.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix("tidesync_live_streams "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert_eq!(metric().await, Some(0));
    let mut stream = EventStream::with_token(&s.base, &token(&tenant)).await;
    stream.opened().await;
    assert_eq!(metric().await, Some(1));
}
