//! Prompt-processing and decode throughput of the default model: Hearth against Candle's own
//! `quantized_llama` on the same file in the same process, then Hearth on the same model
//! re-quantized to Q4_0, Q8_0 and Q4_K (written once under `target/bench-models/`). Criterion
//! reports time per iteration and tokens/s; the ratios between groups are the figures we quote.
//!
//! Run: `cargo bench --bench engine` (`HEARTH_BENCH_QUICK=1` for a short run,
//! `HEARTH_BENCH_QUANTS=0` for the shipped file only).

use std::path::PathBuf;
use std::time::Duration;

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hearth::engine::loader::{load_gguf, DeviceChoice, LoadOptions};
use hearth::engine::model::LlamaModel;
use hearth::engine::requantize::requantize_gguf;

const PROMPT_TOKENS: usize = 128;
const DECODE_TOKENS: usize = 64;

fn model_path() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

/// Deterministic, plausible token ids (ordinary vocabulary range).
fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 200 + (i * 7919) % 20_000).collect()
}

fn load(path: &std::path::Path) -> LlamaModel {
    load_gguf(
        path,
        &LoadOptions {
            exact: true,
            device: DeviceChoice::Cpu,
        },
    )
    .expect("load the model (run scripts/fetch-model.sh first)")
    .model
}

/// `DECODE_TOKENS` single-token greedy steps starting from `first`.
fn greedy_decode(
    model: &LlamaModel,
    cache: &mut hearth::engine::model::SeqCache,
    first: u32,
) -> u32 {
    let mut t = first;
    for _ in 0..DECODE_TOKENS {
        let logits = model.forward(&[t], cache, false).expect("decode");
        t = logits
            .argmax(0)
            .and_then(|x| x.to_scalar::<u32>())
            .expect("argmax");
    }
    t
}

fn bench_ours(c: &mut Criterion, label: &str, model: &LlamaModel) {
    let ids = prompt(PROMPT_TOKENS);
    let mut g = c.benchmark_group(format!("prompt_{PROMPT_TOKENS}"));
    g.throughput(Throughput::Elements(PROMPT_TOKENS as u64));
    g.bench_function(label, |b| {
        b.iter(|| {
            let mut cache = model.new_cache().expect("cache");
            model.forward(&ids, &mut cache, false).expect("forward")
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("decode_{DECODE_TOKENS}"));
    g.throughput(Throughput::Elements(DECODE_TOKENS as u64));
    g.bench_function(label, |b| {
        b.iter(|| {
            let mut cache = model.new_cache().expect("cache");
            greedy_decode(model, &mut cache, ids[0])
        })
    });
    g.finish();
}

/// The reference workload: a 256-token prompt, then 64 decode steps at that context.
fn bench_ours_at_context(c: &mut Criterion, label: &str, model: &LlamaModel) {
    let ids = prompt(256);
    let mut g = c.benchmark_group("prompt_256");
    g.throughput(Throughput::Elements(256));
    g.bench_function(label, |b| {
        b.iter(|| {
            let mut cache = model.new_cache().expect("cache");
            model.forward(&ids, &mut cache, false).expect("forward")
        })
    });
    g.finish();
    let mut g = c.benchmark_group(format!("decode_{DECODE_TOKENS}_after_256"));
    g.throughput(Throughput::Elements(DECODE_TOKENS as u64));
    let mut cache = model.new_cache().expect("cache");
    model.forward(&ids, &mut cache, false).expect("prefill");
    g.bench_function(label, |b| {
        b.iter(|| {
            cache.truncate(256);
            greedy_decode(model, &mut cache, ids[0])
        })
    });
    g.finish();
}

fn bench_candle_quantized_llama(c: &mut Criterion) {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let path = model_path();
    let mut file = std::fs::File::open(&path).expect("open");
    let content = gguf_file::Content::read(&mut file).expect("gguf");
    let mut model = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).expect("candle load");
    let ids = prompt(PROMPT_TOKENS);
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("t");
    let mut g = c.benchmark_group(format!("prompt_{PROMPT_TOKENS}"));
    g.throughput(Throughput::Elements(PROMPT_TOKENS as u64));
    g.bench_function("candle_quantized_llama", |b| {
        b.iter(|| model.forward(&input, 0).expect("forward"))
    });
    g.finish();
    let mut g = c.benchmark_group(format!("decode_{DECODE_TOKENS}"));
    g.throughput(Throughput::Elements(DECODE_TOKENS as u64));
    g.bench_function("candle_quantized_llama", |b| {
        b.iter(|| {
            // One token at a time from position 0, exactly like the Hearth groups.
            let mut t = ids[0];
            for i in 0..DECODE_TOKENS {
                let x = Tensor::new(&[t], &Device::Cpu)
                    .and_then(|x| x.unsqueeze(0))
                    .expect("t");
                let logits = model.forward(&x, i).expect("decode");
                t = logits
                    .squeeze(0)
                    .and_then(|l| l.argmax(0))
                    .and_then(|x| x.to_scalar::<u32>())
                    .expect("argmax");
            }
            t
        })
    });
    g.finish();
}

/// The default model re-quantized to `ty` (every 2-D weight; Q5_0 where a row length does not
/// fit `ty`'s blocks, as llama.cpp's quantizer does), written once under `target/`.
fn requantized(ty: GgmlDType) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-models");
    let out = dir.join(format!("SmolLM2-135M-Instruct.{ty:?}.gguf"));
    if !out.exists() {
        std::fs::create_dir_all(&dir).expect("bench model dir");
        requantize_gguf(&model_path(), &out, |_| Some(ty)).expect("write the re-quantized model");
    }
    out
}

fn benches(c: &mut Criterion) {
    let shipped = load(&model_path());
    bench_ours(c, "hearth", &shipped);
    bench_ours_at_context(c, "hearth", &shipped);
    drop(shipped);
    bench_candle_quantized_llama(c);
    if std::env::var_os("HEARTH_BENCH_QUANTS").is_some_and(|v| v == "0") {
        return;
    }
    // The shipped file is Q4_1 (with a Q8_0 embedding); the other formats on the same shape.
    for ty in [GgmlDType::Q4_0, GgmlDType::Q8_0, GgmlDType::Q4K] {
        let model = load(&requantized(ty));
        bench_ours(c, &format!("hearth_{ty:?}"), &model);
    }
}

fn config() -> Criterion {
    let quick = std::env::var_os("HEARTH_BENCH_QUICK").is_some();
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(if quick { 1 } else { 3 }))
        .measurement_time(Duration::from_secs(if quick { 5 } else { 15 }))
}

criterion_group! {
    name = engine;
    config = config();
    targets = benches
}
criterion_main!(engine);
