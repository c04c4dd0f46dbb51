//! What follows a conversation answer, in the background and outside the caller's budget: the
//! short title the model writes after a first exchange (unless the owner renamed the
//! conversation meanwhile), and the running summary of the messages that no longer fit the
//! context (`memory.summarize`). Both are short greedy answers from the answering model.

use super::context::Entry;
use super::ChatService;
use crate::backends::{Params, Prompt};
use crate::engine::template::ChatMessage;

/// Messages dropped from a turn's context, for the running summary.
pub(super) struct Summarizing {
    pub(super) owner: i64,
    pub(super) conversation: String,
    /// The summary the turn used and the last message it covers.
    pub(super) previous: Option<(String, String)>,
    /// The branch's messages that did not fit, oldest first.
    pub(super) dropped: Vec<Entry>,
}

/// A first exchange whose conversation the model will name.
pub(super) struct Titling {
    pub(super) owner: i64,
    pub(super) conversation: String,
    /// The title given meanwhile (kept if the owner renamed the conversation since).
    pub(super) fallback: String,
    pub(super) question: String,
}

impl ChatService {
    /// After the first answer, the model writes a short title (in the background, never
    /// delaying the answer), unless the owner renamed the conversation meanwhile.
    pub(super) async fn write_title(&self, t: Titling, model: String) {
        let messages = vec![
            ChatMessage {
                role: "system".into(),
                content: "You write short, plain titles.".into(),
                ..Default::default()
            },
            ChatMessage {
                role: "user".into(),
                content: format!(
                    "Write a title of at most six words for a conversation that starts with \
                     this message. Reply with the title only.\n\n{}",
                    t.question.chars().take(2000).collect::<String>()
                ),
                ..Default::default()
            },
        ];
        let Some(text) = self.complete_quietly(&model, messages, 16).await else {
            return;
        };
        let title: String = text
            .lines()
            .map(|l| {
                l.trim()
                    .trim_matches(|c| matches!(c, '"' | '\'' | '*' | '#'))
                    .trim()
            })
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .trim_start_matches("Title:")
            .trim()
            .chars()
            .take(60)
            .collect();
        if title.is_empty() {
            return;
        }
        let store = &self.inner.store;
        match store.conversation(t.owner, t.conversation.clone()).await {
            Ok(Some(c)) if c.title == t.fallback => {
                let update = crate::store::conversations::ConversationUpdate {
                    title: Some(title),
                    ..Default::default()
                };
                if let Err(e) = store
                    .update_conversation(t.owner, t.conversation, update)
                    .await
                {
                    tracing::warn!(error = %e, "saving a written title failed");
                }
            }
            _ => {}
        }
    }

    /// A short greedy answer from `model`, outside any caller's budget (titles, summaries).
    pub(super) async fn complete_quietly(
        &self,
        model: &str,
        messages: Vec<ChatMessage>,
        max_tokens: usize,
    ) -> Option<String> {
        let mut params = Params {
            max_tokens,
            ..Params::default()
        };
        params.sampling.temperature = 0.0;
        let req = crate::backends::BackendRequest {
            prompt: Prompt::Chat(messages),
            params,
            logprobs: false,
            stream: false,
        };
        let mut generation = self.inner.router.start(model, &req, &|| {}).await.ok()?;
        while let Some(ev) = generation.recv().await {
            match ev {
                crate::backends::Event::Done(s) => return Some(s.text),
                crate::backends::Event::Error(_) => return None,
                _ => {}
            }
        }
        None
    }

    /// Fold the messages that no longer fit into the conversation's running summary.
    pub(super) async fn write_summary(&self, s: Summarizing, model: String) {
        let (previous, through) = match &s.previous {
            Some((text, through)) => (Some(text.as_str()), Some(through.as_str())),
            None => (None, None),
        };
        // Only what the summary does not cover yet.
        let start = through
            .and_then(|t| s.dropped.iter().position(|e| e.id == t))
            .map_or(0, |i| i + 1);
        let new = &s.dropped[start..];
        let Some(last) = new.last() else { return };
        let mut transcript = String::new();
        for e in new {
            let who = match e.role.as_str() {
                "user" => "User",
                "tool" => "Tool result",
                _ => "Assistant",
            };
            transcript.push_str(&format!("{who}: {}\n", e.content));
            for c in &e.tool_calls {
                transcript.push_str(&format!("Assistant called {}({})\n", c.name, c.arguments));
            }
        }
        let transcript: String = transcript.chars().take(12_000).collect();
        let earlier = previous
            .map(|p| format!("Summary so far: {p}\n\n"))
            .unwrap_or_default();
        let messages = vec![
            ChatMessage {
                role: "system".into(),
                content: "You summarise conversations briefly and accurately.".into(),
                ..Default::default()
            },
            ChatMessage {
                role: "user".into(),
                content: format!(
                    "{earlier}What was said next:\n{transcript}\nWrite the updated summary of the \
                     whole conversation in at most five sentences. Keep names, facts and requests \
                     the user gave."
                ),
                ..Default::default()
            },
        ];
        let max = self.inner.memory.summary_max_tokens;
        let Some(text) = self.complete_quietly(&model, messages, max).await else {
            return;
        };
        let text = text.trim().to_string();
        if text.is_empty() {
            return;
        }
        if let Err(e) = self
            .inner
            .store
            .set_summary(s.owner, s.conversation, text, last.id.clone())
            .await
        {
            tracing::warn!(error = %e, "saving a conversation summary failed");
        }
    }
}
