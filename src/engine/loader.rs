//! Loading weights from disk into a [`LlamaModel`].
//!
//! Owns the two on-disk formats Hearth reads — GGUF (quantized, llama architecture, which Mistral
//! GGUFs use too) and Hugging Face safetensors checkpoints (`LlamaForCausalLM`,
//! `MistralForCausalLM`) — the device choice, and the weight-format policy (which kernels run
//! each matrix: see [`build_linear`]).
//! Every failure names the file and the problem; nothing here panics on bad input.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use super::kernels::{self, matmul::QMatrix, WeightType};
use super::model::{Block, Embedding, Linear, LlamaModel, ModelConfig, RopeStyle};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file or directory does not exist or cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// What we tried to open.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid GGUF / safetensors / JSON file, or is cut short.
    #[error("{path}: {message}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The file is valid but describes a model Hearth cannot run.
    #[error("{path}: unsupported model: {message}")]
    Unsupported {
        /// The offending file.
        path: PathBuf,
        /// What is not supported.
        message: String,
    },
    /// The requested device is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
}

/// Where the weights should live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A GPU when this build has CUDA or Metal support and one is present, else the CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// The first CUDA GPU (needs the `cuda` feature).
    Cuda,
    /// The Metal GPU (needs the `metal` feature).
    Metal,
}

impl DeviceChoice {
    /// Pick the concrete device.
    pub fn device(self) -> Result<Device, LoadError> {
        let err = |e: candle_core::Error| LoadError::Device(e.to_string());
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(LoadError::Device(
                        "CUDA requested but this build has no `cuda` feature".into(),
                    ));
                }
                Device::new_cuda(0).map_err(err)
            }
            DeviceChoice::Metal => {
                if !candle_core::utils::metal_is_available() {
                    return Err(LoadError::Device(
                        "Metal requested but this build has no `metal` feature".into(),
                    ));
                }
                Device::new_metal(0).map_err(err)
            }
            DeviceChoice::Auto => {
                if candle_core::utils::cuda_is_available() {
                    if let Ok(d) = Device::new_cuda(0) {
                        return Ok(d);
                    }
                }
                if candle_core::utils::metal_is_available() {
                    if let Ok(d) = Device::new_metal(0) {
                        return Ok(d);
                    }
                }
                Ok(Device::Cpu)
            }
        }
    }
}

/// How weights are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Also keep F16/BF16/F32 matrices of a GGUF as shipped (Candle's dense kernels) rather than
    /// converting them to Q8_0 for Hearth's kernels. Quantized matrices are always as shipped.
    pub exact: bool,
    /// Target device.
    pub device: DeviceChoice,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            exact: false,
            device: DeviceChoice::Auto,
        }
    }
}

/// Summary of a model file for `hearth inspect` and `/v1/models`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// `gguf` or `safetensors`.
    pub format: String,
    /// The model's name from its metadata, if any.
    pub name: Option<String>,
    /// Tensor count by storage type, e.g. `Q4_1: 210`.
    pub tensor_types: Vec<(String, usize)>,
    /// Total parameters.
    pub parameters: usize,
    /// Bytes of weights on disk.
    pub file_bytes: u64,
}

/// A loaded model with its metadata.
pub struct Loaded {
    /// The runnable model.
    pub model: LlamaModel,
    /// What the file said about itself.
    pub info: ModelInfo,
}

