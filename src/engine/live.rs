//! The live connection's decisions: when to connect and reconnect (capped
//! exponential backoff with full jitter, so thousands of clients of a
//! restarted server do not return in one wave), when a connection is dead
//! (no heartbeat for too long), and when to pull (at once on a poke that is
//! ahead of what was pulled; coalesced, so a burst of pokes costs at most
//! one pull running and one queued; and as a safety net after a quiet
//! `pull_interval`, connected or not).
//!
//! A sans-I/O state machine: the API feeds it what happened (`on_*`, with
//! the time) and carries out the [`Command`]s it returns, then sleeps until
//! [`LiveLink::next_wake`]. It never touches the network, a timer or a
//! clock itself, so every policy here is tested natively in microseconds.

use crate::engine::backoff::retry_delay;
use crate::engine::options::RetryOptions;
use crate::engine::time::Millis;
use serde::Serialize;

/// How the live connection behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveOptions {
    /// Reconnection backoff (`max_retries` is unused: it never gives up).
    pub retry: RetryOptions,
    /// A pull after this long without one, connected or not; 0: never.
    pub pull_interval: Millis,
    /// A connection is dead after this many heartbeat periods of silence.
    pub heartbeat_grace: f64,
    /// Longest wait for a connection to open.
    pub connect_timeout: Millis,
    /// Wait before pulling again when another pull was running.
    pub busy_retry: Millis,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            retry: RetryOptions {
                max_retries: u32::MAX,
                base_delay: 1_000.0,
                max_delay: 30_000.0,
                backoff_multiplier: 2.0,
                jitter: true,
            },
            pull_interval: 60_000.0,
            heartbeat_grace: 2.5,
            connect_timeout: 20_000.0,
            busy_retry: 250.0,
        }
    }
}

/// Where the connection stands (`getLiveStatus().state`).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Not started, or stopped.
    Off,
    Connecting,
    Open,
    /// Lost or refused; waiting to reconnect (or to be online again).
    Closed,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Get a ticket and open the stream (closing any previous one first).
    /// `last_event_id`: the newest cursor sequence this client has pulled.
    Connect { last_event_id: Option<i64> },
    /// Close the stream.
    Disconnect,
    /// Pull now; report the outcome with [`LiveLink::on_pull_done`].
    Pull,
    /// The connection opened (`live:open`).
    Opened,
    /// The connection closed (`live:closed`), with why and when the next
    /// attempt is due (`None`: not before the client is online again).
    Closed {
        reason: String,
        retry_at: Option<Millis>,
    },
}

/// Why a connection failed, which decides how soon to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer, a dropped stream, a missed heartbeat, a 5xx.
    Network,
    /// The server refused the credentials: retrying fast cannot help; a new
    /// token ([`LiveLink::reconnect_now`]) can.
    Auth,
    /// The server said goodbye (shutting down): come back soon, spread out.
    Goodbye,
}

/// How a pull ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullOutcome {
    Done,
    Failed,
    /// Another pull (an app's `sync()`) was running.
    Busy,
}

#[derive(Debug)]
pub struct LiveLink {
    options: LiveOptions,
    state: LinkState,
    online: bool,
    /// Consecutive failed connections (0 once one opens).
    failures: u32,
    retry_at: Option<Millis>,
    connect_deadline: Option<Millis>,
    heartbeat: Option<Millis>,
    last_message_at: Millis,
    /// Highest cursor sequence the server announced.
    announced: Option<i64>,
    /// Highest sequence a completed pull is known to have reached.
    pulled_through: Option<i64>,
    pull_running: bool,
    pull_again: bool,
    /// What `announced` was when the running pull started.
    pull_target: Option<i64>,
    pull_retry_at: Option<Millis>,
    next_sweep_at: Option<Millis>,
}

/// The sequence number of a `c1.<n>` cursor.
pub fn cursor_seq(cursor: &str) -> Option<i64> {
    cursor.strip_prefix("c1.")?.parse().ok()
}

