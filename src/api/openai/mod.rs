//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions`,
//! `POST /v1/completions`, streaming (SSE) and not — served under `/v1` and, for clients
//! configured without it, at the root too.
//!
//! Requests are parsed leniently (unknown fields and explicit `null`s are accepted), validated
//! into a [`BackendRequest`](crate::backends::BackendRequest) with errors naming the parameter
//! (`validate`), then started through the backend router — the local model or a remote
//! server, with failover (`complete`) — and answered whole or streamed (`sse`). Dropping the
//! response (client gone) drops the generation, which cancels it on the model thread or
//! upstream.

mod complete;
mod sse;
mod validate;
pub mod wire;

pub use complete::{create_chat_completion, create_completion};
pub use validate::chat_messages;
pub(crate) use validate::{chat_plan, plan_params, plan_tools};
pub(crate) use wire::finish_str;

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{clip, ApiError};
use super::AppState;

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
    /// Extension (vLLM's): usage so far on every chunk.
    #[serde(default)]
    pub continuous_usage_stats: Option<bool>,
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
    /// `system`, `user`, `assistant`, `tool` (or `developer`, treated as `system`).
    pub role: String,
    /// The content (null allowed for assistant messages).
    #[serde(default)]
    pub content: Option<Content>,
    /// An assistant message's calls: `[{"id", "type": "function", "function": {"name",
    /// "arguments"}}]`.
    #[serde(default)]
    pub tool_calls: Option<Vec<RequestToolCall>>,
    /// A `tool` message: the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// A past call in an assistant message.
#[derive(Debug, Deserialize)]
pub struct RequestToolCall {
    /// Its id.
    pub id: String,
    /// `function`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The function and its arguments.
    pub function: RequestFunctionCall,
}

/// `tool_calls[].function`.
#[derive(Debug, Deserialize)]
pub struct RequestFunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, as JSON text.
    #[serde(default)]
    pub arguments: String,
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
    /// Extension: `false` keeps the response cache from answering (or storing) this request.
    #[serde(default)]
    pub cache: Option<bool>,
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
    /// Tool definitions: `[{"type": "function", "function": {"name", "description",
    /// "parameters"}}]`.
    #[serde(default)]
    pub tools: Option<Value>,
    /// `none`, `auto` (the default with tools), `required`, or `{"type": "function",
    /// "function": {"name"}}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Whether an answer may make several calls (default true).
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// llama-server's extension (default true): `false` ends the prompt after the last message,
    /// without the assistant's opener; a final assistant message is then closed, not continued.
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
    /// Accepted and ignored: the local model has no reasoning budget to set (checked to be one
    /// of OpenAI's values).
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Accepted and ignored (OpenAI keeps it with stored completions; Hearth stores none),
    /// checked against OpenAI's limits: 16 pairs, keys up to 64 characters, values up to 512.
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    /// Accepted and ignored: completions are never stored for later retrieval.
    #[serde(default)]
    pub store: Option<bool>,
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

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One `/v1/models` entry; the local model's also says its context length (`context_length`,
/// as OpenRouter and vLLM's `max_model_len` clients read it) and vocabulary size.
fn model_entry(state: &AppState, id: &str, owned_by: &str) -> Value {
    let mut entry = json!({
        "id": id,
        "object": "model",
        "created": state.started_at,
        "owned_by": owned_by,
    });
    if id == state.model_id {
        let config = state.engine.model().config();
        entry["context_length"] = json!(config.context_length);
        entry["max_model_len"] = json!(config.context_length);
        entry["meta"] = json!({
            "n_ctx_train": config.context_length,
            "n_vocab": config.vocab_size,
            "n_params": state.engine.info().parameters,
            "size": state.engine.info().file_bytes,
        });
    }
    entry
}

/// `GET /v1/models`: every model of every backend whose circuit breaker is not open, that the
/// caller may use (`/api/admin/models`).
pub async fn list_models(
    State(state): State<AppState>,
    principal: crate::api::auth::Principal,
) -> Json<Value> {
    let allowed = state.chat.allowed_models(&principal);
    let data: Vec<Value> = state
        .router
        .list_models()
        .into_iter()
        .filter(|m| allowed.contains(&m.id))
        .map(|m| model_entry(&state, &m.id, &m.owned_by))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}` (404 for a model the caller may not use, as for one that does not
/// exist).
pub async fn get_model(
    State(state): State<AppState>,
    principal: crate::api::auth::Principal,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    let owner = state
        .router
        .owner(&id)
        .filter(|_| state.chat.check_allowed(&principal, &id).is_ok());
    let Some(owner) = owner else {
        return Err(ApiError::ModelNotFound(clip(&id, 256)));
    };
    Ok(Json(model_entry(&state, &id, owner)))
}
