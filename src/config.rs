//! Hearth's settings: `config.toml`, then `HEARTH__SECTION__KEY` environment overrides, then CLI
//! flags (applied by `main.rs`). Raw values are checked once in [`Config::validate`] so the rest of
//! the program can trust them. Every limit the program enforces lives here.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::engine::loader::DeviceChoice;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an override could not be parsed.
    #[error("configuration: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("configuration: `{key}` {message}")]
    Invalid {
        /// Dotted key, e.g. `generation.max_tokens`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// All settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Which model to load and how.
    pub model: ModelSettings,
    /// Defaults and limits for generation.
    pub generation: GenerationSettings,
    /// The HTTP server and its scheduler.
    pub server: ServerSettings,
    /// Accounts, tokens and login limits.
    pub auth: AuthSettings,
    /// The SQLite database holding accounts, and its backups.
    pub storage: StoreSettings,
    /// `[[backends]]`: where requests for each model go, and where they fail over to. Empty: the
    /// local model only.
    pub backends: Vec<BackendSettings>,
}

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

/// Who may create an account through `POST /api/auth/register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Anyone; the very first account becomes an admin.
    Open,
    /// Only the first account (which becomes an admin); afterwards admins create users.
    FirstAdmin,
    /// Nobody: admins create users (`hearth user create`, `/api/admin/users`).
    Closed,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 signing secret for access tokens. Unset: generated on first start and kept in
    /// `<data_dir>/jwt_secret` (mode 0600). Prefer `HEARTH__AUTH__JWT_SECRET` over the file.
    pub jwt_secret: Option<String>,
    /// Access-token lifetime in seconds.
    pub access_token_ttl_secs: u64,
    /// Refresh-token lifetime in seconds (each use rotates it).
    pub refresh_token_ttl_secs: u64,
    /// Who may register.
    pub registration: Registration,
    /// Require a user's access token or API key (or `server.api_key`) on `/v1` and `/ws`.
    /// Off suits a single-user laptop (requests without a credential are anonymous and their
    /// usage is not counted); a credential that is sent is still checked either way.
    pub require_auth: bool,
    /// Shortest username.
    pub username_min_len: usize,
    /// Longest username.
    pub username_max_len: usize,
    /// Shortest password.
    pub password_min_len: usize,
    /// Longest password (Argon2 input is bounded to keep hashing cheap to refuse).
    pub password_max_len: usize,
    /// Login attempts per client IP per minute.
    pub login_per_ip_per_minute: u32,
    /// Login attempts per username per minute.
    pub login_per_username_per_minute: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            registration: Registration::FirstAdmin,
            require_auth: false,
            username_min_len: 3,
            username_max_len: 32,
            password_min_len: 8,
            password_max_len: 256,
            login_per_ip_per_minute: 20,
            login_per_username_per_minute: 5,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub host: String,
    /// Port (0 picks a free one).
    pub port: u16,
    /// Model id shown in `/v1/models` and accepted in requests (default: the file's stem).
    pub model_id: Option<String>,
    /// A static key for single-user setups. When set, `/v1/*` and `/ws` require a credential:
    /// `Authorization: Bearer <api_key>`, or a user's API key or access token (`/ws` also
    /// accepts `?api_key=<credential>`, since browsers cannot set headers on a WebSocket).
    pub api_key: Option<String>,
    /// Largest request body accepted, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Requests waiting for a generation slot; more are refused with 429 at once.
    pub queue_capacity: usize,
    /// Sequences generating at the same time.
    pub max_active: usize,
    /// Seconds a request may wait in the queue before it fails.
    pub queue_timeout_secs: u64,
    /// Megabytes of finished conversations' KV cache kept for prefix reuse.
    pub prefix_cache_mb: usize,
    /// Seconds between `: ping` comments on an SSE stream that has nothing else to say.
    pub sse_keepalive_secs: u64,
    /// Seconds between WebSocket Pings on `/ws`; a socket that sent nothing (not even a Pong)
    /// for two intervals is closed as dead and its generations are cancelled.
    pub ws_ping_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            model_id: None,
            api_key: None,
            max_body_bytes: 1 << 20,
            queue_capacity: 16,
            max_active: 4,
            queue_timeout_secs: 60,
            prefix_cache_mb: 256,
            sse_keepalive_secs: 10,
            ws_ping_secs: 30,
        }
    }
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// A `.gguf` file, a Hugging Face safetensors directory, or `hf:org/repo/file.gguf`.
    /// Relative paths are resolved against the directory of the config file.
    pub path: String,
    /// Keep weights exactly as shipped (slower on CPU; matches llama.cpp bit for bit in the
    /// quantized kernels). Default: false (fast mode: Q4_1/Q5_x become Q8_0, f32 copies for
    /// prompt processing).
    pub exact: bool,
    /// `auto`, `cpu`, `cuda` or `metal`.
    pub device: DeviceChoice,
    /// CPU threads for the model (0 = one per physical core).
    pub threads: usize,
    /// How much lower than the server's I/O threads the model's compute threads run (a nice
    /// increment, 0–19; 0 = same priority). Keeps token delivery prompt while every core
    /// computes.
    pub nice: i32,
    /// Never download: resolve `hf:` references from the local Hugging Face cache only.
    pub offline: bool,
    /// Hugging Face cache directory (default: `HF_HOME`/`HF_HUB_CACHE` as hf-hub resolves them).
    pub hf_cache: Option<PathBuf>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            path: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            exact: false,
            device: DeviceChoice::Auto,
            threads: 0,
            nice: 5,
            offline: false,
            hf_cache: None,
        }
    }
}

