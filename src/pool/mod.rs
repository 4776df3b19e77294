//! The worker pool: threads that collect the connections' readiness
//! themselves and run their callbacks, and that grow in number when
//! callbacks block. It owns the connections' epoll, their slab and the run
//! queue; it never touches a listener, a timer or the limiter, and sees a
//! connection only as a [`Task`].
//!
//! # How work reaches a worker
//!
//! One worker at a time is the *poller*: it waits in `epoll_wait` on every
//! connection's descriptor. When readiness arrives it keeps one connection
//! and runs it itself, on the thread that saw the event, with no hand-over;
//! the rest go to the run queue, and one parked worker is woken if fewer
//! than the base count are at work (when it wakes or starts one, the
//! connection it would keep is queued too: see `collect`). A worker that
//! finds the queue empty becomes the poller if nobody is, and parks
//! otherwise. Under load the poller's `epoll_wait` finds events already
//! waiting, so a round trip costs no context switch.
//!
//! # Callbacks that block
//!
//! A run that lasts longer than `blocking_after` marks its connection
//! *slow*. The poller never runs a slow connection itself: it queues it and
//! wakes a parked worker for it, or starts a new one (up to `max`), and
//! goes back to polling, so one connection's blocking call never holds the
//! others' readiness. A callback that blocks without warning (its
//! connection was fast until now) is caught by the monitor thread, which
//! ticks every `blocking_after` while callbacks run (but for dedicated
//! workers', below): when every worker that is not parked has been in one
//! callback for longer than that, and work waits or nobody polls, it wakes
//! a parked worker, or starts one if a callback sleeps in the kernel.
//! Workers beyond the base count exit after `keepalive` without work.
//!
//! A worker that takes up a connection already marked slow claims it
//! (waking or starting another in its place if more work waits than
//! workers are on their way to it, or no other worker is free to poll)
//! and, after the run, stays with it while it keeps blocking
//! (*dedicated*): it
//! takes the descriptor out of the pool's epoll and waits on it in an epoll
//! of its own, as a thread per connection would in `read`, so a request
//! wakes that one thread and no other. Whatever else makes the connection
//! runnable is handed to that worker, so only it runs the connection.
//!
//! # Sources
//!
//! A descriptor that is not a task's (a UDP socket) can be watched too, as
//! a [`Source`]: the poller that sees it ready calls it, and runs or queues
//! the tasks it made runnable like those of any other readiness, so a
//! datagram reaches its session's callback on the thread that received it.

use std::io;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use parking_lot::{Condvar, Mutex, RwLock};

use self::counts::{Counted, DispatchCounts};
use self::slab::Slab;
use self::slots::Slots;
pub(crate) use self::source::Source;
use self::source::Watched;
use crate::socket::READ_CHUNK;
use crate::stats::Traffic;

mod counts;
mod dedicate;
mod monitor;
mod slab;
mod slots;
mod source;
mod threads;

/// The waker's token in the pool's epoll; no slab token reaches it.
const WAKER: Token = Token(usize::MAX);
/// The first source's token; slab tokens stay far below it.
const FIRST_SOURCE: usize = usize::MAX / 2;
/// Fast connections a poll that found readiness already there (the pool
/// is busy) must queue before it wakes a parked worker.
const WAKE_FOR: usize = 4;
/// How long, in nanoseconds, a connection waits in the queue before the
/// worker that takes it up wakes a parked one (when fewer than the base
/// count are at work and more wait). A poll that slept (the pool was idle)
/// wakes nobody for fast work: its batch goes to other workers only once
/// it has waited this long.
const WAKE_AFTER_NS: u64 = 500_000;
/// Events taken from `epoll_wait` at once.
const EVENTS: usize = 1024;
/// An `epoll_wait` that took longer than this, in nanoseconds, slept (one
/// that returns at once takes about a microsecond; a sleep and a wake-up
/// take longer).
const SLEPT_NS: u64 = 5_000;
/// How long starting workers pauses after the system refused a thread.
const SPAWN_PAUSE: Duration = Duration::from_secs(1);

