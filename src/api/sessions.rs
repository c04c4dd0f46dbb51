//! Sessions: log in, refresh, log out (one session, or every session of the account), and the
//! token pair each returns — in the body for API clients, or for a browser session the
//! refresh token in its cookie ([`super::session_cookie`]).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::{check_password_attempt, ClientIp, Credentials};
use super::auth::Session;
use super::error::ApiError;
use super::session_cookie;
use super::AppState;
use crate::auth::{new_refresh_token, secret_hash};
use crate::cluster::events::Event;
use crate::store::{unix_now, ConsumeOutcome, Rotation, User};

/// `{refresh_token}`: refresh and logout. A browser session sends `{}` and has the token in
/// its cookie ([`super::session_cookie`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl RefreshRequest {
    /// The token presented: the body's, else a browser session's cookie; 400 for neither.
    fn token(self, headers: &HeaderMap) -> Result<String, ApiError> {
        self.refresh_token
            .or_else(|| session_cookie::refresh_token(headers))
            .ok_or_else(|| ApiError::invalid("refresh_token", "`refresh_token` is required"))
    }
}

/// A login's tokens: a new refresh token in a new family, recorded only if the account is
/// still as `user` says (enabled, password unchanged; 401 `BadCredentials` otherwise), and an
/// access token.
async fn issue_tokens(state: &AppState, user: &User) -> Result<Value, ApiError> {
    let refresh_token = new_refresh_token();
    let family = uuid::Uuid::new_v4().simple().to_string();
    let user = state
        .store
        .insert_refresh_if_unchanged(
            user.id,
            user.password_changed_at,
            &family,
            &secret_hash(&refresh_token),
            refresh_expiry(state),
        )
        .await?
        .ok_or(ApiError::BadCredentials)?;
    token_pair(state, &user, refresh_token).await
}

/// When a refresh token issued now expires.
fn refresh_expiry(state: &AppState) -> i64 {
    let ttl = i64::try_from(state.config.auth.refresh_token_ttl_secs).unwrap_or(i64::MAX);
    unix_now().saturating_add(ttl)
}

/// The token response: a new access token for `user` and the (already stored) refresh token.
///
/// Access tokens are valid only if issued in a later second than the last password change
/// (`auth::user_of_access_token`); right after a change (or the account's creation) this waits
/// for the next second, so that every token it issues is both valid now and older than any
/// later change.
async fn token_pair(
    state: &AppState,
    user: &User,
    refresh_token: String,
) -> Result<Value, ApiError> {
    wait_until_after_second(user.tokens_valid_after()).await;
    let access_token = state.jwt.issue(user.id, user.role.as_str(), unix_now())?;
    Ok(json!({
        "access_token": access_token,
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": state.jwt.ttl_secs(),
    }))
}

/// Sleep until the Unix clock has passed the whole second `second` (returns at once if it has).
async fn wait_until_after_second(second: i64) {
    let next_ms = second.saturating_add(1).saturating_mul(1000);
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Ok(wait) = u64::try_from(next_ms - now_ms) {
        if wait > 0 {
            // Bounded: a clock set back would otherwise stall the request.
            tokio::time::sleep(std::time::Duration::from_millis(wait.min(1000))).await;
        }
    }
}

