//! Replicas sharing PostgreSQL and Redis (`cache.url`), in one process: an answer generating
//! on one replica is followed from another (and kept alive against the detach grace by that
//! follower, and cancelled from there), and each replica hears the others' writes: cached
//! preferences dropped, limit overrides reloaded, a disabled user's sockets closed at once,
//! the response cache shared. Needs `HEARTH_TEST_POSTGRES` and `HEARTH_TEST_REDIS` (the test
//! script starts both); skipped without them.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::app::{SseReader, TestApp};
use crate::postgres::{open, redis_url, scratch};

/// Two replicas on one store and one Redis, tweaked alike.
async fn pair(
    tweak: impl Fn(&mut hearth::config::Config) + Clone + Send + 'static,
) -> Option<(TestApp, TestApp, hearth::store::scratch::Scratch)> {
    let (Some(shared), Some(redis)) = (scratch().await, redis_url()) else {
        return None;
    };
    let replica = |url: String, redis: String| {
        let tweak = tweak.clone();
        TestApp::spawn(move |c| {
            open(c);
            c.storage.url = Some(url);
            c.cache.url = Some(redis);
            tweak(c);
        })
    };
    let a = replica(shared.url.clone(), redis.clone());
    let b = replica(shared.url.clone(), redis);
    Some((a, b, shared))
}

