//! The blog's public pages: `/blog` (every author's published posts, `?page=N`),
//! `/blog/{username}`, `/blog/{username}/{slug}`, Atom feeds (`/blog/feed.xml`,
//! `/blog/{username}/feed.xml`), `/blog/style.css`, `/sitemap.xml` and `/robots.txt`. No
//! authentication: only published posts of enabled accounts are shown; drafts and unknown
//! names are 404 pages.
//!
//! Pages carry an `ETag` (a hash of what they show) and `Last-Modified`; a matching
//! `If-None-Match` (or, without one, an `If-Modified-Since` at or after the last change) is a
//! 304 before anything is rendered. They are served under a CSP without scripts.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::web::etag_matches;
use super::AppState;
use crate::blog::pages::{ListItem, Listing, PublicPost, Site, SitemapUrl, BLOG_CSS};
use crate::blog::render::HIGHLIGHT_CSS;
use crate::blog::seo;
use crate::store::posts::Post;

/// The public pages' policy: styles from this origin, images from anywhere over https, no
/// scripts (JSON-LD is data, never run), no forms, no framing.
const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' https: data:; \
                        base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Bumped when the templates change what a page shows for the same posts (part of every ETag).
const TEMPLATE_VERSION: &str = "1";

/// The most posts a feed or the sitemap lists.
const FEED_ENTRIES: u32 = 20;
const SITEMAP_ENTRIES: u32 = 50_000;

/// The public routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/blog", get(blog_index))
        .route("/blog/", get(blog_index))
        .route("/blog/style.css", get(stylesheet))
        .route("/blog/feed.xml", get(site_feed))
        .route("/blog/{author}", get(author_index))
        .route("/blog/{author}/feed.xml", get(author_feed))
        .route("/blog/{author}/{slug}", get(post_page))
        .route("/sitemap.xml", get(sitemap))
        .route("/robots.txt", get(robots))
}

/// Why a page is not served.
enum PageFailure {
    NotFound,
    Internal(String),
}

impl<E: std::fmt::Display> From<E> for PageFailure {
    fn from(e: E) -> Self {
        PageFailure::Internal(e.to_string())
    }
}

type PageResult = Result<Response, PageFailure>;

/// The site's base URL: `blog.public_url`, else this request's `Host` (when it is a plain host
/// name or address), else localhost.
fn site(state: &AppState, headers: &HeaderMap) -> Site {
    let b = &state.config.blog;
    let base_url = match &b.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    !h.is_empty()
                        && h.len() <= 255
                        && h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
                })
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    Site {
        base_url,
        name: b.site_name.clone(),
    }
}

