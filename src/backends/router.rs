//! Routes each request to the backend serving its model, and fails over.
//!
//! A request goes to the backend whose model id (or alias) it names. If that backend fails
//! before the first token (connect error, timeout, 429, 5xx, a malformed reply, a full local
//! queue) the request moves down the backend's `failover` list, each backend answering with the
//! same model id when it serves it, else with its first model. What answered is returned as
//! [`Generation::model`]. Once a token has come out, a failure ends the stream with an `Error`
//! event instead: text already shown cannot be taken back.
//!
//! Each backend has a [`Breaker`]: a backend that keeps failing is skipped without being tried
//! until its cool-down passes, then one probe request tests it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::breaker::{Admission, Breaker};
use super::local::LocalBackend;
use super::remote::RemoteBackend;
use super::{BackendError, BackendRequest, ErrorKind, Event, EventStream};
use crate::config::{BackendKind, BackendSettings};
use crate::metrics::{Metrics, TokenObserver};

/// The implementation behind a backend.
enum Backend {
    Local(LocalBackend),
    Remote(Box<RemoteBackend>),
}

struct Slot {
    name: String,
    backend: Backend,
    breaker: Arc<Breaker>,
    /// Indices of the backends to try next, in order.
    failover: Vec<usize>,
    /// Model ids the backend itself knows (the first is its default).
    models: Vec<String>,
    first_token_timeout: Duration,
    total_timeout: Duration,
}

impl Slot {
    /// The model this backend should answer with when a request for `wanted` reaches it.
    fn model_for(&self, wanted: &str) -> String {
        if self.models.iter().any(|m| m == wanted) {
            wanted.to_string()
        } else {
            self.models.first().cloned().unwrap_or_default()
        }
    }

    /// How long the first reply may take: the first token when streaming, the whole reply
    /// otherwise. The local model has its own queue deadline instead.
    fn head_timeout(&self, stream: bool) -> Option<Duration> {
        match self.backend {
            Backend::Local(_) => None,
            Backend::Remote(_) if stream => Some(self.first_token_timeout),
            Backend::Remote(_) => Some(self.total_timeout),
        }
    }
}

/// A backend as the admin page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// Its configured name.
    pub name: String,
    /// Whether it is the in-process model.
    pub local: bool,
    /// Its circuit breaker now.
    pub breaker: super::breaker::BreakerState,
    /// The model ids it answers.
    pub models: Vec<String>,
    /// The backends tried after it, in order.
    pub failover: Vec<String>,
}

/// A model as `GET /v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The id clients send.
    pub id: String,
    /// The backend serving it.
    pub owned_by: String,
}

/// Every backend, the model ids routed to them, and their breakers.
pub struct Router {
    slots: Vec<Slot>,
    /// Client model id → (backend index, the backend's own model id).
    routes: HashMap<String, (usize, String)>,
    /// Client model ids in configuration order, for listing.
    listing: Vec<(String, usize)>,
    metrics: Arc<Metrics>,
}

