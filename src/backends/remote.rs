//! A remote backend: OpenAI, or any server speaking its API (vLLM, llama.cpp's server, another
//! Hearth), called through `async-openai`.
//!
//! Chat prompts go to `/chat/completions`, text and token prompts to `/completions`; streamed
//! when the client streams, one plain request otherwise. Replies and their failures are mapped
//! onto backend [`Event`]s and [`ErrorKind`]s, so the router can fail over and the API layer
//! cannot tell a remote model from the local one. Async-openai's own retries are switched off:
//! the router decides what happens after a failure.
//!
//! The API key is read from the environment variable the config names and lives only inside the
//! client (as a secret string); it is never logged or shown.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::CreateChatCompletionStreamResponse;
use async_openai::types::chat::{
    ChatChoiceLogprobs, ChatCompletionStreamOptions, CompletionFinishReason, CompletionUsage,
    CreateChatCompletionRequest, FinishReason as RemoteFinish, Logprobs, Prompt as RemotePrompt,
    ResponseFormat, ResponseFormatJsonSchema, StopConfiguration,
};
use async_openai::types::completions::{CreateCompletionRequest, CreateCompletionResponse};
use async_openai::Client;
use futures::{Stream, StreamExt};

use super::remote_tools::{self, CallText};
use super::{BackendError, BackendRequest, ErrorKind, Event, EventStream, Prompt, TokenLogprobs};
use crate::backends::Summary;
use crate::config::BackendSettings;
use crate::engine::generate::{FinishReason, OutputFormat};

/// One OpenAI-compatible server.
pub struct RemoteBackend {
    client: Client<OpenAIConfig>,
    total_timeout: Duration,
}

// The client holds the API key: say nothing about it.
impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBackend").finish_non_exhaustive()
    }
}

impl RemoteBackend {
    /// A client for `settings` (its key read from `api_key_env`, when named).
    pub fn new(settings: &BackendSettings) -> Result<Self, String> {
        let key = match &settings.api_key_env {
            Some(var) => std::env::var(var).map_err(|_| {
                format!(
                    "backend `{}`: the environment variable {var} (api_key_env) is not set",
                    settings.name
                )
            })?,
            None => String::new(),
        };
        // reqwest is built without a default TLS provider; use ring's (already in the build).
        // Installing twice is harmless: the first one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest_openai::Client::builder()
            .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
            .build()
            .map_err(|e| format!("backend `{}`: HTTP client: {e}", settings.name))?;
        let config = OpenAIConfig::new()
            .with_api_base(settings.base_url.trim_end_matches('/'))
            .with_api_key(key)
            // Not the process's OPENAI_ORG_ID / OPENAI_PROJECT_ID: those belong to OpenAI, and
            // this backend may be someone else's server.
            .with_org_id("")
            .with_project_id("");
        Ok(Self {
            // The plain transport, without async-openai's default retry layer (three retries
            // on 429/5xx): whether and where to retry is the router's decision, and hidden
            // retries would add latency before every failover.
            client: Client::with_config(config)
                .with_http_client(http.clone())
                .with_http_service(async_openai::middleware::ReqwestService::new(http)),
            total_timeout: Duration::from_secs(settings.total_timeout_secs),
        })
    }

    /// Send the request for `model` (the server's own id). Fails with a classified error when
    /// the server cannot be reached or refuses; a streamed reply's later failures arrive as an
    /// `Error` event.
    pub async fn start(
        &self,
        model: &str,
        req: &BackendRequest,
    ) -> Result<EventStream, BackendError> {
        let sent = Instant::now();
        let deadline = tokio::time::Instant::now() + self.total_timeout;
        match (&req.prompt, req.stream) {
            (Prompt::Chat(_), true) => {
                let upstream = self
                    .client
                    .chat()
                    .create_stream(chat_request(model, req, true))
                    .await
                    .map_err(classify)?;
                let mut calls = CallText::default();
                Ok(relay(
                    upstream.map(move |r| r.map(|c| chat_chunk(c, &mut calls))),
                    sent,
                    deadline,
                ))
            }
            (Prompt::Chat(_), false) => {
                let reply = with_deadline(
                    deadline,
                    self.client.chat().create(chat_request(model, req, false)),
                )
                .await?;
                let choice = reply.choices.into_iter().next().ok_or_else(no_choices)?;
                let mut text = choice.message.content.unwrap_or_default();
                text.push_str(&CallText::whole(
                    choice.message.tool_calls.as_deref().unwrap_or_default(),
                ));
                let chunk = Chunk {
                    text,
                    logprobs: chat_logprobs(choice.logprobs),
                    finish: choice.finish_reason.map(chat_finish),
                    usage: reply.usage,
                };
                Ok(whole_reply(chunk, sent))
            }
            (_, true) => {
                let upstream = self
                    .client
                    .completions()
                    .create_stream(completion_request(model, req, true))
                    .await
                    .map_err(classify)?;
                Ok(relay(
                    upstream.map(|r| r.map(completion_chunk)),
                    sent,
                    deadline,
                ))
            }
            (_, false) => {
                let reply = with_deadline(
                    deadline,
                    self.client
                        .completions()
                        .create(completion_request(model, req, false)),
                )
                .await?;
                if reply.choices.is_empty() {
                    return Err(no_choices());
                }
                Ok(whole_reply(completion_chunk(reply), sent))
            }
        }
    }
}

