//! Blog posts and their revisions. A post belongs to its owner: every call but the public
//! reads (`published_*`) is scoped by owner, and someone else's post reads as absent.
//!
//! Saves are optimistic: each names the revision it edits, and a stale one changes nothing and
//! gets the stored post back ([`Saved::Stale`]). Every save that changes the title or body keeps
//! a revision row (the newest `max_revisions`). Slugs, tags and word counts arrive validated
//! and computed by the blog layer; this module only stores them.

use super::db::{Db, Optional, Row};
use crate::params;
use serde::Serialize;

use super::conversations::new_id;
use super::{unix_now, Store, StoreError};

/// A post as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Post {
    /// `post_…`.
    pub id: String,
    /// The owner's user id.
    #[serde(skip)]
    pub owner_id: i64,
    /// The owner's username (the public URL's first part).
    pub author: String,
    /// Unique among the owner's posts.
    pub slug: String,
    /// Its title.
    pub title: String,
    /// Markdown.
    pub body: String,
    /// A short summary for lists and feeds ("" for the body's first words).
    pub excerpt: String,
    /// Tags, normalised.
    pub tags: Vec<String>,
    /// `draft` or `published`.
    pub status: PostStatus,
    /// Unix seconds of the first publish.
    pub published_at: Option<i64>,
    /// The page's meta description.
    pub meta_description: String,
    /// SEO keywords.
    pub keywords: Vec<String>,
    /// Alt text of the cover image.
    pub cover_alt: String,
    /// Words of the body.
    pub words: i64,
    /// Bumped by every save.
    pub revision: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last save or status change.
    pub updated_at: i64,
}

/// Whether the public can read a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PostStatus {
    /// Only its owner sees it.
    Draft,
    /// On the public pages.
    Published,
}

impl PostStatus {
    fn as_str(self) -> &'static str {
        match self {
            PostStatus::Draft => "draft",
            PostStatus::Published => "published",
        }
    }
}

/// The fields a save may set (`None`: unchanged). Validated by the caller.
#[derive(Debug, Clone, Default)]
pub struct PostFields {
    /// New title.
    pub title: Option<String>,
    /// New body, with its word count.
    pub body: Option<(String, i64)>,
    /// New slug.
    pub slug: Option<String>,
    /// New excerpt.
    pub excerpt: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New meta description.
    pub meta_description: Option<String>,
    /// New keywords.
    pub keywords: Option<Vec<String>>,
    /// New cover alt text.
    pub cover_alt: Option<String>,
}

/// How a create or save went.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    /// Stored: the post as it is now.
    Done(Post),
    /// The save named an older revision: nothing changed; the stored post.
    Stale(Post),
    /// Another of the owner's posts has this slug.
    SlugTaken,
    /// The owner already has `blog.max_posts_per_user` posts.
    TooMany,
}

/// One revision in a post's history (without its body).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevisionSummary {
    /// The post revision it was saved as.
    pub revision: i64,
    /// The title then.
    pub title: String,
    /// Words of the body then.
    pub words: i64,
    /// Lines added since the revision before it.
    pub added: i64,
    /// Lines removed since the revision before it.
    pub removed: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// One revision's text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Revision {
    /// The post revision it was saved as.
    pub revision: i64,
    /// The title then.
    pub title: String,
    /// The body then.
    pub body: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// How many of a post's revisions to keep, and how many posts an owner may have.
#[derive(Debug, Clone, Copy)]
pub struct PostLimits {
    /// `blog.max_posts_per_user`.
    pub max_posts: u32,
    /// `blog.max_revisions`.
    pub max_revisions: u32,
}

const COLUMNS: &str = "p.id, p.owner_id, u.username, p.slug, p.title, p.body, p.excerpt, p.tags, \
     p.status, p.published_at, p.meta_description, p.keywords, p.cover_alt, p.words, p.revision, \
     p.created_at, p.updated_at";

fn json_list(text: String) -> Vec<String> {
    // Written by this module as JSON arrays; anything else reads as no entries.
    serde_json::from_str(&text).unwrap_or_default()
}

