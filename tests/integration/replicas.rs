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

use crate::common::app::{ws_next, ws_send, SseReader, TestApp};
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

/// Follow answer `id` on `app` from character `offset` (SSE).
async fn follow(app: &TestApp, token: &str, id: &str, offset: usize) -> SseReader {
    let r = app
        .open_sse(
            Method::GET,
            &format!("/api/messages/{id}/stream?offset={offset}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    SseReader::new(r)
}

/// The text of the `token` frames.
fn tokens_text(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "token")
        .filter_map(|f| f["text"].as_str())
        .collect()
}

/// The messages of a conversation, as stored.
async fn messages(app: &TestApp, token: &str, conv: &str) -> Vec<Value> {
    let (s, v) = app
        .get_json(&format!("/api/conversations/{conv}/messages"), Some(token))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["data"].as_array().cloned().unwrap_or_default()
}

/// `n` one-token completions for `token`, asked of `a` and `b` in turn: their statuses (each
/// 200 or 429).
async fn statuses_alternating(a: &TestApp, b: &TestApp, token: &str, n: usize) -> Vec<u16> {
    let body = json!({
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 1,
        "temperature": 0
    });
    let mut statuses = Vec::new();
    for i in 0..n {
        let app = if i % 2 == 0 { a } else { b };
        let (s, v) = app
            .post_json("/v1/chat/completions", Some(token), &body)
            .await;
        assert!(
            s == StatusCode::OK || s == StatusCode::TOO_MANY_REQUESTS,
            "{s}: {v}"
        );
        statuses.push(s.as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_budget_holds_across_two_replicas_sharing_redis() {
    let _model = crate::common::serial();
    let Some((a, b, _db)) = pair(|c| {
        c.cache.enabled = false;
        c.limits.requests_per_minute = 3;
    })
    .await
    else {
        return;
    };
    let token = a.user("ada").await;
    // Six requests, alternating replicas: three in all get through, as from one server.
    let statuses = statuses_alternating(&a, &b, &token, 6).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(statuses[..3], [200, 200, 200], "{statuses:?}");
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
    let mut on_b = follow(&b, &token, &id, seen.chars().count()).await;
    let mut frames = vec![on_b.next().await.expect("a first frame")];
    drop(on_a);
    while let Some(f) = on_b.next().await {
        frames.push(f);
    }
    let end = frames.last().expect("end frame");
    assert_eq!(end["status"], "done", "{end}");
    let text = tokens_text(&frames);
    let answer = messages(&b, &token, &conv)
        .await
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .expect("the answer");
    assert_eq!(answer["status"], "done", "{answer}");
    assert_eq!(
        format!("{seen}{text}"),
        answer["content"].as_str().unwrap_or("")
    );
    assert!(
        answer["completion_tokens"].as_u64().unwrap_or(0) > 20,
        "{answer}"
    );

    // The same over a WebSocket on B: a `resume` frame for an answer generating on A.
    let conv = conversation(&a, &token, 80).await;
    let (id, seen, _on_a) = start_answer(&a, &token, &conv, 4).await;
    let mut ws = b.ws(Some(&token)).await;
    ws_send(
        &mut ws,
        json!({"type": "resume", "message_id": id, "offset": seen.chars().count()}),
    )
    .await;
    let mut resumed = seen.clone();
    let end = loop {
        let f = ws_next(&mut ws).await;
        assert_eq!(f["id"], id.as_str(), "{f}");
        if f["type"] == "done" {
            break f;
        }
        resumed.push_str(f["text"].as_str().expect("text"));
    };
    assert_eq!(end["status"], "done", "{end}");
    let stored = messages(&b, &token, &conv).await;
    assert_eq!(stored.last().expect("answer")["content"], json!(resumed));

    // Cancelled from B while it generates on A (B's follower sees it end).
    // (Registered first: hashing a password takes longer than some answers.)
    let eve = a.user("eve").await;
    let conv = conversation(&a, &token, 400).await;
    let (id, _, _on_a) = start_answer(&a, &token, &conv, 2).await;
    let mut follower = follow(&b, &token, &id, 0).await;
    let mut tokens = 0;
    while tokens < 3 {
        let f = follower.next().await.expect("frame");
        if f["type"] == "token" {
            tokens += 1;
        }
    }
    // Another user may not stop it (and learns nothing).
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
    // And what bob spends on A shows in B's account of his budget.
    let one = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1});
    let (s, v) = a.post_json("/v1/chat/completions", Some(&bob), &one).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, status) = b.get_json("/api/rate-limit", Some(&bob)).await;
    assert_eq!(status["requests"]["remaining"], 6, "{status}");

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

/// `scripts/replicas.sh`'s deployment, stopped when dropped.
struct Deployment {
    dir: tempfile::TempDir,
    env: std::collections::HashMap<String, String>,
}

impl Deployment {
    fn start() -> Deployment {
        let dir = tempfile::tempdir().expect("dir");
        let out = std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/replicas.sh"),
        )
        .arg("start")
        .arg(dir.path())
        .env("HEARTH_BIN", env!("CARGO_BIN_EXE_hearth"))
        .env("HEARTH_MODEL", crate::common::model_path())
        .env("HEARTH__AUTH__REGISTRATION", "open")
        .env("HEARTH__AUTH__LOGIN_PER_IP_PER_MINUTE", "100000")
        .env_remove("HEARTH__STORAGE__URL")
        .env_remove("HEARTH__CACHE__URL")
        .output()
        .expect("run scripts/replicas.sh");
        let mut d = Deployment {
            dir,
            env: Default::default(),
        };
        assert!(
            out.status.success(),
            "scripts/replicas.sh start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        d.env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d
    }

    fn app(&self, name: &str) -> TestApp {
        let url = &self.env[name];
        TestApp::at(
            url.trim_start_matches("http://")
                .parse()
                .expect("an address"),
        )
    }

    fn log(&self, replica: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(replica).join("log")).unwrap_or_default()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/replicas.sh"),
        )
        .arg("stop")
        .arg(self.dir.path())
        .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_nginx_share_everything_and_losing_one_loses_nothing_acknowledged() {
    if redis_url().is_none() || scratch().await.is_none() {
        return; // the script needs the same servers the test script installs
    }
    let _model = crate::common::serial();
    let deployment = Deployment::start();
    let (a, b, lb) = (
        deployment.app("A"),
        deployment.app("B"),
        deployment.app("LB"),
    );

    // Register on A, log in on B (and through the balancer).
    let root = a.user("root").await;
    let creds = json!({"username": "ada", "password": "correct horse battery"});
    let (s, v) = a.post_json("/api/auth/register", None, &creds).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, login) = b.post_json("/api/auth/login", None, &creds).await;
    assert_eq!(s, StatusCode::OK, "{login}");
    let ada = login["access_token"].as_str().expect("token").to_string();
    let (s, me) = lb.get_json("/api/me", Some(&ada)).await;
    assert_eq!(
        (s, &me["user"]["username"]),
        (StatusCode::OK, &json!("ada"))
    );

    // A conversation started on A continues on B, with A's turn in its context.
    let conv = conversation(&a, &ada, 12).await;
    let ask = |app: &TestApp, content: &'static str| {
        let (app, ada, conv) = (TestApp::at(app.addr), ada.clone(), conv.clone());
        async move {
            let (s, v) = app
                .post_json(
                    &format!("/api/conversations/{conv}/messages"),
                    Some(&ada),
                    &json!({"content": content, "stream": false}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            assert_eq!(v["message"]["status"], "done", "{v}");
            v
        }
    };
    let first = ask(&a, "My name is Ada.").await;
    let second = ask(&b, "What is my name?").await;
    let context = second["message"]["context"]["messages"].to_string();
    assert!(
        context.contains(first["message"]["id"].as_str().expect("id")),
        "B's turn carries A's: {second}"
    );
    assert_eq!(messages(&lb, &ada, &conv).await.len(), 4);

    // A stream interrupted on A resumes on B from its offset.
    let conv = conversation(&a, &ada, 60).await;
    let (id, seen, on_a) = start_answer(&a, &ada, &conv, 6).await;
    drop(on_a);
    let rest = b
        .sse(
            Method::GET,
            &format!("/api/messages/{id}/stream?offset={}", seen.chars().count()),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(rest.status, StatusCode::OK);
    let end = rest.frames.last().expect("end").clone();
    assert_eq!(end["status"], "done", "{end}");
    let text = tokens_text(&rest.frames);
    let stored = messages(&lb, &ada, &conv).await;
    assert_eq!(
        stored.last().expect("answer")["content"],
        json!(format!("{seen}{text}"))
    );

    // The rate limit holds across both: three a minute for cara, asked on A and B in turn.
    let cara = a.user("cara").await;
    let (_, me) = a.get_json("/api/me", Some(&cara)).await;
    let (s, _, v) = a
        .call(
            Method::PUT,
            &format!("/api/admin/users/{}/limits", me["user"]["id"]),
            Some(&root),
            Some(&json!({"requests_per_minute": 3})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let statuses = statuses_alternating(&a, &b, &cara, 6).await;
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);

    // A dies mid-answer (SIGKILL): what it acknowledged is kept, B's follower learns the answer
    // ended, the stored answer becomes `interrupted` with the text saved so far, and the
    // balancer sends everything to B.
    let conv = conversation(&a, &ada, 400).await;
    let (id, seen, _on_a) = start_answer(&a, &ada, &conv, 12).await;
    let mut on_b = follow(&b, &ada, &id, 0).await;
    let mut followed = String::new();
    while followed.chars().count() < seen.chars().count() {
        let f = on_b.next().await.expect("frame");
        followed.push_str(f["text"].as_str().unwrap_or(""));
    }
    let pid: i32 = deployment.env["A_PID"].parse().expect("pid");
    // SAFETY: kill(2) on the replica the script started, with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(f) = on_b.next().await {
            if f["type"] == "token" {
                followed.push_str(f["text"].as_str().unwrap_or(""));
            } else if f["type"] == "done" {
                return f;
            }
        }
        Value::Null
    })
    .await
    .expect("B's follower ends once A is gone");
    assert_eq!(end["status"], "interrupted", "{end}");
    assert!(followed.starts_with(&seen), "{followed:?} / {seen:?}");
    for _ in 0..4 {
        let (s, me) = lb.get_json("/api/me", Some(&ada)).await;
        assert_eq!(s, StatusCode::OK, "{me}");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let answer = loop {
        let stored = messages(&lb, &ada, &conv).await;
        assert_eq!(stored[0]["role"], "user");
        assert_eq!(
            stored[0]["content"],
            "Tell me a long story about the sea and its ships."
        );
        let answer = stored.last().expect("answer").clone();
        if answer["status"] != "streaming" {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the answer of a dead replica stays streaming: {answer}\n{}",
            deployment.log("b")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answer["status"], "interrupted", "{answer}");
    // The saved text and what B's follower got agree (either may be a little ahead: saves and
    // the mirror run beside each other).
    let saved = answer["content"].as_str().unwrap_or("");
    assert!(
        followed.starts_with(saved) || saved.starts_with(&followed),
        "{saved:?} / {followed:?}"
    );

    // A replica cut off from the database is not ready (the balancer, or Kubernetes, takes it
    // out), and says why.
    let stopped = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh"),
    )
    .arg("stop")
    .arg(deployment.dir.path().join("pg"))
    .status()
    .expect("stop PostgreSQL");
    assert!(stopped.success());
    let (s, v) = b.get_json("/ready", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]["message"].to_string().contains("database"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_holds_up_nothing() {
    if redis_url().is_none() {
        return; // the test script installs redis-server
    }
    let _model = crate::common::serial();
    // A Redis of this test's own, frozen with SIGSTOP: connections stay open, nothing answers.
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/redis.sh");
    let out = std::process::Command::new(&script)
        .args([
            "start",
            &dir.path().display().to_string(),
            &port.to_string(),
        ])
        .output()
        .expect("start redis");
    assert!(out.status.success(), "{out:?}");
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pid: i32 = std::fs::read_to_string(dir.path().join("redis.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    /// Thaws and stops the Redis however the test ends.
    struct Stop(std::path::PathBuf, tempfile::TempDir, i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the redis-server this test started.
            unsafe { libc::kill(self.2, libc::SIGCONT) };
            let _ = std::process::Command::new(&self.0)
                .arg("stop")
                .arg(self.1.path())
                .status();
        }
    }
    let _stop = Stop(script.clone(), dir, pid);
    let app = TestApp::spawn(move |c| {
        open(c);
        c.cache.url = Some(url);
        c.cache.timeout_ms = 300;
        c.limits.requests_per_minute = 100;
    });
    let token = app.user("ada").await;
    // SAFETY: kill(2) on the redis-server this test started, with valid signal numbers.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let budget = Duration::from_secs(30);
    let body = json!({
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
        "temperature": 0
    });
    let (s, v) = tokio::time::timeout(
        budget,
        app.post_json("/v1/chat/completions", Some(&token), &body),
    )
    .await
    .expect("a completion: not held up by a Redis that does not answer");
    assert_eq!(s, StatusCode::OK, "{v}");
    let conv = conversation(&app, &token, 4).await;
    let (s, v) = tokio::time::timeout(
        budget,
        app.post_json(
            &format!("/api/conversations/{conv}/messages"),
            Some(&token),
            &json!({"content": "Hi", "stream": false}),
        ),
    )
    .await
    .expect("a conversation turn: not held up by a Redis that does not answer");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["message"]["status"], "done", "{v}");
    let (s, v) = tokio::time::timeout(budget, app.get_json("/api/rate-limit", Some(&token)))
        .await
        .expect("the rate-limit status: not held up by a Redis that does not answer");
    assert_eq!(s, StatusCode::OK, "{v}");
    drop(app);
}
