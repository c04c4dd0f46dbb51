//! The forward pass on the CPU, on plain slices.
//!
//! Owns the CPU's per-sequence KV buffers ([`HostKv`]: f16, position-major) and the CPU copies of
//! the small tensors ([`HostTables`]: norm weights, rotary tables), and runs one forward over a
//! set of rows — the tokens of one prompt chunk, or one token each of a decode batch — through
//! Hearth's kernels. Apart from the matrix products and the attention, which run on rayon's pool,
//! everything here is a plain loop over a row's own values. Every row is computed by the same
//! code whatever else is in the call, so a sequence's logits are bit-identical alone, batched,
//! chunked or resumed from a prefix cache.

use std::ops::Range;

use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

use super::{Block, LlamaModel, ModelConfig, RopeStyle, SeqCache};
use crate::engine::kernels::vector::{axpy_f16, dot_f16};

/// One row of a forward call: a token of sequence `seq` (an index into the caches) at `pos`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub seq: usize,
    pub pos: usize,
}

/// One layer's keys and values of one sequence, `[positions, width]` each (`width = nkv · hd`),
/// in f16: half the memory of f32, converted back by the attention kernels as they read.
#[derive(Debug, Clone, Default)]
pub struct HostKv {
    width: usize,
    k: Vec<f16>,
    v: Vec<f16>,
}

impl HostKv {
    /// Room for `positions` rows of `width` values (grows by doubling, never shrinks).
    pub(super) fn reserve(&mut self, positions: usize, width: usize) {
        self.width = width;
        let n = positions * width;
        if self.k.len() < n {
            let target = n.max(self.k.len() * 2);
            self.k.resize(target, f16::ZERO);
            self.v.resize(target, f16::ZERO);
        }
    }

    /// A copy of the first `len` positions.
    pub(super) fn prefix(&self, len: usize) -> HostKv {
        let n = (len * self.width).min(self.k.len());
        HostKv {
            width: self.width,
            k: self.k[..n].to_vec(),
            v: self.v[..n].to_vec(),
        }
    }

    /// Bytes held.
    pub(super) fn size_in_bytes(&self) -> usize {
        (self.k.capacity() + self.v.capacity()) * std::mem::size_of::<f16>()
    }
}

/// The CPU path's copies of the model's small tensors.
#[derive(Debug, Clone)]
pub(super) struct HostTables {
    /// `(attention norm, MLP norm)` weights per block.
    norms: Vec<(Vec<f32>, Vec<f32>)>,
    final_norm: Vec<f32>,
    /// `[positions, head_dim / 2]` rotary tables.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl HostTables {
    pub(super) fn new(
        angles: &[f32],
        blocks: &[Block],
        norm: &Tensor,
    ) -> candle_core::Result<Self> {
        let v = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        Ok(Self {
            norms: blocks
                .iter()
                .map(|b| Ok((v(&b.attn_norm)?, v(&b.ffn_norm)?)))
                .collect::<candle_core::Result<_>>()?,
            final_norm: v(norm)?,
            cos: angles.iter().map(|a| a.cos()).collect(),
            sin: angles.iter().map(|a| a.sin()).collect(),
        })
    }
}

/// `out = x / sqrt(mean(x²) + eps) · w`, row by row (sequential sums, as Candle's rms-norm).
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum2: f32 = xr.iter().map(|v| v * v).sum();
        let m = (sum2 / n as f32 + eps).sqrt();
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = v / m * g;
        }
    }
}

