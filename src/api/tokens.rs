//! llama.cpp-style helper endpoints: `POST /tokenize`, `POST /detokenize`, `POST /apply-template`,
//! `GET /props`.
//!
//! Authenticated like `/v1` (the router's layer runs first). Tokenizing a megabyte takes a
//! while, so the work runs on a blocking thread, never on the async runtime where it would
//! hold up every other request (`/health` included).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::openai::{chat_plan, ChatRequest};
use super::AppState;
use crate::engine::generate::Engine;

/// `POST /tokenize` body.
#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    /// Text to tokenize.
    pub content: String,
    /// Prepend BOS when the model asks for it.
    #[serde(default)]
    pub add_special: Option<bool>,
    /// Parse control-token text as special tokens.
    #[serde(default)]
    pub parse_special: Option<bool>,
    /// Also return each token's text.
    #[serde(default)]
    pub with_pieces: Option<bool>,
}

/// `POST /tokenize` → `{"tokens": [...]}`.
pub async fn tokenize(
    State(state): State<AppState>,
    body: Result<Json<TokenizeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body?;
    off_runtime(&state, move |engine| {
        let tok = engine.tokenizer();
        let add_bos = req.add_special.unwrap_or(false) && tok.add_bos_by_default();
        let ids = tok
            .encode(&req.content, add_bos, req.parse_special.unwrap_or(true))
            .map_err(|e| ApiError::invalid("content", e.to_string()))?;
        if req.with_pieces.unwrap_or(false) {
            let tokens: Vec<Value> = ids
                .iter()
                .map(|&id| json!({"id": id, "piece": tok.token_piece(id).unwrap_or_default()}))
                .collect();
            return Ok(json!({ "tokens": tokens }));
        }
        Ok(json!({ "tokens": ids }))
    })
    .await
}

/// Run `work` with the engine on a blocking thread.
async fn off_runtime(
    state: &AppState,
    work: impl FnOnce(&Engine) -> Result<Value, ApiError> + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || work(&engine))
        .await
        .map_err(|e| ApiError::Internal(format!("tokenizer thread: {e}")))?
        .map(Json)
}

/// `POST /detokenize` body.
#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// `POST /detokenize` → `{"content": "..."}`.
pub async fn detokenize(
    State(state): State<AppState>,
    body: Result<Json<DetokenizeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body?;
    off_runtime(&state, move |engine| {
        let tok = engine.tokenizer();
        if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= tok.vocab_size()) {
            return Err(ApiError::invalid(
                "tokens",
                format!("token id {bad} is outside the vocabulary"),
            ));
        }
        let content = tok
            .decode(&req.tokens, false)
            .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
        Ok(json!({ "content": content }))
    })
    .await
}

/// `POST /apply-template` body: a chat request (its `messages`, and `tools`/`tool_choice` as
/// chat takes them), plus llama-server's `add_generation_prompt`.
#[derive(Debug, Deserialize)]
pub struct ApplyTemplateRequest {
    /// The chat the prompt is for.
    #[serde(flatten)]
    pub chat: ChatRequest,
    /// End with the assistant-turn opener (default `true`); `false` renders the messages as
    /// they are, a final assistant message closed rather than continued.
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
}

/// `POST /apply-template` → `{"prompt": "..."}`: the prompt text chat would give the model.
pub async fn apply_template(
    State(state): State<AppState>,
    body: Result<Json<ApplyTemplateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body?;
    let tools = chat_plan(&state, &req.chat)?.params.tools;
    let messages = super::openai::chat_messages(req.chat.messages)?;
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
    off_runtime(&state, move |engine| {
        let prompt = engine
            .render_chat(&messages, tools.as_deref(), add_generation_prompt)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        Ok(json!({ "prompt": prompt }))
    })
    .await
}

/// `GET /props`: what llama.cpp's server reports about itself, for clients that read it
/// (context size, slots, chat template, the model).
pub async fn props(State(state): State<AppState>) -> Json<Value> {
    let engine = &state.engine;
    let config = engine.model().config();
    let gen = &state.config.generation;
    // The file's name, not its path: where the server keeps files is not the caller's business.
    let file = std::path::Path::new(&state.config.model.path)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned());
    Json(json!({
        "model": state.model_id,
        "model_path": file,
        "default_generation_settings": {
            "n_ctx": config.context_length,
            "params": {
                "n_predict": gen.default_max_tokens,
                "temperature": 1.0,
                "top_p": 1.0,
                "top_k": 0,
                "min_p": 0.0,
            },
        },
        "total_slots": state.config.server.max_active,
        "kv_cache": engine.model().kv_type(),
        "chat_template": engine.template().source(),
        "modalities": {"vision": false, "audio": false},
        "build_info": concat!("hearth ", env!("CARGO_PKG_VERSION")),
    }))
}
