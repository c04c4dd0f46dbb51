//! `GET /ws`: the real server on 127.0.0.1:0 with the real model, driven by a real WebSocket
//! client (tokio-tungstenite).

use crate::common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use hearth::config::Config;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";
const KEY: &str = "sk-ws";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn spawn_server(tweak: impl FnOnce(&mut Config) + Send + 'static) -> SocketAddr {
    common::spawn_server(tweak)
}

/// Several slots, no key (test 1 compares outputs across requests: prefix reuse leaves them as
/// they are, see tests/integration/server.rs).
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        spawn_server(|c| {
            c.server.max_active = 4;
            c.server.max_body_bytes = 64 * 1024;
        })
    })
}

/// One slot, an API key, and a one-second Ping interval.
fn one_slot_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        spawn_server(|c| {
            c.server.max_active = 1;
            c.server.queue_capacity = 4;
            c.server.api_key = Some(KEY.into());
            c.server.ws_ping_secs = 1;
        })
    })
}

/// Open a socket, with the key as a Bearer header when given.
async fn connect(addr: SocketAddr, key: Option<&str>) -> Ws {
    let mut request = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    if let Some(key) = key {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("header"),
        );
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

async fn send_json(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
}

/// The next JSON frame (Pings and Pongs skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("a frame within 60 s")
            .expect("the socket is open")
            .expect("a readable frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Frames of `id` up to and including its `done` or `error` (other ids' frames are dropped).
async fn frames_until_end(ws: &mut Ws, id: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = next_json(ws).await;
        if f["id"] != id {
            continue;
        }
        let end = f["type"] == "done" || f["type"] == "error";
        frames.push(f);
        if end {
            return frames;
        }
    }
}

/// The next frame of `id` whose type (or, for a status, state) is `kind`; earlier frames of any
/// id are skipped.
async fn wait_for(ws: &mut Ws, id: &str, kind: &str) -> Value {
    loop {
        let f = next_json(ws).await;
        if f["id"] == id && (f["type"] == kind || f["state"] == kind) {
            return f;
        }
        assert!(
            !(f["id"] == id && (f["type"] == "done" || f["type"] == "error")),
            "{id} ended while waiting for {kind}: {f}"
        );
    }
}

fn text_of(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["text"].as_str().expect("token text"))
        .collect()
}