/// How the pool sizes itself.
#[derive(Clone, Debug)]
pub(crate) struct PoolConfig {
    /// Workers started with the server and kept for its life.
    pub(crate) base: usize,
    /// The most workers at once.
    pub(crate) max: usize,
    /// How long a worker beyond `base` waits for work before it exits.
    pub(crate) keepalive: Duration,
    /// How long a run may last before it counts as blocking.
    pub(crate) blocking_after: Duration,
}

/// What the pool runs (a connection), seen only through this.
pub(crate) trait Task: Send + Sync + 'static {
    /// Its token in the pool's slab and epoll.
    fn token(&self) -> Token;
    /// The pool's bookkeeping kept inside it.
    fn dispatch(&self) -> &Dispatch;
    /// Readiness arrived (`hangup`: the peer closed or the socket failed);
    /// `true` when the caller must queue or run it.
    fn ready(&self, hangup: bool) -> bool;
    /// Runs it on this worker, which took it up `at`, `waited` after it
    /// became runnable; returns the bytes it received and sent meanwhile.
    fn run(self: &Arc<Self>, buf: &mut [u8], waited: Duration, at: Instant) -> Traffic;
    /// Its own descriptor, while it has one open (a worker may wait on it).
    fn fd(&self) -> Option<std::os::fd::RawFd>;
    /// Whether it may run again: not ended, not handed elsewhere.
    fn is_open(&self) -> bool;
}

/// The pool's bookkeeping inside each task.
#[derive(Default)]
pub(crate) struct Dispatch {
    /// When it last became runnable, in nanoseconds of the pool's clock:
    /// the start of its dispatch wait.
    queued_at: AtomicU64,
    /// Its last run lasted longer than `blocking_after`: the poller hands
    /// it to another worker rather than run it itself.
    slow: AtomicBool,
    /// Its last run was long and slept, once: a second such run in a row
    /// marks it slow (one alone may be a preemption around a short sleep).
    suspect: AtomicBool,
    /// A worker is dedicated to it (`owner` is set): read before locking
    /// `owner`, so that a task nobody owns costs one load.
    owned: AtomicBool,
    /// The worker dedicated to it.
    owner: Mutex<Option<Arc<Slot>>>,
    /// The right to run it was handed to its owner, which has not yet
    /// taken it up.
    handed: AtomicBool,
}

impl Dispatch {
    fn queued(&self, now: u64) {
        self.queued_at.store(now, Ordering::Relaxed);
    }

    fn queued_at(&self) -> u64 {
        self.queued_at.load(Ordering::Relaxed)
    }

    fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    fn set_slow(&self, slow: bool) {
        if self.is_slow() != slow {
            self.slow.store(slow, Ordering::Relaxed);
        }
    }
}

/// Where a thread sleeps until it is handed something.
#[derive(Default)]
struct Parker {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Parker {
    fn unpark(&self) {
        *self.woken.lock() = true;
        self.cv.notify_one();
    }
}

/// One worker, as the others and the monitor see it; kept for the next
/// worker when it retires. Aligned so that no two slots share a cache
/// line (nor a pair the CPU fetches together): the table makes them side
/// by side, and each worker writes its own at every run.
#[derive(Default)]
#[repr(align(128))]
struct Slot {
    /// Its place in the pool's table of slots.
    index: usize,
    /// A worker holds it.
    live: AtomicBool,
    /// When its current run started, in nanoseconds since the pool's
    /// epoch; 0 between runs. The pool keeps no count of the workers in a
    /// run, which every run would write: the monitor and the statistics
    /// count these.
    busy_since: AtomicU64,
    /// Counted in `Pool::blocked`: its run is slow (known or seen).
    blocked: AtomicBool,
    /// The `busy_since` of the last run the monitor started a worker for
    /// (read and written by the monitor alone).
    grown_for: AtomicU64,
    parked: AtomicBool,
    /// Woken or started for queued work (counted in `Pool::coming`) and
    /// not yet at the queue.
    summoned: AtomicBool,
    parker: Parker,
    /// Its thread's kernel id, for the monitor to see whether it sleeps.
    tid: AtomicI32,
    /// The token of the connection it runs.
    token: AtomicUsize,
    /// Its runs and their dispatch waits: written by this worker alone, so
    /// that counting costs no cache line shared with the other workers.
    counts: DispatchCounts,
    /// Dedicated to a slow task: it waits on that task's socket.
    dedicated: AtomicBool,
    /// While dedicated, when its task's last run ended (`now_ns`): the
    /// monitor sends it back once the task has been quiet for
    /// `DEDICATED_WAIT`.
    active_at: AtomicU64,
    /// Its thread's voluntary context switches when it last woke from a
    /// wait of its own: a long run after which there are more slept in
    /// its callback.
    slept: AtomicU64,
    /// What wakes it while dedicated (an eventfd, closed when it stops).
    wake: Mutex<Option<std::fs::File>>,
}

impl Slot {
    fn new(index: usize) -> Arc<Slot> {
        Arc::new(Slot {
            index,
            ..Slot::default()
        })
    }

