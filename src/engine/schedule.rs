//! Which task runs next. Order: priority (`high` first), then `seq`. Tasks
//! sharing an ordering key form a chain: only the oldest (lowest `seq`) of a
//! key may run, never two of one key at once, and a head waiting for its
//! retry holds back its own key and no other.
//!
//! The schedule keeps one entry per key (its head) in an ordered set, so
//! picking the next task costs `O(log n)` plus the heads it skips because
//! they wait for a retry, and a flush of `n` tasks costs `O(n log n)`.

use crate::engine::task::{Priority, Task};
use crate::engine::time::Millis;
use std::collections::{BTreeSet, HashMap, HashSet};

type HeadEntry = (Priority, u64, String);

#[derive(Default, Debug)]
pub struct Schedule {
    tasks: HashMap<String, Task>,
    chains: HashMap<String, BTreeSet<(u64, String)>>,
    heads: BTreeSet<HeadEntry>,
    head_of: HashMap<String, HeadEntry>,
    busy_keys: HashSet<String>,
    /// Task id → how many queued tasks depend on it (`dependsOn`).
    dependents: HashMap<String, usize>,
}

impl Schedule {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// Adds a task, or replaces the one with the same id.
    pub fn upsert(&mut self, task: Task) {
        self.remove(&task.id);
        let key = task.key().to_owned();
        self.chains
            .entry(key.clone())
            .or_default()
            .insert((task.seq, task.id.clone()));
        if let Some(dependency) = &task.depends_on {
            *self.dependents.entry(dependency.task.clone()).or_default() += 1;
        }
        self.tasks.insert(task.id.clone(), task);
        self.refresh_head(&key);
    }

    pub fn remove(&mut self, id: &str) -> Option<Task> {
        let task = self.tasks.remove(id)?;
        if let Some(dependency) = &task.depends_on {
            if let Some(count) = self.dependents.get_mut(&dependency.task) {
                *count -= 1;
                if *count == 0 {
                    self.dependents.remove(&dependency.task);
                }
            }
        }
        let key = task.key().to_owned();
        if let Some(chain) = self.chains.get_mut(&key) {
            chain.remove(&(task.seq, task.id.clone()));
            if chain.is_empty() {
                self.chains.remove(&key);
            }
        }
        self.refresh_head(&key);
        Some(task)
    }

    /// Takes the next task due at `now` and marks its key busy.
    pub fn take_next(&mut self, now: Millis) -> Option<Task> {
        self.take_next_where(now, |_| true)
    }

    /// Takes the next due task that satisfies `accept` (e.g. mutations to
    /// batch into one push) and marks its key busy.
    pub fn take_next_where(&mut self, now: Millis, accept: impl Fn(&Task) -> bool) -> Option<Task> {
        let entry = self
            .heads
            .iter()
            .find(|(_, _, id)| {
                self.tasks
                    .get(id)
                    .is_some_and(|t| t.is_due(now) && accept(t))
            })?
            .clone();
        let task = self.tasks.get(&entry.2)?.clone();
        let key = task.key().to_owned();
        self.busy_keys.insert(key.clone());
        self.refresh_head(&key);
        Some(task)
    }

    /// How many queued tasks depend on the task `id`.
    pub fn dependents_of(&self, id: &str) -> usize {
        self.dependents.get(id).copied().unwrap_or(0)
    }

    /// Whether a task of this key is running.
    pub fn is_busy(&self, key: &str) -> bool {
        self.busy_keys.contains(key)
    }

    /// The key's running task has finished (whatever became of it).
    pub fn release(&mut self, key: &str) {
        self.busy_keys.remove(key);
        self.refresh_head(key);
    }

    /// The earliest time a currently waiting head becomes due.
    pub fn next_due_at(&self) -> Option<Millis> {
        self.heads
            .iter()
            .filter_map(|(_, _, id)| self.tasks.get(id).map(|t| t.next_attempt_at.unwrap_or(0.0)))
            .reduce(f64::min)
    }

    /// Makes every waiting task due now (reconnection).
    pub fn make_all_due(&mut self) {
        for task in self.tasks.values_mut() {
            task.next_attempt_at = None;
        }
    }

