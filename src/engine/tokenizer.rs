//! Text ↔ token ids, built the way llama.cpp builds its vocabulary.
//!
//! This module owns everything between a prompt string and the ids the model sees, and back:
//!
//! * **GGUF models** ([`Tokenizer::from_gguf`]): the vocabulary is rebuilt from the
//!   `tokenizer.ggml.*` metadata exactly as llama.cpp's `llama-vocab.cpp` does it.
//!   * `tokenizer.ggml.model == "gpt2"`: byte-level BPE. The text is split by llama.cpp's
//!     pre-tokenizer regexes (chosen by `tokenizer.ggml.pre`), each piece is mapped through the
//!     GPT-2 byte↔unicode table and merged by `tokenizer.ggml.merges` rank.
//!   * `tokenizer.ggml.model == "llama"`: SentencePiece-style BPE. Spaces become `▁`, a space is
//!     prefixed when `tokenizer.ggml.add_space_prefix` (default true), pairs merge greedily by the
//!     score of the merged piece (`tokenizer.ggml.scores`), unknown characters fall back to the
//!     `<0xNN>` byte tokens.
//!
//!   The BPE machinery itself is the `tokenizers` crate; this module only configures it (regex
//!   pre-tokenizers, merges derived from scores for SPM) and does the llama.cpp-specific parts
//!   around it: splitting the text around special tokens, the SPM space prefix, BOS/EOS, the
//!   end-of-generation set and decoding.
//! * **Hugging Face checkpoints** ([`Tokenizer::from_hf_dir`]): `tokenizer.json` through the
//!   `tokenizers` crate, with `tokenizer_config.json` / `generation_config.json` for BOS/EOS.
//!
//! Decoding works on bytes: every token id maps to the raw bytes it stands for, so
//! [`IncrementalDecoder`] can stream text token by token, emitting each character as soon as its
//! last byte arrives, without re-decoding the sequence.
//!
//! Special tokens follow llama.cpp: control (and unknown) tokens are recognised in the input only
//! with `parse_special`, user-defined tokens are always recognised (like Hugging Face's
//! non-special added tokens), and no stripping or normalisation is applied around them.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Value};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// Why a tokenizer could not be built, or an encode/decode call failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A required metadata key is absent from the GGUF file.
    #[error("GGUF metadata key `{0}` is missing")]
    MissingKey(String),
    /// A metadata key (GGUF or JSON) holds a value of the wrong type.
    #[error("metadata key `{key}` has the wrong type: expected {expected}")]
    BadType {
        /// The offending key.
        key: String,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// `tokenizer.ggml.model` names a tokenizer family we do not implement.
    #[error("unsupported tokenizer model `{0}` (supported: \"gpt2\", \"llama\")")]
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer llama.cpp's table does not have.
    #[error("unknown pre-tokenizer type `{0}` in tokenizer.ggml.pre")]
    UnknownPre(String),
    /// The vocabulary or merges are inconsistent.
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),
    /// A token id beyond the vocabulary was passed in.
    #[error("token id {id} is out of range (vocabulary has {vocab_size} tokens)")]
    UnknownId {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A tokenizer file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A tokenizer JSON file is malformed.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The `tokenizers` crate reported an error.
    #[error("tokenizer backend error: {0}")]
    Backend(String),
}

fn backend_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Backend(e.to_string())
}

/// llama.cpp token attributes, from `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_gguf(t: i64) -> Self {
        match t {
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            // 1 is normal; 0 (undefined) and anything else are treated as normal text.
            _ => Self::Normal,
        }
    }

    /// Hidden when decoding with `skip_special` (llama.cpp: control and unknown).
    fn is_skippable(self) -> bool {
        matches!(self, Self::Control | Self::Unknown)
    }
}

/// Token texts llama.cpp treats as end-of-generation wherever they occur in a vocabulary
/// (`llama-vocab.cpp`, plus the FIM pad/repo/file-separator tokens it also adds).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "</s>",
    "<|end_of_text|>",
    "<|fim_pad|>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<|file_sep|>",
];

/// Which family of tokenizer this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelKind {
    Gpt2,
    Llama,
    Hf,
}

/// How the text input reaches the BPE model.
enum Backend {
    /// GGUF vocabularies: we split around special tokens ourselves and feed raw text fragments.
    Gguf(Box<tokenizers::Tokenizer>),
    /// Hugging Face `tokenizer.json`: the crate handles added tokens. `plain` has special-token
    /// matching switched off (`parse_special == false`).
    Hf {
        parse_special: Box<tokenizers::Tokenizer>,
        plain: Box<tokenizers::Tokenizer>,
    },
}

struct Inner {
    kind: ModelKind,
    backend: Backend,
    /// Vocabulary strings as stored.
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    /// The raw bytes each token renders to (specials as their text).
    pieces: Vec<Vec<u8>>,
    /// Ids recognised by the special-token splitter, longest text first (llama.cpp order).
    split_specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    bos_text: Option<String>,
    eos_text: Option<String>,
    add_bos: bool,
    add_eos: bool,
    /// SPM: a space is prefixed to text following start-of-input or a special token, and one
    /// leading space is stripped from the first decoded piece.
    add_space_prefix: bool,
    eog: Vec<u32>,
    eog_set: HashSet<u32>,
}

/// A tokenizer for one model: encode, decode, special tokens and end-of-generation ids.
///
/// Cheap to clone (shared immutable state); `Send + Sync`.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.inner.kind)
            .field("vocab_size", &self.inner.tokens.len())
            .field("bos", &self.inner.bos)
            .field("eos", &self.inner.eos)
            .field("eog", &self.inner.eog)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF metadata access
// ---------------------------------------------------------------------------------------------

type Metadata = HashMap<String, Value>;

fn value_as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::U8(x) => Some(i64::from(*x)),
        Value::I8(x) => Some(i64::from(*x)),
        Value::U16(x) => Some(i64::from(*x)),
        Value::I16(x) => Some(i64::from(*x)),
        Value::U32(x) => Some(i64::from(*x)),
        Value::I32(x) => Some(i64::from(*x)),
        Value::U64(x) => i64::try_from(*x).ok(),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}

