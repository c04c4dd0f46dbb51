//! The HTTP layer — the only module that knows HTTP. Builds the axum router over shared
//! [`AppState`]; handlers extract, validate, call the engine/scheduler and respond.

pub mod accounts;
pub mod admin;
pub mod assist;
pub mod auth;
pub mod blog_pages;
pub mod conversation_io;
pub mod conversations;
pub mod error;
mod headers;
pub mod openai;
pub mod posts;
pub mod preferences;
pub mod session_cookie;
pub mod sessions;
pub mod tokens;
pub mod web;
pub mod ws;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::engine::generate::Engine;
use crate::engine::scheduler::Scheduler;
use crate::metrics::Metrics;
use error::ApiError;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The SQLite store (accounts, keys, usage).
    pub store: crate::store::Store,
    /// Access-token signing keys.
    pub jwt: Arc<crate::auth::jwt::JwtKeys>,
    /// Login attempt limits.
    pub login_limits: Arc<crate::limits::LoginLimits>,
    /// Password hashing, a bounded number at a time.
    pub hasher: crate::auth::password::Hasher,
    /// Whose `X-Forwarded-For` to believe.
    pub proxies: Arc<crate::net::TrustedProxies>,
    /// Tokenizer, template and model (the model itself runs only on the scheduler's thread).
    pub engine: Arc<Engine>,
    /// The model thread and its queue.
    pub scheduler: Arc<Scheduler>,
    /// The one generation service every transport calls.
    pub chat: crate::chat::ChatService,
    /// The graceful shutdown: WebSockets hold a guard and close when it drains.
    pub drain: crate::shutdown::Drain,
    /// Every backend (the local model, remote servers), routing and failover.
    pub router: Arc<crate::backends::Router>,
    /// Settings.
    pub config: Arc<Config>,
    /// The id clients use for the local model.
    pub model_id: String,
    /// Unix time the server started (the model's `created`).
    pub started_at: u64,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The blog's templates and caches.
    pub blog: Arc<crate::blog::Blog>,
    /// Compiled `response_format` schemas.
    pub schemas: Arc<crate::engine::grammar::mask::SchemaCache>,
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let authenticated =
        || middleware::from_fn_with_state(state.clone(), auth::authenticate_request);
    // The OpenAI API, served under `/v1` and, for clients configured with a base URL without
    // it (llama.cpp's server answers both), at the root too.
    let openai_api = Router::new()
        .route("/models", get(openai::list_models))
        .route("/models/{id}", get(openai::get_model))
        .route("/chat/completions", post(openai::create_chat_completion))
        .route("/completions", post(openai::create_completion))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(authenticated());
    // llama.cpp-style helpers: they run the tokenizer, so they are authenticated like `/v1`.
    let helpers = Router::new()
        .route("/tokenize", post(tokens::tokenize))
        .route("/detokenize", post(tokens::detokenize))
        .route("/apply-template", post(tokens::apply_template))
        .route("/props", get(tokens::props))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(authenticated());
    // Conversations: a user's access token or API key (the `/v1` authentication), then
    // `conversations::Owner` requires an account.
    let conversation_api = Router::new()
        .route(
            "/conversations",
            get(conversations::list_conversations).post(conversations::create_conversation),
        )
        .route(
            "/conversations/{id}",
            get(conversations::get_conversation)
                .patch(conversations::update_conversation)
                .delete(conversations::delete_conversation),
        )
        .route(
            "/conversations/{id}/messages",
            get(conversations::list_messages).post(conversations::post_message),
        )
        .route(
            "/conversations/import",
            post(conversation_io::import_conversation),
        )
        .route(
            "/conversations/{id}/export",
            get(conversation_io::export_conversation),
        )
        .route(
            "/conversations/{id}/messages/{message_id}/regenerate",
            post(conversations::regenerate),
        )
        .route(
            "/conversations/{id}/active",
            put(conversations::switch_branch),
        )
        .route("/messages/{id}", get(conversations::get_message))
        .route("/messages/{id}/stream", get(conversations::stream_message))
        .route("/messages/{id}/cancel", post(conversations::cancel_message))
        .route("/rate-limit", get(conversations::rate_limit))
        .route("/models", get(preferences::list_models))
        .route(
            "/me/preferences",
            get(preferences::get_preferences).put(preferences::put_preferences),
        )
        .route(
            "/me/memories",
            get(preferences::list_memories).post(preferences::add_memory),
        )
        .route("/me/memories/{id}", delete(preferences::delete_memory))
        .route("/posts", get(posts::list_posts).post(posts::create_post))
        .route(
            "/posts/{id}",
            get(posts::get_post)
                .patch(posts::update_post)
                .delete(posts::delete_post),
        )
        .route("/posts/{id}/publish", post(posts::publish_post))
        .route("/posts/{id}/unpublish", post(posts::unpublish_post))
        .route("/posts/{id}/revisions", get(posts::list_revisions))
        .route("/posts/{id}/revisions/{revision}", get(posts::get_revision))
        .route(
            "/posts/{id}/revisions/{revision}/restore",
            post(posts::restore_revision),
        )
        .route("/posts/{id}/seo", get(posts::seo_report))
        .route("/posts/{id}/assist", post(assist::assist_post))
        .route("/render", post(posts::render_markdown))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(authenticated());
    let mut metrics_route = Router::new().route("/metrics", get(metrics));
    if state.config.auth.metrics_require_auth {
        metrics_route = metrics_route.route_layer(authenticated());
    }
    // The account API authenticates per handler (`auth::Session`, `auth::Admin`), since
    // registering and logging in need no session.
    let account_api = Router::new()
        .route("/auth/register", post(accounts::register))
        .route("/auth/login", post(sessions::login))
        .route("/auth/refresh", post(sessions::refresh))
        .route("/auth/logout", post(sessions::logout))
        .route("/auth/logout-all", post(sessions::logout_all))
        .route("/auth/policy", get(accounts::policy))
        .route("/me", get(accounts::me))
        .route("/me/password", post(accounts::change_password))
        .route("/keys", get(accounts::list_keys).post(accounts::create_key))
        .route("/keys/{id}", delete(accounts::delete_key))
        .route(
            "/admin/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route("/admin/users/{id}", patch(admin::update_user))
        .route("/admin/usage", get(admin::usage))
        .route("/admin/backends", get(admin::backends))
        .route(
            "/admin/users/{id}/limits",
            get(preferences::get_user_limits).put(preferences::put_user_limits),
        )
        .route(
            "/admin/models",
            get(preferences::get_model_policy).patch(preferences::update_model_policy),
        )
        .route("/admin/backup", post(admin::backup))
        .method_not_allowed_fallback(method_not_allowed);
    let server = &state.config.server;
    let body_limit = server.max_body_bytes;
    let body_idle = std::time::Duration::from_secs(server.idle_timeout_secs);
    let cors = headers::cors(&server.cors_allowed_origins);
    let request_id = header::HeaderName::from_static("x-request-id");
    Router::new()
        .nest("/v1", openai_api.clone())
        .merge(openai_api)
        .merge(helpers)
        .merge(metrics_route)
        .nest("/api", account_api.merge(conversation_api))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/ws", get(ws::handler))
        .merge(web::routes())
        .merge(blog_pages::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyLimitLayer::new(body_limit))
        // A body that stalls mid-upload would hold its connection (and the handler) forever;
        // reading it then fails, which the extractors answer with 408 (`ApiError::BodyTimeout`).
        .layer(RequestBodyTimeoutLayer::new(body_idle))
        // Outside the limit layer, so its plain-text 413 is rewritten as JSON.
        .layer(middleware::from_fn(json_errors_for_layers))
        // Preflights are answered here, before any authentication.
        .layer(tower::util::option_layer(cors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(headers::request_span))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::from_fn(headers::security_headers))
        .with_state(state)
}

/// `GET /health`: the process is up.
async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 once the model thread is serving (and, on PostgreSQL, the database answers
/// within 2 s), 503 otherwise.
async fn ready(State(state): State<AppState>) -> Response {
    if !state.scheduler.is_running() {
        return ApiError::Unavailable("the model is not loaded".into()).into_response();
    }
    // A replica cut off from a shared database takes no traffic (a SQLite file is this
    // process's own: nothing to ask).
    if state.store.dialect() == crate::store::Dialect::Postgres {
        let answered =
            tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
        if !matches!(answered, Ok(Ok(()))) {
            return ApiError::Unavailable("the database is unreachable".into()).into_response();
        }
    }
    Json(json!({"status": "ready", "model": state.model_id})).into_response()
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Count every answered request by route template, method and status.
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    state.metrics.http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Layers below the handlers (the body limit) answer in plain text; give them our JSON shape.
async fn json_errors_for_layers(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return ApiError::PayloadTooLarge.into_response();
    }
    response
}
