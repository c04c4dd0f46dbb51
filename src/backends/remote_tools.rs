//! How a conversation with tools crosses to a remote OpenAI-compatible server and back.
//!
//! * **Out:** messages keep their roles, an assistant's past `tool_calls` and a tool message's
//!   `tool_call_id`; the request's `tools`, `tool_choice` and `parallel_tool_calls` are sent as
//!   the client wrote them.
//! * **Back:** the remote's calls (streamed `delta.tool_calls` or a whole `message.tool_calls`)
//!   are written into the answer's text as Hermes blocks ([`CALL_OPEN`] `{"name": …,
//!   "arguments": …}` [`CALL_CLOSE`]), arguments fragment by fragment as they arrive. The run's
//!   tool-call parser reads them back out exactly as it reads the local model's, so every
//!   transport, the cache and conversations see one kind of call. Hearth gives each call its
//!   own `call_…` id; the client sends that id back, and it is what the remote then sees.

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCallChunk,
    ChatCompletionMessageToolCalls, ChatCompletionNamedToolChoice,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestToolMessage,
    ChatCompletionRequestUserMessage, ChatCompletionTool, ChatCompletionToolChoiceOption,
    ChatCompletionTools, FunctionCall, FunctionCallStream, FunctionName, FunctionObject,
    ToolChoiceOptions,
};
use serde_json::Value;

use crate::engine::template::ChatMessage;
use crate::engine::tools::{ToolChoice, ToolSet, CALL_CLOSE, CALL_OPEN};

/// The conversation as the remote's request messages.
pub(super) fn request_messages(messages: &[ChatMessage]) -> Vec<ChatCompletionRequestMessage> {
    messages.iter().map(request_message).collect()
}

