//! Live sync: Server-Sent Events that poke a tenant's clients after every
//! commit that changed its rows, so they pull at once instead of waiting
//! for their next periodic pull.
//!
//! Routes: `POST /api/client/sync/events/ticket` (bearer token → a ticket
//! that lives seconds) and `GET /api/client/sync/events` (authenticated by
//! `Authorization: Bearer …` or `?ticket=…`). The stream sends
//!
//! ```text
//! event: ready      data: {"heartbeat":15000,"cursor":"c1.41"}
//! event: poke       id: 42   data: {"cursor":"c1.42"}
//! event: heartbeat  data: {}
//! event: goodbye    data: {"reason":"server-shutdown"}   (then the stream ends)
//! ```
//!
//! A poke carries only the tenant's latest cursor: the client pulls the
//! changes with its own credentials, so nothing a pull would refuse ever
//! crosses a stream. `Last-Event-ID` (header, or `lastEventId` in the
//! query) is the last cursor the client saw: the first poke is skipped when
//! nothing changed since. This module owns the stream protocol; the fan-out
//! is in [`hub`], the tickets in [`ticket`].

pub mod hub;
pub mod ticket;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, Query, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use futures_util::stream::{self, Stream};
use serde_json::json;
use tokio::sync::watch;

use crate::auth::{bearer_claims, unix_now, Auth, Authenticator};
use crate::cursor;
use crate::db::Repo;
use crate::error::ApiError;

use hub::{Hub, Membership, Refusal};
use ticket::{StreamIdentity, TicketKeys};

use tidesync_protocol::{EVENTS_PATH, EVENTS_TICKET_PATH as TICKET_PATH};

/// `--live-*` options of `tidesync-server`.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// Milliseconds between heartbeat events on an idle live stream.
    #[arg(long, env = "TIDESYNC_LIVE_HEARTBEAT_MS", default_value_t = 15_000)]
    pub live_heartbeat_ms: u64,
    /// Live streams one token (tenant + user) may hold open in one process.
    #[arg(
        long,
        env = "TIDESYNC_LIVE_MAX_STREAMS_PER_TOKEN",
        default_value_t = 16
    )]
    pub live_max_streams_per_token: usize,
    /// Live streams one process holds at most (more → 503).
    #[arg(long, env = "TIDESYNC_LIVE_MAX_STREAMS", default_value_t = 10_000)]
    pub live_max_streams: usize,
    /// Seconds between safety-net sweeps that re-read the cursors of the
    /// tenants with streams here (catches pokes lost between processes); 0: never.
    #[arg(long, env = "TIDESYNC_LIVE_SWEEP_SECS", default_value_t = 30)]
    pub live_sweep_secs: u64,
    /// Lifetime of a live ticket in seconds.
    #[arg(long, env = "TIDESYNC_LIVE_TICKET_SECS", default_value_t = 30)]
    pub live_ticket_secs: u64,
}

/// The live side of one server process. Cheap to clone: the routes read it
/// from the router's state (`FromRef`).
#[derive(Clone)]
pub struct Live {
    hub: Arc<Hub>,
    tickets: Arc<TicketKeys>,
    heartbeat: Duration,
}

impl Live {
    /// Builds the hub over the repository's pool. `secret` is the token
    /// secret (tickets use a key derived from it). Heartbeats come at least
    /// twice per `idle_timeout`, so the connection layer never takes a
    /// quiet stream for an idle connection.
    pub fn new(repo: &Repo, secret: &str, args: &LiveArgs, idle_timeout: Duration) -> Self {
        let mut heartbeat = Duration::from_millis(args.live_heartbeat_ms.max(100));
        if !idle_timeout.is_zero() && heartbeat > idle_timeout / 2 {
            heartbeat = (idle_timeout / 2).max(Duration::from_millis(100));
            tracing::warn!(
                heartbeat_ms = heartbeat.as_millis() as u64,
                "--live-heartbeat-ms is more than half of --idle-timeout; heartbeats are sped up"
            );
        }
        Live {
            hub: Arc::new(Hub::new(
                repo.pool().clone(),
                repo.backend(),
                args.live_max_streams_per_token,
                args.live_max_streams,
            )),
            tickets: Arc::new(TicketKeys::new(secret, args.live_ticket_secs)),
            heartbeat,
        }
    }

    /// Starts the background tasks: the PostgreSQL listener (other
    /// processes' pokes) and the periodic sweep.
    pub fn start(&self, database_url: Option<String>, sweep: Duration) {
        if let Some(url) = database_url {
            tokio::spawn(hub::listen_for_pokes(self.hub.clone(), url));
        }
        if !sweep.is_zero() {
            tokio::spawn(hub::sweep_periodically(self.hub.clone(), sweep));
        }
    }

    /// After a commit stored changes of `tenant` up to `seq`.
    pub fn publish(&self, tenant: &str, seq: i64) {
        self.hub.publish(tenant, seq);
    }

    /// Ends every stream with a `goodbye` so a graceful shutdown is not
    /// held open by them.
    pub fn shut_down(&self) {
        self.hub.shut_down();
    }

    /// Prometheus text for `/metrics`: open streams and pokes delivered.
    pub fn metrics_text(&self) -> String {
        format!(
            "# HELP tidesync_live_streams Live event streams open in this process\n\
             # TYPE tidesync_live_streams gauge\n\
             tidesync_live_streams {}\n\
             # HELP tidesync_live_pokes_total Cursor advances delivered to this process's tenant channels\n\
             # TYPE tidesync_live_pokes_total counter\n\
             tidesync_live_pokes_total {}\n",
            self.hub.streams(),
            self.hub.pokes()
        )
    }
}

