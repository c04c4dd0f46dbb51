//! The blog's public pages and feeds: list pages, post pages, the 404 page, Atom feeds, the
//! sitemap and robots.txt, rendered from minijinja templates embedded in the binary.
//!
//! Pure: callers hand in already-published, already-sanitised data and get a `String` back.
//! Knows no HTTP and no store; must not import axum, the API layer or `store`.
//!
//! Safety rules the templates rely on:
//! - `.html` and `.xml` templates auto-escape every value (`& < > " '`); only the post body
//!   (sanitised by [`super::render`]) and the JSON-LD block are marked safe.
//! - JSON-LD comes from serde_json, then `<`, `>`, `&`, U+2028 and U+2029 are written as `\uXXXX`
//!   so no string can close the `<script>` data block.
//! - Characters XML 1.0 forbids are stripped from all text in Rust before rendering.
//! - No inline scripts or styles: the pages are served under a strict CSP.

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

/// The stylesheet the list and post pages link as `/blog/style.css`.
pub const BLOG_CSS: &str = include_str!("templates/blog.css");

/// Where the site lives: absolute base URL without trailing slash, e.g. "http://127.0.0.1:8080".
#[derive(Debug, Clone)]
pub struct Site {
    /// Absolute base URL without a trailing slash.
    pub base_url: String,
    /// The site's display name, e.g. "Hearth".
    pub name: String,
}

/// One published post as a page shows it.
#[derive(Debug, Clone)]
pub struct PublicPost {
    pub author: String,
    pub slug: String,
    pub title: String,
    /// Sanitised body HTML, inserted verbatim.
    pub html: String,
    pub excerpt: String,
    /// Shown as the description; the excerpt stands in when this is blank.
    pub meta_description: String,
    pub keywords: Vec<String>,
    pub tags: Vec<String>,
    /// Unused until posts carry a cover image URL.
    pub cover_alt: String,
    /// Unix seconds.
    pub published_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    pub word_count: usize,
    pub reading_minutes: u32,
}

/// Which list a page or feed is: every author's, or one author's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing<'a> {
    All,
    Author(&'a str),
}

/// One entry of a list page (no body).
#[derive(Debug, Clone)]
pub struct ListItem {
    pub author: String,
    pub slug: String,
    pub title: String,
    pub excerpt: String,
    pub tags: Vec<String>,
    /// Unix seconds.
    pub published_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    pub reading_minutes: u32,
}

/// One `<url>` of the sitemap.
#[derive(Debug, Clone)]
pub struct SitemapUrl {
    /// Site-relative, already percent-encoded path, e.g. "/blog/alice/hello" (see [`post_path`]).
    pub path: String,
    /// Unix seconds.
    pub lastmod: i64,
}

/// Why a page could not be rendered (always a bug: the templates are fixed at build time).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("template error: {0}")]
    Template(#[from] minijinja::Error),
    #[error("JSON-LD serialisation failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// The embedded templates, parsed once at start.
pub struct Pages {
    env: Environment<'static>,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("index.html", include_str!("templates/index.html")),
    ("post.html", include_str!("templates/post.html")),
    ("not_found.html", include_str!("templates/not_found.html")),
    ("feed.xml", include_str!("templates/feed.xml")),
    ("sitemap.xml", include_str!("templates/sitemap.xml")),
    ("robots.txt", include_str!("templates/robots.txt")),
];

/// What the layout's `<head>` needs; every page fills all of it (undefined values are errors).
#[derive(Serialize, Default)]
struct Head {
    title: String,
    description: String,
    canonical: Option<String>,
    og_type: &'static str,
    og_title: String,
    robots: Option<&'static str>,
    prev: Option<String>,
    next: Option<String>,
    feed_url: Option<String>,
    feed_title: String,
}

#[derive(Serialize)]
struct SiteView {
    name: String,
    base_url: String,
}

#[derive(Serialize)]
struct ItemView {
    url: String,
    title: String,
    excerpt: String,
    tags: Vec<String>,
    author: String,
    author_url: String,
    published_iso: String,
    published_human: String,
    reading_minutes: u32,
}

#[derive(Serialize)]
struct PostView {
    title: String,
    author: String,
    author_url: String,
    author_url_abs: String,
    keywords: String,
    tags: Vec<String>,
    published_iso: String,
    published_human: String,
    updated_iso: String,
    /// Only when the post changed on a later day than it was published.
    updated_human: Option<String>,
    reading_minutes: u32,
}

#[derive(Serialize)]
struct Pager {
    page: u32,
    total: u32,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Serialize)]
