//! Rate limits on password attempts. Only *failures* are counted: per client IP, and per
//! username from one client IP. So a wrong-password flood slows the flooder (its IP, and its IP
//! on that account) but never locks the account's owner out from anywhere else, and a correct
//! password costs nothing. (Counting every attempt per username let anyone keep any account,
//! an admin's included, locked with five wrong tries a minute.)
//!
//! Each budget is a token bucket per key that refills evenly over a minute; a spent bucket
//! tells how long to wait. Buckets that have refilled are dropped periodically, so memory stays
//! bounded by recent failures. IPv6 clients are keyed by their /64, which one host can rotate
//! through at will.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failed-password budgets.
#[derive(Debug)]
pub struct LoginLimits {
    per_ip: FailureBudget<IpAddr>,
    per_account: FailureBudget<(String, IpAddr)>,
}

impl LoginLimits {
    /// `per_ip` failures per minute per client, `per_username` failures per minute per
    /// username from one client (bursts up to the same numbers).
    pub fn new(per_ip: u32, per_username: u32) -> Self {
        Self {
            per_ip: FailureBudget::per_minute(per_ip),
            per_account: FailureBudget::per_minute(per_username),
        }
    }

    /// Before a password is checked: `Err(wait)` when this client, or this client on this
    /// username, has failed too often lately. Usernames compare case-insensitively, like
    /// accounts; only their first 64 characters count (no account has a longer one).
    pub fn admit(&self, ip: IpAddr, username: &str) -> Result<(), Duration> {
        self.per_ip.check(&client_key(ip))?;
        self.per_account.check(&account_key(ip, username))
    }

    /// A wrong password: charge both budgets.
    pub fn failed(&self, ip: IpAddr, username: &str) {
        self.per_ip.charge(client_key(ip));
        self.per_account.charge(account_key(ip, username));
    }

    /// A right password: this client's failures on this username are forgiven (its per-IP
    /// failures stand).
    pub fn succeeded(&self, ip: IpAddr, username: &str) {
        self.per_account.forget(&account_key(ip, username));
    }

    /// Forget buckets that have refilled (call now and then).
    pub fn prune(&self) {
        self.per_ip.prune();
        self.per_account.prune();
    }
}

/// IPv4 addresses as they are; IPv6 ones by their /64 network (one host can rotate through a
/// /64 at will, so it is the unit every per-client limit counts).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

fn account_key(ip: IpAddr, username: &str) -> (String, IpAddr) {
    let name: String = username.chars().take(64).collect();
    (name.to_lowercase(), client_key(ip))
}

/// A token bucket per key: `capacity` failures, refilled at `capacity` per minute.
#[derive(Debug)]
struct FailureBudget<K> {
    capacity: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: std::hash::Hash + Eq + Clone> FailureBudget<K> {
    fn per_minute(n: u32) -> Self {
        let capacity = f64::from(n.max(1));
        Self {
            capacity,
            per_sec: capacity / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Bucket>> {
        // Plain numbers inside: a poisoned lock holds nothing half-written worth refusing.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + secs * self.per_sec).min(self.capacity)
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let Some(&b) = self.lock().get(key) else {
            return Ok(());
        };
        let tokens = self.refilled(b, now);
        if tokens >= 1.0 {
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
    }

    fn charge(&self, key: K) {
        let now = Instant::now();
        let mut buckets = self.lock();
        let tokens = buckets
            .get(&key)
            .map_or(self.capacity, |&b| self.refilled(b, now));
        buckets.insert(
            key,
            Bucket {
                tokens: (tokens - 1.0).max(0.0),
                at: now,
            },
        );
    }

    fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    fn prune(&self) {
        let now = Instant::now();
        let full = self.capacity;
        self.lock().retain(|_, b| {
            let secs = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + secs * self.per_sec < full
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_failures_spend_the_budget() {
        let l = LoginLimits::new(100, 2);
        let a = ip("192.0.2.1");
        for _ in 0..10 {
            assert!(l.admit(a, "alice").is_ok(), "admitting is free");
        }
        l.failed(a, "alice");
        l.failed(a, "ALICE");
        let wait = l.admit(a, "alice").expect_err("two failures spent it");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }

    #[test]
    fn failures_from_one_client_do_not_lock_the_account_for_another() {
        let l = LoginLimits::new(100, 2);
        let (attacker, owner) = (ip("198.51.100.66"), ip("203.0.113.5"));
        for _ in 0..5 {
            l.failed(attacker, "admin");
        }
        assert!(l.admit(attacker, "admin").is_err());
        assert!(l.admit(owner, "admin").is_ok());
        // The attacker may still try other accounts until its per-IP budget is spent.
        assert!(l.admit(attacker, "bob").is_ok());
    }

    #[test]
    fn the_per_ip_budget_covers_every_username_and_the_whole_ipv6_64() {
        let l = LoginLimits::new(3, 100);
        l.failed(ip("2001:db8::1"), "a");
        l.failed(ip("2001:db8::2"), "b");
        l.failed(ip("2001:db8::ffff:3"), "c");
        assert!(l.admit(ip("2001:db8::9"), "d").is_err(), "same /64");
        assert!(l.admit(ip("2001:db8:0:1::9"), "d").is_ok(), "another /64");
    }

    #[test]
    fn a_success_forgives_that_accounts_failures_and_refilled_buckets_are_pruned() {
        let l = LoginLimits::new(100, 2);
        let a = ip("192.0.2.7");
        l.failed(a, "carol");
        l.failed(a, "carol");
        assert!(l.admit(a, "carol").is_err());
        l.succeeded(a, "carol");
        assert!(l.admit(a, "carol").is_ok());
        l.prune();
        // One failure out of 100 has not refilled yet: kept.
        assert_eq!(l.per_ip.lock().len(), 1);
    }
}
