//! Server-sent events for streamed completions, in OpenAI's wire format: chunks with the same
//! `id`/`created`, `delta.role` first, `finish_reason` on each choice's last chunk, the usage
//! chunk when asked, `[DONE]`, and `: ping` keep-alives. Usage is counted however the stream
//! ends.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};

use super::complete::{chat_logprobs, finish_str, usage};
use crate::api::auth::Principal;
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::backends::{Event, Generation};

/// What every chunk of one stream repeats.
pub(super) struct StreamMeta {
    pub(super) id: String,
    pub(super) created: u64,
    /// The model that answered.
    pub(super) model: String,
    pub(super) chat: bool,
    pub(super) include_usage: bool,
    pub(super) logprobs: bool,
}

/// Per-stream state for building SSE chunks.
struct StreamCtx {
    state: AppState,
    /// Who the usage is counted for, when the stream ends (see `Drop`).
    principal: Principal,
    meta: StreamMeta,
    /// `system_fingerprint` of the answering model, on every chunk.
    fingerprint: String,
    /// Tokens sampled so far by each choice that has not finished.
    sampled: Vec<usize>,
    /// Whether any choice finished or sampled a token (else there is nothing to count).
    produced: bool,
    prompt_tokens: usize,
    cached: usize,
    completion: usize,
}

// However the stream ends — all choices done, an error, or the client gone (which cancels the
// generations) — count what the model computed for it.
impl Drop for StreamCtx {
    fn drop(&mut self) {
        if self.produced {
            let unfinished: usize = self.sampled.iter().sum();
            self.principal.record_usage(
                &self.state,
                self.prompt_tokens,
                self.completion + unfinished,
            );
        }
    }
}

impl StreamCtx {
    fn object(&self) -> &'static str {
        if self.meta.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        }
    }

    fn chunk(&self, choices: Value) -> SseEvent {
        let body = json!({
            "id": self.meta.id,
            "object": self.object(),
            "created": self.meta.created,
            "model": self.meta.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        });
        SseEvent::default().data(body.to_string())
    }

    fn text_choice(
        &self,
        index: usize,
        text: &str,
        finish: Option<&str>,
        lp: Option<Value>,
    ) -> Value {
        if self.meta.chat {
            let delta = if text.is_empty() {
                json!({})
            } else {
                json!({"content": text})
            };
            json!({"index": index, "delta": delta, "logprobs": lp.unwrap_or(Value::Null), "finish_reason": finish})
        } else {
            json!({"index": index, "text": text, "logprobs": Value::Null, "finish_reason": finish})
        }
    }

    /// The chunks for one event of choice `i`, and whether the stream ends with them.
    fn on_event(&mut self, i: usize, ev: Event) -> (Vec<SseEvent>, bool) {
        match ev {
            Event::Token { text, logprobs, .. } => {
                if let Some(count) = self.sampled.get_mut(i) {
                    *count += 1;
                }
                self.produced = true;
                let lp = logprobs
                    .filter(|_| self.meta.logprobs)
                    .map(|lp| chat_logprobs(std::slice::from_ref(&lp)));
                if text.is_empty() && lp.is_none() {
                    return (Vec::new(), false);
                }
                (
                    vec![self.chunk(json!([self.text_choice(i, &text, None, lp)]))],
                    false,
                )
            }
            Event::Text(text) => (
                vec![self.chunk(json!([self.text_choice(i, &text, None, None)]))],
                false,
            ),
            Event::Done(s) => {
                if let Some(count) = self.sampled.get_mut(i) {
                    *count = 0;
                }
                self.produced = true;
                self.prompt_tokens = s.prompt_tokens.max(self.prompt_tokens);
                self.cached = self.cached.max(s.cached_prompt_tokens);
                self.completion += s.completion_tokens;
                let finish = finish_str(s.finish_reason);
                (
                    vec![self.chunk(json!([self.text_choice(i, "", Some(finish), None)]))],
                    false,
                )
            }
            Event::Error(e) => {
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
            Event::Started => (Vec::new(), false),
        }
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    fn finish(&self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.meta.include_usage {
            let e = json!({
                "id": self.meta.id, "object": self.object(),
                "created": self.meta.created, "model": self.meta.model,
                "system_fingerprint": self.fingerprint,
                "choices": [], "usage": usage(self.prompt_tokens, self.cached, self.completion),
            });
            out.push(SseEvent::default().data(e.to_string()));
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }
}

pub(super) fn stream_response(
    state: AppState,
    principal: Principal,
    prompt_tokens: usize,
    generations: Vec<Generation>,
    meta: StreamMeta,
) -> Response {
    let keepalive = Duration::from_secs(state.config.server.sse_keepalive_secs);
    let n = generations.len();
    let ctx = StreamCtx {
        fingerprint: super::validate::system_fingerprint(&state, &meta.model),
        state,
        principal,
        meta,
        sampled: vec![0; n],
        produced: false,
        // Until a choice finishes and reports it (a cancelled stream may never get there).
        prompt_tokens,
        cached: 0,
        completion: 0,
    };
    // Tag each choice's events with its index and merge them.
    let merged = stream::select_all(
        generations
            .into_iter()
            .enumerate()
            .map(|(i, g)| events_of(g).map(move |ev| (i, ev)).boxed()),
    );
    let first: Vec<SseEvent> = if ctx.meta.chat {
        (0..n)
            .map(|i| {
                ctx.chunk(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]))
            })
            .collect()
    } else {
        Vec::new()
    };
    let body = stream::iter(first.into_iter().map(Ok::<_, Infallible>)).chain(
        stream::unfold(
            (merged, ctx, false),
            |(mut merged, mut ctx, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let Some((i, ev)) = merged.next().await else {
                        // All choices done: usage, then [DONE].
                        let out = ctx.finish();
                        return Some((stream::iter(out.into_iter().map(Ok)), (merged, ctx, true)));
                    };
                    let (events, end) = ctx.on_event(i, ev);
                    if events.is_empty() && !end {
                        continue;
                    }
                    return Some((stream::iter(events.into_iter().map(Ok)), (merged, ctx, end)));
                }
            },
        )
        .flatten(),
    );
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(keepalive).text("ping"))
        .into_response()
}

/// A generation's events as a stream (ends after its last event).
fn events_of(generation: Generation) -> impl Stream<Item = Event> + Send {
    stream::unfold(generation, |mut g| async move {
        g.recv().await.map(|ev| (ev, g))
    })
}