fn generate(id: &str, content: &str, max_tokens: u32) -> Value {
    json!({
        "type": "generate",
        "id": id,
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// A generation that cannot end early: both end-of-generation tokens are banned.
fn endless(id: &str, max_tokens: u32) -> Value {
    let mut frame = generate(
        id,
        "Write a very long essay about the history of the sea.",
        max_tokens,
    );
    frame["logit_bias"] = json!({"0": -100, "2": -100});
    frame
}

#[tokio::test]
async fn a_generation_streams_status_tokens_and_done_matching_the_http_answer() {
    let _turn = common::serial();
    let addr = server();
    let prompt = "What is the capital of France?";
    let mut ws = connect(addr, None).await;
    send_json(&mut ws, generate("q1", prompt, 24)).await;
    let frames = frames_until_end(&mut ws, "q1").await;
    assert_eq!(
        frames[0],
        json!({"type": "status", "id": "q1", "state": "queued"})
    );
    assert_eq!(
        frames[1],
        json!({"type": "status", "id": "q1", "state": "thinking"})
    );
    let done = frames.last().expect("frames");
    assert_eq!(done["type"], "done", "{done}");
    let tokens = &frames[2..frames.len() - 1];
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|f| f["type"] == "token"), "{frames:?}");
    assert!(tokens.iter().all(|f| f.get("sampled_at_us").is_none()));
    assert!(["stop", "length"].contains(&done["finish_reason"].as_str().expect("reason")));
    let timings = &done["timings"];
    for key in [
        "queued_ms",
        "prompt_ms",
        "decode_ms",
        "prompt_tokens_per_s",
        "decode_tokens_per_s",
    ] {
        assert!(timings[key].as_f64().expect(key) >= 0.0, "{key}: {done}");
    }
    assert!(timings["decode_tokens_per_s"].as_f64().expect("rate") > 0.0);

    let http: Value = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 24,
            "temperature": 0,
        }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let content = http["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    // The first token is one llama.cpp ranks in its top five (fast mode's exact pick follows
    // the CPU's kernels); the socket and HTTP answers must be identical.
    assert!(
        common::first_step_candidates(prompt)
            .iter()
            .any(|p| content.starts_with(p.as_str())),
        "{content}"
    );
    assert_eq!(text_of(&frames), content);
    // The same usage, but for the prompt the second request found in the prefix cache.
    let mut usage = http["usage"].clone();
    usage["prompt_tokens_details"]["cached_tokens"] =
        done["usage"]["prompt_tokens_details"]["cached_tokens"].clone();
    assert_eq!(done["usage"], usage);
    assert_eq!(done["finish_reason"], http["choices"][0]["finish_reason"]);
}

#[tokio::test]
async fn two_generations_on_one_socket_interleave_and_both_finish() {
    let _turn = common::serial();
    let addr = server();
    let mut ws = connect(addr, None).await;
    send_json(&mut ws, generate("a", "Name three colours.", 16)).await;
    send_json(&mut ws, generate("b", "Name three animals.", 16)).await;
    let mut frames: Vec<Value> = Vec::new();
    let mut ended = 0;
    while ended < 2 {
        let f = next_json(&mut ws).await;
        if f["type"] == "done" {
            ended += 1;
        }
        assert_ne!(f["type"], "error", "{f}");
        frames.push(f);
    }
    for id in ["a", "b"] {
        let mine: Vec<&Value> = frames.iter().filter(|f| f["id"] == id).collect();
        let kinds: Vec<String> = mine
            .iter()
            .map(|f| match f["type"].as_str().expect("type") {
                "status" => f["state"].as_str().expect("state").to_string(),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(kinds[..2], ["queued", "thinking"], "{id}: {kinds:?}");
        assert_eq!(kinds.last().map(String::as_str), Some("done"));
        let middle = &kinds[2..kinds.len() - 1];
        assert!(!middle.is_empty() && middle.iter().all(|k| k == "token"));
        assert!(mine.last().expect("done")["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n >= 1));
    }
    // Both decoded together: each one's tokens arrive before the other's done.
    let pos = |id: &str, kind: &str| {
        frames
            .iter()
            .position(|f| f["id"] == id && f["type"] == kind)
            .expect("frame")
    };
    assert!(pos("a", "token") < pos("b", "done"));
    assert!(pos("b", "token") < pos("a", "done"));
}

#[tokio::test]
async fn a_cancelled_generation_ends_at_once_and_frees_its_slot() {
    let _turn = common::serial();
    let addr = one_slot_server();
    let mut ws = connect(addr, Some(KEY)).await;
    send_json(&mut ws, endless("long", 400)).await;
    wait_for(&mut ws, "long", "thinking").await;
    for _ in 0..3 {
        wait_for(&mut ws, "long", "token").await;
    }
    let cancelled_at = Instant::now();
    send_json(&mut ws, json!({"type": "cancel", "id": "long"})).await;
    // Token frames already on the wire may still arrive, then the done; nothing after it.
    let rest = frames_until_end(&mut ws, "long").await;
    let done = rest.last().expect("done");
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["finish_reason"], "cancelled");
    let completion = done["usage"]["completion_tokens"].as_u64().expect("n");
    assert!((3..400).contains(&completion), "{done}");
    assert!(done["usage"]["prompt_tokens"].as_u64().expect("p") > 0);
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "the done frame took {:?}",
        cancelled_at.elapsed()
    );
    // With one slot, the next generation starts only once the cancelled one left it.
    let asked = Instant::now();
    send_json(&mut ws, generate("next", "Hi", 3)).await;
    let next = frames_until_end(&mut ws, "next").await;
    assert_eq!(next[1]["state"], "thinking", "{next:?}");
    assert_eq!(next.last().expect("done")["type"], "done");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the next generation took {:?}",
        asked.elapsed()
    );
    // Cancelling what already ended is an error, and the id is free for reuse.
    send_json(&mut ws, json!({"type": "cancel", "id": "long"})).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "unknown_id");
    assert_eq!(err["id"], "long");
}

#[tokio::test]
async fn closing_the_socket_mid_generation_frees_the_slot() {
    let _turn = common::serial();
    let addr = one_slot_server();
    let mut first = connect(addr, Some(KEY)).await;
    send_json(&mut first, endless("long", 400)).await;
    wait_for(&mut first, "long", "thinking").await;
    wait_for(&mut first, "long", "token").await;
    let t = Instant::now();
    for _ in 0..4 {
        wait_for(&mut first, "long", "token").await;
    }
    let per_token = t.elapsed() / 4;
    first.close(None).await.expect("close");
    drop(first);

    let asked = Instant::now();
    let mut second = connect(addr, Some(KEY)).await;
    send_json(&mut second, generate("next", "Hi", 3)).await;
    wait_for(&mut second, "next", "thinking").await;
    let waited = asked.elapsed();
    // Had the first generation gone on, this would wait for ~395 more tokens.
    let remaining = per_token * 395;
    assert!(
        waited < Duration::from_secs(3).min(remaining / 2),
        "waited {waited:?}; the abandoned generation had ~{remaining:?} to go"
    );
    let end = frames_until_end(&mut second, "next").await;
    assert_eq!(end.last().expect("done")["type"], "done");
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_and_its_generation_cancelled() {
    let _turn = common::serial();
    let addr = one_slot_server();
    let mut silent = connect(addr, Some(KEY)).await;
    send_json(&mut silent, endless("long", 1500)).await;
    wait_for(&mut silent, "long", "thinking").await;
    // From now on this client neither reads nor writes, so it never answers a Ping.
    let asked = Instant::now();
    let mut other = connect(addr, Some(KEY)).await;
    send_json(&mut other, generate("next", "Hi", 3)).await;
    wait_for(&mut other, "next", "thinking").await;
    let waited = asked.elapsed();
    // Detection takes two to three one-second intervals; 1500 tokens take far longer.
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "the queued generation started after {waited:?}"
    );
    frames_until_end(&mut other, "next").await;
    // The server hung up on the silent client: it finds the Close frame (1001) after whatever was
    // sent before it, or, if its late Pongs drew a reset, a read error; either way the end.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = silent.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the server closed the silent socket");
    assert!(matches!(closed, None | Some(1001)), "{closed:?}");
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_keeps_working() {
    let _turn = common::serial();
    let addr = server();
    let mut ws = connect(addr, None).await;

    ws.send(Message::text("{not json")).await.expect("send");
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["status"].as_u64()),
        (Some("error"), Some("invalid_json"), Some(400)),
        "{e}"
    );
    assert!(e["id"].is_null());

    send_json(&mut ws, json!({"type": "fly", "id": "x"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "unknown_type", "{e}");
    assert_eq!(e["id"], "x");

    let mut no_id = generate("", "Hi", 2);
    no_id.as_object_mut().expect("object").remove("id");
    send_json(&mut ws, no_id).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "missing_id", "{e}");
    assert_eq!(e["param"], "id");

    let mut hot = generate("hot", "Hi", 2);
    hot["temperature"] = json!(5);
    send_json(&mut ws, hot).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["id"], "hot", "{e}");
    assert_eq!(e["param"], "temperature");
    assert_eq!(e["code"], "invalid_request_error");
    assert_eq!(e["status"], 400);
    assert!(e["message"]
        .as_str()
        .expect("message")
        .contains("between 0 and 2"));

    let mut unknown = generate("m", "Hi", 2);
    unknown["model"] = json!("gpt-17");
    send_json(&mut ws, unknown).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["id"], "m", "{e}");
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["param"], "model");
    assert_eq!(e["status"], 404);

    let mut two = generate("n", "Hi", 2);
    two["n"] = json!(2);
    send_json(&mut ws, two).await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["id"].as_str(), e["param"].as_str()),
        (Some("n"), Some("n"))
    );

    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "binary_not_supported", "{e}");

    send_json(&mut ws, json!({"type": "cancel", "id": "nobody"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "unknown_id", "{e}");

    // Still serving.
    send_json(&mut ws, generate("ok", "Hi", 2)).await;
    let frames = frames_until_end(&mut ws, "ok").await;
    assert_eq!(frames.last().expect("done")["type"], "done", "{frames:?}");
}

#[tokio::test]
async fn an_id_already_in_flight_is_refused_without_disturbing_the_first() {
    let _turn = common::serial();
    let addr = server();
    let mut ws = connect(addr, None).await;
    send_json(&mut ws, generate("same", "Name three colours.", 8)).await;
    send_json(&mut ws, generate("same", "Name three animals.", 8)).await;
    let mut frames = Vec::new();
    loop {
        let f = next_json(&mut ws).await;
        let end = f["type"] == "done";
        frames.push(f);
        if end {
            break;
        }
    }
    let errors: Vec<&Value> = frames.iter().filter(|f| f["type"] == "error").collect();
    assert_eq!(errors.len(), 1, "{frames:?}");
    assert_eq!(errors[0]["code"], "duplicate_id");
    assert_eq!(errors[0]["id"], "same");
    assert!(text_of(&frames).len() > 1);
    // Once done, the id may be used again.
    send_json(&mut ws, generate("same", "Hi", 2)).await;
    let again = frames_until_end(&mut ws, "same").await;
    assert_eq!(again.last().expect("done")["type"], "done", "{again:?}");
}

#[tokio::test]
async fn the_api_key_is_required_in_a_header_or_the_query() {
    let _turn = common::serial();
    let addr = one_slot_server();
    for url in [
        format!("ws://{addr}/ws"),
        format!("ws://{addr}/ws?api_key=wrong"),
    ] {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{url}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().expect("a body"))
                        .expect("JSON body");
                assert_eq!(body["error"]["code"], "invalid_api_key");
            }
            other => panic!("{url}: expected a 401, got {other:?}"),
        }
    }
    let mut ws = connect(addr, Some(KEY)).await;
    send_json(&mut ws, generate("h", "Hi", 2)).await;
    assert_eq!(
        frames_until_end(&mut ws, "h").await.last().expect("end")["type"],
        "done"
    );
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?api_key={KEY}"))
            .await
            .expect("upgrade with the key in the query");
    assert_eq!(response.status(), 101);
    send_json(&mut ws, generate("q", "Hi", 2)).await;
    assert_eq!(
        frames_until_end(&mut ws, "q").await.last().expect("end")["type"],
        "done"
    );
    // A plain GET (no upgrade) with the key gets a JSON error, not a hang.
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/ws"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("send");
    assert!(r.status().is_client_error(), "{}", r.status());
    let body: Value = r.json().await.expect("json");
    assert!(body["error"]["message"].is_string());
}

