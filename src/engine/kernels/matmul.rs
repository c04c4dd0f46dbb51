//! A quantized weight matrix in the file's own block format and `x · Wᵀ` over it.
//!
//! The output columns are split into one contiguous range per thread of rayon's pool (the pool
//! Candle and the rest of the engine use, so nothing competes for the cores); each thread walks
//! its weight rows in small tiles and, per tile, every activation row, so a tile is read from
//! memory once per call whatever the batch. Every output element is the same row kernel over the
//! same two rows, whatever the batch size, the chunking or the thread count: results are
//! bit-identical however a request is batched.

use super::{dot_rows_fn, quantize_row, scalar, BlockQ8, DotRows, Isa, WeightType, QK};

/// Weight rows per tile: a tile of the widest matrix here (1536 inputs, Q8_0) is ~26 KB, so it
/// stays in L1/L2 while every activation row passes over it.
const TILE: usize = 16;

/// Activation rows from which quantizing them is spread over the pool.
const PARALLEL_QUANTIZE_ROWS: usize = 8;

/// A `[rows, cols]` matrix of GGUF blocks, row after row.
#[derive(Debug, Clone)]
pub struct QMatrix {
    ty: WeightType,
    rows: usize,
    cols: usize,
    data: std::sync::Arc<Vec<u8>>,
    kernel: DotRows,
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

impl QMatrix {
    /// Wrap `data` (the blocks of `rows` rows of `cols` values each) with the selected ISA's kernel.
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
            data: std::sync::Arc::new(data),
            kernel: dot_rows_fn(ty, isa),
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
        self.data.len()
    }

    fn row_bytes(&self) -> usize {
        self.cols / QK * self.ty.block_bytes()
    }

    /// Row `r` as f32 (an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let row = &self.data[r * rb..(r + 1) * rb];
        for (b, o) in row
            .chunks_exact(self.ty.block_bytes())
            .zip(out.chunks_exact_mut(QK))
        {
            scalar::dequantize_block(self.ty, b, o);
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

    /// `out [m, rows]` from activations already quantized (`m · cols / 32` blocks).
    pub fn matmul_quantized(&self, xq: &[BlockQ8], out: &mut [f32]) {
        let nb = self.cols / QK;
        let m = xq.len() / nb;
        assert_eq!(out.len(), m * self.rows, "matmul output size");
        let threads = rayon::current_num_threads().clamp(1, self.rows.div_ceil(TILE));
        let shared = SharedOut(out.as_mut_ptr());
        let n = self.rows;
        let work = |t: usize| {
            let start = (n * t / threads) / TILE * TILE;
            let end = if t + 1 == threads {
                n
            } else {
                (n * (t + 1) / threads) / TILE * TILE
            };
            self.rows_range(start, end, xq, nb, shared);
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

    /// Output columns `start..end` for every activation row.
    fn rows_range(&self, start: usize, end: usize, xq: &[BlockQ8], nb: usize, out: SharedOut) {
        let rb = self.row_bytes();
        let n = self.rows;
        let m = xq.len() / nb;
        let mut tile = vec![0f32; m * TILE];
        let mut tile_start = start;
        while tile_start < end {
            let tile_end = (tile_start + TILE).min(end);
            let width = tile_end - tile_start;
            let w = &self.data[tile_start * rb..tile_end * rb];
            (self.kernel)(w, rb, xq, nb, &mut tile[..m * width]);
            for (i, part) in tile[..m * width].chunks_exact(width).enumerate() {
                // SAFETY: `out` holds `m · n` floats (asserted by the caller) and this thread is
                // the only one writing columns `start..end` of any row.
                let o =
                    unsafe { std::slice::from_raw_parts_mut(out.0.add(i * n + tile_start), width) };
                o.copy_from_slice(part);
            }
            tile_start = tile_end;
        }
    }
}