/// `POST /api/auth/login {username, password}` → `{access_token, refresh_token, token_type,
/// expires_in}`. Unknown user, wrong password and disabled account get the same 401 in about
/// the same time (a dummy hash is verified when there is no user). Attempts are limited per
/// client IP and per username (429 with `Retry-After`).
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(c) = body?;
    // A password longer than any account can have cannot match; refuse it before hashing.
    if c.password.chars().count() > state.config.auth.password_max_len {
        state.login_limits.failed(ip, &c.username);
        return Err(ApiError::BadCredentials);
    }
    let found = if c.username.chars().count() > state.config.auth.username_max_len {
        None
    } else {
        state.store.user_by_username(&c.username).await?
    };
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let matches = check_password_attempt(&state, ip, &c.username, c.password, hash).await?;
    let user = match user {
        Some(u) if matches && !u.disabled => u,
        _ => return Err(ApiError::BadCredentials),
    };
    let tokens = issue_tokens(&state, &user).await?;
    // A browser logging in again replaces its cookie: the session it held ends with it.
    if let Some(previous) = session_cookie::refresh_token(&headers) {
        state.store.revoke_by_hash(&secret_hash(&previous)).await?;
    }
    tracing::info!(user_id = user.id, "logged in");
    Ok(tokens_response(&state, &headers, tokens))
}

/// `POST /api/auth/refresh {refresh_token}` → a new pair; the presented token is used up. A
/// token presented a second time revokes its whole session (someone else has a copy).
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(r) = body?;
    let presented = r.token(&headers)?;
    let refresh_token = new_refresh_token();
    let rotation = state
        .store
        .rotate_refresh(
            &secret_hash(&presented),
            &secret_hash(&refresh_token),
            refresh_expiry(&state),
            unix_now(),
        )
        .await?;
    let refused = match rotation {
        Rotation::Rotated(user) => {
            let tokens = token_pair(&state, &user, refresh_token).await?;
            return Ok(tokens_response(&state, &headers, tokens));
        }
        Rotation::Refused(ConsumeOutcome::Reused { user_id, family_id }) => {
            tracing::warn!(
                user_id,
                family_id,
                "a used refresh token was presented again; its session is revoked"
            );
            ApiError::BadRefreshToken
        }
        Rotation::Refused(_) => ApiError::BadRefreshToken,
    };
    let mut response = refused.into_response();
    if session_cookie::is_browser_session(&headers) {
        let clear = session_cookie::clear(state.config.auth.secure_cookies);
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    Ok(response)
}

/// A token pair as the response: the JSON as it is, or for a browser session
/// ([`session_cookie`]) the refresh token moved out of the body into its cookie.
fn tokens_response(state: &AppState, headers: &HeaderMap, mut tokens: Value) -> Response {
    if !session_cookie::is_browser_session(headers) {
        return Json(tokens).into_response();
    }
    let refresh = tokens
        .as_object_mut()
        .and_then(|o| o.remove("refresh_token"))
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let auth = &state.config.auth;
    let cookie = session_cookie::set(&refresh, auth.refresh_token_ttl_secs, auth.secure_cookies);
    ([(header::SET_COOKIE, cookie)], Json(tokens)).into_response()
}

/// `POST /api/auth/logout {refresh_token}` → 204: the session (every token of its family) is
/// revoked. Unknown tokens get the same answer.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(r) = body?;
    let browser = session_cookie::is_browser_session(&headers);
    match r.token(&headers) {
        Ok(token) => {
            state.store.revoke_by_hash(&secret_hash(&token)).await?;
        }
        // A browser session whose cookie is already gone is logged out.
        Err(_) if browser => {}
        Err(e) => return Err(e),
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if browser {
        let clear = session_cookie::clear(state.config.auth.secure_cookies);
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    Ok(response)
}

/// `POST /api/auth/logout-all` → 204: sign out everywhere. Every refresh token of the caller
/// is revoked and every access token issued until now stops working (open WebSockets close at
/// their next check); API keys are not sessions and keep working.
pub async fn logout_all(
    State(state): State<AppState>,
    Session { user }: Session,
) -> Result<Response, ApiError> {
    let revoked = state.store.revoke_sessions(user.id).await?;
    tracing::info!(user_id = user.id, revoked, "signed out everywhere");
    state
        .chat
        .events()
        .publish(Event::Credentials { user: user.id });
    let clear = session_cookie::clear(state.config.auth.secure_cookies);
    Ok(([(header::SET_COOKIE, clear)], StatusCode::NO_CONTENT).into_response())
}