fn post_from_row(r: &Row<'_>) -> Result<Post, StoreError> {
    let status: String = r.get(8)?;
    Ok(Post {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        author: r.get(2)?,
        slug: r.get(3)?,
        title: r.get(4)?,
        body: r.get(5)?,
        excerpt: r.get(6)?,
        tags: json_list(r.get(7)?),
        status: if status == "published" {
            PostStatus::Published
        } else {
            PostStatus::Draft
        },
        published_at: r.get(9)?,
        meta_description: r.get(10)?,
        keywords: json_list(r.get(11)?),
        cover_alt: r.get(12)?,
        words: r.get(13)?,
        revision: r.get(14)?,
        created_at: r.get(15)?,
        updated_at: r.get(16)?,
    })
}

fn to_json(list: &[String]) -> String {
    serde_json::Value::from(list).to_string()
}

/// `owner`'s post `id`.
pub fn get_post(conn: &Db, owner: i64, id: &str) -> Result<Option<Post>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM posts p JOIN users u ON u.id = p.owner_id \
             WHERE p.id = ?1 AND p.owner_id = ?2"
    ))?
    .query_row(params![id, owner], post_from_row)
    .optional()
}

/// `owner`'s posts, newest change first (optionally only those of one status).
pub fn list_posts(
    conn: &Db,
    owner: i64,
    status: Option<PostStatus>,
) -> Result<Vec<Post>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM posts p JOIN users u ON u.id = p.owner_id \
         WHERE p.owner_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR p.status = ?2) \
         ORDER BY p.updated_at DESC, p.rowid DESC"
    ))?;
    let rows = stmt.query_map(
        params![owner, status.map(PostStatus::as_str)],
        post_from_row,
    )?;
    rows.collect::<Result<_, _>>()
}

fn slug_taken(conn: &Db, owner: i64, slug: &str, except: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM posts WHERE owner_id = ?1 AND slug = ?2 AND id != ?3")?
        .exists(params![owner, slug, except])
}

/// Lines of `new` not in `old` and lines of `old` not in `new`, counted as multisets: a
/// summary of a change, not a diff.
pub fn line_changes(old: &str, new: &str) -> (i64, i64) {
    use std::collections::HashMap;
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for line in old.lines() {
        *counts.entry(line).or_default() += 1;
    }
    let mut added = 0;
    for line in new.lines() {
        match counts.get_mut(line) {
            Some(n) if *n > 0 => *n -= 1,
            _ => added += 1,
        }
    }
    (added, counts.values().sum())
}

fn keep_revision(
    conn: &Db,
    post: &Post,
    previous_body: &str,
    max_revisions: u32,
) -> Result<(), StoreError> {
    let (added, removed) = line_changes(previous_body, &post.body);
    conn.prepare_cached(
        "INSERT INTO post_revisions (post_id, revision, title, body, words, added, removed, \
         created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        post.id,
        post.revision,
        post.title,
        post.body,
        post.words,
        added,
        removed,
        post.updated_at
    ])?;
    conn.prepare_cached(
        "DELETE FROM post_revisions WHERE post_id = ?1 AND revision <= \
         (SELECT revision FROM post_revisions WHERE post_id = ?1 \
          ORDER BY revision DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute(params![post.id, max_revisions.max(1)])?;
    Ok(())
}

