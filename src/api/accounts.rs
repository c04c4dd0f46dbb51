//! The account API for everyone: register and the sign-up policy (`/api/auth/register`,
//! `/api/auth/policy`), one's own account (`/api/me`, `/api/me/password`) and API keys
//! (`/api/keys`); logging in and out is [`super::sessions`]. Admin routes are in
//! [`super::admin`]; who is calling is [`super::auth`]'s business.
//!
//! Bodies are JSON with exactly the documented fields (unknown fields are refused: a typo in an
//! account request should fail loudly, not be ignored).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Session;
use super::error::ApiError;
use super::AppState;
use crate::auth::{key_prefix, new_api_key, secret_hash};
use crate::cluster::events::Event;
use crate::config::{AuthSettings, Registration};
use crate::store::{ApiKeyWithUsage, Role, StoreError, Usage, User};

/// Longest API key name, in characters.
const KEY_NAME_MAX_CHARS: usize = 64;

/// `{username, password}`: registration and login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The account name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// `POST /api/me/password` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password now.
    pub current_password: String,
    /// The password from now on.
    pub new_password: String,
    /// Keep the account's API keys working (default false: a password change also deletes
    /// every API key, since whoever knew the old password may have made some).
    #[serde(default)]
    pub keep_api_keys: Option<bool>,
}

/// `POST /api/keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label to tell keys apart.
    pub name: String,
}

/// The client's IP address, for login limits: the peer's, or the one a trusted proxy's
/// `X-Forwarded-For` names (`server.trusted_proxies`). Unspecified (`0.0.0.0`) when the server
/// was not started with peer addresses, e.g. a router driven directly in a test.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>();
        Ok(ClientIp(
            state.proxies.client_ip(peer, forwarded.into_iter()),
        ))
    }
}

/// A user as the API shows it (never the password hash).
pub(crate) fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "role": u.role,
        "disabled": u.disabled,
        "created_at": u.created_at,
    })
}

/// Usage counters as the API shows them.
pub(crate) fn usage_json(u: &Usage) -> Value {
    json!({
        "requests": u.requests,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

fn key_json(k: &ApiKeyWithUsage) -> Value {
    json!({
        "id": k.key.id,
        "name": k.key.name,
        "prefix": k.key.prefix,
        "created_at": k.key.created_at,
        "last_used_at": k.key.last_used_at,
        "usage": usage_json(&k.usage),
    })
}

/// Check a new username against `auth`'s rules: a length in range, and only ASCII letters,
/// digits, `_`, `.` and `-` (so that the store's ASCII-only case folding is the whole story
/// of "the same name").
pub(crate) fn check_username(auth: &AuthSettings, name: &str) -> Result<(), ApiError> {
    let (min, max) = (auth.username_min_len, auth.username_max_len);
    let n = name.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid(
            "username",
            format!("must be {min} to {max} characters long, got {n}"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(ApiError::invalid(
            "username",
            "may contain only ASCII letters, digits, `_`, `.` and `-`",
        ));
    }
    Ok(())
}

/// Check a new password's length (in characters) against `auth`'s rules.
pub(crate) fn check_password(
    auth: &AuthSettings,
    param: &str,
    password: &str,
) -> Result<(), ApiError> {
    let (min, max) = (auth.password_min_len, auth.password_max_len);
    let n = password.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid(
            param,
            format!("must be {min} to {max} characters long, got {n}"),
        ));
    }
    Ok(())
}

/// A 409 for a username that is taken (in any ASCII case).
pub(crate) fn username_taken(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) => ApiError::Conflict {
            message: "That username is taken".into(),
            code: "username_taken",
        },
        other => other.into(),
    }
}

/// Check a password for `username` from `ip` under the failure budgets (`crate::limits`):
/// 429 while this client has failed too often (on any account, or on this one); otherwise the
/// verification's answer, a failure being charged to both budgets.
pub(crate) async fn check_password_attempt(
    state: &AppState,
    ip: IpAddr,
    username: &str,
    password: String,
    stored: Option<String>,
) -> Result<bool, ApiError> {
    state.login_limits.admit(ip, username).map_err(|wait| {
        tracing::info!(%ip, "password attempt refused by the rate limit");
        let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError::RateLimited {
            message: format!("Too many login attempts; retry in {retry_after_secs} s"),
            retry_after_secs,
            limit: None,
        }
    })?;
    let matches = state.hasher.verify(password, stored).await?;
    if matches {
        state.login_limits.succeeded(ip, username);
    } else {
        state.login_limits.failed(ip, username);
    }
    Ok(matches)
}

/// `POST /api/auth/register {username, password}` → 201 `{user}`, under
/// `auth.registration`: `open` (the very first account becomes admin), `first_admin` (only
/// while there are no users; that one is admin), `closed` (403).
pub async fn register(
    State(state): State<AppState>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(c) = body?;
    let auth = &state.config.auth;
    check_username(auth, &c.username)?;
    check_password(auth, "password", &c.password)?;
    let closed = || ApiError::Forbidden {
        message: "Registration is closed: an admin creates accounts".into(),
        code: "registration_closed",
    };
    let policy = auth.registration;
    // Cheap early refusals, before spending an Argon2 hash; the transaction below decides.
    match policy {
        Registration::Closed => return Err(closed()),
        Registration::FirstAdmin if state.store.count_users().await? > 0 => return Err(closed()),
        _ => {}
    }
    let hash = state.hasher.hash(c.password).await?;
    let user = state
        .store
        .create_user_with_role_by_count(&c.username, &hash, move |count| match (policy, count) {
            (Registration::Closed, _) => None,
            (_, 0) => Some(Role::Admin),
            (Registration::Open, _) => Some(Role::User),
            (Registration::FirstAdmin, _) => None,
        })
        .await
        .map_err(username_taken)?
        .ok_or_else(closed)?;
    tracing::info!(user_id = user.id, role = %user.role, "account registered");
    Ok((StatusCode::CREATED, Json(json!({"user": user_json(&user)}))).into_response())
}

