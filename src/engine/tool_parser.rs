//! The tool calls a model writes, read back out of its answer as it streams: Hermes/Qwen
//! `<tool_call>{json}</tool_call>` (one or several), SmolLM2's `<tool_call>[{json}, …]
//! </tool_call>`, Mistral's `[TOOL_CALLS][{json}, …]`, and Llama 3.x's JSON — after
//! `<|python_tag|>` or as the whole answer, calls separated by `;`, `parameters` for
//! `arguments`. A call's name is announced once it is complete; its arguments then stream byte
//! for byte as the model writes them. Text outside calls is content.
//!
//! Pure logic: no I/O.

use serde_json::Value;

use super::tools::{new_call_id, ToolCall};

/// What the parser found in a piece of the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolDelta {
    /// Content.
    Text(String),
    /// A call begins: its index among the answer's calls, id and name.
    Start {
        /// Its index.
        index: usize,
        /// `call_…`.
        id: String,
        /// The function.
        name: String,
    },
    /// More of a call's arguments text.
    Args {
        /// The call's index.
        index: usize,
        /// The new text.
        fragment: String,
    },
}

const OPENERS: [(&str, Option<&str>); 3] = [
    ("<tool_call>", Some("</tool_call>")),
    ("[TOOL_CALLS]", None),
    ("<|python_tag|>", None),
];

/// Where the parser is in the answer.
#[derive(Debug)]
enum Mode {
    /// Content, watching for an opener.
    Text,
    /// Inside a call block; `closer` ends it (Hermes), else it ends with its JSON.
    Call {
        scan: Box<Scan>,
        closer: Option<&'static str>,
        raw: String,
    },
    /// After a block: whitespace, then `closer` (or `;` and another call for Llama's JSON).
    After { closer: Option<&'static str> },
}

/// The JSON of one call block: a call object, or a list of them.
#[derive(Debug, Default)]
struct Scan {
    /// `[` seen first: calls are the list's objects.
    list: Option<bool>,
    depth: usize,
    in_str: bool,
    esc: bool,
    /// The current call object's text.
    obj: String,
    /// At the call object's own level: the key being read, the last key, and whether a key
    /// (not a value) comes next.
    key: Option<String>,
    last_key: String,
    expect_key: bool,
    /// The value of `name`, being read (raw JSON string body).
    name_raw: Option<String>,
    name: Option<String>,
    /// The arguments value: streaming (depth where it started), finished.
    args_depth: Option<usize>,
    args_done: bool,
    /// The announced call's index, once its name is known and its arguments are an object.
    started: Option<usize>,
}

/// Turns an answer into content and tool calls as it streams (see the module docs).
#[derive(Debug)]
pub struct ToolCallParser {
    mode: Mode,
    /// Text not yet decided (a possible opener's beginning).
    held: String,
    /// Nothing but whitespace given out as content yet (a bare Llama JSON call may follow).
    at_start: bool,
    max_calls: usize,
    calls: Vec<ToolCall>,
    content: String,
    /// Whitespace not given out yet.
    pending_ws: String,
}

impl ToolCallParser {
    /// A parser keeping at most `max_calls` calls (later ones are dropped).
    pub fn new(max_calls: usize) -> Self {
        Self {
            mode: Mode::Text,
            held: String::new(),
            at_start: true,
            max_calls: max_calls.max(1),
            calls: Vec::new(),
            content: String::new(),
            pending_ws: String::new(),
        }
    }

    /// The calls so far.
    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    /// The content so far.
    pub fn content(&self) -> &str {
        &self.content
    }

    /// Feed more of the answer.
    pub fn push(&mut self, text: &str) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        self.held.push_str(text);
        let input = std::mem::take(&mut self.held);
        self.run(&input, &mut out, false);
        self.record(out)
    }