fn request_message(m: &ChatMessage) -> ChatCompletionRequestMessage {
    match m.role.as_str() {
        "system" => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
            content: m.content.clone().into(),
            name: None,
        }),
        "assistant" => {
            let calls: Vec<_> = m
                .tool_calls
                .iter()
                .map(|c| {
                    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                        id: c.id.clone(),
                        function: FunctionCall {
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        },
                    })
                })
                .collect();
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                // OpenAI wants no content (rather than "") beside calls.
                content: (!m.content.is_empty() || calls.is_empty())
                    .then(|| m.content.clone().into()),
                tool_calls: (!calls.is_empty()).then_some(calls),
                ..Default::default()
            })
        }
        "tool" => ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
            content: m.content.clone().into(),
            tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
        }),
        _ => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: m.content.clone().into(),
            name: None,
        }),
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls` of a request offering `set`.
pub(super) type RequestTools = (
    Option<Vec<ChatCompletionTools>>,
    Option<ChatCompletionToolChoiceOption>,
    Option<bool>,
);

/// What the remote request says about tools (nothing when none are offered).
pub(super) fn request_tools(set: Option<&ToolSet>) -> RequestTools {
    let Some(set) = set.filter(|s| !s.defs.is_empty()) else {
        return (None, None, None);
    };
    let tools = set
        .defs
        .iter()
        .map(|d| {
            ChatCompletionTools::Function(ChatCompletionTool {
                function: FunctionObject {
                    name: d.name.clone(),
                    description: d.description.clone(),
                    parameters: Some(d.parameters.clone()),
                    strict: d.strict,
                },
            })
        })
        .collect();
    let choice = match &set.choice {
        ToolChoice::None => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::None),
        ToolChoice::Auto => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Auto),
        ToolChoice::Required => ChatCompletionToolChoiceOption::Mode(ToolChoiceOptions::Required),
        ToolChoice::Named(name) => {
            ChatCompletionToolChoiceOption::Function(ChatCompletionNamedToolChoice {
                function: FunctionName { name: name.clone() },
            })
        }
    };
    // OpenAI refuses `parallel_tool_calls` when no tool may be called.
    let parallel = set.offered().then_some(set.parallel);
    (Some(tools), Some(choice), parallel)
}

/// Writes a remote answer's calls into its text as Hermes blocks, as they stream.
#[derive(Debug, Default)]
pub(super) struct CallText {
    /// The remote's index of the call being written.
    open: Option<u32>,
    /// Whether any of its arguments text came.
    has_args: bool,
    /// Calls begun so far.
    written: usize,
}

impl CallText {
    /// The text for one streamed call chunk.
    pub(super) fn chunk(&mut self, c: &ChatCompletionMessageToolCallChunk) -> String {
        let mut out = String::new();
        let function = c.function.as_ref();
        if self.open != Some(c.index) {
            self.close_into(&mut out);
            let name = function.and_then(|f| f.name.clone()).unwrap_or_default();
            self.open_into(&mut out, name);
            self.open = Some(c.index);
        }
        if let Some(args) = function.and_then(|f| f.arguments.as_deref()) {
            self.has_args |= !args.trim().is_empty();
            out.push_str(args);
        }
        out
    }

    /// The text closing the open call, if any (at the finish).
    pub(super) fn close(&mut self) -> String {
        let mut out = String::new();
        self.close_into(&mut out);
        out
    }

    /// A whole answer's calls as text (each written as one streamed chunk would be).
    pub(super) fn whole(calls: &[ChatCompletionMessageToolCalls]) -> String {
        let mut w = CallText::default();
        let functions = calls.iter().filter_map(|c| match c {
            ChatCompletionMessageToolCalls::Function(f) => Some(&f.function),
            ChatCompletionMessageToolCalls::Custom(_) => None,
        });
        let mut out: String = functions
            .enumerate()
            .map(|(index, f)| {
                w.chunk(&ChatCompletionMessageToolCallChunk {
                    index: index as u32,
                    id: None,
                    r#type: None,
                    function: Some(FunctionCallStream {
                        name: Some(f.name.clone()),
                        arguments: Some(f.arguments.clone()),
                    }),
                })
            })
            .collect();
        out.push_str(&w.close());
        out
    }

    fn open_into(&mut self, out: &mut String, name: String) {
        if self.written > 0 {
            out.push('\n');
        }
        self.written += 1;
        self.has_args = false;
        let name = Value::String(name);
        out.push_str(&format!("{CALL_OPEN}{{\"name\": {name}, \"arguments\": "));
    }

    fn close_into(&mut self, out: &mut String) {
        if self.open.take().is_some() {
            if !self.has_args {
                out.push_str("{}");
            }
            out.push('}');
            out.push_str(CALL_CLOSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tools::{ToolCallParser, ToolDelta};

    fn chunk(index: u32, name: Option<&str>, args: &str) -> ChatCompletionMessageToolCallChunk {
        ChatCompletionMessageToolCallChunk {
            index,
            id: name.map(|_| format!("remote_{index}")),
            r#type: None,
            function: Some(FunctionCallStream {
                name: name.map(str::to_string),
                arguments: Some(args.to_string()),
            }),
        }
    }

    /// What the run's parser makes of `text`: content, and (name, arguments) per call.
    fn parsed(text: &str) -> (String, Vec<(String, String)>) {
        let mut p = ToolCallParser::new(usize::MAX);
        let mut deltas = p.push(text);
        deltas.extend(p.finish());
        let content = deltas
            .iter()
            .filter_map(|d| match d {
                ToolDelta::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        let calls = p
            .calls()
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        (content, calls)
    }

    #[test]
    fn streamed_calls_read_back_as_the_remote_sent_them() {
        let mut w = CallText::default();
        let mut text = String::new();
        for c in [
            chunk(0, Some("get_weather"), ""),
            chunk(0, None, "{\"ci"),
            chunk(0, None, "ty\": \"Pa"),
            chunk(0, None, "ris\"}"),
            chunk(1, Some("get_time"), ""),
        ] {
            text.push_str(&w.chunk(&c));
        }
        text.push_str(&w.close());
        let (content, calls) = parsed(&text);
        assert_eq!(content, "");
        assert_eq!(
            calls,
            vec![
                ("get_weather".into(), "{\"city\": \"Paris\"}".into()),
                ("get_time".into(), "{}".into()),
            ]
        );
    }

    #[test]
    fn whole_calls_read_back_and_a_closer_inside_arguments_stays_arguments() {
        let call = |name: &str, args: &str| {
            ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                id: "x".into(),
                function: FunctionCall {
                    name: name.into(),
                    arguments: args.into(),
                },
            })
        };
        let text = CallText::whole(&[call("a", "{\"q\": \"</tool_call>\"}"), call("b", "")]);
        let (_, calls) = parsed(&text);
        assert_eq!(
            calls,
            vec![
                ("a".into(), "{\"q\": \"</tool_call>\"}".into()),
                ("b".into(), "{}".into()),
            ]
        );
        assert_eq!(CallText::whole(&[]), "");
    }

    #[test]
    fn past_calls_and_results_keep_their_shape() {
        let mut assistant = ChatMessage::new("assistant", "");
        assistant.tool_calls = vec![crate::engine::tools::ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{}".into(),
        }];
        let mut tool = ChatMessage::new("tool", "42");
        tool.tool_call_id = Some("call_1".into());
        let wire = serde_json::to_value(request_messages(&[assistant, tool])).unwrap();
        assert_eq!(wire[0]["role"], "assistant");
        assert!(wire[0].get("content").is_none(), "{wire}");
        assert_eq!(wire[0]["tool_calls"][0]["id"], "call_1");
        assert_eq!(wire[0]["tool_calls"][0]["type"], "function");
        assert_eq!(wire[0]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(
            wire[1],
            serde_json::json!({"role": "tool", "content": "42", "tool_call_id": "call_1"})
        );
    }
}
