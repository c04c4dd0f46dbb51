//! `[[backends]]`: which backend serves each model id and where a request fails over to, and
//! their checks. The loaded model is always the backend `local`.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// What serves a backend's models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// The model this process loads (`[model]`).
    Local,
    /// OpenAI, or any server speaking its API (vLLM, llama.cpp's server, another Hearth).
    Openai,
}

/// One `[[backends]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSettings {
    /// Unique name, used in `failover` lists, metrics and `owned_by`.
    pub name: String,
    /// `local` or `openai`.
    pub kind: BackendKind,
    /// API root of an `openai` backend, up to and including `/v1`.
    #[serde(default = "default_openai_base_url")]
    pub base_url: String,
    /// Environment variable holding the API key of an `openai` backend (never the key itself,
    /// so config files can be shared). Unset: requests carry no key (e.g. a private vLLM).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Model ids an `openai` backend serves (the local backend serves the loaded model).
    #[serde(default)]
    pub models: Vec<String>,
    /// Extra ids clients may use: alias → one of this backend's models.
    #[serde(default)]
    pub aliases: std::collections::BTreeMap<String, String>,
    /// Seconds to establish the connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds from sending the request to its first token (or whole reply, when not streamed).
    #[serde(default = "default_first_token_timeout")]
    pub first_token_timeout_secs: u64,
    /// Seconds a whole generation may take.
    #[serde(default = "default_total_timeout")]
    pub total_timeout_secs: u64,
    /// Backends to try, in order, when this one fails before the first token.
    #[serde(default)]
    pub failover: Vec<String>,
    /// Consecutive failures that open this backend's circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// Seconds an open breaker skips the backend before letting one probe request through.
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_secs: u64,
}

fn default_openai_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_first_token_timeout() -> u64 {
    60
}
fn default_total_timeout() -> u64 {
    600
}
fn default_breaker_failures() -> u32 {
    3
}
fn default_breaker_cooldown() -> u64 {
    30
}

impl BackendSettings {
    /// The implicit backend when none is configured: the local model, no failover.
    pub fn local_default() -> Self {
        Self {
            name: "local".into(),
            kind: BackendKind::Local,
            base_url: default_openai_base_url(),
            api_key_env: None,
            models: Vec::new(),
            aliases: Default::default(),
            connect_timeout_secs: default_connect_timeout(),
            first_token_timeout_secs: default_first_token_timeout(),
            total_timeout_secs: default_total_timeout(),
            failover: Vec::new(),
            breaker_failures: default_breaker_failures(),
            breaker_cooldown_secs: default_breaker_cooldown(),
        }
    }
}

impl Config {
    /// `[[backends]]`: unique names, one local at most, failover targets that exist, and
    /// timeouts and breaker settings in range. (Model-id clashes are checked when the router is
    /// built, once the local model's id is known.)
    pub(super) fn validate_backends(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "backends",
            message,
        };
        let mut names = std::collections::HashSet::new();
        for b in &self.backends {
            let name = &b.name;
            if name.trim().is_empty() {
                return Err(invalid("every backend needs a `name`".into()));
            }
            if !names.insert(name.as_str()) {
                return Err(invalid(format!("the name `{name}` is used twice")));
            }
            if b.connect_timeout_secs == 0
                || b.first_token_timeout_secs == 0
                || b.total_timeout_secs == 0
            {
                return Err(invalid(format!(
                    "`{name}`: timeouts must be at least 1 second"
                )));
            }
            if b.breaker_failures == 0 || b.breaker_cooldown_secs == 0 {
                return Err(invalid(format!(
                    "`{name}`: breaker_failures and breaker_cooldown_secs must be at least 1"
                )));
            }
            if b.kind == BackendKind::Openai {
                if b.models.is_empty() {
                    return Err(invalid(format!("`{name}`: list the `models` it serves")));
                }
                if !(b.base_url.starts_with("http://") || b.base_url.starts_with("https://")) {
                    return Err(invalid(format!(
                        "`{name}`: base_url must start with http:// or https://"
                    )));
                }
            } else if !b.models.is_empty() {
                return Err(invalid(format!(
                    "`{name}`: a local backend serves the loaded model; set server.model_id to rename it"
                )));
            }
            for (alias, target) in &b.aliases {
                if b.kind == BackendKind::Openai && !b.models.contains(target) {
                    return Err(invalid(format!(
                        "`{name}`: alias `{alias}` points to `{target}`, which is not in its models"
                    )));
                }
            }
        }
        if self
            .backends
            .iter()
            .filter(|b| b.kind == BackendKind::Local)
            .count()
            > 1
        {
            return Err(invalid("at most one backend may be `local`".into()));
        }
        if !self.has_local() && names.contains("local") {
            return Err(invalid(
                "the name `local` is the loaded model's unless a `kind = \"local\"` entry renames it"
                    .into(),
            ));
        }
        for b in &self.backends {
            for target in &b.failover {
                if target == &b.name {
                    return Err(invalid(format!("`{}` fails over to itself", b.name)));
                }
                let implicit_local = target == "local" && !self.has_local();
                if !names.contains(target.as_str()) && !implicit_local {
                    return Err(invalid(format!(
                        "`{}` fails over to `{target}`, which is not a backend",
                        b.name
                    )));
                }
            }
        }
        Ok(())
    }

    fn has_local(&self) -> bool {
        self.backends.iter().any(|b| b.kind == BackendKind::Local)
    }

    /// The backends to run: the configured ones, plus the local model as `local` when no entry
    /// configures it (it is always served).
    pub fn effective_backends(&self) -> Vec<BackendSettings> {
        let mut all = self.backends.clone();
        if !self.has_local() {
            all.insert(0, BackendSettings::local_default());
        }
        all
    }
}
