//! Model choice and per-user settings: `GET /api/models` (what the caller may choose),
//! `GET/PUT /api/me/preferences`, `GET/POST /api/me/memories`, `DELETE /api/me/memories/{id}`
//! and the admin's `GET/PATCH /api/admin/models` (default model, which models users may use).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Admin;
use super::conversations::Owner;
use super::error::{clip, ApiError};
use super::AppState;
use crate::chat::models::ModelPolicy;
use crate::chat::Caller;
use crate::store::preferences::{LimitOverride, Preferences};
use crate::store::StoreError;

/// The most memories a user keeps, and the longest one.
const MAX_MEMORIES: usize = 100;
const MAX_MEMORY_CHARS: usize = 500;

/// `GET /api/models`: every model the caller may choose, with its backend, context length,
/// quantization, status (`loaded`, `available`, or `unavailable` while its breaker is open)
/// and whether it is what a request naming none gets.
pub async fn list_models(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let allowed = state.chat.allowed_models(&caller.principal);
    let default = state
        .chat
        .resolve_model(&caller, None)
        .await
        .unwrap_or_else(|| state.model_id.clone());
    let info = state.engine.info();
    let quantization = info
        .tensor_types
        .iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t.clone());
    let data: Vec<Value> = state
        .router
        .catalog()
        .into_iter()
        .filter(|(m, _, _)| allowed.contains(&m.id))
        .map(|(m, local, available)| {
            json!({
                "id": m.id,
                "backend": m.owned_by,
                "local": local,
                "context_length": local.then(|| state.engine.model().config().context_length),
                "quantization": if local { quantization.clone() } else { None },
                "status": match (local, available) {
                    (_, false) => "unavailable",
                    (true, true) => "loaded",
                    (false, true) => "available",
                },
                "default": m.id == default,
            })
        })
        .collect();
    Json(json!({"data": data, "default": default}))
}

/// `PUT /api/me/preferences` body (the whole set; absent fields are cleared).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutPreferences {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(default)]
    memory: Option<bool>,
}

/// `GET /api/me/preferences`.
pub async fn get_preferences(
    State(state): State<AppState>,
    owner: Owner,
) -> Result<Json<Preferences>, ApiError> {
    // Serialized as it is (not through a `Value`, which would print the f32s as f64s: 0.4
    // would read 0.4000000059604645).
    Ok(Json(Preferences::clone(
        &*state.chat.preferences(owner.user_id).await?,
    )))
}

/// `PUT /api/me/preferences`: an unknown or disallowed model is a 400 listing the valid ids,
/// and nothing is stored.
pub async fn put_preferences(
    State(state): State<AppState>,
    owner: Owner,
    body: Result<Json<PutPreferences>, JsonRejection>,
) -> Result<Json<Preferences>, ApiError> {
    let Json(req) = body?;
    if let Some(m) = &req.model {
        if let Err(e) = state.chat.check_allowed(&owner.caller.principal, m) {
            return Err(ApiError::invalid("model", clip(&e.to_string(), 2048)));
        }
    }
    let limit = state.config.generation.max_tokens_limit;
    if let Some(t) = req.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(ApiError::invalid(
            "temperature",
            format!("must be between 0 and 2, got {t}"),
        ));
    }
    if let Some(p) = req.top_p.filter(|p| !(p > &0.0 && p <= &1.0)) {
        return Err(ApiError::invalid(
            "top_p",
            format!("must be in (0, 1], got {p}"),
        ));
    }
    if let Some(m) = req.max_tokens.filter(|&m| m == 0 || m as usize > limit) {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("must be between 1 and {limit}, got {m}"),
        ));
    }
    let p = Preferences {
        model: req.model,
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: req.max_tokens,
        system_prompt: req.system_prompt.map(|s| clip(&s, 8192)),
        memory: req.memory.unwrap_or(true),
    };
    state.chat.set_preferences(owner.user_id, p.clone()).await?;
    Ok(Json(p))
}

/// `GET /api/me/memories`.
pub async fn list_memories(
    State(state): State<AppState>,
    owner: Owner,
) -> Result<Json<Value>, ApiError> {
    let data = state.store.memories(owner.user_id).await?;
    Ok(Json(json!({"data": data})))
}

/// `POST /api/me/memories` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMemory {
    content: String,
}

