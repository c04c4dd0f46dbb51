//! A stand-in for the remote OpenAI service: a real HTTP server on 127.0.0.1 that speaks the
//! chat-completions and legacy completions protocol (streaming and not, usage chunk, [DONE]),
//! and can be told to fail in each way a real one does: refuse with a status, hang, send garbage,
//! or break a stream after some tokens.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// How the server answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// A normal reply.
    Ok,
    /// This status with an OpenAI error body.
    Status(u16),
    /// Never answer (not even headers).
    Hang,
    /// 200 with a body that is not the protocol (garbage JSON; in a stream, a garbage event).
    Malformed,
    /// Stream this many content chunks, then cut the connection (no finish, no [DONE]).
    DropAfter(usize),
    /// Stream the whole reply and its finish chunk, then cut the connection (no usage chunk,
    /// no [DONE]).
    DropAfterFinish,
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Behavior>,
    default: Option<Behavior>,
    requests: Vec<(String, Value, Option<String>)>,
    /// When each streamed content chunk was handed to the connection.
    sent_at: Vec<Instant>,
}

/// A running fake server.
#[derive(Clone)]
pub struct FakeOpenAi {
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    /// Pause between streamed chunks.
    gap: Duration,
}

/// The reply's content, one chunk (one "token") per piece.
pub const PIECES: [&str; 6] = ["Hello", " from", " the", " remote", " model", "."];

/// The reply in JSON mode (`response_format: json_object`).
pub const JSON_PIECES: [&str; 6] = ["{\"", "name", "\": \"", "Alice", "\", \"age\": ", "30}"];

/// The arguments of the fake's tool call, streamed in these pieces.
pub const CALL_ARGS: [&str; 3] = ["{\"ci", "ty\": \"Pa", "ris\"}"];

/// The whole reply text.
pub fn reply_text() -> String {
    PIECES.concat()
}

impl FakeOpenAi {
    /// Start on 127.0.0.1:0 (own thread and runtime), with `gap` between streamed chunks.
    pub fn start(gap: Duration) -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let state = (shared.clone(), gap);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send");
                let app = Router::new()
                    .route("/v1/models", get(models))
                    .route("/v1/chat/completions", post(chat))
                    .route("/v1/completions", post(completions))
                    .with_state(state);
                // As a real server would: no Nagle delay between streamed chunks.
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, app).await.expect("serve");
            });
        });
        let addr = rx.recv().expect("fake server address");
        Self {
            base_url: format!("http://{addr}/v1"),
            addr,
            shared,
            gap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next request (after those already scripted) behaves like this.
    pub fn then(&self, b: Behavior) {
        self.lock().script.push_back(b);
    }

    /// Requests with no script left behave like this (default: `Ok`).
    pub fn set_default(&self, b: Behavior) {
        self.lock().default = Some(b);
    }

    /// Requests received so far: (path, JSON body, Authorization header).
    pub fn requests(&self) -> Vec<(String, Value, Option<String>)> {
        self.lock().requests.clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }

    /// When each streamed content chunk was sent.
    pub fn sent_at(&self) -> Vec<Instant> {
        self.lock().sent_at.clone()
    }
}

type AppState = (Arc<Mutex<Shared>>, Duration);

fn next_behavior(
    shared: &Mutex<Shared>,
    path: &str,
    body: &Value,
    headers: &HeaderMap,
) -> Behavior {
    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.requests.push((path.to_string(), body.clone(), auth));
    let default = s.default.clone().unwrap_or(Behavior::Ok);
    s.script.pop_front().unwrap_or(default)
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "gpt-fake", "object": "model", "created": 0, "owned_by": "fake"}]}),
    )
}

async fn chat(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    reply(state, "/v1/chat/completions", headers, body, true).await
}

async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    reply(state, "/v1/completions", headers, body, false).await
}

fn error_body(status: u16) -> Value {
    json!({"error": {"message": format!("fake failure {status}"), "type": "server_error", "param": null, "code": null}})
}

