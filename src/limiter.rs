//! The counting limiter: at most `limit` live connections per acceptor.
//! Counts slots; never touches a connection or a socket.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A counter of live connections with a limit that can change at run time.
/// The acceptor that waits for a slot sets `waiting`; whoever frees a slot or
/// raises the limit then calls the wake function, so the wait ends at once
/// rather than at the next retry.
pub(crate) struct Limiter {
    live: AtomicUsize,
    limit: AtomicUsize,
    waiting: AtomicBool,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Limiter {
    /// `limit` of `None` is unbounded.
    pub(crate) fn new(limit: Option<usize>, wake: Box<dyn Fn() + Send + Sync>) -> Limiter {
        Limiter {
            live: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit.unwrap_or(usize::MAX)),
            waiting: AtomicBool::new(false),
            wake,
        }
    }

    /// Takes a slot if one is free.
    pub(crate) fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < limit).then_some(live + 1)
            })
            .is_ok()
    }

    /// Frees a slot taken by [`try_acquire`](Limiter::try_acquire).
    pub(crate) fn release(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.wake_waiter();
    }

    /// Marks that the acceptor waits for a slot (or no longer does).
    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::SeqCst);
    }

    pub(crate) fn set_limit(&self, limit: Option<usize>) {
        self.limit
            .store(limit.unwrap_or(usize::MAX), Ordering::Release);
        self.wake_waiter();
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    fn wake_waiter(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            (self.wake)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn never_exceeds_the_limit_and_wakes_a_waiter_on_release() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let limiter = Limiter::new(
            Some(2),
            Box::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        );
        assert!(limiter.try_acquire());
        assert!(limiter.try_acquire());
        assert!(!limiter.try_acquire());
        limiter.release();
        assert_eq!(woken.load(Ordering::SeqCst), 0, "nobody waits yet");
        assert!(limiter.try_acquire());
        limiter.set_waiting(true);
        limiter.release();
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        limiter.set_limit(Some(3));
        assert_eq!(
            woken.load(Ordering::SeqCst),
            2,
            "a raised limit wakes the waiter"
        );
        assert!(limiter.try_acquire());
        assert!(limiter.try_acquire());
        assert!(!limiter.try_acquire());
        assert_eq!(limiter.live(), 3);
    }
}
