//! Tokenizer against llama.cpp's reference outputs for SmolLM2-135M-Instruct (Q4_1 GGUF), a
//! synthetic SentencePiece GGUF checked by hand, and a tiny Hugging Face `tokenizer.json`.
//!
//! The model is looked up at `$HEARTH_TEST_MODEL` or `<repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (fetch it with `scripts/fetch-model.sh`).

use crate::common;

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{self, Content, Value};
use hearth::engine::tokenizer::{Tokenizer, TokenizerError};
use serde_json::Value as Json;

fn model_path() -> PathBuf {
    common::model_path()
}

fn fixture() -> &'static Json {
    static FIXTURE: OnceLock<Json> = OnceLock::new();
    FIXTURE.get_or_init(common::reference)
}

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = model_path();
        let mut file = std::fs::File::open(&path).unwrap_or_else(|e| {
            panic!(
                "test model {} not found ({e}); run scripts/fetch-model.sh or set HEARTH_TEST_MODEL",
                path.display()
            )
        });
        let content = Content::read(&mut file).expect("GGUF header parses");
        Tokenizer::from_gguf(&content).expect("tokenizer builds from GGUF")
    })
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn cases() -> &'static [Json] {
    fixture()["tokenization"]
        .as_array()
        .expect("tokenization list")
}

/// Python's `bytes.decode(errors="backslashreplace")` output back to bytes.
fn unescape_backslash_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find("\\x") {
        out.extend_from_slice(&rest.as_bytes()[..pos]);
        let hex = &rest[pos + 2..pos + 4];
        out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
        rest = &rest[pos + 4..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

#[test]
fn encode_matches_llama_cpp_ids_for_every_reference_text() {
    let tok = tokenizer();
    let mut failures = Vec::new();
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, false, false).unwrap();
        if got != ids(&case["ids_plain"]) {
            failures.push(format!(
                "{text:?}: got {got:?}, want {:?}",
                ids(&case["ids_plain"])
            ));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn encode_with_parse_special_matches_llama_cpp_ids_for_every_reference_text() {
    let tok = tokenizer();
    let mut failures = Vec::new();
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, false, true).unwrap();
        if got != ids(&case["ids_special"]) {
            failures.push(format!(
                "{text:?}: got {got:?}, want {:?}",
                ids(&case["ids_special"])
            ));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn special_token_text_is_split_out_with_the_space_before_it_kept_separate() {
    let tok = tokenizer();
    assert_eq!(
        tok.encode("Text with <|im_end|> inside", false, true)
            .unwrap(),
        vec![8060, 351, 216, 2, 2972]
    );
}

#[test]
fn encode_with_the_model_bos_default_matches_llama_cpp_ids_bos() {
    let tok = tokenizer();
    assert!(
        !tok.add_bos_by_default(),
        "SmolLM2 GGUF sets add_bos_token = false"
    );
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, tok.add_bos_by_default(), false).unwrap(),
            ids(&case["ids_bos"]),
            "{text:?}"
        );
    }
    assert_eq!(tok.encode("Hello", true, false).unwrap(), vec![1, 19556]);
}

#[test]
fn decode_round_trips_every_reference_text_and_matches_llama_cpp_detokenize() {
    let tok = tokenizer();
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let decoded = tok.decode(&ids(&case["ids_plain"]), false).unwrap();
        assert_eq!(decoded, text);
        assert_eq!(decoded, case["detok_plain"].as_str().unwrap());
        let special = tok.decode(&ids(&case["ids_special"]), false).unwrap();
        assert_eq!(special, text, "special tokens render as their text");
    }
}

#[test]
fn token_pieces_match_llama_cpp_pieces() {
    let tok = tokenizer();
    for case in cases() {
        let pieces = case["pieces_plain"].as_array().unwrap();
        for (id, piece) in ids(&case["ids_plain"]).into_iter().zip(pieces) {
            let want = unescape_backslash_bytes(piece.as_str().unwrap());
            assert_eq!(
                tok.token_piece(id).unwrap(),
                String::from_utf8_lossy(&want),
                "piece of {id}"
            );
        }
    }
    assert_eq!(tok.token_piece(2).as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.token_piece(u32::MAX), None);
}

