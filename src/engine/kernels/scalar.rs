//! The scalar reference: each weight block unpacked to its unsigned integers, one exact integer
//! sum against the activation block, then the block's scales ([`accumulate`]). Every SIMD path
//! is tested against these functions bit for bit, and CPUs without a SIMD path run them.

use super::{f16_at, packed, BlockQ8, GroupKernel, WeightType, QK};

/// One 32-value block of any type as the kernels compute it: value `j` is
/// `d_j · (u[j] − offset) + m`, with `d_j = d` for `j < 16` and `d_hi` after (the same but for
/// Q6_K, whose sixteen-value halves have their own scales).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block32 {
    /// The unsigned values.
    pub u: [u8; QK],
    /// Scale of the block (of its first half, Q6_K).
    pub d: f32,
    /// Scale of the second half (Q6_K; equal to `d` otherwise).
    pub d_hi: f32,
    /// Minimum (0 for the types without one).
    pub m: f32,
}

/// Block `j` (32 values) of the file's block `b` (`ty.block_values()` values).
pub fn unpack(ty: WeightType, b: &[u8], j: usize) -> Block32 {
    let mut u = [0u8; QK];
    let nibbles = |u: &mut [u8; QK], qs: &[u8]| {
        for j in 0..QK / 2 {
            u[j] = qs[j] & 0x0f;
            u[j + QK / 2] = qs[j] >> 4;
        }
    };
    let high_bits = |u: &mut [u8; QK], qh: &[u8]| {
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, v) in u.iter_mut().enumerate() {
            *v |= (((qh >> j) & 1) as u8) << 4;
        }
    };
    let plain = |u, d| Block32 {
        u,
        d,
        d_hi: d,
        m: 0.0,
    };
    match ty {
        WeightType::Q4_0 => {
            nibbles(&mut u, &b[2..18]);
            plain(u, f16_at(b))
        }
        WeightType::Q4_1 => {
            nibbles(&mut u, &b[4..20]);
            Block32 {
                m: f16_at(&b[2..]),
                ..plain(u, f16_at(b))
            }
        }
        WeightType::Q5_0 => {
            nibbles(&mut u, &b[6..22]);
            high_bits(&mut u, &b[2..6]);
            plain(u, f16_at(b))
        }
        WeightType::Q5_1 => {
            nibbles(&mut u, &b[8..24]);
            high_bits(&mut u, &b[4..8]);
            Block32 {
                m: f16_at(&b[2..]),
                ..plain(u, f16_at(b))
            }
        }
        WeightType::Q8_0 => {
            for (v, q) in u.iter_mut().zip(&b[2..34]) {
                *v = (*q as i8 as i32 + 128) as u8;
            }
            plain(u, f16_at(b))
        }
        WeightType::Q4K | WeightType::Q5K => {
            // d, dmin, 12 bytes of 6-bit scales and minimums, (Q5_K: 32 bytes of fifth bits:
            // value l of sub-block j has bit j of qh[l],) then each 64 values in 32 bytes, low
            // nibbles first.
            let qs = if ty == WeightType::Q4K { 16 } else { 48 };
            let chunk = &b[qs + 32 * (j / 2)..qs + 32 * (j / 2) + 32];
            for (l, (v, q)) in u.iter_mut().zip(chunk).enumerate() {
                *v = (q >> (4 * (j % 2))) & 0x0f;
                if ty == WeightType::Q5K {
                    *v |= ((b[16 + l] >> j) & 1) << 4;
                }
            }
            let (sc, mn) = scale_min_k4(j, &b[4..16]);
            Block32 {
                m: -(f16_at(&b[2..]) * mn as f32),
                ..plain(u, f16_at(b) * sc as f32)
            }
        }
        WeightType::Q6K => {
            // 128 bytes of low nibbles, 64 of high bit pairs, 16 signed scales, d. In each half
            // of 128 values, value 32q + l (q = 0..4) takes nibble q / 2 of ql[l + 32 (q % 2)]
            // and bits 2q..2q+1 of qh[l]; each sixteen values have their own scale.
            let (half, q) = (j / 4, j % 4);
            let (ql, qh) = (&b[64 * half..], &b[128 + 32 * half..]);
            for (l, v) in u.iter_mut().enumerate() {
                let low = (ql[l + 32 * (q % 2)] >> (4 * (q / 2))) & 0x0f;
                *v = low | ((qh[l] >> (2 * q)) & 3) << 4;
            }
            let d = f16_at(&b[208..]);
            let sc = |i: usize| b[192 + 8 * half + i] as i8 as f32;
            Block32 {
                u,
                d: d * sc(2 * q),
                d_hi: d * sc(2 * q + 1),
                m: 0.0,
            }
        }
    }
}

