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
//! - the scales: sixteen f16 `d` (32 bytes), or for the K-quants sixteen bytes of 6-bit (Q6_K:
//!   signed 8-bit) sub-block scales, the super-block's sixteen f16 `d` (and `dmin`) coming once
//!   per 256 values in a header before its eight blocks;
//! - the minimums: sixteen f16 `m` for Q4_1 and Q5_1, sixteen bytes of 6-bit ones for Q4_K and
//!   Q5_K (Q6_K: the scales of each block's second sixteen values);
//! - `qh`: the fifth bits, 64 bytes, for Q5_0, Q5_1 and Q5_K: byte `4r + i`, bit `k` is the fifth
//!   bit of row `r`'s value `4k + i` (Q6_K: its two high bits, in 128 bytes);
//! - `qs`: the values. 4- to 6-bit: four 64-byte chunks; chunk `c`, byte `4r + i` holds row `r`'s
//!   value `4c + i` in its low nibble and value `16 + 4c + i` in its high one. Q8_0: eight
//!   64-byte chunks; chunk `k`, byte `4r + i` is row `r`'s value `4k + i` (signed).
//!
//! The 32-value types take exactly sixteen GGUF blocks; the K-quants' scales unpacked to a byte
//! each cost 2–3 % more (Q6_K none). Every field starts on a 16-byte boundary (the buffer is
//! 64-byte aligned). A matrix whose row count is not a multiple of sixteen gets zero rows (scale
//! 0) in its last group.

use super::scalar::{self, Block32};
use super::{f16_at, WeightType, QK};

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

/// Where each field of a group's block starts.
#[derive(Debug, Clone, Copy)]
pub struct GroupLayout {
    /// Bytes of one group's 32-value block (sixteen rows' worth).
    pub bytes: usize,
    /// 32-value blocks per super-block: 8 for the K-quants, 1 otherwise.
    pub per_super: usize,
    /// Bytes of a group's super-block header before its blocks (K-quants: sixteen f16 `d`, and
    /// for Q4_K/Q5_K sixteen f16 `dmin`), 0 otherwise.
    pub header: usize,
    /// In a block: the minimums (Q4_1, Q5_1: f16; Q4_K, Q5_K: 6-bit, one byte each) or Q6_K's
    /// second-half scales (`i8`). The K-quants' (first-half) scales are bytes at offset 0.
    pub m: usize,
    /// The fifth bits (64 bytes: byte `4r + i`, bit `k` for value `4k + i`), or Q6_K's two high
    /// bits (128 bytes: values `4k + i` for `k < 4` in bits `2k` of the first 64, the rest in the
    /// second).
    pub qh: usize,
    /// The values (nibbles in four 64-byte chunks, or Q8_0's bytes in eight).
    pub qs: usize,
}

impl GroupLayout {
    /// The layout for `ty`.
    pub const fn of(ty: WeightType) -> Self {
        let (per_super, header, m, qh, qs) = match ty {
            WeightType::Q4_0 | WeightType::Q8_0 => (1, 0, 32, 32, 32),
            WeightType::Q4_1 => (1, 0, 32, 64, 64),
            WeightType::Q5_0 => (1, 0, 32, 32, 96),
            WeightType::Q5_1 => (1, 0, 32, 64, 128),
            WeightType::Q4K => (8, 64, 16, 32, 32),
            WeightType::Q5K => (8, 64, 16, 32, 96),
            WeightType::Q6K => (8, 32, 16, 32, 160),
        };
        let bytes = qs
            + if matches!(ty, WeightType::Q8_0) {
                512
            } else {
                256
            };
        GroupLayout {
            bytes,
            per_super,
            header,
            m,
            qh,
            qs,
        }
    }

    /// Offset of block `b`'s fields within a group's data.
    pub const fn block_at(&self, b: usize) -> usize {
        self.header_at(b) + self.header + (b % self.per_super) * self.bytes
    }

    /// Offset of the header of block `b`'s super-block within a group's data.
    pub const fn header_at(&self, b: usize) -> usize {
        (b / self.per_super) * (self.header + self.per_super * self.bytes)
    }

    /// Bytes of one group of `nb` blocks per row.
    pub const fn group_bytes(&self, nb: usize) -> usize {
        (nb / self.per_super) * (self.header + self.per_super * self.bytes)
    }
}

