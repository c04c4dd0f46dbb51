//! One `generate` frame of a socket, from the credential check and validation through the
//! backend router to its last frame (`done` or `error`); the frames it sends in between.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

use super::{api_error_frame, lock, send, until_cancelled, Outbox, Registry, SocketOwner};
use crate::api::error::{clip, ApiError, MESSAGE_MAX_BYTES};
use crate::api::openai::wire::UsageBody;
use crate::api::openai::{chat_messages, chat_plan, finish_str, ChatRequest};
use crate::api::AppState;
use crate::backends::Prompt;
use crate::backends::Summary;
use crate::chat::{Output, Run, Usage};
use crate::engine::generate::{rate, FinishReason};

/// A `generate` frame: the chat request plus the socket's own options.
#[derive(Debug, Deserialize)]
struct GenerateFrame {
    /// Add `sampled_at_us` to token frames.
    #[serde(default)]
    timestamps: Option<bool>,
    #[serde(flatten)]
    chat: ChatRequest,
}

/// One generation, from the credential check and validation to its last frame.
#[allow(clippy::too_many_arguments)]
pub(super) async fn generation(
    state: AppState,
    owner: SocketOwner,
    revoked: Arc<Notify>,
    id: String,
    frame: Value,
    out: Outbox,
    registry: Registry,
    mut cancel: oneshot::Receiver<()>,
) {
    let caller = match owner.recheck(&state).await {
        Ok(c) => c,
        Err(e) => {
            lock(&registry).remove(&id);
            send(&out, api_error_frame(&id, &e));
            revoked.notify_one();
            return;
        }
    };
    let resume = frame.get("type").and_then(Value::as_str) == Some("resume");
    if !resume && frame.get("post_id").is_some() {
        return super::assist::follow(state, caller, id, frame, out, registry, cancel).await;
    }
    if resume || frame.get("conversation_id").is_some() {
        return super::conversation::follow(
            state, caller, id, frame, resume, out, registry, cancel,
        )
        .await;
    }
    let (outcome, usage) = until_cancelled(&registry, &id, &mut cancel, async |run| {
        drive(&state, &caller, &id, frame, &out, run).await
    })
    .await;
    let last = match outcome {
        None => json!({
            "type": "done",
            "id": id,
            "finish_reason": "cancelled",
            "usage": UsageBody::from(usage),
            "timings": null,
        }),
        Some(Ok((summary, model, cache_hit, stopped_by))) => {
            let mut frame = done_frame(&id, &summary, usage, &model, cache_hit);
            if let Some(by) = stopped_by {
                frame["stopped_by"] = json!(by);
            }
            frame
        }
        Some(Err(err)) => api_error_frame(&id, &err),
    };
    tracing::debug!(id, "websocket generation ended");
    send(&out, last);
}

/// Validate, start through the generation service, and forward outputs until the run ends.
/// Returns the summary, the answering model, whether the cache answered and which guard
/// stopped it, if one did.
async fn drive(
    state: &AppState,
    caller: &crate::chat::Caller,
    id: &str,
    frame: Value,
    out: &Outbox,
    slot: &mut Option<Run>,
) -> Result<(Summary, String, bool, Option<&'static str>), ApiError> {
    let GenerateFrame {
        timestamps,
        mut chat,
    } = serde_json::from_value(frame).map_err(|e| {
        let message = e.to_string();
        let param = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        ApiError::InvalidRequest {
            message: clip(&format!("Invalid request: {message}"), MESSAGE_MAX_BYTES),
            param,
        }
    })?;
    if let Some(n) = chat.common.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid(
            "n",
            format!("must be 1 on the WebSocket (send one `generate` frame per choice), got {n}"),
        ));
    }
    // A socket always streams: `stream` and `stream_options` mean nothing here.
    chat.common.stream = Some(true);
    chat.common.stream_options = None;
    let timestamps = timestamps.unwrap_or(false);
    chat.common.model = state
        .chat
        .resolve_model(caller, chat.common.model.as_deref())
        .await;
    let plan = chat_plan(state, &chat)?;
    let ask = plan.ask(vec![Prompt::Chat(chat_messages(chat.messages)?)]);
    send(out, json!({"type": "status", "id": id, "state": "queued"}));
    let thinking = || {
        send(
            out,
            json!({"type": "status", "id": id, "state": "thinking"}),
        )
    };
    let run = slot.insert(state.chat.start(caller, ask, &thinking).await?);
    while let Some(output) = run.next().await {
        match output {
            Output::Piece {
                text,
                logprobs,
                sampled_at,
                ..
            } => {
                let mut frame = json!({"type": "token", "id": id, "text": text});
                if let (true, Some(at)) = (timestamps, sampled_at) {
                    frame["sampled_at_us"] = json!(crate::chat::run::unix_micros(at));
                }
                if let Some(lp) = logprobs.filter(|_| plan.logprobs) {
                    frame["logprob"] = json!(lp.logprob);
                    frame["top_logprobs"] = lp
                        .top
                        .iter()
                        .map(|(token, l)| json!({"token": token, "logprob": l}))
                        .collect();
                }
                send(out, frame);
            }
            Output::Tool { delta, .. } => send(out, tool_frame(id, delta)),
            Output::Done {
                summary,
                stopped_by,
                ..
            } => {
                return Ok((
                    summary,
                    run.model().to_string(),
                    run.cache_hit(),
                    stopped_by,
                ))
            }
            Output::Failed(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal("the backend dropped a request".into()))
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn done_frame(id: &str, s: &Summary, usage: Usage, model: &str, cache_hit: bool) -> Value {
    let finish_reason = match s.finish_reason {
        FinishReason::Cancelled => "cancelled",
        reason => finish_str(reason),
    };
    let computed = s.prompt_tokens.saturating_sub(s.cached_prompt_tokens);
    json!({
        "type": "done",
        "id": id,
        "finish_reason": finish_reason,
        "model": model,
        "cached": cache_hit,
        "usage": UsageBody::from(usage),
        "timings": {
            "queued_ms": millis(s.queued),
            "prompt_ms": millis(s.prompt_time),
            "decode_ms": millis(s.decode_time),
            "prompt_tokens_per_s": rate(computed, s.prompt_time),
            // The first token comes out of the prompt pass: n - 1 decode steps.
            "decode_tokens_per_s": rate(s.completion_tokens.saturating_sub(1), s.decode_time),
        },
    })
}

/// A `tool_call` frame (a call begins: its index, call id and function) or a `tool_args`
/// frame (more of its arguments text).
fn tool_frame(id: &str, delta: crate::engine::tools::ToolDelta) -> serde_json::Value {
    use crate::engine::tools::ToolDelta;
    match delta {
        ToolDelta::Start {
            index,
            id: call,
            name,
        } => {
            json!({"type": "tool_call", "id": id, "index": index, "call_id": call, "name": name})
        }
        ToolDelta::Args { index, fragment } => {
            json!({"type": "tool_args", "id": id, "index": index, "arguments": fragment})
        }
        ToolDelta::Text(text) => json!({"type": "token", "id": id, "text": text}),
    }
}
