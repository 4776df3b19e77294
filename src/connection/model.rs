//! A model check, with `loom`, of how a connection is scheduled: the real
//! scheduling word ([`Sched`], [`Work`]) driven by a miniature of everyone
//! who touches it. Built only with `RUSTFLAGS="--cfg loom"`; run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --lib connection::model
//! ```
//!
//! # What is modelled
//!
//! - The pool's run queue (a mutex and a condition variable) and
//!   `Pool::schedule`. The workers take the connection from it and end
//!   once no thread can queue it any more.
//! - Two workers running the connection like `driver::run`: rounds of
//!   `take`, a step, then `release` or another round, at most `rounds`
//!   rounds before it goes to the back of the queue; a step that ends the
//!   connection goes to `finish`, which never releases.
//! - The step, like `driver::step`: a stop ends a served connection at
//!   once and a connection not yet set up after serving it; the factory;
//!   the transport's handshake, either done at once or needing a byte from
//!   the client, tried when it starts and again on each `READABLE`, its
//!   deadline checked while it waits; messages popped from the mailbox one
//!   at a time up to the budget, `MESSAGE` kept while the mailbox is not
//!   empty; reads up to the read budget (`READABLE` kept there), stopping
//!   when `SHUTDOWN` is pending and reading again while the last read
//!   filled the buffer; the idle deadline checked on `TIMEOUT`.
//! - The kernel's receive buffer (a count of bytes) and the poll thread:
//!   a byte arrives, then `Task::ready` marks `READABLE`, and the poller
//!   queues the connection, or runs it itself as `collect` does with the
//!   first connection of a batch.
//! - `post`, from an application thread and from the factory: the push
//!   under the mailbox lock with the phase checked under the same lock,
//!   then `MESSAGE`; `set_phase(ENDED)` at the end drops what is left
//!   under that lock, and later posts are refused.
//! - The acceptor's timer (`fire_timers`): the deadline passes, then
//!   `TIMEOUT`; each callback moves the deadline on (`arm_timer`).
//! - A stop (`shutdown_all`): `SHUTDOWN`.
//!
//! What only the worker running the connection touches (the driver's
//! `State`: handler, handshake, socket) lives in a `loom` cell, so two
//! accesses that no happens-before orders fail the model even when they do
//! not overlap in time: the word's memory orderings are checked, not only
//! its interleavings. The driver's own `state` lock, which would also order
//! them, is left out so that the word alone has to. (The queue's lock also
//! orders a worker's end of run before a later pop; `loom` still explores
//! the pop that comes first, where only the word orders the two runs.) The
//! books the checks keep (what was handled, dropped or refused; whether a
//! step is running) use `std` types, which add no ordering `loom` sees.
//!
//! # What is checked
//!
//! In every execution: never two steps of the connection at once, never a
//! round after its end, never on the queue twice. At the end: every
//! message posted was handled exactly once, in the order each thread
//! posted, or, once the connection ended, dropped by the end or refused
//! (the rule `Conn::post` documents); no byte read twice. A connection
//! still open has read every byte that arrived, has an empty mailbox, no
//! passed deadline, and an idle word (nothing pending, not scheduled); it
//! was set up once. A stop or an accepted closing message ends it.
//!
//! # What is not
//!
//! One connection only, with one or two bytes and one to three messages
//! per model, and budgets smaller than the driver's (one read, one
//! message, one or two rounds) so that the "budget spent" paths are
//! reached with little work. Not modelled: the pool's parking, waking and
//! thread growth (a worker here waits on the queue's condition variable);
//! `HANGUP` and reading to the end of stream; the peer closing; bytes a
//! synchronous `recv` read ahead; the PROXY header; handshakes that fail;
//! detaching; callbacks that panic or return an error; the timer heap and
//! its stale entries (a fire here is always for the current deadline);
//! the mailbox bound `max_queued_messages`; the slab and token
//! generations. Preemptions are bounded: 2 per execution, 3 in the
//! smaller models.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize as Books;
use std::sync::Mutex as BooksLock;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::sched::{Sched, Work};
use super::{ENDED, OPEN};

