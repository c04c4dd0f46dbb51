//! A quantized weight matrix in the file's own blocks (regrouped, see [`super::packed`]) and
//! `x · Wᵀ` over it.
//!
//! The output columns are split into one contiguous range of sixteen-row groups per thread of
//! rayon's pool (the pool Candle and the rest of the engine use, so nothing competes for the
//! cores); each thread takes its groups one at a time against every activation row, so a group
//! (at most ~17 KB: 1536 inputs of Q8_0) is read from memory once per call and stays in L1
//! while the activations pass over it. Every output element is the same operations over the
//! same two rows, whatever the batch size, the chunking or the thread count: results are
//! bit-identical however a request is batched.

use super::packed::{self, Aligned, GroupLayout, GROUP};
use super::{group_kernel, quantize_row, BlockQ8, GroupKernel, Isa, WeightType, QK};

/// Activation rows from which quantizing them is spread over the pool.
const PARALLEL_QUANTIZE_ROWS: usize = 8;

/// A `[rows, cols]` matrix of GGUF blocks: one part, or parts of different types stacked on
/// the output dimension (a fused Q/K/V whose V is Q6_K and Q/K Q4_K, as Q4_K_M files ship).
#[derive(Debug, Clone)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    parts: Vec<Part>,
    isa: Isa,
}

/// Rows `first_row..first_row + rows` of a matrix, of one type.
#[derive(Debug, Clone)]
struct Part {
    ty: WeightType,
    rows: usize,
    first_row: usize,
    /// The matrix's group number of this part's first group.
    first_group: usize,
    /// The blocks in the group layout.
    data: std::sync::Arc<Aligned>,
    kernel: GroupKernel,
}

impl Part {
    fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }
}

/// Why a matrix cannot be built from the given bytes.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// Rows of this length cannot be split into the type's blocks.
    #[error("{cols} columns is not a multiple of {block}")]
    Columns {
        /// The row length given.
        cols: usize,
        /// Values per block of the type.
        block: usize,
    },
    /// The byte count does not match the shape.
    #[error("{ty} [{rows}, {cols}] needs {expected} bytes, got {got}")]
    Size {
        /// The type's name.
        ty: &'static str,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// Stacked parts must share their column count.
    #[error("a part of {cols} columns cannot stack on parts of {expected}")]
    Stack {
        /// The part's columns.
        cols: usize,
        /// The first part's.
        expected: usize,
    },
}

/// A raw pointer that may cross to the pool's threads (each writes a disjoint part).
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used to write disjoint ranges of one buffer that outlives the parallel section.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not its field).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

impl QMatrix {
    /// Regroup `data` (the GGUF blocks of `rows` rows of `cols` values each) for the selected
    /// ISA's kernel.
    pub fn new(
        ty: WeightType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self, MatrixError> {
        Self::with_isa(ty, rows, cols, data, Isa::selected())
    }

    /// As [`QMatrix::new`] with a given ISA (tests and benchmarks compare them).
    pub fn with_isa(
        ty: WeightType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
        isa: Isa,
    ) -> Result<Self, MatrixError> {
        if !cols.is_multiple_of(ty.block_values()) {
            return Err(MatrixError::Columns {
                cols,
                block: ty.block_values(),
            });
        }
        let expected = rows * cols / ty.block_values() * ty.block_bytes();
        if data.len() != expected {
            return Err(MatrixError::Size {
                ty: ty.name(),
                rows,
                cols,
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            rows,
            cols,
            parts: vec![Part {
                ty,
                rows,
                first_row: 0,
                first_group: 0,
                data: std::sync::Arc::new(packed::pack(ty, rows, cols, &data)),
                kernel: group_kernel(ty, isa),
            }],
            isa,
        })
    }

    /// `parts` (of one column count and ISA) stacked on the output dimension, in order.
    pub fn stack(parts: Vec<QMatrix>) -> Result<Self, MatrixError> {
        let (cols, isa) = (parts[0].cols, parts[0].isa);
        let mut out = QMatrix {
            rows: 0,
            cols,
            parts: Vec::new(),
            isa,
        };
        for m in parts {
            if m.cols != cols {
                return Err(MatrixError::Stack {
                    cols: m.cols,
                    expected: cols,
                });
            }
            for mut p in m.parts {
                p.first_row = out.rows;
                p.first_group = out.groups();
                out.rows += p.rows;
                out.parts.push(p);
            }
        }
        Ok(out)
    }

    /// The storage type (of the first part).
    pub fn weight_type(&self) -> WeightType {
        self.parts[0].ty
    }

    /// The storage types of the parts, as `Q4_K+Q6_K`.
    pub fn type_names(&self) -> String {
        let names: Vec<&str> = self.parts.iter().map(|p| p.ty.name()).collect();
        names.join("+")
    }

    /// The instruction set its kernel uses.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Output size (rows of the matrix).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input size (columns of the matrix).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of weights held.
    pub fn size_in_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.data.bytes().len()).sum()
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let nb = self.cols / QK;
        let part = self
            .parts
            .iter()
            .find(|p| r < p.first_row + p.rows)
            .expect("row in range");
        let offset = part.ty.offset();
        for (b, o) in out.chunks_exact_mut(QK).enumerate().take(nb) {
            let blk = packed::unpack(part.ty, part.data.bytes(), nb, r - part.first_row, b);
            for (i, (o, v)) in o.iter_mut().zip(blk.u).enumerate() {
                let d = if i < QK / 2 { blk.d } else { blk.d_hi };
                *o = d * (v as i32 - offset) as f32 + blk.m;
            }
        }
    }

