//! The circuit breaker: after `failureThreshold` consecutive retryable
//! failures it opens and lets nothing through for a cooldown; then it lets
//! exactly one probe through (half-open); the probe's success closes it, its
//! failure reopens it with the cooldown doubled (capped). Any HTTP answer
//! that is not a retryable failure counts as success: the server is there.

use crate::engine::options::BreakerOptions;
use crate::engine::time::Millis;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CircuitState {
    Closed,
    Open { until: Millis },
    HalfOpen { probe_in_flight: bool },
}

impl CircuitState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half-open",
        }
    }
}

/// A state change the caller reports as an event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transition {
    Opened { until: Millis, cooldown: Millis },
    Closed,
}

#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    options: BreakerOptions,
    state: CircuitState,
    consecutive_failures: u32,
    next_cooldown: Millis,
}

impl CircuitBreaker {
    pub fn new(options: BreakerOptions) -> Self {
        let next_cooldown = options.cooldown;
        Self {
            options,
            state: CircuitState::Closed,
            consecutive_failures: 0,
            next_cooldown,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// When an open circuit will let a probe through.
    pub fn open_until(&self) -> Option<Millis> {
        match self.state {
            CircuitState::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Asks to send one request now; `true` means go (and, when half-open,
    /// that this request is the probe).
    pub fn try_acquire(&mut self, now: Millis) -> bool {
        match self.state {
            CircuitState::Closed => true,
            CircuitState::Open { until } if now >= until => {
                self.state = CircuitState::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
            CircuitState::Open { .. } => false,
            CircuitState::HalfOpen {
                probe_in_flight: false,
            } => {
                self.state = CircuitState::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
            CircuitState::HalfOpen {
                probe_in_flight: true,
            } => false,
        }
    }

    /// Whether a request could go now, without taking the probe slot.
    pub fn would_allow(&self, now: Millis) -> bool {
        match self.state {
            CircuitState::Closed => true,
            CircuitState::Open { until } => now >= until,
            CircuitState::HalfOpen { probe_in_flight } => !probe_in_flight,
        }
    }

    pub fn on_success(&mut self) -> Option<Transition> {
        self.consecutive_failures = 0;
        self.next_cooldown = self.options.cooldown;
        match self.state {
            CircuitState::Closed => None,
            _ => {
                self.state = CircuitState::Closed;
                Some(Transition::Closed)
            }
        }
    }

    /// A retryable failure (network, timeout, 408/429/5xx).
    pub fn on_failure(&mut self, now: Millis) -> Option<Transition> {
        self.consecutive_failures += 1;
        let open = match self.state {
            CircuitState::Closed => self.consecutive_failures >= self.options.failure_threshold,
            CircuitState::HalfOpen { .. } => true,
            CircuitState::Open { .. } => false,
        };
        if !open {
            return None;
        }
        let cooldown = self.next_cooldown;
        self.next_cooldown = (cooldown * 2.0).min(self.options.max_cooldown);
        let until = now + cooldown;
        self.state = CircuitState::Open { until };
        Some(Transition::Opened { until, cooldown })
    }

    /// A request that was allowed but did not run (the probe was abandoned).
    pub fn release_probe(&mut self) {
        if let CircuitState::HalfOpen {
            probe_in_flight: true,
        } = self.state
        {
            self.state = CircuitState::HalfOpen {
                probe_in_flight: false,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerOptions {
            failure_threshold: 3,
            cooldown: 1000.0,
            max_cooldown: 3000.0,
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let mut b = breaker();
        assert_eq!(b.on_failure(0.0), None);
        assert_eq!(b.on_failure(0.0), None);
        assert_eq!(
            b.on_failure(10.0),
            Some(Transition::Opened {
                until: 1010.0,
                cooldown: 1000.0
            })
        );
        assert!(!b.try_acquire(500.0));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut b = breaker();
        b.on_failure(0.0);
        b.on_failure(0.0);
        b.on_success();
        assert_eq!(b.on_failure(0.0), None);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(0.0);
        }
        assert!(b.try_acquire(1000.0));
        assert!(!b.try_acquire(1000.0));
        assert_eq!(b.on_success(), Some(Transition::Closed));
        assert!(b.try_acquire(1000.0) && b.try_acquire(1000.0));
    }

    #[test]
    fn cooldown_doubles_on_each_reopening_up_to_the_cap() {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(0.0);
        }
        let mut cooldowns = vec![];
        let mut now = 0.0;
        for _ in 0..3 {
            now = b.open_until().unwrap();
            assert!(b.try_acquire(now));
            if let Some(Transition::Opened { cooldown, .. }) = b.on_failure(now) {
                cooldowns.push(cooldown);
            }
        }
        assert_eq!(cooldowns, vec![2000.0, 3000.0, 3000.0]);
        assert!(b.try_acquire(b.open_until().unwrap()));
        b.on_success();
        for _ in 0..3 {
            b.on_failure(now);
        }
        assert_eq!(
            b.open_until(),
            Some(now + 1000.0),
            "cooldown resets after closing"
        );
    }
}