/// The shape of one model.
#[derive(Clone, Copy)]
struct Shape {
    /// Rounds a worker runs the connection before queueing it again.
    rounds: usize,
    /// Reads per round (one byte each).
    reads: usize,
    /// Messages per round.
    messages: usize,
    /// Starts fresh from its acceptor, queued with `CONNECT`; else idle and
    /// set up.
    accepted: bool,
    /// The handshake needs a byte from the client (the first to arrive).
    handshake: bool,
    /// The factory posts a message to its own connection.
    greet: bool,
    /// The poll thread runs the connection itself when it finds it idle.
    poller_runs: bool,
    /// An idle deadline is armed (callbacks move it on).
    timer: bool,
}

const SHAPE: Shape = Shape {
    rounds: 2,
    reads: 1,
    messages: 1,
    accepted: false,
    handshake: false,
    greet: false,
    poller_runs: false,
    timer: false,
};

/// The id of the factory's own message.
const GREETING: u32 = 0;

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Close,
    Timeout,
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Msg {
    id: u32,
    /// `handle_message` returns `Flow::Close`.
    close: bool,
}

fn plain(id: u32) -> Msg {
    Msg { id, close: false }
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    /// Accepted: the handler is not made yet.
    Accepted,
    Handshaking,
    Ready,
}

/// What only the worker running the connection touches.
struct State {
    stage: Stage,
    /// The last read filled the buffer.
    maybe_more: bool,
    connected: usize,
    bytes: usize,
    handled: Vec<u32>,
    ended: Option<End>,
}

/// The cell holding [`State`].
struct Owned(UnsafeCell<State>);

// SAFETY: only the thread that owns the connection (it found it idle, or
// took it from the queue) touches the state; `loom` checks every access.
unsafe impl Sync for Owned {}

/// The run queue: one connection, so a count.
struct Queue {
    queued: usize,
    /// Threads running the connection.
    running: usize,
    /// Threads that may still queue it.
    producers: usize,
}

struct Conn {
    shape: Shape,
    sched: Sched,
    phase: AtomicU8,
    mailbox: Mutex<VecDeque<Msg>>,
    /// The idle deadline has passed (the real one is under `Conn::timer`).
    expired: AtomicBool,
    /// Bytes in the kernel's receive buffer (the kernel orders a write
    /// before the read that sees it).
    kernel: AtomicUsize,
    state: Owned,
    queue: Mutex<Queue>,
    wake: Condvar,
    // The books.
    in_step: Books,
    dropped: BooksLock<Vec<u32>>,
    /// What the factory's post returned.
    greeted: BooksLock<Option<bool>>,
}

impl Conn {
    fn new(shape: Shape, producers: usize) -> Arc<Conn> {
        let (work, queued, stage) = if shape.accepted {
            (Work::CONNECT, 1, Stage::Accepted)
        } else {
            (Work::default(), 0, Stage::Ready)
        };
        let conn = Arc::new(Conn {
            shape,
            sched: Sched::scheduled(work),
            phase: AtomicU8::new(OPEN),
            mailbox: Mutex::new(VecDeque::new()),
            expired: AtomicBool::new(false),
            kernel: AtomicUsize::new(0),
            state: Owned(UnsafeCell::new(State {
                stage,
                maybe_more: false,
                connected: usize::from(!shape.accepted),
                bytes: 0,
                handled: Vec::new(),
                ended: None,
            })),
            queue: Mutex::new(Queue {
                queued,
                running: 0,
                producers,
            }),
            wake: Condvar::new(),
            in_step: Books::new(0),
            dropped: BooksLock::new(Vec::new()),
            greeted: BooksLock::new(None),
        });
        if !shape.accepted {
            // Served before: idle.
            assert_eq!(conn.sched.take(), Work::default());
            assert!(conn.sched.release());
        }
        conn
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // SAFETY: see `Owned`; `loom` fails the model if two accesses are
        // not ordered.
        self.state.0.with_mut(|state| f(unsafe { &mut *state }))
    }

