//! A circuit breaker per backend: after `threshold` consecutive health failures it opens and
//! the router skips the backend (no added latency) for `cooldown`; then one probe request is let
//! through (half-open). The probe's success closes the breaker, its failure opens it again.
//!
//! Pure state with the clock passed in, so it is tested without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's state, as exported in metrics (0 closed, 1 open, 2 half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests skip the backend.
    Open,
    /// One probe request is in flight; others skip.
    HalfOpen,
}

impl BreakerState {
    /// The gauge value.
    pub fn code(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// What [`Breaker::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (the breaker is closed).
    Allowed,
    /// Go ahead as the half-open probe: report the outcome, or [`Breaker::release_probe`].
    Probe,
    /// Skip this backend.
    Skip,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// One backend's breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a plain enum: a panic elsewhere cannot leave it half-written.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state (an open breaker past its cool-down still reads open until a request
    /// turns it half-open).
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may use the backend now.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => Admission::Allowed,
            Inner::Open { until } if now >= until => {
                *inner = Inner::HalfOpen;
                Admission::Probe
            }
            Inner::Open { .. } | Inner::HalfOpen => Admission::Skip,
        }
    }

    /// Whether the backend would be tried now (for listing models), without changing state.
    pub fn is_available(&self, now: Instant) -> bool {
        match *self.lock() {
            Inner::Closed { .. } => true,
            Inner::Open { until } => now >= until,
            Inner::HalfOpen => false,
        }
    }

    /// The backend answered: close.
    pub fn record_success(&self) {
        *self.lock() = Inner::Closed { failures: 0 };
    }

    /// The backend failed. Returns whether this opened the breaker.
    pub fn record_failure(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { failures } if failures + 1 < self.threshold => {
                *inner = Inner::Closed {
                    failures: failures + 1,
                };
                false
            }
            Inner::Closed { .. } | Inner::HalfOpen => {
                *inner = Inner::Open {
                    until: now + self.cooldown,
                };
                true
            }
            // Already open (a request admitted before it opened failed late): keep the deadline.
            Inner::Open { .. } => false,
        }
    }

    /// A probe ended without telling anything about health (the client's request was invalid,
    /// or the local queue was full): let the next request probe instead.
    pub fn release_probe(&self, now: Instant) {
        let mut inner = self.lock();
        if matches!(*inner, Inner::HalfOpen) {
            *inner = Inner::Open { until: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_consecutive_failures_only() {
        let b = Breaker::new(3, Duration::from_secs(10));
        let t = Instant::now();
        assert!(!b.record_failure(t));
        assert!(!b.record_failure(t));
        b.record_success();
        assert!(!b.record_failure(t));
        assert!(!b.record_failure(t));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.record_failure(t));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(t + Duration::from_secs(9)), Admission::Skip);
    }

    #[test]
    fn half_opens_after_cooldown_with_a_single_probe() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let t = Instant::now();
        b.record_failure(t);
        assert!(!b.is_available(t));
        let later = t + Duration::from_secs(10);
        assert!(b.is_available(later));
        assert_eq!(b.admit(later), Admission::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // While the probe is out, everyone else skips.
        assert_eq!(b.admit(later), Admission::Skip);
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(later), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_for_a_full_cooldown() {
        let b = Breaker::new(2, Duration::from_secs(5));
        let t = Instant::now();
        b.record_failure(t);
        b.record_failure(t);
        let probe_at = t + Duration::from_secs(5);
        assert_eq!(b.admit(probe_at), Admission::Probe);
        assert!(b.record_failure(probe_at));
        assert_eq!(b.admit(probe_at + Duration::from_secs(4)), Admission::Skip);
        assert_eq!(b.admit(probe_at + Duration::from_secs(5)), Admission::Probe);
    }

    #[test]
    fn a_released_probe_lets_the_next_request_probe() {
        let b = Breaker::new(1, Duration::from_secs(5));
        let t = Instant::now();
        b.record_failure(t);
        let at = t + Duration::from_secs(6);
        assert_eq!(b.admit(at), Admission::Probe);
        b.release_probe(at);
        assert_eq!(b.admit(at), Admission::Probe);
    }
}