#[test]
fn incremental_decoder_streams_every_reference_text_without_broken_characters() {
    let tok = tokenizer();
    for case in cases() {
        let text = case["text"].as_str().unwrap();
        let ids = ids(&case["ids_plain"]);
        let mut dec = tok.decoder();
        let mut streamed = String::new();
        for (i, &id) in ids.iter().enumerate() {
            let chunk = dec.push(id).unwrap();
            assert!(
                !chunk.contains('\u{FFFD}'),
                "{text:?}: broken char at token {i}"
            );
            streamed.push_str(&chunk);
            // Everything complete so far has been emitted, nothing more.
            let full = tok.decode(&ids[..=i], false).unwrap();
            assert_eq!(
                streamed,
                full.trim_end_matches('\u{FFFD}'),
                "{text:?} at token {i}"
            );
        }
        streamed.push_str(&dec.flush());
        assert_eq!(streamed, text);
    }
}

#[test]
fn incremental_decoder_emits_a_split_character_at_the_token_that_completes_it() {
    let tok = tokenizer();
    // " 😀" is [40303 = " \xf0\x9f\x98", 218 = "\x80"] (fixture pieces).
    let mut dec = tok.decoder();
    assert_eq!(dec.push(40303).unwrap(), " ");
    assert_eq!(dec.push(218).unwrap(), "😀");
    // Korean "한" is [33085 = "\xed\x95", 246 = "\x9c"].
    let mut dec = tok.decoder();
    assert_eq!(dec.push(33085).unwrap(), "");
    assert_eq!(dec.push(246).unwrap(), "한");
    // Chinese "词" is [16313 = "\xe8\xaf", 231 = "\x8d"].
    let mut dec = tok.decoder();
    assert_eq!(dec.push(16313).unwrap(), "");
    assert_eq!(dec.push(231).unwrap(), "词");
    // A dangling lead byte is flushed as U+FFFD.
    let mut dec = tok.decoder();
    assert_eq!(dec.push(16313).unwrap(), "");
    assert_eq!(dec.flush(), "\u{FFFD}");
    assert!(matches!(
        dec.push(u32::MAX),
        Err(TokenizerError::UnknownId { .. })
    ));
}

#[test]
fn special_tokens_bos_eos_and_end_of_generation_ids_follow_the_gguf() {
    let tok = tokenizer();
    let fx = fixture();
    assert_eq!(tok.model_kind(), "gpt2");
    assert_eq!(tok.vocab_size() as u64, fx["n_vocab"].as_u64().unwrap());
    assert_eq!(tok.bos_id().map(u64::from), fx["bos_id"].as_u64());
    assert_eq!(tok.eos_id().map(u64::from), fx["eos_id"].as_u64());
    assert_eq!(tok.bos_token().as_deref(), fx["bos_piece"].as_str());
    assert_eq!(tok.eos_token().as_deref(), fx["eos_piece"].as_str());
    let endoftext = tok
        .special_tokens()
        .into_iter()
        .find(|(_, t)| t == "<|endoftext|>")
        .map(|(id, _)| id)
        .expect("<|endoftext|> is a special token");
    assert!(tok.eog_ids().contains(&2), "{:?}", tok.eog_ids());
    assert!(tok.eog_ids().contains(&endoftext), "{:?}", tok.eog_ids());
    assert!(tok.is_eog(2) && tok.is_eog(endoftext));
    assert!(!tok.is_eog(1), "<|im_start|> does not end generation");
    assert!(tok.special_tokens().contains(&(2, "<|im_end|>".to_owned())));
}

#[test]
fn decode_with_skip_special_hides_control_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.decode(&[1, 4093, 198, 2], true).unwrap(), "user\n");
    assert_eq!(
        tok.decode(&[1, 4093, 198, 2], false).unwrap(),
        "<|im_start|>user\n<|im_end|>"
    );
    let mut dec = tok.decoder().skip_special(true);
    assert_eq!(dec.push(1).unwrap(), "");
    assert_eq!(dec.push(4093).unwrap(), "user");
}

#[test]
fn chat_prompts_tokenize_to_llama_cpp_prompt_ids() {
    let tok = tokenizer();
    for chat in fixture()["chats"].as_array().unwrap() {
        let prompt = chat["prompt_text"].as_str().unwrap();
        assert_eq!(
            tok.encode(prompt, tok.add_bos_by_default(), true).unwrap(),
            ids(&chat["prompt_ids"]),
            "{prompt:?}"
        );
    }
}

#[test]
fn tokenizer_is_cheap_to_clone_and_shareable_across_threads() {
    fn check<T: Clone + Send + Sync>() {}
    check::<Tokenizer>();
    let tok = tokenizer().clone();
    let handle = std::thread::spawn(move || tok.encode("Hello", false, false).unwrap());
    assert_eq!(handle.join().unwrap(), vec![19556]);
}

