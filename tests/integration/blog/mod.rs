//! The blog over real HTTP and WebSocket on the real model, with the helpers its modules share.
//! Here: posts owner-only across two users, revisions and the 409 on a stale save, limits;
//! `pages`: the public pages (parsed: meta tags, JSON-LD, canonical links), feeds and the
//! sitemap as XML, caching (ETag / Last-Modified → 304), the XSS payload list through the whole
//! path, the local SEO checks against hand-computed values; `assist`: every AI action
//! streaming on the real model, over SSE and the socket.

mod assist;
mod pages;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common;
use crate::common::app::TestApp;
use hearth::config::Registration;

pub(crate) fn open_registration(c: &mut hearth::config::Config) {
    c.auth.registration = Registration::Open;
    c.auth.login_per_ip_per_minute = 100_000;
}

pub(crate) async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let (s, v) = app.post_json("/api/posts", Some(token), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

pub(crate) async fn patch(
    app: &TestApp,
    token: &str,
    id: &str,
    body: Value,
) -> (StatusCode, Value) {
    let (s, _, v) = app
        .call(
            Method::PATCH,
            &format!("/api/posts/{id}"),
            Some(token),
            Some(&body),
        )
        .await;
    (s, v)
}

#[tokio::test]
async fn posts_are_owner_only_and_a_stale_save_is_a_409_never_an_overwrite() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let post = create(
        &app,
        &alice,
        json!({"title": "Hello, World!", "body": "One\ntwo"}),
    )
    .await;
    let id = post["id"].as_str().unwrap().to_string();
    assert_eq!(post["slug"], "hello-world");
    assert_eq!(post["revision"], 1);
    assert_eq!(post["status"], "draft");
    assert_eq!(post["author"], "alice");
    assert_eq!(post["url"], "/blog/alice/hello-world");
    // The same title again gets the next free slug.
    let again = create(&app, &alice, json!({"title": "Hello world"})).await;
    assert_eq!(again["slug"], "hello-world-2");

    // Every route on alice's post is a 404 for bob, and his list is empty.
    for (method, path, body) in [
        (Method::GET, format!("/api/posts/{id}"), None),
        (
            Method::PATCH,
            format!("/api/posts/{id}"),
            Some(json!({"revision": 1, "title": "mine"})),
        ),
        (Method::DELETE, format!("/api/posts/{id}"), None),
        (Method::POST, format!("/api/posts/{id}/publish"), None),
        (Method::POST, format!("/api/posts/{id}/unpublish"), None),
        (Method::GET, format!("/api/posts/{id}/revisions"), None),
        (Method::GET, format!("/api/posts/{id}/revisions/1"), None),
        (
            Method::POST,
            format!("/api/posts/{id}/revisions/1/restore"),
            Some(json!({"revision": 1})),
        ),
        (Method::GET, format!("/api/posts/{id}/seo"), None),
        (
            Method::POST,
            format!("/api/posts/{id}/assist"),
            Some(json!({"action": "titles", "stream": false})),
        ),
    ] {
        let (s, _, v) = app
            .call(method.clone(), &path, Some(&bob), body.as_ref())
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    let (_, list) = app.get_json("/api/posts", Some(&bob)).await;
    assert_eq!(list["data"], json!([]));
    let (_, list) = app.get_json("/api/posts?status=draft", Some(&alice)).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(
        list["data"][0].get("body").is_none(),
        "lists leave bodies out"
    );
    let (s, _) = app.get_json("/api/posts", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A save names its revision; the next one from the same base is stale.
    let (s, saved) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 1, "body": "One\nthree\nfour", "tags": [" Rust ", "rust", "Web Dev"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(saved["revision"], 2);
    assert_eq!(saved["tags"], json!(["rust", "web dev"]));
    let (s, stale) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 1, "body": "overwrite?"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{stale}");
    assert_eq!(stale["error"]["code"], "revision_conflict");
    assert_eq!(stale["error"]["param"], "revision");
    assert_eq!(stale["current"]["revision"], 2);
    assert_eq!(stale["current"]["body"], "One\nthree\nfour");
    let (_, stored) = app
        .get_json(&format!("/api/posts/{id}"), Some(&alice))
        .await;
    assert_eq!(
        stored["body"], "One\nthree\nfour",
        "the stale save changed nothing"
    );
    let (s, v) = patch(&app, &alice, &id, json!({"body": "no revision"})).await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("revision"))
    );

    // Revisions: newest first, with a line summary; an old one restores as a new revision.
    let (_, revs) = app
        .get_json(&format!("/api/posts/{id}/revisions"), Some(&alice))
        .await;
    let revs = revs["data"].as_array().unwrap().clone();
    assert_eq!(revs.len(), 2, "{revs:?}");
    assert_eq!(
        (
            revs[0]["revision"].clone(),
            revs[0]["added"].clone(),
            revs[0]["removed"].clone()
        ),
        (json!(2), json!(2), json!(1))
    );
    let (_, r1) = app
        .get_json(&format!("/api/posts/{id}/revisions/1"), Some(&alice))
        .await;
    assert_eq!(r1["body"], "One\ntwo");
    let (s, restored) = app
        .post_json(
            &format!("/api/posts/{id}/revisions/1/restore"),
            Some(&alice),
            &json!({"revision": 1}),
        )
        .await;
    assert_eq!(
        (s, restored["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("revision_conflict"))
    );
    let (s, restored) = app
        .post_json(
            &format!("/api/posts/{id}/revisions/1/restore"),
            Some(&alice),
            &json!({"revision": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{restored}");
    assert_eq!(
        (restored["revision"].clone(), restored["body"].clone()),
        (json!(3), json!("One\ntwo"))
    );

    // Slugs and tags are validated; a slug another post has is a 409.
    let (s, v) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 3, "slug": "Not A Slug"}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("slug"))
    );
    let (s, v) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 3, "slug": "hello-world-2"}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("slug_taken"))
    );
    let (s, v) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 3, "tags": ["<script>"]}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("tags"))
    );
    let (s, v) = patch(&app, &alice, &id, json!({"revision": 3, "title": "  "})).await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("title"))
    );
    let (s, v) = app
        .post_json(
            "/api/posts",
            Some(&alice),
            &json!({"title": "x", "colour": "red"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Publishing keeps the revision; the first publish dates the post.
    let (s, published) = app
        .post_json(
            &format!("/api/posts/{id}/publish"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{published}");
    assert_eq!(
        (published["status"].clone(), published["revision"].clone()),
        (json!("published"), json!(3))
    );
    assert!(published["published_at"].as_i64().is_some());
    let (s, _, _) = app
        .call(
            Method::DELETE,
            &format!("/api/posts/{id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .get_json(&format!("/api/posts/{id}"), Some(&alice))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn body_size_and_post_count_limits_come_from_config() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        c.blog.max_body_bytes = 100;
        c.blog.max_posts_per_user = 2;
    });
    let ada = app.user("ada").await;
    let (s, v) = app
        .post_json(
            "/api/posts",
            Some(&ada),
            &json!({"title": "Big", "body": "x".repeat(101)}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::PAYLOAD_TOO_LARGE, json!("payload_too_large")),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("blog.max_body_bytes"));
    create(&app, &ada, json!({"title": "One", "body": "x".repeat(100)})).await;
    create(&app, &ada, json!({"title": "Two"})).await;
    let (s, v) = app
        .post_json("/api/posts", Some(&ada), &json!({"title": "Three"}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("post_limit")),
        "{v}"
    );
    let (s, v) = app
        .post_json(
            "/api/render",
            Some(&ada),
            &json!({"markdown": "y".repeat(101)}),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
}