impl LiveLink {
    pub fn new(options: LiveOptions) -> Self {
        Self {
            options,
            state: LinkState::Off,
            online: true,
            failures: 0,
            retry_at: None,
            connect_deadline: None,
            heartbeat: None,
            last_message_at: 0.0,
            announced: None,
            pulled_through: None,
            pull_running: false,
            pull_again: false,
            pull_target: None,
            pull_retry_at: None,
            next_sweep_at: None,
        }
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    /// When the next reconnection attempt is due, while closed.
    pub fn retry_at(&self) -> Option<Millis> {
        self.retry_at
    }

    /// Connects (when online) and arms the safety-net pull.
    pub fn start(&mut self, now: Millis, online: bool) -> Vec<Command> {
        self.online = online;
        self.failures = 0;
        self.arm_sweep(now);
        if online {
            self.connect(now)
        } else {
            self.state = LinkState::Closed;
            vec![]
        }
    }

    /// Disconnects for good.
    pub fn stop(&mut self) -> Vec<Command> {
        let mut out = self.drop_connection("stopped", None);
        self.state = LinkState::Off;
        self.retry_at = None;
        self.next_sweep_at = None;
        self.pull_retry_at = None;
        if !out.contains(&Command::Disconnect) {
            out.insert(0, Command::Disconnect);
        }
        out
    }

    fn connect(&mut self, now: Millis) -> Vec<Command> {
        self.state = LinkState::Connecting;
        self.retry_at = None;
        self.connect_deadline = Some(now + self.options.connect_timeout);
        vec![Command::Connect {
            last_event_id: self.pulled_through,
        }]
    }

    /// The stream said `ready`; `heartbeat` is its period in ms.
    pub fn on_open(&mut self, now: Millis, heartbeat: Option<Millis>) -> Vec<Command> {
        if self.state != LinkState::Connecting {
            return vec![];
        }
        self.state = LinkState::Open;
        self.failures = 0;
        self.connect_deadline = None;
        self.heartbeat = heartbeat.filter(|h| *h > 0.0);
        self.last_message_at = now;
        vec![Command::Opened]
    }

    /// A heartbeat (or any message) arrived: the connection is alive.
    pub fn on_heartbeat(&mut self, now: Millis) {
        self.last_message_at = now;
    }

    /// The server's cursor moved to `cursor`: pull if it is ahead of what
    /// this client pulled (or cannot be compared).
    pub fn on_poke(&mut self, now: Millis, cursor: &str) -> Vec<Command> {
        self.last_message_at = now;
        let seq = cursor_seq(cursor);
        if let Some(seq) = seq {
            self.announced = Some(self.announced.map_or(seq, |a| a.max(seq)));
            if self.pulled_through.is_some_and(|p| p >= seq) {
                return vec![];
            }
        }
        self.request_pull(now)
    }

    /// A pull is wanted: start one, or queue one behind the running pull.
    pub fn request_pull(&mut self, now: Millis) -> Vec<Command> {
        if self.state == LinkState::Off {
            return vec![];
        }
        if self.pull_running {
            self.pull_again = true;
            return vec![];
        }
        self.pull_running = true;
        self.pull_retry_at = None;
        self.pull_target = self.announced;
        self.arm_sweep(now);
        vec![Command::Pull]
    }

    pub fn on_pull_done(&mut self, now: Millis, outcome: PullOutcome) -> Vec<Command> {
        self.pull_running = false;
        match outcome {
            PullOutcome::Done => {
                if let Some(target) = self.pull_target.take() {
                    self.pulled_through =
                        Some(self.pulled_through.map_or(target, |p| p.max(target)));
                }
                self.arm_sweep(now);
            }
            PullOutcome::Failed => {
                // The next poke, reconnection or sweep tries again.
                self.pull_target = None;
                self.pull_again = false;
                self.arm_sweep(now);
            }
            PullOutcome::Busy => {
                self.pull_target = None;
                self.pull_again = false;
                if self.state != LinkState::Off {
                    self.pull_retry_at = Some(now + self.options.busy_retry);
                }
            }
        }
        if self.pull_again && self.state != LinkState::Off {
            self.pull_again = false;
            return self.request_pull(now);
        }
        vec![]
    }

    /// The connection failed (or could not open).
    pub fn on_failure(&mut self, now: Millis, failure: Failure, random: f64) -> Vec<Command> {
        if matches!(self.state, LinkState::Off | LinkState::Closed) {
            return vec![];
        }
        self.failures = match failure {
            Failure::Goodbye => 1,
            Failure::Network => self.failures.saturating_add(1),
            // Straight to the longest wait: a refused token stays refused.
            Failure::Auth => u32::MAX,
        };
        let delay = retry_delay(&self.options.retry, self.failures, random);
        let retry_at = self.online.then_some(now + delay);
        let reason = match failure {
            Failure::Network => "connection lost",
            Failure::Auth => "credentials refused",
            Failure::Goodbye => "server said goodbye",
        };
        self.drop_connection(reason, retry_at)
    }

    fn drop_connection(&mut self, reason: &str, retry_at: Option<Millis>) -> Vec<Command> {
        let was = self.state;
        self.state = LinkState::Closed;
        self.retry_at = retry_at;
        self.connect_deadline = None;
        self.heartbeat = None;
        match was {
            LinkState::Open => vec![
                Command::Disconnect,
                Command::Closed {
                    reason: reason.to_owned(),
                    retry_at,
                },
            ],
            LinkState::Connecting => vec![Command::Disconnect],
            LinkState::Closed | LinkState::Off => vec![],
        }
    }

    /// Connectivity changed: offline drops the connection; online
    /// reconnects at once, with the backoff reset.
    pub fn set_online(&mut self, now: Millis, online: bool) -> Vec<Command> {
        self.online = online;
        match (online, self.state) {
            (_, LinkState::Off) => vec![],
            (false, _) => self.drop_connection("offline", None),
            (true, LinkState::Closed) => self.reconnect_now(now),
            (true, _) => vec![],
        }
    }

    /// Reconnects at once if closed (a new token, back online).
    pub fn reconnect_now(&mut self, now: Millis) -> Vec<Command> {
        if self.state != LinkState::Closed || !self.online {
            return vec![];
        }
        self.failures = 0;
        self.connect(now)
    }

    /// Time passed: reconnect when the backoff is over, give up on a
    /// connection that is silent or slow to open, pull when the safety
    /// net is due.
    pub fn on_tick(&mut self, now: Millis, random: f64) -> Vec<Command> {
        let mut out = Vec::new();
        match self.state {
            LinkState::Off => return out,
            LinkState::Closed => {
                if self.online && self.retry_at.is_some_and(|at| now >= at) {
                    out.extend(self.connect(now));
                }
            }
            LinkState::Connecting => {
                if self.connect_deadline.is_some_and(|at| now >= at) {
                    out.extend(self.on_failure(now, Failure::Network, random));
                }
            }
            LinkState::Open => {
                if let Some(deadline) = self.heartbeat_deadline() {
                    if now >= deadline {
                        out.extend(self.on_failure(now, Failure::Network, random));
                    }
                }
            }
        }
        let sweep_due = self.next_sweep_at.is_some_and(|at| now >= at);
        let retry_due = self.pull_retry_at.is_some_and(|at| now >= at);
        if sweep_due || retry_due {
            out.extend(self.request_pull(now));
        }
        out
    }

    fn heartbeat_deadline(&self) -> Option<Millis> {
        self.heartbeat
            .map(|h| self.last_message_at + h * self.options.heartbeat_grace)
    }

    fn arm_sweep(&mut self, now: Millis) {
        self.next_sweep_at =
            (self.options.pull_interval > 0.0).then_some(now + self.options.pull_interval);
    }

    /// When [`Self::on_tick`] has something to do next.
    pub fn next_wake(&self) -> Option<Millis> {
        if self.state == LinkState::Off {
            return None;
        }
        let state_deadline = match self.state {
            LinkState::Closed if self.online => self.retry_at,
            LinkState::Connecting => self.connect_deadline,
            LinkState::Open => self.heartbeat_deadline(),
            _ => None,
        };
        let sweep = if self.pull_running {
            None
        } else {
            self.next_sweep_at
        };
        [state_deadline, sweep, self.pull_retry_at]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LiveOptions {
        LiveOptions {
            retry: RetryOptions {
                jitter: false,
                ..LiveOptions::default().retry
            },
            ..LiveOptions::default()
        }
    }

    fn open_link(now: Millis) -> LiveLink {
        let mut link = LiveLink::new(options());
        assert_eq!(
            link.start(now, true),
            vec![Command::Connect {
                last_event_id: None
            }]
        );
        assert_eq!(link.on_open(now, Some(15_000.0)), vec![Command::Opened]);
        link
    }

    #[test]
    fn the_first_poke_pulls_and_a_poke_already_pulled_does_not() {
        let mut link = open_link(0.0);
        assert_eq!(link.on_poke(1.0, "c1.5"), vec![Command::Pull]);
        assert!(link.on_pull_done(2.0, PullOutcome::Done).is_empty());
        assert!(
            link.on_poke(3.0, "c1.5").is_empty(),
            "already pulled through 5"
        );
        assert!(link.on_poke(3.0, "c1.4").is_empty());
        assert_eq!(link.on_poke(4.0, "c1.6"), vec![Command::Pull]);
    }

    #[test]
    fn pokes_during_a_pull_coalesce_into_one_more_pull() {
        let mut link = open_link(0.0);
        assert_eq!(link.on_poke(1.0, "c1.1"), vec![Command::Pull]);
        for seq in 2..50 {
            assert!(link.on_poke(2.0, &format!("c1.{seq}")).is_empty());
        }
        assert_eq!(
            link.on_pull_done(3.0, PullOutcome::Done),
            vec![Command::Pull]
        );
        assert!(link.on_pull_done(4.0, PullOutcome::Done).is_empty());
        assert!(
            link.on_poke(5.0, "c1.49").is_empty(),
            "the second pull covered 49"
        );
    }

    #[test]
    fn an_unreadable_cursor_always_pulls() {
        let mut link = open_link(0.0);
        assert_eq!(link.on_poke(1.0, "t.123"), vec![Command::Pull]);
        link.on_pull_done(2.0, PullOutcome::Done);
        assert_eq!(link.on_poke(3.0, "t.123"), vec![Command::Pull]);
    }

    #[test]
    fn reconnection_backs_off_exponentially_and_resets_once_open() {
        let mut link = open_link(0.0);
        let closed = link.on_failure(10.0, Failure::Network, 0.5);
        assert_eq!(
            closed,
            vec![
                Command::Disconnect,
                Command::Closed {
                    reason: "connection lost".into(),
                    retry_at: Some(1_010.0)
                }
            ]
        );
        assert!(link.on_tick(1_009.0, 0.5).is_empty());
        assert_eq!(link.next_wake(), Some(1_010.0));
        assert!(matches!(
            link.on_tick(1_010.0, 0.5)[..],
            [Command::Connect { .. }]
        ));
        // Fails again before opening: twice the delay, no second `Closed`.
        assert_eq!(
            link.on_failure(1_020.0, Failure::Network, 0.5),
            vec![Command::Disconnect]
        );
        assert_eq!(link.retry_at(), Some(3_020.0));
        link.on_tick(3_020.0, 0.5);
        link.on_failure(3_030.0, Failure::Network, 0.5);
        assert_eq!(link.retry_at(), Some(7_030.0));
        link.on_tick(7_030.0, 0.5);
        assert_eq!(link.on_open(7_040.0, None), vec![Command::Opened]);
        link.on_failure(8_000.0, Failure::Network, 0.5);
        assert_eq!(link.retry_at(), Some(9_000.0), "backoff reset by the open");
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut link = LiveLink::new(LiveOptions::default());
        link.start(0.0, true);
        let mut now = 0.0;
        for _ in 0..20 {
            link.on_failure(now, Failure::Network, 0.999);
            let wait = link.retry_at().unwrap() - now;
            assert!(wait <= 30_000.0, "capped: {wait}");
            now += wait;
            link.on_tick(now, 0.0);
        }
        link.on_failure(now, Failure::Network, 0.25);
        assert_eq!(link.retry_at(), Some(now + 7_500.0), "a quarter of the cap");
    }

    #[test]
    fn a_refused_token_waits_the_longest_and_a_new_token_reconnects_at_once() {
        let mut link = LiveLink::new(options());
        link.start(0.0, true);
        assert_eq!(
            link.on_failure(5.0, Failure::Auth, 0.5),
            vec![Command::Disconnect]
        );
        assert_eq!(link.retry_at(), Some(30_005.0));
        assert!(matches!(
            link.reconnect_now(6.0)[..],
            [Command::Connect { .. }]
        ));
    }

    #[test]
    fn a_goodbye_comes_back_after_the_first_step_of_the_backoff() {
        let mut link = open_link(0.0);
        for _ in 0..3 {
            link.on_failure(0.0, Failure::Network, 0.5);
            link.on_tick(link.retry_at().unwrap(), 0.5);
        }
        link.on_open(20_000.0, None);
        link.on_failure(20_000.0, Failure::Goodbye, 0.3);
        assert_eq!(
            link.retry_at(),
            Some(21_000.0),
            "the base delay, not the fourth step"
        );
    }

    #[test]
    fn a_silent_connection_is_dead_after_the_heartbeat_grace() {
        let mut link = open_link(0.0);
        assert_eq!(link.next_wake(), Some(37_500.0));
        link.on_heartbeat(15_000.0);
        assert!(link.on_tick(37_500.0, 0.5).is_empty());
        let out = link.on_tick(52_500.0, 0.5);
        assert_eq!(out[0], Command::Disconnect);
        assert!(matches!(out[1], Command::Closed { .. }));
        assert_eq!(link.state(), LinkState::Closed);
    }

    #[test]
    fn a_connection_slow_to_open_is_given_up() {
        let mut link = LiveLink::new(options());
        link.start(0.0, true);
        assert_eq!(link.on_tick(20_000.0, 0.5), vec![Command::Disconnect]);
        assert_eq!(link.state(), LinkState::Closed);
    }

    #[test]
    fn offline_drops_the_connection_and_online_reconnects_at_once() {
        let mut link = open_link(0.0);
        assert_eq!(
            link.set_online(5.0, false),
            vec![
                Command::Disconnect,
                Command::Closed {
                    reason: "offline".into(),
                    retry_at: None
                }
            ]
        );
        assert!(link.on_tick(1e9, 0.5).iter().all(|c| *c == Command::Pull));
        assert!(matches!(
            link.set_online(6.0, true)[..],
            [Command::Connect { .. }]
        ));
    }

    #[test]
    fn a_reconnection_says_which_cursor_was_pulled() {
        let mut link = open_link(0.0);
        link.on_poke(1.0, "c1.7");
        link.on_pull_done(2.0, PullOutcome::Done);
        link.on_failure(3.0, Failure::Network, 0.5);
        assert_eq!(
            link.on_tick(1_003.0, 0.5),
            vec![Command::Connect {
                last_event_id: Some(7)
            }]
        );
    }

    #[test]
    fn a_failed_pull_is_retried_by_the_next_poke_even_for_the_same_cursor() {
        let mut link = open_link(0.0);
        link.on_poke(1.0, "c1.3");
        link.on_pull_done(2.0, PullOutcome::Failed);
        assert_eq!(link.on_poke(3.0, "c1.3"), vec![Command::Pull]);
    }

    #[test]
    fn a_busy_pull_is_retried_shortly() {
        let mut link = open_link(0.0);
        link.on_poke(1.0, "c1.3");
        assert!(link.on_pull_done(2.0, PullOutcome::Busy).is_empty());
        assert_eq!(link.next_wake(), Some(252.0));
        assert_eq!(link.on_tick(252.0, 0.5), vec![Command::Pull]);
    }

    #[test]
    fn the_safety_net_pulls_after_a_quiet_interval_connected_or_not() {
        let mut link = open_link(0.0);
        link.on_heartbeat(50_000.0);
        assert_eq!(link.on_tick(60_000.0, 0.5), vec![Command::Pull]);
        link.on_pull_done(60_100.0, PullOutcome::Done);
        link.set_online(60_200.0, false);
        assert_eq!(link.next_wake(), Some(120_100.0));
        assert_eq!(link.on_tick(120_100.0, 0.5), vec![Command::Pull]);
    }

    #[test]
    fn stop_disconnects_and_nothing_follows() {
        let mut link = open_link(0.0);
        let out = link.stop();
        assert_eq!(out[0], Command::Disconnect);
        assert!(matches!(out[1], Command::Closed { .. }));
        assert_eq!(link.state(), LinkState::Off);
        assert!(link.on_poke(1.0, "c1.9").is_empty());
        assert!(link.on_tick(1e12, 0.5).is_empty());
        assert_eq!(link.next_wake(), None);
    }
}
