//! Per-user preferences and memories, and server-wide settings admins change at run time:
//! the `preferences`, `memories` and `settings` tables (migration 0002). Every user-scoped
//! function takes the user's id and matches it in SQL.

use super::db::{Db, Optional};
use crate::params;
use serde::{Deserialize, Serialize};

use super::{unix_now, Store, StoreError};

/// A user's defaults (`None`: not set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Preferences {
    /// Model for requests and conversations that name none.
    pub model: Option<String>,
    /// Temperature for conversation turns.
    pub temperature: Option<f32>,
    /// Nucleus mass for conversation turns.
    pub top_p: Option<f32>,
    /// Token limit for conversation turns.
    pub max_tokens: Option<u32>,
    /// System prompt for conversations without their own.
    pub system_prompt: Option<String>,
    /// Add memories to conversation turns' system prompt.
    pub memory: bool,
}

/// One memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// Its id.
    pub id: i64,
    /// The note.
    pub content: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// `user_id`'s preferences (the defaults, memory on, when never set).
pub fn preferences(conn: &Db, user_id: i64) -> Result<Preferences, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT model, temperature, top_p, max_tokens, system_prompt, memory \
             FROM preferences WHERE user_id = ?1",
        )?
        .query_row([user_id], |r| {
            Ok(Preferences {
                model: r.get(0)?,
                temperature: r.get::<_, Option<f64>>(1)?.map(|v| v as f32),
                top_p: r.get::<_, Option<f64>>(2)?.map(|v| v as f32),
                max_tokens: r.get(3)?,
                system_prompt: r.get(4)?,
                memory: r.get(5)?,
            })
        })
        .optional()?
        .unwrap_or(Preferences {
            memory: true,
            ..Preferences::default()
        }))
}

/// Replace `user_id`'s preferences.
pub fn put_preferences(
    conn: &Db,
    user_id: i64,
    p: &Preferences,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO preferences (user_id, model, temperature, top_p, max_tokens, system_prompt, \
         memory, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (user_id) DO UPDATE SET model = excluded.model, \
         temperature = excluded.temperature, top_p = excluded.top_p, \
         max_tokens = excluded.max_tokens, system_prompt = excluded.system_prompt, \
         memory = excluded.memory, updated_at = excluded.updated_at",
    )?
    .execute(params![
        user_id,
        p.model,
        p.temperature.map(f64::from),
        p.top_p.map(f64::from),
        p.max_tokens,
        p.system_prompt,
        p.memory,
        now
    ])?;
    Ok(())
}

/// `user_id`'s memories, oldest first.
pub fn memories(conn: &Db, user_id: i64) -> Result<Vec<Memory>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, content, created_at FROM memories WHERE user_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(Memory {
            id: r.get(0)?,
            content: r.get(1)?,
            created_at: r.get(2)?,
        })
    })?;
    rows.collect::<Result<_, _>>()
}

/// Add a memory for `user_id`, unless they already have `max`.
/// [`StoreError::Conflict`] when they do.
pub fn add_memory(
    conn: &Db,
    user_id: i64,
    content: &str,
    max: usize,
    now: i64,
) -> Result<Memory, StoreError> {
    let tx = conn.write_transaction()?;
    let count: i64 = tx.query_row(
        "SELECT count(*) FROM memories WHERE user_id = ?1",
        [user_id],
        |r| r.get(0),
    )?;
    if count as usize >= max {
        return Err(StoreError::Conflict("too many memories".into()));
    }
    let id: i64 = tx.query_row(
        "INSERT INTO memories (user_id, content, created_at) VALUES (?1, ?2, ?3) RETURNING id",
        params![user_id, content, now],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(Memory {
        id,
        content: content.to_string(),
        created_at: now,
    })
}

/// Delete `user_id`'s memory `id`; whether there was one.
pub fn delete_memory(conn: &Db, user_id: i64, id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM memories WHERE id = ?1 AND user_id = ?2")?
        .execute(params![id, user_id])?
        > 0)
}

/// An admin's override of `[limits]` for one user (`None`: the server's setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverride {
    /// Generation requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Generations at once.
    pub concurrent_generations: Option<u32>,
    /// Tokens per UTC day.
    pub tokens_per_day: Option<u64>,
}

