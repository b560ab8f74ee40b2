//! Which worker thread is running, and one value per worker.
//!
//! A leaf: depends on nothing else in the crate.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker running on this thread, from 1; 0 off the workers (admin,
/// tests calling the runtime directly).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// Marks this thread as worker `index` (from 1).
pub(crate) fn enter(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// One `T` per thread that serves connections: per worker, plus one for
/// every other thread (index 0). Each worker only touches its own, so the
/// locks inside never contend across workers.
pub struct PerWorker<T>(Box<[T]>);

impl<T: Default> PerWorker<T> {
    /// `slots` values (workers + 1).
    pub fn new(slots: usize) -> PerWorker<T> {
        PerWorker((0..slots.max(1)).map(|_| T::default()).collect())
    }
}

impl<T> PerWorker<T> {
    /// This thread's value.
    pub fn get(&self) -> &T {
        &self.0[current() % self.0.len()]
    }

    /// Every worker's value (sweeps that visit all of them).
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}
