//! `POST /api/client/sync/push`: reads either request form (seed 003's in
//! [`super::seed`]), hands the valid mutations to the repository in one
//! transaction and shapes the answer.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tidesync_protocol::{
    ErrorBody, MutationResult, MutationStatus, PushResponse, Strategy, PUSH_PATH,
};

use crate::auth::Auth;
use crate::cursor;
use crate::db::StoredRecord;
use crate::error::{clip_message, ApiError};
use crate::http::extract::JsonBody;
use crate::http::seed;
use crate::http::state::AppState;
use crate::http::types::check_types;
use crate::sync::{check_id, iso_ms, now_ms, parse_mutation, PushItem, Rejection};

/// The push route.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(PUSH_PATH, post(push))
}

type Parsed = Result<PushItem, Rejection>;

/// A push read and checked, ready for the write transaction.
struct Prepared {
    /// `None` for seed 003's form.
    client_id: Option<String>,
    /// The valid mutations with their index in the request.
    valid: Vec<(usize, PushItem)>,
    /// The rejected mutations' results; `None` where valid.
    results: Vec<Option<MutationResult>>,
    mutation_ids: Vec<Option<String>>,
}

async fn push(
    State(st): State<Arc<AppState>>,
    auth: Auth,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    // Reading every mutation and serializing what will be stored is CPU
    // work proportional to the body: done before the write transaction
    // (which holds the tenant's lock, SQLite's for everyone) and off the
    // async workers, so that it delays neither other tenants nor other
    // requests.
    let Prepared {
        client_id,
        valid,
        mut results,
        mut mutation_ids,
    } = {
        let st = st.clone();
        let tenant = auth.tenant.clone();
        tokio::task::spawn_blocking(move || prepare(&st, &tenant, body))
            .await
            .map_err(|e| ApiError::Internal(format!("reading the push failed: {e}")))??
    };
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
    if let Some(seq) = last_seq {
        st.live.publish(&tenant, seq);
    }
    // Each record travels once: in `results[].record` for the Tidesync
    // form, in `data` (seed 003's list, request order) for the seed form.
    let seed_form = client_id.is_none();
    let mut seed_data: Vec<(usize, Value)> = Vec::new();
    for (i, o) in outcomes {
        let record = o.record.map(StoredRecord::into_json);
        let record = match (seed_form, record) {
            (true, Some(r)) => {
                seed_data.push((i, r));
                None
            }
            (_, r) => r,
        };
        results[i] = Some(MutationResult {
            mutation_id: mutation_ids[i].take(),
            entity_type: Some(o.entity_type),
            id: Some(o.id),
            status: o.status,
            record,
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
    seed_data.sort_by_key(|(i, _)| *i);
    let data = seed_data.into_iter().map(|(_, r)| r).collect();
    Ok(Json(PushResponse {
        success: true,
        data,
        results,
        cursor: last_seq.map(cursor::encode),
        sync_timestamp: iso_ms(now_ms()),
    })
    .into_response())
}

/// Reads the envelope (either form) and every mutation in it. Errors of the
/// envelope fail the whole push; a bad mutation is rejected alone.
fn prepare(st: &AppState, tenant: &str, body: Value) -> Result<Prepared, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::Validation(
            "request body: expected a JSON object".into(),
        ));
    };
    let max = st.limits.max_mutations;
    let max_fields = st.limits.max_fields;
    let (client_id, parsed): (Option<String>, Vec<Parsed>) = if let Some(changes) =
        obj.remove("changes")
    {
        let parsed = seed::read_changes(changes, &st.registry, tenant, &st.limits)?;
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
            return Err(st.limits.too_many_mutations(mutations.len()));
        }
        // An unregistered type anywhere fails the whole request.
        let named: Vec<String> = mutations
            .iter()
            .filter_map(|m| m.get("entityType").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        check_types(&st.registry, tenant, &named)?;
        let parsed = mutations
            .into_iter()
            .enumerate()
            .map(|(i, m)| parse_mutation(i, m, max_fields))
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
                        message: clip_message(r.message),
                        details: None,
                    }),
                })
            }
        }
    }
    Ok(Prepared {
        client_id,
        valid,
        results,
        mutation_ids,
    })
}
