//! The forward pass, with weights exactly as shipped, against llama.cpp's reference outputs for
//! the default model (tests/fixtures/smollm2-q4_1-llamacpp.json).

use crate::common;

use hearth::engine::model::{KvType, LlamaModel};

fn top2(v: &[f32]) -> Top2 {
    let mut best = (0u32, f32::NEG_INFINITY);
    let mut second = (0u32, f32::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            second = best;
            best = (i as u32, x);
        } else if x > second.1 {
            second = (i as u32, x);
        }
    }
    (best, second)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Best and runner-up `(id, logit)` of one step.
type Top2 = ((u32, f32), (u32, f32));

/// Greedy-decode `n` tokens; returns ids and the (top1, top2) logits of each step.
fn greedy(model: &LlamaModel, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<Top2>, Vec<f32>) {
    let mut cache = model.new_cache().expect("cache");
    let first: Vec<f32> = model
        .forward(prompt, &mut cache, false)
        .and_then(|l| l.to_vec1())
        .expect("prefill");
    let mut logits = first.clone();
    let mut out = Vec::new();
    let mut tops = Vec::new();
    for _ in 0..n {
        let t = top2(&logits);
        tops.push(t);
        out.push(t.0 .0);
        logits = model
            .forward(&[t.0 .0], &mut cache, false)
            .and_then(|l| l.to_vec1())
            .expect("decode");
    }
    (out, tops, first)
}

#[test]
fn exact_mode_first_step_logits_match_llama_cpp_top5() {
    let engine = common::exact_engine();
    let r = common::reference();
    for chat in r["chats"].as_array().expect("chats") {
        let prompt = ids(&chat["prompt_ids"]);
        let (_, _, first) = greedy(engine.model(), &prompt, 0);
        for entry in chat["first_step_top5"].as_array().expect("top5") {
            let id = entry["id"].as_u64().expect("id") as usize;
            let want = entry["logit"].as_f64().expect("logit") as f32;
            let got = first[id];
            // llama.cpp keeps K/V in f16 and sums in another order; measured differences on
            // these 15 logits are 0.006–0.30, so 0.35 catches any real bug (they show as whole
            // units) without flaking on rounding.
            assert!(
                (got - want).abs() < 0.35,
                "token {id}: our logit {got} vs llama.cpp {want}"
            );
        }
    }
}

#[test]
fn exact_greedy_matches_llama_cpp_for_first_16_tokens() {
    let engine = common::exact_engine();
    let r = common::reference();
    for chat in r["chats"].as_array().expect("chats") {
        let prompt = ids(&chat["prompt_ids"]);
        let want = ids(&chat["greedy_ids"]);
        let (got, tops, _) = greedy(engine.model(), &prompt, 16);
        for i in 0..16 {
            if got[i] == want[i] {
                continue;
            }
            // Where llama.cpp (f16 KV cache, other summation order) and we differ, the step
            // must be a near-tie in our logits, with llama.cpp's token our runner-up; after it
            // the sequences diverge. Near: closer than the logits' own spread between two exact
            // implementations — single logits differ from llama.cpp's by up to 0.30 (the test
            // above), and the same weights computed unquantized in f32 already part from
            // llama.cpp at step 0 of chat 0 on a gap of 0.085 (measured).
            let ((_, l1), (id2, l2)) = tops[i];
            assert!(
                l1 - l2 < 0.3 && id2 == want[i],
                "step {i}: got {} want {} (our top-2 gap {:.4}, runner-up {id2})\n got {got:?}\nwant {:?}",
                got[i],
                want[i],
                l1 - l2,
                &want[..16]
            );
            eprintln!(
                "near-tie at step {i}: ours {} vs llama.cpp {} (gap {:.4}); stopped comparing",
                got[i],
                want[i],
                l1 - l2
            );
            break;
        }
    }
}

/// The logits of `steps` greedy decode steps after `prompt`, fed to the model in prompt chunks of
/// `chunk` tokens, optionally from a cache forked off another sequence that shared `reuse` tokens.
fn logits_trace(
    model: &LlamaModel,
    prompt: &[u32],
    chunk: usize,
    reuse: Option<usize>,
    steps: usize,
) -> Vec<Vec<f32>> {
    let mut cache = match reuse {
        Some(n) => {
            let mut donor = model.new_cache().expect("cache");
            model
                .forward(prompt, &mut donor, false)
                .expect("donor prefill");
            donor.fork(n).expect("fork")
        }
        None => model.new_cache().expect("cache"),
    };
    let mut last = Vec::new();
    for part in prompt[cache.len()..].chunks(chunk) {
        last = model
            .forward(part, &mut cache, false)
            .and_then(|l| l.to_vec1())
            .expect("prefill");
    }
    let mut trace = vec![last];
    for _ in 0..steps {
        let next = top2(trace.last().expect("logits")).0 .0;
        let logits = model
            .forward(&[next], &mut cache, false)
            .and_then(|l| l.to_vec1())
            .expect("decode");
        trace.push(logits);
    }
    trace
}

