//! Hearth's own forward pass against Candle's reference `llama` and `mistral` implementations on
//! tiny random-weight safetensors checkpoints the test writes (the GGUF default model cannot
//! exercise the safetensors loader, half-style rotary embeddings or Mistral's sliding window).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use hearth::engine::loader::{load_safetensors, DeviceChoice, LoadError, LoadOptions};

const VOCAB: usize = 96;
const HIDDEN: usize = 64;
const INTER: usize = 112;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;

/// Deterministic pseudo-random numbers (xorshift), scaled like an initialised model.
/// Largest logit difference allowed against candle-transformers' forward: our KV cache is f16
/// (as llama.cpp's), theirs f32 — measured 0.0016–0.0026 on these checkpoints; a real bug (a
/// wrong rotary pairing, mask or head split) shows as whole units.
const CANDLE_TOLERANCE: f32 = 1e-2;

fn random_tensor(shape: &[usize], seed: &mut u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        })
        .map(|x| x * scale)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor")
}

fn write_checkpoint(dir: &Path, arch: &str, tied: bool, sliding_window: Option<usize>) {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ arch.len() as u64 ^ (tied as u64) << 7;
    let mut ts: HashMap<String, Tensor> = HashMap::new();
    let head_dim = HIDDEN / HEADS;
    ts.insert(
        "model.embed_tokens.weight".into(),
        random_tensor(&[VOCAB, HIDDEN], &mut seed, 0.5),
    );
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        let mut put = |name: &str, shape: &[usize], scale: f32| {
            ts.insert(
                format!("{p}.{name}"),
                random_tensor(shape, &mut seed, scale),
            );
        };
        put("self_attn.q_proj.weight", &[HEADS * head_dim, HIDDEN], 0.2);
        put(
            "self_attn.k_proj.weight",
            &[KV_HEADS * head_dim, HIDDEN],
            0.2,
        );
        put(
            "self_attn.v_proj.weight",
            &[KV_HEADS * head_dim, HIDDEN],
            0.2,
        );
        put("self_attn.o_proj.weight", &[HIDDEN, HEADS * head_dim], 0.2);
        put("mlp.gate_proj.weight", &[INTER, HIDDEN], 0.2);
        put("mlp.up_proj.weight", &[INTER, HIDDEN], 0.2);
        put("mlp.down_proj.weight", &[HIDDEN, INTER], 0.2);
        let ln1 = (random_tensor(&[HIDDEN], &mut seed, 0.1) + 1.0).expect("ln");
        let ln2 = (random_tensor(&[HIDDEN], &mut seed, 0.1) + 1.0).expect("ln");
        ts.insert(format!("{p}.input_layernorm.weight"), ln1);
        ts.insert(format!("{p}.post_attention_layernorm.weight"), ln2);
    }
    ts.insert(
        "model.norm.weight".into(),
        (random_tensor(&[HIDDEN], &mut seed, 0.1) + 1.0).expect("norm"),
    );
    if !tied {
        ts.insert(
            "lm_head.weight".into(),
            random_tensor(&[VOCAB, HIDDEN], &mut seed, 0.5),
        );
    }
    candle_core::safetensors::save(&ts, dir.join("model.safetensors")).expect("save");
    let architecture = if arch == "mistral" {
        "MistralForCausalLM"
    } else {
        "LlamaForCausalLM"
    };
    let config = serde_json::json!({
        "architectures": [architecture],
        "model_type": arch,
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 64,
        "tie_word_embeddings": tied,
        "sliding_window": sliding_window,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
}

fn ours(dir: &Path) -> hearth::engine::model::LlamaModel {
    load_safetensors(
        dir,
        &LoadOptions {
            exact: true,
            device: DeviceChoice::Cpu,
        },
    )
    .expect("hearth loads the checkpoint")
    .model
}

fn candle_llama(
    dir: &Path,
    tied: bool,
) -> (
    candle_transformers::models::llama::Llama,
    candle_transformers::models::llama::Config,
) {
    use candle_transformers::models::llama;
    let mut cfg: llama::LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("read"))
            .expect("cfg");
    cfg.tie_word_embeddings = Some(tied);
    let cfg = cfg.into_config(false);
    // SAFETY: test-owned files, not modified while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .expect("vb");
    (llama::Llama::load(vb, &cfg).expect("candle llama"), cfg)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff")
}

