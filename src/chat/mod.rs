//! The one generation service. Every transport — `/v1` plain and SSE, `/ws`, the conversation
//! API — hands it a validated [`Ask`] for a [`Caller`] and only encodes what comes back:
//!
//! admission (requests per minute, running generations, daily tokens: [`admission`]) → the
//! response cache ([`cache`]) → the backend router (local model or remote, with failover) →
//! transport-neutral [`Output`]s from a [`Run`] → one `on_finish` however the run ends (all
//! choices done, an error, or the client gone): usage recorded, the quota charged, the cache
//! filled, metrics counted, the concurrency permit returned.
//!
//! Knows no HTTP: must not import axum or the API layer.

pub mod admission;
pub mod cache;
pub mod context;
pub mod conversation;
mod followups;
pub mod guard;
pub mod live;
pub mod models;
pub mod relay;
pub mod run;
pub mod shared_budgets;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

pub use admission::{Identity, RateStatus, Refusal, TokenStatus};
pub use run::{Output, Run, Usage};

use crate::auth::Principal;
use crate::backends::{BackendError, Params, Prompt, Router};
use crate::cluster::events::{Event, Events};
use crate::cluster::Cluster;
use crate::config::{ChatSettings, Config};
use crate::engine::generate::{Engine, FinishReason};
use crate::metrics::Metrics;
use crate::store::Store;
use admission::Admission;
use cache::{KeyParts, ResponseCache};

/// Who a generation is for: the authenticated principal and the client's address (what
/// anonymous callers are limited by).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The credential's owner.
    pub principal: Principal,
    /// The client IP (after trusted proxies).
    pub ip: IpAddr,
}

impl Caller {
    /// Whom limits, quotas and the cache count this caller as.
    pub fn identity(&self) -> Identity {
        match &self.principal {
            Principal::User { user, .. } => Identity::User(user.id),
            Principal::StaticKey => Identity::StaticKey,
            Principal::Anonymous => Identity::Ip(crate::limits::client_key(self.ip)),
        }
    }
}

/// One validated request: `n` choices for each prompt, on `model`.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The model id asked for.
    pub model: String,
    /// The prompts (several only for legacy completions); choice `i` answers prompt `i / n`.
    pub prompts: Vec<Prompt>,
    /// Choices per prompt; each choice's seed is offset by its index so they differ.
    pub n: usize,
    /// Sampling and limits.
    pub params: Params,
    /// Whether log-probabilities were asked for.
    pub logprobs: bool,
    /// Whether the client streams (remote backends then stream too).
    pub stream: bool,
    /// Whether the request lets the cache answer (`"cache": false` says no).
    pub cache: bool,
}

/// Why a generation did not start.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A per-caller limit refused it.
    #[error(transparent)]
    Limited(#[from] Refusal),
    /// No backend could start it.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The caller may not use that model.
    #[error(transparent)]
    NotAllowed(#[from] models::NotAllowed),
}

/// Conversation answers generating now, by message id.
type LiveRegistry = Mutex<HashMap<String, Arc<live::LiveMessage>>>;

fn lock_live(
    live: &LiveRegistry,
) -> std::sync::MutexGuard<'_, HashMap<String, Arc<live::LiveMessage>>> {
    // A map of handles: a poisoned lock holds nothing half-written worth refusing.
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `finish_reason` as OpenAI spells it (a cancelled choice ends as `stop`).
pub fn finish_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

/// `finish_reason` of a choice that made `calls` tool calls: `tool_calls` when it ended by
/// itself after making some.
pub fn finish_with_calls(reason: FinishReason, calls: usize) -> &'static str {
    match reason {
        FinishReason::Stop if calls > 0 => "tool_calls",
        other => finish_str(other),
    }
}

struct Inner {
    router: Arc<Router>,
    store: Store,
    metrics: Arc<Metrics>,
    admission: Admission,
    cache: ResponseCache,
    /// The local model's tokenizer and context length, for fitting conversation turns.
    engine: Arc<Engine>,
    chat: ChatSettings,
    memory: crate::config::MemorySettings,
    live: LiveRegistry,
    policy: models::PolicyCell,
    prefs: models::PreferenceCache,
    guards: Arc<guard::Guards>,
    /// What this process tells the other replicas (and itself).
    events: Events,
    /// With `cache.url`: answers generating here are mirrored to Redis, and answers generating
    /// elsewhere are followed from there.
    relay: Option<relay::Relay>,
    /// Shutdown: answers generating for nobody are waited for, then stopped.
    drain: crate::shutdown::Drain,
}

/// The generation service (cheap to clone).
#[derive(Clone)]
pub struct ChatService {
    inner: Arc<Inner>,
}

impl ChatService {
    /// The service over `router`, with `[limits]`, `[cache]` and `[chat]` from `config`.
    pub fn new(
        config: &Config,
        router: Arc<Router>,
        store: Store,
        metrics: Arc<Metrics>,
        engine: Arc<Engine>,
        drain: crate::shutdown::Drain,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        let events = Events::new(cluster.clone());
        let shared = cluster.clone().map(shared_budgets::SharedBudgets::new);
        Self {
            inner: Arc::new(Inner {
                drain,
                router,
                engine,
                chat: config.chat.clone(),
                memory: config.memory.clone(),
                live: Mutex::new(HashMap::new()),
                policy: Default::default(),
                guards: Arc::new(guard::Guards::new(&config.guard, &config.filters)),
                prefs: moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(std::time::Duration::from_secs(3600))
                    .build(),
                admission: Admission::new(config.limits.clone(), store.clone(), shared),
                cache: ResponseCache::new(&config.cache, cluster.clone()),
                relay: cluster.map(relay::Relay::new),
                events,
                store,
                metrics,
            }),
        }
    }

