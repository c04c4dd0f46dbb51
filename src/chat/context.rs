//! Fitting a conversation turn to the model's context window: the system prompt, then the
//! newest messages of the active branch that fit in `context − max_tokens − reserve`; older
//! ones are dropped, oldest first. Counts come from each message's cached token count (the
//! real tokenizer, once per message), plus a fixed allowance per message for the chat
//! template's role markers, so a turn never re-tokenizes the history. A tool result whose
//! call was dropped goes with it. Pure logic.

use crate::engine::tools::ToolCall;

/// One message of the branch, newest last.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The message id.
    pub id: String,
    /// `user`, `assistant`, `tool` or `system`.
    pub role: String,
    /// Its text.
    pub content: String,
    /// The calls an assistant message made.
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
    /// Tokens of `content` (and its calls).
    pub tokens: usize,
}

/// What goes into a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The messages that fit, oldest first (the newest is always there).
    pub included: Vec<Entry>,
    /// How many older messages were left out.
    pub dropped: usize,
    /// Tokens the prompt is estimated to take (system prompt, messages, template markers).
    pub estimated_tokens: usize,
    /// The budget they had to fit in.
    pub budget: usize,
}

/// Tokens allowed per message for the chat template's markers (`<|im_start|>role\n`,
/// `<|im_end|>\n` and the like).
pub const PER_MESSAGE_OVERHEAD: usize = 8;

/// Why a turn cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    /// The newest message (with the system prompt) alone is over the budget.
    #[error(
        "the message takes about {needed} tokens with the system prompt, but this model's context \
         leaves {budget} for it ({context} tokens of context − {max_tokens} max_tokens − {reserve} \
         reserved): shorten it or lower max_tokens"
    )]
    TooLong {
        /// Tokens needed.
        needed: usize,
        /// Tokens available.
        budget: usize,
        /// The model's context.
        context: usize,
        /// The turn's `max_tokens`.
        max_tokens: usize,
        /// `chat.context_reserve_tokens`.
        reserve: usize,
    },
}

/// Fit `branch` (newest last) after `system_tokens` of system prompt into a context of
/// `context` tokens that must leave `max_tokens` to generate and `reserve` spare.
pub fn fit(
    branch: &[Entry],
    system_tokens: usize,
    context: usize,
    max_tokens: usize,
    reserve: usize,
) -> Result<Fitted, FitError> {
    let budget = context.saturating_sub(max_tokens + reserve);
    let cost = |e: &Entry| e.tokens + PER_MESSAGE_OVERHEAD;
    let mut used = if system_tokens > 0 {
        system_tokens + PER_MESSAGE_OVERHEAD
    } else {
        0
    };
    let mut start = branch.len();
    for (i, e) in branch.iter().enumerate().rev() {
        if used + cost(e) > budget {
            if i + 1 == branch.len() {
                return Err(FitError::TooLong {
                    needed: used + cost(e),
                    budget,
                    context,
                    max_tokens,
                    reserve,
                });
            }
            break;
        }
        used += cost(e);
        start = i;
    }
    // A tool result without the call it answers would only confuse the model.
    while start + 1 < branch.len() && branch[start].role == "tool" {
        used -= cost(&branch[start]);
        start += 1;
    }
    Ok(Fitted {
        included: branch[start..].to_vec(),
        dropped: start,
        estimated_tokens: used,
        budget,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize, tokens: usize) -> Entry {
        Entry {
            id: format!("m{i}"),
            role: if i.is_multiple_of(2) {
                "user"
            } else {
                "assistant"
            }
            .into(),
            content: String::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            tokens,
        }
    }

    #[test]
    fn tool_results_go_with_the_call_they_answer() {
        // user, assistant (a call), tool, tool, assistant, user: room for the last four only.
        let mut branch: Vec<_> = (0..6).map(|i| entry(i, 92)).collect();
        for e in &mut branch[2..4] {
            e.role = "tool".into();
            e.tool_call_id = Some("call_1".into());
        }
        branch[4].role = "assistant".into();
        branch[5].role = "user".into();
        let f = fit(&branch, 0, 500, 100, 0).expect("fits");
        assert_eq!(
            f.dropped, 4,
            "the results of a dropped call are dropped too"
        );
        assert_eq!(f.included.first().map(|e| e.id.as_str()), Some("m4"));
        assert_eq!(f.estimated_tokens, 200);
        // A result that is the newest message stays, whatever else goes.
        let f = fit(&branch[..4], 0, 300, 100, 0).expect("fits");
        assert_eq!(f.included.len(), 1);
        assert_eq!(f.included[0].id, "m3");
    }

    #[test]
    fn everything_fits_when_there_is_room() {
        let branch: Vec<_> = (0..4).map(|i| entry(i, 10)).collect();
        let f = fit(&branch, 20, 2048, 256, 64).expect("fits");
        assert_eq!(f.included.len(), 4);
        assert_eq!(f.dropped, 0);
        assert_eq!(f.estimated_tokens, 20 + 8 + 4 * 18);
    }

    #[test]
    fn the_oldest_messages_are_dropped_first() {
        let branch: Vec<_> = (0..10).map(|i| entry(i, 92)).collect();
        // Budget 1000 - 100 - 0 = 900; each message costs 100: nine fit.
        let f = fit(&branch, 0, 1000, 100, 0).expect("fits");
        assert_eq!(f.dropped, 1);
        assert_eq!(f.included.first().map(|e| e.id.as_str()), Some("m1"));
        assert_eq!(f.included.last().map(|e| e.id.as_str()), Some("m9"));
        assert!(f.estimated_tokens <= f.budget);
    }

    #[test]
    fn a_newest_message_that_cannot_fit_is_an_error_naming_the_limits() {
        let branch = vec![entry(0, 10), entry(1, 5000)];
        let err = fit(&branch, 30, 2048, 256, 64).expect_err("too long");
        let FitError::TooLong { budget, .. } = &err;
        assert_eq!(*budget, 2048 - 256 - 64);
        assert!(err.to_string().contains("2048 tokens of context"), "{err}");
    }
}
