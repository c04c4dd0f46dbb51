//! Token sampling: turns one step's logits into the next token id.
//!
//! This module owns pure logits processing on plain `&[f32]` slices (no Candle types), so it can
//! be tested exhaustively on tiny hand-written vectors. The chain follows llama.cpp's default
//! order:
//!
//! 1. logit bias (`logit_bias`, added to the raw logits),
//! 2. penalties over the last `penalty_last_n` tokens (repetition, then frequency and presence),
//! 3. greedy argmax when `temperature == 0` or `top_k == 1` (ties go to the lowest id),
//! 4. otherwise top-k → top-p → min-p (all three judged on the untempered distribution) →
//!    temperature → softmax → a seeded draw.
//!
//! NaN logits are treated as `-inf` (never chosen) and `+inf` as the largest finite float, so no
//! input can make sampling panic.

use std::cmp::Ordering;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Why a set of [`SamplingParams`] was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// One parameter is out of range; `param` is its API name (e.g. `"top_p"`).
    #[error("invalid sampling parameter `{param}`: {message}")]
    InvalidParam {
        /// The offending parameter's name, as spelled in the API.
        param: &'static str,
        /// What is wrong with it, including the accepted range.
        message: String,
    },
}

/// Every knob of the sampling chain. See the module docs for the order they are applied in.
///
/// The [`Default`] is plain sampling from the model's distribution: `temperature` 1.0 and every
/// filter and penalty disabled (`top_k` 0, `top_p` 1.0, `min_p` 0.0, `repetition_penalty` 1.0,
/// frequency and presence penalties 0.0), with penalties — once enabled — looking at the last 64
/// tokens as llama.cpp does, no logit bias and no seed (fresh entropy). Missing fields in JSON
/// take these defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy argmax. Accepted range 0..=100.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables, 1 is greedy.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of top tokens whose mass reaches `top_p`;
    /// 1.0 disables. Accepted range (0, 1].
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the top token's; 0 disables.
    /// Accepted range [0, 1].
    pub min_p: f32,
    /// CTRL/llama.cpp style repetition penalty: positive logits of recently seen tokens are
    /// divided by it, negative ones multiplied. 1.0 disables; must be positive.
    pub repetition_penalty: f32,
    /// OpenAI semantics: subtract `frequency_penalty * count` from a seen token's logit.
    /// Accepted range [-2, 2].
    pub frequency_penalty: f32,
    /// OpenAI semantics: subtract `presence_penalty` once from any seen token's logit.
    /// Accepted range [-2, 2].
    pub presence_penalty: f32,
    /// How many of the most recent tokens the penalties look at; 0 means all of them.
    pub penalty_last_n: usize,
    /// `(token id, bias)` pairs added to the raw logits; -100 effectively bans a token.
    /// Ids must be below the vocabulary size, biases within [-100, 100].
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed for the random draw: the same seed, params and logits give the same choices.
    /// `None` seeds from OS entropy.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Deterministic argmax decoding: the defaults with `temperature` 0.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every parameter's range against the model's `vocab_size`; the error names the
    /// first offending parameter.
    pub fn validate(&self, vocab_size: usize) -> Result<(), SamplingError> {
        fn invalid(param: &'static str, message: String) -> Result<(), SamplingError> {
            Err(SamplingError::InvalidParam { param, message })
        }
        let t = self.temperature;
        if !(0.0..=100.0).contains(&t) {
            return invalid("temperature", format!("must be between 0 and 100, got {t}"));
        }
        let p = self.top_p;
        if p.is_nan() || p <= 0.0 || p > 1.0 {
            return invalid("top_p", format!("must be in (0, 1], got {p}"));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return invalid("min_p", format!("must be in [0, 1], got {m}"));
        }
        let r = self.repetition_penalty;
        if !r.is_finite() || r <= 0.0 {
            return invalid(
                "repetition_penalty",
                format!("must be a positive finite number, got {r}"),
            );
        }
        for (param, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !(-2.0..=2.0).contains(&value) {
                return invalid(param, format!("must be between -2 and 2, got {value}"));
            }
        }
        for &(id, bias) in &self.logit_bias {
            if id as usize >= vocab_size {
                return invalid(
                    "logit_bias",
                    format!("token id {id} is outside the vocabulary (size {vocab_size})"),
                );
            }
            if !(-100.0..=100.0).contains(&bias) {
                return invalid(
                    "logit_bias",
                    format!("bias for token {id} must be between -100 and 100, got {bias}"),
                );
            }
        }
        Ok(())
    }
}

