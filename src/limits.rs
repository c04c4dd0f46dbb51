//! Rate limits (governor): login attempts per client IP and per username. Each limiter is a
//! GCRA bucket per key that refills evenly over a minute; a refused attempt learns how long to
//! wait. Keys idle long enough to be full again are dropped periodically, so memory stays
//! bounded by recent traffic.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Login limiters.
#[derive(Debug)]
pub struct LoginLimits {
    per_ip: DefaultKeyedRateLimiter<String>,
    per_username: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl LoginLimits {
    /// `per_ip` and `per_username` attempts per minute (bursts up to the same number).
    pub fn new(per_ip: u32, per_username: u32) -> Self {
        Self {
            per_ip: RateLimiter::keyed(per_minute(per_ip)),
            per_username: RateLimiter::keyed(per_minute(per_username)),
            clock: DefaultClock::default(),
        }
    }

    /// Take one attempt for this IP and username; `Err(wait)` when either is exhausted.
    /// Usernames are compared case-insensitively, like accounts.
    pub fn check(&self, ip: &str, username: &str) -> Result<(), Duration> {
        let now = self.clock.now();
        self.per_ip
            .check_key(&ip.to_string())
            .map_err(|n| n.wait_time_from(now))?;
        self.per_username
            .check_key(&username.to_lowercase())
            .map_err(|n| n.wait_time_from(now))?;
        Ok(())
    }

    /// Forget keys whose buckets have refilled (call now and then).
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_username.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_beyond_the_quota_are_refused_per_username_and_per_ip() {
        let l = LoginLimits::new(5, 2);
        assert!(l.check("1.1.1.1", "alice").is_ok());
        assert!(l.check("1.1.1.2", "ALICE").is_ok());
        let wait = l
            .check("1.1.1.3", "alice")
            .expect_err("third try for alice");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        // Other usernames from the same IP still work until the IP quota is spent.
        assert!(l.check("1.1.1.1", "bob").is_ok());
        assert!(l.check("1.1.1.1", "carol").is_ok());
        assert!(l.check("1.1.1.1", "dave").is_ok());
        assert!(l.check("1.1.1.1", "erin").is_ok());
        assert!(
            l.check("1.1.1.1", "frank").is_err(),
            "sixth try from the IP"
        );
        l.prune();
    }
}