    /// `Pool::schedule`.
    fn schedule(&self) {
        let mut queue = self.queue.lock().unwrap();
        assert_eq!(queue.queued, 0, "the connection is on the queue twice");
        queue.queued += 1;
        drop(queue);
        self.wake.notify_one();
    }

    /// `Conn::notify`.
    fn notify(&self, work: Work) {
        if self.sched.mark(work) {
            self.schedule();
        }
    }

    /// `Conn::post`: `true` when taken.
    fn post(&self, msg: Msg) -> bool {
        let mut mailbox = self.mailbox.lock().unwrap();
        if self.phase.load(Ordering::Acquire) != OPEN {
            return false;
        }
        mailbox.push_back(msg);
        drop(mailbox);
        self.notify(Work::MESSAGE);
        true
    }

    /// `Conn::set_phase`.
    fn set_phase(&self, phase: u8) {
        let mut mailbox = self.mailbox.lock().unwrap();
        self.phase.store(phase, Ordering::Release);
        let left = std::mem::take(&mut *mailbox);
        drop(mailbox);
        let mut dropped = self.dropped.lock().unwrap();
        dropped.extend(left.iter().map(|m| m.id));
    }

    /// `Conn::arm_timer` after a callback: the deadline moves on.
    fn rearm(&self) {
        if self.shape.timer {
            self.expired.store(false, Ordering::SeqCst);
        }
    }

    /// One byte from the kernel's buffer; `false` when it is empty.
    fn read_byte(&self) -> bool {
        self.kernel
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn timer_expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }

    /// Done by a thread that might queue the connection.
    fn produced(&self) {
        let mut queue = self.queue.lock().unwrap();
        queue.producers -= 1;
        self.wake_if_done(queue);
    }

    /// Runs the connection, as a thread that owns it, counted as running.
    fn run_counted(&self) {
        run(self);
        let mut queue = self.queue.lock().unwrap();
        queue.running -= 1;
        self.wake_if_done(queue);
    }

    /// Wakes the waiting workers to end once nothing can queue the
    /// connection any more.
    fn wake_if_done(&self, queue: loom::sync::MutexGuard<'_, Queue>) {
        let done = queue.producers == 0 && queue.running == 0 && queue.queued == 0;
        drop(queue);
        if done {
            self.wake.notify_all();
        }
    }
}

/// Fails the model when two steps of one connection overlap.
struct Exclusive<'a>(&'a Books);

