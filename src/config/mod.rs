//! Hearth's settings: `config.toml`, then `HEARTH__SECTION__KEY` environment overrides, then CLI
//! flags (applied by `main.rs`). Raw values are checked once in [`Config::validate`] so the rest of
//! the program can trust them. Every limit the program enforces lives here.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::engine::loader::DeviceChoice;
use crate::engine::model::KvType;

mod backends;
mod blog;
mod playground;
pub use backends::{BackendKind, BackendSettings};
pub use blog::{AssistPrompts, BlogSettings};
pub use playground::{
    CacheSettings, ChatSettings, FilterAction, FilterSettings, GuardSettings, LimitsSettings,
    MemorySettings,
};

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

/// The shortest `auth.jwt_secret` accepted: HS256 keys shorter than its 256-bit output are
/// guessable offline from one token.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

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
    /// Per-user request rates, concurrency and daily tokens.
    pub limits: LimitsSettings,
    /// The response cache for deterministic requests.
    pub cache: CacheSettings,
    /// Conversations: detached generations, context fitting, partial saves.
    pub chat: ChatSettings,
    /// Running summaries of what no longer fits a conversation's context.
    pub memory: MemorySettings,
    /// The repetition guard.
    pub guard: GuardSettings,
    /// `[[filters]]`: content filters on generated text.
    pub filters: Vec<FilterSettings>,
    /// `[[backends]]`: where requests for each model go, and where they fail over to. Empty: the
    /// local model only.
    pub backends: Vec<BackendSettings>,
    /// The blog: post limits, public pages, the AI writing tools and their prompts.
    pub blog: BlogSettings,
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
    /// HS256 signing secret for access tokens, at least [`MIN_JWT_SECRET_BYTES`] bytes. Unset:
    /// generated on first start and kept in `<data_dir>/jwt_secret` (mode 0600). Prefer
    /// `HEARTH__AUTH__JWT_SECRET` over the file.
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
    /// Failed password attempts per client IP per minute; past it the IP gets 429 at once.
    pub login_per_ip_per_minute: u32,
    /// Failed password attempts per username *from one client IP* per minute. Only failures
    /// count, so nobody elsewhere can lock an account out; past it, that IP's attempts on that
    /// username get 429 until the budget refills.
    pub login_per_username_per_minute: u32,
    /// Password hashes (Argon2id, ~19 MiB each) computed at the same time; further
    /// registrations, logins and password changes wait their turn.
    pub max_concurrent_hashes: usize,
    /// With `require_auth` (or `server.api_key`), `/metrics` needs a credential too. false:
    /// `/metrics` is always public (for a scraper that cannot send a token).
    pub metrics_require_auth: bool,
    /// Mark the web UI's session cookie `Secure` (sent over HTTPS only). Turn it on when Hearth
    /// is reached through TLS (a reverse proxy); over plain HTTP browsers would drop the cookie.
    /// Always on when Hearth serves HTTPS itself (`server.tls_cert`).
    pub secure_cookies: bool,
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
            max_concurrent_hashes: 4,
            metrics_require_auth: true,
            secure_cookies: false,
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
    /// Generations one WebSocket may have in flight; more `generate` frames get a 429 error
    /// frame (`too_many_generations`).
    pub ws_max_generations: usize,
    /// Frames waiting to be written to one WebSocket. A client that falls this far behind
    /// (stops reading) is disconnected and its generations are cancelled.
    pub ws_max_queued_frames: usize,
    /// Longest generation `id` a WebSocket client may use, in bytes (`id_too_long` above).
    pub ws_max_id_bytes: usize,
    /// Seconds a client has to send a request's headers, counted from the connection's start
    /// or the end of its previous response (so it also closes idle keep-alive connections).
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay silent (no byte read or written) while no request on it
    /// is in flight, and a request body may pause between chunks, before it is closed.
    pub idle_timeout_secs: u64,
    /// Open connections (WebSockets included); more are answered 503 and closed at once.
    pub max_connections: usize,
    /// Seconds a shutdown waits for requests in flight before closing their connections.
    pub shutdown_grace_secs: u64,
    /// Origins allowed to call the API from a browser (CORS), e.g. `["https://app.example"]`;
    /// `["*"]` allows any origin. Empty (default): no cross-origin access.
    pub cors_allowed_origins: Vec<String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed when
    /// telling client IPs apart (login limits, logs). Empty: the peer address is the client.
    pub trusted_proxies: Vec<String>,
    /// HTTPS: a PEM file with the certificate chain (leaf first). Set with `tls_key`; both are
    /// read again on SIGHUP. Relative paths are resolved against the config file's directory.
    pub tls_cert: Option<PathBuf>,
    /// HTTPS: the PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
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
            max_active: 8,
            queue_timeout_secs: 60,
            prefix_cache_mb: 256,
            sse_keepalive_secs: 10,
            ws_ping_secs: 30,
            ws_max_generations: 8,
            ws_max_queued_frames: 1024,
            ws_max_id_bytes: 128,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            shutdown_grace_secs: 10,
            cors_allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
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
    /// Also keep a GGUF's F16/BF16/F32 matrices as shipped (on Candle's dense kernels) instead of
    /// converting them to Q8_0 for Hearth's kernels. Quantized matrices are always kept as
    /// shipped. Default: false.
    pub exact: bool,
    /// `auto`, `cpu`, `cuda` or `metal`.
    pub device: DeviceChoice,
    /// How the CPU's KV cache stores keys and values: `f16` (default) or `q8_0` (about half
    /// the memory per position, as llama.cpp's `--cache-type-k/v q8_0`).
    pub kv_cache: KvType,
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
    /// A chat template overriding the model's own: a Jinja file (relative paths against the
    /// config file's directory) or, when the value contains `{{` or `{%`, the template itself.
    pub chat_template: Option<String>,
}

