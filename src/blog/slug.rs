//! Post slugs, tags and SEO keywords: turning author input into the canonical forms the store
//! and the public URLs use, and refusing what cannot be made canonical.
//!
//! A slug is what follows `/blog/{user}/` in a post's URL: lowercase ASCII words joined by
//! single hyphens. Tags are short labels shown on pages and used in tag URLs; keywords are free
//! text for `<meta name="keywords">`. Pure functions; imports nothing of the app.

/// Longest slug, in characters.
pub const MAX_SLUG_LEN: usize = 80;
/// Longest tag, in characters (after normalisation).
pub const MAX_TAG_LEN: usize = 32;
/// Longest keyword, in characters (after normalisation).
pub const MAX_KEYWORD_LEN: usize = 64;
/// How much of an offending value an error message quotes.
const QUOTE_LEN: usize = 40;

/// Why a slug, a tag list or a keyword list was refused. Messages state the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    /// The slug is empty or longer than [`MAX_SLUG_LEN`].
    #[error("slug must be 1 to {MAX_SLUG_LEN} characters long (got {0})")]
    SlugLength(usize),
    /// The slug has characters or hyphens out of place.
    #[error(
        "slug may contain only lowercase letters a-z and digits, in words joined by single \
         hyphens, with no hyphen at the start or end (like `my-first-post`)"
    )]
    SlugCharacters,
    /// A tag is empty or longer than [`MAX_TAG_LEN`].
    #[error("tag `{0}` must be 1 to {MAX_TAG_LEN} characters long")]
    TagLength(String),
    /// A tag has a character other than a-z, 0-9, space or hyphen.
    #[error("tag `{0}` may contain only letters a-z, digits, spaces and hyphens")]
    TagCharacters(String),
    /// More distinct tags than allowed.
    #[error("at most {max} tags are allowed (got {got})")]
    TooManyTags {
        /// The configured limit.
        max: usize,
        /// Distinct tags given.
        got: usize,
    },
    /// A keyword is longer than [`MAX_KEYWORD_LEN`].
    #[error("keyword `{0}` must be at most {MAX_KEYWORD_LEN} characters long")]
    KeywordLength(String),
    /// A keyword holds `<`, `>` or a control character.
    #[error("keyword `{0}` must not contain `<`, `>` or control characters")]
    KeywordCharacters(String),
    /// More distinct keywords than allowed.
    #[error("at most {max} keywords are allowed (got {got})")]
    TooManyKeywords {
        /// The configured limit.
        max: usize,
        /// Distinct keywords given.
        got: usize,
    },
}

impl SlugError {
    /// The request field the error is about: `"slug"`, `"tags"` or `"keywords"`.
    pub fn param(&self) -> &'static str {
        match self {
            Self::SlugLength(_) | Self::SlugCharacters => "slug",
            Self::TagLength(_) | Self::TagCharacters(_) | Self::TooManyTags { .. } => "tags",
            Self::KeywordLength(_) | Self::KeywordCharacters(_) | Self::TooManyKeywords { .. } => {
                "keywords"
            }
        }
    }
}

/// A slug for `title`: lowercase ASCII letters and digits, words joined by single hyphens,
/// common Latin accents folded (`é`→`e`, `ß`→`ss`, `æ`→`ae`, `ł`→`l`), apostrophes dropped
/// inside words (`don't` → `dont`), every other character a word break. Cut at a word boundary
/// to at most [`MAX_SLUG_LEN`] characters; `"post"` when nothing is left.
pub fn slugify(title: &str) -> String {
    let mut words: Vec<String> = vec![String::new()];
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            push_to_last(&mut words, c.encode_utf8(&mut [0; 4]));
        } else if let Some(folded) = fold(c) {
            push_to_last(&mut words, folded);
        } else if matches!(c, '\'' | '’' | '\u{300}'..='\u{36f}') {
            // Apostrophes and combining marks (`e` + U+0301) belong to the word they are in.
        } else if words.last().is_some_and(|w| !w.is_empty()) {
            words.push(String::new());
        }
    }
    let mut slug = String::new();
    for word in words.iter().filter(|w| !w.is_empty()) {
        let extra = usize::from(!slug.is_empty()) + word.len();
        if slug.len() + extra > MAX_SLUG_LEN {
            if slug.is_empty() {
                // One word longer than the limit: a hard cut is the only boundary there is.
                slug.push_str(&word[..MAX_SLUG_LEN]);
            }
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(word);
    }
    if slug.is_empty() {
        slug.push_str("post");
    }
    slug
}

fn push_to_last(words: &mut [String], piece: &str) {
    if let Some(word) = words.last_mut() {
        word.push_str(piece);
    }
}

