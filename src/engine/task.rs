//! The persisted shape of outbox work: tasks, their requests, their errors,
//! and dead letters. These structs are what IndexedDB stores (camelCase
//! fields, ISO dates, JSON bodies as plain objects) so a person can read them
//! in DevTools; change them only together with a schema migration.

use crate::engine::time::{iso, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Schema version of the persisted task shape.
pub const TASK_SCHEMA_VERSION: u32 = 1;

/// Scheduling priority; `High` sorts first.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Parses the JavaScript spelling (`"high" | "normal" | "low"`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "high" => Some(Self::High),
            "normal" => Some(Self::Normal),
            "low" => Some(Self::Low),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// Why a request header is refused, if it is: fetch throws at send time on
/// a name that is not an HTTP token or a value holding CR, LF or NUL, so
/// such a task would be accepted now and fail on every attempt.
pub fn header_error(name: &str, value: &str) -> Option<String> {
    const TOKEN: &[u8] = b"!#$%&'*+-.^_`|~";
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TOKEN.contains(&b))
    {
        return Some(
            "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)".into(),
        );
    }
    if value.contains(['\r', '\n', '\0']) {
        return Some("holds a line break or NUL, which no HTTP header may carry".into());
    }
    None
}

/// What a task does when it runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// A plain HTTP request, replayed as registered (seed 001's tasks).
    Request,
    /// A change to a replicated record; its request body is the protocol
    /// mutation, and due mutations are sent together in one push.
    Mutation,
}

/// A request body as stored: JSON stays a plain object so DevTools shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Body {
    Json(serde_json::Value),
    Text(String),
    /// Binary bodies (files, `FormData` encoded as multipart, …), stored as
    /// a `Uint8Array` in IndexedDB, byte for byte.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// An HTTP request to replay.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest {
    pub url: String,
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Body>,
}

impl HttpRequest {
    /// About how many bytes the body takes on the wire, without building
    /// it (to keep pushes under the server's body limit).
    pub fn estimated_body_size(&self) -> usize {
        match &self.body {
            None => 0,
            Some(Body::Text(text)) => text.len(),
            Some(Body::Bytes(bytes)) => bytes.len(),
            Some(Body::Json(value)) => json_size(value),
        }
    }
}

/// The length of a JSON value's compact text, escapes aside.
fn json_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 12,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        Value::Object(fields) => {
            2 + fields
                .iter()
                .map(|(k, v)| k.len() + 4 + json_size(v))
                .sum::<usize>()
        }
    }
}

/// The parts of a response an application needs from a replayed request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpResponse {
    pub status: u16,
    /// Lower-cased names; only the headers that matter to callers and to the
    /// engine (`content-type`, `location`, `etag`, `retry-after`).
    pub headers: BTreeMap<String, String>,
    pub body: ResponseBody,
}

impl HttpResponse {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: BTreeMap::new(),
            body: ResponseBody::Empty,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// How much of the answer to a plain request is kept for the app
/// (`sync:complete`): a larger body is cut while it streams in and kept as
/// text, so a huge answer cannot bloat events or memory. Protocol answers
/// (pushes, pulls) are read whole.
pub const APP_RESPONSE_BODY_LIMIT: usize = 64 * 1024;

/// A response body: parsed when JSON, text otherwise (a plain request's
/// answer capped at [`APP_RESPONSE_BODY_LIMIT`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum ResponseBody {
    Empty,
    Json(serde_json::Value),
    Text(String),
}

/// Why an attempt failed, in the terms the retry rules use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// No HTTP answer at all (offline, DNS, refused, CORS-masked).
    Network,
    /// No answer within the per-request timeout; the fetch was aborted.
    Timeout,
    /// 408, 429 or 5xx: the server may accept it later.
    Retryable,
    /// 400, 404, 422 and other 4xx: sending it again cannot help.
    Validation,
    /// 401 or 403: the credentials must change first.
    Permission,
    /// 409: the server holds a newer version.
    Conflict,
    /// The server answered 2xx but the answer could not be read: the work
    /// may have been applied. It is replayed (mutation ids and
    /// `Idempotency-Key`s make that harmless) without spending the retry
    /// budget, since giving up could dead-letter what the server holds.
    Unconfirmed,
    /// Not delivered within its retention time (`maxRetentionTime`): given
    /// up without being sent again.
    Expired,
    /// The task it depends on failed, or its answer lacks a value this task
    /// needs: it cannot be filled in, so it is not sent.
    Dependency,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Timeout => "timeout",
            Self::Retryable => "retryable",
            Self::Validation => "validation",
            Self::Permission => "permission",
            Self::Conflict => "conflict",
            Self::Unconfirmed => "unconfirmed",
            Self::Expired => "expired",
            Self::Dependency => "dependency",
        }
    }
}

/// One failed attempt, as recorded on the task and in dead letters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskError {
    pub class: ErrorClass,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(with = "iso")]
    pub at: Millis,
}

/// A task that waits for an earlier one and is filled in from its answer:
/// `{{name}}` in the URL, in header values and in JSON body strings becomes
/// the value found at `values[name]` in that answer (see
/// [`crate::engine::dependency`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Dependency {
    /// The id of the task whose answer this one needs.
    pub task: String,
    /// Placeholder name → where in the answer: `body.id`, `body.items.0.id`,
    /// `headers.location`, `status`.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
}

/// What the application asks to queue; the engine completes it into a [`Task`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    pub id: String,
    pub priority: Priority,
    pub ordering_key: Option<String>,
    pub request: HttpRequest,
    pub retry_on_failure: bool,
    /// How long it may wait undelivered; `None`: the client's default.
    pub max_retention_time: Option<Millis>,
    pub depends_on: Option<Dependency>,
}

/// A unit of queued work, exactly as stored in the `tasks` object store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub kind: TaskKind,
    pub priority: Priority,
    /// Position in the queue: a persisted counter, never a wall clock.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    pub request: HttpRequest,
    /// Which registration of this id this is: a value of the persisted
    /// counter that also gives out `seq`s, so it never repeats for an id
    /// (not even after the task was deleted and registered again). A
    /// completion removes only the exact revision it sent.
    pub revision: u64,
    /// Sent as `Idempotency-Key`, the same on every attempt of this payload.
    pub idempotency_key: String,
    pub retry_on_failure: bool,
    pub attempts: u32,
    #[serde(default, with = "iso::option", skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Millis>,
    #[serde(with = "iso")]
    pub created_at: Millis,
    #[serde(default)]
    pub errors: Vec<TaskError>,
    /// A mutation whose push began: it may have reached the server, so its
    /// body is frozen (it is replayed exactly, and a newer write of the
    /// record queues behind it instead of replacing it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dispatched: bool,
    /// When it stops being retried and becomes a dead letter (`expired`),
    /// if it was not delivered by then. Plain requests only.
    #[serde(default, with = "iso::option", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    /// The earlier task whose answer fills this one in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Dependency>,
}

impl Task {
    /// Tasks that share this key run one after another.
    pub fn key(&self) -> &str {
        self.ordering_key.as_deref().unwrap_or(&self.id)
    }

    pub fn last_error(&self) -> Option<&TaskError> {
        self.errors.last()
    }

    pub fn is_due(&self, now: Millis) -> bool {
        self.next_attempt_at.is_none_or(|at| at <= now)
    }
}

/// A task that will not be retried, with every error it met.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailedTask {
    pub id: String,
    pub task: Task,
    pub reason: String,
    #[serde(with = "iso")]
    pub failed_at: Millis,
}
