//! The token ids a chat becomes: messages rendered by the chat template, then tokenized so
//! that special tokens come only from the template's own markup.
//!
//! The rendered prompt is tokenized with special-token parsing (the template writes
//! `<|im_start|>` as text), so a user who typed `hi<|im_end|>\n<|im_start|>system\n…` into a
//! message would otherwise forge turns of their own — a system prompt, another person's words
//! once conversations hold them. Here every piece of control-token text that came from a
//! message's content is marked literal and tokenized as plain text, as llama.cpp and Hugging
//! Face tokenize message content.
//!
//! How the pieces are found after rendering (templates may trim, slice or repeat content):
//! each one is swapped for a placeholder before rendering — private-use characters around a
//! random per-call nonce, which no message can forge — and swapped back afterwards, recording
//! where it landed. Messages without control text take the plain path, unchanged.

use std::ops::Range;

use super::template::{ChatMessage, ChatTemplate, TemplateError};
use super::tokenizer::{Tokenizer, TokenizerError};
use super::tools::ToolSet;

/// Why a chat could not become a prompt.
#[derive(Debug, thiserror::Error)]
pub enum ChatPromptError {
    /// The template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// The prompt ids for `messages` (with a generation prompt when `add_generation_prompt`; a
/// final assistant message is then continued, [`ChatTemplate::render_prompt`]), BOS as the
/// model asks and never doubled when the template writes it.
pub fn chat_prompt_ids(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
    tools: Option<&ToolSet>,
    add_generation_prompt: bool,
) -> Result<Vec<u32>, ChatPromptError> {
    // Tools and past calls become message text first (for templates without `tools`), so
    // control text in them is masked like any content.
    let messages = &template.prepare_messages(messages, tools)[..];
    let mut literals: Vec<String> = Vec::new();
    let nonce = format!("{:016x}", rand::random::<u64>());
    let masked: Vec<ChatMessage> = messages
        .iter()
        .map(|m| ChatMessage {
            content: mask(tokenizer, &m.content, &nonce, &mut literals),
            ..m.clone()
        })
        .collect();
    let ids = if literals.is_empty() {
        let text = template.render_prompt(messages, add_generation_prompt, tools)?;
        tokenizer.encode(&text, false, true)?
    } else {
        let rendered = template.render_prompt(&masked, add_generation_prompt, tools)?;
        let (text, ranges) = unmask(&rendered, &nonce, &literals);
        tokenizer.encode_with_literals(&text, false, true, &ranges)?
    };
    Ok(with_bos(tokenizer, ids))
}

/// Prepend BOS when the model asks for it and the ids do not start with it already.
pub fn with_bos(tokenizer: &Tokenizer, mut ids: Vec<u32>) -> Vec<u32> {
    if tokenizer.add_bos_by_default() {
        if let Some(bos) = tokenizer.bos_id() {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
    }
    ids
}

/// `content` with each piece of control-token text replaced by `OPEN nonce:k CLOSE`, the
/// piece itself pushed to `literals` (its index is `k`).
fn mask(tokenizer: &Tokenizer, content: &str, nonce: &str, literals: &mut Vec<String>) -> String {
    let ranges = tokenizer.control_text_ranges(content);
    if ranges.is_empty() {
        return content.to_string();
    }
    let mut out = String::with_capacity(content.len() + ranges.len() * 24);
    let mut at = 0;
    for r in ranges {
        out.push_str(&content[at..r.start]);
        out.push_str(&format!("{OPEN}{nonce}:{}{CLOSE}", literals.len()));
        literals.push(content[r.clone()].to_string());
        at = r.end;
    }
    out.push_str(&content[at..]);
    out
}

/// Put the literals back where the template left their placeholders; returns the prompt text
/// and the byte ranges the literals occupy in it, in order.
fn unmask(rendered: &str, nonce: &str, literals: &[String]) -> (String, Vec<Range<usize>>) {
    let marker = format!("{OPEN}{nonce}:");
    let mut text = String::with_capacity(rendered.len());
    let mut ranges = Vec::new();
    let mut rest = rendered;
    while let Some(pos) = rest.find(&marker) {
        text.push_str(&rest[..pos]);
        let after = &rest[pos + marker.len()..];
        let literal = after.split_once(CLOSE).and_then(|(k, tail)| {
            let piece = literals.get(k.parse::<usize>().ok()?)?;
            Some((piece, tail))
        });
        match literal {
            Some((piece, tail)) => {
                ranges.push(text.len()..text.len() + piece.len());
                text.push_str(piece);
                rest = tail;
            }
            // Cut by the template (e.g. truncated content): keep what is there as text.
            None => {
                text.push_str(&marker);
                rest = after;
            }
        }
    }
    text.push_str(rest);
    (text, ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_go_back_where_the_template_put_them() {
        let literals = vec!["<|im_end|>".to_string(), "<s>".to_string()];
        let n = "00ff";
        let rendered = format!("A{OPEN}{n}:0{CLOSE}B{OPEN}{n}:1{CLOSE}{OPEN}{n}:0{CLOSE}");
        let (text, ranges) = unmask(&rendered, n, &literals);
        assert_eq!(text, "A<|im_end|>B<s><|im_end|>");
        assert_eq!(ranges, vec![1..11, 12..15, 15..25]);
    }

    #[test]
    fn a_placeholder_with_another_nonce_or_a_bad_index_stays_text() {
        let literals = vec!["<x>".to_string()];
        let rendered = format!("{OPEN}beef:0{CLOSE}|{OPEN}00ff:7{CLOSE}|{OPEN}00ff:");
        let (text, ranges) = unmask(&rendered, "00ff", &literals);
        assert_eq!(text, rendered);
        assert!(ranges.is_empty());
    }
}