fn format_err(path: &Path, e: impl std::fmt::Display) -> LoadError {
    LoadError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn unsupported(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::Unsupported {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Read only the GGUF header (metadata and tensor table), for tokenizer, template and inspect.
pub fn read_gguf_header(path: &Path) -> Result<gguf_file::Content, LoadError> {
    let mut file = File::open(path).map_err(|source| LoadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    gguf_file::Content::read(&mut file)
        .map_err(|e| format_err(path, format!("not a valid GGUF file: {e}")))
}

fn md_u32(ct: &gguf_file::Content, path: &Path, key: &str) -> Result<usize, LoadError> {
    match ct.metadata.get(key) {
        Some(v) => v
            .to_u32()
            .or_else(|_| v.to_u64().map(|x| x as u32))
            .map(|x| x as usize)
            .map_err(|e| format_err(path, format!("metadata {key}: {e}"))),
        None => Err(format_err(path, format!("missing metadata key {key}"))),
    }
}

fn md_f32(ct: &gguf_file::Content, key: &str) -> Option<f32> {
    ct.metadata.get(key).and_then(|v| v.to_f32().ok())
}

/// Model hyper-parameters from GGUF metadata.
pub fn gguf_config(ct: &gguf_file::Content, path: &Path) -> Result<ModelConfig, LoadError> {
    let arch = ct
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| format_err(path, "missing metadata key general.architecture"))?;
    if arch != "llama" && arch != "mistral" {
        return Err(unsupported(
            path,
            format!("architecture `{arch}` (Hearth runs llama-family models: llama, mistral)"),
        ));
    }
    let p = |k: &str| format!("{arch}.{k}");
    let hidden_size = md_u32(ct, path, &p("embedding_length"))?;
    let num_heads = md_u32(ct, path, &p("attention.head_count"))?;
    let num_kv_heads = md_u32(ct, path, &p("attention.head_count_kv")).unwrap_or(num_heads);
    let num_layers = md_u32(ct, path, &p("block_count"))?;
    let intermediate_size = md_u32(ct, path, &p("feed_forward_length"))?;
    let context_length = md_u32(ct, path, &p("context_length"))?;
    if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
        return Err(format_err(
            path,
            format!("invalid head counts: {num_heads} query heads, {num_kv_heads} kv heads"),
        ));
    }
    let head_dim = md_u32(ct, path, &p("rope.dimension_count")).unwrap_or(hidden_size / num_heads);
    if head_dim * num_heads != hidden_size {
        return Err(unsupported(
            path,
            format!("head_dim {head_dim} × {num_heads} heads ≠ hidden size {hidden_size}"),
        ));
    }
    let vocab_size = match md_u32(ct, path, &p("vocab_size")) {
        Ok(v) => v,
        Err(_) => ct
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| format_err(path, "missing tensor token_embd.weight"))?,
    };
    Ok(ModelConfig {
        architecture: arch.clone(),
        hidden_size,
        intermediate_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        rope_theta: md_f32(ct, &p("rope.freq_base")).unwrap_or(10_000.0),
        rms_norm_eps: md_f32(ct, &p("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f64,
        context_length,
        sliding_window: None,
        rope_style: RopeStyle::Interleaved,
        tied_embeddings: !ct.tensor_infos.contains_key("output.weight"),
    })
}

struct GgufReader<'a> {
    path: &'a Path,
    file: File,
    content: &'a gguf_file::Content,
}

impl GgufReader<'_> {
    fn qtensor(&mut self, name: &str) -> Result<QTensor, LoadError> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(format_err(self.path, format!("missing tensor {name}")));
        }
        self.content
            .tensor(&mut self.file, name, &Device::Cpu)
            .map_err(|e| format_err(self.path, format!("tensor {name}: {e}")))
    }

    fn vector(&mut self, name: &str, device: &Device) -> Result<Tensor, LoadError> {
        let q = self.qtensor(name)?;
        q.dequantize(device)
            .map_err(|e| format_err(self.path, format!("tensor {name}: {e}")))
    }
}

/// Stack quantized matrices `[n_i, k]` of one type into `[Σn_i, k]` by concatenating their
/// blocks: rows are stored one after another, so this is exact.
fn stack_qtensors(parts: &[QTensor]) -> candle_core::Result<QTensor> {
    let dtype = parts[0].dtype();
    let k = parts[0].shape().dims2()?.1;
    let mut bytes = Vec::new();
    let mut n = 0;
    for p in parts {
        let (pn, pk) = p.shape().dims2()?;
        if pk != k || p.dtype() != dtype {
            candle_core::bail!("cannot stack tensors of different shapes or types");
        }
        bytes.extend_from_slice(&p.data()?);
        n += pn;
    }
    let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, dtype)?;
    QTensor::new(storage, (n, k))
}