async fn reply(
    (shared, gap): AppState,
    path: &str,
    headers: HeaderMap,
    body: Value,
    chat: bool,
) -> Response {
    let behavior = next_behavior(&shared, path, &body, &headers);
    let model = body["model"].as_str().unwrap_or("gpt-fake").to_string();
    let limit = body["max_completion_tokens"]
        .as_u64()
        .or(body["max_tokens"].as_u64())
        .unwrap_or(u64::MAX) as usize;
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let json_mode = body["response_format"]["type"] == "json_object";
    // With tools offered (and no tool result to answer yet), it calls the named tool or the
    // first one, as a model that wants a tool does.
    let answering_tool = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .is_some_and(|m| m["role"] == "tool");
    let call_name = match &body["tool_choice"] {
        _ if answering_tool || !chat => None,
        Value::String(s) if s == "none" => None,
        c => c["function"]["name"]
            .as_str()
            .or(body["tools"][0]["function"]["name"].as_str())
            .map(str::to_string),
    };
    let all: &[&str] = if json_mode { &JSON_PIECES } else { &PIECES };
    // Stop strings cut the reply before the first one (whole pieces only, like tokens).
    let stops: Vec<String> = match &body["stop"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let full = all.concat();
    let cut = stops.iter().filter_map(|s| full.find(s.as_str())).min();
    let mut pieces: Vec<&str> = Vec::new();
    let mut len = 0;
    for p in all {
        if cut.is_some_and(|c| len + p.len() > c) {
            break;
        }
        len += p.len();
        pieces.push(p);
    }
    let stopped = cut.is_some();
    pieces.truncate(limit);
    let finish = if !stopped && pieces.len() < all.len() {
        "length"
    } else {
        "stop"
    };
    // Fake log-probabilities: each piece is the most likely token, with one runner-up.
    let top_n = body["top_logprobs"].as_u64().unwrap_or(0) as usize;
    let chat_lp = |piece: &str| {
        let top: Vec<Value> = [(piece, -0.25), ("zzz", -2.5)]
            .iter()
            .take(top_n)
            .map(|(t, l)| json!({"token": t, "logprob": l, "bytes": t.as_bytes()}))
            .collect();
        json!({"token": piece, "logprob": -0.25, "bytes": piece.as_bytes(), "top_logprobs": top})
    };
    let want_lp = body["logprobs"].as_bool().unwrap_or(false);
    match behavior {
        Behavior::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, Json(error_body(code))).into_response();
        }
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Behavior::Malformed if !stream => {
            return (
                [("content-type", "application/json")],
                "{\"choices\": [ this is not json",
            )
                .into_response();
        }
        _ => {}
    }
    if let Some(name) = call_name {
        return tool_call_reply(&model, &name, stream);
    }
    let usage = json!({"prompt_tokens": 11, "completion_tokens": pieces.len(), "total_tokens": 11 + pieces.len()});
    let (object, chunk_object) = if chat {
        ("chat.completion", "chat.completion.chunk")
    } else {
        ("text_completion", "text_completion")
    };
    if !stream {
        let choice = if chat {
            let lp = if want_lp {
                json!({"content": pieces.iter().map(|p| chat_lp(p)).collect::<Vec<_>>()})
            } else {
                Value::Null
            };
            json!({"index": 0, "message": {"role": "assistant", "content": pieces.concat()}, "finish_reason": finish, "logprobs": lp})
        } else {
            json!({"index": 0, "text": pieces.concat(), "finish_reason": finish, "logprobs": null})
        };
        return Json(json!({
            "id": "fake-1", "object": object, "created": 1, "model": model,
            "choices": [choice], "usage": usage,
        }))
        .into_response();
    }
    let chunk = move |choices: Value| -> String {
        let v = json!({"id": "fake-1", "object": chunk_object, "created": 1, "model": model, "choices": choices});
        format!("data: {v}\n\n")
    };
    let content = |text: &str| {
        if chat {
            let lp = if want_lp {
                json!({"content": [chat_lp(text)]})
            } else {
                Value::Null
            };
            json!([{"index": 0, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}])
        } else {
            json!([{"index": 0, "text": text, "finish_reason": null}])
        }
    };
    let mut frames: Vec<Result<(String, bool), ()>> = Vec::new();
    if chat {
        frames.push(Ok((
            chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}])),
            false,
        )));
    }
    let drop_after = match behavior {
        Behavior::DropAfter(n) => Some(n),
        _ => None,
    };
    if behavior == Behavior::Malformed {
        frames.push(Ok(("data: {\"choices\": [oops\n\n".to_string(), false)));
    } else {
        for (i, p) in pieces.iter().enumerate() {
            if drop_after == Some(i) {
                frames.push(Err(()));
                break;
            }
            frames.push(Ok((chunk(content(p)), true)));
        }
        if drop_after.is_none() {
            let end = if chat {
                json!([{"index": 0, "delta": {}, "finish_reason": finish}])
            } else {
                json!([{"index": 0, "text": "", "finish_reason": finish}])
            };
            frames.push(Ok((chunk(end), false)));
            if behavior == Behavior::DropAfterFinish {
                frames.push(Err(()));
            } else if include_usage {
                let v = json!({"id": "fake-1", "object": chunk_object, "created": 1, "model": body["model"], "choices": [], "usage": usage});
                frames.push(Ok((format!("data: {v}\n\n"), false)));
            }
            if behavior != Behavior::DropAfterFinish {
                frames.push(Ok(("data: [DONE]\n\n".to_string(), false)));
            }
        }
    }
    let body = futures::stream::unfold(
        (frames.into_iter(), shared, false),
        move |(mut frames, shared, mut paused)| async move {
            let frame = frames.next()?;
            match frame {
                Ok((text, is_content)) => {
                    if is_content {
                        if paused {
                            tokio::time::sleep(gap).await;
                        }
                        paused = true;
                        shared
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .sent_at
                            .push(Instant::now());
                    }
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(text)),
                        (frames, shared, paused),
                    ))
                }
                // An error in the body stream makes hyper abort the connection mid-response
                // (after a pause, so the chunks before it are flushed first).
                Err(()) => Some((
                    {
                        tokio::time::sleep(gap.max(Duration::from_millis(100))).await;
                        Err(std::io::Error::other("connection cut on purpose"))
                    },
                    (frames, shared, paused),
                )),
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A reply that calls `name` with [`CALL_ARGS`]: `message.tool_calls`, or streamed as OpenAI
/// streams calls (id, type and name first, then the arguments in pieces).
fn tool_call_reply(model: &str, name: &str, stream: bool) -> Response {
    let usage = json!({"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16});
    if !stream {
        let call = json!({"id": "call_remote_1", "type": "function", "function": {"name": name, "arguments": CALL_ARGS.concat()}});
        return Json(json!({
            "id": "fake-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [call]}, "finish_reason": "tool_calls", "logprobs": null}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        let v = json!({"id": "fake-1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_remote_1", "type": "function", "function": {"name": name, "arguments": ""}}]}),
        Value::Null,
    )];
    for piece in CALL_ARGS {
        frames.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        ));
    }
    frames.push(chunk(json!({}), json!("tool_calls")));
    let v = json!({"id": "fake-1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage});
    frames.push(format!("data: {v}\n\n"));
    frames.push("data: [DONE]\n\n".to_string());
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures::stream::iter(
            frames
                .into_iter()
                .map(|f| Ok::<_, std::io::Error>(Bytes::from(f))),
        )))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