/// ASCII for the common accented Latin letters (already lowercase).
fn fold(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĳ' => "ij",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

/// Accepts a slug of 1 to [`MAX_SLUG_LEN`] characters matching `^[a-z0-9]+(-[a-z0-9]+)*$`.
/// (So names like `feed.xml` can never collide with a post.)
pub fn validate_slug(slug: &str) -> Result<(), SlugError> {
    let len = slug.chars().count();
    if len == 0 || len > MAX_SLUG_LEN {
        return Err(SlugError::SlugLength(len));
    }
    let words_ok = slug.split('-').all(|word| {
        !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if words_ok {
        Ok(())
    } else {
        Err(SlugError::SlugCharacters)
    }
}

/// Canonical tags: trimmed, lowercased, inner whitespace collapsed to single spaces; each 1 to
/// [`MAX_TAG_LEN`] characters of `a-z 0-9`, space and hyphen; duplicates removed keeping the
/// first; at most `max_tags` of them.
pub fn normalize_tags(tags: &[String], max_tags: usize) -> Result<Vec<String>, SlugError> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for raw in tags {
        let tag = collapse_whitespace(raw).to_lowercase();
        let len = tag.chars().count();
        if len == 0 || len > MAX_TAG_LEN {
            return Err(SlugError::TagLength(quote(raw.trim())));
        }
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ' ' || c == '-';
        if !tag.chars().all(allowed) {
            return Err(SlugError::TagCharacters(quote(raw.trim())));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > max_tags {
        return Err(SlugError::TooManyTags {
            max: max_tags,
            got: out.len(),
        });
    }
    Ok(out)
}

/// Canonical keywords: trimmed, inner whitespace collapsed; empty ones dropped; duplicates
/// (compared case-insensitively) removed keeping the first spelling; each at most
/// [`MAX_KEYWORD_LEN`] characters with no `<`, `>` or control character; at most `max`.
pub fn normalize_keywords(keywords: &[String], max: usize) -> Result<Vec<String>, SlugError> {
    let mut out: Vec<String> = Vec::with_capacity(keywords.len());
    let mut seen: Vec<String> = Vec::with_capacity(keywords.len());
    for raw in keywords {
        // Control characters are judged before whitespace collapsing would hide `\n` or `\t`.
        if raw
            .chars()
            .any(|c| c == '<' || c == '>' || (c.is_control() && !c.is_whitespace()))
        {
            return Err(SlugError::KeywordCharacters(quote(raw.trim())));
        }
        let keyword = collapse_whitespace(raw);
        if keyword.is_empty() {
            continue;
        }
        if keyword.chars().count() > MAX_KEYWORD_LEN {
            return Err(SlugError::KeywordLength(quote(&keyword)));
        }
        let folded = keyword.to_lowercase();
        if !seen.contains(&folded) {
            seen.push(folded);
            out.push(keyword);
        }
    }
    if out.len() > max {
        return Err(SlugError::TooManyKeywords {
            max,
            got: out.len(),
        });
    }
    Ok(out)
}

/// Trims and joins the words of `s` with single spaces.
fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `s` clipped to [`QUOTE_LEN`] characters for an error message, with "…" when clipped, and
/// control characters shown as `?` so a message never carries a raw newline.
fn quote(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(QUOTE_LEN)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > QUOTE_LEN {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn slug_drops_punctuation_and_joins_words_with_hyphens() {
        assert_eq!(slugify("Hello, World!"), "hello-world");
        assert_eq!(
            slugify("  --Rust  &  WebAssembly: 2024 edition--  "),
            "rust-webassembly-2024-edition"
        );
        assert_eq!(slugify("Don't panic"), "dont-panic");
        assert_eq!(slugify("C++ / C# tips"), "c-c-tips");
    }

    #[test]
    fn slug_folds_common_latin_accents() {
        assert_eq!(
            slugify("Crème Brûlée à la carte"),
            "creme-brulee-a-la-carte"
        );
        assert_eq!(slugify("Straße"), "strasse");
        assert_eq!(slugify("Æsir og Øl i Łódź"), "aesir-og-ol-i-lodz");
        assert_eq!(slugify("ÉCOLE"), "ecole");
        // A decomposed é (e + combining acute) folds the same way.
        assert_eq!(slugify("Cafe\u{301} time"), "cafe-time");
    }

    #[test]
    fn slug_of_nothing_usable_is_post() {
        assert_eq!(slugify(""), "post");
        assert_eq!(slugify("!!! ???"), "post");
        assert_eq!(slugify("日本語のタイトル"), "post");
    }

    #[test]
    fn slug_is_cut_at_a_word_boundary_within_the_limit() {
        let title = "word ".repeat(30);
        let slug = slugify(&title);
        assert!(slug.len() <= MAX_SLUG_LEN, "{slug}");
        assert_eq!(slug.len(), 79, "16 words of 4 plus 15 hyphens: {slug}");
        assert!(!slug.ends_with('-'));
        assert_eq!(slugify(&"x".repeat(100)), "x".repeat(MAX_SLUG_LEN));
        assert_eq!(validate_slug(&slugify(&title)), Ok(()));
    }

    #[test]
    fn validate_slug_accepts_lowercase_words_joined_by_hyphens() {
        for ok in [
            "a",
            "my-first-post",
            "2024-recap",
            &"a".repeat(MAX_SLUG_LEN),
        ] {
            assert_eq!(validate_slug(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn validate_slug_refuses_bad_characters_and_hyphens_with_the_rule() {
        for bad in ["My-Post", "a--b", "-a", "a-", "feed.xml", "a b", "é", "a_b"] {
            let err = validate_slug(bad).unwrap_err();
            assert_eq!(err, SlugError::SlugCharacters, "{bad}");
            assert_eq!(err.param(), "slug");
            assert!(err.to_string().contains("lowercase letters a-z"), "{err}");
        }
        assert_eq!(validate_slug(""), Err(SlugError::SlugLength(0)));
        let long = "a".repeat(MAX_SLUG_LEN + 1);
        assert_eq!(
            validate_slug(&long).unwrap_err().to_string(),
            "slug must be 1 to 80 characters long (got 81)"
        );
    }

    #[test]
    fn tags_are_trimmed_lowercased_collapsed_and_deduplicated() {
        let tags = strings(&["  Rust ", "web   dev", "rust", "WEB DEV", "self-hosted"]);
        assert_eq!(
            normalize_tags(&tags, 10).unwrap(),
            strings(&["rust", "web dev", "self-hosted"])
        );
        assert_eq!(normalize_tags(&[], 0).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn tags_with_other_characters_are_refused_naming_the_tag() {
        let err = normalize_tags(&strings(&["ok", "c++"]), 10).unwrap_err();
        assert_eq!(err, SlugError::TagCharacters("c++".into()));
        assert_eq!(err.param(), "tags");
        assert!(err.to_string().contains("`c++`"), "{err}");
        let long = format!("{}!", "x".repeat(60));
        match normalize_tags(&[long], 10).unwrap_err() {
            SlugError::TagLength(quoted) => assert_eq!(quoted.chars().count(), QUOTE_LEN + 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            normalize_tags(&strings(&["  "]), 10),
            Err(SlugError::TagLength(_))
        ));
        assert!(matches!(
            normalize_tags(&strings(&["café"]), 10),
            Err(SlugError::TagCharacters(_))
        ));
        assert!(normalize_tags(&["a".repeat(MAX_TAG_LEN)], 10).is_ok());
    }

    #[test]
    fn too_many_distinct_tags_are_refused() {
        let tags = strings(&["a", "b", "A", "c"]);
        assert_eq!(normalize_tags(&tags, 3).unwrap().len(), 3);
        let err = normalize_tags(&tags, 2).unwrap_err();
        assert_eq!(err, SlugError::TooManyTags { max: 2, got: 3 });
        assert_eq!(err.to_string(), "at most 2 tags are allowed (got 3)");
    }

    #[test]
    fn keywords_drop_empties_and_case_insensitive_duplicates() {
        let keywords = strings(&[" Rust  web ", "", "rust WEB", "   ", "Axum"]);
        assert_eq!(
            normalize_keywords(&keywords, 5).unwrap(),
            strings(&["Rust web", "Axum"])
        );
    }

    #[test]
    fn keywords_refuse_markup_control_characters_length_and_count() {
        let err = normalize_keywords(&strings(&["<script>"]), 5).unwrap_err();
        assert_eq!(err, SlugError::KeywordCharacters("<script>".into()));
        assert_eq!(err.param(), "keywords");
        assert!(normalize_keywords(&strings(&["a\u{7}b"]), 5).is_err());
        assert!(
            normalize_keywords(&strings(&["line\nbreak"]), 5).is_ok(),
            "whitespace collapses"
        );
        let long = "k".repeat(MAX_KEYWORD_LEN + 1);
        assert!(matches!(
            normalize_keywords(&[long], 5),
            Err(SlugError::KeywordLength(_))
        ));
        assert!(normalize_keywords(&["k".repeat(MAX_KEYWORD_LEN)], 5).is_ok());
        let err = normalize_keywords(&strings(&["a", "b", "c"]), 2).unwrap_err();
        assert_eq!(err, SlugError::TooManyKeywords { max: 2, got: 3 });
    }
}
