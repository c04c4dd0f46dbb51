//! Remote backends, failover and circuit breakers, end to end: the real server on 127.0.0.1:0
//! with the real local model, a remote backend pointing at a loopback server that speaks the
//! OpenAI protocol (tests/integration/common/fake_openai.rs) and fails on command, and real HTTP and
//! WebSocket clients.

use crate::common;
use crate::common::fake_openai;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::metric;
use fake_openai::{reply_text, Behavior, FakeOpenAi};
use futures::{SinkExt, StreamExt};
use hearth::config::{BackendKind, BackendSettings};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The local model's id.
const LOCAL: &str = "SmolLM2-135M-Instruct.Q4_1";
/// The model the fake remote serves.
const REMOTE: &str = "gpt-fake";
/// The environment variable holding the remote's key, and the key.
const KEY_VAR: &str = "HEARTH_TEST_REMOTE_KEY";
const KEY: &str = "sk-remote-test-key";

/// A remote backend named `name` serving `models` at `base_url`, failing over to the local
/// model, with a breaker that does not open (tests that want one set it).
fn remote(name: &str, base_url: &str, models: &[&str]) -> BackendSettings {
    let mut b = BackendSettings::local_default();
    b.name = name.into();
    b.kind = BackendKind::Openai;
    b.base_url = base_url.into();
    b.models = models.iter().map(|m| m.to_string()).collect();
    b.failover = vec!["local".into()];
    b.breaker_failures = 1000;
    // A hanging server is given up on after 2 s (streamed: no first token; plain: no reply).
    b.first_token_timeout_secs = 2;
    b.total_timeout_secs = 2;
    b
}

/// The real server with these backends (plus the implicit local one).
fn hearth(backends: Vec<BackendSettings>) -> SocketAddr {
    // Every test sets the same value, before any server reads it.
    std::env::set_var(KEY_VAR, KEY);
    common::spawn_server(move |c| {
        c.backends = backends;
    })
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

fn chat(model: &str, max_tokens: u32) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        // These tests count what reaches each backend: no answer from the response cache.
        "cache": false,
    })
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url(addr, path))
        .json(body)
        .send()
        .await
        .expect("send")
}

/// One SSE `data:` payload and when the client had it whole.
struct Received {
    data: String,
    at: Instant,
}

/// Read a streamed response to its end, timing each event as it arrives.
async fn read_sse(response: reqwest::Response) -> Vec<Received> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = response.bytes_stream();
    let read = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.expect("body chunk");
            buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                for line in event.lines() {
                    if let Some(d) = line.strip_prefix("data: ") {
                        out.push(Received {
                            data: d.to_string(),
                            at: Instant::now(),
                        });
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the stream ended (no hang)");
    out
}

/// The JSON payloads of a stream, `[DONE]` excluded.
fn payloads(events: &[Received]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).expect("json chunk"))
        .collect()
}

/// The content of a chat stream.
fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// A chat generation over `/ws`: the text of its token frames and its last frame (`done` or
/// `error`).
async fn ws_generate(addr: SocketAddr, id: &str, model: &str) -> (String, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    let frame = json!({"type": "generate", "id": id, "model": model,
        "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16});
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
    let mut text = String::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).expect("json frame");
        match v["type"].as_str() {
            Some("token") => text.push_str(v["text"].as_str().unwrap_or_default()),
            Some("done" | "error") => return (text, v),
            _ => {}
        }
    }
}

