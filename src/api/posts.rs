//! The post API (`/api/posts/*`, `POST /api/render`): a user's blog posts, their revisions,
//! publishing, Markdown previews and the local SEO checks. Routes sit behind the `/v1`
//! authentication and need an account ([`Owner`]); anyone else's post reads as 404.
//!
//! Every post response carries its `revision`. A save (`PATCH`, a restore) names the revision
//! it edits; a stale one is a 409 `revision_conflict` with the stored post as `current`, never
//! an overwrite. The AI tools are in [`super::assist`].

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::conversations::Owner;
use super::error::{clip, ApiError};
use super::AppState;
use crate::blog::{seo, slug};
use crate::store::posts::{Post, PostFields, PostLimits, PostStatus, Saved};

/// The longest title, in characters.
const TITLE_MAX_CHARS: usize = 200;
/// The longest excerpt, meta description or cover alt text, in characters.
const SHORT_TEXT_MAX_CHARS: usize = 1000;

/// A post as the API shows it: the stored fields plus `url`, its public path (served only
/// while it is published).
pub(crate) fn post_json(post: &Post) -> Value {
    let mut v = serde_json::to_value(post).unwrap_or(Value::Null);
    v["url"] = json!(format!("/blog/{}/{}", post.author, post.slug));
    v
}

fn not_found() -> ApiError {
    ApiError::NotFound("No such post".into())
}

/// `owner`'s post `id`, or 404.
pub(crate) async fn owned_post(state: &AppState, owner: i64, id: String) -> Result<Post, ApiError> {
    state.store.post(owner, id).await?.ok_or_else(not_found)
}

/// The editable fields of `POST /api/posts` and `PATCH /api/posts/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostInput {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    excerpt: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    meta_description: Option<String>,
    #[serde(default)]
    keywords: Option<Vec<String>>,
    #[serde(default)]
    cover_alt: Option<String>,
    /// PATCH only: the revision the client edited.
    #[serde(default)]
    revision: Option<i64>,
}

fn short_text(param: &'static str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > SHORT_TEXT_MAX_CHARS => Err(ApiError::invalid(
            param,
            format!("`{param}` may be at most {SHORT_TEXT_MAX_CHARS} characters"),
        )),
        Some(v) if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => Err(
            ApiError::invalid(param, format!("`{param}` must not hold control characters")),
        ),
        v => Ok(v.map(|v| v.trim().to_string())),
    }
}

/// Check every field sent and turn it into what the store saves.
fn validate(state: &AppState, input: PostInput) -> Result<PostFields, ApiError> {
    let b = &state.config.blog;
    let title = match input.title {
        Some(t) => {
            let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
            if t.is_empty() || t.chars().count() > TITLE_MAX_CHARS {
                return Err(ApiError::invalid(
                    "title",
                    format!("`title` must be 1 to {TITLE_MAX_CHARS} characters"),
                ));
            }
            Some(t)
        }
        None => None,
    };
    let body = match input.body {
        Some(body) if body.len() > b.max_body_bytes => {
            return Err(ApiError::TooLarge(format!(
                "The post body is {} bytes; the limit is {} (blog.max_body_bytes)",
                body.len(),
                b.max_body_bytes
            )))
        }
        Some(body) => {
            let words = crate::blog::word_count(&body) as i64;
            Some((body, words))
        }
        None => None,
    };
    let slug_error = |e: slug::SlugError| ApiError::invalid(e.param(), e.to_string());
    if let Some(s) = &input.slug {
        slug::validate_slug(s).map_err(slug_error)?;
    }
    let tags = input
        .tags
        .map(|t| slug::normalize_tags(&t, b.max_tags))
        .transpose()
        .map_err(slug_error)?;
    let keywords = input
        .keywords
        .map(|k| slug::normalize_keywords(&k, b.max_keywords))
        .transpose()
        .map_err(slug_error)?;
    Ok(PostFields {
        title,
        body,
        slug: input.slug,
        excerpt: short_text("excerpt", input.excerpt)?,
        tags,
        meta_description: short_text("meta_description", input.meta_description)?,
        keywords,
        cover_alt: short_text("cover_alt", input.cover_alt)?,
    })
}

/// A save's outcome as the API answers it.
fn saved(outcome: Saved, created: bool) -> Result<Response, ApiError> {
    match outcome {
        Saved::Done(post) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(post_json(&post))).into_response())
        }
        Saved::Stale(current) => Err(ApiError::StaleRevision {
            revision: current.revision,
            current: Box::new(post_json(&current)),
        }),
        Saved::SlugTaken => Err(ApiError::Conflict {
            message: "Another of your posts has this slug; choose another".into(),
            code: "slug_taken",
        }),
        Saved::TooMany => Err(ApiError::Forbidden {
            message: "You have as many posts as this server allows (blog.max_posts_per_user); \
                      delete one first"
                .into(),
            code: "post_limit",
        }),
    }
}

/// `POST /api/posts` → 201 with the post (revision 1).
pub async fn create_post(
    State(state): State<AppState>,
    owner: Owner,
    body: Result<Json<PostInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(input) = body?;
    if input.revision.is_some() {
        return Err(ApiError::invalid(
            "revision",
            "a new post has no revision to name",
        ));
    }
    let mut fields = validate(&state, input)?;
    if fields.title.is_none() {
        return Err(ApiError::invalid("title", "`title` is required"));
    }
    let slug_is_default = fields.slug.is_none();
    if slug_is_default {
        fields.slug = fields.title.as_deref().map(slug::slugify);
    }
    let b = &state.config.blog;
    let limits = PostLimits {
        max_posts: b.max_posts_per_user,
        max_revisions: b.max_revisions,
    };
    let outcome = state
        .store
        .create_post(owner.user_id, fields, slug_is_default, limits)
        .await?;
    saved(outcome, true)
}

