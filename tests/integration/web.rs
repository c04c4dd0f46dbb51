//! What the web UI needs from the server, over real HTTP: the page and its assets (strict CSP,
//! hashed immutable paths, ETags, gzip and brotli), browser sessions (the refresh token in an
//! HttpOnly cookie that only `/api/auth` receives, read only with the CSRF header), signing out
//! everywhere, the sign-up policy, and the admin views the UI shows. The UI itself is driven in
//! Chromium by `browser.rs`.

use std::io::Read;

use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    COOKIE, ETAG, IF_NONE_MATCH, SET_COOKIE,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::app::TestApp;
use hearth::config::Registration;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
const CREDS: &str = r#"{"username": "ada", "password": "correct horse battery"}"#;

fn open_registration(c: &mut hearth::config::Config) {
    c.auth.registration = Registration::Open;
    c.auth.login_per_ip_per_minute = 100_000;
}

/// The `src`/`href` values under `/assets/` in the page.
fn asset_paths(page: &str) -> Vec<String> {
    page.split('"')
        .filter(|s| s.starts_with("/assets/"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_hashed_cached_compressed_and_under_a_strict_csp() {
    let app = TestApp::spawn(|_| {});
    let r = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h[CONTENT_SECURITY_POLICY], CSP);
    assert_eq!(h[CACHE_CONTROL], "no-cache");
    assert!(h[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "{page}"
    );
    let assets = asset_paths(&page);
    assert!(assets.iter().any(|a| a.ends_with("/app.js")), "{page}");
    assert!(assets.iter().any(|a| a.ends_with("/style.css")), "{page}");

    // The page again with its ETag: 304, no body.
    let etag = h[ETAG].clone();
    let r = app
        .client
        .get(app.url("/"))
        .header(IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let app_js = assets.iter().find(|a| a.ends_with("/app.js")).unwrap();
    let get = |encoding: &'static str| {
        app.client
            .get(app.url(app_js))
            .header(ACCEPT_ENCODING, encoding)
            .send()
    };
    let plain = get("identity").await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(
        plain.headers()[CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(plain.headers()[CONTENT_SECURITY_POLICY], CSP);
    assert!(plain.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(plain.headers().get(CONTENT_ENCODING).is_none());
    let plain = plain.bytes().await.unwrap();
    assert!(std::str::from_utf8(&plain).unwrap().contains("import"));

    let br = get("gzip, deflate, br").await.unwrap();
    assert_eq!(br.headers()[CONTENT_ENCODING], "br");
    let mut out = Vec::new();
    brotli::Decompressor::new(&br.bytes().await.unwrap()[..], 4096)
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain);

    let gz = get("gzip").await.unwrap();
    assert_eq!(gz.headers()[CONTENT_ENCODING], "gzip");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz.bytes().await.unwrap()[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain);

    // Every module the entry imports by a relative path is there.
    let base = app_js.trim_end_matches("app.js");
    for module in ["lib/session.js", "lib/socket.js", "vendor/preact-htm.js"] {
        let r = app
            .client
            .get(app.url(&format!("{base}{module}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{module}");
    }
    // Another bundle's hash (a page from before an upgrade) or an unknown file: JSON 404.
    for path in ["/assets/000000000000/app.js", &format!("{base}nope.js")] {
        let (s, _, v) = app.call(Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // The API keeps its own policy: no content of any kind.
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(
        r.headers()[CONTENT_SECURITY_POLICY],
        "default-src 'none'; frame-ancestors 'none'"
    );
}

/// The `hearth_refresh` cookie's value in a `Set-Cookie` header, and the whole header.
fn refresh_cookie(h: &reqwest::header::HeaderMap) -> (String, String) {
    let set = h
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("hearth_refresh="))
        .expect("a hearth_refresh cookie");
    let value = set
        .trim_start_matches("hearth_refresh=")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (value, set)
}

async fn browser_call(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    csrf: bool,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app.client.post(app.url(path)).json(&body);
    if let Some(c) = cookie {
        req = req.header(COOKIE, format!("hearth_refresh={c}"));
    }
    if csrf {
        req = req.header("x-hearth-csrf", "1");
    }
    let r = req.send().await.unwrap();
    let (s, h) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    (s, h, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_browser_session_keeps_its_refresh_token_in_an_http_only_cookie() {
    let app = TestApp::spawn(|_| {});
    let (s, v) = app.get_json("/api/auth/policy", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["first_run"], true, "{v}");
    assert_eq!(v["registration"], "first_admin");
    assert_eq!(v["password_min_len"], 8);
    let creds: Value = serde_json::from_str(CREDS).unwrap();
    let (s, _) = app.post_json("/api/auth/register", None, &creds).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, v) = app.get_json("/api/auth/policy", None).await;
    assert_eq!(v["first_run"], false, "{v}");

    // Login as a browser: the refresh token is a cookie, not in the body.
    let (s, h, v) = browser_call(&app, "/api/auth/login", None, true, creds.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.get("refresh_token").is_none(), "{v}");
    assert!(v["access_token"].is_string());
    let (first, header) = refresh_cookie(&h);
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/auth",
        "Max-Age=2592000",
    ] {
        assert!(header.contains(attr), "{header}");
    }
    assert!(
        !header.contains("Secure"),
        "plain HTTP by default: {header}"
    );

    // Without the CSRF header the cookie is not read (a cross-site form cannot refresh).
    let (s, _, v) = browser_call(&app, "/api/auth/refresh", Some(&first), false, json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // With it: a new access token and a rotated cookie.
    let (s, h, v) = browser_call(&app, "/api/auth/refresh", Some(&first), true, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (second, _) = refresh_cookie(&h);
    assert_ne!(first, second);
    let access = v["access_token"].as_str().unwrap().to_string();
    let (s, me) = app.get_json("/api/me", Some(&access)).await;
    assert_eq!(
        (s, &me["user"]["username"]),
        (StatusCode::OK, &json!("ada"))
    );

    // The used cookie again is a reuse: 401, the cookie cleared, the session revoked.
    let (s, h, _) = browser_call(&app, "/api/auth/refresh", Some(&first), true, json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (cleared, header) = refresh_cookie(&h);
    assert!(
        cleared.is_empty() && header.contains("Max-Age=0"),
        "{header}"
    );
    let (s, _, _) = browser_call(&app, "/api/auth/refresh", Some(&second), true, json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the whole family is revoked");

    // Logging in again with a cookie still there replaces that session.
    let (_, h, _) = browser_call(&app, "/api/auth/login", None, true, creds.clone()).await;
    let (replaced, _) = refresh_cookie(&h);
    let (_, h, _) = browser_call(&app, "/api/auth/login", Some(&replaced), true, creds).await;
    let (third, _) = refresh_cookie(&h);
    let (s, _, _) = browser_call(&app, "/api/auth/refresh", Some(&replaced), true, json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the replaced session ended");

    // Logout with the cookie revokes it and clears it.
    let (s, h, _) = browser_call(&app, "/api/auth/logout", Some(&third), true, json!({})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(refresh_cookie(&h).0.is_empty());
    let (s, _, _) = browser_call(&app, "/api/auth/refresh", Some(&third), true, json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // API clients are unchanged: the token in the body, no cookie.
    let (s, h, v) = browser_call(
        &app,
        "/api/auth/login",
        None,
        false,
        serde_json::from_str(CREDS).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["refresh_token"].is_string() && h.get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_session_of_that_user_only() {
    let app = TestApp::spawn(open_registration);
    let creds: Value = serde_json::from_str(CREDS).unwrap();
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    // A second session of ada's, and a key.
    let (_, second) = app.post_json("/api/auth/login", None, &creds).await;
    let (s, key) = app
        .post_json("/api/keys", Some(&ada), &json!({"name": "laptop"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let key = key["key"].as_str().unwrap().to_string();

    let (s, _, _) = app
        .call(Method::POST, "/api/auth/logout-all", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "needs a session");
    let (s, _, _) = app
        .call(Method::POST, "/api/auth/logout-all", Some(&ada), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for token in [ada.as_str(), second["access_token"].as_str().unwrap()] {
        let (s, _) = app.get_json("/api/me", Some(token)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _) = app
        .post_json(
            "/api/auth/refresh",
            None,
            &json!({"refresh_token": second["refresh_token"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Bob is untouched; ada's key is not a session; ada can log in again.
    let (s, _) = app.get_json("/api/me", Some(&bob)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.get_json("/v1/models", Some(&key)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app.post_json("/api/auth/login", None, &creds).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.get_json("/api/me", v["access_token"].as_str()).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn the_admin_views_of_usage_per_day_and_backends_are_admin_only() {
    let _model = crate::common::serial();
    let app = TestApp::spawn(open_registration);
    let admin = app.user("root").await;
    let user = app.user("bob").await;
    for path in ["/api/admin/usage?by=day", "/api/admin/backends"] {
        let (s, _) = app.get_json(path, Some(&user)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        let (s, _) = app.get_json(path, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (s, v) = app
        .post_json(
            "/v1/completions",
            Some(&user),
            &json!({"prompt": "Hi", "max_tokens": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Usage is written after the answer; wait for it.
    let mut rows = Value::Null;
    for _ in 0..50 {
        let (s, v) = app
            .get_json("/api/admin/usage?by=day&days=7", Some(&admin))
            .await;
        assert_eq!(s, StatusCode::OK);
        rows = v["data"].clone();
        if !rows.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["username"], "bob");
    assert_eq!(rows[0]["day"], today.as_str());
    assert_eq!(rows[0]["usage"]["requests"], 1);
    assert_eq!(rows[0]["usage"]["completion_tokens"], 2);
    let (s, _) = app
        .get_json("/api/admin/usage?by=month", Some(&admin))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, v) = app.get_json("/api/admin/backends", Some(&admin)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["data"],
        json!([{"name": "local", "local": true, "breaker": "closed",
                "models": ["SmolLM2-135M-Instruct.Q4_1"], "failover": []}])
    );
}

#[tokio::test]
async fn a_conversation_may_turn_memories_on_or_off_for_itself() {
    let _model = crate::common::serial();
    let app = TestApp::spawn(|_| {});
    let t = app.user("ada").await;
    let (s, v) = app
        .post_json(
            "/api/conversations",
            Some(&t),
            &json!({"params": {"memory": "yes"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "params");
    let (s, v) = app
        .post_json(
            "/api/conversations",
            Some(&t),
            &json!({"params": {"memory": false, "temperature": 0.5}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["params"]["memory"], false);
    let without = v["id"].as_str().unwrap().to_string();
    let (s, v) = app
        .post_json("/api/conversations", Some(&t), &json!({"params": {}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let with = v["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post_json(
            "/api/me/memories",
            Some(&t),
            &json!({"content": "I live in Lyon."}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // The same question in both: only the conversation with memories on (the preference's
    // default) carries them in its system prompt.
    let mut system_tokens = Vec::new();
    for conv in [&without, &with] {
        let (s, v) = app
            .post_json(
                &format!("/api/conversations/{conv}/messages"),
                Some(&t),
                &json!({"content": "Where do I live?", "stream": false}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        system_tokens.push(v["message"]["context"]["system_tokens"].as_u64().unwrap());
    }
    assert_eq!(system_tokens[0], 0, "{system_tokens:?}");
    assert!(system_tokens[1] > 0, "{system_tokens:?}");
}
