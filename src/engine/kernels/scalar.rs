//! The scalar reference: each weight block unpacked to its unsigned integers, one exact integer
//! sum against the activation block, then the block's scales. Every SIMD path is tested against
//! these functions, and CPUs without a SIMD path run them.

use super::{f16_at, BlockQ8, DotRows, WeightType, QK};

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

/// The dot product of one weight row with one activation row.
pub fn dot_row(ty: WeightType, w: &[u8], x: &[BlockQ8]) -> f32 {
    let bb = ty.block_bytes();
    let mut acc = 0f32;
    for (b, xb) in w.chunks_exact(bb).zip(x) {
        let (u, d, m, offset) = unpack(ty, b);
        let dot: i32 = u
            .iter()
            .zip(&xb.qs)
            .map(|(&u, &q)| u as i32 * q as i32)
            .sum();
        acc += (d * xb.d) * (dot - offset * xb.sum) as f32;
        if ty.has_min() {
            acc += m * xb.s;
        }
    }
    acc
}

fn rows<const T: u8>(w: &[u8], row_bytes: usize, x: &[BlockQ8], nb: usize, out: &mut [f32]) {
    let ty = WeightType::ALL[T as usize];
    let rows = out.len() / (x.len() / nb).max(1);
    for (xr, o) in x.chunks_exact(nb).zip(out.chunks_exact_mut(rows)) {
        for (o, row) in o.iter_mut().zip(w.chunks_exact(row_bytes)) {
            *o = dot_row(ty, row, xr);
        }
    }
}

/// The scalar row kernel for `ty`.
pub fn dot_rows_fn(ty: WeightType) -> DotRows {
    match ty {
        WeightType::Q4_0 => rows::<0>,
        WeightType::Q4_1 => rows::<1>,
        WeightType::Q5_0 => rows::<2>,
        WeightType::Q5_1 => rows::<3>,
        WeightType::Q8_0 => rows::<4>,
    }
}
