//! Chat templates against llama.cpp's reference prompts for SmolLM2-135M-Instruct (Q4_1 GGUF),
//! plus the fallbacks and error paths.
//!
//! The model is looked up at `$HEARTH_TEST_MODEL` or `<repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (fetch it with `scripts/fetch-model.sh`).

use crate::common;

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};
use hearth::engine::template::{ChatMessage, ChatTemplate, TemplateError};
use hearth::engine::tokenizer::Tokenizer;
use serde_json::Value as Json;

fn model_path() -> PathBuf {
    common::model_path()
}

fn fixture() -> &'static Json {
    static FIXTURE: OnceLock<Json> = OnceLock::new();
    FIXTURE.get_or_init(common::reference)
}

/// The GGUF header (metadata only), its tokenizer and its template.
fn model() -> &'static (Content, Tokenizer, ChatTemplate) {
    static MODEL: OnceLock<(Content, Tokenizer, ChatTemplate)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = model_path();
        let mut file = std::fs::File::open(&path).unwrap_or_else(|e| {
            panic!(
                "test model {} not found ({e}); run scripts/fetch-model.sh or set HEARTH_TEST_MODEL",
                path.display()
            )
        });
        let content = Content::read(&mut file).expect("GGUF header parses");
        let tok = Tokenizer::from_gguf(&content).expect("tokenizer builds");
        let tmpl = ChatTemplate::from_gguf(&content, tok.bos_token(), tok.eos_token())
            .expect("GGUF chat template compiles");
        (content, tok, tmpl)
    })
}

fn messages(chat: &Json) -> Vec<ChatMessage> {
    serde_json::from_value(chat["messages"].clone()).expect("messages deserialize")
}

fn chats() -> &'static [Json] {
    fixture()["chats"].as_array().expect("chat list")
}

fn empty_gguf(metadata: Vec<(&str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        tensor_infos: Default::default(),
        tensor_data_offset: 0,
    }
}

#[test]
fn gguf_template_is_the_one_llama_cpp_used() {
    let (_, _, tmpl) = model();
    assert!(!tmpl.is_default());
    assert_eq!(tmpl.source(), fixture()["chat_template"].as_str().unwrap());
}

#[test]
fn renders_every_reference_chat_exactly_like_llama_cpp() {
    let (_, _, tmpl) = model();
    for chat in chats() {
        let rendered = tmpl.render(&messages(chat), true).unwrap();
        assert_eq!(rendered, chat["prompt_text"].as_str().unwrap());
    }
}