impl<'a> Exclusive<'a> {
    fn enter(count: &'a Books) -> Exclusive<'a> {
        let before = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(before, 0, "two callbacks of one connection at once");
        Exclusive(count)
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `driver::run`.
fn run(conn: &Conn) {
    for _ in 0..conn.shape.rounds {
        let work = conn.sched.take();
        let result = conn.with_state(|state| {
            let _step = Exclusive::enter(&conn.in_step);
            step(conn, state, work)
        });
        if let Err(end) = result {
            finish(conn, end);
            return;
        }
        if conn.sched.release() {
            return;
        }
    }
    conn.schedule();
}

/// `driver::step`.
fn step(conn: &Conn, state: &mut State, work: Work) -> Result<(), End> {
    assert!(state.ended.is_none(), "a round after the end");
    let stopping = work.has(Work::SHUTDOWN);
    let unserved = state.stage == Stage::Accepted;
    if stopping && !unserved {
        return Err(End::Shutdown);
    }
    if state.stage == Stage::Accepted {
        // The factory, which may send its connection a message.
        if conn.shape.greet {
            let taken = conn.post(plain(GREETING));
            *conn.greeted.lock().unwrap() = Some(taken);
        }
    }
    let mut want_read = work.has(Work::READABLE);
    let mut want_messages = work.has(Work::MESSAGE);
    if state.stage != Stage::Ready {
        // The handshake starts, or resumes on readiness; it needs one byte
        // from the client, read like the data.
        let tried = state.stage == Stage::Accepted || work.has(Work::READABLE);
        let done = if conn.shape.handshake {
            tried && conn.read_byte()
        } else {
            state.stage == Stage::Accepted
        };
        if !done {
            state.stage = Stage::Handshaking;
            // A handshake still pending holds the deadline; a waiting one
            // checks it on `TIMEOUT`.
            if (tried || work.has(Work::TIMEOUT)) && conn.timer_expired() {
                return Err(End::Timeout);
            }
            return if stopping { Err(End::Shutdown) } else { Ok(()) };
        }
        state.stage = Stage::Ready;
        state.bytes += usize::from(conn.shape.handshake);
        assert_eq!(state.connected, 0, "handle_connection twice");
        state.connected += 1;
        conn.rearm();
        want_read = true;
        want_messages = true;
    }
    if want_messages {
        for _ in 0..conn.shape.messages {
            let Some(msg) = conn.mailbox.lock().unwrap().pop_front() else {
                break;
            };
            state.handled.push(msg.id);
            if msg.close {
                return Err(End::Close);
            }
        }
        if !conn.mailbox.lock().unwrap().is_empty() {
            conn.sched.keep(Work::MESSAGE);
        }
    }
    let mut reads = 0;
    loop {
        if conn.sched.pending(Work::SHUTDOWN) {
            break;
        }
        if !want_read && !state.maybe_more {
            break;
        }
        if reads == conn.shape.reads {
            conn.sched.keep(Work::READABLE);
            break;
        }
        reads += 1;
        let n = usize::from(conn.read_byte());
        if n == 0 {
            state.maybe_more = false;
            break; // WouldBlock
        }
        // A one-byte buffer, filled.
        state.maybe_more = true;
        want_read = false;
        state.bytes += n;
        conn.rearm();
    }
    if stopping {
        return Err(End::Shutdown);
    }
    if work.has(Work::TIMEOUT) && conn.timer_expired() {
        return Err(End::Timeout);
    }
    Ok(())
}

/// `driver::finish`: the last callback, then `Release::release`.
fn finish(conn: &Conn, end: End) {
    conn.with_state(|state| {
        let _step = Exclusive::enter(&conn.in_step);
        assert!(state.ended.is_none(), "ended twice");
        state.ended = Some(end);
    });
    conn.set_phase(ENDED);
}

/// A worker of the pool.
fn worker(conn: &Conn) {
    loop {
        let mut queue = conn.queue.lock().unwrap();
        loop {
            if queue.queued > 0 {
                queue.queued -= 1;
                queue.running += 1;
                break;
            }
            if queue.producers == 0 && queue.running == 0 {
                return;
            }
            queue = conn.wake.wait(queue).unwrap();
        }
        drop(queue);
        conn.run_counted();
    }
}

/// The poll thread: `bytes` arrive one at a time, each with its edge.
fn poller(conn: &Conn, bytes: usize) {
    for _ in 0..bytes {
        conn.kernel.fetch_add(1, Ordering::SeqCst);
        if conn.sched.mark(Work::READABLE) {
            if conn.shape.poller_runs {
                conn.queue.lock().unwrap().running += 1;
                conn.run_counted();
            } else {
                conn.schedule();
            }
        }
    }
    conn.produced();
}

/// An application thread posting; what each post returned.
fn application(conn: &Conn, msgs: &[Msg]) -> Vec<(Msg, bool)> {
    let posted = msgs.iter().map(|&m| (m, conn.post(m))).collect();
    conn.produced();
    posted
}

/// The acceptor's timer: the deadline passes, then `TIMEOUT`.
fn timer(conn: &Conn) {
    conn.expired.store(true, Ordering::SeqCst);
    conn.notify(Work::TIMEOUT);
    conn.produced();
}

/// A stop.
fn stop(conn: &Conn) {
    conn.notify(Work::SHUTDOWN);
    conn.produced();
}

/// What the main thread does besides waiting.
#[derive(Clone, Copy, PartialEq)]
enum Main {
    Nothing,
    Timer,
    Stop,
}

/// One model: two workers (one when the poller runs it), the poll thread
/// with `bytes`, an application thread per list of messages, and `main`.
struct Model {
    shape: Shape,
    bytes: usize,
    posters: Vec<Vec<Msg>>,
    main: Main,
    preemptions: usize,
}

impl Model {
    fn check(self) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(self.preemptions);
        let runs = std::sync::Arc::new(Books::new(0));
        let counted = runs.clone();
        let started = std::time::Instant::now();
        builder.check(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.once();
        });
        eprintln!(
            "{} executions in {:.1?}",
            runs.load(std::sync::atomic::Ordering::Relaxed),
            started.elapsed()
        );
    }

    fn once(&self) {
        let shape = self.shape;
        let workers = if shape.poller_runs { 1 } else { 2 };
        let producers = usize::from(self.bytes > 0)
            + self.posters.len()
            + usize::from(self.main != Main::Nothing);
        let conn = Conn::new(shape, producers);
        let mut threads = Vec::new();
        for _ in 0..workers {
            let conn = conn.clone();
            threads.push(thread::spawn(move || worker(&conn)));
        }
        let poll = (self.bytes > 0).then(|| {
            let conn = conn.clone();
            let bytes = self.bytes;
            thread::spawn(move || poller(&conn, bytes))
        });
        let apps: Vec<_> = self
            .posters
            .iter()
            .map(|msgs| {
                let conn = conn.clone();
                let msgs = msgs.clone();
                thread::spawn(move || application(&conn, &msgs))
            })
            .collect();
        match self.main {
            Main::Nothing => {}
            Main::Timer => timer(&conn),
            Main::Stop => stop(&conn),
        }
        if let Some(poll) = poll {
            poll.join().unwrap();
        }
        let posted: Vec<Vec<(Msg, bool)>> = apps.into_iter().map(|a| a.join().unwrap()).collect();
        for t in threads {
            t.join().unwrap();
        }
        self.verify(&conn, posted);
    }

    fn verify(&self, conn: &Conn, mut posted: Vec<Vec<(Msg, bool)>>) {
        if let Some(taken) = *conn.greeted.lock().unwrap() {
            posted.push(vec![(plain(GREETING), taken)]);
        }
        let (bytes, handled, ended, connected) =
            conn.with_state(|s| (s.bytes, s.handled.clone(), s.ended, s.connected));
        let dropped = conn.dropped.lock().unwrap().clone();
        let waiting: Vec<u32> = conn.mailbox.lock().unwrap().iter().map(|m| m.id).collect();
        let left = conn.kernel.load(Ordering::SeqCst);
        let expired = conn.expired.load(Ordering::SeqCst);

        assert_eq!(bytes + left, self.bytes, "bytes read twice or lost");
        assert!(connected <= 1, "handle_connection ran twice");
        // Every message is accounted for exactly once.
        let mut seen: Vec<u32> = handled
            .iter()
            .chain(&dropped)
            .chain(&waiting)
            .copied()
            .collect();
        let mut taken: Vec<u32> = posted
            .iter()
            .flatten()
            .filter(|p| p.1)
            .map(|p| p.0.id)
            .collect();
        seen.sort_unstable();
        taken.sort_unstable();
        assert_eq!(seen, taken, "a message handled twice, lost or invented");
        // In the order each thread posted them.
        for list in &posted {
            let mine: Vec<u32> = list.iter().map(|p| p.0.id).collect();
            let order: Vec<usize> = handled
                .iter()
                .filter_map(|id| mine.iter().position(|m| m == id))
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]),
                "out of order: {handled:?}"
            );
        }
        let refused = posted.iter().flatten().any(|p| !p.1);
        let closing = posted.iter().flatten().any(|p| p.1 && p.0.close);
        match ended {
            None => {
                assert_eq!(connected, 1, "never set up");
                assert_eq!(left, 0, "bytes left unread");
                assert!(waiting.is_empty(), "messages left: {waiting:?}");
                assert!(dropped.is_empty() && !refused);
                assert!(!expired, "a passed deadline left open");
                assert!(self.main != Main::Stop, "a stop left it open");
                assert!(!closing, "a closing message left it open");
                // Idle: nobody runs it, nothing pending.
                assert!(
                    conn.sched.mark(Work::default()),
                    "scheduled, but nobody runs it"
                );
                assert_eq!(conn.sched.take(), Work::default(), "work left pending");
            }
            Some(end) => {
                assert!(waiting.is_empty(), "the end leaves no message queued");
                if end == End::Close {
                    assert!(handled.last().is_some_and(|id| {
                        posted.iter().flatten().any(|p| p.0.id == *id && p.0.close)
                    }));
                }
            }
        }
    }
}

