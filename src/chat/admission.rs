//! Admission of generations, per caller: requests per minute (a token bucket), generations
//! running at once (permits), and tokens per UTC day (a quota). One [`Admission`] serves every
//! transport, so `/v1`, `/ws` and conversations draw on the same budgets.
//!
//! A caller is a user (whatever key or token they use), the static `server.api_key`, or, for
//! anonymous use, the client IP (IPv6: its /64). Daily tokens of users start from the usage
//! table once per user and day, then count in memory, so admission never reads SQLite per
//! request; anonymous and static-key callers count in memory only (a restart forgets them).
//! Memory stays bounded: buckets that have refilled, idle permit counts and past days are
//! dropped now and then. With `cache.url` the three budgets live in Redis instead, shared by
//! every replica (`shared_budgets.rs`); the books here then serve while Redis is unreachable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::shared_budgets::{SharedBudgets, Verdict};
use crate::config::LimitsSettings;
use crate::store::preferences::LimitOverride;
use crate::store::usage::utc_day;
use crate::store::{unix_now, Store};

/// Whom limits and the cache count for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A user account.
    User(i64),
    /// The static `server.api_key`.
    StaticKey,
    /// An anonymous client (IPv6 by /64).
    Ip(IpAddr),
}

/// Where a caller stands with the request budget, for `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    /// Requests per minute allowed.
    pub limit: u32,
    /// Requests that may be made right now.
    pub remaining: u32,
    /// Seconds until the budget is full again.
    pub reset_secs: u64,
}

/// Where a caller stands with the daily token quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenStatus {
    /// Tokens per UTC day allowed.
    pub limit: u64,
    /// Tokens left today.
    pub remaining: u64,
    /// Seconds until the next UTC midnight.
    pub reset_secs: u64,
}

/// Why a generation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `limits.requests_per_minute` spent.
    #[error("Rate limit reached: {limit} generation requests per minute (limits.requests_per_minute); retry in {retry_after_secs} s")]
    Requests {
        /// The limit.
        limit: u32,
        /// Whole seconds until one more request is allowed.
        retry_after_secs: u64,
    },
    /// `limits.concurrent_generations` running.
    #[error("Too many generations at once: at most {limit} (limits.concurrent_generations); retry when one finishes")]
    Concurrency {
        /// The limit.
        limit: u32,
    },
    /// `limits.tokens_per_day` spent.
    #[error("Daily token quota reached: {limit} tokens per UTC day (limits.tokens_per_day); it resets in {retry_after_secs} s")]
    Tokens {
        /// The limit.
        limit: u64,
        /// Seconds until midnight UTC.
        retry_after_secs: u64,
    },
}

impl Refusal {
    /// Seconds to wait before retrying (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Refusal::Requests {
                retry_after_secs, ..
            }
            | Refusal::Tokens {
                retry_after_secs, ..
            } => (*retry_after_secs).max(1),
            Refusal::Concurrency { .. } => 1,
        }
    }

    /// The metrics event.
    pub fn event(&self) -> &'static str {
        match self {
            Refusal::Requests { .. } => "limited_requests",
            Refusal::Concurrency { .. } => "limited_concurrency",
            Refusal::Tokens { .. } => "limited_tokens",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Day {
    day: String,
    used: u64,
}

#[derive(Debug, Default)]
struct Books {
    buckets: HashMap<Identity, Bucket>,
    running: HashMap<Identity, u32>,
    days: HashMap<Identity, Day>,
    /// Admissions since the last pruning.
    since_prune: u32,
}

/// Per-caller budgets (see the module docs).
#[derive(Debug, Clone)]
pub struct Admission {
    settings: LimitsSettings,
    /// Admins' per-user overrides, all in memory (loaded at start, replaced on write).
    overrides: Arc<std::sync::RwLock<HashMap<i64, LimitOverride>>>,
    books: Arc<Mutex<Books>>,
    store: Store,
    /// With `cache.url`: the budgets every replica shares (the books above are then only the
    /// fallback while Redis cannot be reached, and the daily tokens' seed).
    shared: Option<SharedBudgets>,
}

/// A generation's place in its caller's budgets; dropping it frees its concurrency permit.
#[derive(Debug)]
pub struct Ticket {
    identity: Identity,
    books: Option<Arc<Mutex<Books>>>,
    /// A shared lease to give back: the budgets, the caller's key, the lease.
    lease: Option<(SharedBudgets, String, String)>,
    /// The request budget after this request, when `limits.requests_per_minute` is on.
    pub rate: Option<RateStatus>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((shared, who, lease)) = self.lease.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = shared.release(&who, &lease).await {
                        // The lease expires by itself; until then it counts as running.
                        tracing::warn!(error = %e, "giving back a shared generation lease failed");
                    }
                });
            }
        }
        if let Some(books) = &self.books {
            let mut b = lock(books);
            if let Some(n) = b.running.get_mut(&self.identity) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    b.running.remove(&self.identity);
                }
            }
        }
    }
}

