//! What serves a model: the local engine or a remote OpenAI-compatible server, behind one
//! event stream, and the [`router::Router`] that picks one per request, fails over between them
//! and keeps a circuit breaker per backend.
//!
//! Every backend turns a [`BackendRequest`] into the same [`Event`] stream (started, tokens as
//! they arrive, done with usage, or a classified error), so the API layer (`/v1`, `/ws`) never
//! knows which one answered, except through [`router::Generation::model`].
//!
//! Must not import axum or the API layer.

pub mod breaker;
pub mod local;
pub mod remote;
mod remote_tools;
pub mod router;

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::Stream;

use crate::engine::generate::FinishReason;
use crate::engine::generate::{GenerateRequest, OutputFormat};
use crate::engine::sampler::SamplingParams;
use crate::engine::template::ChatMessage;

pub use router::{Generation, ModelEntry, Router};

/// What to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template (locally) or sent as messages.
    Chat(Vec<ChatMessage>),
    /// Raw text (legacy completions).
    Text(String),
    /// Token ids (legacy completions; only meaningful to the model whose vocabulary they use).
    Tokens(Vec<u32>),
}

/// Everything of a generation but its prompt: sampling, the token limit, stop strings, how many
/// alternatives to report per token, and the output format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Stop strings (never emitted).
    pub stop: Vec<String>,
    /// Top alternatives to report per token (0 = none).
    pub top_logprobs: usize,
    /// Free text or a JSON object.
    pub format: OutputFormat,
    /// The tools offered, if any (rendered into the prompt; calls parsed from the answer).
    pub tools: Option<std::sync::Arc<crate::engine::tools::ToolSet>>,
    /// llama-server's `add_generation_prompt: false`: a chat prompt ends after its last
    /// message, without the assistant's opener (and a final assistant message is closed, not
    /// continued).
    pub no_generation_prompt: bool,
}

impl Params {
    /// The engine's request for these parameters on a tokenized prompt.
    pub fn with_prompt(&self, prompt_ids: Vec<u32>) -> GenerateRequest {
        GenerateRequest {
            prompt_ids,
            sampling: self.sampling.clone(),
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            logprobs: self.top_logprobs,
            format: self.format.clone(),
        }
    }
}

/// One generation (one choice) as the API layer asks for it, backend-neutral.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling, limits, stop strings, logprobs count and output format.
    pub params: Params,
    /// Whether the client asked for log-probabilities.
    pub logprobs: bool,
    /// Whether the client streams. Remote backends then stream too; otherwise they make one
    /// plain request.
    pub stream: bool,
}

/// How a generation ended, whichever backend ran it: totals, the whole visible text, and
/// timings measured where they can be — on the model thread for the local model; at Hearth's
/// end for a remote one (the time to its first chunk as `prompt_time`, the rest as
/// `decode_time`, nothing queued here).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens (a remote model's own count; 0 when it reports none).
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV was reused.
    pub cached_prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// The whole visible text.
    pub text: String,
    /// Time spent waiting for a slot.
    pub queued: Duration,
    /// Time to process the prompt (remote: to the first chunk).
    pub prompt_time: Duration,
    /// Time from the end of the prompt to the last token.
    pub decode_time: Duration,
}

impl From<crate::engine::scheduler::Summary> for Summary {
    fn from(s: crate::engine::scheduler::Summary) -> Self {
        Self {
            finish_reason: s.finish_reason,
            prompt_tokens: s.prompt_tokens,
            cached_prompt_tokens: s.cached_prompt_tokens,
            completion_tokens: s.completion_tokens,
            text: s.text,
            queued: s.queued,
            prompt_time: s.prompt_time,
            decode_time: s.decode_time,
        }
    }
}

/// A sampled token's log-probability and its top alternatives, as text.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenLogprobs {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// The most likely tokens at that step.
    pub top: Vec<(String, f32)>,
}

/// What a backend reports about one generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Work began (the local model took the job from its queue).
    Started,
    /// A token and the text it made visible (may be empty while a stop string is held back).
    Token {
        /// Newly visible text.
        text: String,
        /// Log-probabilities, when asked for (never for end-of-generation tokens).
        logprobs: Option<TokenLogprobs>,
        /// When it was sampled (local) or received (remote).
        sampled_at: Instant,
    },
    /// Text released at the end without a token of its own.
    Text(String),
    /// The generation ended normally; the last event.
    Done(Summary),
    /// The generation failed; the last event.
    Error(BackendError),
}

/// The stream every backend produces. Dropping it cancels the generation (the local job, or
/// the remote HTTP request).
pub type EventStream = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// Classes of failure, for failover, the circuit breaker, metrics and status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is unacceptable (400). Never failed over: another backend would
    /// refuse it too.
    InvalidRequest,
    /// No backend serves this model id (404).
    UnknownModel,
    /// The local queue is full (429).
    Overloaded,
    /// The local queue deadline passed (504).
    QueueTimeout,
    /// The remote server could not be reached.
    Connect,
    /// The remote server was too slow (connect, first token or whole generation).
    Timeout,
    /// The remote server answered 429.
    RateLimited,
    /// The remote server answered 5xx.
    ServerError,
    /// The remote server refused us (401, 403, 404…): a key or model misconfigured here.
    Rejected,
    /// The remote reply could not be understood.
    Malformed,
    /// The local engine failed or stopped.
    Internal,
    /// Every backend that could serve the request is failing (breakers open).
    Unavailable,
}

impl ErrorKind {
    /// Whether the request may move to the next backend when this happens before its first
    /// token.
    pub fn fails_over(self) -> bool {
        !matches!(self, ErrorKind::InvalidRequest | ErrorKind::UnknownModel)
    }

    /// Whether this says the backend is unhealthy (counts toward opening its breaker). A full
    /// or slow local queue is load, not ill health: it fails over but never opens the breaker,
    /// which would turn a busy minute into a refused half-minute.
    pub fn is_health_failure(self) -> bool {
        !matches!(
            self,
            ErrorKind::InvalidRequest
                | ErrorKind::UnknownModel
                | ErrorKind::Overloaded
                | ErrorKind::QueueTimeout
                | ErrorKind::Unavailable
        )
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::UnknownModel => "unknown_model",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::QueueTimeout => "queue_timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Internal => "internal",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

/// A classified failure with a message safe to show the client (never a key or a prompt).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// The class.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
    /// The request field to blame, for `InvalidRequest`.
    pub param: Option<String>,
}

impl BackendError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 naming the parameter.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidRequest,
            message: message.into(),
            param: Some(param.into()),
        }
    }
}
