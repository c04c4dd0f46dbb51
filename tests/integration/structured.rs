//! Structured outputs on the real server and model: `response_format: json_schema`.
//!
//! 200 sampled answers (random seeds, temperature 1) against a dozen schemas must all be JSON
//! that a real JSON Schema validator (the `jsonschema` crate, formats checked) accepts; strict
//! schemas with keywords the compiler cannot enforce are 400s naming the keyword; non-strict
//! ones answer with a `Warning` header; streamed answers are the same text as whole ones.

use crate::common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use futures::StreamExt;
use serde_json::{json, Value};

/// The default server (max_active 8, so concurrent requests decode batched).
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| common::spawn_server(|_| {}))
}

/// A dozen schemas, each with a request that suits it. Strings and arrays are bounded so an
/// answer always fits in the token limit.
fn schemas() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "person",
            "Describe a fictional person.",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 20},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "email": {"type": "string", "format": "email"},
                },
                "required": ["name", "age", "email"],
                "additionalProperties": false,
            }),
        ),
        (
            // The structured-outputs guide's chain-of-thought example, bounded.
            "math_reasoning",
            "Solve 8x + 7 = -23 step by step.",
            json!({
                "type": "object",
                "properties": {
                    "steps": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "explanation": {"type": "string", "maxLength": 24},
                                "output": {"type": "string", "maxLength": 12},
                            },
                            "required": ["explanation", "output"],
                            "additionalProperties": false,
                        },
                        "maxItems": 2,
                    },
                    "final_answer": {"type": "string", "maxLength": 12},
                },
                "required": ["steps", "final_answer"],
                "additionalProperties": false,
            }),
        ),
        (
            // The guide's calendar event example, with a real date.
            "calendar_event",
            "Alice and Bob are going to a science fair on Friday.",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 24},
                    "date": {"type": "string", "format": "date"},
                    "participants": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
                },
                "required": ["name", "date", "participants"],
                "additionalProperties": false,
            }),
        ),
        (
            "status",
            "Report the service status.",
            json!({
                "type": "object",
                "properties": {
                    "status": {"enum": ["ok", "degraded", "down"]},
                    "version": {"const": 2},
                    "healthy": {"type": "boolean"},
                },
                "required": ["status", "version", "healthy"],
                "additionalProperties": false,
            }),
        ),
        (
            "any_of",
            "Give a product code or a quantity.",
            json!({
                "type": "object",
                "properties": {
                    "value": {"anyOf": [
                        {"type": "integer", "minimum": 1, "maximum": 999},
                        {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                    ]},
                },
                "required": ["value"],
                "additionalProperties": false,
            }),
        ),
        (
            "defs",
            "Give the coordinates of two cities.",
            json!({
                "$defs": {
                    "point": {
                        "type": "object",
                        "properties": {
                            "lat": {"type": "number", "minimum": -90, "maximum": 90},
                            "lon": {"type": "number", "minimum": -180, "maximum": 180},
                        },
                        "required": ["lat", "lon"],
                        "additionalProperties": false,
                    }
                },
                "type": "object",
                "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
                "required": ["from", "to"],
                "additionalProperties": false,
            }),
        ),
        (
            "scores",
            "Rate three films from 0 to 10.",
            json!({
                "type": "object",
                "properties": {
                    "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 10}, "minItems": 1, "maxItems": 4},
                },
                "required": ["scores"],
                "additionalProperties": false,
            }),
        ),
        (
            "ids",
            "Create a record with an id and a timestamp.",
            json!({
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "created": {"type": "string", "format": "date-time"},
                },
                "required": ["id", "created"],
                "additionalProperties": false,
            }),
        ),
        (
            "patterns",
            "Give a phone number and an airport code.",
            json!({
                "type": "object",
                "properties": {
                    "phone": {"type": "string", "pattern": "^\\d{3}-\\d{4}$"},
                    "airport": {"type": "string", "pattern": "^[A-Z]{3}$"},
                },
                "required": ["phone", "airport"],
                "additionalProperties": false,
            }),
        ),
        (
            "optional",
            "Which features are on?",
            json!({
                "type": "object",
                "properties": {
                    "dark_mode": {"type": "boolean"},
                    "beta": {"type": "boolean"},
                    "notifications": {"type": "boolean"},
                },
                "additionalProperties": false,
            }),
        ),
        (
            "nullable",
            "What is the user's nickname, if any?",
            json!({
                "type": "object",
                "properties": {
                    "nickname": {"type": ["string", "null"], "maxLength": 12},
                    "verified": {"type": "boolean"},
                },
                "required": ["nickname", "verified"],
                "additionalProperties": false,
            }),
        ),
        (
            "tuple",
            "Give a count, a label and a flag.",
            json!({
                "type": "array",
                "prefixItems": [
                    {"type": "integer", "minimum": 0, "maximum": 100},
                    {"type": "string", "maxLength": 8},
                    {"type": "boolean"},
                ],
                "items": false,
            }),
        ),
    ]
}

