//! The router's state: what the handlers share, and the parts of it the
//! extractors and the live routes read through `FromRef` (so that they need
//! not know this type).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;

use crate::auth::Authenticator;
use crate::config::Registry as EntityRegistry;
use crate::db::Repo;
use crate::error::ApiError;
use crate::http::extract::BodyLimits;
use crate::live::Live;
use crate::metrics::Metrics;

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

impl Limits {
    /// The 413 for a push of `n` mutations, over `max_mutations`.
    pub fn too_many_mutations(&self, n: usize) -> ApiError {
        ApiError::PayloadTooLarge {
            message: format!("{n} mutations in one push; at most {}", self.max_mutations),
            max_body_bytes: self.max_body_bytes,
            max_mutations: self.max_mutations,
        }
    }
}

pub struct AppState {
    pub repo: Repo,
    pub registry: EntityRegistry,
    /// Token keys and the per-token rate limit.
    pub auth: Authenticator,
    pub limits: Limits,
    pub metrics: Metrics,
    /// `--metrics-token`: the bearer token `/metrics` requires.
    pub metrics_token: Option<String>,
    pub live: Live,
}

impl FromRef<Arc<AppState>> for Authenticator {
    fn from_ref(state: &Arc<AppState>) -> Self {
        state.auth.clone()
    }
}

impl FromRef<Arc<AppState>> for BodyLimits {
    fn from_ref(state: &Arc<AppState>) -> Self {
        BodyLimits {
            max_body_bytes: state.limits.max_body_bytes,
            max_mutations: state.limits.max_mutations,
            timeout: state.limits.body_timeout,
        }
    }
}

impl FromRef<Arc<AppState>> for Live {
    fn from_ref(state: &Arc<AppState>) -> Self {
        state.live.clone()
    }
}
