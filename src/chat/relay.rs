//! Answers followed across replicas (`cache.url`): a conversation answer generating on one
//! replica is mirrored, piece by piece as it is sampled, to a Redis stream, so a client whose
//! connection moved to another replica (a load balancer, a dropped socket) resumes it there
//! from its character offset, and keeps it alive against the detach grace like a local
//! follower.
//!
//! Keys (under the deployment's prefix): `answer:<id>` the stream (`t` text and `at` sample
//! time per piece, `end` the [`Ended`] as JSON last; kept an hour while generating, ten
//! minutes after), `alive:<id>` set by the generating replica every second for five (gone
//! when it dies), `watch:<id>` set by each remote follower every second for three.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::live::{from_offset, Ended, LiveEvent, Subscription};
use crate::cluster::Cluster;

const ALIVE_MS: u64 = 5_000;
const WATCH_MS: u64 = 3_000;
const REFRESH: Duration = Duration::from_secs(1);
const KEEP_RUNNING_MS: u64 = 3_600_000;
const KEEP_FINISHED_MS: u64 = 600_000;
/// How long one read waits for more (then liveness is checked).
const READ_BLOCK_MS: usize = 1_000;

/// The relay (cheap to clone).
#[derive(Clone, Debug)]
pub struct Relay {
    cluster: Arc<Cluster>,
}

enum Entry {
    Text(String, Option<u64>),
    End(Box<Ended>),
}

/// Mirrors one answer generating here. Dropped without [`Publisher::end`] (the process is
/// stopping), the answer stops being alive and its followers elsewhere read it as interrupted.
pub struct Publisher {
    tx: mpsc::UnboundedSender<Entry>,
    relay: Relay,
    id: String,
}

impl Publisher {
    /// A piece of text, sampled at `at` (Unix µs).
    pub fn text(&self, text: &str, at: Option<u64>) {
        let _ = self.tx.send(Entry::Text(text.to_string(), at));
    }

    /// The end (the last entry).
    pub fn end(&self, ended: &Ended) {
        let _ = self.tx.send(Entry::End(Box::new(ended.clone())));
    }

    /// Whether a client on another replica follows the answer now.
    pub async fn watched(&self) -> bool {
        self.relay.watched(&self.id).await
    }
}

struct Keys {
    stream: String,
    alive: String,
    watch: String,
}

impl Relay {
    /// The relay over `cluster`'s Redis.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    fn keys(&self, id: &str) -> Keys {
        Keys {
            stream: self.cluster.key(&format!("answer:{id}")),
            alive: self.cluster.key(&format!("alive:{id}")),
            watch: self.cluster.key(&format!("watch:{id}")),
        }
    }

    /// Start mirroring answer `id`: returns once it is marked alive (so a client that learns
    /// its id can follow it anywhere), or `None` (logged) when Redis cannot be reached.
    pub async fn publish(&self, id: &str) -> Option<Publisher> {
        let keys = self.keys(id);
        let mut conn = self.cluster.conn();
        let marked = set_px(&mut conn, &keys.alive, ALIVE_MS).await;
        if let Err(e) = marked {
            tracing::warn!(error = %e, "the answer cannot be followed from other replicas: Redis is unreachable");
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(conn, keys, rx).in_current_span());
        Some(Publisher {
            tx,
            relay: self.clone(),
            id: id.to_string(),
        })
    }

    async fn watched(&self, id: &str) -> bool {
        let exists: redis::RedisResult<bool> =
            self.cluster.conn().exists(self.keys(id).watch).await;
        exists.unwrap_or(false)
    }

    /// Whether answer `id` is generating on some replica.
    pub async fn alive(&self, id: &str) -> bool {
        let exists: redis::RedisResult<bool> =
            self.cluster.conn().exists(self.keys(id).alive).await;
        exists.unwrap_or(false)
    }

    /// Follow answer `id` from character `offset` as it generates on another replica; `gone`
    /// is how it reads if that replica dies before its end. `None` when it is not generating
    /// anywhere (or Redis cannot be reached): the stored row is then all there is.
    pub async fn follow(&self, id: &str, offset: usize, gone: Ended) -> Option<Subscription> {
        let keys = self.keys(id);
        let block = Duration::from_millis(READ_BLOCK_MS as u64);
        let mut conn = match self.cluster.dedicated(block).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "following an answer through Redis failed");
                return None;
            }
        };
        let alive: bool = conn.exists(&keys.alive).await.ok()?;
        // Followed from now on (before the backlog is read, so the answer is never alone).
        let _: redis::RedisResult<()> = set_px(&mut conn, &keys.watch, WATCH_MS).await;
        let so_far: StreamRangeReply = conn.xrange_all(&keys.stream).await.ok()?;
        let mut follow = Follow {
            conn,
            keys,
            cursor: Cursor::new(offset, gone),
            watched_at: Some(Instant::now()),
        };
        follow.cursor.take(&so_far.ids);
        if !follow.cursor.done && !alive {
            return None;
        }
        let stream = futures::stream::unfold(follow, |mut f| async move {
            let ev = f.next().await?;
            Some((ev, f))
        });
        Some(Subscription::from_stream(Box::pin(stream)))
    }
}

