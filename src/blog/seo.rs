//! Local SEO and readability checks on a post, computed here from the text (never asked of the
//! model): word and sentence counts, Flesch reading ease, title and meta description lengths,
//! heading structure, images without alt text and duplicate titles.
//!
//! The report's JSON shape is an API contract (the HTTP API and the web UI read it). Counting
//! rules are written next to the code that applies them, precisely enough to check by hand;
//! code blocks are excluded from every count. Pure functions; imports nothing of the app.

use std::sync::LazyLock;

use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use regex::Regex;
use serde::Serialize;

use super::render;

/// Recommended title length, in characters.
const TITLE_LEN: (usize, usize) = (30, 60);
/// Recommended meta description length, in characters.
const META_DESCRIPTION_LEN: (usize, usize) = (50, 160);
/// Fewer words than this and the post is "thin".
const MIN_WORDS: usize = 300;
/// A longer body without any heading gets "no subheadings".
const SUBHEADINGS_AFTER_WORDS: usize = 300;
/// Flesch reading ease at or above which the text reads easily.
const MIN_READING_EASE: f64 = 50.0;
/// Reading speed for `reading_time_minutes`.
const WORDS_PER_MINUTE: usize = 200;

/// What the checks look at.
#[derive(Debug, Clone, Copy)]
pub struct SeoInput<'a> {
    /// The post's title.
    pub title: &'a str,
    /// The post's meta description (may be empty).
    pub meta_description: &'a str,
    /// The post's body, Markdown.
    pub body: &'a str,
    /// The titles of the same user's other posts.
    pub other_titles: &'a [String],
}

/// The result of [`check`]. Serialised as is by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct SeoReport {
    /// Words of the body's text, code blocks excluded.
    pub word_count: usize,
    /// `ceil(word_count / 200)`; 0 for an empty body.
    pub reading_time_minutes: u32,
    /// Sentences of the body's text (see [`sentences`] for the rule).
    pub sentence_count: usize,
    /// Syllables of all words (see [`syllables`] for the rule).
    pub syllable_count: usize,
    /// Flesch reading ease rounded to one decimal; `None` when there are no words.
    pub flesch_reading_ease: Option<f64>,
    /// Title length against the recommended range.
    pub title: LengthCheck,
    /// Meta description length against the recommended range.
    pub meta_description: LengthCheck,
    /// Every heading of the body, in document order.
    pub headings: Vec<Heading>,
    /// Problems with the heading structure, as sentences for the author.
    pub heading_issues: Vec<String>,
    /// The `src` of each image whose alt text is missing or empty.
    pub images_without_alt: Vec<String>,
    /// Another post of the same user has this title (case-insensitive, trimmed).
    pub duplicate_title: bool,
    /// One summary line per check, in a fixed order.
    pub checks: Vec<Check>,
}

/// A length in characters and the recommended inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LengthCheck {
    /// Characters (Unicode scalar values) after trimming.
    pub length: usize,
    /// Recommended minimum.
    pub min: usize,
    /// Recommended maximum.
    pub max: usize,
    /// `min <= length <= max`.
    pub ok: bool,
}

impl LengthCheck {
    fn of(text: &str, (min, max): (usize, usize)) -> Self {
        let length = text.trim().chars().count();
        Self {
            length,
            min,
            max,
            ok: (min..=max).contains(&length),
        }
    }
}

/// One heading of the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heading {
    /// 1 to 6.
    pub level: u8,
    /// Its text, whitespace collapsed.
    pub text: String,
}

/// One line of the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name: `title_length`, `meta_description_length`, `headings`, `readability`,
    /// `word_count`, `image_alt` or `duplicate_title`.
    pub id: &'static str,
    /// Whether the post passes.
    pub ok: bool,
    /// What was found, and what to aim for when it fails.
    pub message: String,
}

