#![cfg(not(target_arch = "wasm32"))]
//! The client core's `sync()`, `pull()` and wake times (engine/sync.rs):
//! push, stop on refused credentials, pull, push again what conflict
//! resolution queued; one sync at a time; pulls taking turns.
//!
//! A device of the replication bench (`support::replication`) as the host;
//! its phases and events are recorded.

mod support;

use support::replication::*;
use tidesync::engine::outbox::Outbox;
use tidesync::engine::ports::{EventSink, StoreError};
use tidesync::engine::sync::{wake_delay, SyncError, SyncHost, SyncReport, Syncs};
use tidesync_protocol::{PULL_PATH, PUSH_PATH};

/// The bench's device as a sync host: its flush is the outbox's, and the
/// phases it is told about are kept in order.
struct Host<'a> {
    b: &'a Bench,
    phases: RefCell<Vec<String>>,
}

impl<'a> Host<'a> {
    fn of(b: &'a Bench) -> Self {
        Self {
            b,
            phases: RefCell::new(Vec::new()),
        }
    }
}

impl SyncHost for Host<'_> {
    type Ports = DevicePorts;
    type Replica = MemoryReplica;

    fn outbox(&self) -> &Outbox<DevicePorts> {
        &self.b.outbox
    }

    fn replicator(&self) -> &Replicator<MemoryReplica> {
        &self.b.replicator
    }

    async fn flush(&self) -> Result<FlushReport, StoreError> {
        self.b.outbox.flush().await
    }

    fn emit(&self, event: Event) {
        self.b.events.emit(event);
    }

    fn phase_started(&self) -> f64 {
        0.0
    }

    fn phase_done(&self, name: &str, _started: f64, detail: &Value) {
        self.phases.borrow_mut().push(format!("{name} {detail}"));
    }
}

fn progress(b: &Bench) -> Vec<(&'static str, usize, usize)> {
    b.events
        .events
        .borrow()
        .iter()
        .filter_map(|e| match e {
            // The flush's own progress (phase "flush") is the outbox's.
            Event::Progress { phase, done, total } if *phase != "flush" => {
                Some((*phase, *done, *total))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_sync_pushes_then_pulls_and_reports_both() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "mine", json!({"n": 0}));
    seed_server(&b, 2);
    let host = Host::of(&b);

    let report = block_on(Syncs::default().sync(&host)).unwrap();

    assert_eq!(
        report,
        SyncReport {
            pushed: 1,
            pulled: 3,
            pages: 1,
            conflicts: 0,
            remaining: 0,
        }
    );
    let order: Vec<String> = b.transport.sent_urls();
    assert!(order[0].ends_with(PUSH_PATH) && order[1].ends_with(PULL_PATH));
    assert_eq!(
        *host.phases.borrow(),
        [
            r#"tidesync:push {"failed":0,"mutations":1}"#,
            r#"tidesync:pull {"conflicts":0,"pages":1,"pulled":3}"#,
        ]
    );
    let seen = progress(&b);
    assert_eq!(seen[..2], [("push", 0, 1), ("push", 1, 1)]);
    assert_eq!(seen[2..], [("pull", 3, 3)]);
    assert_eq!(b.query("task"), ["mine", "t1", "t2"]);
}

#[test]
fn refused_credentials_stop_a_sync_before_it_pulls() {
    let b = bench(Strategy::ServerWins);
    b.put("task", "mine", json!({"n": 0}));
    b.transport.respond_with(|_, _| Ok(HttpResponse::new(401)));
    let host = Host::of(&b);

    let error = block_on(Syncs::default().sync(&host)).unwrap_err();

    assert_eq!(error, SyncError::AuthRequired);
    assert!(b.pulls().is_empty());
    assert!(b.outbox.status().auth_required);
}

#[test]
fn a_refused_pull_without_a_fresh_token_fails_with_the_status() {
    let b = bench(Strategy::ServerWins);
    b.transport.respond_with(|_, _| Ok(HttpResponse::new(403)));
    let host = Host::of(&b);

    let error = block_on(Syncs::default().pull(&host, |_| {})).unwrap_err();

    assert_eq!(error, ReplicationError::Auth(403));
    assert!(
        host.phases.borrow().is_empty(),
        "no measure of a failed pull"
    );
}

#[test]
fn a_sync_during_a_sync_waits_for_it_then_runs() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 1);
    b.transport.hold_answers_to(PULL_PATH);
    let host = Host::of(&b);
    let syncs = Syncs::default();

    let (first, second) = block_on(join(syncs.sync(&host), async {
        // The first sync is waiting for its pull's answer: the second
        // must not start its push (nor a pull, which would be `busy`).
        while b.transport.held_count() == 0 {
            YieldOnce::new().await;
        }
        let written = b
            .replicator
            .put("task", Some("mine".into()), object(json!({"n": 0})));
        b.outbox.adopt(written.await.unwrap().1);
        let during = syncs.sync(&host);
        let sent_before = b.transport.sent_urls().len();
        let (result, ()) = join(during, async {
            for _ in 0..20 {
                YieldOnce::new().await;
            }
            assert_eq!(
                b.transport.sent_urls().len(),
                sent_before,
                "the second sync's push waits for the first sync"
            );
            b.transport.release_held();
        })
        .await;
        result
    }));

    assert_eq!(first.unwrap().pulled, 1);
    let second = second.unwrap();
    assert_eq!(
        (second.pushed, second.pulled),
        (1, 1),
        "its own record back"
    );
    assert_eq!(b.pulls().len(), 2);
}

#[test]
fn pulls_take_turns_instead_of_failing_busy() {
    let b = bench(Strategy::ServerWins);
    seed_server(&b, 1);
    b.transport.hold_answers_to(PULL_PATH);
    let host = Host::of(&b);
    let syncs = Syncs::default();

    let (first, second) = block_on(join(syncs.pull(&host, |_| {}), async {
        while b.transport.held_count() == 0 {
            YieldOnce::new().await;
        }
        let (second, ()) = join(syncs.pull(&host, |_| {}), async {
            b.transport.release_held();
        })
        .await;
        second
    }));

    assert_eq!(first.unwrap().0.pulled, 1);
    assert_eq!(second.unwrap().0.pulled, 0);
}

#[test]
fn the_wake_up_waits_until_the_due_time_within_what_a_timer_can_wait() {
    assert_eq!(wake_delay(T0 + 1_000.0, T0), 1_000.0);
    assert_eq!(
        wake_delay(T0 - 5_000.0, T0),
        20.0,
        "overdue: almost at once"
    );
    assert_eq!(wake_delay(T0 + 1e12, T0), 2_147_000_000.0);
}
