//! Running a validated chat or text completion: start its choices through the backend router,
//! then answer with the whole body or hand the generations to [`super::sse`].

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::sse::{stream_response, StreamMeta};
use super::validate::{chat_messages, chat_plan, plan, system_fingerprint};
use super::{now_secs, ChatRequest, CompletionRequest, PromptSpec};
use crate::api::auth::Principal;
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::backends::{BackendRequest, Event, Generation, Prompt, TokenLogprobs};
use crate::engine::generate::FinishReason;
use crate::engine::scheduler::Summary;

/// Start `n` generations (choices) of one request on `model`'s backends, with seeds offset
/// per choice so choices differ. Returns once each has its first token; any failure before
/// then (after failover) is the request's error, and the choices already started are dropped,
/// which cancels them.
pub(crate) async fn start_all(
    state: &AppState,
    model: &str,
    base: &BackendRequest,
    n: usize,
) -> Result<Vec<Generation>, ApiError> {
    let starts = (0..n).map(|i| {
        let mut req = base.clone();
        if let Some(seed) = req.params.sampling.seed {
            req.params.sampling.seed = Some(seed.wrapping_add(i as u64));
        }
        let router = state.router.clone();
        let model = model.to_string();
        async move { router.start(&model, &req, &|| {}).await }
    });
    futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.map_err(ApiError::from))
        .collect()
}

