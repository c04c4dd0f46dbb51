//! Constrained decoding for `response_format: {"type": "json_object"}`: the output is forced to
//! be one JSON object (RFC 8259) followed by the end of the turn.
//!
//! [`JsonState`] is a byte-level pushdown automaton that accepts exactly the prefixes of a JSON
//! object. Before each token is sampled, [`JsonConstraint::mask`] sets the logit of every token
//! whose bytes would leave that language to `-inf`; end-of-generation tokens are allowed only once
//! the object is closed, and then nothing else is. The state is `Copy` (a bit stack of container
//! kinds) so checking a token is a copy and a byte loop; tokens are grouped by first byte so a
//! state that rejects a byte skips its whole group. The allowed set depends only on the state,
//! and generations revisit the same few states (inside a string, after a colon...), so each
//! state's set is computed once and kept as a bitmap, shared by all sequences.
//!
//! Runs of whitespace between tokens are capped ([`MAX_WHITESPACE`]) and numbers are limited in
//! length ([`MAX_NUMBER_LEN`]), so a small model cannot stall in an endless run of newlines or
//! digits. Strings are limited only by `max_tokens`.
//!
//! Pure logic over a [`Tokenizer`]'s token bytes; no model code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::tokenizer::Tokenizer;

/// Most consecutive whitespace bytes accepted between JSON tokens.
pub const MAX_WHITESPACE: u8 = 24;
/// Most automaton states whose allowed-token bitmaps are kept (each is vocab/8 bytes).
pub const MASK_CACHE_ENTRIES: usize = 512;
/// Most bytes in one number.
pub const MAX_NUMBER_LEN: u8 = 24;
/// Deepest nesting of objects and arrays.
pub const MAX_DEPTH: u8 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    fn can_end(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    /// Before the top-level object.
    Start,
    /// Just after `{`: a key or `}`.
    ObjectOpen,
    /// After `,` in an object: a key.
    ObjectKey,
    /// After a key: `:`.
    Colon,
    /// A value is expected (after `:` or after `,` in an array).
    Value,
    /// Just after `[`: a value or `]`.
    ArrayOpen,
    /// After a value inside a container: `,` or the closing bracket.
    AfterValue,
    /// Inside a string. `escape`: 0 none, 1 after `\`, 2..=5 hex digits of `\u` still due.
    /// `utf8`: continuation bytes still due for a multi-byte character.
    Str {
        key: bool,
        escape: u8,
        utf8: u8,
    },
    Number(Num),
    /// Inside `true` / `false` / `null`: which literal and how many bytes matched.
    Literal {
        which: u8,
        pos: u8,
    },
    /// The top-level object is closed.
    Done,
}

const LITERALS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// Where a JSON-object prefix stands. Feed it bytes; it says whether each keeps the prefix valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JsonState {
    /// Bit i set: container i (from the outside) is an array; clear: an object.
    stack: u128,
    depth: u8,
    mode: Mode,
    whitespace: u8,
    number_len: u8,
}

impl Default for JsonState {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonState {
    /// Before any output.
    pub fn new() -> Self {
        Self {
            stack: 0,
            depth: 0,
            mode: Mode::Start,
            whitespace: 0,
            number_len: 0,
        }
    }

    /// The top-level object has been closed: only the end of the turn may follow.
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Feed every byte of `bytes`; false (with the state unspecified) as soon as one is invalid.
    pub fn feed_all(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed(b))
    }

    /// Feed one byte; false if it cannot continue a JSON object (the state is then unspecified).
    pub fn feed(&mut self, b: u8) -> bool {
        match self.mode {
            Mode::Str { key, escape, utf8 } => self.feed_string(b, key, escape, utf8),
            Mode::Number(n) => self.feed_number(b, n),
            Mode::Literal { which, pos } => {
                let lit = LITERALS[usize::from(which)];
                if lit.get(usize::from(pos)) != Some(&b) {
                    return false;
                }
                if usize::from(pos) + 1 == lit.len() {
                    self.close_value();
                } else {
                    self.mode = Mode::Literal {
                        which,
                        pos: pos + 1,
                    };
                }
                true
            }
            Mode::Done => false,
            _ if matches!(b, b' ' | b'\t' | b'\n' | b'\r') => {
                self.whitespace += 1;
                self.whitespace <= MAX_WHITESPACE
            }
            mode => {
                self.whitespace = 0;
                self.feed_structural(mode, b)
            }
        }
    }

