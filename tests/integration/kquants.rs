//! Files in other quantizations than the default model's: the default model's weights
//! re-quantized to K-quants (where a row length fits their 256-value blocks) and to mixed types
//! inside one fused projection, as llama.cpp's `Q4_K_M` recipe ships them. Hearth's kernels
//! must run them as shipped, and agree with an independent implementation: Candle's
//! `quantized_llama` on the same file.

use std::path::PathBuf;

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{Device, Tensor};
use hearth::engine::loader::{load_gguf, DeviceChoice, LoadOptions};
use hearth::engine::requantize::requantize_gguf;

use crate::common;

/// The default model with each matrix but the embedding re-quantized to `pick(name)` (Q5_0
/// where a K-quant's 256-value blocks do not fit the row), written once under
/// `target/test-models/`.
fn requantized(label: &str, pick: fn(&str) -> GgmlDType) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-models");
    let out = dir.join(format!("SmolLM2-135M-Instruct.{label}.gguf"));
    if !out.exists() {
        std::fs::create_dir_all(&dir).expect("test model dir");
        requantize_gguf(&common::model_path(), &out, |name| {
            (name != "token_embd.weight").then(|| pick(name))
        })
        .expect("write the re-quantized model");
    }
    out
}

/// The recipe of llama.cpp's Q4_K_M, as far as this model's rows allow: Q4_K, with Q6_K for the
/// attention values and the MLP's down projection; values then differ in type from the
/// queries and keys they are fused with.
fn q4_k_m(name: &str) -> GgmlDType {
    if name.contains("attn_v") {
        GgmlDType::Q8_0
    } else if name.contains("ffn_down") {
        GgmlDType::Q6K
    } else {
        GgmlDType::Q4K
    }
}

/// The first-step logits of a chat prompt, ours and Candle's `quantized_llama` on `path`.
fn both_logits(path: &std::path::Path, prompt: &[u32]) -> (Vec<f32>, Vec<f32>) {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let ours = load_gguf(
        path,
        &LoadOptions {
            exact: true,
            device: DeviceChoice::Cpu,
        },
    )
    .expect("load")
    .model;
    let mut cache = ours.new_cache().expect("cache");
    let a = ours
        .forward(prompt, &mut cache, false)
        .and_then(|l| l.to_vec1())
        .expect("ours");
    let mut file = std::fs::File::open(path).expect("open");
    let content = gguf_file::Content::read(&mut file).expect("gguf");
    let mut theirs = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).expect("candle");
    let input = Tensor::new(prompt, &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("input");
    let b = theirs
        .forward(&input, 0)
        .and_then(|l| l.squeeze(0))
        .and_then(|l| l.to_vec1())
        .expect("candle");
    (a, b)
}

#[test]
fn k_quant_and_mixed_type_files_run_as_shipped_and_agree_with_candle() {
    let _turn = common::serial();
    let r = common::reference();
    let prompt: Vec<u32> = r["chats"][0]["prompt_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    for (label, pick) in [
        ("q4_k_m", q4_k_m as fn(&str) -> GgmlDType),
        ("q5_k", |_: &str| GgmlDType::Q5K),
    ] {
        let path = requantized(label, pick);
        let model = load_gguf(
            &path,
            &LoadOptions {
                exact: true,
                device: DeviceChoice::Cpu,
            },
        )
        .expect("load")
        .model;
        let kernels = model.describe_matrices();
        let down = if label == "q4_k_m" { "Q6_K" } else { "Q5_K" };
        assert!(
            kernels
                .iter()
                .any(|k| k.starts_with(&format!("ffn_down {down} ("))),
            "{kernels:?}"
        );
        if label == "q4_k_m" {
            assert!(
                kernels
                    .iter()
                    .any(|k| k.starts_with("attn_qkv Q5_0+Q5_0+Q8_0 (")),
                "{kernels:?}"
            );
        }
        assert!(!kernels.iter().any(|k| k.contains("candle")), "{kernels:?}");
        drop(model);
        let (ours, candle) = both_logits(&path, &prompt);
        let mut top: Vec<usize> = (0..candle.len()).collect();
        top.sort_by(|&a, &b| candle[b].total_cmp(&candle[a]));
        let worst = top[..10]
            .iter()
            .map(|&i| (ours[i] - candle[i]).abs())
            .fold(0f32, f32::max);
        // Candle quantizes activations per 256 values for K-quants (Hearth per 32) and keeps an
        // f32 cache; on the shipped Q4_1 file the two differ by up to 0.53 here (measured),
        // on these files by up to 0.63. A misread block shows as whole units.
        assert!(
            worst < 1.0,
            "{label}: top-10 logits differ from Candle's by up to {worst}"
        );
        // Our greedy token is Candle's best or a near-tie of it (measured: 0.28 below).
        let ours_best = (0..ours.len())
            .max_by(|&a, &b| ours[a].total_cmp(&ours[b]))
            .expect("logits");
        assert!(
            candle[ours_best] > candle[top[0]] - 0.5,
            "{label}: our greedy token {ours_best} is {} below Candle's best {}",
            candle[top[0]] - candle[ours_best],
            top[0]
        );
    }
}