/// One sampled token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    /// The chosen token id.
    pub id: u32,
    /// Natural-log probability of `id` under the final distribution it was drawn from (after
    /// filters and temperature). For greedy decoding, under the softmax of the processed
    /// (biased and penalised) logits. `-inf` only in the degenerate case where every logit was
    /// NaN or `-inf`.
    pub logprob: f32,
}

/// A stateful sampler for one generation: owns the parameters, the RNG and scratch buffers so
/// that per-token sampling does not allocate once warmed up.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    // Working copy of the logits after bias and penalties.
    logits: Vec<f32>,
    // Surviving (id, processed logit) pairs during filtering.
    candidates: Vec<(u32, f32)>,
    // Unnormalised final weights, parallel to `candidates`.
    weights: Vec<f64>,
    // Sorted copy of the penalty window, for counting occurrences without a hash map.
    window: Vec<u32>,
}

impl Sampler {
    /// Creates a sampler, seeding its RNG from `params.seed` or, when absent, from OS entropy.
    ///
    /// Parameters are not validated here (call [`SamplingParams::validate`] at the API edge);
    /// out-of-range values never panic: NaN or negative `temperature` means greedy, NaN `top_p`
    /// or `min_p` disables that filter.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            params,
            rng,
            logits: Vec::new(),
            candidates: Vec::new(),
            weights: Vec::new(),
            window: Vec::new(),
        }
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from one step's `logits`. `previous` holds the prompt and the
    /// tokens generated so far; the penalties look at its last `penalty_last_n` entries.
    /// Ids in `previous` or `logit_bias` outside `logits` are ignored.
    pub fn sample(&mut self, logits: &[f32], previous: &[u32]) -> Sampled {
        self.logits.clear();
        self.logits.extend_from_slice(logits);
        self.apply_logit_bias();
        self.apply_penalties(previous);
        for x in &mut self.logits {
            *x = sanitize(*x);
        }

        let temperature = self.params.temperature;
        let greedy = temperature.is_nan() || temperature <= 0.0 || self.params.top_k == 1;
        if greedy {
            return greedy_pick(&self.logits);
        }

        self.candidates.clear();
        self.candidates.extend(
            self.logits
                .iter()
                .enumerate()
                .filter(|(_, &l)| l > f32::NEG_INFINITY)
                .map(|(i, &l)| (i as u32, l)),
        );
        if self.candidates.is_empty() {
            // Everything was banned or NaN: nothing is drawable, fall back to a defined answer.
            return greedy_pick(&self.logits);
        }

        self.apply_top_k();
        // The top candidate survives every filter, so `max` is stable from here on.
        let max = self
            .candidates
            .iter()
            .map(|&(_, l)| l)
            .fold(f32::NEG_INFINITY, f32::max);
        self.apply_min_p_and_top_p(max);
        self.draw(max)
    }

    fn apply_logit_bias(&mut self) {
        for &(id, bias) in &self.params.logit_bias {
            if let Some(x) = self.logits.get_mut(id as usize) {
                *x += bias;
            }
        }
    }

    fn apply_penalties(&mut self, previous: &[u32]) {
        let p = &self.params;
        let repetition = p.repetition_penalty;
        let (frequency, presence) = (p.frequency_penalty, p.presence_penalty);
        if repetition == 1.0 && frequency == 0.0 && presence == 0.0 {
            return;
        }
        let start = match p.penalty_last_n {
            0 => 0,
            n => previous.len().saturating_sub(n),
        };
        self.window.clear();
        self.window.extend_from_slice(&previous[start..]);
        self.window.sort_unstable();
        for run in self.window.chunk_by(|a, b| a == b) {
            let Some(x) = self.logits.get_mut(run[0] as usize) else {
                continue;
            };
            // Repetition penalty is once per distinct token; it must push a logit towards less
            // likely whatever its sign, hence divide positives and multiply negatives.
            if repetition != 1.0 {
                *x = if *x > 0.0 {
                    *x / repetition
                } else {
                    *x * repetition
                };
            }
            *x -= run.len() as f32 * frequency + presence;
        }
    }

    fn apply_top_k(&mut self) {
        let k = self.params.top_k;
        if k == 0 || k >= self.candidates.len() {
            return;
        }
        // Partial selection: O(n) instead of sorting the whole vocabulary.
        self.candidates.select_nth_unstable_by(k - 1, by_logit_desc);
        self.candidates.truncate(k);
        self.candidates.sort_unstable_by(by_logit_desc);
    }

    // top-p then min-p, as in llama.cpp's chain. Both keep a prefix of the candidates sorted by
    // logit, and both judge probabilities against the post-top-k distribution (min-p relative to
    // its maximum, top-p relative to its total), so the result is the shorter of the two
    // prefixes whichever runs first. Running min-p first is a cheap linear filter that usually
    // leaves top-p very little to sort.
    fn apply_min_p_and_top_p(&mut self, max: f32) {
        let top_p = f64::from(self.params.top_p);
        let min_p = f64::from(self.params.min_p);
        let use_top_p = top_p < 1.0;
        let use_min_p = min_p > 0.0;
        if !use_top_p && !use_min_p {
            return;
        }
        // Softmax normaliser of the untempered distribution, before min-p removes anything.
        let total: f64 = if use_top_p {
            self.candidates
                .iter()
                .map(|&(_, l)| exp_wide(l - max))
                .sum()
        } else {
            1.0
        };
        if use_min_p {
            // p_i >= min_p * p_max  <=>  l_i - max >= ln(min_p)
            let threshold = min_p.ln();
            self.candidates
                .retain(|&(_, l)| f64::from(l - max) >= threshold);
        }
        if use_top_p {
            let keep = top_p_prefix_len(&mut self.candidates, max, total, top_p);
            self.candidates.truncate(keep);
        }
    }

    fn draw(&mut self, max: f32) -> Sampled {
        let temperature = self.params.temperature;
        self.weights.clear();
        // (l - max) <= 0, so dividing by a tiny temperature underflows to 0 instead of
        // overflowing to inf; the top token always gets weight 1.
        self.weights.extend(
            self.candidates
                .iter()
                .map(|&(_, l)| exp_wide((l - max) / temperature)),
        );
        let total: f64 = self.weights.iter().sum();
        let target = self.rng.random::<f64>() * total;
        let mut acc = 0.0;
        // Float rounding can leave `target` a hair above the final sum: default to the last
        // candidate with non-zero weight.
        let mut chosen = self.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        for (i, &w) in self.weights.iter().enumerate() {
            acc += w;
            if w > 0.0 && acc > target {
                chosen = i;
                break;
            }
        }
        match (self.candidates.get(chosen), self.weights.get(chosen)) {
            (Some(&(id, _)), Some(&w)) => Sampled {
                id,
                logprob: (w / total).ln() as f32,
            },
            // Unreachable: `sample` only calls `draw` with at least one candidate.
            _ => greedy_pick(&self.logits),
        }
    }
}