fn md_str<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a str>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(TokenizerError::BadType {
            key: key.to_owned(),
            expected: "a string",
        }),
    }
}

fn md_u32(md: &Metadata, key: &str) -> Result<Option<u32>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => value_as_i64(v)
            .and_then(|x| u32::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| TokenizerError::BadType {
                key: key.to_owned(),
                expected: "a non-negative integer",
            }),
    }
}

fn md_bool(md: &Metadata, key: &str) -> Result<Option<bool>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => match value_as_i64(v) {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(TokenizerError::BadType {
                key: key.to_owned(),
                expected: "a boolean",
            }),
        },
    }
}

fn md_array<'a>(md: &'a Metadata, key: &str) -> Result<Option<&'a [Value]>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a.as_slice())),
        Some(_) => Err(TokenizerError::BadType {
            key: key.to_owned(),
            expected: "an array",
        }),
    }
}

fn md_str_array<'a>(md: &'a Metadata, key: &str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    let Some(arr) = md_array(md, key)? else {
        return Ok(None);
    };
    arr.iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(TokenizerError::BadType {
                key: key.to_owned(),
                expected: "an array of strings",
            }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn md_i64_array(md: &Metadata, key: &str) -> Result<Option<Vec<i64>>, TokenizerError> {
    let Some(arr) = md_array(md, key)? else {
        return Ok(None);
    };
    arr.iter()
        .map(|v| {
            value_as_i64(v).ok_or_else(|| TokenizerError::BadType {
                key: key.to_owned(),
                expected: "an array of integers",
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn md_f32_array(md: &Metadata, key: &str) -> Result<Option<Vec<f32>>, TokenizerError> {
    let Some(arr) = md_array(md, key)? else {
        return Ok(None);
    };
    arr.iter()
        .map(|v| match v {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            other => value_as_i64(other)
                .map(|x| x as f32)
                .ok_or_else(|| TokenizerError::BadType {
                    key: key.to_owned(),
                    expected: "an array of numbers",
                }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer regexes (llama.cpp `llm_tokenizer_bpe`)
// ---------------------------------------------------------------------------------------------

const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_PORO: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
const RE_GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The llama.cpp pre-tokenizer configuration for one `tokenizer.ggml.pre` value.
#[derive(Debug, Clone, PartialEq)]
struct PreConfig {
    /// Applied in order; each regex splits every piece produced so far, keeping both the
    /// matches and the text between them (llama.cpp's `unicode_regex_split`).
    regexes: Vec<&'static str>,
    /// A whole pre-token that is itself in the vocabulary is emitted without merging.
    ignore_merges: bool,
    /// The BOS default for this pre-tokenizer when `tokenizer.ggml.add_bos_token` is absent.
    add_bos: bool,
}

/// llama.cpp's table from `tokenizer.ggml.pre` to regexes. `None` means the pre-tokenizer is
/// missing, which llama.cpp (and we) treat as `default` with a warning.
fn pre_config(pre: Option<&str>) -> Result<PreConfig, TokenizerError> {
    let cfg = |regexes: Vec<&'static str>| PreConfig {
        regexes,
        ignore_merges: false,
        add_bos: false,
    };
    let default = || {
        cfg(vec![
            r"[\p{P}\$\+<=>\^~\|]+",
            RE_GPT2,
            r"\p{N}+",
            r"[0-9][0-9][0-9]",
        ])
    };
    let Some(pre) = pre else {
        tracing::warn!(
            "GGUF has no tokenizer.ggml.pre; using llama.cpp's 'default' pre-tokenizer \
             (generation quality may be degraded)"
        );
        return Ok(default());
    };
    Ok(match pre {
        "default" => default(),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => PreConfig {
            regexes: vec![RE_LLAMA3],
            ignore_merges: true,
            add_bos: true,
        },
        "dbrx" | "smaug-bpe" | "chatglm-bpe" => cfg(vec![RE_LLAMA3]),
        // Cased letters; code points with canonical singleton decompositions are written as
        // escapes so that Unicode normalisation of this file cannot corrupt the ranges.
        "deepseek-llm" => cfg(vec![
            "[\r\n]",
            r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
            r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
            // llama.cpp's `\s+$` means end of input; Oniguruma's `$` is end of line.
            r"\s+\z",
            "[一-龥ࠀ-一가-퟿]+",
            r"\p{N}+",
        ]),
        "deepseek-coder" => cfg(vec![
            "[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            "[一-龥ࠀ-一가-퟿]+",
            r"\p{N}",
        ]),
        "deepseek-v3" => cfg(vec![
            r"\p{N}{1,3}",
            "[一-龥぀-ゟ゠-ヿ]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        ]),
        "falcon" => cfg(vec![r"[\p{P}\$\+<=>\^~\|`]+", RE_GPT2, "[0-9][0-9][0-9]"]),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
        | "minerva-7b" => cfg(vec![r"\p{N}", RE_GPT2]),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v1-en" | "jina-v2-es"
        | "jina-v2-de" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais" => {
            cfg(vec![RE_GPT2])
        }
        "qwen2" | "stablelm2" | "megrez" => cfg(vec![RE_QWEN2]),
        "poro-chat" | "bloom" | "gpt3-finnish" => cfg(vec![RE_PORO]),
        "viking" => cfg(vec![RE_PORO, r"\p{N}"]),
        "gpt-4o" | "llama4" => cfg(vec![RE_GPT4O]),
        "tekken" => PreConfig {
            regexes: vec![RE_TEKKEN],
            ignore_merges: true,
            add_bos: true,
        },
        "chameleon" => PreConfig {
            regexes: vec![
                "<sentinel:[0-9]+>",
                "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                "([\\t\\n]|    |  )",
                r"\p{N}",
                r"[\p{P}!-/:-@\[-`{-~]",
                RE_GPT2,
            ],
            ignore_merges: false,
            add_bos: true,
        },
        other => return Err(TokenizerError::UnknownPre(other.to_owned())),
    })
}

// ---------------------------------------------------------------------------------------------
// Byte mappings
// ---------------------------------------------------------------------------------------------

/// GPT-2's byte → printable-char table (`bytes_to_unicode`).
fn gpt2_byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let cp = if printable {
            u32::from(b)
        } else {
            let cp = next;
            next += 1;
            cp
        };
        table[usize::from(b)] = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    table
}

/// The inverse of [`gpt2_byte_to_char`].
fn gpt2_char_to_byte() -> HashMap<char, u8> {
    gpt2_byte_to_char()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect()
}

/// Bytes of a byte-level BPE vocabulary string; chars outside the table keep their UTF-8.
fn bytelevel_to_bytes(text: &str, map: &HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match map.get(&c) {
            Some(&b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// `<0xNN>` → the byte.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// SentencePiece piece → bytes: `▁` is a space, `<0xNN>` byte tokens are the byte.
fn spm_piece_bytes(text: &str, kind: TokenKind) -> Vec<u8> {
    if kind == TokenKind::Byte {
        if let Some(b) = parse_byte_token(text) {
            return vec![b];
        }
    }
    text.replace('\u{2581}', " ").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------

/// Everything the shared constructor needs besides the backend.
struct Parts {
    kind: ModelKind,
    backend: Backend,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    pieces: Vec<Vec<u8>>,
    bos: Option<u32>,
    eos: Option<u32>,
    bos_text: Option<String>,
    eos_text: Option<String>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    extra_eog: Vec<u32>,
}

impl Tokenizer {
    fn assemble(mut p: Parts) -> Self {
        // End-of-generation: EOS, explicit extra ids, and every token whose text llama.cpp
        // treats as EOG. llama.cpp forces those to control type; so do we.
        let mut eog: Vec<u32> = Vec::new();
        let push_eog = |id: u32, eog: &mut Vec<u32>| {
            if !eog.contains(&id) {
                eog.push(id);
            }
        };
        if let Some(e) = p.eos {
            push_eog(e, &mut eog);
        }
        for id in p.extra_eog.iter().copied() {
            push_eog(id, &mut eog);
        }
        for (id, text) in p.tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&text.as_str()) {
                push_eog(id as u32, &mut eog);
                if p.kinds[id] != TokenKind::Control && p.kinds[id] != TokenKind::UserDefined {
                    p.kinds[id] = TokenKind::Control;
                    p.pieces[id] = text.clone().into_bytes();
                }
            }
        }
        eog.sort_unstable();
        let eog_set = eog.iter().copied().collect();

        let mut split_specials: Vec<u32> = (0..p.tokens.len() as u32)
            .filter(|&id| {
                matches!(
                    p.kinds[id as usize],
                    TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined
                ) && !p.tokens[id as usize].is_empty()
            })
            .collect();
        split_specials.sort_by(|&a, &b| {
            p.tokens[b as usize]
                .len()
                .cmp(&p.tokens[a as usize].len())
                .then(a.cmp(&b))
        });

        let bos_text = p
            .bos_text
            .or_else(|| p.bos.and_then(|id| p.tokens.get(id as usize).cloned()));
        let eos_text = p
            .eos_text
            .or_else(|| p.eos.and_then(|id| p.tokens.get(id as usize).cloned()));

        Self {
            inner: Arc::new(Inner {
                kind: p.kind,
                backend: p.backend,
                tokens: p.tokens,
                kinds: p.kinds,
                pieces: p.pieces,
                split_specials,
                bos: p.bos,
                eos: p.eos,
                bos_text,
                eos_text,
                add_bos: p.add_bos,
                add_eos: p.add_eos,
                add_space_prefix: p.add_space_prefix,
                eog,
                eog_set,
            }),
        }
    }

    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata, like llama.cpp.
    ///
    /// Supports `tokenizer.ggml.model` `"gpt2"` (byte-level BPE, pre-tokenizer chosen by
    /// `tokenizer.ggml.pre`) and `"llama"` (SentencePiece BPE with byte fallback). An unknown
    /// `tokenizer.ggml.pre` is an error (as in llama.cpp); a missing one falls back to llama.cpp's
    /// `default` regexes with a warning.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, TokenizerError> {
        let md = &content.metadata;
        let model = md_str(md, "tokenizer.ggml.model")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.model".into()))?;
        let tokens: Vec<String> = md_str_array(md, "tokenizer.ggml.tokens")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.tokens".into()))?
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    // llama.cpp renames empty tokens so the vocabulary stays injective.
                    format!("[EMPTY_{i}]")
                } else {
                    t.to_owned()
                }
            })
            .collect();
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::InvalidVocab(
                "tokenizer.ggml.tokens is empty".into(),
            ));
        }
        let kinds: Vec<TokenKind> = match md_i64_array(md, "tokenizer.ggml.token_type")? {
            Some(types) if types.len() == n => {
                types.into_iter().map(TokenKind::from_gguf).collect()
            }
            Some(types) => {
                return Err(TokenizerError::InvalidVocab(format!(
                    "tokenizer.ggml.token_type has {} entries for {n} tokens",
                    types.len()
                )))
            }
            None => vec![TokenKind::Normal; n],
        };
        let in_range = |key: &str, id: Option<u32>| -> Option<u32> {
            match id {
                Some(id) if (id as usize) < n => Some(id),
                Some(id) => {
                    tracing::warn!("GGUF {key} = {id} is outside the vocabulary; ignored");
                    None
                }
                None => None,
            }
        };

        let (kind, backend, pieces, add_space_prefix, default_add_bos, default_bos, default_eos) =
            match model {
                "gpt2" => {
                    let pre = pre_config(md_str(md, "tokenizer.ggml.pre")?)?;
                    let merges = md_str_array(md, "tokenizer.ggml.merges")?.ok_or_else(|| {
                        TokenizerError::MissingKey("tokenizer.ggml.merges".into())
                    })?;
                    let backend = build_gpt2_backend(&tokens, &merges, &pre)?;
                    let map = gpt2_char_to_byte();
                    let pieces = tokens
                        .iter()
                        .zip(&kinds)
                        .map(|(t, k)| match k {
                            TokenKind::Normal | TokenKind::Unused | TokenKind::Byte => {
                                bytelevel_to_bytes(t, &map)
                            }
                            _ => t.clone().into_bytes(),
                        })
                        .collect::<Vec<_>>();
                    (
                        ModelKind::Gpt2,
                        backend,
                        pieces,
                        false,
                        pre.add_bos,
                        None,
                        None,
                    )
                }
                "llama" => {
                    let scores = match md_f32_array(md, "tokenizer.ggml.scores")? {
                        Some(s) if s.len() == n => s,
                        Some(s) => {
                            return Err(TokenizerError::InvalidVocab(format!(
                                "tokenizer.ggml.scores has {} entries for {n} tokens",
                                s.len()
                            )))
                        }
                        None => vec![0.0; n],
                    };
                    let unk = in_range(
                        "tokenizer.ggml.unknown_token_id",
                        md_u32(md, "tokenizer.ggml.unknown_token_id")?.or(Some(0)),
                    );
                    let backend = build_spm_backend(&tokens, &kinds, &scores, unk)?;
                    let pieces = tokens
                        .iter()
                        .zip(&kinds)
                        .map(|(t, k)| match k {
                            TokenKind::Normal | TokenKind::Unused | TokenKind::Byte => {
                                spm_piece_bytes(t, *k)
                            }
                            _ => t.clone().into_bytes(),
                        })
                        .collect::<Vec<_>>();
                    let prefix = md_bool(md, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
                    (
                        ModelKind::Llama,
                        backend,
                        pieces,
                        prefix,
                        true,
                        Some(1),
                        Some(2),
                    )
                }
                other => return Err(TokenizerError::UnknownModel(other.to_owned())),
            };

        let bos = in_range(
            "tokenizer.ggml.bos_token_id",
            md_u32(md, "tokenizer.ggml.bos_token_id")?.or(default_bos),
        );
        let eos = in_range(
            "tokenizer.ggml.eos_token_id",
            md_u32(md, "tokenizer.ggml.eos_token_id")?.or(default_eos),
        );
        let add_bos = md_bool(md, "tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos);
        let add_eos = md_bool(md, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let mut extra_eog = Vec::new();
        for key in [
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
            "tokenizer.ggml.fim_pad_token_id",
            "tokenizer.ggml.fim_rep_token_id",
            "tokenizer.ggml.fim_sep_token_id",
        ] {
            if let Some(id) = in_range(key, md_u32(md, key)?) {
                extra_eog.push(id);
            }
        }

        Ok(Self::assemble(Parts {
            kind,
            backend,
            tokens,
            kinds,
            pieces,
            bos,
            eos,
            bos_text: None,
            eos_text: None,
            add_bos: add_bos && bos.is_some(),
            add_eos: add_eos && eos.is_some(),
            add_space_prefix,
            extra_eog,
        }))
    }

    /// Builds the tokenizer of a Hugging Face checkpoint directory: `tokenizer.json` (required),
    /// `tokenizer_config.json` (BOS/EOS token strings, `add_bos_token`, `add_eos_token`) and
    /// `generation_config.json` (`eos_token_id`, one id or a list), each used when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let tok_path = dir.join("tokenizer.json");
        let tok_json = read_json(&tok_path)?.ok_or_else(|| TokenizerError::Io {
            path: tok_path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        })?;
        let parse_special: tokenizers::Tokenizer = serde_json::from_value(tok_json.clone())
            .map_err(|source| TokenizerError::Json {
                path: tok_path.clone(),
                source,
            })?;
        let mut plain = parse_special.clone();
        plain.set_encode_special_tokens(true);
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let gen_config = read_json(&dir.join("generation_config.json"))?;

        let n = parse_special.get_vocab_size(true);
        let added = parse_special.get_added_tokens_decoder();
        let mut tokens = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        for id in 0..n as u32 {
            tokens.push(parse_special.id_to_token(id).unwrap_or_default());
            kinds.push(match added.get(&id) {
                Some(t) if t.special => TokenKind::Control,
                Some(_) => TokenKind::UserDefined,
                None => TokenKind::Normal,
            });
        }

        let mode = hf_piece_mode(&tok_json);
        let byte_map = gpt2_char_to_byte();
        let mut pieces = Vec::with_capacity(n);
        for (id, (text, kind)) in tokens.iter().zip(kinds.iter_mut()).enumerate() {
            if *kind != TokenKind::Normal {
                pieces.push(text.clone().into_bytes());
                continue;
            }
            pieces.push(match mode {
                HfPieceMode::ByteLevel => bytelevel_to_bytes(text, &byte_map),
                HfPieceMode::Spm { .. } => {
                    if parse_byte_token(text).is_some() {
                        *kind = TokenKind::Byte;
                    }
                    spm_piece_bytes(text, *kind)
                }
                HfPieceMode::Text => parse_special
                    .decode(&[id as u32], false)
                    .map_err(backend_err)?
                    .into_bytes(),
            });
        }
        let add_space_prefix = matches!(
            mode,
            HfPieceMode::Spm {
                strip_leading: true
            }
        );

        let token_id = |text: &str| parse_special.token_to_id(text);
        let cfg_token = |key: &str| -> Option<String> {
            let v = config.as_ref()?.get(key)?;
            match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
                _ => None,
            }
        };
        let cfg_bool = |key: &str| config.as_ref()?.get(key)?.as_bool();
        let gen_ids = |key: &str| -> Vec<u32> {
            let Some(v) = gen_config.as_ref().and_then(|g| g.get(key)) else {
                return Vec::new();
            };
            match v {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                    .collect(),
                other => other
                    .as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .into_iter()
                    .collect(),
            }
        };

        let bos_text = cfg_token("bos_token");
        let eos_text = cfg_token("eos_token");
        let gen_eos = gen_ids("eos_token_id");
        let bos = bos_text
            .as_deref()
            .and_then(token_id)
            .or_else(|| gen_ids("bos_token_id").first().copied());
        let eos = eos_text
            .as_deref()
            .and_then(token_id)
            .or_else(|| gen_eos.first().copied());
        let bos_text = bos_text.or_else(|| bos.and_then(|id| parse_special.id_to_token(id)));
        let eos_text = eos_text.or_else(|| eos.and_then(|id| parse_special.id_to_token(id)));

        // Without an explicit `add_bos_token`, ask the post-processor whether it adds BOS.
        let add_bos = match (cfg_bool("add_bos_token"), bos) {
            (Some(b), _) => b,
            (None, Some(bos)) => parse_special
                .encode("a", true)
                .map(|e| e.get_ids().first() == Some(&bos))
                .unwrap_or(false),
            (None, None) => false,
        };
        let add_eos = cfg_bool("add_eos_token").unwrap_or(false);

        Ok(Self::assemble(Parts {
            kind: ModelKind::Hf,
            backend: Backend::Hf {
                parse_special: Box::new(parse_special),
                plain: Box::new(plain),
            },
            tokens,
            kinds,
            pieces,
            bos,
            eos,
            bos_text,
            eos_text,
            add_bos: add_bos && bos.is_some(),
            add_eos: add_eos && eos.is_some(),
            add_space_prefix,
            extra_eog: gen_eos,
        }))
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, TokenizerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenizerError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| TokenizerError::Json {
            path: path.to_owned(),
            source,
        })
}

/// How a `tokenizer.json` vocabulary string maps to output bytes, read off its decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HfPieceMode {
    /// GPT-2 byte-level (`ByteLevel` decoder).
    ByteLevel,
    /// SentencePiece style (`▁` for space, `<0xNN>` byte fallback); `strip_leading` when the
    /// decoder strips the prefix space (`Strip` / `Metaspace` with a prepended space).
    Spm { strip_leading: bool },
    /// Anything else: each token decoded alone by the `tokenizers` decoder.
    Text,
}

fn hf_piece_mode(tok_json: &serde_json::Value) -> HfPieceMode {
    fn collect<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        if let Some(list) = v.get("decoders").and_then(|d| d.as_array()) {
            for d in list {
                collect(d, out);
            }
        } else if v.is_object() {
            out.push(v);
        }
    }
    let mut decoders = Vec::new();
    if let Some(d) = tok_json.get("decoder") {
        collect(d, &mut decoders);
    }
    fn ty(d: &serde_json::Value) -> &str {
        d.get("type").and_then(|t| t.as_str()).unwrap_or("")
    }
    if decoders.iter().any(|d| ty(d) == "ByteLevel") {
        return HfPieceMode::ByteLevel;
    }
    let spm = decoders.iter().any(|d| match ty(d) {
        "ByteFallback" | "Metaspace" => true,
        "Replace" => {
            d.get("pattern")
                .and_then(|p| p.get("String"))
                .and_then(|s| s.as_str())
                == Some("\u{2581}")
        }
        _ => false,
    });
    if !spm {
        return HfPieceMode::Text;
    }
    let strip_leading = decoders.iter().any(|d| match ty(d) {
        "Strip" => d.get("start").and_then(|s| s.as_u64()).unwrap_or(0) > 0,
        "Metaspace" => {
            let scheme = d.get("prepend_scheme").and_then(|s| s.as_str());
            let legacy = d.get("add_prefix_space").and_then(|s| s.as_bool());
            matches!(scheme, Some("always") | Some("first")) || legacy == Some(true)
        }
        _ => false,
    });
    HfPieceMode::Spm { strip_leading }
}

fn vocab_map(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::default();
    for (id, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(id as u32);
    }
    vocab
}

fn build_gpt2_backend(
    tokens: &[String],
    merges: &[&str],
    pre: &PreConfig,
) -> Result<Backend, TokenizerError> {
    let merges = merges
        .iter()
        .map(|m| {
            // llama.cpp splits at the first space after the first byte.
            let split = m
                .bytes()
                .skip(1)
                .position(|b| b == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| TokenizerError::InvalidVocab(format!("malformed merge `{m}`")))?;
            Ok((m[..split].to_owned(), m[split + 1..].to_owned()))
        })
        .collect::<Result<Vec<_>, TokenizerError>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| TokenizerError::InvalidVocab(e.to_string()))?;
    let mut steps = Vec::with_capacity(pre.regexes.len() + 1);
    for re in &pre.regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TokenizerError::Backend(format!("pre-tokenizer regex `{re}`: {e}")))?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    )));
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(Sequence::new(steps)));
    Ok(Backend::Gguf(Box::new(tok)))
}

