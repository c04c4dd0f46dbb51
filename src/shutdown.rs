//! Graceful shutdown of the work that outlives an HTTP request: WebSocket sessions and
//! conversation answers generating with nobody following. A [`Drain`] is shared by the app and
//! that work. On SIGTERM the app [`begin`](Drain::begin)s it: sockets refuse new generations
//! and close (1001) once theirs are done, answers keep generating. The app then waits for every
//! [`Guard`] to drop, up to `server.shutdown_grace_secs` from the signal; what is left is
//! [`force`](Drain::force)d: sockets close at once, answers stop and are saved as interrupted.
//!
//! Knows nothing of HTTP, the store or the model.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{watch, Notify};

#[derive(Debug)]
struct Inner {
    /// 0 running, 1 draining (finish what runs, start nothing), 2 forced (stop now).
    phase: watch::Sender<u8>,
    /// When draining began.
    began: Mutex<Option<Instant>>,
    active: AtomicUsize,
    idle: Notify,
}

/// The shutdown state shared with long-lived work (cheap to clone).
#[derive(Debug, Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

/// Held by one piece of work the shutdown waits for; dropping it says the work is done.
#[derive(Debug)]
pub struct Guard {
    inner: Arc<Inner>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Running, nothing tracked yet.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                phase: watch::channel(0).0,
                began: Mutex::new(None),
                active: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// Track one piece of work until the guard drops.
    pub fn guard(&self) -> Guard {
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        Guard {
            inner: self.inner.clone(),
        }
    }

    /// Work tracked now.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Start draining: new work is refused, running work finishes.
    pub fn begin(&self) {
        self.inner
            .began
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Instant::now);
        self.inner.phase.send_if_modified(|p| {
            let changed = *p == 0;
            *p = (*p).max(1);
            changed
        });
    }

    /// Stop what still runs.
    pub fn force(&self) {
        self.begin();
        self.inner.phase.send_if_modified(|p| {
            let changed = *p < 2;
            *p = 2;
            changed
        });
    }

    /// When draining began, if it has.
    pub fn began(&self) -> Option<Instant> {
        *self
            .inner
            .began
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether draining has begun (new work must be refused).
    pub fn is_draining(&self) -> bool {
        *self.inner.phase.borrow() >= 1
    }

    /// Resolves once draining begins.
    pub async fn draining(&self) {
        self.phase_at_least(1).await
    }

    /// Resolves once the rest must stop.
    pub async fn forced(&self) {
        self.phase_at_least(2).await
    }

    async fn phase_at_least(&self, phase: u8) {
        let mut rx = self.inner.phase.subscribe();
        // The sender lives in `self`, so the channel never closes while we wait.
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    /// Resolves when no work is tracked.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_every_guard_and_phases_only_move_forward() {
        let drain = Drain::new();
        drain.idle().await;
        let (a, b) = (drain.guard(), drain.guard());
        assert_eq!(drain.active(), 2);
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.idle().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one guard is still held");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("idle once the last guard drops")
            .expect("task");

        assert!(!drain.is_draining() && drain.began().is_none());
        let forced = tokio::spawn({
            let drain = drain.clone();
            async move { drain.forced().await }
        });
        drain.begin();
        assert!(drain.is_draining());
        let began = drain.began().expect("began");
        tokio::time::timeout(Duration::from_secs(1), drain.draining())
            .await
            .expect("draining resolves");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!forced.is_finished(), "draining is not forcing");
        drain.force();
        drain.begin();
        assert_eq!(
            drain.began(),
            Some(began),
            "the first signal's instant is kept"
        );
        tokio::time::timeout(Duration::from_secs(1), forced)
            .await
            .expect("forced resolves")
            .expect("task");
        assert!(
            drain.is_draining(),
            "forcing does not go back to draining only"
        );
    }
}
