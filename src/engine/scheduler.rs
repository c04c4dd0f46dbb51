//! The inference scheduler: one dedicated OS thread owns the [`Engine`] and serves a bounded
//! queue of generation jobs.
//!
//! Several sequences are active at once and all of them progress: every round gives each
//! sequence still reading its prompt one prompt chunk, and every decoding sequence one token —
//! the decoding ones in a single batched forward pass, so the weights are read once per round
//! whatever the number of streams. A full queue refuses new work at once; a job that waited past
//! its deadline is answered with an error; a job whose receiver is gone (the client left) is
//! dropped within one round and its slot and KV memory are freed. Finished sequences leave their
//! KV cache in a bounded LRU so a later prompt that shares the prefix only computes the suffix.
//!
//! Events travel over unbounded tokio channels: sending never blocks the model thread, and the
//! HTTP layer awaits them. This module knows nothing about HTTP.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::generate::{Engine, FinishReason, GenerateRequest, Sequence, Step};
use super::model::SeqCache;

/// Limits of the scheduler (from the `[server]` config section).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Jobs waiting for a slot; one more is refused at once.
    pub queue_capacity: usize,
    /// Sequences generating at the same time.
    pub max_active: usize,
    /// A job that waited longer than this in the queue is answered with an error.
    pub queue_timeout: Duration,
    /// Bytes of finished sequences' KV caches kept for prefix reuse (0 = off).
    pub prefix_cache_bytes: usize,
    /// Nice increment of the model thread (see [`super::priority`]).
    pub nice: i32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 16,
            max_active: 4,
            queue_timeout: Duration::from_secs(60),
            prefix_cache_bytes: 256 << 20,
            nice: 0,
        }
    }
}

/// What the model thread reports about one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The job got a slot: prompt processing begins (the "thinking" indicator).
    Started,
    /// A prompt chunk went through (`processed` of `total` prompt tokens are cached).
    PromptProgress {
        /// Prompt tokens done.
        processed: usize,
        /// Prompt tokens in all.
        total: usize,
    },
    /// A sampled token and the text it made visible (may be empty while held back).
    Token {
        /// Token id.
        id: u32,
        /// Newly visible text.
        text: String,
        /// Log-probability of the token.
        logprob: f32,
        /// Top alternatives, when asked for.
        top_logprobs: Vec<(u32, f32)>,
        /// When the model thread sampled it (for delivery-latency measurements).
        sampled_at: Instant,
    },
    /// Text released at the end without a token of its own (held-back text that turned out not
    /// to start a stop string, or bytes that never formed a character).
    Text(String),
    /// The job ended normally. Always the last event of a job that started.
    Done(Summary),
    /// The job failed; the last event.
    Error {
        /// Why.
        kind: JobErrorKind,
        /// A message safe to show the client.
        message: String,
    },
}

/// Classes of job failure, for status codes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobErrorKind {
    /// The request itself is unacceptable (too long, bad parameters).
    InvalidRequest,
    /// It waited in the queue past the deadline.
    QueueTimeout,
    /// The model failed.
    Internal,
}

/// Totals and timings of a finished job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Full visible text.
    pub text: String,
    /// Time spent waiting for a slot.
    pub queued: Duration,
    /// Time to process the prompt.
    pub prompt_time: Duration,
    /// Time from the end of the prompt to the last token.
    pub decode_time: Duration,
}

/// Why a job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is at capacity: try again later.
    #[error("the inference queue is full")]
    QueueFull,
    /// The model thread has stopped.
    #[error("the inference engine is not running")]
    Stopped,
}

/// Counters the metrics endpoint reads.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Jobs waiting for a slot.
    pub queued: AtomicUsize,
    /// Sequences in progress.
    pub active: AtomicUsize,
    /// Jobs refused because the queue was full.
    pub rejected: AtomicU64,
    /// Jobs dropped because their client went away.
    pub cancelled: AtomicU64,
    /// Jobs that timed out in the queue.
    pub timed_out: AtomicU64,
    /// Jobs that reused a cached prefix.
    pub prefix_hits: AtomicU64,
    /// Prompt tokens served from the prefix cache.
    pub prefix_tokens_reused: AtomicU64,
    /// Jobs finished (any reason other than cancellation).
    pub completed: AtomicU64,
}

struct Job {
    request: GenerateRequest,
    events: UnboundedSender<Event>,
    enqueued: Instant,
    /// The submitter's span (with its request id): the model thread logs about the job in it.
    span: tracing::Span,
}

/// Handle to the model thread. Dropping it stops the thread once running jobs end.
pub struct Scheduler {
    engine: Arc<Engine>,
    tx: Option<SyncSender<Job>>,
    stats: Arc<SchedulerStats>,
    thread: Option<JoinHandle<()>>,
    config: SchedulerConfig,
}

