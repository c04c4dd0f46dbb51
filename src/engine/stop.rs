//! Stop strings for streamed generation, without leaking partial matches.
//!
//! This module owns [`StopMatcher`]: the generation loop feeds it each newly decoded piece of
//! text and streams only what it returns. Text that could still turn out to be the beginning of
//! a stop string is held back until it is either completed (generation stops and the stop string
//! is never shown) or ruled out (the held text is released).
//!
//! When several stops could match, the one that completes first in the text wins (and, among
//! those completing at the same point, the one starting earliest). That is exactly what happens
//! when the text arrives one character at a time, so the outcome never depends on how the text
//! was split into pushes.

/// Incremental stop-string matcher for one generation.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    // Text received but not yet emitted: always a (possibly empty) prefix of some stop string,
    // except transiently inside `push`.
    held: String,
    // The stop string that ended generation, once one has.
    stopped: Option<String>,
}

/// What the caller may do after a [`StopMatcher::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopEvent {
    /// No stop yet: stream `emit` (possibly empty) and keep generating.
    Continue {
        /// Text that is now safe to show.
        emit: String,
    },
    /// A stop string matched: stream `emit` (the text before the stop) and end generation.
    Stopped {
        /// Text before the stop string that had not been emitted yet.
        emit: String,
        /// The stop string that matched.
        matched: String,
    },
}