#[tokio::test]
async fn the_server_pings_an_idle_socket_and_keeps_it_open_while_pongs_come_back() {
    let _turn = common::serial();
    let addr = one_slot_server();
    let mut ws = connect(addr, Some(KEY)).await;
    let start = Instant::now();
    let mut pings = 0;
    // Reading lets tungstenite answer each Ping with a Pong; the socket must outlive 2 intervals.
    while start.elapsed() < Duration::from_millis(3500) {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
        if pings == 1 {
            assert!(start.elapsed() < Duration::from_secs(3));
        }
    }
    assert!(pings >= 2, "{pings} pings in {:?}", start.elapsed());
    send_json(&mut ws, generate("p", "Hi", 2)).await;
    assert_eq!(
        frames_until_end(&mut ws, "p").await.last().expect("end")["type"],
        "done"
    );
}

#[tokio::test]
async fn timestamps_put_the_sampling_time_on_token_frames() {
    let _turn = common::serial();
    let addr = server();
    let mut ws = connect(addr, None).await;
    let mut frame = generate("t", "Name three colours.", 12);
    frame["timestamps"] = json!(true);
    send_json(&mut ws, frame).await;
    let mut stamped = 0;
    loop {
        let f = next_json(&mut ws).await;
        let received = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_micros() as i64;
        if f["type"] == "done" {
            break;
        }
        if f["type"] != "token" {
            continue;
        }
        let Some(sampled) = f["sampled_at_us"].as_i64() else {
            continue;
        };
        stamped += 1;
        let latency = received - sampled;
        // Sampled before it was received (1 ms of slack for the two clock reads), and recently.
        assert!(
            (-1_000..2_000_000).contains(&latency),
            "latency {latency} µs: {f}"
        );
    }
    assert!(stamped >= 1);
}

