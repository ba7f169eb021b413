//! What an attempt's outcome means: complete, retry (and when), dead letter,
//! or pause for credentials. The only place status codes are interpreted.

use crate::engine::backoff::parse_retry_after;
use crate::engine::ports::TransportError;
use crate::engine::task::{ErrorClass, HttpResponse, TaskError};
use crate::engine::time::Millis;

/// The engine's reading of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 2xx/3xx: the server took it.
    Delivered(HttpResponse),
    /// Worth sending again; `retry_after` when the server said when.
    Retry {
        error: TaskError,
        retry_after: Option<Millis>,
    },
    /// Sending it again cannot help.
    Reject { error: TaskError },
    /// 401/403: pause until the app supplies new credentials.
    NeedsAuth { error: TaskError },
}

impl Outcome {
    /// Whether the attempt proves the server is reachable.
    pub fn reached_server(&self) -> bool {
        match self {
            Outcome::Retry { error, .. } => {
                !matches!(error.class, ErrorClass::Network | ErrorClass::Timeout)
            }
            _ => true,
        }
    }
}

/// Classifies a transport result at time `now`.
pub fn classify(result: Result<HttpResponse, TransportError>, now: Millis) -> Outcome {
    let response = match result {
        Ok(response) => response,
        Err(TransportError::Network(message)) => {
            return Outcome::Retry {
                error: error(ErrorClass::Network, message, None, now),
                retry_after: None,
            }
        }
        Err(TransportError::Timeout(ms)) => {
            let message = format!("no response within {ms} ms; the request was aborted");
            return Outcome::Retry {
                error: error(ErrorClass::Timeout, message, None, now),
                retry_after: None,
            };
        }
    };
    let status = response.status;
    let message = |what: &str| format!("HTTP {status} ({what})");
    match status {
        200..=399 => Outcome::Delivered(response),
        408 | 425 | 429 | 500..=599 => {
            let retry_after = response
                .header("retry-after")
                .and_then(|v| parse_retry_after(v, now));
            Outcome::Retry {
                error: error(
                    ErrorClass::Retryable,
                    message("retryable"),
                    Some(status),
                    now,
                ),
                retry_after,
            }
        }
        401 | 403 => Outcome::NeedsAuth {
            error: error(
                ErrorClass::Permission,
                message("credentials refused"),
                Some(status),
                now,
            ),
        },
        409 => Outcome::Reject {
            error: error(ErrorClass::Conflict, message("conflict"), Some(status), now),
        },
        _ => Outcome::Reject {
            error: error(
                ErrorClass::Validation,
                message("rejected by the server"),
                Some(status),
                now,
            ),
        },
    }
}

fn error(class: ErrorClass, message: String, status: Option<u16>, at: Millis) -> TaskError {
    TaskError {
        class,
        message,
        status,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Outcome {
        classify(Ok(HttpResponse::new(code)), 0.0)
    }

    #[test]
    fn each_status_falls_in_its_class() {
        assert!(matches!(status(201), Outcome::Delivered(_)));
        for code in [408, 429, 500, 502, 503] {
            assert!(matches!(status(code), Outcome::Retry { .. }), "{code}");
        }
        for code in [400, 404, 422] {
            assert!(
                matches!(status(code), Outcome::Reject { ref error } if error.class == ErrorClass::Validation)
            );
        }
        assert!(
            matches!(status(409), Outcome::Reject { ref error } if error.class == ErrorClass::Conflict)
        );
        assert!(matches!(status(401), Outcome::NeedsAuth { .. }));
        assert!(matches!(status(403), Outcome::NeedsAuth { .. }));
    }

    #[test]
    fn transport_failures_are_retried_and_do_not_prove_reachability() {
        let o = classify(Err(TransportError::Network("refused".into())), 0.0);
        assert!(
            matches!(o, Outcome::Retry { ref error, .. } if error.class == ErrorClass::Network)
        );
        assert!(!o.reached_server());
        let o = classify(Err(TransportError::Timeout(30_000)), 0.0);
        assert!(
            matches!(o, Outcome::Retry { ref error, .. } if error.class == ErrorClass::Timeout)
        );
        assert!(status(503).reached_server());
    }

    #[test]
    fn retry_after_is_read_from_the_response() {
        let mut r = HttpResponse::new(429);
        r.headers.insert("retry-after".into(), "7".into());
        assert!(matches!(
            classify(Ok(r), 0.0),
            Outcome::Retry {
                retry_after: Some(7000.0),
                ..
            }
        ));
    }
}