struct FeedView {
    id: String,
    self_url: String,
    title: String,
    updated: String,
    site_name: String,
}

#[derive(Serialize)]
struct EntryView {
    url: String,
    title: String,
    published: String,
    updated: String,
    author: String,
    author_url: String,
    tags: Vec<String>,
    summary: String,
    content: String,
}

#[derive(Serialize)]
struct UrlView {
    loc: String,
    lastmod: String,
}

impl Pages {
    /// Parses the embedded templates; an error here is a bug in a template.
    pub fn new() -> Result<Self, PageError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            // minijinja only escapes .html by default; the feeds and sitemap need it too.
            if name.ends_with(".html") || name.ends_with(".xml") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        // The default HTML escaper also writes `/` as `&#x2f;`; escaping only the five
        // markup characters keeps URLs readable in the source and greppable in tests.
        env.set_formatter(|out, state, value| match value.as_str() {
            Some(text) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => out
                .write_str(&escape_markup(text))
                .map_err(minijinja::Error::from),
            _ => minijinja::escape_formatter(out, state, value),
        });
        // A typo in a template fails the tests instead of rendering blank.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(Self { env })
    }

    /// A list page (`/blog` or `/blog/{author}`), page `page` of `total_pages` (1-based).
    pub fn index(
        &self,
        site: &Site,
        listing: Listing<'_>,
        items: &[ListItem],
        page: u32,
        total_pages: u32,
    ) -> Result<String, PageError> {
        let page = page.max(1);
        let total = total_pages.max(1);
        let path = listing_path(listing);
        let page_path = |n: u32| {
            if n <= 1 {
                path.clone()
            } else {
                format!("{path}?page={n}")
            }
        };
        let prev = (page > 1).then(|| page_path((page - 1).min(total)));
        let next = (page < total).then(|| page_path(page + 1));
        let abs = |p: &Option<String>| p.as_deref().map(|p| absolute(site, p));
        let mut title = listing_title(site, listing);
        if page > 1 {
            title = format!("{title} · page {page}");
        }
        let head = Head {
            title: clean(&title),
            description: clean(&listing_description(site, listing)),
            canonical: Some(absolute(site, &page_path(page))),
            og_type: "website",
            og_title: clean(&listing_title(site, listing)),
            prev: abs(&prev),
            next: abs(&next),
            ..feed_head(site, listing)
        };
        let items: Vec<ItemView> = items.iter().map(ItemView::from).collect();
        let heading = match listing {
            Listing::All => "Blog".to_owned(),
            Listing::Author(author) => clean(author),
        };
        let pager = Pager {
            page,
            total,
            prev,
            next,
        };
        Ok(self.env.get_template("index.html")?.render(context! {
            site => site_view(site), head, heading, items, pager,
            show_author => listing == Listing::All,
        })?)
    }

    /// A post page (`/blog/{author}/{slug}`) with its SEO metadata and JSON-LD.
    pub fn post(&self, site: &Site, post: &PublicPost) -> Result<String, PageError> {
        let canonical = absolute(site, &post_path(&post.author, &post.slug));
        let author_url = author_path(&post.author);
        let author_url_abs = absolute(site, &author_url);
        let description = if post.meta_description.trim().is_empty() {
            clean(&post.excerpt)
        } else {
            clean(&post.meta_description)
        };
        let keywords = clean(&post.keywords.join(", "));
        let published_iso = iso(post.published_at);
        let updated_iso = iso(post.updated_at);

        let mut ld = serde_json::json!({
            "@context": "https://schema.org",
            "@type": "BlogPosting",
            "headline": clean(&post.title),
            "description": description,
            "datePublished": published_iso,
            "dateModified": updated_iso,
            "author": { "@type": "Person", "name": clean(&post.author), "url": author_url_abs },
            "wordCount": post.word_count,
            "mainEntityOfPage": { "@type": "WebPage", "@id": canonical },
            "url": canonical,
        });
        if !keywords.is_empty() {
            ld["keywords"] = keywords.clone().into();
        }
        let json_ld = Value::from_safe_string(script_safe_json(&ld)?);

        let view = PostView {
            title: clean(&post.title),
            author: clean(&post.author),
            author_url,
            author_url_abs,
            keywords,
            tags: post.tags.iter().map(|t| clean(t)).collect(),
            published_human: human(post.published_at),
            updated_human: (day(post.updated_at) > day(post.published_at))
                .then(|| human(post.updated_at)),
            published_iso,
            updated_iso,
            reading_minutes: post.reading_minutes.max(1),
        };
        let listing = Listing::Author(&post.author);
        let head = Head {
            title: clean(&format!("{} · {} · {}", post.title, post.author, site.name)),
            description,
            canonical: Some(canonical),
            og_type: "article",
            og_title: view.title.clone(),
            ..feed_head(site, listing)
        };
        Ok(self.env.get_template("post.html")?.render(context! {
            site => site_view(site), head, post => view, json_ld,
            html => Value::from_safe_string(clean(&post.html)),
        })?)
    }

    /// The 404 page, in the same layout.
    pub fn not_found(&self, site: &Site) -> Result<String, PageError> {
        let head = Head {
            title: clean(&format!("Not found · {}", site.name)),
            robots: Some("noindex"),
            ..feed_head(site, Listing::All)
        };
        Ok(self
            .env
            .get_template("not_found.html")?
            .render(context! { site => site_view(site), head })?)
    }

    /// Atom 1.0 feed; entries carry the full sanitised HTML as `<content type="html">`.
    pub fn feed(
        &self,
        site: &Site,
        listing: Listing<'_>,
        posts: &[PublicPost],
        updated: i64,
    ) -> Result<String, PageError> {
        let feed = FeedView {
            id: absolute(site, &listing_path(listing)),
            self_url: absolute(site, &feed_path(listing)),
            title: clean(&listing_title(site, listing)),
            updated: iso(updated),
            site_name: clean(&site.name),
        };
        let entries: Vec<EntryView> = posts
            .iter()
            .map(|p| EntryView {
                url: absolute(site, &post_path(&p.author, &p.slug)),
                title: clean(&p.title),
                published: iso(p.published_at),
                updated: iso(p.updated_at.max(p.published_at)),
                author: clean(&p.author),
                author_url: absolute(site, &author_path(&p.author)),
                tags: p.tags.iter().map(|t| clean(t)).collect(),
                summary: clean(&p.excerpt),
                content: clean(&p.html),
            })
            .collect();
        Ok(self
            .env
            .get_template("feed.xml")?
            .render(context! { feed, entries })?)
    }

    /// A sitemaps.org 0.9 `urlset` of `base_url + path` for each URL.
    pub fn sitemap(&self, site: &Site, urls: &[SitemapUrl]) -> Result<String, PageError> {
        let urls: Vec<UrlView> = urls
            .iter()
            .map(|u| UrlView {
                loc: absolute(site, &u.path),
                lastmod: iso(u.lastmod),
            })
            .collect();
        Ok(self
            .env
            .get_template("sitemap.xml")?
            .render(context! { urls })?)
    }

    /// robots.txt: the blog is open, the APIs are not, and where the sitemap is.
    pub fn robots(&self, site: &Site) -> Result<String, PageError> {
        // Plain text, no escaping: drop every control character so the URL stays on its line.
        let base_url: String = site.base_url.chars().filter(|c| !c.is_control()).collect();
        Ok(self
            .env
            .get_template("robots.txt")?
            .render(context! { base_url })?)
    }
}

