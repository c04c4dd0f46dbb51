//! The forward pass on the CPU, on plain slices.
//!
//! Owns the CPU's per-sequence KV buffers ([`HostKv`]: f16, position-major) and the CPU copies of
//! the small tensors ([`HostTables`]: norm weights, rotary tables), and runs one forward over a
//! set of rows — the tokens of one prompt chunk, or one token each of a decode batch — through
//! Hearth's kernels.
//!
//! The pass is a fixed list of steps per layer, each either over rows (norms, rotary, the
//! activations' quantization, SwiGLU), over (row, head) pairs (attention) or over a matrix's
//! row groups (the products). When every matrix runs on Hearth's kernels, the whole team of
//! threads runs the pass together ([`team`]), each thread taking its share of every step, with
//! a barrier between steps; otherwise (Candle computes some matrix) one thread runs the steps
//! and each product brings its own parallelism. Every row is computed by the same operations
//! whatever else is in the call and whichever thread takes it, so a sequence's logits are
//! bit-identical alone, batched, chunked or resumed from a prefix cache.

use std::ops::Range;

use candle_core::{Device, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{Block, Linear, LlamaModel, RopeStyle, SeqCache};
use crate::engine::kernels::attention::{self, combine, partial_len, Rows};
use crate::engine::kernels::{quantize_row, BlockQ8, QK};
use crate::engine::team::{self, Par, Shared};

/// One row of a forward call: a token of sequence `seq` (an index into the caches) at `pos`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub seq: usize,
    pub pos: usize,
}

/// How the CPU's KV cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvType {
    /// Half precision: 2 bytes a value.
    #[default]
    F16,
    /// Q8_0: an `i8` a value and an f16 scale per 32 (1.06 bytes a value, about half of f16),
    /// as llama.cpp's `--cache-type-k/v q8_0`. Needs heads of a multiple of 32 values.
    Q8_0,
}

/// One layer's keys and values of one sequence, `[positions, width]` each (`width = nkv · hd`):
/// f16, or Q8_0 (values and per-32 scales), converted to f32 by the attention as it reads.
#[derive(Debug, Clone, Default)]
pub struct HostKv {
    width: usize,
    k: Vec<f16>,
    v: Vec<f16>,
    kq: Vec<i8>,
    vq: Vec<i8>,
    /// Q8_0 scales of `kq` and `vq`, one per 32 values.
    kd: Vec<f16>,
    vd: Vec<f16>,
    ty: KvType,
}

impl HostKv {
    /// Room for `positions` rows of `width` values in `ty` (grows by doubling, never shrinks).
    pub(super) fn reserve(&mut self, positions: usize, width: usize, ty: KvType) {
        self.width = width;
        self.ty = ty;
        let n = positions * width;
        let grow = |len: usize| n.max(len * 2);
        match ty {
            KvType::F16 if self.k.len() < n => {
                let target = grow(self.k.len());
                self.k.resize(target, f16::ZERO);
                self.v.resize(target, f16::ZERO);
            }
            KvType::Q8_0 if self.kq.len() < n => {
                let target = grow(self.kq.len());
                self.kq.resize(target, 0);
                self.vq.resize(target, 0);
                self.kd.resize(target / QK, f16::ZERO);
                self.vd.resize(target / QK, f16::ZERO);
            }
            _ => {}
        }
    }

    /// A copy of the first `len` positions.
    pub(super) fn prefix(&self, len: usize) -> HostKv {
        let n = len * self.width;
        let cut = |v: &[f16]| v[..n.min(v.len())].to_vec();
        let cut_q = |v: &[i8]| v[..n.min(v.len())].to_vec();
        let cut_d = |v: &[f16]| v[..(n / QK).min(v.len())].to_vec();
        HostKv {
            width: self.width,
            k: cut(&self.k),
            v: cut(&self.v),
            kq: cut_q(&self.kq),
            vq: cut_q(&self.vq),
            kd: cut_d(&self.kd),
            vd: cut_d(&self.vd),
            ty: self.ty,
        }
    }

    /// Bytes held.
    pub(super) fn size_in_bytes(&self) -> usize {
        (self.k.capacity() + self.v.capacity() + self.kd.capacity() + self.vd.capacity()) * 2
            + self.kq.capacity()
            + self.vq.capacity()
    }
}

/// A layer's KV buffers of one sequence as the team shares them.
struct SharedKv {
    ty: KvType,
    width: usize,
    k: Shared<f16>,
    v: Shared<f16>,
    kq: Shared<i8>,
    vq: Shared<i8>,
    kd: Shared<f16>,
    vd: Shared<f16>,
}

