//! Unit tests of [`super`]: every call format, fed whole and a character at a time.

use super::*;

/// Content and calls (name, arguments) of `text` fed in pieces of `step` characters; also
/// checks the streamed deltas add up to the same.
fn parse(text: &str, step: usize, max_calls: usize) -> (String, Vec<(String, String)>) {
    let mut p = ToolCallParser::new(max_calls);
    let chars: Vec<char> = text.chars().collect();
    let mut deltas = Vec::new();
    for chunk in chars.chunks(step) {
        deltas.extend(p.push(&chunk.iter().collect::<String>()));
    }
    deltas.extend(p.finish());
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    for d in deltas {
        match d {
            ToolDelta::Text(t) => content.push_str(&t),
            ToolDelta::Start { index, name, id } => {
                assert_eq!(index, calls.len());
                assert!(id.starts_with("call_"), "{id}");
                calls.push((name, String::new()));
            }
            ToolDelta::Args { index, fragment } => calls[index].1.push_str(&fragment),
        }
    }
    assert_eq!(content, p.content());
    let recorded: Vec<(String, String)> = p
        .calls()
        .iter()
        .map(|c| (c.name.clone(), c.arguments.clone()))
        .collect();
    assert_eq!(calls, recorded);
    (content, calls)
}

fn both(text: &str, max_calls: usize) -> (String, Vec<(String, String)>) {
    let whole = parse(text, usize::MAX, max_calls);
    for step in [1, 2, 3, 7] {
        assert_eq!(parse(text, step, max_calls), whole, "step {step}: {text}");
    }
    whole
}

fn call(name: &str, args: &str) -> (String, String) {
    (name.to_string(), args.to_string())
}

#[test]
fn hermes_calls_stream_their_arguments_and_leave_no_content() {
    let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2]}}\n</tool_call>";
    let (content, calls) = both(text, usize::MAX);
    assert_eq!(content, "");
    assert_eq!(
        calls,
        vec![call(
            "get_weather",
            "{\"city\": \"Paris\", \"days\": [1, 2]}"
        )]
    );
}

