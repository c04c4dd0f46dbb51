//! Budgets shared by every replica through Redis (`cache.url`): requests per minute (a token
//! bucket), generations running at once (leases in a sorted set) and tokens per UTC day (a
//! counter), each checked and taken in one Lua script, so N replicas together allow exactly
//! the configured budget. Owns the keys and the script; [`super::admission::Admission`] decides
//! when to use it (and falls back to its in-memory books when Redis cannot be reached).

use std::sync::Arc;

use crate::cluster::Cluster;

use crate::config::LimitsSettings;

/// A running generation's lease: a replica that dies without releasing it frees it after this.
const LEASE_MS: i64 = 3_600_000;

/// Check every budget, then take from all or none. KEYS: bucket, leases, day's tokens. ARGV:
/// now (ms), requests per minute, concurrent generations, tokens per day, ticket, lease (ms),
/// tokens used before today's key existed. Returns {1, remaining requests (-1: off)}, or
/// {-1, ms until a request is allowed}, {-2, 0} (concurrency), {-3, 0} (tokens).
const ADMIT: &str = r"
local now, rpm, conc, tpd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if tpd > 0 then
  redis.call('SET', KEYS[3], ARGV[7], 'NX', 'EX', 172800)
  if tonumber(redis.call('GET', KEYS[3])) >= tpd then return {-3, 0} end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then return {-2, 0} end
end
local remaining = -1
if rpm > 0 then
  local b = redis.call('HMGET', KEYS[1], 't', 'at')
  local tokens, at = tonumber(b[1]) or rpm, tonumber(b[2]) or now
  tokens = math.min(rpm, tokens + (now - at) * rpm / 60000)
  if tokens < 1 then return {-1, math.ceil((1 - tokens) * 60000 / rpm)} end
  tokens = tokens - 1
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', KEYS[1], 120000)
  remaining = math.floor(tokens)
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[5])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]))
end
return {1, remaining}
";

/// What the script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; requests left in the bucket (`None`: that limit is off).
    Admitted(Option<u32>),
    /// The request budget is spent; seconds until one is allowed.
    Requests(u64),
    /// As many generations run as allowed.
    Concurrency,
    /// Today's tokens are spent.
    Tokens,
}

/// The shared budgets (cheap to clone).
#[derive(Clone, Debug)]
pub struct SharedBudgets {
    cluster: Arc<Cluster>,
    admit: redis::Script,
}

impl SharedBudgets {
    /// The budgets kept in `cluster`'s Redis.
    pub fn new(cluster: Arc<Cluster>) -> SharedBudgets {
        SharedBudgets {
            cluster,
            admit: redis::Script::new(ADMIT),
        }
    }

    fn key(&self, what: &str, who: &str) -> String {
        self.cluster.key(&format!("{what}:{who}"))
    }

    /// Check and take (see [`ADMIT`]). `who` names the caller; `day` the UTC day; `used` the
    /// tokens the caller used today before the shared counter existed (the usage table).
    pub async fn admit(
        &self,
        who: &str,
        s: &LimitsSettings,
        ticket: &str,
        day: &str,
        used: u64,
    ) -> redis::RedisResult<Verdict> {
        let now = chrono::Utc::now().timestamp_millis();
        let (code, value): (i64, i64) = self
            .admit
            .key(self.key("rate", who))
            .key(self.key("running", who))
            .key(self.key(&format!("tokens:{day}"), who))
            .arg(now)
            .arg(s.requests_per_minute)
            .arg(s.concurrent_generations)
            .arg(s.tokens_per_day)
            .arg(ticket)
            .arg(LEASE_MS)
            .arg(used)
            .invoke_async(&mut self.cluster.conn())
            .await?;
        Ok(match code {
            1 => Verdict::Admitted(u32::try_from(value).ok()),
            -1 => Verdict::Requests((value.max(0) as u64).div_ceil(1000)),
            -2 => Verdict::Concurrency,
            _ => Verdict::Tokens,
        })
    }

    /// Where `who` stands, spending nothing: requests left in the bucket now (`rpm` a minute;
    /// full when there is no bucket) and tokens counted for `day` (`None`: no count yet).
    pub async fn peek(
        &self,
        who: &str,
        rpm: u32,
        day: &str,
    ) -> redis::RedisResult<(f64, Option<u64>)> {
        let ((t, at), used): ((Option<f64>, Option<i64>), Option<u64>) = redis::pipe()
            .cmd("HMGET")
            .arg(self.key("rate", who))
            .arg("t")
            .arg("at")
            .cmd("GET")
            .arg(self.key(&format!("tokens:{day}"), who))
            .query_async(&mut self.cluster.conn())
            .await?;
        let cap = f64::from(rpm);
        let now = chrono::Utc::now().timestamp_millis();
        let tokens = match (t, at) {
            (Some(t), Some(at)) => (t + (now - at).max(0) as f64 * cap / 60_000.0).min(cap),
            _ => cap,
        };
        Ok((tokens, used))
    }

    /// A generation ended: its lease is given back.
    pub async fn release(&self, who: &str, ticket: &str) -> redis::RedisResult<()> {
        redis::cmd("ZREM")
            .arg(self.key("running", who))
            .arg(ticket)
            .query_async(&mut self.cluster.conn())
            .await
    }

    /// Count `tokens` against `who`'s day.
    pub async fn charge(&self, who: &str, day: &str, tokens: u64) -> redis::RedisResult<()> {
        let key = self.key(&format!("tokens:{day}"), who);
        redis::pipe()
            .cmd("INCRBY")
            .arg(&key)
            .arg(tokens)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(172_800)
            .ignore()
            .query_async(&mut self.cluster.conn())
            .await
    }
}