#[tokio::test]
async fn a_message_over_the_body_limit_closes_the_socket_with_1009() {
    let _turn = common::serial();
    let addr = server();
    let mut ws = connect(addr, None).await;
    send_json(&mut ws, generate("big", &"a".repeat(70 * 1024), 2)).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("unexpected {other:?}"),
                // The server closed with our unread bytes in its buffer: a reset may win the race.
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the server closed the socket");
    assert!(matches!(closed, None | Some(1009)), "{closed:?}");
    // Other sockets are unaffected.
    let mut ws = connect(addr, None).await;
    send_json(&mut ws, generate("small", "Hi", 2)).await;
    let frames = frames_until_end(&mut ws, "small").await;
    assert_eq!(frames.last().expect("done")["type"], "done");
}

/// Default body limit (1 MiB messages), a short outbox.
fn lagging_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| spawn_server(|c| c.server.ws_max_queued_frames = 16))
}

/// This process's resident memory, in MiB (the server runs in it).
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024
}

#[tokio::test]
async fn ids_are_capped_and_client_input_is_never_echoed_unbounded() {
    let _turn = common::serial();
    let addr = server();
    let mut ws = connect(addr, None).await;
    let long = "i".repeat(40_000);
    send_json(&mut ws, json!({"type": "cancel", "id": long})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "id_too_long", "{e}");
    assert!(e["id"].is_null(), "the id is not echoed");
    send_json(&mut ws, json!({"type": "x".repeat(40_000), "id": "t"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["code"], "unknown_type");
    assert!(e.to_string().len() < 600, "{e}");
    let mut bad = generate("b", "Hi", 2);
    bad["max_tokens"] = json!("9".repeat(40_000));
    send_json(&mut ws, bad).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["id"], "b");
    assert!(e.to_string().len() < 1_000, "{} bytes", e.to_string().len());
    // The longest allowed id still works.
    let id = "k".repeat(128);
    send_json(&mut ws, generate(&id, "Hi", 2)).await;
    let frames = frames_until_end(&mut ws, &id).await;
    assert_eq!(frames.last().expect("done")["type"], "done");
}

#[tokio::test]
async fn a_socket_may_have_only_so_many_generations_in_flight() {
    let _turn = common::serial();
    let addr = server();
    let mut ws = connect(addr, None).await;
    for i in 0..8 {
        send_json(&mut ws, endless(&format!("g{i}"), 500)).await;
    }
    send_json(&mut ws, endless("g8", 500)).await;
    let e = wait_for(&mut ws, "g8", "error").await;
    assert_eq!(e["code"], "too_many_generations", "{e}");
    assert_eq!(e["status"], 429);
    for i in 0..8 {
        send_json(&mut ws, json!({"type": "cancel", "id": format!("g{i}")})).await;
    }
    // Their last frames come in any order.
    let mut ended = std::collections::HashSet::new();
    while ended.len() < 8 {
        let f = next_json(&mut ws).await;
        if f["type"] == "done" {
            assert_eq!(f["finish_reason"], "cancelled", "{f}");
            ended.insert(f["id"].as_str().expect("id").to_string());
        }
        assert_ne!(f["type"], "error", "{f}");
    }
    // Room again.
    send_json(&mut ws, generate("after", "Hi", 2)).await;
    let frames = frames_until_end(&mut ws, "after").await;
    assert_eq!(frames.last().expect("done")["type"], "done", "{frames:?}");
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_and_memory_stays_bounded() {
    let _turn = common::serial();
    let addr = lagging_server();
    let ws = connect(addr, None).await;
    let (mut tx, _rx_never_read) = ws.split();
    let before = rss_mib();
    // The attack that grew the server by 722 MiB: cancels with megabyte ids, never reading.
    let big = json!({"type": "cancel", "id": "x".repeat(1_000_000)}).to_string();
    for _ in 0..200 {
        if tx.send(Message::text(big.clone())).await.is_err() {
            break;
        }
    }
    let grown = rss_mib().saturating_sub(before);
    // Then small frames until the server gives up on the socket.
    let deadline = Instant::now() + Duration::from_secs(60);
    let frame = json!({"type": "cancel", "id": "nobody"}).to_string();
    let mut closed = false;
    let mut sent = 0u64;
    while Instant::now() < deadline && sent < 2_000_000 {
        let batch = tokio::time::timeout(Duration::from_secs(5), async {
            for _ in 0..1000 {
                tx.feed(Message::text(frame.clone())).await?;
            }
            tx.flush().await
        })
        .await;
        sent += 1000;
        match batch {
            Ok(Ok(())) => {}
            // Reset or closed by the server.
            Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => panic!("the server stopped reading from the socket without closing it"),
        }
    }
    assert!(
        closed,
        "the server kept a client that never reads ({sent} frames sent)"
    );
    assert!(
        grown < 100,
        "the server grew by {grown} MiB under 200 MB of cancels it could not answer"
    );
    // It still serves others.
    let mut other = connect(addr, None).await;
    send_json(&mut other, generate("ok", "Hi", 2)).await;
    let frames = frames_until_end(&mut other, "ok").await;
    assert_eq!(frames.last().expect("done")["type"], "done");
}

#[tokio::test]
async fn a_json_schema_constrains_websocket_generations_too() {
    let _turn = common::serial();
    let addr = server();
    let mut ws = connect(addr, None).await;
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "country_code": {"type": "string", "pattern": "^[A-Z]{2}$"},
        },
        "required": ["city", "country_code"],
        "additionalProperties": false,
    });
    let mut frame = generate("s1", "Name a city as JSON.", 64);
    frame["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": true}});
    send_json(&mut ws, frame.clone()).await;
    let frames = frames_until_end(&mut ws, "s1").await;
    let done = frames.last().expect("frames");
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["finish_reason"], "stop", "{done}");
    let text = text_of(&frames);
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let code = doc["country_code"].as_str().expect("country_code");
    assert!(
        code.len() == 2 && code.chars().all(|c| c.is_ascii_uppercase()),
        "{doc}"
    );
    assert!(
        doc["city"]
            .as_str()
            .is_some_and(|c| c.chars().count() <= 20),
        "{doc}"
    );
    // A strict schema with a keyword that cannot be enforced: an error frame naming it.
    frame["id"] = json!("s2");
    frame["response_format"]["json_schema"]["schema"]["minProperties"] = json!(1);
    send_json(&mut ws, frame).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["id"], "s2", "{e}");
    assert_eq!(e["status"], 400);
    assert_eq!(e["param"], "response_format.json_schema.schema");
    assert!(
        e["message"]
            .as_str()
            .expect("message")
            .contains("minProperties"),
        "{e}"
    );
}
