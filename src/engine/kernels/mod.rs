//! Hearth's own CPU matrix kernels: weights kept in the file's own quantization, activations
//! quantized per 32-value block, integer dot products, runtime SIMD dispatch.
//!
//! Owns the GGUF block types Hearth computes on directly ([`WeightType`]: the 32-value types and
//! the K-quants Q4_K, Q5_K and Q6_K, each read as 32-value blocks), the interleaved
//! layout they are regrouped into at load ([`packed`]: sixteen rows' blocks side by side, the
//! values untouched), the activation format ([`BlockQ8`]: an f32 scale, the sum of its 32 `i8`
//! values, the values), the scalar reference ([`scalar`]) every SIMD path is tested against, the
//! x86 SIMD paths ([`x86`]: AVX512-VNNI, AVX-VNNI, AVX2), the ARM one ([`neon`]), and the
//! choice between them ([`Isa`], picked once from the CPU, `HEARTH_ISA` overriding it for tests
//! and benchmarks). Nothing here is built with `-C target-cpu`: every SIMD function carries its
//! own `#[target_feature]` and is only called after the feature was detected.
//!
//! Every type's dot product is computed the same way: the weight block's values as unsigned
//! integers (`0..16` for 4-bit, `0..32` for 5-bit, `w + 128` for 8-bit) against the activation's
//! signed ones, one exact integer sum per block, then `acc + isum · (d_w · d_x)` (and
//! `acc + m · s_x` for the types with a minimum), each a fused multiply-add, block after block
//! ([`scalar::accumulate`]). Every ISA runs exactly these operations per output, so a row's
//! result is the same bits whatever the ISA, the batch, the chunking or the thread count.

pub mod attention;
pub mod matmul;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod packed;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

/// Values per quantization block (every type Hearth computes on directly).
pub const QK: usize = 32;

/// A weight matrix's storage type, as GGUF names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightType {
    /// 4-bit, one f16 scale per 32 values, value `d · (q − 8)`.
    Q4_0,
    /// 4-bit, f16 scale and minimum, value `d · q + m`.
    Q4_1,
    /// 5-bit, f16 scale, value `d · (q − 16)`.
    Q5_0,
    /// 5-bit, f16 scale and minimum, value `d · q + m`.
    Q5_1,
    /// 8-bit, f16 scale, value `d · q`.
    Q8_0,
    /// 4-bit in 256-value super-blocks: per 32 values a 6-bit scale and minimum, value
    /// `d · sc · q − dmin · m`.
    Q4K,
    /// 5-bit, super-blocks as Q4_K.
    Q5K,
    /// 6-bit in 256-value super-blocks: per 16 values an 8-bit signed scale, value
    /// `d · sc · (q − 32)`.
    Q6K,
}

impl WeightType {
    /// Every type, for tests and benchmarks.
    pub const ALL: [WeightType; 8] = [
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q5_1,
        WeightType::Q8_0,
        WeightType::Q4K,
        WeightType::Q5K,
        WeightType::Q6K,
    ];

    /// Values of one block as the file stores them (32, or 256 for the K-quants).
    pub const fn block_values(self) -> usize {
        match self {
            WeightType::Q4K | WeightType::Q5K | WeightType::Q6K => 256,
            _ => QK,
        }
    }

    /// Bytes of one block as the file stores it ([`WeightType::block_values`] values).
    pub const fn block_bytes(self) -> usize {
        match self {
            WeightType::Q4_0 => 18,
            WeightType::Q4_1 => 20,
            WeightType::Q5_0 => 22,
            WeightType::Q5_1 => 24,
            WeightType::Q8_0 => 34,
            WeightType::Q4K => 144,
            WeightType::Q5K => 176,
            WeightType::Q6K => 210,
        }
    }

    /// Does a 32-value block carry a minimum `m` (value `d · q + m`)?
    pub const fn has_min(self) -> bool {
        matches!(
            self,
            WeightType::Q4_1 | WeightType::Q5_1 | WeightType::Q4K | WeightType::Q5K
        )
    }

    /// Does a 32-value block have two scales, one per 16 values (Q6_K)?
    pub const fn split(self) -> bool {
        matches!(self, WeightType::Q6K)
    }

    /// What the unsigned values are offset by: value `u − offset` is the signed one.
    pub const fn offset(self) -> i32 {
        match self {
            WeightType::Q4_0 => 8,
            WeightType::Q5_0 => 16,
            WeightType::Q8_0 => 128,
            WeightType::Q6K => 32,
            WeightType::Q4_1 | WeightType::Q5_1 | WeightType::Q4K | WeightType::Q5K => 0,
        }
    }

    /// Values of 5 bits (a fifth bit apart from the nibbles)?
    pub const fn fifth_bit(self) -> bool {
        matches!(self, WeightType::Q5_0 | WeightType::Q5_1 | WeightType::Q5K)
    }

    /// The GGUF name.
    pub const fn name(self) -> &'static str {
        match self {
            WeightType::Q4_0 => "Q4_0",
            WeightType::Q4_1 => "Q4_1",
            WeightType::Q5_0 => "Q5_0",
            WeightType::Q5_1 => "Q5_1",
            WeightType::Q8_0 => "Q8_0",
            WeightType::Q4K => "Q4_K",
            WeightType::Q5K => "Q5_K",
            WeightType::Q6K => "Q6_K",
        }
    }
}

