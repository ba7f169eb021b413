//! The server's one error type and its mapping to HTTP answers: every error
//! leaves as `{"success": false, "error": {"code", "message"}}` with the
//! matching status. Owns status codes and error codes, nothing else.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tidesync_protocol::{ErrorBody, ErrorResponse};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong field types, invalid values.
    #[error("{0}")]
    Validation(String),
    /// An entity type that the registry does not know.
    #[error("Entity type {} not registered", clip(.0))]
    UnknownEntityType(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The tenant may not touch this entity type.
    #[error("Entity type {} is not allowed for this tenant", clip(.0))]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body did not arrive within `--body-timeout`.
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// Over the body or mutation limit; the answer's `details` names both
    /// limits (`maxBodyBytes`, `maxMutations`) so a client can split.
    #[error("{message}")]
    PayloadTooLarge {
        message: String,
        max_body_bytes: usize,
        max_mutations: usize,
    },
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The token holds as many live streams as it may.
    #[error("{0}")]
    TooManyStreams(String),
    /// Temporarily unable to serve (shutting down, at capacity).
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A bug or a failed task; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::UnknownEntityType(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } | ApiError::TooManyStreams(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(e) if is_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable code clients can switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation",
            ApiError::UnknownEntityType(_) => "unknown-entity-type",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::BodyTimeout(_) => "timeout",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::RateLimited { .. } => "rate-limited",
            ApiError::TooManyStreams(_) => "too-many-streams",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Database(e) if is_unavailable(e) => "unavailable",
            ApiError::Database(_) | ApiError::Internal(_) => "internal",
        }
    }
}

/// Errors worth retrying: no connection, or lock contention that outlasted
/// the wait (SQLite busy/locked; PostgreSQL serialization failure, deadlock,
/// lock timeout, too many connections).
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("5" | "6" | "517" | "40001" | "40P01" | "55P03" | "53300" | "57P03")
        ),
        _ => false,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // Do not leak SQL or driver details to clients; they are logged.
            ApiError::Database(e) => {
                tracing::error!(error = %e, "database error");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "database unavailable; retry later".to_owned()
                } else {
                    "internal error".to_owned()
                }
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "internal error".to_owned()
            }
            other => clip_message(other.to_string()),
        };
        let details = match &self {
            ApiError::PayloadTooLarge {
                max_body_bytes,
                max_mutations,
                ..
            } => Some(serde_json::json!({
                "maxBodyBytes": max_body_bytes,
                "maxMutations": max_mutations,
            })),
            _ => None,
        };
        let body = ErrorResponse {
            success: false,
            error: ErrorBody {
                code: self.code().to_owned(),
                message,
                details,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still be on its way: do not read it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still be on its way: do not read it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        }
        resp
    }
}

/// Longest piece of client input echoed in an error message.
pub const ECHO_LIMIT: usize = 64;
/// Longest error message sent.
pub const MESSAGE_LIMIT: usize = 1024;

/// `text` as echoed in an error: at most [`ECHO_LIMIT`] characters, then
/// `…` and the full length, so a 900 KB entity type is not sent back whole.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(ECHO_LIMIT) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// An error message cut to [`MESSAGE_LIMIT`] characters (parser messages
/// quote the offending value).
pub fn clip_message(message: String) -> String {
    match message.char_indices().nth(MESSAGE_LIMIT) {
        None => message,
        Some((cut, _)) => format!("{}…", &message[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_clipped_on_a_char_boundary() {
        assert_eq!(clip("end_user"), "end_user");
        let long = "é".repeat(100);
        let c = clip(&long);
        assert!(c.starts_with(&"é".repeat(ECHO_LIMIT)), "{c}");
        assert!(c.ends_with("… (200 bytes)"), "{c}");
        assert_eq!(
            clip_message("x".repeat(5000)).chars().count(),
            MESSAGE_LIMIT + 1
        );
    }
}
