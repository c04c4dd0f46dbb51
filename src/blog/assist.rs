//! The AI writing tools: what each action asks the model (the `[blog.prompts]` templates,
//! rendered with the post's text), the parameters it runs with (JSON mode for titles and
//! keywords), and the checks on what comes back — a meta description of at most 160
//! characters, a summary of at most N words, a valid slug, a list of titles or keywords —
//! enforced here, not left to the model. The generation itself runs through the one
//! generation service ([`crate::chat::ChatService`]), started by the transport.

use minijinja::Environment;
use serde::Serialize;

use super::slug;
use crate::config::AssistPrompts;
use crate::engine::template::ChatMessage;

/// The longest meta description, in characters.
pub const META_DESCRIPTION_MAX_CHARS: usize = 160;
/// The most titles or keywords one request may ask for.
pub const MAX_COUNT: usize = 10;

/// What the writer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Title suggestions (a list).
    Titles,
    /// An outline from a topic.
    Outline,
    /// More text from the cursor.
    Continue,
    /// A bullet list into prose.
    Expand,
    /// The selection rewritten in a style.
    Rewrite,
    /// A summary of at most N words.
    Summary,
    /// A meta description of at most 160 characters.
    MetaDescription,
    /// SEO keywords (a list).
    Keywords,
    /// A URL slug.
    Slug,
}

impl Action {
    /// Every action's wire name, for error messages.
    pub const NAMES: &'static str =
        "titles, outline, continue, expand, rewrite, summary, meta_description, keywords, slug";

    /// The action named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "titles" => Action::Titles,
            "outline" => Action::Outline,
            "continue" => Action::Continue,
            "expand" => Action::Expand,
            "rewrite" => Action::Rewrite,
            "summary" => Action::Summary,
            "meta_description" => Action::MetaDescription,
            "keywords" => Action::Keywords,
            "slug" => Action::Slug,
            _ => return None,
        })
    }

    /// Its wire name.
    pub fn name(self) -> &'static str {
        match self {
            Action::Titles => "titles",
            Action::Outline => "outline",
            Action::Continue => "continue",
            Action::Expand => "expand",
            Action::Rewrite => "rewrite",
            Action::Summary => "summary",
            Action::MetaDescription => "meta_description",
            Action::Keywords => "keywords",
            Action::Slug => "slug",
        }
    }

    /// Whether the model answers in JSON mode (a JSON object holding the list).
    pub fn json(self) -> bool {
        matches!(self, Action::Titles | Action::Keywords)
    }

    /// The most tokens the answer can need (the request's or `blog.assist_max_tokens` is
    /// capped by it): short answers stop early even if the model rambles.
    pub fn token_cap(self) -> usize {
        match self {
            Action::Slug => 24,
            Action::MetaDescription => 64,
            Action::Titles | Action::Keywords => 160,
            _ => usize::MAX,
        }
    }
}

/// Rewrite styles.
pub const STYLES: &[&str] = &[
    "shorter", "longer", "simpler", "formal", "casual", "grammar",
];

/// A validated assist request, with the post's text it works on.
#[derive(Debug, Clone, PartialEq)]
pub struct Assist {
    /// What to do.
    pub action: Action,
    /// The post's title.
    pub title: String,
    /// The Markdown it works on (the editor's unsaved text, or the stored body).
    pub body: String,
    /// The selected text (rewrite, expand).
    pub selection: Option<String>,
    /// A topic (titles, outline).
    pub topic: Option<String>,
    /// How many titles or keywords.
    pub count: usize,
    /// The rewrite style, one of [`STYLES`].
    pub style: Option<String>,
    /// The longest summary, in words.
    pub words: usize,
    /// Where to continue from, in characters of `body` (its end when `None`).
    pub cursor: Option<usize>,
}

/// Why an assist request cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AssistError {
    /// A field is missing or out of range.
    #[error("{message}")]
    Invalid {
        /// The field.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A prompt template does not parse or render.
    #[error("prompt template `{name}`: {error}")]
    Template {
        /// The action's template.
        name: &'static str,
        /// minijinja's complaint.
        error: String,
    },
}