/// Create a post for `owner` from `fields` (`title` and `slug` required; the slug gets `-2`,
/// `-3`, … when `slug_is_default` and it is taken).
pub fn create_post(
    conn: &Db,
    owner: i64,
    fields: &PostFields,
    slug_is_default: bool,
    limits: PostLimits,
    now: i64,
) -> Result<Saved, StoreError> {
    let tx = conn.write_transaction()?;
    let count: i64 = tx
        .prepare_cached("SELECT count(*) FROM posts WHERE owner_id = ?1")?
        .query_row([owner], |r| r.get(0))?;
    if count >= i64::from(limits.max_posts) {
        return Ok(Saved::TooMany);
    }
    let id = new_id("post_");
    let base = fields.slug.clone().unwrap_or_else(|| "post".into());
    let mut slug = base.clone();
    let mut n = 2;
    while slug_taken(&tx, owner, &slug, &id)? {
        if !slug_is_default {
            return Ok(Saved::SlugTaken);
        }
        slug = format!("{base}-{n}");
        n += 1;
    }
    let (body, words) = fields.body.clone().unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO posts (id, owner_id, slug, title, body, excerpt, tags, meta_description, \
         keywords, cover_alt, words, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)",
    )?
    .execute(params![
        id,
        owner,
        slug,
        fields.title.clone().unwrap_or_default(),
        body,
        fields.excerpt.clone().unwrap_or_default(),
        to_json(fields.tags.as_deref().unwrap_or_default()),
        fields.meta_description.clone().unwrap_or_default(),
        to_json(fields.keywords.as_deref().unwrap_or_default()),
        fields.cover_alt.clone().unwrap_or_default(),
        words,
        now
    ])?;
    let post = get_post(&tx, owner, &id)?.ok_or(StoreError::NotFound)?;
    keep_revision(&tx, &post, "", limits.max_revisions)?;
    tx.commit()?;
    Ok(Saved::Done(post))
}

/// Save `fields` over `owner`'s post `id` if it is still at `revision`. `None`: no such post.
pub fn update_post(
    conn: &Db,
    owner: i64,
    id: &str,
    revision: i64,
    fields: &PostFields,
    max_revisions: u32,
    now: i64,
) -> Result<Option<Saved>, StoreError> {
    let tx = conn.write_transaction()?;
    let Some(old) = get_post(&tx, owner, id)? else {
        return Ok(None);
    };
    if old.revision != revision {
        return Ok(Some(Saved::Stale(old)));
    }
    if let Some(slug) = &fields.slug {
        if slug_taken(&tx, owner, slug, id)? {
            return Ok(Some(Saved::SlugTaken));
        }
    }
    let (body, words) = fields
        .body
        .clone()
        .unwrap_or_else(|| (old.body.clone(), old.words));
    let new = Post {
        title: fields.title.clone().unwrap_or_else(|| old.title.clone()),
        body,
        words,
        slug: fields.slug.clone().unwrap_or_else(|| old.slug.clone()),
        excerpt: fields
            .excerpt
            .clone()
            .unwrap_or_else(|| old.excerpt.clone()),
        tags: fields.tags.clone().unwrap_or_else(|| old.tags.clone()),
        meta_description: fields
            .meta_description
            .clone()
            .unwrap_or_else(|| old.meta_description.clone()),
        keywords: fields
            .keywords
            .clone()
            .unwrap_or_else(|| old.keywords.clone()),
        cover_alt: fields
            .cover_alt
            .clone()
            .unwrap_or_else(|| old.cover_alt.clone()),
        revision: old.revision + 1,
        // A clock that stepped back must not make the post look older than it was.
        updated_at: now.max(old.updated_at),
        ..old.clone()
    };
    tx.prepare_cached(
        "UPDATE posts SET title = ?3, body = ?4, words = ?5, slug = ?6, excerpt = ?7, tags = ?8, \
         meta_description = ?9, keywords = ?10, cover_alt = ?11, revision = ?12, \
         updated_at = ?13 WHERE id = ?1 AND owner_id = ?2",
    )?
    .execute(params![
        id,
        owner,
        new.title,
        new.body,
        new.words,
        new.slug,
        new.excerpt,
        to_json(&new.tags),
        new.meta_description,
        to_json(&new.keywords),
        new.cover_alt,
        new.revision,
        new.updated_at
    ])?;
    if new.title != old.title || new.body != old.body {
        keep_revision(&tx, &new, &old.body, max_revisions)?;
    }
    tx.commit()?;
    Ok(Some(Saved::Done(new)))
}

