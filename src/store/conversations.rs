//! Conversations and their messages: the `conversations` and `messages` tables and their
//! full-text indexes (migration 0002). Messages form a tree through `parent_id`: an edited
//! question or a regenerated answer is a sibling, never an overwrite; the conversation's
//! `active_leaf` names the branch being shown and continued.
//!
//! Every read and write takes the owner's user id and matches it in SQL: a conversation of
//! someone else reads as absent (the API answers 404 for both).

use super::db::{Db, Dialect, Optional, Row};
use crate::params;
use serde::Serialize;

use super::{unix_now, Store, StoreError};

/// A conversation's settings and state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    /// `conv_…`.
    pub id: String,
    /// The owner's user id.
    #[serde(skip)]
    pub owner_id: i64,
    /// Its title ("" until one is set or written).
    pub title: String,
    /// The model it uses (`None`: the owner's preference, else the server's default).
    pub model: Option<String>,
    /// Its system prompt.
    pub system_prompt: Option<String>,
    /// Sampling parameters (a JSON object).
    pub params: serde_json::Value,
    /// Listed first.
    pub pinned: bool,
    /// Hidden from the default listing.
    pub archived: bool,
    /// The newest message of the active branch.
    pub active_leaf: Option<String>,
    /// The model's summary of early messages that no longer fit the context
    /// (`memory.summarize`).
    pub summary: Option<String>,
    /// The last message the summary covers.
    pub summary_through: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change (a message counts).
    pub updated_at: i64,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// `msg_…`.
    pub id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// The message it follows (`None`: the first of a branch).
    pub parent_id: Option<String>,
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Its text (for an assistant message still streaming: what was generated so far; for one
    /// that made tool calls, the text beside them).
    pub content: String,
    /// The calls an assistant message made, in OpenAI's shape:
    /// `[{"id", "type": "function", "function": {"name", "arguments"}}]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// The call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// `stop`, `length`, or `None` while streaming or after an interruption.
    pub finish_reason: Option<String>,
    /// `streaming`, `done`, `interrupted` or `error`.
    pub status: String,
    /// What failed, for `error`.
    pub error: Option<String>,
    /// Prompt tokens of the turn that produced it.
    pub prompt_tokens: Option<i64>,
    /// Tokens generated.
    pub completion_tokens: Option<i64>,
    /// Tokens of `content` alone (cached for fitting turns to the context).
    #[serde(skip)]
    pub content_tokens: Option<i64>,
    /// Timings of the generation (JSON).
    pub timings: Option<serde_json::Value>,
    /// Which messages went into the turn (JSON).
    pub context: Option<serde_json::Value>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// What a new conversation starts with.
#[derive(Debug, Clone, Default)]
pub struct NewConversation {
    /// Its title.
    pub title: String,
    /// Its model.
    pub model: Option<String>,
    /// Its system prompt.
    pub system_prompt: Option<String>,
    /// Sampling parameters (a JSON object).
    pub params: serde_json::Value,
}

/// Changes to a conversation; `None` leaves a field as it is (`Some(None)` clears it).
#[derive(Debug, Clone, Default)]
pub struct ConversationUpdate {
    /// New title.
    pub title: Option<String>,
    /// New model.
    pub model: Option<Option<String>>,
    /// New system prompt.
    pub system_prompt: Option<Option<String>>,
    /// New sampling parameters.
    pub params: Option<serde_json::Value>,
    /// Pin or unpin.
    pub pinned: Option<bool>,
    /// Archive or restore.
    pub archived: Option<bool>,
}

/// A listing request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Full-text search over titles and message text.
    pub q: Option<String>,
    /// List archived conversations instead of the others.
    pub archived: bool,
    /// Page size.
    pub limit: usize,
    /// Conversations to skip.
    pub offset: usize,
}

/// A new message.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Its conversation.
    pub conversation_id: String,
    /// The message it follows.
    pub parent_id: Option<String>,
    /// Its role.
    pub role: &'static str,
    /// Its text.
    pub content: String,
    /// The call it answers (`tool` messages, which must have one).
    pub tool_call_id: Option<String>,
    /// The answering model (assistant).
    pub model: Option<String>,
    /// `streaming` (an answer about to be generated) or `done`.
    pub status: &'static str,
    /// Tokens of `content`.
    pub content_tokens: Option<i64>,
    /// Which messages went into the turn (assistant).
    pub context: Option<serde_json::Value>,
}

