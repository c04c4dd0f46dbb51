//! The conversation API (`/api/conversations/*`, `/api/messages/*`) and `GET /api/rate-limit`.
//! Routes sit behind the `/v1` authentication (an access token or a user's API key) and need a
//! user: a conversation belongs to its account, and anyone else's reads as 404.
//!
//! A turn (`POST …/messages`, `…/regenerate`) answers as SSE (`stream: true`, the default) or
//! as JSON once the answer is done. SSE frames are JSON objects with a `type`:
//! `message` (the stored user message and the assistant message, `streaming`), `token`
//! (`message_id`, `text`), and finally `done` (`message_id`, `status`: `done`, `interrupted`
//! or `error`, `finish_reason`, `model`, `usage`). The answer keeps generating if the client
//! goes (see [`crate::chat::conversation`]); `GET /api/messages/{id}/stream?offset=N` picks it
//! up from character N.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{clip, ApiError};
use super::headers::add_run_headers;
use super::openai::CommonParams;
use super::AppState;
use crate::chat::conversation::{branch_to, newest_leaf, ToolOutput, Turn, TurnError, TurnRequest};
use crate::chat::live::{Ended, LiveEvent, Subscription};
use crate::chat::Caller;
use crate::store::conversations::{
    Conversation, ConversationUpdate, ListQuery, Message, NewConversation,
};

/// A caller with an account: who owns conversations.
pub struct Owner {
    /// For the generation service.
    pub caller: Caller,
    /// The user.
    pub user_id: i64,
}

impl FromRequestParts<AppState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let user_id = caller.principal.user_id().ok_or_else(|| {
            ApiError::Unauthorized(
                "Conversations belong to accounts: send a user's access token or API key".into(),
            )
        })?;
        Ok(Owner { caller, user_id })
    }
}

impl From<TurnError> for ApiError {
    fn from(e: TurnError) -> Self {
        match e {
            TurnError::NotFound(m) => ApiError::NotFound(m),
            TurnError::Invalid { param, message } => ApiError::invalid(param, message),
            TurnError::Chat(e) => e.into(),
            TurnError::Store(e) => e.into(),
        }
    }
}

/// The keys a conversation's `params` may hold: sampling, `memory` (a boolean: this
/// conversation's turns carry the owner's memories, overriding the preference), and the tools
/// its turns offer (`tools`, `tool_choice`, `parallel_tool_calls`, as in `/v1`).
const PARAM_KEYS: &[&str] = &[
    "memory",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
];

/// The model and parameters a turn runs with: `model` (the request's, else the
/// conversation's, else the server's), `params` checked like `/v1`'s.
fn turn_plan(
    state: &AppState,
    model: Option<&str>,
    params: &Value,
) -> Result<(String, crate::backends::Params), ApiError> {
    let obj = params
        .as_object()
        .ok_or_else(|| ApiError::invalid("params", "`params` must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !PARAM_KEYS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            "params",
            format!(
                "unknown parameter `{}` (allowed: {})",
                clip(k, 64),
                PARAM_KEYS.join(", ")
            ),
        ));
    }
    let mut sampling = obj.clone();
    if let Some(memory) = sampling.remove("memory") {
        if !memory.is_boolean() {
            return Err(ApiError::invalid(
                "params",
                "`memory` must be true or false",
            ));
        }
    }
    let tools = sampling.remove("tools");
    let tool_choice = sampling.remove("tool_choice");
    let parallel = match sampling.remove("parallel_tool_calls") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(b),
        Some(_) => {
            return Err(ApiError::invalid(
                "params",
                "`parallel_tool_calls` must be true or false",
            ))
        }
    };
    let mut common: CommonParams = serde_json::from_value(Value::Object(sampling))
        .map_err(|e| ApiError::invalid("params", clip(&e.to_string(), 256)))?;
    common.model = model.map(str::to_string);
    let mut plan = super::openai::plan_params(state, &common)?;
    super::openai::plan_tools(
        state,
        &mut plan,
        tools.as_ref(),
        tool_choice.as_ref(),
        parallel,
    )
    .map_err(in_params)?;
    Ok((plan.model, plan.params))
}