/// `[generation]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationSettings {
    /// Tokens generated when a request names no limit.
    pub default_max_tokens: usize,
    /// The most tokens one request may ask for.
    pub max_tokens_limit: usize,
    /// Prompt tokens fed to the model per forward pass (bounds memory and keeps streams fair).
    pub prefill_chunk: usize,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        Self {
            default_max_tokens: 256,
            max_tokens_limit: 4096,
            prefill_chunk: 256,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Directory holding the database file `hearth.db` (created if missing). Relative paths are
    /// resolved against the directory of the config file.
    pub data_dir: PathBuf,
    /// Milliseconds a connection waits for another connection's write lock before it fails
    /// (SQLite `busy_timeout`); also the longest a blocking caller waits for a free connection.
    pub busy_timeout_ms: u64,
    /// Connections kept open to the database (SQLite runs one writer at a time; readers run
    /// beside it).
    pub connections: usize,
    /// Seconds between scheduled backups; 0 turns them off.
    pub backup_interval_secs: u64,
    /// Scheduled backups kept; older ones are deleted after each new one.
    pub backup_keep: usize,
    /// Where scheduled backups go (default: `<data_dir>/backups`). Relative paths are resolved
    /// against the directory of the config file.
    pub backup_dir: Option<PathBuf>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            busy_timeout_ms: 5000,
            connections: 4,
            backup_interval_secs: 0,
            backup_keep: 7,
            backup_dir: None,
        }
    }
}

impl StoreSettings {
    /// The database file: `<data_dir>/hearth.db`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("hearth.db")
    }

    /// Where scheduled backups go: `backup_dir`, or `<data_dir>/backups`.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }
}