/// How a generated message ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its whole text.
    pub content: String,
    /// The calls it made (OpenAI's shape), if any.
    pub tool_calls: Option<serde_json::Value>,
    /// `done`, `interrupted` or `error`.
    pub status: &'static str,
    /// `stop` or `length` (for `done`).
    pub finish_reason: Option<String>,
    /// What failed.
    pub error: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Generated tokens.
    pub completion_tokens: i64,
    /// Timings (JSON).
    pub timings: Option<serde_json::Value>,
    /// Tokens of `content`.
    pub content_tokens: Option<i64>,
}

const CONVERSATION_COLUMNS: &str = "id, owner_id, title, model, system_prompt, params, pinned, \
     archived, active_leaf, created_at, updated_at, summary, summary_through";
const MESSAGE_COLUMNS: &str = "id, conversation_id, parent_id, role, content, model, \
     finish_reason, status, error, prompt_tokens, completion_tokens, content_tokens, timings, \
     context, created_at, updated_at, tool_calls, tool_call_id";

fn json_column(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn conversation_from_row(r: &Row<'_>) -> Result<Conversation, StoreError> {
    Ok(Conversation {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        title: r.get(2)?,
        model: r.get(3)?,
        system_prompt: r.get(4)?,
        params: json_column(r.get(5)?).unwrap_or_else(|| serde_json::json!({})),
        pinned: r.get(6)?,
        archived: r.get(7)?,
        active_leaf: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        summary: r.get(11)?,
        summary_through: r.get(12)?,
    })
}

fn message_from_row(r: &Row<'_>) -> Result<Message, StoreError> {
    Ok(Message {
        id: r.get(0)?,
        conversation_id: r.get(1)?,
        parent_id: r.get(2)?,
        role: r.get(3)?,
        content: r.get(4)?,
        model: r.get(5)?,
        finish_reason: r.get(6)?,
        status: r.get(7)?,
        error: r.get(8)?,
        prompt_tokens: r.get(9)?,
        completion_tokens: r.get(10)?,
        content_tokens: r.get(11)?,
        timings: json_column(r.get(12)?),
        context: json_column(r.get(13)?),
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
        tool_calls: json_column(r.get(16)?),
        tool_call_id: r.get(17)?,
    })
}

/// A new random id with `prefix`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Create a conversation for `owner`.
pub fn create_conversation(
    conn: &Db,
    owner: i64,
    new: &NewConversation,
    now: i64,
) -> Result<Conversation, StoreError> {
    let id = new_id("conv_");
    conn.prepare_cached(
        "INSERT INTO conversations (id, owner_id, title, model, system_prompt, params, \
         created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        id,
        owner,
        new.title,
        new.model,
        new.system_prompt,
        new.params.to_string(),
        now
    ])?;
    get_conversation(conn, owner, &id)?.ok_or(StoreError::NotFound)
}

/// `owner`'s conversation `id`.
pub fn get_conversation(
    conn: &Db,
    owner: i64,
    id: &str,
) -> Result<Option<Conversation>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1 AND owner_id = ?2"
    ))?
    .query_row(params![id, owner], conversation_from_row)
    .optional()
}

/// `q` as a search query in `dialect`'s syntax: every word must appear (the last one as a
/// prefix), quoted so no character of the user's text is query syntax. FTS5: `"a" "b"*`;
/// PostgreSQL's `to_tsquery`: `'a' & 'b':*` (quotes and backslashes, separators to both, are
/// dropped).
fn search_query(q: &str, dialect: Dialect) -> Option<String> {
    let words: Vec<String> = q
        .split_whitespace()
        .map(|w| match dialect {
            Dialect::Sqlite => format!("\"{}\"", w.replace('"', "\"\"")),
            Dialect::Postgres => format!("'{}'", w.replace(['\'', '\\'], " ")),
        })
        .collect();
    let (last, rest) = words.split_last()?;
    let (join, prefix) = match dialect {
        Dialect::Sqlite => (" ", "*"),
        Dialect::Postgres => (" & ", ":*"),
    };
    let mut out = rest.join(join);
    if !out.is_empty() {
        out.push_str(join);
    }
    out.push_str(last);
    out.push_str(prefix);
    Some(out)
}