/// Poll `check` for up to five seconds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn conversation(app: &TestApp, token: &str, max_tokens: u32) -> String {
    let (s, v) = app
        .post_json(
            "/api/conversations",
            Some(token),
            &json!({"params": {"temperature": 0, "max_tokens": max_tokens}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().expect("id").to_string()
}

/// Start an answer on `app` and read its first `chars` characters: the message id, the text
/// and the stream (dropping it is the client going away).
async fn start_answer(
    app: &TestApp,
    token: &str,
    conv: &str,
    chars: usize,
) -> (String, String, SseReader) {
    let r = app
        .open_sse(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(token),
            Some(&json!({"content": "Tell me a long story about the sea and its ships."})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut reader = SseReader::new(r);
    let head = reader.next().await.expect("message frame");
    let id = head["message"]["id"].as_str().expect("id").to_string();
    let mut seen = String::new();
    while seen.chars().count() < chars {
        let f = reader.next().await.expect("token");
        assert_eq!(f["type"], "token", "{f}");
        seen.push_str(f["text"].as_str().expect("text"));
    }
    (id, seen, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_on_one_replica_is_followed_kept_alive_and_cancelled_from_another() {
    let _model = crate::common::serial();
    let Some((a, b, _db)) = pair(|c| {
        c.cache.enabled = false;
        c.chat.auto_title = false;
        // With no follower on A the answer stops at once: B's follower must count.
        c.chat.detach_grace_secs = 0;
    })
    .await
    else {
        return;
    };
    let token = a.user("ada").await;
    let conv = conversation(&a, &token, 160).await;
    // A client reads a little on A, then follows on B from its offset (a second tab, or its
    // connection moved), then its stream on A goes: B's follower keeps the answer going.
    let (id, seen, on_a) = start_answer(&a, &token, &conv, 6).await;
    let r = b
        .open_sse(
            Method::GET,
            &format!("/api/messages/{id}/stream?offset={}", seen.chars().count()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut on_b = SseReader::new(r);
    let mut frames = vec![on_b.next().await.expect("a first frame")];
    drop(on_a);
    while let Some(f) = on_b.next().await {
        frames.push(f);
    }
    let end = frames.last().expect("end frame");
    assert_eq!(end["status"], "done", "{end}");
    let text: String = frames
        .iter()
        .filter(|f| f["type"] == "token")
        .filter_map(|f| f["text"].as_str())
        .collect();
    let (s, stored) = b
        .get_json(&format!("/api/conversations/{conv}/messages"), Some(&token))
        .await;
    assert_eq!(s, StatusCode::OK, "{stored}");
    let answer = stored["data"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == id.as_str()))
        .expect("the answer")
        .clone();
    assert_eq!(answer["status"], "done", "{answer}");
    assert_eq!(
        format!("{seen}{text}"),
        answer["content"].as_str().unwrap_or("")
    );
    assert!(
        answer["completion_tokens"].as_u64().unwrap_or(0) > 20,
        "{answer}"
    );

    // Cancelled from B while it generates on A (B's follower sees it end).
    let conv = conversation(&a, &token, 400).await;
    let (id, _, _on_a) = start_answer(&a, &token, &conv, 2).await;
    let r = b
        .open_sse(
            Method::GET,
            &format!("/api/messages/{id}/stream"),
            Some(&token),
            None,
        )
        .await;
    let mut follower = SseReader::new(r);
    let mut tokens = 0;
    while tokens < 3 {
        let f = follower.next().await.expect("frame");
        if f["type"] == "token" {
            tokens += 1;
        }
    }
    // Another user may not stop it (and learns nothing).
    let eve = a.user("eve").await;
    let (s, _, _) = b
        .call(
            Method::POST,
            &format!("/api/messages/{id}/cancel"),
            Some(&eve),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, v) = b
        .call(
            Method::POST,
            &format!("/api/messages/{id}/cancel"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let mut last = Value::Null;
    while let Some(f) = follower.next().await {
        last = f;
    }
    assert_eq!(last["status"], "interrupted", "{last}");
    assert!(
        last["completion_tokens"].as_u64().unwrap_or(0) < 400,
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hear_each_others_writes() {
    let _model = crate::common::serial();
    let Some((a, b, _db)) = pair(|c| {
        // Sockets must close on the event, not on their next ping check.
        c.server.ws_ping_secs = 120;
    })
    .await
    else {
        return;
    };
    let root = a.user("root").await;
    let bob = a.user("bob").await;
    let (_, me) = a.get_json("/api/me", Some(&bob)).await;
    let bob_id = me["user"]["id"].as_i64().expect("id");

    // Preferences: B has them cached; a write on A is seen on B.
    let (s, p) = b.get_json("/api/me/preferences", Some(&bob)).await;
    assert_eq!((s, &p["system_prompt"]), (StatusCode::OK, &Value::Null));
    let (s, _, p) = a
        .call(
            Method::PUT,
            "/api/me/preferences",
            Some(&bob),
            Some(&json!({"system_prompt": "Be brief."})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    eventually("preferences reach B", async || {
        b.get_json("/api/me/preferences", Some(&bob)).await.1["system_prompt"] == "Be brief."
    })
    .await;

    // An admin's limit override on A applies on B.
    let (s, _, v) = a
        .call(
            Method::PUT,
            &format!("/api/admin/users/{bob_id}/limits"),
            Some(&root),
            Some(&json!({"requests_per_minute": 7})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    eventually("the override reaches B", async || {
        b.get_json("/api/rate-limit", Some(&bob)).await.1["requests"]["limit"] == 7
    })
    .await;

    // The response cache: what A computed, B answers.
    let body = json!({
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 6,
        "temperature": 0
    });
    let (s, h, first) = a
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&root),
            Some(&body),
        )
        .await;
    assert_eq!(
        (s, h["x-hearth-cache"].to_str().unwrap_or("")),
        (StatusCode::OK, "miss"),
        "{first}"
    );
    // The shared copy is written beside the answer: give it a moment (one request only, or
    // B's own miss would fill B's cache).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, h, again) = b
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&root),
            Some(&body),
        )
        .await;
    assert_eq!(
        (s, h["x-hearth-cache"].to_str().unwrap_or("")),
        (StatusCode::OK, "hit"),
        "{again}"
    );
    assert_eq!(
        first["choices"][0]["message"],
        again["choices"][0]["message"]
    );

    // Disabling bob on A closes his socket on B at once (policy violation, 1008).
    let mut ws = b.ws(Some(&bob)).await;
    let (s, _, v) = a
        .call(
            Method::PATCH,
            &format!("/api/admin/users/{bob_id}"),
            Some(&root),
            Some(&json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("the socket on B closes within 5 s");
    assert_eq!(closed, Some(1008));
}
