//! Export and import of conversations: `GET /api/conversations/{id}/export?format=json|markdown`
//! and `POST /api/conversations/import`. The JSON export holds the whole message tree (ids,
//! parents, roles, text, models, statuses, times) and imports back as a new conversation of the
//! caller's with new ids; the Markdown export is the active branch, for reading.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::conversations::Owner;
use super::error::{clip, ApiError};
use super::AppState;
use crate::chat::conversation::branch_to;
use crate::store::conversations::{ImportedMessage, NewConversation};

/// The `format` of an export file.
pub const EXPORT_FORMAT: &str = "hearth.conversation.v1";
/// The most messages one import may hold.
const MAX_IMPORT_MESSAGES: usize = 10_000;

/// `?format=`.
#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
}

/// `GET /api/conversations/{id}/export`.
pub async fn export_conversation(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let (conv, messages) =
        super::conversations::conversation_with_messages(&state, owner.user_id, id).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            let body = json!({
                "format": EXPORT_FORMAT,
                "conversation": conv,
                "messages": messages.iter().map(|m| {
                    let mut e = json!({
                        "id": m.id, "parent_id": m.parent_id, "role": m.role,
                        "content": m.content, "model": m.model, "status": m.status,
                        "finish_reason": m.finish_reason, "created_at": m.created_at,
                    });
                    if let Some(calls) = &m.tool_calls {
                        e["tool_calls"] = calls.clone();
                    }
                    if let Some(id) = &m.tool_call_id {
                        e["tool_call_id"] = json!(id);
                    }
                    e
                }).collect::<Vec<_>>(),
            });
            let disposition = format!("attachment; filename=\"{}.json\"", conv.id);
            Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(body)).into_response())
        }
        "markdown" => {
            let title = if conv.title.is_empty() {
                "Conversation"
            } else {
                &conv.title
            };
            let mut md = format!("# {title}\n");
            if let Some(system) = conv.system_prompt.as_deref().filter(|s| !s.is_empty()) {
                md.push_str(&format!("\n**System:** {system}\n"));
            }
            for m in branch_to(&messages, conv.active_leaf.as_deref()) {
                let who = match (m.role.as_str(), m.model.as_deref()) {
                    ("assistant", Some(model)) => format!("Assistant ({model})"),
                    ("assistant", None) => "Assistant".into(),
                    ("system", _) => "System".into(),
                    ("tool", _) => format!(
                        "Tool result ({})",
                        m.tool_call_id.as_deref().unwrap_or_default()
                    ),
                    _ => "User".into(),
                };
                md.push_str(&format!("\n**{who}:**\n\n{}\n", m.content));
                for call in m
                    .tool_calls
                    .iter()
                    .flat_map(|c| c.as_array().into_iter().flatten())
                {
                    let f = |key: &str| {
                        call.pointer(&format!("/function/{key}"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
                    md.push_str(&format!(
                        "\n*Calls `{}` ({id}):*\n\n```json\n{}\n```\n",
                        f("name"),
                        f("arguments")
                    ));
                }
            }
            let disposition = format!("attachment; filename=\"{}.md\"", conv.id);
            Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        "text/markdown; charset=utf-8".to_string(),
                    ),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                md,
            )
                .into_response())
        }
        other => Err(ApiError::invalid(
            "format",
            format!("unknown format `{}` (json or markdown)", clip(other, 32)),
        )),
    }
}

/// `POST /api/conversations/import` body: an export.
#[derive(Debug, Deserialize)]
pub struct ImportBody {
    format: String,
    conversation: ImportedConversation,
    messages: Vec<ImportedMessage>,
}

/// The conversation part of an export (its id, owner and times are not imported).
#[derive(Debug, Deserialize)]
pub struct ImportedConversation {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system_prompt: Option<String>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    active_leaf: Option<String>,
}

/// `POST /api/conversations/import` → 201 with the new conversation.
pub async fn import_conversation(
    State(state): State<AppState>,
    owner: Owner,
    body: Result<Json<ImportBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    if req.format != EXPORT_FORMAT {
        return Err(ApiError::invalid(
            "format",
            format!("expected `{EXPORT_FORMAT}`"),
        ));
    }
    if req.messages.len() > MAX_IMPORT_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!("at most {MAX_IMPORT_MESSAGES} messages"),
        ));
    }
    let c = req.conversation;
    let params = c.params.unwrap_or_else(|| json!({}));
    // An export from another server may name a model this one lacks: keep the rest.
    let model = c.model.filter(|m| state.router.serves(m));
    super::conversations::check_params(&state, model.as_deref(), &params)?;
    let imported = state
        .store
        .import_conversation(
            owner.user_id,
            NewConversation {
                title: clip(c.title.as_deref().unwrap_or(""), 200),
                model,
                system_prompt: c.system_prompt,
                params,
            },
            req.messages,
            c.active_leaf,
        )
        .await?;
    match imported {
        Ok(conv) => Ok((StatusCode::CREATED, Json(conv)).into_response()),
        Err(message) => Err(ApiError::invalid("messages", message)),
    }
}
