//! The `hearth` binary end to end: generate, tokenize, template, inspect, and its errors.

use crate::common;

use std::process::{Command, Output};

// Each command loads the model with all cores; run them one at a time.

fn hearth(args: &[&str]) -> Output {
    let _guard = common::serial();
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .args(["--model"])
        .arg(common::model_path())
        .args(args)
        .output()
        .expect("run hearth")
}

fn hearth_plain(args: &[&str]) -> Output {
    let _guard = common::serial();
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .args(args)
        .output()
        .expect("run hearth")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "hearth failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn messages_file(dir: &tempfile::TempDir, messages: &serde_json::Value) -> String {
    let p = dir.path().join("messages.json");
    std::fs::write(&p, messages.to_string()).expect("write");
    p.to_string_lossy().into_owned()
}

#[test]
fn generate_json_in_exact_mode_gives_reference_prompt_and_greedy_ids() {
    let r = common::reference();
    let chat = &r["chats"][2];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = messages_file(&dir, &chat["messages"]);
    let out = hearth(&[
        "generate",
        "--messages",
        &file,
        "--exact",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(v["prompt_ids"], chat["prompt_ids"]);
    let want: Vec<u64> = serde_json::from_value(chat["greedy_ids"].clone()).expect("ids");
    let got: Vec<u64> = serde_json::from_value(v["ids"].clone()).expect("ids");
    assert_eq!(got, want[..12]);
    assert_eq!(v["finish_reason"], "length");
    assert!(v["text"]
        .as_str()
        .expect("text")
        .starts_with("```python\ndef square"));
    assert!(v["prompt_tokens_per_s"].as_f64().expect("rate") > 0.0);
    assert!(v["decode_tokens_per_s"].as_f64().expect("rate") > 0.0);
}

#[test]
fn generate_streams_plain_text_and_honours_stop() {
    let out = hearth(&[
        "generate",
        "--prompt",
        "What is the capital of France?",
        "--exact",
        "--temperature",
        "0",
        "--max-tokens",
        "20",
        "--stop",
        ", la ",
    ]);
    assert_eq!(stdout(&out), "L'Étoile\n");
}

#[test]
fn tokenize_prints_the_reference_ids_with_and_without_special_parsing() {
    let r = common::reference();
    let entry = r["tokenization"]
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["text"] == "Text with <|im_end|> inside")
        .expect("entry")
        .clone();
    let plain: serde_json::Value =
        serde_json::from_str(stdout(&hearth(&["tokenize", "Text with <|im_end|> inside"])).trim())
            .expect("json");
    assert_eq!(plain, entry["ids_plain"]);
    let special: serde_json::Value = serde_json::from_str(
        stdout(&hearth(&[
            "tokenize",
            "--special",
            "Text with <|im_end|> inside",
        ]))
        .trim(),
    )
    .expect("json");
    assert_eq!(special, entry["ids_special"]);
}

#[test]
fn template_prints_the_reference_prompt() {
    let r = common::reference();
    let chat = &r["chats"][1];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = messages_file(&dir, &chat["messages"]);
    assert_eq!(
        stdout(&hearth(&["template", "--messages", &file])),
        chat["prompt_text"].as_str().expect("text")
    );
}

#[test]
fn inspect_reports_architecture_sizes_quantization_context_and_template() {
    let out = hearth_plain(&["inspect", &common::model_path().to_string_lossy()]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["config"]["context_length"], 8192);
    assert_eq!(v["config"]["num_layers"], 30);
    assert_eq!(v["config"]["hidden_size"], 576);
    assert_eq!(v["file"]["tensor_types"]["Q4_1"], 210);
    assert_eq!(v["tokenizer"]["eos"], 2);
    assert!(v["chat_template"]["source"]
        .as_str()
        .expect("template")
        .contains("<|im_start|>"));
}

#[test]
fn bad_input_fails_with_a_clear_message_and_no_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["generate".into()], "--prompt"),
        (
            vec![
                "generate".into(),
                "--messages".into(),
                "/nonexistent/m.json".into(),
            ],
            "/nonexistent/m.json",
        ),
        (
            vec!["generate".into(), "--messages".into(), {
                let p = dir.path().join("bad.json");
                std::fs::write(&p, "{not json").expect("write");
                p.to_string_lossy().into_owned()
            }],
            "not valid JSON",
        ),
        (
            vec!["generate".into(), "--messages".into(), {
                let p = dir.path().join("shape.json");
                std::fs::write(&p, r#"[{"role": 3}]"#).expect("write");
                p.to_string_lossy().into_owned()
            }],
            "messages",
        ),
        (
            vec![
                "generate".into(),
                "--prompt".into(),
                "hi".into(),
                "--max-tokens".into(),
                "0".into(),
            ],
            "max-tokens",
        ),
        (
            vec![
                "generate".into(),
                "--prompt".into(),
                "hi".into(),
                "--top-p".into(),
                "7".into(),
            ],
            "top_p",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = hearth(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr does not mention {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
    let out = hearth_plain(&["inspect", "/nonexistent/model.gguf"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
}