/// The live routes, to merge into a router whose state provides the
/// [`Live`] side and the [`Authenticator`].
pub fn routes<S>() -> Router<S>
where
    Live: FromRef<S>,
    Authenticator: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(EVENTS_PATH, get(events))
        .route(TICKET_PATH, post(issue_ticket))
}

/// The bearer token's identity and expiry, from `Authorization`.
fn bearer_identity(
    parts: &Parts,
    authenticator: &Authenticator,
) -> Result<StreamIdentity, ApiError> {
    let claims = bearer_claims(parts, authenticator.keys())?;
    Ok(StreamIdentity {
        tenant: claims.tenant,
        sub: claims.sub,
        token_exp: claims.exp,
    })
}

async fn issue_ticket(
    State(live): State<Live>,
    State(authenticator): State<Authenticator>,
    _rate_limited: Auth,
    parts: Parts,
) -> Result<Response, ApiError> {
    let who = bearer_identity(&parts, &authenticator)?;
    let ticket = live
        .tickets
        .mint(&who, unix_now())
        .map_err(|e| ApiError::Unauthorized(format!("could not sign a ticket: {e}")))?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(json!({
            "success": true,
            "ticket": ticket,
            "expiresIn": live.tickets.ttl_secs(),
        })),
    )
        .into_response())
}

fn last_event_id(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.get("lastEventId").cloned())
        .and_then(|v| v.trim().parse::<i64>().ok())
}

async fn events(
    State(live): State<Live>,
    State(authenticator): State<Authenticator>,
    Query(query): Query<HashMap<String, String>>,
    parts: Parts,
) -> Result<Response, ApiError> {
    if query.contains_key("token") || query.contains_key("access_token") {
        return Err(ApiError::Unauthorized(
            "a token never goes in a URL: send `Authorization: Bearer …`, or exchange it at \
             POST /api/client/sync/events/ticket and pass `?ticket=`"
                .into(),
        ));
    }
    let who = match query.get("ticket") {
        Some(ticket) => live
            .tickets
            .verify(ticket)
            .map_err(|e| ApiError::Unauthorized(format!("invalid live ticket: {e}")))?,
        None => bearer_identity(&parts, &authenticator)?,
    };
    let last_seen = last_event_id(&parts.headers, &query);
    let hub = live.hub.clone();
    let token_key = format!("{}\u{0}{}", who.tenant, who.sub);
    let (membership, mut latest) = hub.join(&who.tenant, &token_key).map_err(|r| match r {
        Refusal::TooManyForToken(n) => ApiError::TooManyStreams(format!(
            "this token already holds {n} live streams in this server process; close one \
             (Tidesync keeps one per database across tabs)"
        )),
        Refusal::TooManyInProcess(n) => {
            ApiError::Unavailable(format!("this server process holds {n} live streams; retry"))
        }
        Refusal::ShuttingDown => ApiError::Unavailable("the server is shutting down".into()),
    })?;
    hub.refresh(std::slice::from_ref(&who.tenant)).await?;
    let current = *latest.borrow_and_update();
    let heartbeat = live.heartbeat;
    let mut opening = VecDeque::new();
    opening.push_back(
        Event::default().event("ready").data(
            json!({"heartbeat": heartbeat.as_millis() as u64, "cursor": cursor::encode(current)})
                .to_string(),
        ),
    );
    if last_seen != Some(current) {
        opening.push_back(poke(current));
    }
    let expires_in = who.token_exp.saturating_sub(unix_now());
    let state = StreamState {
        queue: opening,
        latest,
        shutdown: hub.shutdown_signal(),
        heartbeat: {
            let start = tokio::time::Instant::now() + heartbeat;
            let mut tick = tokio::time::interval_at(start, heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        },
        expires: Box::pin(tokio::time::sleep(Duration::from_secs(expires_in))),
        last_sent: current,
        done: false,
        _membership: membership,
    };
    let mut response = Sse::new(event_stream(state)).into_response();
    // Reverse proxies (nginx) must not buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn poke(seq: i64) -> Event {
    Event::default()
        .event("poke")
        .id(seq.to_string())
        .data(json!({ "cursor": cursor::encode(seq) }).to_string())
}

fn goodbye(reason: &str) -> Event {
    Event::default()
        .event("goodbye")
        .data(json!({ "reason": reason }).to_string())
}

/// One open stream. Field order matters: the receiver drops before the
/// membership, which then forgets a tenant nobody listens to any more.
struct StreamState {
    queue: VecDeque<Event>,
    latest: watch::Receiver<i64>,
    shutdown: watch::Receiver<bool>,
    heartbeat: tokio::time::Interval,
    expires: std::pin::Pin<Box<tokio::time::Sleep>>,
    last_sent: i64,
    done: bool,
    _membership: Membership,
}

fn event_stream(state: StreamState) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(state, |mut s| async move {
        if let Some(event) = s.queue.pop_front() {
            return Some((Ok(event), s));
        }
        if s.done {
            return None;
        }
        loop {
            tokio::select! {
                biased;
                _ = s.shutdown.changed() => {
                    s.done = true;
                    return Some((Ok(goodbye("server-shutdown")), s));
                }
                _ = &mut s.expires => {
                    s.done = true;
                    return Some((Ok(goodbye("token-expired")), s));
                }
                changed = s.latest.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let seq = *s.latest.borrow_and_update();
                    if seq > s.last_sent {
                        s.last_sent = seq;
                        return Some((Ok(poke(seq)), s));
                    }
                }
                _ = s.heartbeat.tick() => {
                    return Some((Ok(Event::default().event("heartbeat").data("{}")), s));
                }
            }
        }
    })
}