/// One page of `owner`'s conversations: pinned first, then the most recently changed; and
/// whether more follow.
pub fn list_conversations(
    conn: &Db,
    owner: i64,
    query: &ListQuery,
) -> Result<(Vec<Conversation>, bool), StoreError> {
    let limit = query.limit.clamp(1, 100);
    let search = query
        .q
        .as_deref()
        .and_then(|q| search_query(q, conn.dialect()));
    let filter = match (search.is_some(), conn.dialect()) {
        (false, _) => "AND CAST(?5 AS TEXT) IS NULL",
        (true, Dialect::Sqlite) => {
            "AND (c.rowid IN (SELECT rowid FROM titles_fts WHERE titles_fts MATCH ?5) \
             OR c.id IN (SELECT m.conversation_id FROM messages_fts f \
                         JOIN messages m ON m.rowid = f.rowid WHERE messages_fts MATCH ?5))"
        }
        (true, Dialect::Postgres) => {
            "AND (c.title_search @@ to_tsquery('simple', hearth_fold(?5)) \
             OR c.id IN (SELECT m.conversation_id FROM messages m \
                         WHERE m.search @@ to_tsquery('simple', hearth_fold(?5))))"
        }
    };
    let sql = format!(
        "SELECT {} FROM conversations c WHERE c.owner_id = ?1 AND c.archived = ?2 {filter} \
         ORDER BY c.pinned DESC, c.updated_at DESC, c.rowid DESC LIMIT ?3 OFFSET ?4",
        CONVERSATION_COLUMNS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            owner,
            query.archived,
            (limit + 1) as i64,
            query.offset as i64,
            search
        ],
        conversation_from_row,
    )?;
    let mut out = rows.collect::<Result<Vec<_>, _>>()?;
    let more = out.len() > limit;
    out.truncate(limit);
    Ok((out, more))
}

/// Apply `update` to `owner`'s conversation `id`; `None` if there is no such conversation.
pub fn update_conversation(
    conn: &Db,
    owner: i64,
    id: &str,
    update: &ConversationUpdate,
    now: i64,
) -> Result<Option<Conversation>, StoreError> {
    let tx = conn.write_transaction()?;
    let Some(mut c) = get_conversation(&tx, owner, id)? else {
        return Ok(None);
    };
    if let Some(t) = &update.title {
        c.title = t.clone();
    }
    if let Some(m) = &update.model {
        c.model = m.clone();
    }
    if let Some(s) = &update.system_prompt {
        c.system_prompt = s.clone();
    }
    if let Some(p) = &update.params {
        c.params = p.clone();
    }
    if let Some(p) = update.pinned {
        c.pinned = p;
    }
    if let Some(a) = update.archived {
        c.archived = a;
    }
    tx.prepare_cached(
        "UPDATE conversations SET title = ?3, model = ?4, system_prompt = ?5, params = ?6, \
         pinned = ?7, archived = ?8, updated_at = ?9 WHERE id = ?1 AND owner_id = ?2",
    )?
    .execute(params![
        id,
        owner,
        c.title,
        c.model,
        c.system_prompt,
        c.params.to_string(),
        c.pinned,
        c.archived,
        now
    ])?;
    tx.commit()?;
    c.updated_at = now;
    Ok(Some(c))
}

/// Delete `owner`'s conversation `id` and its messages; whether there was one.
pub fn delete_conversation(conn: &Db, owner: i64, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM conversations WHERE id = ?1 AND owner_id = ?2")?
        .execute(params![id, owner])?
        > 0)
}

/// Every message of `owner`'s conversation `id`, oldest first; `None` if there is no such
/// conversation.
pub fn messages(conn: &Db, owner: i64, id: &str) -> Result<Option<Vec<Message>>, StoreError> {
    if get_conversation(conn, owner, id)?.is_none() {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 \
         ORDER BY created_at, rowid"
    ))?;
    let rows = stmt.query_map([id], message_from_row)?;
    Ok(Some(rows.collect::<Result<_, _>>()?))
}

