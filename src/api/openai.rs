//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions`,
//! `POST /v1/completions`, streaming (SSE) and not.
//!
//! Requests are parsed leniently (unknown fields and explicit `null`s are accepted), validated
//! into an engine [`GenerateRequest`] with errors naming the parameter, then queued on the
//! scheduler. Dropping the response (client gone) drops the event receiver, which cancels the
//! generation on the model thread.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::engine::generate::{FinishReason, GenerateRequest, OutputFormat};
use crate::engine::sampler::SamplingParams;
use crate::engine::scheduler::{Event, JobErrorKind, Summary};
use crate::engine::template::ChatMessage;
use crate::metrics::Observed;

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    /// A single stop string.
    One(String),
    /// Up to four stop strings.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with usage before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Message content: a string or a list of parts (only text parts are supported).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": "..."}]`.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// Part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message as sent by clients.
#[derive(Debug, Deserialize)]
pub struct RequestMessage {
    /// `system`, `user`, `assistant` (or `developer`, treated as `system`).
    pub role: String,
    /// The content (null allowed for assistant messages).
    #[serde(default)]
    pub content: Option<Content>,
}

/// Sampling and limit fields shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct CommonParams {
    /// Model id.
    #[serde(default)]
    pub model: Option<String>,
    /// Legacy token limit.
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Token limit (chat).
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    /// Temperature, 0–2.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus mass.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Extension: top-k.
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Extension: min-p.
    #[serde(default)]
    pub min_p: Option<f32>,
    /// Extension: repetition penalty.
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Choices to generate.
    #[serde(default)]
    pub n: Option<i64>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<StopSpec>,
    /// Stream with SSE.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// -2..2.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// -2..2.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Token id (as a string) → bias in -100..100.
    #[serde(default)]
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Seed for reproducible sampling.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Caller id (accepted, not used for generation).
    #[serde(default)]
    pub user: Option<String>,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<RequestMessage>,
    /// Return log-probabilities.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// How many alternatives per token (0–20), with `logprobs`.
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    /// `{"type": "text"}` or `{"type": "json_object"}`.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Tool definitions: accepted, never called (the model has no tool-call format).
    #[serde(default)]
    pub tools: Option<Value>,
    /// `none`/`auto` are honoured by answering in text; requiring a tool call is refused.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Everything shared with text completions.
    #[serde(flatten)]
    pub common: CommonParams,
}

/// `POST /v1/completions` prompt: text, texts, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptSpec {
    /// One prompt.
    Text(String),
    /// Several prompts (each gets `n` choices).
    Texts(Vec<String>),
    /// Token ids.
    Tokens(Vec<u32>),
}