/// `POST /api/me/memories` → 201: a short note added to conversation turns' system prompt
/// (when `memory` is on in the preferences).
pub async fn add_memory(
    State(state): State<AppState>,
    owner: Owner,
    body: Result<Json<NewMemory>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let content = req.content.trim();
    if content.is_empty() || content.chars().count() > MAX_MEMORY_CHARS {
        return Err(ApiError::invalid(
            "content",
            format!("a memory is 1 to {MAX_MEMORY_CHARS} characters"),
        ));
    }
    let m = state
        .store
        .add_memory(owner.user_id, content.to_string(), MAX_MEMORIES)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict {
                message: format!("at most {MAX_MEMORIES} memories; delete one first"),
                code: "too_many_memories",
            },
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(m)).into_response())
}

/// `DELETE /api/me/memories/{id}` → 204.
pub async fn delete_memory(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_memory(owner.user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("No such memory".into()))
    }
}

/// `GET /api/admin/models`: the model policy.
pub async fn get_model_policy(State(state): State<AppState>, _admin: Admin) -> Json<ModelPolicy> {
    Json(state.chat.policy())
}

/// `PATCH /api/admin/models {default_model?, allowed_models?}` (`null` clears: the loaded
/// model, every model). Unknown ids are a 400 listing the valid ones.
pub async fn update_model_policy(
    State(state): State<AppState>,
    _admin: Admin,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<ModelPolicy>, ApiError> {
    let Json(req) = body?;
    let obj = req
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "expected a JSON object"))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["default_model", "allowed_models"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            clip(k, 64),
            "unknown field (expected `default_model`, `allowed_models`)",
        ));
    }
    let mut policy = state.chat.policy();
    let known: Vec<String> = state
        .router
        .catalog()
        .into_iter()
        .map(|(m, _, _)| m.id)
        .collect();
    let check = |param: &'static str, id: &str| -> Result<(), ApiError> {
        if known.iter().any(|k| k == id) {
            Ok(())
        } else {
            Err(ApiError::invalid(
                param,
                format!(
                    "unknown model `{}`; valid ids: {}",
                    clip(id, 128),
                    known.join(", ")
                ),
            ))
        }
    };
    if let Some(v) = obj.get("default_model") {
        policy.default_model = serde_json::from_value(v.clone())
            .map_err(|_| ApiError::invalid("default_model", "a model id or null"))?;
    }
    if let Some(v) = obj.get("allowed_models") {
        policy.allowed_models = serde_json::from_value(v.clone())
            .map_err(|_| ApiError::invalid("allowed_models", "a list of model ids or null"))?;
    }
    if let Some(m) = &policy.default_model {
        check("default_model", m)?;
    }
    for m in policy.allowed_models.iter().flatten() {
        check("allowed_models", m)?;
    }
    if let (Some(d), Some(allowed)) = (&policy.default_model, &policy.allowed_models) {
        if !allowed.contains(d) {
            return Err(ApiError::invalid(
                "default_model",
                "the default model must be one of `allowed_models`",
            ));
        }
    }
    state.chat.set_policy(policy.clone()).await?;
    Ok(Json(policy))
}

/// `GET /api/admin/users/{id}/limits`: the user's overrides of `[limits]` (`null`: the
/// server's setting).
pub async fn get_user_limits(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
) -> Result<Json<LimitOverride>, ApiError> {
    state
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("No such user".into()))?;
    Ok(Json(state.chat.limit_override(id)))
}

/// `PUT /api/admin/users/{id}/limits {requests_per_minute, concurrent_generations,
/// tokens_per_day}`: the user's own limits (0: unlimited; `null` or absent: the server's).
pub async fn put_user_limits(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<i64>,
    body: Result<Json<LimitOverrideBody>, JsonRejection>,
) -> Result<Json<LimitOverride>, ApiError> {
    let Json(req) = body?;
    state
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("No such user".into()))?;
    let o = LimitOverride {
        requests_per_minute: req.requests_per_minute,
        concurrent_generations: req.concurrent_generations,
        tokens_per_day: req.tokens_per_day,
    };
    state.chat.set_limit_override(id, o).await?;
    Ok(Json(o))
}

/// `PUT /api/admin/users/{id}/limits` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrideBody {
    #[serde(default)]
    requests_per_minute: Option<u32>,
    #[serde(default)]
    concurrent_generations: Option<u32>,
    #[serde(default)]
    tokens_per_day: Option<u64>,
}
