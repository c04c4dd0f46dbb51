//! The x86-64 SIMD row kernels: one body per instruction set, stamped out by a macro so each
//! copy is compiled with its own `#[target_feature]` set (and only ever called after
//! [`super::Isa::available`] said yes).
//!
//! Per block: the weight's 32 unsigned values are unpacked into one 256-bit register, multiplied
//! with the activation's 32 signed bytes and summed into eight `i32` lanes (`vpdpbusd` with
//! VNNI; `vpmaddubsw` + `vpmaddwd` on plain AVX2), the type's offset (`8`, `16`, `128`) is folded
//! into lane 0 as `−offset · Σx`, so the integer sum is exact, and the lanes are scaled by
//! `d_w · d_x` into eight f32 accumulators. A row's accumulators are summed once at its end.

use std::arch::x86_64::*;

use super::{BlockQ8, DotRows, Isa, WeightType};

/// Byte `j` of the result is `0x10` where bit `j` of `bits` is set, else 0 (the fifth bit of
/// the 5-bit formats, in place).
macro_rules! fifth_bits {
    ($bits:expr) => {{
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32($bits as i32),
            _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0x0000000000000000,
            ),
        );
        // Byte j of the mask has every bit but (j mod 8) set: OR-ing leaves 0xff iff that bit is.
        let all = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe_u64 as i64));
        _mm256_and_si256(
            _mm256_cmpeq_epi8(all, _mm256_set1_epi64x(-1)),
            _mm256_set1_epi8(0x10),
        )
    }};
}

/// How far ahead of the block being computed the kernels prefetch, in bytes.
const PREFETCH_AHEAD: usize = 512;

macro_rules! kernel_set {
    ($name:ident, $features:literal, $dot_u:ident, $prep8:ident, $dot8:ident, $offset8:expr) => {
        mod $name {
            use super::*;

            /// A little-endian f16 at `p` as f32 (F16C).
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn f16(p: *const u8) -> f32 {
                let bits = (p as *const u16).read_unaligned();
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
            }

            /// 16 bytes of packed nibbles → 32 bytes: low nibbles first, then high.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn nibbles(p: *const u8) -> __m256i {
                let q = _mm_loadu_si128(p as *const __m128i);
                let mask = _mm_set1_epi8(0x0f);
                let lo = _mm_and_si128(q, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
                _mm256_set_m128i(hi, lo)
            }

            /// Sum of the eight f32 lanes.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn hsum(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }

            /// Weight rows against `NX` activation rows starting at `x[0]`, `nb` blocks each:
            /// `out[j * rows + r]`. Each weight block is unpacked once for the `NX` rows; each
            /// (weight row, activation row) pair keeps its own accumulators and runs the same
            /// operations in the same order whatever `NX` is.
            #[target_feature(enable = $features)]
            unsafe fn block_rows<const T: u8, const NX: usize>(
                w: &[u8],
                row_bytes: usize,
                x: &[BlockQ8],
                nb: usize,
                out: &mut [f32],
                rows: usize,
            ) {
                let ty = WeightType::ALL[T as usize];
                let bb = ty.block_bytes();
                debug_assert!(row_bytes >= nb * bb && w.len() >= rows * row_bytes);
                debug_assert!(x.len() >= NX * nb && out.len() >= NX * rows);
                for r in 0..rows {
                    let row = w.as_ptr().add(r * row_bytes);
                    let mut acc = [_mm256_setzero_ps(); NX];
                    let mut acc_min = [0f32; NX];
                    for b in 0..nb {
                        let p = row.add(b * bb);
                        // Decode streams the weights from memory: ask for the bytes 512 ahead.
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD) as *const i8);
                        let d = f16(p);
                        // The block's unsigned values (Q8_0: prepared signed ones) and offset.
                        let (u, offset) = match ty {
                            WeightType::Q4_0 => (nibbles(p.add(2)), 8),
                            WeightType::Q4_1 => (nibbles(p.add(4)), 0),
                            WeightType::Q5_0 => {
                                let qh = (p.add(2) as *const u32).read_unaligned();
                                (_mm256_or_si256(nibbles(p.add(6)), fifth_bits!(qh)), 16)
                            }
                            WeightType::Q5_1 => {
                                let qh = (p.add(4) as *const u32).read_unaligned();
                                (_mm256_or_si256(nibbles(p.add(8)), fifth_bits!(qh)), 0)
                            }
                            WeightType::Q8_0 => (
                                $prep8(_mm256_loadu_si256(p.add(2) as *const __m256i)),
                                $offset8,
                            ),
                        };
                        let m = if ty.has_min() { f16(p.add(2)) } else { 0.0 };
                        for j in 0..NX {
                            let xb = x.get_unchecked(j * nb + b);
                            let xq = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
                            let init = _mm256_castsi128_si256(_mm_cvtsi32_si128(-offset * xb.sum));
                            let sum = if ty == WeightType::Q8_0 {
                                $dot8(init, u, xq)
                            } else {
                                $dot_u(init, u, xq)
                            };
                            acc[j] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(sum),
                                _mm256_set1_ps(d * xb.d),
                                acc[j],
                            );
                            if ty.has_min() {
                                acc_min[j] += m * xb.s;
                            }
                        }
                    }
                    for j in 0..NX {
                        *out.get_unchecked_mut(j * rows + r) = hsum(acc[j]) + acc_min[j];
                    }
                }
            }

            /// Every activation row, four at a time (then the rest together).
            #[target_feature(enable = $features)]
            unsafe fn all_rows<const T: u8>(
                w: &[u8],
                row_bytes: usize,
                x: &[BlockQ8],
                nb: usize,
                out: &mut [f32],
            ) {
                let nx = x.len() / nb;
                let rows = out.len() / nx.max(1);
                let mut j = 0;
                while j < nx {
                    let (xs, o) = (&x[j * nb..], &mut out[j * rows..]);
                    match nx - j {
                        1 => block_rows::<T, 1>(w, row_bytes, xs, nb, o, rows),
                        2 => block_rows::<T, 2>(w, row_bytes, xs, nb, o, rows),
                        3 => block_rows::<T, 3>(w, row_bytes, xs, nb, o, rows),
                        _ => block_rows::<T, 4>(w, row_bytes, xs, nb, o, rows),
                    }
                    j += 4;
                }
            }

            fn q4_0(w: &[u8], rb: usize, x: &[BlockQ8], nb: usize, out: &mut [f32]) {
                // SAFETY: only handed out by `dot_rows_fn` after the features were detected.
                unsafe { all_rows::<0>(w, rb, x, nb, out) }
            }
            fn q4_1(w: &[u8], rb: usize, x: &[BlockQ8], nb: usize, out: &mut [f32]) {
                // SAFETY: as above.
                unsafe { all_rows::<1>(w, rb, x, nb, out) }
            }
            fn q5_0(w: &[u8], rb: usize, x: &[BlockQ8], nb: usize, out: &mut [f32]) {
                // SAFETY: as above.
                unsafe { all_rows::<2>(w, rb, x, nb, out) }
            }
            fn q5_1(w: &[u8], rb: usize, x: &[BlockQ8], nb: usize, out: &mut [f32]) {
                // SAFETY: as above.
                unsafe { all_rows::<3>(w, rb, x, nb, out) }
            }
            fn q8_0(w: &[u8], rb: usize, x: &[BlockQ8], nb: usize, out: &mut [f32]) {
                // SAFETY: as above.
                unsafe { all_rows::<4>(w, rb, x, nb, out) }
            }

            pub(super) fn get(ty: WeightType) -> DotRows {
                match ty {
                    WeightType::Q4_0 => q4_0,
                    WeightType::Q4_1 => q4_1,
                    WeightType::Q5_0 => q5_0,
                    WeightType::Q5_1 => q5_1,
                    WeightType::Q8_0 => q8_0,
                }
            }
        }
    };
}

