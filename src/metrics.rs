//! Prometheus metrics (OpenMetrics text at `GET /metrics`), through the official
//! `prometheus-client` crate.
//!
//! Owns the registry and every metric: HTTP requests by route, method and status; the
//! scheduler's queue depth, active sequences, rejections, cancellations, timeouts and prefix-cache
//! reuse (read from [`SchedulerStats`] at scrape time, so the model thread pays nothing); and,
//! per model, time to first token, the gap between tokens, token counters and how long a sampled
//! token takes to reach the HTTP layer ([`TokenObserver`], fed by each generation as its events
//! pass, for every transport); per backend, request outcomes, errors by class, first-reply
//! latency, failovers and circuit-breaker state.
//!
//! Knows nothing about HTTP frameworks: the API layer calls in with plain values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::scheduler::SchedulerStats;

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/v1/chat/completions`), or `unmatched` (never the raw path, so
    /// scanners cannot blow up the label set).
    pub route: String,
    /// HTTP method: one of the standard ones, or `other` (a client can send any token as a
    /// method, and each would otherwise become a series forever).
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// A route label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template.
    pub route: String,
}

/// A model label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The model id clients use.
    pub model: String,
}

/// A backend label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The backend's name in `[[backends]]`.
    pub backend: String,
}

/// A backend and how a request attempt on it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendOutcome {
    /// The backend's name.
    pub backend: String,
    /// `ok`, `failed` or `skipped`.
    pub outcome: String,
}

/// A backend and an error class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendErrorLabels {
    /// The backend's name.
    pub backend: String,
    /// `connect`, `timeout`, `rate_limited`, `server_error`, `malformed`, …
    pub kind: String,
}

/// Something the generation service decided, from a fixed set (never client input).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChatEventLabels {
    /// `cache_hit`, `cache_miss`, `cache_fill`, `limited_requests`, `limited_concurrency`,
    /// `limited_tokens`.
    pub event: &'static str,
}

/// Where a request failed over from and to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    /// The backend the model id routes to.
    pub from: String,
    /// The backend that was tried instead.
    pub to: String,
}

fn backend_latency_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

fn ttft_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

fn token_gap_histogram() -> Histogram {
    Histogram::new([
        0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
    ])
}

fn delivery_histogram() -> Histogram {
    Histogram::new([
        0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
    ])
}

fn request_duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    ttft: Family<ModelLabels, Histogram>,
    token_gap: Family<ModelLabels, Histogram>,
    delivery: Family<ModelLabels, Histogram>,
    prompt_tokens: Family<ModelLabels, Counter>,
    cached_prompt_tokens: Family<ModelLabels, Counter>,
    completion_tokens: Family<ModelLabels, Counter>,
    backend_requests: Family<BackendOutcome, Counter>,
    backend_errors: Family<BackendErrorLabels, Counter>,
    backend_latency: Family<BackendLabels, Histogram>,
    failovers: Family<FailoverLabels, Counter>,
    breaker_state: Family<BackendLabels, Gauge>,
    breaker_opened: Family<BackendLabels, Counter>,
    chat_events: Family<ChatEventLabels, Counter>,
}

impl Metrics {
    /// A registry with every metric, reading the scheduler's counters at scrape time.
    pub fn new(scheduler: Arc<SchedulerStats>, queue_capacity: usize, max_active: usize) -> Self {
        let mut registry = Registry::with_prefix("hearth");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            request_duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response headers (a stream's body continues after)",
            http_duration.clone(),
        );
        let ttft = Family::<ModelLabels, Histogram>::new_with_constructor(
            ttft_histogram as fn() -> Histogram,
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from queueing a generation to sampling its first token",
            ttft.clone(),
        );
        let token_gap = Family::<ModelLabels, Histogram>::new_with_constructor(
            token_gap_histogram as fn() -> Histogram,
        );
        registry.register(
            "time_per_output_token_seconds",
            "Time between consecutive sampled tokens of one generation",
            token_gap.clone(),
        );
        let delivery = Family::<ModelLabels, Histogram>::new_with_constructor(
            delivery_histogram as fn() -> Histogram,
        );
        registry.register(
            "token_delivery_seconds",
            "Time from sampling a token on the model thread to the HTTP layer taking it",
            delivery.clone(),
        );
        let prompt_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "prompt_tokens",
            "Prompt tokens of finished generations",
            prompt_tokens.clone(),
        );
        let cached_prompt_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "cached_prompt_tokens",
            "Prompt tokens served from the prefix cache",
            cached_prompt_tokens.clone(),
        );
        let completion_tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "completion_tokens",
            "Generated tokens of finished generations",
            completion_tokens.clone(),
        );
        let backend_requests = Family::<BackendOutcome, Counter>::default();
        registry.register(
            "backend_requests",
            "Request attempts per backend: ok, failed (before the first token) or skipped (breaker open)",
            backend_requests.clone(),
        );
        let backend_errors = Family::<BackendErrorLabels, Counter>::default();
        registry.register(
            "backend_errors",
            "Backend failures by class, before or after the first token",
            backend_errors.clone(),
        );
        let backend_latency = Family::<BackendLabels, Histogram>::new_with_constructor(
            backend_latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "backend_first_reply_seconds",
            "Time from sending a request to a backend to its first token (whole reply when not streamed)",
            backend_latency.clone(),
        );
        let failovers = Family::<FailoverLabels, Counter>::default();
        registry.register(
            "backend_failovers",
            "Requests moved to another backend after a failure before the first token",
            failovers.clone(),
        );
        let breaker_state = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_breaker_state",
            "Circuit breaker per backend: 0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        let breaker_opened = Family::<BackendLabels, Counter>::default();
        registry.register(
            "backend_breaker_opened",
            "Times a backend's circuit breaker opened",
            breaker_opened.clone(),
        );
        let chat_events = Family::<ChatEventLabels, Counter>::default();
        registry.register(
            "chat_events",
            "Decisions of the generation service: response-cache hits, misses and fills, \
             refusals by per-user limit",
            chat_events.clone(),
        );
        registry.register_collector(Box::new(SchedulerCollector {
            stats: scheduler,
            queue_capacity,
            max_active,
        }));
        Self {
            registry,
            http_requests,
            http_duration,
            ttft,
            token_gap,
            delivery,
            prompt_tokens,
            cached_prompt_tokens,
            completion_tokens,
            backend_requests,
            backend_errors,
            backend_latency,
            failovers,
            breaker_state,
            breaker_opened,
            chat_events,
        }
    }

    /// Count one decision of the generation service (see [`ChatEventLabels`]).
    pub fn chat_event(&self, event: &'static str) {
        self.chat_events
            .get_or_create(&ChatEventLabels { event })
            .inc();
    }

    /// Count one answered HTTP request.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method_label(method).to_string(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoding error would be a bug in a collector.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// Records one generation's token timings and counts, for the model that answers it.
    /// `submitted` is when the request was made (time to first token counts from there).
    pub fn observer(&self, model: &str, submitted: Instant) -> TokenObserver {
        // Resolve the model's series once per generation, not per token (each lookup locks).
        let labels = ModelLabels {
            model: model.to_string(),
        };
        TokenObserver {
            ttft: self.ttft.get_or_create(&labels).clone(),
            token_gap: self.token_gap.get_or_create(&labels).clone(),
            delivery: self.delivery.get_or_create(&labels).clone(),
            prompt_tokens: self.prompt_tokens.get_or_create(&labels).clone(),
            cached_prompt_tokens: self.cached_prompt_tokens.get_or_create(&labels).clone(),
            completion_tokens: self.completion_tokens.get_or_create(&labels).clone(),
            submitted,
            last_token: None,
        }
    }

    /// A request attempt on a backend ended: `ok`, `failed` or `skipped` (breaker open).
    pub fn backend_request(&self, backend: &str, outcome: &'static str) {
        self.backend_requests
            .get_or_create(&BackendOutcome {
                backend: backend.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A backend failed, before or after its first token; `kind` is the error class.
    pub fn backend_error(&self, backend: &str, kind: &'static str) {
        self.backend_errors
            .get_or_create(&BackendErrorLabels {
                backend: backend.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// How long a backend took to its first token (or whole reply, when not streamed).
    pub fn backend_latency(&self, backend: &str, elapsed: Duration) {
        self.backend_latency
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A request moved from the backend it asked for to another.
    pub fn failover(&self, from: &str, to: &str) {
        self.failovers
            .get_or_create(&FailoverLabels {
                from: from.to_string(),
                to: to.to_string(),
            })
            .inc();
    }

    /// A backend's breaker state (0 closed, 1 open, 2 half-open).
    pub fn breaker_state(&self, backend: &str, code: i64) {
        self.breaker_state
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .set(code);
    }

    /// A backend's breaker opened.
    pub fn breaker_opened(&self, backend: &str) {
        self.breaker_opened
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .inc();
    }
}

/// Records one generation's per-token figures as its events pass, whatever the transport.
#[derive(Debug)]
pub struct TokenObserver {
    ttft: Histogram,
    token_gap: Histogram,
    delivery: Histogram,
    prompt_tokens: Counter,
    cached_prompt_tokens: Counter,
    completion_tokens: Counter,
    submitted: Instant,
    last_token: Option<Instant>,
}

impl TokenObserver {
    /// A token sampled (or received) at `sampled_at` reached the API layer now.
    pub fn token(&mut self, sampled_at: Instant) {
        self.delivery.observe(sampled_at.elapsed().as_secs_f64());
        match self.last_token {
            None => self
                .ttft
                .observe(sampled_at.duration_since(self.submitted).as_secs_f64()),
            Some(prev) => self
                .token_gap
                .observe(sampled_at.duration_since(prev).as_secs_f64()),
        }
        self.last_token = Some(sampled_at);
    }

    /// The generation finished with these totals.
    pub fn done(&self, prompt: usize, cached: usize, completion: usize) {
        self.prompt_tokens.inc_by(prompt as u64);
        self.cached_prompt_tokens.inc_by(cached as u64);
        self.completion_tokens.inc_by(completion as u64);
    }
}

/// Reads the scheduler's atomics on each scrape.
#[derive(Debug)]
struct SchedulerCollector {
    stats: Arc<SchedulerStats>,
    queue_capacity: usize,
    max_active: usize,
}

impl Collector for SchedulerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let gauges: [(&str, &str, i64); 4] = [
            (
                "queue_depth",
                "Generations waiting for a slot",
                s.queued.load(Relaxed) as i64,
            ),
            (
                "queue_capacity",
                "Most generations that may wait (config)",
                self.queue_capacity as i64,
            ),
            (
                "active_sequences",
                "Generations in progress on the model thread",
                s.active.load(Relaxed) as i64,
            ),
            (
                "max_active_sequences",
                "Most generations in progress at once (config)",
                self.max_active as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let counters: [(&str, &str, u64); 6] = [
            (
                "requests_rejected",
                "Generations refused because the queue was full",
                s.rejected.load(Relaxed),
            ),
            (
                "requests_cancelled",
                "Generations stopped because their client went away",
                s.cancelled.load(Relaxed),
            ),
            (
                "requests_timed_out",
                "Generations that waited in the queue past the deadline",
                s.timed_out.load(Relaxed),
            ),
            (
                "requests_completed",
                "Generations that ran to their end",
                s.completed.load(Relaxed),
            ),
            (
                "prefix_cache_hits",
                "Generations that reused a cached prompt prefix",
                s.prefix_hits.load(Relaxed),
            ),
            (
                "prefix_cache_tokens_reused",
                "Prompt tokens whose KV came from the prefix cache",
                s.prefix_tokens_reused.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

/// The label for an HTTP method: the standard methods as themselves, anything else `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_http_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("get"), "other");
    }

    #[test]
    fn renders_openmetrics_with_every_family() {
        let stats = Arc::new(SchedulerStats::default());
        stats
            .rejected
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let m = Metrics::new(stats, 16, 4);
        m.http_request("/v1/models", "GET", 200, Duration::from_millis(2));
        let text = m.render();
        for needle in [
            "hearth_http_requests_total{route=\"/v1/models\",method=\"GET\",status=\"200\"} 1",
            "hearth_requests_rejected_total 3",
            "hearth_queue_capacity 16",
            "hearth_max_active_sequences 4",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    /// Every series name the Grafana dashboard in `deploy/grafana/` queries is one this module
    /// renders, with every family touched once.
    #[test]
    fn the_grafana_dashboard_queries_only_series_hearth_exports() {
        let m = Metrics::new(Arc::new(SchedulerStats::default()), 16, 4);
        m.http_request("/v1/models", "GET", 200, Duration::from_millis(2));
        m.chat_event("cache_hit");
        m.backend_request("remote", "ok");
        m.backend_error("remote", "timeout");
        m.backend_latency("remote", Duration::from_millis(3));
        m.failover("remote", "local");
        m.breaker_state("remote", 1);
        m.breaker_opened("remote");
        let start = Instant::now();
        let mut o = m.observer("model", start);
        o.token(start);
        o.token(Instant::now());
        o.done(3, 1, 2);
        let text = m.render();
        let rendered: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../deploy/grafana/hearth-dashboard.json"))
                .expect("the dashboard is JSON");
        let mut queried = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                let mut rest = expr;
                while let Some(at) = rest.find("hearth_") {
                    let name: String = rest[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    rest = &rest[at + name.len()..];
                    queried.push(name);
                }
            }
        }
        assert!(queried.len() >= 20, "{queried:?}");
        for name in &queried {
            assert!(
                rendered.contains(name.as_str()),
                "the dashboard queries {name}, which Hearth does not export: {rendered:?}"
            );
        }
    }
}