/// One block of 32 quantized activations: `x ≈ d · qs`, with `sum = Σ qs` (and the sum of the
/// first sixteen, for Q6_K's half-block scales) kept for the offset terms of the weight formats
/// and `s ≈ d · sum` for their minimum terms. `d` and `s` carry f16 precision, as llama.cpp's
/// `block_q8_0` / `block_q8_1` store them, so products match its.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8 {
    /// Scale (an f16 value).
    pub d: f32,
    /// `d · sum` before rounding d, rounded to f16 (llama.cpp's `s`).
    pub s: f32,
    /// Sum of `qs`.
    pub sum: i32,
    /// Sum of `qs[..16]`.
    pub sum_lo: i32,
    /// The values.
    pub qs: [i8; QK],
}

impl BlockQ8 {
    /// A zero block.
    pub const ZERO: BlockQ8 = BlockQ8 {
        d: 0.0,
        s: 0.0,
        sum: 0,
        sum_lo: 0,
        qs: [0; QK],
    };
}

/// `v` (|v| ≤ 2²²) rounded to the nearest integer, ties to even: adding and subtracting 1.5·2²³
/// leaves no fraction bits, and the FPU rounds that way. Unlike `f32::round_ties_even` it needs
/// no library call on baseline x86-64, and it vectorises.
#[inline(always)]
fn round_ties_even_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// `v` rounded to the nearest f16, as f32.
fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// The instruction sets the kernels come in, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 with VNNI (`vpdpbusd` on 512-bit registers).
    Avx512Vnni,
    /// AVX-VNNI (the VEX-encoded `vpdpbusd` of Alder Lake and later).
    AvxVnni,
    /// AVX2 + FMA (`vpmaddubsw`).
    Avx2,
    /// AArch64 NEON with the dot-product extension (`sdot`: Apple M1 and later, Graviton 2 and
    /// later, Cortex-A76 and later).
    NeonDot,
    /// AArch64 NEON (`smull`/`smlal`), every 64-bit ARM CPU.
    Neon,
    /// Plain Rust, every CPU.
    Scalar,
}

impl Isa {
    /// The name `HEARTH_ISA` takes and logs print.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "avx512vnni",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx2 => "avx2",
            Isa::NeonDot => "neondot",
            Isa::Neon => "neon",
            Isa::Scalar => "scalar",
        }
    }

    /// Does this CPU run it?
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            match self {
                Isa::Avx512Vnni => {
                    avx2 && is_x86_feature_detected!("avx512vnni")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512f")
                }
                Isa::AvxVnni => avx2 && is_x86_feature_detected!("avxvnni"),
                Isa::Avx2 => avx2,
                Isa::NeonDot | Isa::Neon => false,
                Isa::Scalar => true,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            match self {
                Isa::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
                Isa::Neon | Isa::Scalar => true,
                _ => false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            self == Isa::Scalar
        }
    }

    /// Every ISA this CPU runs, fastest first.
    pub fn all_available() -> Vec<Isa> {
        [
            Isa::Avx512Vnni,
            Isa::AvxVnni,
            Isa::Avx2,
            Isa::NeonDot,
            Isa::Neon,
            Isa::Scalar,
        ]
        .into_iter()
        .filter(|i| i.available())
        .collect()
    }

    /// The ISA the engine uses: the fastest available, or `HEARTH_ISA` when it names an
    /// available one (an unknown or unavailable name is ignored with a warning).
    pub fn selected() -> Isa {
        static SELECTED: OnceLock<Isa> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let best = Isa::all_available()[0];
            let Ok(wanted) = std::env::var("HEARTH_ISA") else {
                return best;
            };
            match Isa::all_available()
                .into_iter()
                .find(|i| i.name() == wanted.trim())
            {
                Some(isa) => isa,
                None => {
                    tracing::warn!(wanted, using = best.name(), "HEARTH_ISA not available");
                    best
                }
            }
        })
    }
}

/// Quantize `x` (a multiple of [`QK`] long) into `out` (`x.len() / QK` blocks), as llama.cpp's
/// `quantize_row_q8_0` / `_q8_1` do: `d = max|x| / 127`, `q = round(x / d)` (ties to even),
/// `d` and `s = d · Σq` kept to f16 precision.
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (chunk, block) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (q, v) in block.qs.iter_mut().zip(chunk) {
            *q = round_ties_even_small(v * id).clamp(-127.0, 127.0) as i8;
        }
        let sum_lo: i32 = block.qs[..QK / 2].iter().map(|&q| q as i32).sum();
        let sum = sum_lo + block.qs[QK / 2..].iter().map(|&q| q as i32).sum::<i32>();
        block.d = f16_round(d);
        block.s = f16_round(d * sum as f32);
        block.sum = sum;
        block.sum_lo = sum_lo;
    }
}

/// A group kernel: output columns `0..cols` (`cols ≤ GROUP`) of one [`packed`] group (`group`:
/// its `nb` blocks) for every activation row of `x` (`nb` blocks each), written to
/// `out[j · ldo + r]`.
///
/// # Safety
/// `out` must be valid for those writes and nothing else may access them meanwhile; a SIMD
/// kernel may only be called on a CPU with its features (what [`group_kernel`] checks).
pub type GroupKernel =
    unsafe fn(group: &[u8], nb: usize, x: &[BlockQ8], out: *mut f32, ldo: usize, cols: usize);

/// The group kernel for `ty` on `isa` (which must be [`Isa::available`]).
pub fn group_kernel(ty: WeightType, isa: Isa) -> GroupKernel {
    assert!(
        isa.available(),
        "{} is not available on this CPU",
        isa.name()
    );
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return x86::group_kernel(ty, isa);
    }
    #[cfg(target_arch = "aarch64")]
    if isa != Isa::Scalar {
        return neon::group_kernel(ty, isa);
    }
    scalar::group_kernel(ty)
}

/// Read a little-endian f16 at `b[0..2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}
