//! The interleaved layout the kernels compute on: the file's blocks, regrouped, never
//! requantized.
//!
//! Owns the conversion from GGUF's row-after-row blocks to [`GROUP`]-row groups, and back (for
//! dequantizing a row). In a group, block `b` of all sixteen rows is stored together, each
//! field as sixteen lanes, so that one SIMD register holds the same four values of sixteen rows
//! (lane `r` is row `r`'s): the kernels multiply a register with one broadcast activation word and
//! get sixteen rows' partial sums in place, with no horizontal sums and no shuffles. A group's
//! block is, in order:
//!
//! - `d`: sixteen f16 scales (32 bytes);
//! - `m`: sixteen f16 minimums (32 bytes), for Q4_1 and Q5_1;
//! - `qh`: the fifth bits, 64 bytes, for Q5_0 and Q5_1: byte `4r + i`, bit `k` is the fifth
//!   bit of row `r`'s value `4k + i`;
//! - `qs`: the values. 4- and 5-bit: four 64-byte chunks; chunk `c`, byte `4r + i` holds row `r`'s
//!   value `4c + i` in its low nibble and value `16 + 4c + i` in its high one. Q8_0: eight 64-byte
//!   chunks; chunk `k`, byte `4r + i` is row `r`'s value `4k + i` (signed).
//!
//! Sizes are exactly sixteen GGUF blocks, so the layout costs no memory; every field starts on a
//! 32-byte boundary (the buffer is 64-byte aligned). A matrix whose row count is not a multiple of
//! sixteen gets zero rows (scale 0) in its last group.

use super::{scalar, WeightType, QK};

/// Rows per group: the lanes of one 512-bit register of `i32` sums.
pub const GROUP: usize = 16;

/// One 64-byte line: the unit of the aligned buffer.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A 64-byte-aligned byte buffer.
#[derive(Clone)]
pub struct Aligned {
    lines: Vec<Line>,
    len: usize,
}

impl std::fmt::Debug for Aligned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} bytes)", self.len)
    }
}

impl Aligned {
    fn zeroed(len: usize) -> Self {
        Self {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `lines` holds at least `len` initialised bytes, and u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u8, self.len) }
    }
}

/// Where each field of a group's block starts, and its size.
#[derive(Debug, Clone, Copy)]
pub struct GroupLayout {
    /// Bytes of one group's block (sixteen GGUF blocks).
    pub bytes: usize,
    /// Offset of the minimums (Q4_1, Q5_1).
    pub m: usize,
    /// Offset of the fifth bits (Q5_0, Q5_1).
    pub qh: usize,
    /// Offset of the values.
    pub qs: usize,
}

impl GroupLayout {
    /// The layout for `ty`.
    pub const fn of(ty: WeightType) -> Self {
        let m = 2 * GROUP;
        let qh = if ty.has_min() { m + 2 * GROUP } else { m };
        let qs = match ty {
            WeightType::Q5_0 | WeightType::Q5_1 => qh + 4 * GROUP,
            _ => qh,
        };
        GroupLayout {
            bytes: GROUP * ty.block_bytes(),
            m,
            qh,
            qs,
        }
    }
}

/// `rows` rows of `cols` values in GGUF blocks (`data`, row after row) in the group layout.
pub fn pack(ty: WeightType, rows: usize, cols: usize, data: &[u8]) -> Aligned {
    let nb = cols / QK;
    let bb = ty.block_bytes();
    let lay = GroupLayout::of(ty);
    let groups = rows.div_ceil(GROUP);
    let mut out = Aligned::zeroed(groups * nb * lay.bytes);
    let dst = out.bytes_mut();
    for r in 0..rows {
        let (g, lane) = (r / GROUP, r % GROUP);
        for b in 0..nb {
            let src = &data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
            let gb = &mut dst[(g * nb + b) * lay.bytes..(g * nb + b + 1) * lay.bytes];
            gb[2 * lane..2 * lane + 2].copy_from_slice(&src[..2]);
            if ty.has_min() {
                gb[lay.m + 2 * lane..lay.m + 2 * lane + 2].copy_from_slice(&src[2..4]);
            }
            let (u, ..) = scalar::unpack(ty, src);
            for i in 0..4 {
                if ty == WeightType::Q8_0 {
                    for k in 0..8 {
                        // Stored signed, as the file has it (`unpack` offset it by 128).
                        gb[lay.qs + 64 * k + 4 * lane + i] = u[4 * k + i] ^ 0x80;
                    }
                    continue;
                }
                for c in 0..4 {
                    gb[lay.qs + 64 * c + 4 * lane + i] =
                        (u[4 * c + i] & 0x0f) | (u[16 + 4 * c + i] & 0x0f) << 4;
                }
                if matches!(ty, WeightType::Q5_0 | WeightType::Q5_1) {
                    gb[lay.qh + 4 * lane + i] =
                        (0..8).fold(0u8, |acc, k| acc | ((u[4 * k + i] >> 4) & 1) << k);
                }
            }
        }
    }
    out
}

/// Row `r`'s block `b` from the group layout `packed` (`nb` blocks per row): its unsigned
/// values, `d`, `m` and offset, as [`scalar::unpack`] reads a GGUF block.
pub fn unpack(
    ty: WeightType,
    packed: &[u8],
    nb: usize,
    r: usize,
    b: usize,
) -> ([u8; QK], f32, f32, i32) {
    let lay = GroupLayout::of(ty);
    let (g, lane) = (r / GROUP, r % GROUP);
    let gb = &packed[(g * nb + b) * lay.bytes..(g * nb + b + 1) * lay.bytes];
    let d = super::f16_at(&gb[2 * lane..]);
    let m = if ty.has_min() {
        super::f16_at(&gb[lay.m + 2 * lane..])
    } else {
        0.0
    };
    let mut u = [0u8; QK];
    for i in 0..4 {
        for k in 0..8 {
            u[4 * k + i] = if ty == WeightType::Q8_0 {
                gb[lay.qs + 64 * k + 4 * lane + i] ^ 0x80
            } else {
                let byte = gb[lay.qs + 64 * (k % 4) + 4 * lane + i];
                let nibble = if k < 4 { byte & 0x0f } else { byte >> 4 };
                let fifth = match ty {
                    WeightType::Q5_0 | WeightType::Q5_1 => (gb[lay.qh + 4 * lane + i] >> k) & 1,
                    _ => 0,
                };
                nibble | fifth << 4
            };
        }
    }
    let offset = match ty {
        WeightType::Q4_0 => 8,
        WeightType::Q5_0 => 16,
        WeightType::Q8_0 => 128,
        WeightType::Q4_1 | WeightType::Q5_1 => 0,
    };
    (u, d, m, offset)
}