impl Assist {
    /// Check the fields an action needs.
    pub fn validate(&self) -> Result<(), AssistError> {
        let invalid = |param, message: &str| {
            Err(AssistError::Invalid {
                param,
                message: message.to_string(),
            })
        };
        let has = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
        match self.action {
            Action::Rewrite | Action::Expand if !has(&self.selection) => invalid(
                "selection",
                "`selection` (the selected text) is required for rewrite and expand",
            ),
            Action::Rewrite if !self.style.as_deref().is_some_and(|s| STYLES.contains(&s)) => {
                invalid(
                    "options.style",
                    "`options.style` must be one of shorter, longer, simpler, formal, casual, \
                     grammar",
                )
            }
            Action::Outline if !has(&self.topic) && self.title.trim().is_empty() => invalid(
                "options.topic",
                "`options.topic` is required for an outline of an untitled post",
            ),
            Action::Titles if !has(&self.topic) && self.body.trim().is_empty() => invalid(
                "options.topic",
                "titles need a topic (`options.topic`) or a post body",
            ),
            Action::Summary | Action::MetaDescription | Action::Keywords
                if self.body.trim().is_empty() =>
            {
                invalid("body", "the post has no body to work from")
            }
            Action::Slug if self.title.trim().is_empty() && !has(&self.topic) => {
                invalid("title", "a slug needs the post's title")
            }
            _ if !(1..=MAX_COUNT).contains(&self.count) => {
                invalid("options.count", "`options.count` must be between 1 and 10")
            }
            _ if !(1..=1000).contains(&self.words) => invalid(
                "options.words",
                "`options.words` must be between 1 and 1000",
            ),
            _ if self.cursor.is_some_and(|c| c > self.body.chars().count()) => invalid(
                "options.cursor",
                "`options.cursor` is past the end of the body",
            ),
            _ => Ok(()),
        }
    }
}

/// The prompt templates, parsed once.
pub struct Prompts {
    env: Environment<'static>,
}

const NAMES: [&str; 10] = [
    "system",
    "titles",
    "outline",
    "continue",
    "expand",
    "rewrite",
    "summary",
    "meta_description",
    "keywords",
    "slug",
];

impl Prompts {
    /// Parse every template (a bad one is a configuration error).
    pub fn new(p: &AssistPrompts) -> Result<Self, AssistError> {
        let mut env = Environment::new();
        // Prompts are plain text: nothing is HTML-escaped.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        let sources = [
            &p.system,
            &p.titles,
            &p.outline,
            &p.continue_,
            &p.expand,
            &p.rewrite,
            &p.summary,
            &p.meta_description,
            &p.keywords,
            &p.slug,
        ];
        for (name, source) in NAMES.into_iter().zip(sources) {
            env.add_template_owned(name, source.clone())
                .map_err(|e| AssistError::Template {
                    name,
                    error: e.to_string(),
                })?;
        }
        Ok(Self { env })
    }

    /// The system and user messages for `a`, quoting at most `input_chars` of the post.
    pub fn messages(
        &self,
        a: &Assist,
        input_chars: usize,
    ) -> Result<Vec<ChatMessage>, AssistError> {
        let chars: Vec<char> = a.body.chars().collect();
        let cursor = a.cursor.unwrap_or(chars.len()).min(chars.len());
        let before: String = chars[cursor.saturating_sub(input_chars)..cursor]
            .iter()
            .collect();
        let after: String = chars[cursor..(cursor + input_chars / 4).min(chars.len())]
            .iter()
            .collect();
        let ctx = minijinja::context! {
            title => a.title.trim(),
            body => clip_chars(a.body.trim(), input_chars),
            topic => a.topic.as_deref().map(str::trim),
            selection => a.selection.as_deref().map(|s| clip_chars(s.trim(), input_chars)),
            style => a.style.as_deref(),
            count => a.count,
            words => a.words,
            before => before.trim_end(),
            after => after,
        };
        let render = |name: &'static str| {
            self.env
                .get_template(name)
                .and_then(|t| t.render(&ctx))
                .map_err(|e| AssistError::Template {
                    name,
                    error: e.to_string(),
                })
        };
        Ok(vec![
            ChatMessage::new("system", render("system")?),
            ChatMessage::new("user", render(a.action.name())?),
        ])
    }
}

fn clip_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// What an action answers with, after the checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssistResult {
    /// The text to apply (titles and keywords: one per line).
    pub text: String,
    /// Titles, for `titles`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub titles: Option<Vec<String>>,
    /// Keywords, for `keywords`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
}

