//! The AArch64 group kernels (NEON, with or without the dot-product extension), only ever
//! called after [`super::Isa::available`] said yes.
//!
//! A 128-bit register holds four rows' lanes, so a group of sixteen rows is four quarters. Per
//! block, each quarter's eight value registers (`u[k]`: four rows' values `4k..4k+4`, as in
//! [`super::packed`]) meet the broadcast activation word `x[4k..4k+4]`: one `sdot` each with the
//! dot-product extension, else `smull`/`smlal` into 16-bit sums (no more at a time than cannot
//! overflow) folded pairwise into each row's lane. The values are taken as signed bytes (the 4-
//! to 6-bit ones are below 64; Q8_0's are signed already), the type's offset folded in as
//! `−offset · Σx`. Each lane then runs [`super::scalar::accumulate`]'s float steps (fused
//! multiply-adds), so both paths give the scalar reference's result bit for bit.
//!
//! `sdot` is written as inline assembly: its intrinsic is not yet stable in Rust.

use std::arch::aarch64::*;

use super::packed::GroupLayout;
use super::{BlockQ8, GroupKernel, Isa, WeightType};

/// Activation rows computed per pass over a group's blocks (then fewer for the rest).
const MAX_NX: usize = 4;

/// The offset folded into a block's integer sums (Q8_0's values are taken signed: none).
const fn offset(ty: WeightType) -> i32 {
    match ty {
        WeightType::Q8_0 => 0,
        _ => ty.offset(),
    }
}

/// `acc + Σ a·b` per 32-bit lane (four signed byte products each): `sdot`.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    std::arch::asm!(
        "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
        inout(vreg) acc,
        in(vreg) a,
        in(vreg) b,
        options(pure, nomem, nostack)
    );
    acc
}

/// The activation word `x.qs[4k..4k+4]` in every lane.
#[inline(always)]
unsafe fn word(x: &BlockQ8, k: usize) -> int8x16_t {
    let w = (x.qs.as_ptr().add(4 * k) as *const i32).read_unaligned();
    vreinterpretq_s8_s32(vdupq_n_s32(w))
}

/// Quarter `q`'s eight value registers of the group block at `p`.
#[inline(always)]
unsafe fn values<const T: u8>(p: *const u8, lay: GroupLayout, q: usize) -> [int8x16_t; 8] {
    let ty = WeightType::ALL[T as usize];
    let qs = p.add(lay.qs + 16 * q);
    let mut u = [vdupq_n_u8(0); 8];
    if ty == WeightType::Q8_0 {
        let mut s = [vdupq_n_s8(0); 8];
        for (k, s) in s.iter_mut().enumerate() {
            *s = vld1q_s8(qs.add(64 * k) as *const i8);
        }
        return s;
    }
    let low = vdupq_n_u8(0x0f);
    for c in 0..4 {
        let v = vld1q_u8(qs.add(64 * c));
        u[c] = vandq_u8(v, low);
        u[c + 4] = vshrq_n_u8::<4>(v);
    }
    if ty.fifth_bit() {
        let h = vld1q_u8(p.add(lay.qh + 16 * q));
        let bit = vdupq_n_u8(0x10);
        for (k, u) in u.iter_mut().enumerate() {
            // Bit k to bit 4: a left shift by 4 − k (right when negative).
            let moved = vshlq_u8(h, vdupq_n_s8(4 - k as i8));
            *u = vorrq_u8(*u, vandq_u8(moved, bit));
        }
    }
    if ty == WeightType::Q6K {
        let bits = vdupq_n_u8(0x30);
        for half in 0..2 {
            let h = vld1q_u8(p.add(lay.qh + 64 * half + 16 * q));
            for k in 0..4 {
                let moved = vshlq_u8(h, vdupq_n_s8(4 - 2 * k as i8));
                u[4 * half + k] = vorrq_u8(u[4 * half + k], vandq_u8(moved, bits));
            }
        }
    }
    let mut s = [vdupq_n_s8(0); 8];
    for (s, u) in s.iter_mut().zip(u) {
        *s = vreinterpretq_s8_u8(u);
    }
    s
}

