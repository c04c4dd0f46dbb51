//! The AI writing tools on the real model: every action over SSE, then over `/ws` with
//! cancelling and the rate limit.

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{create, open_registration};
use crate::common;
use crate::common::app::{ws_next, ws_send, SseReader, TestApp};

const BODY: &str =
    "Sourdough bread needs only flour, water and salt. The starter does the rest.\n\n\
                    - feed the starter\n- mix the dough\n- bake hot\n";

/// Every action streamed over SSE on the real model: tokens as they come, then the checked
/// result; the post itself never changes.
#[tokio::test]
async fn every_ai_action_streams_on_the_real_model_and_leaves_the_post_alone() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let ada = app.user("ada").await;
    let post = create(
        &app,
        &ada,
        json!({"title": "Baking sourdough bread at home", "body": BODY}),
    )
    .await;
    let id = post["id"].as_str().unwrap();
    let path = format!("/api/posts/{id}/assist");
    for (action, selection, options) in [
        ("titles", None, json!({"count": 3})),
        ("outline", None, json!({"topic": "sourdough bread"})),
        ("continue", None, json!({"cursor": 50})),
        (
            "expand",
            Some("- feed the starter\n- mix the dough"),
            json!({}),
        ),
        (
            "rewrite",
            Some("The starter does the rest."),
            json!({"style": "formal"}),
        ),
        ("summary", None, json!({"words": 12})),
        ("meta_description", None, json!({})),
        ("keywords", None, json!({"count": 4})),
        ("slug", None, json!({})),
    ] {
        // Greedy, so the run is the same every time: at the default temperature a 135M model
        // now and then answers a JSON action with an empty list.
        let mut options = options;
        options["max_tokens"] = json!(40);
        options["temperature"] = json!(0.0);
        let req = json!({"action": action, "selection": selection, "options": options});
        let r = app
            .open_sse(Method::POST, &path, Some(&ada), Some(&req))
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{action}");
        assert!(r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut sse = SseReader::new(r);
        let mut tokens = 0;
        let mut last = Value::Null;
        while let Some(frame) = sse.next().await {
            match frame["type"].as_str() {
                Some("token") => {
                    assert!(last.is_null(), "{action}: a token after the end");
                    tokens += 1;
                }
                _ => last = frame,
            }
        }
        assert!(tokens >= 2, "{action}: {tokens} token frames");
        assert_eq!(last["type"], "done", "{action}: {last}");
        assert_eq!(last["action"], action);
        let text = last["text"].as_str().unwrap();
        assert!(!text.trim().is_empty(), "{action}: {last}");
        assert!(
            last["usage"]["completion_tokens"].as_u64().unwrap() >= 2,
            "{last}"
        );
        match action {
            "titles" => {
                let titles = last["titles"].as_array().expect("titles");
                assert!((1..=3).contains(&titles.len()), "{last}");
            }
            "keywords" => assert!(
                (1..=4).contains(&last["keywords"].as_array().expect("keywords").len()),
                "{last}"
            ),
            "summary" => assert!(text.split_whitespace().count() <= 12, "{text}"),
            "meta_description" => assert!(text.chars().count() <= 160, "{text}"),
            "slug" => assert!(
                text.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{text}"
            ),
            _ => {}
        }
    }
    // Not streamed: the same result as JSON.
    let (s, v) = app
        .post_json(
            &path,
            Some(&ada),
            &json!({"action": "meta_description", "stream": false, "options": {"max_tokens": 40}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["text"].as_str().unwrap().chars().count() <= 160);
    // Bad requests are 400s naming the field.
    for (req, param) in [
        (json!({"action": "poem"}), "action"),
        (
            json!({"action": "rewrite", "options": {"style": "formal"}}),
            "selection",
        ),
        (
            json!({"action": "rewrite", "selection": "x", "options": {"style": "pirate"}}),
            "options.style",
        ),
        (
            json!({"action": "titles", "options": {"count": 50}}),
            "options.count",
        ),
        (
            json!({"action": "continue", "options": {"cursor": 100000}}),
            "options.cursor",
        ),
        (
            json!({"action": "titles", "options": {"max_tokens": 0}}),
            "options.max_tokens",
        ),
    ] {
        let (s, v) = app.post_json(&path, Some(&ada), &req).await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{req}: {v}"
        );
    }
    let (_, after) = app.get_json(&format!("/api/posts/{id}"), Some(&ada)).await;
    assert_eq!(
        (after["revision"].clone(), after["body"].clone()),
        (json!(1), json!(BODY)),
        "assists never save"
    );
}

/// The same tools over `/ws`, with the generation service's limits applying unchanged.
#[tokio::test]
async fn ai_actions_stream_over_the_socket_can_be_cancelled_and_count_against_the_rate_limit() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        c.limits.requests_per_minute = 3;
    });
    let ada = app.user("ada").await;
    let post = create(
        &app,
        &ada,
        json!({"title": "Baking sourdough bread at home", "body": BODY}),
    )
    .await;
    let id = post["id"].as_str().unwrap();
    let mut ws = app.ws(Some(&ada)).await;
    ws_send(&mut ws, json!({"type": "generate", "id": "t1", "post_id": id, "action": "titles", "options": {"count": 2, "max_tokens": 60}})).await;
    let mut states = Vec::new();
    let mut tokens = 0;
    let done = loop {
        let f = ws_next(&mut ws).await;
        assert_eq!(f["id"], "t1", "{f}");
        match f["type"].as_str().unwrap() {
            "status" => states.push(f["state"].as_str().unwrap().to_string()),
            "token" => tokens += 1,
            _ => break f,
        }
    };
    assert_eq!(states, ["queued", "thinking"]);
    assert!(tokens >= 2);
    assert_eq!(done["type"], "done", "{done}");
    assert!(!done["titles"].as_array().unwrap().is_empty(), "{done}");

    // A cancel ends a long one with `cancelled`.
    ws_send(&mut ws, json!({"type": "generate", "id": "c1", "post_id": id, "action": "continue", "options": {"max_tokens": 300}})).await;
    loop {
        let f = ws_next(&mut ws).await;
        if f["type"] == "token" {
            break;
        }
    }
    ws_send(&mut ws, json!({"type": "cancel", "id": "c1"})).await;
    let last = loop {
        let f = ws_next(&mut ws).await;
        if f["type"] == "done" || f["type"] == "error" {
            break f;
        }
    };
    assert_eq!(last["finish_reason"], "cancelled", "{last}");
    // Someone else's post is a 404 frame; the third request of the minute was the cancelled
    // one, so the fourth is refused by the rate limit.
    let bob = app.user("bob").await;
    let mut bob_ws = app.ws(Some(&bob)).await;
    ws_send(
        &mut bob_ws,
        json!({"type": "generate", "id": "x", "post_id": id, "action": "titles"}),
    )
    .await;
    let f = ws_next(&mut bob_ws).await;
    assert_eq!(
        (f["type"].clone(), f["status"].clone()),
        (json!("error"), json!(404)),
        "{f}"
    );
    let (s, v) = app
        .post_json(
            &format!("/api/posts/{id}/assist"),
            Some(&ada),
            &json!({"action": "slug", "stream": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .post_json(
            &format!("/api/posts/{id}/assist"),
            Some(&ada),
            &json!({"action": "slug", "stream": false}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!("rate_limited")),
        "{v}"
    );
}
