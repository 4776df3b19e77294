//! Idle timers: the handle a connection files its deadline with, and the
//! heap its acceptor thread fires them from. Never touches a connection:
//! entries name a token, and the acceptor looks the token up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Token, Waker};

/// The filing side, shared by an acceptor's connections: entries go over
/// a channel to the acceptor thread, which is woken when it would sleep
/// past one.
pub(crate) struct Timers {
    tx: Sender<(Instant, Token)>,
    waker: Arc<Waker>,
    /// When the acceptor thread will wake at the latest, in nanoseconds
    /// since `epoch`; a timer earlier than that must wake it.
    next_wake: AtomicU64,
    epoch: Instant,
}

/// The acceptor thread's side: the entries in deadline order.
pub(crate) struct TimerHeap {
    rx: Receiver<(Instant, Token)>,
    heap: BinaryHeap<Reverse<(Instant, Token)>>,
}

impl Timers {
    /// A pair around the waker of the acceptor thread that owns the heap.
    pub(crate) fn new(waker: Arc<Waker>) -> (Arc<Timers>, TimerHeap) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let timers = Timers {
            tx,
            waker,
            next_wake: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        let heap = TimerHeap {
            rx,
            heap: BinaryHeap::new(),
        };
        (Arc::new(timers), heap)
    }

    /// Files an entry, waking the acceptor thread if it would sleep past it.
    pub(crate) fn add(&self, deadline: Instant, token: Token) {
        if self.tx.send((deadline, token)).is_err() {
            return; // the acceptor has exited
        }
        // Pairs with the store-then-drain in `TimerHeap::sleep_until`:
        // either the acceptor thread drains this entry before sleeping, or
        // we see the deadline it will sleep until.
        if self.nanos(deadline) < self.next_wake.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Wakes the acceptor thread.
    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u64::MAX as u128 - 1) as u64
    }
}

impl TimerHeap {
    /// Takes the filed entries and returns how long the acceptor may sleep:
    /// until the earliest entry or `other` (its own deadlines), whichever
    /// comes first. `prune` drops dead entries once the heap is large.
    pub(crate) fn sleep_until(
        &mut self,
        timers: &Timers,
        other: Option<Instant>,
        mut prune: impl FnMut(&mut BinaryHeap<Reverse<(Instant, Token)>>),
    ) -> Option<Duration> {
        loop {
            for (deadline, token) in self.rx.try_iter() {
                self.heap.push(Reverse((deadline, token)));
            }
            prune(&mut self.heap);
            let first = self.heap.peek().map(|Reverse((d, _))| *d);
            let wake_at = match (first, other) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake_nanos = wake_at.map_or(u64::MAX, |w| timers.nanos(w));
            timers.next_wake.store(wake_nanos, Ordering::SeqCst);
            if self.rx.is_empty() {
                return wake_at.map(|w| w.saturating_duration_since(Instant::now()));
            }
        }
    }

    /// The earliest entry due by `now`, taken off the heap.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Token)> {
        match self.heap.peek() {
            Some(&Reverse((at, token))) if at <= now => {
                self.heap.pop();
                Some((at, token))
            }
            _ => None,
        }
    }

    /// Files an entry again, at a later deadline.
    pub(crate) fn push(&mut self, deadline: Instant, token: Token) {
        self.heap.push(Reverse((deadline, token)));
    }
}
