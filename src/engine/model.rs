//! Hearth's own llama-family forward pass (Llama 2, Mistral, SmolLM2).
//!
//! Owns the transformer weights in their in-memory form and the per-sequence state (KV cache and
//! position). Unlike Candle's `quantized_llama`, which keeps one private cache and one position for
//! the whole model, every sequence here carries its own [`SeqCache`], so a scheduler can interleave
//! many sequences over one set of weights, and a cache can be kept, truncated or forked for prefix
//! reuse. Loading lives in `loader`; this module knows nothing about files.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor, D};

use super::kernels::{self, matmul::QMatrix};

mod cpu;

pub use cpu::KvType;

/// How rotary position embedding pairs the head dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RopeStyle {
    /// Adjacent pairs (0,1), (2,3)… — GGUF llama files (the converter permutes Q/K into this).
    Interleaved,
    /// First half against second half — Hugging Face checkpoints (`rotate_half`).
    Half,
}

/// Shape and hyper-parameters of a llama-family model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    /// `llama` or `mistral`.
    pub architecture: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (fewer than `num_heads` with grouped-query attention).
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Rotary base frequency.
    pub rope_theta: f32,
    /// RMS-norm epsilon.
    pub rms_norm_eps: f64,
    /// Longest sequence the model was trained for: prompts plus output must fit.
    pub context_length: usize,
    /// Mistral's sliding attention window, if any.
    pub sliding_window: Option<usize>,
    /// Rotary pairing.
    pub rope_style: RopeStyle,
    /// The output projection reuses the token embedding.
    pub tied_embeddings: bool,
}

/// One weight matrix `[out, in]` applied as `x · Wᵀ`.
#[derive(Debug, Clone)]
pub struct Linear {
    kind: LinearKind,
}

#[derive(Debug, Clone)]
enum LinearKind {
    /// The file's own blocks on the CPU, through Hearth's kernels (`kernels`): activations
    /// quantized per 32 values, every row computed alike whatever the batch.
    Blocks(QMatrix),
    /// Candle's kernels: GPUs, and what Hearth's kernels do not cover (K-quants, dense f32/f16
    /// weights of safetensors checkpoints and of `exact` mode).
    Candle(QMatMul),
}

impl Linear {
    /// Wrap a Candle matrix.
    pub fn new(main: QMatMul) -> Self {
        Self {
            kind: LinearKind::Candle(main),
        }
    }

    /// A matrix of GGUF blocks computed by Hearth's own CPU kernels.
    pub fn blocks(matrix: QMatrix) -> Self {
        Self {
            kind: LinearKind::Blocks(matrix),
        }
    }

    /// Which kernels run this matrix, for logs and tests: `Q4_1 (avx512vnni)`, `candle`.
    pub fn describe(&self) -> String {
        match &self.kind {
            LinearKind::Blocks(m) => format!("{} ({})", m.type_names(), m.isa().name()),
            LinearKind::Candle(_) => "candle".into(),
        }
    }

    /// `x [rows, in] → [rows, out]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kind {
            LinearKind::Blocks(m) => {
                let rows = x.dim(0)?;
                let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
                let mut out = vec![0f32; rows * m.rows()];
                m.matmul(&xs, &mut out);
                Tensor::from_vec(out, (rows, m.rows()), x.device())
            }
            LinearKind::Candle(main) => main.forward(x),
        }
    }

    /// The matrix, when Hearth's own kernels compute it.
    fn as_blocks(&self) -> Option<&QMatrix> {
        match &self.kind {
            LinearKind::Blocks(m) => Some(m),
            LinearKind::Candle(_) => None,
        }
    }

    /// `x [rows, in] → [rows, out]` on plain slices (the CPU path).
    fn forward_rows(&self, x: &[f32], rows: usize) -> candle_core::Result<Vec<f32>> {
        if let LinearKind::Blocks(m) = &self.kind {
            let mut out = vec![0f32; rows * m.rows()];
            m.matmul(x, &mut out);
            return Ok(out);
        }
        let x = Tensor::from_slice(x, (rows, x.len() / rows.max(1)), &Device::Cpu)?;
        self.forward(&x)?.flatten_all()?.to_vec1()
    }

    /// Bytes of weights held in memory.
    pub fn size_in_bytes(&self) -> usize {
        match &self.kind {
            LinearKind::Blocks(m) => m.size_in_bytes(),
            LinearKind::Candle(main) => match main {
                QMatMul::QTensor(q) => q.storage_size_in_bytes(),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => {
                    t.elem_count() * t.dtype().size_in_bytes()
                }
            },
        }
    }
}

