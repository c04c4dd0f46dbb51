//! The response cache: whole answers to deterministic requests (temperature 0 or a fixed seed),
//! in memory (moka), so asking the same thing again costs no model time.
//!
//! The key is a SHA-256 of everything that decides the answer, exactly as given: the model id,
//! the prompt (every message's role and text, or the raw text or token ids — the chat template
//! turns the same messages into the same ids, so this is the rendered prompt), `n`, every
//! sampling parameter, limits, stop strings, output format and log-probabilities — never a
//! "normalised" text (lower-casing would answer a different question). Entries are scoped to
//! their caller unless `cache.shared`. Only answers whose every choice finished normally, from
//! the model that was asked (not a failover), are stored; entries over `cache.max_entry_bytes`
//! are not. Capacity is in bytes (`cache.max_bytes`) and entries (`cache.max_entries`), with a
//! TTL (`cache.ttl_secs`).
//!
//! With `cache.url` the answers are also kept in Redis (as JSON, with the same TTL), so a
//! replica answers what another computed: a local miss asks Redis and keeps what it finds.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::admission::Identity;
use crate::backends::Summary;
use crate::backends::{Params, Prompt, TokenLogprobs};
use crate::cluster::Cluster;
use crate::config::CacheSettings;

/// One piece of a cached choice, as it was streamed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Piece {
    /// The text it made visible.
    pub text: String,
    /// Its log-probabilities, when they were asked for.
    pub logprobs: Option<TokenLogprobs>,
}

/// One cached choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedChoice {
    /// Its pieces in order.
    pub pieces: Vec<Piece>,
    /// How it ended (timings as they were when it was computed).
    pub summary: Summary,
}

/// A cached answer: every choice of one request.
#[derive(Debug)]
pub struct CachedAnswer {
    /// The choices, by index.
    pub choices: Vec<CachedChoice>,
    /// Roughly what it holds in memory.
    pub bytes: u64,
}

/// A cache key.
pub type Key = [u8; 32];

/// The cache (cheap to clone).
#[derive(Clone)]
pub struct ResponseCache {
    entries: Option<moka::sync::Cache<Key, Arc<CachedAnswer>>>,
    settings: CacheSettings,
    /// The replicas' shared copy (`cache.url`).
    cluster: Option<Arc<Cluster>>,
}

/// What makes a request's answer: the fields of [`super::Ask`] the cache key covers.
pub struct KeyParts<'a> {
    /// The model asked for.
    pub model: &'a str,
    /// The prompts.
    pub prompts: &'a [Prompt],
    /// Choices per prompt.
    pub n: usize,
    /// Sampling, limits, stop strings, format, log-probability count.
    pub params: &'a Params,
    /// Whether log-probabilities were asked for.
    pub logprobs: bool,
}

/// Bytes an answer takes, roughly: text, log-probability tokens, and a fixed cost per piece.
pub fn weight(choices: &[CachedChoice]) -> u64 {
    choices
        .iter()
        .flat_map(|c| c.pieces.iter())
        .map(|p| {
            let lp = p.logprobs.as_ref().map_or(0, |l| {
                l.token.len() + l.top.iter().map(|(t, _)| t.len() + 8).sum::<usize>()
            });
            (p.text.len() + lp + 64) as u64
        })
        .sum::<u64>()
        + 128
}

