//! One admitted request in flight: its choices' events merged into transport-neutral
//! [`Output`]s, the running tally (usage so far, per choice), and the one `on_finish` that runs
//! however the run ends — every choice done, an error, or the run dropped because the client
//! went away (which cancels what is still generating).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, BoxStream, SelectAll, StreamExt};

use super::admission::{Identity, RateStatus, Ticket};
use super::cache::{CachedAnswer, CachedChoice, Key, Piece};
use super::guard::{ChoiceGuard, Guards, Stopped};
use super::ChatService;
use crate::auth::Principal;
use crate::backends::Summary;
use crate::backends::{BackendError, Event, Generation, TokenLogprobs};
use crate::engine::tools::{ToolCall, ToolCallParser, ToolDelta};

/// What a run produces, for transports to encode.
#[derive(Debug, Clone)]
pub enum Output {
    /// Visible text of one choice (never empty unless it carries log-probabilities).
    Piece {
        /// The choice's index.
        choice: usize,
        /// Newly visible text.
        text: String,
        /// The sampled token's log-probabilities, when asked for.
        logprobs: Option<TokenLogprobs>,
        /// When the token was sampled (none for text released at the end, or from the cache).
        sampled_at: Option<Instant>,
    },
    /// A tool call of one choice begins, or more of its arguments (requests with tools).
    Tool {
        /// The choice's index.
        choice: usize,
        /// [`ToolDelta::Start`] or [`ToolDelta::Args`].
        delta: ToolDelta,
    },
    /// A choice ended normally.
    Done {
        /// The choice's index.
        choice: usize,
        /// Its totals, timings and whole text (with tools: its content, calls left out).
        summary: Summary,
        /// The calls it made (requests with tools).
        tool_calls: Vec<ToolCall>,
        /// Set when a guard ended it (`repetition`, `filter`); `finish_reason` is then `stop`.
        stopped_by: Option<&'static str>,
    },
    /// The run failed after its first token; nothing follows.
    Failed(BackendError),
}

/// Unix time in microseconds of an instant in the past (a token's sampling instant on the wire).
pub fn unix_micros(at: Instant) -> Option<u64> {
    let then = std::time::SystemTime::now().checked_sub(at.elapsed())?;
    let since = then.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_micros()).ok()
}

/// Tokens of a run: what the OpenAI `usage` object reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (each prompt once, however many choices it has).
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
    /// Tokens generated, finished choices and unfinished ones alike.
    pub completion_tokens: usize,
}

/// What runs once when a run ends.
pub(super) struct Finisher {
    pub(super) service: ChatService,
    pub(super) principal: Principal,
    pub(super) identity: Identity,
    /// Holds the caller's concurrency permit until the run ends.
    pub(super) ticket: Ticket,
    /// Where the answer goes in the cache, when the request is cacheable.
    pub(super) cache_key: Option<Key>,
    /// The model asked for (an answer from a failover model is not cached under it).
    pub(super) asked: String,
}

#[derive(Default)]
struct Choice {
    /// Prompt tokens known when it started.
    prompt_tokens: usize,
    /// Tokens sampled while it has not finished.
    sampled: usize,
    done: Option<Summary>,
    pieces: Vec<Piece>,
    guard: ChoiceGuard,
    /// Ends this choice's generation early (a guard stopped it).
    stop: Option<futures::channel::oneshot::Sender<()>>,
    /// Reads tool calls out of its text (requests with tools).
    tools: Option<ToolCallParser>,
}

