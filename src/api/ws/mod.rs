//! `GET /ws`: chat generation over a WebSocket, tokens pushed as they are sampled.
//!
//! This module owns the upgrade (API key check, message size limit), the socket's lifetime
//! (keepalive Pings, dead-peer detection, cancelling everything when the socket goes) and the
//! JSON protocol below. Request validation is the chat endpoint's ([`super::openai`]), so a
//! `generate` frame accepts exactly what `POST /v1/chat/completions` accepts.
//!
//! # Protocol
//!
//! Every frame is a JSON object in a text frame, with a `type` and, for anything about one
//! generation, the client's `id` (a non-empty string). Several generations may run on one socket
//! at once; frames of different ids interleave.
//!
//! Client → server:
//! - `{"type": "generate", "id", "model", "messages", ...}`: the chat-completion fields
//!   (`max_tokens`, `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stop`, penalties,
//!   `logit_bias`, `response_format`, `logprobs`/`top_logprobs`, ...). `stream` and
//!   `stream_options` are ignored (a socket always streams); `n` must be 1 (send one frame per
//!   choice). `"timestamps": true` adds `sampled_at_us` to token frames.
//! - `{"type": "generate", "id", "conversation_id", "content", "parent_id"?, "model"?,
//!   "timestamps"?}` (or `"regenerate": message_id`, or `"tool_outputs": [{"tool_call_id",
//!   "output"}]` instead of `content`): a turn of one of the socket user's conversations
//!   ([`conversation`]): `status` frames (`queued`, `thinking`), then `{"type": "message",
//!   "id", "user_message", "tool_messages", "message"}` (with the first token), then `token`
//!   frames with `message_id` (and `sampled_at_us` with `timestamps`), then `{"type": "done",
//!   "id", "message_id", "status", "finish_reason", "model", "usage", "cached", "timings",
//!   "tool_calls"}`. The answer outlives the socket (for `chat.detach_grace_secs`); a `cancel`
//!   stops the answer itself.
//! - `{"type": "generate", "id", "post_id", "action", "selection"?, "options"?}`: one of the
//!   blog's AI writing tools on one of the socket user's posts ([`assist`]; the fields of
//!   `POST /api/posts/{id}/assist`): `status` frames, `token` frames, then `{"type": "done",
//!   "id", "action", "text", "titles"?, "keywords"?, "finish_reason", "model", "usage"}`.
//! - `{"type": "resume", "message_id", "offset", "id"?, "timestamps"?}`: follow an answer from
//!   character `offset` (the stored text, then live tokens, then `done`); `id` defaults to the
//!   message id.
//! - `{"type": "cancel", "id"}`: stop that generation. It ends with a `done` frame whose
//!   `finish_reason` is `"cancelled"`; no token frame of that id follows it. Cancelling an id
//!   already being cancelled is a no-op; an id not in flight gets an `unknown_id` error.
//!
//! Server → client:
//! - `{"type": "status", "id", "state": "queued"}` once the request is valid and queued, then
//!   `{"type": "status", "id", "state": "thinking"}` when it gets a slot and the prompt starts.
//! - `{"type": "token", "id", "text"}` per sampled token that made text visible, as soon as it
//!   is sampled (tokens whose text is held back — a possible stop-string prefix, an incomplete
//!   UTF-8 sequence — send nothing; the text goes out with a later frame). With `timestamps`,
//!   frames of sampled tokens carry `sampled_at_us`: Unix time in microseconds when the model
//!   thread sampled it (text released at the very end has no sampling instant and no field).
//!   With `logprobs`, every sampled token (except end-of-generation) gets a frame with
//!   `logprob` and `top_logprobs: [{"token", "logprob"}]`, even when its text is empty.
//! - `{"type": "done", "id", "finish_reason", "usage", "timings"}`: the last frame of a
//!   generation. `finish_reason` is `stop`, `length` or `cancelled`; `usage` is the chat API's
//!   (for a cancelled one it counts the prompt and the tokens sampled before the cancel, and
//!   `timings` is null); `timings` has `queued_ms`, `prompt_ms`, `decode_ms`,
//!   `prompt_tokens_per_s` (prompt tokens computed, cached ones excluded) and
//!   `decode_tokens_per_s` (decode steps after the first token). `model` names the model that
//!   answered, `cached` says whether the response cache did (its timings are then zero), and
//!   `stopped_by` (`repetition`, `filter`) is there when an output guard ended it.
//! - `{"type": "error", "id", "message", "code", "param", "status"}`: `status` is the HTTP status
//!   the same failure gets on `/v1` (400, 404, 429, 500, 503, 504). For a request the chat
//!   endpoint would refuse, `message` and `param` are its, and `code` is its OpenAI `code` when it
//!   has one (`model_not_found`, `queue_full`, `queue_timeout`, `unavailable`) and otherwise its
//!   `type` (`invalid_request_error`, `server_error`). An error with an id ends that generation,
//!   except `duplicate_id`, which refuses the new frame and leaves the running one alone.
//!   Frame-level problems are 400s with their own codes: `invalid_json` (not a JSON object;
//!   `id` null), `binary_not_supported` (`id` null), `unknown_type`, `missing_id`,
//!   `duplicate_id`, `unknown_id`, `id_too_long` (over `server.ws_max_id_bytes`; `id` null,
//!   never echoed). A `generate` while `server.ws_max_generations` are in flight gets
//!   `too_many_generations` with status 429. A per-caller limit (`[limits]`) refuses with
//!   `rate_limited`, status 429 and `retry_after` (seconds). The socket stays open after any of them.
//!
//! The upgrade request is authenticated like `/v1` ([`super::auth::authenticate`]): the static
//! `server.api_key`, a user's API key or a user's access token, as `Authorization: Bearer` or,
//! because browsers cannot set headers on a WebSocket, as `?api_key=` in the URL (the header
//! wins when both are sent). A missing credential where one is required, or any invalid one, is
//! refused with a 401 JSON error before upgrading. A user's credential is checked again on every
//! `generate` and every Ping interval: once it is revoked (key deleted, user disabled, password
//! changed) or expired, the `generate` gets a 401 error frame and the socket closes with 1008;
//! when an account changes (disabled, password changed, signed out everywhere, a key deleted)
//! its sockets check at once, on every replica ([`crate::cluster::events`]).
//! Each finished (or cancelled) generation's tokens are counted for the socket's user and key.
//! At most `server.ws_max_queued_frames` frames wait for the client; one that stops reading
//! past that is disconnected (no close frame: it would not be read either). Messages over
//! `server.max_body_bytes` close the socket (close code 1009). The server Pings every `server.ws_ping_secs` and closes a
//! socket that sent nothing, not even a Pong, for two intervals. However a socket ends, its
//! generations are cancelled (their event receivers dropped, which frees their slots on the
//! model thread within one step). When the server shuts down, a `generate` gets a 503 error
//! frame `shutting_down`; once the socket's generations are done it closes with 1001 (at the
//! end of `server.shutdown_grace_secs` at the latest, [`crate::shutdown`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{SplitSink, StreamExt};
use futures::SinkExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::task::JoinSet;

