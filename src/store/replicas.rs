//! The server processes using the store: the `replicas` table (a heartbeat per process) and the
//! `messages.replica` column (which process generates a streaming answer). Owns the rule that
//! an answer is marked `interrupted` only when the process generating it is gone: on a SQLite
//! file the process starting is alone, so everything streaming is orphaned; on a PostgreSQL
//! store shared by replicas, only the answers of processes whose heartbeat stopped.

use super::db::Db;
use super::{unix_now, Store, StoreError};

/// How often a process says it is alive.
pub const HEARTBEAT_SECS: i64 = 10;

/// A process not heard from for this long is gone (three missed heartbeats).
pub const GONE_AFTER_SECS: i64 = 3 * HEARTBEAT_SECS;

/// Record that `replica` is alive at `now`.
pub fn heartbeat(conn: &Db, replica: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO replicas (id, seen_at) VALUES (?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
    )?
    .execute((replica, now))?;
    Ok(())
}

/// Mark `interrupted` every streaming answer whose process was not seen since `alive_since`
/// (or is unknown: answers from before replicas were tracked). Returns how many.
pub fn interrupt_orphans(conn: &Db, alive_since: i64) -> Result<usize, StoreError> {
    conn.prepare_cached(
        "UPDATE messages SET status = 'interrupted' WHERE status = 'streaming' \
         AND (replica IS NULL OR replica NOT IN (SELECT id FROM replicas WHERE seen_at >= ?1))",
    )?
    .execute([alive_since])
}

/// Forget processes gone for a day (their answers were interrupted long before).
pub fn forget_gone(conn: &Db, before: i64) -> Result<usize, StoreError> {
    conn.prepare_cached("DELETE FROM replicas WHERE seen_at < ?1")?
        .execute([before])
}

impl Store {
    /// This process's id in `replicas` and `messages.replica`.
    pub fn replica_id(&self) -> &str {
        &self.inner.replica
    }

    /// At start: say this process is alive, and mark `interrupted` the answers no process is
    /// generating any more — on SQLite all that were streaming (this process is the only one),
    /// on PostgreSQL those of processes gone. Returns how many.
    pub async fn start_replica(&self) -> Result<usize, StoreError> {
        let (me, alone) = (self.replica_id().to_owned(), self.path().is_some());
        self.run(move |c| {
            let now = unix_now();
            heartbeat(c, &me, now)?;
            // Alone on a file: every process seen up to now (this one has no answers yet) is gone.
            let alive_since = if alone {
                now + 1
            } else {
                now - GONE_AFTER_SECS
            };
            interrupt_orphans(c, alive_since)
        })
        .await
    }

    /// Every [`HEARTBEAT_SECS`]: say this process is alive, interrupt the answers of processes
    /// gone, forget processes gone for a day. Returns how many answers were interrupted.
    pub async fn replica_heartbeat(&self) -> Result<usize, StoreError> {
        let me = self.replica_id().to_owned();
        self.run(move |c| {
            let now = unix_now();
            heartbeat(c, &me, now)?;
            let n = interrupt_orphans(c, now - GONE_AFTER_SECS)?;
            forget_gone(c, now - 24 * 3600)?;
            Ok(n)
        })
        .await
    }
}