/// `owner`'s message `id` (in any of their conversations).
pub fn message(conn: &Db, owner: i64, id: &str) -> Result<Option<Message>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {} FROM messages m JOIN conversations c ON c.id = m.conversation_id \
             WHERE m.id = ?1 AND c.owner_id = ?2",
        MESSAGE_COLUMNS
            .split(", ")
            .map(|c| format!("m.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))?
    .query_row(params![id, owner], message_from_row)
    .optional()
}

/// Add a message to `owner`'s conversation and make it the active leaf. `NotFound` if the
/// conversation is not theirs or the parent is not in it.
/// A streaming answer is recorded as `replica`'s (see `replicas.rs`).
pub fn insert_message(
    conn: &Db,
    owner: i64,
    new: &NewMessage,
    replica: &str,
    now: i64,
) -> Result<Message, StoreError> {
    let tx = conn.write_transaction()?;
    if get_conversation(&tx, owner, &new.conversation_id)?.is_none() {
        return Err(StoreError::NotFound);
    }
    if let Some(parent) = &new.parent_id {
        let in_conversation: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND conversation_id = ?2)",
            )?
            .query_row(params![parent, new.conversation_id], |r| r.get(0))?;
        if !in_conversation {
            return Err(StoreError::NotFound);
        }
    }
    let id = new_id("msg_");
    tx.prepare_cached(
        "INSERT INTO messages (id, conversation_id, parent_id, role, content, model, status, \
         content_tokens, context, created_at, updated_at, tool_call_id, replica) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)",
    )?
    .execute(params![
        id,
        new.conversation_id,
        new.parent_id,
        new.role,
        new.content,
        new.model,
        new.status,
        new.content_tokens,
        new.context.as_ref().map(|c| c.to_string()),
        now,
        new.tool_call_id,
        (new.status == "streaming").then_some(replica)
    ])?;
    tx.prepare_cached("UPDATE conversations SET active_leaf = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![new.conversation_id, id, now])?;
    let m = tx
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"
        ))?
        .query_row([&id], message_from_row)?;
    tx.commit()?;
    Ok(m)
}

/// Save the text generated so far of a streaming message.
pub fn save_partial(conn: &Db, id: &str, content: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE messages SET content = ?2, updated_at = ?3 WHERE id = ?1 AND status = 'streaming'",
    )?
    .execute(params![id, content, now])?;
    Ok(())
}

/// The final write of a generated message.
pub fn finish_message(conn: &Db, id: &str, f: &Finished, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE messages SET content = ?2, status = ?3, finish_reason = ?4, error = ?5, \
         prompt_tokens = ?6, completion_tokens = ?7, timings = ?8, updated_at = ?9, \
         content_tokens = ?10, tool_calls = ?11 WHERE id = ?1",
    )?
    .execute(params![
        id,
        f.content,
        f.status,
        f.finish_reason,
        f.error,
        f.prompt_tokens,
        f.completion_tokens,
        f.timings.as_ref().map(|t| t.to_string()),
        now,
        f.content_tokens,
        f.tool_calls.as_ref().map(|c| c.to_string())
    ])?;
    Ok(())
}

/// Make `leaf` the active leaf of `owner`'s conversation `id`; whether both exist.
pub fn set_active_leaf(conn: &Db, owner: i64, id: &str, leaf: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE conversations SET active_leaf = ?3 WHERE id = ?1 AND owner_id = ?2 \
             AND EXISTS (SELECT 1 FROM messages WHERE id = ?3 AND conversation_id = ?1)",
        )?
        .execute(params![id, owner, leaf])?
        > 0)
}

/// A message of an imported conversation; `id` and `parent_id` are the file's own, mapped to
/// new ids on import.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ImportedMessage {
    /// Its id in the file.
    pub id: String,
    /// Its parent's id in the file (an earlier message).
    #[serde(default)]
    pub parent_id: Option<String>,
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Its text.
    pub content: String,
    /// An assistant message's calls (OpenAI's shape).
    #[serde(default)]
    pub tool_calls: Option<serde_json::Value>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// The model that answered.
    #[serde(default)]
    pub model: Option<String>,
    /// `done`, `interrupted` or `error` (`streaming` is imported as `interrupted`).
    #[serde(default)]
    pub status: Option<String>,
    /// `stop` or `length`.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<i64>,
}

