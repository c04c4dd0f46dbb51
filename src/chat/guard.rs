//! Output guards, applied to every generation's visible text as it streams: the repetition
//! guard (a small model that has started looping — one unit of text repeated over and over at
//! the end — is stopped) and content filters (`[[filters]]`: a regex that flags, redacts or
//! stops). A filter holds back the last `max_match_chars − 1` characters, and any match that
//! could still grow, until it can decide, the way stop strings are held back: no part of a
//! match reaches a client first. Pure logic.

use crate::config::{FilterAction, FilterSettings, GuardSettings};

/// One compiled filter.
#[derive(Debug, Clone)]
struct Filter {
    regex: regex::Regex,
    action: FilterAction,
    replacement: String,
}

/// The guards in force (from `[guard]` and `[[filters]]`).
#[derive(Debug, Clone, Default)]
pub struct Guards {
    repetition: Option<GuardSettings>,
    filters: Vec<Filter>,
    /// Characters held back for filters.
    holdback: usize,
}

/// Why a guard ended a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was repeating itself.
    Repetition,
    /// A `stop` filter matched.
    Filter,
}

impl Stopped {
    /// The flag clients see (`stopped_by`) and the metrics event.
    pub fn label(self) -> &'static str {
        match self {
            Stopped::Repetition => "repetition",
            Stopped::Filter => "filter",
        }
    }
}

/// What one step of guarding a choice produced.
#[derive(Debug, Default, PartialEq)]
pub struct Released {
    /// Text that may be sent now.
    pub text: String,
    /// Set when the choice must end here.
    pub stopped: Option<Stopped>,
    /// Filter actions taken (`flag`, `redact`), for metrics.
    pub actions: Vec<&'static str>,
}

impl Guards {
    /// Compile the configured guards (patterns were checked when the config was validated;
    /// one that still fails to compile is skipped with an error in the log).
    pub fn new(guard: &GuardSettings, filters: &[FilterSettings]) -> Self {
        let compiled: Vec<Filter> = filters
            .iter()
            .filter_map(|f| match regex::Regex::new(&f.pattern) {
                Ok(regex) => Some(Filter {
                    regex,
                    action: f.action,
                    replacement: f.replacement.clone(),
                }),
                Err(e) => {
                    tracing::error!(filter = %f.name, error = %e, "filter skipped");
                    None
                }
            })
            .collect();
        let holdback = filters
            .iter()
            .map(|f| f.max_match_chars.saturating_sub(1))
            .max()
            .unwrap_or(0);
        Self {
            repetition: guard.repetition.then(|| guard.clone()),
            filters: compiled,
            holdback,
        }
    }

    /// Whether any guard is on.
    pub fn active(&self) -> bool {
        self.repetition.is_some() || !self.filters.is_empty()
    }

    /// Whether filters may change or hold back text (the final text is then the guard's).
    pub fn filtering(&self) -> bool {
        !self.filters.is_empty()
    }
}

/// One choice's guard state.
#[derive(Debug, Default)]
pub struct ChoiceGuard {
    pending: String,
    /// Everything released so far.
    pub released: String,
    /// Whether a `flag` filter matched.
    pub flagged: bool,
}

/// Byte index of the `n`-th character from the end of `s` (0 when `s` is shorter).
fn chars_from_end(s: &str, n: usize) -> usize {
    if n == 0 {
        return s.len();
    }
    s.char_indices().rev().nth(n - 1).map_or(0, |(i, _)| i)
}

impl ChoiceGuard {
    /// Take newly generated `text`; `last`: nothing follows (release everything).
    pub fn push(&mut self, guards: &Guards, text: &str, last: bool) -> Released {
        let mut out = Released::default();
        self.pending.push_str(text);
        let safe = if last {
            self.pending.len()
        } else {
            chars_from_end(&self.pending, guards.holdback)
        };
        // Matches that end where more text could not change them are decided; the first
        // one that could still grow (or has not ended) stops the release there.
        let mut cut = safe;
        let mut edits: Vec<(usize, usize, Option<&str>)> = Vec::new();
        'scan: for f in &guards.filters {
            for m in f.regex.find_iter(&self.pending) {
                if m.start() >= cut {
                    break;
                }
                if m.end() >= self.pending.len() && !last || m.end() > safe {
                    cut = cut.min(m.start());
                    break;
                }
                match f.action {
                    FilterAction::Flag => {
                        self.flagged = true;
                        out.actions.push("filter_flag");
                    }
                    FilterAction::Redact => {
                        edits.push((m.start(), m.end(), Some(f.replacement.as_str())));
                        out.actions.push("filter_redact");
                    }
                    FilterAction::Stop => {
                        cut = cut.min(m.start());
                        out.stopped = Some(Stopped::Filter);
                        out.actions.push("filter_stop");
                        break 'scan;
                    }
                }
            }
        }
        edits.retain(|(start, end, _)| *end <= cut && *start < cut);
        edits.sort_by_key(|e| e.0);
        let mut released = String::new();
        let mut at = 0;
        for (start, end, replacement) in edits {
            if start < at {
                continue; // overlapping matches of two filters: the first one wins
            }
            released.push_str(&self.pending[at..start]);
            released.push_str(replacement.unwrap_or(""));
            at = end;
        }
        released.push_str(&self.pending[at..cut]);
        self.pending.drain(..cut);
        if out.stopped.is_some() {
            self.pending.clear();
        }
        self.released.push_str(&released);
        if out.stopped.is_none() {
            if let Some(rule) = &guards.repetition {
                if repeating(&self.released, rule) {
                    out.stopped = Some(Stopped::Repetition);
                }
            }
        }
        out.text = released;
        out
    }
}

