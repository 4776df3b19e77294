//! The pool's monitor thread: notices callbacks that block, adds a worker
//! for the work waiting behind them, and reports saturation. Never runs a
//! task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;

use super::{Pool, Slot, Task};

/// Monitor ticks with no callback running after which it sleeps until one
/// starts.
const IDLE_TICKS: u32 = 64;
/// How long every worker must have been busy, with work waiting, before
/// the saturation warning is logged; and the least time between two.
const SATURATION_WARNING_AFTER: Duration = Duration::from_millis(500);
const SATURATION_WARNING_EVERY: Duration = Duration::from_secs(60);
/// How often the monitor, otherwise asleep, looks for dedicated workers
/// whose tasks have gone quiet.
const DEDICATED_CHECK: Duration = Duration::from_millis(250);

impl<T: Task> Pool<T> {
    /// The monitor: while callbacks run, checks every `blocking_after`
    /// that they are not all stuck with work waiting; adds a worker when
    /// they are.
    pub(super) fn monitor(self: Arc<Self>) {
        let tick = self.config.blocking_after;
        let after = tick.as_nanos() as u64;
        let mut idle_ticks = 0;
        let mut saturated_since: Option<Instant> = None;
        let mut counted = false;
        let mut warned: Option<Instant> = None;
        loop {
            {
                let mut woken = self.monitor.woken.lock();
                if !*woken {
                    self.monitor.cv.wait_for(&mut woken, tick);
                }
                *woken = false;
            }
            if self.exiting.load(Ordering::Acquire) {
                return;
            }
            let now = self.now_ns();
            // Is any worker free (neither parked nor in a callback), or in a
            // callback that started less than a tick ago? A callback that has
            // run longer is blocking if its thread sleeps in the kernel. One
            // that computes, or waits for a CPU, is not: more threads would
            // not make it finish sooner, so it gets a parked worker at most.
            let (mut progress, mut blocking, mut running) = (false, false, false);
            // Runs newly found asleep in the kernel (not dedicated ones):
            // each is counted once, however long it sleeps.
            let mut newly_asleep = 0;
            for slot in self.slots.live() {
                // Dedicated to a slow task: taken, as if blocked; sent back
                // once its task is quiet.
                if slot.dedicated.load(Ordering::Relaxed) {
                    blocking = true;
                    if slot.busy_since.load(Ordering::Relaxed) == 0 && self.quiet(slot, now) {
                        slot.wake();
                    }
                    continue;
                }
                let since = slot.busy_since.load(Ordering::Relaxed);
                if since == 0 {
                    progress |= !slot.parked.load(Ordering::Relaxed);
                    continue;
                }
                running = true;
                if now.saturating_sub(since) < after {
                    progress = true;
                    continue;
                }
                let known = slot.blocked.load(Ordering::Relaxed);
                if !known && !slot.asleep_in_run(since) {
                    continue; // computing, or waiting for a CPU
                }
                blocking = true;
                newly_asleep += usize::from(slot.grown_for.swap(since, Ordering::Relaxed) != since);
                if !known {
                    if !slot.blocked.swap(true, Ordering::AcqRel) {
                        self.blocked.fetch_add(1, Ordering::Relaxed);
                    }
                    let token = Token(slot.token.load(Ordering::Relaxed));
                    if let Some(conn) = self.slab.lock().get(token) {
                        conn.dispatch().set_slow(true);
                    }
                }
            }
            let queued = !self.rx.is_empty();
            if queued && self.poller_waiting.load(Ordering::SeqCst) {
                // Work queued behind workers that have since blocked: the
                // poller, asleep in epoll_wait, counts as free only once it
                // looks at the queue.
                self.wake_poller();
            }
            let starved = queued || !self.poll.is_locked();
            let found = starved
                && !progress
                && (self.wake_parked(true) || (blocking && self.grow(newly_asleep)));
            let stuck = starved && !progress && !found;
            // Work found no worker for a tick and none could be woken or
            // started for it (the pool is at its cap, or its callbacks
            // compute rather than block): as many workers dedicated to slow
            // tasks come back as tasks wait (one to poll if none waits), and
            // serve every connection in turn.
            self.recall(if stuck { self.rx.len().max(1) } else { 0 });
            if stuck {
                // Saturated: every worker is busy, none can be added. Count
                // each episode that lasts; warn at most once a minute.
                let since = *saturated_since.get_or_insert_with(Instant::now);
                if !counted && since.elapsed() >= SATURATION_WARNING_AFTER {
                    counted = true;
                    self.saturations.fetch_add(1, Ordering::Relaxed);
                    if warned.map_or(true, |w| w.elapsed() >= SATURATION_WARNING_EVERY) {
                        warned = Some(Instant::now());
                        report!(
                            warn,
                            {
                                workers = self.threads.load(Ordering::Relaxed),
                                busy_for = ?since.elapsed(),
                                "all workers busy in callbacks with work waiting: raise \
                                 Builder::max_workers, or make the handlers block less"
                            },
                            target: "atoll",
                            "all {} workers have been busy in callbacks for {:?} with work \
                             waiting: raise Builder::max_workers, or make the handlers block less",
                            self.threads.load(Ordering::Relaxed),
                            since.elapsed()
                        );
                    }
                }
            } else {
                saturated_since = None;
                counted = false;
            }
            // Sleep until a callback starts once none has run for a while;
            // while workers are dedicated, look at them now and then.
            if !running && self.rx.is_empty() {
                idle_ticks += 1;
                if idle_ticks >= IDLE_TICKS {
                    idle_ticks = 0;
                    self.monitor_asleep.store(true, Ordering::SeqCst);
                    if self.running() == 0 {
                        let mut woken = self.monitor.woken.lock();
                        while !*woken && self.monitor_asleep.load(Ordering::SeqCst) {
                            if self.dedicated.load(Ordering::SeqCst) == 0 {
                                self.monitor.cv.wait(&mut woken);
                            } else if self
                                .monitor
                                .cv
                                .wait_for(&mut woken, DEDICATED_CHECK)
                                .timed_out()
                            {
                                // One tick and a look, then asleep again.
                                idle_ticks = IDLE_TICKS - 1;
                                break;
                            }
                        }
                    }
                    self.monitor_asleep.store(false, Ordering::SeqCst);
                }
            } else {
                idle_ticks = 0;
            }
        }
    }