/// `GET /api/posts` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
}

/// `GET /api/posts?status=draft|published` → the caller's posts without their bodies.
pub async fn list_posts(
    State(state): State<AppState>,
    owner: Owner,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("status", clip(&e.body_text(), 256)))?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some("draft") => Some(PostStatus::Draft),
        Some("published") => Some(PostStatus::Published),
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "`status` must be `draft` or `published`",
            ))
        }
    };
    let posts = state.store.list_posts(owner.user_id, status).await?;
    let data: Vec<Value> = posts
        .iter()
        .map(|p| {
            let mut v = post_json(p);
            if let Some(o) = v.as_object_mut() {
                o.remove("body");
            }
            v
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /api/posts/{id}`.
pub async fn get_post(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(post_json(
        &owned_post(&state, owner.user_id, id).await?,
    )))
}

/// `PATCH /api/posts/{id}` with the `revision` edited → the post at the next revision, or a
/// 409 with the stored one.
pub async fn update_post(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
    body: Result<Json<PostInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(input) = body?;
    let Some(revision) = input.revision else {
        return Err(ApiError::invalid(
            "revision",
            "`revision` (the revision you edited) is required",
        ));
    };
    let fields = validate(&state, input)?;
    let outcome = state
        .store
        .update_post(
            owner.user_id,
            id,
            revision,
            fields,
            state.config.blog.max_revisions,
        )
        .await?
        .ok_or_else(not_found)?;
    saved(outcome, false)
}

/// `DELETE /api/posts/{id}` → 204.
pub async fn delete_post(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_post(owner.user_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

async fn set_published(
    state: AppState,
    owner: Owner,
    id: String,
    published: bool,
) -> Result<Json<Value>, ApiError> {
    let post = state
        .store
        .set_published(owner.user_id, id, published)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(post_json(&post)))
}

/// `POST /api/posts/{id}/publish`.
pub async fn publish_post(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_published(state, owner, id, true).await
}

/// `POST /api/posts/{id}/unpublish`.
pub async fn unpublish_post(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_published(state, owner, id, false).await
}

/// `GET /api/posts/{id}/revisions` → the kept revisions, newest first.
pub async fn list_revisions(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let revisions = state
        .store
        .post_revisions(owner.user_id, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!({"object": "list", "data": revisions})))
}

/// `GET /api/posts/{id}/revisions/{revision}` → that revision's title and body.
pub async fn get_revision(
    State(state): State<AppState>,
    owner: Owner,
    Path((id, revision)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let r = state
        .store
        .post_revision(owner.user_id, id, revision)
        .await?
        .ok_or_else(|| ApiError::NotFound("No such revision".into()))?;
    Ok(Json(json!(r)))
}

/// `POST /api/posts/{id}/revisions/{revision}/restore` body: the revision being replaced.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreInput {
    revision: i64,
}

/// `POST /api/posts/{id}/revisions/{revision}/restore` → the post at a new revision holding
/// the old title and body (409 when `revision` in the body is stale).
pub async fn restore_revision(
    State(state): State<AppState>,
    owner: Owner,
    Path((id, old)): Path<(String, i64)>,
    body: Result<Json<RestoreInput>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(input) = body?;
    let r = state
        .store
        .post_revision(owner.user_id, id.clone(), old)
        .await?
        .ok_or_else(|| ApiError::NotFound("No such revision".into()))?;
    let words = crate::blog::word_count(&r.body) as i64;
    let fields = PostFields {
        title: Some(r.title),
        body: Some((r.body, words)),
        ..PostFields::default()
    };
    let outcome = state
        .store
        .update_post(
            owner.user_id,
            id,
            input.revision,
            fields,
            state.config.blog.max_revisions,
        )
        .await?
        .ok_or_else(not_found)?;
    saved(outcome, false)
}

/// `POST /api/render` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderInput {
    markdown: String,
}

/// `POST /api/render` → `{"html"}`: a draft's preview, rendered and sanitised as the public
/// page will show it.
pub async fn render_markdown(
    State(state): State<AppState>,
    _owner: Owner,
    body: Result<Json<RenderInput>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(input) = body?;
    let max = state.config.blog.max_body_bytes;
    if input.markdown.len() > max {
        return Err(ApiError::TooLarge(format!(
            "The Markdown is {} bytes; the limit is {max} (blog.max_body_bytes)",
            input.markdown.len()
        )));
    }
    // Rendering a long post takes milliseconds: off the async threads.
    let html = tokio::task::spawn_blocking(move || crate::blog::render::to_html(&input.markdown))
        .await
        .map_err(|e| ApiError::Internal(format!("render: {e}")))?;
    Ok(Json(json!({"html": html})))
}

/// `GET /api/posts/{id}/seo` → the local checks on the stored post.
pub async fn seo_report(
    State(state): State<AppState>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Json<seo::SeoReport>, ApiError> {
    let post = owned_post(&state, owner.user_id, id.clone()).await?;
    let others = state.store.other_post_titles(owner.user_id, id).await?;
    let report = tokio::task::spawn_blocking(move || {
        seo::check(&seo::SeoInput {
            title: &post.title,
            meta_description: &post.meta_description,
            body: &post.body,
            other_titles: &others,
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("seo: {e}")))?;
    Ok(Json(report))
}