/// Whether `text` ends in one unit repeated at least `repetition_repeats` times over at least
/// `repetition_min_chars` characters.
fn repeating(text: &str, rule: &GuardSettings) -> bool {
    let need = rule.repetition_min_chars.max(1);
    let window = rule.repetition_max_period * rule.repetition_repeats + need;
    let tail: Vec<char> = text[chars_from_end(text, window)..].chars().collect();
    (1..=rule.repetition_max_period).any(|p| {
        let run = (p * rule.repetition_repeats).max(need.div_ceil(p) * p);
        run <= tail.len() && {
            let s = &tail[tail.len() - run..];
            (p..run).all(|i| s[i] == s[i - p])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(pattern: &str, action: FilterAction) -> FilterSettings {
        FilterSettings {
            name: "t".into(),
            pattern: pattern.into(),
            action,
            replacement: "[x]".into(),
            max_match_chars: 16,
        }
    }

    fn no_repetition() -> GuardSettings {
        GuardSettings {
            repetition: false,
            ..GuardSettings::default()
        }
    }

    /// Feed `pieces` one at a time; everything released, and how it stopped.
    fn run(guards: &Guards, pieces: &[&str]) -> (Vec<String>, Option<Stopped>) {
        let mut g = ChoiceGuard::default();
        let mut out = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let r = g.push(guards, p, i + 1 == pieces.len());
            out.push(r.text);
            if r.stopped.is_some() {
                return (out, r.stopped);
            }
        }
        (out, None)
    }

    #[test]
    fn a_redacted_match_never_shows_even_split_across_pieces() {
        let guards = Guards::new(
            &no_repetition(),
            &[filter(r"secret\w*", FilterAction::Redact)],
        );
        let (out, stopped) = run(&guards, &["the sec", "retive", " plan is", " here"]);
        assert_eq!(stopped, None);
        let joined = out.concat();
        assert_eq!(joined, "the [x] plan is here");
        for piece in &out {
            assert!(!piece.contains("sec"), "{out:?}");
        }
    }

    #[test]
    fn a_stop_filter_ends_before_the_match() {
        let guards = Guards::new(&no_repetition(), &[filter("BAD", FilterAction::Stop)]);
        let (out, stopped) = run(&guards, &["all good, then B", "AD things", " more"]);
        assert_eq!(stopped, Some(Stopped::Filter));
        assert_eq!(out.concat(), "all good, then ");
    }

    #[test]
    fn flags_let_text_through() {
        let guards = Guards::new(&no_repetition(), &[filter("tea", FilterAction::Flag)]);
        let mut g = ChoiceGuard::default();
        let r = g.push(&guards, "I like tea a lot", true);
        assert_eq!(r.text, "I like tea a lot");
        assert!(g.flagged);
    }

    #[test]
    fn a_looping_answer_is_stopped_and_ordinary_text_is_not() {
        let guards = Guards::new(&GuardSettings::default(), &[]);
        let mut g = ChoiceGuard::default();
        let mut stopped = None;
        for _ in 0..20 {
            let r = g.push(&guards, "I am sorry. ", false);
            if r.stopped.is_some() {
                stopped = r.stopped;
                break;
            }
        }
        assert_eq!(stopped, Some(Stopped::Repetition));
        let mut g = ChoiceGuard::default();
        let prose = "The sea is wide and deep. Ships cross it every day, carrying grain, \
                     people and letters between the ports of many countries.";
        for w in prose.split_inclusive(' ') {
            assert_eq!(g.push(&guards, w, false).stopped, None);
        }
    }
}
