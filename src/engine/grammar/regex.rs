//! JSON strings as grammars: any string, a string matching a `pattern` (a regex, parsed with
//! `regex-syntax`), or one in a `format` (`date`, `time`, `date-time`, `uuid`, `email`).
//!
//! The grammar is over the string's JSON text, so every character is written the way JSON
//! must write it: `"` and `\` escaped, `\n`, `\t`, `\r` as escapes, other control characters as
//! `\u00XX`. Classes keep their ASCII part exactly; their non-ASCII part becomes UTF-8 byte
//! ranges when it is small or everything, and is otherwise dropped — the output then uses a
//! subset of what the pattern allows, never something outside it. Anchors are honoured at the
//! ends of the pattern (an unanchored side may hold any text, as JSON Schema's search semantics
//! say); look-arounds elsewhere and word boundaries are refused.

use regex_syntax::hir::{Class, Hir, HirKind, Look};
use regex_syntax::utf8::Utf8Sequences;

use super::{Builder, ByteSet, Elem, GrammarError};

/// Most UTF-8 byte-range sequences kept for a class's non-ASCII part.
const MAX_UTF8_SEQUENCES: usize = 64;

/// Why a pattern cannot be a grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Not a regex.
    #[error("invalid pattern: {0}")]
    Syntax(String),
    /// A construct outside the supported subset.
    #[error("unsupported in a pattern: {0}")]
    Unsupported(&'static str),
    /// Too large.
    #[error(transparent)]
    Grammar(#[from] GrammarError),
}

/// RFC 3339 `full-date`, days valid in every year (29 February is left out).
macro_rules! date {
    () => {
        r"[12][0-9]{3}-(((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8]))|((0[13-9]|1[0-2])-(29|30))|((0[13578]|1[02])-31))"
    };
}

/// RFC 3339 `full-time` (no leap second).
macro_rules! time {
    () => {
        r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
    };
}

/// The regex of each supported `format`.
pub fn format_pattern(format: &str) -> Option<&'static str> {
    Some(match format {
        "date" => concat!("^", date!(), "$"),
        "time" => concat!("^", time!(), "$"),
        "date-time" => concat!("^", date!(), "T", time!(), "$"),
        "uuid" => r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        // Bounded parts (a local part of at most 58 characters, within RFC 5321's 64; labels
        // of at most 22), so a small model cannot run on in an address.
        "email" => {
            r"^[a-zA-Z0-9_%+-]{1,24}(\.[a-zA-Z0-9_%+-]{1,16}){0,2}@[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?){0,2}\.[a-zA-Z]{2,12}$"
        }
        _ => return None,
    })
}

/// A JSON string (quotes included) whose value matches `pattern`.
pub fn string_matching(b: &mut Builder, pattern: &str) -> Result<Elem, PatternError> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .map_err(|e| PatternError::Syntax(e.to_string()))?;
    let body = top(b, &hir, false, false)?;
    let mut elems = b.lit(b"\"");
    elems.push(body);
    elems.extend(b.lit(b"\""));
    Ok(b.seq(elems)?)
}

/// Any JSON string (quotes included), of `min..=max` characters.
pub fn any_string(b: &mut Builder, min: usize, max: Option<usize>) -> Result<Elem, GrammarError> {
    let ch = any_char(b)?;
    let body = b.rep(ch, min, max)?;
    let mut elems = b.lit(b"\"");
    elems.push(body);
    elems.extend(b.lit(b"\""));
    b.seq(elems)
}

/// One character of a JSON string: unescaped, an escape, or a UTF-8 sequence.
pub fn any_char(b: &mut Builder) -> Result<Elem, GrammarError> {
    let mut plain = ByteSet::range(0x20, 0x7F);
    plain.remove(b'"');
    plain.remove(b'\\');
    let hex = {
        let mut h = ByteSet::range(b'0', b'9');
        h = h.union(ByteSet::range(b'a', b'f'));
        h.union(ByteSet::range(b'A', b'F'))
    };
    let mut alts = vec![vec![b.class(plain)]];
    let mut simple = ByteSet::default();
    for c in *br#""\/bfnrt"# {
        simple.insert(c);
    }
    alts.push(vec![b.class(ByteSet::byte(b'\\')), b.class(simple)]);
    let h = b.class(hex);
    let mut u = b.lit(b"\\u");
    u.extend([h; 4]);
    alts.push(u);
    alts.extend(utf8_ranges(b, 0x80, 0x10FFFF));
    b.alt(alts)
}

