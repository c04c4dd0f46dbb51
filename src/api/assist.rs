//! `POST /api/posts/{id}/assist`: the blog's AI writing tools over HTTP — streamed as SSE
//! (`stream: true`, the default) or answered as JSON once done — and the preparation `/ws`
//! shares ([`prepare`], [`done_frame`]). Each runs through the one generation service, so
//! rate limits, quotas, usage, the cache and the caller's model choice apply unchanged.
//!
//! SSE frames are JSON objects with a `type`: `token` (`text`: the model's raw text as it is
//! sampled), then `done` (`action`, `text`: the checked result, `titles` / `keywords` as
//! arrays for those actions, `finish_reason`, `model`, `usage`) or `error` (`message`, `code`,
//! `status`). Nothing is saved: the client applies the result and saves the post.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::conversations::Owner;
use super::error::ApiError;
use super::headers::add_run_headers;
use super::openai::wire::UsageBody;
use super::openai::{finish_str, plan_params, CommonParams};
use super::AppState;
use crate::backends::{Prompt, Summary};
use crate::blog::assist::{finish, Action, Assist, AssistError};
use crate::chat::{Ask, Caller, Output, Run};
use crate::engine::generate::OutputFormat;

/// `options` of an assist request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistOptions {
    /// The editor's current (unsaved) Markdown; default the stored body.
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    count: Option<i64>,
    #[serde(default)]
    style: Option<String>,
    #[serde(default)]
    words: Option<i64>,
    /// A character index into the body (continue).
    #[serde(default)]
    cursor: Option<i64>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    model: Option<String>,
}

/// The assist request: the HTTP body, and a `/ws` `generate` frame's fields.
#[derive(Debug, Deserialize)]
pub struct AssistInput {
    /// One of [`Action::NAMES`].
    pub action: String,
    /// The selected text (rewrite, expand).
    #[serde(default)]
    pub selection: Option<String>,
    /// Options of the action.
    #[serde(default)]
    pub options: Option<AssistOptions>,
    /// HTTP only: SSE (the default) or one JSON answer.
    #[serde(default)]
    pub stream: Option<bool>,
}

/// A validated assist request and the generation request it becomes.
pub(crate) struct Prepared {
    pub(crate) assist: Assist,
    pub(crate) ask: Ask,
}

