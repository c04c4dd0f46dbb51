//! The scheduler on the real model: bounded queue, interleaving, batching, cancellation,
//! queue deadlines and prefix reuse.

use crate::common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hearth::engine::generate::{FinishReason, GenerateRequest};
use hearth::engine::sampler::SamplingParams;
use hearth::engine::scheduler::{
    Event, JobErrorKind, Scheduler, SchedulerConfig, SubmitError, Summary,
};
use hearth::engine::template::ChatMessage;
use tokio::sync::mpsc::UnboundedReceiver;

fn prompt(engine: &hearth::engine::generate::Engine, text: &str) -> Vec<u32> {
    engine
        .chat_prompt_ids(&[ChatMessage {
            role: "user".into(),
            content: text.into(),
            ..Default::default()
        }])
        .expect("prompt")
}

fn greedy(prompt_ids: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    let mut sampling = SamplingParams::greedy();
    // Keep generations at their full length so timing-sensitive tests are deterministic.
    sampling.logit_bias = vec![(2, -100.0), (0, -100.0)];
    GenerateRequest {
        prompt_ids,
        sampling,
        max_tokens,
        stop: Vec::new(),
        logprobs: 0,
        format: Default::default(),
    }
}

/// Collect events until the job ends; returns (token ids, summary or error kind).
fn drain(rx: &mut UnboundedReceiver<Event>) -> (Vec<u32>, Result<Summary, JobErrorKind>) {
    let mut ids = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Token { id, .. } => ids.push(id),
            Event::Done(s) => return (ids, Ok(s)),
            Event::Error { kind, .. } => return (ids, Err(kind)),
            _ => {}
        }
    }
    panic!("channel closed without a final event");
}

fn config(queue: usize, active: usize) -> SchedulerConfig {
    SchedulerConfig {
        queue_capacity: queue,
        max_active: active,
        queue_timeout: Duration::from_secs(120),
        prefix_cache_bytes: 64 << 20,
        ..SchedulerConfig::default()
    }
}

#[test]
fn a_full_queue_refuses_at_once_and_admitted_jobs_all_finish() {
    let (engine, _lock) = common::shared_fast_engine();
    let sched = Scheduler::start(engine.clone(), config(1, 1)).expect("start");
    let p = prompt(&engine, "Tell me a story.");
    let mut a = sched
        .submit(greedy(p.clone(), 40))
        .expect("first is admitted");
    // Wait until A holds the only slot, so the queue itself is empty.
    assert_eq!(a.blocking_recv(), Some(Event::Started));
    let mut b = sched
        .submit(greedy(p.clone(), 4))
        .expect("second waits in the queue");
    let t = Instant::now();
    let refused = sched.submit(greedy(p.clone(), 4));
    assert_eq!(refused.err(), Some(SubmitError::QueueFull));
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "refusal took {:?}",
        t.elapsed()
    );
    assert_eq!(sched.stats().rejected.load(Ordering::Relaxed), 1);
    // The cheap check before tokenizing says the same, and counts its refusal too.
    assert_eq!(sched.check_room().err(), Some(SubmitError::QueueFull));
    assert_eq!(sched.stats().rejected.load(Ordering::Relaxed), 2);
    let (ids_a, sa) = drain(&mut a);
    assert_eq!(ids_a.len(), 40);
    assert_eq!(sa.expect("a done").finish_reason, FinishReason::Length);
    let (ids_b, sb) = drain(&mut b);
    assert_eq!(ids_b.len(), 4);
    assert!(sb.is_ok());
    // Recovered: a new job is accepted and runs.
    assert_eq!(sched.check_room(), Ok(()));
    let mut c = sched.submit(greedy(p, 2)).expect("accepted again");
    assert!(drain(&mut c).1.is_ok());
}