fn chat_body(question: &str, name: &str, schema: &Value, seed: u64) -> Value {
    json!({
        "messages": [{"role": "user", "content": format!("{question} Answer in JSON.")}],
        "max_tokens": 200,
        "temperature": 1.0,
        "seed": seed,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": true},
        },
    })
}

#[tokio::test]
async fn sampled_answers_validate_against_their_schemas() {
    let _turn = common::serial();
    let addr = server();
    let client = reqwest::Client::new();
    let schemas = schemas();
    let validators: Vec<jsonschema::Validator> = schemas
        .iter()
        .map(|(name, _, s)| {
            jsonschema::options()
                .should_validate_formats(true)
                .build(s)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect();
    const SAMPLES: u64 = 200;
    let answers: Vec<(usize, u64, Value)> = futures::stream::iter(0..SAMPLES)
        .map(|seed| {
            let client = client.clone();
            let i = seed as usize % schemas.len();
            let (name, question, schema) = &schemas[i];
            let body = chat_body(question, name, schema, seed);
            async move {
                let v: Value = client
                    .post(format!("http://{addr}/v1/chat/completions"))
                    .json(&body)
                    .send()
                    .await
                    .expect("send")
                    .json()
                    .await
                    .expect("json");
                (i, seed, v)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut complete = 0;
    let mut per_schema = vec![(0usize, 0usize, 0u64); schemas.len()];
    for (i, seed, v) in &answers {
        per_schema[*i].1 += 1;
        per_schema[*i].2 += v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        let name = schemas[*i].0;
        let choice = &v["choices"][0];
        let text = choice["message"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} seed {seed}: {v}"));
        match choice["finish_reason"].as_str() {
            Some("stop") => {
                let doc: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("{name} seed {seed}: {e}: {text}"));
                let errors: Vec<String> = validators[*i]
                    .iter_errors(&doc)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{name} seed {seed}: {text}: {errors:?}");
                complete += 1;
                per_schema[*i].0 += 1;
            }
            Some("length") => assert_eq!(v["usage"]["completion_tokens"], 200, "{v}"),
            other => panic!("{name} seed {seed}: finish {other:?}: {v}"),
        }
    }
    // The bounds above make every answer fit; a few long numbers may still run out.
    assert!(
        complete as u64 >= SAMPLES * 95 / 100,
        "only {complete} of {SAMPLES} answers completed"
    );
    eprintln!("structured outputs: {complete}/{SAMPLES} answers complete and valid");
    for ((name, _, _), (ok, all, tokens)) in schemas.iter().zip(&per_schema) {
        eprintln!(
            "  {name}: {ok}/{all} complete, {} tokens on average",
            tokens / *all as u64
        );
    }
}

#[tokio::test]
async fn unsupported_keywords_are_400_when_strict_and_warnings_otherwise() {
    let _turn = common::serial();
    let addr = server();
    let client = reqwest::Client::new();
    let schema = json!({
        "type": "object",
        "properties": {"n": {"type": "integer", "multipleOf": 5}},
        "required": ["n"],
        "additionalProperties": false,
    });
    let mut body = chat_body("Pick a number.", "n", &schema, 1);
    let r = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.expect("json");
    assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
    assert_eq!(err["error"]["param"], "response_format.json_schema.schema");
    let message = err["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("multipleOf") && message.contains("/properties/n"),
        "{message}"
    );

    body["response_format"]["json_schema"]["strict"] = json!(false);
    body["max_tokens"] = json!(24);
    let r = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let warning = r
        .headers()
        .get("warning")
        .and_then(|w| w.to_str().ok())
        .expect("a Warning header")
        .to_string();
    assert!(
        warning.starts_with("299 hearth \"") && warning.contains("multipleOf"),
        "{warning}"
    );
    let v: Value = r.json().await.expect("json");
    if v["choices"][0]["finish_reason"] == "stop" {
        let doc: Value = serde_json::from_str(
            v["choices"][0]["message"]["content"]
                .as_str()
                .expect("text"),
        )
        .expect("JSON");
        assert!(doc["n"].is_i64(), "{doc}");
    }

    // Malformed specs name what is wrong.
    for (format, param) in [
        (
            json!({"type": "json_schema"}),
            "response_format.json_schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}),
            "response_format.json_schema.name",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "maxLength": 100000000}}}),
            "response_format.json_schema.schema",
        ),
    ] {
        let body =
            json!({"messages": [{"role": "user", "content": "hi"}], "response_format": format});
        let r = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400, "{format}");
        let err: Value = r.json().await.expect("json");
        assert_eq!(err["error"]["param"], param, "{err}");
    }
}

#[tokio::test]
async fn streamed_schema_answers_match_whole_ones() {
    let _turn = common::serial();
    let addr = server();
    let client = reqwest::Client::new();
    let (name, question, schema) = schemas().swap_remove(0);
    let mut body = chat_body(question, name, &schema, 7);
    body["temperature"] = json!(0);
    body["cache"] = json!(false);
    let whole: Value = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let text = whole["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    assert!(doc["age"].is_u64(), "{doc}");
    body["stream"] = json!(true);
    let sse = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    let mut streamed = String::new();
    for line in sse.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data).expect("chunk");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(t);
        }
    }
    assert_eq!(streamed, text);
}
