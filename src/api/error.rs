//! The one error type of the HTTP layer. Every failure becomes an OpenAI-shaped JSON body
//! (`{"error": {"message", "type", "param", "code"}}`) with the right status; 5xx details are
//! logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The longest error message built from client input (serde quotes the offending value, which
/// may be a megabyte long).
pub const MESSAGE_MAX_BYTES: usize = 512;

/// `text` cut to at most `max` bytes on a character boundary, with `…` where it was cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Everything a handler can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is out of range.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
        /// The offending field, when one is to blame.
        param: Option<String>,
    },
    /// 401: a missing, malformed, expired or revoked credential (API key or access token).
    #[error("{0}")]
    Unauthorized(String),
    /// 401 from login: wrong username or password, or a disabled account (all the same answer).
    #[error("Invalid username or password")]
    BadCredentials,
    /// 401 from refresh: the refresh token is unknown, used, revoked or expired.
    #[error("Invalid or expired refresh token; log in again")]
    BadRefreshToken,
    /// 403: authenticated, but not allowed; `code` says why.
    #[error("{message}")]
    Forbidden {
        /// What is refused.
        message: String,
        /// The machine-readable reason, e.g. `admin_required`, `registration_closed`.
        code: &'static str,
    },
    /// 404: no such resource (or not the caller's: the two are not told apart).
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with what is stored; `code` says how.
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The machine-readable reason, e.g. `username_taken`, `last_admin`.
        code: &'static str,
    },
    /// 409 from a save that names an older revision than the stored one: nothing was
    /// changed; the body carries the stored version as `current`.
    #[error(
        "This post was saved elsewhere since the revision you edited: it is at revision \
         {revision} now. Nothing was overwritten; merge with `current` and save against it."
    )]
    StaleRevision {
        /// The stored revision.
        revision: i64,
        /// The stored post, as the API shows it.
        current: Box<serde_json::Value>,
    },
    /// 413: one field is over its configured limit (the message names the setting).
    #[error("{0}")]
    TooLarge(String),
    /// 429: a rate limit or quota (login attempts, generation requests, running generations,
    /// daily tokens); the message says which and when to retry.
    #[error("{message}")]
    RateLimited {
        /// Which limit, and when it allows the next attempt.
        message: String,
        /// Whole seconds until the next attempt is allowed (at least 1).
        retry_after_secs: u64,
        /// `limits.requests_per_minute`, when that is the limit hit (for `X-RateLimit-*`).
        limit: Option<u32>,
    },
    /// 404: no such model.
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),
    /// 404: no such route.
    #[error("Unknown route {0}")]
    RouteNotFound(String),
    /// 405.
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// 413: the body is over the configured limit.
    #[error("The request body is larger than the server's limit (server.max_body_bytes)")]
    PayloadTooLarge,
    /// 408: the request body stopped arriving for `server.idle_timeout_secs`.
    #[error("The request body stopped arriving (server.idle_timeout_secs)")]
    BodyTimeout,
    /// 429: the queue is full; retry after a moment.
    #[error("The server is busy: the inference queue is full. Retry shortly.")]
    Overloaded,
    /// 503: the model is not loaded or its thread has stopped.
    #[error("{0}")]
    Unavailable(String),
    /// 504: waited too long in the queue.
    #[error("{0}")]
    QueueTimeout(String),
    /// 502: a remote backend failed (unreachable, 5xx, refused us, unintelligible reply) and no
    /// failover backend could answer.
    #[error("{0}")]
    BadGateway(String),
    /// 504: a remote backend was too slow and no failover backend could answer.
    #[error("{0}")]
    GatewayTimeout(String),
    /// 429: a remote backend is rate-limiting us and no failover backend could answer.
    #[error("{0}")]
    UpstreamRateLimited(String),
    /// 507: the disk holding the database is full; nothing of the request was stored.
    #[error(
        "The server's disk is full: nothing was saved. Retry once an operator has freed space."
    )]
    InsufficientStorage,
    /// 500: a bug or a failed model; the detail is logged.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming the parameter.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::BadCredentials | ApiError::BadRefreshToken => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::ModelNotFound(_) | ApiError::RouteNotFound(_) | ApiError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Conflict { .. } | ApiError::StaleRevision { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::QueueTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UpstreamRateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ApiError::InvalidRequest { .. } => ("invalid_request_error", None),
            ApiError::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            ApiError::BadCredentials => ("invalid_request_error", Some("invalid_credentials")),
            ApiError::BadRefreshToken => ("invalid_request_error", Some("invalid_refresh_token")),
            ApiError::Forbidden { code, .. } => ("permission_error", Some(*code)),
            ApiError::NotFound(_) => ("invalid_request_error", Some("not_found")),
            ApiError::Conflict { code, .. } => ("invalid_request_error", Some(*code)),
            ApiError::StaleRevision { .. } => ("invalid_request_error", Some("revision_conflict")),
            ApiError::TooLarge(_) => ("invalid_request_error", Some("payload_too_large")),
            ApiError::RateLimited { .. } => ("rate_limit_error", Some("rate_limited")),
            ApiError::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            ApiError::RouteNotFound(_) => ("invalid_request_error", Some("unknown_url")),
            ApiError::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
            ApiError::PayloadTooLarge => ("invalid_request_error", Some("payload_too_large")),
            ApiError::BodyTimeout => ("invalid_request_error", Some("body_timeout")),
            ApiError::Overloaded => ("rate_limit_error", Some("queue_full")),
            ApiError::Unavailable(_) => ("server_error", Some("unavailable")),
            ApiError::QueueTimeout(_) => ("server_error", Some("queue_timeout")),
            ApiError::BadGateway(_) => ("server_error", Some("upstream_error")),
            ApiError::GatewayTimeout(_) => ("server_error", Some("upstream_timeout")),
            ApiError::UpstreamRateLimited(_) => ("rate_limit_error", Some("upstream_rate_limited")),
            ApiError::InsufficientStorage => ("server_error", Some("insufficient_storage")),
            ApiError::Internal(_) => ("server_error", None),
        }
    }

    /// The OpenAI error object.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        let param = match self {
            ApiError::InvalidRequest { param, .. } => param.clone(),
            ApiError::ModelNotFound(_) => Some("model".into()),
            ApiError::StaleRevision { .. } => Some("revision".into()),
            _ => None,
        };
        let mut body = json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}});
        if let ApiError::StaleRevision { current, .. } = self {
            body["current"] = (**current).clone();
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        let retry_after = match &self {
            ApiError::Overloaded | ApiError::Unavailable(_) | ApiError::UpstreamRateLimited(_) => {
                Some(1)
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some((*retry_after_secs).max(1)),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            if let ApiError::RateLimited {
                limit: Some(limit), ..
            } = &self
            {
                let h = response.headers_mut();
                h.insert("x-ratelimit-limit", HeaderValue::from(*limit));
                h.insert("x-ratelimit-remaining", HeaderValue::from(0));
                h.insert("x-ratelimit-reset", HeaderValue::from(secs));
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as J;
        match &rejection {
            J::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            J::BytesRejection(_) if caused_by_body_timeout(&rejection) => ApiError::BodyTimeout,
            J::MissingJsonContentType(_) => ApiError::InvalidRequest {
                message: "Expected `Content-Type: application/json`".into(),
                param: None,
            },
            J::JsonSyntaxError(_) => ApiError::InvalidRequest {
                message: clip(
                    &format!("Invalid JSON: {}", rejection.body_text()),
                    MESSAGE_MAX_BYTES,
                ),
                param: None,
            },
            J::JsonDataError(_) => ApiError::InvalidRequest {
                message: clip(
                    &format!("Invalid request: {}", rejection.body_text()),
                    MESSAGE_MAX_BYTES,
                ),
                param: data_error_param(&rejection.body_text()).map(|p| clip(&p, 128)),
            },
            _ => ApiError::InvalidRequest {
                message: rejection.body_text(),
                param: None,
            },
        }
    }
}

/// Whether reading the body failed because it stopped arriving (`RequestBodyTimeoutLayer`).
fn caused_by_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// serde's path for a data error ("messages[0].content: invalid type …") names the field.
fn data_error_param(text: &str) -> Option<String> {
    let after = text.split("target type: ").nth(1).unwrap_or(text);
    let path = after.split(':').next()?.trim();
    (!path.is_empty() && !path.contains(' ')).then(|| path.to_string())
}

impl From<crate::backends::BackendError> for ApiError {
    fn from(e: crate::backends::BackendError) -> Self {
        use crate::backends::ErrorKind as K;
        match e.kind {
            K::InvalidRequest => ApiError::InvalidRequest {
                message: e.message,
                param: e.param,
            },
            K::UnknownModel => ApiError::NotFound(e.message),
            K::Overloaded => ApiError::Overloaded,
            K::QueueTimeout => ApiError::QueueTimeout(e.message),
            K::Connect | K::ServerError | K::Rejected | K::Malformed => {
                ApiError::BadGateway(e.message)
            }
            K::Timeout => ApiError::GatewayTimeout(e.message),
            K::RateLimited => ApiError::UpstreamRateLimited(e.message),
            K::Unavailable => ApiError::Unavailable(e.message),
            K::Internal => ApiError::Internal(e.message),
        }
    }
}

impl From<crate::chat::ChatError> for ApiError {
    fn from(e: crate::chat::ChatError) -> Self {
        use crate::chat::{ChatError, Refusal};
        match e {
            ChatError::Backend(e) => e.into(),
            ChatError::NotAllowed(e) => ApiError::Forbidden {
                message: e.to_string(),
                code: "model_not_allowed",
            },
            ChatError::Limited(r) => ApiError::RateLimited {
                message: r.to_string(),
                retry_after_secs: r.retry_after_secs(),
                limit: match r {
                    Refusal::Requests { limit, .. } => Some(limit),
                    _ => None,
                },
            },
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::NotFound => ApiError::NotFound("Not found".into()),
            S::Conflict(_) => ApiError::Conflict {
                message: "Already exists".into(),
                code: "conflict",
            },
            S::PoolTimeout(_) => {
                ApiError::Unavailable("the database is busy; retry shortly".into())
            }
            e if e.is_unreachable() => {
                tracing::error!(error = %e, "the database is unreachable");
                ApiError::Unavailable("the database is unreachable; retry shortly".into())
            }
            S::Unsupported(message) => ApiError::Conflict {
                message,
                code: "unsupported_by_store",
            },
            S::Full => {
                tracing::error!("a write failed: the disk holding the database is full");
                ApiError::InsufficientStorage
            }
            other => ApiError::Internal(format!("store: {other}")),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        match e {
            A::BadCredentials => ApiError::BadCredentials,
            A::InvalidToken => ApiError::Unauthorized("Invalid access token".into()),
            A::TokenExpired => ApiError::Unauthorized("The access token has expired".into()),
            A::Internal(detail) => ApiError::Internal(format!("auth: {detail}")),
        }
    }
}
