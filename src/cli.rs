//! The one-shot commands behind `hearth generate | tokenize | template | inspect`, and (in
//! [`accounts`]) `hearth user …`, `backup` and `restore`, and (in [`migrate_store`])
//! `hearth migrate-store`.
//!
//! Like `app.rs` for the server, this is a boundary layer: it resolves the configured model,
//! calls the engine and formats results for a terminal, with `anyhow` context on failures.

pub mod accounts;
/// `hearth migrate-store`: SQLite to PostgreSQL.
pub mod migrate_store;

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::engine::generate::{Engine, GenerateRequest};
use crate::engine::loader::{self, LoadOptions};
use crate::engine::sampler::SamplingParams;
use crate::engine::source::{self, ModelSource};
use crate::engine::template::{ChatMessage, ChatTemplate};
use crate::engine::tokenizer::Tokenizer;

/// Options for [`generate`], from the command line.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Prompt text.
    pub prompt: Option<String>,
    /// Chat messages (take precedence over `prompt`).
    pub messages: Option<Vec<ChatMessage>>,
    /// Feed `prompt` without the chat template.
    pub raw: bool,
    /// Token limit (default from config).
    pub max_tokens: Option<usize>,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Top-k (0 = off).
    pub top_k: usize,
    /// Min-p (0 = off).
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    pub repeat_penalty: f32,
    /// Seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Print one JSON object instead of streaming.
    pub json: bool,
}

/// Read an OpenAI-style messages file: a JSON array of `{role, content}` (or `{"messages": [...]}`).
pub fn read_messages(path: &Path) -> Result<Vec<ChatMessage>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let list = match value {
        serde_json::Value::Object(mut o) => o.remove("messages").unwrap_or(serde_json::Value::Null),
        other => other,
    };
    serde_json::from_value(list).with_context(|| {
        format!(
            "{}: expected a JSON array of {{\"role\": ..., \"content\": ...}} messages",
            path.display()
        )
    })
}

/// Resolve the configured model reference to files on disk.
pub fn resolve_model(config: &Config) -> Result<ModelSource> {
    source::resolve(
        &config.model.path,
        config.model.hf_cache.as_deref(),
        config.model.offline,
    )
    .with_context(|| format!("resolving model `{}`", config.model.path))
}

/// Size Candle's CPU thread pool once, before any model work (Candle and gemm both read it).
pub fn init_threads(config: &Config) {
    if config.model.threads > 0 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", config.model.threads.to_string());
    }
    // Candle computes on rayon's global pool; its threads run below the I/O threads. Fails
    // harmlessly when the pool already exists (a second engine in one process).
    let nice = config.model.nice;
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(move |_| crate::engine::priority::lower_current_thread(nice))
        .build_global();
}

/// `model.chat_template`, compiled, when set: the file's or the inline template.
fn template_override(config: &Config, tok: &Tokenizer) -> Result<Option<ChatTemplate>> {
    let Some(value) = &config.model.chat_template else {
        return Ok(None);
    };
    let source = if crate::config::ModelSettings::is_inline_template(value) {
        value.clone()
    } else {
        std::fs::read_to_string(value)
            .with_context(|| format!("model.chat_template: reading `{value}`"))?
    };
    let template = ChatTemplate::new(&source, tok.bos_token(), tok.eos_token())
        .context("model.chat_template")?;
    tracing::info!("using the chat template from model.chat_template");
    Ok(Some(template))
}

/// Load tokenizer and chat template only (no weights), `model.chat_template` applied.
pub fn load_tokenizer(config: &Config) -> Result<(Tokenizer, ChatTemplate)> {
    let (tok, tpl) = load_model_tokenizer(&resolve_model(config)?)?;
    let tpl = template_override(config, &tok)?.unwrap_or(tpl);
    Ok((tok, tpl))
}

fn load_model_tokenizer(source: &ModelSource) -> Result<(Tokenizer, ChatTemplate)> {
    match source {
        ModelSource::Gguf(path) => {
            let header = loader::read_gguf_header(path)?;
            let tok = Tokenizer::from_gguf(&header)?;
            let tpl = ChatTemplate::from_gguf(&header, tok.bos_token(), tok.eos_token())?;
            Ok((tok, tpl))
        }
        ModelSource::SafetensorsDir(dir) => {
            let tok = Tokenizer::from_hf_dir(dir)?;
            let tpl = ChatTemplate::from_hf_dir(dir, tok.bos_token(), tok.eos_token())?;
            Ok((tok, tpl))
        }
    }
}

/// Load the configured model.
pub fn load_engine(config: &Config) -> Result<Engine> {
    init_threads(config);
    let source = resolve_model(config)?;
    let opts = LoadOptions {
        exact: config.model.exact,
        device: config.model.device,
    };
    let mut engine = Engine::load(&source, &opts)
        .with_context(|| format!("loading `{}`", config.model.path))?
        .with_kv_type(config.model.kv_cache)
        .context("model.kv_cache")?;
    if let Some(template) = template_override(config, engine.tokenizer())? {
        engine = engine.with_template(template);
    }
    Ok(engine.with_prefill_chunk(config.generation.prefill_chunk))
}

