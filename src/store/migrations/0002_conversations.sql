-- Conversations and their messages (a tree: edits and regenerations are branches), with
-- full-text search over titles and finished message text (FTS5).
-- Run inside one transaction by migrations.rs: no BEGIN/COMMIT or PRAGMA here.

CREATE TABLE conversations (
    id            TEXT    PRIMARY KEY,
    owner_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title         TEXT    NOT NULL DEFAULT '',
    -- NULL: the owner's preferred model, else the server's default.
    model         TEXT,
    system_prompt TEXT,
    -- JSON object of sampling parameters (temperature, top_p, max_tokens, seed, ...).
    params        TEXT    NOT NULL DEFAULT '{}',
    pinned        INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    archived      INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
    -- The newest message of the branch being shown and continued.
    active_leaf   TEXT,
    -- With memory.summarize: the model's summary of the messages that no longer fit the
    -- context, up to and including `summary_through` (a message of the branch it summarises).
    summary         TEXT,
    summary_through TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX conversations_by_owner ON conversations (owner_id, pinned DESC, updated_at DESC);

CREATE TABLE messages (
    id                TEXT    PRIMARY KEY,
    conversation_id   TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    parent_id         TEXT    REFERENCES messages (id) ON DELETE CASCADE,
    role              TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
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
    updated_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at);
CREATE INDEX messages_by_parent ON messages (parent_id);

-- Search indexes, rowid = the indexed row's rowid. Message text is indexed once it stops
-- streaming (partial writes every few hundred milliseconds would churn the index).
CREATE VIRTUAL TABLE titles_fts USING fts5 (title, tokenize = 'unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE messages_fts USING fts5 (content, tokenize = 'unicode61 remove_diacritics 2');

CREATE TRIGGER conversations_ai AFTER INSERT ON conversations BEGIN
    INSERT INTO titles_fts (rowid, title) VALUES (new.rowid, new.title);
END;
CREATE TRIGGER conversations_au AFTER UPDATE OF title ON conversations BEGIN
    DELETE FROM titles_fts WHERE rowid = old.rowid;
    INSERT INTO titles_fts (rowid, title) VALUES (new.rowid, new.title);
END;
CREATE TRIGGER conversations_ad AFTER DELETE ON conversations BEGIN
    DELETE FROM titles_fts WHERE rowid = old.rowid;
END;
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

-- Each user's defaults for new turns and requests; NULL: not set.
CREATE TABLE preferences (
    user_id       INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    model         TEXT,
    temperature   REAL,
    top_p         REAL,
    max_tokens    INTEGER,
    system_prompt TEXT,
    -- Add the user's memories to the system prompt of conversation turns.
    memory        INTEGER NOT NULL DEFAULT 1 CHECK (memory IN (0, 1)),
    updated_at    INTEGER NOT NULL
) STRICT;

-- Short notes a user keeps for the model to know.
CREATE TABLE memories (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX memories_by_user ON memories (user_id, id);

-- Server-wide settings admins change at run time (JSON values), e.g. `models`.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- Per-user overrides of `[limits]` set by admins; NULL: the server's setting.
CREATE TABLE user_limits (
    user_id                INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    requests_per_minute    INTEGER,
    concurrent_generations INTEGER,
    tokens_per_day         INTEGER,
    updated_at             INTEGER NOT NULL
) STRICT;
