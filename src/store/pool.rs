//! A fixed set of open connections (SQLite or PostgreSQL) lent to one blocking caller at a
//! time. Owns only the connections; knows no schema. A PostgreSQL connection the server dropped
//! is replaced when it is next lent. (A pool crate would add little here: SQLite connections
//! are cheap and never go stale, and one pool for both engines keeps one path.)

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Db, StoreError};

/// Opens a replacement for a connection that broke.
pub(super) type Reopen = Box<dyn Fn() -> Result<Db, StoreError> + Send + Sync>;

/// Idle connections and a signal for callers waiting for one.
pub(super) struct Pool {
    idle: Mutex<Vec<Db>>,
    returned: Condvar,
    wait: Duration,
    reopen: Option<Reopen>,
}

impl Pool {
    /// A pool lending `connections`; a caller waits at most `wait` for one.
    /// `reopen` replaces connections that report themselves broken.
    pub(super) fn new(connections: Vec<Db>, wait: Duration, reopen: Option<Reopen>) -> Self {
        Pool {
            idle: Mutex::new(connections),
            returned: Condvar::new(),
            wait,
            reopen,
        }
    }

    /// Run `f` with a connection, blocking the calling thread until one is free. The connection
    /// goes back even if `f` panics, with any transaction `f` left open rolled back.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut lent = Lent {
            pool: self,
            conn: None,
        };
        let conn = lent.conn.insert(self.take()?);
        if conn.is_broken() {
            if let Some(reopen) = &self.reopen {
                *conn = reopen()?;
                tracing::info!("replaced a database connection the server had closed");
            }
        }
        f(conn)
    }

    fn take(&self) -> Result<Db, StoreError> {
        let deadline = Instant::now() + self.wait;
        // The lock only guards a Vec push/pop, which cannot leave it inconsistent: a poisoned
        // lock is safe to use.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(conn) = idle.pop() {
                return Ok(conn);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::PoolTimeout(self.wait));
            }
            idle = self
                .returned
                .wait_timeout(idle, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn give_back(&self, conn: Db) {
        if conn.in_transaction() {
            // Left mid-transaction (a panic, or a manual BEGIN): never lend that state out.
            if let Err(e) = conn.rollback_abandoned() {
                tracing::warn!(error = %e, "could not roll back an abandoned transaction");
            }
        }
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        self.returned.notify_one();
    }
}

/// A connection on loan; returns it to the pool when dropped.
struct Lent<'a> {
    pool: &'a Pool,
    conn: Option<Db>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_of(n: usize, wait_ms: u64) -> Pool {
        let conns = (0..n)
            .map(|_| Db::sqlite(rusqlite::Connection::open_in_memory().expect("in-memory")))
            .collect();
        Pool::new(conns, Duration::from_millis(wait_ms), None)
    }

    #[test]
    fn a_caller_times_out_when_every_connection_is_lent() {
        let pool = pool_of(1, 20);
        let nested = pool
            .with(|_| Ok(pool.with(|_| Ok(()))))
            .expect("outer call");
        assert!(matches!(nested, Err(StoreError::PoolTimeout(_))));
    }

    #[test]
    fn a_connection_comes_back_after_a_panic_without_its_transaction() {
        let pool = pool_of(1, 1000);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.with(|c| -> Result<(), StoreError> {
                c.execute_batch("CREATE TABLE t(x); BEGIN; INSERT INTO t VALUES (1);")?;
                panic!("boom");
            })
        }));
        assert!(panicked.is_err());
        let rows: i64 = pool
            .with(|c| {
                assert!(!c.in_transaction(), "transaction must be rolled back");
                c.prepare_cached("SELECT count(*) FROM t")?
                    .query_row((), |r| r.get(0))
            })
            .expect("connection is back");
        assert_eq!(rows, 0);
    }

    #[test]
    fn waiting_callers_get_a_connection_when_one_is_returned() {
        let pool = std::sync::Arc::new(pool_of(1, 5000));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = std::sync::Arc::clone(&pool);
                std::thread::spawn(move || {
                    pool.with(|_| {
                        std::thread::sleep(Duration::from_millis(10));
                        Ok(())
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread").expect("got a connection");
        }
    }
}