const TOKENS: [u32; 12] = [5, 17, 3, 88, 42, 42, 7, 60, 1, 33, 95, 12];

#[test]
fn llama_logits_match_candle_reference_for_prefill_and_decode() {
    for tied in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_checkpoint(dir.path(), "llama", tied, None);
        let model = ours(dir.path());
        let (reference, cfg) = candle_llama(dir.path(), tied);

        // Prefill of 8 tokens, then 4 single-token decode steps, both sides with a cache.
        let mut cache = model.new_cache().expect("cache");
        let mut ref_cache =
            candle_transformers::models::llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu)
                .expect("cache");
        let got = model
            .forward(&TOKENS[..8], &mut cache, false)
            .expect("ours");
        let input = Tensor::new(&TOKENS[..8], &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("in");
        let want = reference
            .forward(&input, 0, &mut ref_cache)
            .and_then(|t| t.squeeze(0))
            .expect("ref");
        let d = max_abs_diff(&got, &want);
        assert!(
            d < CANDLE_TOLERANCE,
            "tied={tied} prefill logits differ by {d}"
        );
        for (i, &t) in TOKENS[8..].iter().enumerate() {
            let got = model.forward(&[t], &mut cache, false).expect("ours");
            let input = Tensor::new(&[t], &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .expect("in");
            let want = reference
                .forward(&input, 8 + i, &mut ref_cache)
                .and_then(|t| t.squeeze(0))
                .expect("ref");
            let d = max_abs_diff(&got, &want);
            assert!(
                d < CANDLE_TOLERANCE,
                "tied={tied} decode step {i} logits differ by {d}"
            );
        }
    }
}

#[test]
fn chunked_prefill_truncate_and_fork_give_the_same_logits_as_one_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_checkpoint(dir.path(), "llama", false, None);
    let model = ours(dir.path());
    let mut full = model.new_cache().expect("cache");
    let all = model.forward(&TOKENS, &mut full, true).expect("full");

    // Three chunks.
    let mut chunked = model.new_cache().expect("cache");
    model
        .forward(&TOKENS[..5], &mut chunked, false)
        .expect("c1");
    model
        .forward(&TOKENS[5..9], &mut chunked, false)
        .expect("c2");
    let last = model
        .forward(&TOKENS[9..], &mut chunked, false)
        .expect("c3");
    let want_last = all.get(TOKENS.len() - 1).expect("row");
    assert!(max_abs_diff(&last, &want_last) < 1e-4);

    // A fork keeps the shared prefix; feeding the suffix matches the full pass.
    let mut fork = full.fork(6).expect("fork");
    assert_eq!(fork.len(), 6);
    let got = model
        .forward(&TOKENS[6..], &mut fork, false)
        .expect("fork suffix");
    assert!(max_abs_diff(&got, &want_last) < 1e-4);

    // Truncating and re-feeding a different continuation does not see the old tokens.
    full.truncate(4);
    let other = [9u32, 9, 9];
    let got = model
        .forward(&other, &mut full, false)
        .expect("after truncate");
    let mut fresh = model.new_cache().expect("cache");
    let mut seq = TOKENS[..4].to_vec();
    seq.extend_from_slice(&other);
    let want = model.forward(&seq, &mut fresh, false).expect("fresh");
    assert!(max_abs_diff(&got, &want) < 1e-4);
}