/// Turn the model's whole answer into the action's result, enforcing its limits.
pub fn finish(a: &Assist, raw: &str, max_keywords: usize) -> AssistResult {
    let plain = |text: String| AssistResult {
        text,
        titles: None,
        keywords: None,
    };
    match a.action {
        Action::Titles => {
            let mut titles: Vec<String> = Vec::new();
            for t in json_strings(raw, "titles") {
                let t = unquote(drop_title_label(unquote(&collapse_ws(&t)))).to_string();
                if !t.is_empty() && !titles.iter().any(|x| x.eq_ignore_ascii_case(&t)) {
                    titles.push(t.chars().take(200).collect());
                }
            }
            titles.truncate(a.count);
            AssistResult {
                text: titles.join("\n"),
                titles: Some(titles),
                keywords: None,
            }
        }
        Action::Keywords => {
            let found: Vec<String> = json_strings(raw, "keywords")
                .iter()
                .flat_map(|k| k.split(','))
                .map(|k| collapse_ws(k).trim_matches(['"', '\'', '#']).to_lowercase())
                .filter(|k| !k.is_empty() && k.chars().count() <= 64)
                .filter(|k| !k.chars().any(|c| c.is_control() || c == '<' || c == '>'))
                .collect();
            let keywords = slug::normalize_keywords(&found, max_keywords.max(1))
                .unwrap_or_else(|_| found.into_iter().take(max_keywords).collect());
            let mut keywords = keywords;
            keywords.truncate(a.count);
            AssistResult {
                text: keywords.join(", "),
                titles: None,
                keywords: Some(keywords),
            }
        }
        Action::MetaDescription => plain(meta_description(raw)),
        Action::Summary => plain(limit_words(
            &collapse_ws(unquote(strip_preamble(raw))),
            a.words,
        )),
        Action::Slug => plain(slug_answer(a, raw)),
        Action::Rewrite => plain(rewrite_answer(a, raw)),
        Action::Outline | Action::Continue | Action::Expand => plain(raw.trim().to_string()),
    }
}

/// The slug in the answer's first line — unless it shares no word with the title or topic
/// (a small model may echo the instruction instead), then the title's own slug.
fn slug_answer(a: &Assist, raw: &str) -> String {
    let first = raw.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let answer = slug::slugify(strip_preamble(first));
    let source = format!("{} {}", a.title, a.topic.as_deref().unwrap_or(""));
    if source.trim().is_empty() {
        return answer;
    }
    let known = slug::slugify(&source);
    let known: Vec<&str> = known.split('-').collect();
    if answer == "post" || !answer.split('-').any(|w| w.len() > 2 && known.contains(&w)) {
        return slug::slugify(&source);
    }
    answer
}

/// The rewritten text: for a one-paragraph selection only the answer's first paragraph (what
/// follows is a model's commentary on its own rewrite), quotes and a "Rewritten:" label dropped.
fn rewrite_answer(a: &Assist, raw: &str) -> String {
    let selection = a.selection.as_deref().unwrap_or("").trim();
    // A label is the model's only when the selection does not itself open with one.
    let labelled = selection.chars().take(30).any(|c| c == ':');
    let text = if labelled {
        raw.trim()
    } else {
        strip_preamble(raw)
    };
    let one_paragraph = !selection.contains("\n\n");
    let text = match text.split_once("\n\n") {
        Some((first, _)) if one_paragraph => first,
        _ => text,
    };
    unquote(text).to_string()
}

/// A title without a label the model copied from the prompt ("Blog post: …", "Title: …"); a
/// colon in a real title ("Sourdough: a guide") stays.
fn drop_title_label(title: &str) -> &str {
    const LABELS: &[&str] = &["title", "blog post", "blog post title", "post", "headline"];
    match title.split_once(':') {
        Some((label, rest))
            if LABELS.contains(&label.trim().to_lowercase().as_str())
                && !rest.trim().is_empty() =>
        {
            rest.trim()
        }
        _ => title,
    }
}

/// `raw` without what a model puts before the answer: Markdown heading or quote markers and a
/// short label line ending in ':' ("## Summary:", "Meta description:").
fn strip_preamble(raw: &str) -> &str {
    let mut text = raw
        .trim_start()
        .trim_start_matches(['#', '>', '*'])
        .trim_start();
    if let Some((label, rest)) = text.split_once(':') {
        let words = label.split_whitespace().count();
        if !label.contains('\n') && label.len() < 30 && (1..=3).contains(&words) {
            text = rest.trim_start().trim_start_matches('*').trim_start();
        }
    }
    text.trim()
}

