//! The scalar reference: each weight block unpacked to its unsigned integers, one exact integer
//! sum against the activation block, then the block's scales ([`accumulate`]). Every SIMD path
//! is tested against these functions bit for bit, and CPUs without a SIMD path run them.

use super::{f16_at, packed, BlockQ8, GroupKernel, WeightType, QK};

/// The unsigned integer values of one weight block and its `(d, m, offset)`: the block's value
/// `j` is `d · (u[j] − offset) + m`.
pub fn unpack(ty: WeightType, b: &[u8]) -> ([u8; QK], f32, f32, i32) {
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
    match ty {
        WeightType::Q4_0 => {
            nibbles(&mut u, &b[2..18]);
            (u, f16_at(b), 0.0, 8)
        }
        WeightType::Q4_1 => {
            nibbles(&mut u, &b[4..20]);
            (u, f16_at(b), f16_at(&b[2..]), 0)
        }
        WeightType::Q5_0 => {
            nibbles(&mut u, &b[6..22]);
            high_bits(&mut u, &b[2..6]);
            (u, f16_at(b), 0.0, 16)
        }
        WeightType::Q5_1 => {
            nibbles(&mut u, &b[8..24]);
            high_bits(&mut u, &b[4..8]);
            (u, f16_at(b), f16_at(&b[2..]), 0)
        }
        WeightType::Q8_0 => {
            for (v, q) in u.iter_mut().zip(&b[2..34]) {
                *v = (*q as i8 as i32 + 128) as u8;
            }
            (u, f16_at(b), 0.0, 128)
        }
    }
}

/// The f32 values of one weight block (for tests, the embedding lookup and dequantizing).
pub fn dequantize_block(ty: WeightType, b: &[u8], out: &mut [f32]) {
    let (u, d, m, offset) = unpack(ty, b);
    for (o, v) in out.iter_mut().zip(u) {
        *o = d * (v as i32 - offset) as f32 + m;
    }
}

/// One block's contribution, the arithmetic every kernel runs per (weight row, block,
/// activation row), in this order: the exact integer sum, then `acc + isum · (d_w · d_x)` fused,
/// then (types with a minimum) `acc + m · s_x` fused. The SIMD kernels run the same operations
/// lane by lane, so they match this bit for bit.
#[inline(always)]
pub fn accumulate(acc: f32, isum: i32, d: f32, m: f32, has_min: bool, x: &BlockQ8) -> f32 {
    let acc = (isum as f32).mul_add(d * x.d, acc);
    if has_min {
        m.mul_add(x.s, acc)
    } else {
        acc
    }
}

/// The integer part of a block's dot product: `Σ u·x − offset · Σx`.
#[inline(always)]
fn isum(u: &[u8; QK], offset: i32, x: &BlockQ8) -> i32 {
    let dot: i32 = u
        .iter()
        .zip(&x.qs)
        .map(|(&u, &q)| u as i32 * q as i32)
        .sum();
    dot - offset * x.sum
}

/// The dot product of one weight row in GGUF blocks with one activation row: the reference.
pub fn dot_row(ty: WeightType, w: &[u8], x: &[BlockQ8]) -> f32 {
    let bb = ty.block_bytes();
    let mut acc = 0f32;
    for (b, xb) in w.chunks_exact(bb).zip(x) {
        let (u, d, m, offset) = unpack(ty, b);
        acc = accumulate(acc, isum(&u, offset, xb), d, m, ty.has_min(), xb);
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
    let mut unpacked = vec![([0u8; QK], 0f32, 0f32, 0i32); nb * cols];
    for b in 0..nb {
        for r in 0..cols {
            unpacked[b * cols + r] = packed::unpack(ty, group, nb, r, b);
        }
    }
    for (j, xr) in x.chunks_exact(nb).enumerate() {
        for r in 0..cols {
            let mut acc = 0f32;
            for (b, xb) in xr.iter().enumerate() {
                let (u, d, m, offset) = &unpacked[b * cols + r];
                acc = accumulate(acc, isum(u, *offset, xb), *d, *m, ty.has_min(), xb);
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
    }
}
