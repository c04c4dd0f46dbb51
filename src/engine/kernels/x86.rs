//! The x86-64 SIMD group kernels: one body per register width, stamped out per instruction set
//! so each copy is compiled with its own `#[target_feature]` set (and only ever called after
//! [`super::Isa::available`] said yes).
//!
//! A group's block (see [`super::packed`]) is unpacked into eight registers `u[k]`, lane `r`
//! holding row `r`'s values `4k..4k+4` as unsigned bytes. Against one activation row, each
//! `u[k]` meets the broadcast activation word `x[4k..4k+4]` (`vpdpbusd` with VNNI; `vpmaddubsw`
//! and `vpmaddwd` on plain AVX2), so eight products leave every row's exact integer sum in its own
//! lane, the type's offset (`8`, `16`, `32`, `128`) folded in as `−offset · Σx` from the start
//! (Q6_K: two sums, one per sixteen values). The scales come as sixteen lanes too (the
//! K-quants': the super-block's f16 `d` times the block's byte scale, exact in f32). Each lane
//! then runs [`super::scalar::accumulate`]'s float steps, so every ISA gives the scalar
//! reference's result bit for bit. AVX-512 takes the sixteen rows of a group in one register;
//! the 256-bit paths take them as two halves of eight.

use std::arch::x86_64::*;

use super::packed::{GroupLayout, GROUP};
use super::{BlockQ8, GroupKernel, Isa, WeightType};

/// How many blocks ahead of the one being computed the kernels prefetch.
const PREFETCH_BLOCKS: usize = 2;

/// Activation rows computed per pass over a group's blocks (then fewer for the rest).
const MAX_NX: usize = 8;

/// The offset folded into a block's integer sums. `q8_signed`: plain AVX2 multiplies Q8_0's
/// values as signed bytes, so no offset.
const fn offset(ty: WeightType, q8_signed: bool) -> i32 {
    match ty {
        WeightType::Q8_0 if q8_signed => 0,
        _ => ty.offset(),
    }
}

/// The activation word `x.qs[4k..4k+4]` as an `i32`.
#[inline(always)]
unsafe fn word(x: &BlockQ8, k: usize) -> i32 {
    (x.qs.as_ptr().add(4 * k) as *const i32).read_unaligned()
}

/// Where block `b` of a group starts and where its super-block's header does.
#[inline(always)]
unsafe fn block_and_header(g: *const u8, lay: &GroupLayout, b: usize) -> (*const u8, *const u8) {
    (g.add(lay.block_at(b)), g.add(lay.header_at(b)))
}

/// Run `rows::<NX>` over every activation row: eight at a time, then four, two, one.
macro_rules! each_row_chunk {
    ($rows:ident, $T:ident, $g:expr, $nb:expr, $x:expr, $out:expr, $ldo:expr, $cols:expr) => {{
        let total = $x.len() / $nb;
        let mut j = 0;
        while j < total {
            let (xs, o) = ($x.as_ptr().add(j * $nb), $out.add(j * $ldo));
            let n = match total - j {
                n if n >= MAX_NX => {
                    $rows::<$T, MAX_NX>($g, $nb, xs, o, $ldo, $cols);
                    MAX_NX
                }
                n if n >= 4 => {
                    $rows::<$T, 4>($g, $nb, xs, o, $ldo, $cols);
                    4
                }
                n if n >= 2 => {
                    $rows::<$T, 2>($g, $nb, xs, o, $ldo, $cols);
                    2
                }
                _ => {
                    $rows::<$T, 1>($g, $nb, xs, o, $ldo, $cols);
                    1
                }
            };
            j += n;
        }
    }};
}