/// Strings of the list under `key` in a JSON answer — or, when the answer is not the object
/// asked for (a cut-off answer, another key), every string in it; failing that, its lines.
fn json_strings(raw: &str, key: &str) -> Vec<String> {
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(raw.trim()) {
        strings(v.get(key).unwrap_or(&v), &mut out);
        return out;
    }
    // Not JSON (cut off at the token limit): the quoted strings that did arrive.
    let quoted = regex_lite_strings(raw);
    if !quoted.is_empty() {
        return quoted.into_iter().filter(|s| s != key).collect();
    }
    raw.lines()
        .map(|l| l.trim().trim_start_matches(['-', '*', '•']).trim())
        .map(|l| l.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ')'))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Complete `"…"` strings in `raw` (JSON escapes decoded).
fn regex_lite_strings(raw: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else { break };
        let literal = &rest[start..start + 1 + end + 1];
        if let Ok(s) = serde_json::from_str::<String>(literal) {
            out.push(s);
        }
        rest = &after[end + 1..];
    }
    out
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn unquote(s: &str) -> &str {
    let t = s.trim();
    for (open, close) in [('"', '"'), ('“', '”'), ('\'', '\'')] {
        if t.len() >= 2 && t.starts_with(open) && t.ends_with(close) {
            return t[open.len_utf8()..t.len() - close.len_utf8()].trim();
        }
    }
    t
}

/// At most `max` words: whole sentences when they fill at least half of it, else the first
/// `max` words and "…".
pub fn limit_words(text: &str, max: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= max {
        return words.join(" ");
    }
    let cut = words[..max].join(" ");
    if let Some(end) = cut.rfind(['.', '!', '?']) {
        let sentences = &cut[..=end];
        if sentences.split_whitespace().count() * 2 >= max {
            return sentences.to_string();
        }
    }
    format!("{cut}…")
}