/// Build a [`Linear`] from the parts of a (possibly fused) projection, applying the format policy.
///
/// On the CPU, the types Hearth's kernels cover (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)
/// stay exactly as shipped and run on them, parts of different types side by side (Q4_K_M files
/// fuse Q4_K queries and keys with Q6_K values). The other K-quants (Q2_K, Q3_K) are kept as
/// shipped on Candle's kernels, and so is everything under `exact`; otherwise (F16, BF16, F32)
/// a matrix becomes Q8_0 for Hearth's kernels. GPUs keep every weight as shipped.
fn build_linear(
    parts: Vec<QTensor>,
    opts: &LoadOptions,
    device: &Device,
) -> candle_core::Result<Linear> {
    let same_type = parts.iter().all(|p| p.dtype() == parts[0].dtype());
    let (n, k) = (n_of(&parts)?, k_of(&parts)?);
    let ours = |p: &QTensor| weight_type(p.dtype()).filter(|t| k.is_multiple_of(t.block_values()));
    if device.is_cpu() && parts.iter().all(|p| ours(p).is_some()) {
        let matrices = parts
            .iter()
            .map(|p| {
                let ty = ours(p).expect("checked above");
                QMatrix::new(ty, p.shape().dims()[0], k, p.data()?.into_owned())
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let matrix =
            QMatrix::stack(matrices).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        return Ok(Linear::blocks(matrix));
    }
    if device.is_cpu() && k.is_multiple_of(kernels::QK) {
        let candle_simd = same_type && is_k_quant(parts[0].dtype());
        if !opts.exact && !candle_simd {
            let q = QTensor::quantize(&dequantize_stacked(&parts)?, GgmlDType::Q8_0)?;
            return blocks_linear(WeightType::Q8_0, n, k, q.data()?.into_owned());
        }
    }
    let main = if same_type {
        to_device(stack_qtensors(&parts)?, device)?
    } else {
        // Mixed types cannot be stacked exactly: keep them as f32 (still exact maths).
        QTensor::quantize(&dequantize_stacked(&parts)?, GgmlDType::F32)?
    };
    Ok(Linear::new(QMatMul::from_arc(std::sync::Arc::new(main))?))
}

fn blocks_linear(
    ty: WeightType,
    n: usize,
    k: usize,
    bytes: Vec<u8>,
) -> candle_core::Result<Linear> {
    let matrix =
        QMatrix::new(ty, n, k, bytes).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    Ok(Linear::blocks(matrix))
}

/// Does Candle have SIMD CPU kernels for this type that Hearth's do not replace?
fn is_k_quant(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K
    )
}

/// The block format Hearth's kernels compute on for a GGUF type, if they cover it.
fn weight_type(dtype: GgmlDType) -> Option<WeightType> {
    Some(match dtype {
        GgmlDType::Q4_0 => WeightType::Q4_0,
        GgmlDType::Q4_1 => WeightType::Q4_1,
        GgmlDType::Q5_0 => WeightType::Q5_0,
        GgmlDType::Q5_1 => WeightType::Q5_1,
        GgmlDType::Q8_0 => WeightType::Q8_0,
        GgmlDType::Q4K => WeightType::Q4K,
        GgmlDType::Q5K => WeightType::Q5K,
        GgmlDType::Q6K => WeightType::Q6K,
        _ => return None,
    })
}

/// The parts as one f32 `[Σn_i, k]` matrix on the CPU.
fn dequantize_stacked(parts: &[QTensor]) -> candle_core::Result<Tensor> {
    let ts = parts
        .iter()
        .map(|p| p.dequantize(&Device::Cpu))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&ts, 0)
}

fn k_of(parts: &[QTensor]) -> candle_core::Result<usize> {
    Ok(parts[0].shape().dims2()?.1)
}

fn n_of(parts: &[QTensor]) -> candle_core::Result<usize> {
    parts.iter().map(|p| Ok(p.shape().dims2()?.0)).sum()
}

fn to_device(q: QTensor, device: &Device) -> candle_core::Result<QTensor> {
    if device.is_cpu() {
        return Ok(q);
    }
    let dtype = q.dtype();
    let shape = q.shape().clone();
    let data = q.data()?.into_owned();
    QTensor::new(QStorage::from_data(Cow::Owned(data), device, dtype)?, shape)
}

