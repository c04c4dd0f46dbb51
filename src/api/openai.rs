//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions`,
//! `POST /v1/completions`, streaming (SSE) and not.
//!
//! Requests are parsed leniently (unknown fields and explicit `null`s are accepted), validated
//! into a [`BackendRequest`] with errors naming the parameter, then started through the
//! backend router (the local model or a remote server, with failover). Dropping the response
//! (client gone) drops the generation, which cancels it on the model thread or upstream.

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
use super::error::{clip, ApiError};
use super::AppState;
use crate::backends::{BackendRequest, Event, Generation, Prompt, TokenLogprobs};
use crate::engine::generate::{FinishReason, GenerateRequest, OutputFormat};
use crate::engine::sampler::SamplingParams;
use crate::engine::scheduler::Summary;
use crate::engine::template::ChatMessage;

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

/// `GET /v1/models`: every model of every backend whose circuit breaker is not open.
pub async fn list_models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .router
        .list_models()
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": state.started_at,
                "owned_by": m.owned_by,
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}`.
pub async fn get_model(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(owner) = state.router.owner(&id) else {
        return Err(ApiError::ModelNotFound(id));
    };
    Ok(Json(json!({
        "id": id,
        "object": "model",
        "created": state.started_at,
        "owned_by": owner,
    })))
}

/// What a validated request asks for beyond the prompt.
pub(crate) struct Plan {
    /// The model to ask: the one named, or the server's own when the request names none.
    pub(crate) model: String,
    pub(crate) request: GenerateRequest,
    pub(crate) n: usize,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) logprobs: bool,
}

/// The model a request asks for. OpenAI requires `model`; local servers (llama.cpp's,
/// Ollama's) do not, so a missing or empty one means the loaded model.
pub(crate) fn requested_model(
    state: &AppState,
    model: &Option<String>,
) -> Result<String, ApiError> {
    match model.as_deref() {
        None | Some("") => Ok(state.model_id.clone()),
        Some(m) if state.router.serves(m) => Ok(m.to_string()),
        Some(m) => Err(ApiError::ModelNotFound(clip(m, 256))),
    }
}

/// `system_fingerprint`: names this build of Hearth and what answers as `model` (for the
/// local model, its weights too), so it changes exactly when the same request could start
/// answering differently.
pub(crate) fn system_fingerprint(state: &AppState, model: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update([0]);
    h.update(model);
    if model == state.model_id {
        let info = state.engine.info();
        h.update([0]);
        h.update(format!(
            "{}|{}|{:?}|{}|{}",
            info.format,
            info.file_bytes,
            info.tensor_types,
            info.parameters,
            state.config.model.exact
        ));
    }
    let digest = h.finalize();
    let hex: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("fp_{hex}")
}

pub(crate) fn plan(
    state: &AppState,
    p: &CommonParams,
    top_logprobs: usize,
    logprobs: bool,
) -> Result<Plan, ApiError> {
    let model = requested_model(state, &p.model)?;
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
    let max_n = gen.max_n;
    let n = match p.n {
        None => 1,
        Some(n) if n >= 1 && n as u64 <= max_n as u64 => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("must be between 1 and {max_n} (generation.max_n), got {n}"),
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
    // Ranges only: token ids in `logit_bias` are checked by the backend whose vocabulary they use.
    sampling.validate(usize::MAX).map_err(|e| match e {
        crate::engine::sampler::SamplingError::InvalidParam { param, message } => {
            ApiError::invalid(param, message)
        }
    })?;
    Ok(Plan {
        model,
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

/// Start `n` generations (choices) of one request on `model`'s backends, with seeds offset
/// per choice so choices differ. Returns once each has its first token; any failure before
/// then (after failover) is the request's error, and the choices already started are dropped,
/// which cancels them.
pub(crate) async fn start_all(
    state: &AppState,
    model: &str,
    base: &BackendRequest,
    n: usize,
) -> Result<Vec<Generation>, ApiError> {
    let starts = (0..n).map(|i| {
        let mut req = base.clone();
        if let Some(seed) = req.params.sampling.seed {
            req.params.sampling.seed = Some(seed.wrapping_add(i as u64));
        }
        let router = state.router.clone();
        let model = model.to_string();
        async move { router.start(&model, &req, &|| {}).await }
    });
    futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.map_err(ApiError::from))
        .collect()
}

pub(crate) fn finish_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

/// One finished choice.
struct Choice {
    text: String,
    summary: Summary,
    tokens: Vec<TokenLogprobs>,
}

async fn collect(mut generation: Generation) -> Result<Choice, ApiError> {
    let mut tokens = Vec::new();
    while let Some(ev) = generation.recv().await {
        match ev {
            Event::Token {
                logprobs: Some(lp), ..
            } => tokens.push(lp),
            Event::Done(summary) => {
                return Ok(Choice {
                    text: summary.text.clone(),
                    summary,
                    tokens,
                })
            }
            Event::Error(e) => return Err(e.into()),
            _ => {}
        }
    }
    Err(ApiError::Internal("the backend dropped a request".into()))
}

pub(crate) fn usage(prompt_tokens: usize, cached: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn chat_logprobs(tokens: &[TokenLogprobs]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "token": t.token,
                "logprob": t.logprob,
                "bytes": t.token.as_bytes(),
                "top_logprobs": t.top.iter().map(|(s, l)| {
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
    let plan = chat_plan(&state, &req)?;
    let model = plan.model.clone();
    let request = BackendRequest {
        prompt: Prompt::Chat(chat_messages(req.messages)?),
        params: plan.request,
        logprobs: plan.logprobs,
        stream: plan.stream,
    };
    let generations = start_all(&state, &model, &request, plan.n).await?;
    let answered = answering_model(&generations, &model);
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if plan.stream {
        let fingerprint = system_fingerprint(&state, &answered);
        let prompt_tokens = generations.first().map_or(0, |g| g.prompt_tokens);
        return Ok(stream_response(
            state,
            principal,
            prompt_tokens,
            generations,
            StreamMeta {
                id,
                created,
                fingerprint,
                model: answered,
                chat: true,
                include_usage: plan.include_usage,
                logprobs: plan.logprobs,
            },
        ));
    }
    let results = futures::future::join_all(generations.into_iter().map(collect)).await;
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
            "logprobs": if plan.logprobs { chat_logprobs(&c.tokens) } else { Value::Null },
            "finish_reason": finish_str(c.summary.finish_reason),
        }));
    }
    principal.record_usage(&state, prompt_tokens, completion);
    Ok(completion_response(
        &state,
        &answered,
        "chat.completion",
        &id,
        created,
        choices,
        usage(prompt_tokens, cached, completion),
    ))
}

/// The model named in a response: the one that answered the first choice (after failover).
fn answering_model(generations: &[Generation], asked: &str) -> String {
    generations
        .first()
        .map_or_else(|| asked.to_string(), |g| g.model.clone())
}

/// The non-streamed body shared by chat and text completions.
fn completion_response(
    state: &AppState,
    model: &str,
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
        "model": model,
        "system_fingerprint": system_fingerprint(state, model),
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
    let plan = plan(&state, &req.common, top, req.logprobs.is_some())?;
    let model = plan.model.clone();
    let prompts: Vec<Prompt> = match req.prompt {
        PromptSpec::Tokens(ids) => vec![Prompt::Tokens(ids)],
        PromptSpec::Text(t) => vec![Prompt::Text(t)],
        PromptSpec::Texts(ts) => {
            if ts.is_empty() {
                return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
            }
            ts.into_iter().map(Prompt::Text).collect()
        }
    };
    let max_n = state.config.generation.max_n;
    if prompts.len() * plan.n > max_n {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "{} prompts × n = {} asks for {} choices; at most {max_n} (generation.max_n)",
                prompts.len(),
                plan.n,
                prompts.len() * plan.n
            ),
        ));
    }
    let echo = req.echo.unwrap_or(false);
    let mut generations = Vec::new();
    let mut echoes = Vec::new();
    for prompt in prompts {
        let text = match (&prompt, echo) {
            (_, false) => String::new(),
            (Prompt::Text(t), true) => t.clone(),
            // Token ids are the local model's; decode them with its tokenizer.
            (Prompt::Tokens(ids), true) => state
                .engine
                .tokenizer()
                .decode(ids, true)
                .unwrap_or_default(),
            (Prompt::Chat(_), true) => String::new(),
        };
        let request = BackendRequest {
            prompt,
            params: plan.request.clone(),
            logprobs: plan.logprobs,
            stream: plan.stream,
        };
        generations.extend(start_all(&state, &model, &request, plan.n).await?);
        echoes.extend(std::iter::repeat_n(text, plan.n));
    }
    let answered = answering_model(&generations, &model);
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if plan.stream {
        let fingerprint = system_fingerprint(&state, &answered);
        let prompt_tokens = generations
            .iter()
            .step_by(plan.n)
            .map(|g| g.prompt_tokens)
            .sum();
        return Ok(stream_response(
            state,
            principal,
            prompt_tokens,
            generations,
            StreamMeta {
                id,
                created,
                fingerprint,
                model: answered,
                chat: false,
                include_usage: plan.include_usage,
                logprobs: false,
            },
        ));
    }
    let results = futures::future::join_all(generations.into_iter().map(collect)).await;
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
            let toks = &c.tokens;
            let pieces: Vec<&str> = toks.iter().map(|t| t.token.as_str()).collect();
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
                "token_logprobs": toks.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": toks.iter().map(|t| t.top.iter().map(|(s, l)| (s.as_str(), *l)).collect::<HashMap<_, _>>()).collect::<Vec<_>>(),
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
        &answered,
        "text_completion",
        &id,
        created,
        choices,
        usage(prompt_tokens, cached, completion),
    ))
}

/// What every chunk of one stream repeats.
pub(crate) struct StreamMeta {
    id: String,
    created: u64,
    /// The model that answered.
    model: String,
    fingerprint: String,
    chat: bool,
    include_usage: bool,
    logprobs: bool,
}

/// Per-stream state for building SSE chunks.
struct StreamCtx {
    state: AppState,
    /// Who the usage is counted for, when the stream ends (see `Drop`).
    principal: Principal,
    meta: StreamMeta,
    /// Tokens sampled so far by each choice that has not finished.
    sampled: Vec<usize>,
    /// Whether any choice finished or sampled a token (else there is nothing to count).
    produced: bool,
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
    fn object(&self) -> &'static str {
        if self.meta.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        }
    }

    fn chunk(&self, choices: Value) -> SseEvent {
        let body = json!({
            "id": self.meta.id,
            "object": self.object(),
            "created": self.meta.created,
            "model": self.meta.model,
            "system_fingerprint": self.meta.fingerprint,
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
        if self.meta.chat {
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

    /// The chunks for one event of choice `i`, and whether the stream ends with them.
    fn on_event(&mut self, i: usize, ev: Event) -> (Vec<SseEvent>, bool) {
        match ev {
            Event::Token { text, logprobs, .. } => {
                if let Some(count) = self.sampled.get_mut(i) {
                    *count += 1;
                }
                self.produced = true;
                let lp = logprobs
                    .filter(|_| self.meta.logprobs)
                    .map(|lp| chat_logprobs(std::slice::from_ref(&lp)));
                if text.is_empty() && lp.is_none() {
                    return (Vec::new(), false);
                }
                (
                    vec![self.chunk(json!([self.text_choice(i, &text, None, lp)]))],
                    false,
                )
            }
            Event::Text(text) => (
                vec![self.chunk(json!([self.text_choice(i, &text, None, None)]))],
                false,
            ),
            Event::Done(s) => {
                if let Some(count) = self.sampled.get_mut(i) {
                    *count = 0;
                }
                self.produced = true;
                self.prompt_tokens = s.prompt_tokens.max(self.prompt_tokens);
                self.cached = self.cached.max(s.cached_prompt_tokens);
                self.completion += s.completion_tokens;
                let finish = finish_str(s.finish_reason);
                (
                    vec![self.chunk(json!([self.text_choice(i, "", Some(finish), None)]))],
                    false,
                )
            }
            Event::Error(e) => {
                let err = ApiError::from(e);
                tracing::warn!(error = %err, "generation failed mid-stream");
                (
                    vec![
                        SseEvent::default().data(err.body().to_string()),
                        SseEvent::default().data("[DONE]"),
                    ],
                    true,
                )
            }
            Event::Started => (Vec::new(), false),
        }
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    fn finish(&self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.meta.include_usage {
            let e = json!({
                "id": self.meta.id, "object": self.object(),
                "created": self.meta.created, "model": self.meta.model,
                "system_fingerprint": self.meta.fingerprint,
                "choices": [], "usage": usage(self.prompt_tokens, self.cached, self.completion),
            });
            out.push(SseEvent::default().data(e.to_string()));
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }
}

fn stream_response(
    state: AppState,
    principal: Principal,
    prompt_tokens: usize,
    generations: Vec<Generation>,
    meta: StreamMeta,
) -> Response {
    let keepalive = Duration::from_secs(state.config.server.sse_keepalive_secs);
    let n = generations.len();
    let ctx = StreamCtx {
        state,
        principal,
        meta,
        sampled: vec![0; n],
        produced: false,
        // Until a choice finishes and reports it (a cancelled stream may never get there).
        prompt_tokens,
        cached: 0,
        completion: 0,
    };
    // Tag each choice's events with its index and merge them.
    let merged = stream::select_all(
        generations
            .into_iter()
            .enumerate()
            .map(|(i, g)| events_of(g).map(move |ev| (i, ev)).boxed()),
    );
    let first: Vec<SseEvent> = if ctx.meta.chat {
        (0..n)
            .map(|i| {
                ctx.chunk(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]))
            })
            .collect()
    } else {
        Vec::new()
    };
    let body = stream::iter(first.into_iter().map(Ok::<_, Infallible>)).chain(
        stream::unfold(
            (merged, ctx, false),
            |(mut merged, mut ctx, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let Some((i, ev)) = merged.next().await else {
                        // All choices done: usage, then [DONE].
                        let out = ctx.finish();
                        return Some((stream::iter(out.into_iter().map(Ok)), (merged, ctx, true)));
                    };
                    let (events, end) = ctx.on_event(i, ev);
                    if events.is_empty() && !end {
                        continue;
                    }
                    return Some((stream::iter(events.into_iter().map(Ok)), (merged, ctx, end)));
                }
            },
        )
        .flatten(),
    );
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(keepalive).text("ping"))
        .into_response()
}

/// A generation's events as a stream (ends after its last event).
fn events_of(generation: Generation) -> impl Stream<Item = Event> + Send {
    stream::unfold(generation, |mut g| async move {
        g.recv().await.map(|ev| (ev, g))
    })
}