/// Set `key` for `ms` milliseconds.
async fn set_px(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    ms: u64,
) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(key)
        .arg(1)
        .arg("PX")
        .arg(ms)
        .query_async(conn)
        .await
}

/// Write one answer's entries in order, batching what queued up meanwhile; keep it alive.
async fn write(
    mut conn: redis::aio::ConnectionManager,
    keys: Keys,
    mut rx: mpsc::UnboundedReceiver<Entry>,
) {
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            _ = refresh.tick() => {
                let _: redis::RedisResult<()> = set_px(&mut conn, &keys.alive, ALIVE_MS).await;
                continue;
            }
        };
        let Some(first) = first else {
            // Stopped without an end: no longer alive, so followers elsewhere stop waiting.
            let _: redis::RedisResult<()> = conn.del(&keys.alive).await;
            return;
        };
        let mut batch = vec![first];
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        let mut pipe = redis::pipe();
        let mut ended = false;
        for e in batch {
            match e {
                Entry::Text(t, at) => {
                    pipe.cmd("XADD")
                        .arg(&keys.stream)
                        .arg("*")
                        .arg("t")
                        .arg(t)
                        .arg("at")
                        .arg(at.unwrap_or(0))
                        .ignore();
                }
                Entry::End(e) => {
                    let json = serde_json::to_string(&*e).unwrap_or_default();
                    pipe.cmd("XADD")
                        .arg(&keys.stream)
                        .arg("*")
                        .arg("end")
                        .arg(json)
                        .ignore();
                    ended = true;
                }
            }
        }
        let keep = if ended {
            KEEP_FINISHED_MS
        } else {
            KEEP_RUNNING_MS
        };
        pipe.cmd("PEXPIRE").arg(&keys.stream).arg(keep).ignore();
        if ended {
            pipe.cmd("DEL").arg(&keys.alive).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            if !warned {
                tracing::warn!(error = %e, "mirroring an answer to Redis failed");
                warned = true;
            }
        }
        if ended {
            return;
        }
    }
}

/// One client following an answer generating elsewhere.
struct Follow {
    conn: redis::aio::MultiplexedConnection,
    keys: Keys,
    cursor: Cursor,
    watched_at: Option<Instant>,
}

/// Where a follower is in an answer's stream, and the events read but not yet delivered.
struct Cursor {
    last_id: String,
    /// Characters still to skip (the client's offset).
    skip: usize,
    pending: VecDeque<LiveEvent>,
    done: bool,
    /// The end to deliver if the answer stops being generated without one.
    gone: Ended,
}

impl Cursor {
    fn new(offset: usize, gone: Ended) -> Self {
        Self {
            last_id: "0".into(),
            skip: offset,
            pending: VecDeque::new(),
            done: false,
            gone,
        }
    }

