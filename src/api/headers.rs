//! What every response and every request log carries, whatever the route: security headers,
//! CORS (`server.cors_allowed_origins`), and the request's tracing span (its id, method and a
//! URI with credentials redacted).

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::clip;

/// Query parameters whose values are never logged.
const SECRET_PARAMS: [&str; 8] = [
    "api_key",
    "key",
    "token",
    "access_token",
    "refresh_token",
    "password",
    "secret",
    "authorization",
];

/// Headers every response gets unless the handler set its own (the web UI sets a fuller
/// Content-Security-Policy): no MIME sniffing, no referrer leaking URLs (a `/ws?api_key=`
/// one included), no framing (clickjacking), and for API answers no content of any kind.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

/// Middleware adding [`SECURITY_HEADERS`] to every response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        let name = HeaderName::from_static(name);
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// CORS for `origins` (`["*"]`: any). Preflights from a listed origin are answered with the
/// methods and headers the API uses; other origins get no `Access-Control-Allow-Origin`, so
/// browsers keep their pages out. Credentials travel in `Authorization`, never in cookies, so
/// `Access-Control-Allow-Credentials` is not sent. No origin listed: no CORS layer at all (no
/// CORS headers on any response).
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        return Some(layer.allow_origin(AllowOrigin::any()));
    }
    // Validated at start (`Config::validate`): every entry is a header value.
    Some(layer.allow_origin(AllowOrigin::list(
        origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
    )))
}

/// The span every event of a request is logged in: `request{id=… method=… uri=…}`.
///
/// At ERROR level so that it is enabled under any filter: a warning logged while handling
/// the request then still names its request id.
pub fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| clip(v, 64))
        .unwrap_or_default();
    tracing::error_span!(
        "request",
        id = %id,
        method = %clip(req.method().as_str(), 16),
        uri = %redacted(req.uri()),
    )
}

/// `uri` with the values of credential-bearing query parameters replaced by `[redacted]`.
pub fn redacted(uri: &Uri) -> String {
    let path = clip(uri.path(), 256);
    let Some(query) = uri.query() else {
        return path;
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s)) => {
                format!("{name}=[redacted]")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", clip(&pairs.join("&"), 512))
}

/// What every generation response says about the generation service's decisions:
/// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds until the request budget is full
/// again) when `limits.requests_per_minute` is on, and `x-hearth-cache: hit|miss`.
pub(crate) fn add_run_headers(
    headers: &mut axum::http::HeaderMap,
    rate: Option<crate::chat::RateStatus>,
    cache_hit: bool,
) {
    if let Some(r) = rate {
        headers.insert("x-ratelimit-limit", HeaderValue::from(r.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(r.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(r.reset_secs));
    }
    headers.insert(
        "x-hearth-cache",
        HeaderValue::from_static(if cache_hit { "hit" } else { "miss" }),
    );
}

/// `Warning: 299 hearth "…"` for each thing a request asked for that is not enforced (schema
/// keywords of a non-strict `json_schema`), in visible ASCII.
pub fn add_warnings(headers: &mut axum::http::HeaderMap, warnings: &[String]) {
    for w in warnings {
        let text: String = clip(w, 300)
            .chars()
            .map(|c| match c {
                '"' | '\\' => '\'',
                c if c.is_ascii_graphic() || c == ' ' => c,
                _ => '?',
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("299 hearth \"{text}\"")) {
            headers.append(header::WARNING, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_query_strings_are_redacted() {
        let uri: Uri = "/ws?api_key=sk-hearth-secret&x=1&Token=t0p"
            .parse()
            .expect("uri");
        let logged = redacted(&uri);
        assert_eq!(logged, "/ws?api_key=[redacted]&x=1&Token=[redacted]");
        assert!(!logged.contains("secret"));
        let plain: Uri = "/v1/models".parse().expect("uri");
        assert_eq!(redacted(&plain), "/v1/models");
    }
}