    /// Its thread just woke from a wait of its own.
    fn woke(&self) {
        let switches = crate::sys::voluntary_switches();
        self.slept.store(switches, Ordering::Relaxed);
    }

    /// Whether its thread slept since it last woke, outside its own waits:
    /// in a callback. Counts from now on.
    fn slept_in_run(&self) -> bool {
        let before = self.slept.load(Ordering::Relaxed);
        self.woke();
        self.slept.load(Ordering::Relaxed) > before
    }
}

/// The pool's counters, read by `Server::stats`.
#[derive(Default)]
pub(crate) struct PoolStats {
    pub(crate) workers: usize,
    pub(crate) busy: usize,
    pub(crate) blocked: usize,
    pub(crate) queued: usize,
    pub(crate) dispatches: u64,
    pub(crate) dispatch_wait: Duration,
    pub(crate) saturations: u64,
    pub(crate) traffic: Traffic,
}

pub(crate) struct Pool<T> {
    config: PoolConfig,
    tx: Sender<Arc<T>>,
    rx: Receiver<Arc<T>>,
    /// Held by the poller while it polls and collects. The epoll, its
    /// registry and its waker are closed at shutdown (`None`), so that a
    /// stopped server holds no descriptor.
    poll: Mutex<Option<Poll>>,
    registry: RwLock<Option<Registry>>,
    waker: RwLock<Option<Waker>>,
    pub(crate) slab: Mutex<Slab<T>>,
    /// Replaced whole on a change, so that a poller takes a snapshot
    /// without copying it.
    sources: RwLock<Arc<Vec<Arc<Watched<T>>>>>,
    /// Sources that asked for another turn.
    sources_again: AtomicUsize,
    next_source: AtomicUsize,
    epoch: Instant,
    /// Parked workers, the last parked on top (woken first: its cache is
    /// warm, and the others time out and exit).
    idle: Mutex<Vec<Arc<Slot>>>,
    parked: AtomicUsize,
    /// The poller is in (or about to enter) `epoll_wait` and must be woken
    /// for queued work.
    poller_waiting: AtomicBool,
    /// Live workers, counted before they start.
    threads: AtomicUsize,
    /// Workers woken or started for queued work that have not yet looked
    /// at the queue: a worker that stays with a slow task leaves the rest
    /// to them, and starts another only for the tasks beyond.
    coming: AtomicUsize,
    /// Workers in a slow run or dedicated to a slow task.
    blocked: AtomicUsize,
    /// Workers dedicated to a slow task.
    dedicated: AtomicUsize,
    /// Dedicated workers the monitor asked back to the queue.
    recalls: AtomicUsize,
    slots: Slots,
    handles: Mutex<Vec<JoinHandle<()>>>,
    names: AtomicUsize,
    exiting: AtomicBool,
    monitor: Parker,
    monitor_asleep: AtomicBool,
    saturations: AtomicU64,
    /// The pool's clock until which no worker is started, after a failure.
    spawn_paused_until: AtomicU64,
}

impl<T: Task> Pool<T> {
    /// Makes the pool and starts its base workers and its monitor.
    pub(crate) fn start(config: PoolConfig) -> io::Result<Arc<Pool<T>>> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let registry = poll.registry().try_clone()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let slots = Slots::new(config.max);
        let pool = Arc::new(Pool {
            config,
            tx,
            rx,
            poll: Mutex::new(Some(poll)),
            registry: RwLock::new(Some(registry)),
            waker: RwLock::new(Some(waker)),
            slab: Mutex::new(Slab::new()),
            sources: RwLock::new(Arc::new(Vec::new())),
            sources_again: AtomicUsize::new(0),
            next_source: AtomicUsize::new(FIRST_SOURCE),
            epoch: Instant::now(),
            idle: Mutex::new(Vec::new()),
            parked: AtomicUsize::new(0),
            poller_waiting: AtomicBool::new(false),
            threads: AtomicUsize::new(0),
            coming: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            dedicated: AtomicUsize::new(0),
            recalls: AtomicUsize::new(0),
            slots,
            handles: Mutex::new(Vec::new()),
            names: AtomicUsize::new(0),
            exiting: AtomicBool::new(false),
            monitor: Parker::default(),
            monitor_asleep: AtomicBool::new(false),
            saturations: AtomicU64::new(0),
            spawn_paused_until: AtomicU64::new(0),
        });
        for _ in 0..pool.config.base {
            pool.spawn_worker(false)?;
        }
        let monitor = pool.clone();
        let handle = thread::Builder::new()
            .name("atoll-monitor".into())
            .spawn(move || monitor.monitor())?;
        pool.handles.lock().push(handle);
        Ok(pool)
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Watches a connection's descriptor for readability, edge-triggered,
    /// for good.
    pub(crate) fn register(&self, fd: std::os::fd::RawFd, token: Token) -> io::Result<()> {
        match self.registry.read().as_ref() {
            Some(registry) => registry.register(&mut SourceFd(&fd), token, Interest::READABLE),
            None => Err(io::Error::other("the server is stopping")),
        }
    }

