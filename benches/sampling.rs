//! Cost of one sampling step on the default model's vocabulary, plain against grammar-constrained
//! (`response_format` `json_object` and `json_schema`), in the same process, and the time to
//! compile a schema. The constrained step masks every token the grammar forbids before
//! sampling; this bench says what that costs per token, once a state's mask is cached and on
//! its first visit. The logits are the model's own for a JSON answer, so the sampler's filters
//! see a real distribution.
//!
//! Run: `cargo bench --bench sampling` (set `HEARTH_BENCH_QUICK=1` for a short run).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hearth::engine::grammar::mask::{GrammarConstraint, GrammarMasks, TokenTrie};
use hearth::engine::grammar::schema;
use hearth::engine::loader::{load_gguf, read_gguf_header, DeviceChoice, LoadOptions};
use hearth::engine::sampler::{Sampler, SamplingParams};
use hearth::engine::tokenizer::Tokenizer;

fn model_path() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

/// Real next-token logits: the model's answer to a chat prompt asking for JSON.
fn logits(tokenizer: &Tokenizer) -> Vec<f32> {
    let model = load_gguf(
        &model_path(),
        &LoadOptions {
            exact: false,
            device: DeviceChoice::Cpu,
        },
    )
    .expect("load the model")
    .model;
    let prompt =
        "<|im_start|>user\nDescribe a cat as JSON.<|im_end|>\n<|im_start|>assistant\n{\"name\": \"";
    let ids = tokenizer.encode(prompt, false, true).expect("encode");
    let mut cache = model.new_cache().expect("cache");
    model
        .forward(&ids, &mut cache, false)
        .and_then(|t| t.to_vec1())
        .expect("forward")
}

/// A schema of the kind SDKs generate from a typed model.
fn person_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "email": {"type": "string", "format": "email"},
            "role": {"enum": ["admin", "editor", "viewer"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        },
        "required": ["name", "age", "role", "tags"],
        "additionalProperties": false,
    })
}

fn masks(schema: &serde_json::Value) -> Arc<GrammarMasks> {
    let compiled = schema::compile(schema, true, 200_000).expect("the schema compiles");
    Arc::new(GrammarMasks::new(compiled.grammar))
}

/// A constraint advanced through `text` token by token (the text's own tokenization).
fn constraint_after(
    tokenizer: &Tokenizer,
    trie: &Arc<TokenTrie>,
    masks: &Arc<GrammarMasks>,
    text: &str,
) -> GrammarConstraint {
    let mut c = GrammarConstraint::new(masks.clone(), trie.clone());
    for id in tokenizer.encode(text, false, false).expect("encode") {
        assert!(c.advance(id), "{text:?} is a prefix the grammar allows");
    }
    c
}

fn benches(c: &mut Criterion) {
    let header = read_gguf_header(&model_path()).expect("read the model (scripts/fetch-model.sh)");
    let tokenizer = Tokenizer::from_gguf(&header).expect("tokenizer");
    let trie = Arc::new(TokenTrie::new(&tokenizer));
    let object = masks(&serde_json::json!({"type": "object"}));
    let person = masks(&person_schema());
    let base = logits(&tokenizer);
    let history: Vec<u32> = (0..64).collect();
    let params = SamplingParams {
        temperature: 0.8,
        top_p: 0.95,
        seed: Some(1),
        ..SamplingParams::default()
    };

    let mut g = c.benchmark_group("sample_step");
    let mut sampler = Sampler::new(params.clone());
    g.bench_function("plain", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |l| sampler.sample(l, &history),
            BatchSize::SmallInput,
        )
    });
    // Inside a string value almost every token is allowed (the most checking work); after a
    // key's colon only value starts are; a schema's enum admits a handful.
    for (label, grammar, prefix) in [
        ("json_in_string", &object, "{\"name\": \"Ali"),
        ("json_after_colon", &object, "{\"name\":"),
        ("schema_in_string", &person, "{\"name\": \"Ali"),
        (
            "schema_in_enum",
            &person,
            "{\"name\": \"Alice\", \"age\": 30, \"role\": \"ed",
        ),
    ] {
        let mut constraint = constraint_after(&tokenizer, &trie, grammar, prefix);
        let mut sampler = Sampler::new(params.clone());
        g.bench_function(label, |b| {
            b.iter_batched_ref(
                || base.clone(),
                |l| {
                    constraint.mask(l);
                    sampler.sample(l, &history)
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The first visit of a state computes its allowed set (then cached for every sequence).
    for (label, make, prefix) in [
        (
            "json_in_string_first_visit",
            serde_json::json!({"type": "object"}),
            "{\"name\": \"Ali",
        ),
        (
            "schema_in_string_first_visit",
            person_schema(),
            "{\"name\": \"Ali",
        ),
    ] {
        g.bench_function(label, |b| {
            b.iter_batched(
                || {
                    let fresh = masks(&make);
                    let c = constraint_after(&tokenizer, &trie, &fresh, prefix);
                    (c, base.clone(), Sampler::new(params.clone()))
                },
                |(mut c, mut l, mut s)| {
                    c.mask(&mut l);
                    s.sample(&l, &history)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    let mut g = c.benchmark_group("schema");
    let person = person_schema();
    g.bench_function("compile_person", |b| {
        b.iter(|| schema::compile(&person, true, 200_000).expect("compiles"))
    });
    g.finish();
}

fn config() -> Criterion {
    let quick = std::env::var_os("HEARTH_BENCH_QUICK").is_some();
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(if quick { 2 } else { 5 }))
}

criterion_group! {
    name = sampling;
    config = config();
    targets = benches
}
criterion_main!(sampling);