use crate::cluster::events::Event;

mod assist;
mod conversation;
mod generation;

use super::accounts::ClientIp;
use super::auth::{authenticate, bearer, Principal};
use super::error::{clip, ApiError, MESSAGE_MAX_BYTES};
use super::AppState;
use crate::chat::Caller;
use crate::chat::{Run, Usage};

/// How long the writer may take to flush the last frames once the socket is done.
const WRITER_GRACE: Duration = Duration::from_secs(5);

/// The upgrade URL's query.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// The credential (API key or access token), for clients (browsers) that cannot set an
    /// `Authorization` header.
    #[serde(default)]
    api_key: Option<String>,
}

/// `GET /ws`: authenticate, then upgrade.
pub async fn handler(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    query: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let in_query = query.ok().and_then(|Query(q)| q.api_key);
    let credential = match bearer(&headers) {
        Ok(in_header) => in_header.map(str::to_string).or(in_query),
        Err(e) => return e.into_response(),
    };
    let principal = match authenticate(&state, credential.as_deref()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            let status = rejection.status();
            let body = json!({"error": {
                "message": rejection.body_text(),
                "type": "invalid_request_error",
                "param": null,
                "code": "websocket_upgrade_required",
            }});
            return (status, Json(body)).into_response();
        }
    };
    let limit = state.config.server.max_body_bytes;
    let span = tracing::Span::current();
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            // The socket's frames and generations log under the upgrade request's id.
            tracing::Instrument::instrument(
                serve(
                    socket,
                    state,
                    SocketOwner {
                        credential,
                        principal,
                        ip,
                    },
                ),
                span,
            )
        })
}

/// Who owns a socket: the credential it was opened with, checked again on every `generate`
/// and every Ping interval, so a revoked key, a disabled user, a changed password or an
/// expired token stops the socket too — not only new connections.
#[derive(Clone)]
struct SocketOwner {
    credential: Option<String>,
    principal: Principal,
    /// The client's address (what anonymous callers are limited by).
    ip: std::net::IpAddr,
}

