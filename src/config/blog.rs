//! `[blog]`: limits on posts, the public pages' base URL and page size, and the AI writing
//! tools' settings and prompt templates (minijinja; shipped defaults, each overridable in
//! `[blog.prompts]`).

use serde::{Deserialize, Serialize};

/// `[blog]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlogSettings {
    /// The longest post body, in bytes (a save over it is a 413).
    pub max_body_bytes: usize,
    /// Posts an account may have (drafts and published).
    pub max_posts_per_user: u32,
    /// Revisions kept per post (the oldest go first).
    pub max_revisions: u32,
    /// Tags per post.
    pub max_tags: usize,
    /// Keywords per post.
    pub max_keywords: usize,
    /// Posts per public list page.
    pub page_size: u32,
    /// The public pages' absolute base URL (canonical links, feeds, sitemap), e.g.
    /// `https://example.com`. Unset: taken from each request's `Host` header — set it when the
    /// server is reachable under more than one name or behind a proxy.
    pub public_url: Option<String>,
    /// The site's name on public pages.
    pub site_name: String,
    /// Seconds browsers and proxies may reuse a public page before revalidating (ETag /
    /// Last-Modified make the revalidation a 304).
    pub page_max_age_secs: u64,
    /// Tokens an AI tool generates unless the request asks for fewer (or more, up to
    /// `generation.max_tokens_limit`).
    pub assist_max_tokens: usize,
    /// Sampling temperature of the AI tools unless the request names one.
    pub assist_temperature: f32,
    /// The most characters of the post an AI tool's prompt quotes (the text nearest the
    /// cursor or selection is kept).
    pub assist_input_chars: usize,
    /// The prompt templates.
    pub prompts: AssistPrompts,
}

impl Default for BlogSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_posts_per_user: 1000,
            max_revisions: 50,
            max_tags: 10,
            max_keywords: 12,
            page_size: 10,
            public_url: None,
            site_name: "Hearth".into(),
            page_max_age_secs: 60,
            assist_max_tokens: 320,
            assist_temperature: 0.7,
            assist_input_chars: 6000,
            prompts: AssistPrompts::default(),
        }
    }
}

/// `[blog.prompts]`: one minijinja template per AI action, rendered into the user message
/// (`system` is the system message). Every template sees `title`, `body` (the post, clipped
/// to `assist_input_chars`), `topic`, `selection`, `style` (rewrite), `count` (titles,
/// keywords), `words` (summary), `before` and `after` (continue: the text around the cursor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssistPrompts {
    /// The system message of every action.
    pub system: String,
    /// `titles`: answered as a JSON object `{"titles": [...]}` (JSON mode).
    pub titles: String,
    /// `outline`.
    pub outline: String,
    /// `continue`.
    #[serde(rename = "continue")]
    pub continue_: String,
    /// `expand`: a bullet list into prose.
    pub expand: String,
    /// `rewrite`.
    pub rewrite: String,
    /// `summary`.
    pub summary: String,
    /// `meta_description`.
    pub meta_description: String,
    /// `keywords`: answered as a JSON object `{"keywords": [...]}` (JSON mode).
    pub keywords: String,
    /// `slug`.
    pub slug: String,
}

impl Default for AssistPrompts {
    fn default() -> Self {
        let s = |t: &str| t.trim_start().to_string();
        Self {
            system: s(
                "You are a helpful writing assistant for a blog. Answer with the \
                requested text only: no preamble, no explanations, no quotes around it.",
            ),
            titles: s(r###"
{% if topic %}Topic: {{ topic }}{% else %}Blog post:
{{ body }}{% endif %}

Suggest {{ count }} catchy, specific titles for this blog post.
Reply with JSON: {"titles": ["first title", "second title"]}"###),
            outline: s(r###"
Write an outline for a blog post about: {{ topic or title }}
Use Markdown: a "## " heading per section and two or three "- " bullet points under each."###),
            continue_: s(r###"
{% if title %}Title: {{ title }}
{% endif %}Here is the blog post so far:

{{ before }}

Continue writing from where it stops, in the same style. Write one or two paragraphs."###),
            expand: s(r###"
{% if title %}Blog post title: {{ title }}
{% endif %}Turn these notes into well-written paragraphs of prose:

{{ selection }}"###),
            rewrite: s(r###"
{% if style == "shorter" %}Rewrite this text to be shorter and more concise.
{%- elif style == "longer" %}Rewrite this text to be longer, with more detail.
{%- elif style == "simpler" %}Rewrite this text in simpler words that anyone can understand.
{%- elif style == "formal" %}Rewrite this text in a formal, professional tone.
{%- elif style == "casual" %}Rewrite this text in a casual, friendly tone.
{%- else %}Fix the grammar, spelling and punctuation of this text. Keep its meaning.
{%- endif %}

Text:
{{ selection }}"###),
            summary: s(r###"
{% if title %}Title: {{ title }}
{% endif %}Blog post:
{{ body }}

Summarise this blog post in at most {{ words }} words."###),
            meta_description: s(r###"
{% if title %}Title: {{ title }}
{% endif %}Blog post:
{{ body }}

Write a meta description for this blog post: one sentence, under 155 characters."###),
            keywords: s(r###"
{% if title %}Title: {{ title }}
{% endif %}Blog post:
{{ body }}

List {{ count }} SEO keywords for this blog post.
Reply with JSON: {"keywords": ["first keyword", "second keyword"]}"###),
            slug: s(r###"
Title: {{ title }}

Write a short URL slug for this blog post: a few lowercase words joined by hyphens."###),
        }
    }
}
