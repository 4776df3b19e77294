//! The pool's counts of its work: each worker's dispatches, the time they
//! waited and the bytes their runs moved, written by that worker alone so
//! that counting shares no cache line between workers.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::stats::Traffic;

/// Adds `n` to a count that one thread at a time writes (a worker its own
/// counts; the next worker to hold its slot after it retires): a plain
/// load and store, without a locked instruction.
fn add(to: &AtomicU64, n: u64) {
    if n > 0 {
        to.store(to.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// Dispatches, the sum of their waits in nanoseconds, and the traffic of
/// their runs.
#[derive(Default)]
pub(super) struct DispatchCounts {
    runs: AtomicU64,
    wait_ns: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// What `DispatchCounts` holds, read.
#[derive(Default)]
pub(super) struct Counted {
    pub(super) runs: u64,
    pub(super) wait_ns: u64,
    pub(super) traffic: Traffic,
}

impl DispatchCounts {
    /// Counts a dispatch that waited `wait_ns`, when it starts.
    pub(super) fn dispatched(&self, wait_ns: u64) {
        add(&self.runs, 1);
        add(&self.wait_ns, wait_ns);
    }

    /// Counts the traffic of a run, when it ends.
    pub(super) fn moved(&self, traffic: Traffic) {
        add(&self.bytes_in, traffic.bytes_in);
        add(&self.bytes_out, traffic.bytes_out);
    }

    /// Adds its counts to `to`.
    pub(super) fn add_to(&self, to: &mut Counted) {
        to.runs += self.runs.load(Ordering::Relaxed);
        to.wait_ns += self.wait_ns.load(Ordering::Relaxed);
        to.traffic += Traffic {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        };
    }
}
