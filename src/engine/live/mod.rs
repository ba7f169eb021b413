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
mod tests;