/// Four lanes of the f16 at `hd` times the bytes at `p` (unsigned, or signed for Q6_K).
#[inline(always)]
unsafe fn scaled(hd: *const u8, p: *const u8, signed: bool) -> float32x4_t {
    let bytes = vld1_u8(p);
    let ints = if signed {
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u8(bytes)))))
    } else {
        vcvtq_f32_u32(vmovl_u16(vget_low_u16(vmovl_u8(bytes))))
    };
    vmulq_f32(half4(hd), ints)
}

/// Four f16 at `p` as f32.
#[inline(always)]
unsafe fn half4(p: *const u8) -> float32x4_t {
    let bits = vld1_u16(p as *const u16);
    vcvt_f32_f16(vreinterpret_f16_u16(bits))
}

/// Quarter `q` of the block's `(d, d_hi, m)` lanes.
#[inline(always)]
unsafe fn scales<const T: u8>(
    p: *const u8,
    hd: *const u8,
    lay: GroupLayout,
    q: usize,
) -> [float32x4_t; 3] {
    let ty = WeightType::ALL[T as usize];
    match ty {
        WeightType::Q4K | WeightType::Q5K => {
            let d = scaled(hd.add(8 * q), p.add(4 * q), false);
            let m = vnegq_f32(scaled(hd.add(32 + 8 * q), p.add(lay.m + 4 * q), false));
            [d, d, m]
        }
        WeightType::Q6K => [
            scaled(hd.add(8 * q), p.add(4 * q), true),
            scaled(hd.add(8 * q), p.add(lay.m + 4 * q), true),
            vdupq_n_f32(0.0),
        ],
        _ => {
            let d = half4(p.add(8 * q));
            let m = if ty.has_min() {
                half4(p.add(lay.m + 8 * q))
            } else {
                vdupq_n_f32(0.0)
            };
            [d, d, m]
        }
    }
}