/// The path of one post: `/blog/{author}/{slug}`, both segments percent-encoded.
pub fn post_path(author: &str, slug: &str) -> String {
    format!("/blog/{}/{}", encode_segment(author), encode_segment(slug))
}

/// The path of one author's list page: `/blog/{author}`, percent-encoded.
pub fn author_path(author: &str) -> String {
    format!("/blog/{}", encode_segment(author))
}

/// The path of a listing's Atom feed: `/blog/feed.xml` or `/blog/{author}/feed.xml`.
pub fn feed_path(listing: Listing<'_>) -> String {
    format!("{}/feed.xml", listing_path(listing))
}

fn listing_path(listing: Listing<'_>) -> String {
    match listing {
        Listing::All => "/blog".to_owned(),
        Listing::Author(author) => author_path(author),
    }
}

fn listing_title(site: &Site, listing: Listing<'_>) -> String {
    match listing {
        Listing::All => format!("Blog · {}", site.name),
        Listing::Author(author) => format!("{author} · {}", site.name),
    }
}

fn listing_description(site: &Site, listing: Listing<'_>) -> String {
    match listing {
        Listing::All => format!("The latest posts on {}.", site.name),
        Listing::Author(author) => format!("Posts by {author} on {}.", site.name),
    }
}

/// The head fields every page shares: the listing's feed link and nothing page-specific.
fn feed_head(site: &Site, listing: Listing<'_>) -> Head {
    Head {
        og_type: "website",
        feed_url: Some(feed_path(listing)),
        feed_title: clean(&listing_title(site, listing)),
        ..Head::default()
    }
}