fn bits(trace: &[Vec<f32>]) -> Vec<Vec<u32>> {
    trace
        .iter()
        .map(|l| l.iter().map(|x| x.to_bits()).collect())
        .collect()
}

#[test]
fn a_sequence_gets_bit_identical_logits_alone_chunked_batched_and_after_a_prefix_hit() {
    let engine = common::fast_engine();
    assert_batch_invariant(engine.model());
}

#[test]
fn a_q8_0_kv_cache_stays_close_to_f16_and_batch_invariant() {
    let engine = common::q8_kv_engine();
    let model = engine.model();
    assert_eq!(model.kv_type(), KvType::Q8_0);
    let r = common::reference();
    for chat in r["chats"].as_array().expect("chats") {
        let prompt = ids(&chat["prompt_ids"]);
        let (_, _, first) = greedy(model, &prompt, 0);
        for entry in chat["first_step_top5"].as_array().expect("top5") {
            let id = entry["id"].as_u64().expect("id") as usize;
            let want = entry["logit"].as_f64().expect("logit") as f32;
            // The f16 cache is within 0.35 of llama.cpp (above); 8-bit keys and values add
            // their own rounding (measured: 0.004–0.63, mean 0.26), still far from the whole
            // units a bug shows as.
            assert!(
                (first[id] - want).abs() < 0.8,
                "token {id}: our logit {} vs llama.cpp {want}",
                first[id]
            );
        }
    }
    // Positions per KV chunk are 64: a 150-token prompt spans three.
    let long: Vec<u32> = (0..150).map(|i| 200 + (i * 7919) % 20_000).collect();
    let q8 = cache_bytes(model, &long, KvType::Q8_0);
    let cfg = model.config();
    let f16 = cfg.num_layers * long.len() * cfg.num_kv_heads * cfg.head_dim * 2 * 2;
    assert!(
        q8 * 100 <= f16 * 55,
        "q8_0 cache {q8} bytes against {f16} in f16"
    );
    assert_batch_invariant(model);
}

/// Bytes one sequence's cache holds after `prompt`.
fn cache_bytes(model: &LlamaModel, prompt: &[u32], ty: KvType) -> usize {
    assert_eq!(model.kv_type(), ty);
    let mut cache = model.new_cache().expect("cache");
    model.forward(prompt, &mut cache, false).expect("prefill");
    cache.size_in_bytes()
}

fn assert_batch_invariant(model: &LlamaModel) {
    let r = common::reference();
    let prompts: Vec<Vec<u32>> = r["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .map(|c| ids(&c["prompt_ids"]))
        .collect();
    // The third chat, then 100 more positions: its prompt chunks cross attention's 64-position
    // chunks.
    let mut target = prompts[2].clone();
    target.extend((0..100).map(|i| 200 + (i * 7919) % 20_000));
    let target = &target;
    let steps = 12;
    let alone = bits(&logits_trace(model, target, target.len(), None, steps));
    for chunk in [1, 5, 16] {
        let chunked = bits(&logits_trace(model, target, chunk, None, steps));
        assert!(
            chunked == alone,
            "prompt in chunks of {chunk} changed the logits"
        );
    }
    // A prefix-cache hit: the first 41 positions (all but the last prompt token) come from
    // another request's cache, as the server's prefix cache hands them out.
    for reuse in [target.len() - 1, 10] {
        let hit = bits(&logits_trace(model, target, 512, Some(reuse), steps));
        assert!(
            hit == alone,
            "a prefix hit of {reuse} tokens changed the logits"
        );
    }
    // Batched with 7 other sequences at other positions: the target is row 3 of every step.
    let others: Vec<Vec<u32>> = (0..7)
        .map(|i| {
            let p = &prompts[i % 2];
            p[..p.len() - i].to_vec()
        })
        .collect();
    let mut caches = Vec::new();
    let mut next = Vec::new();
    let mut target_trace = Vec::new();
    for (i, p) in others
        .iter()
        .take(3)
        .chain([target])
        .chain(others.iter().skip(3))
        .enumerate()
    {
        let mut cache = model.new_cache().expect("cache");
        let logits: Vec<f32> = model
            .forward(p, &mut cache, false)
            .and_then(|l| l.to_vec1())
            .expect("prefill");
        next.push(top2(&logits).0 .0);
        if i == 3 {
            target_trace.push(logits);
        }
        caches.push(cache);
    }
    for _ in 0..steps {
        let mut refs: Vec<&mut hearth::engine::model::SeqCache> = caches.iter_mut().collect();
        let logits = model
            .forward_decode_batch(&next, &mut refs)
            .and_then(|l| l.to_vec2::<f32>())
            .expect("batched decode");
        next = logits.iter().map(|l| top2(l).0 .0).collect();
        target_trace.push(logits[3].clone());
    }
    assert!(
        bits(&target_trace) == alone,
        "decoding batched with 7 others changed the logits"
    );
}