impl SharedKv {
    fn new(kv: &mut HostKv) -> Self {
        SharedKv {
            ty: kv.ty,
            width: kv.width,
            k: Shared::new(&mut kv.k),
            v: Shared::new(&mut kv.v),
            kq: Shared::new(&mut kv.kq),
            vq: Shared::new(&mut kv.vq),
            kd: Shared::new(&mut kv.kd),
            vd: Shared::new(&mut kv.vd),
        }
    }

    /// Store position `pos`'s keys and values.
    ///
    /// # Safety
    /// Only this thread touches position `pos` until the next barrier.
    unsafe fn write(&self, pos: usize, k: &[f32], v: &[f32]) {
        let at = pos * self.width..(pos + 1) * self.width;
        // SAFETY: the caller's promise; the buffers have room (`reserve`).
        unsafe {
            match self.ty {
                KvType::F16 => {
                    self.k.part(at.clone()).convert_from_f32_slice(k);
                    self.v.part(at).convert_from_f32_slice(v);
                }
                KvType::Q8_0 => {
                    let blocks = at.start / QK..at.end / QK;
                    quantize_q8_0(k, self.kq.part(at.clone()), self.kd.part(blocks.clone()));
                    quantize_q8_0(v, self.vq.part(at), self.vd.part(blocks));
                }
            }
        }
    }

    /// The keys and values, to read.
    ///
    /// # Safety
    /// Nobody writes them until the next barrier.
    unsafe fn rows(&self) -> (Rows<'_>, Rows<'_>) {
        // SAFETY: the caller's promise.
        unsafe {
            match self.ty {
                KvType::F16 => (Rows::F16(self.k.all()), Rows::F16(self.v.all())),
                KvType::Q8_0 => (
                    Rows::Q8 {
                        qs: self.kq.all(),
                        d: self.kd.all(),
                    },
                    Rows::Q8 {
                        qs: self.vq.all(),
                        d: self.vd.all(),
                    },
                ),
            }
        }
    }
}

