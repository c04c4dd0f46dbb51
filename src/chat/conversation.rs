//! Conversation turns on top of the generation service: a user message (or a regeneration)
//! becomes an assistant message that exists from the start, is saved as it streams (every
//! `chat.save_interval_ms` or `chat.save_every_tokens`, then once at the end), and keeps
//! generating when its client goes — for `chat.detach_grace_secs` with no follower, then it
//! is cancelled and marked `interrupted`. Clients follow and resume it through
//! [`super::live`]. The prompt is the active branch fitted to the context ([`super::context`]).
//!
//! With tools in the conversation's params, an answer may end in calls (stored on the message
//! as `tool_calls`, `finish_reason: "tool_calls"`); the next turn carries their results as
//! `tool` messages, one per call, and the model answers them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::Instrument as _;

use super::context::{fit, Entry, FitError};
use super::followups::{Summarizing, Titling};
use super::live::{Ended, LiveEvent, LiveMessage, Subscription};
use super::{Ask, Caller, ChatError, ChatService, Output, RateStatus, Run};
use crate::backends::{Params, Prompt};
use crate::engine::template::ChatMessage;
use crate::engine::tools::ToolCall;
use crate::store::conversations::{Conversation, Finished, Message, NewMessage};
use crate::store::StoreError;

/// What a turn asks for, validated by the API layer.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// The conversation (its owner is the caller's user).
    pub conversation: Conversation,
    /// The new user message; `None` to regenerate `regenerate` or answer `tool_outputs`.
    pub content: Option<String>,
    /// The results of the calls the message it follows made, one per call.
    pub tool_outputs: Vec<ToolOutput>,
    /// The message the new one follows: `None` the active leaf, `Some(None)` none (a new first
    /// message). A sibling of an earlier user message is an edit.
    pub parent_id: Option<Option<String>>,
    /// An assistant message to answer again (a sibling answer).
    pub regenerate: Option<String>,
    /// The model to answer with.
    pub model: String,
    /// Sampling and limits.
    pub params: Params,
}

/// The result of one tool call, as the client ran it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolOutput {
    /// The call's id (`call_…`).
    pub tool_call_id: String,
    /// What the tool returned (usually JSON text).
    pub output: String,
}

/// A started turn.
pub struct Turn {
    /// The user message stored for it (none when regenerating or answering tool calls).
    pub user_message: Option<Message>,
    /// The `tool` messages stored for it, one per call answered.
    pub tool_messages: Vec<Message>,
    /// The assistant message being generated (`streaming`).
    pub message: Message,
    /// Its text as it comes.
    pub subscription: Subscription,
    /// The caller's request budget, when limited.
    pub rate: Option<RateStatus>,
    /// Whether the response cache answered.
    pub cache_hit: bool,
}

/// Why a turn did not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// No such conversation or message (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be served as asked.
    #[error("{message}")]
    Invalid {
        /// The field to blame.
        param: &'static str,
        /// Why.
        message: String,
    },
    /// The generation service refused or failed.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tool results must answer the calls of the message they follow: each call once, all of them.
fn check_outputs(calls: &[ToolCall], outputs: &[ToolOutput]) -> Result<(), TurnError> {
    let invalid = |message: String| TurnError::Invalid {
        param: "tool_outputs",
        message,
    };
    if calls.is_empty() {
        return Err(invalid(
            "`tool_outputs` answer an assistant message that made tool calls: the active \
             branch's newest, or the one `parent_id` names"
                .into(),
        ));
    }
    let mut answered = std::collections::HashSet::new();
    for (i, o) in outputs.iter().enumerate() {
        if !calls.iter().any(|c| c.id == o.tool_call_id) {
            return Err(invalid(format!(
                "tool_outputs[{i}].tool_call_id `{}` is not a call of that message",
                o.tool_call_id.chars().take(64).collect::<String>()
            )));
        }
        if !answered.insert(o.tool_call_id.as_str()) {
            return Err(invalid(format!(
                "tool_outputs[{i}] answers `{}` a second time",
                o.tool_call_id.chars().take(64).collect::<String>()
            )));
        }
    }
    if let Some(c) = calls.iter().find(|c| !answered.contains(c.id.as_str())) {
        return Err(invalid(format!(
            "every call needs its output: `{}` ({}) has none",
            c.id, c.name
        )));
    }
    Ok(())
}

