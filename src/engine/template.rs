//! Chat templates: turning a list of chat messages into the model's prompt text.
//!
//! This module owns the Jinja chat template of a model, taken from the GGUF
//! `tokenizer.chat_template` key or a Hugging Face checkpoint's `chat_template.jinja` /
//! `tokenizer_config.json` `chat_template`, and renders it with minijinja configured the way
//! Hugging Face transformers configures Jinja2 for `apply_chat_template`:
//!
//! * `trim_blocks` and `lstrip_blocks` on, `keep_trailing_newline` off;
//! * variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token` (only when known),
//!   `tools` and `documents` (both `none`);
//! * `raise_exception(msg)` (→ [`TemplateError::Raised`] carrying `msg`), `strftime_now(fmt)`
//!   (local time, chrono), a Python-compatible `tojson` (`json.dumps` spacing, no ASCII
//!   escaping, `indent` / `sort_keys` / `separators` / `ensure_ascii` keywords);
//! * Python string/dict/list methods (`.strip()`, `.split()`, `.startswith()`, `.items()`, ...)
//!   through minijinja-contrib's `pycompat`.
//!
//! Models without a template get [`ChatTemplate::chatml_default`].
//!
//! Known gap: `{% break %}` / `{% continue %}` (Jinja2's loopcontrols extension) need
//! minijinja's `loop_controls` feature, which is not enabled; templates using them fail to
//! compile with a clear syntax error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};

use super::tools::{ToolCall, ToolSet};

/// Why a chat template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template source does not parse.
    #[error("chat template syntax error: {0}")]
    Syntax(String),
    /// Rendering failed (unknown filter, bad operation, ...).
    #[error("chat template render error: {0}")]
    Render(String),
    /// The template called `raise_exception(message)`.
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    /// The template metadata has the wrong shape (e.g. a non-string GGUF value).
    #[error("invalid chat template in {origin}: {reason}")]
    Invalid {
        /// Where the template came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A template file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `tokenizer_config.json` is not valid JSON.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// One chat message as the template sees it (`message.role`, `message.content`, and for tool
/// calling `message.tool_calls` and `message.tool_call_id`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The message text.
    pub content: String,
    /// The calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }
}

/// The ChatML template used when a model ships none:
/// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n` when
/// a generation prompt is requested.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template. `Send + Sync`; render concurrently from many threads.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    is_default: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("is_default", &self.is_default)
            .finish()
    }
}

/// Marker attached to errors produced by `raise_exception`, so they map to
/// [`TemplateError::Raised`] with the template's own message.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

/// `strftime_now(format)`: the local time formatted with a C `strftime` format.
fn strftime_now(format: String) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format string {format:?}"),
        ));
    }
    Ok(chrono::Local::now()
        .format_with_items(items.into_iter())
        .to_string())
}

/// Options of the Python-compatible `tojson`.
struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`, i.e. `", "` / `": "` spacing and no HTML
/// escaping (minijinja's built-in `tojson` escapes `<`, `>`, `&`, `'` and is compact).
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.kind() {
            ValueKind::Number => Some(" ".repeat(usize::try_from(v.clone()).unwrap_or(0))),
            ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ))
            }
        },
    };
    let separators: Option<Value> = kwargs.get("separators")?;
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    )
                })?;
            (parts[0].clone(), parts[1].clone())
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys,
        ensure_ascii,
    };
    let mut out = String::new();
    write_json(value, &style, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_newline(style: &JsonStyle, level: usize, out: &mut String) {
    if let Some(ind) = &style.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn write_json(v: &Value, style: &JsonStyle, level: usize, out: &mut String) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i128::try_from(v.clone()) {
                let _ = write!(out, "{i}");
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else if f.fract() == 0.0 && f.abs() < 1e16 {
                    let _ = write!(out, "{f:.1}");
                } else {
                    let _ = write!(out, "{f}");
                }
            }
        }
        ValueKind::String => {
            write_json_str(v.as_str().unwrap_or_default(), style.ensure_ascii, out)
        }
        ValueKind::Bytes => {
            write_json_str(&v.to_string(), style.ensure_ascii, out);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                write_newline(style, level + 1, out);
                write_json(item, style, level + 1, out)?;
            }
            write_newline(style, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in v.try_iter()? {
                let val = v.get_item(&key)?;
                let key = match key.as_str() {
                    Some(s) => s.to_owned(),
                    None => key.to_string(),
                };
                entries.push((key, val));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (key, val)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                write_newline(style, level + 1, out);
                write_json_str(key, style.ensure_ascii, out);
                out.push_str(&style.key_sep);
                write_json(val, style, level + 1, out)?;
            }
            write_newline(style, level, out);
            out.push('}');
        }
        _ => write_json_str(&v.to_string(), style.ensure_ascii, out),
    }
    Ok(())
}