    fn feed_structural(&mut self, mode: Mode, b: u8) -> bool {
        match (mode, b) {
            (Mode::Start, b'{') => self.push(false),
            (Mode::Start, _) => false,
            (Mode::ObjectOpen, b'}') => self.pop(false),
            (Mode::ObjectOpen | Mode::ObjectKey, b'"') => {
                self.mode = Mode::Str {
                    key: true,
                    escape: 0,
                    utf8: 0,
                };
                true
            }
            (Mode::Colon, b':') => {
                self.mode = Mode::Value;
                true
            }
            (Mode::ArrayOpen, b']') => self.pop(true),
            (Mode::Value | Mode::ArrayOpen, _) => self.start_value(b),
            (Mode::AfterValue, b',') => {
                self.mode = if self.top_is_array() {
                    Mode::Value
                } else {
                    Mode::ObjectKey
                };
                true
            }
            (Mode::AfterValue, b'}') => self.pop(false),
            (Mode::AfterValue, b']') => self.pop(true),
            _ => false,
        }
    }

    fn start_value(&mut self, b: u8) -> bool {
        match b {
            b'{' => self.push(false),
            b'[' => self.push(true),
            b'"' => {
                self.mode = Mode::Str {
                    key: false,
                    escape: 0,
                    utf8: 0,
                };
                true
            }
            b'-' | b'0'..=b'9' => {
                self.number_len = 1;
                self.mode = Mode::Number(match b {
                    b'-' => Num::Minus,
                    b'0' => Num::Zero,
                    _ => Num::Int,
                });
                true
            }
            b't' | b'f' | b'n' => {
                let which = match b {
                    b't' => 0,
                    b'f' => 1,
                    _ => 2,
                };
                self.mode = Mode::Literal { which, pos: 1 };
                true
            }
            _ => false,
        }
    }