/// Publish or unpublish `owner`'s post `id` (the first publish sets `published_at`).
pub fn set_published(
    conn: &Db,
    owner: i64,
    id: &str,
    published: bool,
    now: i64,
) -> Result<Option<Post>, StoreError> {
    let status = if published {
        PostStatus::Published
    } else {
        PostStatus::Draft
    };
    let changed = conn
        .prepare_cached(
            "UPDATE posts SET status = ?3, updated_at = CASE WHEN updated_at > ?4 THEN updated_at ELSE ?4 END, \
             published_at = CASE WHEN ?3 = 'published' THEN coalesce(published_at, ?4) \
             ELSE published_at END WHERE id = ?1 AND owner_id = ?2",
        )?
        .execute(params![id, owner, status.as_str(), now])?;
    if changed == 0 {
        return Ok(None);
    }
    get_post(conn, owner, id)
}

/// Delete `owner`'s post `id` and its revisions. `false`: there was none.
pub fn delete_post(conn: &Db, owner: i64, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM posts WHERE id = ?1 AND owner_id = ?2")?
        .execute(params![id, owner])?
        > 0)
}

/// The kept revisions of `owner`'s post `id`, newest first. `None`: no such post.
pub fn list_revisions(
    conn: &Db,
    owner: i64,
    id: &str,
) -> Result<Option<Vec<RevisionSummary>>, StoreError> {
    if get_post(conn, owner, id)?.is_none() {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT revision, title, words, added, removed, created_at FROM post_revisions \
         WHERE post_id = ?1 ORDER BY revision DESC",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok(RevisionSummary {
            revision: r.get(0)?,
            title: r.get(1)?,
            words: r.get(2)?,
            added: r.get(3)?,
            removed: r.get(4)?,
            created_at: r.get(5)?,
        })
    })?;
    Ok(Some(rows.collect::<Result<_, _>>()?))
}

/// One kept revision of `owner`'s post `id`.
pub fn get_revision(
    conn: &Db,
    owner: i64,
    id: &str,
    revision: i64,
) -> Result<Option<Revision>, StoreError> {
    conn.prepare_cached(
        "SELECT r.revision, r.title, r.body, r.created_at FROM post_revisions r \
             JOIN posts p ON p.id = r.post_id \
             WHERE r.post_id = ?1 AND p.owner_id = ?2 AND r.revision = ?3",
    )?
    .query_row(params![id, owner, revision], |r| {
        Ok(Revision {
            revision: r.get(0)?,
            title: r.get(1)?,
            body: r.get(2)?,
            created_at: r.get(3)?,
        })
    })
    .optional()
}

/// Titles of `owner`'s posts other than `except` (for the duplicate-title check).
pub fn other_titles(conn: &Db, owner: i64, except: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT title FROM posts WHERE owner_id = ?1 AND id != ?2")?;
    let rows = stmt.query_map(params![owner, except], |r| r.get(0))?;
    rows.collect::<Result<_, _>>()
}

/// Published posts, newest first (of one author, by username, or everyone's), skipping those of
/// disabled accounts: one page of them and how many there are in all.
pub fn published_posts(
    conn: &Db,
    author: Option<&str>,
    limit: u32,
    offset: u64,
) -> Result<(Vec<Post>, u64), StoreError> {
    const WHERE: &str = "p.status = 'published' AND u.disabled = 0 \
                         AND (CAST(?1 AS TEXT) IS NULL OR u.username = ?1)";
    let total: i64 = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM posts p JOIN users u ON u.id = p.owner_id WHERE {WHERE}"
        ))?
        .query_row(params![author], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM posts p JOIN users u ON u.id = p.owner_id WHERE {WHERE} \
         ORDER BY p.published_at DESC, p.rowid DESC LIMIT ?2 OFFSET ?3"
    ))?;
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![author, limit, offset], post_from_row)?;
    Ok((
        rows.collect::<Result<_, _>>()?,
        u64::try_from(total).unwrap_or(0),
    ))
}

