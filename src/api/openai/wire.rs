//! The OpenAI response bodies and stream chunks, as typed `Serialize` structs: what the
//! official SDKs parse. `None` fields that OpenAI sends as `null` are kept as `null` (not
//! skipped), so clients that index them find them.

use std::collections::HashMap;

use serde::Serialize;

use crate::backends::TokenLogprobs;
use crate::chat::Usage;

pub(crate) use crate::chat::finish_str;

/// `usage.prompt_tokens_details`.
#[derive(Debug, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// `usage`.
#[derive(Debug, Serialize)]
pub struct UsageBody {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
    /// Cached prompt tokens.
    pub prompt_tokens_details: PromptTokensDetails,
}

impl From<Usage> for UsageBody {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: u.cached_tokens,
            },
        }
    }
}

/// One alternative in chat `top_logprobs`.
#[derive(Debug, Serialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// One sampled token in chat `logprobs.content`.
#[derive(Debug, Serialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely tokens at that step.
    pub top_logprobs: Vec<TopLogprob>,
}

/// Chat `logprobs`.
#[derive(Debug, Serialize)]
pub struct ChatLogprobs {
    /// One entry per sampled token.
    pub content: Vec<TokenLogprob>,
}

impl ChatLogprobs {
    /// From the backend's per-token log-probabilities.
    pub fn from_tokens(tokens: &[TokenLogprobs]) -> Self {
        Self {
            content: tokens
                .iter()
                .map(|t| TokenLogprob {
                    token: t.token.clone(),
                    logprob: t.logprob,
                    bytes: t.token.as_bytes().to_vec(),
                    top_logprobs: t
                        .top
                        .iter()
                        .map(|(s, l)| TopLogprob {
                            token: s.clone(),
                            logprob: *l,
                            bytes: s.as_bytes().to_vec(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Legacy completions `logprobs`.
#[derive(Debug, Serialize)]
pub struct TextLogprobs {
    /// Each token's text.
    pub tokens: Vec<String>,
    /// Each token's log-probability.
    pub token_logprobs: Vec<f32>,
    /// Each step's top alternatives.
    pub top_logprobs: Vec<HashMap<String, f32>>,
    /// Character offset of each token in the returned text.
    pub text_offset: Vec<usize>,
}

impl TextLogprobs {
    /// From the backend's tokens, whose text starts `offset` characters into the choice's text
    /// (after an echoed prompt).
    pub fn from_tokens(tokens: &[TokenLogprobs], mut offset: usize) -> Self {
        let text_offset = tokens
            .iter()
            .map(|t| {
                let at = offset;
                offset += t.token.chars().count();
                at
            })
            .collect();
        Self {
            tokens: tokens.iter().map(|t| t.token.clone()).collect(),
            token_logprobs: tokens.iter().map(|t| t.logprob).collect(),
            top_logprobs: tokens
                .iter()
                .map(|t| t.top.iter().cloned().collect())
                .collect(),
            text_offset,
        }
    }
}

/// The assistant's message in a chat completion.
#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The text (null when the answer is tool calls alone).
    pub content: Option<String>,
    /// Always null (the model never refuses through this field).
    pub refusal: Option<String>,
    /// The calls the answer made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
}

/// `function` of a tool call (whole or a streamed piece).
#[derive(Debug, Serialize)]
pub struct WireFunction {
    /// The function (on a call's first piece).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its arguments text (a piece of it when streamed).
    pub arguments: String,
}

/// A tool call in `message.tool_calls` or a piece of one in `delta.tool_calls`.
#[derive(Debug, Serialize)]
pub struct WireToolCall {
    /// Its index among the answer's calls (in streamed pieces only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// `call_…` (on a call's first piece).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function` (on a call's first piece).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The function and arguments.
    pub function: WireFunction,
}

impl From<&crate::engine::tools::ToolCall> for WireToolCall {
    fn from(c: &crate::engine::tools::ToolCall) -> Self {
        Self {
            index: None,
            id: Some(c.id.clone()),
            kind: Some("function"),
            function: WireFunction {
                name: Some(c.name.clone()),
                arguments: c.arguments.clone(),
            },
        }
    }
}

impl WireToolCall {
    /// A streamed piece of a call.
    pub fn piece(delta: crate::engine::tools::ToolDelta) -> Option<Self> {
        use crate::engine::tools::ToolDelta;
        match delta {
            ToolDelta::Start { index, id, name } => Some(Self {
                index: Some(index),
                id: Some(id),
                kind: Some("function"),
                function: WireFunction {
                    name: Some(name),
                    arguments: String::new(),
                },
            }),
            ToolDelta::Args { index, fragment } => Some(Self {
                index: Some(index),
                id: None,
                kind: None,
                function: WireFunction {
                    name: None,
                    arguments: fragment,
                },
            }),
            ToolDelta::Text(_) => None,
        }
    }
}

/// One choice of a chat completion.
#[derive(Debug, Serialize)]
pub struct ChatChoice {
    /// Its index.
    pub index: usize,
    /// The answer.
    pub message: AssistantMessage,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// Extension: the guard that ended it (`repetition`, `filter`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<&'static str>,
}

/// One choice of a text completion.
#[derive(Debug, Serialize)]
pub struct TextChoice {
    /// Its index.
    pub index: usize,
    /// The (echoed prompt and) completion.
    pub text: String,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<TextLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// Extension: the guard that ended it (`repetition`, `filter`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<&'static str>,
}

/// A whole (non-streamed) completion, chat or text.
#[derive(Debug, Serialize)]
pub struct Completion<C> {
    /// `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// `chat.completion` or `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// Names the build and weights.
    pub system_fingerprint: String,
    /// The choices.
    pub choices: Vec<C>,
    /// Tokens.
    pub usage: UsageBody,
}

/// A chat chunk's `delta`.
#[derive(Debug, Default, Serialize)]
pub struct Delta {
    /// `assistant`, on each choice's first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// New tool calls, or more of their arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
}

/// One choice in a stream chunk: a chat delta or completion text.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ChunkChoice {
    /// `chat.completion.chunk`.
    Chat {
        /// The choice.
        index: usize,
        /// What is new.
        delta: Delta,
        /// Log-probabilities of this chunk's token.
        logprobs: Option<ChatLogprobs>,
        /// Set on the choice's last chunk.
        finish_reason: Option<&'static str>,
        /// Extension, on the last chunk: the guard that ended it.
        #[serde(skip_serializing_if = "Option::is_none")]
        stopped_by: Option<&'static str>,
    },
    /// `text_completion`.
    Text {
        /// The choice.
        index: usize,
        /// What is new.
        text: String,
        /// Always null when streaming.
        logprobs: Option<TextLogprobs>,
        /// Set on the choice's last chunk.
        finish_reason: Option<&'static str>,
        /// Extension, on the last chunk: the guard that ended it.
        #[serde(skip_serializing_if = "Option::is_none")]
        stopped_by: Option<&'static str>,
    },
}

/// One SSE chunk.
#[derive(Debug, Serialize)]
pub struct Chunk<'a> {
    /// The same on every chunk of a stream.
    pub id: &'a str,
    /// `chat.completion.chunk` or `text_completion`.
    pub object: &'static str,
    /// The same on every chunk.
    pub created: u64,
    /// The model that answered.
    pub model: &'a str,
    /// Names the build and weights.
    pub system_fingerprint: &'a str,
    /// The choices this chunk is about (empty on the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Only on the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}