#[test]
fn concurrent_streams_all_progress_before_any_finishes() {
    let (engine, _lock) = common::shared_fast_engine();
    let sched = Scheduler::start(engine.clone(), config(8, 4)).expect("start");
    let mut rxs: Vec<_> = [
        "Hi",
        "Tell me about cats.",
        "What is rust?",
        "Say something.",
    ]
    .iter()
    .map(|t| {
        sched
            .submit(greedy(prompt(&engine, t), 24))
            .expect("submit")
    })
    .collect();
    // Read events round-robin: every stream must deliver a token before any stream is done.
    let mut first_token = vec![false; rxs.len()];
    let mut done = vec![false; rxs.len()];
    while done.iter().any(|d| !d) {
        for (i, rx) in rxs.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            if let Ok(ev) = rx.try_recv() {
                match ev {
                    Event::Token { .. } => first_token[i] = true,
                    Event::Done(_) => {
                        assert!(
                            first_token.iter().all(|f| *f),
                            "stream {i} finished before others produced a token: {first_token:?}"
                        );
                        done[i] = true;
                    }
                    Event::Error { message, .. } => panic!("stream {i} failed: {message}"),
                    _ => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn batched_streams_give_the_same_greedy_text_as_one_at_a_time() {
    let (engine, _lock) = common::shared_exact_engine();
    let prompts: Vec<_> = [
        "What is the capital of France?",
        "Name a colour.",
        "Count to five.",
    ]
    .iter()
    .map(|t| prompt(&engine, t))
    .collect();
    let alone: Vec<Vec<u32>> = {
        let sched = Scheduler::start(engine.clone(), config(8, 1)).expect("start");
        prompts
            .iter()
            .map(|p| drain(&mut sched.submit(greedy(p.clone(), 12)).expect("submit")).0)
            .collect()
    };
    let sched = Scheduler::start(engine.clone(), config(8, 3)).expect("start");
    let mut rxs: Vec<_> = prompts
        .iter()
        .map(|p| sched.submit(greedy(p.clone(), 12)).expect("submit"))
        .collect();
    let together: Vec<Vec<u32>> = rxs.iter_mut().map(|rx| drain(rx).0).collect();
    assert_eq!(alone, together);
}

#[test]
fn a_dropped_receiver_cancels_the_job_and_frees_its_slot() {
    let (engine, _lock) = common::shared_fast_engine();
    let sched = Scheduler::start(engine.clone(), config(4, 1)).expect("start");
    let p = prompt(&engine, "Write a very long essay about the ocean.");
    let mut a = sched.submit(greedy(p.clone(), 2000)).expect("submit");
    // Wait for a couple of tokens, then hang up.
    let mut tokens = 0;
    while tokens < 2 {
        if let Some(Event::Token { .. }) = a.blocking_recv() {
            tokens += 1;
        }
    }
    drop(a);
    let t = Instant::now();
    let mut b = sched.submit(greedy(p, 3)).expect("submit");
    let (ids, s) = drain(&mut b);
    assert!(s.is_ok());
    assert_eq!(ids.len(), 3);
    // The 2000-token job did not run to the end first (that would take tens of seconds).
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "next job waited {:?}",
        t.elapsed()
    );
    assert_eq!(sched.stats().cancelled.load(Ordering::Relaxed), 1);
    assert_eq!(sched.stats().active.load(Ordering::Relaxed), 0);
}

#[test]
fn a_job_past_its_queue_deadline_gets_a_timeout_error() {
    let (engine, _lock) = common::shared_fast_engine();
    let mut cfg = config(4, 1);
    cfg.queue_timeout = Duration::from_millis(1);
    let sched = Scheduler::start(engine.clone(), cfg).expect("start");
    let p = prompt(&engine, "Hello");
    let mut a = sched.submit(greedy(p.clone(), 20)).expect("submit");
    let mut b = sched.submit(greedy(p, 2)).expect("submit");
    // A may itself have waited past 1 ms before the idle thread picked it up; either way B,
    // which waits for A's whole generation, must time out.
    let _ = drain(&mut a);
    let (_, sb) = drain(&mut b);
    assert_eq!(sb.err(), Some(JobErrorKind::QueueTimeout));
    assert!(sched.stats().timed_out.load(Ordering::Relaxed) >= 1);
}

#[test]
fn a_second_turn_reuses_the_first_turns_cache() {
    let (engine, _lock) = common::shared_fast_engine();
    let sched = Scheduler::start(engine.clone(), config(4, 1)).expect("start");
    let first = prompt(&engine, "My name is Ana and I live in Lisbon.");
    let (ids, s1) = drain(&mut sched.submit(greedy(first.clone(), 8)).expect("submit"));
    let s1 = s1.expect("done");
    assert_eq!(s1.cached_prompt_tokens, 0);
    // Second turn: the first prompt, the answer, and a new user message.
    let mut second = first.clone();
    second.extend(&ids);
    second.extend(
        engine
            .text_prompt_ids(
                "<|im_end|>\n<|im_start|>user\nWhere do I live?<|im_end|>\n<|im_start|>assistant\n",
            )
            .expect("ids"),
    );
    let (_, s2) = drain(&mut sched.submit(greedy(second.clone(), 4)).expect("submit"));
    let s2 = s2.expect("done");
    assert!(
        s2.cached_prompt_tokens >= first.len(),
        "reused {} of {} shared tokens",
        s2.cached_prompt_tokens,
        first.len()
    );
    assert_eq!(sched.stats().prefix_hits.load(Ordering::Relaxed), 1);
}

#[test]
fn invalid_requests_are_answered_with_an_error_event() {
    let (engine, _lock) = common::shared_fast_engine();
    let sched = Scheduler::start(engine.clone(), config(4, 2)).expect("start");
    let too_long = vec![504u32; engine.model().config().context_length + 1];
    let (_, r) = drain(&mut sched.submit(greedy(too_long, 4)).expect("submit"));
    assert_eq!(r.err(), Some(JobErrorKind::InvalidRequest));
    let mut bad = greedy(prompt(&engine, "Hi"), 4);
    bad.sampling.temperature = -1.0;
    let (_, r) = drain(&mut sched.submit(bad).expect("submit"));
    assert_eq!(r.err(), Some(JobErrorKind::InvalidRequest));
    // The thread is still healthy.
    let (_, r) = drain(
        &mut sched
            .submit(greedy(prompt(&engine, "Hi"), 2))
            .expect("submit"),
    );
    assert!(r.is_ok());
    assert!(sched.is_running());
}