/// Runs every check on one post.
pub fn check(input: &SeoInput) -> SeoReport {
    let body = scan(input.body);
    let mut word_count = 0;
    let mut syllable_count = 0;
    let mut sentence_count = 0;
    for block in &body.blocks {
        for word in words(block) {
            word_count += 1;
            syllable_count += syllables(word);
        }
        sentence_count += sentences(block);
    }
    let flesch_reading_ease = (word_count > 0).then(|| {
        let words = word_count as f64;
        // Every block with a word ends a sentence, so there is at least one.
        let sentences = sentence_count.max(1) as f64;
        let score = 206.835 - 1.015 * (words / sentences) - 84.6 * (syllable_count as f64 / words);
        (score * 10.0).round() / 10.0
    });
    let heading_issues = heading_issues(&body.headings, word_count);
    let title = LengthCheck::of(input.title, TITLE_LEN);
    let meta_description = LengthCheck::of(input.meta_description, META_DESCRIPTION_LEN);
    let wanted = input.title.trim().to_lowercase();
    let duplicate_title = !wanted.is_empty()
        && input
            .other_titles
            .iter()
            .any(|other| other.trim().to_lowercase() == wanted);
    let mut report = SeoReport {
        word_count,
        reading_time_minutes: reading_minutes(word_count),
        sentence_count,
        syllable_count,
        flesch_reading_ease,
        title,
        meta_description,
        headings: body.headings,
        heading_issues,
        images_without_alt: body.images_without_alt,
        duplicate_title,
        checks: Vec::new(),
    };
    report.checks = summarise(&report);
    report
}

/// Minutes to read `words` words, rounded up (at [`WORDS_PER_MINUTE`]).
pub fn reading_minutes(words: usize) -> u32 {
    u32::try_from(words.div_ceil(WORDS_PER_MINUTE)).unwrap_or(u32::MAX)
}

fn heading_issues(headings: &[Heading], word_count: usize) -> Vec<String> {
    let mut issues = Vec::new();
    if headings.iter().filter(|h| h.level == 1).count() > 1 {
        issues.push("more than one H1".to_owned());
    }
    for pair in headings.windows(2) {
        let (previous, next) = (&pair[0], &pair[1]);
        if next.level > previous.level + 1 {
            issues.push(format!(
                "heading level skipped: H{} → H{} (“{}”)",
                previous.level, next.level, next.text
            ));
        }
    }
    if headings.is_empty() && word_count > SUBHEADINGS_AFTER_WORDS {
        issues.push("no subheadings".to_owned());
    }
    issues
}

fn summarise(r: &SeoReport) -> Vec<Check> {
    let length_message = |what: &str, c: &LengthCheck| {
        if c.ok {
            format!(
                "{what} is {} characters (recommended {}–{}).",
                c.length, c.min, c.max
            )
        } else if c.length == 0 {
            format!(
                "Add a {} of {}–{} characters.",
                what.to_lowercase(),
                c.min,
                c.max
            )
        } else {
            format!(
                "{what} is {} characters; aim for {}–{}.",
                c.length, c.min, c.max
            )
        }
    };
    let readability = match r.flesch_reading_ease {
        None => (false, "No text to score yet.".to_owned()),
        Some(score) if score >= MIN_READING_EASE => (
            true,
            format!("Flesch reading ease {score:.1}: easy enough to read (50 or more)."),
        ),
        Some(score) => (
            false,
            format!(
                "Flesch reading ease {score:.1}: use shorter sentences and simpler words \
                 (aim for 50 or more)."
            ),
        ),
    };
    let missing_alt = r.images_without_alt.len();
    vec![
        Check {
            id: "title_length",
            ok: r.title.ok,
            message: length_message("Title", &r.title),
        },
        Check {
            id: "meta_description_length",
            ok: r.meta_description.ok,
            message: length_message("Meta description", &r.meta_description),
        },
        Check {
            id: "headings",
            ok: r.heading_issues.is_empty(),
            message: if r.heading_issues.is_empty() {
                "Heading structure looks fine.".to_owned()
            } else {
                format!("Headings: {}.", r.heading_issues.join("; "))
            },
        },
        Check {
            id: "readability",
            ok: readability.0,
            message: readability.1,
        },
        Check {
            id: "word_count",
            ok: r.word_count >= MIN_WORDS,
            message: if r.word_count >= MIN_WORDS {
                format!("{} words ({MIN_WORDS} or more recommended).", r.word_count)
            } else {
                format!("{} words; aim for at least {MIN_WORDS}.", r.word_count)
            },
        },
        Check {
            id: "image_alt",
            ok: missing_alt == 0,
            message: match missing_alt {
                0 => "Every image has alt text.".to_owned(),
                1 => "1 image has no alt text.".to_owned(),
                n => format!("{n} images have no alt text."),
            },
        },
        Check {
            id: "duplicate_title",
            ok: !r.duplicate_title,
            message: if r.duplicate_title {
                "Another of your posts already has this title.".to_owned()
            } else {
                "No other post of yours has this title.".to_owned()
            },
        },
    ]
}