/// One reply chunk (or a whole reply), reduced to what the event stream needs.
#[derive(Debug, Default)]
struct Chunk {
    text: String,
    logprobs: Vec<TokenLogprobs>,
    finish: Option<FinishReason>,
    usage: Option<CompletionUsage>,
}

/// A streamed chat chunk (its first choice; a usage-only chunk has none), its calls written
/// into the text by `calls`.
fn chat_chunk(chunk: CreateChatCompletionStreamResponse, calls: &mut CallText) -> Chunk {
    let usage = chunk.usage;
    match chunk.choices.into_iter().next() {
        Some(c) => Chunk {
            text: {
                let mut text = c.delta.content.unwrap_or_default();
                for call in c.delta.tool_calls.iter().flatten() {
                    text.push_str(&calls.chunk(call));
                }
                if c.finish_reason.is_some() {
                    text.push_str(&calls.close());
                }
                text
            },
            logprobs: chat_logprobs(c.logprobs),
            finish: c.finish_reason.map(chat_finish),
            usage,
        },
        None => Chunk {
            usage,
            ..Chunk::default()
        },
    }
}

/// A legacy completion, whole or one streamed chunk (its first choice).
fn completion_chunk(reply: CreateCompletionResponse) -> Chunk {
    let usage = reply.usage;
    match reply.choices.into_iter().next() {
        Some(c) => Chunk {
            text: c.text,
            logprobs: legacy_logprobs(c.logprobs),
            finish: c.finish_reason.map(completion_finish),
            usage,
        },
        None => Chunk {
            usage,
            ..Chunk::default()
        },
    }
}

fn no_choices() -> BackendError {
    BackendError::new(ErrorKind::Malformed, "the remote reply has no choices")
}

async fn with_deadline<T>(
    deadline: tokio::time::Instant,
    call: impl std::future::Future<Output = Result<T, OpenAIError>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(BackendError::new(
            ErrorKind::Timeout,
            "the remote server took longer than total_timeout_secs",
        )),
    }
}

/// A whole (non-streamed) reply as events: its text, its logprobs as tokens, then done.
fn whole_reply(chunk: Chunk, sent: Instant) -> EventStream {
    let now = Instant::now();
    let mut events = vec![Event::Started];
    let counted = chunk.logprobs.len();
    // The text rides on the first token, as in a stream, so what reads the events (filters,
    // the tool-call parser) sees it.
    let mut text = Some(chunk.text.clone());
    events.extend(chunk.logprobs.into_iter().map(|lp| Event::Token {
        text: text.take().unwrap_or_default(),
        logprobs: Some(lp),
        sampled_at: now,
    }));
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        events.push(Event::Text(text));
    }
    events.push(Event::Done(summary(
        chunk.text,
        chunk.finish.unwrap_or(FinishReason::Stop),
        chunk.usage.as_ref(),
        counted,
        now.duration_since(sent),
        Duration::ZERO,
    )));
    Box::pin(futures::stream::iter(events))
}

fn summary(
    text: String,
    finish_reason: FinishReason,
    usage: Option<&CompletionUsage>,
    counted_tokens: usize,
    prompt_time: Duration,
    decode_time: Duration,
) -> Summary {
    Summary {
        finish_reason,
        prompt_tokens: usage.map_or(0, |u| u.prompt_tokens as usize),
        cached_prompt_tokens: usage
            .and_then(|u| u.prompt_tokens_details.as_ref())
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0) as usize,
        completion_tokens: usage.map_or(counted_tokens, |u| u.completion_tokens as usize),
        text,
        queued: Duration::ZERO,
        prompt_time,
        decode_time,
    }
}