/// `rows` rows of `cols` values in the file's blocks (`data`, row after row) in the group
/// layout (`cols` a multiple of the type's block).
pub fn pack(ty: WeightType, rows: usize, cols: usize, data: &[u8]) -> Aligned {
    let nb = cols / QK;
    let (bb, per) = (ty.block_bytes(), ty.block_values() / QK);
    let lay = GroupLayout::of(ty);
    let groups = rows.div_ceil(GROUP);
    let gbytes = lay.group_bytes(nb);
    let mut out = Aligned::zeroed(groups * gbytes);
    let dst = out.bytes_mut();
    for r in 0..rows {
        let (g, lane) = (r / GROUP, r % GROUP);
        let group = &mut dst[g * gbytes..(g + 1) * gbytes];
        for b in 0..nb {
            let src = &data[(r * nb / per + b / per) * bb..][..bb];
            let j = b % per;
            if j == 0 && lay.header > 0 {
                // The super-block's d (Q6_K keeps it last) and dmin, as f16 bits.
                let h = &mut group[lay.header_at(b)..];
                let d = if ty == WeightType::Q6K { 208 } else { 0 };
                h[2 * lane..2 * lane + 2].copy_from_slice(&src[d..d + 2]);
                if ty != WeightType::Q6K {
                    h[32 + 2 * lane..32 + 2 * lane + 2].copy_from_slice(&src[2..4]);
                }
            }
            let gb = &mut group[lay.block_at(b)..lay.block_at(b) + lay.bytes];
            match ty {
                WeightType::Q4K | WeightType::Q5K => {
                    let (sc, mn) = scalar::scale_min_k4(j, &src[4..16]);
                    gb[lane] = sc;
                    gb[lay.m + lane] = mn;
                }
                WeightType::Q6K => {
                    gb[lane] = src[192 + 8 * (j / 4) + 2 * (j % 4)];
                    gb[lay.m + lane] = src[192 + 8 * (j / 4) + 2 * (j % 4) + 1];
                }
                _ => {
                    gb[2 * lane..2 * lane + 2].copy_from_slice(&src[..2]);
                    if ty.has_min() {
                        gb[lay.m + 2 * lane..lay.m + 2 * lane + 2].copy_from_slice(&src[2..4]);
                    }
                }
            }
            let u = scalar::unpack(ty, src, j).u;
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
                if ty.fifth_bit() {
                    gb[lay.qh + 4 * lane + i] =
                        (0..8).fold(0u8, |acc, k| acc | ((u[4 * k + i] >> 4) & 1) << k);
                }
                if ty == WeightType::Q6K {
                    for half in 0..2 {
                        gb[lay.qh + 64 * half + 4 * lane + i] = (0..4).fold(0u8, |acc, k| {
                            acc | ((u[4 * (4 * half + k) + i] >> 4) & 3) << (2 * k)
                        });
                    }
                }
            }
        }
    }
    out
}

/// Row `r`'s block `b` (32 values) from the group layout `packed` (`nb` blocks per row), as
/// [`scalar::unpack`] reads the file's block.
pub fn unpack(ty: WeightType, packed: &[u8], nb: usize, r: usize, b: usize) -> Block32 {
    let lay = GroupLayout::of(ty);
    let (g, lane) = (r / GROUP, r % GROUP);
    let group = &packed[g * lay.group_bytes(nb)..(g + 1) * lay.group_bytes(nb)];
    let gb = &group[lay.block_at(b)..lay.block_at(b) + lay.bytes];
    let h = &group[lay.header_at(b)..];
    let (d, d_hi, m) = match ty {
        WeightType::Q4K | WeightType::Q5K => (
            f16_at(&h[2 * lane..]) * gb[lane] as f32,
            f16_at(&h[2 * lane..]) * gb[lane] as f32,
            -(f16_at(&h[32 + 2 * lane..]) * gb[lay.m + lane] as f32),
        ),
        WeightType::Q6K => (
            f16_at(&h[2 * lane..]) * gb[lane] as i8 as f32,
            f16_at(&h[2 * lane..]) * gb[lay.m + lane] as i8 as f32,
            0.0,
        ),
        _ => {
            let d = f16_at(&gb[2 * lane..]);
            let m = if ty.has_min() {
                f16_at(&gb[lay.m + 2 * lane..])
            } else {
                0.0
            };
            (d, d, m)
        }
    };
    let mut u = [0u8; QK];
    for i in 0..4 {
        for k in 0..8 {
            u[4 * k + i] = if ty == WeightType::Q8_0 {
                gb[lay.qs + 64 * k + 4 * lane + i] ^ 0x80
            } else {
                let byte = gb[lay.qs + 64 * (k % 4) + 4 * lane + i];
                let nibble = if k < 4 { byte & 0x0f } else { byte >> 4 };
                let high = if ty.fifth_bit() {
                    ((gb[lay.qh + 4 * lane + i] >> k) & 1) << 4
                } else if ty == WeightType::Q6K {
                    ((gb[lay.qh + 64 * (k / 4) + 4 * lane + i] >> (2 * (k % 4))) & 3) << 4
                } else {
                    0
                };
                nibble | high
            };
        }
    }
    Block32 { u, d, d_hi, m }
}