fn http_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// A strong validator over `parts` (what the page shows) and the base URL it links to.
fn etag(site: &Site, parts: &str) -> String {
    let mut h = Sha256::new();
    h.update(TEMPLATE_VERSION);
    h.update([0]);
    h.update(&site.base_url);
    h.update([0]);
    h.update(&site.name);
    h.update([0]);
    h.update(parts);
    let d = h.finalize();
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether the client's copy (named by `etag`, last changed at `modified`) is current.
fn fresh(req: &HeaderMap, etag: &str, modified: i64) -> bool {
    if req.contains_key(header::IF_NONE_MATCH) {
        return etag_matches(req, etag);
    }
    req.get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
        .is_some_and(|since| since.timestamp() >= modified)
}

/// Answer with `render()` unless the client's copy is fresh.
fn cached(
    state: &AppState,
    req: &HeaderMap,
    etag: String,
    modified: i64,
    content_type: &'static str,
    render: impl FnOnce() -> Result<String, PageFailure>,
) -> PageResult {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let max_age = state.config.blog.page_max_age_secs;
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(modified)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    if fresh(req, &etag, modified) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let page = state.blog.page(&etag, render)?;
    Ok((StatusCode::OK, headers, page).into_response())
}

fn respond(state: &AppState, req: &HeaderMap, result: PageResult) -> Response {
    match result {
        Ok(r) => r,
        Err(PageFailure::NotFound) => {
            let page = state
                .blog
                .pages
                .not_found(&site(state, req))
                .unwrap_or_default();
            let mut r = (StatusCode::NOT_FOUND, page).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            );
            r
        }
        Err(PageFailure::Internal(detail)) => {
            tracing::error!(%detail, "blog page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

fn excerpt(post: &Post) -> String {
    if post.excerpt.is_empty() {
        crate::blog::render::excerpt(&post.body, 40)
    } else {
        post.excerpt.clone()
    }
}

fn list_item(post: &Post) -> ListItem {
    ListItem {
        author: post.author.clone(),
        slug: post.slug.clone(),
        title: post.title.clone(),
        excerpt: excerpt(post),
        tags: post.tags.clone(),
        published_at: post.published_at.unwrap_or(post.created_at),
        updated_at: post.updated_at,
        reading_minutes: seo::reading_minutes(usize::try_from(post.words).unwrap_or(0)),
    }
}

fn public_post(state: &AppState, post: &Post) -> PublicPost {
    PublicPost {
        author: post.author.clone(),
        slug: post.slug.clone(),
        title: post.title.clone(),
        html: state
            .blog
            .html(&post.id, post.revision, &post.body)
            .to_string(),
        excerpt: excerpt(post),
        meta_description: post.meta_description.clone(),
        keywords: post.keywords.clone(),
        tags: post.tags.clone(),
        cover_alt: post.cover_alt.clone(),
        published_at: post.published_at.unwrap_or(post.created_at),
        updated_at: post.updated_at,
        word_count: usize::try_from(post.words).unwrap_or(0),
        reading_minutes: seo::reading_minutes(usize::try_from(post.words).unwrap_or(0)),
    }
}

/// What a set of posts looks like, for an ETag.
fn fingerprint(posts: &[Post], extra: &str) -> (String, i64) {
    let mut parts = String::from(extra);
    let mut modified = 0;
    for p in posts {
        parts.push_str(&format!(
            "|{}:{}:{}:{}",
            p.id, p.revision, p.updated_at, p.author
        ));
        modified = modified.max(p.updated_at);
    }
    (parts, modified)
}

/// `?page=N`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    page: Option<String>,
}

async fn index(
    state: &AppState,
    req: &HeaderMap,
    author: Option<String>,
    page: Option<String>,
) -> PageResult {
    let page: u32 = match page.as_deref() {
        None | Some("") => 1,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or(PageFailure::NotFound)?,
    };
    if let Some(a) = &author {
        if !state.store.author_exists(a.clone()).await? {
            return Err(PageFailure::NotFound);
        }
    }
    let size = state.config.blog.page_size;
    let offset = u64::from(page - 1) * u64::from(size);
    let (posts, total) = state
        .store
        .published_posts(author.clone(), size, offset)
        .await?;
    let total_pages = u32::try_from(total.div_ceil(u64::from(size)).max(1)).unwrap_or(u32::MAX);
    if page > total_pages {
        return Err(PageFailure::NotFound);
    }
    let site = site(state, req);
    let (parts, modified) = fingerprint(
        &posts,
        &format!("index:{}:{page}:{total}", author.as_deref().unwrap_or("")),
    );
    let tag = etag(&site, &parts);
    cached(
        state,
        req,
        tag,
        modified,
        "text/html; charset=utf-8",
        || {
            let items: Vec<ListItem> = posts.iter().map(list_item).collect();
            let listing = match &author {
                // The stored spelling of the name, not the URL's.
                Some(a) => Listing::Author(posts.first().map_or(a.as_str(), |p| p.author.as_str())),
                None => Listing::All,
            };
            Ok(state
                .blog
                .pages
                .index(&site, listing, &items, page, total_pages)?)
        },
    )
}

/// `GET /blog`.
async fn blog_index(
    State(state): State<AppState>,
    req: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let result = index(&state, &req, None, q.page).await;
    respond(&state, &req, result)
}

/// `GET /blog/{author}`.
async fn author_index(
    State(state): State<AppState>,
    req: HeaderMap,
    Path(author): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let result = index(&state, &req, Some(author), q.page).await;
    respond(&state, &req, result)
}

/// `GET /blog/{author}/{slug}`.
async fn post_page(
    State(state): State<AppState>,
    req: HeaderMap,
    Path((author, slug)): Path<(String, String)>,
) -> Response {
    let result = async {
        let post = state
            .store
            .published_post(author, slug)
            .await?
            .ok_or(PageFailure::NotFound)?;
        let site = site(&state, &req);
        let (parts, modified) = fingerprint(std::slice::from_ref(&post), "post");
        let tag = etag(&site, &parts);
        cached(
            &state,
            &req,
            tag,
            modified,
            "text/html; charset=utf-8",
            || Ok(state.blog.pages.post(&site, &public_post(&state, &post))?),
        )
    }
    .await;
    respond(&state, &req, result)
}

async fn feed(state: &AppState, req: &HeaderMap, author: Option<String>) -> PageResult {
    if let Some(a) = &author {
        if !state.store.author_exists(a.clone()).await? {
            return Err(PageFailure::NotFound);
        }
    }
    let (posts, _) = state
        .store
        .published_posts(author.clone(), FEED_ENTRIES, 0)
        .await?;
    let site = site(state, req);
    let (parts, modified) =
        fingerprint(&posts, &format!("feed:{}", author.as_deref().unwrap_or("")));
    let tag = etag(&site, &parts);
    cached(
        state,
        req,
        tag,
        modified,
        "application/atom+xml; charset=utf-8",
        || {
            let entries: Vec<PublicPost> = posts.iter().map(|p| public_post(state, p)).collect();
            let listing = match &author {
                Some(a) => Listing::Author(posts.first().map_or(a.as_str(), |p| p.author.as_str())),
                None => Listing::All,
            };
            Ok(state.blog.pages.feed(&site, listing, &entries, modified)?)
        },
    )
}

/// `GET /blog/feed.xml`.
async fn site_feed(State(state): State<AppState>, req: HeaderMap) -> Response {
    let result = feed(&state, &req, None).await;
    respond(&state, &req, result)
}

/// `GET /blog/{author}/feed.xml`.
async fn author_feed(
    State(state): State<AppState>,
    req: HeaderMap,
    Path(author): Path<String>,
) -> Response {
    let result = feed(&state, &req, Some(author)).await;
    respond(&state, &req, result)
}

/// `GET /sitemap.xml`: the blog's list page and every published post.
async fn sitemap(State(state): State<AppState>, req: HeaderMap) -> Response {
    let result = async {
        let (posts, _) = state
            .store
            .published_posts(None, SITEMAP_ENTRIES, 0)
            .await?;
        let site = site(&state, &req);
        let (parts, modified) = fingerprint(&posts, "sitemap");
        let tag = etag(&site, &parts);
        cached(
            &state,
            &req,
            tag,
            modified,
            "application/xml; charset=utf-8",
            || {
                let mut urls = vec![SitemapUrl {
                    path: "/blog".into(),
                    lastmod: modified,
                }];
                urls.extend(posts.iter().map(|p| SitemapUrl {
                    path: format!("/blog/{}/{}", p.author, p.slug),
                    lastmod: p.updated_at,
                }));
                Ok(state.blog.pages.sitemap(&site, &urls)?)
            },
        )
    }
    .await;
    respond(&state, &req, result)
}

/// `GET /robots.txt`.
async fn robots(State(state): State<AppState>, req: HeaderMap) -> Response {
    let site = site(&state, &req);
    let tag = etag(&site, "robots");
    // Static for this binary: changed at most by an upgrade (a restart).
    let since = state.started_at as i64;
    let result = cached(
        &state,
        &req,
        tag,
        since,
        "text/plain; charset=utf-8",
        || Ok(state.blog.pages.robots(&site)?),
    );
    respond(&state, &req, result)
}

/// `GET /blog/style.css`: the article layout and the code highlighting's colours.
async fn stylesheet(State(state): State<AppState>, req: HeaderMap) -> Response {
    let site = site(&state, &req);
    let tag = etag(&site, &format!("css:{BLOG_CSS}{HIGHLIGHT_CSS}"));
    let since = state.started_at as i64;
    let result = cached(&state, &req, tag, since, "text/css; charset=utf-8", || {
        Ok(format!("{BLOG_CSS}\n{HIGHLIGHT_CSS}"))
    });
    respond(&state, &req, result)
}
