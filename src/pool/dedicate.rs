//! Workers dedicated to a slow connection: one that finishes a run of a
//! task whose callbacks block stays with it, waits on its descriptor (out
//! of the pool's epoll) and runs it when it is readable or handed work,
//! as a thread per connection would. Never touches the epoll's readiness
//! of other tasks.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Dispatch, Pool, Slot, Task};
use crate::sys::ReadOrWake;

/// How long a worker dedicated to a slow connection waits for its next
/// request before it gives the connection back to the pool's epoll.
const DEDICATED_WAIT: Duration = Duration::from_secs(1);

impl Dispatch {
    /// The caller may run it (it became runnable, or was taken off the
    /// queue): hands that right to the worker dedicated to it instead,
    /// unless that is `me`. `false` when the caller keeps it.
    pub(super) fn hand_to_owner(&self, me: Option<&Slot>) -> bool {
        if !self.owned.load(Ordering::SeqCst) {
            return false;
        }
        let owner = self.owner.lock();
        let Some(owner) = owner.as_ref() else {
            return false;
        };
        if me.is_some_and(|me| std::ptr::eq(me, &**owner)) {
            return false;
        }
        // Under the lock: the owner gives the task back under it too.
        self.handed.store(true, Ordering::SeqCst);
        owner.wake();
        true
    }

    /// Whether the right to run it was handed to its owner; clears it.
    /// Without the lock: only the owner clears it while it owns the task.
    fn take_handed(&self) -> bool {
        self.handed.load(Ordering::Relaxed) && self.handed.swap(false, Ordering::SeqCst)
    }
}

impl Slot {
    /// Wakes it if it waits, dedicated.
    pub(super) fn wake(&self) {
        use std::io::Write;
        if let Some(wake) = self.wake.lock().as_ref() {
            let _ = (&*wake).write(&1u64.to_ne_bytes());
        }
    }

    /// Opens its wake-up descriptor for a dedication to the task whose
    /// descriptor is `fd`, and the epoll it waits in; `None` if either
    /// cannot be made.
    fn open_wake(&self, fd: RawFd) -> Option<ReadOrWake> {
        use std::os::fd::AsFd;
        let file = std::fs::File::from(crate::sys::eventfd().ok()?);
        let waiter = ReadOrWake::new(fd, file.as_fd()).ok()?;
        *self.wake.lock() = Some(file);
        Some(waiter)
    }

    /// Empties its wake-up counter.
    fn drain_wake(&self) {
        use std::io::Read;
        if let Some(wake) = self.wake.lock().as_ref() {
            let _ = (&*wake).read(&mut [0u8; 8]);
        }
    }
}

impl<T: Task> Pool<T> {
    /// Runs a task, and stays with it if it is slow.
    pub(super) fn serve(self: &Arc<Self>, slot: &Arc<Slot>, conn: &Arc<T>, buf: &mut [u8]) {
        let claimed = self.claim(slot, conn);
        let end = self.run(slot, conn, buf, self.now_ns());
        if let Some(fd) = claimed {
            slot.active_at.store(end, Ordering::Relaxed);
            self.dedicate(slot, conn, buf, fd);
        }
    }

    /// Makes this worker the owner of a slow task it is about to run:
    /// from now on whoever gets the right to run it hands that right to
    /// this worker, so no other worker runs it (nor closes its descriptor)
    /// while this one waits on it. Takes its descriptor out of the epoll;
    /// returns it, or `None` when the task is not taken.
    fn claim(self: &Arc<Self>, slot: &Arc<Slot>, conn: &Arc<T>) -> Option<RawFd> {
        let dispatch = conn.dispatch();
        // A worker the pool could not replace stays with the queue.
        if !dispatch.is_slow()
            || dispatch.owned.load(Ordering::SeqCst)
            || self.exiting.load(Ordering::Acquire)
            || self.irreplaceable()
        {
            return None;
        }
        let fd = conn.fd()?;
        *dispatch.owner.lock() = Some(slot.clone());
        dispatch.owned.store(true, Ordering::SeqCst);
        self.deregister(fd);
        // Staying with it takes this worker from the pool: if more tasks
        // wait than workers are on their way to the queue, or no other
        // worker is free to poll, another takes its place now, not at the
        // monitor's next tick (which a saturated CPU delays, leaving
        // connections queued behind a pool that no longer grows).
        if self.rx.len() > self.coming.load(Ordering::SeqCst) || self.alone() {
            let _ = self.summon();
        }
        Some(fd)
    }

