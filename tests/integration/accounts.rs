//! Accounts against the real server (in-process on 127.0.0.1:0, a fresh SQLite file per server,
//! the real model), over HTTP with reqwest: the token lifecycle, API keys on `/v1` and `/ws`,
//! usage, roles, registration policies, login limits, disabled users, backups and bad input.
//!
//! Three servers, started once each:
//! - `open_server`: registration `open`, anonymous `/v1` allowed; `root` (the first account,
//!   hence admin) is registered at start.
//! - `first_admin_server`: registration `first_admin`, access tokens live 1 s; `boss` registered
//!   at start.
//! - `closed_server`: registration `closed`, `require_auth`, a static `server.api_key`; the admin
//!   `keeper` is written into the database before the server starts.

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use hearth::config::{Config, Registration};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";
const PASSWORD: &str = "correct horse battery";
const STATIC_KEY: &str = "sk-static-test";
const ROOT: &str = "root";

/// Start a server; `before` runs on the data directory before the server opens it.
fn spawn_server(
    tweak: impl FnOnce(&mut Config) + Send + 'static,
    before: impl FnOnce(&std::path::Path, &Config) + Send + 'static,
) -> SocketAddr {
    common::spawn_server(move |config| {
        config.server.max_body_bytes = 64 * 1024;
        // Tests share 127.0.0.1: only the per-username limit is exercised.
        config.auth.login_per_ip_per_minute = 100_000;
        tweak(config);
        let dir = config.storage.data_dir.clone();
        before(&dir, config);
    })
}

/// The open server and an access token of its admin `root`, logged in once (logging in per
/// test would spend root's per-username login budget).
fn open() -> &'static (SocketAddr, String) {
    static SERVER: OnceLock<(SocketAddr, String)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let addr = spawn_server(|c| c.auth.registration = Registration::Open, |_, _| {});
        block_on(async move {
            let (status, v) = post(addr, "/api/auth/register", None, creds(ROOT)).await;
            assert_eq!(status, StatusCode::CREATED, "{v}");
            assert_eq!(
                v["user"]["role"], "admin",
                "the first account becomes admin: {v}"
            );
            (addr, login(addr, ROOT).await.access)
        })
    })
}

fn open_server() -> SocketAddr {
    open().0
}

fn root_token() -> String {
    open().1.clone()
}

fn first_admin_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let addr = spawn_server(
            |c| {
                c.auth.registration = Registration::FirstAdmin;
                c.auth.access_token_ttl_secs = 1;
            },
            |_, _| {},
        );
        let (status, v) =
            block_on(async move { post(addr, "/api/auth/register", None, creds("boss")).await });
        assert_eq!(status, StatusCode::CREATED, "{v}");
        assert_eq!(v["user"]["role"], "admin", "{v}");
        addr
    })
}

fn closed_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        spawn_server(
            |c| {
                c.auth.registration = Registration::Closed;
                c.auth.require_auth = true;
                c.server.api_key = Some(STATIC_KEY.into());
            },
            |_, config| {
                // As `hearth user create --admin keeper` would.
                let store = hearth::store::Store::connect(&config.storage).expect("open store");
                let hash = hearth::auth::password::hash_blocking(PASSWORD).expect("hash");
                store
                    .run_blocking(|c| {
                        hearth::store::users::create_user(
                            c,
                            "keeper",
                            &hash,
                            hearth::store::Role::Admin,
                            hearth::store::unix_now(),
                        )
                    })
                    .expect("seed admin");
            },
        )
    })
}

/// Run a future to completion on a throwaway runtime (for server set-up inside `OnceLock`).
fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f)
        })
        .join()
        .expect("set-up thread")
    })
}

fn creds(name: &str) -> Value {
    json!({"username": name, "password": PASSWORD})
}

/// Send a request and return the status and the JSON body (`Null` for an empty one). Every
/// non-empty answer must be JSON.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("send");
    let status = r.status();
    let bytes = r.bytes().await.expect("body");
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {bytes:?}"))
    };
    (status, v)
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    call(addr, Method::GET, path, token, None).await
}

async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    call(addr, Method::POST, path, token, Some(body)).await
}

/// An access token and a refresh token.
struct Tokens {
    access: String,
    refresh: String,
}

async fn register(addr: SocketAddr, name: &str) {
    let (status, v) = post(addr, "/api/auth/register", None, creds(name)).await;
    assert_eq!(status, StatusCode::CREATED, "register {name}: {v}");
}

async fn login_with(addr: SocketAddr, name: &str, password: &str) -> Tokens {
    let (status, v) = post(
        addr,
        "/api/auth/login",
        None,
        json!({"username": name, "password": password}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "login {name}: {v}");
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["expires_in"].as_i64().is_some_and(|s| s > 0), "{v}");
    Tokens {
        access: v["access_token"].as_str().expect("access_token").into(),
        refresh: v["refresh_token"].as_str().expect("refresh_token").into(),
    }
}

async fn login(addr: SocketAddr, name: &str) -> Tokens {
    login_with(addr, name, PASSWORD).await
}

