//! The worker pool: threads that collect the connections' readiness
//! themselves and run their callbacks, and that grow in number when
//! callbacks block. It owns the connections' epoll, their slab and the run
//! queue; it never touches a listener, a timer or the limiter.
//!
//! # How work reaches a worker
//!
//! One worker at a time is the *poller*: it waits in `epoll_wait` on every
//! connection's descriptor. When readiness arrives it keeps one connection
//! and runs it itself, on the thread that saw the event, with no hand-over;
//! the rest go to the run queue, and one parked worker is woken if fewer
//! than the base count are at work. A worker that finds the queue empty
//! becomes the poller if nobody is, and parks otherwise. Under load the
//! poller's `epoll_wait` finds events already waiting, so a round trip
//! costs no context switch.
//!
//! # Callbacks that block
//!
//! A run that lasts longer than `blocking_after` marks its connection
//! *slow*. The poller never runs a slow connection itself: it queues it and
//! wakes a parked worker for it, or starts a new one (up to `max`), and
//! goes back to polling, so one connection's blocking call never holds the
//! others' readiness. A callback that blocks without warning (its
//! connection was fast until now) is caught by the monitor thread, which
//! ticks every `blocking_after` while callbacks run: when every worker that
//! is not parked has been in one callback for longer than that, and work
//! waits or nobody polls, it wakes a parked worker, or starts one if a
//! callback sleeps in the kernel. Workers beyond the base count exit after
//! `keepalive` without work.

use std::io;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::connection::{Conn, HANGUP, READABLE};
use crate::driver;
use crate::handler::Handler;
use crate::socket::READ_CHUNK;

/// The waker's token in the pool's epoll; no slab token reaches it.
const WAKER: Token = Token(usize::MAX);
/// Fast connections a poll must queue before it wakes a parked worker.
const WAKE_FOR: usize = 4;
/// Events taken from `epoll_wait` at once.
const EVENTS: usize = 1024;
/// Monitor ticks with no callback running after which it sleeps until one
/// starts.
const IDLE_TICKS: u32 = 64;
/// How long every worker must have been busy, with work waiting, before
/// the saturation warning is logged; and the least time between two.
const SATURATION_WARNING_AFTER: Duration = Duration::from_millis(500);
const SATURATION_WARNING_EVERY: Duration = Duration::from_secs(60);
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

struct Entry<H, M> {
    generation: u32,
    conn: Option<Arc<Conn<H, M>>>,
}

/// The live connections. A token is the slot index in its low 32 bits and
/// the slot's generation in the high ones, so an event or timer for a
/// closed connection never reaches the one that reused its slot.
pub(crate) struct Slab<H, M> {
    entries: Vec<Entry<H, M>>,
    free: Vec<u32>,
}