impl ModelSettings {
    /// Whether a `chat_template` value is the template itself rather than a file.
    pub fn is_inline_template(value: &str) -> bool {
        value.contains("{{") || value.contains("{%")
    }
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            path: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            exact: false,
            device: DeviceChoice::Auto,
            kv_cache: KvType::F16,
            threads: 0,
            nice: 5,
            offline: false,
            hf_cache: None,
            chat_template: None,
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
    /// The most choices one request may ask for: `n`, times the number of prompts on
    /// `/v1/completions`. At most `server.queue_capacity`.
    pub max_n: usize,
    /// Compiled `response_format` JSON schemas kept (each with the token masks of the states
    /// it has reached, up to 512 × vocabulary/8 bytes).
    pub schema_cache_entries: u64,
    /// The most grammar elements one schema may compile to; larger schemas get 400.
    pub schema_max_elements: usize,
    /// The most `tools` one chat request may offer.
    pub max_tools: usize,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        Self {
            default_max_tokens: 256,
            max_tokens_limit: 4096,
            prefill_chunk: 256,
            max_n: 8,
            schema_cache_entries: 64,
            schema_max_elements: 100_000,
            max_tools: 128,
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Directory holding the database file `hearth.db` (created if missing) and the generated
    /// JWT secret. Relative paths are resolved against the directory of the config file.
    pub data_dir: PathBuf,
    /// The database: `sqlite://PATH` (a file; relative paths are resolved against the config
    /// file's directory) or `postgres://USER:PASSWORD@HOST:PORT/DB` (a server several replicas
    /// share). Unset: the SQLite file `<data_dir>/hearth.db`.
    pub url: Option<String>,
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
            url: None,
            busy_timeout_ms: 5000,
            connections: 4,
            backup_interval_secs: 0,
            backup_keep: 7,
            backup_dir: None,
        }
    }
}

/// Which database `[storage]` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreTarget {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl StoreSettings {
    /// The SQLite database file: the path of a `sqlite://` `url`, else `<data_dir>/hearth.db`
    /// (also where a PostgreSQL deployment would have kept it).
    pub fn db_path(&self) -> PathBuf {
        match self.target() {
            Ok(StoreTarget::Sqlite(path)) => path,
            _ => self.data_dir.join("hearth.db"),
        }
    }

    /// The database `url` names (see its docs), or why it names none.
    pub fn target(&self) -> Result<StoreTarget, String> {
        let Some(url) = self.url.as_deref() else {
            return Ok(StoreTarget::Sqlite(self.data_dir.join("hearth.db")));
        };
        parse_store_url(url)
    }

    /// Where scheduled backups go: `backup_dir`, or `<data_dir>/backups`.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }
}