/// Rotate each head of `x` (`heads · hd` values) for position `pos`.
fn rope(x: &mut [f32], hd: usize, style: RopeStyle, cos: &[f32], sin: &[f32]) {
    let half = hd / 2;
    for head in x.chunks_exact_mut(hd) {
        for i in 0..half {
            let (a, b) = match style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Half => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos[i] - x1 * sin[i];
            head[b] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

/// Cached positions read (summed over every (row, head) pair) from which attention is spread
/// over the pool: below it, waking other threads costs more than the loop.
const PARALLEL_ATTENTION_POSITIONS: usize = 1024;

/// Attention of every row's query heads `q [rows, nh · hd]` over its own sequence's cache up to
/// and including its position. Returns `[rows, nh · hd]`.
///
/// Each (row, head) pair is one sequential loop over its keys and values — the same loop for a
/// prompt of 500 tokens as for one decode step. Pairs are spread over the pool when there are
/// enough; that changes which thread computes a pair, never how.
fn attention(
    cfg: &ModelConfig,
    layer: usize,
    q: &[f32],
    rows: &[Row],
    caches: &[&SeqCache],
) -> Vec<f32> {
    let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let (group, width) = (nh / nkv, nkv * hd);
    let scale = 1f32 / (hd as f32).sqrt();
    let one = |c: usize, oh: &mut [f32]| {
        let (r, h) = (c / nh, c % nh);
        let row = rows[r];
        let kv = &caches[row.seq].host[layer];
        let total = row.pos + 1;
        let first = cfg.sliding_window.map_or(0, |w| total.saturating_sub(w));
        let off = (h / group) * hd;
        let qh = &q[c * hd..(c + 1) * hd];
        let mut scores = Vec::with_capacity(total - first);
        let mut max = f32::NEG_INFINITY;
        for t in first..total {
            let s = dot_f16(qh, &kv.k[t * width + off..t * width + off + hd]) * scale;
            scores.push(s);
            max = max.max(s);
        }
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        for (s, t) in scores.iter().zip(first..total) {
            axpy_f16(oh, s * inv, &kv.v[t * width + off..t * width + off + hd]);
        }
    };
    let mut out = vec![0f32; rows.len() * nh * hd];
    let positions: usize = rows.iter().map(|r| r.pos + 1).sum::<usize>() * nh;
    if positions >= PARALLEL_ATTENTION_POSITIONS {
        out.par_chunks_mut(hd)
            .enumerate()
            .for_each(|(c, oh)| one(c, oh));
    } else {
        for (c, oh) in out.chunks_mut(hd).enumerate() {
            one(c, oh);
        }
    }
    out
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

impl LlamaModel {
    /// One forward over `rows` (token `tokens[i]` of sequence `rows[i].seq` at `rows[i].pos`;
    /// each cache already has room). Returns the logits of rows `logits` as `[n, vocab]`. The
    /// caller advances the caches' lengths.
    pub(super) fn forward_cpu(
        &self,
        host: &HostTables,
        tokens: &[u32],
        rows: &[Row],
        caches: &mut [&mut SeqCache],
        logits: Range<usize>,
    ) -> candle_core::Result<Tensor> {
        // The whole pass runs on one of the pool's threads: each parallel step then hands work
        // to the others from inside the pool, instead of this thread sleeping on every one.
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.forward_cpu(host, tokens, rows, caches, logits));
        }
        let cfg = &self.config;
        let (hidden, nh, nkv, hd) = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        let (q_w, kv_w) = (nh * hd, nkv * hd);
        let qkv_w = q_w + 2 * kv_w;
        let inter = cfg.intermediate_size;
        let eps = cfg.rms_norm_eps as f32;
        let half = hd / 2;
        let n = rows.len();
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x: Vec<f32> = self.embed.forward(&ids)?.flatten_all()?.to_vec1()?;
        let mut h = vec![0f32; n * hidden];
        for (layer, (block, (attn_norm, ffn_norm))) in
            self.blocks.iter().zip(&host.norms).enumerate()
        {
            rms_norm(&x, attn_norm, eps, &mut h);
            let qkv = block.wqkv.forward_rows(&h, n)?;
            let mut q = vec![0f32; n * q_w];
            for (i, row) in rows.iter().enumerate() {
                let src = &qkv[i * qkv_w..(i + 1) * qkv_w];
                let (cos, sin) = (
                    &host.cos[row.pos * half..(row.pos + 1) * half],
                    &host.sin[row.pos * half..(row.pos + 1) * half],
                );
                let qi = &mut q[i * q_w..(i + 1) * q_w];
                qi.copy_from_slice(&src[..q_w]);
                rope(qi, hd, cfg.rope_style, cos, sin);
                let mut k = src[q_w..q_w + kv_w].to_vec();
                rope(&mut k, hd, cfg.rope_style, cos, sin);
                let kv = &mut caches[row.seq].host[layer];
                let at = row.pos * kv_w;
                for (d, s) in kv.k[at..at + kv_w].iter_mut().zip(&k) {
                    *d = f16::from_f32(*s);
                }
                for (d, s) in kv.v[at..at + kv_w].iter_mut().zip(&src[q_w + kv_w..]) {
                    *d = f16::from_f32(*s);
                }
            }
            let views: Vec<&SeqCache> = caches.iter().map(|c| &**c).collect();
            let y = attention(cfg, layer, &q, rows, &views);
            add_into(&mut x, &block.wo.forward_rows(&y, n)?);
            rms_norm(&x, ffn_norm, eps, &mut h);
            let gate_up = block.w_gate_up.forward_rows(&h, n)?;
            let mut act = vec![0f32; n * inter];
            for (a, gu) in act
                .chunks_exact_mut(inter)
                .zip(gate_up.chunks_exact(2 * inter))
            {
                let (g, u) = gu.split_at(inter);
                for ((o, g), u) in a.iter_mut().zip(g).zip(u) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            }
            add_into(&mut x, &block.w_down.forward_rows(&act, n)?);
        }
        let picked = &x[logits.start * hidden..logits.end * hidden];
        let mut normed = vec![0f32; picked.len()];
        rms_norm(picked, &host.final_norm, eps, &mut normed);
        let out = self.lm_head.forward_rows(&normed, logits.len())?;
        Tensor::from_vec(out, (logits.len(), cfg.vocab_size), &Device::Cpu)
    }
}
