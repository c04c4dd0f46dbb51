//! Tools in conversations, on the real server and model: a conversation whose `params` offer
//! tools stores the calls an answer makes (`tool_calls`, `finish_reason: "tool_calls"`), the
//! next turn posts their results as `tool_outputs` (stored as `tool` messages) and the model
//! answers them; bad outputs are 400s naming `tool_outputs`; another user gets 404; the same
//! over `/ws`; export and import keep calls and results. Also chat's `add_generation_prompt`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common;
use crate::common::app::{ws_next, ws_send, TestApp};

fn open_registration(c: &mut hearth::config::Config) {
    c.auth.registration = hearth::config::Registration::Open;
}

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": false,
    })
}

/// A conversation's params offering `get_weather`, with `tool_choice`.
fn tool_params(choice: Value) -> Value {
    json!({
        "temperature": 0,
        "max_tokens": 40,
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather in a city",
            "parameters": weather_schema()}}],
        "tool_choice": choice,
        "parallel_tool_calls": false,
    })
}

fn named() -> Value {
    json!({"type": "function", "function": {"name": "get_weather"}})
}

async fn set_choice(app: &TestApp, token: &str, conv: &str, choice: Value) {
    let (s, _, v) = app
        .call(
            Method::PATCH,
            &format!("/api/conversations/{conv}"),
            Some(token),
            Some(&json!({"params": tool_params(choice)})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// The one call of a stored answer: its id, after checking its shape and arguments.
fn the_call(message: &Value) -> String {
    assert_eq!(message["finish_reason"], "tool_calls", "{message}");
    let calls = message["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 1, "{message}");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {message}"));
    let validator = jsonschema::validator_for(&weather_schema()).expect("schema");
    assert!(validator.is_valid(&args), "{args}");
    calls[0]["id"].as_str().expect("id").to_string()
}

/// The next frame that is not a `status`.
async fn after_status(ws: &mut crate::common::app::Ws) -> Value {
    loop {
        let f = ws_next(ws).await;
        if f["type"] != "status" {
            return f;
        }
    }
}

#[tokio::test]
async fn conversations_store_calls_and_answer_their_results() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (s, v) = app
        .post_json(
            "/api/conversations",
            Some(&alice),
            &json!({"params": tool_params(named())}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let conv = v["id"].as_str().unwrap().to_string();
    let messages = format!("/api/conversations/{conv}/messages");

    // A question: the answer is a call, streamed turn, whole call in `done` and in the store.
    let sse = app
        .sse(
            Method::POST,
            &messages,
            Some(&alice),
            Some(&json!({"content": "What is the weather in Paris?"})),
        )
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    let done = sse.frames.last().expect("frames");
    assert_eq!(done["type"], "done", "{done}");
    let answer_id = done["message_id"].as_str().unwrap().to_string();
    let (_, stored) = app
        .get_json(&format!("/api/messages/{answer_id}"), Some(&alice))
        .await;
    let call_id = the_call(&stored);
    assert_eq!(done["tool_calls"], stored["tool_calls"], "{done}");
    assert_eq!(done["finish_reason"], "tool_calls");
    // Following the finished answer again gives the calls with its end.
    let replay = app
        .sse(
            Method::GET,
            &format!("/api/messages/{answer_id}/stream"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        replay.frames.last().unwrap()["tool_calls"],
        stored["tool_calls"]
    );

    // Bad results are 400s naming `tool_outputs`, and store nothing.
    let output = |id: &str| json!({"tool_call_id": id, "output": "{\"temperature\": 18}"});
    for (body, why) in [
        (
            json!({"tool_outputs": [output("call_nope")]}),
            "an unknown call",
        ),
        (
            json!({"tool_outputs": [output(&call_id), output(&call_id)]}),
            "a call answered twice",
        ),
        (
            json!({"tool_outputs": [output(&call_id)], "content": "hi"}),
            "content beside results",
        ),
        (
            json!({"tool_outputs": [output(&call_id)], "parent_id": null}),
            "results for no message",
        ),
        (
            json!({"tool_outputs": [{"tool_call_id": call_id}]}),
            "a result without output",
        ),
    ] {
        let (s, v) = app.post_json(&messages, Some(&alice), &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{why}: {v}");
        if why != "a result without output" {
            assert_eq!(v["error"]["param"], "tool_outputs", "{why}: {v}");
        }
    }
    // Another user's conversation does not exist for them.
    let mut results = json!({"tool_outputs": [output(&call_id)], "stream": false});
    let (s, _) = app.post_json(&messages, Some(&bob), &results).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The results go back (the model may answer or call again: `auto`).
    set_choice(&app, &alice, &conv, json!("auto")).await;
    let (s, v) = app.post_json(&messages, Some(&alice), &results).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["user_message"].is_null(), "{v}");
    let tool_message = &v["tool_messages"][0];
    assert_eq!(tool_message["role"], "tool");
    assert_eq!(tool_message["tool_call_id"], call_id.as_str());
    assert_eq!(tool_message["parent_id"], answer_id.as_str());
    let second = &v["message"];
    assert_eq!(second["status"], "done", "{v}");
    assert_eq!(second["parent_id"], tool_message["id"]);
    let finish = second["finish_reason"].as_str().unwrap();
    assert!(["stop", "length", "tool_calls"].contains(&finish), "{v}");
    // The turn's prompt held the call and its result.
    let context: Vec<&str> = second["context"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        context.contains(&answer_id.as_str())
            && context.contains(&tool_message["id"].as_str().unwrap()),
        "{second}"
    );
    assert!(
        second["prompt_tokens"].as_i64() > stored["prompt_tokens"].as_i64(),
        "the result made the prompt longer: {second} {stored}"
    );
    // Answered calls cannot be answered again from the new leaf (whose calls, if any, are new).
    let (s, v) = app.post_json(&messages, Some(&alice), &results).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // The branch reads back in order, with the call and the result.
    let (_, branch) = app.get_json(&messages, Some(&alice)).await;
    let roles: Vec<&str> = branch["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        &roles[..4],
        ["user", "assistant", "tool", "assistant"],
        "{branch}"
    );
    assert_eq!(branch["data"][1]["tool_calls"], stored["tool_calls"]);

    // Export and import keep calls and results; Markdown shows them.
    let (_, export) = app
        .get_json(&format!("/api/conversations/{conv}/export"), Some(&alice))
        .await;
    let (s, imported) = app
        .post_json("/api/conversations/import", Some(&alice), &export)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{imported}");
    let (_, copy) = app
        .get_json(
            &format!(
                "/api/conversations/{}/messages",
                imported["id"].as_str().unwrap()
            ),
            Some(&alice),
        )
        .await;
    assert_eq!(
        copy["data"][1]["tool_calls"], stored["tool_calls"],
        "{copy}"
    );
    assert_eq!(copy["data"][2]["tool_call_id"], call_id.as_str(), "{copy}");
    let mut bad = export.clone();
    bad["messages"][2]
        .as_object_mut()
        .unwrap()
        .remove("tool_call_id");
    let (s, v) = app
        .post_json("/api/conversations/import", Some(&alice), &bad)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let md = app
        .client
        .get(app.url(&format!("/api/conversations/{conv}/export?format=markdown")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        md.contains("Calls `get_weather`") && md.contains("Tool result"),
        "{md}"
    );

    // Over /ws: a question answered by a call, then its result.
    set_choice(&app, &alice, &conv, named()).await;
    let mut ws = app.ws(Some(&alice)).await;
    ws_send(
        &mut ws,
        json!({"type": "generate", "id": "q", "conversation_id": conv, "content": "And in Rome?"}),
    )
    .await;
    let done = loop {
        let f = ws_next(&mut ws).await;
        if f["type"] == "done" {
            break f;
        }
    };
    assert_eq!(done["finish_reason"], "tool_calls", "{done}");
    let id = done["tool_calls"][0]["id"]
        .as_str()
        .expect("a call")
        .to_string();
    set_choice(&app, &alice, &conv, json!("none")).await;
    ws_send(
        &mut ws,
        json!({"type": "generate", "id": "r", "conversation_id": conv,
               "tool_outputs": [{"tool_call_id": id, "output": "{\"temperature\": 21}"}]}),
    )
    .await;
    let (mut message, mut end) = (None, None);
    while end.is_none() {
        let f = ws_next(&mut ws).await;
        match f["type"].as_str() {
            Some("message") => message = Some(f),
            Some("done") => end = Some(f),
            Some("error") => panic!("{f}"),
            _ => {}
        }
    }
    let message = message.expect("a message frame");
    assert_eq!(
        message["tool_messages"][0]["tool_call_id"],
        id.as_str(),
        "{message}"
    );
    let end = end.unwrap();
    assert_eq!(end["status"], "done", "{end}");
    assert_ne!(
        end["finish_reason"], "tool_calls",
        "`none` offers no tools: {end}"
    );
    assert!(end["tool_calls"].is_null(), "{end}");
    results["tool_outputs"][0]["tool_call_id"] = json!("call_other");
    ws_send(
        &mut ws,
        json!({"type": "generate", "id": "s", "conversation_id": conv,
               "tool_outputs": results["tool_outputs"]}),
    )
    .await;
    let f = after_status(&mut ws).await;
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["param"], "tool_outputs", "{f}");
    // Regenerating takes no tool outputs.
    ws_send(
        &mut ws,
        json!({"type": "generate", "id": "t", "conversation_id": conv,
               "regenerate": end["message_id"], "tool_outputs": results["tool_outputs"]}),
    )
    .await;
    let f = after_status(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["param"].as_str()),
        (Some("error"), Some("tool_outputs")),
        "{f}"
    );
}

#[tokio::test]
async fn chat_takes_add_generation_prompt_as_llama_server_does() {
    let _model = common::serial();
    let app = TestApp::spawn(|_| {});
    let question = json!([{"role": "user", "content": "Name a fruit."}]);
    let (_, template) = app
        .post_json(
            "/apply-template",
            None,
            &json!({"messages": question, "add_generation_prompt": false}),
        )
        .await;
    let prompt = template["prompt"].as_str().unwrap().to_string();
    assert!(!prompt.ends_with("assistant\n"), "{prompt}");
    let greedy = |body: Value| {
        let app = &app;
        async move {
            let (s, v) = app.post_json("/v1/chat/completions", None, &body).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v
        }
    };
    let chat = greedy(json!({"messages": question, "add_generation_prompt": false,
        "max_tokens": 8, "temperature": 0}))
    .await;
    let (s, completion) = app
        .post_json(
            "/v1/completions",
            None,
            &json!({"prompt": prompt, "max_tokens": 8, "temperature": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{completion}");
    assert_eq!(
        chat["choices"][0]["message"]["content"], completion["choices"][0]["text"],
        "the same prompt as /apply-template shows: {chat} {completion}"
    );
    assert_eq!(
        chat["usage"]["prompt_tokens"],
        completion["usage"]["prompt_tokens"]
    );
    let with = greedy(json!({"messages": question, "max_tokens": 8, "temperature": 0})).await;
    assert!(
        with["usage"]["prompt_tokens"].as_i64() > chat["usage"]["prompt_tokens"].as_i64(),
        "the default adds the assistant's opener: {with}"
    );
    let (s, v) = app
        .post_json(
            "/v1/chat/completions",
            None,
            &json!({"messages": question, "add_generation_prompt": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}
