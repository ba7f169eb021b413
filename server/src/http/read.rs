//! The read routes: pull (cursor and seed 003 timestamp forms),
//! pull-pending, verify and fetch.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::Value;
use tidesync_protocol::{
    FetchRequest, PullPendingRequest, PullRequest, PullResponse, TypeSummary, VerifyRequest,
    VerifyResponse,
};

use crate::auth::Auth;
use crate::db::{After, Page, PageBounds, StoredRecord};
use crate::error::{clip, ApiError};
use crate::http::extract::JsonBody;
use crate::http::{check_types, requested_types, AppState};
use crate::sync::{check_id, iso_ms, now_ms, parse_time_ms};

fn encode_cursor(rec: &StoredRecord) -> String {
    if cfg!(feature = "naive-cursor") {
        format!("t.{}", rec.updated_at)
    } else {
        format!("c1.{}", rec.seq)
    }
}

fn decode_cursor(c: &str) -> Result<After, ApiError> {
    let bad = || {
        ApiError::Validation(format!(
            "cursor: not a cursor this server issued: {:?}",
            clip(c)
        ))
    };
    if let Some(n) = c.strip_prefix("c1.") {
        return n.parse::<i64>().map(After::Seq).map_err(|_| bad());
    }
    if let Some(n) = c.strip_prefix("t.") {
        return n.parse::<i64>().map(After::Time).map_err(|_| bad());
    }
    Err(bad())
}

pub(crate) async fn pull(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(req): JsonBody<PullRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    let types = requested_types(&st.registry, &auth.tenant, req.entity_types)?;
    let after = match (&req.cursor, &req.last_sync_timestamp) {
        (Some(c), _) => decode_cursor(c)?,
        (None, Some(ts)) => After::Time(parse_time_ms(ts).ok_or_else(|| {
            ApiError::Validation(format!(
                "lastSyncTimestamp: not an ISO-8601 time: {:?}",
                clip(ts)
            ))
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
    let bounds = PageBounds {
        count: limit,
        bytes: st.limits.max_page_bytes,
    };
    // Seed 003's timestamp form: the next pull asks for changes stored after
    // this page's last millisecond, so a page must not end inside one.
    let timestamp_form = matches!(after, After::Time(_)) && !cfg!(feature = "naive-cursor");
    let Page { rows, has_more } = st
        .repo
        .pull_page(&auth.tenant, &types, after, bounds, timestamp_form)
        .await?;
    let mut sync_timestamp = iso_ms(now_ms());
    let cursor = match after {
        After::Seq(s) if !cfg!(feature = "naive-cursor") => {
            Some(rows.last().map_or_else(|| format!("c1.{s}"), encode_cursor))
        }
        _ if cfg!(feature = "naive-cursor") => rows
            .last()
            .map(encode_cursor)
            .or_else(|| req.cursor.clone()),
        // Timestamp form: rows come in `updatedAt` order and a page holds
        // whole milliseconds. With more to come, `syncTimestamp` is the
        // page's last millisecond, so a seed 003 client that pulls again
        // from it gets the rest. Once complete, the answer also carries an
        // exact cursor to switch to.
        _ => {
            if has_more {
                if let Some(last) = rows.last() {
                    sync_timestamp = iso_ms(last.updated_at);
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

pub(crate) async fn pull_pending(
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

pub(crate) async fn verify(
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

pub(crate) async fn fetch(
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