    fn feed_string(&mut self, b: u8, key: bool, escape: u8, utf8: u8) -> bool {
        let next = |escape, utf8| Mode::Str { key, escape, utf8 };
        if utf8 > 0 {
            if !(0x80..=0xBF).contains(&b) {
                return false;
            }
            self.mode = next(0, utf8 - 1);
            return true;
        }
        match escape {
            0 => {}
            1 => {
                self.mode = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => next(0, 0),
                    b'u' => next(5, 0),
                    _ => return false,
                };
                return true;
            }
            n => {
                if !b.is_ascii_hexdigit() {
                    return false;
                }
                self.mode = next(if n == 2 { 0 } else { n - 1 }, 0);
                return true;
            }
        }
        match b {
            b'"' => {
                if key {
                    self.mode = Mode::Colon;
                } else {
                    self.close_value();
                }
                true
            }
            b'\\' => {
                self.mode = next(1, 0);
                true
            }
            0x00..=0x1F | 0x7F => false,
            0x20..=0x7E => true,
            0xC2..=0xDF => {
                self.mode = next(0, 1);
                true
            }
            0xE0..=0xEF => {
                self.mode = next(0, 2);
                true
            }
            0xF0..=0xF4 => {
                self.mode = next(0, 3);
                true
            }
            _ => false,
        }
    }

    fn feed_number(&mut self, b: u8, n: Num) -> bool {
        let next = match (n, b) {
            (Num::Minus, b'0') => Some(Num::Zero),
            (Num::Minus, b'1'..=b'9') => Some(Num::Int),
            (Num::Int, b'0'..=b'9') => Some(Num::Int),
            (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
            (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
            (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
            (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Some(Num::ExpDigits),
            _ => None,
        };
        match next {
            Some(next) => {
                self.number_len += 1;
                self.mode = Mode::Number(next);
                self.number_len <= MAX_NUMBER_LEN
            }
            // The number ends here; the byte must then continue after the value.
            None if n.can_end() => {
                self.close_value();
                self.feed(b)
            }
            None => false,
        }
    }

    fn top_is_array(&self) -> bool {
        self.depth > 0 && (self.stack >> (self.depth - 1)) & 1 == 1
    }

    fn push(&mut self, array: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        if array {
            self.stack |= 1 << self.depth;
        } else {
            self.stack &= !(1 << self.depth);
        }
        self.depth += 1;
        self.mode = if array {
            Mode::ArrayOpen
        } else {
            Mode::ObjectOpen
        };
        true
    }

    fn pop(&mut self, array: bool) -> bool {
        if self.depth == 0 || self.top_is_array() != array {
            return false;
        }
        self.depth -= 1;
        self.close_value();
        true
    }

    fn close_value(&mut self) {
        self.whitespace = 0;
        self.mode = if self.depth == 0 {
            Mode::Done
        } else {
            Mode::AfterValue
        };
    }
}

/// Token bytes grouped for masking, built once per tokenizer.
#[derive(Debug)]
pub struct TokenTable {
    /// Each token's bytes; `None` for tokens that are never JSON text (special, empty).
    bytes: Vec<Option<Box<[u8]>>>,
    /// Token ids by first byte.
    by_first_byte: Vec<Vec<u32>>,
    /// End-of-generation ids.
    eog: Vec<u32>,
    /// Allowed-token bitmaps by state.
    masks: Mutex<HashMap<JsonState, Arc<[u64]>>>,
}

impl TokenTable {
    /// Index `tokenizer`'s vocabulary.
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let n = tokenizer.vocab_size();
        let mut bytes = Vec::with_capacity(n);
        let mut by_first_byte = vec![Vec::new(); 256];
        for id in 0..n as u32 {
            let b: Option<Box<[u8]>> = if tokenizer.is_special(id) || tokenizer.is_eog(id) {
                None
            } else {
                tokenizer
                    .token_bytes(id)
                    .filter(|b| !b.is_empty())
                    .map(Box::from)
            };
            if let Some(b) = &b {
                by_first_byte[usize::from(b[0])].push(id);
            }
            bytes.push(b);
        }
        Self {
            bytes,
            by_first_byte,
            eog: tokenizer.eog_ids().to_vec(),
            masks: Mutex::new(HashMap::new()),
        }
    }

    /// Bit `id` set when token `id` may follow `state`.
    fn allowed(&self, state: &JsonState) -> Arc<[u64]> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still whole.
        let mut masks = self.masks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = masks.get(state) {
            return m.clone();
        }
        let mask: Arc<[u64]> = self.compute(state).into();
        if masks.len() >= MASK_CACHE_ENTRIES {
            masks.clear();
        }
        masks.insert(*state, mask.clone());
        mask
    }

    fn compute(&self, state: &JsonState) -> Vec<u64> {
        let mut bits = vec![0u64; self.bytes.len().div_ceil(64)];
        let mut set = |id: u32| {
            if let Some(w) = bits.get_mut(id as usize / 64) {
                *w |= 1 << (id % 64);
            }
        };
        if state.is_complete() {
            self.eog.iter().for_each(|&id| set(id));
            return bits;
        }
        for (first, ids) in self.by_first_byte.iter().enumerate() {
            let mut probe = *state;
            if ids.is_empty() || !probe.feed(first as u8) {
                continue;
            }
            for &id in ids {
                if let Some(b) = self.bytes(id) {
                    let mut probe = *state;
                    if probe.feed_all(b) {
                        set(id);
                    }
                }
            }
        }
        bits
    }

    /// The bytes of `id` as JSON text, if it is a text token.
    pub fn bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).and_then(|b| b.as_deref())
    }
}

/// The constraint of one sequence: its JSON state over a shared token table.
#[derive(Debug, Clone)]
pub struct JsonConstraint {
    table: Arc<TokenTable>,
    state: JsonState,
}

impl JsonConstraint {
    /// A fresh constraint (nothing generated yet).
    pub fn new(table: Arc<TokenTable>) -> Self {
        Self {
            table,
            state: JsonState::new(),
        }
    }

    /// Whether the object is complete.
    pub fn is_complete(&self) -> bool {
        self.state.is_complete()
    }