#[test]
fn mistral_sliding_window_matches_candle_reference() {
    use candle_transformers::models::mistral;
    // Hearth (like Hugging Face and llama.cpp) lets a query see the last `window` positions,
    // itself included; Candle's mistral lets it see `window + 1`. So Hearth with window W is
    // compared with Candle configured with W - 1, on a sequence longer than the window.
    const WINDOW: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    write_checkpoint(dir.path(), "mistral", false, Some(WINDOW));
    let model = ours(dir.path());
    assert_eq!(model.config().sliding_window, Some(WINDOW));
    let mut cfg: mistral::Config = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("config.json")).expect("read"),
    )
    .expect("mistral cfg");
    cfg.sliding_window = Some(WINDOW - 1);
    // SAFETY: test-owned files, not modified while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .expect("vb");
    let mut reference = mistral::Model::new(&cfg, vb).expect("candle mistral");
    let input = Tensor::new(&TOKENS[..], &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("in");
    let want = reference
        .forward(&input, 0)
        .and_then(|t| t.squeeze(0))
        .and_then(|t| t.squeeze(0))
        .expect("ref");
    let mut cache = model.new_cache().expect("cache");
    let got = model.forward(&TOKENS, &mut cache, false).expect("ours");
    let d = max_abs_diff(&got, &want);
    assert!(d < CANDLE_TOLERANCE, "logits differ by {d}");

    // The window matters: without it the logits are different.
    let dir2 = tempfile::tempdir().expect("tempdir");
    write_checkpoint(dir2.path(), "mistral", false, None);
    let unwindowed = ours(dir2.path());
    let mut cache = unwindowed.new_cache().expect("cache");
    let full = unwindowed
        .forward(&TOKENS, &mut cache, false)
        .expect("ours");
    assert!(
        max_abs_diff(&full, &got) > 1e-3,
        "the sliding window had no effect"
    );

    // Token-by-token decoding with the window gives the same last logits as one pass.
    let mut cache = model.new_cache().expect("cache");
    let mut last = None;
    for &t in &TOKENS {
        last = Some(model.forward(&[t], &mut cache, false).expect("step"));
    }
    let d = max_abs_diff(&last.expect("logits"), &got);
    assert!(d < 1e-4, "incremental decode with window differs by {d}");
}

#[test]
fn broken_checkpoints_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No config.json.
    let err = load_safetensors(dir.path(), &LoadOptions::default())
        .err()
        .expect("error");
    assert!(matches!(err, LoadError::Open { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");

    // Unknown architecture.
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures":["GPT2LMHeadModel"],"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":8}"#,
    )
    .expect("write");
    let err = load_safetensors(dir.path(), &LoadOptions::default())
        .err()
        .expect("error");
    assert!(err.to_string().contains("GPT2LMHeadModel"), "{err}");

    // Valid config but no weights.
    write_checkpoint(dir.path(), "llama", false, None);
    std::fs::remove_file(dir.path().join("model.safetensors")).expect("rm");
    let err = load_safetensors(dir.path(), &LoadOptions::default())
        .err()
        .expect("error");
    assert!(err.to_string().contains("safetensors"), "{err}");

    // Truncated weights file.
    write_checkpoint(dir.path(), "llama", false, None);
    let f = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&f).expect("meta").len();
    let data = std::fs::read(&f).expect("read");
    std::fs::write(&f, &data[..(len / 2) as usize]).expect("truncate");
    let err = load_safetensors(dir.path(), &LoadOptions::default())
        .err()
        .expect("error");
    assert!(
        err.to_string().contains("model.safetensors")
            || err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );

    // A tensor missing from the checkpoint.
    let dir = tempfile::tempdir().expect("tempdir");
    write_checkpoint(dir.path(), "llama", true, None);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).expect("r"))
            .expect("j");
    cfg["tie_word_embeddings"] = serde_json::json!(false);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).expect("w");
    let err = load_safetensors(dir.path(), &LoadOptions::default())
        .err()
        .expect("error");
    assert!(err.to_string().contains("lm_head.weight"), "{err}");
}

#[test]
fn batched_decode_matches_one_sequence_at_a_time() {
    for (arch, window) in [("llama", None), ("mistral", Some(4))] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_checkpoint(dir.path(), arch, false, window);
        let model = ours(dir.path());
        // Three sequences at different positions.
        let prompts: [&[u32]; 3] = [&TOKENS[..3], &TOKENS[2..9], &TOKENS[..6]];
        let mut caches: Vec<_> = prompts
            .iter()
            .map(|p| {
                let mut c = model.new_cache().expect("cache");
                model.forward(p, &mut c, false).expect("prefill");
                c
            })
            .collect();
        let mut singles: Vec<_> = caches
            .iter()
            .map(|c| c.fork(c.len()).expect("fork"))
            .collect();
        for step in 0..3u32 {
            let next = [7 + step, 40 + step, 90 - step];
            let mut refs: Vec<&mut _> = caches.iter_mut().collect();
            let batched = model.forward_decode_batch(&next, &mut refs).expect("batch");
            for (i, cache) in singles.iter_mut().enumerate() {
                let one = model.forward(&[next[i]], cache, false).expect("single");
                let row = batched.get(i).expect("row");
                let d = max_abs_diff(&one, &row);
                assert!(d < 1e-4, "{arch}: sequence {i} step {step} differs by {d}");
            }
        }
        for (c, s) in caches.iter().zip(&singles) {
            assert_eq!(c.tokens(), s.tokens());
        }
    }
}
