//! Which serving thread the caller runs on.
//!
//! A gateway that serves each host connection on one thread of its own (a single-threaded
//! runtime per core) keeps everything a request touches on that thread, and the upstream
//! connection pool keeps its idle connections per thread for the same reason: a connection's
//! driver task stays on the thread that opened it, so a request that borrows it is not handed
//! across threads twice per exchange. Threads that never say which they are share index 0.

use std::cell::Cell;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as serving thread `index` (0 for the first).
pub fn enter(index: usize) {
    SHARD.with(|s| s.set(index));
}

/// The calling thread's index, as given to [`enter`] (0 if never given).
pub fn current() -> usize {
    SHARD.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_keeps_its_own_index() {
        enter(3);
        let other = std::thread::spawn(current).join().expect("thread");
        assert_eq!((current(), other), (3, 0));
        enter(0);
    }
}
