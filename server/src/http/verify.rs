//! `POST /api/client/sync/verify`: per entity type, the count of live
//! records and a checksum of their ids and versions, so a client can tell
//! whether its copy matches without pulling it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use tidesync_protocol::{TypeSummary, VerifyRequest, VerifyResponse, VERIFY_PATH};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::http::state::AppState;
use crate::http::types::requested_types;
use crate::sync::{iso_ms, now_ms};

/// The verify route.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(VERIFY_PATH, post(verify))
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