/// A message exposed to the template as a map with keys in the order `role`, `content`
/// (minijinja's own maps are sorted, which would reorder `tojson(message)`).
#[derive(Debug)]
struct MessageObject(ChatMessage);

impl Object for MessageObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "role" => Some(Value::from(self.0.role.as_str())),
            "content" => Some(Value::from(self.0.content.as_str())),
            "tool_calls" if !self.0.tool_calls.is_empty() => Some(Value::from_serialize(
                self.0
                    .tool_calls
                    .iter()
                    .map(ToolCall::to_template_json)
                    .collect::<Vec<_>>(),
            )),
            "tool_call_id" => self.0.tool_call_id.as_deref().map(Value::from),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match (self.0.tool_calls.is_empty(), self.0.tool_call_id.is_none()) {
            (true, true) => Enumerator::Str(&["role", "content"]),
            (false, _) => Enumerator::Str(&["role", "content", "tool_calls"]),
            (true, false) => Enumerator::Str(&["role", "content", "tool_call_id"]),
        }
    }
}

/// An environment configured like transformers' chat-template Jinja environment.
fn base_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    minijinja_contrib::add_to_environment(&mut env);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env
}

fn describe(e: &Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    msg
}

fn raised_message(e: &Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<RaisedException>() {
            return Some(r.0.clone());
        }
        source = s.source();
    }
    None
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token` / `eos_token` are exposed to the template as
    /// `bos_token` / `eos_token` (left undefined when `None`). A syntax error is returned as
    /// [`TemplateError::Syntax`].
    pub fn new(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, TemplateError> {
        let mut env = base_env();
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        Ok(Self {
            env,
            source: source.to_owned(),
            bos_token,
            eos_token,
            is_default: false,
        })
    }

    /// The fallback for models that ship no template: ChatML ([`CHATML_TEMPLATE`]),
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per message followed, with
    /// `add_generation_prompt`, by `<|im_start|>assistant\n`. [`ChatTemplate::is_default`] is
    /// true for it.
    pub fn chatml_default(bos_token: Option<String>, eos_token: Option<String>) -> Self {
        let mut env = base_env();
        // CHATML_TEMPLATE is a constant covered by unit tests; were it ever not to compile,
        // `render` would report the missing template instead of this constructor panicking.
        if let Err(e) = env.add_template_owned(TEMPLATE_NAME, CHATML_TEMPLATE.to_owned()) {
            tracing::error!("built-in ChatML template does not compile: {e}");
        }
        Self {
            env,
            source: CHATML_TEMPLATE.to_owned(),
            bos_token,
            eos_token,
            is_default: true,
        }
    }

    /// The template from GGUF metadata `tokenizer.chat_template`; the ChatML default when the
    /// key is absent. A non-string value is [`TemplateError::Invalid`].
    pub fn from_gguf(
        content: &gguf_file::Content,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Result<Self, TemplateError> {
        match content.metadata.get("tokenizer.chat_template") {
            None => {
                tracing::info!("GGUF has no tokenizer.chat_template; using the ChatML default");
                Ok(Self::chatml_default(bos, eos))
            }
            Some(gguf_file::Value::String(s)) => Self::new(s, bos, eos),
            Some(_) => Err(TemplateError::Invalid {
                origin: "GGUF tokenizer.chat_template".into(),
                reason: "expected a string".into(),
            }),
        }
    }

    /// The template of a Hugging Face checkpoint directory: `chat_template.jinja` if present
    /// (newer transformers save it there), else `tokenizer_config.json`'s `chat_template`
    /// (a string, or a list of `{name, template}` from which `default` is taken); the ChatML
    /// default when neither has one.
    pub fn from_hf_dir(
        dir: &Path,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Result<Self, TemplateError> {
        let jinja = dir.join("chat_template.jinja");
        match std::fs::read_to_string(&jinja) {
            Ok(source) => return Self::new(&source, bos, eos),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TemplateError::Io {
                    path: jinja,
                    source,
                })
            }
        }
        let config_path = dir.join("tokenizer_config.json");
        let text = match std::fs::read_to_string(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::chatml_default(bos, eos))
            }
            Err(source) => {
                return Err(TemplateError::Io {
                    path: config_path,
                    source,
                })
            }
        };
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| TemplateError::Json {
                path: config_path.clone(),
                source,
            })?;
        let invalid = |reason: &str| TemplateError::Invalid {
            origin: config_path.display().to_string(),
            reason: reason.to_owned(),
        };
        match config.get("chat_template") {
            None | Some(serde_json::Value::Null) => Ok(Self::chatml_default(bos, eos)),
            Some(serde_json::Value::String(s)) => Self::new(s, bos, eos),
            Some(serde_json::Value::Array(list)) => {
                let named = |name: &str| {
                    list.iter().find_map(|entry| {
                        (entry.get("name")?.as_str()? == name)
                            .then(|| entry.get("template")?.as_str())
                            .flatten()
                    })
                };
                let source = named("default")
                    .ok_or_else(|| invalid("chat_template list has no \"default\" entry"))?;
                Self::new(source, bos, eos)
            }
            Some(_) => Err(invalid(
                "chat_template must be a string or a list of {name, template}",
            )),
        }
    }

    /// Renders the conversation. `add_generation_prompt` asks the template to end with the
    /// assistant-turn opener. Errors are [`TemplateError::Raised`] (the template's own
    /// `raise_exception` message) or [`TemplateError::Render`].
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_tools(messages, add_generation_prompt, None)
    }

    /// Whether the template renders `tools` itself (its source names the variable); if not,
    /// [`render_with_tools`](Self::render_with_tools) writes them with the default tool prompt.
    pub fn takes_tools(&self) -> bool {
        self.source.contains("tools")
    }

    /// The messages as this template should see them with `tools`: unchanged for a template
    /// that [takes tools](Self::takes_tools), else with the tools, past calls and tool results
    /// written into them ([`fallback_messages`](super::tools::fallback_messages)).
    pub fn prepare_messages(
        &self,
        messages: &[ChatMessage],
        tools: Option<&ToolSet>,
    ) -> Vec<ChatMessage> {
        if self.takes_tools() {
            messages.to_vec()
        } else {
            super::tools::fallback_messages(messages, tools)
        }
    }

    /// [`render`](Self::render) of [prepared](Self::prepare_messages) messages, with `tools`
    /// passed to a template that takes them.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&ToolSet>,
    ) -> Result<String, TemplateError> {
        let native = self.takes_tools();
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| Value::from_object(MessageObject(m.clone())))
            .collect();
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        ctx.insert("messages", Value::from(messages));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        let tools = tools
            .filter(|t| native && t.offered())
            .map(|t| Value::from_serialize(t.defs.iter().map(|d| d.to_json()).collect::<Vec<_>>()));
        ctx.insert("tools", tools.unwrap_or(Value::from(())));
        ctx.insert("documents", Value::from(()));
        if let Some(b) = &self.bos_token {
            ctx.insert("bos_token", Value::from(b.as_str()));
        }
        if let Some(e) = &self.eos_token {
            ctx.insert("eos_token", Value::from(e.as_str()));
        }
        tmpl.render(ctx).map_err(|e| match raised_message(&e) {
            Some(msg) => TemplateError::Raised(msg),
            None => TemplateError::Render(describe(&e)),
        })
    }

    /// The prompt text for `messages`. With `add_generation_prompt`, a final assistant message
    /// without calls is a **prefill**, continued rather than closed (as llama-server does): the
    /// turns before it are rendered with the assistant-turn opener and its content follows it,
    /// so the model's answer carries on from that text.
    pub fn render_prompt(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&ToolSet>,
    ) -> Result<String, TemplateError> {
        match messages.split_last() {
            Some((last, head))
                if add_generation_prompt
                    && last.role == "assistant"
                    && last.tool_calls.is_empty()
                    && !head.is_empty() =>
            {
                Ok(self.render_with_tools(head, true, tools)? + &last.content)
            }
            _ => self.render_with_tools(messages, add_generation_prompt, tools),
        }
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True for the built-in ChatML fallback.
    pub fn is_default(&self) -> bool {
        self.is_default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, messages: &[ChatMessage]) -> Result<String, TemplateError> {
        ChatTemplate::new(src, Some("<s>".into()), Some("</s>".into()))?.render(messages, true)
    }

    fn user(text: &str) -> ChatMessage {
        ChatMessage::new("user", text)
    }

    #[test]
    fn chat_template_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ChatTemplate>();
    }

    #[test]
    fn a_final_assistant_message_is_continued_unless_no_generation_prompt_is_asked() {
        let t = ChatTemplate::chatml_default(None, None);
        let chat = [user("Hi"), ChatMessage::new("assistant", "Hello, I")];
        let prefill = t.render_prompt(&chat, true, None).unwrap();
        assert_eq!(
            prefill,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello, I"
        );
        let closed = t.render_prompt(&chat, false, None).unwrap();
        assert_eq!(closed, t.render(&chat, false).unwrap());
        assert!(closed.ends_with("Hello, I<|im_end|>\n"), "{closed}");
        // A call is a finished turn, and a lone assistant message has nothing to continue from.
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{}".into(),
        }];
        let chat = [user("Hi"), call];
        assert_eq!(
            t.render_prompt(&chat, true, None).unwrap(),
            t.render(&chat, true).unwrap()
        );
        let alone = [ChatMessage::new("assistant", "Hello")];
        assert_eq!(
            t.render_prompt(&alone, true, None).unwrap(),
            t.render(&alone, true).unwrap()
        );
    }

    #[test]
    fn chatml_default_renders_messages_and_generation_prompt() {
        let t = ChatTemplate::chatml_default(None, None);
        assert!(t.is_default());
        let out = t
            .render(&[ChatMessage::new("system", "S"), user("Hi")], true)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let no_prompt = t.render(&[user("Hi")], false).unwrap();
        assert_eq!(no_prompt, "<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn raise_exception_becomes_raised_error_with_the_message() {
        let err = render(
            "{{ raise_exception('Roles must alternate') }}",
            &[user("x")],
        )
        .unwrap_err();
        match err {
            TemplateError::Raised(msg) => assert_eq!(msg, "Roles must alternate"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn syntax_error_is_reported_not_panicked() {
        let err = ChatTemplate::new("{% for m in messages %}", None, None).unwrap_err();
        assert!(matches!(err, TemplateError::Syntax(_)));
        assert!(err.to_string().contains("syntax error"), "{err}");
    }

    #[test]
    fn python_string_methods_work() {
        let out = render(
            "{{ messages[0].content.strip() }}|{{ messages[0].content.upper().strip() }}|\
             {{ messages[0].content.split()|join(',') }}|{{ messages[0].content.strip().startswith('he') }}|\
             {{ messages[0].content.replace('l', 'L') }}|{{ 'a b'.title() }}|{{ ' x '.lstrip() }}.|{{ 'abc'.endswith('c') }}",
            &[user("  hello world ")],
        )
        .unwrap();
        assert_eq!(
            out,
            "hello world|HELLO WORLD|hello,world|True|  heLLo worLd |A B|x .|True"
        );
    }

    #[test]
    fn dict_methods_work_on_messages() {
        let out = render(
            "{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}{{ messages[0].get('role') }}",
            &[user("hi")],
        )
        .unwrap();
        assert_eq!(out, "role=user;content=hi;user");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let out = render("{{ messages[0]|tojson }}", &[user("<b>\"é\"\n")]).unwrap();
        assert_eq!(out, r#"{"role": "user", "content": "<b>\"é\"\n"}"#);
        let out = render("{{ {'a': [1, 2.5, true, none]}|tojson(indent=2) }}", &[]).unwrap();
        assert_eq!(
            out,
            "{\n  \"a\": [\n    1,\n    2.5,\n    true,\n    null\n  ]\n}"
        );
        let out = render("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}", &[]).unwrap();
        assert_eq!(out, r#"{"a": 2, "b": 1}"#);
        let out = render("{{ 'é'|tojson(ensure_ascii=true) }}", &[]).unwrap();
        assert_eq!(out, r#""\u00e9""#);
    }

    #[test]
    fn strftime_now_formats_the_current_date() {
        let out = render("{{ strftime_now('%d %b %Y') }}", &[]).unwrap();
        let expected = chrono::Local::now().format("%d %b %Y").to_string();
        assert_eq!(out, expected);
        let bad = render("{{ strftime_now('%Q') }}", &[]).unwrap_err();
        assert!(matches!(bad, TemplateError::Render(_)), "{bad:?}");
    }

    #[test]
    fn reverse_slicing_loop_flags_and_namespace_work() {
        let msgs = [user("a"), ChatMessage::new("assistant", "b"), user("c")];
        let out = render(
            "{% set ns = namespace(last='') %}{% for m in messages[::-1] %}{% if loop.first %}[{% endif %}\
             {{ m.content }}{% if loop.last %}]{% endif %}{% set ns.last = m.role %}{% endfor %}{{ ns.last }}",
            &msgs,
        )
        .unwrap();
        assert_eq!(out, "[cba]user");
    }

    #[test]
    fn bos_eos_generation_prompt_and_tools_variables_are_set() {
        let out = render(
            "{{ bos_token }}{% if add_generation_prompt %}G{% endif %}{% if tools is none %}N{% endif %}{{ eos_token }}",
            &[],
        )
        .unwrap();
        assert_eq!(out, "<s>GN</s>");
        let t = ChatTemplate::new("[{{ bos_token }}]", None, None).unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "[]");
    }

    #[test]
    fn trim_and_lstrip_blocks_behave_like_transformers() {
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        let out = render(src, &[user("x"), user("y")]).unwrap();
        assert_eq!(out, "x\ny\n");
    }

    #[test]
    fn unknown_filter_is_a_render_error_with_a_message() {
        let err = render("{{ messages|no_such_filter }}", &[]).unwrap_err();
        assert!(
            matches!(&err, TemplateError::Render(m) | TemplateError::Syntax(m) if m.contains("no_such_filter")),
            "{err:?}"
        );
    }
}
