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

/// A `[rows, cols]` matrix of GGUF blocks, row after row.
#[derive(Debug, Clone)]
pub struct QMatrix {
    ty: WeightType,
    rows: usize,
    cols: usize,
    /// The blocks in the group layout.
    data: std::sync::Arc<Aligned>,
    kernel: GroupKernel,
    isa: Isa,
}

/// Why a matrix cannot be built from the given bytes.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// Rows of this length cannot be split into 32-value blocks.
    #[error("{cols} columns is not a multiple of {QK}")]
    Columns {
        /// The row length given.
        cols: usize,
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
        if !cols.is_multiple_of(QK) {
            return Err(MatrixError::Columns { cols });
        }
        let expected = rows * cols / QK * ty.block_bytes();
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
            ty,
            rows,
            cols,
            data: std::sync::Arc::new(packed::pack(ty, rows, cols, &data)),
            kernel: group_kernel(ty, isa),
            isa,
        })
    }

    /// The storage type.
    pub fn weight_type(&self) -> WeightType {
        self.ty
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
        self.data.bytes().len()
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let nb = self.cols / QK;
        for (b, o) in out.chunks_exact_mut(QK).enumerate().take(nb) {
            let (u, d, m, offset) = packed::unpack(self.ty, self.data.bytes(), nb, r, b);
            for (o, v) in o.iter_mut().zip(u) {
                *o = d * (v as i32 - offset) as f32 + m;
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
        self.rows.div_ceil(GROUP)
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

    /// Output columns of groups `range` (rows `16 · range.start..`) for every activation row of
    /// `xq`, into `out` (`[m, rows]`).
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
        let bytes = nb * GroupLayout::of(self.ty).bytes;
        for g in range {
            let group = &self.data.bytes()[g * bytes..(g + 1) * bytes];
            let cols = (self.rows - g * GROUP).min(GROUP);
            // SAFETY: the caller's promise covers `out`; the kernel matches this CPU (`new`).
            unsafe {
                (self.kernel)(group, nb, xq, out.add(g * GROUP), self.rows, cols);
            }
        }
    }
}