/// `base_url + path`, cleaned like every other text (the base comes from config).
fn absolute(site: &Site, path: &str) -> String {
    clean(&format!("{}{path}", site.base_url))
}

fn site_view(site: &Site) -> SiteView {
    SiteView {
        name: clean(&site.name),
        base_url: clean(&site.base_url),
    }
}

impl From<&ListItem> for ItemView {
    fn from(item: &ListItem) -> Self {
        Self {
            url: post_path(&item.author, &item.slug),
            title: clean(&item.title),
            excerpt: clean(&item.excerpt),
            tags: item.tags.iter().map(|t| clean(t)).collect(),
            author: clean(&item.author),
            author_url: author_path(&item.author),
            published_iso: iso(item.published_at),
            published_human: human(item.published_at),
            reading_minutes: item.reading_minutes.max(1),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a segment stays one segment.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Escapes the characters that are special in HTML and XML text and attributes.
fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    super::render::escape_into(&mut out, text);
    out
}

/// Drops the characters XML 1.0 forbids (C0 controls but tab, LF, CR; U+FFFE, U+FFFF).
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| {
            !matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
        })
        .collect()
}

/// serde_json output made safe inside `<script type="application/ld+json">`: the escapes are
/// only ever inside JSON strings (the syntax itself has no `<`, `>` or `&`), so it still parses.
fn script_safe_json(value: &serde_json::Value) -> Result<String, PageError> {
    let json = serde_json::to_string(value)?;
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn utc(secs: i64) -> DateTime<Utc> {
    // Out-of-range timestamps only come from a corrupt row; a page should still render.
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::UNIX_EPOCH)
}