/// Load a GGUF file of llama architecture.
pub fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let content = read_gguf_header(path)?;
    let config = gguf_config(&content, path)?;
    let device = opts.device.device()?;
    let file = File::open(path).map_err(|source| LoadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = GgufReader {
        path,
        file,
        content: &content,
    };
    let c = |e: candle_core::Error| format_err(path, e);

    let embd = r.qtensor("token_embd.weight")?;
    let embd_dims = embd.shape().dims().to_vec();
    if embd_dims != [config.vocab_size, config.hidden_size] {
        return Err(format_err(
            path,
            format!(
                "token_embd.weight has shape {embd_dims:?}, expected [{}, {}]",
                config.vocab_size, config.hidden_size
            ),
        ));
    }
    let embd = to_device(embd, &device).map_err(c)?;
    let embd = std::sync::Arc::new(embd);
    let embed = Embedding::new(QMatMul::QTensor(embd.clone()));
    let lm_head = if config.tied_embeddings {
        // The output projection reuses the embedding (the largest matrix: same policy).
        let q = r.qtensor("token_embd.weight")?;
        build_linear(vec![q], opts, &device).map_err(c)?
    } else {
        let q = r.qtensor("output.weight")?;
        build_linear(vec![q], opts, &device).map_err(c)?
    };
    let norm = r.vector("output_norm.weight", &device)?;

    let mut blocks = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        let q = r.qtensor(&n("attn_q"))?;
        let k = r.qtensor(&n("attn_k"))?;
        let v = r.qtensor(&n("attn_v"))?;
        let wqkv = build_linear(vec![q, k, v], opts, &device).map_err(c)?;
        let wo = build_linear(vec![r.qtensor(&n("attn_output"))?], opts, &device).map_err(c)?;
        let gate = r.qtensor(&n("ffn_gate"))?;
        let up = r.qtensor(&n("ffn_up"))?;
        let w_gate_up = build_linear(vec![gate, up], opts, &device).map_err(c)?;
        let w_down = build_linear(vec![r.qtensor(&n("ffn_down"))?], opts, &device).map_err(c)?;
        blocks.push(Block {
            attn_norm: r.vector(&n("attn_norm"), &device)?,
            wqkv,
            wo,
            ffn_norm: r.vector(&n("ffn_norm"), &device)?,
            w_gate_up,
            w_down,
        });
    }

    let mut types: std::collections::BTreeMap<String, usize> = Default::default();
    let mut parameters = 0;
    for t in content.tensor_infos.values() {
        *types.entry(format!("{:?}", t.ggml_dtype)).or_default() += 1;
        parameters += t.shape.elem_count();
    }
    let name = content
        .metadata
        .get("general.name")
        .and_then(|v| v.to_string().ok())
        .cloned();
    let model = LlamaModel::new(config, device, embed, blocks, norm, lm_head).map_err(c)?;
    Ok(Loaded {
        model,
        info: ModelInfo {
            format: "gguf".into(),
            name,
            tensor_types: types.into_iter().collect(),
            parameters,
            file_bytes,
        },
    })
}

/// The subset of a Hugging Face `config.json` Hearth needs.
#[derive(Debug, serde::Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_rope_theta")]
    rope_theta: f32,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
}

fn default_rope_theta() -> f32 {
    10_000.0
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    4096
}

