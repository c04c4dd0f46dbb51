//! One unit of attention over an f16 KV cache: the query heads that share a KV head, over one
//! chunk of cached positions, leaving per head the chunk's largest score, the sum of
//! `exp(score − max)` and the sum of those times the values (a "partial"; the caller joins a
//! row's chunks).
//!
//! Every key and value row is widened to f32 once and used by each query head of the group, so
//! grouped-query models read their cache once per group, not once per head. Dot products keep
//! eight partial sums (lane `i` takes elements `i, i + 8, …`) joined as
//! `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))`; multiplies and adds are never fused. The
//! AVX2 path and the plain one run exactly these operations, so a unit's result is the same
//! bits on every ISA, in every batch, on every thread.

use half::f16;

use super::Isa;

/// Floats of one query head's partial: `[max, sum, acc…]`.
pub const fn partial_len(hd: usize) -> usize {
    hd + 2
}

/// Attend with the query heads `q` (`[group, hd]`) to positions `span` of a cache whose rows
/// hold `width` values, this group's KV head at `off`; write `partials` (`group` partials of
/// [`partial_len`]). `scores` is scratch.
#[allow(clippy::too_many_arguments)]
pub fn unit(
    q: &[f32],
    k: &[f16],
    v: &[f16],
    width: usize,
    off: usize,
    hd: usize,
    span: std::ops::Range<usize>,
    scores: &mut Vec<f32>,
    partials: &mut [f32],
) {
    let group = q.len() / hd;
    let len = span.len();
    scores.clear();
    scores.resize(group * len, 0.0);
    #[cfg(target_arch = "x86_64")]
    if Isa::selected() != Isa::Scalar && hd.is_multiple_of(8) {
        // SAFETY: every ISA above Scalar implies AVX2 and F16C (`Isa::available`); slices are
        // bounds-checked by the callee's indexing.
        unsafe { x86::scores(q, k, width, off, hd, span.clone(), scores) };
        softmax_parts(scores, len, hd, partials);
        // SAFETY: as above.
        unsafe { x86::values(v, width, off, hd, span, scores, partials) };
        return;
    }
    let _ = Isa::selected;
    let mut row = vec![0f32; hd];
    for (j, t) in span.clone().enumerate() {
        widen(&k[t * width + off..t * width + off + hd], &mut row);
        for (h, qh) in q.chunks_exact(hd).enumerate() {
            scores[h * len + j] = dot(qh, &row) * scale(hd);
        }
    }
    softmax_parts(scores, len, hd, partials);
    for (j, t) in span.enumerate() {
        widen(&v[t * width + off..t * width + off + hd], &mut row);
        for (h, p) in partials.chunks_exact_mut(partial_len(hd)).enumerate() {
            let s = scores[h * len + j];
            for (a, x) in p[2..].iter_mut().zip(&row) {
                *a += s * x;
            }
        }
    }
}

fn scale(hd: usize) -> f32 {
    1f32 / (hd as f32).sqrt()
}

fn widen(src: &[f16], out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(src) {
        *o = s.to_f32();
    }
}

/// The plain dot product in the unit's fixed order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(0f32, |s, (x, y)| s + x * y);
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Scores → `exp(score − max)` in place, each head's `[max, sum, 0…]` into its partial.
fn softmax_parts(scores: &mut [f32], len: usize, hd: usize, partials: &mut [f32]) {
    for (p, s) in partials
        .chunks_exact_mut(partial_len(hd))
        .zip(scores.chunks_exact_mut(len))
    {
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        p[0] = max;
        p[1] = sum;
        p[2..].fill(0.0);
    }
}

