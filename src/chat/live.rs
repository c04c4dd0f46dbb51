//! Answers being generated for conversations, followed by any number of clients. A
//! [`LiveMessage`] holds the text so far and broadcasts what comes next; a [`Subscription`]
//! reads it from any offset: the backlog first, then live text, then the end. Text is pushed
//! and subscriptions taken under one lock, so a client that joins mid-answer misses nothing
//! and sees nothing twice; one that falls behind the broadcast buffer catches up from the
//! text itself.
//!
//! Offsets count Unicode scalar values (Python's `len`, JavaScript's `[...s].length`).

use std::sync::{Arc, Mutex, PoisonError};

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};

use super::run::Usage;

/// How a conversation answer ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ended {
    /// `done`, `interrupted` or `error`.
    pub status: String,
    /// `stop` or `length` for `done`.
    pub finish_reason: Option<String>,
    /// What failed, for `error`.
    pub error: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// Tokens of the turn.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// The guard that ended it (`repetition`, `filter`), if one did.
    pub stopped_by: Option<String>,
    /// Whether the response cache answered.
    pub cached: bool,
    /// `queued_ms`, `prompt_ms`, `decode_ms`, `first_token_ms`, `decode_tokens_per_s`, for an
    /// answer that finished.
    pub timings: Option<serde_json::Value>,
    /// The calls the answer made, in OpenAI's shape (`finish_reason` is then `tool_calls`).
    pub tool_calls: Option<serde_json::Value>,
}

impl Ended {
    /// An end with `status` and the run's usage.
    pub fn new(status: &str, model: Option<String>, usage: Usage) -> Self {
        Self {
            status: status.to_string(),
            finish_reason: None,
            error: None,
            model,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            stopped_by: None,
            cached: false,
            timings: None,
            tool_calls: None,
        }
    }
}

/// What a follower of an answer receives.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    /// More text, and when its token was sampled (Unix µs; none for text read back from what
    /// was saved).
    Text(String, Option<u64>),
    /// The answer ended (the last event).
    End(Ended),
}

#[derive(Debug, Default)]
struct State {
    text: String,
    end: Option<Ended>,
}

/// An answer in flight.
#[derive(Debug)]
pub struct LiveMessage {
    /// The owner, so only they may follow or cancel it.
    pub owner: i64,
    state: Mutex<State>,
    tx: broadcast::Sender<LiveEvent>,
    cancel: Notify,
}

/// Broadcast buffer: events a follower may fall behind before it re-reads the text.
const BUFFER: usize = 256;

/// `text` from its `offset`-th character (empty past the end).
pub fn from_offset(text: &str, offset: usize) -> &str {
    match text.char_indices().nth(offset) {
        Some((at, _)) => &text[at..],
        None => "",
    }
}