/// An error about a `/v1` field, named as the conversation's `params.…`.
fn in_params(e: ApiError) -> ApiError {
    match e {
        ApiError::InvalidRequest {
            message,
            param: Some(p),
        } => ApiError::invalid(format!("params.{p}"), message),
        other => other,
    }
}

/// Check a conversation's model and parameters as a turn would.
pub(crate) fn check_params(
    state: &AppState,
    model: Option<&str>,
    params: &Value,
) -> Result<(), ApiError> {
    turn_plan(state, model, params).map(|_| ())
}

/// `POST /api/conversations` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(default)]
    params: Option<Value>,
}

fn not_found() -> ApiError {
    ApiError::NotFound("No such conversation".into())
}

/// `owner`'s conversation `id` and its messages, or 404.
pub(crate) async fn conversation_with_messages(
    state: &AppState,
    owner: i64,
    id: String,
) -> Result<(Conversation, Vec<Message>), ApiError> {
    state
        .store
        .conversation_with_messages(owner, id)
        .await?
        .ok_or_else(not_found)
}

/// `POST /api/conversations` → 201 with the conversation.
pub async fn create_conversation(
    State(state): State<AppState>,
    owner: Owner,
    body: Result<Json<CreateConversation>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let params = req.params.unwrap_or_else(|| json!({}));
    turn_plan(&state, req.model.as_deref(), &params)?;
    let conv = state
        .store
        .create_conversation(
            owner.user_id,
            NewConversation {
                title: clip(req.title.as_deref().unwrap_or(""), 200),
                model: req.model,
                system_prompt: req.system_prompt,
                params,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(conv)).into_response())
}

/// `GET /api/conversations` query.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    archived: Option<bool>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

/// `GET /api/conversations?q=&archived=&limit=&offset=` → `{data, has_more, next_offset}`:
/// pinned first, then the most recently active.
pub async fn list_conversations(
    State(state): State<AppState>,
    owner: Owner,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let offset = q.offset.unwrap_or(0);
    let (data, more) = state
        .store
        .list_conversations(
            owner.user_id,
            ListQuery {
                q: q.q.map(|s| clip(&s, 256)),
                archived: q.archived.unwrap_or(false),
                limit,
                offset,
            },
        )
        .await?;
    Ok(Json(json!({
        "data": data,
        "has_more": more,
        "next_offset": more.then_some(offset + limit),
    })))
}

/// `GET /api/conversations/{id}`.
pub async fn get_conversation(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    let conv = state.store.conversation(owner.user_id, id).await?;
    conv.map(Json).ok_or_else(not_found)
}

/// `PATCH /api/conversations/{id}` body: any of these.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeConversation {
    #[serde(default)]
    title: Option<String>,
    #[serde(default, with = "double_option")]
    model: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    system_prompt: Option<Option<String>>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    pinned: Option<bool>,
    #[serde(default)]
    archived: Option<bool>,
}

/// `null` clears a field, absence leaves it.
pub(crate) mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// `PATCH /api/conversations/{id}`: rename, pin, archive, model, system prompt, params.
pub async fn update_conversation(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
    body: Result<Json<ChangeConversation>, JsonRejection>,
) -> Result<Json<Conversation>, ApiError> {
    let Json(req) = body?;
    let current = state
        .store
        .conversation(owner.user_id, id.clone())
        .await?
        .ok_or_else(not_found)?;
    let model = match &req.model {
        Some(m) => m.clone(),
        None => current.model.clone(),
    };
    turn_plan(
        &state,
        model.as_deref(),
        req.params.as_ref().unwrap_or(&current.params),
    )?;
    let update = ConversationUpdate {
        title: req.title.map(|t| clip(&t, 200)),
        model: req.model,
        system_prompt: req.system_prompt,
        params: req.params,
        pinned: req.pinned,
        archived: req.archived,
    };
    let conv = state
        .store
        .update_conversation(owner.user_id, id, update)
        .await?;
    conv.map(Json).ok_or_else(not_found)
}

