//! Settings of the playground layer: per-user limits and quotas (`[limits]`), the response
//! cache (`[cache]`) and conversations (`[chat]`). Defaults never get in the way of one person
//! on their own machine: every limit is off (0) until an operator sets it.

use serde::{Deserialize, Serialize};

/// `[limits]`: applied to every generation (`/v1`, `/ws`, conversations), per user, or per
/// client IP (IPv6: its /64) for callers without an account. 0 turns a limit off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSettings {
    /// Generation requests per minute (a token bucket: bursts up to this many, refilled
    /// evenly over the minute).
    pub requests_per_minute: u32,
    /// Generations running at once.
    pub concurrent_generations: u32,
    /// Prompt plus completion tokens per UTC day.
    pub tokens_per_day: u64,
}

/// `[cache]`: answers to deterministic requests (temperature 0 or a fixed seed), kept in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Serve repeated deterministic requests from memory.
    pub enabled: bool,
    /// Share entries between users (default: each user, or anonymous client IP, has its own).
    pub shared: bool,
    /// How long an entry lives.
    pub ttl_secs: u64,
    /// Entries kept at most.
    pub max_entries: u64,
    /// Bytes of answers kept at most (text and log-probabilities, roughly).
    pub max_bytes: u64,
    /// Answers larger than this are not cached.
    pub max_entry_bytes: u64,
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`: request, concurrency and daily-token budgets
    /// shared by every replica (unset: each process counts its own).
    pub url: Option<String>,
    /// With `url`: the longest one Redis command (or connecting) may take before this replica
    /// goes on without it (its own budgets, no shared cache entry, an answer not mirrored).
    pub timeout_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            shared: false,
            ttl_secs: 3600,
            max_entries: 10_000,
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            url: None,
            timeout_ms: 1000,
        }
    }
}

/// `[chat]`: conversations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatSettings {
    /// How long an answer keeps generating with no client following it (its SSE stream or
    /// socket dropped) before it is cancelled and marked `interrupted`.
    pub detach_grace_secs: u64,
    /// Tokens of the context kept free beyond `max_tokens` when fitting a turn (the template's
    /// own text, counting slack).
    pub context_reserve_tokens: usize,
    /// An answer's partial text is saved at least this often while it streams…
    pub save_interval_ms: u64,
    /// …and after at most this many tokens.
    pub save_every_tokens: usize,
    /// After a conversation's first answer, have the model write its title (in the
    /// background; the first line of the question names it until then).
    pub auto_title: bool,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            detach_grace_secs: 30,
            context_reserve_tokens: 64,
            save_interval_ms: 250,
            save_every_tokens: 32,
            auto_title: true,
        }
    }
}

/// `[memory]`: what a conversation keeps of messages that no longer fit the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemorySettings {
    /// Replace dropped messages with a running summary the model writes (after a turn, in
    /// the background) and the conversation keeps; off: they are simply left out.
    pub summarize: bool,
    /// The longest summary, in tokens.
    pub summary_max_tokens: usize,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            summarize: false,
            summary_max_tokens: 160,
        }
    }
}

/// `[guard]`: the repetition guard (small models loop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardSettings {
    /// End an answer whose text has turned into one unit repeated over and over.
    pub repetition: bool,
    /// How many times in a row the unit must repeat at the end of the text.
    pub repetition_repeats: usize,
    /// The longest unit looked for, in characters.
    pub repetition_max_period: usize,
    /// The repeated run must be at least this many characters.
    pub repetition_min_chars: usize,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            repetition: true,
            repetition_repeats: 4,
            repetition_max_period: 128,
            repetition_min_chars: 64,
        }
    }
}

/// What a content filter does with a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Let it through, but mark the answer (and count it).
    Flag,
    /// Replace it with `replacement`.
    Redact,
    /// End the answer before it (like a stop string: none of it is sent).
    Stop,
}

/// `[[filters]]`: a regular expression applied to generated text as it streams. Text that
/// could still become a match is held back (up to `max_match_chars`), so no part of a match
/// ever reaches a client before the filter has decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSettings {
    /// A name for metrics and flags.
    pub name: String,
    /// The regular expression (Rust `regex` syntax).
    pub pattern: String,
    /// `flag`, `redact` or `stop`.
    pub action: FilterAction,
    /// What a redacted match becomes.
    #[serde(default = "default_replacement")]
    pub replacement: String,
    /// The longest text a match can span, in characters (how much is held back).
    #[serde(default = "default_max_match_chars")]
    pub max_match_chars: usize,
}

fn default_replacement() -> String {
    "[redacted]".into()
}

fn default_max_match_chars() -> usize {
    64
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, FilterAction};

    #[test]
    fn the_readme_filter_example_parses_and_validates() {
        let readme = include_str!("../../README.md");
        let start = readme.find("[[filters]]").expect("example");
        let end = start + readme[start..].find("```").expect("end of example");
        let config: Config = toml::from_str(&readme[start..end]).expect("parses");
        assert_eq!(config.filters[0].action, FilterAction::Redact);
        assert_eq!(config.filters[0].max_match_chars, 32);
        config.validate().expect("valid");
        let re = regex::Regex::new(&config.filters[0].pattern).expect("regex");
        assert!(re.is_match("card 4111 1111 1111 1111 ok"));
    }

    #[test]
    fn the_readme_shared_server_limits_parse() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("[limits]\nrequests_per_minute")
            .expect("example");
        let end = start + readme[start..].find("```").expect("end of example");
        let config: Config = toml::from_str(&readme[start..end]).expect("parses");
        assert_eq!(config.limits.requests_per_minute, 30);
        config.validate().expect("valid");
    }
}