impl Scheduler {
    /// Start the model thread. Only this thread runs the model; others may share `engine`
    /// for tokenizing and templating.
    pub fn start(engine: Arc<Engine>, config: SchedulerConfig) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(config.queue_capacity.max(1));
        let stats = Arc::new(SchedulerStats::default());
        let worker = Worker {
            engine: engine.clone(),
            rx,
            stats: stats.clone(),
            config: config.clone(),
            prefix_cache: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("hearth-engine".into())
            .spawn(move || {
                super::priority::lower_current_thread(worker.config.nice);
                worker.run()
            })?;
        Ok(Self {
            engine,
            tx: Some(tx),
            stats,
            thread: Some(thread),
            config,
        })
    }

    /// Queue a job. Refuses at once when the queue is full; never blocks.
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<UnboundedReceiver<Event>, SubmitError> {
        let tx = self.tx.as_ref().ok_or(SubmitError::Stopped)?;
        let (events, rx) = unbounded_channel();
        let job = Job {
            request,
            events,
            enqueued: Instant::now(),
            span: tracing::Span::current(),
        };
        // Count before sending so the worker's decrement can never run first.
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        Err(SubmitError::QueueFull)
                    }
                    TrySendError::Disconnected(_) => Err(SubmitError::Stopped),
                }
            }
        }
    }

    /// Refuse (and count the refusal) when the queue is full right now, so a caller can spare
    /// the work (tokenizing a long prompt) for a job [`Scheduler::submit`] would refuse anyway.
    /// A hint only: the queue may fill or drain in between, and `submit` decides.
    pub fn check_room(&self) -> Result<(), SubmitError> {
        if self.stats.queued.load(Ordering::SeqCst) >= self.config.queue_capacity.max(1) {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::QueueFull);
        }
        Ok(())
    }

    /// The engine (for tokenizing and templating off the model thread).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<SchedulerStats> {
        &self.stats
    }

    /// The limits it runs with.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Whether the model thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // Closing the channel lets the worker finish what it has and exit.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Active {
    seq: Sequence,
    events: UnboundedSender<Event>,
    queued: Duration,
    span: tracing::Span,
}

/// Send one step's outcome to its client. `Some(report)` when the sequence is over: `report`
/// says whether it ended normally (a `Done` summary is due) or failed / was abandoned.
fn deliver(
    stats: &SchedulerStats,
    events: &UnboundedSender<Event>,
    result: Result<Step, super::generate::EngineError>,
) -> Option<bool> {
    match result {
        Ok(Step::Prompt { processed, total }) => {
            let _ = events.send(Event::PromptProgress { processed, total });
            None
        }
        Ok(Step::Token {
            id,
            text,
            logprob,
            top_logprobs,
            finished: done,
            sampled_at,
        }) => {
            let sent = events.send(Event::Token {
                id,
                text,
                logprob,
                top_logprobs,
                sampled_at,
            });
            if sent.is_err() {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                Some(false)
            } else {
                done.map(|_| true)
            }
        }
        Ok(Step::Finished { text, .. }) => {
            if !text.is_empty() {
                let _ = events.send(Event::Text(text));
            }
            Some(true)
        }
        Err(e) => {
            tracing::error!(error = %e, "generation failed");
            let _ = events.send(Event::Error {
                kind: JobErrorKind::Internal,
                message: "the model failed while generating".into(),
            });
            Some(false)
        }
    }
}

struct Worker {
    engine: Arc<Engine>,
    rx: Receiver<Job>,
    stats: Arc<SchedulerStats>,
    config: SchedulerConfig,
    /// Finished sequences' caches, most recently used last.
    prefix_cache: Vec<SeqCache>,
}