    /// Every worker is stuck in a callback, with work waiting, and
    /// `newly_asleep` runs were found asleep in the kernel since the last
    /// tick: starts a worker for each, up to one per queued task (at least
    /// one). The new workers take up queued tasks and, if those block too,
    /// are counted at the next tick, so a burst of connections whose
    /// callbacks block gets its threads within a few ticks rather than one
    /// per tick, while a run that sleeps for many ticks is replaced once,
    /// not at every tick. Callbacks that compute get one per tick at most.
    /// `false` if none could be started.
    fn grow(self: &Arc<Self>, newly_asleep: usize) -> bool {
        let want = newly_asleep.min(self.rx.len()).max(1);
        (0..want)
            .take_while(|_| self.spawn_worker(true).is_ok())
            .count()
            > 0
    }
}

impl Slot {
    /// Whether its worker sleeps in the kernel inside its run that started
    /// at `since`. The run must still be that one once the state is read:
    /// a run the kernel held back may end just before the read, and its
    /// worker then sleep in its park or its poll, which is no callback's
    /// sleep (a fast connection was taken for a blocking one that way).
    fn asleep_in_run(&self, since: u64) -> bool {
        crate::sys::thread_sleeping(self.tid.load(Ordering::Relaxed)).unwrap_or(true)
            && self.busy_since.load(Ordering::SeqCst) == since
    }
}