/// The UTF-8 byte sequences of `lo..=hi` (scalar values), as alternatives.
fn utf8_ranges(b: &mut Builder, lo: u32, hi: u32) -> Vec<Vec<Elem>> {
    let (Some(lo), Some(hi)) = (char::from_u32(lo), char::from_u32(hi)) else {
        return Vec::new();
    };
    Utf8Sequences::new(lo, hi)
        .map(|seq| {
            seq.as_slice()
                .iter()
                .map(|r| b.class(ByteSet::range(r.start, r.end)))
                .collect()
        })
        .collect()
}

/// How JSON writes `c` inside a string.
fn json_char(b: &mut Builder, c: char) -> Vec<Elem> {
    let text = match c {
        '"' => "\\\"".to_string(),
        '\\' => "\\\\".to_string(),
        '\n' => "\\n".to_string(),
        '\t' => "\\t".to_string(),
        '\r' => "\\r".to_string(),
        c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
        c => c.to_string(),
    };
    b.lit(text.as_bytes())
}

/// A whole pattern: each branch anchored (or not) at its own ends; an unanchored end may hold
/// any text. `start`/`end`: whether an enclosing part already anchored that end.
fn top(b: &mut Builder, hir: &Hir, start: bool, end: bool) -> Result<Elem, PatternError> {
    let is_start = |h: &Hir| matches!(h.kind(), HirKind::Look(Look::Start | Look::StartLF));
    let is_end = |h: &Hir| matches!(h.kind(), HirKind::Look(Look::End | Look::EndLF));
    let parts: Vec<&Hir> = match hir.kind() {
        HirKind::Alternation(alts) => {
            let alts = alts
                .iter()
                .map(|h| top(b, h, start, end).map(|e| vec![e]))
                .collect::<Result<_, _>>()?;
            return Ok(b.alt(alts)?);
        }
        HirKind::Capture(cap) => return top(b, &cap.sub, start, end),
        HirKind::Concat(parts) => parts.iter().collect(),
        _ => vec![hir],
    };
    let (mut from, mut to) = (0, parts.len());
    let mut start = start;
    while from < to && is_start(parts[from]) {
        start = true;
        from += 1;
    }
    let mut end = end;
    while to > from && is_end(parts[to - 1]) {
        end = true;
        to -= 1;
    }
    if to == from + 1 && parts.len() > 1 {
        // `^(a|b$)`: the one part left decides its own branches' ends.
        if let HirKind::Alternation(_) | HirKind::Capture(_) = parts[from].kind() {
            return top(b, parts[from], start, end);
        }
    }
    let mut elems = Vec::new();
    let any = any_char(b)?;
    if !start {
        elems.push(b.star(vec![any])?);
    }
    for h in &parts[from..to] {
        elems.extend(node(b, h)?);
    }
    if !end {
        elems.push(b.star(vec![any])?);
    }
    Ok(b.seq(elems)?)
}

fn node(b: &mut Builder, hir: &Hir) -> Result<Vec<Elem>, PatternError> {
    Ok(match hir.kind() {
        HirKind::Empty => Vec::new(),
        HirKind::Literal(lit) => {
            let text = String::from_utf8_lossy(&lit.0).into_owned();
            text.chars().flat_map(|c| json_char(b, c)).collect()
        }
        HirKind::Class(class) => vec![class_elem(b, class)?],
        HirKind::Look(_) => {
            return Err(PatternError::Unsupported(
                "anchors inside the pattern and word boundaries",
            ))
        }
        HirKind::Repetition(rep) => {
            let sub = node(b, &rep.sub)?;
            let x = b.seq(sub)?;
            vec![b.rep(x, rep.min as usize, rep.max.map(|m| m as usize))?]
        }
        HirKind::Capture(cap) => node(b, &cap.sub)?,
        HirKind::Concat(parts) => {
            let mut out = Vec::new();
            for p in parts {
                out.extend(node(b, p)?);
            }
            out
        }
        HirKind::Alternation(alts) => {
            let alts = alts.iter().map(|h| node(b, h)).collect::<Result<_, _>>()?;
            vec![b.alt(alts)?]
        }
    })
}

fn class_elem(b: &mut Builder, class: &Class) -> Result<Elem, PatternError> {
    let ranges: Vec<(u32, u32)> = match class {
        Class::Unicode(c) => c
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        Class::Bytes(c) => c
            .iter()
            .filter(|r| r.start() < 0x80)
            .map(|r| (u32::from(r.start()), u32::from(r.end().min(0x7F))))
            .collect(),
    };
    let mut ascii = ByteSet::default();
    let mut alts = Vec::new();
    let mut wide = Vec::new();
    for &(lo, hi) in &ranges {
        for c in lo..=hi.min(0x7F) {
            let ch = char::from_u32(c).expect("ASCII");
            if (0x20..0x80).contains(&c) && ch != '"' && ch != '\\' {
                ascii.insert(c as u8);
            } else if matches!(ch, '"' | '\\' | '\n' | '\t' | '\r') {
                alts.push(json_char(b, ch));
            }
        }
        if hi >= 0x80 {
            wide.extend(utf8_ranges(b, lo.max(0x80), hi));
        }
    }
    if !ascii.is_empty() {
        alts.insert(0, vec![b.class(ascii)]);
    }
    if wide.len() <= MAX_UTF8_SEQUENCES {
        alts.extend(wide);
    }
    if alts.is_empty() {
        return Err(PatternError::Unsupported(
            "a class with no character JSON can write",
        ));
    }
    Ok(b.alt(alts)?)
}