/// SentencePiece BPE as a `tokenizers` BPE: every way of writing a vocabulary piece as the
/// concatenation of two vocabulary pieces is a merge, ranked by the merged piece's score
/// (higher first). Merging the best-ranked adjacent pair first, leftmost on ties, is then
/// llama.cpp's greedy SPM loop.
fn build_spm_backend(
    tokens: &[String],
    kinds: &[TokenKind],
    scores: &[f32],
    unk: Option<u32>,
) -> Result<Backend, TokenizerError> {
    let vocab = vocab_map(tokens);
    let mut candidates: Vec<(f32, u32, usize, &str, &str)> = Vec::new();
    for (id, text) in tokens.iter().enumerate() {
        if kinds[id] == TokenKind::Byte || vocab.get(text) != Some(&(id as u32)) {
            continue;
        }
        for (split, _) in text.char_indices().skip(1) {
            let (l, r) = text.split_at(split);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                candidates.push((scores[id], id as u32, split, l, r));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges = candidates
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_owned(), r.to_owned()))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(tokens[unk as usize].clone());
    }
    let bpe = builder
        .build()
        .map_err(|e| TokenizerError::InvalidVocab(e.to_string()))?;
    Ok(Backend::Gguf(Box::new(tokenizers::Tokenizer::new(bpe))))
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding
// ---------------------------------------------------------------------------------------------