impl Config {
    /// Load `path` (if it exists) with `HEARTH__SECTION__KEY` environment overrides on top.
    /// Relative model and storage paths are resolved against the config file's directory.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(p) = path {
            if !p.exists() {
                return Err(ConfigError::Parse(format!(
                    "{} does not exist",
                    p.display()
                )));
            }
            fig = fig.merge(Toml::file(p));
        }
        fig = fig.merge(Env::prefixed("HEARTH__").split("__"));
        let mut cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some(dir) = path.and_then(Path::parent) {
            cfg.model.path = resolve_relative(dir, &cfg.model.path);
            cfg.storage.data_dir = resolve_relative_path(dir, &cfg.storage.data_dir);
            cfg.storage.backup_dir = cfg
                .storage
                .backup_dir
                .as_deref()
                .map(|p| resolve_relative_path(dir, p));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check ranges; called by [`Config::load`] and again after CLI flags are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.generation;
        if g.max_tokens_limit == 0 {
            return Err(ConfigError::Invalid {
                key: "generation.max_tokens_limit",
                message: "must be at least 1".into(),
            });
        }
        if g.default_max_tokens == 0 || g.default_max_tokens > g.max_tokens_limit {
            return Err(ConfigError::Invalid {
                key: "generation.default_max_tokens",
                message: format!(
                    "must be between 1 and max_tokens_limit ({})",
                    g.max_tokens_limit
                ),
            });
        }
        if g.prefill_chunk == 0 {
            return Err(ConfigError::Invalid {
                key: "generation.prefill_chunk",
                message: "must be at least 1".into(),
            });
        }
        let srv = &self.server;
        if srv.queue_capacity == 0 {
            return Err(ConfigError::Invalid {
                key: "server.queue_capacity",
                message: "must be at least 1".into(),
            });
        }
        if srv.max_active == 0 {
            return Err(ConfigError::Invalid {
                key: "server.max_active",
                message: "must be at least 1".into(),
            });
        }
        if srv.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "server.max_body_bytes",
                message: "must be at least 1024".into(),
            });
        }
        if srv.sse_keepalive_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "server.sse_keepalive_secs",
                message: "must be at least 1".into(),
            });
        }
        let a = &self.auth;
        if a.access_token_ttl_secs == 0 || a.refresh_token_ttl_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.access_token_ttl_secs",
                message: "token lifetimes must be at least 1 second".into(),
            });
        }
        if a.username_min_len == 0 || a.username_min_len > a.username_max_len {
            return Err(ConfigError::Invalid {
                key: "auth.username_min_len",
                message: "must be between 1 and username_max_len".into(),
            });
        }
        if a.password_min_len == 0 || a.password_min_len > a.password_max_len {
            return Err(ConfigError::Invalid {
                key: "auth.password_min_len",
                message: "must be between 1 and password_max_len".into(),
            });
        }
        if a.login_per_ip_per_minute == 0 || a.login_per_username_per_minute == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.login_per_ip_per_minute",
                message: "login limits must be at least 1".into(),
            });
        }
        if srv.ws_ping_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "server.ws_ping_secs",
                message: "must be at least 1".into(),
            });
        }
        let st = &self.storage;
        if st.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "storage.data_dir",
                message: "must name a directory".into(),
            });
        }
        if st.connections == 0 || st.connections > 64 {
            return Err(ConfigError::Invalid {
                key: "storage.connections",
                message: "must be between 1 and 64".into(),
            });
        }
        if st.backup_keep == 0 {
            return Err(ConfigError::Invalid {
                key: "storage.backup_keep",
                message: "must be at least 1".into(),
            });
        }
        if !(0..=19).contains(&self.model.nice) {
            return Err(ConfigError::Invalid {
                key: "model.nice",
                message: "must be between 0 and 19".into(),
            });
        }
        if self.model.path.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "model.path",
                message: "must name a model".into(),
            });
        }
        self.validate_backends()
    }

    /// `[[backends]]`: unique names, one local at most, failover targets that exist, and
    /// timeouts and breaker settings in range. (Model-id clashes are checked when the router is
    /// built, once the local model's id is known.)
    fn validate_backends(&self) -> Result<(), ConfigError> {
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

/// `hf:` references and absolute paths stay as they are; relative paths join `dir`.
fn resolve_relative(dir: &Path, reference: &str) -> String {
    if reference.starts_with("hf:")
        || Path::new(reference).is_absolute()
        || dir.as_os_str().is_empty()
    {
        return reference.to_string();
    }
    dir.join(reference).to_string_lossy().into_owned()
}

/// Absolute paths stay as they are; relative paths join `dir`.
fn resolve_relative_path(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || dir.as_os_str().is_empty() {
        return path.to_path_buf();
    }
    dir.join(path)
}

#[cfg(test)]
// figment's Jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default()
            .validate()
            .expect("defaults must validate");
    }

    #[test]
    fn file_values_and_env_overrides_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "[model]\npath = \"m.gguf\"\nexact = true\n[generation]\ndefault_max_tokens = 7\n",
            )?;
            jail.set_env("HEARTH__GENERATION__DEFAULT_MAX_TOKENS", "9");
            let cfg = Config::load(Some(Path::new("config.toml"))).map_err(|e| e.to_string())?;
            assert!(cfg.model.exact);
            assert_eq!(cfg.generation.default_max_tokens, 9);
            assert!(cfg.model.path.ends_with("m.gguf"));
            Ok(())
        });
    }

    #[test]
    fn backends_parse_from_toml_with_defaults_and_the_implicit_local_one() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                r#"