fn in_range(
    param: &'static str,
    v: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
) -> Result<usize, ApiError> {
    let v = v.unwrap_or(default);
    if range.contains(&v) {
        Ok(v as usize)
    } else {
        Err(ApiError::invalid(
            param,
            format!(
                "`{param}` must be between {} and {}, got {v}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// Check `input` against `owner`'s post `post_id` and build the generation request.
pub(crate) async fn prepare(
    state: &AppState,
    caller: &Caller,
    owner: i64,
    post_id: String,
    input: AssistInput,
) -> Result<Prepared, ApiError> {
    let action = Action::parse(&input.action).ok_or_else(|| {
        ApiError::invalid(
            "action",
            format!("`action` must be one of {}", Action::NAMES),
        )
    })?;
    let post = super::posts::owned_post(state, owner, post_id).await?;
    let o = input.options.unwrap_or_default();
    let b = &state.config.blog;
    let body = o.body.unwrap_or(post.body);
    for (param, text) in [
        ("options.body", Some(&body)),
        ("selection", input.selection.as_ref()),
        ("options.topic", o.topic.as_ref()),
    ] {
        if text.is_some_and(|t| t.len() > b.max_body_bytes) {
            return Err(ApiError::TooLarge(format!(
                "`{param}` is over {} bytes (blog.max_body_bytes)",
                b.max_body_bytes
            )));
        }
    }
    let cursor = match o.cursor {
        None => None,
        Some(c) if c >= 0 => Some(c as usize),
        Some(c) => {
            return Err(ApiError::invalid(
                "options.cursor",
                format!("`options.cursor` must not be negative, got {c}"),
            ))
        }
    };
    let assist = Assist {
        action,
        title: post.title,
        body,
        selection: input.selection,
        topic: o.topic.filter(|t| !t.trim().is_empty()),
        count: in_range("options.count", o.count, 1..=10, 5)?,
        style: o.style,
        words: in_range("options.words", o.words, 1..=1000, 50)?,
        cursor,
    };
    assist.validate().map_err(|e| match e {
        AssistError::Invalid { param, message } => ApiError::invalid(param, message),
        other => ApiError::Internal(other.to_string()),
    })?;
    let messages = state
        .blog
        .prompts
        .messages(&assist, b.assist_input_chars)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let model = state.chat.resolve_model(caller, o.model.as_deref()).await;
    let wanted = match o.max_tokens {
        None => b.assist_max_tokens,
        Some(m) => in_range(
            "options.max_tokens",
            Some(m),
            1..=state.config.generation.max_tokens_limit as i64,
            1,
        )?,
    };
    let common = CommonParams {
        model,
        max_tokens: Some(wanted.min(action.token_cap()) as i64),
        temperature: Some(o.temperature.unwrap_or(b.assist_temperature)),
        ..CommonParams::default()
    };
    let mut plan = plan_params(state, &common).map_err(|e| match e {
        ApiError::InvalidRequest { message, param } => ApiError::InvalidRequest {
            message,
            param: param.map(|p| format!("options.{p}")),
        },
        other => other,
    })?;
    if action.json() {
        // A list of at least one non-empty entry, not merely some JSON object: a small model
        // in plain JSON mode sometimes answers `{"titles": []}` and the writer gets nothing.
        let key = action.name();
        plan.params.format = match state
            .schemas
            .get(key, &list_schema(key, assist.count), true)
        {
            Ok(format) => OutputFormat::JsonSchema(format),
            Err(e) => {
                tracing::warn!(error = %e, "assist schema did not compile; plain JSON mode");
                OutputFormat::JsonObject
            }
        };
    }
    plan.stream = true;
    Ok(Prepared {
        assist,
        ask: plan.ask(vec![Prompt::Chat(messages)]),
    })
}

/// `{key: [at least one and at most `count` non-empty strings]}`: the shape of a list answer.
fn list_schema(key: &str, count: usize) -> Value {
    json!({
        "type": "object",
        "properties": {key: {
            "type": "array",
            "items": {"type": "string", "minLength": 2, "maxLength": 120},
            "minItems": 1,
            "maxItems": count,
        }},
        "required": [key],
        "additionalProperties": false,
    })
}

/// The last frame of an assist: the checked result and how the generation went.
pub(crate) fn done_frame(state: &AppState, run: &Run, assist: &Assist, summary: &Summary) -> Value {
    let result = finish(assist, &summary.text, state.config.blog.max_keywords);
    let mut frame = json!({
        "type": "done",
        "action": assist.action.name(),
        "text": result.text,
        "finish_reason": finish_str(summary.finish_reason),
        "model": run.model(),
        "usage": UsageBody::from(run.usage()),
        "cached": run.cache_hit(),
    });
    if let Some(t) = result.titles {
        frame["titles"] = json!(t);
    }
    if let Some(k) = result.keywords {
        frame["keywords"] = json!(k);
    }
    frame
}

/// An error frame (SSE and `/ws` alike) for a failure after the generation started.
pub(crate) fn error_frame(e: &ApiError) -> Value {
    let body = e.body();
    json!({
        "type": "error",
        "message": body["error"]["message"],
        "code": body["error"]["code"].as_str().or(body["error"]["type"].as_str()),
        "status": e.status().as_u16(),
    })
}

/// What reading an assist run gives next.
pub(crate) enum Step {
    /// Newly sampled text.
    Token(String),
    /// The `done` frame: the run is over.
    Done(Value),
    /// The run failed after it started.
    Failed(ApiError),
}

/// The next step of an assist run.
pub(crate) async fn step(state: &AppState, run: &mut Run, assist: &Assist) -> Option<Step> {
    let mut done: Option<Summary> = None;
    loop {
        match run.next().await {
            Some(Output::Piece { text, .. }) if done.is_none() => {
                if !text.is_empty() {
                    return Some(Step::Token(text));
                }
            }
            Some(Output::Piece { .. } | Output::Tool { .. }) => {}
            Some(Output::Done { summary, .. }) => done = Some(summary),
            Some(Output::Failed(e)) => return Some(Step::Failed(e.into())),
            // Polled to the end, so the run finishes normally (usage, cache fill).
            None => return done.map(|s| Step::Done(done_frame(state, run, assist, &s))),
        }
    }
}

fn frames(state: AppState, run: Run, assist: Assist) -> impl Stream<Item = Value> {
    stream::unfold(Some((state, run, assist)), |st| async move {
        let (state, mut run, assist) = st?;
        match step(&state, &mut run, &assist).await? {
            Step::Token(text) => Some((
                json!({"type": "token", "text": text}),
                Some((state, run, assist)),
            )),
            Step::Done(frame) => Some((frame, None)),
            Step::Failed(e) => Some((error_frame(&e), None)),
        }
    })
}

/// `POST /api/posts/{id}/assist`.
pub async fn assist_post(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
    body: Result<Json<AssistInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(input) = body?;
    let streaming = input.stream.unwrap_or(true);
    let Prepared { assist, ask } = prepare(&state, &owner.caller, owner.user_id, id, input).await?;
    let mut run = state.chat.start(&owner.caller, ask, &|| {}).await?;
    let (rate, cache_hit) = (run.rate(), run.cache_hit());
    let mut response = if streaming {
        let keepalive = Duration::from_secs(state.config.server.sse_keepalive_secs);
        let events = frames(state, run, assist)
            .map(|frame| Ok::<_, Infallible>(SseEvent::default().data(frame.to_string())));
        Sse::new(events)
            .keep_alive(KeepAlive::new().interval(keepalive).text("ping"))
            .into_response()
    } else {
        let mut body = loop {
            match step(&state, &mut run, &assist).await {
                Some(Step::Token(_)) => {}
                Some(Step::Done(frame)) => break frame,
                Some(Step::Failed(e)) => return Err(e),
                None => {
                    return Err(ApiError::Internal(
                        "an assist ended without its result".into(),
                    ))
                }
            }
        };
        if let Some(o) = body.as_object_mut() {
            o.remove("type");
        }
        Json(body).into_response()
    };
    add_run_headers(response.headers_mut(), rate, cache_hit);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_schemas_compile_without_falling_back() {
        let cache = crate::engine::grammar::mask::SchemaCache::new(4, 100_000);
        for key in ["titles", "keywords"] {
            let format = cache
                .get(key, &list_schema(key, 5), true)
                .expect("compiles");
            assert!(format.warnings.is_empty(), "{:?}", format.warnings);
        }
    }
}