/// A piece of input after special-token splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// llama.cpp's `tokenizer_st_partition`: for each special token, longest text first, cut every
/// remaining text fragment around its occurrences — except occurrences of control tokens that
/// overlap one of the `literal` byte ranges of `text`, which stay plain text.
fn partition<'a>(
    text: &'a str,
    specials: &[u32],
    tokens: &[String],
    kinds: &[TokenKind],
    parse_special: bool,
    literal: &[Range<usize>],
) -> Vec<Fragment<'a>> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut frags = vec![Fragment::Text(text)];
    for &id in specials {
        let kind = kinds[id as usize];
        if !parse_special && kind != TokenKind::UserDefined {
            continue;
        }
        let pat = tokens[id as usize].as_str();
        let present = frags
            .iter()
            .any(|f| matches!(f, Fragment::Text(t) if t.contains(pat)));
        if !present {
            continue;
        }
        let protectable = kind != TokenKind::UserDefined && !literal.is_empty();
        let mut out = Vec::with_capacity(frags.len() + 2);
        for f in frags {
            match f {
                Fragment::Text(frag) => {
                    // Where `frag` starts in `text` (it is a slice of it).
                    let base = frag.as_ptr() as usize - text.as_ptr() as usize;
                    let (mut start, mut search) = (0, 0);
                    while let Some(found) = frag[search..].find(pat) {
                        let pos = search + found;
                        let (from, to) = (base + pos, base + pos + pat.len());
                        if protectable && literal.iter().any(|r| r.start < to && from < r.end) {
                            // Skip one character: the next occurrence may start inside this one.
                            search = pos + frag[pos..].chars().next().map_or(1, char::len_utf8);
                            continue;
                        }
                        if pos > start {
                            out.push(Fragment::Text(&frag[start..pos]));
                        }
                        out.push(Fragment::Token(id));
                        start = pos + pat.len();
                        search = start;
                    }
                    if start < frag.len() {
                        out.push(Fragment::Text(&frag[start..]));
                    }
                }
                tok => out.push(tok),
            }
        }
        frags = out;
    }
    frags
}