    /// Stays with a slow task it claimed as a thread of its own would:
    /// waits on its descriptor and runs the task when it is readable or
    /// handed work, so that each of its requests costs this thread one
    /// wake-up and no other thread any. Gives it back (to the epoll, then
    /// unowned) when it turns fast, ends, stays quiet for
    /// `DEDICATED_WAIT`, or the monitor recalls it (the pool, at its cap,
    /// has work that found no worker).
    fn dedicate(self: &Arc<Self>, slot: &Arc<Slot>, conn: &Arc<T>, buf: &mut [u8], fd: RawFd) {
        let dispatch = conn.dispatch();
        let waiter = if dispatch.is_slow() && conn.is_open() {
            slot.open_wake(fd)
        } else {
            None
        };
        if let Some(waiter) = waiter {
            slot.dedicated.store(true, Ordering::Relaxed);
            self.dedicated.fetch_add(1, Ordering::SeqCst);
            if !slot.blocked.swap(true, Ordering::AcqRel) {
                self.blocked.fetch_add(1, Ordering::Relaxed);
            }
            self.stay(slot, conn, buf, &waiter);
            slot.dedicated.store(false, Ordering::Relaxed);
            self.dedicated.fetch_sub(1, Ordering::SeqCst);
            self.unblock(slot);
            // Its waits here are no callback's sleeps (none was counted
            // meanwhile: the task was slow).
            slot.woke();
            slot.wake.lock().take();
        }
        // Back in the epoll before it is unowned: readiness in between is
        // handed to us, and queued below.
        if conn.is_open() {
            if let Err(e) = self.register(fd, conn.token()) {
                report!(
                    error,
                    { error = %e, "cannot watch a connection again" },
                    target: "atoll",
                    "cannot watch a connection again: {e}"
                );
            }
        }
        let handed = {
            let mut owner = dispatch.owner.lock();
            dispatch.owned.store(false, Ordering::SeqCst);
            owner.take();
            dispatch.handed.swap(false, Ordering::SeqCst)
        };
        if handed {
            self.schedule(conn.clone());
        }
    }

    /// The dedicated wait and runs: two readings of the clock per request,
    /// no timer (the monitor wakes a worker whose task has been quiet for
    /// `DEDICATED_WAIT`).
    fn stay(&self, slot: &Slot, conn: &Arc<T>, buf: &mut [u8], waiter: &ReadOrWake) {
        let dispatch = conn.dispatch();
        loop {
            if self.exiting.load(Ordering::Acquire) || !conn.is_open() || self.recalled() {
                return;
            }
            let handed = dispatch.take_handed();
            let (readable, woken) = if handed {
                (false, false)
            } else {
                match waiter.wait() {
                    Ok(ready) => ready,
                    Err(_) => return,
                }
            };
            if woken {
                slot.drain_wake();
            }
            if handed || (readable && conn.ready(false)) {
                let now = self.now_ns();
                if readable {
                    dispatch.queued(now);
                }
                let end = self.run(slot, conn, buf, now);
                if !dispatch.is_slow() {
                    return;
                }
                slot.active_at.store(end, Ordering::Relaxed);
            } else if !readable && self.quiet(slot, self.now_ns()) {
                return;
            }
            // Otherwise a nudge with nothing for us, or readiness whose
            // mark found the task taken (the right to run it is on its way
            // here; the edge-triggered wait does not report it again).
        }
    }

    /// Whether the task a worker is dedicated to has been quiet for
    /// `DEDICATED_WAIT` at `now`.
    pub(super) fn quiet(&self, slot: &Slot, now: u64) -> bool {
        now.saturating_sub(slot.active_at.load(Ordering::Relaxed))
            >= DEDICATED_WAIT.as_nanos() as u64
    }

    /// No worker could take a claimer's place: none is parked, and none
    /// can be started (the pool is at its cap, or starting one is paused
    /// after a failure).
    fn irreplaceable(&self) -> bool {
        self.parked.load(Ordering::SeqCst) == 0
            && (self.threads.load(Ordering::Relaxed) >= self.config.max
                || self.now_ns() < self.spawn_paused_until.load(Ordering::Relaxed))
    }

    /// No other worker is free to poll: the rest are parked or busy with
    /// slow tasks.
    fn alone(&self) -> bool {
        let taken = self.parked.load(Ordering::SeqCst) + self.blocked.load(Ordering::Relaxed) + 1;
        self.threads.load(Ordering::Relaxed) <= taken
    }

    /// Asks up to `n` dedicated workers back (0: none), and wakes them.
    pub(super) fn recall(&self, n: usize) {
        self.recalls.store(n, Ordering::SeqCst);
        if n > 0 {
            self.wake_dedicated(n);
        }
    }

    /// Whether this dedicated worker answers a recall.
    fn recalled(&self) -> bool {
        self.recalls.load(Ordering::Relaxed) > 0
            && self
                .recalls
                .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }

    /// Wakes up to `n` workers dedicated to slow tasks that wait for
    /// their task, to see whether they are recalled.
    pub(super) fn wake_dedicated(&self, n: usize) {
        if self.dedicated.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waiting = self.slots.live().filter(|slot| {
            slot.dedicated.load(Ordering::Relaxed) && slot.busy_since.load(Ordering::Relaxed) == 0
        });
        for slot in waiting.take(n) {
            slot.wake();
        }
    }
}
