//! `JsonBody<T>`: the JSON request extractor. Enforces the body size limit
//! (a JSON 413 the client can read, see [`DRAIN_LIMIT`]) and turns every
//! parse failure into a 400 whose message names the
//! field (`mutations[3].baseVersion: invalid type …`), never a 500. Its
//! limits come from any router state that provides [`BodyLimits`].

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::header;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct JsonBody<T>(pub T);

/// What a request body may be: its size, and how long it may take to
/// arrive. `max_mutations` goes into the 413 so a client can split its push.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_body_bytes: usize,
    pub max_mutations: usize,
    pub timeout: Duration,
}

/// Bodies up to this size are parsed on the async worker; larger ones on
/// the blocking pool, so that parsing a megabyte does not stall other
/// requests.
const PARSE_INLINE_BYTES: usize = 64 * 1024;

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned + Send + 'static,
    BodyLimits: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, ApiError> {
        let limits = BodyLimits::from_ref(state);
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let timeout = ApiError::BodyTimeout(limits.timeout.as_secs());
        let read = read_body(req, limits.max_body_bytes, || ApiError::PayloadTooLarge {
            message: format!(
                "request body is larger than {} bytes; split the push",
                limits.max_body_bytes
            ),
            max_body_bytes: limits.max_body_bytes,
            max_mutations: limits.max_mutations,
        });
        // A deadline for the whole body: a per-read timeout would let a
        // client trickling a byte a second hold the request for ever.
        let bytes = tokio::time::timeout_at(deadline, read)
            .await
            .map_err(|_| timeout)??;
        if bytes.len() <= PARSE_INLINE_BYTES {
            return parse_json(&bytes).map(JsonBody);
        }
        tokio::task::spawn_blocking(move || parse_json(&bytes))
            .await
            .map_err(|e| ApiError::Internal(format!("parsing the body failed: {e}")))?
            .map(JsonBody)
    }
}

/// How much of a body over the limit is still read (and thrown away) so
/// that the client, which is still sending, gets to read the 413: a server
/// that answers and closes with unread bytes makes the peer's TCP reset the
/// connection, and the client sees a network error instead of "too large".
/// Past this, the answer goes at once and the connection is closed.
pub const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Reads the whole body, or fails with `too_large()` once it passes `limit`
/// (at once when `Content-Length` says so and the body is beyond
/// [`DRAIN_LIMIT`]; otherwise after reading the rest without keeping it).
async fn read_body(
    req: Request<Body>,
    limit: usize,
    too_large: impl FnOnce() -> ApiError,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut kept: Vec<u8> =
        Vec::with_capacity(declared.map_or(0, |n| n.min(limit as u64) as usize));
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&e))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > DRAIN_LIMIT {
            return Err(too_large());
        }
        if total <= limit {
            kept.extend_from_slice(&data);
        }
    }
    if total > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}

/// A body that could not be read: the connection failed mid-body.
fn body_error(e: &axum::Error) -> ApiError {
    ApiError::Validation(format!("could not read request body: {e}"))
}

/// Parses `bytes` as `T`, naming the failing field in the error. The body
/// must be a JSON object (serde would otherwise read a struct from an array
/// by position, and name no field when it fails).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::Validation(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => "request body: expected a JSON object".to_owned(),
                Err(e) => format!("malformed JSON: {e}"),
            },
        ));
    }
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
    fn a_body_that_is_not_an_object_is_refused_as_such() {
        for body in [&b"[null, [\"end_user\"]]"[..], b"7", b" \"x\""] {
            let e = parse_json::<PullRequest>(body)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(e, "request body: expected a JSON object");
        }
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
