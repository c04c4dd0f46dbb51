-- Accounts: users, refresh tokens, API keys and usage counters.
-- Run inside one transaction by migrations.rs, which also sets user_version and application_id:
-- no BEGIN/COMMIT or PRAGMA here. Times are Unix seconds (UTC).

-- PostgreSQL: usernames compare like SQLite's NOCASE (case-insensitively; they are ASCII).
--pg: CREATE COLLATION hearth_nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);

-- AUTOINCREMENT: ids are never reused, so a stale token naming a deleted user's id can never
-- match someone else.
CREATE TABLE users (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    -- NOCASE folds ASCII letters only; the unique index uses the column's collation.
    username            TEXT    NOT NULL COLLATE NOCASE UNIQUE,
    password_hash       TEXT    NOT NULL,
    role                TEXT    NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL
) STRICT;

-- One row per issued refresh token; a family is one login session's chain of rotations.
CREATE TABLE refresh_tokens (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   TEXT    NOT NULL,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);

-- AUTOINCREMENT: usage rows keep a deleted key's id, which must never name a newer key.
CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    key_hash     TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
) STRICT;
CREATE INDEX api_keys_by_user ON api_keys (user_id);

-- Counters per user, API key and UTC day. api_key_id 0 means "not through an API key" (a web
-- session); it has no foreign key so that a user's history outlives the keys they delete.
CREATE TABLE usage_daily (
    user_id           INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id        INTEGER NOT NULL CHECK (api_key_id >= 0),
    day               TEXT    NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0 CHECK (requests >= 0),
    prompt_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    PRIMARY KEY (user_id, api_key_id, day)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_daily_by_key ON usage_daily (api_key_id);