[[backends]]
name = "openai"
kind = "openai"
api_key_env = "OPENAI_API_KEY"
models = ["gpt-4o-mini", "gpt-4o"]
aliases = { fast = "gpt-4o-mini" }
failover = ["local"]
breaker_failures = 5
"#,
            )?;
            let cfg = Config::load(Some(Path::new("config.toml"))).map_err(|e| e.to_string())?;
            let b = &cfg.backends[0];
            assert_eq!(b.kind, BackendKind::Openai);
            assert_eq!(b.base_url, "https://api.openai.com/v1");
            assert_eq!(b.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
            assert_eq!(b.aliases["fast"], "gpt-4o-mini");
            assert_eq!(b.breaker_failures, 5);
            assert_eq!(b.breaker_cooldown_secs, 30);
            assert_eq!(b.first_token_timeout_secs, 60);
            let all = cfg.effective_backends();
            assert_eq!(all.len(), 2);
            assert_eq!(all[0].name, "local");
            assert_eq!(all[0].kind, BackendKind::Local);
            jail.create_file(
                "bad.toml",
                "[[backends]]\nname = \"x\"\nkind = \"openai\"\nmodels = [\"m\"]\nfailover = [\"y\"]\n",
            )?;
            let err = Config::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("`x` fails over to `y`"), "{err}");
            jail.create_file("odd.toml", "[[backends]]\nname = \"x\"\nkind = \"grpc\"\n")?;
            assert!(Config::load(Some(Path::new("odd.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[model]\nnope = 1\n")?;
            assert!(Config::load(Some(Path::new("a.toml"))).is_err());
            jail.create_file("c.toml", "[server]\nws_ping_secs = 0\n")?;
            let err = Config::load(Some(Path::new("c.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.ws_ping_secs"), "{err}");
            jail.create_file("b.toml", "[generation]\nprefill_chunk = 0\n")?;
            let err = Config::load(Some(Path::new("b.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("generation.prefill_chunk"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn storage_paths_are_resolved_against_the_config_dir() {
        figment::Jail::expect_with(|jail| {
            std::fs::create_dir("etc").map_err(|e| e.to_string())?;
            jail.create_file(
                "etc/config.toml",
                "[storage]\ndata_dir = \"db\"\nbackup_dir = \"/srv/backups\"\n",
            )?;
            let cfg =
                Config::load(Some(Path::new("etc/config.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.storage.data_dir, Path::new("etc/db"));
            assert_eq!(cfg.storage.db_path(), Path::new("etc/db/hearth.db"));
            assert_eq!(cfg.storage.backup_dir(), Path::new("/srv/backups"));
            Ok(())
        });
    }

    #[test]
    fn the_shipped_config_file_loads_with_the_default_storage_settings() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = Config::load(Some(&dir.join("config.toml"))).expect("config.toml loads");
        let expected = StoreSettings {
            data_dir: dir.join("data"),
            ..StoreSettings::default()
        };
        assert_eq!(cfg.storage, expected);
    }

    #[test]
    fn backups_default_to_a_folder_inside_the_data_dir() {
        let st = StoreSettings::default();
        assert_eq!(st.backup_dir(), Path::new("data/backups"));
        assert_eq!(st.busy_timeout_ms, 5000);
        assert_eq!(st.backup_interval_secs, 0);
    }

    #[test]
    fn storage_limits_are_checked() {
        let mut cfg = Config::default();
        cfg.storage.backup_keep = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("storage.backup_keep"), "{err}");
        cfg.storage.backup_keep = 1;
        cfg.storage.connections = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("storage.connections"), "{err}");
    }

    #[test]
    fn hf_references_are_not_joined_to_the_config_dir() {
        assert_eq!(
            resolve_relative(Path::new("/etc/hearth"), "hf:a/b/c.gguf"),
            "hf:a/b/c.gguf"
        );
        assert_eq!(
            resolve_relative(Path::new("/etc/hearth"), "m.gguf"),
            "/etc/hearth/m.gguf"
        );
    }
}