impl SocketOwner {
    /// The caller behind the credential now, or why it no longer counts.
    async fn recheck(&self, state: &AppState) -> Result<Caller, ApiError> {
        let principal = match self.principal {
            // Nothing to revoke: no credential, or the configured static key.
            Principal::Anonymous | Principal::StaticKey => self.principal.clone(),
            Principal::User { .. } => authenticate(state, self.credential.as_deref()).await?,
        };
        Ok(Caller {
            principal,
            ip: self.ip,
        })
    }
}

/// Frames queued for the socket's single writer, at most `server.ws_max_queued_frames`. A
/// frame that finds the queue full means the client stopped reading: the socket is closed
/// (`lagging`) rather than buffering without bound.
#[derive(Clone)]
struct Outbox {
    frames: mpsc::Sender<Message>,
    lagging: Arc<Notify>,
}

impl Outbox {
    fn push(&self, msg: Message) {
        match self.frames.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.lagging.notify_one(),
            // The writer is gone only when the socket is; the reader notices that on its own.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Cancel handles of one socket's generations in flight, by client id. An entry lives from the
/// `generate` frame until just before that generation's last frame is queued, so an id is free
/// for reuse once its `done`/`error` arrives. `None`: a cancel was already sent.
type Registry = Arc<Mutex<HashMap<String, Option<oneshot::Sender<()>>>>>;

fn lock(registry: &Registry) -> MutexGuard<'_, HashMap<String, Option<oneshot::Sender<()>>>> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drive one generation until it ends or `cancel` fires (a `cancel` frame, or its sender dropped
/// with the socket), then free its id so the client may reuse it once the last frame arrives.
/// The run lives in the slot `drive` fills, so a cancel drops it: the service counts what was
/// computed and the model thread frees the slot. `None` when cancelled; either way the usage.
async fn until_cancelled<T>(
    registry: &Registry,
    id: &str,
    cancel: &mut oneshot::Receiver<()>,
    drive: impl AsyncFnOnce(&mut Option<Run>) -> Result<T, ApiError>,
) -> (Option<Result<T, ApiError>>, Usage) {
    let mut run: Option<Run> = None;
    let outcome = tokio::select! {
        biased;
        _ = cancel => None,
        result = drive(&mut run) => Some(result),
    };
    let usage = run.as_ref().map(Run::usage).unwrap_or_default();
    drop(run);
    lock(registry).remove(id);
    (outcome, usage)
}

fn send(out: &Outbox, frame: Value) {
    out.push(Message::Text(frame.to_string().into()));
}

fn close(out: &Outbox, code: u16, reason: &'static str) {
    out.push(Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    })));
}

