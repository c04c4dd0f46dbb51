-- Tool calling in conversations: assistant messages keep the calls they made (`tool_calls`,
-- JSON in OpenAI's shape), and `tool` messages carry a call's result (`tool_call_id`).
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt: rows keep their
-- rowids (the search index refers to them), then the indexes and triggers are recreated.
-- Run inside one transaction by migrations.rs: no BEGIN/COMMIT or PRAGMA here. With foreign
-- keys on, the INSERT … SELECT is checked at its end (parents and children copied together),
-- and dropping the old table fires no triggers.

-- PostgreSQL changes the constraint and adds the columns in place.
--pg: ALTER TABLE messages DROP CONSTRAINT messages_role_check,
--pg:     ADD CONSTRAINT messages_role_check
--pg:         CHECK (role IN ('system', 'user', 'assistant', 'tool')),
--pg:     ADD COLUMN tool_calls TEXT, ADD COLUMN tool_call_id TEXT,
--pg:     ADD CHECK (tool_calls IS NULL OR role = 'assistant'),
--pg:     ADD CHECK ((role = 'tool') = (tool_call_id IS NOT NULL));

-- sqlite:begin
DROP TRIGGER messages_ai;
DROP TRIGGER messages_au;
DROP TRIGGER messages_ad;

CREATE TABLE messages_v5 (
    id                TEXT    PRIMARY KEY,
    conversation_id   TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    parent_id         TEXT    REFERENCES messages_v5 (id) ON DELETE CASCADE,
    role              TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content           TEXT    NOT NULL,
    -- The model that answered (assistant messages).
    model             TEXT,
    finish_reason     TEXT,
    status            TEXT    NOT NULL DEFAULT 'done'
                      CHECK (status IN ('streaming', 'done', 'interrupted', 'error')),
    error             TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    -- Tokens of `content` alone (local tokenizer), cached for fitting turns to the context.
    content_tokens    INTEGER,
    -- JSON: timings of the generation; which messages went into the turn.
    timings           TEXT,
    context           TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    -- JSON array of the calls an assistant message made:
    -- [{"id", "type": "function", "function": {"name", "arguments"}}].
    tool_calls        TEXT    CHECK (tool_calls IS NULL OR role = 'assistant'),
    -- The call a `tool` message answers (every tool message has one, nothing else does).
    tool_call_id      TEXT    CHECK ((role = 'tool') = (tool_call_id IS NOT NULL))
) STRICT;

INSERT INTO messages_v5 (rowid, id, conversation_id, parent_id, role, content, model,
    finish_reason, status, error, prompt_tokens, completion_tokens, content_tokens, timings,
    context, created_at, updated_at)
SELECT rowid, id, conversation_id, parent_id, role, content, model, finish_reason, status,
    error, prompt_tokens, completion_tokens, content_tokens, timings, context, created_at,
    updated_at
FROM messages;

DROP TABLE messages;
ALTER TABLE messages_v5 RENAME TO messages;

CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at);
CREATE INDEX messages_by_parent ON messages (parent_id);

CREATE TRIGGER messages_ai AFTER INSERT ON messages WHEN new.status != 'streaming' BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER messages_au AFTER UPDATE OF content, status ON messages
    WHEN new.status != 'streaming' BEGIN
    DELETE FROM messages_fts WHERE rowid = old.rowid;
    INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
    DELETE FROM messages_fts WHERE rowid = old.rowid;
END;
-- sqlite:end