enum Source {
    Live(SelectAll<BoxStream<'static, (usize, Event)>>),
    Replay(VecDeque<Output>),
    Ended,
}

/// A request whose choices are generating (or replaying from the cache).
pub struct Run {
    model: String,
    cache_hit: bool,
    rate: Option<RateStatus>,
    n: usize,
    choices: Vec<Choice>,
    source: Source,
    /// Whether every choice is answered by the model asked for (else the answer is not cached).
    from_asked_model: bool,
    /// Pieces are being kept for the cache (until they outgrow an entry).
    recording: bool,
    recorded_bytes: u64,
    max_entry_bytes: u64,
    guards: Arc<Guards>,
    /// A choice's end that waits for the text released with it.
    pending_done: Option<(usize, Summary)>,
    pending_stop: Option<&'static str>,
    /// Outputs made from one event, not given out yet.
    queued: VecDeque<Output>,
    finisher: Option<Finisher>,
}

impl Run {
    pub(super) fn live(
        generations: Vec<Generation>,
        n: usize,
        max_entry_bytes: u64,
        guards: Arc<Guards>,
        finisher: Finisher,
    ) -> Self {
        let model = generations
            .first()
            .map_or_else(|| finisher.asked.clone(), |g| g.model.clone());
        let from_asked_model = generations.iter().all(|g| g.model == finisher.asked);
        let mut choices: Vec<Choice> = Vec::with_capacity(generations.len());
        let mut streams = Vec::with_capacity(generations.len());
        for (i, g) in generations.into_iter().enumerate() {
            let (stop, stopped) = futures::channel::oneshot::channel::<()>();
            choices.push(Choice {
                prompt_tokens: g.prompt_tokens,
                stop: Some(stop),
                ..Choice::default()
            });
            // A guard's stop ends the stream, which drops (cancels) the generation.
            streams.push(
                stream::unfold(g, |mut g| async move { g.recv().await.map(|ev| (ev, g)) })
                    .take_until(stopped)
                    .map(move |ev| (i, ev))
                    .boxed(),
            );
        }
        let merged = stream::select_all(streams);
        Self {
            model,
            cache_hit: false,
            rate: finisher.ticket.rate,
            n: n.max(1),
            choices,
            source: Source::Live(merged),
            from_asked_model,
            recording: finisher.cache_key.is_some(),
            recorded_bytes: 0,
            max_entry_bytes,
            guards,
            pending_done: None,
            pending_stop: None,
            queued: VecDeque::new(),
            finisher: Some(finisher),
        }
    }

    pub(super) fn replay(model: &str, hit: &CachedAnswer, finisher: Finisher) -> Self {
        let mut outputs = VecDeque::new();
        let mut choices = Vec::with_capacity(hit.choices.len());
        for (i, c) in hit.choices.iter().enumerate() {
            outputs.extend(c.pieces.iter().map(|p| Output::Piece {
                choice: i,
                text: p.text.clone(),
                logprobs: p.logprobs.clone(),
                sampled_at: None,
            }));
            // Nothing was computed for this answer: no queue, prompt or decode time.
            let summary = Summary {
                queued: Default::default(),
                prompt_time: Default::default(),
                decode_time: Default::default(),
                ..c.summary.clone()
            };
            outputs.push_back(Output::Done {
                choice: i,
                summary: summary.clone(),
                tool_calls: Vec::new(),
                stopped_by: None,
            });
            choices.push(Choice {
                prompt_tokens: summary.prompt_tokens,
                done: Some(summary),
                ..Choice::default()
            });
        }
        let n = choices.len().max(1);
        Self {
            model: model.to_string(),
            cache_hit: true,
            rate: finisher.ticket.rate,
            n,
            choices,
            source: Source::Replay(outputs),
            from_asked_model: true,
            recording: false,
            recorded_bytes: 0,
            max_entry_bytes: 0,
            guards: Arc::new(Guards::default()),
            pending_done: None,
            pending_stop: None,
            queued: VecDeque::new(),
            finisher: Some(finisher),
        }
    }

    /// The model answering (the first choice's, after any failover).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether the answer comes from the response cache.
    pub fn cache_hit(&self) -> bool {
        self.cache_hit
    }

    /// The caller's request budget after this request, when `limits.requests_per_minute` is on.
    pub fn rate(&self) -> Option<RateStatus> {
        self.rate
    }

    /// How many choices the run has.
    pub fn choice_count(&self) -> usize {
        self.choices.len()
    }

    /// Usage so far: final once every choice is done; for a run that ends early, the prompts
    /// and every token sampled before it ended.
    pub fn usage(&self) -> Usage {
        let mut usage = Usage::default();
        for group in self.choices.chunks(self.n) {
            let mut prompt = 0;
            let mut cached = 0;
            for c in group {
                match &c.done {
                    Some(s) => {
                        prompt = prompt.max(s.prompt_tokens);
                        cached = cached.max(s.cached_prompt_tokens);
                        usage.completion_tokens += s.completion_tokens;
                    }
                    None => {
                        prompt = prompt.max(c.prompt_tokens);
                        usage.completion_tokens += c.sampled;
                    }
                }
            }
            usage.prompt_tokens += prompt;
            usage.cached_tokens += cached;
        }
        usage
    }

    /// Read tool calls out of every choice's text, keeping at most `max_calls` per choice.
    pub(super) fn with_tools(mut self, max_calls: Option<usize>) -> Self {
        if let Some(max) = max_calls {
            for c in &mut self.choices {
                c.tools = Some(ToolCallParser::new(max));
            }
        }
        self
    }