/// The types' entry points for one ISA's `all::<T>`.
macro_rules! entry_points {
    ($($name:ident = $t:literal: $ty:ident),*) => {
        $(
            unsafe fn $name(g: &[u8], nb: usize, x: &[BlockQ8], o: *mut f32, ldo: usize, c: usize) {
                // SAFETY: handed out by `group_kernel` only after the features were detected.
                unsafe { all::<$t>(g, nb, x, o, ldo, c) }
            }
        )*

        pub(super) fn get(ty: WeightType) -> GroupKernel {
            match ty {
                $(WeightType::$ty => $name,)*
            }
        }
    };
}

macro_rules! all_entry_points {
    () => {
        entry_points!(
            q4_0 = 0: Q4_0, q4_1 = 1: Q4_1, q5_0 = 2: Q5_0, q5_1 = 3: Q5_1, q8_0 = 4: Q8_0,
            q4k = 5: Q4K, q5k = 6: Q5K, q6k = 7: Q6K
        );
    };
}

/// AVX-512 with VNNI: a whole group per register.
mod zmm {
    use super::*;

    /// The eight value registers of the group block at `p`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn values<const T: u8>(p: *const u8, lay: GroupLayout) -> [__m512i; 8] {
        let ty = WeightType::ALL[T as usize];
        let q = p.add(lay.qs);
        let mut u = [_mm512_setzero_si512(); 8];
        if ty == WeightType::Q8_0 {
            let flip = _mm512_set1_epi8(-128);
            for (k, u) in u.iter_mut().enumerate() {
                *u = _mm512_xor_si512(_mm512_loadu_si512(q.add(64 * k) as *const _), flip);
            }
            return u;
        }
        let low = _mm512_set1_epi8(0x0f);
        for c in 0..4 {
            let v = _mm512_loadu_si512(q.add(64 * c) as *const _);
            u[c] = _mm512_and_si512(v, low);
            u[c + 4] = _mm512_and_si512(_mm512_srli_epi64::<4>(v), low);
        }
        // High bits moved to their place within each byte (the mask drops what crossed), then
        // `u | (h' & mask)` in one ternary op.
        macro_rules! or_bits {
            ($u:expr, $h:expr, $mask:expr) => {
                _mm512_ternarylogic_epi32::<0xf8>($u, $h, $mask)
            };
        }
        if ty.fifth_bit() {
            let h = _mm512_loadu_si512(p.add(lay.qh) as *const _);
            let bit = _mm512_set1_epi8(0x10);
            u[0] = or_bits!(u[0], _mm512_slli_epi64::<4>(h), bit);
            u[1] = or_bits!(u[1], _mm512_slli_epi64::<3>(h), bit);
            u[2] = or_bits!(u[2], _mm512_slli_epi64::<2>(h), bit);
            u[3] = or_bits!(u[3], _mm512_slli_epi64::<1>(h), bit);
            u[4] = or_bits!(u[4], h, bit);
            u[5] = or_bits!(u[5], _mm512_srli_epi64::<1>(h), bit);
            u[6] = or_bits!(u[6], _mm512_srli_epi64::<2>(h), bit);
            u[7] = or_bits!(u[7], _mm512_srli_epi64::<3>(h), bit);
        }
        if ty == WeightType::Q6K {
            let bits = _mm512_set1_epi8(0x30);
            for half in 0..2 {
                let h = _mm512_loadu_si512(p.add(lay.qh + 64 * half) as *const _);
                let k = 4 * half;
                u[k] = or_bits!(u[k], _mm512_slli_epi64::<4>(h), bits);
                u[k + 1] = or_bits!(u[k + 1], _mm512_slli_epi64::<2>(h), bits);
                u[k + 2] = or_bits!(u[k + 2], h, bits);
                u[k + 3] = or_bits!(u[k + 3], _mm512_srli_epi64::<2>(h), bits);
            }
        }
        u
    }

    /// Sixteen lanes of `f16 bits at h` times the bytes at `p` (unsigned, or signed for Q6_K).
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn scaled(h: *const u8, p: *const u8, signed: bool) -> __m512 {
        let bytes = _mm_loadu_si128(p as *const __m128i);
        let ints = if signed {
            _mm512_cvtepi8_epi32(bytes)
        } else {
            _mm512_cvtepu8_epi32(bytes)
        };
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(h as *const __m256i));
        _mm512_mul_ps(d, _mm512_cvtepi32_ps(ints))
    }

    /// The block's `(d, d_hi, m)` lanes.
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn scales<const T: u8>(p: *const u8, h: *const u8, lay: GroupLayout) -> [__m512; 3] {
        let ty = WeightType::ALL[T as usize];
        match ty {
            WeightType::Q4K | WeightType::Q5K => {
                let d = scaled(h, p, false);
                let m = scaled(h.add(32), p.add(lay.m), false);
                // −(dmin · mn), the sign flipped exactly.
                let neg = _mm512_xor_si512(_mm512_castps_si512(m), _mm512_set1_epi32(i32::MIN));
                [d, d, _mm512_castsi512_ps(neg)]
            }
            WeightType::Q6K => [
                scaled(h, p, true),
                scaled(h, p.add(lay.m), true),
                _mm512_setzero_ps(),
            ],
            _ => {
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i));
                let m = if ty.has_min() {
                    _mm512_cvtph_ps(_mm256_loadu_si256(p.add(lay.m) as *const __m256i))
                } else {
                    _mm512_setzero_ps()
                };
                [d, d, m]
            }
        }
    }

    /// One group against `NX` activation rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    unsafe fn rows<const T: u8, const NX: usize>(
        g: *const u8,
        nb: usize,
        x: *const BlockQ8,
        out: *mut f32,
        ldo: usize,
        cols: usize,
    ) {
        let ty = WeightType::ALL[T as usize];
        let lay = GroupLayout::of(ty);
        let off = offset(ty, false);
        let mut acc = [_mm512_setzero_ps(); NX];
        for b in 0..nb {
            let (p, h) = block_and_header(g, &lay, b);
            let ahead = p.wrapping_add(PREFETCH_BLOCKS * lay.bytes);
            for line in (0..lay.bytes).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8);
            }
            let u = values::<T>(p, lay);
            let [d, d_hi, m] = scales::<T>(p, h, lay);
            for (j, acc) in acc.iter_mut().enumerate() {
                let xb = &*x.add(j * nb + b);
                // Value registers `from..to` against the activation, from `init`.
                macro_rules! dot {
                    ($init:expr, $from:expr, $to:expr) => {{
                        let mut s = _mm512_set1_epi32($init);
                        for (k, u) in u.iter().enumerate().take($to).skip($from) {
                            s = _mm512_dpbusd_epi32(s, *u, _mm512_set1_epi32(word(xb, k)));
                        }
                        _mm512_cvtepi32_ps(s)
                    }};
                }
                let xd = _mm512_set1_ps(xb.d);
                if ty.split() {
                    let lo = dot!(-off * xb.sum_lo, 0, 4);
                    let hi = dot!(-off * (xb.sum - xb.sum_lo), 4, 8);
                    *acc = _mm512_fmadd_ps(lo, _mm512_mul_ps(d, xd), *acc);
                    *acc = _mm512_fmadd_ps(hi, _mm512_mul_ps(d_hi, xd), *acc);
                } else {
                    *acc = _mm512_fmadd_ps(dot!(-off * xb.sum, 0, 8), _mm512_mul_ps(d, xd), *acc);
                }
                if ty.has_min() {
                    *acc = _mm512_fmadd_ps(m, _mm512_set1_ps(xb.s), *acc);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            let o = out.add(j * ldo);
            if cols == GROUP {
                _mm512_storeu_ps(o, *acc);
            } else {
                _mm512_mask_storeu_ps(o, ((1u32 << cols) - 1) as u16, *acc);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c,fma")]
    unsafe fn all<const T: u8>(
        g: &[u8],
        nb: usize,
        x: &[BlockQ8],
        out: *mut f32,
        ldo: usize,
        cols: usize,
    ) {
        each_row_chunk!(rows, T, g.as_ptr(), nb, x, out, ldo, cols)
    }

    all_entry_points!();
}

/// The 256-bit body, stamped out for AVX-VNNI and plain AVX2: a group as two halves of eight
/// rows. `$isum` turns value registers `ks` and an activation block into the eight rows'
/// integer sums; `$q8_signed` says whether it takes Q8_0's values signed (plain AVX2) or offset
/// by 128 (VNNI).
macro_rules! ymm_kernels {
    ($name:ident, $features:literal, $isum:ident, $q8_signed:expr) => {
        mod $name {
            use super::*;

            /// The eight value registers of half `h` of the group block at `p`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn values<const T: u8>(
                p: *const u8,
                lay: GroupLayout,
                h: usize,
            ) -> [__m256i; 8] {
                let ty = WeightType::ALL[T as usize];
                let q = p.add(lay.qs + 32 * h);
                let mut u = [_mm256_setzero_si256(); 8];
                if ty == WeightType::Q8_0 {
                    for (k, u) in u.iter_mut().enumerate() {
                        let v = _mm256_loadu_si256(q.add(64 * k) as *const __m256i);
                        *u = if $q8_signed {
                            v
                        } else {
                            _mm256_xor_si256(v, _mm256_set1_epi8(-128))
                        };
                    }
                    return u;
                }
                let low = _mm256_set1_epi8(0x0f);
                for c in 0..4 {
                    let v = _mm256_loadu_si256(q.add(64 * c) as *const __m256i);
                    u[c] = _mm256_and_si256(v, low);
                    u[c + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                }
                macro_rules! or_bits {
                    ($u:expr, $s:expr, $mask:expr) => {
                        _mm256_or_si256($u, _mm256_and_si256($s, $mask))
                    };
                }
                if ty.fifth_bit() {
                    let hb = _mm256_loadu_si256(p.add(lay.qh + 32 * h) as *const __m256i);
                    let bit = _mm256_set1_epi8(0x10);
                    u[0] = or_bits!(u[0], _mm256_slli_epi16::<4>(hb), bit);
                    u[1] = or_bits!(u[1], _mm256_slli_epi16::<3>(hb), bit);
                    u[2] = or_bits!(u[2], _mm256_slli_epi16::<2>(hb), bit);
                    u[3] = or_bits!(u[3], _mm256_slli_epi16::<1>(hb), bit);
                    u[4] = or_bits!(u[4], hb, bit);
                    u[5] = or_bits!(u[5], _mm256_srli_epi16::<1>(hb), bit);
                    u[6] = or_bits!(u[6], _mm256_srli_epi16::<2>(hb), bit);
                    u[7] = or_bits!(u[7], _mm256_srli_epi16::<3>(hb), bit);
                }
                if ty == WeightType::Q6K {
                    let bits = _mm256_set1_epi8(0x30);
                    for half in 0..2 {
                        let hb = _mm256_loadu_si256(
                            p.add(lay.qh + 64 * half + 32 * h) as *const __m256i
                        );
                        let k = 4 * half;
                        u[k] = or_bits!(u[k], _mm256_slli_epi16::<4>(hb), bits);
                        u[k + 1] = or_bits!(u[k + 1], _mm256_slli_epi16::<2>(hb), bits);
                        u[k + 2] = or_bits!(u[k + 2], hb, bits);
                        u[k + 3] = or_bits!(u[k + 3], _mm256_srli_epi16::<2>(hb), bits);
                    }
                }
                u
            }

            /// Eight lanes of `f16 bits at hd` times the bytes at `p`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn scaled(hd: *const u8, p: *const u8, signed: bool) -> __m256 {
                let bytes = _mm_loadl_epi64(p as *const __m128i);
                let ints = if signed {
                    _mm256_cvtepi8_epi32(bytes)
                } else {
                    _mm256_cvtepu8_epi32(bytes)
                };
                let d = _mm256_cvtph_ps(_mm_loadu_si128(hd as *const __m128i));
                _mm256_mul_ps(d, _mm256_cvtepi32_ps(ints))
            }

            /// Half `h` of the block's `(d, d_hi, m)` lanes.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn scales<const T: u8>(
                p: *const u8,
                hd: *const u8,
                lay: GroupLayout,
                h: usize,
            ) -> [__m256; 3] {
                let ty = WeightType::ALL[T as usize];
                match ty {
                    WeightType::Q4K | WeightType::Q5K => {
                        let d = scaled(hd.add(16 * h), p.add(8 * h), false);
                        let m = scaled(hd.add(32 + 16 * h), p.add(lay.m + 8 * h), false);
                        let neg =
                            _mm256_xor_si256(_mm256_castps_si256(m), _mm256_set1_epi32(i32::MIN));
                        [d, d, _mm256_castsi256_ps(neg)]
                    }
                    WeightType::Q6K => [
                        scaled(hd.add(16 * h), p.add(8 * h), true),
                        scaled(hd.add(16 * h), p.add(lay.m + 8 * h), true),
                        _mm256_setzero_ps(),
                    ],
                    _ => {
                        let d = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * h) as *const __m128i));
                        let m = if ty.has_min() {
                            _mm256_cvtph_ps(
                                _mm_loadu_si128(p.add(lay.m + 16 * h) as *const __m128i),
                            )
                        } else {
                            _mm256_setzero_ps()
                        };
                        [d, d, m]
                    }
                }
            }

            /// Half `h` of one group against `NX` activation rows.
            #[target_feature(enable = $features)]
            unsafe fn half<const T: u8, const NX: usize>(
                g: *const u8,
                nb: usize,
                x: *const BlockQ8,
                out: *mut f32,
                ldo: usize,
                h: usize,
                cols: usize,
            ) {
                let ty = WeightType::ALL[T as usize];
                let lay = GroupLayout::of(ty);
                let off = offset(ty, $q8_signed);
                let mut acc = [_mm256_setzero_ps(); NX];
                for b in 0..nb {
                    let (p, hd) = block_and_header(g, &lay, b);
                    if h == 0 {
                        let ahead = p.wrapping_add(PREFETCH_BLOCKS * lay.bytes);
                        for line in (0..lay.bytes).step_by(64) {
                            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8);
                        }
                    }
                    let u = values::<T>(p, lay, h);
                    let [d, d_hi, m] = scales::<T>(p, hd, lay, h);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let xb = &*x.add(j * nb + b);
                        let xd = _mm256_set1_ps(xb.d);
                        if ty.split() {
                            let lo = $isum::<T>(_mm256_set1_epi32(-off * xb.sum_lo), &u, xb, 0..4);
                            let hi = $isum::<T>(
                                _mm256_set1_epi32(-off * (xb.sum - xb.sum_lo)),
                                &u,
                                xb,
                                4..8,
                            );
                            *acc =
                                _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(d, xd), *acc);
                            *acc = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(hi),
                                _mm256_mul_ps(d_hi, xd),
                                *acc,
                            );
                        } else {
                            let s = $isum::<T>(_mm256_set1_epi32(-off * xb.sum), &u, xb, 0..8);
                            *acc =
                                _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(d, xd), *acc);
                        }
                        if ty.has_min() {
                            *acc = _mm256_fmadd_ps(m, _mm256_set1_ps(xb.s), *acc);
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate() {
                    let o = out.add(j * ldo + 8 * h);
                    if cols >= 8 * (h + 1) {
                        _mm256_storeu_ps(o, *acc);
                    } else {
                        let mut lanes = [0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), *acc);
                        std::ptr::copy_nonoverlapping(lanes.as_ptr(), o, cols - 8 * h);
                    }
                }
            }

            /// One group against `NX` activation rows: both halves (the second only if it holds
            /// a kept column).
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn rows<const T: u8, const NX: usize>(
                g: *const u8,
                nb: usize,
                x: *const BlockQ8,
                out: *mut f32,
                ldo: usize,
                cols: usize,
            ) {
                half::<T, NX>(g, nb, x, out, ldo, 0, cols);
                if cols > 8 {
                    half::<T, NX>(g, nb, x, out, ldo, 1, cols);
                }
            }

            #[target_feature(enable = $features)]
            unsafe fn all<const T: u8>(
                g: &[u8],
                nb: usize,
                x: &[BlockQ8],
                out: *mut f32,
                ldo: usize,
                cols: usize,
            ) {
                each_row_chunk!(rows, T, g.as_ptr(), nb, x, out, ldo, cols)
            }

            all_entry_points!();
        }
    };
}

