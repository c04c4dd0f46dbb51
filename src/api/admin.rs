//! The admin API (`/api/admin/*`): list, create, disable/enable and re-role users, usage per
//! user (and per day), the backends with their breakers, and online backups. Every handler takes an [`Admin`]: 401 without a session, 403 for
//! a user who is not an admin.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::{check_password, check_username, usage_json, user_json, username_taken};
use super::auth::Admin;
use super::error::ApiError;
use super::AppState;
use crate::backends::breaker::BreakerState;
use crate::cluster::events::Event;
use crate::store::{AccountUpdate, Role, StoreError};

/// `POST /api/admin/users` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The account name.
    pub username: String,
    /// The first password (the user can change it).
    pub password: String,
    /// `user` (default) or `admin`.
    #[serde(default)]
    pub role: Option<Role>,
}

/// `PATCH /api/admin/users/{id}` body: at least one field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// Disable (`true`: no login, no API keys, sessions revoked) or re-enable.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// `user` or `admin`.
    #[serde(default)]
    pub role: Option<Role>,
}

/// `GET /api/admin/users` → `{data: [{id, username, role, disabled, created_at, usage}]}`.
pub async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let (users, usage) = state
        .store
        .run(|c| {
            Ok((
                crate::store::users::list_users(c)?,
                crate::store::usage::usage_by_user(c)?,
            ))
        })
        .await?;
    let data: Vec<Value> = users
        .iter()
        .map(|u| {
            let mut v = user_json(u);
            let totals = usage
                .iter()
                .find(|t| t.user_id == u.id)
                .map(|t| t.usage)
                .unwrap_or_default();
            v["usage"] = usage_json(&totals);
            v
        })
        .collect();
    Ok(Json(json!({"data": data})))
}

/// `POST /api/admin/users {username, password, role?}` → 201 `{user}`, whatever the
/// registration policy.
pub async fn create_user(
    State(state): State<AppState>,
    Admin { user: admin }: Admin,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(n) = body?;
    check_username(&state.config.auth, &n.username)?;
    check_password(&state.config.auth, "password", &n.password)?;
    let hash = state.hasher.hash(n.password).await?;
    let role = n.role.unwrap_or(Role::User);
    let user = state
        .store
        .create_user(&n.username, &hash, role)
        .await
        .map_err(username_taken)?;
    tracing::info!(admin = admin.id, user_id = user.id, %role, "account created by an admin");
    Ok((StatusCode::CREATED, Json(json!({"user": user_json(&user)}))).into_response())
}

/// `PATCH /api/admin/users/{id} {disabled?, role?}` → `{user}`. Disabling revokes the user's
/// sessions (and their access tokens and API keys stop working at once); 409 when the change
/// would leave no enabled admin; 404 for no such user.
pub async fn update_user(
    State(state): State<AppState>,
    Admin { user: admin }: Admin,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<UserChange>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let no_such_user = || ApiError::NotFound("No such user".into());
    let Path(id) = id.map_err(|_| no_such_user())?;
    let Json(change) = body?;
    if change.disabled.is_none() && change.role.is_none() {
        return Err(ApiError::InvalidRequest {
            message: "Nothing to change: send `disabled` and/or `role`".into(),
            param: None,
        });
    }
    match state
        .store
        .update_account(id, change.disabled, change.role)
        .await
    {
        Ok(AccountUpdate::Updated(user)) => {
            tracing::info!(
                admin = admin.id,
                user_id = user.id,
                disabled = user.disabled,
                role = %user.role,
                "account changed by an admin"
            );
            state
                .chat
                .events()
                .publish(Event::Credentials { user: user.id });
            Ok(Json(json!({"user": user_json(&user)})))
        }
        Ok(AccountUpdate::WouldLeaveNoAdmin) => Err(ApiError::Conflict {
            message: "That would leave no enabled admin: make another admin first".into(),
            code: "last_admin",
        }),
        Err(StoreError::NotFound) => Err(no_such_user()),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/admin/usage` query.
#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    /// `day`: one row per user and UTC day.
    #[serde(default)]
    by: Option<String>,
    /// With `by=day`: how many days back, today included (default 30, at most 366).
    #[serde(default)]
    days: Option<u32>,
}

/// `GET /api/admin/usage` → `{data: [{user_id, username, usage}]}`, every user, all time;
/// `?by=day[&days=N]` → `{data: [{user_id, username, day, usage}]}`, newest day first.
pub async fn usage(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("by", e.body_text()))?;
    match q.by.as_deref() {
        None => {}
        Some("day") => {
            let days = q.days.unwrap_or(30).clamp(1, 366);
            let rows = state.store.usage_by_day(days).await?;
            let data: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({"user_id": r.user_id, "username": r.username, "day": r.day,
                           "usage": usage_json(&r.usage)})
                })
                .collect();
            return Ok(Json(json!({"data": data})));
        }
        Some(_) => return Err(ApiError::invalid("by", "`by` must be `day` when given")),
    }
    let rows = state.store.usage_by_user().await?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| json!({"user_id": r.user_id, "username": r.username, "usage": usage_json(&r.usage)}))
        .collect();
    Ok(Json(json!({"data": data})))
}

/// `GET /api/admin/backends` → `{data: [{name, local, breaker, models, failover}]}`: every
/// backend with its circuit breaker (`closed`, `open`, `half_open`).
pub async fn backends(State(state): State<AppState>, _admin: Admin) -> Json<Value> {
    let data: Vec<Value> = state
        .router
        .backends()
        .into_iter()
        .map(|b| {
            let breaker = match b.breaker {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            };
            json!({"name": b.name, "local": b.local, "breaker": breaker, "models": b.models,
                   "failover": b.failover})
        })
        .collect();
    Json(json!({"data": data}))
}

/// `POST /api/admin/backup` → 201 `{path, bytes}`: a consistent online copy of the database in
/// `storage.backup_dir`, named like scheduled backups (and pruned with them).
pub async fn backup(
    State(state): State<AppState>,
    Admin { user: admin }: Admin,
) -> Result<Response, ApiError> {
    let path = state
        .store
        .backup_into(&state.config.storage.backup_dir())
        .await?;
    let meta_path = path.clone();
    let bytes = tokio::task::spawn_blocking(move || std::fs::metadata(meta_path))
        .await
        .map_err(|e| ApiError::Internal(format!("stat thread: {e}")))?
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?
        .len();
    tracing::info!(admin = admin.id, path = %path.display(), bytes, "backup made by an admin");
    Ok((
        StatusCode::CREATED,
        Json(json!({"path": path.display().to_string(), "bytes": bytes})),
    )
        .into_response())
}