/// The `n` most likely tokens as `(id, logprob)` under the log-softmax of the raw `logits`,
/// most likely first (ties: lowest id first). For OpenAI's `top_logprobs`.
pub fn top_logprobs(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let n = n.min(logits.len());
    if n == 0 {
        return Vec::new();
    }
    let mut all: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, sanitize(l)))
        .collect();
    let lse = log_sum_exp(all.iter().map(|&(_, l)| l));
    if n < all.len() {
        all.select_nth_unstable_by(n - 1, by_logit_desc);
        all.truncate(n);
    }
    all.sort_unstable_by(by_logit_desc);
    all.into_iter()
        .map(|(id, l)| (id, log_prob(l, lse)))
        .collect()
}

// NaN is never chosen; +inf would turn softmax into NaN, so clamp it to the largest finite.
fn sanitize(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        f32::MAX
    } else {
        x
    }
}

// Descending by logit, then ascending by id: a total order, so selections are deterministic.
fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

// ln Σ exp(x), computed in f64 around the maximum. `-inf` when every x is `-inf`.
fn log_sum_exp(xs: impl Iterator<Item = f32> + Clone) -> f64 {
    let max = xs.clone().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = xs.map(|x| exp_wide(x - max)).sum();
    f64::from(max) + sum.ln()
}

