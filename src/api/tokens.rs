//! llama.cpp-style helper endpoints: `POST /tokenize`, `POST /detokenize`, `POST /apply-template`.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::openai::RequestMessage;
use super::AppState;

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
    let tok = state.engine.tokenizer();
    let add_bos = req.add_special.unwrap_or(false) && tok.add_bos_by_default();
    let ids = tok
        .encode(&req.content, add_bos, req.parse_special.unwrap_or(true))
        .map_err(|e| ApiError::invalid("content", e.to_string()))?;
    if req.with_pieces.unwrap_or(false) {
        let tokens: Vec<Value> = ids
            .iter()
            .map(|&id| json!({"id": id, "piece": tok.token_piece(id).unwrap_or_default()}))
            .collect();
        return Ok(Json(json!({ "tokens": tokens })));
    }
    Ok(Json(json!({ "tokens": ids })))
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
    let tok = state.engine.tokenizer();
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= tok.vocab_size()) {
        return Err(ApiError::invalid(
            "tokens",
            format!("token id {bad} is outside the vocabulary"),
        ));
    }
    let content = tok
        .decode(&req.tokens, false)
        .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
    Ok(Json(json!({ "content": content })))
}

/// `POST /apply-template` body.
#[derive(Debug, Deserialize)]
pub struct ApplyTemplateRequest {
    /// OpenAI-style messages.
    pub messages: Vec<RequestMessage>,
}

/// `POST /apply-template` → `{"prompt": "..."}`.
pub async fn apply_template(
    State(state): State<AppState>,
    body: Result<Json<ApplyTemplateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body?;
    let messages = super::openai::chat_messages(req.messages)?;
    let prompt = state
        .engine
        .render_chat(&messages)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    Ok(Json(json!({ "prompt": prompt })))
}
