//! Tool calling on the real server and model: forced calls (`tool_choice` `required` or named)
//! parse and their arguments satisfy the function's schema; streamed `delta.tool_calls` add up
//! to the whole answer's calls; a round trip with a `tool` message answers; bad tool fields are
//! 400s naming the field; `/apply-template` takes `tools` and `add_generation_prompt`, and a
//! final assistant message is continued (prefill) there and in chat; `logprobs` cover a call's
//! tokens. (Tools in conversations: `conversation_tools`.)

use crate::common;
use crate::common::app::TestApp;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": false,
    })
}

fn body(choice: Value, seed: u64) -> Value {
    json!({
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": weather_schema()}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 10}}, "required": ["zone"], "additionalProperties": false}}},
        ],
        "tool_choice": choice,
        "parallel_tool_calls": false,
        "max_tokens": 120,
        "temperature": 1.0,
        "seed": seed,
    })
}

async fn post(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    app.post_json("/v1/chat/completions", None, body).await
}

#[tokio::test]
async fn forced_calls_parse_and_their_arguments_match_the_schema() {
    let _turn = common::serial();
    let app = TestApp::spawn(|_| {});
    let validator = jsonschema::validator_for(&weather_schema()).expect("schema");
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    const SAMPLES: u64 = 16;
    let answers: Vec<(u64, StatusCode, Value)> = futures::stream::iter(0..SAMPLES)
        .map(|seed| {
            let (app, body) = (&app, body(named.clone(), seed));
            async move {
                let (s, v) = post(app, &body).await;
                (seed, s, v)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (seed, status, v) in answers {
        assert_eq!(status, 200, "{v}");
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "seed {seed}: {v}");
        assert!(choice["message"]["content"].is_null(), "{v}");
        let calls = choice["message"]["tool_calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 1, "{v}");
        assert_eq!(calls[0]["type"], "function");
        assert!(calls[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")));
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}: {v}"));
        assert!(validator.is_valid(&args), "seed {seed}: {args}");
    }
    // `required` picks one of the tools.
    let (status, v) = post(&app, &body(json!("required"), 3)).await;
    assert_eq!(status, 200, "{v}");
    let name = &v["choices"][0]["message"]["tool_calls"][0]["function"]["name"];
    assert!(name == "get_weather" || name == "get_time", "{v}");
}

#[tokio::test]
async fn streamed_tool_call_deltas_add_up_to_the_whole_call() {
    let _turn = common::serial();
    let app = TestApp::spawn(|_| {});
    let mut request = body(
        json!({"type": "function", "function": {"name": "get_weather"}}),
        5,
    );
    request["temperature"] = json!(0);
    request["cache"] = json!(false);
    let (_, whole) = post(&app, &request).await;
    let call = &whole["choices"][0]["message"]["tool_calls"][0];
    request["stream"] = json!(true);
    let sse = app
        .sse(Method::POST, "/v1/chat/completions", None, Some(&request))
        .await
        .frames;
    assert_eq!(sse.last(), Some(&json!("[DONE]")));
    let (mut name, mut args, mut pieces, mut finish) = (None, String::new(), 0, None);
    for chunk in &sse[..sse.len() - 1] {
        let choice = &chunk["choices"][0];
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        for d in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(d["index"], 0, "{d}");
            if let Some(n) = d["function"]["name"].as_str() {
                assert!(name.is_none(), "the name comes once: {sse:?}");
                assert!(d["id"].as_str().is_some_and(|id| id.starts_with("call_")));
                name = Some(n.to_string());
            }
            args.push_str(d["function"]["arguments"].as_str().unwrap_or(""));
            pieces += 1;
        }
    }
    assert_eq!(name.as_deref(), call["function"]["name"].as_str());
    assert_eq!(args, call["function"]["arguments"].as_str().unwrap());
    assert!(pieces > 3, "arguments stream in pieces: {pieces}");
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn a_tool_result_goes_back_and_the_model_answers() {
    let _turn = common::serial();
    let app = TestApp::spawn(|_| {});
    let mut request = body(json!("auto"), 1);
    request["messages"] = json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18, \"sky\": \"sunny\"}"},
    ]);
    request["max_tokens"] = json!(24);
    let (status, v) = post(&app, &request).await;
    assert_eq!(status, 200, "{v}");
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(["stop", "length", "tool_calls"].contains(&finish), "{v}");
    // The prompt carries the tools, the call and its result.
    let (_, prompt) = app
        .post_json(
            "/apply-template",
            None,
            &json!({"messages": request["messages"]}),
        )
        .await;
    let text = prompt["prompt"].as_str().unwrap_or_default();
    assert!(
        text.contains("<tool_call>") && text.contains("<tool_response>"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_tool_fields_are_400s_naming_the_field() {
    let _turn = common::serial();
    let app = TestApp::spawn(|_| {});
    let named = |n: &str| json!({"type": "function", "function": {"name": n}});
    let cases = [
        (json!({"tools": {"a": 1}}), "tools"),
        (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            "tools[0].function.name",
        ),
        (json!({"tool_choice": named("nope")}), "tool_choice"),
        (json!({"tool_choice": 7}), "tool_choice"),
        (
            json!({"tools": [], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "json"}]}),
            "tool_choice",
        ),
    ];
    for (patch, param) in cases {
        let mut request = body(named("get_weather"), 1);
        for (k, v) in patch.as_object().unwrap() {
            request[k] = v.clone();
        }
        let (status, v) = post(&app, &request).await;
        assert_eq!(status, 400, "{patch}: {v}");
        assert_eq!(v["error"]["param"], param, "{patch}: {v}");
    }
}

#[tokio::test]
async fn the_readme_tool_call_example_makes_a_call() {
    let _turn = common::serial();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let section = &readme[readme.find("### Tool calls").expect("section")..];
    let start = section.find("-d '").expect("curl -d") + 4;
    let len = section[start..].find("'\n").expect("end of the body");
    let body: Value = serde_json::from_str(&section[start..start + len]).expect("the body is JSON");
    let app = TestApp::spawn(|_| {});
    let (status, v) = post(&app, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let args = v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .expect("arguments");
    let args: Value = serde_json::from_str(args).expect("arguments are JSON");
    assert!(args["city"].is_string(), "{args}");
}

#[tokio::test]
async fn apply_template_takes_tools_and_a_prefill_that_chat_continues() {
    let _turn = common::serial();
    let app = TestApp::spawn(|_| {});
    let template = |body: Value| {
        let app = &app;
        async move { app.post_json("/apply-template", None, &body).await }
    };
    let question = json!([{"role": "user", "content": "Name a fruit."}]);
    let opener = "<|im_start|>assistant\n";

    let (status, v) = template(json!({"messages": question})).await;
    assert_eq!(status, 200, "{v}");
    let plain = v["prompt"].as_str().unwrap().to_string();
    assert!(plain.ends_with(opener), "{plain}");
    let (_, v) = template(json!({"messages": question, "add_generation_prompt": false})).await;
    assert_eq!(v["prompt"].as_str(), plain.strip_suffix(opener), "{v}");

    // Tools reach the prompt as chat gives them to the model; `none` hides them.
    let tools = body(json!("auto"), 0)["tools"].clone();
    let (_, v) = template(json!({"messages": question, "tools": tools})).await;
    let with_tools = v["prompt"].as_str().unwrap();
    assert!(
        with_tools.contains("<tools>") && with_tools.contains("\"get_time\""),
        "{with_tools}"
    );
    let (_, v) =
        template(json!({"messages": question, "tools": tools, "tool_choice": "none"})).await;
    assert_eq!(v["prompt"].as_str(), Some(plain.as_str()), "{v}");
    for (bad, param) in [
        (json!({"tools": 7}), "tools"),
        (
            json!({"tools": tools, "tool_choice": "nope"}),
            "tool_choice",
        ),
        (json!({"add_generation_prompt": "yes"}), ""),
    ] {
        let mut request = json!({"messages": question});
        request
            .as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let (status, v) = template(request).await;
        assert_eq!(status, 400, "{v}");
        if !param.is_empty() {
            assert_eq!(v["error"]["param"], param, "{v}");
        }
    }

    // A final assistant message is continued, not closed ...
    let prefill = "My favourite fruit is the";
    let mut chat = question.as_array().unwrap().clone();
    chat.push(json!({"role": "assistant", "content": prefill}));
    let (_, v) = template(json!({"messages": chat})).await;
    let prompt = v["prompt"].as_str().unwrap().to_string();
    assert_eq!(prompt, format!("{plain}{prefill}"));
    // ... and chat answers from where it stops: the same greedy text as completing that prompt.
    let (status, answer) = post(
        &app,
        &json!({"messages": chat, "max_tokens": 8, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, completion) = app
        .post_json(
            "/v1/completions",
            None,
            &json!({"prompt": prompt, "max_tokens": 8, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{completion}");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(
        text, completion["choices"][0]["text"],
        "{answer} {completion}"
    );
}

#[tokio::test]
async fn logprobs_cover_every_token_of_a_call() {
    let _turn = common::serial();
    let app = TestApp::spawn(|_| {});
    let mut request = body(
        json!({"type": "function", "function": {"name": "get_weather"}}),
        2,
    );
    request["logprobs"] = json!(true);
    request["top_logprobs"] = json!(2);
    let (status, v) = post(&app, &request).await;
    assert_eq!(status, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let entries = choice["logprobs"]["content"].as_array().expect("logprobs");
    // One entry per generated token but the end-of-turn token, as for any answer.
    let generated = v["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert!(
        (generated - 1..=generated).contains(&entries.len()),
        "{} entries for {generated} tokens: {v}",
        entries.len()
    );
    let text: String = entries
        .iter()
        .map(|e| e["token"].as_str().expect("token"))
        .collect();
    let call = &choice["message"]["tool_calls"][0]["function"];
    assert!(
        text.contains("get_weather") && text.contains(call["arguments"].as_str().unwrap()),
        "the call's tokens are there: {text}"
    );
    for e in entries {
        assert!(e["logprob"].as_f64().is_some_and(|l| l <= 0.0), "{e}");
        assert_eq!(e["top_logprobs"].as_array().map(Vec::len), Some(2), "{e}");
    }
}