/// `acc + Σ u·x` per lane, unsigned × signed bytes, AVX-512 VNNI on 256-bit registers.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
unsafe fn dot_u_avx512vnni(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, x)
}

/// Q8_0 weights for the VNNI kernels: `w + 128` as unsigned bytes (the caller folds
/// `−128 · Σx` into the accumulator).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn offset_by_128(w: __m256i) -> __m256i {
    _mm256_xor_si256(w, _mm256_set1_epi8(-128))
}

/// Q8_0 weights for plain AVX2: kept signed ([`dot_s8_avx2`] multiplies them).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn as_signed(w: __m256i) -> __m256i {
    w
}

/// As [`dot_u_avx512vnni`], the VEX-encoded AVX-VNNI form.
#[inline]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn dot_u_avxvnni(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, u, x)
}

/// Unsigned values below 64 (4- and 5-bit weights): `vpmaddubsw` cannot saturate.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_u_avx2(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(u, x);
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Signed × signed through `|w| · sign(x, w)` (no offset: the caller folds in zero).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_s8_avx2(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

kernel_set!(
    avx512vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    dot_u_avx512vnni,
    offset_by_128,
    dot_u_avx512vnni,
    128
);
kernel_set!(
    avxvnni,
    "avx2,fma,f16c,avxvnni",
    dot_u_avxvnni,
    offset_by_128,
    dot_u_avxvnni,
    128
);
kernel_set!(avx2, "avx2,fma,f16c", dot_u_avx2, as_signed, dot_s8_avx2, 0);

/// The row kernel for `ty` on a SIMD `isa` (the caller checked [`Isa::available`]).
pub fn dot_rows_fn(ty: WeightType, isa: Isa) -> DotRows {
    match isa {
        Isa::Avx512Vnni => avx512vnni::get(ty),
        Isa::AvxVnni => avxvnni::get(ty),
        Isa::Avx2 => avx2::get(ty),
        Isa::Scalar => super::scalar::dot_rows_fn(ty),
    }
}
