-- Which server process generates a streaming answer, and when each process was last alive.
-- Several replicas may share one PostgreSQL store: a process marks `interrupted` only the
-- streaming answers of processes that are gone, never another live replica's.
-- Run inside one transaction by migrations.rs: no BEGIN/COMMIT or PRAGMA here.

ALTER TABLE messages ADD COLUMN replica TEXT;

CREATE TABLE replicas (
    id      TEXT    PRIMARY KEY,
    -- Unix seconds of its last heartbeat.
    seen_at INTEGER NOT NULL
) STRICT;