/// Relay a streamed reply as events: a token per chunk as it arrives, done at the end (the
/// usage chunk follows the finish, so done waits for the stream's end). Failures, a stream that
/// ends unfinished, and the total deadline become an `Error` event.
fn relay<S>(chunks: S, sent: Instant, deadline: tokio::time::Instant) -> EventStream
where
    S: Stream<Item = Result<Chunk, OpenAIError>> + Send + Unpin + 'static,
{
    struct State<S> {
        chunks: S,
        text: String,
        tokens: usize,
        first: Option<Instant>,
        finish: Option<FinishReason>,
        usage: Option<CompletionUsage>,
        pending: std::collections::VecDeque<Event>,
        ended: bool,
    }
    let state = State {
        chunks,
        text: String::new(),
        tokens: 0,
        first: None,
        finish: None,
        usage: None,
        pending: [Event::Started].into(),
        ended: false,
    };
    Box::pin(futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((ev, st));
            }
            if st.ended {
                return None;
            }
            let next = match tokio::time::timeout_at(deadline, st.chunks.next()).await {
                Ok(next) => next,
                Err(_) => {
                    st.ended = true;
                    return Some((
                        Event::Error(BackendError::new(
                            ErrorKind::Timeout,
                            "the remote server took longer than total_timeout_secs",
                        )),
                        st,
                    ));
                }
            };
            match next {
                Some(Ok(chunk)) => {
                    let now = Instant::now();
                    if chunk.usage.is_some() {
                        st.usage = chunk.usage;
                    }
                    if chunk.finish.is_some() {
                        st.finish = chunk.finish;
                    }
                    let has_text = !chunk.text.is_empty();
                    if has_text || !chunk.logprobs.is_empty() {
                        st.first.get_or_insert(now);
                        st.text.push_str(&chunk.text);
                        let mut text = Some(chunk.text);
                        if chunk.logprobs.is_empty() {
                            st.tokens += 1;
                            st.pending.push_back(Event::Token {
                                text: text.take().unwrap_or_default(),
                                logprobs: None,
                                sampled_at: now,
                            });
                        }
                        for lp in chunk.logprobs {
                            st.tokens += 1;
                            st.pending.push_back(Event::Token {
                                // The chunk's text rides on its first token.
                                text: text.take().unwrap_or_default(),
                                logprobs: Some(lp),
                                sampled_at: now,
                            });
                        }
                    }
                }
                // A connection dropped after the finish chunk lost at most the usage chunk and
                // `[DONE]`: the reply itself is whole, so it ends normally.
                Some(Err(e)) if st.finish.is_none() => {
                    st.ended = true;
                    return Some((Event::Error(classify(e)), st));
                }
                Some(Err(_)) | None => {
                    st.ended = true;
                    let Some(finish) = st.finish else {
                        return Some((
                            Event::Error(BackendError::new(
                                ErrorKind::Malformed,
                                "the remote server ended the stream before the reply was finished",
                            )),
                            st,
                        ));
                    };
                    let now = Instant::now();
                    let first = st.first.unwrap_or(now);
                    let done = summary(
                        std::mem::take(&mut st.text),
                        finish,
                        st.usage.as_ref(),
                        st.tokens,
                        first.duration_since(sent),
                        now.duration_since(first),
                    );
                    return Some((Event::Done(done), st));
                }
            }
        }
    }))
}

fn chat_finish(f: RemoteFinish) -> FinishReason {
    match f {
        RemoteFinish::Length => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

fn completion_finish(f: CompletionFinishReason) -> FinishReason {
    match f {
        CompletionFinishReason::Length => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

fn chat_logprobs(lp: Option<ChatChoiceLogprobs>) -> Vec<TokenLogprobs> {
    lp.and_then(|l| l.content)
        .unwrap_or_default()
        .into_iter()
        .map(|t| TokenLogprobs {
            token: t.token,
            logprob: t.logprob,
            top: t
                .top_logprobs
                .into_iter()
                .map(|a| (a.token, a.logprob))
                .collect(),
        })
        .collect()
}

fn legacy_logprobs(lp: Option<Logprobs>) -> Vec<TokenLogprobs> {
    let Some(lp) = lp else {
        return Vec::new();
    };
    lp.tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| TokenLogprobs {
            token,
            logprob: lp.token_logprobs.get(i).copied().flatten().unwrap_or(0.0),
            top: lp
                .top_logprobs
                .get(i)
                .and_then(|v| v.as_object())
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()? as f32)))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

fn stop(req: &BackendRequest) -> Option<StopConfiguration> {
    (!req.params.stop.is_empty()).then(|| StopConfiguration::StringArray(req.params.stop.clone()))
}

fn nonzero(v: f32) -> Option<f32> {
    (v != 0.0).then_some(v)
}

// `seed` and `max_tokens` are marked deprecated in async-openai's chat types, but OpenAI and every
// compatible server still honour `seed`.
#[allow(deprecated)]
fn chat_request(model: &str, req: &BackendRequest, stream: bool) -> CreateChatCompletionRequest {
    let messages = match &req.prompt {
        Prompt::Chat(messages) => remote_tools::request_messages(messages),
        _ => Vec::new(),
    };
    let p = &req.params;
    let s = &p.sampling;
    let (tools, tool_choice, parallel_tool_calls) = remote_tools::request_tools(p.tools.as_deref());
    CreateChatCompletionRequest {
        messages,
        tools,
        tool_choice,
        parallel_tool_calls,
        model: model.to_string(),
        max_completion_tokens: Some(p.max_tokens.min(u32::MAX as usize) as u32),
        temperature: Some(s.temperature),
        top_p: Some(s.top_p),
        presence_penalty: nonzero(s.presence_penalty),
        frequency_penalty: nonzero(s.frequency_penalty),
        logit_bias: (!s.logit_bias.is_empty()).then(|| {
            s.logit_bias
                .iter()
                .map(|&(id, b)| (id.to_string(), b.clamp(-100.0, 100.0) as i8))
                .collect::<HashMap<_, _>>()
        }),
        seed: s.seed.map(|v| v as i64),
        stop: stop(req),
        logprobs: req.logprobs.then_some(true),
        top_logprobs: (req.logprobs && p.top_logprobs > 0).then_some(p.top_logprobs.min(20) as u8),
        response_format: match &p.format {
            // A forced call is the remote's to keep (`tool_choice` is relayed).
            OutputFormat::Text | OutputFormat::ToolCalls(_) => None,
            OutputFormat::JsonObject => Some(ResponseFormat::JsonObject),
            OutputFormat::JsonSchema(f) => Some(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: None,
                    name: f.name.clone(),
                    schema: f.schema.clone(),
                    strict: Some(f.strict),
                },
            }),
        },
        stream: Some(stream),
        stream_options: stream.then_some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        }),
        ..Default::default()
    }
}