/// The path from the first message to `leaf`, oldest first.
pub fn branch_to(messages: &[Message], leaf: Option<&str>) -> Vec<Message> {
    let by_id: std::collections::HashMap<&str, &Message> =
        messages.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut path = Vec::new();
    let mut at = leaf;
    while let Some(id) = at {
        let Some(m) = by_id.get(id) else { break };
        path.push((*m).clone());
        at = m.parent_id.as_deref();
        if path.len() > messages.len() {
            break; // a cycle cannot be stored, but never loop on one
        }
    }
    path.reverse();
    path
}

/// The newest leaf under `id`: follow the most recent child down.
pub fn newest_leaf(messages: &[Message], id: &str) -> String {
    let mut at = id.to_string();
    while let Some(child) = messages
        .iter()
        .filter(|m| m.parent_id.as_deref() == Some(at.as_str()))
        .max_by_key(|m| (m.created_at, m.id.clone()))
    {
        at = child.id.clone();
    }
    at
}

impl ChatService {
    fn count_tokens(&self, text: &str) -> usize {
        self.inner
            .engine
            .tokenizer()
            .encode(text, false, false)
            .map_or(text.len() / 3, |ids| ids.len())
    }

    /// Start a turn of `req.conversation` for `caller` (its owner).
    pub async fn start_turn(
        &self,
        caller: &Caller,
        req: TurnRequest,
        on_started: &(dyn Fn() + Send + Sync),
    ) -> Result<Turn, TurnError> {
        let began = Instant::now();
        let owner = req.conversation.owner_id;
        let conv_id = req.conversation.id.clone();
        let store = &self.inner.store;
        let messages = store
            .messages(owner, conv_id.clone())
            .await?
            .ok_or_else(|| TurnError::NotFound("No such conversation".into()))?;
        let answering_tools = !req.tool_outputs.is_empty();
        let (parent, content) = match (&req.regenerate, &req.content) {
            (Some(_), _) if answering_tools => {
                return Err(TurnError::Invalid {
                    param: "tool_outputs",
                    message: "send either `regenerate` or `tool_outputs`, not both".into(),
                })
            }
            (Some(target), _) => {
                let m = messages
                    .iter()
                    .find(|m| &m.id == target && m.role == "assistant")
                    .ok_or_else(|| TurnError::NotFound("No such assistant message".into()))?;
                (m.parent_id.clone(), None)
            }
            (None, Some(_)) if answering_tools => {
                return Err(TurnError::Invalid {
                    param: "tool_outputs",
                    message: "send either `content` or `tool_outputs`, not both".into(),
                })
            }
            (None, Some(content)) => {
                let parent = match &req.parent_id {
                    Some(None) => None,
                    Some(Some(p)) if messages.iter().any(|m| &m.id == p) => Some(p.clone()),
                    Some(Some(_)) => {
                        return Err(TurnError::NotFound(
                            "`parent_id` names no message of this conversation".into(),
                        ))
                    }
                    None => req.conversation.active_leaf.clone(),
                };
                (parent, Some(content.clone()))
            }
            (None, None) if answering_tools => {
                let parent = match &req.parent_id {
                    Some(p) => p.clone(),
                    None => req.conversation.active_leaf.clone(),
                };
                let calls = parent
                    .as_deref()
                    .and_then(|p| messages.iter().find(|m| m.id == p))
                    .filter(|m| m.role == "assistant")
                    .and_then(|m| m.tool_calls.as_ref())
                    .map(ToolCall::list_from_openai_json)
                    .unwrap_or_default();
                check_outputs(&calls, &req.tool_outputs)?;
                (parent, None)
            }
            (None, None) => {
                return Err(TurnError::Invalid {
                    param: "content",
                    message: "`content` is required".into(),
                })
            }
        };
        let mut branch: Vec<Entry> = branch_to(&messages, parent.as_deref())
            .into_iter()
            .map(|m| Entry {
                tokens: m
                    .content_tokens
                    .map_or_else(|| self.count_tokens(&m.content), |t| t as usize),
                tool_calls: m
                    .tool_calls
                    .as_ref()
                    .map(ToolCall::list_from_openai_json)
                    .unwrap_or_default(),
                tool_call_id: m.tool_call_id,
                id: m.id,
                role: m.role,
                content: m.content,
            })
            .filter(|e| {
                e.role != "system"
                    && !(e.role == "assistant" && e.content.is_empty() && e.tool_calls.is_empty())
            })
            .collect();
        let user_tokens = content.as_deref().map(|c| self.count_tokens(c));
        if let (Some(c), Some(tokens)) = (&content, user_tokens) {
            branch.push(Entry {
                id: String::new(),
                role: "user".into(),
                content: c.clone(),
                tool_calls: Vec::new(),
                tool_call_id: None,
                tokens,
            });
        }
        let tool_tokens: Vec<usize> = req
            .tool_outputs
            .iter()
            .map(|o| self.count_tokens(&o.output))
            .collect();
        for (o, &tokens) in req.tool_outputs.iter().zip(&tool_tokens) {
            branch.push(Entry {
                id: String::new(),
                role: "tool".into(),
                content: o.output.clone(),
                tool_calls: Vec::new(),
                tool_call_id: Some(o.tool_call_id.clone()),
                tokens,
            });
        }
        if branch
            .last()
            .is_none_or(|e| e.role != "user" && e.role != "tool")
        {
            return Err(TurnError::Invalid {
                param: "parent_id",
                message: "an answer must follow a user message or tool results".into(),
            });
        }
        let mut system = req.conversation.system_prompt.clone().unwrap_or_default();
        let local = self.inner.router.is_local(&req.model);
        let summarize = local && self.inner.memory.summarize;
        // A summary counts only for the branch it was written for.
        let summary = req
            .conversation
            .summary
            .clone()
            .zip(req.conversation.summary_through.clone())
            .filter(|(_, through)| summarize && branch.iter().any(|e| &e.id == through));
        let mut fitted = self.fit_turn(&branch, &system, local, req.params.max_tokens)?;
        let mut used_summary = false;
        if let (true, Some((text, _))) = (fitted.dropped > 0, &summary) {
            let sep = if system.is_empty() { "" } else { "\n\n" };
            let with = format!("{system}{sep}Summary of the conversation so far: {text}");
            // A summary too long to leave room for the question is left out.
            if let Ok(f) = self.fit_turn(&branch, &with, local, req.params.max_tokens) {
                system = with;
                fitted = f;
                used_summary = true;
            }
        }
        let system_tokens = if system.is_empty() {
            0
        } else {
            self.count_tokens(&system)
        };
        let summarizing = (summarize && fitted.dropped > 0).then(|| Summarizing {
            owner,
            conversation: conv_id.clone(),
            previous: summary.clone(),
            dropped: branch[..fitted.dropped].to_vec(),
        });
        let mut prompt: Vec<ChatMessage> = Vec::new();
        if !system.is_empty() {
            prompt.push(ChatMessage {
                role: "system".into(),
                content: system,
                ..Default::default()
            });
        }
        prompt.extend(fitted.included.iter().map(|e| ChatMessage {
            role: e.role.clone(),
            content: e.content.clone(),
            tool_calls: e.tool_calls.clone(),
            tool_call_id: e.tool_call_id.clone(),
        }));
        let ask = Ask {
            model: req.model.clone(),
            prompts: vec![Prompt::Chat(prompt)],
            n: 1,
            params: req.params.clone(),
            logprobs: false,
            stream: true,
            // Regenerating asks for another answer, not the same one again.
            cache: req.regenerate.is_none(),
        };
        // Hearth's own work on the turn before it goes to the backend: reading the branch,
        // counting and fitting it, building the prompt.
        let prepare_ms = began.elapsed().as_secs_f64() * 1000.0;
        let run = self.start(caller, ask, on_started).await?;
        // Only now is anything stored: a refused turn leaves the conversation as it was. The
        // new messages form a chain: the question or the tool results, then the answer.
        let mut after = parent;
        let mut stored = Vec::new();
        let user_turn = content.map(|c| ("user", c, None, user_tokens.unwrap_or(0)));
        let tool_turns = req
            .tool_outputs
            .into_iter()
            .zip(tool_tokens)
            .map(|(o, t)| ("tool", o.output, Some(o.tool_call_id), t));
        for (role, content, tool_call_id, tokens) in user_turn.into_iter().chain(tool_turns) {
            let m = store
                .insert_message(
                    owner,
                    NewMessage {
                        conversation_id: conv_id.clone(),
                        parent_id: after.take(),
                        role,
                        content,
                        tool_call_id,
                        model: None,
                        status: "done",
                        content_tokens: Some(tokens as i64),
                        context: None,
                    },
                )
                .await?;
            after = Some(m.id.clone());
            stored.push(m);
        }
        let user_message = stored.first().filter(|m| m.role == "user").cloned();
        let tool_messages: Vec<Message> = stored
            .iter()
            .filter(|m| m.role == "tool")
            .cloned()
            .collect();
        let included: Vec<&str> = fitted
            .included
            .iter()
            .map(|e| e.id.as_str())
            .filter(|id| !id.is_empty())
            .chain(stored.iter().map(|m| m.id.as_str()))
            .collect();
        let message = store
            .insert_message(
                owner,
                NewMessage {
                    conversation_id: conv_id.clone(),
                    parent_id: after,
                    role: "assistant",
                    content: String::new(),
                    tool_call_id: None,
                    model: Some(run.model().to_string()),
                    status: "streaming",
                    content_tokens: None,
                    context: Some(json!({
                        "messages": included,
                        "dropped": fitted.dropped,
                        "system_tokens": system_tokens,
                        "summary": used_summary,
                        "prepare_ms": prepare_ms,
                        "estimated_tokens": fitted.estimated_tokens,
                        "budget": fitted.budget,
                    })),
                },
            )
            .await?;
        let mut titling = None;
        if req.conversation.title.is_empty() {
            if let Some(m) = &user_message {
                let fallback = self.default_title(owner, &conv_id, &m.content).await;
                if self.inner.chat.auto_title {
                    titling = Some(Titling {
                        owner,
                        conversation: conv_id.clone(),
                        fallback,
                        question: m.content.clone(),
                    });
                }
            }
        }
        let live = LiveMessage::new(owner);
        let subscription = live.subscribe(0);
        let mirror = match &self.inner.relay {
            Some(relay) => relay.publish(&message.id).await,
            None => None,
        };
        super::lock_live(&self.inner.live).insert(message.id.clone(), live.clone());
        let (rate, cache_hit) = (run.rate(), run.cache_hit());
        // The answer outlives this request, but its logs keep the request's id; a shutdown
        // waits for it (within its grace).
        let guard = self.inner.drain.guard();
        let answer = self.clone().follow_through(
            run,
            message.id.clone(),
            live,
            mirror,
            titling,
            summarizing,
        );
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                answer.await;
                drop(guard);
            },
            tracing::Span::current(),
        ));
        Ok(Turn {
            user_message,
            tool_messages,
            message,
            subscription,
            rate,
            cache_hit,
        })
    }

    /// Until a title is written, the first line of the first question names the conversation.
    /// Returns that title.
    async fn default_title(&self, owner: i64, conv_id: &str, content: &str) -> String {
        let line = content.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let mut title: String = line.trim().chars().take(60).collect();
        if line.trim().chars().count() > 60 {
            title.push('…');
        }
        let update = crate::store::conversations::ConversationUpdate {
            title: Some(title.clone()),
            ..Default::default()
        };
        if let Err(e) = self
            .inner
            .store
            .update_conversation(owner, conv_id.to_string(), update)
            .await
        {
            tracing::warn!(error = %e, "setting a conversation's title failed");
        }
        title
    }

    /// Drive a turn's run to its end whoever is watching (here or, through `mirror`, on
    /// another replica): publish text, save it as it comes, cancel after the detach grace,
    /// write the end.
    #[allow(clippy::too_many_arguments)]
    async fn follow_through(
        self,
        mut run: Run,
        id: String,
        live: Arc<LiveMessage>,
        mirror: Option<super::relay::Publisher>,
        titling: Option<Titling>,
        summarizing: Option<Summarizing>,
    ) {
        let settings = self.inner.chat.clone();
        let store = self.inner.store.clone();
        let grace = Duration::from_secs(settings.detach_grace_secs);
        let save_every = Duration::from_millis(settings.save_interval_ms);
        let mut last_save = Instant::now();
        let mut unsaved = 0usize;
        // The partial save in flight, if any: saves run beside the stream (a slow write, a WAL
        // checkpoint, must not hold back the tokens behind it), one at a time, each with the
        // whole text so far, so a later save never loses to an earlier one.
        let mut saving: Option<tokio::task::JoinHandle<()>> = None;
        let mut alone_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(
            Duration::from_millis(250).min(grace.max(Duration::from_millis(10))),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Made once, not per token: resolves when a shutdown's grace runs out.
        let forced = self.inner.drain.forced();
        tokio::pin!(forced);
        let mut ended = loop {
            tokio::select! {
                out = run.next() => match out {
                    // Calls are stored and sent whole, with the end.
                    Some(Output::Tool { .. }) => {}
                    Some(Output::Piece { text, sampled_at, .. }) => {
                        let at = sampled_at.and_then(super::run::unix_micros);
                        live.push(&text, at);
                        if let Some(m) = &mirror {
                            m.text(&text, at);
                        }
                        unsaved += 1;
                        let due = unsaved >= settings.save_every_tokens || last_save.elapsed() >= save_every;
                        if due && saving.as_ref().is_none_or(|s| s.is_finished()) {
                            let (store, id, text) = (store.clone(), id.clone(), live.text());
                            saving = Some(tokio::spawn(async move {
                                if let Err(e) = store.save_partial(id.clone(), text).await {
                                    tracing::warn!(message = %id, error = %e, "saving partial text failed");
                                }
                            }.in_current_span()));
                            last_save = Instant::now();
                            unsaved = 0;
                        }
                    }
                    Some(Output::Done { summary, stopped_by, tool_calls, .. }) => {
                        let mut e = Ended::new("done", Some(run.model().to_string()), run.usage());
                        e.finish_reason = Some(
                            super::finish_with_calls(summary.finish_reason, tool_calls.len()).into(),
                        );
                        e.tool_calls = (!tool_calls.is_empty()).then(|| {
                            serde_json::Value::Array(
                                tool_calls.iter().map(ToolCall::to_openai_json).collect(),
                            )
                        });
                        e.stopped_by = stopped_by.map(str::to_string);
                        break (e, Some(summary));
                    }
                    Some(Output::Failed(err)) => {
                        let mut e = Ended::new("error", Some(run.model().to_string()), run.usage());
                        e.error = Some(err.message);
                        break (e, None);
                    }
                    None => break (Ended::new("done", Some(run.model().to_string()), run.usage()), None),
                },
                _ = live.cancelled() => {
                    break (Ended::new("interrupted", Some(run.model().to_string()), run.usage()), None);
                }
                _ = &mut forced => {
                    tracing::info!(message = %id, "the shutdown grace ran out: answer interrupted");
                    break (Ended::new("interrupted", Some(run.model().to_string()), run.usage()), None);
                }
                _ = tick.tick() => {
                    let watched_elsewhere = match &mirror {
                        Some(m) if live.followers() == 0 => m.watched().await,
                        _ => false,
                    };
                    if live.followers() > 0 || watched_elsewhere {
                        alone_since = None;
                    } else if alone_since.get_or_insert_with(Instant::now).elapsed() >= grace {
                        tracing::info!(message = %id, "no client followed the answer: cancelled");
                        break (Ended::new("interrupted", Some(run.model().to_string()), run.usage()), None);
                    }
                }
            }
        };
        let cached = run.cache_hit();
        // Cancel what still generates (and count it) before the last write.
        drop(run);
        // The last partial save lands before the final write, never after it.
        if let Some(s) = saving.take() {
            let _ = s.await;
        }
        let (end, summary) = &mut ended;
        let timings = summary.as_ref().map(|s| {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            let decode_steps = s.completion_tokens.saturating_sub(1) as f64;
            let decode_secs = s.decode_time.as_secs_f64();
            json!({
                "queued_ms": ms(s.queued),
                "prompt_ms": ms(s.prompt_time),
                "decode_ms": ms(s.decode_time),
                "first_token_ms": ms(s.queued + s.prompt_time),
                "decode_tokens_per_s": (decode_secs > 0.0).then(|| decode_steps / decode_secs),
                "cached": cached,
            })
        });
        end.cached = cached;
        end.timings = timings.clone();
        let finished = Finished {
            content: live.text(),
            tool_calls: end.tool_calls.clone(),
            status: match end.status.as_str() {
                "done" => "done",
                "error" => "error",
                _ => "interrupted",
            },
            finish_reason: end.finish_reason.clone(),
            error: end.error.clone(),
            prompt_tokens: end.prompt_tokens as i64,
            completion_tokens: end.completion_tokens as i64,
            timings,
            content_tokens: Some(end.completion_tokens as i64),
        };
        if let Err(e) = store.finish_message(id.clone(), finished).await {
            tracing::error!(message = %id, error = %e, "saving a finished answer failed");
        }
        live.end(end.clone());
        if let Some(m) = mirror {
            m.end(end);
        }
        super::lock_live(&self.inner.live).remove(&id);
        // A shutdown waits for answers, not for the extras that follow them.
        if self.inner.drain.is_draining() {
            return;
        }
        if let (Some(t), "done", Some(model)) = (titling, end.status.as_str(), &end.model) {
            self.write_title(t, model.clone()).await;
        }
        if let (Some(s), Some(model)) = (summarizing, &end.model) {
            self.write_summary(s, model.clone()).await;
        }
    }

    /// Fit a turn to the local model's context (a remote model's is not known: the whole
    /// branch goes).
    fn fit_turn(
        &self,
        branch: &[Entry],
        system: &str,
        local: bool,
        max_tokens: usize,
    ) -> Result<super::context::Fitted, TurnError> {
        if !local {
            return Ok(super::context::Fitted {
                estimated_tokens: 0,
                budget: 0,
                dropped: 0,
                included: branch.to_vec(),
            });
        }
        let system_tokens = if system.is_empty() {
            0
        } else {
            self.count_tokens(system)
        };
        fit(
            branch,
            system_tokens,
            self.inner.engine.model().config().context_length,
            max_tokens,
            self.inner.chat.context_reserve_tokens,
        )
        .map_err(|e: FitError| TurnError::Invalid {
            param: "content",
            message: e.to_string(),
        })
    }

    /// Follow `owner`'s message `id` from character `offset`: live while it generates, else
    /// its stored text and end.
    pub async fn follow(
        &self,
        owner: i64,
        id: &str,
        offset: usize,
    ) -> Result<(Message, Subscription), TurnError> {
        let message = self
            .inner
            .store
            .message(owner, id.to_string())
            .await?
            .ok_or_else(|| TurnError::NotFound("No such message".into()))?;
        let live = super::lock_live(&self.inner.live).get(id).cloned();
        if let Some(live) = live.filter(|l| l.owner == owner) {
            return Ok((message, live.subscribe(offset)));
        }
        // Not generating here: what is stored is all there is (a `streaming` row whose
        // generation is gone reads as interrupted), unless it generates on another replica.
        let status = if message.status == "streaming" {
            "interrupted".to_string()
        } else {
            message.status.clone()
        };
        let ended = Ended {
            status,
            finish_reason: message.finish_reason.clone(),
            error: message.error.clone(),
            model: message.model.clone(),
            prompt_tokens: message.prompt_tokens.unwrap_or(0) as usize,
            completion_tokens: message.completion_tokens.unwrap_or(0) as usize,
            stopped_by: None,
            cached: message
                .timings
                .as_ref()
                .and_then(|t| t.get("cached"))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            timings: message.timings.clone(),
            tool_calls: message.tool_calls.clone(),
        };
        if let (Some(relay), "streaming") = (&self.inner.relay, message.status.as_str()) {
            if let Some(sub) = relay.follow(id, offset, ended.clone()).await {
                return Ok((message, sub));
            }
        }
        let sub = Subscription::finished(&message.content, offset, ended);
        Ok((message, sub))
    }

    /// Stop `owner`'s answer `id` if it is generating here; whether it was.
    pub(super) fn cancel_here(&self, owner: i64, id: &str) -> bool {
        match super::lock_live(&self.inner.live).get(id) {
            Some(live) if live.owner == owner => {
                live.cancel();
                true
            }
            _ => false,
        }
    }

    /// Stop `owner`'s answer `id` if it is generating (here, or on another replica, which is
    /// told); whether it was.
    pub async fn cancel_answer(&self, owner: i64, id: &str) -> bool {
        if self.cancel_here(owner, id) {
            return true;
        }
        let Some(relay) = &self.inner.relay else {
            return false;
        };
        let generating = matches!(
            self.inner.store.message(owner, id.to_string()).await,
            Ok(Some(m)) if m.status == "streaming"
        ) && relay.alive(id).await;
        if generating {
            self.inner
                .events
                .publish(crate::cluster::events::Event::Cancel {
                    owner,
                    message: id.to_string(),
                });
        }
        generating
    }
}

/// Collect a subscription to its end: the whole text and how it ended.
pub async fn collect(mut sub: Subscription) -> (String, Option<Ended>) {
    let mut text = String::new();
    while let Some(ev) = sub.next().await {
        match ev {
            LiveEvent::Text(t, _) => text.push_str(&t),
            LiveEvent::End(e) => return (text, Some(e)),
        }
    }
    (text, None)
}
