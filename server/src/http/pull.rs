//! `POST /api/client/sync/pull` (by cursor, or by time in seed 003's form)
//! and `POST /api/client/sync/pull-pending`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tidesync_protocol::{
    PullPendingRequest, PullRequest, PullResponse, PULL_PATH, PULL_PENDING_PATH,
};

use crate::auth::Auth;
use crate::cursor;
use crate::db::{After, Page, PageBounds, StoredRecord};
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::http::seed;
use crate::http::state::AppState;
use crate::http::types::requested_types;
use crate::sync::{iso_ms, now_ms};

/// The pull routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(PULL_PATH, post(pull))
        .route(PULL_PENDING_PATH, post(pull_pending))
}

async fn pull(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<PullRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    let types = requested_types(&st.registry, &auth.tenant, req.entity_types)?;
    let after = match (&req.cursor, &req.last_sync_timestamp) {
        (Some(c), _) => cursor::decode(c)?,
        (None, Some(ts)) => seed::pull_since(ts)?,
        (None, None) => After::Seq(0),
    };
    let limit = req
        .limit
        .unwrap_or(seed::default_page_size(after, &st.limits))
        .clamp(1, st.limits.max_page_size);
    let bounds = PageBounds {
        count: limit,
        bytes: st.limits.max_page_bytes,
    };
    let whole_milliseconds = cursor::whole_milliseconds(after);
    let Page { rows, has_more } = st
        .repo
        .pull_page(&auth.tenant, &types, after, bounds, whole_milliseconds)
        .await?;
    let end = cursor::page_end(after, req.cursor.as_deref(), &rows, has_more);
    st.metrics.pulls.inc();
    Ok(Json(PullResponse {
        success: true,
        data: group(&types, &rows),
        cursor: end.cursor,
        has_more,
        sync_timestamp: iso_ms(end.synced_until.unwrap_or_else(now_ms)),
    }))
}

/// The answer's `data`: the rows by entity type, every requested type
/// present (empty when it has no rows).
pub(super) fn group(types: &[String], rows: &[StoredRecord]) -> BTreeMap<String, Vec<Value>> {
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
    let bounds = PageBounds {
        count: st.limits.max_page_size,
        bytes: st.limits.max_page_bytes,
    };
    let Page { rows, has_more } = st.repo.pending(&auth.tenant, &types, bounds).await?;
    Ok(Json(PullResponse {
        success: true,
        data: group(&types, &rows),
        cursor: None,
        has_more,
        sync_timestamp: iso_ms(now_ms()),
    }))
}