/// `sqlite://PATH`, `postgres://…` or `postgresql://…`.
pub fn parse_store_url(url: &str) -> Result<StoreTarget, String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://data/hearth.db".into());
        }
        Ok(StoreTarget::Sqlite(PathBuf::from(path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(StoreTarget::Postgres(url.to_owned()))
    } else {
        Err("must start with sqlite:// or postgres://".into())
    }
}

impl Config {
    fn validate_blog(&self) -> Result<(), ConfigError> {
        let b = &self.blog;
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        let positive: [(&'static str, u64); 7] = [
            ("blog.max_body_bytes", b.max_body_bytes as u64),
            ("blog.max_posts_per_user", b.max_posts_per_user.into()),
            ("blog.max_revisions", b.max_revisions.into()),
            ("blog.page_size", b.page_size.into()),
            ("blog.assist_max_tokens", b.assist_max_tokens as u64),
            ("blog.assist_input_chars", b.assist_input_chars as u64),
            ("blog.max_keywords", b.max_keywords as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if b.assist_max_tokens > self.generation.max_tokens_limit {
            return invalid(
                "blog.assist_max_tokens",
                "must not exceed generation.max_tokens_limit".into(),
            );
        }
        if !(0.0..=2.0).contains(&b.assist_temperature) {
            return invalid("blog.assist_temperature", "must be between 0 and 2".into());
        }
        if let Some(url) = &b.public_url {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && !url.contains(['"', '<', '>', ' ', '\\', '?', '#']);
            if !ok {
                return invalid(
                    "blog.public_url",
                    format!("must be an http(s) URL without query or fragment, got `{url}`"),
                );
            }
        }
        if let Err(e) = crate::blog::assist::Prompts::new(&b.prompts) {
            return invalid("blog.prompts", e.to_string());
        }
        Ok(())
    }

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
            if let Some(t) = cfg.model.chat_template.as_mut() {
                if !ModelSettings::is_inline_template(t) {
                    *t = resolve_relative(dir, t);
                }
            }
            cfg.storage.data_dir = resolve_relative_path(dir, &cfg.storage.data_dir);
            if let Ok(StoreTarget::Sqlite(file)) = cfg.storage.target() {
                if cfg.storage.url.is_some() && file.is_relative() {
                    let file = resolve_relative_path(dir, &file);
                    cfg.storage.url = Some(format!("sqlite://{}", file.display()));
                }
            }
            cfg.storage.backup_dir = cfg
                .storage
                .backup_dir
                .as_deref()
                .map(|p| resolve_relative_path(dir, p));
            for p in [&mut cfg.server.tls_cert, &mut cfg.server.tls_key]
                .into_iter()
                .flatten()
            {
                *p = resolve_relative_path(dir, p);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check ranges; called by [`Config::load`] and again after CLI flags are applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        let positive: [(&'static str, u64); 26] = [
            (
                "generation.max_tokens_limit",
                self.generation.max_tokens_limit as u64,
            ),
            (
                "generation.prefill_chunk",
                self.generation.prefill_chunk as u64,
            ),
            ("generation.max_n", self.generation.max_n as u64),
            (
                "generation.schema_cache_entries",
                self.generation.schema_cache_entries,
            ),
            (
                "generation.schema_max_elements",
                self.generation.schema_max_elements as u64,
            ),
            ("generation.max_tools", self.generation.max_tools as u64),
            ("server.queue_capacity", self.server.queue_capacity as u64),
            ("server.max_active", self.server.max_active as u64),
            ("server.sse_keepalive_secs", self.server.sse_keepalive_secs),
            ("server.ws_ping_secs", self.server.ws_ping_secs),
            (
                "server.ws_max_generations",
                self.server.ws_max_generations as u64,
            ),
            (
                "server.ws_max_queued_frames",
                self.server.ws_max_queued_frames as u64,
            ),
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            ("server.idle_timeout_secs", self.server.idle_timeout_secs),
            ("server.max_connections", self.server.max_connections as u64),
            (
                "auth.max_concurrent_hashes",
                self.auth.max_concurrent_hashes as u64,
            ),
            (
                "auth.login_per_ip_per_minute",
                self.auth.login_per_ip_per_minute.into(),
            ),
            (
                "auth.login_per_username_per_minute",
                self.auth.login_per_username_per_minute.into(),
            ),
            ("storage.backup_keep", self.storage.backup_keep as u64),
            ("cache.ttl_secs", self.cache.ttl_secs),
            ("cache.max_entries", self.cache.max_entries),
            ("cache.max_bytes", self.cache.max_bytes),
            ("cache.max_entry_bytes", self.cache.max_entry_bytes),
            ("cache.timeout_ms", self.cache.timeout_ms),
            ("chat.save_interval_ms", self.chat.save_interval_ms),
            ("chat.save_every_tokens", self.chat.save_every_tokens as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        self.validate_blog()?;
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return invalid(
                "server.tls_cert",
                "set both server.tls_cert and server.tls_key, or neither".into(),
            );
        }
        for f in &self.filters {
            if let Err(e) = regex::Regex::new(&f.pattern) {
                return invalid("filters.pattern", format!("`{}`: {e}", f.name));
            }
            if f.max_match_chars == 0 {
                return invalid("filters.max_match_chars", "must be at least 1".into());
            }
        }
        let g = &self.generation;
        if g.default_max_tokens == 0 || g.default_max_tokens > g.max_tokens_limit {
            return invalid(
                "generation.default_max_tokens",
                format!(
                    "must be between 1 and max_tokens_limit ({})",
                    g.max_tokens_limit
                ),
            );
        }
        let srv = &self.server;
        if g.max_n > srv.queue_capacity {
            return invalid(
                "generation.max_n",
                format!(
                    "must be at most server.queue_capacity ({}): more choices than the queue \
                     holds could never all be queued",
                    srv.queue_capacity
                ),
            );
        }
        if srv.max_body_bytes < 1024 {
            return invalid("server.max_body_bytes", "must be at least 1024".into());
        }
        if srv.ws_max_id_bytes < 8 {
            return invalid("server.ws_max_id_bytes", "must be at least 8".into());
        }
        for origin in &srv.cors_allowed_origins {
            if origin != "*" && axum::http::HeaderValue::from_str(origin).is_err()
                || origin.ends_with('/')
            {
                return invalid(
                    "server.cors_allowed_origins",
                    format!("`{origin}` is not an origin (scheme://host[:port], no path)"),
                );
            }
        }
        if let Err(e) = crate::net::TrustedProxies::parse(&srv.trusted_proxies) {
            return invalid("server.trusted_proxies", e);
        }
        let a = &self.auth;
        if a.access_token_ttl_secs == 0 || a.refresh_token_ttl_secs == 0 {
            return invalid(
                "auth.access_token_ttl_secs",
                "token lifetimes must be at least 1 second".into(),
            );
        }
        if let Some(secret) = &a.jwt_secret {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return invalid(
                    "auth.jwt_secret",
                    format!(
                        "must be at least {MIN_JWT_SECRET_BYTES} bytes (got {}); e.g. \
                         `openssl rand -base64 48`, or leave it unset to have one generated",
                        secret.len()
                    ),
                );
            }
        }
        if a.username_min_len == 0 || a.username_min_len > a.username_max_len {
            return invalid(
                "auth.username_min_len",
                "must be between 1 and username_max_len".into(),
            );
        }
        if a.password_min_len == 0 || a.password_min_len > a.password_max_len {
            return invalid(
                "auth.password_min_len",
                "must be between 1 and password_max_len".into(),
            );
        }
        let st = &self.storage;
        if st.data_dir.as_os_str().is_empty() {
            return invalid("storage.data_dir", "must name a directory".into());
        }
        if let Err(message) = st.target() {
            return invalid("storage.url", message);
        }
        if let Some(url) = &self.cache.url {
            if !url.starts_with("redis://") && !url.starts_with("unix://") {
                return invalid(
                    "cache.url",
                    "must start with redis:// (or unix:// for a socket)".into(),
                );
            }
        }
        if st.connections == 0 || st.connections > 64 {
            return invalid("storage.connections", "must be between 1 and 64".into());
        }
        if !(0..=19).contains(&self.model.nice) {
            return invalid("model.nice", "must be between 0 and 19".into());
        }
        if self.model.path.trim().is_empty() {
            return invalid("model.path", "must name a model".into());
        }
        self.validate_backends()
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
    fn tls_files_come_in_pairs_resolved_against_the_config_dir() {
        figment::Jail::expect_with(|jail| {
            std::fs::create_dir("etc").map_err(|e| e.to_string())?;
            jail.create_file(
                "etc/config.toml",
                "[server]\ntls_cert = \"tls/cert.pem\"\ntls_key = \"/keys/key.pem\"\n",
            )?;
            let cfg =
                Config::load(Some(Path::new("etc/config.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                cfg.server.tls_cert.as_deref(),
                Some(Path::new("etc/tls/cert.pem"))
            );
            assert_eq!(
                cfg.server.tls_key.as_deref(),
                Some(Path::new("/keys/key.pem"))
            );
            jail.create_file("etc/config.toml", "[server]\ntls_cert = \"cert.pem\"\n")?;
            let err = Config::load(Some(Path::new("etc/config.toml"))).unwrap_err();
            assert!(err.to_string().contains("server.tls_cert"), "{err}");
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