/// `DELETE /api/conversations/{id}` → 204.
pub async fn delete_conversation(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_conversation(owner.user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

/// `GET …/messages` query.
#[derive(Debug, Deserialize)]
pub struct MessagesParams {
    #[serde(default)]
    tree: Option<bool>,
}

/// `GET /api/conversations/{id}/messages`: the active branch, oldest first, each message with
/// the ids of its siblings (alternatives to switch to); `?tree=true`: every message.
pub async fn list_messages(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
    Query(q): Query<MessagesParams>,
) -> Result<Json<Value>, ApiError> {
    let (conv, all) = conversation_with_messages(&state, owner.user_id, id).await?;
    let shown = if q.tree.unwrap_or(false) {
        all.clone()
    } else {
        branch_to(&all, conv.active_leaf.as_deref())
    };
    let data: Vec<Value> = shown
        .iter()
        .map(|m| {
            let siblings: Vec<&str> = all
                .iter()
                .filter(|o| o.parent_id == m.parent_id && o.role == m.role)
                .map(|o| o.id.as_str())
                .collect();
            let mut v = json!(m);
            v["siblings"] = json!(siblings);
            v
        })
        .collect();
    Ok(Json(json!({"data": data, "active_leaf": conv.active_leaf})))
}

/// `PUT /api/conversations/{id}/active` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchBranch {
    message_id: String,
}

/// `PUT /api/conversations/{id}/active {message_id}`: show the branch through that message
/// (down to its newest answer).
pub async fn switch_branch(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
    body: Result<Json<SwitchBranch>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body?;
    let (_, all) = conversation_with_messages(&state, owner.user_id, id.clone()).await?;
    if !all.iter().any(|m| m.id == req.message_id) {
        return Err(ApiError::NotFound(
            "No such message in this conversation".into(),
        ));
    }
    let leaf = newest_leaf(&all, &req.message_id);
    state
        .store
        .set_active_leaf(owner.user_id, id, leaf.clone())
        .await?;
    Ok(Json(json!({"active_leaf": leaf})))
}

/// `POST /api/conversations/{id}/messages` body: `content` (a user message) or
/// `tool_outputs` (the results of the calls the message it follows made).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The user's message.
    #[serde(default)]
    pub content: Option<String>,
    /// `[{"tool_call_id", "output"}]`, one per call.
    #[serde(default)]
    pub tool_outputs: Option<Vec<ToolOutput>>,
    /// The message it follows (absent: the active branch's newest; `null`: none, a new first
    /// message — how the first question is edited).
    #[serde(default, with = "double_option")]
    pub parent_id: Option<Option<String>>,
    /// Another model for this turn.
    #[serde(default)]
    pub model: Option<String>,
    /// SSE (default) or one JSON answer at the end.
    #[serde(default)]
    pub stream: Option<bool>,
}

/// `POST …/messages/{message_id}/regenerate` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regenerate {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

/// `POST /api/conversations/{id}/messages`: add a user message and answer it.
pub async fn post_message(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
    body: Result<Json<PostMessage>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let tool_outputs = req.tool_outputs.unwrap_or_default();
    check_content(req.content.as_deref())?;
    let stream = req.stream.unwrap_or(true);
    let ask = TurnAsk {
        conversation_id: id,
        content: req.content,
        tool_outputs,
        parent_id: req.parent_id,
        regenerate: None,
        model: req.model,
    };
    turn(&state, &owner, ask, stream).await
}

/// `POST /api/conversations/{id}/messages/{message_id}/regenerate`: another answer to the same
/// question, beside the old one.
pub async fn regenerate(
    State(state): State<AppState>,
    owner: Owner,
    Path((id, message_id)): Path<(String, String)>,
    body: Option<Json<Regenerate>>,
) -> Result<Response, ApiError> {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    let stream = req.stream.unwrap_or(true);
    let ask = TurnAsk {
        conversation_id: id,
        content: None,
        tool_outputs: Vec::new(),
        parent_id: None,
        regenerate: Some(message_id),
        model: req.model,
    };
    turn(&state, &owner, ask, stream).await
}

