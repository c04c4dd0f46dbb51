//! CPU priority of the threads that run the model.
//!
//! The model's compute threads keep every core busy while a batch runs. The threads that carry
//! tokens to clients (the async runtime) need a core for only microseconds at a time, but if they
//! compete at equal priority the kernel may make them wait a whole time slice (milliseconds)
//! behind a busy compute thread. Running the compute threads at a lower priority (a higher nice
//! value) lets the I/O threads preempt them at once, which costs the model almost nothing.
//! Linux applies nice values per thread; elsewhere this is a no-op.

/// Lower the calling thread's priority by `nice` (0 = leave it). Failures are ignored: the
/// server works the same, only with less responsive streaming under load.
pub fn lower_current_thread(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority have no memory-safety preconditions; PRIO_PROCESS with
        // a thread id targets only that thread on Linux.
        let rc = unsafe {
            let tid = libc::gettid();
            let current = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                (current + nice).min(19),
            )
        };
        if rc != 0 {
            tracing::debug!("could not lower the model thread's priority");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn lowers_only_the_calling_thread() {
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let inside = std::thread::spawn(|| {
            super::lower_current_thread(3);
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        })
        .join()
        .expect("thread");
        assert_eq!(inside, (before + 3).min(19));
        let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        assert_eq!(after, before, "other threads keep their priority");
    }
}