#[cfg(test)]
mod tests {
    use super::super::Grammar;
    use super::*;
    use std::sync::Arc;

    fn string_grammar(pattern: &str) -> Arc<Grammar> {
        let mut b = Builder::new(1_000_000);
        let root = string_matching(&mut b, pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        Arc::new(b.build(root))
    }

    fn accepts(g: &Arc<Grammar>, value: &str) -> bool {
        let json = serde_json::to_string(value).unwrap();
        g.start()
            .feed_all(g, json.as_bytes())
            .is_some_and(|st| st.is_complete())
    }

    #[test]
    fn patterns_accept_what_the_regex_crate_matches() {
        let samples = [
            "",
            "a",
            "abc",
            "ABC-123",
            "2024-01-31",
            "x\"y",
            "back\\slash",
            "tab\there",
            "héllo",
            "日本語",
            "555-1234",
            "a.b",
            "aaaa",
            "ab",
            "abcabc",
            "12",
            "1234567",
            "line\nbreak",
        ];
        let patterns = [
            r"^[a-z]+$",
            r"^[A-Z]{3}-\d{3}$",
            r"^\d{3}-\d{4}$",
            r"^(abc)+$",
            r"^a.b$",
            r"^a{2,4}$",
            r"^(ab|abc|x.y)$",
            r"^[^0-9]*$",
            r"^\w+$",
            r"^.*\\.*$",
            r"bc",
            r"^ab",
            r"\d$",
            r"^\s*$|^tab\s",
            r"^\D+$",
        ];
        for p in patterns {
            let g = string_grammar(p);
            let re = regex::Regex::new(p).unwrap();
            for s in samples {
                let want = re.is_match(s);
                let got = accepts(&g, s);
                // Non-ASCII parts of large classes may be dropped: only then may we refuse more.
                if got != want {
                    assert!(
                        !got && !s.is_ascii() && want,
                        "pattern {p:?} on {s:?}: grammar {got}, regex {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn formats_accept_valid_values_only() {
        let cases = [
            ("date", "2024-02-28", true),
            ("date", "2024-13-01", false),
            ("date", "2024-04-31", false),
            ("time", "23:59:59Z", true),
            ("time", "12:00:00.5+02:00", true),
            ("time", "24:00:00Z", false),
            ("date-time", "2026-12-03T10:15:00Z", true),
            ("date-time", "2026-12-03 10:15:00Z", false),
            ("uuid", "123e4567-e89b-12d3-a456-426614174000", true),
            ("uuid", "123e4567e89b12d3a456426614174000", false),
            ("email", "ada.lovelace@example.org", true),
            ("email", "no-at-sign.example.org", false),
            ("email", "a@b", false),
        ];
        for (format, value, want) in cases {
            let g = string_grammar(format_pattern(format).unwrap());
            assert_eq!(accepts(&g, value), want, "{format} {value}");
        }
        assert!(format_pattern("ipv6").is_none());
    }

    #[test]
    fn unsupported_and_invalid_patterns_are_errors() {
        let mut b = Builder::new(1_000_000);
        assert!(matches!(
            string_matching(&mut b, r"a\bc"),
            Err(PatternError::Unsupported(_))
        ));
        assert!(matches!(
            string_matching(&mut b, r"(unclosed"),
            Err(PatternError::Syntax(_))
        ));
        let mut small = Builder::new(500);
        assert!(matches!(
            string_matching(&mut small, r"^a{1000}$"),
            Err(PatternError::Grammar(_))
        ));
    }

    #[test]
    fn any_string_respects_lengths_and_escapes() {
        let mut b = Builder::new(100_000);
        let root = any_string(&mut b, 2, Some(3)).unwrap();
        let g = Arc::new(b.build(root));
        assert!(accepts(&g, "ab"));
        assert!(accepts(&g, "a\"c"));
        assert!(accepts(&g, "é\n"));
        assert!(!accepts(&g, "a"));
        assert!(!accepts(&g, "abcd"));
        let raw_newline = g.start().feed_all(&g, b"\"a\nb\"");
        assert!(raw_newline.is_none(), "control characters must be escaped");
    }
}
