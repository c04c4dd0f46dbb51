//! Prometheus metrics (OpenMetrics text at `GET /metrics`), through the official
//! `prometheus-client` crate.
//!
//! Owns the registry and every metric: HTTP requests by route, method and status; the
//! scheduler's queue depth, active sequences, rejections, cancellations, timeouts and prefix-cache
//! reuse (read from [`SchedulerStats`] at scrape time, so the model thread pays nothing); and,
//! per model, time to first token, the gap between tokens, token counters and how long a sampled
//! token takes to reach the HTTP layer. [`Observed`] wraps a job's event receiver and records the
//! per-token figures as events pass, for every transport (JSON, SSE, WebSocket).
//!
//! Knows nothing about HTTP frameworks: the API layer calls in with plain values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::scheduler::{Event, SchedulerStats};

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/v1/chat/completions`), or `unmatched` (never the raw path, so
    /// scanners cannot blow up the label set).
    pub route: String,
    /// HTTP method.
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
        }
    }

    /// Count one answered HTTP request.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method.to_string(),
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

    /// Wrap a job's events so its token timings and counts are recorded as they pass.
    pub fn observe(
        self: &Arc<Self>,
        model: &str,
        submitted: Instant,
        rx: UnboundedReceiver<Event>,
    ) -> Observed {
        // Resolve the model's series once per job, not per token (each lookup takes a lock).
        let labels = ModelLabels {
            model: model.to_string(),
        };
        Observed {
            rx,
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
}

/// A job's event receiver that records metrics as events are taken.
#[derive(Debug)]
pub struct Observed {
    rx: UnboundedReceiver<Event>,
    ttft: Histogram,
    token_gap: Histogram,
    delivery: Histogram,
    prompt_tokens: Counter,
    cached_prompt_tokens: Counter,
    completion_tokens: Counter,
    submitted: Instant,
    last_token: Option<Instant>,
}

impl Observed {
    /// The next event, as [`UnboundedReceiver::recv`]. Dropping this cancels the job.
    pub async fn recv(&mut self) -> Option<Event> {
        let ev = self.rx.recv().await?;
        match &ev {
            Event::Token { sampled_at, .. } => {
                self.delivery.observe(sampled_at.elapsed().as_secs_f64());
                match self.last_token {
                    None => self
                        .ttft
                        .observe(sampled_at.duration_since(self.submitted).as_secs_f64()),
                    Some(prev) => self
                        .token_gap
                        .observe(sampled_at.duration_since(prev).as_secs_f64()),
                }
                self.last_token = Some(*sampled_at);
            }
            Event::Done(s) => {
                self.prompt_tokens.inc_by(s.prompt_tokens as u64);
                self.cached_prompt_tokens
                    .inc_by(s.cached_prompt_tokens as u64);
                self.completion_tokens.inc_by(s.completion_tokens as u64);
            }
            _ => {}
        }
        Some(ev)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
