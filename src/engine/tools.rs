//! Tool calling as the model sees it: the tool definitions a request offers, how they and past
//! calls reach the prompt, and the calls the model writes parsed back out of its text.
//!
//! * **Into the prompt.** A chat template that takes `tools` (its source names the variable)
//!   gets them as Hugging Face passes them — `{"type": "function", "function": {...}}` — with
//!   `message.tool_calls` and `message.tool_call_id` on the messages. Any other template gets
//!   [`tool_prompt`] (Hermes' format, which Qwen 2.5 and SmolLM2 were trained on) added to the
//!   system message, past calls written as `<tool_call>` blocks in the assistant's text and tool
//!   results as `<tool_response>` blocks in a user turn ([`fallback_messages`]).
//! * **Out of the text.** [`ToolCallParser`] (in `tool_parser`) reads the calls back out of
//!   the answer as it streams, in the formats Hermes/Qwen, SmolLM2, Mistral and Llama 3.x use.
//! * **Forcing a call.** With `tool_choice` `required` or a named function, the answer is
//!   constrained to [`CALL_OPEN`] JSON [`CALL_CLOSE`] blocks whose JSON is [`call_schema`], so
//!   even a small model's calls parse and their arguments match the function's schema.
//!
//! Pure logic: no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::template::ChatMessage;

/// What opens a constrained (and a Hermes-format) call.
pub const CALL_OPEN: &str = "<tool_call>\n";
/// What closes it.
pub const CALL_CLOSE: &str = "\n</tool_call>";

/// One function a request offers.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    /// `function.name`.
    pub name: String,
    /// `function.description`.
    pub description: Option<String>,
    /// `function.parameters`: a JSON Schema of the arguments object.
    pub parameters: Value,
    /// `function.strict`, relayed to remote backends (the local model's forced calls are
    /// always constrained).
    pub strict: Option<bool>,
}

impl ToolDef {
    /// The definition as OpenAI and chat templates spell it.
    pub fn to_json(&self) -> Value {
        let mut function = json!({"name": self.name, "parameters": self.parameters});
        if let Some(d) = &self.description {
            function["description"] = json!(d);
        }
        json!({"type": "function", "function": function})
    }
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// Never call (the tools are not shown).
    None,
    /// The model decides.
    Auto,
    /// At least one call, of any of the tools.
    Required,
    /// A call of this function.
    Named(String),
}

/// The tools of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSet {
    /// The functions offered.
    pub defs: Vec<ToolDef>,
    /// `tool_choice`.
    pub choice: ToolChoice,
    /// `parallel_tool_calls`: more than one call per answer.
    pub parallel: bool,
}

impl ToolSet {
    /// Whether the model is shown the tools (not with `tool_choice: none`).
    pub fn offered(&self) -> bool {
        !self.defs.is_empty() && self.choice != ToolChoice::None
    }

    /// The most calls an answer may make.
    pub fn max_calls(&self) -> usize {
        if self.parallel {
            usize::MAX
        } else {
            1
        }
    }

    /// The functions a forced call may name (empty: the answer is not constrained).
    pub fn forced(&self) -> Vec<&ToolDef> {
        match &self.choice {
            ToolChoice::Required => self.defs.iter().collect(),
            ToolChoice::Named(n) => self.defs.iter().filter(|d| &d.name == n).collect(),
            ToolChoice::None | ToolChoice::Auto => Vec::new(),
        }
    }
}

/// A call the model made (or a past one, in a message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// `call_…`.
    pub id: String,
    /// The function.
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// The call as a chat template sees it (arguments as an object when they parse).
    pub fn to_template_json(&self) -> Value {
        let arguments = serde_json::from_str::<Value>(&self.arguments)
            .unwrap_or_else(|_| Value::String(self.arguments.clone()));
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": arguments},
        })
    }

    /// The call as OpenAI writes it in `message.tool_calls` (arguments as JSON text): how
    /// conversations store it.
    pub fn to_openai_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }

    /// The calls of a stored `message.tool_calls` array (entries that are not calls skipped).
    pub fn list_from_openai_json(calls: &Value) -> Vec<ToolCall> {
        let text = |c: &Value, at: &str| c.pointer(at).and_then(Value::as_str).map(str::to_string);
        calls
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some(ToolCall {
                    id: text(c, "/id")?,
                    name: text(c, "/function/name")?,
                    arguments: text(c, "/function/arguments").unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The call in Hermes' format, as the default tool prompt asks for it.
    fn to_hermes(&self) -> String {
        let arguments = serde_json::from_str::<Value>(&self.arguments)
            .unwrap_or_else(|_| Value::String(self.arguments.clone()));
        // Name first, as the prompt shows it and the parser streams it.
        let name = Value::String(self.name.clone());
        format!("{CALL_OPEN}{{\"name\": {name}, \"arguments\": {arguments}}}{CALL_CLOSE}")
    }
}

/// A new call id.
pub fn new_call_id() -> String {
    format!("call_{:024x}", rand::random::<u128>() >> 32)
}

/// The default tool prompt, for templates that take no `tools`: Hermes' (NousResearch's
/// function-calling format), as Qwen 2.5's template writes it.
pub fn tool_prompt(defs: &[ToolDef]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for d in defs {
        s.push('\n');
        s.push_str(&d.to_json().to_string());
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// The messages a template without `tools` renders: the tool prompt appended to the system
/// message (one is added first when there is none), past calls as `<tool_call>` blocks after
/// the assistant's text, and tool results as `<tool_response>` blocks in user turns.
pub fn fallback_messages(messages: &[ChatMessage], tools: Option<&ToolSet>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    for m in messages {
        let mut m = m.clone();
        if !m.tool_calls.is_empty() {
            let calls: Vec<String> = m.tool_calls.iter().map(ToolCall::to_hermes).collect();
            let mut content = std::mem::take(&mut m.content);
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&calls.join("\n"));
            m = ChatMessage::new("assistant", content);
        } else if m.role == "tool" {
            m = ChatMessage::new(
                "user",
                format!("<tool_response>\n{}\n</tool_response>", m.content),
            );
        }
        out.push(m);
    }
    if let Some(t) = tools.filter(|t| t.offered()) {
        let prompt = tool_prompt(&t.defs);
        match out.first_mut().filter(|m| m.role == "system") {
            Some(system) => {
                system.content = format!("{}\n\n{prompt}", system.content);
            }
            None => out.insert(0, ChatMessage::new("system", prompt)),
        }
    }
    out
}

/// The JSON Schema of one forced call's body, `{"name": …, "arguments": {…}}` (name first, so
/// it can be announced before the arguments stream).
pub fn call_schema(defs: &[&ToolDef]) -> Value {
    let one = |d: &ToolDef| {
        json!({
            "type": "object",
            "properties": {
                "name": {"const": d.name},
                "arguments": d.parameters,
            },
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    match defs {
        [d] => one(d),
        _ => json!({"anyOf": defs.iter().map(|d| one(d)).collect::<Vec<_>>()}),
    }
}

pub use super::tool_parser::{ToolCallParser, ToolDelta};

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
