//! Usage counters: the `usage_daily` table. Owns request and token counts per user, per API key
//! (0 = not through a key) and per UTC day, added to by one upsert per request. Rows outlive the
//! keys they count, so a user's totals never shrink when a key is deleted.

use super::db::{Db, Row};

use super::{unix_now, Store, StoreError};

/// Requests and tokens, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Completed requests.
    pub requests: u64,
    /// Tokens read from prompts.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

/// A user's usage, all keys and days together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserUsage {
    /// The user.
    pub user_id: i64,
    /// Their name, for admin listings.
    pub username: String,
    /// Their totals.
    pub usage: Usage,
}

/// The UTC calendar day of a Unix time, `YYYY-MM-DD`: the bucket usage is counted in.
pub fn utc_day(unix_secs: i64) -> String {
    chrono::DateTime::from_timestamp(unix_secs, 0)
        .unwrap_or_default() // out of chrono's range (year ±262143): count it on 1970-01-01
        .format("%Y-%m-%d")
        .to_string()
}

/// Count one request by `user_id`, made with `api_key_id` (`None`: a web session), and its
/// tokens, on `now`'s UTC day. With a key, also sets the key's `last_used_at`, in the same
/// write. [`StoreError::MissingReference`] if the user does not exist.
pub fn record_usage(
    conn: &Db,
    user_id: i64,
    api_key_id: Option<i64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    now: i64,
) -> Result<(), StoreError> {
    let tx = conn.write_transaction()?;
    tx.prepare_cached(
        "INSERT INTO usage_daily \
             (user_id, api_key_id, day, requests, prompt_tokens, completion_tokens) \
         VALUES (?1, ?2, ?3, 1, ?4, ?5) \
         ON CONFLICT (user_id, api_key_id, day) DO UPDATE SET \
             requests = usage_daily.requests + 1, \
             prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, \
             completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens",
    )?
    .execute((
        user_id,
        api_key_id.unwrap_or(0),
        utc_day(now),
        prompt_tokens,
        completion_tokens,
    ))?;
    if let Some(key_id) = api_key_id {
        // A key deleted mid-request touches nothing; its usage still counts for the user.
        tx.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND user_id = ?3")?
            .execute((key_id, now, user_id))?;
    }
    tx.commit()?;
    Ok(())
}

const USER_TOTALS: &str = "SELECT us.id, us.username, coalesce(sum(d.requests), 0), \
         coalesce(sum(d.prompt_tokens), 0), coalesce(sum(d.completion_tokens), 0) \
     FROM users us LEFT JOIN usage_daily d ON d.user_id = us.id";

/// A [`Usage`] from three columns of `r` from `at` on: requests, prompt and completion tokens.
fn usage_from_row(r: &Row<'_>, at: usize) -> Result<Usage, StoreError> {
    Ok(Usage {
        requests: r.get(at)?,
        prompt_tokens: r.get(at + 1)?,
        completion_tokens: r.get(at + 2)?,
    })
}

fn user_usage_from_row(r: &Row<'_>) -> Result<UserUsage, StoreError> {
    Ok(UserUsage {
        user_id: r.get(0)?,
        username: r.get(1)?,
        usage: usage_from_row(r, 2)?,
    })
}

/// Every user's totals (zeros for users who have made no request), oldest user first.
pub fn usage_by_user(conn: &Db) -> Result<Vec<UserUsage>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("{USER_TOTALS} GROUP BY us.id ORDER BY us.id"))?;
    let rows = stmt.query_map((), user_usage_from_row)?;
    rows.collect::<Result<_, _>>()
}

/// One user's totals. [`StoreError::NotFound`] if there is no such user.
pub fn usage_for_user(conn: &Db, user_id: i64) -> Result<UserUsage, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("{USER_TOTALS} WHERE us.id = ?1 GROUP BY us.id"))?;
    stmt.query_row([user_id], user_usage_from_row)
}

/// One user's usage on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsage {
    /// The user.
    pub user_id: i64,
    /// Their name.
    pub username: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Their totals that day, every key and web session together.
    pub usage: Usage,
}

/// Usage per user and UTC day from `since_day` (`YYYY-MM-DD`) on, newest day first, then by
/// user; days without requests are absent.
pub fn usage_by_day(conn: &Db, since_day: &str) -> Result<Vec<DailyUsage>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT us.id, us.username, d.day, sum(d.requests), sum(d.prompt_tokens), \
                sum(d.completion_tokens) \
         FROM usage_daily d JOIN users us ON us.id = d.user_id \
         WHERE d.day >= ?1 GROUP BY us.id, d.day ORDER BY d.day DESC, us.id",
    )?;
    let rows = stmt.query_map([since_day], |r| {
        Ok(DailyUsage {
            user_id: r.get(0)?,
            username: r.get(1)?,
            day: r.get(2)?,
            usage: usage_from_row(r, 3)?,
        })
    })?;
    rows.collect::<Result<_, _>>()
}

/// Prompt plus completion tokens `user_id` used on the UTC day `day` (`YYYY-MM-DD`), every key
/// and web session together: what `limits.tokens_per_day` counts.
pub fn tokens_on_day(conn: &Db, user_id: i64, day: &str) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_daily \
         WHERE user_id = ?1 AND day = ?2",
    )?;
    stmt.query_row((user_id, day), |r| r.get(0))
}

/// Async forms of the functions above, on a blocking thread, with the store's clock.
impl Store {
    /// See [`record_usage`].
    pub async fn record_usage(
        &self,
        user_id: i64,
        api_key_id: Option<i64>,
        prompt_tokens: u64,
        completion_tokens: u64,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            record_usage(
                c,
                user_id,
                api_key_id,
                prompt_tokens,
                completion_tokens,
                unix_now(),
            )
        })
        .await
    }

    /// See [`tokens_on_day`].
    pub async fn tokens_on_day(&self, user_id: i64, day: String) -> Result<u64, StoreError> {
        self.run(move |c| tokens_on_day(c, user_id, &day)).await
    }

    /// See [`usage_by_user`].
    pub async fn usage_by_user(&self) -> Result<Vec<UserUsage>, StoreError> {
        self.run(|c| usage_by_user(c)).await
    }

    /// See [`usage_by_day`]: the last `days` UTC days, today included.
    pub async fn usage_by_day(&self, days: u32) -> Result<Vec<DailyUsage>, StoreError> {
        let back = i64::from(days.saturating_sub(1)) * 86_400;
        let since = utc_day(unix_now().saturating_sub(back));
        self.run(move |c| usage_by_day(c, &since)).await
    }

    /// See [`usage_for_user`].
    pub async fn usage_for_user(&self, user_id: i64) -> Result<UserUsage, StoreError> {
        self.run(move |c| usage_for_user(c, user_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_bucketed_by_utc_calendar_day() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(86_399), "1970-01-01");
        assert_eq!(utc_day(86_400), "1970-01-02");
        assert_eq!(utc_day(1_700_000_000), "2023-11-14");
    }

    #[test]
    fn times_out_of_range_fall_back_to_the_epoch_day() {
        assert_eq!(utc_day(i64::MAX), "1970-01-01");
    }
}