impl Tokenizer {
    /// Encodes `text` to token ids.
    ///
    /// * `add_bos`: prepend the BOS token (pass [`Tokenizer::add_bos_by_default`] for the
    ///   model's own choice). When true and the model sets `add_eos_token`, EOS is appended too,
    ///   as llama.cpp's `add_special` does.
    /// * `parse_special`: control-token text in `text` (e.g. `<|im_end|>`) becomes that token's
    ///   id; otherwise it is tokenized as plain text. User-defined tokens are always matched.
    pub fn encode(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with_literals(text, add_bos, parse_special, &[])
    }

    /// Byte ranges of `text` holding the text of a control token: what [`Tokenizer::encode`]
    /// turns into a special token only with `parse_special` (user-defined tokens, which are
    /// always matched, are not listed). Leftmost first, longest token first at each place.
    pub fn control_text_ranges(&self, text: &str) -> Vec<Range<usize>> {
        let inner = &*self.inner;
        let controls: Vec<&str> = inner
            .split_specials
            .iter()
            .filter(|&&id| inner.kinds[id as usize] != TokenKind::UserDefined)
            .map(|&id| inner.tokens[id as usize].as_str())
            .collect();
        let first_bytes: HashSet<u8> = controls.iter().filter_map(|t| t.bytes().next()).collect();
        let bytes = text.as_bytes();
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if first_bytes.contains(&bytes[i]) && text.is_char_boundary(i) {
                if let Some(t) = controls.iter().find(|t| text[i..].starts_with(**t)) {
                    ranges.push(i..i + t.len());
                    i += t.len();
                    continue;
                }
            }
            i += 1;
        }
        ranges
    }

    /// [`Tokenizer::encode`], except that control-token text overlapping any of the `literal`
    /// byte ranges of `text` is tokenized as plain text even with `parse_special`: a chat
    /// prompt's special tokens must come from its template, never from what a user typed.
    pub fn encode_with_literals(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
        literal: &[Range<usize>],
    ) -> Result<Vec<u32>, TokenizerError> {
        let inner = &*self.inner;
        let mut out = Vec::new();
        if add_bos {
            if let Some(bos) = inner.bos {
                out.push(bos);
            }
        }
        match &inner.backend {
            Backend::Hf {
                parse_special: with_special,
                plain,
            } => {
                // The crate matches added tokens itself: cut the literal ranges out and give
                // them to the tokenizer that matches none.
                let mut at = 0;
                let mut cuts: Vec<(&str, bool)> = Vec::new();
                for r in literal.iter().filter(|_| parse_special) {
                    cuts.push((&text[at..r.start], true));
                    cuts.push((&text[r.start..r.end], false));
                    at = r.end;
                }
                cuts.push((&text[at..], parse_special));
                for (part, special) in cuts.into_iter().filter(|(p, _)| !p.is_empty()) {
                    let tok = if special { with_special } else { plain };
                    let enc = tok.encode(part, false).map_err(backend_err)?;
                    out.extend_from_slice(enc.get_ids());
                }
            }
            Backend::Gguf(tok) => {
                let frags = partition(
                    text,
                    &inner.split_specials,
                    &inner.tokens,
                    &inner.kinds,
                    parse_special,
                    literal,
                );
                let spm = inner.kind == ModelKind::Llama;
                let mut prev_special = true;
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(t) if spm => {
                            let mut s = String::with_capacity(t.len() + 4);
                            if inner.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            let s = s.replace(' ', "\u{2581}");
                            let enc = tok.encode(s.as_str(), false).map_err(backend_err)?;
                            out.extend_from_slice(enc.get_ids());
                            prev_special = false;
                        }
                        Fragment::Text(t) => {
                            let enc = tok.encode(t, false).map_err(backend_err)?;
                            out.extend_from_slice(enc.get_ids());
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_bos && inner.add_eos {
            if let Some(eos) = inner.eos {
                out.push(eos);
            }
        }
        Ok(out)
    }

    /// Whether the model wants BOS prepended to a prompt (`tokenizer.ggml.add_bos_token`, or
    /// the model family's default: true for SentencePiece, false for most byte-level BPE).
    pub fn add_bos_by_default(&self) -> bool {
        self.inner.add_bos
    }

    /// Appends the bytes of `id` to `out`, applying `skip_special` and the one-time SPM
    /// leading-space strip (`strip_pending`, cleared by the first piece that renders).
    fn render_into(
        &self,
        id: u32,
        skip_special: bool,
        strip_pending: &mut bool,
        out: &mut Vec<u8>,
    ) -> Result<(), TokenizerError> {
        let inner = &*self.inner;
        let idx = id as usize;
        let piece = inner.pieces.get(idx).ok_or(TokenizerError::UnknownId {
            id,
            vocab_size: inner.pieces.len(),
        })?;
        if skip_special && inner.kinds[idx].is_skippable() {
            return Ok(());
        }
        let mut bytes = piece.as_slice();
        if *strip_pending && !bytes.is_empty() {
            if let Some(rest) = bytes.strip_prefix(b" ") {
                bytes = rest;
            }
            *strip_pending = false;
        }
        out.extend_from_slice(bytes);
        Ok(())
    }

    /// Decodes ids to text. `skip_special` hides control (and unknown) tokens; otherwise they
    /// render as their text. For SentencePiece models with a space prefix, one leading space is
    /// stripped from the first piece that renders (so `decode(encode(t)) == t`). Invalid UTF-8
    /// becomes U+FFFD. Unlike `llama_detokenize`, no "clean spaces" pass runs: the result is
    /// always the concatenation of the streamed pieces, as llama.cpp's server returns it.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut strip = self.inner.add_space_prefix;
        for &id in ids {
            self.render_into(id, skip_special, &mut strip, &mut bytes)?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The text of one token like llama.cpp's `token_to_piece(special = true)`: byte-level
    /// characters mapped back to bytes, `▁` as a space, `<0xNN>` as its byte, special tokens as
    /// their text. A piece that is not valid UTF-8 on its own (part of a character) has the
    /// invalid bytes replaced by U+FFFD. `None` for an id outside the vocabulary.
    pub fn token_piece(&self, id: u32) -> Option<String> {
        self.inner
            .pieces
            .get(id as usize)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The raw bytes token `id` renders to (a byte-level or `<0xNN>` token may be part of a
    /// character; special tokens give their text). `None` outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.inner.pieces.get(id as usize).map(Vec::as_slice)
    }

    /// Whether `id` is a control, user-defined, unknown or unused token rather than text.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner.kinds.get(id as usize).is_none_or(|k| {
            matches!(
                k,
                TokenKind::Control
                    | TokenKind::UserDefined
                    | TokenKind::Unknown
                    | TokenKind::Unused
            )
        })
    }

    /// Number of tokens in the vocabulary (including added/special tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.tokens.len()
    }

    /// The BOS token id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.inner.bos
    }

    /// The EOS token id, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.inner.eos
    }

    /// The BOS token's text (for chat templates' `bos_token`).
    pub fn bos_token(&self) -> Option<String> {
        self.inner.bos_text.clone()
    }

    /// The EOS token's text (for chat templates' `eos_token`).
    pub fn eos_token(&self) -> Option<String> {
        self.inner.eos_text.clone()
    }

    /// All end-of-generation ids, sorted: EOS, EOT/EOM (and FIM pad/repo/sep) from metadata,
    /// and every token whose text llama.cpp treats as end of generation (`<|im_end|>`,
    /// `<|eot_id|>`, `<|endoftext|>`, `<end_of_turn>`, ...).
    pub fn eog_ids(&self) -> &[u32] {
        &self.inner.eog
    }

    /// Whether generating `id` ends the turn.
    pub fn is_eog(&self, id: u32) -> bool {
        self.inner.eog_set.contains(&id)
    }

    /// Control and user-defined tokens with their text, by id.
    pub fn special_tokens(&self) -> Vec<(u32, String)> {
        self.inner
            .kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| matches!(k, TokenKind::Control | TokenKind::UserDefined))
            .map(|(id, _)| (id as u32, self.inner.tokens[id].clone()))
            .collect()
    }

    /// `"gpt2"` (GGUF byte-level BPE), `"llama"` (GGUF SentencePiece) or `"hf"` (tokenizer.json).
    pub fn model_kind(&self) -> &str {
        match self.inner.kind {
            ModelKind::Gpt2 => "gpt2",
            ModelKind::Llama => "llama",
            ModelKind::Hf => "hf",
        }
    }

    /// A streaming decoder rendering special tokens as text; see [`IncrementalDecoder`].
    pub fn decoder(&self) -> IncrementalDecoder {
        IncrementalDecoder {
            tokenizer: self.clone(),
            pending: Vec::new(),
            strip_pending: self.inner.add_space_prefix,
            skip_special: false,
        }
    }
}

