//! The workers' threads: started up to the cap, parked when they find
//! no work, woken (the last parked first) or started for queued work, and
//! retired once they have waited `keepalive` beyond the base count.

use std::io;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::thread;

use super::{Pool, Slot, Task, SPAWN_PAUSE};

impl<T: Task> Pool<T> {
    /// Wakes or starts a worker for queued work.
    pub(super) fn summon(self: &Arc<Self>) -> bool {
        self.wake_parked(true) || self.spawn_worker(true).is_ok()
    }

    /// Wakes the worker that parked last; `summoned`: for queued work.
    pub(super) fn wake_parked(&self, summoned: bool) -> bool {
        if self.parked.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let slot = {
            let mut idle = self.idle.lock();
            let Some(slot) = idle.pop() else {
                return false;
            };
            self.parked.fetch_sub(1, Ordering::SeqCst);
            slot
        };
        slot.parked.store(false, Ordering::Relaxed);
        if summoned {
            self.coming.fetch_add(1, Ordering::SeqCst);
            slot.summoned.store(true, Ordering::Release);
        }
        slot.parker.unpark();
        true
    }

    /// Starts one more worker, if the cap allows; `summoned`: for queued
    /// work.
    pub(super) fn spawn_worker(self: &Arc<Self>, summoned: bool) -> io::Result<()> {
        if self.now_ns() < self.spawn_paused_until.load(Ordering::Relaxed) {
            return Err(io::Error::other(
                "starting workers is paused after a failure",
            ));
        }
        let max = self.config.max;
        if self
            .threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < max).then_some(t + 1)
            })
            .is_err()
        {
            return Err(io::Error::other("the pool is at max_workers"));
        }
        let Some(slot) = self.slots.take() else {
            self.threads.fetch_sub(1, Ordering::AcqRel);
            return Err(io::Error::other("no free slot in the pool's table"));
        };
        if summoned {
            self.coming.fetch_add(1, Ordering::SeqCst);
            slot.summoned.store(true, Ordering::Release);
        }
        let pool = self.clone();
        let mine = slot.clone();
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        let spawned = thread::Builder::new()
            .name(format!("atoll-worker-{n}"))
            .spawn(move || pool.work(mine));
        match spawned {
            Ok(handle) => {
                let mut handles = self.handles.lock();
                handles.push(handle);
                // Now and then, forget the workers that retired since (their
                // threads have ended): pruning at every start would hold
                // the lock for as long as the list is, and with a thousand
                // workers starting at once they would queue on it.
                if handles.len() > 2 * self.threads.load(Ordering::Relaxed) + 8 {
                    handles.retain(|h| !h.is_finished());
                }
                Ok(())
            }
            Err(e) => {
                self.threads.fetch_sub(1, Ordering::AcqRel);
                self.arrived(&slot);
                self.slots.give_back(&slot);
                // Out of threads or memory: trying again at once would fail
                // the same way, so pause, and say so once per pause.
                let pause = self.now_ns() + SPAWN_PAUSE.as_nanos() as u64;
                self.spawn_paused_until.store(pause, Ordering::Relaxed);
                report!(
                    error,
                    {
                        error = %e,
                        workers = self.threads.load(Ordering::Relaxed),
                        pause = ?SPAWN_PAUSE,
                        "cannot start a worker thread"
                    },
                    target: "atoll",
                    "cannot start a worker thread ({} running): {e}; trying again in {SPAWN_PAUSE:?}",
                    self.threads.load(Ordering::Relaxed)
                );
                Err(e)
            }
        }
    }

    /// A worker summoned for queued work is at the queue: it has started,
    /// or woken from its park (not per run: only those two summon it).
    pub(super) fn arrived(&self, slot: &Slot) {
        if slot.summoned.load(Ordering::Relaxed) && slot.summoned.swap(false, Ordering::AcqRel) {
            self.coming.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Sleeps until handed work; `false` when the worker is one too many
    /// and has waited `keepalive` for nothing: it has left the pool.
    pub(super) fn park(&self, slot: &Arc<Slot>) -> bool {
        self.unblock(slot);
        *slot.parker.woken.lock() = false;
        {
            let mut idle = self.idle.lock();
            idle.push(slot.clone());
            slot.parked.store(true, Ordering::Relaxed);
            self.parked.fetch_add(1, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        if !self.rx.is_empty() || self.exiting.load(Ordering::Acquire) {
            self.unpark_self(slot);
            return true;
        }
        let mut woken = slot.parker.woken.lock();
        while !*woken {
            let timed_out = slot
                .parker
                .cv
                .wait_for(&mut woken, self.config.keepalive)
                .timed_out();
            if timed_out && !*woken && self.retire(slot) {
                return false;
            }
        }
        true
    }

    /// Takes a worker that parked off the idle list itself.
    fn unpark_self(&self, slot: &Arc<Slot>) {
        let mut idle = self.idle.lock();
        if let Some(i) = idle.iter().position(|s| Arc::ptr_eq(s, slot)) {
            idle.swap_remove(i);
            self.parked.fetch_sub(1, Ordering::SeqCst);
            slot.parked.store(false, Ordering::Relaxed);
        }
        // Otherwise a waker took it and set `woken`: nothing to undo.
    }

    /// Removes a parked worker beyond the base count from the pool.
    fn retire(&self, slot: &Arc<Slot>) -> bool {
        let mut idle = self.idle.lock();
        let Some(i) = idle.iter().position(|s| Arc::ptr_eq(s, slot)) else {
            return false; // being woken
        };
        let base = self.config.base;
        if self
            .threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t > base).then(|| t - 1)
            })
            .is_err()
        {
            return false;
        }
        idle.swap_remove(i);
        self.parked.fetch_sub(1, Ordering::SeqCst);
        drop(idle);
        self.slots.give_back(slot);
        true
    }
}
