//! Graceful shutdown of the real binary on SIGTERM. Within `server.shutdown_grace_secs`: new
//! connections are refused, a streamed chat in flight runs to its end, a WebSocket refuses new
//! generations (`shutting_down`, 503), finishes the one it runs and closes with 1001, a
//! conversation answer nobody follows is finished and saved, the write-ahead log is folded into
//! the database, and the process exits 0. With a grace too short, what runs is stopped at its
//! end: the answer is saved as interrupted with its text so far, the socket still gets 1001.

use crate::common;
use crate::common::process::{spawn_listening, Served};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Tokens each generation runs to (the end-of-text tokens banned, so it always runs that long).
const TOKENS: u64 = 120;

fn endless() -> Value {
    json!({"max_tokens": TOKENS, "temperature": 0, "logit_bias": {"0": -100, "2": -100}})
}

fn start(dir: &Path, grace_secs: u64) -> Served {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npath = \"{}\"\ndevice = \"cpu\"\n\n[server]\nhost = \"127.0.0.1\"\nport = 0\n\
             shutdown_grace_secs = {grace_secs}\n\n[auth]\nregistration = \"open\"\n\n\
             [storage]\ndata_dir = \"{}\"\n",
            common::model_path().display(),
            dir.join("data").display()
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.join("log")).expect("log");
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.arg("--config")
        .arg(&config)
        .arg("serve")
        .env("HEARTH_LOG", "hearth=info")
        .stderr(log);
    spawn_listening(c)
}

async fn token(client: &reqwest::Client, addr: SocketAddr) -> String {
    let creds = json!({"username": "alice", "password": "correct horse battery"});
    for path in ["/api/auth/register", "/api/auth/login"] {
        let r = client
            .post(format!("http://{addr}{path}"))
            .json(&creds)
            .send()
            .await
            .expect("send");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        if path.ends_with("login") {
            let v: Value = r.json().await.expect("json");
            return v["access_token"].as_str().expect("token").to_string();
        }
    }
    unreachable!()
}