    /// `x [m, cols] → out [m, rows]`: activations quantized per 32 values, then the dot products.
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) {
        let m = x.len() / self.cols;
        let nb = self.cols / QK;
        let mut xq = vec![BlockQ8::ZERO; m * nb];
        if m >= PARALLEL_QUANTIZE_ROWS {
            use rayon::prelude::*;
            xq.par_chunks_mut(nb)
                .zip(x.par_chunks(self.cols))
                .for_each(|(q, row)| quantize_row(row, q));
        } else {
            for (q, row) in xq.chunks_mut(nb).zip(x.chunks(self.cols)) {
                quantize_row(row, q);
            }
        }
        self.matmul_quantized(&xq, out);
    }

    /// Number of sixteen-row groups (the unit a team of threads splits).
    pub fn groups(&self) -> usize {
        self.parts.iter().map(Part::groups).sum()
    }

    /// `out [m, rows]` from activations already quantized (`m · cols / 32` blocks), the groups
    /// split over rayon's pool.
    pub fn matmul_quantized(&self, xq: &[BlockQ8], out: &mut [f32]) {
        let nb = self.cols / QK;
        let m = xq.len() / nb;
        assert_eq!(out.len(), m * self.rows, "matmul output size");
        let groups = self.groups();
        let threads = rayon::current_num_threads().clamp(1, groups);
        let shared = SharedOut(out.as_mut_ptr());
        let work = |t: usize| {
            // SAFETY: `out` holds `m · rows` floats (asserted) and each thread takes its own groups.
            unsafe {
                self.matmul_groups(
                    groups * t / threads..groups * (t + 1) / threads,
                    xq,
                    shared.get(),
                )
            }
        };
        if threads == 1 {
            work(0);
        } else {
            rayon::scope(|s| {
                for t in 1..threads {
                    s.spawn(move |_| work(t));
                }
                work(0);
            });
        }
    }

    /// Output columns of groups `range` (rows `16 · range.start..`, counted over the parts) for
    /// every activation row of `xq`, into `out` (`[m, rows]`).
    ///
    /// # Safety
    /// `out` must hold `m · rows` floats, and nothing else may access those groups' columns
    /// meanwhile.
    pub unsafe fn matmul_groups(
        &self,
        range: std::ops::Range<usize>,
        xq: &[BlockQ8],
        out: *mut f32,
    ) {
        let nb = self.cols / QK;
        for p in &self.parts {
            let bytes = GroupLayout::of(p.ty).group_bytes(nb);
            let (start, end) = (
                range.start.max(p.first_group),
                range.end.min(p.first_group + p.groups()),
            );
            for g in start.saturating_sub(p.first_group)..end.saturating_sub(p.first_group) {
                let group = &p.data.bytes()[g * bytes..(g + 1) * bytes];
                let cols = (p.rows - g * GROUP).min(GROUP);
                // SAFETY: the caller's promise covers `out`; the kernel matches this CPU (`new`).
                unsafe {
                    (p.kernel)(
                        group,
                        nb,
                        xq,
                        out.add(p.first_row + g * GROUP),
                        self.rows,
                        cols,
                    );
                }
            }
        }
    }
}