/// Model hyper-parameters from a Hugging Face `config.json`.
pub fn hf_config(dir: &Path) -> Result<ModelConfig, LoadError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Open {
        path: path.clone(),
        source,
    })?;
    let cfg: HfConfig = serde_json::from_str(&text)
        .map_err(|e| format_err(&path, format!("invalid config.json: {e}")))?;
    let arch = cfg
        .architectures
        .first()
        .cloned()
        .or_else(|| cfg.model_type.clone())
        .unwrap_or_default();
    let architecture = match arch.as_str() {
        "LlamaForCausalLM" | "llama" => "llama",
        "MistralForCausalLM" | "mistral" => "mistral",
        other => {
            return Err(unsupported(
                &path,
                format!("architecture `{other}` (supported: LlamaForCausalLM, MistralForCausalLM)"),
            ))
        }
    };
    if let Some(scaling) = &cfg.rope_scaling {
        if !scaling.is_null() {
            return Err(unsupported(
                &path,
                format!("rope_scaling {scaling} is not supported"),
            ));
        }
    }
    let num_kv_heads = cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads);
    if cfg.num_attention_heads == 0
        || num_kv_heads == 0
        || !cfg.num_attention_heads.is_multiple_of(num_kv_heads)
    {
        return Err(format_err(&path, "invalid attention head counts"));
    }
    let head_dim = cfg
        .head_dim
        .unwrap_or(cfg.hidden_size / cfg.num_attention_heads);
    Ok(ModelConfig {
        architecture: architecture.into(),
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_layers: cfg.num_hidden_layers,
        num_heads: cfg.num_attention_heads,
        num_kv_heads,
        head_dim,
        vocab_size: cfg.vocab_size,
        rope_theta: cfg.rope_theta,
        rms_norm_eps: cfg.rms_norm_eps,
        context_length: cfg.max_position_embeddings,
        sliding_window: if architecture == "mistral" {
            cfg.sliding_window
        } else {
            None
        },
        rope_style: RopeStyle::Half,
        tied_embeddings: cfg.tie_word_embeddings,
    })
}

/// Load a safetensors checkpoint in Hugging Face layout (`config.json` + `*.safetensors`).
pub fn load_safetensors(dir: &Path, opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let config = hf_config(dir)?;
    let device = opts.device.device()?;
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format_err(dir, "no *.safetensors files in the directory"));
    }
    let file_bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    // SAFETY: the files are memory-mapped read-only; Hearth does not modify them and the
    // user is told not to change model files while the server runs.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .map_err(|e| format_err(dir, format!("invalid safetensors: {e}")))?;
    let get = |name: &str| -> Result<Tensor, LoadError> {
        st.load(name, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| format_err(dir, format!("tensor {name}: {e}")))
    };
    let c = |e: candle_core::Error| format_err(dir, e);
    let dense_linear = |parts: Vec<Tensor>| -> Result<Linear, LoadError> {
        let w = Tensor::cat(&parts, 0)
            .and_then(|w| w.to_device(&device))
            .map_err(c)?;
        Ok(Linear::new(QMatMul::Tensor(w)))
    };
    let embed_w = get("model.embed_tokens.weight")?;
    if embed_w.dims() != [config.vocab_size, config.hidden_size] {
        return Err(format_err(
            dir,
            format!("model.embed_tokens.weight has shape {:?}", embed_w.dims()),
        ));
    }
    let lm_head = if config.tied_embeddings {
        dense_linear(vec![embed_w.clone()])?
    } else {
        dense_linear(vec![get("lm_head.weight")?])?
    };
    let embed = Embedding::new(QMatMul::Tensor(embed_w.to_device(&device).map_err(c)?));
    let mut blocks = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let n = |s: &str| format!("model.layers.{i}.{s}.weight");
        let vec = |s: &str| get(&n(s)).and_then(|t| t.to_device(&device).map_err(c));
        blocks.push(Block {
            attn_norm: vec("input_layernorm")?,
            wqkv: dense_linear(vec![
                get(&n("self_attn.q_proj"))?,
                get(&n("self_attn.k_proj"))?,
                get(&n("self_attn.v_proj"))?,
            ])?,
            wo: dense_linear(vec![get(&n("self_attn.o_proj"))?])?,
            ffn_norm: vec("post_attention_layernorm")?,
            w_gate_up: dense_linear(vec![get(&n("mlp.gate_proj"))?, get(&n("mlp.up_proj"))?])?,
            w_down: dense_linear(vec![get(&n("mlp.down_proj"))?])?,
        });
    }
    let norm = get("model.norm.weight")?.to_device(&device).map_err(c)?;
    let parameters = st
        .tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>())
        .sum();
    let mut types: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, v) in st.tensors() {
        *types.entry(format!("{:?}", v.dtype())).or_default() += 1;
    }
    let model = LlamaModel::new(config, device, embed, blocks, norm, lm_head).map_err(c)?;
    Ok(Loaded {
        model,
        info: ModelInfo {
            format: "safetensors".into(),
            name: dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            tensor_types: types.into_iter().collect(),
            parameters,
            file_bytes,
        },
    })
}