    /// The next output; `None` once every choice is done (or after `Failed`).
    pub async fn next(&mut self) -> Option<Output> {
        loop {
            if let Some(out) = self.queued.pop_front() {
                return Some(out);
            }
            let out = self.next_text().await?;
            let choice = match &out {
                Output::Piece { choice, .. } | Output::Done { choice, .. } => *choice,
                _ => return Some(out),
            };
            let Some(parser) = self.choices.get_mut(choice).and_then(|c| c.tools.as_mut()) else {
                return Some(out);
            };
            match out {
                Output::Piece {
                    text,
                    mut logprobs,
                    sampled_at,
                    ..
                } => {
                    for d in parser.push(&text) {
                        self.queued.push_back(match d {
                            ToolDelta::Text(text) => Output::Piece {
                                choice,
                                text,
                                logprobs: logprobs.take(),
                                sampled_at,
                            },
                            delta => Output::Tool { choice, delta },
                        });
                    }
                    if logprobs.is_some() {
                        self.queued.push_back(Output::Piece {
                            choice,
                            text: String::new(),
                            logprobs,
                            sampled_at,
                        });
                    }
                }
                Output::Done {
                    mut summary,
                    stopped_by,
                    ..
                } => {
                    for d in parser.finish() {
                        self.queued.push_back(match d {
                            ToolDelta::Text(text) => Output::Piece {
                                choice,
                                text,
                                logprobs: None,
                                sampled_at: None,
                            },
                            delta => Output::Tool { choice, delta },
                        });
                    }
                    summary.text = parser.content().to_string();
                    self.queued.push_back(Output::Done {
                        choice,
                        summary,
                        tool_calls: parser.calls().to_vec(),
                        stopped_by,
                    });
                }
                other => return Some(other),
            }
        }
    }

    /// The next output before tool calls are read out of it.
    async fn next_text(&mut self) -> Option<Output> {
        if let Some((i, summary)) = self.pending_done.take() {
            let stopped_by = self.pending_stop.take();
            return Some(self.end_choice(i, summary, stopped_by));
        }
        loop {
            let item = match &mut self.source {
                Source::Ended => return None,
                Source::Replay(queue) => match queue.pop_front() {
                    Some(out) => return Some(out),
                    None => None,
                },
                Source::Live(merged) => merged.next().await,
            };
            let Some((i, event)) = item else {
                self.source = Source::Ended;
                self.finish(true);
                return None;
            };
            if self.choices.get(i).is_none_or(|c| c.done.is_some()) {
                continue; // a guard already ended this choice; its last events are dropped
            }
            match event {
                Event::Started => {}
                Event::Token {
                    text,
                    logprobs,
                    sampled_at,
                } => {
                    self.choices[i].sampled += 1;
                    if let Some(out) = self.guarded(i, text, logprobs, Some(sampled_at), false) {
                        return Some(out);
                    }
                }
                Event::Text(text) => {
                    if let Some(out) = self.guarded(i, text, None, None, false) {
                        return Some(out);
                    }
                }
                Event::Done(mut summary) => {
                    // What filters still held back goes out before the end.
                    if self.guards.active() {
                        let rest = self.choices[i].guard.push(&self.guards, "", true);
                        self.count_actions(&rest.actions);
                        if self.guards.filtering() {
                            summary.text = self.choices[i].guard.released.clone();
                        }
                        if !rest.text.is_empty() {
                            self.keep(i, &rest.text, &None);
                            self.pending_done = Some((i, summary));
                            return Some(Output::Piece {
                                choice: i,
                                text: rest.text,
                                logprobs: None,
                                sampled_at: None,
                            });
                        }
                    }
                    return Some(self.end_choice(i, summary, None));
                }
                Event::Error(e) => {
                    self.source = Source::Ended;
                    self.finish(false);
                    return Some(Output::Failed(e));
                }
            }
        }
    }