/// `x` to Q8_0 (`d = max|x| / 127`, `q = round(x / d)`), as llama.cpp quantizes its cache.
fn quantize_q8_0(x: &[f32], qs: &mut [i8], d: &mut [f16]) {
    let mut block = [BlockQ8::ZERO];
    for ((x, q), d) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).zip(d) {
        quantize_row(x, &mut block);
        for (q, b) in q.iter_mut().zip(block[0].qs) {
            *q = b;
        }
        *d = f16::from_f32(block[0].d);
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

/// `out = x · (1 / sqrt(mean(x²) + eps)) · w` for one row, the sum of squares in f64 (as
/// llama.cpp computes it).
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum2: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let scale = 1.0 / ((sum2 / w.len() as f64) as f32 + eps).sqrt();
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
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

/// Positions per attention chunk. A (row, KV head, chunk) is one unit of the attention step;
/// chunks start at multiples of this (absolute positions), so how a row's positions are cut
/// depends on the row alone, never on the batch or the thread count.
const CHUNK: usize = 64;

/// The attention units of a pass: `(row, KV head, chunk)`, row by row, KV head by KV head.
struct Units {
    units: Vec<(usize, usize, usize)>,
    /// Each row's first unit.
    row_start: Vec<usize>,
    /// Each row's chunks (its units per KV head).
    row_chunks: Vec<usize>,
}

impl Units {
    fn new(rows: &[Row], nkv: usize, window: Option<usize>) -> Self {
        let mut u = Units {
            units: Vec::new(),
            row_start: Vec::with_capacity(rows.len()),
            row_chunks: Vec::with_capacity(rows.len()),
        };
        for (i, row) in rows.iter().enumerate() {
            let (first, total) = positions(row, window);
            let chunks = first / CHUNK..total.div_ceil(CHUNK);
            u.row_start.push(u.units.len());
            u.row_chunks.push(chunks.len());
            for g in 0..nkv {
                u.units.extend(chunks.clone().map(|c| (i, g, c)));
            }
        }
        u
    }
}

/// The cached positions row `row` attends to: `first..total`.
fn positions(row: &Row, window: Option<usize>) -> (usize, usize) {
    let total = row.pos + 1;
    (window.map_or(0, |w| total.saturating_sub(w)), total)
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// One step's input to a matrix: `n` rows of `k` values, and their 32-value blocks when
/// Hearth's kernels compute the matrix.
struct Input {
    k: usize,
    values: Vec<f32>,
    blocks: Vec<BlockQ8>,
}

impl Input {
    fn new(n: usize, k: usize, quantized: bool) -> Self {
        Input {
            k,
            values: vec![0f32; n * k],
            blocks: vec![BlockQ8::ZERO; if quantized { n * k / QK } else { 0 }],
        }
    }
}

/// [`Input`] as the team shares it.
struct SharedInput {
    k: usize,
    values: Shared<f32>,
    blocks: Shared<BlockQ8>,
}

impl SharedInput {
    fn new(i: &mut Input) -> Self {
        SharedInput {
            k: i.k,
            values: Shared::new(&mut i.values),
            blocks: Shared::new(&mut i.blocks),
        }
    }

    /// Row `i`'s values, to fill (then [`SharedInput::seal`] it).
    ///
    /// # Safety
    /// Only this thread touches row `i` until the next barrier.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, i: usize) -> &mut [f32] {
        // SAFETY: the caller's promise.
        unsafe { self.values.part(i * self.k..(i + 1) * self.k) }
    }

    /// Fill columns `cols` of row `i` with `fill` and quantize them (if the matrix takes
    /// blocks, `cols` is one whole block).
    ///
    /// # Safety
    /// Only this thread touches those columns until the next barrier.
    unsafe fn block(&self, i: usize, cols: Range<usize>, fill: impl FnOnce(&mut [f32])) {
        let at = i * self.k + cols.start;
        // SAFETY: the caller's promise.
        unsafe {
            let values = self.values.part(at..at + cols.len());
            fill(values);
            if !self.blocks.is_empty() {
                quantize_row(values, self.blocks.part(at / QK..(at + cols.len()) / QK));
            }
        }
    }

    /// Quantize row `i` (if the matrix takes blocks).
    ///
    /// # Safety
    /// As [`SharedInput::row`].
    unsafe fn seal(&self, i: usize) {
        let nb = self.k / QK;
        // SAFETY: `blocks` is empty or holds every row's blocks; the caller owns row `i`.
        unsafe {
            if self.blocks.is_empty() {
                return;
            }
            quantize_row(self.row(i), self.blocks.part(i * nb..(i + 1) * nb));
        }
    }
}

/// `out = input · Wᵀ` for `n` rows as one step: the team splits the matrix's groups; alone,
/// the matrix brings its own parallelism (ours over rayon's pool, or Candle's).
///
/// # Safety
/// Every thread of `par` calls it together, after a barrier that follows the input's writing,
/// and a barrier follows before anyone reads `out`.
unsafe fn product(
    par: Par,
    w: &Linear,
    input: &SharedInput,
    n: usize,
    out: &Shared<f32>,
) -> candle_core::Result<()> {
    // SAFETY: the step's promise: nobody writes the input now, and the output's writers split
    // it by groups (team) or are this thread alone.
    unsafe {
        match (w.as_blocks(), par.is_team()) {
            (Some(m), true) => {
                m.matmul_groups(par.split(m.groups()), input.blocks.all(), out.as_mut_ptr())
            }
            (Some(m), false) => {
                let dst = out.part(0..n * m.rows());
                m.matmul_quantized(input.blocks.all(), dst)
            }
            (None, _) => {
                let y = w.forward_rows(input.values.all(), n)?;
                out.part(0..y.len()).copy_from_slice(&y);
            }
        }
    }
    Ok(())
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
        let cfg = &self.config;
        let n = rows.len();
        let (hidden, q_w) = (cfg.hidden_size, cfg.num_heads * cfg.head_dim);
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x: Vec<f32> = self.embed.forward(&ids)?.flatten_all()?.to_vec1()?;
        // A step quantizes its rows when it feeds a matrix of Hearth's kernels in any layer (a
        // file may mix types).
        let blocks_in =
            |w: fn(&Block) -> &Linear| self.blocks.iter().any(|b| w(b).as_blocks().is_some());
        let mut bufs = Buffers {
            x: std::mem::take(&mut x),
            h: Input::new(n, hidden, blocks_in(|b| &b.wqkv)),
            qkv: vec![0f32; n * (q_w + 2 * cfg.num_kv_heads * cfg.head_dim)],
            q: vec![0f32; n * q_w],
            y: Input::new(n, q_w, blocks_in(|b| &b.wo)),
            o: vec![0f32; n * hidden],
            h2: Input::new(n, hidden, blocks_in(|b| &b.w_gate_up)),
            gate_up: vec![0f32; n * 2 * cfg.intermediate_size],
            act: Input::new(n, cfg.intermediate_size, blocks_in(|b| &b.w_down)),
            down: vec![0f32; n * hidden],
            last: Input::new(logits.len(), hidden, self.lm_head.as_blocks().is_some()),
            partials: Vec::new(),
            logits: vec![0f32; logits.len() * cfg.vocab_size],
        };
        let att = Units::new(rows, cfg.num_kv_heads, cfg.sliding_window);
        bufs.partials = vec![
            0f32;
            att.units.len() * cfg.num_heads / cfg.num_kv_heads.max(1)
                * partial_len(cfg.head_dim)
        ];
        let steps = Steps::new(&mut bufs, caches, att);
        let team = self.blocks.iter().all(|b| {
            [&b.wqkv, &b.wo, &b.w_gate_up, &b.w_down]
                .iter()
                .all(|w| w.as_blocks().is_some())
        }) && self.lm_head.as_blocks().is_some();
        team::run(team, |par| {
            // SAFETY: every thread runs the same steps in the same order (`pass`).
            let done = unsafe { self.pass(par, host, rows, &steps, logits.clone()) };
            match par {
                Par::Team { index, .. } if index > 0 => None,
                _ => Some(done),
            }
        })?;
        Tensor::from_vec(bufs.logits, (logits.len(), cfg.vocab_size), &Device::Cpu)
    }

    /// The steps of one pass, run by every thread of `par` together.
    ///
    /// # Safety
    /// Every thread of the team calls it with the same arguments; `s` points into buffers and
    /// caches that outlive the pass.
    unsafe fn pass(
        &self,
        par: Par,
        host: &HostTables,
        rows: &[Row],
        s: &Steps,
        logits: Range<usize>,
    ) -> candle_core::Result<()> {
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
        let mine = par.split(n);
        let group = nh / nkv;
        let (mut scores, mut scratch) = (Vec::new(), vec![0f32; hd]);
        // SAFETY (every block below): each step writes only this thread's rows, pairs or
        // groups of its outputs, reads only what a barrier before it completed, and is
        // followed by a barrier before anyone reads what it wrote.
        for (layer, (block, (attn_norm, ffn_norm))) in
            self.blocks.iter().zip(&host.norms).enumerate()
        {
            for i in mine.clone() {
                let xi = unsafe { s.x.part(i * hidden..(i + 1) * hidden) };
                if layer > 0 {
                    add_into(xi, unsafe { &s.down.all()[i * hidden..(i + 1) * hidden] });
                }
                rms_norm(xi, attn_norm, eps, unsafe { s.h.row(i) });
                unsafe { s.h.seal(i) };
            }
            par.sync();
            unsafe { product(par, &block.wqkv, &s.h, n, &s.qkv)? };
            par.sync();
            let qkv = unsafe { s.qkv.all() };
            for i in mine.clone() {
                let row = rows[i];
                let src = &qkv[i * qkv_w..(i + 1) * qkv_w];
                let at = row.pos * half;
                let (cos, sin) = (&host.cos[at..at + half], &host.sin[at..at + half]);
                let qi = unsafe { s.q.part(i * q_w..(i + 1) * q_w) };
                qi.copy_from_slice(&src[..q_w]);
                rope(qi, hd, cfg.rope_style, cos, sin);
                let mut k = src[q_w..q_w + kv_w].to_vec();
                rope(&mut k, hd, cfg.rope_style, cos, sin);
                unsafe { s.kv[row.seq][layer].write(row.pos, &k, &src[q_w + kv_w..]) };
            }
            par.sync();
            let q = unsafe { s.q.all() };
            let plen = group * partial_len(hd);
            // Units round-robin: a prompt's later rows have more chunks.
            for u in par.strided(s.att.units.len()) {
                let (i, g, c) = s.att.units[u];
                let row = rows[i];
                let (first, total) = positions(&row, cfg.sliding_window);
                let span = first.max(c * CHUNK)..total.min((c + 1) * CHUNK);
                let (ks, vs) = unsafe { s.kv[row.seq][layer].rows() };
                let heads = i * q_w + g * group * hd..i * q_w + (g + 1) * group * hd;
                attention::unit(
                    &q[heads],
                    ks,
                    vs,
                    kv_w,
                    g * hd,
                    span,
                    &mut scores,
                    &mut scratch,
                    unsafe { s.partials.part(u * plen..(u + 1) * plen) },
                );
            }
            par.sync();
            let partials = unsafe { s.partials.all() };
            for i in mine.clone() {
                let y = unsafe { s.y.row(i) };
                let (start, chunks) = (s.att.row_start[i], s.att.row_chunks[i]);
                for (h, out) in y.chunks_exact_mut(hd).enumerate() {
                    let (g, hh) = (h / group, h % group);
                    let first = start + g * chunks;
                    let of_unit = |u: usize| {
                        let at = (u * group + hh) * partial_len(hd);
                        &partials[at..at + partial_len(hd)]
                    };
                    combine((first..first + chunks).map(of_unit), out);
                }
                unsafe { s.y.seal(i) };
            }
            par.sync();
            unsafe { product(par, &block.wo, &s.y, n, &s.o)? };
            par.sync();
            for i in mine.clone() {
                let xi = unsafe { s.x.part(i * hidden..(i + 1) * hidden) };
                add_into(xi, unsafe { &s.o.all()[i * hidden..(i + 1) * hidden] });
                rms_norm(xi, ffn_norm, eps, unsafe { s.h2.row(i) });
                unsafe { s.h2.seal(i) };
            }
            par.sync();
            unsafe { product(par, &block.w_gate_up, &s.h2, n, &s.gate_up)? };
            par.sync();
            let gate_up = unsafe { s.gate_up.all() };
            // By (row, block) — one decode row's 1536 exponentials are worth splitting.
            let nb = inter.div_ceil(QK);
            for ib in par.split(n * nb) {
                let (i, b) = (ib / nb, ib % nb);
                let cols = b * QK..inter.min((b + 1) * QK);
                let at = i * 2 * inter;
                let g = &gate_up[at + cols.start..at + cols.end];
                let u = &gate_up[at + inter + cols.start..at + inter + cols.end];
                unsafe {
                    s.act.block(i, cols, |a| {
                        for ((o, g), u) in a.iter_mut().zip(g).zip(u) {
                            *o = g / (1.0 + (-g).exp()) * u;
                        }
                    })
                };
            }
            par.sync();
            unsafe { product(par, &block.w_down, &s.act, n, &s.down)? };
            par.sync();
        }
        for i in par.split(logits.len()) {
            let r = logits.start + i;
            let xr = unsafe { s.x.part(r * hidden..(r + 1) * hidden) };
            add_into(xr, unsafe { &s.down.all()[r * hidden..(r + 1) * hidden] });
            rms_norm(xr, &host.final_norm, eps, unsafe { s.last.row(i) });
            unsafe { s.last.seal(i) };
        }
        par.sync();
        unsafe { product(par, &self.lm_head, &s.last, logits.len(), &s.logits) }
    }
}