/// Create a conversation for `owner` from an export: every message under a new id, the tree
/// and the active branch kept, in one transaction. `Err(Invalid)` names the first bad message.
pub fn import_conversation(
    conn: &Db,
    owner: i64,
    new: &NewConversation,
    messages: &[ImportedMessage],
    active_leaf: Option<&str>,
    now: i64,
) -> Result<Result<Conversation, String>, StoreError> {
    let tx = conn.write_transaction()?;
    let conv = create_conversation(&tx, owner, new, now)?;
    let mut ids = std::collections::HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Ok(Err(format!(
                "messages[{i}].role must be system, user, assistant or tool"
            )));
        }
        if (m.role == "tool") != m.tool_call_id.is_some() {
            return Ok(Err(format!(
                "messages[{i}].tool_call_id is required for a tool message and only there"
            )));
        }
        let calls = m.tool_calls.as_ref().filter(|c| !c.is_null());
        if calls.is_some_and(|c| m.role != "assistant" || !c.is_array()) {
            return Ok(Err(format!(
                "messages[{i}].tool_calls must be an array, on an assistant message"
            )));
        }
        let parent = match &m.parent_id {
            None => None,
            Some(p) => match ids.get(p.as_str()) {
                Some(new_id) => Some(String::clone(new_id)),
                None => {
                    return Ok(Err(format!(
                        "messages[{i}].parent_id names no earlier message"
                    )))
                }
            },
        };
        let status = match m.status.as_deref() {
            None | Some("done") => "done",
            Some("error") => "error",
            Some("interrupted" | "streaming") => "interrupted",
            Some(_) => return Ok(Err(format!("messages[{i}].status is not a message status"))),
        };
        let id = new_id("msg_");
        tx.prepare_cached(
            "INSERT INTO messages (id, conversation_id, parent_id, role, content, model, status, \
             finish_reason, created_at, updated_at, tool_calls, tool_call_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)",
        )?
        .execute(params![
            id,
            conv.id,
            parent,
            m.role,
            m.content,
            m.model,
            status,
            m.finish_reason,
            m.created_at.unwrap_or(now),
            calls.map(|c| c.to_string()),
            m.tool_call_id
        ])?;
        if ids.insert(m.id.as_str(), id).is_some() {
            return Ok(Err(format!("messages[{i}].id appears twice")));
        }
    }
    let leaf = match active_leaf {
        Some(old) => ids.get(old).cloned(),
        None => messages
            .last()
            .and_then(|m| ids.get(m.id.as_str()).cloned()),
    };
    tx.prepare_cached("UPDATE conversations SET active_leaf = ?2 WHERE id = ?1")?
        .execute(params![conv.id, leaf])?;
    let conv = get_conversation(&tx, owner, &conv.id)?.ok_or(StoreError::NotFound)?;
    tx.commit()?;
    Ok(Ok(conv))
}

/// Keep the model's summary of `owner`'s conversation `id` through message `through`.
pub fn set_summary(
    conn: &Db,
    owner: i64,
    id: &str,
    summary: &str,
    through: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE conversations SET summary = ?3, summary_through = ?4 \
         WHERE id = ?1 AND owner_id = ?2",
    )?
    .execute(params![id, owner, summary, through])?;
    Ok(())
}

/// Async forms of the functions above, on a blocking thread, with the store's clock.
impl Store {
    /// See [`create_conversation`].
    pub async fn create_conversation(
        &self,
        owner: i64,
        new: NewConversation,
    ) -> Result<Conversation, StoreError> {
        self.run(move |c| create_conversation(c, owner, &new, unix_now()))
            .await
    }

    /// See [`get_conversation`].
    pub async fn conversation(
        &self,
        owner: i64,
        id: String,
    ) -> Result<Option<Conversation>, StoreError> {
        self.run(move |c| get_conversation(c, owner, &id)).await
    }

