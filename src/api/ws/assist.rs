//! A `generate` frame with a `post_id`: one of the blog's AI writing tools on one of the
//! socket user's posts ([`crate::api::assist`] validates and prepares it). Frames: `status`
//! (`queued`, `thinking`), `token` (`text`), then `done` (`action`, `text`, `titles` /
//! `keywords`, `finish_reason`, `model`, `usage`) or `error`; a `cancel` ends it with a `done`
//! whose `finish_reason` is `cancelled`.

use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::{api_error_frame, send, until_cancelled, Outbox, Registry};
use crate::api::assist::{prepare, step, AssistInput, Prepared, Step};
use crate::api::error::{clip, ApiError, MESSAGE_MAX_BYTES};
use crate::api::openai::wire::UsageBody;
use crate::api::AppState;
use crate::chat::{Caller, Run};

/// Run the assist `frame` asks for, to its last frame (or until it is cancelled).
pub(super) async fn follow(
    state: AppState,
    caller: Caller,
    id: String,
    frame: Value,
    out: Outbox,
    registry: Registry,
    mut cancel: oneshot::Receiver<()>,
) {
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
        }),
        Some(Ok(mut frame)) => {
            frame["id"] = json!(id);
            frame
        }
        Some(Err(e)) => api_error_frame(&id, &e),
    };
    send(&out, last);
}

async fn drive(
    state: &AppState,
    caller: &Caller,
    id: &str,
    frame: Value,
    out: &Outbox,
    slot: &mut Option<Run>,
) -> Result<Value, ApiError> {
    let owner = caller.principal.user_id().ok_or_else(|| {
        ApiError::Unauthorized("Posts belong to accounts: sign in as a user".into())
    })?;
    let post_id = frame
        .get("post_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let input: AssistInput =
        serde_json::from_value(frame).map_err(|e| ApiError::InvalidRequest {
            message: clip(&format!("Invalid request: {e}"), MESSAGE_MAX_BYTES),
            param: None,
        })?;
    let Prepared { assist, ask } = prepare(state, caller, owner, post_id, input).await?;
    send(out, json!({"type": "status", "id": id, "state": "queued"}));
    let thinking = || {
        send(
            out,
            json!({"type": "status", "id": id, "state": "thinking"}),
        )
    };
    let run = slot.insert(state.chat.start(caller, ask, &thinking).await?);
    loop {
        match step(state, run, &assist).await {
            Some(Step::Token(text)) => send(out, json!({"type": "token", "id": id, "text": text})),
            Some(Step::Done(frame)) => return Ok(frame),
            Some(Step::Failed(e)) => return Err(e),
            None => {
                return Err(ApiError::Internal(
                    "an assist ended without its result".into(),
                ))
            }
        }
    }
}
