//! Hearth: a self-hosted AI playground in one binary.
//!
//! The library holds everything; `main.rs` only parses the command line and calls in.

/// The HTTP layer: OpenAI-compatible API and helper endpoints.
pub mod api;
/// Builds and runs the server.
pub mod app;
/// Password hashing, access tokens and opaque secrets.
pub mod auth;
/// Backends (the local model, remote OpenAI-compatible servers), routing and failover.
pub mod backends;
/// The blog: posts, revisions, Markdown rendering, public pages and the AI writing tools.
pub mod blog;
/// The one generation service: admission (rate limits, quotas, permits), the response cache,
/// starting through the router, and usage however a generation ends.
pub mod chat;
/// One-shot command-line commands (`hearth generate`, `tokenize`, `template`, `inspect`, `user`,
/// `backup`, `restore`).
pub mod cli;
/// Replicas sharing state through Redis: the connection, key names and the event bus.
pub mod cluster;
/// Settings from `config.toml`, environment overrides and CLI flags.
pub mod config;
/// The in-process inference runtime: loading, tokenizing, templating, the forward pass, sampling.
pub mod engine;
/// Rate limits: login attempts.
pub mod limits;
/// Prometheus metrics.
pub mod metrics;
/// The listener: connections, their cap and timeouts; client addresses behind proxies.
pub mod net;
/// Graceful shutdown of the work that outlives a request: WebSockets and detached answers.
pub mod shutdown;
/// The SQLite store: accounts, API keys, usage; migrations and backups.
pub mod store;
