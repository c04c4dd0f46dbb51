//! The vector operations of attention over an f16 KV cache: `q · k` and `out += p · v` with `q`
//! and `out` in f32 and `k`, `v` rows of the cache in f16. AVX2 + F16C where the CPU has it
//! (every ISA above [`Isa::Scalar`]), plain Rust otherwise; each keeps one summation order, so a
//! row's result never depends on the batch it came in.

use half::f16;

use super::Isa;

/// `Σ q[i] · k[i]`.
pub fn dot_f16(q: &[f32], k: &[f16]) -> f32 {
    debug_assert_eq!(q.len(), k.len());
    #[cfg(target_arch = "x86_64")]
    if Isa::selected() != Isa::Scalar {
        // SAFETY: every ISA above Scalar implies AVX2, FMA and F16C (`Isa::available`).
        return unsafe { x86::dot_f16(q, k) };
    }
    dot_f16_scalar(q, k)
}

/// `out[i] += a · v[i]`.
pub fn axpy_f16(out: &mut [f32], a: f32, v: &[f16]) {
    debug_assert_eq!(out.len(), v.len());
    #[cfg(target_arch = "x86_64")]
    if Isa::selected() != Isa::Scalar {
        // SAFETY: as in `dot_f16`.
        return unsafe { x86::axpy_f16(out, a, v) };
    }
    axpy_f16_scalar(out, a, v)
}

/// The reference for [`dot_f16`]: eight partial sums, as the SIMD path keeps them.
pub fn dot_f16_scalar(q: &[f32], k: &[f16]) -> f32 {
    let mut acc = [0f32; 8];
    let (cq, ck) = (q.chunks_exact(8), k.chunks_exact(8));
    let tail: f32 = cq
        .remainder()
        .iter()
        .zip(ck.remainder())
        .map(|(a, b)| a * b.to_f32())
        .sum();
    for (a, b) in cq.zip(ck) {
        for i in 0..8 {
            acc[i] += a[i] * b[i].to_f32();
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The reference for [`axpy_f16`].
pub fn axpy_f16_scalar(out: &mut [f32], a: f32, v: &[f16]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += a * x.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(q: &[f32], k: &[f16]) -> f32 {
        let n = q.len() / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < n {
            let kv = _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(i) as *const __m128i));
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(i)), kv, acc);
            i += 8;
        }
        let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let mut total = _mm_cvtss_f32(s);
        for j in n..q.len() {
            total += q[j] * k[j].to_f32();
        }
        total
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn axpy_f16(out: &mut [f32], a: f32, v: &[f16]) {
        let n = out.len() / 8 * 8;
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        while i < n {
            let vv = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i) as *const __m128i));
            let o = out.as_mut_ptr().add(i);
            _mm256_storeu_ps(o, _mm256_fmadd_ps(av, vv, _mm256_loadu_ps(o)));
            i += 8;
        }
        for j in n..out.len() {
            out[j] += a * v[j].to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simd_attention_ops_match_the_reference_on_odd_lengths() {
        for len in [1usize, 7, 8, 13, 64, 100, 128] {
            let q: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let k: Vec<f16> = (0..len)
                .map(|i| f16::from_f32(((i * 13 % 7) as f32 - 3.0) * 0.25))
                .collect();
            let (got, want) = (dot_f16(&q, &k), dot_f16_scalar(&q, &k));
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{len}: {got} vs {want}"
            );
            let mut a = q.clone();
            let mut b = q.clone();
            axpy_f16(&mut a, 0.3, &k);
            axpy_f16_scalar(&mut b, 0.3, &k);
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                    "{len}: {x} vs {y}"
                );
            }
        }
    }
}
