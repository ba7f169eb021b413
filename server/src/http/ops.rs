//! Operations: `/healthz` and `/metrics` (the Prometheus text of
//! [`crate::metrics`] and of the live streams).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::error::ApiError;
use crate::http::state::AppState;

/// `/healthz`, and `/metrics` unless it is served on a listener of its own.
pub(super) fn routes(with_metrics: bool) -> Router<Arc<AppState>> {
    let routes = Router::new().route("/healthz", get(healthz));
    if with_metrics {
        routes.route("/metrics", get(metrics))
    } else {
        routes
    }
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

/// `/metrics`; with `--metrics-token`, only for `Authorization: Bearer
/// <that token>` (else 401, JSON).
async fn metrics(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &st.metrics_token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(sent.as_bytes(), expected.as_bytes()) {
            return ApiError::Unauthorized("/metrics needs its bearer token".into())
                .into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        st.metrics.render() + &st.live.metrics_text(),
    )
        .into_response()
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