/// Token embedding table: a quantized or dense `[vocab, hidden]` matrix.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: QMatMul,
}

impl Embedding {
    /// Wrap an embedding matrix.
    pub fn new(table: QMatMul) -> Self {
        Self { table }
    }

    fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.table.embedding(ids)
    }
}

/// One transformer block. Q/K/V are fused into one matrix and gate/up into another, so decode
/// quantizes each activation once and makes two fewer passes per projection group.
#[derive(Debug, Clone)]
pub struct Block {
    /// RMS-norm weight before attention.
    pub attn_norm: Tensor,
    /// `[q; k; v]` stacked on the output dimension.
    pub wqkv: Linear,
    /// Attention output projection.
    pub wo: Linear,
    /// RMS-norm weight before the MLP.
    pub ffn_norm: Tensor,
    /// `[gate; up]` stacked on the output dimension.
    pub w_gate_up: Linear,
    /// MLP down projection.
    pub w_down: Linear,
}

/// All weights of a llama-family model plus the rotary tables.
#[derive(Debug, Clone)]
pub struct LlamaModel {
    config: ModelConfig,
    device: Device,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    /// The CPU path's own copies (norm weights, rotary tables); `None` on a GPU.
    host: Option<cpu::HostTables>,
    /// How the CPU path's KV cache stores keys and values.
    kv_type: KvType,
}

/// Per-sequence attention state: keys and values of every position fed so far.
///
/// On the CPU they live in [`HostKv`] buffers (f16, position-major, grown as positions are
/// written); on a GPU in device tensors that grow by doubling, so appending a token is a copy
/// of one row, not of the whole cache.
#[derive(Debug)]
pub struct SeqCache {
    layers: Vec<(Tensor, Tensor)>,
    host: Vec<cpu::HostKv>,
    /// The token ids whose keys and values are cached, in order.
    tokens: Vec<u32>,
    len: usize,
    capacity: usize,
}