impl StopMatcher {
    /// Creates a matcher for `stops`; empty strings are ignored.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: None,
        }
    }

    /// Feeds newly decoded `text` and returns what is safe to emit now.
    ///
    /// Once a stop has matched, the matcher stays stopped: later pushes emit nothing and report
    /// the same stop again, and any text after the stop is discarded.
    pub fn push(&mut self, text: &str) -> StopEvent {
        if let Some(matched) = &self.stopped {
            return StopEvent::Stopped {
                emit: String::new(),
                matched: matched.clone(),
            };
        }
        if self.stops.is_empty() {
            return StopEvent::Continue {
                emit: text.to_owned(),
            };
        }
        self.held.push_str(text);

        if let Some((start, stop)) = self.earliest_match() {
            let mut emit = std::mem::take(&mut self.held);
            emit.truncate(start);
            let matched = self.stops[stop].clone();
            self.stopped = Some(matched.clone());
            return StopEvent::Stopped { emit, matched };
        }

        let keep_from = self.partial_match_start();
        let emit = self.held[..keep_from].to_owned();
        self.held.drain(..keep_from);
        StopEvent::Continue { emit }
    }

    /// Ends generation without a stop: returns the held-back text (empty after a stop matched).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Text currently held back because it may be the start of a stop string.
    pub fn held(&self) -> &str {
        &self.held
    }

    /// The stop string that ended generation, if any.
    pub fn matched(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    // (byte offset of the match in `held`, index of the stop) for the match that ends first,
    // ties going to the one that starts first.
    fn earliest_match(&self) -> Option<(usize, usize)> {
        self.stops
            .iter()
            .enumerate()
            .filter_map(|(i, stop)| self.held.find(stop.as_str()).map(|at| (at, i, stop.len())))
            .min_by_key(|&(at, _, len)| (at + len, at))
            .map(|(at, i, _)| (at, i))
    }

    // Byte offset where the longest suffix of `held` that is a proper prefix of some stop
    // begins; `held.len()` when there is none. Only char boundaries are considered, so emitted
    // text never splits a character.
    fn partial_match_start(&self) -> usize {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let earliest = self.held.len().saturating_sub(longest.saturating_sub(1));
        (earliest..self.held.len())
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|stop| stop.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    // Pushes `text` one char at a time; returns (everything emitted, matched stop if any).
    fn stream_chars(m: &mut StopMatcher, text: &str) -> (String, Option<String>) {
        let mut out = String::new();
        for c in text.chars() {
            match m.push(c.encode_utf8(&mut [0; 4])) {
                StopEvent::Continue { emit } => out.push_str(&emit),
                StopEvent::Stopped { emit, matched } => {
                    out.push_str(&emit);
                    return (out, Some(matched));
                }
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    fn cont(s: &str) -> StopEvent {
        StopEvent::Continue { emit: s.into() }
    }

    #[test]
    fn a_stop_pushed_char_by_char_never_leaks_any_part_of_it() {
        let mut m = matcher(&["\nUser:"]);
        let mut emitted = Vec::new();
        let mut result = None;
        for c in "Hello\n\nUser:".chars() {
            match m.push(&c.to_string()) {
                StopEvent::Continue { emit } => emitted.push(emit),
                StopEvent::Stopped { emit, matched } => {
                    emitted.push(emit);
                    result = Some(matched);
                    break;
                }
            }
        }
        assert_eq!(result.as_deref(), Some("\nUser:"));
        assert_eq!(emitted.concat(), "Hello\n");
        assert!(emitted
            .iter()
            .all(|e| !e.contains("User") && !e.contains(':')));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn a_held_prefix_that_is_not_a_stop_is_released() {
        let mut m = matcher(&["\nUser:"]);
        assert_eq!(m.push("Hi\nUs"), cont("Hi"));
        assert_eq!(m.held(), "\nUs");
        assert_eq!(m.push("ually"), cont("\nUsually"));
        assert_eq!(m.held(), "");
    }

    #[test]
    fn finish_releases_the_held_tail() {
        let mut m = matcher(&["</s>"]);
        assert_eq!(m.push("done </"), cont("done "));
        assert_eq!(m.finish(), "</");
        assert_eq!(m.held(), "");
    }

    #[test]
    fn a_stop_split_across_pushes_matches() {
        let mut m = matcher(&["<|end|>"]);
        assert_eq!(m.push("answer<|"), cont("answer"));
        assert_eq!(m.push("en"), cont(""));
        assert_eq!(
            m.push("d|>trailing"),
            StopEvent::Stopped {
                emit: String::new(),
                matched: "<|end|>".into()
            }
        );
        assert_eq!(m.matched(), Some("<|end|>"));
    }

    #[test]
    fn text_before_a_stop_inside_one_push_is_emitted() {
        let mut m = matcher(&["STOP"]);
        assert_eq!(
            m.push("abcSTOPdef"),
            StopEvent::Stopped {
                emit: "abc".into(),
                matched: "STOP".into()
            }
        );
    }

    #[test]
    fn the_earliest_match_wins_among_several_stops() {
        let mut m = matcher(&["world", "lo"]);
        assert_eq!(
            m.push("hello world"),
            StopEvent::Stopped {
                emit: "hel".into(),
                matched: "lo".into()
            }
        );
    }

    #[test]
    fn overlapping_stops_resolve_the_same_whatever_the_chunking() {
        let stops = ["\nUser:", "\n", "abc", "c"];
        for text in ["x\nUser: hi", "zzabc", "ab"] {
            let mut whole = matcher(&stops);
            let at_once = match whole.push(text) {
                StopEvent::Continue { emit } => (emit + &whole.finish(), None),
                StopEvent::Stopped { emit, matched } => (emit, Some(matched)),
            };
            let by_char = stream_chars(&mut matcher(&stops), text);
            assert_eq!(at_once, by_char, "text {text:?}");
        }
    }

    #[test]
    fn unicode_text_and_stops_are_never_split_mid_char() {
        let mut m = matcher(&["🛑é"]);
        let (out, matched) = stream_chars(&mut m, "naïve café 🛑x 🛑é tail");
        assert_eq!(out, "naïve café 🛑x ");
        assert_eq!(matched.as_deref(), Some("🛑é"));

        // A stop sharing a multi-byte prefix with the text: only whole chars are held.
        let mut m = matcher(&["éa"]);
        assert_eq!(m.push("eé"), cont("e"));
        assert_eq!(m.held(), "é");
        assert_eq!(m.push("b"), cont("éb"));
    }

    #[test]
    fn empty_stops_are_ignored_and_text_passes_straight_through() {
        let mut m = matcher(&["", ""]);
        assert_eq!(m.push("anything"), cont("anything"));
        assert_eq!(m.held(), "");
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn after_a_stop_further_text_is_discarded() {
        let mut m = matcher(&["."]);
        assert!(matches!(m.push("a. b"), StopEvent::Stopped { .. }));
        assert_eq!(
            m.push("more"),
            StopEvent::Stopped {
                emit: String::new(),
                matched: ".".into()
            }
        );
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn a_repeated_prefix_keeps_only_the_part_that_can_still_match() {
        let mut m = matcher(&["aab"]);
        assert_eq!(m.push("aaa"), cont("a"));
        assert_eq!(m.held(), "aa");
        assert_eq!(
            m.push("b"),
            StopEvent::Stopped {
                emit: String::new(),
                matched: "aab".into()
            }
        );
    }
}
