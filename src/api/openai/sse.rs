//! Server-sent events for streamed completions, in OpenAI's wire format: chunks with the same
//! `id`/`created`, `delta.role` first, `finish_reason` on each choice's last chunk, the usage
//! chunk when asked, `[DONE]`, and `: ping` keep-alives. Only encodes: what a run produces,
//! usage however it ends, is the generation service's ([`crate::chat::Run`]).

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};

use super::wire::{ChatLogprobs, Chunk, ChunkChoice, Delta, UsageBody, WireToolCall};
use crate::api::error::ApiError;
use crate::api::headers::add_run_headers;
use crate::api::AppState;
use crate::chat::{Output, Run};

/// What every chunk of one stream repeats, and how to encode it.
pub(super) struct StreamMeta {
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) chat: bool,
    pub(super) include_usage: bool,
    /// Usage so far on every chunk.
    pub(super) continuous_usage: bool,
    pub(super) logprobs: bool,
    /// Per choice, the echoed prompt that starts its text (legacy completions with `echo`).
    pub(super) echoes: Vec<String>,
}

/// Encodes one stream's chunks.
struct Encoder {
    meta: StreamMeta,
    model: String,
    /// `system_fingerprint` of the answering model, on every chunk.
    fingerprint: String,
}

impl Encoder {
    fn object(&self) -> &'static str {
        if self.meta.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<UsageBody>) -> SseEvent {
        let body = Chunk {
            id: &self.meta.id,
            object: self.object(),
            created: self.meta.created,
            model: &self.model,
            system_fingerprint: &self.fingerprint,
            choices,
            usage,
        };
        match serde_json::to_string(&body) {
            Ok(json) => SseEvent::default().data(json),
            // Plain strings and numbers cannot fail to serialise.
            Err(e) => {
                SseEvent::default().data(ApiError::Internal(e.to_string()).body().to_string())
            }
        }
    }

    fn choice(
        &self,
        index: usize,
        text: String,
        finish: Option<&'static str>,
        logprobs: Option<ChatLogprobs>,
        stopped_by: Option<&'static str>,
    ) -> ChunkChoice {
        if self.meta.chat {
            ChunkChoice::Chat {
                index,
                delta: Delta {
                    content: (!text.is_empty()).then_some(text),
                    ..Delta::default()
                },
                logprobs,
                finish_reason: finish,
                stopped_by,
            }
        } else {
            ChunkChoice::Text {
                index,
                text,
                logprobs: None,
                finish_reason: finish,
                stopped_by,
            }
        }
    }

    /// The chunks that open the stream: each chat choice's role, or each echoed prompt.
    fn opening(&self, n: usize) -> Vec<SseEvent> {
        if self.meta.chat {
            return (0..n)
                .map(|index| {
                    self.chunk(
                        vec![ChunkChoice::Chat {
                            index,
                            delta: Delta {
                                role: Some("assistant"),
                                content: Some(String::new()),
                                tool_calls: None,
                            },
                            logprobs: None,
                            finish_reason: None,
                            stopped_by: None,
                        }],
                        None,
                    )
                })
                .collect();
        }
        self.meta
            .echoes
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.is_empty())
            .map(|(i, e)| self.chunk(vec![self.choice(i, e.clone(), None, None, None)], None))
            .collect()
    }

    /// The chunks for one output, and whether the stream ends with them.
    fn encode(&self, out: Output, usage: Option<UsageBody>) -> (Vec<SseEvent>, bool) {
        match out {
            Output::Piece {
                choice,
                text,
                logprobs,
                ..
            } => {
                let lp = logprobs
                    .filter(|_| self.meta.logprobs)
                    .map(|lp| ChatLogprobs::from_tokens(std::slice::from_ref(&lp)));
                if text.is_empty() && lp.is_none() {
                    return (Vec::new(), false);
                }
                (
                    vec![self.chunk(vec![self.choice(choice, text, None, lp, None)], usage)],
                    false,
                )
            }
            Output::Tool { choice, delta } => {
                let Some(call) = WireToolCall::piece(delta) else {
                    return (Vec::new(), false);
                };
                let piece = ChunkChoice::Chat {
                    index: choice,
                    delta: Delta {
                        tool_calls: Some(vec![call]),
                        ..Delta::default()
                    },
                    logprobs: None,
                    finish_reason: None,
                    stopped_by: None,
                };
                (vec![self.chunk(vec![piece], usage)], false)
            }
            Output::Done {
                choice,
                summary,
                tool_calls,
                stopped_by,
            } => {
                let finish =
                    crate::chat::finish_with_calls(summary.finish_reason, tool_calls.len());
                (
                    vec![self.chunk(
                        vec![self.choice(choice, String::new(), Some(finish), None, stopped_by)],
                        usage,
                    )],
                    false,
                )
            }
            Output::Failed(e) => {
                let err = ApiError::from(e);
                tracing::warn!(error = %err, "generation failed mid-stream");
                (
                    vec![
                        SseEvent::default().data(err.body().to_string()),
                        SseEvent::default().data("[DONE]"),
                    ],
                    true,
                )
            }
        }
    }
}

/// The SSE response for a started run.
pub(super) fn stream_response(state: &AppState, run: Run, meta: StreamMeta) -> Response {
    let keepalive = Duration::from_secs(state.config.server.sse_keepalive_secs);
    let model = run.model().to_string();
    let encoder = Encoder {
        fingerprint: super::validate::system_fingerprint(state, &model),
        model,
        meta,
    };
    let (rate, cache_hit) = (run.rate(), run.cache_hit());
    let opening = encoder.opening(run.choice_count());
    let body = stream::iter(opening.into_iter().map(Ok::<_, Infallible>)).chain(
        stream::unfold(
            (run, encoder, false),
            |(mut run, encoder, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let Some(out) = run.next().await else {
                        // Every choice done: usage (when asked for), then [DONE].
                        let mut last = Vec::new();
                        if encoder.meta.include_usage {
                            last.push(
                                encoder.chunk(Vec::new(), Some(UsageBody::from(run.usage()))),
                            );
                        }
                        last.push(SseEvent::default().data("[DONE]"));
                        return Some((
                            stream::iter(last.into_iter().map(Ok)),
                            (run, encoder, true),
                        ));
                    };
                    let usage = encoder
                        .meta
                        .continuous_usage
                        .then(|| UsageBody::from(run.usage()));
                    let (events, end) = encoder.encode(out, usage);
                    if events.is_empty() && !end {
                        continue;
                    }
                    return Some((
                        stream::iter(events.into_iter().map(Ok)),
                        (run, encoder, end),
                    ));
                }
            },
        )
        .flatten(),
    );
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(keepalive).text("ping"))
        .into_response();
    add_run_headers(response.headers_mut(), rate, cache_hit);
    response
}
