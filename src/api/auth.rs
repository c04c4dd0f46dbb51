//! Who is calling. One function, [`authenticate`], turns the credential of a `/v1/*` or `/ws`
//! request into a [`Principal`]; the account API (`/api/*`) uses the [`Session`] and [`Admin`]
//! extractors, which accept access tokens only.
//!
//! A credential is, in this order:
//! 1. the static `server.api_key` (single-user setups): no account behind it;
//! 2. a user API key (`sk-hearth-…`), looked up by its SHA-256; its owner must not be disabled;
//! 3. a user access token (a JWT): right signature and algorithm, not expired, the user exists
//!    and is not disabled, and it was issued after the user's last password change.
//!
//! Where `auth.require_auth` is off and no `server.api_key` is set (anonymous use, the
//! default), no credential is fine, and so is one that is not Hearth's at all: every OpenAI SDK
//! sends *some* key (`api_key="unused"`), and llama.cpp's server and Ollama ignore it too. A
//! credential that *is* Hearth's — an `sk-hearth-` key, a JWT, a refresh token — is checked
//! everywhere: revoked, expired or tampered, it is refused (the caller meant to authenticate,
//! and silently serving them anonymously would hide the mistake and bill nobody).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
pub use crate::auth::Principal;
use crate::auth::{secret_hash, AuthError, API_KEY_PREFIX, REFRESH_PREFIX};
use crate::store::{Role, User};

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Only routes behind `authenticate_request` have one: a handler asking elsewhere is a
        // bug, and refusing is the safe answer.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("route has no authentication layer".into()))
    }
}

impl FromRequestParts<AppState> for crate::chat::Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let Ok(super::accounts::ClientIp(ip)) =
            super::accounts::ClientIp::from_request_parts(parts, state).await;
        Ok(crate::chat::Caller { principal, ip })
    }
}

/// The token of an `Authorization: Bearer <token>` header. `Ok(None)` without the header; a
/// header that is there but is not a bearer credential is an error (it was meant to
/// authenticate, and silently treating the caller as anonymous would hide the mistake).
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::Unauthorized(
            "Malformed Authorization header (expected `Authorization: Bearer <key or token>`)"
                .into(),
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}

/// Whether `/v1`, `/ws` and the helper routes need a credential.
pub fn credential_required(state: &AppState) -> bool {
    state.config.auth.require_auth || state.config.server.api_key.is_some()
}

/// Whether `credential` is shaped like one of Hearth's access tokens: a JWT (three dot-separated
/// parts whose first is a JSON header). Such a token is always verified, even where anonymous
/// use is allowed, so a tampered or expired one is refused rather than ignored.
fn looks_like_jwt(credential: &str) -> bool {
    use base64::Engine as _;
    let mut parts = credential.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    // Any algorithm, `none` included: a forged header must not make a token "foreign".
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .is_some_and(|h| h.is_object())
}

/// Decide who sent `credential` (see the module docs for the order and rules).
pub async fn authenticate(
    state: &AppState,
    credential: Option<&str>,
) -> Result<Principal, ApiError> {
    let required = credential_required(state);
    let Some(credential) = credential else {
        if required {
            return Err(ApiError::Unauthorized(
                "Missing credentials: send `Authorization: Bearer <API key or access token>`"
                    .into(),
            ));
        }
        return Ok(Principal::Anonymous);
    };
    if let Some(key) = &state.config.server.api_key {
        if equal_in_constant_time(credential.as_bytes(), key.as_bytes()) {
            return Ok(Principal::StaticKey);
        }
    }
    if credential.starts_with(API_KEY_PREFIX) {
        return match state
            .store
            .api_key_by_hash(&secret_hash(credential))
            .await?
        {
            Some((key, owner)) if !owner.disabled => Ok(Principal::User {
                user: owner,
                api_key_id: Some(key.id),
            }),
            _ => Err(ApiError::Unauthorized("Invalid API key".into())),
        };
    }
    if credential.starts_with(REFRESH_PREFIX) {
        return Err(ApiError::Unauthorized(
            "That is a refresh token: trade it for an access token at POST /api/auth/refresh"
                .into(),
        ));
    }
    if !looks_like_jwt(credential) {
        if required {
            return Err(ApiError::Unauthorized(
                "Invalid API key or access token".into(),
            ));
        }
        // Not one of ours (a client's placeholder key): anonymous use is allowed here.
        return Ok(Principal::Anonymous);
    }
    let user = user_of_access_token(state, credential).await?;
    Ok(Principal::User {
        user,
        api_key_id: None,
    })
}