impl<H, M> Slab<H, M> {
    fn new() -> Slab<H, M> {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    pub(crate) fn get(&self, token: Token) -> Option<&Arc<Conn<H, M>>> {
        let entry = self.entries.get(token.0 & 0xffff_ffff)?;
        if entry.generation as usize != token.0 >> 32 {
            return None;
        }
        entry.conn.as_ref()
    }

    pub(crate) fn vacant_token(&mut self) -> Token {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    conn: None,
                });
                self.entries.len() - 1
            }
        };
        Token(index | (self.entries[index].generation as usize) << 32)
    }

    pub(crate) fn fill(&mut self, token: Token, conn: Arc<Conn<H, M>>) {
        self.entries[token.0 & 0xffff_ffff].conn = Some(conn);
    }

    /// Frees a slot (filled or not) and retires its token.
    pub(crate) fn remove(&mut self, token: Token) {
        let index = token.0 & 0xffff_ffff;
        if let Some(entry) = self.entries.get_mut(index) {
            if entry.generation as usize == token.0 >> 32 {
                // Stays clear of the reserved token at the top of the range.
                entry.generation = (entry.generation + 1) % 0x7fff_ffff;
                entry.conn = None;
                self.free.push(index as u32);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Conn<H, M>>> {
        self.entries.iter().filter_map(|e| e.conn.as_ref())
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

/// One worker, as the others and the monitor see it.
#[derive(Default)]
struct Slot {
    /// When its current run started, in nanoseconds since the pool's
    /// epoch; 0 between runs.
    busy_since: AtomicU64,
    /// Counted in `Pool::blocked`: its run is slow (known or seen).
    blocked: AtomicBool,
    parked: AtomicBool,
    parker: Parker,
    /// Its thread's kernel id, for the monitor to see whether it sleeps.
    tid: AtomicI32,
    /// The token of the connection it runs.
    token: AtomicUsize,
    /// Its runs and their dispatch waits: written by this worker alone, so
    /// that counting costs no cache line shared with the other workers.
    counts: DispatchCounts,
}

/// Dispatches and the sum of their waits, in nanoseconds.
#[derive(Default)]
struct DispatchCounts {
    runs: AtomicU64,
    wait_ns: AtomicU64,
}

impl DispatchCounts {
    fn add(&self, runs: u64, wait_ns: u64) {
        self.runs.fetch_add(runs, Ordering::Relaxed);
        self.wait_ns.fetch_add(wait_ns, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        (
            self.runs.load(Ordering::Relaxed),
            self.wait_ns.load(Ordering::Relaxed),
        )
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
}

pub(crate) struct Pool<H, M> {
    config: PoolConfig,
    tx: Sender<Arc<Conn<H, M>>>,
    rx: Receiver<Arc<Conn<H, M>>>,
    /// Held by the poller while it polls and collects. The epoll, its
    /// registry and its waker are closed at shutdown (`None`), so that a
    /// stopped server holds no descriptor.
    poll: Mutex<Option<Poll>>,
    registry: RwLock<Option<Registry>>,
    waker: RwLock<Option<Waker>>,
    pub(crate) slab: Mutex<Slab<H, M>>,
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
    /// Workers in a slow run.
    blocked: AtomicUsize,
    busy: AtomicUsize,
    slots: Mutex<Vec<Arc<Slot>>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    names: AtomicUsize,
    exiting: AtomicBool,
    monitor: Parker,
    monitor_asleep: AtomicBool,
    /// The dispatch counts of workers that retired.
    retired: DispatchCounts,
    saturations: AtomicU64,
    /// The pool's clock until which no worker is started, after a failure.
    spawn_paused_until: AtomicU64,
}

impl<H: Handler<M>, M: Send + 'static> Pool<H, M> {
    /// Makes the pool and starts its base workers and its monitor.
    pub(crate) fn start(config: PoolConfig) -> io::Result<Arc<Pool<H, M>>> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let registry = poll.registry().try_clone()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool = Arc::new(Pool {
            config,
            tx,
            rx,
            poll: Mutex::new(Some(poll)),
            registry: RwLock::new(Some(registry)),
            waker: RwLock::new(Some(waker)),
            slab: Mutex::new(Slab::new()),
            epoch: Instant::now(),
            idle: Mutex::new(Vec::new()),
            parked: AtomicUsize::new(0),
            poller_waiting: AtomicBool::new(false),
            threads: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            slots: Mutex::new(Vec::new()),
            handles: Mutex::new(Vec::new()),
            names: AtomicUsize::new(0),
            exiting: AtomicBool::new(false),
            monitor: Parker::default(),
            monitor_asleep: AtomicBool::new(false),
            retired: DispatchCounts::default(),
            saturations: AtomicU64::new(0),
            spawn_paused_until: AtomicU64::new(0),
        });
        for _ in 0..pool.config.base {
            pool.spawn_worker()?;
        }
        let monitor = pool.clone();
        let handle = thread::Builder::new()
            .name("atoll-monitor".into())
            .spawn(move || monitor.monitor())?;
        pool.handles.lock().push(handle);
        Ok(pool)
    }

    pub(crate) fn now_ns(&self) -> u64 {
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

    /// Every live connection.
    pub(crate) fn connections(&self) -> Vec<Arc<Conn<H, M>>> {
        self.slab.lock().iter().cloned().collect()
    }

    /// Forgets a closed connection.
    pub(crate) fn remove(&self, token: Token) {
        self.slab.lock().remove(token);
    }

    /// Queues a connection that has work (the caller set its `SCHEDULED`
    /// bit) and makes sure a worker will take it.
    pub(crate) fn schedule(self: &Arc<Self>, conn: Arc<Conn<H, M>>) {
        let slow = conn.is_slow();
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
    /// woken, workers between two runs (they look at the queue before they
    /// park or poll), or new ones; returns how many it found. The caller
    /// is not counted: it polls again.
    fn hand_out(self: &Arc<Self>, n: usize) -> usize {
        let threads = self.threads.load(Ordering::Relaxed);
        let taken = self.busy.load(Ordering::Relaxed) + self.parked.load(Ordering::SeqCst) + 1;
        // Starting a thread for work that a worker about to finish its run
        // would take grows the pool past what the blocking needs.
        let mut between_runs = threads.saturating_sub(taken);
        let mut found = 0;
        while found < n {
            if !self.wake_parked() {
                if between_runs > 0 {
                    between_runs -= 1;
                } else if self.spawn_worker().is_err() {
                    break;
                }
            }
            found += 1;
        }
        found
    }

    /// Wakes a parked worker for fast work when fewer than the base count
    /// are at work (neither parked nor in a slow run).
    fn wake_for_fast(&self) -> bool {
        let parked = self.parked.load(Ordering::SeqCst);
        if parked == 0 {
            return false;
        }
        let threads = self.threads.load(Ordering::Relaxed);
        let blocked = self.blocked.load(Ordering::Relaxed);
        if threads.saturating_sub(parked + blocked) >= self.config.base {
            return false;
        }
        self.wake_parked()
    }

    fn wake_parked(&self) -> bool {
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
        slot.parker.unpark();
        true
    }

    /// Starts one more worker, if the cap allows.
    fn spawn_worker(self: &Arc<Self>) -> io::Result<()> {
        if self.now_ns() < self.spawn_paused_until.load(Ordering::Relaxed) {
            return Err(io::Error::other("starting workers is paused after a failure"));
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
        let slot = Arc::new(Slot::default());
        self.slots.lock().push(slot.clone());
        let pool = self.clone();
        let mine = slot.clone();
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        let spawned = thread::Builder::new()
            .name(format!("atoll-worker-{n}"))
            .spawn(move || pool.work(mine));
        match spawned {
            Ok(handle) => {
                let mut handles = self.handles.lock();
                // Join the workers that retired since.
                let (done, live): (Vec<_>, Vec<_>) =
                    handles.drain(..).partition(|h| h.is_finished());
                *handles = live;
                handles.push(handle);
                drop(handles);
                for h in done {
                    let _ = h.join();
                }
                Ok(())
            }
            Err(e) => {
                self.threads.fetch_sub(1, Ordering::AcqRel);
                self.slots.lock().retain(|s| !Arc::ptr_eq(s, &slot));
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

    /// A worker's life: run queued connections, else poll, else park.
    fn work(self: Arc<Self>, slot: Arc<Slot>) {
        slot.tid.store(crate::sys::thread_id(), Ordering::Relaxed);
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
                    self.run(&slot, conn, &mut buf);
                    continue;
                }
            }
            if let Some(mut poll) = self.poll.try_lock() {
                let Some(epoll) = poll.as_mut() else {
                    break; // closed: the pool is shutting down
                };
                let polled = self.poll_once(epoll, &mut events, back_to_polling);
                drop(poll);
                let mine = self.collect(polled, &events, &mut batch);
                back_to_polling = false;
                match mine {
                    Polled::Run(conn) => self.run(&slot, conn, &mut buf),
                    Polled::HandedOut => back_to_polling = true,
                    Polled::Nothing => {}
                }
                continue;
            }
            back_to_polling = false;
            if !self.park(&slot) {
                return; // retired: its slot is gone
            }
        }
        self.threads.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits for readiness: not at all when work is queued, unless `block`
    /// (the queued work was just handed to workers woken for it).
    fn poll_once(&self, poll: &mut Poll, events: &mut Events, block: bool) -> io::Result<()> {
        self.poller_waiting.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let idle = block || self.rx.is_empty();
        let timeout = (!idle || self.exiting.load(Ordering::Acquire)).then_some(Duration::ZERO);
        let polled = poll.poll(events, timeout);
        self.poller_waiting.store(false, Ordering::SeqCst);
        polled
    }

    /// Turns readiness into runnable connections: keeps one fast one for
    /// the poller, queues the rest, and wakes or starts workers for the
    /// slow ones.
    fn collect(
        self: &Arc<Self>,
        polled: io::Result<()>,
        events: &Events,
        batch: &mut Vec<Arc<Conn<H, M>>>,
    ) -> Polled<H, M> {
        if let Err(e) = polled {
            if e.kind() != io::ErrorKind::Interrupted {
                report!(error, { error = %e, "epoll_wait failed" }, target: "atoll", "epoll_wait failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
            return Polled::Nothing;
        }
        if events.is_empty() {
            return Polled::Nothing;
        }
        let now = self.now_ns();
        {
            let slab = self.slab.lock();
            for event in events.iter() {
                let Some(conn) = slab.get(event.token()) else {
                    continue; // the waker, or a connection gone meanwhile
                };
                let mut flags = READABLE;
                if event.is_read_closed() || event.is_error() {
                    flags |= HANGUP;
                }
                if conn.mark(flags, now) {
                    batch.push(conn.clone());
                }
            }
        }
        let mut mine = None;
        let (mut fast, mut slow) = (0, 0);
        for conn in batch.drain(..) {
            let is_slow = conn.is_slow();
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
        let handed = slow == 0 || self.hand_out(slow) == slow;
        // A parked worker costs a wake-up and, once the queue is empty, a
        // sleep: worth it for a batch, not for one or two connections the
        // poller runs in microseconds.
        if fast >= WAKE_FOR {
            self.wake_for_fast();
        }
        match mine {
            Some(conn) => Polled::Run(conn),
            None if slow > 0 && handed && fast == 0 => Polled::HandedOut,
            None => Polled::Nothing,
        }
    }

    /// Runs one connection, timing it: the wait since it became runnable
    /// goes to the statistics, and a quick run clears its slow mark.
    fn run(&self, slot: &Slot, conn: Arc<Conn<H, M>>, buf: &mut [u8]) {
        let start = self.now_ns();
        self.busy.fetch_add(1, Ordering::SeqCst);
        if self.monitor_asleep.load(Ordering::SeqCst)
            && self.monitor_asleep.swap(false, Ordering::SeqCst)
        {
            self.monitor.unpark();
        }
        slot.token.store(conn.token.0, Ordering::Relaxed);
        slot.busy_since.store(start.max(1), Ordering::Relaxed);
        if conn.is_slow() && !slot.blocked.swap(true, Ordering::AcqRel) {
            self.blocked.fetch_add(1, Ordering::Relaxed);
        }
        let waited = start.saturating_sub(conn.queued_at());
        slot.counts.add(1, waited);
        let at = self.epoch + Duration::from_nanos(start);
        driver::run(&conn, buf, Duration::from_nanos(waited), at);
        let took = self.now_ns().saturating_sub(start);
        slot.busy_since.store(0, Ordering::Relaxed);
        self.unblock(slot);
        self.busy.fetch_sub(1, Ordering::Relaxed);
        // The monitor marks a connection slow when it finds its callback
        // asleep; a quick run clears the mark.
        if took < self.config.blocking_after.as_nanos() as u64 {
            conn.set_slow(false);
        }
    }

    fn unblock(&self, slot: &Slot) {
        if slot.blocked.swap(false, Ordering::AcqRel) {
            self.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sleeps until handed work; `false` when the worker is one too many
    /// and has waited `keepalive` for nothing: it has left the pool.
    fn park(&self, slot: &Arc<Slot>) -> bool {
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
        // Its counts move to the retired ones under the slots' lock, so a
        // reader of the statistics sees them once.
        let mut slots = self.slots.lock();
        let (runs, wait_ns) = slot.counts.get();
        self.retired.add(runs, wait_ns);
        slots.retain(|s| !Arc::ptr_eq(s, slot));
        true
    }

    /// The monitor: while callbacks run, checks every `blocking_after`
    /// that they are not all stuck with work waiting; adds a worker when
    /// they are.
    fn monitor(self: Arc<Self>) {
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
            let (mut progress, mut blocking) = (false, false);
            for slot in self.slots.lock().iter() {
                let since = slot.busy_since.load(Ordering::Relaxed);
                if since == 0 {
                    progress |= !slot.parked.load(Ordering::Relaxed);
                    continue;
                }
                let busy = now.saturating_sub(since);
                if busy < after {
                    progress = true;
                    continue;
                }
                if slot.blocked.load(Ordering::Relaxed) {
                    blocking = true;
                    continue;
                }
                let asleep =
                    crate::sys::thread_sleeping(slot.tid.load(Ordering::Relaxed)).unwrap_or(true);
                if asleep {
                    blocking = true;
                    if !slot.blocked.swap(true, Ordering::AcqRel) {
                        self.blocked.fetch_add(1, Ordering::Relaxed);
                    }
                    let token = Token(slot.token.load(Ordering::Relaxed));
                    if let Some(conn) = self.slab.lock().get(token) {
                        conn.set_slow(true);
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
                && (self.wake_parked() || (blocking && self.spawn_worker().is_ok()));
            if starved && !progress && !found {
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
            // Sleep until a callback starts once none has run for a while.
            if self.busy.load(Ordering::SeqCst) == 0 && self.rx.is_empty() {
                idle_ticks += 1;
                if idle_ticks >= IDLE_TICKS {
                    idle_ticks = 0;
                    self.monitor_asleep.store(true, Ordering::SeqCst);
                    if self.busy.load(Ordering::SeqCst) == 0 {
                        let mut woken = self.monitor.woken.lock();
                        while !*woken && self.monitor_asleep.load(Ordering::SeqCst) {
                            self.monitor.cv.wait(&mut woken);
                        }
                    }
                    self.monitor_asleep.store(false, Ordering::SeqCst);
                }
            } else {
                idle_ticks = 0;
            }
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let slots = self.slots.lock();
        let (mut dispatches, mut wait_ns) = self.retired.get();
        for slot in slots.iter() {
            let (runs, wait) = slot.counts.get();
            dispatches += runs;
            wait_ns += wait;
        }
        PoolStats {
            workers: self.threads.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
            queued: self.rx.len(),
            dispatches,
            dispatch_wait: Duration::from_nanos(wait_ns),
            saturations: self.saturations.load(Ordering::Relaxed),
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
        let mut slab = self.slab.lock();
        slab.entries.clear();
        slab.free.clear();
    }
}

/// What a poll gave the poller to do.
enum Polled<H, M> {
    /// Run this connection.
    Run(Arc<Conn<H, M>>),
    /// Slow connections were queued and workers woken for them: poll again.
    HandedOut,
    Nothing,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Handler for Nothing {}

    #[test]
    fn a_reused_slot_gets_a_new_token_and_the_old_token_finds_nothing() {
        let mut slab: Slab<Nothing, ()> = Slab::new();
        let first = slab.vacant_token();
        slab.remove(first);
        let second = slab.vacant_token();
        assert_eq!(
            first.0 & 0xffff_ffff,
            second.0 & 0xffff_ffff,
            "the slot is reused"
        );
        assert_ne!(first, second, "with another generation");
        assert!(slab.get(first).is_none());
        slab.remove(first);
        assert!(slab.free.is_empty(), "a stale token frees nothing");
        slab.remove(second);
        assert_eq!(slab.free.len(), 1);
        assert_ne!(slab.vacant_token(), WAKER);
    }
}
