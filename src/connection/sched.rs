//! A connection's scheduling word: the work pending for it and whether it
//! is queued or on a worker. Owns the word's transitions; never touches the
//! run queue, the socket or the handler.
//!
//! Whoever notices work (the pool's poller, an acceptor thread firing a
//! timer, an application thread posting a message, the server stopping)
//! [`mark`](Sched::mark)s it. Only the caller that finds the connection
//! idle gets `true` and queues it, so a connection is never on two workers.
//! The worker [`take`](Sched::take)s the work at the start of each round
//! and [`release`](Sched::release)s the connection only when nothing new
//! arrived meanwhile, so no work is lost. A connection that ended is never
//! released and so never scheduled again.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

// `loom`'s atomics only in the crate's own tests: a program that builds
// atoll with `--cfg loom` for its own model checks gets std's (loom is a
// dev-dependency here).
#[cfg(all(test, loom))]
use loom::sync::atomic::{AtomicU32, Ordering};
#[cfg(not(all(test, loom)))]
use std::sync::atomic::{AtomicU32, Ordering};

/// A set of pending work.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Work(u32);

impl Work {
    /// The connection was just accepted: set it up.
    pub(crate) const CONNECT: Work = Work(1);
    /// The socket became readable.
    pub(crate) const READABLE: Work = Work(1 << 1);
    /// A message waits in the mailbox.
    pub(crate) const MESSAGE: Work = Work(1 << 2);
    /// The idle timer fired (it may be stale: check the deadline).
    pub(crate) const TIMEOUT: Work = Work(1 << 3);
    /// The server is stopping.
    pub(crate) const SHUTDOWN: Work = Work(1 << 4);
    /// The peer closed its side or the socket failed: read until end of
    /// stream or error, as a short read no longer means "drained".
    pub(crate) const HANGUP: Work = Work(1 << 5);

    /// Whether any of `other` is in the set.
    pub(crate) fn has(self, other: Work) -> bool {
        self.0 & other.0 != 0
    }

    /// Only the part of the set that is in `other`.
    pub(crate) fn only(self, other: Work) -> Work {
        Work(self.0 & other.0)
    }
}

impl BitOr for Work {
    type Output = Work;

    fn bitor(self, other: Work) -> Work {
        Work(self.0 | other.0)
    }
}

impl BitOrAssign for Work {
    fn bitor_assign(&mut self, other: Work) {
        self.0 |= other.0;
    }
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(Work, &str); 6] = [
            (Work::CONNECT, "CONNECT"),
            (Work::READABLE, "READABLE"),
            (Work::MESSAGE, "MESSAGE"),
            (Work::TIMEOUT, "TIMEOUT"),
            (Work::SHUTDOWN, "SHUTDOWN"),
            (Work::HANGUP, "HANGUP"),
        ];
        let mut set = f.debug_set();
        for (work, name) in NAMES {
            if self.has(work) {
                set.entry(&format_args!("{name}"));
            }
        }
        set.finish()
    }
}

/// The connection is queued or on a worker. Outside [`Work`]'s bits.
const SCHEDULED: u32 = 1 << 31;

/// The scheduling word.
pub(crate) struct Sched(AtomicU32);

impl Sched {
    /// A new connection with `work` pending, scheduled by its creator, who
    /// queues it.
    pub(crate) fn scheduled(work: Work) -> Sched {
        Sched(AtomicU32::new(work.0 | SCHEDULED))
    }

    /// Adds work; `true` when the connection was idle: the caller then owns
    /// it and must queue or run it.
    pub(crate) fn mark(&self, work: Work) -> bool {
        let prev = self.0.fetch_or(work.0 | SCHEDULED, Ordering::AcqRel);
        prev & SCHEDULED == 0
    }

    /// Takes the pending work, at the start of a round; the connection
    /// stays scheduled.
    pub(crate) fn take(&self) -> Work {
        Work(self.0.fetch_and(SCHEDULED, Ordering::AcqRel) & !SCHEDULED)
    }

    /// Leaves work for the next round of the worker that runs the
    /// connection.
    pub(crate) fn keep(&self, work: Work) {
        self.0.fetch_or(work.0, Ordering::AcqRel);
    }

    /// Whether any of `work` is pending (a stop noticed mid-round).
    pub(crate) fn pending(&self, work: Work) -> bool {
        Work(self.0.load(Ordering::Acquire)).has(work)
    }

    /// Ends a round: `true` when nothing is pending and the connection is
    /// idle again; `false` when work arrived meanwhile and the caller still
    /// owns the connection.
    pub(crate) fn release(&self) -> bool {
        self.0
            .compare_exchange(SCHEDULED, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

// Plain tests of the word; under `loom` its atomics work only inside a
// model (`super::model`).
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn only_the_caller_that_finds_it_idle_queues_it() {
        let sched = Sched::scheduled(Work::CONNECT);
        assert!(!sched.mark(Work::READABLE));
        assert_eq!(sched.take(), Work::CONNECT | Work::READABLE);
        assert!(sched.release());
        assert!(sched.mark(Work::MESSAGE));
        assert!(!sched.mark(Work::TIMEOUT));
        assert_eq!(sched.take(), Work::MESSAGE | Work::TIMEOUT);
        sched.keep(Work::READABLE);
        assert!(!sched.release(), "kept work holds the connection");
        assert_eq!(sched.take(), Work::READABLE);
        assert!(sched.release());
    }

    #[test]
    fn work_prints_as_a_set() {
        let work = Work::READABLE | Work::HANGUP;
        assert_eq!(format!("{work:?}"), "{READABLE, HANGUP}");
        assert!(work.has(Work::HANGUP));
        assert_eq!(work.only(Work::HANGUP | Work::MESSAGE), Work::HANGUP);
    }
}