impl LiveMessage {
    /// A new answer of `owner`'s.
    pub fn new(owner: i64) -> Arc<Self> {
        Arc::new(Self {
            owner,
            state: Mutex::new(State::default()),
            tx: broadcast::channel(BUFFER).0,
            cancel: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Append text (sampled at `sampled_at_us`, Unix µs) and tell the followers.
    pub fn push(&self, text: &str, sampled_at_us: Option<u64>) {
        let mut s = self.lock();
        s.text.push_str(text);
        // No follower is fine: the text is kept for whoever comes back.
        let _ = self
            .tx
            .send(LiveEvent::Text(text.to_string(), sampled_at_us));
    }

    /// The text so far.
    pub fn text(&self) -> String {
        self.lock().text.clone()
    }

    /// The end; followers get it after all text.
    pub fn end(&self, ended: Ended) {
        let mut s = self.lock();
        s.end = Some(ended.clone());
        let _ = self.tx.send(LiveEvent::End(ended));
    }

    /// How many clients follow it now.
    pub fn followers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Ask the generation to stop.
    pub fn cancel(&self) {
        self.cancel.notify_one();
    }

    /// Resolves when someone asked to stop.
    pub async fn cancelled(&self) {
        self.cancel.notified().await
    }

    /// Follow from character `offset`.
    pub fn subscribe(self: &Arc<Self>, offset: usize) -> Subscription {
        let s = self.lock();
        let backlog = from_offset(&s.text, offset).to_string();
        Subscription {
            sent: offset.min(s.text.chars().count()) + backlog.chars().count(),
            backlog: Some(backlog),
            end: s.end.clone(),
            rx: s.end.is_none().then(|| self.tx.subscribe()),
            live: Some(self.clone()),
            finished: false,
            remote: None,
        }
    }
}

/// One client following an answer (live here, generating on another replica, or finished).
pub struct Subscription {
    backlog: Option<String>,
    /// Characters delivered (or queued in `backlog`) so far.
    sent: usize,
    end: Option<Ended>,
    rx: Option<broadcast::Receiver<LiveEvent>>,
    live: Option<Arc<LiveMessage>>,
    finished: bool,
    /// An answer generating on another replica ([`super::relay`]).
    remote: Option<BoxStream<'static, LiveEvent>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("sent", &self.sent)
            .field("remote", &self.remote.is_some())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Events from elsewhere, in order, ending with [`LiveEvent::End`].
    pub fn from_stream(events: BoxStream<'static, LiveEvent>) -> Self {
        Self {
            backlog: None,
            sent: 0,
            end: None,
            rx: None,
            live: None,
            finished: false,
            remote: Some(events),
        }
    }

    /// A finished answer's text from `offset`, then its end.
    pub fn finished(text: &str, offset: usize, ended: Ended) -> Self {
        Self {
            backlog: Some(from_offset(text, offset).to_string()),
            sent: 0,
            end: Some(ended),
            rx: None,
            live: None,
            finished: false,
            remote: None,
        }
    }

    /// The next event; `None` after the end.
    pub async fn next(&mut self) -> Option<LiveEvent> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(remote) = self.remote.as_mut() {
                let ev = remote.next().await;
                self.finished = !matches!(ev, Some(LiveEvent::Text(..)));
                return ev;
            }
            if let Some(backlog) = self.backlog.take() {
                if !backlog.is_empty() {
                    return Some(LiveEvent::Text(backlog, None));
                }
            }
            let Some(rx) = self.rx.as_mut() else {
                self.finished = true;
                return self.end.take().map(LiveEvent::End);
            };
            match rx.recv().await {
                Ok(LiveEvent::Text(t, at)) => {
                    self.sent += t.chars().count();
                    return Some(LiveEvent::Text(t, at));
                }
                Ok(LiveEvent::End(e)) => {
                    self.finished = true;
                    return Some(LiveEvent::End(e));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the buffer: re-read the text from where this client is.
                    let Some(live) = self.live.clone() else {
                        self.finished = true;
                        return None;
                    };
                    *self = live.subscribe(self.sent);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.finished = true;
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended() -> Ended {
        Ended::new("done", None, Usage::default())
    }

    async fn drain(mut s: Subscription) -> (String, Option<Ended>) {
        let mut text = String::new();
        while let Some(ev) = s.next().await {
            match ev {
                LiveEvent::Text(t, _) => text.push_str(&t),
                LiveEvent::End(e) => return (text, Some(e)),
            }
        }
        (text, None)
    }

    #[tokio::test]
    async fn a_follower_joining_mid_answer_gets_the_rest_exactly_once() {
        let live = LiveMessage::new(1);
        live.push("Héllo", None);
        let late = live.subscribe(2);
        live.push(", world", None);
        live.end(ended());
        let (text, end) = drain(late).await;
        assert_eq!(text, "llo, world");
        assert_eq!(end.expect("end").status, "done");
    }

    #[tokio::test]
    async fn a_follower_that_lags_catches_up_from_the_text() {
        let live = LiveMessage::new(1);
        let slow = live.subscribe(0);
        let mut expected = String::new();
        for i in 0..(BUFFER * 3) {
            let piece = format!("{i} ");
            expected.push_str(&piece);
            live.push(&piece, None);
        }
        live.end(ended());
        let (text, end) = drain(slow).await;
        assert_eq!(text, expected);
        assert!(end.is_some());
    }

    #[tokio::test]
    async fn finished_answers_replay_from_an_offset() {
        let (text, end) = drain(Subscription::finished("abcdef", 4, ended())).await;
        assert_eq!(text, "ef");
        assert!(end.is_some());
        assert_eq!(from_offset("abc", 10), "");
    }
}
