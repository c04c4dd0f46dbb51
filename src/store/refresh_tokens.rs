//! Refresh tokens: the `refresh_tokens` table. Owns rotation state: each token may be consumed
//! once; presenting a used token again means it was stolen (or replayed), so its whole family
//! (one login session's chain of rotations) is revoked. Stores hashes only; making tokens and
//! hashing them is `auth/`'s job.

use super::db::{Db, Optional};

use super::{unix_now, Store, StoreError};

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// The token was live and is now used: issue the next token in `family_id`.
    Valid {
        /// Whose session it is.
        user_id: i64,
        /// The session, for the next token.
        family_id: String,
    },
    /// The token had been used before: the whole family is now revoked.
    Reused {
        /// Whose session it was (worth a security log line).
        user_id: i64,
        /// The family just revoked.
        family_id: String,
    },
    /// The token (or its family) was revoked: logout, reuse, or an admin.
    Revoked,
    /// The token is past its `expires_at`.
    Expired,
    /// No such token.
    Unknown,
}

/// The state of a token that could not be consumed, most serious first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Reused,
    Revoked,
    Expired,
}

/// Why a token that is not live cannot be consumed. A used token is a reuse whatever else is
/// true of it (even revoked or expired): a replay is the signal worth acting on.
fn refusal(used: bool, revoked: bool) -> Refusal {
    if used {
        Refusal::Reused
    } else if revoked {
        Refusal::Revoked
    } else {
        Refusal::Expired
    }
}

/// Record a newly issued token. `expires_at` is Unix seconds; the token is live while
/// `now < expires_at`. [`StoreError::MissingReference`] if the user does not exist,
/// [`StoreError::Conflict`] if the hash is already stored.
pub fn insert_refresh(
    conn: &Db,
    user_id: i64,
    family_id: &str,
    token_hash: &str,
    expires_at: i64,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (user_id, family_id, token_hash, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((user_id, family_id, token_hash, now, expires_at))?;
    Ok(())
}

/// Consume the token with this hash, atomically: of two concurrent calls with the same token
/// at most one gets [`ConsumeOutcome::Valid`]; the other sees a reuse and revokes the family.
pub fn consume_refresh(
    conn: &Db,
    token_hash: &str,
    now: i64,
) -> Result<ConsumeOutcome, StoreError> {
    let tx = conn.write_transaction()?;
    let outcome = consume_in(&tx, token_hash, now)?;
    tx.commit()?;
    Ok(outcome)
}

/// [`consume_refresh`] inside the caller's write transaction (which must commit it).
pub(crate) fn consume_in(
    tx: &Db,
    token_hash: &str,
    now: i64,
) -> Result<ConsumeOutcome, StoreError> {
    let consumed = tx
        .prepare_cached(
            "UPDATE refresh_tokens SET used_at = ?2 \
             WHERE token_hash = ?1 AND used_at IS NULL AND revoked_at IS NULL \
               AND expires_at > ?2 \
             RETURNING user_id, family_id",
        )?
        .query_row((token_hash, now), |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((user_id, family_id)) = consumed {
        return Ok(ConsumeOutcome::Valid { user_id, family_id });
    }
    let state = tx
        .prepare_cached(
            "SELECT user_id, family_id, used_at IS NOT NULL, revoked_at IS NOT NULL \
             FROM refresh_tokens WHERE token_hash = ?1",
        )?
        .query_row([token_hash], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })
        .optional()?;
    let Some((user_id, family_id, used, revoked)) = state else {
        return Ok(ConsumeOutcome::Unknown);
    };
    Ok(match refusal(used, revoked) {
        Refusal::Reused => {
            revoke_family(tx, &family_id, now)?;
            ConsumeOutcome::Reused { user_id, family_id }
        }
        Refusal::Revoked => ConsumeOutcome::Revoked,
        Refusal::Expired => ConsumeOutcome::Expired,
    })
}

/// Revoke every live token of a family (one session). Returns how many were revoked.
pub fn revoke_family(conn: &Db, family_id: &str, now: i64) -> Result<usize, StoreError> {
    conn.prepare_cached(
        "UPDATE refresh_tokens SET revoked_at = ?2 \
             WHERE family_id = ?1 AND revoked_at IS NULL",
    )?
    .execute((family_id, now))
}

/// Revoke every token of a user (log out everywhere: password change, disabling).
/// Returns how many were revoked.
pub fn revoke_all_for_user(conn: &Db, user_id: i64, now: i64) -> Result<usize, StoreError> {
    conn.prepare_cached(
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
    )?
    .execute((user_id, now))
}

/// Logout: revoke the family of the token with this hash, so the session ends whichever of its
/// tokens the client held. Returns how many tokens were revoked (0 for an unknown token).
pub fn revoke_by_hash(conn: &Db, token_hash: &str, now: i64) -> Result<usize, StoreError> {
    conn.prepare_cached(
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE revoked_at IS NULL AND family_id = \
             (SELECT family_id FROM refresh_tokens WHERE token_hash = ?1)",
    )?
    .execute((token_hash, now))
}

/// Delete tokens that expired before `before` (housekeeping). A deleted token that is presented
/// again reads as [`ConsumeOutcome::Unknown`]. Returns how many were deleted.
pub fn delete_expired_refresh(conn: &Db, before: i64) -> Result<usize, StoreError> {
    conn.prepare_cached("DELETE FROM refresh_tokens WHERE expires_at < ?1")?
        .execute([before])
}

/// Async forms of the functions above, on a blocking thread, with the store's clock.
impl Store {
    /// See [`insert_refresh`].
    pub async fn insert_refresh(
        &self,
        user_id: i64,
        family_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let (family_id, token_hash) = (family_id.to_owned(), token_hash.to_owned());
        self.run(move |c| {
            insert_refresh(c, user_id, &family_id, &token_hash, expires_at, unix_now())
        })
        .await
    }

    /// See [`consume_refresh`]; `now` is explicit so that callers and tests agree on expiry.
    pub async fn consume_refresh(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<ConsumeOutcome, StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(move |c| consume_refresh(c, &token_hash, now))
            .await
    }

    /// See [`revoke_family`].
    pub async fn revoke_family(&self, family_id: &str) -> Result<usize, StoreError> {
        let family_id = family_id.to_owned();
        self.run(move |c| revoke_family(c, &family_id, unix_now()))
            .await
    }

    /// See [`revoke_all_for_user`].
    pub async fn revoke_all_for_user(&self, user_id: i64) -> Result<usize, StoreError> {
        self.run(move |c| revoke_all_for_user(c, user_id, unix_now()))
            .await
    }

    /// See [`revoke_by_hash`].
    pub async fn revoke_by_hash(&self, token_hash: &str) -> Result<usize, StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(move |c| revoke_by_hash(c, &token_hash, unix_now()))
            .await
    }

    /// See [`delete_expired_refresh`].
    pub async fn delete_expired_refresh(&self, before: i64) -> Result<usize, StoreError> {
        self.run(move |c| delete_expired_refresh(c, before)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_used_token_is_a_reuse_even_when_revoked() {
        assert_eq!(refusal(true, false), Refusal::Reused);
        assert_eq!(refusal(true, true), Refusal::Reused);
    }

    #[test]
    fn an_unused_token_is_revoked_before_it_is_expired() {
        assert_eq!(refusal(false, true), Refusal::Revoked);
        assert_eq!(refusal(false, false), Refusal::Expired);
    }
}
