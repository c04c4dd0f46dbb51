//! One `generate` frame of a socket, from the credential check and validation through the
//! backend router to its last frame (`done` or `error`); the frames it sends in between.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

use super::{api_error_frame, lock, send, Caller, Outbox, Registry};
use crate::api::error::{clip, ApiError, MESSAGE_MAX_BYTES};
use crate::api::openai::{chat_messages, chat_plan, finish_str, usage, ChatRequest};
use crate::api::AppState;
use crate::backends::{BackendRequest, Event, Prompt};
use crate::engine::generate::{rate, FinishReason};
use crate::engine::scheduler::Summary;

/// A `generate` frame: the chat request plus the socket's own options.
#[derive(Debug, Deserialize)]
struct GenerateFrame {
    /// Add `sampled_at_us` to token frames.
    #[serde(default)]
    timestamps: Option<bool>,
    #[serde(flatten)]
    chat: ChatRequest,
}

/// What a generation delivered so far (for the usage of a cancelled one).
#[derive(Debug, Default)]
struct Delivered {
    prompt_tokens: usize,
    completion_tokens: usize,
    /// The model answering (after any failover).
    model: String,
}

/// One generation, from the credential check and validation to its last frame.
#[allow(clippy::too_many_arguments)]
pub(super) async fn generation(
    state: AppState,
    caller: Caller,
    revoked: Arc<Notify>,
    id: String,
    frame: Value,
    out: Outbox,
    registry: Registry,
    mut cancel: oneshot::Receiver<()>,
) {
    let principal = match caller.recheck(&state).await {
        Ok(p) => p,
        Err(e) => {
            lock(&registry).remove(&id);
            send(&out, api_error_frame(&id, &e));
            revoked.notify_one();
            return;
        }
    };
    let mut delivered = Delivered::default();
    let outcome = tokio::select! {
        biased;
        // A sent cancel, or its sender dropped with the socket: either way, stop.
        _ = &mut cancel => None,
        result = drive(&state, &id, frame, &out, &mut delivered) => Some(result),
    };
    // Free the id before the last frame goes out, so the client may reuse it at once.
    lock(&registry).remove(&id);
    match &outcome {
        Some(Ok(summary)) => {
            principal.record_usage(&state, summary.prompt_tokens, summary.completion_tokens)
        }
        None if delivered.completion_tokens > 0 => {
            principal.record_usage(&state, delivered.prompt_tokens, delivered.completion_tokens)
        }
        _ => {}
    }
    let last = match outcome {
        None => json!({
            "type": "done",
            "id": id,
            "finish_reason": "cancelled",
            "usage": usage(delivered.prompt_tokens, 0, delivered.completion_tokens),
            "timings": null,
        }),
        Some(Ok(summary)) => done_frame(&id, &summary, &delivered.model),
        Some(Err(err)) => api_error_frame(&id, &err),
    };
    tracing::debug!(id, "websocket generation ended");
    send(&out, last);
}

/// Validate, queue, and forward events until the job ends. Dropping this future drops the
/// event receiver, which cancels the job on the model thread.
async fn drive(
    state: &AppState,
    id: &str,
    frame: Value,
    out: &Outbox,
    delivered: &mut Delivered,
) -> Result<Summary, ApiError> {
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
    let timestamps = timestamps.unwrap_or(false);
    let plan = chat_plan(state, &chat)?;
    let model = plan.model.clone();
    let request = BackendRequest {
        prompt: Prompt::Chat(chat_messages(chat.messages)?),
        params: plan.request,
        logprobs: plan.logprobs,
        stream: true,
    };
    send(out, json!({"type": "status", "id": id, "state": "queued"}));
    let thinking = || {
        send(
            out,
            json!({"type": "status", "id": id, "state": "thinking"}),
        )
    };
    let mut generation = state.router.start(&model, &request, &thinking).await?;
    delivered.prompt_tokens = generation.prompt_tokens;
    delivered.model = generation.model.clone();
    while let Some(event) = generation.recv().await {
        match event {
            Event::Started => {}
            Event::Token {
                text,
                logprobs,
                sampled_at,
            } => {
                delivered.completion_tokens += 1;
                let logprobs = logprobs.filter(|_| plan.logprobs);
                if text.is_empty() && logprobs.is_none() {
                    continue;
                }
                let mut frame = json!({"type": "token", "id": id, "text": text});
                if timestamps {
                    frame["sampled_at_us"] = json!(unix_micros(sampled_at));
                }
                if let Some(lp) = logprobs {
                    frame["logprob"] = json!(lp.logprob);
                    frame["top_logprobs"] = lp
                        .top
                        .iter()
                        .map(|(token, l)| json!({"token": token, "logprob": l}))
                        .collect();
                }
                send(out, frame);
            }
            Event::Text(text) => {
                if !text.is_empty() {
                    send(out, json!({"type": "token", "id": id, "text": text}));
                }
            }
            Event::Done(summary) => return Ok(summary),
            Event::Error(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal("the backend dropped a request".into()))
}

/// Unix time in microseconds of an instant in the past.
fn unix_micros(at: Instant) -> Option<u64> {
    let then = SystemTime::now().checked_sub(at.elapsed())?;
    let since = then.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_micros()).ok()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn done_frame(id: &str, s: &Summary, model: &str) -> Value {
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
        "usage": usage(s.prompt_tokens, s.cached_prompt_tokens, s.completion_tokens),
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
