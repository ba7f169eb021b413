//! HTTP surface: the router, built from one router per resource, each on
//! the protocol's path constants: [`push`], [`pull`] (and pull-pending),
//! [`verify`], [`fetch`], [`ops`] (health and metrics), the live routes of
//! [`crate::live`]; then the API's JSON fallbacks, static files, CORS and
//! request metrics. Seed 003's request forms are read in [`seed`]; the
//! state in [`state`]; the extractors ([`extract`], `crate::auth::Auth`)
//! read what they need through `FromRef`. Handlers translate between JSON
//! and the repository; conflict policy lives in `sync`, SQL in `db`, the
//! cursor in `cursor`. Test hooks exist only in `test-hooks` builds.

mod extract;
mod fetch;
#[cfg(feature = "test-hooks")]
mod hooks;
mod ops;
mod pull;
mod push;
mod seed;
mod state;
mod types;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::{clip, ApiError};
use crate::startup::CorsOrigins;
pub use state::{AppState, Limits};

/// Static file, CORS and exposure settings.
pub struct HttpOptions {
    pub www: PathBuf,
    pub pkg: PathBuf,
    pub cors: CorsOrigins,
    pub csp: String,
    /// Serve `/metrics` on the main router (false: on its own listener).
    pub metrics_on_main: bool,
    /// `--test-hooks`: serve the test hooks (builds with the `test-hooks`
    /// feature only; others refuse to start with it).
    pub test_hooks: bool,
}

/// The main router: the sync API under `/api` (with its own JSON answers
/// for unknown paths and wrong methods), health, metrics (unless moved to
/// its own listener), test hooks (when on), and the static files.
pub fn router(state: Arc<AppState>, http: &HttpOptions) -> Result<Router, String> {
    let service = Router::new()
        .merge(pull::routes())
        .merge(verify::routes())
        .merge(fetch::routes())
        .merge(ops::routes(http.metrics_on_main))
        .merge(crate::live::routes());
    let service = with_push(service, push::routes(), &state, http.test_hooks)?;
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
    ops::routes(true)
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

/// `service` with the push route merged in, and the test hooks when asked
/// for (see [`hooks`]).
#[cfg(feature = "test-hooks")]
fn with_push(
    service: Router<Arc<AppState>>,
    push: Router<Arc<AppState>>,
    state: &AppState,
    test_hooks: bool,
) -> Result<Router<Arc<AppState>>, String> {
    Ok(if test_hooks {
        hooks::install(service, push, state.auth.clone())
    } else {
        service.merge(push)
    })
}

/// `service` with the push route merged in. A build without the
/// `test-hooks` feature has no hooks to install.
#[cfg(not(feature = "test-hooks"))]
fn with_push(
    service: Router<Arc<AppState>>,
    push: Router<Arc<AppState>>,
    _state: &AppState,
    test_hooks: bool,
) -> Result<Router<Arc<AppState>>, String> {
    if test_hooks {
        return Err("--test-hooks: this server was built without test hooks \
             (build it with `--features test-hooks`)"
            .into());
    }
    Ok(service.merge(push))
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
