//! The generation loop: one [`Engine`] (model + tokenizer + template) and the per-request
//! [`Sequence`] state machine that feeds the prompt in chunks, samples, detokenizes
//! incrementally and applies every stop rule.
//!
//! A sequence advances one [`Sequence::step`] at a time, so a scheduler can interleave many of
//! them on one model thread; [`Engine::generate`] is the simple drive-to-completion loop used by
//! the CLI and tests.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::chat_prompt;
use super::grammar::mask::{GrammarConstraint, GrammarMasks, JsonSchemaFormat, TokenTrie};
use super::grammar::schema;
use super::loader::{self, LoadError, LoadOptions, ModelInfo};
use super::model::{LlamaModel, SeqCache};
use super::sampler::{Sampler, SamplingError, SamplingParams};
use super::source::ModelSource;
use super::stop::{StopEvent, StopMatcher};
use super::template::{ChatMessage, ChatTemplate, TemplateError};
use super::tokenizer::{IncrementalDecoder, Tokenizer, TokenizerError};

/// Everything that can go wrong between a request and its tokens.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Tokenizing or detokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// The chat template could not be compiled or rendered.
    #[error("chat template: {0}")]
    Template(#[from] TemplateError),
    /// A sampling parameter is out of range.
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// The prompt does not fit in the model's context.
    #[error("the prompt has {prompt_tokens} tokens but the model's context is {context_length}")]
    PromptTooLong {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// The prompt is empty after templating and tokenizing.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A tensor operation failed (a bug or an exhausted device, not bad input).
    #[error("model runtime: {0}")]
    Runtime(#[from] candle_core::Error),
}

/// Why a generation ended (OpenAI's `finish_reason` values, plus cancellation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    #[default]
    Stop,
    /// `max_tokens` or the context length.
    Length,
    /// The caller stopped it.
    Cancelled,
}

/// A model ready to serve: weights, tokenizer and chat template.
pub struct Engine {
    model: LlamaModel,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    info: ModelInfo,
    prefill_chunk: usize,
    /// The vocabulary indexed for constrained decoding, built on first use.
    token_trie: OnceLock<Arc<TokenTrie>>,
    /// The grammar of `json_object` (`{"type": "object"}`), built on first use.
    json_object: OnceLock<Arc<GrammarMasks>>,
}

impl Engine {
    /// Load a model from a resolved source.
    pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<Self, EngineError> {
        match source {
            ModelSource::Gguf(path) => Self::load_gguf(path, opts),
            ModelSource::SafetensorsDir(dir) => Self::load_safetensors(dir, opts),
        }
    }

    fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<Self, EngineError> {
        let header = loader::read_gguf_header(path)?;
        let tokenizer = Tokenizer::from_gguf(&header)?;
        let template =
            ChatTemplate::from_gguf(&header, tokenizer.bos_token(), tokenizer.eos_token())?;
        drop(header);
        let loaded = loader::load_gguf(path, opts)?;
        Ok(Self::assemble(loaded, tokenizer, template))
    }

    fn load_safetensors(dir: &Path, opts: &LoadOptions) -> Result<Self, EngineError> {
        let tokenizer = Tokenizer::from_hf_dir(dir)?;
        let template =
            ChatTemplate::from_hf_dir(dir, tokenizer.bos_token(), tokenizer.eos_token())?;
        let loaded = loader::load_safetensors(dir, opts)?;
        Ok(Self::assemble(loaded, tokenizer, template))
    }

    fn assemble(loaded: loader::Loaded, tokenizer: Tokenizer, template: ChatTemplate) -> Self {
        Self {
            model: loaded.model,
            tokenizer,
            template,
            info: loaded.info,
            prefill_chunk: 256,
            token_trie: OnceLock::new(),
            json_object: OnceLock::new(),
        }
    }

    /// Use `template` instead of the model's own (`model.chat_template`).
    pub fn with_template(mut self, template: ChatTemplate) -> Self {
        self.template = template;
        self
    }

    /// Set how many prompt tokens go through the model per forward pass.
    pub fn with_prefill_chunk(mut self, chunk: usize) -> Self {
        self.prefill_chunk = chunk.max(1);
        self
    }

    /// Store the KV cache of the CPU path as `ty` (see [`LlamaModel::set_kv_type`]).
    pub fn with_kv_type(mut self, ty: crate::engine::model::KvType) -> candle_core::Result<Self> {
        self.model.set_kv_type(ty)?;
        Ok(self)
    }

    /// The forward pass and its configuration.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// What the model file said about itself.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Render chat messages (and the tools a request offers) into the prompt text the model
    /// gets ([`ChatTemplate::render_prompt`]).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        tools: Option<&super::tools::ToolSet>,
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let messages = self.template.prepare_messages(messages, tools);
        Ok(self
            .template
            .render_prompt(&messages, add_generation_prompt, tools)?)
    }

    /// Prompt ids for chat messages: rendered by the template, whose markup becomes special
    /// tokens while control-token text inside message content stays plain text
    /// ([`chat_prompt`]); BOS as the model asks (templates that write BOS themselves are not
    /// doubled).
    pub fn chat_prompt_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.chat_prompt_ids_with(messages, None, true)
    }

    /// [`chat_prompt_ids`](Self::chat_prompt_ids) with the tools a request offers
    /// ([`tools`](super::tools)), and without the assistant's opener unless
    /// `add_generation_prompt` (llama-server's flag).
    pub fn chat_prompt_ids_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&super::tools::ToolSet>,
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, EngineError> {
        chat_prompt::chat_prompt_ids(
            &self.template,
            &self.tokenizer,
            messages,
            tools,
            add_generation_prompt,
        )
        .map_err(|e| match e {
            chat_prompt::ChatPromptError::Template(e) => e.into(),
            chat_prompt::ChatPromptError::Tokenizer(e) => e.into(),
        })
    }

    /// Prompt ids for raw text (a text completion: the caller wrote the whole prompt),
    /// special-token text parsed as special, BOS as the model asks.
    pub fn text_prompt_ids(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let ids = self.tokenizer.encode(text, false, true)?;
        Ok(chat_prompt::with_bos(&self.tokenizer, ids))
    }

    /// Start a sequence for `request` with a fresh cache.
    pub fn start(&self, request: GenerateRequest) -> Result<Sequence, EngineError> {
        let cache = self.model.new_cache()?;
        self.start_with_cache(request, cache)
    }

    /// Start a sequence reusing `cache`: the positions it holds that match the prompt's prefix
    /// are kept; the rest is truncated and recomputed.
    pub fn start_with_cache(
        &self,
        request: GenerateRequest,
        mut cache: SeqCache,
    ) -> Result<Sequence, EngineError> {
        let ctx = self.model.config().context_length;
        let n = request.prompt_ids.len();
        if n == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        if n >= ctx {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: n,
                context_length: ctx,
            });
        }
        request.sampling.validate(self.model.config().vocab_size)?;
        let masks = match &request.format {
            OutputFormat::Text => None,
            OutputFormat::JsonObject => Some(
                self.json_object
                    .get_or_init(|| {
                        let any = serde_json::json!({"type": "object"});
                        let compiled = schema::compile(&any, true, usize::MAX)
                            .expect("the schema of any object compiles");
                        Arc::new(GrammarMasks::new(compiled.grammar))
                    })
                    .clone(),
            ),
            OutputFormat::JsonSchema(f) | OutputFormat::ToolCalls(f) => Some(f.masks.clone()),
        };
        let constraint = masks.map(|m| {
            let trie = self
                .token_trie
                .get_or_init(|| Arc::new(TokenTrie::new(&self.tokenizer)));
            GrammarConstraint::new(m, trie.clone())
        });
        // Keep at least one prompt token to feed, so the first step yields logits.
        let reused = cache.common_prefix(&request.prompt_ids).min(n - 1);
        cache.truncate(reused);
        Ok(Sequence {
            sampler: Sampler::new(request.sampling.clone()),
            decoder: self.tokenizer.decoder(),
            stop: StopMatcher::new(request.stop.clone()),
            history: request.prompt_ids.clone(),
            prompt_len: n,
            reused_tokens: reused,
            max_tokens: request.max_tokens,
            cache,
            logits: None,
            generated: Vec::new(),
            text: String::new(),
            finish: None,
            started: Instant::now(),
            prompt_done_at: None,
            first_token_at: None,
            request_logprobs: request.logprobs,
            constraint,
        })
    }

    /// Advance `seq` by one unit of work: one prompt chunk, or one sampled token.
    pub fn step(&self, seq: &mut Sequence) -> Result<Step, EngineError> {
        if let Some(reason) = seq.finish {
            return Ok(Step::Finished {
                reason,
                text: String::new(),
            });
        }
        if seq.cache.len() < seq.prompt_len {
            let start = seq.cache.len();
            let end = (start + self.prefill_chunk).min(seq.prompt_len);
            let logits = self
                .model
                .forward(&seq.history[start..end], &mut seq.cache, false)?;
            if end == seq.prompt_len {
                seq.logits = Some(logits.to_vec1()?);
                seq.prompt_done_at = Some(Instant::now());
            }
            return Ok(Step::Prompt {
                processed: end,
                total: seq.prompt_len,
            });
        }
        if seq.logits.is_none() {
            let last = *seq.history.last().ok_or(EngineError::EmptyPrompt)?;
            seq.logits = Some(
                self.model
                    .forward(&[last], &mut seq.cache, false)?
                    .to_vec1()?,
            );
        }
        self.sample_step(seq)
    }

    /// Advance several sequences by one unit of work each: a prompt chunk for those still
    /// reading their prompt, one token for the others — whose forward passes run as one batch.
    /// Results come back in the order of `seqs`.
    pub fn step_many(&self, seqs: &mut [&mut Sequence]) -> Vec<Result<Step, EngineError>> {
        let mut results: Vec<Option<Result<Step, EngineError>>> =
            (0..seqs.len()).map(|_| None).collect();
        self.step_many_each(seqs, |i, r| results[i] = Some(r));
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(EngineError::EmptyPrompt)))
            .collect()
    }

    /// [`Engine::step_many`], handing each sequence's result to `on_result(index, result)` as
    /// soon as it exists — a sampled token goes out before the next sequence is sampled.
    /// Every index is reported exactly once.
    pub fn step_many_each(
        &self,
        seqs: &mut [&mut Sequence],
        mut on_result: impl FnMut(usize, Result<Step, EngineError>),
    ) {
        let mut decoding = Vec::new();
        let mut reported = vec![false; seqs.len()];
        for (i, seq) in seqs.iter_mut().enumerate() {
            let needs_decode_forward =
                seq.finish.is_none() && seq.cache.len() >= seq.prompt_len && seq.logits.is_none();
            if needs_decode_forward {
                decoding.push(i);
            } else if seq.finish.is_some() || seq.cache.len() < seq.prompt_len {
                on_result(i, self.step(seq));
                reported[i] = true;
            }
        }
        if !decoding.is_empty() {
            let tokens: Vec<u32> = decoding
                .iter()
                .map(|&i| seqs[i].history.last().copied().unwrap_or(0))
                .collect();
            let mut caches: Vec<&mut SeqCache> = seqs
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| decoding.binary_search(i).is_ok())
                .map(|(_, seq)| &mut seq.cache)
                .collect();
            match self.model.forward_decode_batch(&tokens, &mut caches) {
                Ok(logits) => {
                    drop(caches);
                    for (row, &i) in decoding.iter().enumerate() {
                        match logits.get(row).and_then(|l| l.to_vec1()) {
                            Ok(l) => seqs[i].logits = Some(l),
                            Err(e) => {
                                on_result(i, Err(e.into()));
                                reported[i] = true;
                            }
                        }
                    }
                }
                Err(e) => {
                    drop(caches);
                    let msg = e.to_string();
                    for &i in &decoding {
                        on_result(
                            i,
                            Err(EngineError::Runtime(candle_core::Error::Msg(msg.clone()))),
                        );
                        reported[i] = true;
                    }
                }
            }
        }
        for (i, seq) in seqs.iter_mut().enumerate() {
            if !reported[i] {
                on_result(i, self.sample_step(seq));
            }
        }
    }

    /// Sample the next token from `seq`'s pending logits and apply every stop rule.
    fn sample_step(&self, seq: &mut Sequence) -> Result<Step, EngineError> {
        let Some(mut logits) = seq.logits.take() else {
            return Err(EngineError::Runtime(candle_core::Error::Msg(
                "sample_step without logits".into(),
            )));
        };
        let top = if seq.request_logprobs > 0 {
            super::sampler::top_logprobs(&logits, seq.request_logprobs)
        } else {
            Vec::new()
        };
        if let Some(c) = &mut seq.constraint {
            c.mask(&mut logits);
        }
        let sampled = seq.sampler.sample(&logits, &seq.history);
        let sampled_at = Instant::now();
        let id = sampled.id;
        if let Some(c) = &mut seq.constraint {
            if !c.advance(id) {
                // Only reachable if every allowed token was also banned (e.g. by logit_bias):
                // end rather than emit invalid JSON.
                return Ok(seq.finish_with(FinishReason::Stop, String::new()));
            }
        }
        if seq.first_token_at.is_none() {
            seq.first_token_at = Some(Instant::now());
        }
        seq.history.push(id);
        seq.generated.push(id);
        if self.tokenizer.is_eog(id) {
            let text = seq.stop.finish() + &seq.decoder.flush();
            return Ok(seq.finish_with(FinishReason::Stop, text));
        }
        let piece = seq.decoder.push(id)?;
        let emit = match seq.stop.push(&piece) {
            StopEvent::Continue { emit } => emit,
            StopEvent::Stopped { emit, .. } => {
                return Ok(seq.finish_with(FinishReason::Stop, emit));
            }
        };
        seq.text.push_str(&emit);
        let at_limit = seq.generated.len() >= seq.max_tokens
            || seq.prompt_len + seq.generated.len() >= self.model.config().context_length;
        if at_limit {
            // Release what was held back: undecodable bytes, then a possible stop prefix
            // (which may still complete into a stop with the flushed bytes).
            let tail = seq.decoder.flush();
            let (tail, reason) = match seq.stop.push(&tail) {
                StopEvent::Continue { emit } => (emit + &seq.stop.finish(), FinishReason::Length),
                StopEvent::Stopped { emit, .. } => (emit, FinishReason::Stop),
            };
            seq.text.push_str(&tail);
            seq.finish = Some(reason);
            return Ok(Step::Token {
                id,
                text: emit + &tail,
                logprob: sampled.logprob,
                top_logprobs: top,
                finished: Some(reason),
                sampled_at,
            });
        }
        Ok(Step::Token {
            id,
            text: emit,
            logprob: sampled.logprob,
            top_logprobs: top,
            finished: None,
            sampled_at,
        })
    }

    /// Run `request` to completion, calling `on_text` with each piece of text as soon as it is
    /// safe to show. `on_text` returns false to cancel.
    pub fn generate(
        &self,
        request: GenerateRequest,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, EngineError> {
        let mut seq = self.start(request)?;
        loop {
            match self.step(&mut seq)? {
                Step::Prompt { .. } => {}
                Step::Token { text, finished, .. } => {
                    if !text.is_empty() && !on_text(&text) {
                        seq.finish = Some(FinishReason::Cancelled);
                        break;
                    }
                    if finished.is_some() {
                        break;
                    }
                }
                Step::Finished { text, .. } => {
                    if !text.is_empty() {
                        on_text(&text);
                    }
                    break;
                }
            }
        }
        Ok(seq.into_generation())
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Prompt token ids (see [`Engine::chat_prompt_ids`]).
    pub prompt_ids: Vec<u32>,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Stop strings: generation ends before any of them and they are never emitted.
    pub stop: Vec<String>,
    /// How many top alternatives to report per token (0 = none).
    pub logprobs: usize,
    /// Free text, or output constrained to a JSON object.
    pub format: OutputFormat,
}

/// What shape the output must have.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum OutputFormat {
    /// Any text.
    #[default]
    Text,
    /// One JSON object, then the end of the turn (`response_format: json_object`).
    JsonObject,
    /// JSON matching a schema, then the end of the turn (`response_format: json_schema`).
    JsonSchema(Arc<JsonSchemaFormat>),
    /// Tool calls, each `<tool_call>\n{"name", "arguments"}\n</tool_call>`, then the end of the
    /// turn (`tool_choice` `required` or a named function: [`super::tools`]).
    ToolCalls(Arc<JsonSchemaFormat>),
}

