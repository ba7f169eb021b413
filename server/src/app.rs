//! HTTP surface: shared state, the router (sync routes, health, metrics,
//! static files, CORS, test hooks) and the handlers. Handlers translate
//! between JSON and the repository; conflict policy lives in `sync`, SQL in
//! `db`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use serde_json::{json, Value};
use tidesync_protocol::{
    ErrorBody, FetchRequest, MutationResult, MutationStatus, PullPendingRequest, PullRequest,
    PullResponse, PushResponse, Strategy, TypeSummary, VerifyRequest, VerifyResponse,
};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::{authenticate, Auth, Keys, RateLimit};
use crate::config::Registry as EntityRegistry;
use crate::db::{After, Repo, StoredRecord};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::sync::{check_id, iso_ms, now_ms, parse_mutation, parse_seed_record, parse_time_ms};

/// Limits from the command line.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_mutations: usize,
    pub default_page_size: u32,
    pub max_page_size: u32,
}

pub struct AppState {
    pub repo: Repo,
    pub registry: EntityRegistry,
    pub keys: Keys,
    pub limits: Limits,
    pub rate_limit: Option<RateLimit>,
    pub metrics: Metrics,
    /// `Some` only with `--test-hooks`.
    pub test_hooks: Option<TestHooks>,
}

/// Test-only switches (see `--test-hooks`).
#[derive(Default)]
pub struct TestHooks {
    /// Tenants whose next push commits and then answers 500 without a body;
    /// `"*"` means any tenant.
    drop_next_push: Mutex<HashSet<String>>,
}

impl TestHooks {
    fn arm(&self, tenant: String) {
        if let Ok(mut set) = self.drop_next_push.lock() {
            set.insert(tenant);
        }
    }

    fn take(&self, tenant: &str) -> bool {
        match self.drop_next_push.lock() {
            Ok(mut set) => set.remove(tenant) || set.remove("*"),
            Err(_) => false,
        }
    }
}

/// Prometheus metrics of this process.
pub struct Metrics {
    registry: Registry,
    pushes: IntCounter,
    mutations: IntCounterVec,
    pulls: IntCounter,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let pushes = IntCounter::new("tidesync_pushes_total", "Push requests answered 200")?;
        let mutations = IntCounterVec::new(
            Opts::new("tidesync_mutations_total", "Pushed mutations by outcome"),
            &["status"],
        )?;
        let pulls = IntCounter::new("tidesync_pulls_total", "Pull requests answered 200")?;
        let requests = IntCounterVec::new(
            Opts::new(
                "tidesync_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "tidesync_http_request_duration_seconds",
                "Latency of HTTP requests by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )?;
        registry.register(Box::new(pushes.clone()))?;
        registry.register(Box::new(mutations.clone()))?;
        registry.register(Box::new(pulls.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        for s in ["applied", "duplicate", "conflict", "rejected"] {
            mutations.with_label_values(&[s]);
        }
        Ok(Metrics {
            registry,
            pushes,
            mutations,
            pulls,
            requests,
            latency,
        })
    }

    fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Static file and CORS settings.
pub struct HttpOptions {
    pub www: PathBuf,
    pub pkg: PathBuf,
    pub cors_origin: String,
}

pub fn router(state: Arc<AppState>, http: &HttpOptions) -> Result<Router, String> {
    let mut api = Router::new()
        .route("/api/client/sync/push", post(push))
        .route("/api/client/sync/pull", post(pull))
        .route("/api/client/sync/pull-pending", post(pull_pending))
        .route("/api/client/sync/verify", post(verify))
        .route("/api/client/sync/fetch", post(fetch))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    if state.test_hooks.is_some() {
        api = api.route("/__test/drop-next-push-response", post(drop_next_push));
    }
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), track));
    Ok(api
        .nest_service("/pkg", ServeDir::new(&http.pkg))
        .fallback_service(ServeDir::new(&http.www))
        .layer(cors_layer(&http.cors_origin)?)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state))
}

