//! `POST /api/client/sync/fetch`: named records of one entity type (a
//! client repairing what verify found different).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use tidesync_protocol::{FetchRequest, PullResponse, FETCH_PATH};

use crate::auth::Auth;
use crate::db::Page;
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::http::pull::group;
use crate::http::state::AppState;
use crate::http::types::check_types;
use crate::sync::{check_id, iso_ms, now_ms};

/// The fetch route.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(FETCH_PATH, post(fetch))
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
    // Over the byte bound, `hasMore` says that ids absent from this answer
    // were not looked at: fetch them again.
    let Page { rows, has_more } = st
        .repo
        .fetch(
            &auth.tenant,
            &req.entity_type,
            &req.ids,
            st.limits.max_page_bytes,
        )
        .await?;
    Ok(Json(PullResponse {
        success: true,
        data: group(std::slice::from_ref(&req.entity_type), &rows),
        cursor: None,
        has_more,
        sync_timestamp: iso_ms(now_ms()),
    }))
}