/// The outcome of one [`Engine::step`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A prompt chunk went through the model.
    Prompt {
        /// Prompt tokens in the cache now.
        processed: usize,
        /// Prompt tokens in all.
        total: usize,
    },
    /// A token was sampled; `text` is what may be shown now (possibly empty while held back).
    Token {
        /// The sampled id.
        id: u32,
        /// Newly visible text.
        text: String,
        /// Log-probability of `id` under the sampling distribution.
        logprob: f32,
        /// Top alternatives when asked for.
        top_logprobs: Vec<(u32, f32)>,
        /// Set when this token ended the generation (length limit).
        finished: Option<FinishReason>,
        /// When it was sampled.
        sampled_at: Instant,
    },
    /// The sequence ended; `text` is the last visible text (held-back text that turned out safe).
    Finished {
        /// Why.
        reason: FinishReason,
        /// Final text to show.
        text: String,
    },
}

/// One generation in progress.
pub struct Sequence {
    sampler: Sampler,
    decoder: IncrementalDecoder,
    stop: StopMatcher,
    history: Vec<u32>,
    prompt_len: usize,
    reused_tokens: usize,
    max_tokens: usize,
    cache: SeqCache,
    logits: Option<Vec<f32>>,
    generated: Vec<u32>,
    text: String,
    finish: Option<FinishReason>,
    started: Instant,
    prompt_done_at: Option<Instant>,
    first_token_at: Option<Instant>,
    request_logprobs: usize,
    constraint: Option<GrammarConstraint>,
}

