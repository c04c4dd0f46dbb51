//! The forward pass, with weights exactly as shipped, against llama.cpp's reference outputs for
//! the default model (tests/fixtures/smollm2-q4_1-llamacpp.json).

use crate::common;

use hearth::engine::model::LlamaModel;

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
            // must be a genuine near-tie in our logits; after it the sequences diverge.
            let ((_, l1), (id2, l2)) = tops[i];
            assert!(
                l1 - l2 < 0.1 && id2 == want[i],
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