/// The live user an access token speaks for: signature, algorithm and expiry checked, the user
/// exists and is enabled, and the token was issued after their last password change.
///
/// Token times are whole seconds, so "after" is strict (`iat > password_changed_at`): a token
/// stamped in the very second of a change is refused, whether it was issued just before the
/// change or just after; `accounts::issue_tokens` therefore never issues one in that second.
pub async fn user_of_access_token(state: &AppState, token: &str) -> Result<User, ApiError> {
    let claims = state.jwt.verify(token).map_err(|e| match e {
        AuthError::TokenExpired => ApiError::Unauthorized("The access token has expired".into()),
        AuthError::Internal(detail) => ApiError::Internal(detail),
        _ => ApiError::Unauthorized("Invalid API key or access token".into()),
    })?;
    let revoked =
        || ApiError::Unauthorized("The access token is no longer valid; log in again".into());
    let id = claims.user_id().map_err(|_| revoked())?;
    let user = state.store.user_by_id(id).await?.ok_or_else(revoked)?;
    if user.disabled || claims.iat <= user.tokens_valid_after() {
        return Err(revoked());
    }
    Ok(user)
}

/// Middleware for `/v1`: authenticate, then hand the [`Principal`] to the handler.
pub async fn authenticate_request(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match bearer(req.headers()) {
        Ok(credential) => authenticate(&state, credential).await,
        Err(e) => Err(e),
    };
    match principal {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// A logged-in user of the account API, by access token (API keys are for `/v1` and `/ws`
/// only: a leaked key must not be able to mint more keys or change the password).
#[derive(Debug, Clone)]
pub struct Session {
    /// The account.
    pub user: User,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?.ok_or_else(|| {
            ApiError::Unauthorized(
                "Log in first: send `Authorization: Bearer <access token>` \
                 (from POST /api/auth/login)"
                    .into(),
            )
        })?;
        if token.starts_with(API_KEY_PREFIX) {
            return Err(ApiError::Unauthorized(
                "API keys work on /v1 and /ws only; the account API needs an access token \
                 (POST /api/auth/login)"
                    .into(),
            ));
        }
        let user = user_of_access_token(state, token).await?;
        Ok(Session { user })
    }
}

/// A logged-in admin: a [`Session`] whose user has the admin role (403 otherwise).
#[derive(Debug, Clone)]
pub struct Admin {
    /// The account.
    pub user: User,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Session { user } = Session::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(ApiError::Forbidden {
                message: "This needs an admin account".into(),
                code: "admin_required",
            });
        }
        Ok(Admin { user })
    }
}

/// Compare two secrets in time that depends only on their lengths.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_authorization(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).expect("header value"),
        );
        h
    }

    #[test]
    fn bearer_tokens_are_read_and_other_schemes_refused() {
        assert_eq!(bearer(&HeaderMap::new()).expect("none"), None);
        assert_eq!(
            bearer(&with_authorization(b"Bearer abc")).expect("ok"),
            Some("abc")
        );
        assert_eq!(
            bearer(&with_authorization(b"bearer  abc ")).expect("ok"),
            Some("abc")
        );
        for bad in [
            &b"Basic YWxhZGRpbjo="[..],
            b"Bearer",
            b"Bearer ",
            b"abc",
            b"Bearer \xff",
        ] {
            assert!(bearer(&with_authorization(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(equal_in_constant_time(b"sk-test", b"sk-test"));
        assert!(!equal_in_constant_time(b"sk-test", b"sk-tesu"));
        assert!(!equal_in_constant_time(b"sk-test", b"sk-test2"));
        assert!(!equal_in_constant_time(b"", b"x"));
    }
}