/// The published post `slug` of the user named `author` (not of a disabled account).
pub fn published_post(conn: &Db, author: &str, slug: &str) -> Result<Option<Post>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM posts p JOIN users u ON u.id = p.owner_id \
             WHERE u.username = ?1 AND p.slug = ?2 AND p.status = 'published' AND u.disabled = 0"
    ))?
    .query_row(params![author, slug], post_from_row)
    .optional()
}

/// Whether a user named `author` exists and is not disabled.
pub fn author_exists(conn: &Db, author: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM users WHERE username = ?1 AND disabled = 0")?
        .exists([author])
}

/// Async forms of the functions above, on a blocking thread, with the store's clock.
impl Store {
    /// See [`create_post`].
    pub async fn create_post(
        &self,
        owner: i64,
        fields: PostFields,
        slug_is_default: bool,
        limits: PostLimits,
    ) -> Result<Saved, StoreError> {
        self.run(move |c| create_post(c, owner, &fields, slug_is_default, limits, unix_now()))
            .await
    }

    /// See [`get_post`].
    pub async fn post(&self, owner: i64, id: String) -> Result<Option<Post>, StoreError> {
        self.run(move |c| get_post(c, owner, &id)).await
    }

    /// See [`list_posts`].
    pub async fn list_posts(
        &self,
        owner: i64,
        status: Option<PostStatus>,
    ) -> Result<Vec<Post>, StoreError> {
        self.run(move |c| list_posts(c, owner, status)).await
    }

    /// See [`update_post`].
    pub async fn update_post(
        &self,
        owner: i64,
        id: String,
        revision: i64,
        fields: PostFields,
        max_revisions: u32,
    ) -> Result<Option<Saved>, StoreError> {
        self.run(move |c| update_post(c, owner, &id, revision, &fields, max_revisions, unix_now()))
            .await
    }

    /// See [`set_published`].
    pub async fn set_published(
        &self,
        owner: i64,
        id: String,
        published: bool,
    ) -> Result<Option<Post>, StoreError> {
        self.run(move |c| set_published(c, owner, &id, published, unix_now()))
            .await
    }

    /// See [`delete_post`].
    pub async fn delete_post(&self, owner: i64, id: String) -> Result<bool, StoreError> {
        self.run(move |c| delete_post(c, owner, &id)).await
    }

    /// See [`list_revisions`].
    pub async fn post_revisions(
        &self,
        owner: i64,
        id: String,
    ) -> Result<Option<Vec<RevisionSummary>>, StoreError> {
        self.run(move |c| list_revisions(c, owner, &id)).await
    }

    /// See [`get_revision`].
    pub async fn post_revision(
        &self,
        owner: i64,
        id: String,
        revision: i64,
    ) -> Result<Option<Revision>, StoreError> {
        self.run(move |c| get_revision(c, owner, &id, revision))
            .await
    }

    /// See [`other_titles`].
    pub async fn other_post_titles(
        &self,
        owner: i64,
        except: String,
    ) -> Result<Vec<String>, StoreError> {
        self.run(move |c| other_titles(c, owner, &except)).await
    }

    /// See [`published_posts`].
    pub async fn published_posts(
        &self,
        author: Option<String>,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<Post>, u64), StoreError> {
        self.run(move |c| published_posts(c, author.as_deref(), limit, offset))
            .await
    }

    /// See [`published_post`].
    pub async fn published_post(
        &self,
        author: String,
        slug: String,
    ) -> Result<Option<Post>, StoreError> {
        self.run(move |c| published_post(c, &author, &slug)).await
    }

    /// See [`author_exists`].
    pub async fn author_exists(&self, author: String) -> Result<bool, StoreError> {
        self.run(move |c| author_exists(c, &author)).await
    }
}

#[cfg(test)]
mod tests {
    use super::line_changes;

    #[test]
    fn line_changes_count_added_and_removed_lines_as_multisets() {
        assert_eq!(line_changes("a\nb\nc", "a\nc\nd\ne"), (2, 1));
        assert_eq!(line_changes("", "x"), (1, 0));
        assert_eq!(line_changes("x\nx", "x"), (0, 1));
    }
}