/// Register `name` on the open server and log in.
async fn new_user(name: &str) -> Tokens {
    let addr = open_server();
    register(addr, name).await;
    login(addr, name).await
}

async fn refresh(addr: SocketAddr, refresh_token: &str) -> (StatusCode, Value) {
    post(
        addr,
        "/api/auth/refresh",
        None,
        json!({"refresh_token": refresh_token}),
    )
    .await
}

async fn create_key(addr: SocketAddr, access: &str, name: &str) -> (i64, String) {
    let (status, v) = post(addr, "/api/keys", Some(access), json!({"name": name})).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let key = v["key"].as_str().expect("key").to_string();
    assert!(key.starts_with("sk-hearth-"), "{v}");
    assert!(
        key.starts_with(v["prefix"].as_str().expect("prefix")),
        "{v}"
    );
    (v["id"].as_i64().expect("id"), key)
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(v["error"]["type"].is_string(), "{v}");
}

async fn user_id_of(addr: SocketAddr, access: &str) -> i64 {
    let (status, v) = get(addr, "/api/me", Some(access)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["user"]["id"].as_i64().expect("id")
}

/// Poll `check` until it holds (usage is recorded off the request path).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_token_lifecycle_rotates_refresh_tokens_and_revokes_reused_families() {
    let addr = open_server();
    let first = new_user("alice").await;
    let (status, me) = get(addr, "/api/me", Some(&first.access)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["username"], "alice");
    assert_eq!(me["user"]["role"], "user");
    assert!(me["user"]["created_at"].is_i64(), "{me}");
    assert_eq!(me["usage"]["requests"], 0, "{me}");
    assert!(me["user"].get("password_hash").is_none());

    // Each refresh gives a new pair; the new access token works.
    let (status, second) = refresh(addr, &first.refresh).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_refresh = second["refresh_token"].as_str().expect("rt").to_string();
    assert_ne!(second_refresh, first.refresh);
    assert_eq!(second["token_type"], "Bearer");
    let access = second["access_token"].as_str().expect("at");
    assert_eq!(get(addr, "/api/me", Some(access)).await.0, StatusCode::OK);
    let (status, third) = refresh(addr, &second_refresh).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    let newest = third["refresh_token"].as_str().expect("rt").to_string();

    // Replaying a used token revokes the whole family, the newest token included.
    let (status, v) = refresh(addr, &first.refresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_error(&v, "invalid_refresh_token");
    let (status, v) = refresh(addr, &newest).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");

    // Changing the password needs the current one (and the session stays fine).
    let wrong = json!({"current_password": "not it at all", "new_password": "whatever 123"});
    let (status, v) = post(addr, "/api/me/password", Some(access), wrong).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_error(&v, "wrong_password");
    assert_eq!(get(addr, "/api/me", Some(access)).await.0, StatusCode::OK);

    // Logout ends a session; unknown tokens get the same 204.
    let session = login(addr, "alice").await;
    let (status, v) = post(
        addr,
        "/api/auth/logout",
        None,
        json!({"refresh_token": session.refresh}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        refresh(addr, &session.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = post(
        addr,
        "/api/auth/logout",
        None,
        json!({"refresh_token": "hrt_nothing"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        refresh(addr, "hrt_nothing").await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// A token with its payload replaced by `edit(payload)`, the signature kept.
fn tampered(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("payload json");
    edit(&mut payload);
    format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(payload.to_string()),
        parts[2]
    )
}

#[tokio::test]
async fn expired_tampered_foreign_and_unsigned_access_tokens_are_refused() {
    let addr = first_admin_server();
    let t = login(addr, "boss").await;
    assert_eq!(
        get(addr, "/api/me", Some(&t.access)).await.0,
        StatusCode::OK
    );
    let id = user_id_of(addr, &t.access).await;

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let far_future = |p: &mut Value| p["exp"] = json!(p["exp"].as_i64().expect("exp") + 3600);
    let payload = t.access.split('.').nth(1).expect("payload").to_string();
    let now = hearth::store::unix_now();
    let forged = [
        ("tampered payload", tampered(&t.access, far_future)),
        (
            "another user",
            tampered(&t.access, |p| p["sub"] = json!("999")),
        ),
        (
            "signed with another secret",
            hearth::auth::jwt::JwtKeys::new(b"someone else's secret", 900)
                .issue(id, "admin", now + 1)
                .expect("issue"),
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#)),
        ),
    ];
    for (what, token) in &forged {
        for path in ["/api/me", "/v1/models"] {
            let (status, v) = get(addr, path, Some(token)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} on {path}: {v}");
            assert_error(&v, "invalid_api_key");
        }
    }
    // Not a token at all: no session for the account API; on /v1, where this server allows
    // anonymous use, a foreign credential is anonymous (what OpenAI SDKs send as a placeholder).
    let (status, v) = get(addr, "/api/me", Some("garbage")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_error(&v, "invalid_api_key");
    assert_eq!(
        get(addr, "/v1/models", Some("garbage")).await.0,
        StatusCode::OK
    );

    // Access tokens live 1 s here (valid through the second `exp` names).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, v) = get(addr, "/api/me", Some(&t.access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{v}"
    );
    // The refresh token outlives it.
    let (status, v) = refresh(addr, &t.refresh).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let fresh = v["access_token"].as_str().expect("at");
    assert_eq!(get(addr, "/api/me", Some(fresh)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn changing_the_password_ends_every_session_and_old_access_tokens() {
    let addr = open_server();
    let one = new_user("pat").await;
    let two = login(addr, "pat").await;
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    // (A wrong current password is in the lifecycle test: each try spends a login attempt.)
    let (status, v) = post(
        addr,
        "/api/me/password",
        Some(&one.access),
        change(PASSWORD, "short"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "new_password");
    let (status, v) = post(
        addr,
        "/api/me/password",
        Some(&one.access),
        change(PASSWORD, "new password 1"),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");

    for t in [&one, &two] {
        assert_eq!(
            get(addr, "/api/me", Some(&t.access)).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(refresh(addr, &t.refresh).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = post(addr, "/api/auth/login", None, creds("pat")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A token issued right after the change (maybe in the same second) works.
    let fresh = login_with(addr, "pat", "new password 1").await;
    assert_eq!(
        get(addr, "/api/me", Some(&fresh.access)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn api_keys_authenticate_v1_and_ws_and_their_usage_is_recorded() {
    let addr = open_server();
    let t = new_user("kim").await;
    let (key_id, key) = create_key(addr, &t.access, "laptop").await;
    let (status, v) = get(addr, "/v1/models", Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["id"], MODEL);
    let chat = |stream: bool| {
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1,
            "temperature": 0,
            "stream": stream,
            // Both must run the model (a cache hit records a request but no tokens).
            "cache": false,
        })
    };
    let (status, v) = post(addr, "/v1/chat/completions", Some(&key), chat(false)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().expect("usage");
    // A stream counts too.
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat(true))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("sse").contains("[DONE]"));

    eventually("two requests on the key", async || {
        let (_, v) = get(addr, "/api/keys", Some(&t.access)).await;
        v["data"][0]["usage"]["requests"] == 2
    })
    .await;
    let (_, keys) = get(addr, "/api/keys", Some(&t.access)).await;
    let k = &keys["data"][0];
    assert_eq!(k["id"], key_id);
    assert_eq!(k["name"], "laptop");
    assert!(k.get("key").is_none(), "the key is shown only once: {k}");
    assert!(k["last_used_at"].is_i64(), "{k}");
    assert_eq!(k["usage"]["prompt_tokens"], 2 * prompt_tokens, "{k}");
    assert_eq!(k["usage"]["completion_tokens"], 2, "{k}");

    // The WebSocket with the access token in the query (as browsers do): counted for the user.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?api_key={}", t.access))
            .await
            .expect("ws connect");
    let frame = json!({"type": "generate", "id": "g", "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1});
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
    loop {
        let msg = ws.next().await.expect("frame").expect("ws read");
        let Message::Text(text) = msg else { continue };
        let f: Value = serde_json::from_str(&text).expect("json frame");
        assert_ne!(f["type"], "error", "{f}");
        if f["type"] == "done" {
            break;
        }
    }
    eventually("three requests for the user", async || {
        let (_, me) = get(addr, "/api/me", Some(&t.access)).await;
        me["usage"]["requests"] == 3
    })
    .await;

    // Admins see it per user.
    let root = root_token();
    let (status, usage) = get(addr, "/api/admin/usage", Some(&root)).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let kim = usage["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|r| r["username"] == "kim")
        .cloned()
        .expect("kim");
    assert_eq!(kim["usage"]["requests"], 3, "{kim}");
    assert_eq!(kim["usage"]["completion_tokens"], 3, "{kim}");
    let (status, users) = get(addr, "/api/admin/users", Some(&root)).await;
    assert_eq!(status, StatusCode::OK, "{users}");
    let kim = users["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|u| u["username"] == "kim")
        .cloned()
        .expect("kim");
    assert_eq!(kim["usage"]["requests"], 3, "{kim}");
    assert_eq!(kim["disabled"], false);
}

#[tokio::test]
async fn a_deleted_key_is_refused_and_keys_do_not_open_the_account_api() {
    let addr = open_server();
    let t = new_user("lee").await;
    let (id, key) = create_key(addr, &t.access, "temp").await;
    assert_eq!(get(addr, "/v1/models", Some(&key)).await.0, StatusCode::OK);
    // Account management needs a session, not a key.
    let (status, v) = get(addr, "/api/me", Some(&key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, _) = post(addr, "/api/keys", Some(&key), json!({"name": "more"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = call(
        addr,
        Method::DELETE,
        &format!("/api/keys/{id}"),
        Some(&t.access),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = get(addr, "/v1/models", Some(&key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_error(&v, "invalid_api_key");
    let (status, v) = call(
        addr,
        Method::DELETE,
        &format!("/api/keys/{id}"),
        Some(&t.access),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn one_user_can_neither_see_nor_delete_another_users_keys() {
    let addr = open_server();
    let mia = new_user("mia").await;
    let ned = new_user("ned").await;
    let (mia_key_id, mia_key) = create_key(addr, &mia.access, "mine").await;
    let (_, ned_keys) = get(addr, "/api/keys", Some(&ned.access)).await;
    assert_eq!(ned_keys["data"], json!([]), "{ned_keys}");
    let (status, v) = call(
        addr,
        Method::DELETE,
        &format!("/api/keys/{mia_key_id}"),
        Some(&ned.access),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_error(&v, "not_found");
    assert_eq!(
        get(addr, "/v1/models", Some(&mia_key)).await.0,
        StatusCode::OK
    );
    let (_, mia_keys) = get(addr, "/api/keys", Some(&mia.access)).await;
    assert_eq!(mia_keys["data"].as_array().expect("data").len(), 1);
}

#[tokio::test]
async fn admin_routes_refuse_users_with_403_and_strangers_with_401() {
    let addr = open_server();
    let user = new_user("olga").await;
    let routes: [(Method, &str, Option<Value>); 6] = [
        (Method::GET, "/api/admin/users", None),
        (Method::POST, "/api/admin/users", Some(creds("sneaky"))),
        (
            Method::PATCH,
            "/api/admin/users/1",
            Some(json!({"role": "user"})),
        ),
        (Method::GET, "/api/admin/usage", None),
        (Method::POST, "/api/admin/backup", Some(json!({}))),
        (Method::GET, "/api/admin/users", None),
    ];
    for (method, path, body) in routes {
        let (status, v) = call(addr, method.clone(), path, Some(&user.access), body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert_error(&v, "admin_required");
        let (status, v) = call(addr, method.clone(), path, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
        let (status, _) = call(addr, method.clone(), path, Some("nonsense"), body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // Account routes need a session too.
    for (method, path) in [
        (Method::GET, "/api/me"),
        (Method::GET, "/api/keys"),
        (Method::DELETE, "/api/keys/1"),
    ] {
        let (status, v) = call(addr, method, path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {v}");
    }
}

#[tokio::test]
async fn open_registration_makes_only_the_first_account_an_admin() {
    let addr = open_server();
    let root = root_token();
    let (_, me) = get(addr, "/api/me", Some(&root)).await;
    assert_eq!(me["user"]["role"], "admin", "{me}");
    let (status, v) = post(addr, "/api/auth/register", None, creds("quinn")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"]["role"], "user", "{v}");
    assert_eq!(v["user"]["username"], "quinn");
}

#[tokio::test]
async fn first_admin_registration_closes_after_the_first_account() {
    let addr = first_admin_server();
    let (status, v) = post(addr, "/api/auth/register", None, creds("second")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_error(&v, "registration_closed");
    let boss = login(addr, "boss").await;
    let (_, me) = get(addr, "/api/me", Some(&boss.access)).await;
    assert_eq!(me["user"]["role"], "admin", "{me}");
}

#[tokio::test]
async fn closed_registration_leaves_account_creation_to_admins() {
    let addr = closed_server();
    let (status, v) = post(addr, "/api/auth/register", None, creds("walkin")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_error(&v, "registration_closed");
    let admin = login(addr, "keeper").await;
    let (status, v) = post(
        addr,
        "/api/admin/users",
        Some(&admin.access),
        creds("invited"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"]["role"], "user");
    let (status, v) = post(
        addr,
        "/api/admin/users",
        Some(&admin.access),
        json!({"username": "INVITED", "password": PASSWORD, "role": "admin"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_error(&v, "username_taken");
    let invited = login(addr, "invited").await;
    assert_eq!(
        get(addr, "/api/me", Some(&invited.access)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn usernames_are_unique_in_any_case_and_log_in_in_any_case() {
    let addr = open_server();
    register(addr, "Carol").await;
    for dup in ["carol", "CAROL", "Carol"] {
        let (status, v) = post(addr, "/api/auth/register", None, creds(dup)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{dup}: {v}");
        assert_error(&v, "username_taken");
    }
    let t = login(addr, "cArOl").await;
    let (_, me) = get(addr, "/api/me", Some(&t.access)).await;
    assert_eq!(me["user"]["username"], "Carol");
}

#[tokio::test]
async fn login_attempts_beyond_the_per_username_limit_get_429_with_retry_after() {
    let addr = open_server();
    register(addr, "dave").await;
    let wrong = json!({"username": "dave", "password": "not the password"});
    // The default limit: 5 attempts per username per minute.
    for i in 0..5 {
        let (status, v) = post(addr, "/api/auth/login", None, wrong.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}: {v}");
    }
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/auth/login"))
        .json(&creds("DAVE"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_error(&r.json().await.expect("json"), "rate_limited");
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let addr = open_server();
    register(addr, "eve").await;
    let attempt = |name: &str| {
        let body = json!({"username": name, "password": "not the password"});
        async move {
            let started = Instant::now();
            let (status, v) = post(addr, "/api/auth/login", None, body).await;
            (status, v, started.elapsed())
        }
    };
    let (s1, wrong_password, t1) = attempt("eve").await;
    let (s2, unknown_user, t2) = attempt("nobody-here").await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!(s1, s2);
    assert_eq!(wrong_password, unknown_user);
    assert_error(&unknown_user, "invalid_credentials");
    // An unknown user still costs a full Argon2 verification (tens of ms), never a fast miss.
    assert!(
        t2 >= Duration::from_millis(10),
        "unknown {t2:?} vs wrong password {t1:?}"
    );
}

#[tokio::test]
async fn disabled_users_can_neither_log_in_nor_refresh_nor_use_keys() {
    let addr = open_server();
    let erin = new_user("erin").await;
    let (_, key) = create_key(addr, &erin.access, "k").await;
    let id = user_id_of(addr, &erin.access).await;
    let root = root_token();
    let patch = |disabled: bool| {
        let root = root.clone();
        async move {
            call(
                addr,
                Method::PATCH,
                &format!("/api/admin/users/{id}"),
                Some(&root),
                Some(json!({"disabled": disabled})),
            )
            .await
        }
    };
    let (status, v) = patch(true).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["user"]["disabled"], true);

    let (status, v) = post(addr, "/api/auth/login", None, creds("erin")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&v, "invalid_credentials");
    assert_eq!(
        refresh(addr, &erin.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(addr, "/v1/models", Some(&key)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(addr, "/v1/models", Some(&erin.access)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(addr, "/api/me", Some(&erin.access)).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, v) = patch(false).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(get(addr, "/v1/models", Some(&key)).await.0, StatusCode::OK);
    let again = login(addr, "erin").await;
    assert_eq!(
        get(addr, "/api/me", Some(&again.access)).await.0,
        StatusCode::OK
    );
    // Disabling revoked the old session for good.
    assert_eq!(
        refresh(addr, &erin.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_last_enabled_admin_can_be_neither_disabled_nor_demoted() {
    let addr = open_server();
    let root = root_token();
    let root_id = user_id_of(addr, &root).await;
    let frank = new_user("frank").await;
    let frank_id = user_id_of(addr, &frank.access).await;
    let patch = |id: i64, body: Value| {
        let root = root.clone();
        async move {
            call(
                addr,
                Method::PATCH,
                &format!("/api/admin/users/{id}"),
                Some(&root),
                Some(body),
            )
            .await
        }
    };
    for body in [json!({"disabled": true}), json!({"role": "user"})] {
        let (status, v) = patch(root_id, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{v}");
        assert_error(&v, "last_admin");
    }
    // With a second admin, either may step down.
    let (status, v) = patch(frank_id, json!({"role": "admin"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["user"]["role"], "admin");
    // The role is read per request, not from the token: frank is an admin at once.
    assert_eq!(
        get(addr, "/api/admin/usage", Some(&frank.access)).await.0,
        StatusCode::OK
    );
    let (status, v) = patch(frank_id, json!({"role": "user"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        get(addr, "/api/admin/usage", Some(&frank.access)).await.0,
        StatusCode::FORBIDDEN
    );

    let (status, v) = patch(999_999, json!({"disabled": true})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn the_admin_backup_endpoint_writes_a_copy_that_opens() {
    let addr = open_server();
    let root = root_token();
    let (status, v) = call(addr, Method::POST, "/api/admin/backup", Some(&root), None).await;
    if std::env::var("HEARTH_TEST_STORE").as_deref() == Ok("postgres") {
        // PostgreSQL's backups are pg_dump's: a clear refusal, not a 500.
        assert_eq!(status, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["error"]["code"], "unsupported_by_store", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("pg_dump")),
            "{v}"
        );
        return;
    }
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let path = PathBuf::from(v["path"].as_str().expect("path"));
    assert!(v["bytes"].as_u64().is_some_and(|b| b > 0), "{v}");
    assert_eq!(
        std::fs::metadata(&path).expect("backup file").len(),
        v["bytes"].as_u64().expect("bytes")
    );
    let conn = rusqlite::Connection::open(&path).expect("open backup");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    let roots: i64 = conn
        .query_row(
            "SELECT count(*) FROM users WHERE username = 'root' AND role = 'admin'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(roots, 1);
}

#[tokio::test]
async fn where_auth_is_optional_foreign_keys_are_anonymous_but_hearth_credentials_are_checked() {
    let addr = open_server();
    let (status, _) = get(addr, "/v1/models", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "anonymous use is allowed on this server"
    );
    // What OpenAI clients send when the server needs no key: not Hearth's, so anonymous.
    for foreign in ["unused", "sk-no-key-required", "EMPTY", STATIC_KEY] {
        let (status, v) = get(addr, "/v1/models", Some(foreign)).await;
        assert_eq!(status, StatusCode::OK, "{foreign}: {v}");
    }
    // Hearth's own credentials are verified: bad ones are refused, not ignored.
    let user = new_user("optional").await;
    let forged = tampered(&user.access, |claims| claims["sub"] = json!("1"));
    let expired_shape = tampered(&user.access, |claims| claims["exp"] = json!(1));
    for bad in [
        "sk-hearth-not-a-real-key",
        forged.as_str(),
        expired_shape.as_str(),
        user.refresh.as_str(),
        "eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
    ] {
        let (status, v) = get(addr, "/v1/models", Some(bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {v}");
        assert_error(&v, "invalid_api_key");
    }
    let (status, v) = get(addr, "/v1/models", Some(&user.access)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/v1/models"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn require_auth_accepts_the_static_key_an_api_key_or_an_access_token() {
    let addr = closed_server();
    let (status, v) = get(addr, "/v1/models", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_error(&v, "invalid_api_key");
    let r = reqwest::get(format!("http://{addr}/ws"))
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let admin = login(addr, "keeper").await;
    let (_, key) = create_key(addr, &admin.access, "ci").await;
    for (what, credential) in [
        ("static key", STATIC_KEY),
        ("API key", key.as_str()),
        ("access token", admin.access.as_str()),
    ] {
        let (status, v) = get(addr, "/v1/models", Some(credential)).await;
        assert_eq!(status, StatusCode::OK, "{what}: {v}");
    }
    let (status, _) = get(addr, "/v1/models", Some("sk-hearth-wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_on_every_account_route_gets_a_json_4xx() {
    let addr = open_server();
    let user = new_user("badinput").await;
    let root = root_token();
    let (u, a) = (Some(user.access.as_str()), Some(root.as_str()));
    let invalid_utf8: &[u8] = b"{\"username\": \"\xff\xfe\", \"password\": \"x\"}";
    // (method, path, token, body, status, param)
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        Vec<u8>,
        u16,
        Option<&'a str>,
    );
    let j = |v: Value| v.to_string().into_bytes();
    let mut cases: Vec<Case> = Vec::new();
    for (path, token, fields) in [
        ("/api/auth/register", None, &["username", "password"][..]),
        ("/api/auth/login", None, &["username", "password"][..]),
        ("/api/auth/refresh", None, &["refresh_token"][..]),
        ("/api/auth/logout", None, &["refresh_token"][..]),
        (
            "/api/me/password",
            u,
            &["current_password", "new_password"][..],
        ),
        ("/api/keys", u, &["name"][..]),
        ("/api/admin/users", a, &["username", "password"][..]),
    ] {
        cases.push((Method::POST, path, token, b"{not json".to_vec(), 400, None));
        cases.push((Method::POST, path, token, invalid_utf8.to_vec(), 400, None));
        cases.push((Method::POST, path, token, j(json!([1, 2])), 400, None));
        cases.push((Method::POST, path, token, j(json!({})), 400, None));
        cases.push((Method::POST, path, token, Vec::new(), 400, None));
        // Every field with the wrong type, one at a time.
        for f in fields {
            let mut body = serde_json::Map::new();
            for g in fields {
                body.insert(g.to_string(), json!("a valid-looking string"));
            }
            body.insert(f.to_string(), json!(12));
            cases.push((
                Method::POST,
                path,
                token,
                j(Value::Object(body)),
                400,
                Some(f),
            ));
        }
        let mut extra = serde_json::Map::new();
        for g in fields {
            extra.insert(g.to_string(), json!("value"));
        }
        extra.insert("surprise".into(), json!(true));
        cases.push((
            Method::POST,
            path,
            token,
            j(Value::Object(extra)),
            400,
            None,
        ));
    }
    cases.extend([
        (
            Method::POST,
            "/api/auth/register",
            None,
            j(json!({"username": "no spaces", "password": PASSWORD})),
            400,
            Some("username"),
        ),
        (
            Method::POST,
            "/api/auth/register",
            None,
            j(json!({"username": "ab", "password": PASSWORD})),
            400,
            Some("username"),
        ),
        (
            Method::POST,
            "/api/auth/register",
            None,
            j(json!({"username": "x".repeat(33), "password": PASSWORD})),
            400,
            Some("username"),
        ),
        (
            Method::POST,
            "/api/auth/register",
            None,
            j(json!({"username": "zoë", "password": PASSWORD})),
            400,
            Some("username"),
        ),
        (
            Method::POST,
            "/api/auth/register",
            None,
            j(json!({"username": "shorty", "password": "1234567"})),
            400,
            Some("password"),
        ),
        (
            Method::POST,
            "/api/auth/register",
            None,
            j(json!({"username": "longpw", "password": "x".repeat(257)})),
            400,
            Some("password"),
        ),
        (
            Method::POST,
            "/api/keys",
            u,
            j(json!({"name": "  "})),
            400,
            Some("name"),
        ),
        (
            Method::POST,
            "/api/keys",
            u,
            j(json!({"name": "x".repeat(65)})),
            400,
            Some("name"),
        ),
        (
            Method::POST,
            "/api/keys",
            u,
            j(json!({"name": "a\nb"})),
            400,
            Some("name"),
        ),
        (
            Method::POST,
            "/api/admin/users",
            a,
            j(json!({"username": "roley", "password": PASSWORD, "role": "root"})),
            400,
            Some("role"),
        ),
        (
            Method::PATCH,
            "/api/admin/users/1",
            a,
            j(json!({})),
            400,
            None,
        ),
        (
            Method::PATCH,
            "/api/admin/users/1",
            a,
            j(json!({"disabled": "yes"})),
            400,
            Some("disabled"),
        ),
        (
            Method::PATCH,
            "/api/admin/users/1",
            a,
            j(json!({"role": "root"})),
            400,
            Some("role"),
        ),
        (
            Method::PATCH,
            "/api/admin/users/1",
            a,
            b"{\"role\": \"\xff\"}".to_vec(),
            400,
            None,
        ),
        (
            Method::PATCH,
            "/api/admin/users/abc",
            a,
            j(json!({"role": "user"})),
            404,
            None,
        ),
        (Method::DELETE, "/api/keys/abc", u, Vec::new(), 404, None),
        (
            Method::DELETE,
            "/api/keys/99999999999999999999999",
            u,
            Vec::new(),
            404,
            None,
        ),
        (Method::GET, "/api/auth/login", None, Vec::new(), 405, None),
        (Method::PUT, "/api/me", u, Vec::new(), 405, None),
        (Method::GET, "/api/nothing-here", u, Vec::new(), 404, None),
        (Method::POST, "/api/admin/nothing", a, Vec::new(), 404, None),
    ]);
    let client = reqwest::Client::new();
    for (method, path, token, body, status, param) in cases {
        let mut req = client
            .request(method.clone(), format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("send");
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        assert_eq!(r.status().as_u16(), status, "{method} {path} {shown}");
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} {shown}: not JSON: {e}"));
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(v["error"]["type"].is_string(), "{v}");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{method} {path} {shown}: {v}");
        }
    }
    // Without a JSON content type.
    let r = client
        .post(format!("http://{addr}/api/auth/login"))
        .body(creds("x").to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Over server.max_body_bytes (64 KiB here), on its own connection (the server closes it).
    let huge = json!({"username": "big", "password": "x".repeat(100_000)});
    for path in ["/api/auth/register", "/api/auth/login"] {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}{path}"))
            .json(&huge)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_error(&r.json().await.expect("json"), "payload_too_large");
    }
    // The server is still fine.
    assert_eq!(get(addr, "/api/me", u).await.0, StatusCode::OK);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_socket(addr: SocketAddr, credential: &str) -> Socket {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?api_key={credential}"))
        .await
        .expect("ws connect");
    ws
}

/// Send a one-token `generate` and return its last frame (`done` or `error`), or `None` when
/// the socket closed first.
async fn generate_once(ws: &mut Socket, id: &str) -> Option<Value> {
    let frame = json!({"type": "generate", "id": id, "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1});
    ws.send(Message::text(frame.to_string())).await.ok()?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("a frame within 60 s")?
            .ok()?;
        match msg {
            Message::Text(text) => {
                let f: Value = serde_json::from_str(&text).expect("json frame");
                if f["id"] == id && (f["type"] == "done" || f["type"] == "error") {
                    return Some(f);
                }
            }
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// The close code the server sends next (frames before it are skipped).
async fn close_code(ws: &mut Socket) -> Option<u16> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("the socket closes within 60 s")?;
        match msg {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// The close code of a socket the server closes within 5 s (frames before it are skipped).
async fn closed_within_5s(ws: &mut Socket) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(5), close_code(ws))
        .await
        .expect("the socket closes within 5 s")
}

#[tokio::test]
async fn revoking_a_credential_stops_websockets_already_open() {
    let addr = open_server();
    let t = new_user("sockets").await;
    let (key_id, key) = create_key(addr, &t.access, "ws").await;
    let id = user_id_of(addr, &t.access).await;
    let root = root_token();

    // A deleted key.
    let mut ws = open_socket(addr, &key).await;
    let ok = generate_once(&mut ws, "before").await.expect("frame");
    assert_eq!(ok["type"], "done", "{ok}");
    let (status, _) = call(
        addr,
        Method::DELETE,
        &format!("/api/keys/{key_id}"),
        Some(&t.access),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The socket closes at once (not at its next ping check, 30 s away).
    assert_eq!(closed_within_5s(&mut ws).await, Some(1008));

    // A disabled user (their access token and another key).
    let (_, key2) = create_key(addr, &t.access, "ws2").await;
    let mut by_key = open_socket(addr, &key2).await;
    let mut by_token = open_socket(addr, &t.access).await;
    assert_eq!(
        generate_once(&mut by_key, "a").await.expect("frame")["type"],
        "done"
    );
    assert_eq!(
        generate_once(&mut by_token, "a").await.expect("frame")["type"],
        "done"
    );
    let (status, v) = call(
        addr,
        Method::PATCH,
        &format!("/api/admin/users/{id}"),
        Some(&root),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for ws in [&mut by_key, &mut by_token] {
        assert_eq!(closed_within_5s(ws).await, Some(1008));
    }
    call(
        addr,
        Method::PATCH,
        &format!("/api/admin/users/{id}"),
        Some(&root),
        Some(json!({"disabled": false})),
    )
    .await;

    // A changed password ends sockets opened with the old access token.
    let fresh = login(addr, "sockets").await;
    let mut ws = open_socket(addr, &fresh.access).await;
    assert_eq!(
        generate_once(&mut ws, "c").await.expect("frame")["type"],
        "done"
    );
    let (status, v) = post(
        addr,
        "/api/me/password",
        Some(&fresh.access),
        json!({"current_password": PASSWORD, "new_password": "a brand new password"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(closed_within_5s(&mut ws).await, Some(1008));
}

#[tokio::test]
async fn an_expired_access_token_stops_its_websocket() {
    // Access tokens live 1 s on this server.
    let addr = first_admin_server();
    let t = login(addr, "boss").await;
    let mut ws = open_socket(addr, &t.access).await;
    assert_eq!(
        generate_once(&mut ws, "early").await.expect("frame")["type"],
        "done"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refused = generate_once(&mut ws, "late")
        .await
        .expect("an error frame");
    assert_eq!(refused["status"], 401, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{refused}"
    );
}

#[tokio::test]
async fn a_password_change_deletes_api_keys_unless_asked_to_keep_them() {
    let addr = open_server();
    let t = new_user("keyholder").await;
    let (_, doomed) = create_key(addr, &t.access, "old").await;
    let (status, v) = post(
        addr,
        "/api/me/password",
        Some(&t.access),
        json!({"current_password": PASSWORD, "new_password": "second password!"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, v) = get(addr, "/v1/models", Some(&doomed)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let t = login_with(addr, "keyholder", "second password!").await;
    let (_, list) = get(addr, "/api/keys", Some(&t.access)).await;
    assert_eq!(list["data"], json!([]), "{list}");

    let (_, kept) = create_key(addr, &t.access, "kept").await;
    let (status, v) = post(
        addr,
        "/api/me/password",
        Some(&t.access),
        json!({"current_password": "second password!", "new_password": "third password!!", "keep_api_keys": true}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, v) = get(addr, "/v1/models", Some(&kept)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn parallel_refreshes_of_one_token_never_leave_a_live_token_behind() {
    let addr = open_server();
    for (round, parallel) in [2usize, 20, 2, 20, 2, 20, 2, 20, 2, 20]
        .into_iter()
        .enumerate()
    {
        let name = format!("racer{round}");
        let t = new_user(&name).await;
        let answers =
            futures::future::join_all((0..parallel).map(|_| refresh(addr, &t.refresh))).await;
        let winners: Vec<&Value> = answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::OK)
            .map(|(_, v)| v)
            .collect();
        assert!(
            winners.len() <= 1,
            "round {round}: {} winners",
            winners.len()
        );
        for (status, v) in &answers {
            assert!(
                *status == StatusCode::OK || *status == StatusCode::UNAUTHORIZED,
                "{status}: {v}"
            );
        }
        // Every loser presented a used token: the family is revoked, the winner's new token
        // with it.
        if let Some(w) = winners.first() {
            let next = w["refresh_token"].as_str().expect("refresh token");
            let (status, v) = refresh(addr, next).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "round {round} ({parallel} at once): the winner's token survived the reuse: {v}"
            );
        }
    }
}

/// Trusts 127.0.0.1 as a reverse proxy, so tests can speak from other client addresses
/// through `X-Forwarded-For`; the real login limits apply.
fn proxied_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let addr = common::spawn_server(|c| {
            c.auth.registration = Registration::Open;
            c.server.trusted_proxies = vec!["127.0.0.1".into()];
        });
        block_on(async move { register(addr, "chief").await });
        addr
    })
}

async fn login_from(addr: SocketAddr, client_ip: &str, password: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("http://{addr}/api/auth/login"))
        .header("x-forwarded-for", client_ip)
        .json(&json!({"username": "chief", "password": password}))
        .send()
        .await
        .expect("send")
        .status()
}

#[tokio::test]
async fn wrong_passwords_lock_out_their_sender_but_never_the_accounts_owner() {
    let addr = proxied_server();
    let attacker = "198.51.100.66";
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(login_from(addr, attacker, "wrong password!").await);
    }
    assert_eq!(
        &statuses[..5],
        &[StatusCode::UNAUTHORIZED; 5],
        "{statuses:?}"
    );
    assert_eq!(
        &statuses[5..],
        &[StatusCode::TOO_MANY_REQUESTS; 3],
        "{statuses:?}"
    );
    // The owner, elsewhere, logs in at once, again and again (successes cost nothing).
    for _ in 0..8 {
        assert_eq!(
            login_from(addr, "203.0.113.9", PASSWORD).await,
            StatusCode::OK
        );
    }
    // The attacker's address stays limited even with the right password.
    assert_eq!(
        login_from(addr, attacker, PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_from_peers_that_are_not_trusted_proxies() {
    // The open server trusts no proxy: a client rotating the header is still one client.
    let addr = open_server();
    register(addr, "spoofed").await;
    let mut last = StatusCode::OK;
    for i in 0..6 {
        last = reqwest::Client::new()
            .post(format!("http://{addr}/api/auth/login"))
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .json(&json!({"username": "spoofed", "password": "not the password"}))
            .send()
            .await
            .expect("send")
            .status();
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}