fn lock(books: &Mutex<Books>) -> std::sync::MutexGuard<'_, Books> {
    // Plain counters inside: a poisoned lock holds nothing half-written worth refusing.
    books.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seconds from `now` (Unix) to the next UTC midnight.
fn secs_to_midnight(now: i64) -> u64 {
    (86_400 - now.rem_euclid(86_400)) as u64
}

impl Admission {
    /// Budgets from `[limits]`; user quotas start from `store`'s usage table.
    pub fn new(settings: LimitsSettings, store: Store, shared: Option<SharedBudgets>) -> Self {
        Self {
            settings,
            overrides: Default::default(),
            books: Arc::new(Mutex::new(Books::default())),
            store,
            shared,
        }
    }

    /// The caller's name in the shared budgets' keys.
    fn shared_key(identity: &Identity) -> String {
        match identity {
            Identity::User(id) => format!("u{id}"),
            Identity::StaticKey => "key".into(),
            Identity::Ip(ip) => format!("ip{ip}"),
        }
    }

    /// [`Admission::admit`] on the shared budgets; `None` when Redis could not be asked.
    async fn admit_shared(
        &self,
        shared: &SharedBudgets,
        identity: &Identity,
        s: &LimitsSettings,
    ) -> Option<Result<Ticket, Refusal>> {
        let now = unix_now();
        let day = utc_day(now);
        let used = if s.tokens_per_day > 0 {
            self.used_today(identity, &day).await
        } else {
            0
        };
        let (who, lease) = (
            Self::shared_key(identity),
            uuid::Uuid::new_v4().simple().to_string(),
        );
        let verdict = match shared.admit(&who, s, &lease, &day, used).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "shared budgets unreachable: this replica's own count applies");
                return None;
            }
        };
        Some(match verdict {
            Verdict::Admitted(remaining) => Ok(Ticket {
                identity: identity.clone(),
                books: None,
                lease: (s.concurrent_generations > 0).then(|| (shared.clone(), who, lease)),
                rate: remaining.map(|r| Self::rate_status(s, f64::from(r))),
            }),
            Verdict::Requests(retry_after_secs) => Err(Refusal::Requests {
                limit: s.requests_per_minute,
                retry_after_secs,
            }),
            Verdict::Concurrency => Err(Refusal::Concurrency {
                limit: s.concurrent_generations,
            }),
            Verdict::Tokens => Err(Refusal::Tokens {
                limit: s.tokens_per_day,
                retry_after_secs: secs_to_midnight(now),
            }),
        })
    }

    /// Load the stored per-user overrides (at start).
    pub async fn load_overrides(&self) -> Result<(), crate::store::StoreError> {
        let all = self.store.limit_overrides().await?;
        *self
            .overrides
            .write()
            .unwrap_or_else(PoisonError::into_inner) = all.into_iter().collect();
        Ok(())
    }

    /// Store and apply `user_id`'s overrides.
    pub async fn set_override(
        &self,
        user_id: i64,
        o: LimitOverride,
    ) -> Result<(), crate::store::StoreError> {
        self.store.put_limit_override(user_id, o).await?;
        let mut map = self
            .overrides
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if o == LimitOverride::default() {
            map.remove(&user_id);
        } else {
            map.insert(user_id, o);
        }
        Ok(())
    }

    /// `user_id`'s overrides.
    pub fn override_of(&self, user_id: i64) -> LimitOverride {
        self.overrides
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user_id)
            .copied()
            .unwrap_or_default()
    }

    /// The limits that apply to `identity`: the server's, with a user's overrides on top.
    pub fn limits_for(&self, identity: &Identity) -> LimitsSettings {
        let mut s = self.settings.clone();
        if let Identity::User(id) = identity {
            let o = self.override_of(*id);
            s.requests_per_minute = o.requests_per_minute.unwrap_or(s.requests_per_minute);
            s.concurrent_generations = o.concurrent_generations.unwrap_or(s.concurrent_generations);
            s.tokens_per_day = o.tokens_per_day.unwrap_or(s.tokens_per_day);
        }
        s
    }

    fn refill(s: &LimitsSettings, b: Bucket, now: Instant) -> f64 {
        let cap = f64::from(s.requests_per_minute);
        let secs = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + secs * cap / 60.0).min(cap)
    }

    fn rate_status(s: &LimitsSettings, tokens: f64) -> RateStatus {
        let cap = f64::from(s.requests_per_minute);
        RateStatus {
            limit: s.requests_per_minute,
            remaining: tokens.floor().max(0.0) as u32,
            reset_secs: ((cap - tokens).max(0.0) * 60.0 / cap).ceil() as u64,
        }
    }

    /// Tokens `identity` used today: from memory, or (a user's first request of the day) from
    /// the usage table.
    async fn used_today(&self, identity: &Identity, day: &str) -> u64 {
        if let Some(d) = lock(&self.books)
            .days
            .get(identity)
            .filter(|d| d.day == day)
        {
            return d.used;
        }
        let used = match identity {
            Identity::User(id) => match self.store.tokens_on_day(*id, day.to_string()).await {
                Ok(n) => n,
                Err(e) => {
                    // Fail open: an unreadable usage table must not stop every user.
                    tracing::warn!(user_id = id, error = %e, "reading today's usage failed");
                    0
                }
            },
            _ => 0,
        };
        let mut books = lock(&self.books);
        let entry = books.days.entry(identity.clone()).or_insert(Day {
            day: day.to_string(),
            used,
        });
        if entry.day != day {
            *entry = Day {
                day: day.to_string(),
                used,
            };
        }
        entry.used
    }

    /// Admit one generation for `identity`, or say which budget is spent. Nothing is taken
    /// from any budget when one refuses.
    pub async fn admit(&self, identity: &Identity) -> Result<Ticket, Refusal> {
        let s = &self.limits_for(identity);
        if s.requests_per_minute == 0 && s.concurrent_generations == 0 && s.tokens_per_day == 0 {
            return Ok(Ticket {
                identity: identity.clone(),
                books: None,
                lease: None,
                rate: None,
            });
        }
        if let Some(shared) = &self.shared {
            if let Some(verdict) = self.admit_shared(shared, identity, s).await {
                return verdict;
            }
        }
        let now_unix = unix_now();
        if s.tokens_per_day > 0 {
            let used = self.used_today(identity, &utc_day(now_unix)).await;
            if used >= s.tokens_per_day {
                return Err(Refusal::Tokens {
                    limit: s.tokens_per_day,
                    retry_after_secs: secs_to_midnight(now_unix),
                });
            }
        }
        let now = Instant::now();
        let mut books = lock(&self.books);
        books.since_prune += 1;
        if books.since_prune >= 1024 {
            books.since_prune = 0;
            self.prune(&mut books, now, &utc_day(now_unix));
        }
        if s.concurrent_generations > 0 {
            let running = books.running.get(identity).copied().unwrap_or(0);
            if running >= s.concurrent_generations {
                return Err(Refusal::Concurrency {
                    limit: s.concurrent_generations,
                });
            }
        }
        let mut rate = None;
        if s.requests_per_minute > 0 {
            let cap = f64::from(s.requests_per_minute);
            let tokens = books
                .buckets
                .get(identity)
                .map_or(cap, |&b| Self::refill(s, b, now));
            if tokens < 1.0 {
                return Err(Refusal::Requests {
                    limit: s.requests_per_minute,
                    retry_after_secs: ((1.0 - tokens) * 60.0 / cap).ceil() as u64,
                });
            }
            books.buckets.insert(
                identity.clone(),
                Bucket {
                    tokens: tokens - 1.0,
                    at: now,
                },
            );
            rate = Some(Self::rate_status(s, tokens - 1.0));
        }
        *books.running.entry(identity.clone()).or_insert(0) += 1;
        Ok(Ticket {
            identity: identity.clone(),
            books: Some(self.books.clone()),
            lease: None,
            rate,
        })
    }

    /// Count a finished generation's tokens against today's quota.
    pub fn charge(&self, identity: &Identity, tokens: u64) {
        if self.limits_for(identity).tokens_per_day == 0 || tokens == 0 {
            return;
        }
        let today = utc_day(unix_now());
        if let Some(shared) = self.shared.clone() {
            let who = Self::shared_key(identity);
            let day = today.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = shared.charge(&who, &day, tokens).await {
                        tracing::warn!(error = %e, "charging shared daily tokens failed");
                    }
                });
            }
        }
        let mut books = lock(&self.books);
        match books.days.get_mut(identity) {
            Some(d) if d.day == today => d.used += tokens,
            // Not loaded today: a user's first admission reads the usage table, which holds
            // these tokens by then; anonymous callers start their count here.
            _ if !matches!(identity, Identity::User(_)) => {
                books.days.insert(
                    identity.clone(),
                    Day {
                        day: today,
                        used: tokens,
                    },
                );
            }
            _ => {}
        }
    }

    /// Where `identity` stands now, without spending anything: the request budget and the
    /// daily tokens (each `None` when that limit is off).
    pub async fn status(&self, identity: &Identity) -> (Option<RateStatus>, Option<TokenStatus>) {
        let s = &self.limits_for(identity);
        let now = unix_now();
        let day = utc_day(now);
        // With Redis, the shared books; else (or while it cannot be asked) this replica's.
        let shared = match &self.shared {
            Some(shared) => shared
                .peek(&Self::shared_key(identity), s.requests_per_minute, &day)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "shared budgets unreachable: this replica's own count shown"))
                .ok(),
            None => None,
        };
        let rate = (s.requests_per_minute > 0).then(|| {
            let bucket = shared.map_or_else(
                || {
                    lock(&self.books)
                        .buckets
                        .get(identity)
                        .map_or(f64::from(s.requests_per_minute), |&b| {
                            Self::refill(s, b, Instant::now())
                        })
                },
                |(bucket, _)| bucket,
            );
            Self::rate_status(s, bucket)
        });
        let tokens = if s.tokens_per_day > 0 {
            let used = match shared {
                Some((_, Some(used))) => used,
                _ => self.used_today(identity, &day).await,
            };
            Some(TokenStatus {
                limit: s.tokens_per_day,
                remaining: s.tokens_per_day.saturating_sub(used),
                reset_secs: secs_to_midnight(now),
            })
        } else {
            None
        };
        (rate, tokens)
    }

    fn prune(&self, books: &mut Books, now: Instant, today: &str) {
        books.buckets.retain(|id, b| {
            let cap = f64::from(self.limits_for(id).requests_per_minute);
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * cap / 60.0 < cap
        });
        books.days.retain(|_, d| d.day == today);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(limits: LimitsSettings) -> (Admission, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = crate::config::StoreSettings {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let store = Store::open(&settings.db_path(), &settings).expect("store");
        (Admission::new(limits, store, None), dir)
    }

    #[tokio::test]
    async fn the_request_budget_refuses_past_the_limit_and_says_when_to_retry() {
        let (a, _dir) = admission(LimitsSettings {
            requests_per_minute: 2,
            ..Default::default()
        });
        let who = Identity::Ip("192.0.2.1".parse().expect("ip"));
        let first = a.admit(&who).await.expect("first");
        assert_eq!(first.rate.expect("rate").remaining, 1);
        let second = a.admit(&who).await.expect("second");
        assert_eq!(second.rate.expect("rate").remaining, 0);
        match a.admit(&who).await.expect_err("third") {
            Refusal::Requests {
                limit,
                retry_after_secs,
            } => {
                assert_eq!(limit, 2);
                assert!((1..=30).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("{other:?}"),
        }
        // Someone else is unaffected.
        let other = Identity::User(7);
        assert!(a.admit(&other).await.is_ok());
    }

    #[tokio::test]
    async fn permits_are_given_back_when_tickets_drop() {
        let (a, _dir) = admission(LimitsSettings {
            concurrent_generations: 1,
            ..Default::default()
        });
        let who = Identity::StaticKey;
        let t = a.admit(&who).await.expect("first");
        assert!(matches!(
            a.admit(&who).await,
            Err(Refusal::Concurrency { limit: 1 })
        ));
        drop(t);
        assert!(a.admit(&who).await.is_ok());
    }

    #[tokio::test]
    async fn the_daily_quota_counts_charged_tokens() {
        let (a, _dir) = admission(LimitsSettings {
            tokens_per_day: 100,
            ..Default::default()
        });
        let who = Identity::Ip("2001:db8::1".parse().expect("ip"));
        drop(a.admit(&who).await.expect("fresh"));
        a.charge(&who, 60);
        drop(a.admit(&who).await.expect("40 left"));
        a.charge(&who, 60);
        let refusal = a.admit(&who).await.expect_err("spent");
        assert!(matches!(refusal, Refusal::Tokens { limit: 100, .. }));
        assert!(refusal.retry_after_secs() <= 86_400);
        let (_, tokens) = a.status(&who).await;
        assert_eq!(tokens.expect("on").remaining, 0);
    }

    #[tokio::test]
    async fn limits_that_are_off_cost_nothing() {
        let (a, _dir) = admission(LimitsSettings::default());
        for _ in 0..1000 {
            assert!(a
                .admit(&Identity::StaticKey)
                .await
                .expect("ok")
                .rate
                .is_none());
        }
        assert!(lock(&a.books).running.is_empty());
    }

    #[test]
    fn midnight_is_counted_in_utc() {
        assert_eq!(secs_to_midnight(0), 86_400);
        assert_eq!(secs_to_midnight(86_399), 1);
    }
}