/// Words of a text: maximal runs of letters, digits, apostrophes and hyphens that hold at least
/// one letter or digit (`don't` and `well-known` are one word each; a lone `-` is none).
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || is_word_joiner(c)))
        .filter(|word| word.chars().any(char::is_alphanumeric))
}

fn is_word_joiner(c: char) -> bool {
    matches!(c, '\'' | '’' | '-' | '‐')
}

// Syllables of one word, a rule simple enough to follow by hand:
// 1. trim apostrophes and hyphens at both ends and lowercase;
// 2. count the groups of consecutive vowels, vowels being a e i o u y;
// 3. if the word ends in "e" but not in "le" and the count is above 1, subtract 1 (silent e);
// 4. at least 1 (so "2024" or "rhythm"-like groups of consonants still count once).
// So "the" 1, "make" 1, "table" 2, "sunny" 2, "beautiful" 3, "over-think" 3.
fn syllables(word: &str) -> usize {
    let word = word.trim_matches(is_word_joiner).to_lowercase();
    let mut count = 0;
    let mut in_vowels = false;
    for c in word.chars() {
        let vowel = matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y');
        if vowel && !in_vowels {
            count += 1;
        }
        in_vowels = vowel;
    }
    if word.ends_with('e') && !word.ends_with("le") && count > 1 {
        count -= 1;
    }
    count.max(1)
}

// Sentences of one block (paragraph, heading, list item, table cell…):
// - a sentence ends at a run of terminators `.` `!` `?` (consecutive ones count once, so "..."
//   or "?!" end one sentence) that follows at least one word since the previous end;
// - a run directly followed by a letter or digit ("3.14", "example.com") is inside a word and
//   ends nothing;
// - words after the last terminator make one more sentence: every block ends a sentence, which
//   is why headings and list items without a full stop count as sentences of their own.
fn sentences(block: &str) -> usize {
    let chars: Vec<char> = block.chars().collect();
    let is_terminator = |c: char| matches!(c, '.' | '!' | '?');
    let mut count = 0;
    let mut words_since_end = false;
    let mut i = 0;
    while i < chars.len() {
        if is_terminator(chars[i]) {
            while chars.get(i + 1).is_some_and(|&c| is_terminator(c)) {
                i += 1;
            }
            let inside_word = chars.get(i + 1).is_some_and(|c| c.is_alphanumeric());
            if words_since_end && !inside_word {
                count += 1;
                words_since_end = false;
            }
        } else if chars[i].is_alphanumeric() {
            words_since_end = true;
        }
        i += 1;
    }
    count + usize::from(words_since_end)
}

/// What one pass over the body collects.
#[derive(Default)]
struct Scan {
    /// The prose, one string per block, code blocks left out.
    blocks: Vec<String>,
    current: String,
    headings: Vec<Heading>,
    /// The heading being read: its level and text so far.
    heading: Option<(u8, String)>,
    /// Markdown images being read (an image's alt text is its inner text): `(src, alt)`.
    images: Vec<(String, String)>,
    images_without_alt: Vec<String>,
    /// Raw HTML blocks arrive a line at a time; a tag may span lines.
    html_block: String,
    in_code: bool,
}

impl Scan {
    fn text(&mut self, text: &str) {
        self.current.push_str(text);
        if let Some((_, heading)) = self.heading.as_mut() {
            heading.push_str(text);
        }
        for (_, alt) in &mut self.images {
            alt.push_str(text);
        }
    }

