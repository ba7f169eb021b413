//! HTTP surface: shared state and the router (sync routes, health, metrics,
//! static files, CORS, test hooks); the handlers live in the submodules by
//! resource. Handlers translate
//! between JSON and the repository; conflict policy lives in `sync`, SQL in
//! `db`.

mod extract;
mod hooks;
mod metrics;
mod push;
mod read;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::{Keys, RateLimit};
use crate::config::Registry as EntityRegistry;
use crate::db::Repo;
use crate::error::{clip, ApiError};
use crate::startup::CorsOrigins;
pub use hooks::TestHooks;
pub use metrics::Metrics;

/// Limits from the command line.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_mutations: usize,
    pub default_page_size: u32,
    pub max_page_size: u32,
    /// Most bytes of record JSON in one pull, pull-pending or fetch answer
    /// (at least one record always goes).
    pub max_page_bytes: usize,
    /// Longest time to receive a request body (then 408).
    pub body_timeout: Duration,
    /// Most top-level fields in a record's data (and in `changedFields`).
    pub max_fields: usize,
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
    /// `--metrics-token`: the bearer token `/metrics` requires.
    pub metrics_token: Option<String>,
    pub live: crate::live::Live,
}

/// The Content-Security-Policy of static pages unless `--csp` says
/// otherwise. Scripts and styles from the server's origin only, plus the
/// inline ones the demo pages use; WebAssembly compilation allowed (the
/// SDK is wasm); no plugins, no `<base>`, no framing, forms to the own
/// origin. `connect-src` stays open because the demo and the SDK's pages
/// may talk to a sync server or endpoint of another origin.
pub const DEFAULT_CSP: &str = "default-src 'self'; \
     script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
     connect-src 'self' http: https:; worker-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Static file, CORS and exposure settings.
pub struct HttpOptions {
    pub www: PathBuf,
    pub pkg: PathBuf,
    pub cors: CorsOrigins,
    pub csp: String,
    /// Serve `/metrics` on the main router (false: on its own listener).
    pub metrics_on_main: bool,
}

/// The main router: the sync API under `/api` (with its own JSON answers
/// for unknown paths and wrong methods), health, metrics (unless moved to
/// its own listener), test hooks (when on), and the static files.
pub fn router(state: Arc<AppState>, http: &HttpOptions) -> Result<Router, String> {
    let mut service = Router::new()
        .route("/api/client/sync/push", post(push::push))
        .route("/api/client/sync/pull", post(read::pull))
        .route("/api/client/sync/pull-pending", post(read::pull_pending))
        .route("/api/client/sync/verify", post(read::verify))
        .route("/api/client/sync/fetch", post(read::fetch))
        .route("/healthz", get(metrics::healthz))
        .merge(crate::live::routes());
    if http.metrics_on_main {
        service = service.route("/metrics", get(metrics::metrics));
    }
    if state.test_hooks.is_some() {
        service = service.route(
            "/__test/drop-next-push-response",
            post(hooks::drop_next_push),
        );
    }
    let service = service
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        // Anything else under /api is an API error, in JSON, not a file.
        .route("/api", any(api_not_found))
        .route("/api/", any(api_not_found))
        .route("/api/{*rest}", any(api_not_found));
    let csp = HeaderValue::from_str(&http.csp)
        .map_err(|_| format!("--csp: not a header value: {:?}", http.csp))?;
    let statics = Router::new()
        .nest_service("/pkg", ServeDir::new(&http.pkg))
        .fallback_service(ServeDir::new(&http.www))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ));
    Ok(service
        .merge(statics)
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(cors_layer(&http.cors)?)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state))
}

/// The router of `--metrics-bind`: `/metrics` and `/healthz` only.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(metrics::healthz))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

async fn api_not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no API route {}", clip(uri.path())))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", clip(uri.path())))
}

fn cors_layer(origins: &CorsOrigins) -> Result<CorsLayer, String> {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600));
    let list = match origins {
        CorsOrigins::Any => return Ok(layer.allow_origin(Any)),
        CorsOrigins::List(list) => list,
    };
    let list = list
        .iter()
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
pub(crate) fn check_types<'a>(
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
pub(crate) fn requested_types(
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