    /// The answer ended: what was held back.
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        let input = std::mem::take(&mut self.held);
        self.run(&input, &mut out, true);
        if let Mode::Call { scan, raw, .. } = std::mem::replace(&mut self.mode, Mode::Text) {
            // An unfinished block: content, unless a call of it was announced.
            if scan.started.is_none() {
                self.text(&raw, &mut out);
            }
        }
        // Whitespace around calls is not content.
        let ws = std::mem::take(&mut self.pending_ws);
        if self.calls.is_empty() && !ws.is_empty() {
            self.content.push_str(&ws);
            out.push(ToolDelta::Text(ws));
        }
        self.record(out)
    }

    /// Adjacent deltas of one kind joined; each call's arguments text kept.
    fn record(&mut self, deltas: Vec<ToolDelta>) -> Vec<ToolDelta> {
        let out = merge(deltas);
        for d in &out {
            if let ToolDelta::Args { index, fragment } = d {
                if let Some(c) = self.calls.get_mut(*index) {
                    c.arguments.push_str(fragment);
                }
            }
        }
        out
    }

    /// Content; whitespace alone waits for what follows it (dropped if calls follow).
    fn text(&mut self, s: &str, out: &mut Vec<ToolDelta>) {
        if s.trim().is_empty() {
            self.pending_ws.push_str(s);
            return;
        }
        self.at_start = false;
        // Trailing whitespace waits too, so how the text is split never changes the content.
        let body = s.trim_end();
        let tail = s[body.len()..].to_string();
        let s = format!("{}{body}", std::mem::take(&mut self.pending_ws));
        self.pending_ws = tail;
        self.content.push_str(&s);
        out.push(ToolDelta::Text(s));
    }

    fn run(&mut self, mut input: &str, out: &mut Vec<ToolDelta>, last: bool) {
        while !input.is_empty() {
            match &mut self.mode {
                Mode::Text => {
                    let found = OPENERS
                        .iter()
                        .filter_map(|(o, c)| input.find(o).map(|p| (p, *o, *c)))
                        .min_by_key(|(p, ..)| *p);
                    let bare = self.at_start && input.trim_start().starts_with('{');
                    if let Some((p, opener, closer)) = found.filter(|_| !bare) {
                        self.text(&input[..p], out);
                        input = &input[p + opener.len()..];
                        self.mode = Mode::Call {
                            scan: Box::default(),
                            closer,
                            raw: opener.to_string(),
                        };
                        continue;
                    }
                    if bare {
                        let body = input.trim_start();
                        match bare_call_prefix(body) {
                            Some(true) => {
                                self.text(&input[..input.len() - body.len()], out);
                                input = body;
                                self.mode = Mode::Call {
                                    scan: Box::default(),
                                    closer: None,
                                    raw: String::new(),
                                };
                                continue;
                            }
                            None if !last => {
                                self.held = input.to_string();
                                return;
                            }
                            _ => {}
                        }
                        self.at_start = false;
                        continue;
                    }
                    let keep = if last { 0 } else { held_back(input) };
                    self.text(&input[..input.len() - keep], out);
                    self.held = input[input.len() - keep..].to_string();
                    return;
                }
                Mode::Call { .. } => {
                    let used = self.scan(input, out);
                    input = &input[used..];
                }
                Mode::After { closer } => {
                    let trimmed = input.trim_start();
                    if trimmed.is_empty() {
                        if !last {
                            self.held = input.to_string();
                        }
                        return;
                    }
                    let closer = *closer;
                    match closer {
                        Some(c) if trimmed.starts_with(c) => {
                            input = &trimmed[c.len()..];
                            self.mode = Mode::Text;
                        }
                        Some(c) if c.starts_with(trimmed) && !last => {
                            self.held = input.to_string();
                            return;
                        }
                        None if trimmed.starts_with(';') => {
                            input = trimmed[1..].trim_start();
                            if input.is_empty() && !last {
                                self.held = ";".to_string();
                                return;
                            }
                            if input.starts_with('{') {
                                self.mode = Mode::Call {
                                    scan: Box::default(),
                                    closer: None,
                                    raw: String::new(),
                                };
                            } else {
                                self.mode = Mode::Text;
                                self.text(";", out);
                            }
                        }
                        _ => self.mode = Mode::Text,
                    }
                }
            }
        }
    }

    /// Scan call JSON; returns the bytes used (all of `input`, or up to the block's end).
    fn scan(&mut self, input: &str, out: &mut Vec<ToolDelta>) -> usize {
        let Mode::Call {
            mut scan,
            closer,
            mut raw,
        } = std::mem::replace(&mut self.mode, Mode::Text)
        else {
            return input.len(); // only called in a call
        };
        let mut args = String::new();
        for (at, ch) in input.char_indices() {
            let used = at + ch.len_utf8();
            raw.push(ch);
            let s = &mut *scan;
            if s.list.is_none() {
                match ch {
                    c if c.is_whitespace() => continue,
                    '[' => {
                        s.list = Some(true);
                        s.depth = 1;
                        continue;
                    }
                    '{' => s.list = Some(false),
                    _ => {
                        // Not JSON after all: the block is content.
                        self.text(&raw, out);
                        return used;
                    }
                }
            }
            let base = usize::from(s.list == Some(true));
            if s.depth == base && !s.in_str {
                // Between a list's objects.
                match ch {
                    '{' => {}
                    ']' if base == 1 => {
                        flush_args(&mut args, s.started, out);
                        self.mode = Mode::After { closer };
                        return used;
                    }
                    _ => continue, // `,` and whitespace
                }
            }
            s.obj.push(ch);
            let level = s.depth; // before this character
            let mut streamed = s.args_depth.is_some() && !s.args_done && s.started.is_some();
            if s.in_str {
                if s.esc {
                    s.esc = false;
                } else if ch == '\\' {
                    s.esc = true;
                } else if ch == '"' {
                    s.in_str = false;
                }
                if level == base + 1 {
                    if let Some(k) = &mut s.key {
                        if s.in_str {
                            k.push(ch);
                        } else {
                            s.last_key = std::mem::take(k);
                            s.key = None;
                        }
                    } else if let Some(n) = &mut s.name_raw {
                        if s.in_str {
                            n.push(ch);
                        } else {
                            let body = std::mem::take(n);
                            s.name_raw = None;
                            s.name = serde_json::from_str::<String>(&format!("\"{body}\"")).ok();
                        }
                    }
                }
            } else {
                match ch {
                    '"' => {
                        s.in_str = true;
                        if level == base + 1 && s.expect_key {
                            s.key = Some(String::new());
                            s.expect_key = false;
                        } else if level == base + 1 && s.last_key == "name" {
                            s.name_raw = Some(String::new());
                        }
                    }
                    '{' | '[' => {
                        let is_args = level == base + 1
                            && s.args_depth.is_none()
                            && (s.last_key == "arguments" || s.last_key == "parameters");
                        if is_args {
                            s.args_depth = Some(level);
                            if let (None, Some(name)) = (s.started, &s.name) {
                                s.started = self.announce(name.clone(), out);
                            }
                            streamed = s.started.is_some();
                        }
                        s.depth += 1;
                        s.expect_key = ch == '{' && level == base;
                    }
                    '}' | ']' => {
                        s.depth = s.depth.saturating_sub(1);
                        if s.args_depth == Some(s.depth) {
                            s.args_done = true;
                        }
                    }
                    ',' if level == base + 1 => s.expect_key = true,
                    _ => {}
                }
            }
            if streamed {
                args.push(ch);
            }
            if s.depth == base && !s.in_str {
                // The call object closed.
                flush_args(&mut args, s.started, out);
                let obj = std::mem::take(&mut s.obj);
                let started = s.started;
                *s = Scan {
                    list: s.list,
                    depth: base,
                    ..Scan::default()
                };
                self.end_call(&obj, started, out);
                if base == 0 {
                    self.mode = Mode::After { closer };
                    return used;
                }
            }
        }
        flush_args(&mut args, scan.started, out);
        self.mode = Mode::Call { scan, closer, raw };
        input.len()
    }

    /// A new call of `name`, unless the answer has made as many as it may: its index.
    fn announce(&mut self, name: String, out: &mut Vec<ToolDelta>) -> Option<usize> {
        if self.calls.len() >= self.max_calls {
            return None;
        }
        let index = self.calls.len();
        let id = new_call_id();
        out.push(ToolDelta::Start {
            index,
            id: id.clone(),
            name: name.clone(),
        });
        self.calls.push(ToolCall {
            id,
            name,
            arguments: String::new(),
        });
        Some(index)
    }

    /// A call object is complete: record what streamed, or announce it whole.
    fn end_call(&mut self, obj: &str, started: Option<usize>, out: &mut Vec<ToolDelta>) {
        if started.is_some() {
            return; // announced already; its arguments streamed
        }
        let Ok(Value::Object(o)) = serde_json::from_str::<Value>(obj) else {
            return; // not a call: dropped, as a malformed block
        };
        let Some(name) = o.get("name").and_then(Value::as_str) else {
            return;
        };
        let arguments = match o.get("arguments").or_else(|| o.get("parameters")) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "{}".to_string(),
        };
        if let Some(index) = self.announce(name.to_string(), out) {
            // Recorded from the delta, as streamed arguments are.
            out.push(ToolDelta::Args {
                index,
                fragment: arguments,
            });
        }
    }
}