/// Readiness and two messages race two workers; the read budget and the
/// message budget are spent, so work is kept for the next round.
#[test]
fn readiness_and_messages() {
    Model {
        shape: SHAPE,
        bytes: 2,
        posters: vec![vec![plain(1), plain(2)]],
        main: Main::Nothing,
        preemptions: 2,
    }
    .check();
}

/// One round per run: a connection with work left goes back on the queue
/// while readiness and a message arrive.
#[test]
fn requeued_after_its_rounds() {
    Model {
        shape: Shape { rounds: 1, ..SHAPE },
        bytes: 1,
        posters: vec![vec![plain(1), plain(2)]],
        main: Main::Nothing,
        preemptions: 2,
    }
    .check();
}

/// A connection queued by its acceptor, with readiness and a message
/// arriving before its first round.
#[test]
fn accepted_then_readiness_and_a_message() {
    Model {
        shape: Shape {
            accepted: true,
            ..SHAPE
        },
        bytes: 1,
        posters: vec![vec![plain(1)]],
        main: Main::Nothing,
        preemptions: 2,
    }
    .check();
}

/// A handshake that waits for the client, while the factory and another
/// thread send the connection messages. This model found that a round that
/// took `MESSAGE` while the handshake waited used it up: the messages then
/// stayed in the mailbox after the handshake, until another was sent.
#[test]
fn messages_during_the_handshake() {
    Model {
        shape: Shape {
            accepted: true,
            handshake: true,
            greet: true,
            ..SHAPE
        },
        bytes: 1,
        posters: vec![vec![plain(1)]],
        main: Main::Nothing,
        preemptions: 2,
    }
    .check();
}

