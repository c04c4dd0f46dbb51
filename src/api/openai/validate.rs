//! Validating OpenAI requests into what a backend runs: the model (defaulting to the loaded
//! one), limits, sampling, stop strings, `n`, response format, log-probabilities and messages.
//! Every refusal is a 400 naming the parameter. Shared by the HTTP routes and `/ws`.

use std::sync::Arc;

use serde_json::Value;

use super::{ChatRequest, CommonParams, Content, RequestMessage, StopSpec};
use crate::api::error::{clip, ApiError};
use crate::api::AppState;
use crate::backends::{Params, Prompt};
use crate::chat::Ask;
use crate::engine::generate::OutputFormat;
use crate::engine::grammar::mask::JsonSchemaFormat;
use crate::engine::sampler::SamplingParams;
use crate::engine::template::ChatMessage;
use crate::engine::tools::{ToolCall, ToolChoice, ToolDef, ToolSet};

/// What a validated request asks for beyond the prompt.
pub(crate) struct Plan {
    /// The model to ask: the one named, or the server's own when the request names none.
    pub(crate) model: String,
    pub(crate) params: Params,
    pub(crate) n: usize,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    /// Usage so far on every chunk (`stream_options.continuous_usage_stats`).
    pub(crate) continuous_usage: bool,
    pub(crate) logprobs: bool,
    /// Whether the response cache may answer (`"cache": false` says no).
    pub(crate) cache: bool,
}

impl Plan {
    /// The generation service's request for these prompts.
    pub(crate) fn ask(&self, prompts: Vec<Prompt>) -> Ask {
        Ask {
            model: self.model.clone(),
            prompts,
            n: self.n,
            params: self.params.clone(),
            logprobs: self.logprobs,
            stream: self.stream,
            cache: self.cache,
        }
    }
}

/// The model a request asks for. OpenAI requires `model`; local servers (llama.cpp's,
/// Ollama's) do not, so a missing or empty one means the loaded model.
pub(crate) fn requested_model(
    state: &AppState,
    model: &Option<String>,
) -> Result<String, ApiError> {
    match model.as_deref() {
        None | Some("") => Ok(state.model_id.clone()),
        Some(m) if state.router.serves(m) => Ok(m.to_string()),
        Some(m) => Err(ApiError::ModelNotFound(clip(m, 256))),
    }
}

/// `system_fingerprint`: names this build of Hearth and what answers as `model` (for the
/// local model, its weights too), so it changes exactly when the same request could start
/// answering differently.
pub(crate) fn system_fingerprint(state: &AppState, model: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update([0]);
    h.update(model);
    if model == state.model_id {
        let info = state.engine.info();
        h.update([0]);
        h.update(format!(
            "{}|{}|{:?}|{}|{}",
            info.format,
            info.file_bytes,
            info.tensor_types,
            info.parameters,
            state.config.model.exact
        ));
    }
    let digest = h.finalize();
    let hex: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("fp_{hex}")
}

/// Validate sampling fields alone (no logprobs): for conversations, whose parameters are a
/// subset of the chat API's and are checked the same way.
pub(crate) fn plan_params(state: &AppState, p: &CommonParams) -> Result<Plan, ApiError> {
    plan(state, p, 0, false)
}

