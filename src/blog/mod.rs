//! The blog: posts and their revisions (stored by [`crate::store::posts`]), Markdown rendering
//! ([`render`]), slugs and tags ([`slug`]), the local SEO checks ([`seo`]), the public pages
//! and feeds ([`pages`]) and the AI writing tools built on the one generation service
//! ([`assist`]). [`Blog`] holds what is built once at start: the templates and the cache of
//! rendered bodies.
//!
//! Knows no HTTP: must not import axum or the API layer.

pub mod assist;
pub mod pages;
pub mod render;
pub mod seo;
pub mod slug;

use std::sync::Arc;

use crate::config::BlogSettings;

/// The blog's templates, prompts and caches (one per server).
pub struct Blog {
    /// The public pages' templates.
    pub pages: pages::Pages,
    /// The AI tools' prompt templates.
    pub prompts: assist::Prompts,
    /// Rendered post bodies by (post id, revision): a revision's HTML never changes.
    rendered: moka::sync::Cache<(String, i64), Arc<str>>,
    /// Whole public pages by their ETag (which hashes everything they show).
    pages_by_etag: moka::sync::Cache<String, bytes::Bytes>,
}

/// Why the blog could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BlogError {
    /// A page template does not parse.
    #[error(transparent)]
    Pages(#[from] pages::PageError),
    /// A prompt template does not parse.
    #[error(transparent)]
    Prompts(#[from] assist::AssistError),
}

impl Blog {
    /// Parse the templates of `settings`.
    pub fn new(settings: &BlogSettings) -> Result<Self, BlogError> {
        Ok(Self {
            pages: pages::Pages::new()?,
            prompts: assist::Prompts::new(&settings.prompts)?,
            rendered: moka::sync::Cache::builder()
                .max_capacity(64 * 1024 * 1024)
                .weigher(|k: &(String, i64), v: &Arc<str>| {
                    u32::try_from(k.0.len() + v.len()).unwrap_or(u32::MAX)
                })
                .build(),
            pages_by_etag: moka::sync::Cache::builder()
                .max_capacity(32 * 1024 * 1024)
                .weigher(|k: &String, v: &bytes::Bytes| {
                    u32::try_from(k.len() + v.len()).unwrap_or(u32::MAX)
                })
                .build(),
        })
    }

    /// The page whose ETag is `etag`: from the cache, or `render`ed and kept.
    pub fn page<E>(
        &self,
        etag: &str,
        render: impl FnOnce() -> Result<String, E>,
    ) -> Result<bytes::Bytes, E> {
        if let Some(page) = self.pages_by_etag.get(etag) {
            return Ok(page);
        }
        let page = bytes::Bytes::from(render()?);
        self.pages_by_etag.insert(etag.to_string(), page.clone());
        Ok(page)
    }

    /// The sanitised HTML of `body` at `(id, revision)`, rendered once.
    pub fn html(&self, id: &str, revision: i64, body: &str) -> Arc<str> {
        self.rendered.get_with((id.to_string(), revision), || {
            Arc::from(render::to_html(body))
        })
    }
}

/// Words of a Markdown body, as the SEO checks count them.
pub fn word_count(markdown: &str) -> usize {
    seo::check(&seo::SeoInput {
        title: "",
        meta_description: "",
        body: markdown,
        other_titles: &[],
    })
    .word_count
}