/// `hearth generate`: stream text to `out` as tokens are sampled, or print one JSON object.
pub fn generate(config: &Config, opts: GenerateOptions, out: &mut dyn Write) -> Result<()> {
    if opts.messages.is_none() && opts.prompt.is_none() {
        bail!("give --prompt TEXT or --messages FILE");
    }
    let max_tokens = opts
        .max_tokens
        .unwrap_or(config.generation.default_max_tokens);
    if max_tokens == 0 || max_tokens > config.generation.max_tokens_limit {
        bail!(
            "--max-tokens must be between 1 and {} (generation.max_tokens_limit)",
            config.generation.max_tokens_limit
        );
    }
    let engine = load_engine(config)?;
    let prompt_ids = match (&opts.messages, &opts.prompt) {
        (Some(messages), _) => engine.chat_prompt_ids(messages)?,
        (None, Some(p)) if opts.raw => engine.text_prompt_ids(p)?,
        (None, Some(p)) => engine.chat_prompt_ids(&[ChatMessage {
            role: "user".into(),
            content: p.clone(),
            ..Default::default()
        }])?,
        (None, None) => bail!("give --prompt TEXT or --messages FILE"),
    };
    let sampling = SamplingParams {
        temperature: opts.temperature,
        top_k: opts.top_k,
        top_p: opts.top_p,
        min_p: opts.min_p,
        repetition_penalty: opts.repeat_penalty,
        seed: opts.seed,
        ..SamplingParams::default()
    };
    let request = GenerateRequest {
        prompt_ids,
        sampling,
        max_tokens,
        stop: opts.stop.clone(),
        logprobs: 0,
        format: Default::default(),
    };
    let mut write_error = None;
    let result = engine.generate(request, |text| {
        if opts.json {
            return true;
        }
        match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                // A closed pipe (e.g. `| head`) ends generation instead of failing it.
                write_error = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_error {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
        return Ok(());
    }
    if opts.json {
        let obj = serde_json::json!({
            "prompt_ids": result.prompt_ids,
            "ids": result.ids,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "prompt_tokens_per_s": result.prompt_tokens_per_s(),
            "decode_tokens_per_s": result.decode_tokens_per_s(),
        });
        writeln!(out, "{obj}")?;
    } else {
        writeln!(out)?;
    }
    Ok(())
}

/// `hearth tokenize`: ids as a JSON array.
pub fn tokenize(config: &Config, text: &str, special: bool, bos: bool) -> Result<String> {
    let (tok, _) = load_tokenizer(config)?;
    let ids = tok.encode(text, bos && tok.add_bos_by_default(), special)?;
    Ok(serde_json::to_string(&ids)?)
}

/// `hearth template`: the rendered prompt.
pub fn template(config: &Config, messages: &[ChatMessage]) -> Result<String> {
    let (_, tpl) = load_tokenizer(config)?;
    Ok(tpl.render(messages, true)?)
}

/// `hearth inspect`: a human-readable summary, in JSON.
pub fn inspect(config: &Config) -> Result<String> {
    let source = resolve_model(config)?;
    let (tok, tpl) = load_tokenizer(config)?;
    let (model_config, info) = match &source {
        ModelSource::Gguf(path) => {
            let header = loader::read_gguf_header(path)?;
            let cfg = loader::gguf_config(&header, path)?;
            let mut types: std::collections::BTreeMap<String, usize> = Default::default();
            let mut params = 0;
            for t in header.tensor_infos.values() {
                *types.entry(format!("{:?}", t.ggml_dtype)).or_default() += 1;
                params += t.shape.elem_count();
            }
            let name = header
                .metadata
                .get("general.name")
                .and_then(|v| v.to_string().ok())
                .cloned();
            (
                cfg,
                serde_json::json!({"format": "gguf", "name": name, "tensor_types": types, "parameters": params}),
            )
        }
        ModelSource::SafetensorsDir(dir) => {
            let cfg = loader::hf_config(dir)?;
            (cfg, serde_json::json!({"format": "safetensors"}))
        }
    };
    let special: Vec<_> = tok
        .special_tokens()
        .into_iter()
        .map(|(id, text)| serde_json::json!({"id": id, "text": text}))
        .collect();
    let obj = serde_json::json!({
        "source": format!("{source:?}"),
        "file": info,
        "architecture": model_config.architecture,
        "config": model_config,
        "tokenizer": {
            "model": tok.model_kind(),
            "vocab_size": tok.vocab_size(),
            "bos": tok.bos_id(),
            "eos": tok.eos_id(),
            "end_of_generation": tok.eog_ids(),
            "add_bos": tok.add_bos_by_default(),
            "special_tokens": special,
        },
        "chat_template": {
            "default": tpl.is_default(),
            "source": tpl.source(),
        },
    });
    Ok(serde_json::to_string_pretty(&obj)?)
}
