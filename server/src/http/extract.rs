//! `JsonBody<T>`: the JSON request extractor. Enforces the body size limit
//! (413) and turns every parse failure into a 400 whose message names the
//! field (`mutations[3].baseVersion: invalid type …`), never a 500.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use http_body_util::LengthLimitError;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::http::AppState;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let limit = state.limits.max_body_bytes;
        let too_large =
            || ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes"));
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes = match axum::body::to_bytes(req.into_body(), limit).await {
            Ok(b) => b,
            Err(e) => {
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                while let Some(err) = source {
                    if err.is::<LengthLimitError>() {
                        return Err(too_large());
                    }
                    source = err.source();
                }
                return Err(ApiError::Validation(format!(
                    "could not read request body: {e}"
                )));
            }
        };
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as `T`, naming the failing field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(ApiError::Validation(
                if inner.is_syntax() || inner.is_eof() {
                    format!("malformed JSON: {inner}")
                } else if path == "." {
                    format!("invalid request body: {inner}")
                } else {
                    format!("{path}: {inner}")
                },
            ));
        }
    };
    de.end()
        .map_err(|e| ApiError::Validation(format!("malformed JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidesync_protocol::PullRequest;

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse_json::<PullRequest>(br#"{"entityTypes":"end_user"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("entityTypes:"), "{e}");
    }

    #[test]
    fn garbage_is_malformed_json() {
        let e = parse_json::<PullRequest>(b"{nope")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("malformed JSON"), "{e}");
    }
}