/// Every user's limit overrides.
pub fn limit_overrides(conn: &Db) -> Result<Vec<(i64, LimitOverride)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, requests_per_minute, concurrent_generations, tokens_per_day \
         FROM user_limits",
    )?;
    let rows = stmt.query_map((), |r| {
        Ok((
            r.get(0)?,
            LimitOverride {
                requests_per_minute: r.get(1)?,
                concurrent_generations: r.get(2)?,
                tokens_per_day: r.get(3)?,
            },
        ))
    })?;
    rows.collect::<Result<_, _>>()
}

/// Set `user_id`'s overrides (all `None`: removed). [`StoreError::MissingReference`] when
/// there is no such user.
pub fn put_limit_override(
    conn: &Db,
    user_id: i64,
    o: &LimitOverride,
    now: i64,
) -> Result<(), StoreError> {
    if *o == LimitOverride::default() {
        conn.execute("DELETE FROM user_limits WHERE user_id = ?1", [user_id])?;
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO user_limits (user_id, requests_per_minute, concurrent_generations, \
         tokens_per_day, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (user_id) DO UPDATE \
         SET requests_per_minute = excluded.requests_per_minute, \
         concurrent_generations = excluded.concurrent_generations, \
         tokens_per_day = excluded.tokens_per_day, updated_at = excluded.updated_at",
    )?
    .execute(params![
        user_id,
        o.requests_per_minute,
        o.concurrent_generations,
        o.tokens_per_day,
        now
    ])?;
    Ok(())
}

/// The setting `key` (JSON), if set.
pub fn setting(conn: &Db, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// Set `key` to `value`.
pub fn put_setting(
    conn: &Db,
    key: &str,
    value: &serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![key, value.to_string(), now])?;
    Ok(())
}

/// `key`'s value, set to `candidate` first if it has none: the first of several replicas to ask
/// decides, and every one gets the same answer.
pub fn setting_or_insert(
    conn: &Db,
    key: &str,
    candidate: &serde_json::Value,
    now: i64,
) -> Result<serde_json::Value, StoreError> {
    conn.prepare_cached(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO NOTHING",
    )?
    .execute(params![key, candidate.to_string(), now])?;
    setting(conn, key)?.ok_or(StoreError::NotFound)
}

/// Async forms, on a blocking thread, with the store's clock.
impl Store {
    /// See [`preferences`].
    pub async fn preferences(&self, user_id: i64) -> Result<Preferences, StoreError> {
        self.run(move |c| preferences(c, user_id)).await
    }

    /// See [`put_preferences`].
    pub async fn put_preferences(&self, user_id: i64, p: Preferences) -> Result<(), StoreError> {
        self.run(move |c| put_preferences(c, user_id, &p, unix_now()))
            .await
    }

    /// See [`memories`].
    pub async fn memories(&self, user_id: i64) -> Result<Vec<Memory>, StoreError> {
        self.run(move |c| memories(c, user_id)).await
    }

    /// See [`add_memory`].
    pub async fn add_memory(
        &self,
        user_id: i64,
        content: String,
        max: usize,
    ) -> Result<Memory, StoreError> {
        self.run(move |c| add_memory(c, user_id, &content, max, unix_now()))
            .await
    }

    /// See [`delete_memory`].
    pub async fn delete_memory(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        self.run(move |c| delete_memory(c, user_id, id)).await
    }

    /// See [`limit_overrides`].
    pub async fn limit_overrides(&self) -> Result<Vec<(i64, LimitOverride)>, StoreError> {
        self.run(|c| limit_overrides(c)).await
    }

    /// See [`put_limit_override`].
    pub async fn put_limit_override(
        &self,
        user_id: i64,
        o: LimitOverride,
    ) -> Result<(), StoreError> {
        self.run(move |c| put_limit_override(c, user_id, &o, unix_now()))
            .await
    }

    /// See [`setting`].
    pub async fn setting(
        &self,
        key: &'static str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.run(move |c| setting(c, key)).await
    }

    /// See [`setting_or_insert`].
    pub async fn setting_or_insert(
        &self,
        key: &'static str,
        candidate: serde_json::Value,
    ) -> Result<serde_json::Value, StoreError> {
        self.run(move |c| setting_or_insert(c, key, &candidate, unix_now()))
            .await
    }

    /// See [`put_setting`].
    pub async fn put_setting(
        &self,
        key: &'static str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.run(move |c| put_setting(c, key, &value, unix_now()))
            .await
    }
}