/// `GET /api/auth/policy` → `{registration, first_run, username_min_len, username_max_len,
/// password_min_len, password_max_len}`: what a sign-up page shows before anyone logs in.
pub async fn policy(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let auth = &state.config.auth;
    let first_run = state.store.count_users().await? == 0;
    let registration = match auth.registration {
        Registration::Open => "open",
        Registration::FirstAdmin => "first_admin",
        Registration::Closed => "closed",
    };
    Ok(Json(json!({
        "registration": registration,
        "first_run": first_run,
        "username_min_len": auth.username_min_len,
        "username_max_len": auth.username_max_len,
        "password_min_len": auth.password_min_len,
        "password_max_len": auth.password_max_len,
    })))
}

/// `GET /api/me` → `{user, usage}`.
pub async fn me(
    State(state): State<AppState>,
    Session { user }: Session,
) -> Result<Json<Value>, ApiError> {
    let totals = state.store.usage_for_user(user.id).await?;
    Ok(Json(json!({
        "user": user_json(&user),
        "usage": usage_json(&totals.usage),
    })))
}

/// `POST /api/me/password {current_password, new_password}` → 204. Every session of the user
/// ends: refresh tokens are revoked and access tokens issued before now stop working.
pub async fn change_password(
    State(state): State<AppState>,
    Session { user }: Session,
    ClientIp(ip): ClientIp,
    body: Result<Json<PasswordChange>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(p) = body?;
    check_password(&state.config.auth, "new_password", &p.new_password)?;
    let stored = state
        .store
        .user_by_username(&user.username)
        .await?
        .map(|(_, hash)| hash);
    // Guessing the current password here (with a stolen access token) counts like logins.
    if !check_password_attempt(&state, ip, &user.username, p.current_password, stored).await? {
        // 403, not 401: the session is fine; the proof for this change is not.
        return Err(ApiError::Forbidden {
            message: "The current password is wrong".into(),
            code: "wrong_password",
        });
    }
    let hash = state.hasher.hash(p.new_password).await?;
    let keep_keys = p.keep_api_keys.unwrap_or(false);
    let revoked_keys = state
        .store
        .change_password(user.id, &hash, keep_keys)
        .await?;
    tracing::info!(
        user_id = user.id,
        revoked_keys,
        "password changed; sessions revoked"
    );
    state
        .chat
        .events()
        .publish(Event::Credentials { user: user.id });
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/keys {name}` → 201 `{id, name, prefix, key, created_at}`. The key itself is
/// shown only here; the store keeps its hash.
pub async fn create_key(
    State(state): State<AppState>,
    Session { user }: Session,
    body: Result<Json<NewKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(k) = body?;
    let name = k.name.trim();
    if name.is_empty() || name.chars().count() > KEY_NAME_MAX_CHARS {
        return Err(ApiError::invalid(
            "name",
            format!("must be 1 to {KEY_NAME_MAX_CHARS} characters long"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    let key = new_api_key();
    let stored = state
        .store
        .create_api_key(user.id, name, &key_prefix(&key), &secret_hash(&key))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": stored.id,
            "name": stored.name,
            "prefix": stored.prefix,
            "key": key,
            "created_at": stored.created_at,
        })),
    )
        .into_response())
}

/// `GET /api/keys` → `{data: [{id, name, prefix, created_at, last_used_at, usage}]}`.
pub async fn list_keys(
    State(state): State<AppState>,
    Session { user }: Session,
) -> Result<Json<Value>, ApiError> {
    let keys = state.store.list_api_keys(user.id).await?;
    Ok(Json(
        json!({"data": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

/// `DELETE /api/keys/{id}` → 204; 404 when there is no such key of the caller's.
pub async fn delete_key(
    State(state): State<AppState>,
    Session { user }: Session,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let no_such_key = || ApiError::NotFound("No such API key".into());
    let Path(id) = id.map_err(|_| no_such_key())?;
    match state.store.delete_api_key(user.id, id).await {
        Ok(()) => {
            state
                .chat
                .events()
                .publish(Event::Credentials { user: user.id });
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::NotFound) => Err(no_such_key()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_configured_rules() {
        let auth = AuthSettings::default();
        for ok in ["ada", "Ada.Lovelace", "a_b-c", "x".repeat(32).as_str()] {
            assert!(check_username(&auth, ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "x".repeat(33).as_str(),
            "ada lovelace",
            "adä",
            "a/b",
            "ａｄａ",
            "",
        ] {
            assert!(check_username(&auth, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_measured_in_characters() {
        let auth = AuthSettings::default();
        assert!(check_password(&auth, "password", "ééééééé").is_err());
        assert!(check_password(&auth, "password", "éééééééé").is_ok());
        assert!(check_password(&auth, "password", &"x".repeat(257)).is_err());
    }
}