fn completion_request(model: &str, req: &BackendRequest, stream: bool) -> CreateCompletionRequest {
    let prompt = match &req.prompt {
        Prompt::Text(t) => RemotePrompt::String(t.clone()),
        Prompt::Tokens(ids) => RemotePrompt::IntegerArray(ids.clone()),
        Prompt::Chat(_) => RemotePrompt::String(String::new()),
    };
    let p = &req.params;
    let s = &p.sampling;
    CreateCompletionRequest {
        model: model.to_string(),
        prompt,
        max_tokens: Some(p.max_tokens.min(u32::MAX as usize) as u32),
        temperature: Some(s.temperature),
        top_p: Some(s.top_p),
        presence_penalty: nonzero(s.presence_penalty),
        frequency_penalty: nonzero(s.frequency_penalty),
        logit_bias: (!s.logit_bias.is_empty()).then(|| {
            s.logit_bias
                .iter()
                .map(|&(id, b)| (id.to_string(), serde_json::json!(b.clamp(-100.0, 100.0))))
                .collect::<HashMap<_, _>>()
        }),
        seed: s.seed.map(|v| v as i64),
        stop: stop(req),
        logprobs: req.logprobs.then_some(p.top_logprobs.min(5) as u8),
        stream: Some(stream),
        stream_options: stream.then_some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        }),
        ..Default::default()
    }
}

/// Classify an async-openai failure. Messages name the status or the failure, never the key.
fn classify(e: OpenAIError) -> BackendError {
    match e {
        OpenAIError::Reqwest(e) => {
            if e.is_timeout() {
                BackendError::new(ErrorKind::Timeout, "the remote server timed out")
            } else if e.is_connect() {
                BackendError::new(ErrorKind::Connect, "could not connect to the remote server")
            } else if e.is_decode() || e.is_body() {
                BackendError::new(
                    ErrorKind::Connect,
                    "the connection to the remote server broke",
                )
            } else {
                BackendError::new(ErrorKind::Connect, "the remote request failed")
            }
        }
        OpenAIError::ApiError(resp) => {
            let status = resp.status_code.as_u16();
            let kind = match status {
                429 => ErrorKind::RateLimited,
                400 | 422 => ErrorKind::InvalidRequest,
                s if s >= 500 => ErrorKind::ServerError,
                _ => ErrorKind::Rejected,
            };
            if kind == ErrorKind::InvalidRequest {
                // The server's own words about our request are the most useful answer.
                return BackendError {
                    kind,
                    message: resp.api_error.message,
                    param: resp.api_error.param,
                };
            }
            BackendError::new(kind, format!("the remote server answered {status}"))
        }
        OpenAIError::JSONDeserialize(..) => {
            BackendError::new(ErrorKind::Malformed, "the remote reply could not be parsed")
        }
        OpenAIError::StreamError(e) => match *e {
            async_openai::error::StreamError::EventStream(_) => {
                BackendError::new(ErrorKind::Connect, "the remote stream broke")
            }
            _ => BackendError::new(
                ErrorKind::Malformed,
                "the remote stream sent an unknown event",
            ),
        },
        OpenAIError::InvalidArgument(m) => BackendError::new(ErrorKind::InvalidRequest, m),
        other => BackendError::new(ErrorKind::Internal, other.to_string()),
    }
}