// exp of a value <= 0 in f32 (several times cheaper than f64 over a whole vocabulary, and
// accurate to an ulp), widened so that sums over tens of thousands of terms accumulate in f64.
fn exp_wide(x: f32) -> f64 {
    f64::from(x.exp())
}

fn log_prob(logit: f32, lse: f64) -> f32 {
    if lse == f64::NEG_INFINITY {
        f32::NEG_INFINITY
    } else {
        (f64::from(logit) - lse) as f32
    }
}

// Exact argmax with ties to the lowest id (strict `>`), plus its log-softmax probability.
fn greedy_pick(logits: &[f32]) -> Sampled {
    let mut best = 0usize;
    let mut best_logit = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_logit {
            best = i;
            best_logit = l;
        }
    }
    let lse = log_sum_exp(logits.iter().copied());
    Sampled {
        id: best as u32,
        logprob: log_prob(best_logit, lse),
    }
}

// Length of the smallest prefix (in descending logit order) whose probability mass reaches
// `top_p`. Sorts only as much of `candidates` as needed, growing the sorted prefix
// geometrically, because on real distributions the nucleus is usually a few hundred tokens
// out of tens of thousands.
fn top_p_prefix_len(candidates: &mut [(u32, f32)], max: f32, total: f64, top_p: f64) -> usize {
    let target = top_p * total;
    let mut sorted = 0usize;
    let mut chunk = 64usize;
    let mut acc = 0.0f64;
    while sorted < candidates.len() {
        let take = chunk.min(candidates.len() - sorted);
        let rest = &mut candidates[sorted..];
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, by_logit_desc);
        }
        rest[..take].sort_unstable_by(by_logit_desc);
        for (i, &(_, l)) in rest[..take].iter().enumerate() {
            acc += exp_wide(l - max);
            if acc >= target {
                return sorted + i + 1;
            }
        }
        sorted += take;
        chunk = chunk.saturating_mul(4);
    }
    candidates.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams {
            seed: Some(42),
            ..SamplingParams::default()
        }
    }

    // Draws many times and returns the set of ids ever chosen.
    fn survivors(p: SamplingParams, logits: &[f32]) -> Vec<u32> {
        let mut s = Sampler::new(p);
        let mut seen: Vec<u32> = (0..2000).map(|_| s.sample(logits, &[]).id).collect();
        seen.sort_unstable();
        seen.dedup();
        seen
    }

    fn softmax(xs: &[f32]) -> Vec<f64> {
        let lse = log_sum_exp(xs.iter().copied());
        xs.iter().map(|&x| (f64::from(x) - lse).exp()).collect()
    }

    #[test]
    fn defaults_are_plain_sampling_with_everything_disabled() {
        let p = SamplingParams::default();
        assert_eq!(p.temperature, 1.0);
        assert_eq!((p.top_k, p.top_p, p.min_p), (0, 1.0, 0.0));
        assert_eq!(p.repetition_penalty, 1.0);
        assert_eq!((p.frequency_penalty, p.presence_penalty), (0.0, 0.0));
        assert!(p.logit_bias.is_empty());
        assert_eq!(p.seed, None);
        assert!(p.validate(10).is_ok());
        assert_eq!(SamplingParams::greedy().temperature, 0.0);
    }

    #[test]
    fn params_deserialize_with_missing_fields_defaulted() {
        let p: SamplingParams =
            serde_json::from_str(r#"{"temperature":0.5,"logit_bias":[[3,-100.0]]}"#)
                .expect("valid json");
        assert_eq!(p.temperature, 0.5);
        assert_eq!(p.logit_bias, vec![(3, -100.0)]);
        assert_eq!(p.top_p, 1.0);
    }

    #[test]
    fn greedy_picks_the_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[]).id, 1);
    }

    #[test]
    fn greedy_picks_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[1.0, 5.0, 2.0, 5.0, 5.0], &[]).id, 1);
    }

    #[test]
    fn greedy_is_exact_for_values_one_ulp_apart() {
        let a = 1.0f32;
        let b = f32::from_bits(a.to_bits() + 1);
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[a, b, a], &[]).id, 1);
    }

    #[test]
    fn top_k_of_one_is_greedy_even_with_temperature() {
        let p = SamplingParams {
            top_k: 1,
            temperature: 5.0,
            ..params()
        };
        assert_eq!(survivors(p, &[0.0, 1.0, 0.9, 0.99]), vec![1]);
    }

    #[test]
    fn greedy_logprob_is_log_softmax_of_processed_logits() {
        let logits = [1.0f32, 2.0, 3.0];
        let mut s = Sampler::new(SamplingParams::greedy());
        let got = s.sample(&logits, &[]);
        let expected = softmax(&logits)[2].ln() as f32;
        assert_eq!(got.id, 2);
        assert!((got.logprob - expected).abs() < 1e-6);
    }

    #[test]
    fn nan_and_infinite_logits_do_not_panic() {
        let mut g = Sampler::new(SamplingParams::greedy());
        assert_eq!(g.sample(&[f32::NAN, 1.0, f32::NAN], &[]).id, 1);
        assert_eq!(g.sample(&[0.0, f32::INFINITY, 1.0], &[]).id, 1);
        let all_nan = g.sample(&[f32::NAN, f32::NAN], &[]);
        assert_eq!(all_nan.id, 0);
        assert_eq!(all_nan.logprob, f32::NEG_INFINITY);

        let mut s = Sampler::new(SamplingParams {
            top_p: 0.5,
            min_p: 0.1,
            top_k: 3,
            ..params()
        });
        for _ in 0..50 {
            let got = s.sample(&[f32::NAN, 1.0, f32::NAN, 0.5], &[]);
            assert!(got.id == 1 || got.id == 3);
            assert!(got.logprob.is_finite());
        }
        assert_eq!(s.sample(&[f32::NAN; 4], &[]).id, 0);
        assert_eq!(s.sample(&[0.0, f32::INFINITY, f32::INFINITY], &[]).id, 1);
        assert!(s.sample(&[], &[]).logprob.is_infinite());
    }

    #[test]
    fn logit_bias_of_minus_100_bans_a_token() {
        let p = SamplingParams {
            logit_bias: vec![(1, -100.0)],
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(p);
        assert_eq!(s.sample(&[0.0, 10.0, 5.0], &[]).id, 2);
        let sampled = SamplingParams {
            logit_bias: vec![(1, -100.0)],
            ..params()
        };
        assert_eq!(survivors(sampled, &[0.0, 10.0, 0.5]), vec![0, 2]);
    }

    #[test]
    fn logit_bias_can_promote_a_token() {
        let p = SamplingParams {
            logit_bias: vec![(0, 20.0)],
            ..SamplingParams::greedy()
        };
        assert_eq!(Sampler::new(p).sample(&[0.0, 10.0], &[]).id, 0);
    }

    #[test]
    fn out_of_range_ids_are_ignored_rather_than_panicking() {
        let p = SamplingParams {
            logit_bias: vec![(99, 5.0)],
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        };
        assert_eq!(Sampler::new(p).sample(&[0.0, 1.0], &[7, 1000]).id, 1);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(p);
        // Token 0 (4.0 -> 2.0) loses to token 1 (3.0); repeats count once.
        assert_eq!(s.sample(&[4.0, 3.0], &[0, 0, 0]).id, 1);
        // Token 0 (-1.0 -> -2.0) loses to token 1 (-1.5).
        assert_eq!(s.sample(&[-1.0, -1.5], &[0]).id, 1);
        assert_eq!(s.logits, vec![-2.0, -1.5]);
    }

    #[test]
    fn frequency_penalty_scales_with_count_and_presence_penalty_does_not() {
        let p = SamplingParams {
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(p);
        s.sample(&[1.0, 1.0, 1.0], &[0, 2, 0, 0]);
        // Token 0: 1 - 3*0.5 - 0.25; token 1 unseen; token 2: 1 - 0.5 - 0.25.
        assert_eq!(s.logits, vec![-0.75, 1.0, 0.25]);
    }

    #[test]
    fn penalties_only_look_at_the_last_n_tokens() {
        let p = SamplingParams {
            presence_penalty: 1.0,
            penalty_last_n: 2,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(p);
        s.sample(&[0.0; 4], &[0, 1, 2, 3]);
        assert_eq!(s.logits, vec![0.0, 0.0, -1.0, -1.0]);

        let all = SamplingParams {
            presence_penalty: 1.0,
            penalty_last_n: 0,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(all);
        s.sample(&[0.0; 4], &[0, 1, 2]);
        assert_eq!(s.logits, vec![-1.0, -1.0, -1.0, 0.0]);
    }

    #[test]
    fn logit_bias_is_applied_before_penalties() {
        let p = SamplingParams {
            logit_bias: vec![(0, 2.0)],
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        };
        let mut s = Sampler::new(p);
        s.sample(&[-1.0, 0.0], &[0]);
        // (-1 + 2) / 2, not (-1 * 2) + 2.
        assert_eq!(s.logits, vec![0.5, 0.0]);
    }

    #[test]
    fn top_k_keeps_only_the_k_best() {
        let p = SamplingParams {
            top_k: 2,
            temperature: 100.0,
            ..params()
        };
        assert_eq!(survivors(p, &[1.0, 4.0, 3.0, 2.0, 0.0]), vec![1, 2]);
    }

    #[test]
    fn top_k_breaks_boundary_ties_towards_lower_ids() {
        let p = SamplingParams {
            top_k: 2,
            temperature: 100.0,
            ..params()
        };
        assert_eq!(survivors(p, &[1.0, 5.0, 1.0, 1.0]), vec![0, 1]);
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_the_mass() {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (by construction via ln).
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let with = |top_p| SamplingParams {
            top_p,
            temperature: 100.0,
            ..params()
        };
        assert_eq!(survivors(with(0.5), &logits), vec![0]);
        assert_eq!(survivors(with(0.6), &logits), vec![0, 1]);
        assert_eq!(survivors(with(0.9), &logits), vec![0, 1, 2]);
        assert_eq!(survivors(with(1.0), &logits), vec![0, 1, 2, 3]);
    }

    #[test]
    fn top_p_is_judged_after_top_k() {
        // After top-k 2 the mass is 0.5 and 0.3 -> 0.625, 0.375; top_p 0.6 keeps only token 0.
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let p = SamplingParams {
            top_k: 2,
            top_p: 0.6,
            temperature: 100.0,
            ..params()
        };
        assert_eq!(survivors(p, &logits), vec![0]);
    }

    #[test]
    fn top_p_works_on_a_large_vocabulary_beyond_the_first_chunk() {
        // A flat distribution over 1000 tokens: top_p 0.5 keeps exactly 500.
        let logits = vec![0.0f32; 1000];
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let keep = top_p_prefix_len(&mut c, 0.0, 1000.0, 0.5);
        assert_eq!(keep, 500);
        let mut ids: Vec<u32> = c[..keep].iter().map(|&(i, _)| i).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..500).collect::<Vec<u32>>());
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_top_probability() {
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let with = |min_p| SamplingParams {
            min_p,
            temperature: 100.0,
            ..params()
        };
        // Threshold 0.25 * 0.5 = 0.125 keeps 0.5, 0.3, 0.15.
        assert_eq!(survivors(with(0.25), &logits), vec![0, 1, 2]);
        // Threshold 0.5 * 0.5 = 0.25 keeps 0.5, 0.3.
        assert_eq!(survivors(with(0.5), &logits), vec![0, 1]);
        assert_eq!(survivors(with(1.0), &logits), vec![0]);
    }

    #[test]
    fn temperature_sharpens_and_flattens_the_distribution() {
        let logits = [1.0f32, 0.0];
        let mut hot = Sampler::new(SamplingParams {
            temperature: 2.0,
            ..params()
        });
        let mut cold = Sampler::new(SamplingParams {
            temperature: 0.5,
            ..params()
        });
        let h = hot.sample(&logits, &[]);
        let c = cold.sample(&logits, &[]);
        let h_expected = softmax(&[0.5, 0.0])[h.id as usize].ln() as f32;
        let c_expected = softmax(&[2.0, 0.0])[c.id as usize].ln() as f32;
        assert!((h.logprob - h_expected).abs() < 1e-6);
        assert!((c.logprob - c_expected).abs() < 1e-6);
    }

    #[test]
    fn draws_follow_the_softmax_probabilities() {
        let probs = [0.6f32, 0.3, 0.1];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let mut s = Sampler::new(params());
        let n = 20_000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[s.sample(&logits, &[]).id as usize] += 1;
        }
        for (count, p) in counts.iter().zip(probs) {
            let freq = *count as f32 / n as f32;
            assert!((freq - p).abs() < 0.02, "{counts:?}");
        }
    }

    #[test]
    fn logprob_is_under_the_final_filtered_distribution() {
        // After top-k 2 only 0.5 and 0.3 remain: renormalised 0.625 and 0.375.
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let mut s = Sampler::new(SamplingParams {
            top_k: 2,
            ..params()
        });
        for _ in 0..20 {
            let got = s.sample(&logits, &[]);
            let expected = if got.id == 0 { 0.625f32 } else { 0.375 }.ln();
            assert!((got.logprob - expected).abs() < 1e-5);
        }
    }

    #[test]
    fn same_seed_gives_the_same_hundred_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams {
            top_k: 20,
            top_p: 0.95,
            min_p: 0.01,
            seed: Some(7),
            ..SamplingParams::default()
        };
        let mut a = Sampler::new(p.clone());
        let mut b = Sampler::new(p);
        let draws_a: Vec<Sampled> = (0..100).map(|_| a.sample(&logits, &[])).collect();
        let draws_b: Vec<Sampled> = (0..100).map(|_| b.sample(&logits, &[])).collect();
        assert_eq!(draws_a, draws_b);
    }

    #[test]
    fn different_seeds_give_different_draws() {
        let logits = vec![0.0f32; 50];
        let draws = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..SamplingParams::default()
            });
            (0..100)
                .map(|_| s.sample(&logits, &[]).id)
                .collect::<Vec<_>>()
        };
        assert_ne!(draws(1), draws(2));
    }

    #[test]
    fn sampling_a_large_vocabulary_is_fast_enough() {
        let vocab = 49_152;
        let logits: Vec<f32> = (0..vocab)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect();
        let previous: Vec<u32> = (0..512).collect();
        let mut s = Sampler::new(SamplingParams {
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.1,
            ..params()
        });
        let start = std::time::Instant::now();
        for _ in 0..100 {
            let got = s.sample(&logits, &previous);
            assert!((got.id as usize) < vocab);
        }
        // Generous bound for unoptimised debug builds on shared machines.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn top_logprobs_are_sorted_log_softmax_of_raw_logits() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let got = top_logprobs(&logits, 3);
        let expected = softmax(&logits);
        let ids: Vec<u32> = got.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        for (id, lp) in got {
            assert!((lp - expected[id as usize].ln() as f32).abs() < 1e-6);
        }
        assert!(top_logprobs(&logits, 0).is_empty());
        assert_eq!(top_logprobs(&logits, 10).len(), 4);
        assert_eq!(top_logprobs(&[f32::NAN, 0.0], 1), vec![(1, 0.0)]);
    }

    fn rejected(p: SamplingParams) -> &'static str {
        match p.validate(100) {
            Err(SamplingError::InvalidParam { param, .. }) => param,
            Ok(()) => panic!("{p:?} should be rejected"),
        }
    }

    #[test]
    fn validation_errors_name_the_offending_param() {
        let d = SamplingParams::default;
        assert_eq!(
            rejected(SamplingParams {
                temperature: -0.1,
                ..d()
            }),
            "temperature"
        );
        assert_eq!(
            rejected(SamplingParams {
                temperature: f32::NAN,
                ..d()
            }),
            "temperature"
        );
        assert_eq!(
            rejected(SamplingParams {
                temperature: 100.5,
                ..d()
            }),
            "temperature"
        );
        assert_eq!(rejected(SamplingParams { top_p: 0.0, ..d() }), "top_p");
        assert_eq!(rejected(SamplingParams { top_p: 1.01, ..d() }), "top_p");
        assert_eq!(rejected(SamplingParams { min_p: -0.5, ..d() }), "min_p");
        assert_eq!(
            rejected(SamplingParams {
                min_p: f32::NAN,
                ..d()
            }),
            "min_p"
        );
        assert_eq!(
            rejected(SamplingParams {
                repetition_penalty: 0.0,
                ..d()
            }),
            "repetition_penalty"
        );
        assert_eq!(
            rejected(SamplingParams {
                frequency_penalty: 2.5,
                ..d()
            }),
            "frequency_penalty"
        );
        assert_eq!(
            rejected(SamplingParams {
                presence_penalty: f32::INFINITY,
                ..d()
            }),
            "presence_penalty"
        );
        assert_eq!(
            rejected(SamplingParams {
                logit_bias: vec![(100, 1.0)],
                ..d()
            }),
            "logit_bias"
        );
        assert_eq!(
            rejected(SamplingParams {
                logit_bias: vec![(3, -101.0)],
                ..d()
            }),
            "logit_bias"
        );
    }

    #[test]
    fn validation_accepts_the_edges_of_each_range() {
        let p = SamplingParams {
            temperature: 100.0,
            top_p: 1.0,
            min_p: 1.0,
            frequency_penalty: -2.0,
            presence_penalty: 2.0,
            logit_bias: vec![(99, -100.0), (0, 100.0)],
            ..SamplingParams::default()
        };
        assert!(p.validate(100).is_ok());
        assert!(SamplingParams::greedy().validate(1).is_ok());
    }

    #[test]
    fn validation_error_message_names_the_param() {
        let err = SamplingParams {
            top_p: 2.0,
            ..SamplingParams::default()
        }
        .validate(10)
        .expect_err("top_p 2 is invalid");
        assert!(err.to_string().contains("top_p"), "{err}");
    }
}