/// The four rows' integer sums of value registers `from..to` against `x`, from `init`.
#[inline(always)]
unsafe fn isum<const T: u8, const DOT: bool>(
    init: i32,
    u: &[int8x16_t; 8],
    x: &BlockQ8,
    from: usize,
    to: usize,
) -> float32x4_t {
    let mut s = vdupq_n_s32(init);
    if DOT {
        for (k, u) in u.iter().enumerate().take(to).skip(from) {
            s = sdot(s, *u, word(x, k));
        }
        return vcvtq_f32_s32(s);
    }
    // 16-bit products, added while they cannot overflow: 4-bit values 8 at a time
    // (8 · 15 · 127 = 15 240), 5-bit 8 (31 496), 6-bit 4 (32 004), Q8_0 2 (32 512).
    let ty = WeightType::ALL[T as usize];
    let per = match ty {
        WeightType::Q6K => 4,
        WeightType::Q8_0 => 2,
        _ => 8,
    };
    let mut k = from;
    while k < to {
        let (mut lo, mut hi) = (vdupq_n_s16(0), vdupq_n_s16(0));
        for (k, u) in u.iter().enumerate().take(to.min(k + per)).skip(k) {
            let xk = word(x, k);
            lo = vmlal_s8(lo, vget_low_s8(*u), vget_low_s8(xk));
            hi = vmlal_high_s8(hi, *u, xk);
        }
        // Lanes of 16 bits: four per row; pairwise to two, then to one.
        s = vaddq_s32(s, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
        k += per;
    }
    vcvtq_f32_s32(s)
}

/// Quarter `q` of one group against `NX` activation rows.
#[inline(always)]
unsafe fn quarter<const T: u8, const NX: usize, const DOT: bool>(
    g: *const u8,
    nb: usize,
    x: *const BlockQ8,
    out: *mut f32,
    ldo: usize,
    q: usize,
    cols: usize,
) {
    let ty = WeightType::ALL[T as usize];
    let lay = GroupLayout::of(ty);
    let off = offset(ty);
    let mut acc = [vdupq_n_f32(0.0); NX];
    for b in 0..nb {
        let (p, hd) = (g.add(lay.block_at(b)), g.add(lay.header_at(b)));
        let u = values::<T>(p, lay, q);
        let [d, d_hi, m] = scales::<T>(p, hd, lay, q);
        for (j, acc) in acc.iter_mut().enumerate() {
            let xb = &*x.add(j * nb + b);
            let xd = vdupq_n_f32(xb.d);
            if ty.split() {
                let lo = isum::<T, DOT>(-off * xb.sum_lo, &u, xb, 0, 4);
                let hi = isum::<T, DOT>(-off * (xb.sum - xb.sum_lo), &u, xb, 4, 8);
                *acc = vfmaq_f32(*acc, lo, vmulq_f32(d, xd));
                *acc = vfmaq_f32(*acc, hi, vmulq_f32(d_hi, xd));
            } else {
                let s = isum::<T, DOT>(-off * xb.sum, &u, xb, 0, 8);
                *acc = vfmaq_f32(*acc, s, vmulq_f32(d, xd));
            }
            if ty.has_min() {
                *acc = vfmaq_f32(*acc, m, vdupq_n_f32(xb.s));
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        let o = out.add(j * ldo + 4 * q);
        if cols >= 4 * (q + 1) {
            vst1q_f32(o, *acc);
        } else {
            let mut lanes = [0f32; 4];
            vst1q_f32(lanes.as_mut_ptr(), *acc);
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), o, cols - 4 * q);
        }
    }
}

/// One group against every activation row: four at a time, then one; each quarter that holds a
/// kept column.
#[inline(always)]
unsafe fn all<const T: u8, const DOT: bool>(
    g: &[u8],
    nb: usize,
    x: &[BlockQ8],
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    let total = x.len() / nb;
    let mut j = 0;
    while j < total {
        let (xs, o) = (x.as_ptr().add(j * nb), out.add(j * ldo));
        let n = if total - j >= MAX_NX { MAX_NX } else { 1 };
        for q in (0..4).take_while(|q| cols > 4 * q) {
            if n == MAX_NX {
                quarter::<T, MAX_NX, DOT>(g.as_ptr(), nb, xs, o, ldo, q, cols);
            } else {
                quarter::<T, 1, DOT>(g.as_ptr(), nb, xs, o, ldo, q, cols);
            }
        }
        j += n;
    }
}

/// The dot-product extension's copy of [`all`] (its own target features, so `sdot` inlines;
/// NEON itself is part of every AArch64 target, so the helpers inline into both copies).
#[target_feature(enable = "dotprod")]
unsafe fn all_dot<const T: u8>(
    g: &[u8],
    nb: usize,
    x: &[BlockQ8],
    out: *mut f32,
    ldo: usize,
    cols: usize,
) {
    all::<T, true>(g, nb, x, out, ldo, cols)
}

macro_rules! entry_points {
    ($($name:ident / $dot:ident = $t:literal: $ty:ident),*) => {
        $(
            unsafe fn $name(g: &[u8], nb: usize, x: &[BlockQ8], o: *mut f32, ldo: usize, c: usize) {
                // SAFETY: NEON is part of every AArch64 CPU.
                unsafe { all::<$t, false>(g, nb, x, o, ldo, c) }
            }
            unsafe fn $dot(g: &[u8], nb: usize, x: &[BlockQ8], o: *mut f32, ldo: usize, c: usize) {
                // SAFETY: handed out by `group_kernel` only after `dotprod` was detected.
                unsafe { all_dot::<$t>(g, nb, x, o, ldo, c) }
            }
        )*

        /// The group kernel for `ty` on a NEON `isa` (the caller checked [`Isa::available`]).
        pub fn group_kernel(ty: WeightType, isa: Isa) -> GroupKernel {
            match (ty, isa == Isa::NeonDot) {
                $(
                    (WeightType::$ty, false) => $name,
                    (WeightType::$ty, true) => $dot,
                )*
            }
        }
    };
}

entry_points!(
    q4_0 / q4_0_dot = 0: Q4_0, q4_1 / q4_1_dot = 1: Q4_1, q5_0 / q5_0_dot = 2: Q5_0,
    q5_1 / q5_1_dot = 3: Q5_1, q8_0 / q8_0_dot = 4: Q8_0, q4k / q4k_dot = 5: Q4K,
    q5k / q5k_dot = 6: Q5K, q6k / q6k_dot = 7: Q6K
);