async fn model_ids(addr: SocketAddr) -> Vec<(String, String)> {
    let v: Value = reqwest::get(url(addr, "/v1/models"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_string(),
                m["owned_by"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn remote_streaming_passes_tokens_through_as_they_arrive() {
    let fake = FakeOpenAi::start(Duration::from_millis(200));
    let mut backend = remote("remote", &fake.base_url, &[REMOTE]);
    backend.api_key_env = Some(KEY_VAR.into());
    backend.aliases.insert("fast".into(), REMOTE.into());
    let addr = hearth(vec![backend]);

    let models = model_ids(addr).await;
    for (id, owner) in [(LOCAL, "local"), (REMOTE, "remote"), ("fast", "remote")] {
        assert!(
            models.contains(&(id.to_string(), owner.to_string())),
            "{id} owned by {owner} missing from {models:?}"
        );
    }
    let m: Value = reqwest::get(url(addr, "/v1/models/fast"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(m["owned_by"], "remote");

    let mut body = chat("fast", 32);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(addr, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let events = read_sse(r).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let chunks = payloads(&events);
    assert_eq!(streamed_text(&chunks), reply_text());
    for c in &chunks {
        assert_eq!(c["model"], REMOTE, "the answering model is named: {c}");
    }
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(usage["prompt_tokens"], 11);
    assert_eq!(usage["completion_tokens"], 6);

    // Token by token: each piece reached the client before the remote even sent the next one
    // (200 ms apart), so nothing is buffered along the way.
    let arrivals: Vec<Instant> = events
        .iter()
        .filter(|e| {
            serde_json::from_str::<Value>(&e.data)
                .ok()
                .and_then(|v| {
                    v["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(|s| !s.is_empty())
                })
                .unwrap_or(false)
        })
        .map(|e| e.at)
        .collect();
    let sent = fake.sent_at();
    assert_eq!(arrivals.len(), 6);
    assert_eq!(sent.len(), 6);
    for i in 0..5 {
        assert!(
            arrivals[i] < sent[i + 1],
            "piece {i} arrived after piece {} was sent",
            i + 1
        );
    }

    // What the remote was asked: our key, its own model id, a stream with usage, our limits.
    let (path, sent_body, auth) = fake.requests().pop().expect("a request");
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(auth.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(sent_body["model"], REMOTE);
    assert_eq!(sent_body["stream"], true);
    assert_eq!(sent_body["stream_options"]["include_usage"], true);
    assert_eq!(sent_body["max_completion_tokens"], 32);
    assert_eq!(sent_body["temperature"], 0.0);
    assert_eq!(sent_body["messages"][0]["role"], "user");
    assert_eq!(sent_body["messages"][0]["content"], "Say hello.");

    assert_eq!(
        metric(
            addr,
            "hearth_backend_requests_total{backend=\"remote\",outcome=\"ok\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(addr, "hearth_backend_breaker_state{backend=\"remote\"}").await,
        0.0
    );
    assert!(
        metric(
            addr,
            "hearth_backend_first_reply_seconds_count{backend=\"remote\"}"
        )
        .await
            >= 1.0
    );
    // The key never appears in what the server exposes.
    let exposed = reqwest::get(url(addr, "/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(!exposed.contains(KEY));
}

#[tokio::test]
async fn remote_answers_plain_requests_legacy_completions_and_websockets() {
    let fake = FakeOpenAi::start(Duration::ZERO);
    let addr = hearth(vec![remote("remote", &fake.base_url, &[REMOTE])]);

    let r = post(addr, "/v1/chat/completions", &chat(REMOTE, 32)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["model"], REMOTE);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], reply_text());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    assert_eq!(v["usage"]["completion_tokens"], 6);
    assert_eq!(v["usage"]["total_tokens"], 17);
    let (_, sent, _) = fake.requests().pop().expect("request");
    assert_eq!(
        sent["stream"], false,
        "a plain request stays plain upstream"
    );

    let v: Value = post(addr, "/v1/chat/completions", &chat(REMOTE, 3))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the");
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // Legacy completions, plain and streamed.
    let body = json!({"model": REMOTE, "prompt": "Once upon a time", "max_tokens": 16});
    let v: Value = post(addr, "/v1/completions", &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], REMOTE);
    assert_eq!(v["choices"][0]["text"], reply_text());
    let (path, sent, _) = fake.requests().pop().expect("request");
    assert_eq!(path, "/v1/completions");
    assert_eq!(sent["prompt"], "Once upon a time");
    let mut body = body;
    body["stream"] = json!(true);
    let events = read_sse(post(addr, "/v1/completions", &body).await).await;
    let text: String = payloads(&events)
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, reply_text());

    // The WebSocket protocol is backend-agnostic too.
    let (text, done) = ws_generate(addr, "g1", REMOTE).await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(text, reply_text());
    assert_eq!(done["model"], REMOTE);
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(done["usage"]["completion_tokens"], 6);
}

#[tokio::test]
async fn every_failure_before_the_first_token_fails_over_to_the_local_model() {
    let _turn = common::serial();
    let fake = FakeOpenAi::start(Duration::ZERO);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let addr = hearth(vec![
        remote("remote", &fake.base_url, &[REMOTE]),
        remote("dead", &format!("http://{closed}/v1"), &["gpt-dead"]),
    ]);

    let cases = [
        (Behavior::Status(500), "server_error"),
        (Behavior::Status(503), "server_error"),
        (Behavior::Status(429), "rate_limited"),
        (Behavior::Status(401), "rejected"),
        (Behavior::Malformed, "malformed"),
        (Behavior::Hang, "timeout"),
    ];
    let mut tried = 0;
    for (behavior, kind) in cases {
        let series = format!("hearth_backend_errors_total{{backend=\"remote\",kind=\"{kind}\"}}");
        let before = metric(addr, &series).await;
        for stream in [false, true] {
            fake.then(behavior.clone());
            let mut body = chat(REMOTE, 4);
            body["stream"] = json!(stream);
            let r = post(addr, "/v1/chat/completions", &body).await;
            assert_eq!(r.status(), 200, "{behavior:?} stream={stream}");
            if stream {
                let events = read_sse(r).await;
                let chunks = payloads(&events);
                assert!(!streamed_text(&chunks).is_empty(), "{behavior:?}: no text");
                for c in &chunks {
                    assert_eq!(c["model"], LOCAL, "{behavior:?}: {c}");
                    assert!(c.get("error").is_none(), "{behavior:?}: {c}");
                }
            } else {
                let v: Value = r.json().await.expect("json");
                assert_eq!(v["model"], LOCAL, "{behavior:?}: {v}");
                assert!(v["choices"][0]["message"]["content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty()));
            }
            tried += 1;
            assert_eq!(fake.count(), tried, "the remote was tried first");
        }
        assert_eq!(metric(addr, &series).await - before, 2.0, "{behavior:?}");
    }
    assert_eq!(
        metric(
            addr,
            "hearth_backend_failovers_total{from=\"remote\",to=\"local\"}"
        )
        .await,
        tried as f64
    );

    // A server that cannot be reached at all.
    let v: Value = post(addr, "/v1/chat/completions", &chat("gpt-dead", 4))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["model"], LOCAL);
    assert_eq!(
        metric(
            addr,
            "hearth_backend_errors_total{backend=\"dead\",kind=\"connect\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn without_failover_upstream_failures_are_clean_errors() {
    let fake = FakeOpenAi::start(Duration::ZERO);
    let mut solo = remote("solo", &fake.base_url, &[REMOTE]);
    solo.failover.clear();
    let addr = hearth(vec![solo]);

    let cases = [
        (Behavior::Status(500), 502, "upstream_error"),
        (Behavior::Status(429), 429, "upstream_rate_limited"),
        (Behavior::Hang, 504, "upstream_timeout"),
        (Behavior::Malformed, 502, "upstream_error"),
        (Behavior::Status(401), 502, "upstream_error"),
    ];
    for (behavior, status, code) in cases {
        for stream in [false, true] {
            fake.then(behavior.clone());
            let mut body = chat(REMOTE, 4);
            body["stream"] = json!(stream);
            let r = post(addr, "/v1/chat/completions", &body).await;
            assert_eq!(r.status(), status, "{behavior:?} stream={stream}");
            if status == 429 {
                assert!(r.headers().contains_key("retry-after"));
            }
            let v: Value = r.json().await.expect("json error");
            assert_eq!(v["error"]["code"], code, "{v}");
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty());
            assert!(!message.contains(KEY));
        }
    }
    // The remote's own 400 passes through with its message, and is never retried elsewhere.
    fake.then(Behavior::Status(400));
    let r = post(addr, "/v1/chat/completions", &chat(REMOTE, 4)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["message"], "fake failure 400");
    // Requests Hearth itself can judge never reach the remote.
    let before = fake.count();
    let mut bad = chat(REMOTE, 4);
    bad["temperature"] = json!(9);
    assert_eq!(post(addr, "/v1/chat/completions", &bad).await.status(), 400);
    assert_eq!(
        post(addr, "/v1/chat/completions", &chat("gpt-nope", 4))
            .await
            .status(),
        404
    );
    assert_eq!(fake.count(), before);
}

#[tokio::test]
async fn a_failure_after_the_first_token_ends_the_stream_with_an_error_event() {
    let fake = FakeOpenAi::start(Duration::from_millis(20));
    // Failover is configured, but text already sent cannot be taken back.
    let addr = hearth(vec![remote("remote", &fake.base_url, &[REMOTE])]);

    fake.then(Behavior::DropAfter(2));
    let mut body = chat(REMOTE, 32);
    body["stream"] = json!(true);
    let r = post(addr, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let events = read_sse(r).await;
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let chunks = payloads(&events);
    assert_eq!(streamed_text(&chunks), "Hello from");
    let last = chunks.last().expect("chunks");
    assert_eq!(last["error"]["type"], "server_error", "{last}");
    assert_eq!(last["error"]["code"], "upstream_error", "{last}");
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c["model"], REMOTE);
        assert!(c["choices"][0]["finish_reason"].is_null(), "no finish: {c}");
    }
    assert_eq!(fake.count(), 1, "no second attempt after tokens went out");
    assert_eq!(
        metric(
            addr,
            "hearth_backend_errors_total{backend=\"remote\",kind=\"connect\"}"
        )
        .await,
        1.0
    );

    // Cut after the finish chunk: only the usage chunk and [DONE] were lost, the reply is whole.
    fake.then(Behavior::DropAfterFinish);
    let events = read_sse(post(addr, "/v1/chat/completions", &body).await).await;
    let chunks = payloads(&events);
    assert_eq!(streamed_text(&chunks), reply_text());
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "{chunks:?}"
    );
    assert_eq!(
        chunks.last().expect("chunks")["choices"][0]["finish_reason"],
        "stop"
    );

    // The same over the WebSocket: tokens, then an error frame.
    fake.then(Behavior::DropAfter(3));
    let (text, error) = ws_generate(addr, "g", REMOTE).await;
    assert_eq!(
        error["type"], "error",
        "a broken stream must not end as done: {error}"
    );
    assert_eq!(text, "Hello from the");
    assert_eq!(error["id"], "g");
}

#[tokio::test]
async fn the_breaker_opens_skips_half_opens_and_closes() {
    let _turn = common::serial();
    let fake = FakeOpenAi::start(Duration::ZERO);
    let mut flaky = remote("remote", &fake.base_url, &[REMOTE]);
    flaky.breaker_failures = 2;
    flaky.breaker_cooldown_secs = 2;
    let solo_fake = FakeOpenAi::start(Duration::ZERO);
    let mut solo = remote("solo", &solo_fake.base_url, &["gpt-solo"]);
    solo.failover.clear();
    solo.breaker_failures = 1;
    solo.breaker_cooldown_secs = 600;
    let addr = hearth(vec![flaky, solo]);
    let state = "hearth_backend_breaker_state{backend=\"remote\"}";
    let answered_by = |v: Value| v["model"].as_str().unwrap_or_default().to_string();
    let ask = || async {
        let r = post(addr, "/v1/chat/completions", &chat(REMOTE, 2)).await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.expect("json")
    };

    // Two consecutive failures open it; both requests were still answered (by the local model).
    fake.set_default(Behavior::Status(500));
    assert_eq!(answered_by(ask().await), LOCAL);
    assert_eq!(metric(addr, state).await, 0.0);
    assert_eq!(answered_by(ask().await), LOCAL);
    assert_eq!(fake.count(), 2);
    assert_eq!(metric(addr, state).await, 1.0);
    assert_eq!(
        metric(
            addr,
            "hearth_backend_breaker_opened_total{backend=\"remote\"}"
        )
        .await,
        1.0
    );

    // Open: the remote is skipped without being tried, and not listed.
    assert_eq!(answered_by(ask().await), LOCAL);
    assert_eq!(fake.count(), 2, "an open breaker skips the backend");
    assert_eq!(
        metric(
            addr,
            "hearth_backend_requests_total{backend=\"remote\",outcome=\"skipped\"}"
        )
        .await,
        1.0
    );
    let listed = model_ids(addr).await;
    assert!(!listed.iter().any(|(id, _)| id == REMOTE), "{listed:?}");
    assert!(listed.iter().any(|(id, _)| id == LOCAL));

    // After the cool-down one probe goes through; it fails, so the breaker opens again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(model_ids(addr).await.iter().any(|(id, _)| id == REMOTE));
    assert_eq!(answered_by(ask().await), LOCAL);
    assert_eq!(fake.count(), 3, "the half-open probe tried the remote");
    assert_eq!(metric(addr, state).await, 1.0);
    assert_eq!(answered_by(ask().await), LOCAL);
    assert_eq!(fake.count(), 3, "re-opened: skipped again");

    // The remote recovers: the next probe succeeds and closes the breaker.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    fake.set_default(Behavior::Ok);
    assert_eq!(answered_by(ask().await), REMOTE);
    assert_eq!(metric(addr, state).await, 0.0);
    assert_eq!(answered_by(ask().await), REMOTE);
    assert_eq!(fake.count(), 5);

    // With nowhere to fail over, an open breaker answers 503 at once.
    solo_fake.set_default(Behavior::Status(500));
    let r = post(addr, "/v1/chat/completions", &chat("gpt-solo", 2)).await;
    assert_eq!(r.status(), 502);
    let started = Instant::now();
    let r = post(addr, "/v1/chat/completions", &chat("gpt-solo", 2)).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "unavailable");
    assert_eq!(solo_fake.count(), 1, "not tried while open");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bad_backend_configuration_is_refused_at_start() {
    use hearth::config::Config;
    let base = |backends: Vec<BackendSettings>| {
        Config {
            backends,
            ..Config::default()
        }
        .validate()
    };
    let ok = remote("r", "http://127.0.0.1:9/v1", &["m"]);
    assert!(base(vec![ok.clone()]).is_ok());
    let mut dup = ok.clone();
    dup.models = vec!["x".into()];
    assert!(base(vec![ok.clone(), dup]).is_err(), "duplicate names");
    let mut no_models = ok.clone();
    no_models.models.clear();
    assert!(base(vec![no_models]).is_err());
    let mut bad_url = ok.clone();
    bad_url.base_url = "ftp://x".into();
    assert!(base(vec![bad_url]).is_err());
    let mut unknown_target = ok.clone();
    unknown_target.failover = vec!["nowhere".into()];
    assert!(base(vec![unknown_target]).is_err());
    let mut self_target = ok.clone();
    self_target.failover = vec!["r".into()];
    assert!(base(vec![self_target]).is_err());
    let mut bad_alias = ok.clone();
    bad_alias.aliases.insert("a".into(), "not-served".into());
    assert!(base(vec![bad_alias]).is_err());
    let mut zero = ok.clone();
    zero.first_token_timeout_secs = 0;
    assert!(base(vec![zero]).is_err());
    let mut named_local = ok.clone();
    named_local.name = "local".into();
    assert!(
        base(vec![named_local]).is_err(),
        "`local` is the loaded model's name"
    );

    // A missing key variable and a model id served twice are refused when the server starts.
    let mut keyless = ok.clone();
    keyless.api_key_env = Some("HEARTH_TEST_SURELY_UNSET_VAR".into());
    let mut config = Config::default();
    config.model.path = common::model_path().to_string_lossy().into_owned();
    config.server.port = 0;
    config.storage.data_dir = tempfile::tempdir().expect("dir").keep();
    config.backends = vec![keyless];
    let err = hearth::app::App::build(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("HEARTH_TEST_SURELY_UNSET_VAR"),
        "{err:#}"
    );
    let mut clash = ok.clone();
    clash.models = vec![LOCAL.into()];
    config.backends = vec![clash];
    let err = hearth::app::App::build(config)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("served by both"), "{err:#}");
}

#[tokio::test]
async fn json_schema_response_formats_reach_the_remote_as_sent() {
    let fake = FakeOpenAi::start(Duration::ZERO);
    let addr = hearth(vec![remote("remote", &fake.base_url, &[REMOTE])]);
    let format = json!({
        "type": "json_schema",
        "json_schema": {
            "name": "pet",
            "strict": true,
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
                "required": ["name", "age"],
                "additionalProperties": false,
            },
        },
    });
    let mut body = chat(REMOTE, 32);
    body["response_format"] = format.clone();
    let r = post(addr, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let (_, sent, _) = fake.requests().pop().expect("request");
    assert_eq!(sent["response_format"], format);
    // A strict schema the local compiler cannot enforce is refused before any backend is asked.
    let before = fake.count();
    body["response_format"]["json_schema"]["schema"]["properties"]["age"]["multipleOf"] = json!(2);
    let r = post(addr, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(fake.count(), before);
}

#[tokio::test]
async fn tools_reach_the_remote_as_sent_and_its_calls_come_back_whole_and_streamed() {
    let fake = FakeOpenAi::start(Duration::ZERO);
    let addr = hearth(vec![remote("remote", &fake.base_url, &[REMOTE])]);
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false},
        "strict": true,
    }}]);
    let choice = json!({"type": "function", "function": {"name": "get_weather"}});
    let mut body = chat(REMOTE, 32);
    body["tools"] = tools.clone();
    body["tool_choice"] = choice.clone();
    body["parallel_tool_calls"] = json!(false);
    let args = fake_openai::CALL_ARGS.concat();

    let r = post(addr, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let (_, sent, _) = fake.requests().pop().expect("request");
    assert_eq!(sent["tools"], tools);
    assert_eq!(sent["tool_choice"], choice);
    assert_eq!(sent["parallel_tool_calls"], false);
    let choice0 = &v["choices"][0];
    assert_eq!(choice0["finish_reason"], "tool_calls", "{v}");
    assert_eq!(choice0["message"]["content"], Value::Null, "{v}");
    let call = &choice0["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], args.as_str());
    let id = call["id"].as_str().expect("id").to_string();

    body["stream"] = json!(true);
    let chunks = payloads(&read_sse(post(addr, "/v1/chat/completions", &body).await).await);
    let deltas: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["delta"]["tool_calls"][0])
        .filter(|d| d.is_object())
        .collect();
    assert_eq!(deltas[0]["function"]["name"], "get_weather", "{chunks:?}");
    assert!(deltas[0]["id"]
        .as_str()
        .is_some_and(|i| i.starts_with("call_")));
    let streamed: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(streamed, args);
    assert!(deltas.len() > 2, "arguments arrive in pieces: {deltas:?}");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
    assert_eq!(streamed_text(&chunks), "");

    // The result goes back: the remote sees the call (by the id Hearth gave it) and the tool
    // message answering it, and answers in text.
    body["stream"] = json!(false);
    body["tool_choice"] = json!("auto");
    body["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "{\"temp_c\": 18}"},
    ]);
    let r = post(addr, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], reply_text());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let (_, sent, _) = fake.requests().pop().expect("request");
    let messages = sent["messages"].as_array().expect("messages");
    assert_eq!(messages[1]["tool_calls"][0]["id"], id.as_str());
    assert_eq!(
        messages[1]["tool_calls"][0]["function"]["arguments"],
        args.as_str()
    );
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": id, "content": "{\"temp_c\": 18}"})
    );
}
