-- Blog posts and their revisions.
-- Run inside one transaction by migrations.rs: no BEGIN/COMMIT or PRAGMA here.

CREATE TABLE posts (
    id               TEXT    PRIMARY KEY,
    owner_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Unique per owner: the public URL is /blog/{username}/{slug}.
    slug             TEXT    NOT NULL,
    title            TEXT    NOT NULL,
    body             TEXT    NOT NULL DEFAULT '',
    excerpt          TEXT    NOT NULL DEFAULT '',
    -- JSON arrays of strings.
    tags             TEXT    NOT NULL DEFAULT '[]',
    keywords         TEXT    NOT NULL DEFAULT '[]',
    status           TEXT    NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published')),
    -- Set on the first publish and kept through unpublishing (the post's date).
    published_at     INTEGER,
    meta_description TEXT    NOT NULL DEFAULT '',
    cover_alt        TEXT    NOT NULL DEFAULT '',
    -- Words of the body (computed by the blog layer on every save).
    words            INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every save: a save names the revision it edits (optimistic concurrency).
    revision         INTEGER NOT NULL DEFAULT 1,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (owner_id, slug)
) STRICT;
CREATE INDEX posts_by_owner ON posts (owner_id, updated_at DESC);
CREATE INDEX posts_published ON posts (status, published_at DESC);

-- Every saved title and body, by revision; `added` / `removed` count the lines changed since
-- the revision before it. The newest `blog.max_revisions` are kept.
CREATE TABLE post_revisions (
    post_id    TEXT    NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    revision   INTEGER NOT NULL,
    title      TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    words      INTEGER NOT NULL,
    added      INTEGER NOT NULL,
    removed    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (post_id, revision)
) STRICT, WITHOUT ROWID;