/// A turn's `content`, from HTTP or a WebSocket frame, is not blank. (Which of `content`,
/// `tool_outputs` and `regenerate` a turn may combine is the generation service's rule,
/// [`crate::chat::conversation`].)
pub(crate) fn check_content(content: Option<&str>) -> Result<(), ApiError> {
    match content {
        Some(c) if c.trim().is_empty() => {
            Err(ApiError::invalid("content", "`content` must not be empty"))
        }
        _ => Ok(()),
    }
}

/// What a turn asks for, from HTTP or a WebSocket frame.
pub(crate) struct TurnAsk {
    pub(crate) conversation_id: String,
    pub(crate) content: Option<String>,
    pub(crate) tool_outputs: Vec<ToolOutput>,
    /// `None`: after the active leaf; `Some(None)`: a new first message (editing the first).
    pub(crate) parent_id: Option<Option<String>>,
    pub(crate) regenerate: Option<String>,
    pub(crate) model: Option<String>,
}

/// Start a turn of `owner`'s conversation.
pub(crate) async fn start_turn(
    state: &AppState,
    caller: &Caller,
    owner: i64,
    ask: TurnAsk,
    on_started: &(dyn Fn() + Send + Sync),
) -> Result<Turn, ApiError> {
    let conversation = state
        .store
        .conversation(owner, ask.conversation_id)
        .await?
        .ok_or_else(not_found)?;
    let model = state
        .chat
        .resolve_model(
            caller,
            ask.model.as_deref().or(conversation.model.as_deref()),
        )
        .await;
    let mut params = conversation.params.clone();
    // The owner's preferred sampling, where the conversation sets none.
    let prefs = state.chat.preferences(owner).await?;
    if let Some(obj) = params.as_object_mut() {
        for (key, value) in [
            ("temperature", prefs.temperature.map(|v| json!(v))),
            ("top_p", prefs.top_p.map(|v| json!(v))),
            ("max_tokens", prefs.max_tokens.map(|v| json!(v))),
        ] {
            if let (false, Some(v)) = (obj.contains_key(key), value) {
                obj.insert(key.into(), v);
            }
        }
    }
    let (model, params) = turn_plan(state, model.as_deref(), &params)?;
    let mut conversation = conversation;
    if conversation.system_prompt.is_none() {
        conversation.system_prompt = prefs.system_prompt.clone();
    }
    let memory = conversation.params.get("memory").and_then(Value::as_bool);
    if memory.unwrap_or(prefs.memory) {
        let memories = state.store.memories(owner).await?;
        if !memories.is_empty() {
            let notes: Vec<String> = memories
                .iter()
                .map(|m| format!("- {}", m.content))
                .collect();
            let base = conversation.system_prompt.take().unwrap_or_default();
            let sep = if base.is_empty() { "" } else { "\n\n" };
            conversation.system_prompt = Some(format!(
                "{base}{sep}What you know about the user:\n{}",
                notes.join("\n")
            ));
        }
    }
    Ok(state
        .chat
        .start_turn(
            caller,
            TurnRequest {
                conversation,
                content: ask.content,
                tool_outputs: ask.tool_outputs,
                parent_id: ask.parent_id,
                regenerate: ask.regenerate,
                model,
                params,
            },
            on_started,
        )
        .await?)
}

async fn turn(
    state: &AppState,
    owner: &Owner,
    ask: TurnAsk,
    stream: bool,
) -> Result<Response, ApiError> {
    let t = start_turn(state, &owner.caller, owner.user_id, ask, &|| {}).await?;
    let Turn {
        user_message,
        tool_messages,
        message,
        subscription,
        rate,
        cache_hit,
    } = t;
    let mut response = if stream {
        let first = json!({"type": "message", "user_message": user_message,
            "tool_messages": tool_messages, "message": message});
        sse_response(state, Some(first), message.id.clone(), subscription)
    } else {
        let (_, ended) = crate::chat::conversation::collect(subscription).await;
        let stored = state
            .store
            .message(owner.user_id, message.id.clone())
            .await?;
        if ended.is_none() {
            return Err(ApiError::Internal("an answer ended without its end".into()));
        }
        (
            StatusCode::CREATED,
            Json(
                json!({"user_message": user_message, "tool_messages": tool_messages,
                "message": stored}),
            ),
        )
            .into_response()
    };
    if stream {
        *response.status_mut() = StatusCode::OK;
    }
    add_run_headers(response.headers_mut(), rate, cache_hit);
    Ok(response)
}