/// RFC 3339 in UTC, e.g. "2026-12-02T10:00:00Z".
fn iso(secs: i64) -> String {
    utc(secs).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The date a reader sees, e.g. "2 December 2026" (UTC).
fn human(secs: i64) -> String {
    utc(secs).format("%-d %B %Y").to_string()
}

fn day(secs: i64) -> chrono::NaiveDate {
    utc(secs).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;
    use scraper::{Html, Selector};

    const HOSTILE: &str = "</script><script>alert(1)</script> & \"quotes\"";

    fn site() -> Site {
        Site {
            base_url: "http://127.0.0.1:8080".into(),
            name: "Hearth".into(),
        }
    }

    fn post(title: &str) -> PublicPost {
        PublicPost {
            author: "alice".into(),
            slug: "hello-world".into(),
            title: title.into(),
            html: "<p>Hi &amp; <code>x &lt; y</code></p>".into(),
            excerpt: "An excerpt.".into(),
            meta_description: "A meta description.".into(),
            keywords: vec!["rust".into(), "blogging".into()],
            tags: vec!["rust".into(), "web".into()],
            cover_alt: String::new(),
            published_at: 1_796_205_600, // 2026-12-02T10:00:00Z
            updated_at: 1_796_292_000,   // 2026-12-03T10:00:00Z
            word_count: 321,
            reading_minutes: 2,
        }
    }

    fn item(n: u32) -> ListItem {
        ListItem {
            author: "alice".into(),
            slug: format!("post-{n}"),
            title: format!("Post {n}"),
            excerpt: "Short.".into(),
            tags: vec!["rust".into()],
            published_at: 1_796_205_600,
            updated_at: 1_796_205_600,
            reading_minutes: 3,
        }
    }

    fn pages() -> Pages {
        Pages::new().expect("templates parse")
    }

    fn select<'a>(doc: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
        doc.select(&Selector::parse(css).expect("valid selector"))
            .collect()
    }

    fn meta(doc: &Html, attr: &str, name: &str) -> Vec<String> {
        select(doc, &format!("meta[{attr}=\"{name}\"]"))
            .iter()
            .filter_map(|e| e.value().attr("content").map(str::to_owned))
            .collect()
    }

    fn one(doc: &Html, css: &str) -> String {
        let found = select(doc, css);
        assert_eq!(found.len(), 1, "exactly one {css}");
        found[0].text().collect()
    }

    fn json_ld(doc: &Html) -> serde_json::Value {
        let text = one(doc, "script[type=\"application/ld+json\"]");
        serde_json::from_str(&text).expect("JSON-LD parses")
    }

    fn assert_csp_clean(html: &str) {
        let doc = Html::parse_document(html);
        assert!(select(&doc, "style, [style], link[rel=preload]").is_empty());
        for script in select(&doc, "script") {
            assert_eq!(script.value().attr("type"), Some("application/ld+json"));
        }
        assert!(html.starts_with("<!doctype html>\n<html lang=\"en\">"));
        assert_eq!(meta(&doc, "name", "color-scheme"), ["light dark"]);
        assert_eq!(select(&doc, "meta[charset=utf-8]").len(), 1);
        assert_eq!(
            select(&doc, "link[rel=stylesheet][href=\"/blog/style.css\"]").len(),
            1
        );
    }

    #[test]
    fn post_page_has_one_h1_the_title_description_canonical_and_social_tags() {
        let html = pages()
            .post(&site(), &post("Hello world"))
            .expect("renders");
        assert_csp_clean(&html);
        let doc = Html::parse_document(&html);
        assert_eq!(one(&doc, "h1"), "Hello world");
        assert_eq!(one(&doc, "title"), "Hello world · alice · Hearth");
        let url = "http://127.0.0.1:8080/blog/alice/hello-world";
        let canonical = select(&doc, "link[rel=canonical]");
        assert_eq!(canonical[0].value().attr("href"), Some(url));
        assert_eq!(meta(&doc, "name", "description"), ["A meta description."]);
        assert_eq!(meta(&doc, "name", "keywords"), ["rust, blogging"]);
        for (prop, want) in [
            ("og:type", "article"),
            ("og:title", "Hello world"),
            ("og:description", "A meta description."),
            ("og:url", url),
            ("og:site_name", "Hearth"),
            ("article:published_time", "2026-12-02T10:00:00Z"),
            ("article:modified_time", "2026-12-03T10:00:00Z"),
            ("article:author", "http://127.0.0.1:8080/blog/alice"),
        ] {
            assert_eq!(meta(&doc, "property", prop), [want], "{prop}");
        }
        assert_eq!(meta(&doc, "property", "article:tag"), ["rust", "web"]);
        assert_eq!(meta(&doc, "name", "twitter:card"), ["summary"]);
        assert_eq!(meta(&doc, "name", "twitter:title"), ["Hello world"]);
        assert_eq!(
            meta(&doc, "name", "twitter:description"),
            ["A meta description."]
        );
        let feed = select(&doc, "link[rel=alternate][type=\"application/atom+xml\"]");
        assert_eq!(feed[0].value().attr("href"), Some("/blog/alice/feed.xml"));
        // Body: site link, byline with the author and a machine date, tags, the sanitised HTML.
        assert_eq!(
            select(&doc, "header.site-header a[href=\"/blog\"]").len(),
            1
        );
        assert_eq!(select(&doc, ".byline a[href=\"/blog/alice\"]").len(), 1);
        let time = select(&doc, ".byline time");
        assert_eq!(
            time[0].value().attr("datetime"),
            Some("2026-12-02T10:00:00Z")
        );
        assert_eq!(time[0].text().collect::<String>(), "2 December 2026");
        assert!(one(&doc, ".byline").contains("2 min read"));
        assert_eq!(select(&doc, ".tags li").len(), 2);
        assert_eq!(one(&doc, "article code"), "x < y");
    }

    #[test]
    fn post_page_json_ld_is_a_blog_posting_with_the_post_fields() {
        let html = pages()
            .post(&site(), &post("Hello world"))
            .expect("renders");
        let ld = json_ld(&Html::parse_document(&html));
        let url = "http://127.0.0.1:8080/blog/alice/hello-world";
        assert_eq!(ld["@context"], "https://schema.org");
        assert_eq!(ld["@type"], "BlogPosting");
        assert_eq!(ld["headline"], "Hello world");
        assert_eq!(ld["description"], "A meta description.");
        assert_eq!(ld["datePublished"], "2026-12-02T10:00:00Z");
        assert_eq!(ld["dateModified"], "2026-12-03T10:00:00Z");
        assert_eq!(ld["author"]["@type"], "Person");
        assert_eq!(ld["author"]["name"], "alice");
        assert_eq!(ld["author"]["url"], "http://127.0.0.1:8080/blog/alice");
        assert_eq!(ld["keywords"], "rust, blogging");
        assert_eq!(ld["wordCount"], 321);
        assert_eq!(ld["mainEntityOfPage"]["@id"], url);
        assert_eq!(ld["url"], url);
    }

    #[test]
    fn hostile_title_is_escaped_everywhere_and_json_ld_round_trips_it() {
        let mut hostile = post(HOSTILE);
        hostile.meta_description = HOSTILE.into();
        hostile.tags = vec![HOSTILE.into()];
        let html = pages().post(&site(), &hostile).expect("renders");
        assert_csp_clean(&html);
        assert!(!html.contains("<script>alert"));
        let doc = Html::parse_document(&html);
        assert_eq!(select(&doc, "script").len(), 1, "no extra script element");
        assert_eq!(one(&doc, "h1"), HOSTILE);
        assert_eq!(one(&doc, "title"), format!("{HOSTILE} · alice · Hearth"));
        assert_eq!(meta(&doc, "property", "og:title"), [HOSTILE]);
        assert_eq!(meta(&doc, "name", "description"), [HOSTILE]);
        assert_eq!(meta(&doc, "property", "article:tag"), [HOSTILE]);
        let ld = json_ld(&doc);
        assert_eq!(ld["headline"], HOSTILE);
        assert_eq!(ld["description"], HOSTILE);
    }

    #[test]
    fn post_description_falls_back_to_the_excerpt_and_keywords_are_left_out_when_none() {
        let mut bare = post("Bare");
        bare.meta_description = "  ".into();
        bare.keywords.clear();
        bare.tags.clear();
        bare.updated_at = bare.published_at;
        let html = pages().post(&site(), &bare).expect("renders");
        let doc = Html::parse_document(&html);
        assert_eq!(meta(&doc, "name", "description"), ["An excerpt."]);
        assert!(meta(&doc, "name", "keywords").is_empty());
        assert!(select(&doc, ".tags").is_empty());
        assert_eq!(
            select(&doc, ".byline time").len(),
            1,
            "no 'updated' on the same day"
        );
        assert!(json_ld(&doc).get("keywords").is_none());
    }

    #[test]
    fn script_safe_json_escapes_markup_and_line_separators_but_still_parses() {
        let value = serde_json::json!({ "t": "</script>&\u{2028}\u{2029}" });
        let safe = script_safe_json(&value).expect("serialises");
        assert!(!safe.contains(['<', '>', '&', '\u{2028}', '\u{2029}']));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&safe).expect("parses"),
            value
        );
    }

    #[test]
    fn the_blog_index_lists_items_with_author_links_and_a_website_og_type() {
        let mut quoted = item(2);
        quoted.title = "It's <b>".into();
        let items = [item(1), quoted];
        let html = pages()
            .index(&site(), Listing::All, &items, 1, 1)
            .expect("renders");
        assert_csp_clean(&html);
        // Only the five markup characters are escaped, so URLs stay readable in the source.
        assert!(html.contains(">It&#39;s &lt;b&gt;</a>"));
        assert!(html.contains("<a href=\"/blog/alice/post-2\">"));
        let doc = Html::parse_document(&html);
        assert_eq!(one(&doc, "title"), "Blog · Hearth");
        assert_eq!(one(&doc, "h1"), "Blog");
        assert_eq!(meta(&doc, "property", "og:type"), ["website"]);
        assert_eq!(meta(&doc, "name", "description").len(), 1);
        let canonical = select(&doc, "link[rel=canonical]");
        assert_eq!(
            canonical[0].value().attr("href"),
            Some("http://127.0.0.1:8080/blog")
        );
        let feed = select(&doc, "link[rel=alternate][type=\"application/atom+xml\"]");
        assert_eq!(feed[0].value().attr("href"), Some("/blog/feed.xml"));
        let links = select(&doc, ".post-list h2 a");
        assert_eq!(links.len(), 2);
        assert_eq!(links[1].value().attr("href"), Some("/blog/alice/post-2"));
        assert_eq!(
            select(&doc, ".post-list .meta a[href=\"/blog/alice\"]").len(),
            2
        );
        assert_eq!(select(&doc, ".post-list time[datetime]").len(), 2);
        assert_eq!(select(&doc, ".excerpt").len(), 2);
        assert!(
            select(&doc, "nav.pagination").is_empty(),
            "one page needs no nav"
        );
    }

    #[test]
    fn an_author_page_is_titled_by_the_author_and_an_empty_one_says_no_posts_yet() {
        let html = pages()
            .index(&site(), Listing::Author("bob"), &[], 1, 0)
            .expect("renders");
        let doc = Html::parse_document(&html);
        assert_eq!(one(&doc, "title"), "bob · Hearth");
        assert!(one(&doc, "p.empty").starts_with("No posts yet"));
        let feed = select(&doc, "link[rel=alternate][type=\"application/atom+xml\"]");
        assert_eq!(feed[0].value().attr("href"), Some("/blog/bob/feed.xml"));
    }

    #[test]
    fn page_two_of_three_links_prev_and_next_and_the_ends_link_no_further() {
        let render = |page| {
            let html = pages().index(&site(), Listing::Author("alice"), &[item(1)], page, 3);
            Html::parse_document(&html.expect("renders"))
        };
        let href = |doc: &Html, css: &str| -> Vec<String> {
            select(doc, css)
                .iter()
                .filter_map(|e| e.value().attr("href").map(str::to_owned))
                .collect()
        };
        let base = "http://127.0.0.1:8080/blog/alice";
        let two = render(2);
        assert_eq!(
            href(&two, "link[rel=canonical]"),
            [format!("{base}?page=2")]
        );
        assert_eq!(href(&two, "link[rel=prev]"), [base.to_owned()]);
        assert_eq!(href(&two, "link[rel=next]"), [format!("{base}?page=3")]);
        assert_eq!(href(&two, "nav.pagination a[rel=prev]"), ["/blog/alice"]);
        assert_eq!(
            href(&two, "nav.pagination a[rel=next]"),
            ["/blog/alice?page=3"]
        );
        let first = render(1);
        assert_eq!(href(&first, "link[rel=canonical]"), [base.to_owned()]);
        assert!(href(&first, "[rel=prev]").is_empty());
        assert_eq!(href(&first, "link[rel=next]"), [format!("{base}?page=2")]);
        let last = render(3);
        assert!(href(&last, "[rel=next]").is_empty());
        assert_eq!(
            href(&last, "nav.pagination a[rel=prev]"),
            ["/blog/alice?page=2"]
        );
    }

    #[test]
    fn not_found_page_uses_the_layout_and_is_not_indexed() {
        let html = pages().not_found(&site()).expect("renders");
        assert_csp_clean(&html);
        let doc = Html::parse_document(&html);
        assert_eq!(one(&doc, "h1"), "No such post");
        assert_eq!(meta(&doc, "name", "robots"), ["noindex"]);
        assert!(select(&doc, "link[rel=canonical]").is_empty());
    }

    const ATOM: &str = "http://www.w3.org/2005/Atom";

    fn children<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Vec<roxmltree::Node<'a, 'i>> {
        node.children()
            .filter(|c| c.has_tag_name((ATOM, name)))
            .collect()
    }

    fn text(node: roxmltree::Node<'_, '_>, name: &str) -> String {
        let found = children(node, name);
        assert_eq!(found.len(), 1, "one <{name}>");
        found[0].text().unwrap_or_default().to_owned()
    }

    #[test]
    fn feed_is_atom_with_one_entry_per_post_and_the_listing_links() {
        let posts = [post("One"), post("Two")];
        let xml = pages()
            .feed(&site(), Listing::All, &posts, 1_796_292_000)
            .expect("renders");
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"));
        let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
        let feed = doc.root_element();
        assert!(feed.has_tag_name((ATOM, "feed")));
        assert_eq!(text(feed, "id"), "http://127.0.0.1:8080/blog");
        assert_eq!(text(feed, "title"), "Blog · Hearth");
        assert_eq!(text(feed, "updated"), "2026-12-03T10:00:00Z");
        let link = |node, rel| {
            children(node, "link")
                .into_iter()
                .find(|l| l.attribute("rel") == Some(rel))
                .and_then(|l| l.attribute("href"))
                .map(str::to_owned)
        };
        assert_eq!(
            link(feed, "self").as_deref(),
            Some("http://127.0.0.1:8080/blog/feed.xml")
        );
        assert_eq!(
            link(feed, "alternate").as_deref(),
            Some("http://127.0.0.1:8080/blog")
        );
        let entries = children(feed, "entry");
        assert_eq!(entries.len(), 2);
        let entry = entries[0];
        let url = "http://127.0.0.1:8080/blog/alice/hello-world";
        assert_eq!(text(entry, "id"), url);
        assert_eq!(text(entry, "title"), "One");
        assert_eq!(link(entry, "alternate").as_deref(), Some(url));
        assert_eq!(text(entry, "published"), "2026-12-02T10:00:00Z");
        assert_eq!(text(entry, "updated"), "2026-12-03T10:00:00Z");
        assert_eq!(text(children(entry, "author")[0], "name"), "alice");
        assert_eq!(text(entry, "summary"), "An excerpt.");
        let content = children(entry, "content")[0];
        assert_eq!(content.attribute("type"), Some("html"));
        assert_eq!(content.text(), Some(posts[0].html.as_str()));
    }

    #[test]
    fn feed_survives_ampersands_angle_brackets_and_control_characters() {
        let mut nasty = post("Tom & Jerry <3 \u{0}\u{1b}\u{b}end\u{FFFF}");
        nasty.excerpt = "a < b & c\u{7}".into();
        nasty.html = "<p>x\u{0} &amp; ]]> y</p>".into();
        let xml = pages()
            .feed(&site(), Listing::Author("alice"), &[nasty], 0)
            .expect("renders");
        let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
        let feed = doc.root_element();
        assert_eq!(text(feed, "id"), "http://127.0.0.1:8080/blog/alice");
        assert_eq!(text(feed, "updated"), "1970-01-01T00:00:00Z");
        let entry = children(feed, "entry")[0];
        assert_eq!(text(entry, "title"), "Tom & Jerry <3 end");
        assert_eq!(text(entry, "summary"), "a < b & c");
        assert_eq!(text(entry, "content"), "<p>x &amp; ]]> y</p>");
    }

    #[test]
    fn sitemap_is_a_urlset_with_locations_and_rfc3339_lastmod() {
        let urls = [
            SitemapUrl {
                path: "/blog".into(),
                lastmod: 1_796_205_600,
            },
            SitemapUrl {
                path: post_path("a&b", "x\u{1}"),
                lastmod: 0,
            },
        ];
        let xml = pages().sitemap(&site(), &urls).expect("renders");
        let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
        let ns = "http://www.sitemaps.org/schemas/sitemap/0.9";
        assert!(doc.root_element().has_tag_name((ns, "urlset")));
        let locs: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name((ns, "loc")))
            .collect();
        assert_eq!(locs.len(), 2);
        assert_eq!(locs[0].text(), Some("http://127.0.0.1:8080/blog"));
        assert_eq!(
            locs[1].text(),
            Some("http://127.0.0.1:8080/blog/a%26b/x%01")
        );
        let lastmod = doc.descendants().find(|n| n.has_tag_name((ns, "lastmod")));
        assert_eq!(lastmod.and_then(|n| n.text()), Some("2026-12-02T10:00:00Z"));
    }

    #[test]
    fn robots_allows_the_blog_hides_the_apis_and_names_the_sitemap() {
        let robots = pages().robots(&site()).expect("renders");
        for line in [
            "User-agent: *",
            "Allow: /blog",
            "Disallow: /api/",
            "Disallow: /v1/",
        ] {
            assert!(robots.lines().any(|l| l == line), "{line}");
        }
        assert!(robots.contains("Sitemap: http://127.0.0.1:8080/sitemap.xml"));
    }

    #[test]
    fn dates_read_like_2_december_2026_and_machines_get_rfc3339() {
        assert_eq!(human(1_796_205_600), "2 December 2026");
        assert_eq!(iso(1_796_205_600), "2026-12-02T10:00:00Z");
        assert_eq!(iso(i64::MAX), "1970-01-01T00:00:00Z");
        assert_eq!(encode_segment("a b/ü"), "a%20b%2F%C3%BC");
    }
}