/// Streams text as tokens arrive: emits text as soon as it forms valid UTF-8 — no waiting for a
/// following ASCII char, never a broken character. Special/control tokens render as their text
/// unless skipped ([`IncrementalDecoder::skip_special`]).
///
/// Works on bytes: each token's raw bytes are appended to a pending buffer and the longest valid
/// UTF-8 prefix is emitted, so each `push` costs O(token length). Concatenating every `push`
/// result and the final `flush` gives exactly [`Tokenizer::decode`] of the same ids (including
/// the SPM leading-space strip on the first piece).
#[derive(Debug, Clone)]
pub struct IncrementalDecoder {
    tokenizer: Tokenizer,
    pending: Vec<u8>,
    strip_pending: bool,
    skip_special: bool,
}

impl IncrementalDecoder {
    /// Hide control tokens instead of rendering their text.
    #[must_use]
    pub fn skip_special(mut self, skip: bool) -> Self {
        self.skip_special = skip;
        self
    }

    /// Keep (false) or strip (true, the default for SentencePiece models with a space prefix)
    /// the leading space of the first piece. Keep it when continuing text mid-sentence.
    #[must_use]
    pub fn strip_leading_space(mut self, strip: bool) -> Self {
        self.strip_pending = strip && self.tokenizer.inner.add_space_prefix;
        self
    }