fn cors_layer(origins: &str) -> Result<CorsLayer, String> {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600));
    if origins.trim() == "*" {
        return Ok(layer.allow_origin(Any));
    }
    let list = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| HeaderValue::from_str(o).map_err(|_| format!("--cors-origin: bad origin {o:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(layer.allow_origin(AllowOrigin::list(list)))
}

async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.latency
        .with_label_values(&[route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    resp
}

/// 400 for an unregistered type, then 403 for one the tenant may not touch.
fn check_types<'a>(
    registry: &EntityRegistry,
    tenant: &str,
    types: impl IntoIterator<Item = &'a String> + Clone,
) -> Result<(), ApiError> {
    for t in types.clone() {
        if !registry.is_registered(t) {
            return Err(ApiError::UnknownEntityType(t.clone()));
        }
    }
    for t in types {
        if !registry.is_allowed(tenant, t) {
            return Err(ApiError::Forbidden(t.clone()));
        }
    }
    Ok(())
}

/// The requested types, or every type the tenant may use when the list is
/// empty.
fn requested_types(
    registry: &EntityRegistry,
    tenant: &str,
    types: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    if types.is_empty() {
        return Ok(registry
            .types()
            .map(|(t, _)| t.to_owned())
            .filter(|t| registry.is_allowed(tenant, t))
            .collect());
    }
    check_types(registry, tenant, &types)?;
    let mut seen = HashSet::new();
    Ok(types
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect())
}

fn encode_cursor(rec: &StoredRecord) -> String {
    if cfg!(feature = "naive-cursor") {
        format!("t.{}", rec.updated_at)
    } else {
        format!("c1.{}", rec.seq)
    }
}

fn decode_cursor(c: &str) -> Result<After, ApiError> {
    let bad = || ApiError::Validation(format!("cursor: not a cursor this server issued: {c:?}"));
    if let Some(n) = c.strip_prefix("c1.") {
        return n.parse::<i64>().map(After::Seq).map_err(|_| bad());
    }
    if let Some(n) = c.strip_prefix("t.") {
        return n.parse::<i64>().map(After::Time).map_err(|_| bad());
    }
    Err(bad())
}

type Parsed = Result<crate::sync::PushItem, crate::sync::Rejection>;

async fn push(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let Value::Object(mut obj) = body else {
        return Err(ApiError::Validation(
            "request body: expected a JSON object".into(),
        ));
    };
    let max = st.limits.max_mutations;
    let too_many =
        |n: usize| ApiError::PayloadTooLarge(format!("{n} mutations in one push; at most {max}"));
    let (client_id, parsed): (Option<String>, Vec<Parsed>) = if let Some(changes) =
        obj.remove("changes")
    {
        let Value::Object(changes) = changes else {
            return Err(ApiError::Validation(
                "changes: expected an object of entity type → array of records".into(),
            ));
        };
        let mut total = 0usize;
        for (t, records) in &changes {
            match records {
                Value::Array(a) => total += a.len(),
                _ => {
                    return Err(ApiError::Validation(format!(
                        "changes.{t}: expected an array of records"
                    )))
                }
            }
        }
        if total > max {
            return Err(too_many(total));
        }
        check_types(&st.registry, &auth.tenant, changes.keys())?;
        let mut parsed = Vec::with_capacity(total);
        for (t, records) in changes {
            if let Value::Array(a) = records {
                for (i, r) in a.into_iter().enumerate() {
                    parsed.push(parse_seed_record(&t, i, r));
                }
            }
        }
        (None, parsed)
    } else if let Some(mutations) = obj.remove("mutations") {
        let client_id = match obj.get("clientId") {
            Some(Value::String(s)) => {
                check_id("clientId", s).map_err(ApiError::Validation)?;
                s.clone()
            }
            Some(_) => return Err(ApiError::Validation("clientId: expected a string".into())),
            None => return Err(ApiError::Validation("clientId: missing".into())),
        };
        let Value::Array(mutations) = mutations else {
            return Err(ApiError::Validation("mutations: expected an array".into()));
        };
        if mutations.len() > max {
            return Err(too_many(mutations.len()));
        }
        // An unregistered type anywhere fails the whole request.
        let named: Vec<String> = mutations
            .iter()
            .filter_map(|m| m.get("entityType").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        check_types(&st.registry, &auth.tenant, &named)?;
        let parsed = mutations
            .into_iter()
            .enumerate()
            .map(|(i, m)| parse_mutation(i, m))
            .collect();
        (Some(client_id), parsed)
    } else {
        return Err(ApiError::Validation(
            "request body: expected `mutations` (with `clientId`) or seed 003's `changes`".into(),
        ));
    };

    let mut results: Vec<Option<MutationResult>> = vec![None; parsed.len()];
    let mut valid = Vec::new();
    let mut mutation_ids: Vec<Option<String>> = vec![None; results.len()];
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Ok(item) => {
                mutation_ids[i] = item.mutation_id.clone();
                valid.push((i, item));
            }
            Err(r) => {
                results[i] = Some(MutationResult {
                    mutation_id: r.mutation_id,
                    entity_type: r.entity_type,
                    id: r.id,
                    status: MutationStatus::Rejected,
                    record: None,
                    resolution: None,
                    winner: None,
                    error: Some(ErrorBody {
                        code: "validation".into(),
                        message: r.message,
                        details: None,
                    }),
                })
            }
        }
    }
    let tenant = auth.tenant.clone();
    let registry = &st.registry;
    let (outcomes, last_seq) = st
        .repo
        .push(
            &tenant,
            client_id.as_deref(),
            valid,
            |t| {
                registry
                    .strategy(&tenant, t)
                    .unwrap_or(Strategy::LastWriteWins)
            },
            now,
        )
        .await?;
    for (i, o) in outcomes {
        results[i] = Some(MutationResult {
            mutation_id: mutation_ids[i].take(),
            entity_type: Some(o.entity_type),
            id: Some(o.id),
            status: o.status,
            record: Some(o.record),
            resolution: o.resolution,
            winner: o.winner,
            error: None,
        });
    }
    let results: Vec<MutationResult> = results.into_iter().flatten().collect();
    let m = &st.metrics;
    m.pushes.inc();
    for r in &results {
        let label = match r.status {
            MutationStatus::Applied => "applied",
            MutationStatus::Duplicate => "duplicate",
            MutationStatus::Conflict => "conflict",
            MutationStatus::Rejected => "rejected",
        };
        m.mutations.with_label_values(&[label]).inc();
    }
    tracing::info!(
        tenant = %auth.tenant,
        sub = %auth.sub,
        mutations = results.len(),
        "push committed"
    );
    if let Some(hooks) = &st.test_hooks {
        if hooks.take(&auth.tenant) {
            tracing::warn!(tenant = %auth.tenant, "test hook: dropping this push's response");
            return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
    }
    let data = results
        .iter()
        .filter_map(|r| r.record.clone())
        .filter(|r| !r.is_null())
        .collect();
    Ok(Json(PushResponse {
        success: true,
        data,
        results,
        cursor: last_seq.map(|s| format!("c1.{s}")),
        sync_timestamp: iso_ms(now_ms()),
    })
    .into_response())
}

async fn pull(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<PullRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    let types = requested_types(&st.registry, &auth.tenant, req.entity_types)?;
    let after = match (&req.cursor, &req.last_sync_timestamp) {
        (Some(c), _) => decode_cursor(c)?,
        (None, Some(ts)) => After::Time(parse_time_ms(ts).ok_or_else(|| {
            ApiError::Validation(format!("lastSyncTimestamp: not an ISO-8601 time: {ts:?}"))
        })?),
        (None, None) => After::Seq(0),
    };
    // Seed 003 clients send no limit and expect everything in one answer:
    // give them the largest page.
    let default_limit = match after {
        After::Seq(_) => st.limits.default_page_size,
        After::Time(_) => st.limits.max_page_size,
    };
    let limit = req
        .limit
        .unwrap_or(default_limit)
        .clamp(1, st.limits.max_page_size);
    let mut rows = st.repo.changes(&auth.tenant, &types, after, limit).await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let mut sync_timestamp = iso_ms(now_ms());
    let cursor = match after {
        After::Seq(s) if !cfg!(feature = "naive-cursor") => {
            Some(rows.last().map_or_else(|| format!("c1.{s}"), encode_cursor))
        }
        _ if cfg!(feature = "naive-cursor") => rows
            .last()
            .map(encode_cursor)
            .or_else(|| req.cursor.clone()),
        // Timestamp form: rows come in `updatedAt` order. With more to come,
        // the page is completed with the rest of its last millisecond and
        // `syncTimestamp` is that millisecond, so a seed 003 client that
        // pulls again from it gets the rest. Once complete, the answer also
        // carries an exact cursor to switch to.
        _ => {
            if has_more {
                if let Some((last_at, last_seq)) = rows.last().map(|r| (r.updated_at, r.seq)) {
                    let ties = st
                        .repo
                        .same_time_after(&auth.tenant, &types, last_at, last_seq)
                        .await?;
                    rows.extend(ties);
                    sync_timestamp = iso_ms(last_at);
                }
                None
            } else {
                rows.iter().map(|r| r.seq).max().map(|s| format!("c1.{s}"))
            }
        }
    };
    st.metrics.pulls.inc();
    Ok(Json(PullResponse {
        success: true,
        data: group(&types, &rows),
        cursor,
        has_more,
        sync_timestamp,
    }))
}

fn group(types: &[String], rows: &[StoredRecord]) -> BTreeMap<String, Vec<Value>> {
    let mut data: BTreeMap<String, Vec<Value>> =
        types.iter().map(|t| (t.clone(), Vec::new())).collect();
    for r in rows {
        data.entry(r.entity_type.clone())
            .or_default()
            .push(r.to_json());
    }
    data
}

async fn pull_pending(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<PullPendingRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    let types = requested_types(&st.registry, &auth.tenant, req.entity_types)?;
    let limit = st.limits.max_page_size;
    let mut rows = st.repo.pending(&auth.tenant, &types, limit).await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(Json(PullResponse {
        success: true,
        data: group(&types, &rows),
        cursor: None,
        has_more,
        sync_timestamp: iso_ms(now_ms()),
    }))
}

async fn verify(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let types = requested_types(&st.registry, &auth.tenant, req.entity_types)?;
    let mut data = BTreeMap::new();
    for t in types {
        let live = st.repo.live_versions(&auth.tenant, &t).await?;
        let summary = TypeSummary {
            count: live.len() as u64,
            checksum: tidesync_protocol::record_checksum(
                live.iter().map(|(id, v)| (id.as_str(), *v)),
            ),
        };
        data.insert(t, summary);
    }
    Ok(Json(VerifyResponse {
        success: true,
        data,
        sync_timestamp: iso_ms(now_ms()),
    }))
}

async fn fetch(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<FetchRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    check_types(&st.registry, &auth.tenant, [&req.entity_type])?;
    let max = st.limits.max_page_size as usize;
    if req.ids.len() > max {
        return Err(ApiError::Validation(format!(
            "ids: {} ids; at most {max} per fetch",
            req.ids.len()
        )));
    }
    for (i, id) in req.ids.iter().enumerate() {
        check_id(&format!("ids[{i}]"), id).map_err(ApiError::Validation)?;
    }
    let rows = st
        .repo
        .fetch(&auth.tenant, &req.entity_type, &req.ids)
        .await?;
    Ok(Json(PullResponse {
        success: true,
        data: group(std::slice::from_ref(&req.entity_type), &rows),
        cursor: None,
        has_more: false,
        sync_timestamp: iso_ms(now_ms()),
    }))
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let backend = format!("{:?}", st.repo.backend()).to_lowercase();
    match st.repo.health().await {
        Ok(()) => {
            Json(json!({"status": "ok", "database": "ok", "backend": backend})).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "database": "error", "backend": backend})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// Test hook: the next push (of the caller's tenant, or of any tenant when
/// no token is sent) commits, then answers 500 with an empty body.
async fn drop_next_push(
    State(st): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let scope = if parts.headers.contains_key(header::AUTHORIZATION) {
        authenticate(&parts, &st.keys)?.tenant
    } else {
        "*".to_owned()
    };
    let Some(hooks) = &st.test_hooks else {
        return Err(ApiError::NotFound("test hooks are off".into()));
    };
    hooks.arm(scope.clone());
    Ok(Json(json!({"success": true, "armed": scope})).into_response())
}