#[test]
fn arguments_go_out_before_the_call_ends() {
    let mut p = ToolCallParser::new(4);
    let d = p.push("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"xy");
    assert!(
        matches!(&d[0], ToolDelta::Start { name, .. } if name == "f"),
        "{d:?}"
    );
    assert_eq!(
        d[1],
        ToolDelta::Args {
            index: 0,
            fragment: "{\"a\": \"xy".into()
        }
    );
    let d = p.push("z\"}}\n</tool_call>");
    assert_eq!(
        d,
        vec![ToolDelta::Args {
            index: 0,
            fragment: "z\"}".into()
        }]
    );
    assert!(p.finish().is_empty());
}

#[test]
fn several_hermes_calls_and_the_text_before_them() {
    let text = "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": \"}{\\\"\"}}\n</tool_call>";
    let (content, calls) = both(text, usize::MAX);
    assert_eq!(content, "Let me check.");
    assert_eq!(
        calls,
        vec![call("a", "{}"), call("b", "{\"x\": \"}{\\\"\"}")]
    );
    // Without parallel calls only the first is kept.
    let (_, calls) = both(text, 1);
    assert_eq!(calls, vec![call("a", "{}")]);
}

#[test]
fn smollm2_and_mistral_lists_and_llama_json() {
    let smol = "<tool_call>[{\"name\": \"a\", \"arguments\": {\"q\": 1}}, {\"name\": \"b\", \"arguments\": {}}]</tool_call>";
    assert_eq!(
        both(smol, 9).1,
        vec![call("a", "{\"q\": 1}"), call("b", "{}")]
    );
    let mistral = "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"q\": [1]}}]";
    assert_eq!(
        both(mistral, 9),
        (String::new(), vec![call("a", "{\"q\": [1]}")])
    );
    let llama = "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"q\": 2}}; {\"name\": \"b\", \"parameters\": {}}";
    assert_eq!(
        both(llama, 9).1,
        vec![call("a", "{\"q\": 2}"), call("b", "{}")]
    );
    let bare = "  {\"name\": \"a\", \"parameters\": {\"q\": 3}}";
    assert_eq!(
        both(bare, 9),
        (String::new(), vec![call("a", "{\"q\": 3}")])
    );
}

#[test]
fn arguments_before_the_name_or_as_a_string_come_whole() {
    let late = "<tool_call>{\"arguments\": {\"q\": 1}, \"name\": \"a\"}</tool_call>";
    assert_eq!(both(late, 9).1, vec![call("a", "{\"q\":1}")]);
    let string = "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"q\\\": 1}\"}</tool_call>";
    assert_eq!(both(string, 9).1, vec![call("a", "{\"q\": 1}")]);
}

#[test]
fn text_that_only_looks_like_a_call_is_content() {
    for text in [
        "Use <b>bold</b> or [links] freely.",
        "{\"answer\": 42}",
        "<tool_call> not json",
        "a < b and c [d]",
        "ends with <tool_ca",
    ] {
        let (content, calls) = both(text, 9);
        assert!(calls.is_empty(), "{text}");
        assert_eq!(content, text);
    }
    // An unfinished call is content when nothing of it was announced.
    let cut = "<tool_call>\n{\"na";
    assert_eq!(both(cut, 9), (cut.to_string(), vec![]));
}

#[test]
fn the_fallback_prompt_writes_tools_calls_and_results() {
    let tools = ToolSet {
        defs: vec![ToolDef {
            strict: None,
            name: "get_weather".into(),
            description: Some("Weather in a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }],
        choice: ToolChoice::Auto,
        parallel: true,
    };
    let messages = vec![
        ChatMessage::new("user", "Weather in Paris?"),
        ChatMessage {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
            }],
            ..Default::default()
        },
        ChatMessage {
            role: "tool".into(),
            content: "18 C".into(),
            tool_call_id: Some("call_1".into()),
            ..Default::default()
        },
    ];
    let out = fallback_messages(&messages, Some(&tools));
    assert_eq!(out[0].role, "system");
    assert!(
        out[0].content.contains("<tools>\n{\"function\":{"),
        "{}",
        out[0].content
    );
    assert!(out[0].content.contains("\"name\":\"get_weather\""));
    assert_eq!(
        out[2].content,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>"
    );
    assert_eq!(
        out[3],
        ChatMessage::new("user", "<tool_response>\n18 C\n</tool_response>")
    );
    // The written call parses back to itself.
    let (_, calls) = both(&out[2].content, 4);
    assert_eq!(calls, vec![call("get_weather", "{\"city\":\"Paris\"}")]);
    // `tool_choice: none` shows no tools.
    let none = ToolSet {
        choice: ToolChoice::None,
        ..tools
    };
    assert_eq!(
        fallback_messages(&messages[..1], Some(&none)),
        messages[..1].to_vec()
    );
}

#[test]
fn the_forced_call_grammar_accepts_valid_calls_only() {
    use crate::engine::grammar::schema::{compile_framed, Framing};
    let defs = [ToolDef {
        strict: None,
        name: "add".into(),
        description: None,
        parameters: json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": false}),
    }];
    let forced: Vec<&ToolDef> = defs.iter().collect();
    let framing = Framing {
        open: CALL_OPEN.as_bytes(),
        close: CALL_CLOSE.as_bytes(),
        separator: Some(b"\n"),
    };
    let g = std::sync::Arc::new(
        compile_framed(&call_schema(&forced), false, 100_000, Some(&framing))
            .expect("compiles")
            .grammar,
    );
    let accepts = |s: &str| {
        g.start()
            .feed_all(&g, s.as_bytes())
            .is_some_and(|st| st.is_complete())
    };
    let one = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n</tool_call>";
    assert!(accepts(one));
    assert!(accepts(&format!("{one}\n{one}")));
    assert!(!accepts(
        "<tool_call>\n{\"name\": \"sub\", \"arguments\": {\"a\": 1}}\n</tool_call>"
    ));
    assert!(!accepts(
        "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": \"x\"}}\n</tool_call>"
    ));
    assert!(!accepts("{\"name\": \"add\", \"arguments\": {\"a\": 1}}"));
}

#[test]
fn calls_round_trip_through_openai_json_as_conversations_store_them() {
    let calls = vec![
        ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city": "Paris"}"#.into(),
        },
        ToolCall {
            id: "call_2".into(),
            name: "now".into(),
            arguments: String::new(),
        },
    ];
    let stored = Value::Array(calls.iter().map(ToolCall::to_openai_json).collect());
    assert_eq!(stored[0]["type"], "function");
    assert_eq!(stored[0]["function"]["arguments"], r#"{"city": "Paris"}"#);
    assert_eq!(ToolCall::list_from_openai_json(&stored), calls);
    // What is not a call is skipped, never a panic.
    let odd = serde_json::json!([{"id": "x"}, 3, {"id": "y", "function": {"name": "f"}}]);
    let read = ToolCall::list_from_openai_json(&odd);
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].id.as_str(), read[0].arguments.as_str()), ("y", ""));
    assert!(ToolCall::list_from_openai_json(&Value::Null).is_empty());
}