impl Worker {
    fn run(mut self) {
        let mut active: Vec<Active> = Vec::new();
        let mut open = true;
        loop {
            // Admit waiting jobs into free slots; sleep on the queue only when idle.
            while open && active.len() < self.config.max_active.max(1) {
                let job = if active.is_empty() {
                    match self.rx.recv() {
                        Ok(job) => job,
                        Err(_) => {
                            open = false;
                            break;
                        }
                    }
                } else {
                    match self.rx.try_recv() {
                        Ok(job) => job,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                };
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                if let Some(a) = self.admit(job) {
                    active.push(a);
                }
            }
            if active.is_empty() {
                if open {
                    continue;
                }
                return;
            }
            self.stats.active.store(active.len(), Ordering::Relaxed);

            // Drop sequences whose client went away before spending a step on them.
            let before = active.len();
            active.retain(|a| !a.events.is_closed());
            let gone = before - active.len();
            if gone > 0 {
                self.stats
                    .cancelled
                    .fetch_add(gone as u64, Ordering::Relaxed);
            }
            if active.is_empty() {
                self.stats.active.store(0, Ordering::Relaxed);
                continue;
            }

            // Each result is delivered as soon as it exists, so a token reaches its client
            // before the next sequence of the round is sampled.
            let senders: Vec<UnboundedSender<Event>> =
                active.iter().map(|a| a.events.clone()).collect();
            let spans: Vec<tracing::Span> = active.iter().map(|a| a.span.clone()).collect();
            let mut finished = Vec::new();
            {
                let stats = &self.stats;
                let mut seqs: Vec<&mut Sequence> = active.iter_mut().map(|a| &mut a.seq).collect();
                self.engine.step_many_each(&mut seqs, |i, result| {
                    let _entered = spans[i].enter();
                    if let Some(report) = deliver(stats, &senders[i], result) {
                        finished.push((i, report));
                    }
                });
            }
            // Remove from the back so indices stay valid; publish the new slot count before
            // the final events, so a client that sees `Done` also sees its slot free.
            finished.sort_by_key(|f| std::cmp::Reverse(f.0));
            let mut reports = Vec::new();
            for (i, report) in finished {
                let a = active.swap_remove(i);
                let (generation, cache) = a.seq.into_generation_and_cache();
                self.keep_prefix(cache);
                if report {
                    self.stats.completed.fetch_add(1, Ordering::Relaxed);
                    let summary = Summary {
                        finish_reason: generation.finish_reason,
                        prompt_tokens: generation.prompt_ids.len(),
                        cached_prompt_tokens: generation.reused_prompt_tokens,
                        completion_tokens: generation.ids.len(),
                        text: generation.text,
                        queued: a.queued,
                        prompt_time: generation.prompt_time,
                        decode_time: generation.decode_time,
                    };
                    reports.push((a.events, summary));
                }
            }
            self.stats.active.store(active.len(), Ordering::Relaxed);
            for (events, summary) in reports {
                let _ = events.send(Event::Done(summary));
            }
        }
    }

    fn admit(&mut self, job: Job) -> Option<Active> {
        let span = job.span.clone();
        let _entered = span.enter();
        if job.events.is_closed() {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let waited = job.enqueued.elapsed();
        if waited > self.config.queue_timeout {
            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            let _ = job.events.send(Event::Error {
                kind: JobErrorKind::QueueTimeout,
                message: format!(
                    "the request waited {}s in the queue and timed out",
                    waited.as_secs()
                ),
            });
            return None;
        }
        let cache = match self.take_prefix(&job.request.prompt_ids) {
            Some(c) => c,
            None => match self.engine.model().new_cache() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot allocate a KV cache");
                    let _ = job.events.send(Event::Error {
                        kind: JobErrorKind::Internal,
                        message: "the model could not allocate memory for this request".into(),
                    });
                    return None;
                }
            },
        };
        match self.engine.start_with_cache(job.request, cache) {
            Ok(seq) => {
                let reused = seq.reused_tokens();
                if reused > 0 {
                    self.stats.prefix_hits.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .prefix_tokens_reused
                        .fetch_add(reused as u64, Ordering::Relaxed);
                }
                let _ = job.events.send(Event::Started);
                Some(Active {
                    seq,
                    events: job.events,
                    queued: waited,
                    span: job.span,
                })
            }
            Err(e) => {
                let kind = match e {
                    super::generate::EngineError::Runtime(_) => JobErrorKind::Internal,
                    _ => JobErrorKind::InvalidRequest,
                };
                let _ = job.events.send(Event::Error {
                    kind,
                    message: e.to_string(),
                });
                None
            }
        }
    }

    /// Take the kept cache sharing the longest prefix with `prompt`, if any shares one.
    fn take_prefix(&mut self, prompt: &[u32]) -> Option<SeqCache> {
        let (best, shared) = self
            .prefix_cache
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.common_prefix(prompt)))
            .max_by_key(|(_, n)| *n)?;
        if shared == 0 {
            return None;
        }
        Some(self.prefix_cache.remove(best))
    }

    /// Keep a finished sequence's cache, evicting the least recently used beyond the budget.
    fn keep_prefix(&mut self, cache: SeqCache) {
        if self.config.prefix_cache_bytes == 0 || cache.is_empty() {
            return;
        }
        self.prefix_cache.push(cache);
        let mut total: usize = self.prefix_cache.iter().map(SeqCache::size_in_bytes).sum();
        while total > self.config.prefix_cache_bytes && !self.prefix_cache.is_empty() {
            let evicted = self.prefix_cache.remove(0);
            total -= evicted.size_in_bytes();
        }
    }
}