impl Router {
    /// Build from `[[backends]]` (already including the local entry, see
    /// [`crate::config::Config::effective_backends`]). The local backend serves
    /// `local_model_id`.
    pub fn new(
        settings: &[BackendSettings],
        local: LocalBackend,
        local_model_id: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut slots = Vec::with_capacity(settings.len());
        for s in settings {
            let (backend, models) = match s.kind {
                BackendKind::Local => (
                    Backend::Local(local.clone()),
                    vec![local_model_id.to_string()],
                ),
                BackendKind::Openai => (
                    Backend::Remote(Box::new(RemoteBackend::new(s)?)),
                    s.models.clone(),
                ),
            };
            slots.push(Slot {
                name: s.name.clone(),
                backend,
                breaker: Arc::new(Breaker::new(
                    s.breaker_failures,
                    Duration::from_secs(s.breaker_cooldown_secs),
                )),
                failover: Vec::new(),
                models,
                first_token_timeout: Duration::from_secs(s.first_token_timeout_secs),
                total_timeout: Duration::from_secs(s.total_timeout_secs),
            });
        }
        let index: HashMap<&str, usize> = settings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        for (i, s) in settings.iter().enumerate() {
            slots[i].failover = s
                .failover
                .iter()
                .map(|name| {
                    index.get(name.as_str()).copied().ok_or_else(|| {
                        format!("backend `{}` fails over to unknown `{name}`", s.name)
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        let mut routes = HashMap::new();
        let mut listing = Vec::new();
        let mut add = |id: &str, slot: usize, target: &str| -> Result<(), String> {
            if let Some((other, _)) = routes.insert(id.to_string(), (slot, target.to_string())) {
                return Err(format!(
                    "model id `{id}` is served by both `{}` and `{}`",
                    settings[other].name, settings[slot].name
                ));
            }
            listing.push((id.to_string(), slot));
            Ok(())
        };
        for (i, s) in settings.iter().enumerate() {
            for m in &slots[i].models {
                add(m, i, m)?;
            }
            for (alias, target) in &s.aliases {
                if !slots[i].models.contains(target) {
                    return Err(format!(
                        "backend `{}`: alias `{alias}` points to `{target}`, which it does not serve",
                        s.name
                    ));
                }
                add(alias, i, target)?;
            }
        }
        for slot in &slots {
            metrics.breaker_state(&slot.name, slot.breaker.state().code());
        }
        Ok(Self {
            slots,
            routes,
            listing,
            metrics,
        })
    }

    /// Every model id with its backend, whether that is the local engine, and whether its
    /// breaker lets requests through now.
    pub fn catalog(&self) -> Vec<(ModelEntry, bool, bool)> {
        let now = Instant::now();
        self.listing
            .iter()
            .map(|(id, slot)| {
                let s = &self.slots[*slot];
                (
                    ModelEntry {
                        id: id.clone(),
                        owned_by: s.name.clone(),
                    },
                    matches!(s.backend, Backend::Local(_)),
                    s.breaker.is_available(now),
                )
            })
            .collect()
    }

    /// Every backend with its breaker state, in configuration order.
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.slots
            .iter()
            .map(|s| BackendStatus {
                name: s.name.clone(),
                local: matches!(s.backend, Backend::Local(_)),
                breaker: s.breaker.state(),
                models: s.models.clone(),
                failover: s
                    .failover
                    .iter()
                    .map(|&i| self.slots[i].name.clone())
                    .collect(),
            })
            .collect()
    }

    /// Models of every backend whose breaker would let a request through now.
    pub fn list_models(&self) -> Vec<ModelEntry> {
        let now = Instant::now();
        self.listing
            .iter()
            .filter(|(_, slot)| self.slots[*slot].breaker.is_available(now))
            .map(|(id, slot)| ModelEntry {
                id: id.clone(),
                owned_by: self.slots[*slot].name.clone(),
            })
            .collect()
    }

    /// The backend serving `model` (healthy or not).
    pub fn owner(&self, model: &str) -> Option<&str> {
        self.routes
            .get(model)
            .map(|(slot, _)| self.slots[*slot].name.as_str())
    }

    /// Whether some backend serves `model` (healthy or not).
    pub fn serves(&self, model: &str) -> bool {
        self.routes.contains_key(model)
    }

    /// Whether `model` is served by the local engine (whose tokenizer then speaks for it).
    pub fn is_local(&self, model: &str) -> bool {
        self.routes
            .get(model)
            .is_some_and(|(slot, _)| matches!(self.slots[*slot].backend, Backend::Local(_)))
    }

    /// Start one generation for `model`, failing over before the first token. Returns once
    /// the first token (or the whole reply) is in, so every failure before it can still become
    /// a plain HTTP error. `on_started` runs when a backend begins work (the local model took
    /// the job from its queue).
    pub async fn start(
        &self,
        model: &str,
        req: &BackendRequest,
        on_started: &(dyn Fn() + Send + Sync),
    ) -> Result<Generation, BackendError> {
        let submitted = Instant::now();
        let Some((first, wanted)) = self.routes.get(model) else {
            return Err(BackendError {
                kind: ErrorKind::UnknownModel,
                message: format!("The model `{model}` does not exist"),
                param: Some("model".into()),
            });
        };
        let chain = std::iter::once(*first).chain(self.slots[*first].failover.iter().copied());
        let mut last: Option<BackendError> = None;
        for (position, i) in chain.enumerate() {
            let slot = &self.slots[i];
            let admission = slot.breaker.admit(Instant::now());
            self.metrics
                .breaker_state(&slot.name, slot.breaker.state().code());
            if admission == Admission::Skip {
                self.metrics.backend_request(&slot.name, "skipped");
                last.get_or_insert_with(|| {
                    BackendError::new(
                        ErrorKind::Unavailable,
                        "The model's backends are failing; retry shortly.",
                    )
                });
                continue;
            }
            if position > 0 {
                self.metrics.failover(&self.slots[*first].name, &slot.name);
                tracing::warn!(from = %self.slots[*first].name, to = %slot.name, "failing over");
            }
            let target = if position == 0 {
                wanted.clone()
            } else {
                slot.model_for(wanted)
            };
            let began = Instant::now();
            match self.attempt(slot, &target, req, on_started).await {
                Ok((head, rest, prompt_tokens)) => {
                    slot.breaker.record_success();
                    self.metrics
                        .breaker_state(&slot.name, slot.breaker.state().code());
                    self.metrics.backend_request(&slot.name, "ok");
                    self.metrics.backend_latency(&slot.name, began.elapsed());
                    return Ok(Generation {
                        observer: self.metrics.observer(&target, submitted),
                        model: target,
                        prompt_tokens,
                        head,
                        rest,
                        health: Some(Health {
                            backend: slot.name.clone(),
                            breaker: slot.breaker.clone(),
                            metrics: self.metrics.clone(),
                        }),
                    });
                }
                Err(e) => {
                    self.metrics.backend_request(&slot.name, "failed");
                    self.metrics.backend_error(&slot.name, e.kind.label());
                    let now = Instant::now();
                    if e.kind.is_health_failure() {
                        if slot.breaker.record_failure(now) {
                            tracing::warn!(backend = %slot.name, "circuit breaker opened");
                            self.metrics.breaker_opened(&slot.name);
                        }
                    } else if admission == Admission::Probe {
                        slot.breaker.release_probe(now);
                    }
                    self.metrics
                        .breaker_state(&slot.name, slot.breaker.state().code());
                    if !e.kind.fails_over() {
                        return Err(e);
                    }
                    tracing::warn!(
                        backend = %slot.name,
                        kind = e.kind.label(),
                        error = %e,
                        "backend failed before the first token"
                    );
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| BackendError::new(ErrorKind::Unavailable, "no backend")))
    }

    /// Start on one backend and wait for its first content (token, text or the end).
    async fn attempt(
        &self,
        slot: &Slot,
        model: &str,
        req: &BackendRequest,
        on_started: &(dyn Fn() + Send + Sync),
    ) -> Result<(VecDeque<Event>, EventStream, usize), BackendError> {
        let work = async {
            let (mut stream, prompt_tokens) = match &slot.backend {
                Backend::Local(local) => local.start(req).await?,
                Backend::Remote(remote) => (remote.start(model, req).await?, 0),
            };
            loop {
                match stream.next().await {
                    Some(Event::Started) => on_started(),
                    Some(Event::Error(e)) => return Err(e),
                    Some(ev) => return Ok((VecDeque::from([ev]), stream, prompt_tokens)),
                    None => {
                        return Err(BackendError::new(
                            ErrorKind::Malformed,
                            "the backend ended without a reply",
                        ))
                    }
                }
            }
        };
        match slot.head_timeout(req.stream) {
            None => work.await,
            Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(BackendError::new(
                    ErrorKind::Timeout,
                    "the remote server sent nothing within its first-token timeout",
                ))
            }),
        }
    }
}

/// Reports a failure after the first token to the backend's breaker and metrics.
struct Health {
    backend: String,
    breaker: Arc<Breaker>,
    metrics: Arc<Metrics>,
}

/// One running generation: its events, and which model and backend answered.
pub struct Generation {
    /// The model that is answering (after any failover).
    pub model: String,
    /// Prompt tokens, when known before the end (local model); else 0 until `Done`.
    pub prompt_tokens: usize,
    head: VecDeque<Event>,
    rest: EventStream,
    observer: TokenObserver,
    health: Option<Health>,
}

impl Generation {
    /// The next event; `None` after the last. Dropping the generation cancels it.
    pub async fn recv(&mut self) -> Option<Event> {
        let ev = match self.head.pop_front() {
            Some(ev) => ev,
            None => self.rest.next().await?,
        };
        match &ev {
            Event::Token { sampled_at, .. } => self.observer.token(*sampled_at),
            Event::Done(s) => {
                self.observer
                    .done(s.prompt_tokens, s.cached_prompt_tokens, s.completion_tokens)
            }
            Event::Error(e) => {
                if let Some(h) = self.health.take() {
                    h.metrics.backend_error(&h.backend, e.kind.label());
                    if e.kind.is_health_failure() && h.breaker.record_failure(Instant::now()) {
                        tracing::warn!(backend = %h.backend, "circuit breaker opened");
                        h.metrics.breaker_opened(&h.backend);
                    }
                    h.metrics
                        .breaker_state(&h.backend, h.breaker.state().code());
                }
            }
            _ => {}
        }
        Some(ev)
    }
}