    /// Pass a choice's new text through the guards: what may be shown now (`None`: nothing
    /// yet), or its end when a guard stopped it.
    fn guarded(
        &mut self,
        i: usize,
        text: String,
        logprobs: Option<TokenLogprobs>,
        sampled_at: Option<Instant>,
        last: bool,
    ) -> Option<Output> {
        let (text, stopped) = if self.guards.active() {
            let r = self.choices[i].guard.push(&self.guards, &text, last);
            self.count_actions(&r.actions);
            (r.text, r.stopped)
        } else {
            (text, None)
        };
        if !text.is_empty() {
            self.keep(i, &text, &logprobs);
        }
        if let Some(stopped) = stopped {
            let c = &mut self.choices[i];
            if let Some(stop) = c.stop.take() {
                let _ = stop.send(());
            }
            let summary = Summary {
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.sampled,
                text: c.guard.released.clone(),
                ..Summary::default()
            };
            if let Some(f) = &self.finisher {
                f.service.inner.metrics.chat_event(match stopped {
                    Stopped::Repetition => "guard_repetition",
                    Stopped::Filter => "filter_stop",
                });
            }
            // The text released with the stop goes out first.
            if !text.is_empty() {
                self.pending_done = Some((i, summary));
                self.pending_stop = Some(stopped.label());
                return Some(Output::Piece {
                    choice: i,
                    text,
                    logprobs,
                    sampled_at,
                });
            }
            return Some(self.end_choice(i, summary, Some(stopped.label())));
        }
        if text.is_empty() && logprobs.is_none() {
            return None;
        }
        Some(Output::Piece {
            choice: i,
            text,
            logprobs,
            sampled_at,
        })
    }

    fn end_choice(
        &mut self,
        i: usize,
        summary: Summary,
        stopped_by: Option<&'static str>,
    ) -> Output {
        if let Some(c) = self.choices.get_mut(i) {
            c.sampled = 0;
            c.done = Some(summary.clone());
        }
        Output::Done {
            choice: i,
            summary,
            tool_calls: Vec::new(),
            stopped_by,
        }
    }

    fn count_actions(&self, actions: &[&'static str]) {
        if let Some(f) = &self.finisher {
            for a in actions {
                f.service.inner.metrics.chat_event(a);
            }
        }
    }

    /// Keep a piece for the cache, until the answer outgrows an entry.
    fn keep(&mut self, i: usize, text: &str, logprobs: &Option<TokenLogprobs>) {
        if !self.recording {
            return;
        }
        self.recorded_bytes += text.len() as u64 + 64;
        if self.recorded_bytes > self.max_entry_bytes {
            self.recording = false;
            self.choices.iter_mut().for_each(|c| c.pieces.clear());
            return;
        }
        if let Some(c) = self.choices.get_mut(i) {
            c.pieces.push(Piece {
                text: text.to_string(),
                logprobs: logprobs.clone(),
            });
        }
    }

    /// `on_finish`: once, however the run ends (`completed`: every choice reached its end).
    fn finish(&mut self, completed: bool) {
        let Some(f) = self.finisher.take() else {
            return;
        };
        let usage = self.usage();
        let inner = &f.service.inner;
        let produced = self
            .choices
            .iter()
            .any(|c| c.sampled > 0 || c.done.is_some());
        if self.cache_hit {
            // A request answered, nothing computed: counted, no tokens charged.
            f.service.record_usage(&f.principal, 0, 0);
        } else if produced {
            f.service.record_usage(
                &f.principal,
                usage.prompt_tokens as u64,
                usage.completion_tokens as u64,
            );
            inner.admission.charge(
                &f.identity,
                (usage.prompt_tokens + usage.completion_tokens) as u64,
            );
        }
        let all_done = self.choices.iter().all(|c| c.done.is_some());
        if let (Some(key), true) = (
            f.cache_key,
            completed && !self.cache_hit && self.recording && all_done && self.from_asked_model,
        ) {
            let choices: Option<Vec<CachedChoice>> = self
                .choices
                .iter_mut()
                .map(|c| {
                    let summary = c.done.clone().unwrap_or_default();
                    let mut pieces = std::mem::take(&mut c.pieces);
                    // A whole (non-streamed) remote reply comes as its summary alone: replay
                    // its text as one piece. With log-probabilities that would lose them.
                    if pieces.iter().map(|p| p.text.as_str()).collect::<String>() != summary.text {
                        if pieces.iter().any(|p| p.logprobs.is_some()) {
                            return None;
                        }
                        pieces = vec![Piece {
                            text: summary.text.clone(),
                            logprobs: None,
                        }];
                    }
                    Some(CachedChoice { pieces, summary })
                })
                .collect();
            if choices.is_some_and(|choices| inner.cache.put(key, choices)) {
                inner.metrics.chat_event("cache_fill");
            }
        }
        // Dropping `f` returns the concurrency permit.
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // The client went away (or the transport stopped reading): count what was computed.
        self.finish(false);
    }
}