pub(crate) fn finish_str(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

/// One finished choice.
struct Choice {
    text: String,
    summary: Summary,
    tokens: Vec<TokenLogprobs>,
}

async fn collect(mut generation: Generation) -> Result<Choice, ApiError> {
    let mut tokens = Vec::new();
    while let Some(ev) = generation.recv().await {
        match ev {
            Event::Token {
                logprobs: Some(lp), ..
            } => tokens.push(lp),
            Event::Done(summary) => {
                return Ok(Choice {
                    text: summary.text.clone(),
                    summary,
                    tokens,
                })
            }
            Event::Error(e) => return Err(e.into()),
            _ => {}
        }
    }
    Err(ApiError::Internal("the backend dropped a request".into()))
}

pub(crate) fn usage(prompt_tokens: usize, cached: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

pub(super) fn chat_logprobs(tokens: &[TokenLogprobs]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({
                "token": t.token,
                "logprob": t.logprob,
                "bytes": t.token.as_bytes(),
                "top_logprobs": t.top.iter().map(|(s, l)| {
                    json!({"token": s, "logprob": l, "bytes": s.as_bytes()})
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "content": content })
}

/// `POST /v1/chat/completions`.
pub async fn create_chat_completion(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let plan = chat_plan(&state, &req)?;
    let model = plan.model.clone();
    let request = BackendRequest {
        prompt: Prompt::Chat(chat_messages(req.messages)?),
        params: plan.request,
        logprobs: plan.logprobs,
        stream: plan.stream,
    };
    let generations = start_all(&state, &model, &request, plan.n).await?;
    let answered = answering_model(&generations, &model);
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if plan.stream {
        let prompt_tokens = generations.first().map_or(0, |g| g.prompt_tokens);
        return Ok(stream_response(
            state,
            principal,
            prompt_tokens,
            generations,
            StreamMeta {
                id,
                created,
                model: answered,
                chat: true,
                include_usage: plan.include_usage,
                logprobs: plan.logprobs,
            },
        ));
    }
    let results = futures::future::join_all(generations.into_iter().map(collect)).await;
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut cached, mut completion) = (0, 0, 0);
    for (index, r) in results.into_iter().enumerate() {
        let c = r?;
        prompt_tokens = c.summary.prompt_tokens;
        cached = cached.max(c.summary.cached_prompt_tokens);
        completion += c.summary.completion_tokens;
        choices.push(json!({
            "index": index,
            "message": {"role": "assistant", "content": c.text, "refusal": null},
            "logprobs": if plan.logprobs { chat_logprobs(&c.tokens) } else { Value::Null },
            "finish_reason": finish_str(c.summary.finish_reason),
        }));
    }
    principal.record_usage(&state, prompt_tokens, completion);
    Ok(completion_response(
        &state,
        &answered,
        "chat.completion",
        &id,
        created,
        choices,
        usage(prompt_tokens, cached, completion),
    ))
}

/// The model named in a response: the one that answered the first choice (after failover).
fn answering_model(generations: &[Generation], asked: &str) -> String {
    generations
        .first()
        .map_or_else(|| asked.to_string(), |g| g.model.clone())
}

/// The non-streamed body shared by chat and text completions.
fn completion_response(
    state: &AppState,
    model: &str,
    object: &str,
    id: &str,
    created: u64,
    choices: Vec<Value>,
    usage: Value,
) -> Response {
    Json(json!({
        "id": id,
        "object": object,
        "created": created,
        "model": model,
        "system_fingerprint": system_fingerprint(state, model),
        "choices": choices,
        "usage": usage,
    }))
    .into_response()
}

/// `POST /v1/completions`.
pub async fn create_completion(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<CompletionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let top = match req.logprobs {
        None => 0,
        Some(t) if (0..=5).contains(&t) => t as usize,
        Some(t) => {
            return Err(ApiError::invalid(
                "logprobs",
                format!("must be between 0 and 5, got {t}"),
            ))
        }
    };
    let plan = plan(&state, &req.common, top, req.logprobs.is_some())?;
    let model = plan.model.clone();
    let prompts: Vec<Prompt> = match req.prompt {
        PromptSpec::Tokens(ids) => vec![Prompt::Tokens(ids)],
        PromptSpec::Text(t) => vec![Prompt::Text(t)],
        PromptSpec::Texts(ts) => {
            if ts.is_empty() {
                return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
            }
            ts.into_iter().map(Prompt::Text).collect()
        }
    };
    let max_n = state.config.generation.max_n;
    if prompts.len() * plan.n > max_n {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "{} prompts × n = {} asks for {} choices; at most {max_n} (generation.max_n)",
                prompts.len(),
                plan.n,
                prompts.len() * plan.n
            ),
        ));
    }
    let echo = req.echo.unwrap_or(false);
    let mut generations = Vec::new();
    let mut echoes = Vec::new();
    for prompt in prompts {
        let text = match (&prompt, echo) {
            (_, false) => String::new(),
            (Prompt::Text(t), true) => t.clone(),
            // Token ids are the local model's; decode them with its tokenizer.
            (Prompt::Tokens(ids), true) => state
                .engine
                .tokenizer()
                .decode(ids, true)
                .unwrap_or_default(),
            (Prompt::Chat(_), true) => String::new(),
        };
        let request = BackendRequest {
            prompt,
            params: plan.request.clone(),
            logprobs: plan.logprobs,
            stream: plan.stream,
        };
        generations.extend(start_all(&state, &model, &request, plan.n).await?);
        echoes.extend(std::iter::repeat_n(text, plan.n));
    }
    let answered = answering_model(&generations, &model);
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if plan.stream {
        let prompt_tokens = generations
            .iter()
            .step_by(plan.n)
            .map(|g| g.prompt_tokens)
            .sum();
        return Ok(stream_response(
            state,
            principal,
            prompt_tokens,
            generations,
            StreamMeta {
                id,
                created,
                model: answered,
                chat: false,
                include_usage: plan.include_usage,
                logprobs: false,
            },
        ));
    }
    let results = futures::future::join_all(generations.into_iter().map(collect)).await;
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut cached, mut completion) = (0, 0, 0);
    for (index, r) in results.into_iter().enumerate() {
        let c = r?;
        if index % plan.n == 0 {
            prompt_tokens += c.summary.prompt_tokens;
        }
        cached += c.summary.cached_prompt_tokens;
        completion += c.summary.completion_tokens;
        let logprobs = if plan.logprobs {
            let toks = &c.tokens;
            let pieces: Vec<&str> = toks.iter().map(|t| t.token.as_str()).collect();
            // Character offset of each token in the returned text (after any echoed prompt).
            let mut offset = echoes[index].chars().count();
            let text_offset: Vec<usize> = pieces
                .iter()
                .map(|p| {
                    let at = offset;
                    offset += p.chars().count();
                    at
                })
                .collect();
            json!({
                "tokens": pieces,
                "token_logprobs": toks.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": toks.iter().map(|t| t.top.iter().map(|(s, l)| (s.as_str(), *l)).collect::<HashMap<_, _>>()).collect::<Vec<_>>(),
                "text_offset": text_offset,
            })
        } else {
            Value::Null
        };
        choices.push(json!({
            "index": index,
            "text": format!("{}{}", echoes[index], c.text),
            "logprobs": logprobs,
            "finish_reason": finish_str(c.summary.finish_reason),
        }));
    }
    principal.record_usage(&state, prompt_tokens, completion);
    Ok(completion_response(
        &state,
        &answered,
        "text_completion",
        &id,
        created,
        choices,
        usage(prompt_tokens, cached, completion),
    ))
}