pub(crate) fn plan(
    state: &AppState,
    p: &CommonParams,
    top_logprobs: usize,
    logprobs: bool,
) -> Result<Plan, ApiError> {
    let model = requested_model(state, &p.model)?;
    if p.stream_options.is_some() && p.stream != Some(true) {
        return Err(ApiError::invalid(
            "stream_options",
            "`stream_options` is only allowed when `stream` is enabled",
        ));
    }
    let gen = &state.config.generation;
    let limit = gen.max_tokens_limit;
    let max_tokens = match p.max_completion_tokens.or(p.max_tokens) {
        None => gen.default_max_tokens,
        Some(m) if m >= 1 && (m as usize) <= limit => m as usize,
        Some(m) => {
            let param = if p.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(ApiError::invalid(
                param,
                format!("must be between 1 and {limit}, got {m}"),
            ));
        }
    };
    let max_n = gen.max_n;
    let n = match p.n {
        None => 1,
        Some(n) if n >= 1 && n as u64 <= max_n as u64 => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("must be between 1 and {max_n} (generation.max_n), got {n}"),
            ))
        }
    };
    let temperature = p.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("must be between 0 and 2, got {temperature}"),
        ));
    }
    let stop = match &p.stop {
        None => Vec::new(),
        Some(StopSpec::One(s)) => vec![s.clone()],
        Some(StopSpec::Many(v)) if v.len() <= 4 => v.clone(),
        Some(StopSpec::Many(_)) => {
            return Err(ApiError::invalid("stop", "at most 4 stop sequences"))
        }
    };
    let mut logit_bias = Vec::new();
    for (k, v) in p.logit_bias.iter().flatten() {
        let id: u32 = k
            .parse()
            .map_err(|_| ApiError::invalid("logit_bias", format!("`{k}` is not a token id")))?;
        logit_bias.push((id, *v));
    }
    let top_k = match p.top_k {
        None => 0,
        Some(k) if k >= 0 => k as usize,
        Some(k) => return Err(ApiError::invalid("top_k", format!("must be >= 0, got {k}"))),
    };
    let sampling = SamplingParams {
        temperature,
        top_k,
        top_p: p.top_p.unwrap_or(1.0),
        min_p: p.min_p.unwrap_or(0.0),
        repetition_penalty: p.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: p.frequency_penalty.unwrap_or(0.0),
        presence_penalty: p.presence_penalty.unwrap_or(0.0),
        logit_bias,
        seed: p.seed.map(|s| s as u64),
        ..SamplingParams::default()
    };
    // Ranges only: token ids in `logit_bias` are checked by the backend whose vocabulary they use.
    sampling.validate(usize::MAX).map_err(|e| match e {
        crate::engine::sampler::SamplingError::InvalidParam { param, message } => {
            ApiError::invalid(param, message)
        }
    })?;
    Ok(Plan {
        model,
        params: Params {
            sampling,
            max_tokens,
            stop,
            top_logprobs,
            format: OutputFormat::Text,
            tools: None,
            no_generation_prompt: false,
        },
        n,
        stream: p.stream.unwrap_or(false),
        include_usage: p
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        continuous_usage: p
            .stream_options
            .as_ref()
            .and_then(|o| o.continuous_usage_stats)
            .unwrap_or(false),
        logprobs,
        cache: p.cache.unwrap_or(true),
    })
}

/// Convert client messages into template messages, validating roles and content parts.
pub fn chat_messages(messages: Vec<RequestMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "user" | "assistant" | "tool" => m.role,
                "developer" => "system".to_string(),
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        format!("unsupported role `{other}`"),
                    ))
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    format!("messages[{i}].content[{j}]"),
                                    format!("unsupported content part `{kind}` (only text parts)"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            let tool_calls = m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|c| ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                })
                .collect::<Vec<_>>();
            if !tool_calls.is_empty() && role != "assistant" {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_calls"),
                    "only assistant messages carry `tool_calls`",
                ));
            }
            if role == "tool" && m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_call_id"),
                    "a `tool` message needs the `tool_call_id` it answers",
                ));
            }
            Ok(ChatMessage {
                role,
                content,
                tool_calls,
                tool_call_id: m.tool_call_id,
            })
        })
        .collect()
}

