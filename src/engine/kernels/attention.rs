//! One unit of attention over an f16 KV cache: the query heads that share a KV head, over one
//! chunk of cached positions, leaving per head the chunk's largest score, the sum of
//! `exp(score − max)` and the sum of those times the values (a "partial"; the caller joins a
//! row's chunks).
//!
//! The cache holds f16 rows or Q8_0 ones (`i8` values, an f16 scale per 32; see [`Rows`]).
//! Every key and value row is widened to f32 once (exactly, or as `f32(q) · d`) and used by each
//! query head of the group, so grouped-query models read their cache once per group, not once
//! per head. Dot products keep
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

/// A layer's cached keys or values, `width` values per position.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    /// f16 values.
    F16(&'a [f16]),
    /// Q8_0: `i8` values and one f16 scale per 32 of them (`value = f32(q) · d`).
    Q8 {
        /// The values.
        qs: &'a [i8],
        /// The scales.
        d: &'a [f16],
    },
}

impl Rows<'_> {
    /// `out[i] = value at + i` (`at` and `out.len()` multiples of 32 for Q8_0).
    fn widen(&self, at: usize, out: &mut [f32]) {
        match *self {
            Rows::F16(h) => {
                for (o, s) in out.iter_mut().zip(&h[at..]) {
                    *o = s.to_f32();
                }
            }
            Rows::Q8 { qs, d } => {
                for (i, (o, q)) in out.iter_mut().zip(&qs[at..]).enumerate() {
                    *o = *q as f32 * d[(at + i) / 32].to_f32();
                }
            }
        }
    }
}

/// Attend with the query heads `q` (`[group, hd]`) to positions `span` of a cache whose rows
/// hold `width` values, this group's KV head at `off`; write `partials` (`group` partials of
/// [`partial_len`]). `scores` and `row` (`hd` long) are scratch.
#[allow(clippy::too_many_arguments)]
pub fn unit(
    q: &[f32],
    k: Rows,
    v: Rows,
    width: usize,
    off: usize,
    span: std::ops::Range<usize>,
    scores: &mut Vec<f32>,
    row: &mut [f32],
    partials: &mut [f32],
) {
    let wide = cfg!(target_arch = "x86_64") && Isa::selected() != Isa::Scalar;
    unit_on(wide, q, k, v, width, off, span, scores, row, partials)
}

/// [`unit`] on the AVX2 path (`wide`, which the CPU must have) or the plain one.
#[allow(clippy::too_many_arguments)]
fn unit_on(
    wide: bool,
    q: &[f32],
    k: Rows,
    v: Rows,
    width: usize,
    off: usize,
    span: std::ops::Range<usize>,
    scores: &mut Vec<f32>,
    row: &mut [f32],
    partials: &mut [f32],
) {
    let hd = row.len();
    let group = q.len() / hd;
    let len = span.len();
    scores.clear();
    scores.resize(group * len, 0.0);
    let wide = wide && hd.is_multiple_of(8);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = wide;
    let widen = |rows: &Rows, at: usize, row: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: every ISA above Scalar implies AVX2 and F16C (`Isa::available`).
            return unsafe { x86::widen(rows, at, row) };
        }
        rows.widen(at, row)
    };
    let dot = |a: &[f32], b: &[f32]| {
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: as above.
            return unsafe { x86::dot(a, b) };
        }
        dot(a, b)
    };
    for (j, t) in span.clone().enumerate() {
        widen(&k, t * width + off, row);
        for (h, qh) in q.chunks_exact(hd).enumerate() {
            scores[h * len + j] = dot(qh, row) * scale(hd);
        }
    }
    softmax_parts(scores, len, hd, partials);
    for (j, t) in span.enumerate() {
        widen(&v, t * width + off, row);
        for (h, p) in partials.chunks_exact_mut(partial_len(hd)).enumerate() {
            let s = scores[h * len + j];
            #[cfg(target_arch = "x86_64")]
            if wide {
                // SAFETY: as above.
                unsafe { x86::axpy(&mut p[2..], s, row) };
                continue;
            }
            axpy(&mut p[2..], s, row);
        }
    }
}

