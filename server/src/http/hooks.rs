//! Test hooks (cargo feature `test-hooks`, switched on by `--test-hooks`):
//! `POST /__test/drop-next-push-response` arms a lost push answer for the
//! caller's tenant. The push route itself knows nothing of it: the hook is
//! a layer around that route, installed only in such builds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRef, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use crate::auth::{authenticate, Auth, Authenticator};

const DROP_NEXT_PUSH_PATH: &str = "/__test/drop-next-push-response";

/// Tenants whose next push commits and then answers 500 without a body.
#[derive(Default)]
struct DropNextPush(Mutex<HashSet<String>>);

impl DropNextPush {
    fn arm(&self, tenant: String) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(tenant);
        }
    }

    fn take(&self, tenant: &str) -> bool {
        match self.0.lock() {
            Ok(mut set) => set.remove(tenant),
            Err(_) => false,
        }
    }
}

/// `service` with the push route `push` merged in, wrapped so that an armed
/// tenant's next successful push loses its answer, and the hook's route.
pub(super) fn install<S>(
    service: Router<S>,
    push: Router<S>,
    authenticator: Authenticator,
) -> Router<S>
where
    Authenticator: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    let armed = Arc::new(DropNextPush::default());
    let arming = armed.clone();
    // A valid token is required, so one tenant cannot disturb another's
    // pushes.
    let service = service.route(
        DROP_NEXT_PUSH_PATH,
        post(move |auth: Auth| async move {
            arming.arm(auth.tenant.clone());
            Json(json!({"success": true, "armed": auth.tenant}))
        }),
    );
    let push = push.route_layer(middleware::from_fn(move |req: Request, next: Next| {
        let armed = armed.clone();
        let authenticator = authenticator.clone();
        async move {
            let (parts, body) = req.into_parts();
            let tenant = authenticate(&parts, authenticator.keys())
                .ok()
                .map(|a| a.tenant);
            let response = next.run(Request::from_parts(parts, body)).await;
            match tenant {
                Some(tenant) if response.status().is_success() && armed.take(&tenant) => {
                    tracing::warn!(%tenant, "test hook: dropping this push's response");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
                _ => response,
            }
        }
    }));
    service.merge(push)
}
