//! API keys: the `api_keys` table. Owns each key's owner, name, visible prefix, hash and last
//! use. Every call that names a key also names its owner, so one user can never see or delete
//! another's keys. Making keys and hashing them is `auth/`'s job.

use super::db::{Db, Optional, Row};

use super::usage::Usage;
use super::users::{user_from_row, User};
use super::{unix_now, Store, StoreError};

/// An API key, without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Never reused, even after the key is deleted.
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    /// The owner's label for it.
    pub name: String,
    /// The visible start of the key, shown so the owner can tell keys apart.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last request made with it.
    pub last_used_at: Option<i64>,
}

/// A key with what has been done with it, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyWithUsage {
    /// The key.
    pub key: ApiKey,
    /// Every request made with it, all days together.
    pub usage: Usage,
}

const KEY_COLUMNS: &str = "k.id, k.user_id, k.name, k.prefix, k.created_at, k.last_used_at";

fn key_from_row(row: &Row<'_>) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        prefix: row.get(3)?,
        created_at: row.get(4)?,
        last_used_at: row.get(5)?,
    })
}

/// Store a new key for `user_id`. [`StoreError::MissingReference`] if the user does not exist,
/// [`StoreError::Conflict`] if the hash is already stored.
pub fn create_api_key(
    conn: &Db,
    user_id: i64,
    name: &str,
    prefix: &str,
    key_hash: &str,
    now: i64,
) -> Result<ApiKey, StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         RETURNING id, user_id, name, prefix, created_at, last_used_at",
    )?;
    stmt.query_row((user_id, name, prefix, key_hash, now), key_from_row)
}

/// A user's keys, oldest first, each with its usage.
pub fn list_api_keys(conn: &Db, user_id: i64) -> Result<Vec<ApiKeyWithUsage>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS}, coalesce(sum(u.requests), 0), \
                coalesce(sum(u.prompt_tokens), 0), coalesce(sum(u.completion_tokens), 0) \
         FROM api_keys k \
         LEFT JOIN usage_daily u ON u.user_id = k.user_id AND u.api_key_id = k.id \
         WHERE k.user_id = ?1 GROUP BY k.id ORDER BY k.id"
    ))?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(ApiKeyWithUsage {
            key: key_from_row(r)?,
            usage: Usage {
                requests: r.get(6)?,
                prompt_tokens: r.get(7)?,
                completion_tokens: r.get(8)?,
            },
        })
    })?;
    rows.collect::<Result<_, _>>()
}

/// Delete one of `user_id`'s keys. [`StoreError::NotFound`] if there is no such key *or* it
/// belongs to someone else (the caller cannot tell which, by design). Its usage stays counted
/// in the owner's totals.
pub fn delete_api_key(conn: &Db, user_id: i64, key_id: i64) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM api_keys WHERE id = ?1 AND user_id = ?2")?
        .execute((key_id, user_id))?;
    super::users::found(n)
}

/// Delete every key of `user_id` (a password change). Returns how many were deleted.
pub fn delete_all_api_keys(conn: &Db, user_id: i64) -> Result<usize, StoreError> {
    conn.prepare_cached("DELETE FROM api_keys WHERE user_id = ?1")?
        .execute([user_id])
}

/// The key with this hash and its owner (check `owner.disabled` before serving the request).
pub fn api_key_by_hash(conn: &Db, key_hash: &str) -> Result<Option<(ApiKey, User)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS}, \
                o.id, o.username, o.role, o.disabled, o.created_at, o.password_changed_at, \
                o.sessions_revoked_at \
         FROM api_keys k JOIN users o ON o.id = k.user_id WHERE k.key_hash = ?1"
    ))?;
    stmt.query_row([key_hash], |r| Ok((key_from_row(r)?, user_from_row(r, 6)?)))
        .optional()
}

/// Set a key's `last_used_at`. [`StoreError::NotFound`] if the key is gone.
/// ([`super::usage::record_usage`] does this too, in the same write.)
pub fn touch_api_key(conn: &Db, key_id: i64, now: i64) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?
        .execute((key_id, now))?;
    super::users::found(n)
}

/// Async forms of the functions above, on a blocking thread, with the store's clock.
impl Store {
    /// See [`create_api_key`].
    pub async fn create_api_key(
        &self,
        user_id: i64,
        name: &str,
        prefix: &str,
        key_hash: &str,
    ) -> Result<ApiKey, StoreError> {
        let (name, prefix, key_hash) = (name.to_owned(), prefix.to_owned(), key_hash.to_owned());
        self.run(move |c| create_api_key(c, user_id, &name, &prefix, &key_hash, unix_now()))
            .await
    }

    /// See [`list_api_keys`].
    pub async fn list_api_keys(&self, user_id: i64) -> Result<Vec<ApiKeyWithUsage>, StoreError> {
        self.run(move |c| list_api_keys(c, user_id)).await
    }

    /// See [`delete_api_key`].
    pub async fn delete_api_key(&self, user_id: i64, key_id: i64) -> Result<(), StoreError> {
        self.run(move |c| delete_api_key(c, user_id, key_id)).await
    }

    /// See [`api_key_by_hash`].
    pub async fn api_key_by_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<(ApiKey, User)>, StoreError> {
        let key_hash = key_hash.to_owned();
        self.run(move |c| api_key_by_hash(c, &key_hash)).await
    }

    /// See [`touch_api_key`].
    pub async fn touch_api_key(&self, key_id: i64, now: i64) -> Result<(), StoreError> {
        self.run(move |c| touch_api_key(c, key_id, now)).await
    }
}