    /// The backend router.
    pub fn router(&self) -> &Arc<Router> {
        &self.inner.router
    }

    /// Where `caller` stands with the request budget and the daily tokens, spending nothing.
    pub async fn limits_status(
        &self,
        caller: &Caller,
    ) -> (Option<RateStatus>, Option<TokenStatus>) {
        self.inner.admission.status(&caller.identity()).await
    }

    /// The limits that apply to `caller` (the server's, with a user's overrides on top).
    pub fn limits_for(&self, caller: &Caller) -> crate::config::LimitsSettings {
        self.inner.admission.limits_for(&caller.identity())
    }

    /// The bus other replicas hear this one on.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Act on events (this process's and the other replicas'): drop a user's cached
    /// preferences, reload the admin's settings, stop an answer generating here.
    pub fn spawn_event_listener(&self) -> tokio::task::JoinHandle<()> {
        let (service, mut events) = (self.clone(), self.inner.events.subscribe());
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::Resync,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                match event {
                    Event::Preferences { user } => service.inner.prefs.invalidate(&user),
                    Event::Settings | Event::Resync => {
                        if event == Event::Resync {
                            service.inner.prefs.invalidate_all();
                        }
                        if let Err(e) = service.load_settings().await {
                            tracing::warn!(error = %e, "reloading the admin's settings failed");
                        }
                    }
                    Event::Cancel { owner, message } => {
                        service.cancel_here(owner, &message);
                    }
                    Event::Credentials { .. } => {}
                }
            }
        })
    }

    /// An admin's overrides of `[limits]` for `user_id`.
    pub fn limit_override(&self, user_id: i64) -> crate::store::preferences::LimitOverride {
        self.inner.admission.override_of(user_id)
    }

    /// Store and apply `user_id`'s overrides.
    pub async fn set_limit_override(
        &self,
        user_id: i64,
        o: crate::store::preferences::LimitOverride,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.admission.set_override(user_id, o).await?;
        self.inner.events.publish(Event::Settings);
        Ok(())
    }

    /// Admit, then answer from the cache or start every choice. Returns once each choice has
    /// its first token (so every failure before it is still a plain error); `on_started` runs
    /// when a backend begins work. Dropping the [`Run`] cancels what is still generating.
    pub async fn start(
        &self,
        caller: &Caller,
        ask: Ask,
        on_started: &(dyn Fn() + Send + Sync),
    ) -> Result<Run, ChatError> {
        let inner = &self.inner;
        self.check_allowed(&caller.principal, &ask.model)?;
        let tool_calls = ask
            .params
            .tools
            .as_ref()
            .filter(|t| t.offered())
            .map(|t| t.max_calls());
        let identity = caller.identity();
        let ticket = inner.admission.admit(&identity).await.inspect_err(|r| {
            inner.metrics.chat_event(r.event());
        })?;
        let key = inner.cache.applies(&ask.params, ask.cache).then(|| {
            inner.cache.key(
                &identity,
                &KeyParts {
                    model: &ask.model,
                    prompts: &ask.prompts,
                    n: ask.n,
                    params: &ask.params,
                    logprobs: ask.logprobs,
                },
            )
        });
        let finisher = run::Finisher {
            service: self.clone(),
            principal: caller.principal.clone(),
            identity,
            ticket,
            cache_key: key,
            asked: ask.model.clone(),
        };
        if let Some(key) = &key {
            if let Some(hit) = inner.cache.get(key).await {
                inner.metrics.chat_event("cache_hit");
                return Ok(Run::replay(&ask.model, &hit, finisher).with_tools(tool_calls));
            }
            inner.metrics.chat_event("cache_miss");
        }
        let (model, params) = (&ask.model, &ask.params);
        let starts = ask.prompts.iter().flat_map(|prompt| {
            (0..ask.n).map(move |i| {
                let mut req = crate::backends::BackendRequest {
                    prompt: prompt.clone(),
                    params: params.clone(),
                    logprobs: ask.logprobs,
                    stream: ask.stream,
                };
                if let Some(seed) = req.params.sampling.seed {
                    req.params.sampling.seed = Some(seed.wrapping_add(i as u64));
                }
                async move { inner.router.start(model, &req, on_started).await }
            })
        });
        // Any failure fails the request; the choices already started are dropped (cancelled).
        let generations = futures::future::join_all(starts)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Run::live(
            generations,
            ask.n,
            inner.cache.max_entry_bytes(),
            inner.guards.clone(),
            finisher,
        )
        .with_tools(tool_calls))
    }

    /// Count a finished generation for the principal's user and key, on a task of its own:
    /// never delays or fails the request. Anonymous and static-key requests have no account
    /// to count against and are not recorded.
    fn record_usage(&self, principal: &Principal, prompt_tokens: u64, completion_tokens: u64) {
        let Some(user_id) = principal.user_id() else {
            return;
        };
        let api_key_id = principal.api_key_id();
        let store = self.inner.store.clone();
        // A run dropped outside the runtime (at shutdown) has nowhere to write from.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        use tracing::Instrument as _;
        runtime.spawn(
            async move {
                if let Err(e) = store
                    .record_usage(user_id, api_key_id, prompt_tokens, completion_tokens)
                    .await
                {
                    tracing::warn!(user_id, ?api_key_id, error = %e, "recording usage failed");
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
}