/// Eight rows' integer sums over value registers `ks` with AVX-VNNI: one `vpdpbusd` each.
#[inline]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn isum_avxvnni<const T: u8>(
    init: __m256i,
    u: &[__m256i; 8],
    x: &BlockQ8,
    ks: std::ops::Range<usize>,
) -> __m256i {
    let mut s = init;
    for (k, u) in u.iter().enumerate().take(ks.end).skip(ks.start) {
        s = _mm256_dpbusd_avx_epi32(s, *u, _mm256_set1_epi32(word(x, k)));
    }
    s
}

/// Eight rows' integer sums over value registers `ks` with plain AVX2. `vpmaddubsw` makes 16-bit
/// pair sums, which may be added together only while they cannot overflow: eight for 4-bit
/// values (8 · 2 · 15 · 127 = 30 480), four for 5-bit ones (4 · 2 · 31 · 127 = 31 496), two for
/// 6-bit (2 · 2 · 63 · 127 = 32 004), one at a time for Q8_0 (taken as `|w| · sign(x, w)`:
/// 2 · 128 · 127 = 32 512).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn isum_avx2<const T: u8>(
    init: __m256i,
    u: &[__m256i; 8],
    x: &BlockQ8,
    ks: std::ops::Range<usize>,
) -> __m256i {
    let ty = WeightType::ALL[T as usize];
    let ones = _mm256_set1_epi16(1);
    let per = match ty {
        WeightType::Q4_0 | WeightType::Q4_1 | WeightType::Q4K => 8,
        WeightType::Q5_0 | WeightType::Q5_1 | WeightType::Q5K => 4,
        WeightType::Q6K => 2,
        WeightType::Q8_0 => 1,
    };
    let mut s = init;
    let mut k = ks.start;
    while k < ks.end {
        let mut pairs = _mm256_setzero_si256();
        for (k, &u) in u.iter().enumerate().take(ks.end.min(k + per)).skip(k) {
            let xk = _mm256_set1_epi32(word(x, k));
            let p = if ty == WeightType::Q8_0 {
                _mm256_maddubs_epi16(_mm256_sign_epi8(u, u), _mm256_sign_epi8(xk, u))
            } else {
                _mm256_maddubs_epi16(u, xk)
            };
            pairs = _mm256_add_epi16(pairs, p);
        }
        s = _mm256_add_epi32(s, _mm256_madd_epi16(pairs, ones));
        k += per;
    }
    s
}

ymm_kernels!(avxvnni, "avx2,fma,f16c,avxvnni", isum_avxvnni, false);
ymm_kernels!(avx2, "avx2,fma,f16c", isum_avx2, true);

/// The group kernel for `ty` on a SIMD `isa` (the caller checked [`Isa::available`]).
pub fn group_kernel(ty: WeightType, isa: Isa) -> GroupKernel {
    match isa {
        Isa::Avx512Vnni => zmm::get(ty),
        Isa::AvxVnni => avxvnni::get(ty),
        Isa::Avx2 => avx2::get(ty),
        Isa::NeonDot | Isa::Neon | Isa::Scalar => super::scalar::group_kernel(ty),
    }
}