impl Sequence {
    fn finish_with(&mut self, reason: FinishReason, text: String) -> Step {
        self.text.push_str(&text);
        self.finish = Some(reason);
        Step::Finished { reason, text }
    }

    /// Mark the sequence cancelled; the next step reports it finished.
    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
    }

    /// Why it ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Prompt plus generated ids.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// The cache, e.g. to keep it for prefix reuse once the sequence is done.
    pub fn into_cache(self) -> SeqCache {
        self.cache
    }

    /// Prompt tokens whose KV came from a reused cache.
    pub fn reused_tokens(&self) -> usize {
        self.reused_tokens
    }

    /// Summarise the sequence and hand back its cache (for prefix reuse).
    pub fn into_generation_and_cache(mut self) -> (Generation, SeqCache) {
        let placeholder = SeqCache::empty();
        let cache = std::mem::replace(&mut self.cache, placeholder);
        (self.into_generation(), cache)
    }

    /// Summarise a finished (or abandoned) sequence.
    pub fn into_generation(self) -> Generation {
        let prompt_time = self
            .prompt_done_at
            .map(|t| t.duration_since(self.started))
            .unwrap_or_default();
        let decode_time = match (self.prompt_done_at, self.first_token_at) {
            (Some(p), Some(_)) => p.elapsed(),
            _ => Duration::ZERO,
        };
        Generation {
            prompt_ids: self.history[..self.prompt_len].to_vec(),
            ids: self.generated,
            text: self.text,
            finish_reason: self.finish.unwrap_or(FinishReason::Cancelled),
            reused_prompt_tokens: self.reused_tokens,
            prompt_time,
            decode_time,
        }
    }
}

