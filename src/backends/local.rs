//! The local backend: the model this process loaded, through the scheduler's bounded queue.
//! Tokenizes and templates the prompt (off the async threads), checks what only the local model
//! can check (vocabulary, context length), queues the job and turns the scheduler's events into
//! backend [`Event`]s, with log-probabilities as text.

use std::sync::Arc;

use futures::stream;

use super::{BackendError, BackendRequest, ErrorKind, Event, EventStream, Prompt, TokenLogprobs};
use crate::engine::generate::Engine;
use crate::engine::scheduler::{self, JobErrorKind, Scheduler, SubmitError};
use crate::engine::tools::ToolSet;

/// The loaded model behind its scheduler.
#[derive(Clone)]
pub struct LocalBackend {
    scheduler: Arc<Scheduler>,
}

impl LocalBackend {
    /// Serve through `scheduler`.
    pub fn new(scheduler: Arc<Scheduler>) -> Self {
        Self { scheduler }
    }

    fn engine(&self) -> &Arc<Engine> {
        self.scheduler.engine()
    }

    /// The prompt's token ids (the parameter to blame when it is unusable).
    async fn prompt_ids(
        &self,
        prompt: &Prompt,
        tools: Option<Arc<ToolSet>>,
        add_generation_prompt: bool,
    ) -> Result<(Vec<u32>, &'static str), BackendError> {
        let engine = self.engine().clone();
        let vocab = engine.model().config().vocab_size as u32;
        let (ids, param) = match prompt {
            Prompt::Chat(messages) => {
                let messages = messages.clone();
                let ids = tokio::task::spawn_blocking(move || {
                    engine.chat_prompt_ids_with(&messages, tools.as_deref(), add_generation_prompt)
                })
                .await
                .map_err(|e| BackendError::new(ErrorKind::Internal, e.to_string()))?
                .map_err(|e| BackendError::invalid("messages", e.to_string()))?;
                (ids, "messages")
            }
            Prompt::Text(text) => {
                let text = text.clone();
                let ids = tokio::task::spawn_blocking(move || engine.text_prompt_ids(&text))
                    .await
                    .map_err(|e| BackendError::new(ErrorKind::Internal, e.to_string()))?
                    .map_err(|e| BackendError::invalid("prompt", e.to_string()))?;
                (ids, "prompt")
            }
            Prompt::Tokens(ids) => {
                if ids.iter().any(|&t| t >= vocab) {
                    return Err(BackendError::invalid(
                        "prompt",
                        "a token id is outside the vocabulary",
                    ));
                }
                (ids.clone(), "prompt")
            }
        };
        let ctx = self.engine().model().config().context_length;
        if ids.is_empty() {
            return Err(BackendError::invalid(param, "the prompt is empty"));
        }
        if ids.len() >= ctx {
            return Err(BackendError::invalid(
                param,
                format!(
                    "the prompt has {} tokens but the model's context is {ctx}",
                    ids.len()
                ),
            ));
        }
        Ok((ids, param))
    }

    /// Queue the generation. Returns its events and the prompt's length in tokens.
    pub async fn start(&self, req: &BackendRequest) -> Result<(EventStream, usize), BackendError> {
        // Admission first: a full queue refuses at once, before the prompt is tokenized.
        self.scheduler.check_room().map_err(submit_error)?;
        let (ids, _) = self
            .prompt_ids(
                &req.prompt,
                req.params.tools.clone(),
                !req.params.no_generation_prompt,
            )
            .await?;
        let engine = self.engine().clone();
        req.params
            .sampling
            .validate(engine.model().config().vocab_size)
            .map_err(|e| match e {
                crate::engine::sampler::SamplingError::InvalidParam { param, message } => {
                    BackendError::invalid(param, message)
                }
            })?;
        let prompt_tokens = ids.len();
        let rx = self
            .scheduler
            .submit(req.params.with_prompt(ids))
            .map_err(submit_error)?;
        let want_logprobs = req.logprobs;
        // The engine rides in the state, so the token loop clones nothing.
        let events = stream::unfold((rx, engine), move |(mut rx, engine)| async move {
            loop {
                let ev = rx.recv().await?;
                let mapped = match ev {
                    scheduler::Event::Started => Event::Started,
                    scheduler::Event::PromptProgress { .. } => continue,
                    scheduler::Event::Token {
                        id,
                        text,
                        logprob,
                        top_logprobs,
                        sampled_at,
                    } => {
                        let tokenizer = engine.tokenizer();
                        let logprobs = (want_logprobs && !tokenizer.is_eog(id)).then(|| {
                            let piece = |t: u32| tokenizer.token_piece(t).unwrap_or_default();
                            TokenLogprobs {
                                token: piece(id),
                                logprob,
                                top: top_logprobs.iter().map(|&(t, l)| (piece(t), l)).collect(),
                            }
                        });
                        Event::Token {
                            text,
                            logprobs,
                            sampled_at,
                        }
                    }
                    scheduler::Event::Text(text) => Event::Text(text),
                    scheduler::Event::Done(summary) => Event::Done(summary.into()),
                    scheduler::Event::Error { kind, message } => {
                        let kind = match kind {
                            JobErrorKind::InvalidRequest => ErrorKind::InvalidRequest,
                            JobErrorKind::QueueTimeout => ErrorKind::QueueTimeout,
                            JobErrorKind::Internal => ErrorKind::Internal,
                        };
                        Event::Error(BackendError::new(kind, message))
                    }
                };
                return Some((mapped, (rx, engine)));
            }
        });
        Ok((Box::pin(events), prompt_tokens))
    }
}

fn submit_error(e: SubmitError) -> BackendError {
    match e {
        SubmitError::QueueFull => BackendError::new(
            ErrorKind::Overloaded,
            "The server is busy: the inference queue is full. Retry shortly.",
        ),
        SubmitError::Stopped => {
            BackendError::new(ErrorKind::Internal, "the inference engine is not running")
        }
    }
}