/// `response_format`: `text` (default), `json_object` or `json_schema`. Like OpenAI,
/// `json_object` needs the word "json" somewhere in the messages, so the model is told what to
/// produce. A schema is compiled (once: [`SchemaCache`](crate::engine::grammar::mask::SchemaCache));
/// what it cannot enforce is a 400 naming the keyword when `strict`, else a warning.
pub(crate) fn response_format(
    state: &AppState,
    format: Option<&Value>,
    messages: &[RequestMessage],
) -> Result<OutputFormat, ApiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok(OutputFormat::Text);
    };
    let kind = format.get("type").ok_or_else(|| {
        ApiError::invalid("response_format", "`response_format.type` is required")
    })?;
    match kind.as_str() {
        Some("text") => Ok(OutputFormat::Text),
        Some("json_object") => {
            let mentions_json = messages.iter().any(|m| match &m.content {
                Some(Content::Text(t)) => t.to_lowercase().contains("json"),
                Some(Content::Parts(parts)) => parts.iter().any(|p| {
                    p.text
                        .as_deref()
                        .is_some_and(|t| t.to_lowercase().contains("json"))
                }),
                None => false,
            });
            if !mentions_json {
                return Err(ApiError::invalid(
                    "messages",
                    "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                ));
            }
            Ok(OutputFormat::JsonObject)
        }
        Some("json_schema") => json_schema(state, format.get("json_schema")),
        Some(other) => Err(ApiError::invalid(
            "response_format",
            format!(
                "response_format type `{other}` is not supported (use `text`, `json_object` or `json_schema`)"
            ),
        )),
        None => Err(ApiError::invalid(
            "response_format",
            "`response_format.type` must be a string",
        )),
    }
}

/// `response_format.json_schema`: `{"name", "schema", "strict", "description"}`.
fn json_schema(state: &AppState, spec: Option<&Value>) -> Result<OutputFormat, ApiError> {
    const PARAM: &str = "response_format.json_schema";
    let Some(spec) = spec.and_then(Value::as_object) else {
        return Err(ApiError::invalid(
            PARAM,
            "`response_format.json_schema` must be an object with `name` and `schema`",
        ));
    };
    let name = match spec.get("name") {
        None | Some(Value::Null) => "response",
        Some(Value::String(n))
            if !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            n.as_str()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{PARAM}.name"),
                "must be 1 to 64 characters of a-z, A-Z, 0-9, `_` and `-`",
            ))
        }
    };
    let strict = match spec.get("strict") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{PARAM}.strict"),
                "must be a boolean",
            ))
        }
    };
    // No schema: any JSON value, as llama.cpp's server takes it.
    let schema = spec.get("schema").cloned().unwrap_or(Value::Bool(true));
    let compiled = state
        .schemas
        .get(name, &schema, strict)
        .map_err(|e| ApiError::invalid(format!("{PARAM}.schema"), e.to_string()))?;
    Ok(OutputFormat::JsonSchema(compiled))
}

/// Validate a chat request's parameters (everything but turning `messages` into a prompt):
/// `response_format`, `tool_choice`, `logprobs`/`top_logprobs` and the shared sampling fields.
/// Shared by `/v1/chat/completions` and the WebSocket endpoint.
pub(crate) fn chat_plan(state: &AppState, req: &ChatRequest) -> Result<Plan, ApiError> {
    let format = response_format(state, req.response_format.as_ref(), &req.messages)?;
    if let Some(effort) = &req.reasoning_effort {
        if !["none", "minimal", "low", "medium", "high"].contains(&effort.as_str()) {
            return Err(ApiError::invalid(
                "reasoning_effort",
                "must be one of `none`, `minimal`, `low`, `medium`, `high`",
            ));
        }
    }
    if let Some(metadata) = &req.metadata {
        let fits = metadata.len() <= 16
            && metadata
                .iter()
                .all(|(k, v)| k.chars().count() <= 64 && v.chars().count() <= 512);
        if !fits {
            return Err(ApiError::invalid(
                "metadata",
                "at most 16 pairs, keys up to 64 characters, values up to 512",
            ));
        }
    }
    if req.top_logprobs.is_some() && req.logprobs != Some(true) {
        return Err(ApiError::invalid(
            "top_logprobs",
            "`logprobs` must be true when `top_logprobs` is set",
        ));
    }
    let logprobs = req.logprobs.unwrap_or(false);
    let top = match req.top_logprobs {
        None => 0,
        Some(t) if (0..=20).contains(&t) => t as usize,
        Some(t) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("must be between 0 and 20, got {t}"),
            ))
        }
    };
    let mut plan = plan(state, &req.common, if logprobs { top } else { 0 }, logprobs)?;
    plan.params.format = format;
    plan.params.no_generation_prompt = req.add_generation_prompt == Some(false);
    plan_tools(
        state,
        &mut plan,
        req.tools.as_ref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
    )?;
    Ok(plan)
}