    fn end_block(&mut self) {
        if !self.current.trim().is_empty() {
            self.blocks.push(std::mem::take(&mut self.current));
        }
        self.current.clear();
    }

    fn raw_images(&mut self, html: &str) {
        self.images_without_alt.extend(raw_images_without_alt(html));
    }
}

fn scan(markdown: &str) -> Scan {
    let mut s = Scan::default();
    for event in Parser::new_ext(markdown, render::options()) {
        match event {
            Event::Start(Tag::CodeBlock(_)) => {
                s.end_block();
                s.in_code = true;
            }
            Event::End(TagEnd::CodeBlock) => s.in_code = false,
            Event::Text(_) if s.in_code => {}
            Event::Text(text) | Event::Code(text) => s.text(&text),
            Event::SoftBreak | Event::HardBreak => s.text(" "),
            Event::Start(Tag::Heading { level, .. }) => {
                s.end_block();
                s.heading = Some((level as u8, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = s.heading.take() {
                    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    s.headings.push(Heading { level, text });
                }
                s.end_block();
            }
            Event::Start(Tag::Image { dest_url, .. }) => {
                s.images.push((dest_url.into_string(), String::new()));
            }
            Event::End(TagEnd::Image) => {
                if let Some((src, alt)) = s.images.pop() {
                    if alt.trim().is_empty() {
                        s.images_without_alt.push(src);
                    }
                }
            }
            Event::InlineHtml(html) => s.raw_images(&html),
            Event::Html(html) => s.html_block.push_str(&html),
            Event::End(TagEnd::HtmlBlock) => {
                let html = std::mem::take(&mut s.html_block);
                s.raw_images(&html);
                s.text(&render::strip_tags(&html));
                s.end_block();
            }
            Event::Start(tag) if ends_block(&tag.to_end()) => s.end_block(),
            Event::End(end) if ends_block(&end) => s.end_block(),
            _ => {}
        }
    }
    s.end_block();
    s
}

/// Tags whose start and end separate blocks of prose (inline tags do not).
fn ends_block(end: &TagEnd) -> bool {
    matches!(
        end,
        TagEnd::Paragraph
            | TagEnd::BlockQuote(_)
            | TagEnd::List(_)
            | TagEnd::Item
            | TagEnd::FootnoteDefinition
            | TagEnd::Table
            | TagEnd::TableHead
            | TagEnd::TableRow
            | TagEnd::TableCell
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
    )
}

/// `<img …>` tags in raw HTML.
static IMG_TAG: LazyLock<Regex> =
    // safe because the pattern is a constant, checked by the tests.
    LazyLock::new(|| Regex::new(r"(?is)<img\b([^>]*)>").expect("valid <img> pattern"));
/// `src` and `alt` attributes, quoted or not, inside an `<img>` tag.
static IMG_ATTRIBUTE: LazyLock<Regex> = LazyLock::new(|| {
    // safe because the pattern is a constant, checked by the tests.
    Regex::new(r#"(?is)(?:^|[\s/])(src|alt)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))"#)
        .expect("valid attribute pattern")
});

/// The `src` of each `<img>` in `html` with no alt text (attribute missing, valueless or blank).
fn raw_images_without_alt(html: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for tag in IMG_TAG.captures_iter(html) {
        let (mut src, mut alt) = (None, None);
        for attribute in IMG_ATTRIBUTE.captures_iter(&tag[1]) {
            let value = [2, 3, 4]
                .iter()
                .find_map(|&i| attribute.get(i))
                .map_or("", |m| m.as_str());
            match attribute[1].to_ascii_lowercase().as_str() {
                "src" => src = src.or(Some(value)),
                _ => alt = alt.or(Some(value)),
            }
        }
        if alt.is_none_or(|alt| alt.trim().is_empty()) {
            missing.push(src.unwrap_or_default().to_owned());
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(body: &str) -> SeoReport {
        check(&SeoInput {
            title: "A title of a reasonable length",
            meta_description: "",
            body,
            other_titles: &[],
        })
    }

    #[test]
    fn counts_and_flesch_score_match_a_hand_computation() {
        // Words (16): The cat sat on the mat | It was a sunny day | Did the dog see it.
        // Sentences (3): ".", "!" and "?" each end one.
        // Syllables (17): every word 1, except "sunny" (u, y) 2; "see" is one group "ee".
        //   6 (first) + 6 (It1 was1 a1 sunny2 day1) + 5 (Did the dog see it) = 17.
        // Flesch = 206.835 − 1.015 × 16/3 − 84.6 × 17/16
        //        = 206.835 − 5.41333 − 89.8875 = 111.534 → 111.5.
        let r = report("The cat sat on the mat. It was a sunny day! Did the dog see it?");
        assert_eq!(
            (r.word_count, r.sentence_count, r.syllable_count),
            (16, 3, 17)
        );
        assert_eq!(r.flesch_reading_ease, Some(111.5));
        assert_eq!(r.reading_time_minutes, 1);
    }

    #[test]
    fn headings_and_list_items_are_sentences_of_their_own() {
        // Blocks: "Simple tables" | "Make a table. Don't over-think it!" | "Write code" |
        // "Ship it..." → sentences 1 + 2 + 1 + 1 = 5 ("..." is one run).
        // Words (12): Simple tables | Make a table Don't over-think it | Write code | Ship it.
        // Syllables: simple 2 (i, e; ends in "le" so no silent e), tables 2, make 1 (a, e − 1),
        //   a 1, table 2, don't 1, over-think 3 (o, e, i), it 1, write 1, code 1, ship 1,
        //   it 1 = 17.
        // Flesch = 206.835 − 1.015 × 12/5 − 84.6 × 17/12 = 206.835 − 2.436 − 119.85
        //        = 84.549 → 84.5.
        let r = report(
            "# Simple tables\n\nMake a table. Don't over-think it!\n\n- Write code\n- Ship it...\n",
        );
        assert_eq!(
            (r.word_count, r.sentence_count, r.syllable_count),
            (12, 5, 17)
        );
        assert_eq!(r.flesch_reading_ease, Some(84.5));
    }

    #[test]
    fn syllable_rule_follows_the_documented_steps() {
        let cases = [
            ("the", 1),
            ("make", 1),
            ("table", 2),
            ("sunny", 2),
            ("beautiful", 3),
            ("over-think", 3),
            ("2024", 1),
            ("queue", 1),
            ("Rhythm", 1),
            ("'quoted'", 2),
        ];
        for (word, expected) in cases {
            assert_eq!(syllables(word), expected, "{word}");
        }
    }

    #[test]
    fn sentence_rule_ignores_dots_inside_words_and_repeated_terminators() {
        assert_eq!(sentences("Pi is 3.14 exactly. See example.com now"), 2);
        assert_eq!(sentences("Really?! Yes..."), 2);
        assert_eq!(sentences("... !"), 0);
        assert_eq!(sentences("No terminator"), 1);
    }

    #[test]
    fn code_blocks_are_excluded_from_counts() {
        let with_code = report("One two three.\n\n```rust\nfn main() { println!(\"many words here\"); }\n```\n\n    indented code too\n");
        assert_eq!(with_code, report("One two three.\n"));
        assert_eq!(with_code.word_count, 3);
        // Inline code is prose.
        assert_eq!(report("Call `foo` now.").word_count, 3);
    }

    #[test]
    fn empty_body_has_no_score_and_fails_the_text_checks() {
        let r = report("");
        assert_eq!(
            (r.word_count, r.sentence_count, r.syllable_count),
            (0, 0, 0)
        );
        assert_eq!(r.reading_time_minutes, 0);
        assert_eq!(r.flesch_reading_ease, None);
        assert!(r.headings.is_empty() && r.heading_issues.is_empty());
        let ids: Vec<_> = r.checks.iter().map(|c| (c.id, c.ok)).collect();
        assert_eq!(
            ids,
            [
                ("title_length", true),
                ("meta_description_length", false),
                ("headings", true),
                ("readability", false),
                ("word_count", false),
                ("image_alt", true),
                ("duplicate_title", true),
            ]
        );
    }

    #[test]
    fn skipped_heading_levels_and_several_h1_are_reported() {
        let r = report("# One\n\n## Two\n\n#### Four *deep*\n\n## Back\n\n# Again\n\n### Three\n");
        assert_eq!(
            r.headings[2],
            Heading {
                level: 4,
                text: "Four deep".into()
            }
        );
        assert_eq!(r.headings.len(), 6);
        assert_eq!(
            r.heading_issues,
            [
                "more than one H1",
                "heading level skipped: H2 → H4 (“Four deep”)",
                "heading level skipped: H1 → H3 (“Three”)",
            ]
        );
        assert!(!r.checks[2].ok);
        assert!(report("# A\n\n## B\n\n### C\n\n## D\n")
            .heading_issues
            .is_empty());
    }

    #[test]
    fn a_long_body_without_headings_needs_subheadings() {
        let long = "word ".repeat(301);
        assert_eq!(report(&long).heading_issues, ["no subheadings"]);
        assert!(report(&"word ".repeat(300)).heading_issues.is_empty());
        let r = report(&long);
        assert_eq!(r.reading_time_minutes, 2);
        assert!(r.checks.iter().any(|c| c.id == "word_count" && c.ok));
    }

    #[test]
    fn images_without_alt_are_found_in_markdown_and_raw_html() {
        let body = "![](a.png) ![a cat](b.png) ![ ](c.png)\n\n\
                    <img src=\"d.png\"> <IMG SRC='e.png' ALT='ok'> <img alt src=f.png>\n\n\
                    <div>\n<img\n  src=\"g.png\"\n  alt=\"\">\n</div>\n\n\
                    <img data-alt=\"x\" src=\"h.png\">\n\n```\n<img src=\"code.png\">\n```\n";
        assert_eq!(
            report(body).images_without_alt,
            ["a.png", "c.png", "d.png", "f.png", "g.png", "h.png"]
        );
        assert!(report("![Alt](x.png)").images_without_alt.is_empty());
    }

    #[test]
    fn duplicate_titles_compare_trimmed_and_case_insensitively() {
        let others = vec!["  hello WORLD ".to_owned(), "Other".to_owned()];
        let input = |title| SeoInput {
            title,
            meta_description: "",
            body: "",
            other_titles: &others,
        };
        assert!(check(&input("Hello world")).duplicate_title);
        assert!(!check(&input("Hello worlds")).duplicate_title);
        assert!(!check(&input("  ")).duplicate_title);
        let dup = check(&input("Hello world"));
        assert!(dup
            .checks
            .iter()
            .any(|c| c.id == "duplicate_title" && !c.ok));
    }

    #[test]
    fn title_and_meta_description_lengths_are_checked_in_characters() {
        let r = check(&SeoInput {
            title: "  Ünïcödé title that is long enough  ",
            meta_description: &"é".repeat(161),
            body: "",
            other_titles: &[],
        });
        assert_eq!(
            r.title,
            LengthCheck {
                length: 33,
                min: 30,
                max: 60,
                ok: true
            }
        );
        assert_eq!(
            r.meta_description,
            LengthCheck {
                length: 161,
                min: 50,
                max: 160,
                ok: false
            }
        );
    }

    #[test]
    fn report_serialises_to_the_documented_json_shape() {
        let json = serde_json::to_value(report("# Hi\n\nSome text.")).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        for key in [
            "word_count",
            "reading_time_minutes",
            "sentence_count",
            "syllable_count",
            "flesch_reading_ease",
            "title",
            "meta_description",
            "headings",
            "heading_issues",
            "images_without_alt",
            "duplicate_title",
            "checks",
        ] {
            assert!(
                keys.contains(&key.to_owned()),
                "{key} missing from {keys:?}"
            );
        }
        assert_eq!(json["title"]["length"], 30);
        assert_eq!(
            json["headings"][0],
            serde_json::json!({"level": 1, "text": "Hi"})
        );
        assert_eq!(json["checks"][0]["id"], "title_length");
        assert!(json["flesch_reading_ease"].is_number());
        assert!(serde_json::to_value(report("")).unwrap()["flesch_reading_ease"].is_null());
    }
}