#[test]
fn rendered_reference_chats_tokenize_to_llama_cpp_prompt_ids() {
    let (_, tok, tmpl) = model();
    for chat in chats() {
        let rendered = tmpl.render(&messages(chat), true).unwrap();
        let ids = tok
            .encode(&rendered, tok.add_bos_by_default(), true)
            .unwrap();
        let want: Vec<u32> = chat["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want, "{rendered:?}");
    }
}

#[test]
fn a_system_message_replaces_the_default_system_prompt() {
    let (_, _, tmpl) = model();
    let out = tmpl
        .render(
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn missing_gguf_template_falls_back_to_the_chatml_default() {
    let tmpl = ChatTemplate::from_gguf(&empty_gguf(vec![]), None, None).unwrap();
    assert!(tmpl.is_default());
    assert_eq!(
        tmpl.render(&[ChatMessage::new("user", "Hi")], true)
            .unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn bad_template_syntax_is_an_error_with_a_clear_message() {
    let content = empty_gguf(vec![(
        "tokenizer.chat_template",
        Value::String("{% for m in messages %}{{ m.content }".into()),
    )]);
    let err = ChatTemplate::from_gguf(&content, None, None).unwrap_err();
    assert!(matches!(err, TemplateError::Syntax(_)), "{err:?}");
    assert!(err.to_string().contains("syntax error"), "{err}");
}

#[test]
fn non_string_gguf_template_is_an_error() {
    let content = empty_gguf(vec![("tokenizer.chat_template", Value::U32(3))]);
    let err = ChatTemplate::from_gguf(&content, None, None).unwrap_err();
    assert!(err.to_string().contains("tokenizer.chat_template"), "{err}");
}

#[test]
fn raise_exception_in_a_template_returns_its_message() {
    let src = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('Tool messages are not supported: ' + m.content) }}{% endif %}{{ m.content }}{% endfor %}";
    let tmpl = ChatTemplate::new(src, None, None).unwrap();
    assert_eq!(
        tmpl.render(&[ChatMessage::new("user", "ok")], false)
            .unwrap(),
        "ok"
    );
    let err = tmpl
        .render(&[ChatMessage::new("tool", "x")], false)
        .unwrap_err();
    match &err {
        TemplateError::Raised(msg) => assert_eq!(msg, "Tool messages are not supported: x"),
        other => panic!("expected Raised, got {other:?}"),
    }
    assert!(err.to_string().contains("Tool messages are not supported"));
}

#[test]
fn hf_dir_template_comes_from_tokenizer_config_string_or_default_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer_config.json");

    let none = ChatTemplate::from_hf_dir(dir.path(), None, None).unwrap();
    assert!(none.is_default(), "no config at all");

    std::fs::write(
        &path,
        serde_json::json!({"chat_template": "{{ bos_token }}{{ messages[0].content }}"})
            .to_string(),
    )
    .unwrap();
    let t = ChatTemplate::from_hf_dir(dir.path(), Some("<s>".into()), None).unwrap();
    assert!(!t.is_default());
    assert_eq!(
        t.render(&[ChatMessage::new("user", "a")], false).unwrap(),
        "<s>a"
    );

    std::fs::write(
        &path,
        serde_json::json!({"chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "DEFAULT {{ messages|length }}"}
        ]})
        .to_string(),
    )
    .unwrap();
    let t = ChatTemplate::from_hf_dir(dir.path(), None, None).unwrap();
    assert_eq!(
        t.render(&[ChatMessage::new("user", "a")], false).unwrap(),
        "DEFAULT 1"
    );

    std::fs::write(&path, serde_json::json!({"eos_token": "</s>"}).to_string()).unwrap();
    assert!(ChatTemplate::from_hf_dir(dir.path(), None, None)
        .unwrap()
        .is_default());

    std::fs::write(dir.path().join("chat_template.jinja"), "JINJA FILE").unwrap();
    let t = ChatTemplate::from_hf_dir(dir.path(), None, None).unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "JINJA FILE");
}

#[test]
fn model_chat_template_overrides_the_models_own_inline_or_from_a_file() {
    let messages = [ChatMessage::new("user", "Hi")];
    let mut config = hearth::config::Config::default();
    config.model.path = model_path().to_string_lossy().into_owned();
    let (_, own) = hearth::cli::load_tokenizer(&config).expect("load");
    assert!(own
        .render(&messages, true)
        .expect("render")
        .contains("<|im_start|>user\nHi<|im_end|>"));
    // Inline.
    config.model.chat_template = Some(
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
            .into(),
    );
    let (_, inline) = hearth::cli::load_tokenizer(&config).expect("load");
    assert_eq!(
        inline.render(&messages, true).expect("render"),
        "[user] Hi\n[assistant] "
    );
    // From a file, relative to the config file's directory.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("t.jinja"),
        "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
    )
    .expect("write");
    let toml = format!(
        "[model]\npath = {:?}\nchat_template = \"t.jinja\"\n",
        model_path().to_string_lossy()
    );
    std::fs::write(dir.path().join("config.toml"), toml).expect("write");
    let loaded =
        hearth::config::Config::load(Some(&dir.path().join("config.toml"))).expect("config");
    let (_, file) = hearth::cli::load_tokenizer(&loaded).expect("load");
    assert!(file
        .render(&messages, false)
        .expect("render")
        .ends_with("<user>Hi"));
    // A broken template stops the start with a message saying where.
    config.model.chat_template = Some("{% for m in messages %}{{ m.content }".into());
    let err = hearth::cli::load_tokenizer(&config).expect_err("a syntax error");
    assert!(
        format!("{err:#}").contains("model.chat_template"),
        "{err:#}"
    );
    config.model.chat_template = Some(dir.path().join("missing.jinja").to_string_lossy().into());
    let err = hearth::cli::load_tokenizer(&config).expect_err("a missing file");
    assert!(format!("{err:#}").contains("missing.jinja"), "{err:#}");
}