fn scale(hd: usize) -> f32 {
    1f32 / (hd as f32).sqrt()
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

/// The plain `out += s · x`.
fn axpy(out: &mut [f32], s: f32, x: &[f32]) {
    for (a, x) in out.iter_mut().zip(x) {
        *a += s * x;
    }
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

    use super::Rows;

    /// `((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn reduce(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_hadd_ps(s, s);
        _mm_cvtss_f32(_mm_hadd_ps(s, s))
    }

    /// As [`Rows::widen`], eight at a time (`out.len()` a multiple of 8).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn widen(rows: &Rows, at: usize, out: &mut [f32]) {
        match *rows {
            Rows::F16(h) => {
                let src = &h[at..at + out.len()];
                for (o, s) in out.chunks_exact_mut(8).zip(src.chunks_exact(8)) {
                    let v = _mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr() as *const __m128i));
                    _mm256_storeu_ps(o.as_mut_ptr(), v);
                }
            }
            Rows::Q8 { qs, d } => {
                let src = &qs[at..at + out.len()];
                for (i, (o, s)) in out.chunks_exact_mut(8).zip(src.chunks_exact(8)).enumerate() {
                    let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                        s.as_ptr() as *const __m128i
                    )));
                    let scale = _mm256_set1_ps(d[(at + 8 * i) / 32].to_f32());
                    _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(q, scale));
                }
            }
        }
    }

    /// The unit's dot product (`a.len()` a multiple of 8).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
            let p = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr()));
            acc = _mm256_add_ps(acc, p);
        }
        reduce(acc)
    }

    /// `out += s · x` (`out.len()` a multiple of 8).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn axpy(out: &mut [f32], s: f32, x: &[f32]) {
        let sv = _mm256_set1_ps(s);
        for (o, x) in out.chunks_exact_mut(8).zip(x.chunks_exact(8)) {
            let v = _mm256_mul_ps(sv, _mm256_loadu_ps(x.as_ptr()));
            _mm256_storeu_ps(
                o.as_mut_ptr(),
                _mm256_add_ps(_mm256_loadu_ps(o.as_ptr()), v),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_gives_the_plain_paths_bits_and_chunks_combine_to_the_softmax() {
        let (hd, group, nkv, n) = (64, 3, 3, 150);
        let width = nkv * hd;
        let val = |i: usize, m: usize| ((i * m % 97) as f32 - 48.0) / 40.0;
        let q: Vec<f32> = (0..group * hd).map(|i| val(i, 31)).collect();
        let k: Vec<f16> = (0..n * width).map(|i| f16::from_f32(val(i, 17))).collect();
        let v: Vec<f16> = (0..n * width).map(|i| f16::from_f32(val(i, 23))).collect();
        let kq: Vec<i8> = (0..n * width).map(|i| (i * 37 % 255) as i8).collect();
        let kd: Vec<f16> = (0..n * width / 32)
            .map(|i| f16::from_f32(0.01 + (i % 7) as f32 * 0.003))
            .collect();
        let caches = [
            (Rows::F16(&k), Rows::F16(&v)),
            (Rows::Q8 { qs: &kq, d: &kd }, Rows::F16(&v)),
        ];
        let off = hd;
        let mut scores = Vec::new();
        let mut row = vec![0f32; hd];
        let run = |wide: bool, (k, v): (Rows, Rows), span: std::ops::Range<usize>| {
            let mut parts = vec![0f32; group * partial_len(hd)];
            let (mut scores, mut row) = (Vec::new(), vec![0f32; hd]);
            unit_on(
                wide,
                &q,
                k,
                v,
                width,
                off,
                span,
                &mut scores,
                &mut row,
                &mut parts,
            );
            parts
        };
        for &(k, v) in &caches {
            let mut parts = vec![0f32; group * partial_len(hd)];
            unit(
                &q,
                k,
                v,
                width,
                off,
                0..n,
                &mut scores,
                &mut row,
                &mut parts,
            );
            assert_eq!(
                parts,
                run(false, (k, v), 0..n),
                "the CPU's path against the plain one"
            );
            // Three chunks joined = the whole softmax, within rounding.
            let chunked: Vec<Vec<f32>> = [0..64, 64..128, 128..n]
                .into_iter()
                .map(|span| run(false, (k, v), span))
                .collect();
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
}