/// A completed generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The prompt ids fed.
    pub prompt_ids: Vec<u32>,
    /// Generated ids, including a final end-of-generation token if one ended it.
    pub ids: Vec<u32>,
    /// Visible text (stop strings and end tokens excluded).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens whose KV came from a reused cache.
    pub reused_prompt_tokens: usize,
    /// Time to process the prompt.
    pub prompt_time: Duration,
    /// Time from prompt done to the end of the last token.
    pub decode_time: Duration,
}

impl Generation {
    /// Prompt tokens per second (tokens actually computed, reused ones excluded).
    pub fn prompt_tokens_per_s(&self) -> f64 {
        let n = self
            .prompt_ids
            .len()
            .saturating_sub(self.reused_prompt_tokens);
        rate(n, self.prompt_time)
    }

    /// Decode tokens per second (the first token comes from the prompt pass, so n-1 steps).
    pub fn decode_tokens_per_s(&self) -> f64 {
        rate(self.ids.len().saturating_sub(1), self.decode_time)
    }
}

/// `n` per second of `t` (0 when either is zero).
pub fn rate(n: usize, t: Duration) -> f64 {
    let s = t.as_secs_f64();
    if n == 0 || s <= 0.0 {
        0.0
    } else {
        n as f64 / s
    }
}