impl ResponseCache {
    /// A cache sized by `[cache]` (nothing is kept when it is disabled), shared through
    /// `cluster` when there is one.
    pub fn new(settings: &CacheSettings, cluster: Option<Arc<Cluster>>) -> Self {
        let entries = settings.enabled.then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(|_, v: &Arc<CachedAnswer>| u32::try_from(v.bytes).unwrap_or(u32::MAX))
                .time_to_live(Duration::from_secs(settings.ttl_secs))
                .build()
        });
        Self {
            entries,
            settings: settings.clone(),
            cluster,
        }
    }

    /// Whether a request with these parameters may be answered from (and stored in) the cache.
    pub fn applies(&self, params: &Params, allowed: bool) -> bool {
        self.entries.is_some()
            && allowed
            && (params.sampling.temperature == 0.0 || params.sampling.seed.is_some())
    }

    /// The key of a request by `who`.
    pub fn key(&self, who: &Identity, parts: &KeyParts<'_>) -> Key {
        let mut h = Sha256::new();
        if !self.settings.shared {
            h.update(format!("{who:?}"));
        }
        h.update([0]);
        // Debug output is exact for every field (floats print their shortest exact form, strings
        // are quoted and escaped), so two requests share a key only if they are equal.
        h.update(format!(
            "{:?}\0{:?}\0{}\0{:?}\0{}",
            parts.model, parts.prompts, parts.n, parts.params, parts.logprobs
        ));
        h.finalize().into()
    }

    fn shared_key(cluster: &Cluster, key: &Key) -> String {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        cluster.key(&format!("cache:{hex}"))
    }

    /// The answer stored under `key`: this process's copy, else the replicas' shared one.
    pub async fn get(&self, key: &Key) -> Option<Arc<CachedAnswer>> {
        let entries = self.entries.as_ref()?;
        if let Some(hit) = entries.get(key) {
            return Some(hit);
        }
        let cluster = self.cluster.as_ref()?;
        let found: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(Self::shared_key(cluster, key))
            .query_async(&mut cluster.conn())
            .await;
        let json = found
            .inspect_err(|e| tracing::warn!(error = %e, "reading the shared response cache failed"))
            .ok()??;
        let choices: Vec<CachedChoice> = serde_json::from_str(&json).ok()?;
        let bytes = weight(&choices);
        let answer = Arc::new(CachedAnswer { choices, bytes });
        entries.insert(*key, answer.clone());
        Some(answer)
    }

    /// Store an answer (unless it is over `cache.max_entry_bytes`). Returns whether it was.
    pub fn put(&self, key: Key, choices: Vec<CachedChoice>) -> bool {
        let Some(entries) = &self.entries else {
            return false;
        };
        let bytes = weight(&choices);
        if bytes > self.settings.max_entry_bytes {
            return false;
        }
        if let Some(cluster) = &self.cluster {
            let mut set = redis::cmd("SET");
            set.arg(Self::shared_key(cluster, &key))
                .arg(serde_json::to_string(&choices).unwrap_or_default())
                .arg("PX")
                .arg(self.settings.ttl_secs.saturating_mul(1000).max(1));
            cluster.send_later(set, "filling the shared response cache");
        }
        entries.insert(key, Arc::new(CachedAnswer { choices, bytes }));
        true
    }

    /// The most bytes one answer may take to be stored.
    pub fn max_entry_bytes(&self) -> u64 {
        self.settings.max_entry_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sampler::SamplingParams;

    fn params(temperature: f32, seed: Option<u64>) -> Params {
        Params {
            sampling: SamplingParams {
                temperature,
                seed,
                ..SamplingParams::default()
            },
            ..Params::default()
        }
    }

    fn key(cache: &ResponseCache, who: &Identity, text: &str, p: &Params) -> Key {
        cache.key(
            who,
            &KeyParts {
                model: "m",
                prompts: &[Prompt::Text(text.into())],
                n: 1,
                params: p,
                logprobs: false,
            },
        )
    }

    #[test]
    fn only_deterministic_requests_are_cached() {
        let c = ResponseCache::new(&CacheSettings::default(), None);
        assert!(c.applies(&params(0.0, None), true));
        assert!(c.applies(&params(0.8, Some(7)), true));
        assert!(!c.applies(&params(0.8, None), true));
        assert!(!c.applies(&params(0.0, None), false), "\"cache\": false");
        let off = ResponseCache::new(
            &CacheSettings {
                enabled: false,
                ..Default::default()
            },
            None,
        );
        assert!(!off.applies(&params(0.0, None), true));
    }

    #[test]
    fn keys_are_exact_and_scoped_per_caller_unless_shared() {
        let c = ResponseCache::new(&CacheSettings::default(), None);
        let (a, b) = (Identity::User(1), Identity::User(2));
        let p = params(0.0, None);
        assert_eq!(key(&c, &a, "Hi", &p), key(&c, &a, "Hi", &p));
        assert_ne!(key(&c, &a, "Hi", &p), key(&c, &a, "hi", &p), "case matters");
        assert_ne!(key(&c, &a, "Hi", &p), key(&c, &a, "Hi ", &p));
        assert_ne!(key(&c, &a, "Hi", &p), key(&c, &b, "Hi", &p));
        assert_ne!(
            key(&c, &a, "Hi", &p),
            key(&c, &a, "Hi", &params(0.0, Some(1)))
        );
        let shared = ResponseCache::new(
            &CacheSettings {
                shared: true,
                ..Default::default()
            },
            None,
        );
        assert_eq!(key(&shared, &a, "Hi", &p), key(&shared, &b, "Hi", &p));
    }

    #[tokio::test]
    async fn answers_over_the_entry_cap_are_not_stored() {
        let c = ResponseCache::new(
            &CacheSettings {
                max_entry_bytes: 300,
                ..Default::default()
            },
            None,
        );
        let choice = |text: &str| CachedChoice {
            pieces: vec![Piece {
                text: text.into(),
                logprobs: None,
            }],
            summary: Summary::default(),
        };
        assert!(c.put([1; 32], vec![choice("short")]));
        assert!(c.get(&[1; 32]).await.is_some());
        assert!(!c.put([2; 32], vec![choice(&"x".repeat(400))]));
        assert!(c.get(&[2; 32]).await.is_none());
    }
}