/// One socket: read frames, Ping, start and cancel generations; cancel them all at the end.
async fn serve(socket: WebSocket, state: AppState, owner: SocketOwner) {
    tracing::debug!("websocket opened");
    let period = Duration::from_secs(state.config.server.ws_ping_secs.max(1));
    let (sink, mut stream) = socket.split();
    let (frames, out_rx) = mpsc::channel(state.config.server.ws_max_queued_frames);
    let out = Outbox {
        frames,
        lagging: Arc::default(),
    };
    let revoked = Arc::new(Notify::new());
    // A user's credentials changing anywhere (any replica) makes the socket check its own now.
    let user = owner.principal.user_id();
    let mut events = state.chat.events().subscribe();
    let mut events_open = user.is_some();
    let mut writer = tokio::spawn(write_frames(sink, out_rx));
    let registry: Registry = Arc::default();
    // Dropping (or shutting down) the set aborts every generation task, dropping its receiver.
    let mut generations = JoinSet::new();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut lagged = false;
    // A shutdown waits for this socket: it finishes its generations, then closes with 1001.
    let _guard = state.drain.guard();
    let mut draining = false;
    let (begun, forced) = (state.drain.draining(), state.drain.forced());
    tokio::pin!(begun, forced);
    let reason = loop {
        if draining && lock(&registry).is_empty() {
            close(&out, close_code::AWAY, "the server is shutting down");
            break "the server is shutting down";
        }
        tokio::select! {
            frame = stream.next() => {
                let frame = match frame {
                    None => break "the client went away",
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        if let Some((code, reason)) = close_for(e) {
                            close(&out, code, reason);
                        }
                        break "read error";
                    }
                    Some(Ok(frame)) => frame,
                };
                last_heard = Instant::now();
                match frame {
                    Message::Text(text) => on_text(
                        text.as_str(),
                        &Socket {
                            state: &state,
                            owner: &owner,
                            out: &out,
                            registry: &registry,
                            revoked: &revoked,
                        },
                        &mut generations,
                    ),
                    Message::Binary(_) => send(
                        &out,
                        protocol_error(
                            None,
                            "binary_not_supported",
                            None,
                            "binary frames are not supported: send JSON in text frames",
                        ),
                    ),
                    Message::Ping(_) | Message::Pong(_) => {}
                    Message::Close(_) => break "the client closed the socket",
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= period * 2 {
                    close(&out, close_code::AWAY, "no frame or pong for two ping intervals");
                    break "the peer stopped answering pings";
                }
                if owner.recheck(&state).await.is_err() {
                    close(&out, close_code::POLICY, "the credential is no longer valid");
                    break "the credential was revoked";
                }
                out.push(Message::Ping(Default::default()));
            }
            _ = &mut begun, if !draining => draining = true,
            _ = &mut forced => {
                close(&out, close_code::AWAY, "the server is shutting down");
                break "the shutdown grace ran out";
            }
            event = events.recv(), if events_open => {
                let recheck = match event {
                    Ok(Event::Credentials { user: u }) => Some(u) == user,
                    Ok(Event::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Ok(_) => false,
                    Err(broadcast::error::RecvError::Closed) => {
                        events_open = false;
                        false
                    }
                };
                if recheck && owner.recheck(&state).await.is_err() {
                    close(&out, close_code::POLICY, "the credential is no longer valid");
                    break "the credential was revoked";
                }
            }
            _ = revoked.notified() => {
                close(&out, close_code::POLICY, "the credential is no longer valid");
                break "the credential was revoked";
            }
            _ = out.lagging.notified() => {
                // The queue is full, so a Close frame would not get through either.
                lagged = true;
                break "the client stopped reading";
            }
            Some(joined) = generations.join_next(), if !generations.is_empty() => {
                if let Err(e) = joined {
                    if e.is_panic() {
                        tracing::error!(error = %e, "websocket generation task panicked");
                    }
                }
            }
        }
    };
    let cancelled = lock(&registry).len();
    tracing::debug!(reason, cancelled, "websocket closing");
    generations.shutdown().await;
    drop(out);
    if lagged {
        // What is queued may never be read: drop it and the connection now.
        writer.abort();
        return;
    }
    // A dead peer may never take the last frames: don't keep its connection forever.
    if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        tracing::debug!("websocket writer did not finish in time");
        writer.abort();
    }
}

/// The close frame owed to a peer whose frame could not be read (none when the connection
/// itself failed).
fn close_for(error: axum::Error) -> Option<(u16, &'static str)> {
    use tungstenite::Error as E;
    match *error.into_inner().downcast::<E>().ok()? {
        E::Capacity(_) => Some((close_code::SIZE, "message over server.max_body_bytes")),
        E::Protocol(_) => Some((close_code::PROTOCOL, "protocol error")),
        E::Utf8(_) => Some((close_code::INVALID, "text frame is not UTF-8")),
        _ => None,
    }
}

/// The socket's only writer: sends queued frames in order, batching what is already waiting
/// into one flush. Generations never wait on the socket.
async fn write_frames(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::Receiver<Message>) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            let closing = matches!(msg, Message::Close(_));
            if sink.feed(msg).await.is_err() {
                return;
            }
            if closing {
                let _ = sink.flush().await;
                return;
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

/// A 400-class frame-level error.
fn protocol_error(id: Option<&str>, code: &str, param: Option<&str>, message: &str) -> Value {
    json!({
        "type": "error",
        "id": id,
        "message": message,
        "code": code,
        "param": param,
        "status": 400,
    })
}

/// An [`ApiError`] as an error frame (see the module docs for `code`).
fn api_error_frame(id: &str, err: &ApiError) -> Value {
    if let ApiError::Internal(detail) = err {
        tracing::error!(%detail, id, "websocket generation failed");
    }
    let body = err.body();
    let e = &body["error"];
    let code = if e["code"].is_null() {
        e["type"].clone()
    } else {
        e["code"].clone()
    };
    let mut frame = json!({
        "type": "error",
        "id": id,
        "message": e["message"],
        "code": code,
        "param": e["param"],
        "status": err.status().as_u16(),
    });
    if let ApiError::RateLimited {
        retry_after_secs, ..
    } = err
    {
        frame["retry_after"] = json!((*retry_after_secs).max(1));
    }
    frame
}

/// What a frame handler needs of its socket.
struct Socket<'a> {
    state: &'a AppState,
    owner: &'a SocketOwner,
    out: &'a Outbox,
    registry: &'a Registry,
    /// Told when a `generate` finds the credential revoked: the socket then closes.
    revoked: &'a Arc<Notify>,
}