/// Give out streamed arguments text of call `index`.
fn flush_args(args: &mut String, index: Option<usize>, out: &mut Vec<ToolDelta>) {
    if let (Some(index), false) = (index, args.is_empty()) {
        out.push(ToolDelta::Args {
            index,
            fragment: std::mem::take(args),
        });
    }
}

/// Whether `s` (starting with `{`) is a bare call `{"name"…`: yes, no, or not known yet.
fn bare_call_prefix(s: &str) -> Option<bool> {
    let rest = s[1..].trim_start();
    let want = "\"name\"";
    if rest.len() >= want.len() {
        Some(rest.starts_with(want))
    } else if want.starts_with(rest) {
        None
    } else {
        Some(false)
    }
}

/// How many bytes at the end of `s` could begin an opener.
fn held_back(s: &str) -> usize {
    let mut keep = 0;
    for (o, _) in OPENERS {
        for n in (1..o.len()).rev() {
            if n <= s.len() && s.is_char_boundary(s.len() - n) && s.ends_with(&o[..n]) {
                keep = keep.max(n);
                break;
            }
        }
    }
    keep
}

/// Adjacent deltas of one kind joined.
fn merge(deltas: Vec<ToolDelta>) -> Vec<ToolDelta> {
    let mut out: Vec<ToolDelta> = Vec::with_capacity(deltas.len());
    for d in deltas {
        match (out.last_mut(), d) {
            (Some(ToolDelta::Text(a)), ToolDelta::Text(b)) => a.push_str(&b),
            (
                Some(ToolDelta::Args {
                    index: i,
                    fragment: a,
                }),
                ToolDelta::Args {
                    index: j,
                    fragment: b,
                },
            ) if *i == j => a.push_str(&b),
            (_, d) => out.push(d),
        }
    }
    out
}
