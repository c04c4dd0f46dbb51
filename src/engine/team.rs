//! The CPU forward's thread team: every thread of rayon's pool runs the same pass at once,
//! each taking its share of every step, with a spinning barrier between steps.
//!
//! Owns [`Par`] (who is running a step: the whole team, or one thread alone), the barrier, and
//! [`Shared`], the buffers a step's threads write in disjoint parts. Handing each matrix product
//! to the pool as a fresh job (rayon's `scope`) put the other threads to sleep and woke them a
//! hundred and twenty times per token — a fifth of decode time went to the kernel's scheduler.
//! Here the threads stay on their cores for the whole pass and meet at barriers that cost a
//! cache line's round trip. A thread that waits long (another process took its core) yields
//! instead of burning the core the others need.
//!
//! A panic on one thread poisons the barrier, so the others unwind too instead of waiting
//! forever; rayon then carries the panic to the caller.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Spins at a barrier before yielding the core (about 20–50 µs of `pause`).
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

/// A reusable barrier for a fixed number of threads that spins while it waits.
struct SpinBarrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl SpinBarrier {
    fn new(threads: usize) -> Self {
        Self {
            threads,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            // Last to arrive: reset for the next use before releasing the others, who cannot
            // arrive again until the generation moves.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Relaxed) {
                panic!("a thread of the forward pass panicked");
            }
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Poisons the barrier if its thread unwinds.
struct PoisonOnPanic<'a>(&'a SpinBarrier);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Relaxed);
        }
    }
}

/// Who runs a step of the pass.
#[derive(Clone, Copy)]
pub enum Par<'a> {
    /// Thread `index` of `threads`, all running the pass together.
    Team {
        /// This thread's place.
        index: usize,
        /// How many run the pass.
        threads: usize,
        barrier: &'a SpinBarrierRef,
    },
    /// One thread runs every step (whatever parallelism a step has of its own).
    Solo,
}

/// The barrier as [`Par`] carries it (opaque outside this module).
pub struct SpinBarrierRef(SpinBarrier);

impl Par<'_> {
    /// This thread's contiguous share of `0..n`.
    pub fn split(&self, n: usize) -> Range<usize> {
        match *self {
            Par::Team { index, threads, .. } => n * index / threads..n * (index + 1) / threads,
            Par::Solo => 0..n,
        }
    }

    /// This thread's share of `0..n` taken round-robin (for items of uneven cost in order).
    pub fn strided(&self, n: usize) -> std::iter::StepBy<Range<usize>> {
        match *self {
            Par::Team { index, threads, .. } => (index.min(n)..n).step_by(threads),
            Par::Solo => (0..n).step_by(1),
        }
    }

    /// Wait until every thread finished the step before.
    pub fn sync(&self) {
        if let Par::Team { barrier, .. } = self {
            barrier.0.wait();
        }
    }

    /// Is this the whole team (so a step must not start parallel work of its own)?
    pub fn is_team(&self) -> bool {
        matches!(self, Par::Team { .. })
    }
}

/// Run `pass` on every thread of the current rayon pool at once (as a [`Par::Team`]), or on
/// this thread alone (as [`Par::Solo`]) when the pool has one thread or `team` is false.
pub fn run<R: Send>(team: bool, pass: impl Fn(Par) -> Option<R> + Sync) -> R {
    let threads = rayon::current_num_threads();
    if !team || threads < 2 {
        return pass(Par::Solo).expect("a solo pass returns its result");
    }
    let barrier = SpinBarrierRef(SpinBarrier::new(threads));
    let results = rayon::broadcast(|ctx| {
        let _poison = PoisonOnPanic(&barrier.0);
        pass(Par::Team {
            index: ctx.index(),
            threads: ctx.num_threads(),
            barrier: &barrier,
        })
    });
    results
        .into_iter()
        .flatten()
        .next()
        .expect("thread 0 of the team returns the result")
}

/// A buffer the team's threads write in disjoint parts, a barrier between a part's writing
/// and anyone else reading it.
pub struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `Shared` only hands out parts under the caller's promise (see `part` and `all`)
// that no two threads touch the same elements between barriers.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// Share `v`, which must outlive every use.
    pub fn new(v: &mut [T]) -> Self {
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first element, for writers that split the buffer themselves.
    pub fn as_mut_ptr(&self) -> *mut T {
        self.ptr
    }

    /// Elements `range`, to write.
    ///
    /// # Safety
    /// No other thread may access them until the next barrier.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "part out of range"
        );
        // SAFETY: in bounds (asserted); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// Every element, to read.
    ///
    /// # Safety
    /// No thread may write any element until the next barrier.
    pub unsafe fn all(&self) -> &[T] {
        // SAFETY: `ptr` and `len` describe the slice given to `new`; no writer by the promise.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_sees_every_step_before_the_next_and_one_result_comes_back() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        let mut buf = vec![0usize; 30];
        let shared = Shared::new(&mut buf);
        let total = pool.install(|| {
            run(true, |par| {
                for step in 1..=50 {
                    let range = par.split(30);
                    // SAFETY: each thread writes its own range; the barrier separates steps.
                    for v in unsafe { shared.part(range) } {
                        *v += 1;
                    }
                    par.sync();
                    // SAFETY: nobody writes until the next step, after this barrier.
                    let all = unsafe { shared.all() };
                    assert!(all.iter().all(|&v| v == step), "step {step}: {all:?}");
                    par.sync();
                }
                let index = match par {
                    Par::Team { index, .. } => index,
                    Par::Solo => 0,
                };
                (index == 0).then(|| unsafe { shared.all() }.iter().sum::<usize>())
            })
        });
        assert_eq!(total, 30 * 50);
    }

    #[test]
    fn a_panic_on_one_thread_reaches_the_caller_instead_of_hanging_the_others() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| {
                run(true, |par| {
                    if let Par::Team { index: 1, .. } = par {
                        panic!("boom");
                    }
                    par.sync();
                    Some(())
                })
            })
        }));
        assert!(outcome.is_err());
    }

    #[test]
    fn a_solo_pass_takes_everything_in_order() {
        let par = Par::Solo;
        assert_eq!(par.split(7), 0..7);
        assert_eq!(par.strided(4).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(run(false, |_| Some(5)), 5);
    }
}