    /// Stops watching a descriptor (a detached connection's).
    pub(crate) fn deregister(&self, fd: std::os::fd::RawFd) {
        if let Some(registry) = self.registry.read().as_ref() {
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
    }

    /// Wakes the poller from `epoll_wait`.
    fn wake_poller(&self) {
        if let Some(waker) = self.waker.read().as_ref() {
            let _ = waker.wake();
        }
    }

    /// Every live task.
    pub(crate) fn tasks(&self) -> Vec<Arc<T>> {
        self.slab.lock().iter().cloned().collect()
    }

    /// Forgets a closed connection.
    pub(crate) fn remove(&self, token: Token) {
        self.slab.lock().remove(token);
    }

    /// Queues a task that has work (the caller found it idle when it
    /// marked the work) and makes sure a worker will take it.
    pub(crate) fn schedule(self: &Arc<Self>, conn: Arc<T>) {
        conn.dispatch().queued(self.now_ns());
        if conn.dispatch().hand_to_owner(None) {
            return;
        }
        let slow = conn.dispatch().is_slow();
        if self.tx.send(conn).is_err() {
            return; // cannot happen: the pool holds the receiver
        }
        // Pairs with the fences in `park` and `poll_once`: either the
        // sleeper sees the queued connection, or we see the sleeper.
        fence(Ordering::SeqCst);
        let handed = if slow {
            self.hand_out(1) > 0
        } else {
            self.wake_for_fast()
        };
        if !handed && self.poller_waiting.load(Ordering::SeqCst) {
            self.wake_poller();
        }
    }

    /// Finds up to `n` workers for queued slow connections: parked ones
    /// woken, or new ones; returns how many it found. The caller is not
    /// counted: it polls again.
    ///
    /// A worker between two runs would look at the queue too, but one
    /// that just ended a run may be on its way to a connection of its own
    /// (to stay with it) instead, so it is counted on only at the cap,
    /// where no worker can be started: a thread started for work that
    /// another took parks, and exits after `keepalive`.
    fn hand_out(self: &Arc<Self>, n: usize) -> usize {
        let mut found = 0;
        while found < n && self.summon() {
            found += 1;
        }
        if found == n {
            return found;
        }
        let taken = self.running()
            + self.parked.load(Ordering::SeqCst)
            + self.dedicated.load(Ordering::SeqCst)
            + 1;
        let between_runs = self.threads.load(Ordering::Relaxed).saturating_sub(taken);
        n.min(found + between_runs)
    }

    /// Wakes a parked worker for fast work if `fast_wake_wanted`.
    fn wake_for_fast(&self) -> bool {
        self.fast_wake_wanted() && self.wake_parked(false)
    }

    /// Whether fewer than the base count are at work (neither parked nor
    /// in a slow run) while a worker is parked.
    fn fast_wake_wanted(&self) -> bool {
        let parked = self.parked.load(Ordering::SeqCst);
        if parked == 0 {
            return false;
        }
        let threads = self.threads.load(Ordering::Relaxed);
        let blocked = self.blocked.load(Ordering::Relaxed);
        threads.saturating_sub(parked + blocked) < self.config.base
    }

    /// A worker's life: run queued connections, else poll, else park.
    fn work(self: Arc<Self>, slot: Arc<Slot>) {
        slot.tid.store(crate::sys::thread_id(), Ordering::Relaxed);
        slot.woke();
        self.arrived(&slot);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut events = Events::with_capacity(EVENTS);
        let mut batch = Vec::new();
        let mut back_to_polling = false;
        loop {
            if self.exiting.load(Ordering::Acquire) {
                break;
            }
            if !back_to_polling {
                if let Ok(conn) = self.rx.try_recv() {
                    self.serve(&slot, &conn, &mut buf);
                    continue;
                }
            }
            if let Some(mut poll) = self.poll.try_lock() {
                let Some(epoll) = poll.as_mut() else {
                    break; // closed: the pool is shutting down
                };
                let polled = self.poll_once(&slot, epoll, &mut events, back_to_polling);
                drop(poll);
                let mine = self.collect(polled, &events, &mut batch);
                back_to_polling = false;
                match mine {
                    Polled::Run(conn) => self.serve(&slot, &conn, &mut buf),
                    Polled::HandedOut => back_to_polling = true,
                    Polled::Nothing => {}
                }
                continue;
            }
            back_to_polling = false;
            if !self.park(&slot) {
                return; // retired: its slot is gone
            }
            slot.woke();
            self.arrived(&slot);
        }
        self.threads.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits for readiness: not at all when work is queued, unless `block`
    /// (the queued work was just handed to workers woken for it).
    fn poll_once(
        &self,
        slot: &Slot,
        poll: &mut Poll,
        events: &mut Events,
        block: bool,
    ) -> io::Result<bool> {
        self.poller_waiting.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let idle = block || (self.rx.is_empty() && self.sources_again.load(Ordering::Relaxed) == 0);
        let timeout = (!idle || self.exiting.load(Ordering::Acquire)).then_some(Duration::ZERO);
        let since = timeout.is_none().then(|| self.now_ns());
        let polled = poll.poll(events, timeout);
        self.poller_waiting.store(false, Ordering::SeqCst);
        // A wait this long slept: count from here (under load the events
        // are already there, and this costs no system call).
        let slept = since.is_some_and(|since| self.now_ns() - since > SLEPT_NS);
        if slept {
            slot.woke();
        }
        polled.map(|()| slept)
    }

    /// Turns readiness into runnable connections: keeps one fast one for
    /// the poller, queues the rest, and wakes or starts workers for the
    /// slow ones.
    fn collect(
        self: &Arc<Self>,
        polled: io::Result<bool>,
        events: &Events,
        batch: &mut Vec<Arc<T>>,
    ) -> Polled<T> {
        let slept = match polled {
            Ok(slept) => slept,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    report!(error, { error = %e, "epoll_wait failed" }, target: "atoll", "epoll_wait failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
                return Polled::Nothing;
            }
        };
        let mut sources = false;
        {
            let slab = self.slab.lock();
            for event in events.iter() {
                let token = event.token();
                if token.0 >= FIRST_SOURCE && token != WAKER {
                    sources = true;
                    continue;
                }
                let Some(conn) = slab.get(token) else {
                    continue; // the waker, or a connection gone meanwhile
                };
                if conn.ready(event.is_read_closed() || event.is_error()) {
                    batch.push(conn.clone());
                }
            }
        }
        // Outside the slab's lock: a source may add tasks to it.
        if sources || self.sources_again.load(Ordering::Relaxed) > 0 {
            self.serve_sources(events, batch);
        }
        if batch.is_empty() {
            return Polled::Nothing;
        }
        let now = self.now_ns();
        let mut mine = None;
        let (mut fast, mut slow) = (0, 0);
        for conn in batch.drain(..) {
            conn.dispatch().queued(now);
            let is_slow = conn.dispatch().is_slow();
            if mine.is_none() && !is_slow {
                mine = Some(conn);
                continue;
            }
            if is_slow {
                slow += 1;
            } else {
                fast += 1;
            }
            let _ = self.tx.send(conn);
        }
        fence(Ordering::SeqCst);
        // A parked worker costs a wake-up and, once the queue is empty, a
        // sleep: worth it for a batch that finds the pool busy, not for one
        // or two connections the poller runs in microseconds, nor for what
        // arrived while the pool slept (the load is light: redis-benchmark's
        // 50 clients under a CPU hog made 0.34 switches per request with
        // both workers taking turns at each burst, 0.19 with one). Work
        // that waits `WAKE_AFTER_NS` gets a worker all the same (`run`).
        let wake_fast = !slept && fast >= WAKE_FOR && self.fast_wake_wanted();
        // Waking or starting a worker is a system call, on whose return the
        // kernel may switch this thread out for the one it woke; on a
        // saturated CPU, a thread that has run more than its share (the
        // poller does) then waits until the others catch up, seconds with
        // a thousand threads. The connection it kept would wait as long:
        // it goes to the queue too, for whichever worker runs first (this
        // one, if no other: it looks at the queue next).
        if slow > 0 || wake_fast {
            if let Some(conn) = mine.take() {
                let _ = self.tx.send(conn);
                fast += 1;
            }
        }
        let handed = slow == 0 || self.hand_out(slow) == slow;
        if wake_fast {
            self.wake_parked(false);
        }
        match mine {
            Some(conn) => Polled::Run(conn),
            None if slow > 0 && handed && fast == 0 => Polled::HandedOut,
            None => Polled::Nothing,
        }
    }

    /// Runs one task, timing it from `start` (a reading of `now_ns`): the
    /// wait since it became runnable goes to the statistics, and a quick
    /// run clears its slow mark. Returns the run's end, or `start` when
    /// the task is owned by another worker and was handed to it instead.
    fn run(&self, slot: &Slot, conn: &Arc<T>, buf: &mut [u8], start: u64) -> u64 {
        let dispatch = conn.dispatch();
        // A dedicated worker runs only the task it owns.
        let dedicated = slot.dedicated.load(Ordering::Relaxed);
        if !dedicated && dispatch.hand_to_owner(Some(slot)) {
            return start;
        }
        slot.token.store(conn.token().0, Ordering::Relaxed);
        // A dedicated worker's runs are the monitor's concern only when
        // its task goes quiet (it looks at those every `DEDICATED_CHECK`).
        if dedicated {
            slot.busy_since.store(start.max(1), Ordering::Relaxed);
        } else {
            // Pairs with the monitor's store of `monitor_asleep` and its
            // look at the slots (`running`) before it sleeps: either it
            // sees this run, or this run sees it asleep and wakes it.
            slot.busy_since.store(start.max(1), Ordering::SeqCst);
            if self.monitor_asleep.load(Ordering::SeqCst)
                && self.monitor_asleep.swap(false, Ordering::SeqCst)
            {
                self.monitor.unpark();
            }
        }
        // (A dedicated worker is counted blocked while it stays.)
        if !dedicated && dispatch.is_slow() && !slot.blocked.swap(true, Ordering::AcqRel) {
            self.blocked.fetch_add(1, Ordering::Relaxed);
        }
        let waited = start.saturating_sub(dispatch.queued_at());
        if !dedicated && waited > WAKE_AFTER_NS && self.fast_wake_wanted() && !self.rx.is_empty() {
            self.wake_parked(false);
        }
        // Counted by this worker alone: no run writes a line that another
        // worker's run writes too.
        slot.counts.dispatched(waited);
        let at = self.epoch + Duration::from_nanos(start);
        slot.counts
            .moved(conn.run(buf, Duration::from_nanos(waited), at));
        let end = self.now_ns();
        let took = end.saturating_sub(start);
        slot.busy_since.store(0, Ordering::Relaxed);
        if !dedicated {
            self.unblock(slot);
        }
        // The monitor marks a connection slow when it finds its callback
        // asleep; a quick run clears the mark.
        if took < self.config.blocking_after.as_nanos() as u64 {
            dispatch.set_slow(false);
            dispatch.suspect.store(false, Ordering::Relaxed);
        } else if !dispatch.is_slow() && slot.slept_in_run() {
            // Long, and asleep in the kernel for part of it, twice in a row:
            // blocking (the monitor catches the runs that are still going).
            if dispatch.suspect.swap(true, Ordering::Relaxed) {
                dispatch.set_slow(true);
            }
        }
        end
    }

    /// Workers in a run, but for dedicated workers' runs.
    fn running(&self) -> usize {
        self.slots
            .live()
            .filter(|slot| {
                !slot.dedicated.load(Ordering::Relaxed)
                    && slot.busy_since.load(Ordering::SeqCst) != 0
            })
            .count()
    }

    fn unblock(&self, slot: &Slot) {
        if slot.blocked.swap(false, Ordering::AcqRel) {
            self.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let mut counted = Counted::default();
        let mut busy = 0;
        for slot in self.slots.all() {
            slot.counts.add_to(&mut counted);
            busy += usize::from(slot.busy_since.load(Ordering::Relaxed) != 0);
        }
        PoolStats {
            workers: self.threads.load(Ordering::Relaxed),
            busy,
            blocked: self.blocked.load(Ordering::Relaxed),
            queued: self.rx.len(),
            dispatches: counted.runs,
            dispatch_wait: Duration::from_nanos(counted.wait_ns),
            saturations: self.saturations.load(Ordering::Relaxed),
            traffic: counted.traffic,
        }
    }

    /// Stops every worker and the monitor, waiting up to `grace` for those
    /// still in a callback; drops what the pool holds, so that nothing
    /// keeps the server's shared state alive.
    pub(crate) fn shutdown(&self, grace: Duration) {
        self.exiting.store(true, Ordering::SeqCst);
        let parked: Vec<_> = std::mem::take(&mut *self.idle.lock());
        self.parked.store(0, Ordering::SeqCst);
        for slot in parked {
            slot.parker.unpark();
        }
        self.monitor_asleep.store(false, Ordering::SeqCst);
        self.monitor.unpark();
        self.wake_poller();
        self.wake_dedicated(usize::MAX);
        let handles: Vec<_> = std::mem::take(&mut *self.handles.lock());
        let until = Instant::now() + grace;
        let me = thread::current().id();
        for handle in handles {
            if handle.thread().id() == me {
                continue; // stop called from a callback: a thread cannot join itself
            }
            while !handle.is_finished() && Instant::now() < until {
                thread::sleep(Duration::from_millis(1));
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                let name = handle.thread().name().unwrap_or("a worker").to_string();
                report!(
                    error,
                    { worker = %name, "stop: a worker is stuck in a callback; left running" },
                    "atoll: stop: {name} is stuck in a callback; left running"
                );
            }
        }
        while self.rx.try_recv().is_ok() {}
        self.poll.lock().take();
        self.registry.write().take();
        self.waker.write().take();
        self.slab.lock().clear();
        *self.sources.write() = Arc::new(Vec::new());
    }
}

/// What a poll gave the poller to do.
enum Polled<T> {
    /// Run this connection.
    Run(Arc<T>),
    /// Slow connections were queued and workers woken for them: poll again.
    HandedOut,
    Nothing,
}