/// Add `tools`, `tool_choice` and `parallel_tool_calls` (a chat request's, or a
/// conversation's params) to `plan`, whose `response_format` is already set: a required or
/// named call constrains the output to calls.
pub(crate) fn plan_tools(
    state: &AppState,
    plan: &mut Plan,
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    parallel_tool_calls: Option<bool>,
) -> Result<(), ApiError> {
    let Some((set, forced)) = offered_tools(state, tools, tool_choice, parallel_tool_calls)? else {
        return Ok(());
    };
    if let Some(f) = forced {
        if !matches!(plan.params.format, OutputFormat::Text) {
            return Err(ApiError::invalid(
                "tool_choice",
                "a required tool call cannot also have a `response_format`",
            ));
        }
        plan.params.format = OutputFormat::ToolCalls(f);
    }
    plan.params.tools = Some(Arc::new(set));
    Ok(())
}

/// A request's tools, and the grammar of its calls when one is required.
type OfferedTools = (ToolSet, Option<Arc<JsonSchemaFormat>>);

/// `tools`, `tool_choice` and `parallel_tool_calls`: the tool set, and for a required or named
/// call the compiled grammar of its calls. `None` when the request offers no tools.
fn offered_tools(
    state: &AppState,
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    parallel_tool_calls: Option<bool>,
) -> Result<Option<OfferedTools>, ApiError> {
    let defs = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, t)| tool_def(t, i))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ApiError::invalid("tools", "`tools` must be an array")),
    };
    let max = state.config.generation.max_tools;
    if defs.len() > max {
        return Err(ApiError::invalid(
            "tools",
            format!(
                "at most {max} tools (generation.max_tools), got {}",
                defs.len()
            ),
        ));
    }
    let choice = match tool_choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) if s == "none" => ToolChoice::None,
        Some(Value::String(s)) if s == "auto" => ToolChoice::Auto,
        Some(Value::String(s)) if s == "required" => ToolChoice::Required,
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                ToolChoice::Named(name.to_string())
            }
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "must be `none`, `auto`, `required` or {\"type\": \"function\", \"function\": {\"name\": …}}",
                ))
            }
        },
    };
    if defs.is_empty() {
        return match choice {
            ToolChoice::None | ToolChoice::Auto => Ok(None),
            _ => Err(ApiError::invalid(
                "tool_choice",
                "`tool_choice` requires a call but the request has no `tools`",
            )),
        };
    }
    if let ToolChoice::Named(n) = &choice {
        if !defs.iter().any(|d| &d.name == n) {
            return Err(ApiError::invalid(
                "tool_choice",
                format!("`{}` is not one of the request's tools", clip(n, 64)),
            ));
        }
    }
    let set = ToolSet {
        defs,
        choice,
        parallel: parallel_tool_calls.unwrap_or(true),
    };
    let forced = set.forced();
    let grammar = if forced.is_empty() {
        None
    } else {
        let schema = crate::engine::tools::call_schema(&forced);
        let framing = crate::engine::grammar::schema::Framing {
            open: crate::engine::tools::CALL_OPEN.as_bytes(),
            close: crate::engine::tools::CALL_CLOSE.as_bytes(),
            separator: set.parallel.then_some(b"\n".as_slice()),
        };
        let compiled = state
            .schemas
            .get_framed(
                if set.parallel {
                    "tool_calls"
                } else {
                    "tool_call"
                },
                &schema,
                false,
                Some(&framing),
            )
            .map_err(|e| ApiError::invalid("tools", e.to_string()))?;
        Some(compiled)
    };
    Ok(Some((set, grammar)))
}

/// One `tools[i]`: `{"type": "function", "function": {"name", "description", "parameters"}}`.
fn tool_def(t: &Value, i: usize) -> Result<ToolDef, ApiError> {
    let param = format!("tools[{i}]");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid(
            format!("{param}.type"),
            "only `function` tools are supported",
        ));
    }
    let f = t
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::invalid(format!("{param}.function"), "must be an object"))?;
    let name = match f.get("name").and_then(Value::as_str) {
        Some(n)
            if !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            n.to_string()
        }
        _ => {
            return Err(ApiError::invalid(
                format!("{param}.function.name"),
                "must be 1 to 64 characters of a-z, A-Z, 0-9, `_` and `-`",
            ))
        }
    };
    let description = match f.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param}.function.description"),
                "must be a string",
            ))
        }
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param}.function.parameters"),
                "must be a JSON Schema object",
            ))
        }
    };
    let strict = match f.get("strict") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param}.function.strict"),
                "must be a boolean",
            ))
        }
    };
    Ok(ToolDef {
        name,
        description,
        parameters,
        strict,
    })
}