impl SeqCache {
    /// A cache with no buffers (a placeholder; the model grows it on first use).
    pub fn empty() -> Self {
        SeqCache {
            layers: Vec::new(),
            host: Vec::new(),
            tokens: Vec::new(),
            len: 0,
            capacity: 0,
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The token ids cached so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// How many leading ids of `prompt` this cache already holds.
    pub fn common_prefix(&self, prompt: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// Forget everything after the first `len` positions (prefix reuse keeps the shared part).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.tokens.truncate(self.len);
    }

    /// A deep copy holding the first `len` positions, independent of `self`.
    pub fn fork(&self, len: usize) -> candle_core::Result<SeqCache> {
        let len = self.len.min(len);
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.copy()?, v.copy()?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(SeqCache {
            layers,
            host: self.host.iter().map(|kv| kv.prefix(len)).collect(),
            tokens: self.tokens[..len].to_vec(),
            len,
            capacity: self.capacity,
        })
    }

    /// Bytes held by the key/value buffers.
    pub fn size_in_bytes(&self) -> usize {
        let device: usize = self
            .layers
            .iter()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum();
        device
            + self
                .host
                .iter()
                .map(cpu::HostKv::size_in_bytes)
                .sum::<usize>()
    }
}

impl LlamaModel {
    /// Assemble a model from loaded parts; precomputes the rotary tables for the whole context.
    pub fn new(
        config: ModelConfig,
        device: Device,
        embed: Embedding,
        blocks: Vec<Block>,
        norm: Tensor,
        lm_head: Linear,
    ) -> candle_core::Result<Self> {
        let half = config.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                1f32 / config
                    .rope_theta
                    .powf((2 * i) as f32 / config.head_dim as f32)
            })
            .collect();
        let positions = config.context_length.max(1);
        let mut angles = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for f in &inv_freq {
                angles.push(p as f32 * f);
            }
        }
        let host = if device.is_cpu() {
            Some(cpu::HostTables::new(&angles, &blocks, &norm)?)
        } else {
            None
        };
        let angles = Tensor::from_vec(angles, (positions, half), &device)?;
        let cos = angles.cos()?;
        let sin = angles.sin()?;
        Ok(Self {
            host,
            kv_type: KvType::F16,
            config,
            device,
            embed,
            blocks,
            norm,
            lm_head,
            cos,
            sin,
        })
    }

    /// Store the CPU path's KV cache as `ty` (caches made from now on). Q8_0 needs heads of a
    /// multiple of 32 values; a GPU keeps its own cache whatever this says.
    pub fn set_kv_type(&mut self, ty: KvType) -> candle_core::Result<()> {
        if ty == KvType::Q8_0 && !self.config.head_dim.is_multiple_of(kernels::QK) {
            candle_core::bail!(
                "a q8_0 KV cache needs heads of a multiple of 32 values; this model's have {}",
                self.config.head_dim
            );
        }
        self.kv_type = ty;
        Ok(())
    }

    /// How the CPU path's KV cache stores keys and values.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// How the first block's matrices and the output head are computed, as
    /// `attn_qkv Q4_K+Q4_K+Q6_K (avx512vnni)` (logs and tests).
    pub fn describe_matrices(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = self.blocks.first() {
            for (name, w) in [
                ("attn_qkv", &b.wqkv),
                ("attn_output", &b.wo),
                ("ffn_gate_up", &b.w_gate_up),
                ("ffn_down", &b.w_down),
            ] {
                out.push(format!("{name} {}", w.describe()));
            }
        }
        out.push(format!("output {}", self.lm_head.describe()));
        out
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of weights held in memory.
    pub fn weights_size_in_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.wqkv.size_in_bytes()
                    + b.wo.size_in_bytes()
                    + b.w_gate_up.size_in_bytes()
                    + b.w_down.size_in_bytes()
            })
            .sum();
        blocks + self.lm_head.size_in_bytes()
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> candle_core::Result<SeqCache> {
        let mut cache = SeqCache::empty();
        self.grow_cache(&mut cache, 64)?;
        Ok(cache)
    }

    fn grow_cache(&self, cache: &mut SeqCache, needed: usize) -> candle_core::Result<()> {
        if self.host.is_some() {
            let width = self.config.num_kv_heads * self.config.head_dim;
            cache
                .host
                .resize_with(self.config.num_layers, cpu::HostKv::default);
            for kv in &mut cache.host {
                kv.reserve(needed, width, self.kv_type);
            }
            return Ok(());
        }
        if needed <= cache.capacity {
            return Ok(());
        }
        let mut capacity = cache.capacity.max(64);
        while capacity < needed {
            capacity *= 2;
        }
        let capacity = capacity.min(self.config.context_length.max(needed));
        let shape = (self.config.num_kv_heads, capacity, self.config.head_dim);
        let mut layers = Vec::with_capacity(self.config.num_layers);
        for i in 0..self.config.num_layers {
            let k = Tensor::zeros(shape, DType::F32, &self.device)?;
            let v = Tensor::zeros(shape, DType::F32, &self.device)?;
            if cache.len > 0 {
                if let Some((old_k, old_v)) = cache.layers.get(i) {
                    k.slice_set(&old_k.narrow(1, 0, cache.len)?.contiguous()?, 1, 0)?;
                    v.slice_set(&old_v.narrow(1, 0, cache.len)?.contiguous()?, 1, 0)?;
                }
            }
            layers.push((k, v));
        }
        cache.layers = layers;
        cache.capacity = capacity;
        Ok(())
    }

    /// Feed `tokens` after the positions already in `cache` and return logits `[vocab]` for the
    /// last token (or `[tokens, vocab]` for every token when `all_logits`).
    ///
    /// All tokens go through each layer together (batched prompt processing); callers chunk long
    /// prompts to bound memory and latency.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut SeqCache,
        all_logits: bool,
    ) -> candle_core::Result<Tensor> {
        let seq_len = tokens.len();
        if seq_len == 0 {
            candle_core::bail!("forward called with no tokens");
        }
        let pos = cache.len;
        if pos + seq_len > self.config.context_length {
            candle_core::bail!(
                "sequence of {} tokens exceeds the context length {}",
                pos + seq_len,
                self.config.context_length
            );
        }
        self.grow_cache(cache, pos + seq_len)?;
        if let Some(host) = &self.host {
            let rows: Vec<cpu::Row> = (0..seq_len)
                .map(|i| cpu::Row {
                    seq: 0,
                    pos: pos + i,
                })
                .collect();
            let out = if all_logits {
                0..seq_len
            } else {
                seq_len - 1..seq_len
            };
            let logits = self.forward_cpu(host, tokens, &rows, &mut [cache], out)?;
            cache.len = pos + seq_len;
            cache.tokens.extend_from_slice(tokens);
            return if all_logits {
                Ok(logits)
            } else {
                logits.squeeze(0)
            };
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.forward(&ids)?; // [S, H]
        let cos = self.cos.narrow(0, pos, seq_len)?;
        let sin = self.sin.narrow(0, pos, seq_len)?;
        let mask = self.mask(seq_len, pos)?;
        let eps = self.config.rms_norm_eps as f32;
        for (block, (k_cache, v_cache)) in self.blocks.iter().zip(cache.layers.iter()) {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, eps)?;
            let qkv = block.wqkv.forward(&h)?;
            let y = self.attend(&qkv, k_cache, v_cache, pos, &cos, &sin, mask.as_ref())?;
            x = (x + block.wo.forward(&y)?)?;
            x = (&x + self.mlp(block, &x)?)?;
        }
        cache.len = pos + seq_len;
        cache.tokens.extend_from_slice(tokens);
        let x = if all_logits {
            x
        } else {
            x.narrow(0, seq_len - 1, 1)?
        };
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        let logits = self.lm_head.forward(&x)?;
        if all_logits {
            Ok(logits)
        } else {
            logits.squeeze(0)
        }
    }

    /// One decode step for several sequences at once: `tokens[i]` is appended to `caches[i]`.
    /// Returns logits `[B, vocab]`.
    ///
    /// The projections, the MLP and the output head run as one `[B, hidden]` matmul, so the
    /// weights — what decode spends its time reading — are read once for the whole batch;
    /// attention runs per sequence against its own cache and position.
    pub fn forward_decode_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut SeqCache],
    ) -> candle_core::Result<Tensor> {
        let batch = tokens.len();
        if batch == 0 || batch != caches.len() {
            candle_core::bail!(
                "forward_decode_batch: {batch} tokens for {} caches",
                caches.len()
            );
        }
        for cache in caches.iter_mut() {
            if cache.len + 1 > self.config.context_length {
                candle_core::bail!(
                    "sequence of {} tokens exceeds the context length {}",
                    cache.len + 1,
                    self.config.context_length
                );
            }
            self.grow_cache(cache, cache.len + 1)?;
        }
        if let Some(host) = &self.host {
            let rows: Vec<cpu::Row> = caches
                .iter()
                .enumerate()
                .map(|(seq, c)| cpu::Row { seq, pos: c.len })
                .collect();
            let logits = self.forward_cpu(host, tokens, &rows, caches, 0..batch)?;
            for (cache, &t) in caches.iter_mut().zip(tokens) {
                cache.len += 1;
                cache.tokens.push(t);
            }
            return Ok(logits);
        }
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.forward(&ids)?; // [B, H]
        let eps = self.config.rms_norm_eps as f32;
        let per_seq = caches
            .iter()
            .map(|c| {
                let pos = c.len;
                Ok((
                    pos,
                    self.cos.narrow(0, pos, 1)?,
                    self.sin.narrow(0, pos, 1)?,
                    self.mask(1, pos)?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, eps)?;
            let qkv = block.wqkv.forward(&h)?;
            let mut ys = Vec::with_capacity(batch);
            for (i, (cache, (pos, cos, sin, mask))) in caches.iter().zip(&per_seq).enumerate() {
                let (k_cache, v_cache) = &cache.layers[layer];
                let row = qkv.narrow(0, i, 1)?;
                ys.push(self.attend(&row, k_cache, v_cache, *pos, cos, sin, mask.as_ref())?);
            }
            let y = Tensor::cat(&ys, 0)?;
            x = (x + block.wo.forward(&y)?)?;
            x = (&x + self.mlp(block, &x)?)?;
        }
        for (cache, &t) in caches.iter_mut().zip(tokens) {
            cache.len += 1;
            cache.tokens.push(t);
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        self.lm_head.forward(&x)
    }

    /// The block's feed-forward half: RMS-norm, then SwiGLU (`down(silu(gate) · up)`).
    fn mlp(&self, block: &Block, x: &Tensor) -> candle_core::Result<Tensor> {
        let eps = self.config.rms_norm_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &block.ffn_norm, eps)?;
        let gate_up = block.w_gate_up.forward(&h)?;
        let inter = self.config.intermediate_size;
        let gate = gate_up.narrow(D::Minus1, 0, inter)?;
        let up = gate_up.narrow(D::Minus1, inter, inter)?;
        block.w_down.forward(&(gate.silu()? * up)?)
    }

    /// Additive causal mask `[S, pos+S]` (with the sliding window when the model has one);
    /// `None` for a single token with no window in effect.
    fn mask(&self, seq_len: usize, pos: usize) -> candle_core::Result<Option<Tensor>> {
        let total = pos + seq_len;
        let window = self.config.sliding_window.filter(|w| *w < total);
        if seq_len == 1 && window.is_none() {
            return Ok(None);
        }
        let mut data = vec![0f32; seq_len * total];
        for i in 0..seq_len {
            let q_pos = pos + i;
            for (j, slot) in data[i * total..(i + 1) * total].iter_mut().enumerate() {
                let future = j > q_pos;
                let too_far = window.is_some_and(|w| q_pos >= w && j <= q_pos - w);
                if future || too_far {
                    *slot = f32::NEG_INFINITY;
                }
            }
        }
        Ok(Some(Tensor::from_vec(
            data,
            (seq_len, total),
            &self.device,
        )?))
    }

    /// Attention for `S` new positions of one sequence given their fused projections
    /// `qkv [S, (nh + 2 nkv) hd]`: rotary embedding, cache write at `pos`, attention over the
    /// cache. Returns `[S, nh hd]`, before the output projection.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        qkv: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        pos: usize,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.config;
        let (seq_len, _) = qkv.dims2()?;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let q = qkv.narrow(1, 0, nh * hd)?;
        let k = qkv.narrow(1, nh * hd, nkv * hd)?;
        let v = qkv.narrow(1, (nh + nkv) * hd, nkv * hd)?;
        // [S, heads, hd] → [1, heads, S, hd] for the rotary kernels.
        let q = q
            .reshape((seq_len, nh, hd))?
            .transpose(0, 1)?
            .contiguous()?;
        let k = k
            .reshape((seq_len, nkv, hd))?
            .transpose(0, 1)?
            .contiguous()?;
        let v = v
            .reshape((seq_len, nkv, hd))?
            .transpose(0, 1)?
            .contiguous()?;
        let rope = match cfg.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i,
            RopeStyle::Half => candle_nn::rotary_emb::rope,
        };
        let q = rope(&q.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
        let k = rope(&k.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
        k_cache.slice_set(&k, 1, pos)?;
        v_cache.slice_set(&v, 1, pos)?;
        let total = pos + seq_len;
        let k_all = k_cache.narrow(1, 0, total)?; // [nkv, T, hd]
        let v_all = v_cache.narrow(1, 0, total)?;
        // Grouped-query attention without copying K/V: fold each group's query heads into the
        // row dimension, [nkv, group·S, hd], so one batched matmul per KV head covers them.
        let group = nh / nkv;
        let q = q.reshape((nkv, group * seq_len, hd))?;
        let scale = 1f64 / (hd as f64).sqrt();
        let att = (q.matmul(&k_all.t()?)? * scale)?; // [nkv, group·S, T]
        let att = match mask {
            Some(mask) => att
                .reshape((nkv, group, seq_len, total))?
                .broadcast_add(mask)?
                .reshape((nkv, group * seq_len, total))?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        att.matmul(&v_all)? // [nkv, group·S, hd]
            .reshape((nh, seq_len, hd))?
            .transpose(0, 1)?
            .reshape((seq_len, nh * hd))
    }
}