/// Scale and minimum of sub-block `j` from Q4_K/Q5_K's 12 packed bytes (llama.cpp's
/// `get_scale_min_k4`).
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The f32 values of block `j` (32 values) of the file's block `b` (tests, the embedding
/// lookup).
pub fn dequantize(ty: WeightType, b: &[u8], j: usize, out: &mut [f32]) {
    let blk = unpack(ty, b, j);
    for (i, (o, v)) in out.iter_mut().zip(blk.u).enumerate() {
        let d = if i < QK / 2 { blk.d } else { blk.d_hi };
        *o = d * (v as i32 - ty.offset()) as f32 + blk.m;
    }
}

/// One block's contribution, the arithmetic every kernel runs per (weight row, block,
/// activation row), in this order: the exact integer sums, then `acc + isum · (d_w · d_x)` fused
/// (Q6_K: once per half, with each half's scale), then (types with a minimum) `acc + m · s_x`
/// fused. The SIMD kernels run the same operations lane by lane, so they match this bit for bit.
#[inline(always)]
pub fn accumulate(ty: WeightType, acc: f32, blk: &Block32, x: &BlockQ8) -> f32 {
    let dot = |r: std::ops::Range<usize>| -> i32 {
        blk.u[r.clone()]
            .iter()
            .zip(&x.qs[r])
            .map(|(&u, &q)| u as i32 * q as i32)
            .sum()
    };
    let (lo, hi) = (dot(0..QK / 2), dot(QK / 2..QK));
    let off = ty.offset();
    let acc = if ty.split() {
        let acc = ((lo - off * x.sum_lo) as f32).mul_add(blk.d * x.d, acc);
        ((hi - off * (x.sum - x.sum_lo)) as f32).mul_add(blk.d_hi * x.d, acc)
    } else {
        ((lo + hi - off * x.sum) as f32).mul_add(blk.d * x.d, acc)
    };
    if ty.has_min() {
        blk.m.mul_add(x.s, acc)
    } else {
        acc
    }
}

/// The dot product of one weight row in the file's blocks with one activation row: the
/// reference.
pub fn dot_row(ty: WeightType, w: &[u8], x: &[BlockQ8]) -> f32 {
    let per = ty.block_values() / QK;
    let mut acc = 0f32;
    for (i, xb) in x.iter().enumerate() {
        let b = &w[(i / per) * ty.block_bytes()..(i / per + 1) * ty.block_bytes()];
        acc = accumulate(ty, acc, &unpack(ty, b, i % per), xb);
    }
    acc
}

/// The portable group kernel (CPUs without a SIMD path): each group's blocks unpacked once,
/// then every activation row.
///
/// # Safety
/// As [`GroupKernel`]: `out` has room for `x.len() / nb` rows of `ldo` floats from column 0.
unsafe fn group<const T: u8>(
    group: &[u8],
    nb: usize,
    x: &[BlockQ8],
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    let ty = WeightType::ALL[T as usize];
    let mut unpacked = Vec::with_capacity(nb * cols);
    for b in 0..nb {
        for r in 0..cols {
            unpacked.push(packed::unpack(ty, group, nb, r, b));
        }
    }
    for (j, xr) in x.chunks_exact(nb).enumerate() {
        for r in 0..cols {
            let mut acc = 0f32;
            for (b, xb) in xr.iter().enumerate() {
                acc = accumulate(ty, acc, &unpacked[b * cols + r], xb);
            }
            // SAFETY: the caller gives room for every activation row's `cols` columns.
            unsafe { *out.add(j * ldo + r) = acc };
        }
    }
}

/// The portable group kernel for `ty`.
pub fn group_kernel(ty: WeightType) -> GroupKernel {
    match ty {
        WeightType::Q4_0 => group::<0>,
        WeightType::Q4_1 => group::<1>,
        WeightType::Q5_0 => group::<2>,
        WeightType::Q5_1 => group::<3>,
        WeightType::Q8_0 => group::<4>,
        WeightType::Q4K => group::<5>,
        WeightType::Q5K => group::<6>,
        WeightType::Q6K => group::<7>,
    }
}