/// The frame of one live event; with `timestamps`, token frames of sampled text carry
/// `sampled_at_us` (as on `/ws` generations).
pub(crate) fn event_frame(message_id: &str, ev: LiveEvent, timestamps: bool) -> Value {
    match ev {
        LiveEvent::Text(text, at) => {
            let mut frame = json!({"type": "token", "message_id": message_id, "text": text});
            if let (true, Some(at)) = (timestamps, at) {
                frame["sampled_at_us"] = json!(at);
            }
            frame
        }
        LiveEvent::End(e) => done_frame(message_id, &e),
    }
}

fn done_frame(message_id: &str, e: &Ended) -> Value {
    json!({
        "type": "done",
        "message_id": message_id,
        "status": e.status,
        "finish_reason": e.finish_reason,
        "error": e.error,
        "model": e.model,
        "stopped_by": e.stopped_by,
        "cached": e.cached,
        "timings": e.timings,
        "tool_calls": e.tool_calls,
        "usage": {
            "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens,
            "total_tokens": e.prompt_tokens + e.completion_tokens,
        },
    })
}

fn sse_response(
    state: &AppState,
    first: Option<Value>,
    message_id: String,
    subscription: Subscription,
) -> Response {
    let keepalive = Duration::from_secs(state.config.server.sse_keepalive_secs);
    let head =
        stream::iter(first.map(|f| Ok::<_, Infallible>(SseEvent::default().data(f.to_string()))));
    let body = stream::unfold((subscription, message_id), |(mut sub, id)| async move {
        let ev = sub.next().await?;
        let frame = event_frame(&id, ev, false);
        Some((Ok(SseEvent::default().data(frame.to_string())), (sub, id)))
    });
    Sse::new(futures::StreamExt::chain(head, body))
        .keep_alive(KeepAlive::new().interval(keepalive).text("ping"))
        .into_response()
}

/// `GET /api/messages/{id}`.
pub async fn get_message(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Json<Message>, ApiError> {
    let m = state.store.message(owner.user_id, id).await?;
    m.map(Json)
        .ok_or_else(|| ApiError::NotFound("No such message".into()))
}

/// `GET /api/messages/{id}/stream` query.
#[derive(Debug, Deserialize)]
pub struct StreamParams {
    #[serde(default)]
    offset: Option<usize>,
}

/// `GET /api/messages/{id}/stream?offset=N`: the answer's text from character N, then its live
/// tokens while it generates, then `done`.
pub async fn stream_message(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
    query: Result<Query<StreamParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("offset", e.body_text()))?;
    let (message, sub) = state
        .chat
        .follow(owner.user_id, &id, q.offset.unwrap_or(0))
        .await?;
    Ok(sse_response(&state, None, message.id, sub))
}

/// `POST /api/messages/{id}/cancel`: stop an answer that is generating (it ends
/// `interrupted`, with the text it had). 404 if it is not generating.
pub async fn cancel_message(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.chat.cancel_answer(owner.user_id, &id).await {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::NotFound(
            "No answer of yours is generating with that id".into(),
        ))
    }
}

/// `GET /api/rate-limit`: the caller's budgets: requests (limit, remaining, reset seconds),
/// daily tokens (limit, remaining, reset seconds) and concurrent generations; `null` where a
/// limit is off.
pub async fn rate_limit(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let (rate, tokens) = state.chat.limits_status(&caller).await;
    let limits = state.chat.limits_for(&caller);
    Json(json!({
        "requests": rate.map(|r| json!({
            "limit": r.limit, "remaining": r.remaining, "reset_secs": r.reset_secs,
        })),
        "tokens": tokens.map(|t| json!({
            "limit": t.limit, "remaining": t.remaining, "reset_secs": t.reset_secs,
        })),
        "concurrent_generations": (limits.concurrent_generations > 0)
            .then_some(limits.concurrent_generations),
    }))
}