/// A conversation turn (with `params`) whose client reads its first frame and goes: the answer
/// generates on for nobody. Its message id.
async fn detached_answer(
    client: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    params: Value,
) -> String {
    let r = client
        .post(format!("http://{addr}/api/conversations"))
        .bearer_auth(token)
        .json(&json!({"params": params}))
        .send()
        .await
        .expect("create");
    let conv: Value = r.json().await.expect("json");
    let mut r = client
        .post(format!(
            "http://{addr}/api/conversations/{}/messages",
            conv["id"].as_str().unwrap()
        ))
        .bearer_auth(token)
        .json(&json!({"content": "Tell me a long story."}))
        .send()
        .await
        .expect("turn");
    assert_eq!(r.status(), StatusCode::OK);
    let first = r.chunk().await.expect("chunk").expect("a first frame");
    let text = String::from_utf8_lossy(&first);
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data");
    let frame: Value = serde_json::from_str(data).expect("frame");
    frame["message"]["id"].as_str().expect("id").to_string()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(addr: SocketAddr, token: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?api_key={token}"))
        .await
        .expect("ws");
    let mut frame = endless();
    frame["type"] = json!("generate");
    frame["id"] = json!("g");
    frame["messages"] = json!([{"role": "user", "content": "Count to a thousand."}]);
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
    loop {
        let f = next_frame(&mut ws).await;
        if f["type"] == "token" {
            return ws;
        }
    }
}

async fn next_frame(ws: &mut Ws) -> Value {
    match next_message(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(&t).expect("json"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn next_message(ws: &mut Ws) -> Option<Message> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .expect("a frame in time")?
            .ok()?;
        if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
            return Some(m);
        }
    }
}

/// The socket's remaining frames of generation `g` and its close code; a `generate` sent now is
/// refused on the way.
async fn drain_socket(ws: &mut Ws) -> (Option<Value>, Option<u16>, Option<Value>) {
    ws.send(Message::Text(
        json!({"type": "generate", "id": "late", "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let (mut done, mut refusal) = (None, None);
    loop {
        match next_message(ws).await {
            Some(Message::Text(t)) => {
                let f: Value = serde_json::from_str(&t).expect("json");
                match (f["type"].as_str(), f["id"].as_str()) {
                    (Some("done"), Some("g")) => done = Some(f),
                    (Some("error"), Some("late")) => refusal = Some(f),
                    _ => {}
                }
            }
            Some(Message::Close(c)) => return (done, c.map(|c| u16::from(c.code)), refusal),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn stored_answer(dir: &Path, id: &str) -> (String, String, i64) {
    let db = rusqlite::Connection::open(dir.join("data/hearth.db")).expect("db");
    db.query_row(
        "SELECT status, content, coalesce(completion_tokens, 0) FROM messages WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .expect("the answer row")
}

/// The write-ahead log was folded into the database before the exit (said in the log; the
/// log file is gone or empty after it).
fn checkpointed(dir: &Path) -> bool {
    let log = std::fs::read_to_string(dir.join("log")).expect("log");
    let wal = std::fs::metadata(dir.join("data/hearth.db-wal")).map_or(0, |m| m.len());
    log.contains("database checkpointed") && wal == 0
}

#[tokio::test]
async fn sigterm_lets_streams_sockets_and_answers_finish_then_exits_clean() {
    let _model = common::serial();
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = start(dir.path(), 120);
    let addr = server.addr;
    let client = reqwest::Client::new();
    let token = token(&client, addr).await;
    let answer = detached_answer(&client, addr, &token, endless()).await;
    let mut chat = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(
            &json!({"messages": [{"role": "user", "content": "Tell me everything."}],
            "stream": true, "stream_options": {"include_usage": true}, "max_tokens": TOKENS,
            "temperature": 0, "logit_bias": {"0": -100, "2": -100}}),
        )
        .send()
        .await
        .expect("chat");
    let mut body =
        String::from_utf8_lossy(&chat.chunk().await.expect("chunk").expect("first")).into_owned();
    let mut ws = socket(addr, &token).await;

    server.terminate();
    // Nothing new is accepted once the signal is taken.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (done, code, refusal) = drain_socket(&mut ws).await;
    let refusal = refusal.expect("the late generate is refused");
    assert_eq!(refusal["code"], "shutting_down", "{refusal}");
    assert_eq!(refusal["status"], 503);
    let done = done.expect("the running generation finished");
    assert_eq!(done["finish_reason"], "length", "{done}");
    assert_eq!(done["usage"]["completion_tokens"], TOKENS);
    assert_eq!(code, Some(1001), "closed as going away");
    while let Some(chunk) = chat.chunk().await.expect("the stream continues") {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert!(
        body.contains(&format!("\"completion_tokens\":{TOKENS}")),
        "the whole answer: {body}"
    );
    assert_eq!(server.wait_exit(Duration::from_secs(120)), Some(0));
    let (status, content, tokens) = stored_answer(dir.path(), &answer);
    assert_eq!(
        (status.as_str(), tokens),
        ("done", TOKENS as i64),
        "{content}"
    );
    assert!(checkpointed(dir.path()));
}

#[tokio::test]
async fn past_the_grace_what_runs_is_stopped_and_saved_as_interrupted() {
    let _model = common::serial();
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = start(dir.path(), 1);
    let addr = server.addr;
    let client = reqwest::Client::new();
    let token = token(&client, addr).await;
    // Long enough never to finish within a second on this model.
    let mut params = endless();
    params["max_tokens"] = json!(4000);
    let answer = detached_answer(&client, addr, &token, params).await;
    // Let it write something first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    server.terminate();
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped soon after the grace: {:?}",
        started.elapsed()
    );
    let (status, content, _) = stored_answer(dir.path(), &answer);
    assert_eq!(status, "interrupted");
    assert!(!content.is_empty(), "the text so far is kept");
    assert!(checkpointed(dir.path()));
}
