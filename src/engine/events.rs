//! What the engine tells the application: events, and the snapshots behind
//! `getStatus()`, `getTaskStatus()`, `getMetrics()` and `getHealth()`.
//! Serialized with the JavaScript field names.

use crate::engine::task::{FailedTask, HttpResponse, Task, TaskError};
use crate::engine::time::{iso, Millis};
use serde::Serialize;

/// Everything the engine reports, by JavaScript event name.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `sync:complete` (task, response)
    Complete {
        task: Task,
        response: HttpResponse,
    },
    /// `sync:failed` (task, error): moved to the dead letters.
    Failed {
        failed: FailedTask,
        error: TaskError,
    },
    /// `sync:retry` (task, {error, delay, attempt, nextAttemptAt})
    Retry {
        task: Task,
        error: TaskError,
        delay: Millis,
    },
    /// `sync:progress` ({phase, done, total})
    Progress {
        phase: &'static str,
        done: usize,
        total: usize,
    },
    /// `status` (status snapshot)
    Status(Status),
    /// `online` / `offline`
    Online,
    Offline,
    /// `circuit:open` ({until, cooldown}) / `circuit:close`
    CircuitOpen {
        until: Millis,
        cooldown: Millis,
    },
    CircuitClose,
    /// `auth:required` ({status, taskId})
    AuthRequired {
        status: Option<u16>,
        task_id: String,
    },
    /// `sync:conflict` ({entityType, id, local, remote, resolved, outcome})
    Conflict(ConflictEvent),
    /// `storage:evicted` (eviction): the database vanished.
    StorageEvicted(crate::engine::storage::Eviction),
    /// `pull:complete` ({pulled, pages, conflicts})
    PullComplete {
        pulled: usize,
        pages: usize,
        conflicts: usize,
    },
}

/// A conflict and how it ended: `outcome` is `server`, `client`, `merged`,
/// `callback`, or `unresolved` (the callback failed; the record waits in
/// `syncStatus: "conflict"` with both sides kept).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConflictEvent {
    pub entity_type: String,
    pub id: String,
    pub local: serde_json::Value,
    pub remote: serde_json::Value,
    pub resolved: serde_json::Value,
    pub outcome: String,
}

impl Event {
    /// The JavaScript event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Complete { .. } => "sync:complete",
            Event::Failed { .. } => "sync:failed",
            Event::Retry { .. } => "sync:retry",
            Event::Progress { .. } => "sync:progress",
            Event::Status(_) => "status",
            Event::Online => "online",
            Event::Offline => "offline",
            Event::CircuitOpen { .. } => "circuit:open",
            Event::CircuitClose => "circuit:close",
            Event::AuthRequired { .. } => "auth:required",
            Event::Conflict(_) => "sync:conflict",
            Event::PullComplete { .. } => "pull:complete",
            Event::StorageEvicted(_) => "storage:evicted",
        }
    }
}

/// `getStatus()`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub pending_count: usize,
    pub failed_count: u32,
    pub in_flight_count: usize,
    pub online: bool,
    pub circuit: &'static str,
    pub auth_required: bool,
    #[serde(with = "iso::option")]
    pub last_sync_at: Option<Millis>,
    pub last_sync_ok: Option<bool>,
    pub total_synced: u64,
    pub is_sync_in_progress: bool,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    Pending,
    InFlight,
    Complete,
    Failed,
}

/// `getTaskStatus(id)`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub id: String,
    pub state: TaskState,
    pub attempts: u32,
    #[serde(with = "iso::option")]
    pub next_attempt_at: Option<Millis>,
    pub last_error: Option<TaskError>,
}

/// `getMetrics()`: counters since the client opened, and durations.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub registered: u64,
    pub register_transactions: u64,
    pub completed: u64,
    /// Store transactions that removed answered tasks (group commits).
    pub ack_transactions: u64,
    pub failed: u64,
    pub retried: u64,
    pub flushes: u64,
    pub requests_sent: u64,
    pub network_errors: u64,
    pub last_flush_duration_ms: f64,
    pub average_request_ms: f64,
    pub total_request_ms: f64,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Critical,
}

/// `getHealth()`: a verdict, what is wrong, and what to do about it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: HealthStatus,
    pub issues: Vec<String>,
    pub recommendations: Vec<String>,
    /// The origin's storage (`null` until measured, or where the browser
    /// cannot tell).
    pub storage: Option<crate::engine::storage::StorageUsage>,
}
