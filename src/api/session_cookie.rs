//! The web UI's browser session: its refresh token travels in an `HttpOnly; SameSite=Strict`
//! cookie scoped to `/api/auth` (so page scripts never see it and no other route receives it),
//! while the access token stays in the page's memory. A request opts into this with the header
//! [`CSRF_HEADER`]: login then sets the cookie instead of returning the refresh token, and
//! refresh and logout read the cookie only when the header is there. Other sites cannot send
//! it (a custom header needs a CORS preflight that Hearth does not grant), and SameSite=Strict
//! keeps the cookie off their requests in the first place.

use axum::http::{header, HeaderMap, HeaderValue};

/// The cookie's name.
pub const COOKIE: &str = "hearth_refresh";

/// The header a browser session sends on its `/api/auth` calls (any value).
pub const CSRF_HEADER: &str = "x-hearth-csrf";

/// The path the cookie is sent to: refresh and logout (and login, which replaces it).
const COOKIE_PATH: &str = "/api/auth";

/// Whether the request is a browser session's (it sent [`CSRF_HEADER`]).
pub fn is_browser_session(headers: &HeaderMap) -> bool {
    headers.contains_key(CSRF_HEADER)
}

/// The refresh token in the request's cookie, if a browser session sent one.
pub fn refresh_token(headers: &HeaderMap) -> Option<String> {
    if !is_browser_session(headers) {
        return None;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new refresh token valid for `max_age_secs`.
pub fn set(token: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    cookie(token, max_age_secs, secure)
}

/// `Set-Cookie` that removes the cookie.
pub fn clear(secure: bool) -> HeaderValue {
    cookie("", 0, secure)
}

fn cookie(value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    // Refresh tokens are URL-safe base64 (`auth::new_refresh_token`), valid in a header.
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("hearth_refresh=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_is_read_only_with_the_csrf_header() {
        let cookie = "a=1; hearth_refresh=tok_123; b=2";
        assert_eq!(refresh_token(&headers(&[("cookie", cookie)])), None);
        assert_eq!(
            refresh_token(&headers(&[("cookie", cookie), (CSRF_HEADER, "1")])),
            Some("tok_123".into())
        );
        assert_eq!(
            refresh_token(&headers(&[
                ("cookie", "hearth_refresh="),
                (CSRF_HEADER, "1")
            ])),
            None
        );
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped() {
        let v = set("t", 60, false);
        let s = v.to_str().unwrap();
        assert!(
            s.contains("HttpOnly") && s.contains("SameSite=Strict"),
            "{s}"
        );
        assert!(s.contains("Path=/api/auth") && !s.contains("Secure"), "{s}");
        assert!(set("t", 60, true).to_str().unwrap().ends_with("; Secure"));
        assert!(clear(false).to_str().unwrap().contains("Max-Age=0"));
    }
}
