//! User accounts: the `users` table. Owns usernames (unique, ASCII case-insensitive), roles, the
//! disabled flag and password hashes as opaque strings (hashing is `auth/`'s job). Policy such
//! as "keep at least one admin" belongs to the caller.

use std::fmt;
use std::str::FromStr;

use super::db::{Db, FromValue, Optional, Row, ToValue, Value};
use serde::{Deserialize, Serialize};

use super::{unix_now, Store, StoreError};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary account.
    User,
    /// May manage other accounts.
    Admin,
}

impl Role {
    /// The stored and serialized name: `user` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}` (expected `user` or `admin`)"
            )),
        }
    }
}

impl ToValue for Role {
    fn to_value(&self) -> Value {
        Value::Text(self.as_str().to_owned())
    }
}

impl FromValue for Role {
    fn from_value(v: &Value) -> Result<Self, String> {
        String::from_value(v)?.parse()
    }
}

/// A user account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Never reused, even after the account is deleted.
    pub id: i64,
    /// As it was typed at creation (lookups ignore ASCII case).
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// A disabled user may not log in or use API keys.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last password change (creation counts): tokens issued before it
    /// should be refused.
    pub password_changed_at: i64,
    /// Unix seconds of the last "sign out everywhere" (0: never): tokens issued up to then are
    /// refused too.
    pub sessions_revoked_at: i64,
}

impl User {
    /// Access tokens issued in this Unix second or before are refused: the later of the last
    /// password change and the last "sign out everywhere".
    pub fn tokens_valid_after(&self) -> i64 {
        self.password_changed_at.max(self.sessions_revoked_at)
    }
}

/// Columns read by [`user_from_row`], in order.
const USER_COLUMNS: &str =
    "id, username, role, disabled, created_at, password_changed_at, sessions_revoked_at";

/// A [`User`] from seven columns of `row` starting at `at`, laid out as [`USER_COLUMNS`].
pub(crate) fn user_from_row(row: &Row<'_>, at: usize) -> Result<User, StoreError> {
    Ok(User {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        role: row.get(at + 2)?,
        disabled: row.get(at + 3)?,
        created_at: row.get(at + 4)?,
        password_changed_at: row.get(at + 5)?,
        sessions_revoked_at: row.get(at + 6)?,
    })
}

/// Create a user. [`StoreError::Conflict`] if the name is taken in any ASCII case.
pub fn create_user(
    conn: &Db,
    username: &str,
    password_hash: &str,
    role: Role,
    now: i64,
) -> Result<User, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO users (username, password_hash, role, disabled, created_at, \
         password_changed_at) VALUES (?1, ?2, ?3, 0, ?4, ?4) RETURNING {USER_COLUMNS}"
    ))?;
    stmt.query_row((username, password_hash, role, now), |r| {
        user_from_row(r, 0)
    })
}

/// The user named `username` (any ASCII case) and their password hash.
pub fn user_by_username(conn: &Db, username: &str) -> Result<Option<(User, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = ?1"
    ))?;
    stmt.query_row([username], |r| Ok((user_from_row(r, 0)?, r.get(7)?)))
        .optional()
}

/// The user with this id.
pub fn user_by_id(conn: &Db, id: i64) -> Result<Option<User>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))?;
    stmt.query_row([id], |r| user_from_row(r, 0)).optional()
}

/// Every user, oldest first.
pub fn list_users(conn: &Db) -> Result<Vec<User>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
    let rows = stmt.query_map((), |r| user_from_row(r, 0))?;
    rows.collect::<Result<_, _>>()
}

/// How many users exist (0 means the first one should become admin).
pub fn count_users(conn: &Db) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT count(*) FROM users")?
        .query_row((), |r| r.get(0))
}

/// Disable or re-enable a user. [`StoreError::NotFound`] if there is no such user.
/// Revoking their sessions is a separate call ([`super::refresh_tokens::revoke_all_for_user`]).
pub fn set_disabled(conn: &Db, id: i64, disabled: bool) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("UPDATE users SET disabled = ?2 WHERE id = ?1")?
        .execute((id, disabled))?;
    found(n)
}

/// Change a user's role. [`StoreError::NotFound`] if there is no such user.
pub fn set_role(conn: &Db, id: i64, role: Role) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("UPDATE users SET role = ?2 WHERE id = ?1")?
        .execute((id, role))?;
    found(n)
}

/// Replace a user's password hash and set `password_changed_at` to `now`.
/// [`StoreError::NotFound`] if there is no such user.
pub fn set_password(conn: &Db, id: i64, password_hash: &str, now: i64) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE id = ?1",
        )?
        .execute((id, password_hash, now))?;
    found(n)
}

/// `Ok` when an update touched a row, [`StoreError::NotFound`] when it touched none.
pub(crate) fn found(changed: usize) -> Result<(), StoreError> {
    if changed == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// Async forms of the functions above, on a blocking thread, with the store's clock.
impl Store {
    /// See [`create_user`].
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User, StoreError> {
        let (username, password_hash) = (username.to_owned(), password_hash.to_owned());
        self.run(move |c| create_user(c, &username, &password_hash, role, unix_now()))
            .await
    }

    /// See [`user_by_username`].
    pub async fn user_by_username(
        &self,
        username: &str,
    ) -> Result<Option<(User, String)>, StoreError> {
        let username = username.to_owned();
        self.run(move |c| user_by_username(c, &username)).await
    }

    /// See [`user_by_id`].
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        self.run(move |c| user_by_id(c, id)).await
    }

    /// See [`list_users`].
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.run(|c| list_users(c)).await
    }

    /// See [`count_users`].
    pub async fn count_users(&self) -> Result<u64, StoreError> {
        self.run(|c| count_users(c)).await
    }

    /// See [`set_disabled`].
    pub async fn set_disabled(&self, id: i64, disabled: bool) -> Result<(), StoreError> {
        self.run(move |c| set_disabled(c, id, disabled)).await
    }

    /// See [`set_role`].
    pub async fn set_role(&self, id: i64, role: Role) -> Result<(), StoreError> {
        self.run(move |c| set_role(c, id, role)).await
    }

    /// See [`set_password`].
    pub async fn set_password(&self, id: i64, password_hash: &str) -> Result<(), StoreError> {
        let password_hash = password_hash.to_owned();
        self.run(move |c| set_password(c, id, &password_hash, unix_now()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::User, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_string(&role).expect("json"),
                format!("\"{role}\"")
            );
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn updates_that_touch_no_row_are_not_found() {
        assert!(matches!(found(0), Err(StoreError::NotFound)));
        assert!(found(1).is_ok());
    }
}