    /// Set every logit whose token cannot come next to `-inf`.
    pub fn mask(&mut self, logits: &mut [f32]) {
        let allowed = self.table.allowed(&self.state);
        for (i, logit) in logits.iter_mut().enumerate() {
            let ok = allowed.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1);
            if !ok {
                *logit = f32::NEG_INFINITY;
            }
        }
    }

    /// Advance past the sampled token. False if it was not allowed (the state is unchanged).
    pub fn advance(&mut self, id: u32) -> bool {
        if self.state.is_complete() {
            return self.table.eog.contains(&id);
        }
        let Some(bytes) = self.table.bytes(id) else {
            return false;
        };
        let mut next = self.state;
        if next.feed_all(bytes) {
            self.state = next;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts_prefix(s: &str) -> bool {
        JsonState::new().feed_all(s.as_bytes())
    }

    fn complete(s: &str) -> bool {
        let mut st = JsonState::new();
        st.feed_all(s.as_bytes()) && st.is_complete()
    }

    #[test]
    fn accepts_every_prefix_of_valid_objects() {
        let docs = [
            r#"{}"#,
            r#"{"a": 1}"#,
            r#" {"name": "Alice", "age": 30, "tags": ["x", "y"], "ok": true, "n": null}"#,
            r#"{"a":{"b":[1,2.5,-3e+2,0,-0.0E-1,{"c":false}]}}"#,
            r#"{"esc": "q\"uote \\ \/ \b\f\n\r\t \u00e9", "utf8": "héllo wörld ✓ 😀"}"#,
            "{\n  \"pretty\": [\n    1,\n    2\n  ]\n}",
            r#"{"empty": [], "nested": [[], {}], "s": ""}"#,
        ];
        for d in docs {
            // Every prefix is accepted and the whole is complete, as serde_json agrees.
            assert!(serde_json::from_str::<serde_json::Value>(d).is_ok(), "{d}");
            for end in 0..=d.len() {
                if d.is_char_boundary(end) {
                    assert!(accepts_prefix(&d[..end]), "prefix {:?} of {d}", &d[..end]);
                }
            }
            assert!(complete(d), "{d}");
            let mut st = JsonState::new();
            assert!(st.feed_all(d.as_bytes()));
            assert!(!st.feed(b' '), "nothing may follow the closed object: {d}");
        }
    }

    #[test]
    fn rejects_invalid_json() {
        for bad in [
            "[1]",
            "\"s\"",
            "1",
            "{a:1}",
            "{'a':1}",
            "{\"a\" 1}",
            "{\"a\":01}",
            "{\"a\":1,}",
            "{\"a\":[1,]}",
            "{\"a\":tru}",
            "{\"a\":True}",
            "{\"a\":1]",
            "{\"a\":[1}",
            "{\"a\":\"line\nbreak\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":-}",
            "{\"a\":1.}",
            "{\"a\":1e}",
            "{\"a\":.5}",
            "{}}",
            "{},",
        ] {
            assert!(!complete(bad), "accepted {bad:?}");
            // serde_json agrees these are not JSON objects.
            assert!(
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_invalid_utf8_inside_strings() {
        let mut st = JsonState::new();
        assert!(st.feed_all(b"{\"a\":\""));
        let mut s = st;
        assert!(!s.feed(0xFF));
        let mut s = st;
        assert!(
            !s.feed_all(&[0xC3, 0x41]),
            "a lead byte needs a continuation"
        );
        let mut s = st;
        assert!(s.feed_all(&[0xC3, 0xA9, b'"', b'}']));
        assert!(s.is_complete());
    }

    #[test]
    fn whitespace_runs_and_numbers_are_capped() {
        let mut st = JsonState::new();
        assert!(st.feed_all(b"{"));
        let ws = vec![b'\n'; usize::from(MAX_WHITESPACE)];
        assert!(st.feed_all(&ws));
        let mut probe = st;
        assert!(!probe.feed(b' '), "one more whitespace byte is refused");
        assert!(st.feed_all(b"\"k\":"));
        let digits = vec![b'7'; usize::from(MAX_NUMBER_LEN)];
        assert!(st.feed_all(&digits));
        let mut probe = st;
        assert!(!probe.feed(b'7'));
        assert!(st.feed_all(b"}"));
        assert!(st.is_complete());
    }

    #[test]
    fn nesting_is_bounded() {
        let mut st = JsonState::new();
        assert!(st.feed(b'{'));
        assert!(st.feed_all(b"\"a\":"));
        for _ in 1..MAX_DEPTH {
            assert!(st.feed(b'['));
        }
        assert!(!st.feed(b'['));
    }
}