/// Handle one text frame: dispatch on `type`, never blocking the reader. Nothing the client
/// sent is echoed unbounded: ids over `server.ws_max_id_bytes` are refused (and not echoed),
/// unknown types are quoted only in part.
fn on_text(text: &str, socket: &Socket<'_>, generations: &mut JoinSet<()>) {
    let out = socket.out;
    let frame: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return send(
                out,
                protocol_error(None, "invalid_json", None, "a frame must be a JSON object"),
            )
        }
        Err(e) => {
            return send(
                out,
                protocol_error(
                    None,
                    "invalid_json",
                    None,
                    &clip(&format!("Invalid JSON: {e}"), MESSAGE_MAX_BYTES),
                ),
            )
        }
    };
    let max_id = socket.state.config.server.ws_max_id_bytes;
    let id = frame
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if id.is_some_and(|id| id.len() > max_id) {
        return send(
            out,
            protocol_error(
                None,
                "id_too_long",
                Some("id"),
                &format!("`id` may be at most {max_id} bytes (server.ws_max_id_bytes)"),
            ),
        );
    }
    let kind = frame.get("type").and_then(Value::as_str);
    // A resume without an id goes by the message it follows.
    let id = id
        .or_else(|| {
            (kind == Some("resume"))
                .then(|| frame.get("message_id").and_then(Value::as_str))
                .flatten()
                .filter(|m| !m.is_empty() && m.len() <= max_id)
        })
        .map(str::to_string);
    if !matches!(kind, Some("generate" | "cancel" | "resume")) {
        let message = match kind {
            Some(kind) => format!(
                "unknown frame type `{}` (expected `generate`, `cancel` or `resume`)",
                clip(kind, 32)
            ),
            None => "`type` must be `generate`, `cancel` or `resume`".to_string(),
        };
        return send(
            out,
            protocol_error(id.as_deref(), "unknown_type", Some("type"), &message),
        );
    }
    let Some(id) = id else {
        return send(
            out,
            protocol_error(
                None,
                "missing_id",
                Some("id"),
                "`id` must be a non-empty string",
            ),
        );
    };
    if kind == Some("cancel") {
        match lock(socket.registry).get_mut(&id) {
            Some(entry) => {
                if let Some(cancel) = entry.take() {
                    tracing::debug!(id, "websocket generation cancelled by the client");
                    let _ = cancel.send(());
                }
            }
            None => send(
                out,
                protocol_error(
                    Some(&id),
                    "unknown_id",
                    Some("id"),
                    "no generation with this id is in flight",
                ),
            ),
        }
        return;
    }
    let (cancel_tx, cancel_rx) = oneshot::channel();
    {
        let mut in_flight = lock(socket.registry);
        let refusal = if socket.state.drain.is_draining() {
            let mut e = protocol_error(
                Some(&id),
                "shutting_down",
                None,
                "the server is shutting down: reconnect and send it again",
            );
            e["status"] = json!(503);
            Some(e)
        } else if in_flight.contains_key(&id) {
            Some(protocol_error(
                Some(&id),
                "duplicate_id",
                Some("id"),
                "a generation with this id is already in flight",
            ))
        } else if in_flight.len() >= socket.state.config.server.ws_max_generations {
            let max = socket.state.config.server.ws_max_generations;
            let mut e = protocol_error(
                Some(&id),
                "too_many_generations",
                None,
                &format!(
                    "this socket already has {max} generations in flight \
                     (server.ws_max_generations); wait for one to finish"
                ),
            );
            e["status"] = json!(429);
            Some(e)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(in_flight);
            return send(out, refusal);
        }
        in_flight.insert(id.clone(), Some(cancel_tx));
    }
    let span = tracing::info_span!("ws_generation", id = %clip(&id, 64));
    generations.spawn(tracing::Instrument::instrument(
        generation::generation(
            socket.state.clone(),
            socket.owner.clone(),
            socket.revoked.clone(),
            id,
            frame,
            out.clone(),
            socket.registry.clone(),
            cancel_rx,
        ),
        span,
    ));
}