/// The poll thread runs the connection itself, against one worker.
#[test]
fn the_poller_runs_it() {
    Model {
        shape: Shape {
            poller_runs: true,
            rounds: 1,
            ..SHAPE
        },
        bytes: 2,
        posters: vec![vec![plain(1), plain(2)]],
        main: Main::Nothing,
        preemptions: 3,
    }
    .check();
}

/// The idle timer fires while data arrives: data first keeps the
/// connection, a passed deadline ends it.
#[test]
fn the_timer_against_data() {
    Model {
        shape: Shape {
            timer: true,
            ..SHAPE
        },
        bytes: 1,
        posters: vec![vec![plain(1)]],
        main: Main::Timer,
        preemptions: 2,
    }
    .check();
}

/// A stop while data and a message arrive: the connection ends, the
/// message is handled, dropped or refused.
#[test]
fn a_stop_against_work() {
    Model {
        shape: SHAPE,
        bytes: 1,
        posters: vec![vec![plain(1)]],
        main: Main::Stop,
        preemptions: 2,
    }
    .check();
}

/// A stop that finds the connection queued by its acceptor: it is set up
/// and served, then ends.
#[test]
fn a_stop_before_the_first_round() {
    Model {
        shape: Shape {
            accepted: true,
            ..SHAPE
        },
        bytes: 1,
        posters: vec![],
        main: Main::Stop,
        preemptions: 3,
    }
    .check();
}

/// A message that closes the connection, racing two more from another
/// thread: those are handled before it, dropped by the end, or refused.
#[test]
fn a_closing_message() {
    Model {
        shape: SHAPE,
        bytes: 0,
        posters: vec![vec![Msg { id: 1, close: true }], vec![plain(2), plain(3)]],
        main: Main::Nothing,
        preemptions: 2,
    }
    .check();
}