    /// Feeds one token; returns the text completed by it (`""` while a character's bytes are
    /// still pending). Bytes that can never form a valid character become U+FFFD.
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.tokenizer.render_into(
            id,
            self.skip_special,
            &mut self.strip_pending,
            &mut self.pending,
        )?;
        Ok(take_valid_prefix(&mut self.pending))
    }

    /// Returns whatever is still pending (an incomplete character becomes U+FFFD) and resets.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Removes and returns the longest prefix of `buf` that can be emitted now: valid UTF-8, with
/// definitely-invalid sequences replaced by U+FFFD; an incomplete character at the end stays.
fn take_valid_prefix(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&buf[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = buf.len();
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // The bytes up to `valid` were just checked.
                out.push_str(&String::from_utf8_lossy(&buf[start..start + valid]));
                match e.error_len() {
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        start += valid + bad;
                    }
                    None => {
                        start += valid;
                        break;
                    }
                }
            }
        }
    }
    buf.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_table_is_a_bijection_with_printable_identity() {
        let t = gpt2_byte_to_char();
        let set: HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        let back = gpt2_char_to_byte();
        assert_eq!(bytelevel_to_bytes("ĠHelloĊ", &back), b" Hello\n");
    }

    #[test]
    fn byte_tokens_parse_only_in_the_exact_form() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(b'\n'));
        assert_eq!(parse_byte_token("<0xFF>"), Some(0xFF));
        assert_eq!(parse_byte_token("<0x0A"), None);
        assert_eq!(parse_byte_token("<0xABC>"), None);
        assert_eq!(spm_piece_bytes("▁the", TokenKind::Normal), b" the");
        assert_eq!(spm_piece_bytes("<0xE2>", TokenKind::Byte), vec![0xE2]);
    }

    #[test]
    fn valid_prefix_waits_for_incomplete_characters_and_replaces_invalid_bytes() {
        let mut buf = vec![b'a', 0xF0, 0x9F];
        assert_eq!(take_valid_prefix(&mut buf), "a");
        assert_eq!(buf, vec![0xF0, 0x9F]);
        buf.extend_from_slice(&[0x98, 0x80]);
        assert_eq!(take_valid_prefix(&mut buf), "😀");
        assert!(buf.is_empty());
        let mut bad = vec![0xFF, b'x', 0xE2];
        assert_eq!(take_valid_prefix(&mut bad), "\u{FFFD}x");
        assert_eq!(bad, vec![0xE2]);
    }

    #[test]
    fn partition_splits_longest_special_first_and_keeps_surrounding_text() {
        let tokens: Vec<String> = ["<a>", "<a><b>", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let kinds = vec![TokenKind::Control, TokenKind::Control, TokenKind::Normal];
        let specials = vec![1, 0];
        let f = partition("1 <a><b> 2<a>", &specials, &tokens, &kinds, true, &[]);
        assert_eq!(
            f,
            vec![
                Fragment::Text("1 "),
                Fragment::Token(1),
                Fragment::Text(" 2"),
                Fragment::Token(0)
            ]
        );
        let plain = partition("1 <a>", &specials, &tokens, &kinds, false, &[]);
        assert_eq!(plain, vec![Fragment::Text("1 <a>")]);
    }

    #[test]
    fn control_text_in_literal_ranges_stays_text_and_elsewhere_is_split() {
        let tokens: Vec<String> = ["<e>", "<u>"].iter().map(|s| s.to_string()).collect();
        let kinds = vec![TokenKind::Control, TokenKind::UserDefined];
        let text = "<e>hi<e><u><e>";
        // The second `<e>` (bytes 5..8) and the `<u>` are inside the literal range.
        let literal = [Range { start: 5, end: 11 }];
        let f = partition(text, &[0, 1], &tokens, &kinds, true, &literal);
        assert_eq!(
            f,
            vec![
                Fragment::Token(0),
                Fragment::Text("hi<e>"),
                // User-defined tokens are always matched, literal or not.
                Fragment::Token(1),
                Fragment::Token(0),
            ]
        );
        // An occurrence only partly inside the range is protected too.
        let literal = [Range { start: 2, end: 3 }];
        let f = partition("a<e>", &[0], &tokens, &kinds, true, &literal);
        assert_eq!(f, vec![Fragment::Text("a<e>")]);
    }

    #[test]
    fn user_defined_tokens_split_even_without_parse_special() {
        let tokens: Vec<String> = ["<u>"].iter().map(|s| s.to_string()).collect();
        let kinds = vec![TokenKind::UserDefined];
        let f = partition("a<u>b", &[0], &tokens, &kinds, false, &[]);
        assert_eq!(
            f,
            vec![Fragment::Text("a"), Fragment::Token(0), Fragment::Text("b")]
        );
    }

    #[test]
    fn pre_tokenizer_table_covers_common_names_and_rejects_unknown_ones() {
        for name in [
            "default",
            "gpt-2",
            "llama3",
            "llama-bpe",
            "smollm",
            "starcoder",
            "qwen2",
            "deepseek-llm",
            "deepseek-coder",
            "falcon",
            "refact",
            "mpt",
            "olmo",
            "tekken",
        ] {
            assert!(pre_config(Some(name)).is_ok(), "{name}");
        }
        assert_eq!(
            pre_config(Some("smollm")).map(|c| c.regexes).ok(),
            Some(vec![r"\p{N}", RE_GPT2])
        );
        assert!(matches!(
            pre_config(Some("no-such-pre")),
            Err(TokenizerError::UnknownPre(p)) if p == "no-such-pre"
        ));
        assert!(pre_config(None).is_ok());
    }

    #[test]
    fn every_pre_tokenizer_regex_compiles() {
        for name in [
            "default",
            "llama3",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "smollm",
            "gpt-2",
            "qwen2",
            "poro-chat",
            "viking",
            "gpt-4o",
            "tekken",
            "chameleon",
        ] {
            let cfg = pre_config(Some(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            for re in cfg.regexes {
                Split::new(
                    SplitPattern::Regex(re.to_owned()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{name}: regex {re} does not compile: {e}"));
            }
        }
    }
}
