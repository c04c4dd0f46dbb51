//! The completion handlers: validate, start through the generation service
//! ([`crate::chat::ChatService`]), then answer with the whole body or hand the run to
//! [`super::sse`].

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::sse::{stream_response, StreamMeta};
use super::validate::{chat_messages, chat_plan, plan, system_fingerprint};
use super::wire::{
    finish_str, AssistantMessage, ChatChoice, ChatLogprobs, Completion, TextChoice, TextLogprobs,
    UsageBody, WireToolCall,
};
use super::{now_secs, ChatRequest, CompletionRequest, PromptSpec};
use crate::api::error::ApiError;
use crate::api::headers::{add_run_headers, add_warnings};
use crate::api::AppState;
use crate::backends::Summary;
use crate::backends::{Prompt, TokenLogprobs};
use crate::chat::{Caller, Output, Run};
use crate::engine::generate::OutputFormat;

/// One finished choice.
struct Choice {
    summary: Summary,
    tool_calls: Vec<crate::engine::tools::ToolCall>,
    tokens: Vec<TokenLogprobs>,
    stopped_by: Option<&'static str>,
}

/// Every choice of a run, in index order, or the run's error.
async fn collect(mut run: Run) -> Result<(Vec<Choice>, Run), ApiError> {
    let mut choices: Vec<Option<Choice>> = (0..run.choice_count()).map(|_| None).collect();
    let mut tokens: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); run.choice_count()];
    while let Some(out) = run.next().await {
        match out {
            Output::Piece {
                choice,
                logprobs: Some(lp),
                ..
            } => {
                if let Some(t) = tokens.get_mut(choice) {
                    t.push(lp);
                }
            }
            Output::Piece { .. } | Output::Tool { .. } => {}
            Output::Done {
                choice,
                summary,
                tool_calls,
                stopped_by,
            } => {
                if let Some(slot) = choices.get_mut(choice) {
                    *slot = Some(Choice {
                        stopped_by,
                        summary,
                        tool_calls,
                        tokens: std::mem::take(&mut tokens[choice]),
                    });
                }
            }
            Output::Failed(e) => return Err(e.into()),
        }
    }
    let choices = choices
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ApiError::Internal("a choice ended without its last event".into()))?;
    Ok((choices, run))
}

/// A whole completion body with the run's headers.
fn whole<C: serde::Serialize>(
    state: &AppState,
    run: &Run,
    id: String,
    object: &'static str,
    choices: Vec<C>,
) -> Response {
    let model = run.model().to_string();
    let mut response = Json(Completion {
        id,
        object,
        created: now_secs(),
        system_fingerprint: system_fingerprint(state, &model),
        model,
        choices,
        usage: UsageBody::from(run.usage()),
    })
    .into_response();
    add_run_headers(response.headers_mut(), run.rate(), run.cache_hit());
    response
}

/// `POST /v1/chat/completions`.
pub async fn create_chat_completion(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(mut req) = body?;
    req.common.model = state
        .chat
        .resolve_model(&caller, req.common.model.as_deref())
        .await;
    let plan = chat_plan(&state, &req)?;
    let warnings = match &plan.params.format {
        OutputFormat::JsonSchema(f) => f.warnings.clone(),
        _ => Vec::new(),
    };
    let ask = plan.ask(vec![Prompt::Chat(chat_messages(req.messages)?)]);
    let run = state.chat.start(&caller, ask, &|| {}).await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let mut response = answer_chat(&state, &plan, run, id).await?;
    add_warnings(response.headers_mut(), &warnings);
    Ok(response)
}

/// The chat answer, streamed or whole.
async fn answer_chat(
    state: &AppState,
    plan: &super::validate::Plan,
    run: Run,
    id: String,
) -> Result<Response, ApiError> {
    if plan.stream {
        return Ok(stream_response(
            state,
            run,
            StreamMeta {
                id,
                created: now_secs(),
                chat: true,
                include_usage: plan.include_usage,
                continuous_usage: plan.continuous_usage,
                logprobs: plan.logprobs,
                echoes: Vec::new(),
            },
        ));
    }
    let (choices, run) = collect(run).await?;
    let choices = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| ChatChoice {
            index,
            finish_reason: crate::chat::finish_with_calls(
                c.summary.finish_reason,
                c.tool_calls.len(),
            ),
            message: AssistantMessage {
                role: "assistant",
                // With calls and no text, `content` is null, as OpenAI sends it.
                content: (c.tool_calls.is_empty() || !c.summary.text.is_empty())
                    .then_some(c.summary.text),
                refusal: None,
                tool_calls: (!c.tool_calls.is_empty())
                    .then(|| c.tool_calls.iter().map(WireToolCall::from).collect()),
            },
            logprobs: plan.logprobs.then(|| ChatLogprobs::from_tokens(&c.tokens)),
            stopped_by: c.stopped_by,
        })
        .collect::<Vec<_>>();
    Ok(whole(state, &run, id, "chat.completion", choices))
}

/// `POST /v1/completions`.
pub async fn create_completion(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CompletionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(mut req) = body?;
    req.common.model = state
        .chat
        .resolve_model(&caller, req.common.model.as_deref())
        .await;
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
    let echoes = echoes(
        &state,
        &plan.model,
        &prompts,
        req.echo.unwrap_or(false),
        plan.n,
    )?;
    let run = state.chat.start(&caller, plan.ask(prompts), &|| {}).await?;
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    if plan.stream {
        return Ok(stream_response(
            &state,
            run,
            StreamMeta {
                id,
                created: now_secs(),
                chat: false,
                include_usage: plan.include_usage,
                continuous_usage: plan.continuous_usage,
                logprobs: false,
                echoes,
            },
        ));
    }
    let (choices, run) = collect(run).await?;
    let choices = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let echo = echoes.get(index).map_or("", String::as_str);
            TextChoice {
                index,
                logprobs: plan
                    .logprobs
                    .then(|| TextLogprobs::from_tokens(&c.tokens, echo.chars().count())),
                text: format!("{echo}{}", c.summary.text),
                finish_reason: finish_str(c.summary.finish_reason),
                stopped_by: c.stopped_by,
            }
        })
        .collect::<Vec<_>>();
    Ok(whole(&state, &run, id, "text_completion", choices))
}

/// With `echo`, the text each choice starts with: its prompt. Token-id prompts are decoded
/// with the local tokenizer, so only for the local model: a remote model's ids mean nothing
/// to it.
fn echoes(
    state: &AppState,
    model: &str,
    prompts: &[Prompt],
    echo: bool,
    n: usize,
) -> Result<Vec<String>, ApiError> {
    if !echo {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(prompts.len() * n);
    for prompt in prompts {
        let text = match prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Tokens(_) if !state.router.is_local(model) => {
                return Err(ApiError::invalid(
                    "echo",
                    format!(
                        "`echo` with a token-id prompt needs the model's tokenizer; `{model}` is \
                         served remotely: send the prompt as text"
                    ),
                ))
            }
            Prompt::Tokens(ids) => state
                .engine
                .tokenizer()
                .decode(ids, true)
                .unwrap_or_default(),
            Prompt::Chat(_) => String::new(),
        };
        out.extend(std::iter::repeat_n(text, n));
    }
    Ok(out)
}
