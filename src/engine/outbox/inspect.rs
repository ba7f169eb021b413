//! What DevTools and the inspector page show of a client's outbox: the
//! queue by priority (in run order, at most [`LIST_LIMIT`] listed each, the
//! counts always complete), the tasks in flight, the dead letters, status,
//! metrics and health, all read in one go so the picture is consistent.
//! The API layer adds who is speaking (name, instance, scope) and posts it.

use super::*;
use crate::engine::task::Priority;
use crate::engine::time::to_iso;
use serde::Serialize;

/// Tasks listed per priority (and dead letters) in an inspection.
pub const LIST_LIMIT: usize = 100;

/// A queued or in-flight task as the inspector lists it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    pub id: String,
    pub priority: &'static str,
    pub method: String,
    pub url: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<TaskError>,
    pub created_at: String,
}

impl TaskView {
    fn of(task: &Task) -> Self {
        Self {
            id: task.id.clone(),
            priority: task.priority.as_str(),
            method: task.request.method.clone(),
            url: task.request.url.clone(),
            attempts: task.attempts,
            ordering_key: task.ordering_key.clone(),
            next_attempt_at: task.next_attempt_at.map(to_iso),
            last_error: task.last_error().cloned(),
            created_at: to_iso(task.created_at),
        }
    }
}

/// A dead letter as the inspector lists it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailedView {
    pub id: String,
    pub priority: &'static str,
    pub method: String,
    pub url: String,
    pub attempts: u32,
    pub reason: String,
    pub failed_at: String,
    pub errors: Vec<TaskError>,
}

/// One value per priority.
#[derive(Serialize, Default, Clone, Debug, PartialEq)]
pub struct ByPriority<T> {
    pub high: T,
    pub normal: T,
    pub low: T,
}

impl<T> ByPriority<T> {
    fn get_mut(&mut self, priority: Priority) -> &mut T {
        match priority {
            Priority::High => &mut self.high,
            Priority::Normal => &mut self.normal,
            Priority::Low => &mut self.low,
        }
    }
}

/// The outbox as the inspector shows it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub status: Status,
    pub online: bool,
    pub circuit: &'static str,
    pub auth_required: bool,
    pub queued: ByPriority<Vec<TaskView>>,
    pub queued_counts: ByPriority<usize>,
    pub in_flight: Vec<TaskView>,
    pub failed: Vec<FailedView>,
    pub failed_count: usize,
    pub metrics: Metrics,
    pub health: Health,
}

impl<P: Ports> Outbox<P> {
    /// The inspector's picture of the outbox, given its dead letters
    /// (`failed`, read from the store by the caller, which may cache them:
    /// the count in `status` says when they changed).
    pub fn inspect(&self, failed: &[FailedTask]) -> Inspection {
        let status = self.status();
        let metrics = self.metrics();
        let health = self.health();
        let tasks = self.queued_tasks();
        let state = self.state.borrow();
        let mut queued: ByPriority<Vec<TaskView>> = ByPriority::default();
        let mut counts: ByPriority<usize> = ByPriority::default();
        let mut in_flight = Vec::new();
        for task in &tasks {
            if state.in_flight.contains(&task.id) {
                in_flight.push(TaskView::of(task));
                continue;
            }
            *counts.get_mut(task.priority) += 1;
            let list = queued.get_mut(task.priority);
            if list.len() < LIST_LIMIT {
                list.push(TaskView::of(task));
            }
        }
        let failed_views = failed
            .iter()
            .take(LIST_LIMIT)
            .map(|f| FailedView {
                id: f.id.clone(),
                priority: f.task.priority.as_str(),
                method: f.task.request.method.clone(),
                url: f.task.request.url.clone(),
                attempts: f.task.attempts,
                reason: f.reason.clone(),
                failed_at: to_iso(f.failed_at),
                errors: f.task.errors.clone(),
            })
            .collect();
        Inspection {
            online: status.online,
            circuit: status.circuit,
            auth_required: status.auth_required,
            failed_count: failed.len().max(status.failed_count as usize),
            status,
            queued,
            queued_counts: counts,
            in_flight,
            failed: failed_views,
            metrics,
            health,
        }
    }
}