    fn refresh_head(&mut self, key: &str) {
        if let Some(old) = self.head_of.remove(key) {
            self.heads.remove(&old);
        }
        if self.busy_keys.contains(key) {
            return;
        }
        let Some((seq, id)) = self.chains.get(key).and_then(|c| c.first()).cloned() else {
            return;
        };
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let entry = (task.priority, seq, id);
        self.heads.insert(entry.clone());
        self.head_of.insert(key.to_owned(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::task::{HttpRequest, TaskKind};

    pub(crate) fn task(id: &str, priority: Priority, seq: u64, key: Option<&str>) -> Task {
        Task {
            id: id.into(),
            kind: TaskKind::Request,
            priority,
            seq,
            ordering_key: key.map(Into::into),
            request: HttpRequest {
                url: "/x".into(),
                method: "POST".into(),
                headers: Default::default(),
                body: None,
            },
            revision: 0,
            idempotency_key: id.into(),
            retry_on_failure: true,
            attempts: 0,
            next_attempt_at: None,
            created_at: 0.0,
            errors: vec![],
            dispatched: false,
            expires_at: None,
            depends_on: None,
        }
    }

    fn drain(s: &mut Schedule) -> Vec<String> {
        let mut out = vec![];
        while let Some(t) = s.take_next(0.0) {
            out.push(t.id.clone());
            s.remove(&t.id);
            s.release(t.key());
        }
        out
    }

    #[test]
    fn priority_first_then_seq() {
        let mut s = Schedule::new();
        s.upsert(task("low1", Priority::Low, 1, None));
        s.upsert(task("norm2", Priority::Normal, 2, None));
        s.upsert(task("high3", Priority::High, 3, None));
        s.upsert(task("high4", Priority::High, 4, None));
        assert_eq!(drain(&mut s), ["high3", "high4", "norm2", "low1"]);
    }

    #[test]
    fn a_key_runs_in_seq_order_and_one_at_a_time() {
        let mut s = Schedule::new();
        s.upsert(task("a1", Priority::Low, 1, Some("k")));
        s.upsert(task("a2", Priority::High, 2, Some("k")));
        s.upsert(task("b", Priority::Normal, 3, None));
        let first = s.take_next(0.0).unwrap();
        assert_eq!(first.id, "b");
        let second = s.take_next(0.0).unwrap();
        assert_eq!(second.id, "a1");
        assert!(s.take_next(0.0).is_none(), "a2 waits for a1 of its key");
        s.remove("a1");
        s.release("k");
        assert_eq!(s.take_next(0.0).unwrap().id, "a2");
    }

    #[test]
    fn a_waiting_head_holds_back_only_its_own_key() {
        let mut s = Schedule::new();
        let mut waiting = task("a1", Priority::High, 1, Some("k"));
        waiting.next_attempt_at = Some(5000.0);
        s.upsert(waiting);
        s.upsert(task("a2", Priority::High, 2, Some("k")));
        s.upsert(task("other", Priority::Low, 3, Some("j")));
        assert_eq!(s.take_next(0.0).unwrap().id, "other");
        assert!(s.take_next(0.0).is_none());
        assert_eq!(s.next_due_at(), Some(5000.0));
        assert_eq!(s.take_next(5000.0).unwrap().id, "a1");
    }

    #[test]
    fn dependents_are_counted_as_tasks_come_and_go() {
        let mut s = Schedule::new();
        let dependent = |id: &str, on: &str| {
            let mut t = task(id, Priority::Normal, 2, Some(on));
            t.depends_on = Some(crate::engine::task::Dependency {
                task: on.into(),
                values: Default::default(),
            });
            t
        };
        s.upsert(task("create", Priority::Normal, 1, None));
        s.upsert(dependent("attach", "create"));
        s.upsert(dependent("tag", "create"));
        assert_eq!(s.dependents_of("create"), 2);
        s.upsert(dependent("tag", "create"));
        assert_eq!(
            s.dependents_of("create"),
            2,
            "replacing a task does not count it twice"
        );
        s.remove("attach");
        s.remove("tag");
        assert_eq!(s.dependents_of("create"), 0);
        assert_eq!(s.dependents_of("nobody"), 0);
    }

    #[test]
    fn replacing_a_task_keeps_its_place() {
        let mut s = Schedule::new();
        s.upsert(task("x", Priority::Normal, 1, None));
        s.upsert(task("y", Priority::Normal, 2, None));
        let mut again = task("x", Priority::Normal, 1, None);
        again.revision = 1;
        s.upsert(again);
        assert_eq!(s.len(), 2);
        assert_eq!(drain(&mut s), ["x", "y"]);
    }
}
