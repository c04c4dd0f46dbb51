//! Conversation turns and resumption on a socket: a `generate` frame with a `conversation_id`
//! runs a turn of that conversation (frames `message`, `token`, `done` carrying the
//! `message_id`), and `{"type": "resume", "message_id", "offset"}` follows an answer from a
//! character offset (its stored text, then live tokens, then `done`). A `cancel` stops the
//! answer itself (it ends `interrupted`); a socket that goes only stops following — the answer
//! keeps generating for `chat.detach_grace_secs` ([`crate::chat::conversation`]).

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::{api_error_frame, lock, send, Outbox, Registry};
use crate::api::conversations::{check_content, double_option, event_frame, start_turn, TurnAsk};
use crate::api::error::{clip, ApiError, MESSAGE_MAX_BYTES};
use crate::api::AppState;
use crate::chat::conversation::ToolOutput;
use crate::chat::live::{LiveEvent, Subscription};
use crate::chat::Caller;

/// A conversation `generate` frame (`timestamps` is read before it is parsed).
#[derive(Debug, Deserialize)]
struct TurnFrame {
    conversation_id: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_outputs: Option<Vec<ToolOutput>>,
    #[serde(default, with = "double_option")]
    parent_id: Option<Option<String>>,
    #[serde(default)]
    regenerate: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

/// A `resume` frame.
#[derive(Debug, Deserialize)]
struct ResumeFrame {
    message_id: String,
    #[serde(default)]
    offset: Option<usize>,
}

fn parse<T: serde::de::DeserializeOwned>(frame: Value) -> Result<T, ApiError> {
    serde_json::from_value(frame).map_err(|e| ApiError::InvalidRequest {
        message: clip(&format!("Invalid request: {e}"), MESSAGE_MAX_BYTES),
        param: None,
    })
}

/// Start (or resume) and return the message followed and its subscription.
async fn open(
    state: &AppState,
    caller: &Caller,
    id: &str,
    frame: Value,
    resume: bool,
    out: &Outbox,
) -> Result<(String, Subscription), ApiError> {
    let owner = caller.principal.user_id().ok_or_else(|| {
        ApiError::Unauthorized(
            "Conversations belong to accounts: connect with a user's access token or API key"
                .into(),
        )
    })?;
    if resume {
        let r: ResumeFrame = parse(frame)?;
        let (message, sub) = state
            .chat
            .follow(owner, &r.message_id, r.offset.unwrap_or(0))
            .await?;
        return Ok((message.id, sub));
    }
    let t: TurnFrame = parse(frame)?;
    let tool_outputs = t.tool_outputs.unwrap_or_default();
    check_content(t.content.as_deref())?;
    // As for plain generations: `queued` now, `thinking` once a backend starts on it. Both come
    // before the `message` frame, which goes out with the first token.
    send(out, json!({"type": "status", "id": id, "state": "queued"}));
    let thinking = || {
        send(
            out,
            json!({"type": "status", "id": id, "state": "thinking"}),
        )
    };
    let turn = start_turn(
        state,
        caller,
        owner,
        TurnAsk {
            conversation_id: t.conversation_id,
            content: t.content,
            tool_outputs,
            parent_id: t.parent_id,
            regenerate: t.regenerate,
            model: t.model,
        },
        &thinking,
    )
    .await?;
    send(
        out,
        json!({
            "type": "message",
            "id": id,
            "user_message": turn.user_message,
            "tool_messages": turn.tool_messages,
            "message": turn.message,
        }),
    );
    Ok((turn.message.id, turn.subscription))
}

/// One conversation generation or resumption of a socket, to its last frame.
#[allow(clippy::too_many_arguments)]
pub(super) async fn follow(
    state: AppState,
    caller: Caller,
    id: String,
    frame: Value,
    resume: bool,
    out: Outbox,
    registry: Registry,
    mut cancel: oneshot::Receiver<()>,
) {
    let timestamps = frame.get("timestamps").and_then(Value::as_bool) == Some(true);
    let opened = tokio::select! {
        biased;
        _ = &mut cancel => None,
        r = open(&state, &caller, &id, frame, resume, &out) => Some(r),
    };
    let (message_id, mut sub) = match opened {
        None => {
            lock(&registry).remove(&id);
            return send(
                &out,
                json!({"type": "done", "id": id, "status": "cancelled"}),
            );
        }
        Some(Err(e)) => {
            lock(&registry).remove(&id);
            return send(&out, api_error_frame(&id, &e));
        }
        Some(Ok(opened)) => opened,
    };
    let owner = caller.principal.user_id().unwrap_or_default();
    let mut cancelled = false;
    loop {
        let ev = tokio::select! {
            biased;
            sent = &mut cancel, if !cancelled => {
                cancelled = true;
                if sent.is_err() {
                    // The socket went: stop following; the answer goes on for the grace.
                    break;
                }
                // A `cancel` frame: stop the answer itself; its end (interrupted) follows.
                state.chat.cancel_answer(owner, &message_id).await;
                continue;
            }
            ev = sub.next() => ev,
        };
        let Some(ev) = ev else { break };
        let last = matches!(ev, LiveEvent::End(_));
        let mut frame = event_frame(&message_id, ev, timestamps);
        frame["id"] = json!(id);
        if last {
            lock(&registry).remove(&id);
            send(&out, frame);
            return;
        }
        send(&out, frame);
    }
    lock(&registry).remove(&id);
}