// ---------------------------------------------------------------------------------------------
// Synthetic SentencePiece GGUF
// ---------------------------------------------------------------------------------------------

const SPM_NORMAL: &[(&str, f32)] = &[
    ("▁", -100.0),
    ("h", -100.0),
    ("e", -100.0),
    ("l", -100.0),
    ("o", -100.0),
    ("w", -100.0),
    ("r", -100.0),
    ("d", -100.0),
    ("a", -100.0),
    ("b", -100.0),
    ("c", -100.0),
    ("ll", -1.0),
    ("he", -2.0),
    ("llo", -3.0),
    ("hello", -4.0),
    ("▁hello", -5.0),
    ("▁w", -6.0),
    ("or", -7.0),
    ("ab", -9.0),
    ("bc", -8.0),
];

/// id of a normal piece in the synthetic vocabulary (after <unk>, <s>, </s> and 256 bytes).
fn spm_id(piece: &str) -> u32 {
    259 + SPM_NORMAL
        .iter()
        .position(|(p, _)| *p == piece)
        .unwrap_or_else(|| panic!("{piece} not in synthetic vocab")) as u32
}

fn spm_byte(b: u8) -> u32 {
    3 + u32::from(b)
}

fn spm_gguf(extra: Vec<(&str, Value)>) -> Content {
    let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
    let mut scores = vec![0.0f32; 3];
    let mut types = vec![2i32, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    for (p, s) in SPM_NORMAL {
        tokens.push((*p).to_owned());
        scores.push(*s);
        types.push(1);
    }
    let mut md: Vec<(&str, Value)> = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    md.extend(extra);
    // Round-trip through the real GGUF writer/reader so value types are what files hold.
    let refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut buf = Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &refs, &[]).expect("GGUF writes");
    buf.set_position(0);
    Content::read(&mut buf).expect("GGUF reads back")
}

fn spm() -> Tokenizer {
    Tokenizer::from_gguf(&spm_gguf(vec![])).expect("synthetic SPM tokenizer builds")
}

#[test]
fn spm_merges_follow_scores_and_add_a_leading_space() {
    let tok = spm();
    assert_eq!(tok.model_kind(), "llama");
    // "▁hello▁world": ll, he, llo, hello, ▁hello, ▁w, or by score; "l", "d" stay single.
    assert_eq!(
        tok.encode("hello world", false, false).unwrap(),
        vec![
            spm_id("▁hello"),
            spm_id("▁w"),
            spm_id("or"),
            spm_id("l"),
            spm_id("d")
        ]
    );
    // "bc" (-8) outranks "ab" (-9): greedy by score, not left to right.
    assert_eq!(
        tok.encode("abc", false, false).unwrap(),
        vec![spm_id("▁"), spm_id("a"), spm_id("bc")]
    );
}

#[test]
fn spm_unknown_characters_fall_back_to_byte_tokens() {
    let tok = spm();
    assert_eq!(
        tok.encode("hé", false, false).unwrap(),
        vec![spm_id("▁"), spm_id("h"), spm_byte(0xC3), spm_byte(0xA9)]
    );
    assert_eq!(
        tok.encode("a\nb", false, false).unwrap(),
        vec![spm_id("▁"), spm_id("a"), spm_byte(b'\n'), spm_id("b")]
    );
}

#[test]
fn spm_adds_bos_by_default_and_prefixes_text_after_special_tokens() {
    let tok = spm();
    assert!(tok.add_bos_by_default());
    assert_eq!(
        tok.encode("hello", tok.add_bos_by_default(), false)
            .unwrap(),
        vec![1, spm_id("▁hello")]
    );
    assert_eq!(
        tok.encode("hello</s>hello", false, true).unwrap(),
        vec![spm_id("▁hello"), 2, spm_id("▁hello")]
    );
    assert!(tok.eog_ids().contains(&2));
    assert_eq!(tok.bos_token().as_deref(), Some("<s>"));
}