/// One line of at most [`META_DESCRIPTION_MAX_CHARS`] characters: a label the model put in
/// front ("Meta description:") and quotes dropped; over the limit, cut after the last whole
/// sentence that fits (if that keeps at least 50 characters), else at a word, with "…".
pub fn meta_description(raw: &str) -> String {
    let text = collapse_ws(strip_preamble(raw));
    let text = unquote(&text);
    let max = META_DESCRIPTION_MAX_CHARS;
    if text.chars().count() <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    if let Some(end) = head.rfind(['.', '!', '?']) {
        if head[..=end].chars().count() >= 50 {
            return head[..=end].to_string();
        }
    }
    let head: String = text.chars().take(max - 1).collect();
    let cut = match head.rfind(' ') {
        Some(i) if i > 0 => &head[..i],
        _ => head.as_str(),
    };
    format!("{}…", cut.trim_end_matches([',', ';', ':', ' ']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assist(action: Action) -> Assist {
        Assist {
            action,
            title: "Baking bread at home".into(),
            body: "Bread needs flour, water, salt and time.".into(),
            selection: None,
            topic: None,
            count: 3,
            style: None,
            words: 5,
            cursor: None,
        }
    }

    #[test]
    fn meta_description_is_never_longer_than_160_characters() {
        let long = "word ".repeat(100);
        let m = meta_description(&long);
        assert!(m.chars().count() <= 160, "{}", m.chars().count());
        assert!(m.ends_with('…'));
        let sentences = format!(
            "{} Second sentence here.",
            "A first sentence that is long enough to keep on its own, really.".repeat(2)
        );
        let m = meta_description(&format!(
            "Meta description: \"{sentences} {}\"",
            "x ".repeat(80)
        ));
        assert!(m.chars().count() <= 160);
        assert!(m.ends_with('.'), "{m}");
        assert_eq!(meta_description("Short and sweet."), "Short and sweet.");
    }

    #[test]
    fn summary_keeps_at_most_the_words_asked_for() {
        let r = finish(
            &assist(Action::Summary),
            "one two three four five six seven",
            12,
        );
        assert_eq!(r.text, "one two three four five…");
        let r = finish(&assist(Action::Summary), "One two three. Four five six", 12);
        assert_eq!(r.text, "One two three.");
    }

    #[test]
    fn titles_come_from_the_json_list_deduplicated_and_capped() {
        let raw = r#"{"titles": ["Bread 101", "bread 101", "Knead to know", "Crust", "Extra"]}"#;
        let r = finish(&assist(Action::Titles), raw, 12);
        assert_eq!(
            r.titles.as_deref(),
            Some(
                &[
                    "Bread 101".to_string(),
                    "Knead to know".into(),
                    "Crust".into()
                ][..]
            )
        );
        assert_eq!(r.text, "Bread 101\nKnead to know\nCrust");
        // Cut off mid-list: the complete strings still count.
        let r = finish(
            &assist(Action::Titles),
            r#"{"titles": ["One", "Two", "Thr"#,
            12,
        );
        assert_eq!(r.titles.unwrap(), vec!["One".to_string(), "Two".into()]);
    }

    #[test]
    fn keywords_are_normalised_and_slug_is_valid() {
        let r = finish(
            &assist(Action::Keywords),
            r#"{"keywords": ["Bread", "sourdough, baking", "bread"]}"#,
            12,
        );
        assert_eq!(
            r.keywords.unwrap(),
            vec!["bread".to_string(), "sourdough".into(), "baking".into()]
        );
        let r = finish(
            &assist(Action::Slug),
            "Slug: Baking Bread at Home!\nmore",
            12,
        );
        assert!(slug::validate_slug(&r.text).is_ok(), "{}", r.text);
    }

    #[test]
    fn answers_lose_the_labels_and_commentary_a_small_model_adds() {
        let mut a = assist(Action::Slug);
        a.title = "Baking sourdough bread at home".into();
        let echoed = "a-few-lowercase-words-joined-by-hyphens";
        assert_eq!(
            finish(&a, echoed, 12).text,
            "baking-sourdough-bread-at-home"
        );
        assert_eq!(
            finish(&a, "sourdough-at-home\n", 12).text,
            "sourdough-at-home"
        );
        let mut a = assist(Action::Rewrite);
        a.selection = Some("The fire keeps the house warm.".into());
        let raw = "\"The fire warms the house.\"\n\nThis version is simpler because…";
        assert_eq!(finish(&a, raw, 12).text, "The fire warms the house.");
        assert_eq!(finish(&a, "Rewritten: Warm house.", 12).text, "Warm house.");
        a.selection = Some("Note: the fire is warm.\n\nSecond part.".into());
        assert_eq!(
            finish(&a, "Note: hot.\n\nPart two.", 12).text,
            "Note: hot.\n\nPart two."
        );
        let raw = r#"{"title": "Blog post: Why Bread Needs Salt", "x": "Sourdough: a guide"}"#;
        let r = finish(&assist(Action::Titles), raw, 12);
        assert_eq!(
            r.titles.unwrap(),
            vec![
                "Why Bread Needs Salt".to_string(),
                "Sourdough: a guide".into()
            ]
        );
        let r = finish(&assist(Action::Summary), "## Why: Bread is good.", 12);
        assert_eq!(r.text, "Bread is good.");
        assert_eq!(meta_description("## Why: Bread is good."), "Bread is good.");
    }

    #[test]
    fn rewrite_needs_a_selection_and_a_known_style() {
        let mut a = assist(Action::Rewrite);
        assert!(a.validate().is_err());
        a.selection = Some("Some text".into());
        assert!(a.validate().is_err());
        a.style = Some("shorter".into());
        assert!(a.validate().is_ok());
    }

    #[test]
    fn default_prompts_render_the_post_for_every_action() {
        let p = Prompts::new(&AssistPrompts::default()).expect("defaults parse");
        let mut a = assist(Action::Continue);
        a.cursor = Some(5);
        let m = p.messages(&a, 100).expect("render");
        assert!(m[1].content.contains("Bread"), "{}", m[1].content);
        assert!(
            !m[1].content.contains("salt"),
            "only the text before the cursor"
        );
        for action in [
            "titles",
            "outline",
            "expand",
            "rewrite",
            "summary",
            "meta_description",
            "keywords",
            "slug",
        ] {
            let mut a = assist(Action::parse(action).unwrap());
            a.selection = Some("- flour\n- water".into());
            a.style = Some("formal".into());
            let m = p.messages(&a, 100).expect(action);
            assert!(!m[1].content.trim().is_empty(), "{action}");
        }
    }
}