    /// See [`list_conversations`].
    pub async fn list_conversations(
        &self,
        owner: i64,
        query: ListQuery,
    ) -> Result<(Vec<Conversation>, bool), StoreError> {
        self.run(move |c| list_conversations(c, owner, &query))
            .await
    }

    /// See [`update_conversation`].
    pub async fn update_conversation(
        &self,
        owner: i64,
        id: String,
        update: ConversationUpdate,
    ) -> Result<Option<Conversation>, StoreError> {
        self.run(move |c| update_conversation(c, owner, &id, &update, unix_now()))
            .await
    }

    /// See [`delete_conversation`].
    pub async fn delete_conversation(&self, owner: i64, id: String) -> Result<bool, StoreError> {
        self.run(move |c| delete_conversation(c, owner, &id)).await
    }

    /// See [`messages`].
    pub async fn messages(
        &self,
        owner: i64,
        id: String,
    ) -> Result<Option<Vec<Message>>, StoreError> {
        self.run(move |c| messages(c, owner, &id)).await
    }

    /// `owner`'s conversation `id` and all its messages, in one read; `None` if there is no
    /// such conversation.
    pub async fn conversation_with_messages(
        &self,
        owner: i64,
        id: String,
    ) -> Result<Option<(Conversation, Vec<Message>)>, StoreError> {
        self.run(move |c| {
            let Some(conv) = get_conversation(c, owner, &id)? else {
                return Ok(None);
            };
            Ok(messages(c, owner, &id)?.map(|m| (conv, m)))
        })
        .await
    }

    /// See [`message`].
    pub async fn message(&self, owner: i64, id: String) -> Result<Option<Message>, StoreError> {
        self.run(move |c| message(c, owner, &id)).await
    }

    /// See [`insert_message`].
    pub async fn insert_message(&self, owner: i64, new: NewMessage) -> Result<Message, StoreError> {
        let replica = self.replica_id().to_owned();
        self.run(move |c| insert_message(c, owner, &new, &replica, unix_now()))
            .await
    }

    /// See [`save_partial`].
    pub async fn save_partial(&self, id: String, content: String) -> Result<(), StoreError> {
        self.run(move |c| save_partial(c, &id, &content, unix_now()))
            .await
    }

    /// See [`finish_message`].
    pub async fn finish_message(&self, id: String, f: Finished) -> Result<(), StoreError> {
        self.run(move |c| finish_message(c, &id, &f, unix_now()))
            .await
    }

    /// See [`import_conversation`].
    pub async fn import_conversation(
        &self,
        owner: i64,
        new: NewConversation,
        messages: Vec<ImportedMessage>,
        active_leaf: Option<String>,
    ) -> Result<Result<Conversation, String>, StoreError> {
        self.run(move |c| {
            import_conversation(
                c,
                owner,
                &new,
                &messages,
                active_leaf.as_deref(),
                unix_now(),
            )
        })
        .await
    }

    /// See [`set_summary`].
    pub async fn set_summary(
        &self,
        owner: i64,
        id: String,
        summary: String,
        through: String,
    ) -> Result<(), StoreError> {
        self.run(move |c| set_summary(c, owner, &id, &summary, &through))
            .await
    }

    /// See [`set_active_leaf`].
    pub async fn set_active_leaf(
        &self,
        owner: i64,
        id: String,
        leaf: String,
    ) -> Result<bool, StoreError> {
        self.run(move |c| set_active_leaf(c, owner, &id, &leaf))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_quoted_so_it_is_never_query_syntax() {
        let fts = |q| search_query(q, Dialect::Sqlite);
        assert_eq!(fts("  "), None);
        assert_eq!(fts("rust"), Some("\"rust\"*".into()));
        assert_eq!(
            fts("a \"b\" OR c*"),
            Some("\"a\" \"\"\"b\"\"\" \"OR\" \"c*\"*".into())
        );
        let ts = |q| search_query(q, Dialect::Postgres);
        assert_eq!(ts("  "), None);
        assert_eq!(ts("rust"), Some("'rust':*".into()));
        assert_eq!(
            ts("a 'b' | !c\\"),
            Some("'a' & ' b ' & '|' & '!c ':*".into())
        );
    }
}