#[test]
fn spm_decode_round_trips_and_strips_only_the_added_space() {
    let tok = spm();
    for text in ["hello world", "abc", "hé", "a\nb", "  two spaces", "x😀y"] {
        let ids = tok.encode(text, false, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{ids:?}");
        let with_bos = tok.encode(text, true, false).unwrap();
        assert_eq!(tok.decode(&with_bos, true).unwrap(), text);
        let mut dec = tok.decoder();
        let mut streamed: String = ids.iter().map(|&id| dec.push(id).unwrap()).collect();
        streamed.push_str(&dec.flush());
        assert_eq!(streamed, text);
    }
    assert_eq!(
        tok.decode(&[1, spm_id("▁hello")], false).unwrap(),
        "<s> hello"
    );
}

#[test]
fn spm_incremental_decoder_waits_for_the_last_byte_of_a_character() {
    let tok = spm();
    let mut dec = tok.decoder();
    assert_eq!(dec.push(spm_id("▁")).unwrap(), "", "added space stripped");
    assert_eq!(dec.push(spm_id("h")).unwrap(), "h");
    assert_eq!(dec.push(spm_byte(0xC3)).unwrap(), "");
    assert_eq!(dec.push(spm_byte(0xA9)).unwrap(), "é");
    let mut cont = tok.decoder().strip_leading_space(false);
    assert_eq!(cont.push(spm_id("▁w")).unwrap(), " w");
}

#[test]
fn spm_add_space_prefix_false_is_honoured() {
    let tok = Tokenizer::from_gguf(&spm_gguf(vec![(
        "tokenizer.ggml.add_space_prefix",
        Value::Bool(false),
    )]))
    .unwrap();
    assert_eq!(
        tok.encode("hello", false, false).unwrap(),
        vec![spm_id("hello")]
    );
    assert_eq!(tok.decode(&[spm_id("▁hello")], false).unwrap(), " hello");
}

#[test]
fn gguf_errors_name_the_problem() {
    let missing = Tokenizer::from_gguf(&Content {
        magic: gguf_file::VersionedMagic::GgufV3,
        metadata: Default::default(),
        tensor_infos: Default::default(),
        tensor_data_offset: 0,
    })
    .unwrap_err();
    assert!(
        missing.to_string().contains("tokenizer.ggml.model"),
        "{missing}"
    );
    let bad_model = Tokenizer::from_gguf(&spm_gguf(vec![(
        "tokenizer.ggml.model",
        Value::String("t5x".into()),
    )]))
    .unwrap_err();
    assert!(bad_model.to_string().contains("t5x"), "{bad_model}");
    let bad_type = Tokenizer::from_gguf(&spm_gguf(vec![(
        "tokenizer.ggml.add_bos_token",
        Value::String("yes".into()),
    )]))
    .unwrap_err();
    assert!(
        bad_type
            .to_string()
            .contains("tokenizer.ggml.add_bos_token"),
        "{bad_type}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hugging Face tokenizer.json
// ---------------------------------------------------------------------------------------------

fn write_hf_dir(dir: &std::path::Path) {
    let added = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(0, "<|endoftext|>"), added(1, "<|im_start|>"), added(2, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "h": 3, "i": 4, "Ġ": 5,
                      "t": 6, "e": 7, "r": 8, "hi": 9, "Ġt": 10, "he": 11, "Ġthe": 12},
            "merges": ["h i", "Ġ t", "h e", "Ġt he"]
        }
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let config = serde_json::json!({
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": true},
        "add_bos_token": false
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        serde_json::json!({"eos_token_id": [2, 0]}).to_string(),
    )
    .unwrap();
}

#[test]
fn hf_dir_tokenizer_encodes_decodes_and_reads_bos_eos_from_configs() {
    let dir = tempfile::tempdir().unwrap();
    write_hf_dir(dir.path());
    let tok = Tokenizer::from_hf_dir(dir.path()).unwrap();
    assert_eq!(tok.model_kind(), "hf");
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    assert!(!tok.add_bos_by_default());
    assert_eq!(tok.eog_ids(), &[0, 2]);
    assert_eq!(
        tok.encode("hi there", false, false).unwrap(),
        vec![9, 12, 8, 7]
    );
    assert_eq!(
        tok.encode("hi there", true, false).unwrap(),
        vec![1, 9, 12, 8, 7]
    );
    assert_eq!(tok.encode("<|im_end|>hi", false, true).unwrap(), vec![2, 9]);
    assert!(!tok
        .encode("<|im_end|>hi", false, false)
        .unwrap()
        .contains(&2));
    assert_eq!(tok.decode(&[9, 12, 8, 7], false).unwrap(), "hi there");
    assert_eq!(tok.decode(&[2, 9], true).unwrap(), "hi");
    let mut dec = tok.decoder();
    let streamed: String = [9, 12, 8, 7]
        .iter()
        .map(|&id| dec.push(id).unwrap())
        .collect();
    assert_eq!(streamed, "hi there");
}

#[test]
fn hf_dir_without_tokenizer_json_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_hf_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}
