//! Test-only routes (`--test-hooks`): arming a lost push answer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::http::AppState;

/// Test-only switches (see `--test-hooks`).
#[derive(Default)]
pub struct TestHooks {
    /// Tenants whose next push commits and then answers 500 without a body.
    drop_next_push: Mutex<HashSet<String>>,
}

impl TestHooks {
    pub(crate) fn arm(&self, tenant: String) {
        if let Ok(mut set) = self.drop_next_push.lock() {
            set.insert(tenant);
        }
    }

    pub(crate) fn take(&self, tenant: &str) -> bool {
        match self.drop_next_push.lock() {
            Ok(mut set) => set.remove(tenant),
            Err(_) => false,
        }
    }
}

/// Test hook: the next push of the caller's tenant (a valid token is
/// required, so one tenant cannot disturb another's pushes) commits, then
/// answers 500 with an empty body.
pub(crate) async fn drop_next_push(
    State(st): State<Arc<AppState>>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let scope = auth.tenant;
    let Some(hooks) = &st.test_hooks else {
        return Err(ApiError::NotFound("test hooks are off".into()));
    };
    hooks.arm(scope.clone());
    Ok(Json(json!({"success": true, "armed": scope})).into_response())
}