/// A query head's output from its chunks' partials, in order: `Σ e_c · acc_c / Σ e_c · sum_c`
/// with `e_c = exp(max_c − max)`.
pub fn combine<'a>(chunks: impl Iterator<Item = &'a [f32]> + Clone, out: &mut [f32]) {
    let max = chunks.clone().fold(f32::NEG_INFINITY, |m, p| m.max(p[0]));
    out.fill(0.0);
    let mut sum = 0f32;
    for p in chunks {
        let e = (p[0] - max).exp();
        sum += e * p[1];
        for (o, a) in out.iter_mut().zip(&p[2..]) {
            *o += e * a;
        }
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{partial_len, scale};

    /// Eight f16 at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn reduce(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_hadd_ps(s, s);
        _mm_cvtss_f32(_mm_hadd_ps(s, s))
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn scores(
        q: &[f32],
        k: &[f16],
        width: usize,
        off: usize,
        hd: usize,
        span: std::ops::Range<usize>,
        scores: &mut [f32],
    ) {
        let len = span.len();
        let sc = scale(hd);
        for (j, t) in span.enumerate() {
            let kr = &k[t * width + off..t * width + off + hd];
            for (h, qh) in q.chunks_exact(hd).enumerate() {
                let mut acc = _mm256_setzero_ps();
                for d in (0..hd).step_by(8) {
                    let kv = load8(kr.as_ptr().add(d));
                    acc =
                        _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(qh.as_ptr().add(d)), kv));
                }
                scores[h * len + j] = reduce(acc) * sc;
            }
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn values(
        v: &[f16],
        width: usize,
        off: usize,
        hd: usize,
        span: std::ops::Range<usize>,
        scores: &[f32],
        partials: &mut [f32],
    ) {
        let len = span.len();
        for (j, t) in span.enumerate() {
            let vr = &v[t * width + off..t * width + off + hd];
            for (h, p) in partials.chunks_exact_mut(partial_len(hd)).enumerate() {
                let s = _mm256_set1_ps(scores[h * len + j]);
                let acc = &mut p[2..2 + hd];
                for d in (0..hd).step_by(8) {
                    let o = acc.as_mut_ptr().add(d);
                    let x = load8(vr.as_ptr().add(d));
                    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), _mm256_mul_ps(s, x)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain path of `unit`, for comparing with whatever path the CPU takes.
    fn plain(
        q: &[f32],
        k: &[f16],
        v: &[f16],
        width: usize,
        off: usize,
        hd: usize,
        n: usize,
    ) -> Vec<f32> {
        let group = q.len() / hd;
        let mut parts = vec![0f32; group * partial_len(hd)];
        let mut scores = vec![0f32; group * n];
        let mut row = vec![0f32; hd];
        for t in 0..n {
            widen(&k[t * width + off..t * width + off + hd], &mut row);
            for (h, qh) in q.chunks_exact(hd).enumerate() {
                scores[h * n + t] = dot(qh, &row) * scale(hd);
            }
        }
        softmax_parts(&mut scores, n, hd, &mut parts);
        for t in 0..n {
            widen(&v[t * width + off..t * width + off + hd], &mut row);
            for (h, p) in parts.chunks_exact_mut(partial_len(hd)).enumerate() {
                for (a, x) in p[2..].iter_mut().zip(&row) {
                    *a += scores[h * n + t] * x;
                }
            }
        }
        parts
    }

    #[test]
    fn a_unit_gives_the_plain_paths_bits_and_chunks_combine_to_the_softmax() {
        let (hd, group, nkv, n) = (64, 3, 3, 150);
        let width = nkv * hd;
        let val = |i: usize, m: usize| ((i * m % 97) as f32 - 48.0) / 40.0;
        let q: Vec<f32> = (0..group * hd).map(|i| val(i, 31)).collect();
        let k: Vec<f16> = (0..n * width).map(|i| f16::from_f32(val(i, 17))).collect();
        let v: Vec<f16> = (0..n * width).map(|i| f16::from_f32(val(i, 23))).collect();
        let off = hd;
        let mut parts = vec![0f32; group * partial_len(hd)];
        let mut scores = Vec::new();
        unit(&q, &k, &v, width, off, hd, 0..n, &mut scores, &mut parts);
        assert_eq!(parts, plain(&q, &k, &v, width, off, hd, n));
        // Three chunks joined = the whole softmax, within rounding.
        let mut chunked = Vec::new();
        for span in [0..64, 64..128, 128..n] {
            let mut p = vec![0f32; group * partial_len(hd)];
            unit(&q, &k, &v, width, off, hd, span, &mut scores, &mut p);
            chunked.push(p);
        }
        for h in 0..group {
            let at = h * partial_len(hd);
            let mut out = vec![0f32; hd];
            combine(
                chunked.iter().map(|p| &p[at..at + partial_len(hd)]),
                &mut out,
            );
            let mut whole = vec![0f32; hd];
            combine(
                std::iter::once(&parts[at..at + partial_len(hd)]),
                &mut whole,
            );
            for (a, b) in out.iter().zip(&whole) {
                assert!((a - b).abs() < 1e-5, "head {h}: {a} vs {b}");
            }
        }
    }
}
