//! Prometheus metrics of this process, `/metrics` and `/healthz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};
use serde_json::json;

use crate::error::ApiError;
use crate::http::AppState;

/// Prometheus metrics of this process.
pub struct Metrics {
    registry: Registry,
    pub(crate) pushes: IntCounter,
    pub(crate) mutations: IntCounterVec,
    pub(crate) pulls: IntCounter,
    pub(crate) requests: IntCounterVec,
    pub(crate) latency: HistogramVec,
}

impl Metrics {
    /// `quarantined` is the repository's counter of quarantined rows.
    pub fn new(quarantined: IntCounter) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(quarantined))?;
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

pub(crate) async fn healthz(State(st): State<Arc<AppState>>) -> Response {
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
pub(crate) async fn metrics(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
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