/// The buffers of one pass.
struct Buffers {
    x: Vec<f32>,
    h: Input,
    qkv: Vec<f32>,
    q: Vec<f32>,
    y: Input,
    o: Vec<f32>,
    h2: Input,
    gate_up: Vec<f32>,
    act: Input,
    down: Vec<f32>,
    last: Input,
    logits: Vec<f32>,
    partials: Vec<f32>,
}

/// [`Buffers`] as the team shares them.
struct Steps {
    x: Shared<f32>,
    h: SharedInput,
    qkv: Shared<f32>,
    q: Shared<f32>,
    y: SharedInput,
    o: Shared<f32>,
    h2: SharedInput,
    gate_up: Shared<f32>,
    act: SharedInput,
    down: Shared<f32>,
    last: SharedInput,
    logits: Shared<f32>,
    partials: Shared<f32>,
    /// Each sequence's keys and values per layer.
    kv: Vec<Vec<SharedKv>>,
    att: Units,
}

impl Steps {
    fn new(b: &mut Buffers, caches: &mut [&mut SeqCache], att: Units) -> Self {
        Steps {
            x: Shared::new(&mut b.x),
            h: SharedInput::new(&mut b.h),
            qkv: Shared::new(&mut b.qkv),
            q: Shared::new(&mut b.q),
            y: SharedInput::new(&mut b.y),
            o: Shared::new(&mut b.o),
            h2: SharedInput::new(&mut b.h2),
            gate_up: Shared::new(&mut b.gate_up),
            act: SharedInput::new(&mut b.act),
            down: Shared::new(&mut b.down),
            last: SharedInput::new(&mut b.last),
            logits: Shared::new(&mut b.logits),
            partials: Shared::new(&mut b.partials),
            kv: caches
                .iter_mut()
                .map(|c| c.host.iter_mut().map(SharedKv::new).collect())
                .collect(),
            att,
        }
    }
}