/// `POST /v1/completions` body.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt.
    pub prompt: PromptSpec,
    /// Log-probabilities of the top N tokens (0–5).
    #[serde(default)]
    pub logprobs: Option<i64>,
    /// Echo the prompt before the completion.
    #[serde(default)]
    pub echo: Option<bool>,
    /// Everything shared with chat.
    #[serde(flatten)]
    pub common: CommonParams,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /v1/models`.
pub async fn list_models(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_id,
            "object": "model",
            "created": state.started_at,
            "owned_by": "hearth",
        }],
    }))
}

/// `GET /v1/models/{id}`.
pub async fn get_model(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    if id != state.model_id {
        return Err(ApiError::ModelNotFound(id));
    }
    Ok(Json(json!({
        "id": state.model_id,
        "object": "model",
        "created": state.started_at,
        "owned_by": "hearth",
    })))
}

/// What a validated request asks for beyond the prompt.
pub(crate) struct Plan {
    pub(crate) request: GenerateRequest,
    pub(crate) n: usize,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) logprobs: bool,
}

pub(crate) fn check_model(state: &AppState, model: &Option<String>) -> Result<(), ApiError> {
    match model {
        None => Err(ApiError::invalid("model", "`model` is required")),
        Some(m) if *m == state.model_id => Ok(()),
        Some(m) => Err(ApiError::ModelNotFound(m.clone())),
    }
}

pub(crate) fn plan(
    state: &AppState,
    p: &CommonParams,
    top_logprobs: usize,
    logprobs: bool,
) -> Result<Plan, ApiError> {
    check_model(state, &p.model)?;
    if p.stream_options.is_some() && p.stream != Some(true) {
        return Err(ApiError::invalid(
            "stream_options",
            "`stream_options` is only allowed when `stream` is enabled",
        ));
    }
    let gen = &state.config.generation;
    let limit = gen.max_tokens_limit;
    let max_tokens = match p.max_completion_tokens.or(p.max_tokens) {
        None => gen.default_max_tokens,
        Some(m) if m >= 1 && (m as usize) <= limit => m as usize,
        Some(m) => {
            let param = if p.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(ApiError::invalid(
                param,
                format!("must be between 1 and {limit}, got {m}"),
            ));
        }
    };
    let n = match p.n {
        None => 1,
        Some(n) if (1..=16).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("must be between 1 and 16, got {n}"),
            ))
        }
    };
    let temperature = p.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("must be between 0 and 2, got {temperature}"),
        ));
    }
    let stop = match &p.stop {
        None => Vec::new(),
        Some(StopSpec::One(s)) => vec![s.clone()],
        Some(StopSpec::Many(v)) if v.len() <= 4 => v.clone(),
        Some(StopSpec::Many(_)) => {
            return Err(ApiError::invalid("stop", "at most 4 stop sequences"))
        }
    };
    let mut logit_bias = Vec::new();
    for (k, v) in p.logit_bias.iter().flatten() {
        let id: u32 = k
            .parse()
            .map_err(|_| ApiError::invalid("logit_bias", format!("`{k}` is not a token id")))?;
        logit_bias.push((id, *v));
    }
    let top_k = match p.top_k {
        None => 0,
        Some(k) if k >= 0 => k as usize,
        Some(k) => return Err(ApiError::invalid("top_k", format!("must be >= 0, got {k}"))),
    };
    let sampling = SamplingParams {
        temperature,
        top_k,
        top_p: p.top_p.unwrap_or(1.0),
        min_p: p.min_p.unwrap_or(0.0),
        repetition_penalty: p.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: p.frequency_penalty.unwrap_or(0.0),
        presence_penalty: p.presence_penalty.unwrap_or(0.0),
        logit_bias,
        seed: p.seed.map(|s| s as u64),
        ..SamplingParams::default()
    };
    sampling
        .validate(state.engine.model().config().vocab_size)
        .map_err(|e| match e {
            crate::engine::sampler::SamplingError::InvalidParam { param, message } => {
                ApiError::invalid(param, message)
            }
        })?;
    Ok(Plan {
        request: GenerateRequest {
            prompt_ids: Vec::new(),
            sampling,
            max_tokens,
            stop,
            logprobs: top_logprobs,
            format: OutputFormat::Text,
        },
        n,
        stream: p.stream.unwrap_or(false),
        include_usage: p
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        logprobs,
    })
}

/// Convert client messages into template messages, validating roles and content parts.
pub fn chat_messages(messages: Vec<RequestMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "user" | "assistant" => m.role,
                "developer" => "system".to_string(),
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        format!("unsupported role `{other}`"),
                    ))
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}].content[{j}]"),
                                    format!("unsupported content part `{kind}` (only text parts)"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

pub(crate) fn check_prompt_len(state: &AppState, ids: &[u32], param: &str) -> Result<(), ApiError> {
    let ctx = state.engine.model().config().context_length;
    if ids.is_empty() {
        return Err(ApiError::invalid(param, "the prompt is empty"));
    }
    if ids.len() >= ctx {
        return Err(ApiError::invalid(
            param,
            format!(
                "the prompt has {} tokens but the model's context is {ctx}",
                ids.len()
            ),
        ));
    }
    Ok(())
}

/// Queue `n` jobs for one prompt (seeds offset per choice so choices differ).
pub(crate) fn submit_all(
    state: &AppState,
    base: &GenerateRequest,
    n: usize,
) -> Result<Vec<Observed>, ApiError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut req = base.clone();
        if let Some(seed) = req.sampling.seed {
            req.sampling.seed = Some(seed.wrapping_add(i as u64));
        }
        match state.scheduler.submit(req) {
            Ok(rx) => out.push(state.metrics.observe(
                &state.model_id,
                std::time::Instant::now(),
                rx,
            )),
            Err(crate::engine::scheduler::SubmitError::QueueFull) => {
                return Err(ApiError::Overloaded)
            }
            Err(crate::engine::scheduler::SubmitError::Stopped) => {
                return Err(ApiError::Unavailable(
                    "the inference engine is not running".into(),
                ))
            }
        }
    }
    Ok(out)
}

pub(crate) fn job_error(kind: JobErrorKind, message: String) -> ApiError {
    match kind {
        JobErrorKind::InvalidRequest => ApiError::InvalidRequest {
            message,
            param: None,
        },
        JobErrorKind::QueueTimeout => ApiError::QueueTimeout(message),
        JobErrorKind::Internal => ApiError::Internal(message),
    }
}

pub(crate) fn finish_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

/// A sampled token with its log-probability and the top alternatives.
type TokenLogprob = (u32, f32, Vec<(u32, f32)>);

/// One finished choice.
struct Choice {
    text: String,
    summary: Summary,
    tokens: Vec<TokenLogprob>,
}

async fn collect(mut rx: Observed) -> Result<Choice, ApiError> {
    let mut tokens = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token {
                id,
                logprob,
                top_logprobs,
                ..
            } => tokens.push((id, logprob, top_logprobs)),
            Event::Done(summary) => {
                return Ok(Choice {
                    text: summary.text.clone(),
                    summary,
                    tokens,
                })
            }
            Event::Error { kind, message } => return Err(job_error(kind, message)),
            _ => {}
        }
    }
    Err(ApiError::Internal("the engine dropped a request".into()))
}

pub(crate) fn usage(prompt_tokens: usize, cached: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn piece(state: &AppState, id: u32) -> String {
    state.engine.tokenizer().token_piece(id).unwrap_or_default()
}

fn chat_logprobs(state: &AppState, tokens: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .filter(|(id, _, _)| !state.engine.tokenizer().is_eog(*id))
        .map(|(id, lp, top)| {
            let text = piece(state, *id);
            json!({
                "token": text,
                "logprob": lp,
                "bytes": text.as_bytes(),
                "top_logprobs": top.iter().map(|(t, l)| {
                    let s = piece(state, *t);
                    json!({"token": s, "logprob": l, "bytes": s.as_bytes()})
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "content": content })
}

/// `response_format`: `text` (default) or `json_object`. Like OpenAI, `json_object` needs the
/// word "json" somewhere in the messages, so the model is told what to produce.
pub(crate) fn response_format(
    format: Option<&Value>,
    messages: &[RequestMessage],
) -> Result<OutputFormat, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(OutputFormat::Text);
    };
    let kind = format.get("type").ok_or_else(|| {
        ApiError::invalid("response_format", "`response_format.type` is required")
    })?;
    match kind.as_str() {
        Some("text") => Ok(OutputFormat::Text),
        Some("json_object") => {
            let mentions_json = messages.iter().any(|m| match &m.content {
                Some(Content::Text(t)) => t.to_lowercase().contains("json"),
                Some(Content::Parts(parts)) => parts.iter().any(|p| {
                    p.text
                        .as_deref()
                        .is_some_and(|t| t.to_lowercase().contains("json"))
                }),
                None => false,
            });
            if !mentions_json {
                return Err(ApiError::invalid(
                    "messages",
                    "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                ));
            }
            Ok(OutputFormat::JsonObject)
        }
        Some(other) => Err(ApiError::invalid(
            "response_format",
            format!(
                "response_format type `{other}` is not supported (use `text` or `json_object`)"
            ),
        )),
        None => Err(ApiError::invalid(
            "response_format",
            "`response_format.type` must be a string",
        )),
    }
}

/// Validate a chat request's parameters (everything but turning `messages` into a prompt):
/// `response_format`, `tool_choice`, `logprobs`/`top_logprobs` and the shared sampling fields.
/// Shared by `/v1/chat/completions` and the WebSocket endpoint.
pub(crate) fn chat_plan(state: &AppState, req: &ChatRequest) -> Result<Plan, ApiError> {
    let format = response_format(req.response_format.as_ref(), &req.messages)?;
    match req.tool_choice.as_ref() {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" || s == "auto" => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "tool_choice",
                "tool calls are not supported: `tool_choice` may only be `none` or `auto`",
            ))
        }
    }
    if req.top_logprobs.is_some() && req.logprobs != Some(true) {
        return Err(ApiError::invalid(
            "top_logprobs",
            "`logprobs` must be true when `top_logprobs` is set",
        ));
    }
    let logprobs = req.logprobs.unwrap_or(false);
    let top = match req.top_logprobs {
        None => 0,
        Some(t) if (0..=20).contains(&t) => t as usize,
        Some(t) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("must be between 0 and 20, got {t}"),
            ))
        }
    };
    let mut plan = plan(state, &req.common, if logprobs { top } else { 0 }, logprobs)?;
    plan.request.format = format;
    Ok(plan)
}

/// `POST /v1/chat/completions`.
pub async fn create_chat_completion(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let mut plan = chat_plan(&state, &req)?;
    let messages = chat_messages(req.messages)?;
    let engine = state.engine.clone();
    let ids = tokio::task::spawn_blocking(move || engine.chat_prompt_ids(&messages))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    check_prompt_len(&state, &ids, "messages")?;
    plan.request.prompt_ids = ids;
    let receivers = submit_all(&state, &plan.request, plan.n)?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if plan.stream {
        let prompt_tokens = plan.request.prompt_ids.len();
        return Ok(stream_response(
            state,
            principal,
            prompt_tokens,
            receivers,
            id,
            created,
            true,
            plan.include_usage,
            plan.logprobs,
        ));
    }
    let results = futures::future::join_all(receivers.into_iter().map(collect)).await;
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut cached, mut completion) = (0, 0, 0);
    for (index, r) in results.into_iter().enumerate() {
        let c = r?;
        prompt_tokens = c.summary.prompt_tokens;
        cached = cached.max(c.summary.cached_prompt_tokens);
        completion += c.summary.completion_tokens;
        choices.push(json!({
            "index": index,
            "message": {"role": "assistant", "content": c.text, "refusal": null},
            "logprobs": if plan.logprobs { chat_logprobs(&state, &c.tokens) } else { Value::Null },
            "finish_reason": finish_str(c.summary.finish_reason),
        }));
    }
    principal.record_usage(&state, prompt_tokens, completion);
    Ok(completion_response(
        &state,
        "chat.completion",
        &id,
        created,
        choices,
        usage(prompt_tokens, cached, completion),
    ))
}

/// The non-streamed body shared by chat and text completions.
fn completion_response(
    state: &AppState,
    object: &str,
    id: &str,
    created: u64,
    choices: Vec<Value>,
    usage: Value,
) -> Response {
    Json(json!({
        "id": id,
        "object": object,
        "created": created,
        "model": state.model_id,
        "system_fingerprint": null,
        "choices": choices,
        "usage": usage,
    }))
    .into_response()
}

/// `POST /v1/completions`.
pub async fn create_completion(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<CompletionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let top = match req.logprobs {
        None => 0,
        Some(t) if (0..=5).contains(&t) => t as usize,
        Some(t) => {
            return Err(ApiError::invalid(
                "logprobs",
                format!("must be between 0 and 5, got {t}"),
            ))
        }
    };
    let mut plan = plan(&state, &req.common, top, req.logprobs.is_some())?;
    let prompts: Vec<Vec<u32>> = match req.prompt {
        PromptSpec::Tokens(ids) => vec![ids],
        PromptSpec::Text(t) => vec![state
            .engine
            .text_prompt_ids(&t)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?],
        PromptSpec::Texts(ts) => {
            if ts.is_empty() {
                return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
            }
            ts.iter()
                .map(|t| {
                    state
                        .engine
                        .text_prompt_ids(t)
                        .map_err(|e| ApiError::invalid("prompt", e.to_string()))
                })
                .collect::<Result<_, _>>()?
        }
    };
    let vocab = state.engine.model().config().vocab_size as u32;
    for p in &prompts {
        if p.iter().any(|&t| t >= vocab) {
            return Err(ApiError::invalid(
                "prompt",
                "a token id is outside the vocabulary",
            ));
        }
        check_prompt_len(&state, p, "prompt")?;
    }
    let echo = req.echo.unwrap_or(false);
    let mut receivers = Vec::new();
    let mut echoes = Vec::new();
    for p in &prompts {
        plan.request.prompt_ids = p.clone();
        receivers.extend(submit_all(&state, &plan.request, plan.n)?);
        let text = if echo {
            state.engine.tokenizer().decode(p, true).unwrap_or_default()
        } else {
            String::new()
        };
        echoes.extend(std::iter::repeat_n(text, plan.n));
    }
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if plan.stream {
        let prompt_tokens = prompts.iter().map(Vec::len).sum();
        return Ok(stream_response(
            state,
            principal,
            prompt_tokens,
            receivers,
            id,
            created,
            false,
            plan.include_usage,
            false,
        ));
    }
    let results = futures::future::join_all(receivers.into_iter().map(collect)).await;
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut cached, mut completion) = (0, 0, 0);
    for (index, r) in results.into_iter().enumerate() {
        let c = r?;
        if index % plan.n == 0 {
            prompt_tokens += c.summary.prompt_tokens;
        }
        cached += c.summary.cached_prompt_tokens;
        completion += c.summary.completion_tokens;
        let logprobs = if plan.logprobs {
            let toks: Vec<_> = c
                .tokens
                .iter()
                .filter(|t| !state.engine.tokenizer().is_eog(t.0))
                .collect();
            let pieces: Vec<String> = toks.iter().map(|t| piece(&state, t.0)).collect();
            // Character offset of each token in the returned text (after any echoed prompt).
            let mut offset = echoes[index].chars().count();
            let text_offset: Vec<usize> = pieces
                .iter()
                .map(|p| {
                    let at = offset;
                    offset += p.chars().count();
                    at
                })
                .collect();
            json!({
                "tokens": pieces,
                "token_logprobs": toks.iter().map(|t| t.1).collect::<Vec<_>>(),
                "top_logprobs": toks.iter().map(|t| t.2.iter().map(|(i, l)| (piece(&state, *i), *l)).collect::<HashMap<_, _>>()).collect::<Vec<_>>(),
                "text_offset": text_offset,
            })
        } else {
            Value::Null
        };
        choices.push(json!({
            "index": index,
            "text": format!("{}{}", echoes[index], c.text),
            "logprobs": logprobs,
            "finish_reason": finish_str(c.summary.finish_reason),
        }));
    }
    principal.record_usage(&state, prompt_tokens, completion);
    Ok(completion_response(
        &state,
        "text_completion",
        &id,
        created,
        choices,
        usage(prompt_tokens, cached, completion),
    ))
}

/// Per-stream state for building SSE chunks.
struct StreamCtx {
    state: AppState,
    /// Who the usage is counted for, when the stream ends (see `Drop`).
    principal: Principal,
    /// Tokens sampled so far by each choice that has not finished.
    sampled: Vec<usize>,
    /// Whether any choice finished or sampled a token (else there is nothing to count).
    produced: bool,
    id: String,
    created: u64,
    chat: bool,
    include_usage: bool,
    logprobs: bool,
    remaining: usize,
    prompt_tokens: usize,
    cached: usize,
    completion: usize,
}

// However the stream ends — all choices done, an error, or the client gone (which cancels the
// generations) — count what the model computed for it.
impl Drop for StreamCtx {
    fn drop(&mut self) {
        if self.produced {
            let unfinished: usize = self.sampled.iter().sum();
            self.principal.record_usage(
                &self.state,
                self.prompt_tokens,
                self.completion + unfinished,
            );
        }
    }
}

impl StreamCtx {
    fn chunk(&self, choices: Value) -> SseEvent {
        let object = if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let body = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.state.model_id,
            "system_fingerprint": null,
            "choices": choices,
        });
        SseEvent::default().data(body.to_string())
    }

    fn text_choice(
        &self,
        index: usize,
        text: &str,
        finish: Option<&str>,
        lp: Option<Value>,
    ) -> Value {
        if self.chat {
            let delta = if text.is_empty() {
                json!({})
            } else {
                json!({"content": text})
            };
            json!({"index": index, "delta": delta, "logprobs": lp.unwrap_or(Value::Null), "finish_reason": finish})
        } else {
            json!({"index": index, "text": text, "logprobs": Value::Null, "finish_reason": finish})
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn stream_response(
    state: AppState,
    principal: Principal,
    prompt_tokens: usize,
    receivers: Vec<Observed>,
    id: String,
    created: u64,
    chat: bool,
    include_usage: bool,
    logprobs: bool,
) -> Response {
    let keepalive = Duration::from_secs(state.config.server.sse_keepalive_secs);
    let n = receivers.len();
    let ctx = StreamCtx {
        state,
        principal,
        sampled: vec![0; n],
        produced: false,
        id,
        created,
        chat,
        include_usage,
        logprobs,
        remaining: n,
        // Until a choice finishes and reports it (a cancelled stream may never get there).
        prompt_tokens,
        cached: 0,
        completion: 0,
    };
    // Tag each choice's events with its index and merge them.
    let merged = stream::select_all(
        receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| tokio_stream_of(rx).map(move |ev| (i, ev)).boxed()),
    );
    let first: Vec<SseEvent> = if chat {
        (0..n)
            .map(|i| {
                ctx.chunk(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]))
            })
            .collect()
    } else {
        Vec::new()
    };
    let body = stream::iter(first.into_iter().map(Ok::<_, Infallible>)).chain(
        stream::unfold((merged, ctx, false), |(mut merged, mut ctx, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let Some((i, ev)) = merged.next().await else {
                    // All choices done (or the engine vanished): usage, then [DONE].
                    let mut out = Vec::new();
                    if ctx.include_usage {
                        let mut e = json!({
                            "id": ctx.id, "object": if ctx.chat { "chat.completion.chunk" } else { "text_completion" },
                            "created": ctx.created, "model": ctx.state.model_id, "system_fingerprint": null,
                            "choices": [], "usage": usage(ctx.prompt_tokens, ctx.cached, ctx.completion),
                        });
                        if let Some(o) = e.as_object_mut() {
                            o.remove("system_fingerprint");
                        }
                        out.push(SseEvent::default().data(e.to_string()));
                    }
                    out.push(SseEvent::default().data("[DONE]"));
                    return Some((stream::iter(out.into_iter().map(Ok)), (merged, ctx, true)));
                };
                let events: Vec<SseEvent> = match ev {
                    Event::Token { id, text, logprob, top_logprobs, .. } => {
                        if let Some(count) = ctx.sampled.get_mut(i) {
                            *count += 1;
                        }
                        ctx.produced = true;
                        if text.is_empty() && !ctx.logprobs {
                            continue;
                        }
                        let lp = ctx.logprobs.then(|| chat_logprobs(&ctx.state, &[(id, logprob, top_logprobs)]));
                        vec![ctx.chunk(json!([ctx.text_choice(i, &text, None, lp)]))]
                    }
                    Event::Text(text) => vec![ctx.chunk(json!([ctx.text_choice(i, &text, None, None)]))],
                    Event::Done(s) => {
                        if let Some(count) = ctx.sampled.get_mut(i) {
                            *count = 0;
                        }
                        ctx.produced = true;
                        ctx.remaining = ctx.remaining.saturating_sub(1);
                        ctx.prompt_tokens = s.prompt_tokens;
                        ctx.cached = ctx.cached.max(s.cached_prompt_tokens);
                        ctx.completion += s.completion_tokens;
                        vec![ctx.chunk(json!([ctx.text_choice(i, "", Some(finish_str(s.finish_reason)), None)]))]
                    }
                    Event::Error { kind, message } => {
                        let err = job_error(kind, message);
                        if let ApiError::Internal(detail) = &err {
                            tracing::error!(%detail, "generation failed mid-stream");
                        }
                        let out = vec![
                            SseEvent::default().data(err.body().to_string()),
                            SseEvent::default().data("[DONE]"),
                        ];
                        return Some((stream::iter(out.into_iter().map(Ok)), (merged, ctx, true)));
                    }
                    Event::Started | Event::PromptProgress { .. } => continue,
                };
                return Some((stream::iter(events.into_iter().map(Ok)), (merged, ctx, false)));
            }
        })
        .flatten(),
    );
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(keepalive).text("ping"))
        .into_response()
}

/// An unbounded receiver as a stream (ends when the sender side is dropped).
fn tokio_stream_of(rx: Observed) -> impl Stream<Item = Event> + Send {
    stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
    )
}
