//! The playground core against the real server and model: conversations (owner-only on every
//! route, streamed turns saved as they go, branches, search), answers that outlive their
//! clients and resume, per-user limits on every transport, and the response cache.

use std::time::{Duration, Instant};

use hearth::config::Registration;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common;
use crate::common::app::{ws_next, ws_send, SseReader, TestApp};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// `<|endoftext|>` and `<|im_end|>` banned: an answer that runs to its `max_tokens`.
fn endless(max_tokens: u32) -> Value {
    json!({"temperature": 0, "max_tokens": max_tokens, "logit_bias": {"0": -100, "2": -100}})
}

fn open_registration(c: &mut hearth::config::Config) {
    c.auth.registration = Registration::Open;
    c.auth.login_per_ip_per_minute = 100_000;
}

async fn new_conversation(app: &TestApp, token: &str, params: Value) -> String {
    let (s, v) = app
        .post_json(
            "/api/conversations",
            Some(token),
            &json!({"params": params}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().expect("id").to_string()
}

/// A plain (non-streamed) turn: the stored assistant message.
async fn ask(app: &TestApp, token: &str, conv: &str, content: &str) -> Value {
    let (s, v) = app
        .post_json(
            &format!("/api/conversations/{conv}/messages"),
            Some(token),
            &json!({"content": content, "stream": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["message"]["status"], "done", "{v}");
    v
}

fn text_of(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "token")
        .filter_map(|f| f["text"].as_str())
        .collect()
}

#[tokio::test]
async fn conversations_are_owner_only_on_every_route() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conv = new_conversation(&app, &alice, json!({"max_tokens": 4, "temperature": 0})).await;
    let turn = ask(&app, &alice, &conv, "Name a colour.").await;
    let msg = turn["message"]["id"].as_str().expect("id").to_string();
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/conversations/{conv}"), None),
        (
            Method::PATCH,
            format!("/api/conversations/{conv}"),
            Some(json!({"title": "mine"})),
        ),
        (
            Method::GET,
            format!("/api/conversations/{conv}/messages"),
            None,
        ),
        (
            Method::POST,
            format!("/api/conversations/{conv}/messages"),
            Some(json!({"content": "hi", "stream": false})),
        ),
        (
            Method::POST,
            format!("/api/conversations/{conv}/messages/{msg}/regenerate"),
            Some(json!({"stream": false})),
        ),
        (
            Method::PUT,
            format!("/api/conversations/{conv}/active"),
            Some(json!({"message_id": msg})),
        ),
        (Method::GET, format!("/api/messages/{msg}"), None),
        (Method::GET, format!("/api/messages/{msg}/stream"), None),
        (Method::POST, format!("/api/messages/{msg}/cancel"), None),
        (
            Method::GET,
            format!("/api/conversations/{conv}/export"),
            None,
        ),
        (Method::DELETE, format!("/api/conversations/{conv}"), None),
    ];
    for (method, path, body) in &routes {
        let (s, _, v) = app
            .call(method.clone(), path, Some(&bob), body.as_ref())
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "bob {method} {path}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
        let (s, _, _) = app.call(method.clone(), path, None, body.as_ref()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "anonymous {method} {path}");
    }
    let (_, list) = app
        .get_json("/api/conversations?q=colour", Some(&bob))
        .await;
    assert_eq!(list["data"], json!([]), "bob finds nothing of alice's");
    // Alice still has all of it.
    let (s, v) = app
        .get_json(&format!("/api/conversations/{conv}/messages"), Some(&alice))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
    let (_, list) = app
        .get_json("/api/conversations?q=colour", Some(&alice))
        .await;
    assert_eq!(list["data"][0]["id"], conv.as_str(), "{list}");
    // Named at once by the first question, then (in the background) by the model.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, c) = app
            .get_json(&format!("/api/conversations/{conv}"), Some(&alice))
            .await;
        let title = c["title"].as_str().expect("title");
        assert!(!title.is_empty());
        if title != "Name a colour." {
            assert!(title.chars().count() <= 60, "{title}");
            break;
        }
        assert!(Instant::now() < deadline, "the model never wrote a title");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn turns_stream_are_stored_and_branch_on_regenerate_edit_and_switch() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let t = app.user("carol").await;
    let conv = new_conversation(&app, &t, json!({"max_tokens": 12, "temperature": 0})).await;
    let sse = app
        .sse(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(&t),
            Some(&json!({"content": "What is the capital of France?"})),
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.frames[0]["type"], "message", "{:?}", sse.frames);
    assert_eq!(sse.frames[0]["message"]["status"], "streaming");
    let first_answer = sse.frames[0]["message"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let user1 = sse.frames[0]["user_message"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let done = sse.frames.last().expect("frames");
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["status"], "done");
    let streamed = text_of(&sse.frames);
    assert!(!streamed.is_empty());
    let (_, stored) = app
        .get_json(&format!("/api/messages/{first_answer}"), Some(&t))
        .await;
    assert_eq!(
        stored["content"],
        streamed.as_str(),
        "what was shown is what is stored"
    );
    assert_eq!(stored["context"]["messages"], json!([user1]), "{stored}");

    // A second turn carries the whole branch.
    let second = ask(&app, &t, &conv, "And of Italy?").await;
    let answer2 = second["message"]["id"].as_str().expect("id").to_string();
    let ctx = &second["message"]["context"]["messages"];
    assert_eq!(ctx.as_array().map(Vec::len), Some(3), "{second}");
    assert_eq!(ctx[0], user1.as_str());
    assert_eq!(ctx[1], first_answer.as_str());

    // Regenerating the last answer adds a sibling and makes it active.
    let (s, v) = app
        .post_json(
            &format!("/api/conversations/{conv}/messages/{answer2}/regenerate"),
            Some(&t),
            &json!({"stream": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let regenerated = v["message"]["id"].as_str().expect("id").to_string();
    assert!(v["user_message"].is_null());
    let (_, branch) = app
        .get_json(&format!("/api/conversations/{conv}/messages"), Some(&t))
        .await;
    let ids: Vec<&str> = branch["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[3], regenerated);
    assert_eq!(branch["data"][3]["siblings"], json!([answer2, regenerated]));

    // Switch back to the first answer's branch.
    let (s, _, v) = app
        .call(
            Method::PUT,
            &format!("/api/conversations/{conv}/active"),
            Some(&t),
            Some(&json!({"message_id": answer2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, branch) = app
        .get_json(&format!("/api/conversations/{conv}/messages"), Some(&t))
        .await;
    assert_eq!(branch["data"][3]["id"], answer2.as_str());

    // Editing the first question (a new first message) starts a branch; the old stays.
    let (s, v) = app
        .post_json(
            &format!("/api/conversations/{conv}/messages"),
            Some(&t),
            &json!({"content": "What is the capital of Spain?", "parent_id": null, "stream": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["user_message"]["parent_id"].is_null(), "{v}");
    let (_, branch) = app
        .get_json(&format!("/api/conversations/{conv}/messages"), Some(&t))
        .await;
    assert_eq!(branch["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        branch["data"][0]["siblings"].as_array().map(Vec::len),
        Some(2)
    );
    let (_, tree) = app
        .get_json(
            &format!("/api/conversations/{conv}/messages?tree=true"),
            Some(&t),
        )
        .await;
    assert_eq!(tree["data"].as_array().map(Vec::len), Some(7), "{tree}");

    // Search finds it by a word of the text, pinned conversations list first.
    let other = new_conversation(&app, &t, json!({})).await;
    let (_, list) = app.get_json("/api/conversations", Some(&t)).await;
    assert_eq!(list["data"][0]["id"], other.as_str(), "newest first");
    let (s, _, _) = app
        .call(
            Method::PATCH,
            &format!("/api/conversations/{conv}"),
            Some(&t),
            Some(&json!({"pinned": true, "title": "Capitals"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = app.get_json("/api/conversations", Some(&t)).await;
    assert_eq!(list["data"][0]["id"], conv.as_str(), "pinned first");
    let (_, found) = app.get_json("/api/conversations?q=ital", Some(&t)).await;
    assert_eq!(found["data"].as_array().map(Vec::len), Some(1), "{found}");
    let (_, found) = app
        .get_json("/api/conversations?q=%22%20OR%20*", Some(&t))
        .await;
    assert!(
        found["data"].is_array(),
        "FTS syntax in q is only text: {found}"
    );

    // Export and import keep the whole tree and the active branch.
    let (s, export) = app
        .get_json(&format!("/api/conversations/{conv}/export"), Some(&t))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(export["format"], "hearth.conversation.v1");
    let (s, imported) = app
        .post_json("/api/conversations/import", Some(&t), &export)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{imported}");
    let copy = imported["id"].as_str().expect("id");
    assert_ne!(copy, conv);
    assert_eq!(imported["title"], "Capitals");
    let (_, copied_tree) = app
        .get_json(
            &format!("/api/conversations/{copy}/messages?tree=true"),
            Some(&t),
        )
        .await;
    assert_eq!(copied_tree["data"].as_array().map(Vec::len), Some(7));
    let contents = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|m| m["content"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (_, original) = app
        .get_json(&format!("/api/conversations/{conv}/messages"), Some(&t))
        .await;
    let (_, copied) = app
        .get_json(&format!("/api/conversations/{copy}/messages"), Some(&t))
        .await;
    assert_eq!(contents(&copied), contents(&original));
    let md = app
        .client
        .get(app.url(&format!("/api/conversations/{conv}/export?format=markdown")))
        .bearer_auth(&t)
        .send()
        .await
        .expect("send");
    assert!(md.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/markdown"));
    let md = md.text().await.expect("text");
    assert!(md.starts_with("# Capitals"), "{md}");
    assert!(
        md.contains("**User:**\n\nWhat is the capital of Spain?"),
        "{md}"
    );
    let mut broken = export.clone();
    broken["messages"][1]["parent_id"] = json!("msg_nowhere");
    let (s, v) = app
        .post_json("/api/conversations/import", Some(&t), &broken)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Bad input: unknown parameters are refused, a message that cannot fit is a 400.
    let (s, v) = app
        .post_json(
            "/api/conversations",
            Some(&t),
            &json!({"params": {"temprature": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let huge = "word ".repeat(9000);
    let (s, v) = app
        .post_json(
            &format!("/api/conversations/{other}/messages"),
            Some(&t),
            &json!({"content": huge, "stream": false}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("context")),
        "{v}"
    );
    let (_, msgs) = app
        .get_json(&format!("/api/conversations/{other}/messages"), Some(&t))
        .await;
    assert_eq!(msgs["data"], json!([]), "a refused turn stores nothing");
}

#[tokio::test]
async fn an_answer_outlives_its_client_and_resumes_to_the_uninterrupted_text() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        // The same question is asked three times: each must really generate (no response cache).
        c.cache.enabled = false;
        // Nothing generates beside the answers compared (no title is written).
        c.chat.auto_title = false;
    });
    let t = app.user("dave").await;
    let params = json!({"temperature": 0, "max_tokens": 40});
    let question = "Tell me about the sea.";
    let whole = {
        let conv = new_conversation(&app, &t, params.clone()).await;
        ask(&app, &t, &conv, question).await["message"]["content"]
            .as_str()
            .expect("content")
            .to_string()
    };
    assert!(whole.chars().count() > 20, "{whole}");

    // SSE: read a few tokens, drop the stream, come back with the offset.
    let conv = new_conversation(&app, &t, params.clone()).await;
    let r = app
        .open_sse(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(&t),
            Some(&json!({"content": question})),
        )
        .await;
    let mut reader = SseReader::new(r);
    let head = reader.next().await.expect("message frame");
    let id = head["message"]["id"].as_str().expect("id").to_string();
    let mut seen = String::new();
    while seen.chars().count() < 8 {
        let f = reader.next().await.expect("token");
        assert_eq!(f["type"], "token", "{f}");
        seen.push_str(f["text"].as_str().expect("text"));
    }
    drop(reader);
    let rest = app
        .sse(
            Method::GET,
            &format!("/api/messages/{id}/stream?offset={}", seen.chars().count()),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(rest.status, StatusCode::OK);
    assert_eq!(rest.frames.last().expect("done")["status"], "done");
    assert_eq!(format!("{seen}{}", text_of(&rest.frames)), whole);

    // The same over the WebSocket: generate, close the socket, resume on a new one.
    let conv = new_conversation(&app, &t, params).await;
    let mut ws = app.ws(Some(&t)).await;
    ws_send(
        &mut ws,
        json!({"type": "generate", "id": "g", "conversation_id": conv, "content": question,
               "timestamps": true}),
    )
    .await;
    // The typing indicator's frames come first, as for plain generations.
    for state in ["queued", "thinking"] {
        let f = ws_next(&mut ws).await;
        assert_eq!(
            (&f["type"], &f["state"]),
            (&json!("status"), &json!(state)),
            "{f}"
        );
    }
    let first = ws_next(&mut ws).await;
    assert_eq!(first["type"], "message", "{first}");
    let id = first["message"]["id"].as_str().expect("id").to_string();
    let mut seen = String::new();
    let now_us = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    while seen.chars().count() < 5 {
        let f = ws_next(&mut ws).await;
        assert_eq!(f["type"], "token", "{f}");
        assert_eq!(f["message_id"], id.as_str());
        // `timestamps`: when the token was sampled, in the recent past.
        let at = f["sampled_at_us"].as_u64().expect("sampled_at_us");
        assert!(at <= now_us() && now_us() - at < 60_000_000, "{f}");
        seen.push_str(f["text"].as_str().expect("text"));
    }
    drop(ws);
    let mut ws = app.ws(Some(&t)).await;
    ws_send(
        &mut ws,
        json!({"type": "resume", "message_id": id, "offset": seen.chars().count()}),
    )
    .await;
    loop {
        let f = ws_next(&mut ws).await;
        assert_eq!(f["id"], id.as_str(), "a resume goes by the message id: {f}");
        if f["type"] == "done" {
            assert_eq!(f["status"], "done", "{f}");
            // The per-message stats the UI shows.
            let t = &f["timings"];
            assert!(
                t["first_token_ms"].as_f64().is_some_and(|ms| ms > 0.0),
                "{f}"
            );
            assert!(
                t["decode_tokens_per_s"].as_f64().is_some_and(|r| r > 0.0),
                "{f}"
            );
            assert_eq!(f["cached"], false, "{f}");
            break;
        }
        seen.push_str(f["text"].as_str().expect("text"));
    }
    assert_eq!(seen, whole);
}

#[tokio::test]
async fn an_answer_nobody_follows_is_interrupted_after_the_grace_period() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        c.chat.detach_grace_secs = 1;
    });
    let t = app.user("erin").await;
    let conv = new_conversation(&app, &t, endless(3000)).await;
    let r = app
        .open_sse(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            Some(&t),
            Some(&json!({"content": "Write a long story."})),
        )
        .await;
    let mut reader = SseReader::new(r);
    let head = reader.next().await.expect("message frame");
    let id = head["message"]["id"].as_str().expect("id").to_string();
    reader.next().await.expect("a token");
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(60);
    let message = loop {
        let (_, m) = app.get_json(&format!("/api/messages/{id}"), Some(&t)).await;
        if m["status"] != "streaming" {
            break m;
        }
        assert!(Instant::now() < deadline, "still streaming: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(message["status"], "interrupted", "{message}");
    assert!(message["content"].as_str().is_some_and(|c| !c.is_empty()));
    let generated = message["completion_tokens"].as_i64().expect("tokens");
    assert!(generated > 0 && generated < 3000, "{message}");
}

#[tokio::test]
async fn per_caller_limits_refuse_with_429_on_every_transport() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| c.limits.requests_per_minute = 2);
    let chat =
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "cache": false});
    for remaining in ["1", "0"] {
        let (s, h, v) = app
            .call(
                Method::POST,
                "/v1/chat/completions",
                Some("unused"),
                Some(&chat),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(h["x-ratelimit-limit"], "2");
        assert_eq!(h["x-ratelimit-remaining"], remaining);
        assert!(h["x-ratelimit-reset"]
            .to_str()
            .expect("reset")
            .parse::<u64>()
            .is_ok());
    }
    let (s, h, v) = app
        .call(Method::POST, "/v1/chat/completions", None, Some(&chat))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("retry in"));
    let retry: u64 = h["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    // The same budget on the WebSocket and in the status route.
    let mut ws = app.ws(None).await;
    ws_send(
        &mut ws,
        json!({"type": "generate", "id": "w", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let mut f = ws_next(&mut ws).await;
    while f["type"] == "status" {
        f = ws_next(&mut ws).await;
    }
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["code"], "rate_limited");
    assert_eq!(f["status"], 429);
    assert!(f["retry_after"].as_u64().is_some_and(|s| s >= 1), "{f}");
    let (s, v) = app.get_json("/api/rate-limit", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["requests"]["limit"], 2, "{v}");
    assert_eq!(v["requests"]["remaining"], 0, "{v}");
    assert!(v["tokens"].is_null());
    drop(app);

    // One generation at a time.
    let app = TestApp::spawn(|c| c.limits.concurrent_generations = 1);
    let long = json!({
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 3000, "stream": true, "logit_bias": {"0": -100, "2": -100},
    });
    let r = app
        .open_sse(Method::POST, "/v1/chat/completions", None, Some(&long))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut running = SseReader::new(r);
    running.next().await.expect("first chunk");
    let (s, v) = app.post_json("/v1/chat/completions", None, &chat).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("m")
            .contains("at once"),
        "{v}"
    );
    drop(running);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = app.post_json("/v1/chat/completions", None, &chat).await;
        if s == StatusCode::OK {
            break;
        }
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert!(Instant::now() < deadline, "the permit came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(app);

    // A daily token quota.
    let app = TestApp::spawn(|c| c.limits.tokens_per_day = 30);
    let (s, v) = app.post_json("/v1/chat/completions", None, &chat).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["usage"]["total_tokens"].as_u64().expect("usage") >= 30,
        "{v}"
    );
    let (s, v) = app.post_json("/v1/chat/completions", None, &chat).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("m")
            .contains("tokens_per_day"),
        "{v}"
    );
    let (_, v) = app.get_json("/api/rate-limit", None).await;
    assert_eq!(v["tokens"]["remaining"], 0, "{v}");
}

#[tokio::test]
async fn deterministic_requests_are_answered_from_the_cache_per_user() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let chat = |stream: bool| {
        json!({
            "messages": [{"role": "user", "content": "Name three fruits."}],
            "max_tokens": 24, "temperature": 0, "stream": stream,
        })
    };
    let (s, h, first) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            None,
            Some(&chat(false)),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-hearth-cache"], "miss");
    let started = Instant::now();
    let (_, h, again) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            None,
            Some(&chat(false)),
        )
        .await;
    let hit_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("cache hit answered in {hit_ms:.1} ms");
    assert_eq!(h["x-hearth-cache"], "hit");
    assert_eq!(
        again["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(
        again["usage"]["completion_tokens"],
        first["usage"]["completion_tokens"]
    );
    // A hit streams as ordinary chunks.
    let sse = app
        .sse(
            Method::POST,
            "/v1/chat/completions",
            None,
            Some(&chat(true)),
        )
        .await;
    assert_eq!(sse.headers["x-hearth-cache"], "hit");
    assert_eq!(sse.frames.last(), Some(&json!("[DONE]")));
    let streamed: String = sse
        .frames
        .iter()
        .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed,
        first["choices"][0]["message"]["content"]
            .as_str()
            .expect("text")
    );
    // `"cache": false` and sampled requests skip it; so does another user.
    let mut skip = chat(false);
    skip["cache"] = json!(false);
    let (_, h, _) = app
        .call(Method::POST, "/v1/chat/completions", None, Some(&skip))
        .await;
    assert_eq!(h["x-hearth-cache"], "miss");
    let mut sampled = chat(false);
    sampled["temperature"] = json!(0.7);
    for _ in 0..2 {
        let (_, h, _) = app
            .call(Method::POST, "/v1/chat/completions", None, Some(&sampled))
            .await;
        assert_eq!(h["x-hearth-cache"], "miss");
    }
    let token = app.user("frank").await;
    let (_, h, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(&chat(false)),
        )
        .await;
    assert_eq!(h["x-hearth-cache"], "miss", "entries are per caller");
    let (_, h, _) = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(&chat(false)),
        )
        .await;
    assert_eq!(h["x-hearth-cache"], "hit");
    let hits = common::metric(app.addr, "hearth_chat_events_total{event=\"cache_hit\"}").await;
    assert_eq!(hits, 3.0);
}

#[tokio::test]
async fn models_preferences_and_memories_shape_turns_and_stay_private() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        let mut local = hearth::config::BackendSettings::local_default();
        local.aliases.insert("smol".into(), MODEL.into());
        c.backends = vec![local];
    });
    let root = app.user("root").await; // the first account: an admin
    let amy = app.user("amy").await;
    let ben = app.user("ben").await;
    let (s, v) = app.get_json("/api/models", Some(&amy)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let local = &v["data"][0];
    assert_eq!(local["id"], MODEL);
    assert_eq!(
        (local["local"].clone(), local["status"].clone()),
        (json!(true), json!("loaded"))
    );
    assert_eq!(local["default"], true);
    assert_eq!(local["context_length"], 8192);
    assert!(local["quantization"].is_string(), "{local}");
    assert_eq!(v["data"][1]["id"], "smol");

    // Preferences: a bad model is refused with the valid ids and nothing is stored.
    let (s, _, v) = app
        .call(
            Method::PUT,
            "/api/me/preferences",
            Some(&amy),
            Some(&json!({"model": "nope"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().expect("m").contains(MODEL),
        "{v}"
    );
    let (_, p) = app.get_json("/api/me/preferences", Some(&amy)).await;
    assert!(p["model"].is_null(), "{p}");
    let prefs = json!({"model": "smol", "max_tokens": 3, "temperature": 0, "memory": true});
    let (s, _, v) = app
        .call(Method::PUT, "/api/me/preferences", Some(&amy), Some(&prefs))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A turn gets the preferred limits.
    let conv = new_conversation(&app, &amy, json!({})).await;
    let plain = ask(&app, &amy, &conv, "Tell me a story.").await;
    assert!(
        plain["message"]["completion_tokens"].as_i64().expect("n") <= 3,
        "{plain}"
    );
    let before = plain["message"]["context"]["system_tokens"]
        .as_u64()
        .expect("tokens");

    // Memories go into the system prompt, and are the owner's alone.
    let (s, m) = app
        .post_json(
            "/api/me/memories",
            Some(&amy),
            &json!({"content": "My name is Amy and I like tea."}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let with_memory = ask(&app, &amy, &conv, "What do I like?").await;
    let after = with_memory["message"]["context"]["system_tokens"]
        .as_u64()
        .expect("tokens");
    assert!(after > before, "{before} -> {after}");
    let (_, theirs) = app.get_json("/api/me/memories", Some(&ben)).await;
    assert_eq!(theirs["data"], json!([]));
    let (s, _, _) = app
        .call(
            Method::DELETE,
            &format!("/api/me/memories/{}", m["id"]),
            Some(&ben),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = app
        .call(
            Method::DELETE,
            &format!("/api/me/memories/{}", m["id"]),
            Some(&amy),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Admins decide which models users may use.
    let policy = json!({"allowed_models": ["smol"], "default_model": "smol"});
    let (s, _, v) = app
        .call(
            Method::PATCH,
            "/api/admin/models",
            Some(&amy),
            Some(&policy),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _, v) = app
        .call(
            Method::PATCH,
            "/api/admin/models",
            Some(&root),
            Some(&json!({"allowed_models": ["nope"]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, v) = app
        .call(
            Method::PATCH,
            "/api/admin/models",
            Some(&root),
            Some(&policy),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app.get_json("/api/models", Some(&ben)).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["default"], "smol");
    let (_, v) = app.get_json("/v1/models", Some(&ben)).await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["data"][0]["id"], "smol");
    let (_, v) = app.get_json("/v1/models", Some(&root)).await;
    assert_eq!(
        v["data"].as_array().map(Vec::len),
        Some(2),
        "admins see every model: {v}"
    );
    let hi =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1});
    let (s, v) = app.post_json("/v1/chat/completions", Some(&ben), &hi).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "model_not_allowed");
    let (s, v) = app
        .post_json("/v1/chat/completions", Some(&root), &hi)
        .await;
    assert_eq!(s, StatusCode::OK, "admins may use every model: {v}");
}

#[tokio::test]
async fn guards_stop_loops_and_filters_never_leak_a_match() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        c.filters = vec![hearth::config::FilterSettings {
            name: "vowels".into(),
            pattern: "[aeiouAEIOU]".into(),
            action: hearth::config::FilterAction::Redact,
            replacement: "*".into(),
            max_match_chars: 1,
        }];
    });
    // A looping answer: one token forced at every step.
    let (s, v) = app
        .post_json("/tokenize", None, &json!({"content": " yes"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let yes = v["tokens"][0].as_u64().expect("token id");
    let looping = json!({
        "messages": [{"role": "user", "content": "Say yes."}],
        "max_tokens": 200, "logit_bias": {yes.to_string(): 100}, "cache": false,
    });
    let (s, v) = app.post_json("/v1/chat/completions", None, &looping).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert_eq!(v["choices"][0]["stopped_by"], "repetition", "{v}");
    let n = v["usage"]["completion_tokens"].as_u64().expect("n");
    assert!(n < 200, "stopped early: {n}");
    // The redaction applies to every piece of a stream and to the final text.
    let ask = json!({
        "messages": [{"role": "user", "content": "Describe the sea in two sentences."}],
        "max_tokens": 40, "stream": true, "cache": false, "temperature": 0,
    });
    let sse = app
        .sse(Method::POST, "/v1/chat/completions", None, Some(&ask))
        .await;
    let text: String = sse
        .frames
        .iter()
        .filter_map(|f| f["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains('*'), "{text}");
    assert!(!text.chars().any(|c| "aeiouAEIOU".contains(c)), "{text}");
    let mut plain = ask.clone();
    plain["stream"] = json!(false);
    let (_, v) = app.post_json("/v1/chat/completions", None, &plain).await;
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert_eq!(
        content, text,
        "the same greedy answer, redacted the same way"
    );
    let redactions = common::metric(
        app.addr,
        "hearth_chat_events_total{event=\"filter_redact\"}",
    )
    .await;
    assert!(redactions > 0.0);
    let loops = common::metric(
        app.addr,
        "hearth_chat_events_total{event=\"guard_repetition\"}",
    )
    .await;
    assert_eq!(loops, 1.0);
}

#[tokio::test]
async fn admins_override_a_users_limits() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        c.limits.requests_per_minute = 1;
    });
    let root = app.user("root").await;
    let amy = app.user("amy").await;
    let ben = app.user("ben").await;
    let (_, me) = app.get_json("/api/me", Some(&amy)).await;
    let amy_id = me["user"]["id"].as_i64().expect("id");
    let limits = json!({"requests_per_minute": 3});
    let path = format!("/api/admin/users/{amy_id}/limits");
    let (s, _, _) = app
        .call(Method::PUT, &path, Some(&amy), Some(&limits))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "users cannot raise their own");
    let (s, _, v) = app
        .call(Method::PUT, &path, Some(&root), Some(&limits))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app.get_json(&path, Some(&root)).await;
    assert_eq!(v["requests_per_minute"], 3, "{v}");
    let hi =
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "cache": false});
    for _ in 0..3 {
        let (s, v) = app.post_json("/v1/chat/completions", Some(&amy), &hi).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, _) = app.post_json("/v1/chat/completions", Some(&amy), &hi).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let (s, _) = app.post_json("/v1/chat/completions", Some(&ben), &hi).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.post_json("/v1/chat/completions", Some(&ben), &hi).await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "the server's limit for everyone else"
    );
    let (_, v) = app.get_json("/api/rate-limit", Some(&amy)).await;
    assert_eq!(v["requests"]["limit"], 3, "{v}");
}

#[tokio::test]
async fn with_summaries_on_messages_that_no_longer_fit_become_a_running_summary() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        c.memory.summarize = true;
        c.chat.auto_title = false;
        c.memory.summary_max_tokens = 60;
        // A small window: 8192 − 16 (max_tokens) − reserve leaves 240 tokens for the turn.
        c.chat.context_reserve_tokens = 8192 - 16 - 240;
    });
    let t = app.user("zed").await;
    let conv = new_conversation(&app, &t, json!({"max_tokens": 16, "temperature": 0})).await;
    ask(&app, &t, &conv, "My name is Zed and I live in Oslo.").await;
    let mut dropped = 0;
    for i in 2..20 {
        let v = ask(
            &app,
            &t,
            &conv,
            &format!("Tell me one short fact about the number {i}."),
        )
        .await;
        let ctx = &v["message"]["context"];
        assert!(ctx["estimated_tokens"].as_u64().expect("n") <= 240, "{ctx}");
        dropped = ctx["dropped"].as_u64().expect("dropped");
        if dropped > 0 {
            break;
        }
    }
    assert!(dropped > 0, "the window is small enough to drop messages");
    let deadline = Instant::now() + Duration::from_secs(60);
    let summary = loop {
        let (_, c) = app
            .get_json(&format!("/api/conversations/{conv}"), Some(&t))
            .await;
        if let Some(s) = c["summary"].as_str().filter(|s| !s.is_empty()) {
            assert!(c["summary_through"].is_string(), "{c}");
            break s.to_string();
        }
        assert!(Instant::now() < deadline, "no summary was written: {c}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let next = ask(&app, &t, &conv, "What is my name?").await;
    let ctx = &next["message"]["context"];
    assert_eq!(
        ctx["summary"], true,
        "the summary stands in for what was dropped: {ctx}"
    );
    assert!(
        ctx["system_tokens"].as_u64().expect("n") > 0,
        "{ctx} / {summary}"
    );
    assert!(ctx["estimated_tokens"].as_u64().expect("n") <= 240, "{ctx}");
}