    /// Queue the events of `entries` (after the offset; nothing after the end).
    fn take(&mut self, entries: &[StreamId]) {
        for entry in entries {
            self.last_id.clone_from(&entry.id);
            if self.done {
                continue;
            }
            if let Some(end) = entry.get::<String>("end") {
                let ended = serde_json::from_str(&end).unwrap_or_else(|_| self.gone.clone());
                self.pending.push_back(LiveEvent::End(ended));
                self.done = true;
                continue;
            }
            let text: String = entry.get("t").unwrap_or_default();
            let at = entry.get::<u64>("at").filter(|&at| at > 0);
            let count = text.chars().count();
            if self.skip >= count {
                self.skip -= count;
                continue;
            }
            let text = from_offset(&text, self.skip).to_string();
            self.skip = 0;
            self.pending.push_back(LiveEvent::Text(text, at));
        }
    }
}

impl Follow {
    async fn next(&mut self) -> Option<LiveEvent> {
        loop {
            if let Some(ev) = self.cursor.pending.pop_front() {
                return Some(ev);
            }
            if self.cursor.done {
                return None;
            }
            if self.watched_at.is_none_or(|t| t.elapsed() >= REFRESH) {
                let _: redis::RedisResult<()> =
                    set_px(&mut self.conn, &self.keys.watch, WATCH_MS).await;
                self.watched_at = Some(Instant::now());
            }
            let opts = StreamReadOptions::default()
                .block(READ_BLOCK_MS)
                .count(1024);
            let read: redis::RedisResult<Option<StreamReadReply>> = self
                .conn
                .xread_options(&[&self.keys.stream], &[&self.cursor.last_id], &opts)
                .await;
            let entries: Vec<StreamId> = match read {
                Ok(reply) => reply
                    .into_iter()
                    .flat_map(|r| r.keys)
                    .flat_map(|k| k.ids)
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "following an answer through Redis failed");
                    self.cursor
                        .pending
                        .push_back(LiveEvent::End(self.cursor.gone.clone()));
                    self.cursor.done = true;
                    continue;
                }
            };
            if !entries.is_empty() {
                self.cursor.take(&entries);
                continue;
            }
            // Nothing new for a while: is it still generating somewhere?
            let alive: bool = self.conn.exists(&self.keys.alive).await.unwrap_or(false);
            if !alive {
                // Its end (written before `alive` goes) may have landed since the read.
                let rest: StreamRangeReply = self
                    .conn
                    .xrange(&self.keys.stream, format!("({}", self.cursor.last_id), "+")
                    .await
                    .unwrap_or_default();
                self.cursor.take(&rest.ids);
                if !self.cursor.done {
                    self.cursor
                        .pending
                        .push_back(LiveEvent::End(self.cursor.gone.clone()));
                    self.cursor.done = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::run::Usage;

    fn entry(id: &str, fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: id.into(),
            map: fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        redis::Value::BulkString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        }
    }

    fn drained(c: &mut Cursor) -> Vec<LiveEvent> {
        c.pending.drain(..).collect()
    }

    #[test]
    fn a_follower_gets_the_text_from_its_offset_then_the_end_and_nothing_after() {
        let gone = Ended::new("interrupted", None, Usage::default());
        let mut c = Cursor::new(3, gone.clone());
        c.take(&[
            entry("1-0", &[("t", "Hé"), ("at", "0")]),
            entry("2-0", &[("t", "llo"), ("at", "17")]),
        ]);
        assert_eq!(
            drained(&mut c),
            [LiveEvent::Text("lo".into(), Some(17))],
            "three characters skipped across pieces (é is one), `at` 0 is no time"
        );
        let done = Ended::new("done", Some("m".into()), Usage::default());
        let json = serde_json::to_string(&done).unwrap_or_default();
        c.take(&[
            entry("3-0", &[("t", " world")]),
            entry("4-0", &[("end", &json)]),
            entry("5-0", &[("t", "late")]),
        ]);
        assert_eq!(
            drained(&mut c),
            [LiveEvent::Text(" world".into(), None), LiveEvent::End(done)]
        );
        assert!(c.done);
        assert_eq!(c.last_id, "5-0");
    }

    #[test]
    fn an_end_that_does_not_parse_reads_as_gone() {
        let gone = Ended::new("interrupted", None, Usage::default());
        let mut c = Cursor::new(0, gone.clone());
        c.take(&[entry("1-0", &[("end", "{not json")])]);
        assert_eq!(drained(&mut c), [LiveEvent::End(gone)]);
    }
}
