//! Engine configuration, already validated (the API validates JS options and
//! builds these). Defaults follow seed 000 and ARCHITECTURE.md.

use crate::engine::time::Millis;

/// Exponential backoff with optional full jitter.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryOptions {
    /// Retries after the first attempt before a task becomes a dead letter.
    pub max_retries: u32,
    pub base_delay: Millis,
    pub max_delay: Millis,
    pub backoff_multiplier: f64,
    pub jitter: bool,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: 1000.0,
            max_delay: 60_000.0,
            backoff_multiplier: 2.0,
            jitter: true,
        }
    }
}

/// When the breaker opens and for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerOptions {
    /// Consecutive retryable failures that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open the first time; doubles on each
    /// reopening, up to `max_cooldown`.
    pub cooldown: Millis,
    pub max_cooldown: Millis,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: 60_000.0,
            max_cooldown: 960_000.0,
        }
    }
}

/// Everything the outbox engine needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxOptions {
    pub retry: RetryOptions,
    pub circuit_breaker: BreakerOptions,
    /// Requests in flight at once, across different ordering keys.
    pub concurrency: usize,
    /// Per-request timeout; the fetch is aborted after it.
    pub request_timeout: u32,
    /// Base URL of the push/pull server: requests under it (and relative
    /// URLs) carry the bearer token.
    pub server_url: Option<String>,
    /// Longest a `close()` waits for the flush in progress.
    pub close_timeout: Millis,
    /// How long a plain request may wait undelivered before it becomes a
    /// dead letter (`expired`), unless it has its own.
    pub max_retention_time: Millis,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            retry: RetryOptions::default(),
            circuit_breaker: BreakerOptions::default(),
            concurrency: 6,
            request_timeout: 30_000,
            server_url: None,
            close_timeout: 10_000.0,
            max_retention_time: crate::engine::retention::DEFAULT_MAX_RETENTION,
        }
    }
}
