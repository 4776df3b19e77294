//! The acceptor threads: each owns a clone of the listening socket, its
//! limiter and the wait for a free slot, and the idle timers of the
//! connections it accepted. It sets connections up and hands them to the
//! pool; their readiness is the pool's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use socket2::Socket as RawSocket;

use crate::connection::{Conn, Meta, Setup, State, Timer, CONNECT, OPEN, SCHEDULED, TIMEOUT};
use crate::handler::Handler;
use crate::limiter::Limiter;
use crate::server::Shared;
use crate::socket::Socket;
use crate::telemetry::{ConnSpan, Event, Kind, ListenerSpan, Span, SpanId, SpawnError, Telemetry};
use crate::transport::{Addr, Io, ListenSocket};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// How long accepting pauses after the process or system ran out of
/// descriptors or memory, as ranch and Thousand Island do.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections accepted per loop before the acceptor serves its timers
/// again.
const ACCEPT_BATCH: usize = 64;
/// Consecutive accept errors after which accepting pauses, so that an error
/// that does not go away cannot make the thread spin.
const ACCEPT_ERRORS_BEFORE_BACKOFF: u32 = 16;

/// Commands from the [`Server`](crate::Server) handle to a acceptor thread. Each
/// is acknowledged so that the handle's call returns once it took effect.
pub(crate) enum Control {
    /// Accept from this listener, in an acceptor span under this listener
    /// span.
    Listen(ListenSocket, ListenerSpan, Sender<()>),
    /// Close the listener; open connections carry on. A UDP socket is
    /// kept (its sessions send on it) and only stops being read.
    Suspend(Sender<()>),
    /// Read the kept UDP socket again, in a new acceptor span under this
    /// listener span.
    Resume(ListenerSpan, Sender<()>),
    /// Close the listener and the connection waiting for a slot.
    Stop(Sender<()>),
    /// Leave the loop.
    Exit,
}

/// The part of an acceptor that workers and the server handle share with
/// its acceptor thread.
pub(crate) struct AcceptorShared {
    pub(crate) limiter: Limiter,
    timers: Sender<(Instant, Token)>,
    waker: Arc<Waker>,
    /// When the acceptor thread will wake at the latest, in nanoseconds since
    /// `epoch`; a timer earlier than that must wake it.
    next_wake: AtomicU64,
    epoch: Instant,
    pub(crate) control: Sender<Control>,
}

impl AcceptorShared {
    /// Hands the acceptor thread a timer entry, waking it if it would sleep
    /// past it.
    pub(crate) fn add_timer(&self, deadline: Instant, token: Token) {
        if self.timers.send((deadline, token)).is_err() {
            return; // the acceptor has exited
        }
        // Pairs with the store-then-drain in `Reactor::next_timeout`: either
        // the acceptor thread drains this entry before sleeping, or we see the
        // deadline it will sleep until.
        if self.nanos(deadline) < self.next_wake.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u64::MAX as u128 - 1) as u64
    }
}

/// What arrived: an accepted connection, or a datagram that starts a UDP
/// session.
pub(crate) enum Arrival {
    Stream(RawSocket, Addr),
    Datagram(SocketAddr, Vec<u8>),
}

impl Arrival {
    fn peer(&self) -> Addr {
        match self {
            Arrival::Stream(_, peer) => peer.clone(),
            Arrival::Datagram(peer, _) => Addr::Inet(*peer),
        }
    }
}

/// An arrival waiting for a slot of the limiter.
struct Waiting {
    arrival: Arrival,
    attempts: u32,
    next_try: Instant,
}

/// Datagrams that may wait for a session slot at once; more are dropped.
const DATAGRAMS_WAITING: usize = 1024;

/// The state a acceptor thread keeps to itself.
pub(crate) struct Reactor<H, M> {
    pub(crate) shared: Arc<AcceptorShared>,
    pub(crate) server: Arc<Shared<H, M>>,
    poll: Poll,
    control: Receiver<Control>,
    timer_rx: Receiver<(Instant, Token)>,
    heap: BinaryHeap<Reverse<(Instant, Token)>>,
    pub(crate) listener: Option<ListenSocket>,
    /// The listener's address when it is bound to one IP or a Unix path,
    /// which is then every connection's local address (saves a system call
    /// per accept).
    pub(crate) fixed_local: Option<Addr>,
    /// The listener may have connections queued (edge-triggered readiness
    /// is not repeated, so we remember it).
    pub(crate) listener_ready: bool,
    /// Arrivals waiting for a limiter slot: at most one connection (the
    /// acceptor accepts no other meanwhile), or many datagrams (reception
    /// goes on).
    waiting: VecDeque<Waiting>,
    backoff_until: Option<Instant>,
    /// The acceptor span while a listener is open.
    span: Option<AcceptorSpan>,
    /// UDP: the receive buffer and the sessions by peer.
    pub(crate) udp: crate::udp::Receiver,
    /// A suspended UDP socket, kept for resume.
    parked: Option<ListenSocket>,
}

/// An acceptor span: this acceptor thread accepting from one listener.
struct AcceptorSpan {
    id: SpanId,
    listener: SpanId,
    #[cfg(feature = "tracing")]
    tracing: tracing::Span,
    started: Instant,
    accepted: u64,
}

/// A acceptor thread's own half, made before the server's shared state exists.
pub(crate) struct Parts {
    poll: Poll,
    control: Receiver<Control>,
    timer_rx: Receiver<(Instant, Token)>,
}

/// Creates the poll of one acceptor: its shared half and its thread's half.
pub(crate) fn acceptor(limit: Option<usize>) -> io::Result<(Arc<AcceptorShared>, Parts)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (control_tx, control) = crossbeam_channel::unbounded();
    let (timer_tx, timer_rx) = crossbeam_channel::unbounded();
    let limiter_waker = waker.clone();
    let shared = Arc::new(AcceptorShared {
        limiter: Limiter::new(
            limit,
            Box::new(move || {
                let _ = limiter_waker.wake();
            }),
        ),
        timers: timer_tx,
        waker,
        next_wake: AtomicU64::new(0),
        epoch: Instant::now(),
        control: control_tx,
    });
    Ok((
        shared,
        Parts {
            poll,
            control,
            timer_rx,
        },
    ))
}

impl<H: Handler<M>, M: Send + 'static> Reactor<H, M> {
    pub(crate) fn new(
        shared: Arc<AcceptorShared>,
        server: Arc<Shared<H, M>>,
        parts: Parts,
    ) -> Reactor<H, M> {
        Reactor {
            shared,
            server,
            poll: parts.poll,
            control: parts.control,
            timer_rx: parts.timer_rx,
            heap: BinaryHeap::new(),
            listener: None,
            fixed_local: None,
            listener_ready: false,
            waiting: VecDeque::new(),
            backoff_until: None,
            span: None,
            udp: crate::udp::Receiver::default(),
            parked: None,
        }
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    report!(error, { error = %e, "acceptor poll failed" }, "atoll: poll failed: {e}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
            if !self.handle_controls() {
                break;
            }
            if events.iter().any(|e| e.token() == LISTENER) {
                self.listener_ready = true;
            }
            // What the acceptor reports while it accepts carries its span
            // (a clone: accepting needs `self` whole).
            #[cfg(feature = "tracing")]
            let span = self.span.as_ref().map(|s| s.tracing.clone());
            #[cfg(feature = "tracing")]
            let _entered = span.as_ref().map(tracing::Span::enter);
            self.fire_timers();
            self.redeliver();
            self.retry_waiting();
            self.accept();
        }
    }

    /// Moves new timer entries to the heap and returns how long to sleep.
    fn next_timeout(&mut self) -> Option<Duration> {
        loop {
            for (deadline, token) in self.timer_rx.try_iter() {
                self.heap.push(Reverse((deadline, token)));
            }
            self.prune_timers();
            let mut wake_at = self.heap.peek().map(|Reverse((d, _))| *d);
            let mut earliest = |t: Option<Instant>| {
                if let Some(t) = t {
                    wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
                }
            };
            earliest(self.waiting.iter().map(|w| w.next_try).min());
            earliest(self.backoff_until);
            let now = Instant::now();
            if self.can_accept() {
                earliest(Some(now));
            }
            let wake_nanos = wake_at.map_or(u64::MAX, |w| self.shared.nanos(w));
            self.shared.next_wake.store(wake_nanos, Ordering::SeqCst);
            if self.timer_rx.is_empty() {
                return wake_at.map(|w| w.saturating_duration_since(now));
            }
        }
    }

    /// Drops the entries of closed connections and stale ones once they
    /// outnumber the live connections, so that churn cannot grow the heap
    /// for a whole read timeout.
    fn prune_timers(&mut self) {
        let live = self.shared.limiter.live();
        if self.heap.len() < 4096 || self.heap.len() < 4 * live {
            return;
        }
        let slab = self.server.pool.slab.lock();
        self.heap.retain(|Reverse((at, token))| {
            slab.get(*token)
                .is_some_and(|conn| conn.timer.lock().queued == Some(*at))
        });
    }

    fn can_accept(&self) -> bool {
        self.listener.is_some()
            && self.listener_ready
            && self.has_room()
            && self.backoff_until.is_none()
    }

    /// Applies commands; returns `false` on `Exit`.
    fn handle_controls(&mut self) -> bool {
        while let Ok(control) = self.control.try_recv() {
            match control {
                Control::Listen(listener, listener_span, ack) => {
                    self.start_listening(listener, listener_span);
                    let _ = ack.send(());
                }
                Control::Resume(listener_span, ack) => {
                    if let Some(listener) = self.parked.take() {
                        self.start_listening(listener, listener_span);
                    }
                    let _ = ack.send(());
                }
                Control::Suspend(ack) => {
                    self.parked = self
                        .close_listener()
                        .filter(|l| matches!(l, ListenSocket::Udp { .. }));
                    let _ = ack.send(());
                }
                Control::Stop(ack) => {
                    self.close_listener();
                    self.parked = None;
                    self.waiting.clear();
                    self.shared.limiter.set_waiting(false);
                    let _ = ack.send(());
                }
                Control::Exit => return false,
            }
        }
        true
    }

    /// Watches a listener and opens an acceptor span for it.
    fn start_listening(&mut self, mut listener: ListenSocket, listener_span: ListenerSpan) {
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
        {
            report!(
                error,
                { error = %e, "cannot watch the listener" },
                target: "atoll", "cannot watch the listener: {e}"
            );
            return;
        }
        self.fixed_local = listener.fixed_local();
        self.listener = Some(listener);
        self.listener_ready = true;
        self.span = Some(AcceptorSpan {
            id: SpanId::next(),
            listener: listener_span.id,
            #[cfg(feature = "tracing")]
            tracing: tracing::info_span!(
                target: "atoll",
                parent: &listener_span.tracing,
                "acceptor",
                thread = std::thread::current().name().unwrap_or_default()
            ),
            started: Instant::now(),
            accepted: 0,
        });
        self.emit(Kind::AcceptorStart);
    }

    /// Stops watching the listener and ends the acceptor span; returns the
    /// listener.
    fn close_listener(&mut self) -> Option<ListenSocket> {
        let mut listener = self.listener.take();
        if let Some(listener) = listener.as_mut() {
            let _ = self.poll.registry().deregister(listener);
        }
        self.listener_ready = false;
        if let Some(span) = &self.span {
            let (duration, connections) = (span.started.elapsed(), span.accepted);
            self.emit(Kind::AcceptorStop {
                duration,
                connections,
            });
        }
        self.span = None;
        listener
    }

    /// Emits an acceptor event, if a sink is attached and a span is open.
    fn emit(&self, kind: Kind<'_>) {
        if !Telemetry::enabled() {
            return;
        }
        if let Some(span) = &self.span {
            self.server.telemetry.emit(&Event {
                span: Span::Acceptor,
                id: span.id,
                parent: Some(span.listener),
                at: Instant::now(),
                connection: None,
                peer: None,
                kind,
            });
        }
    }

    /// Pops due timers. An entry whose connection moved its deadline later
    /// is pushed again at the new deadline; a due one notifies the worker.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, token))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(conn) = self.lookup(token) else {
                continue;
            };
            let mut timer = conn.timer.lock();
            if timer.queued != Some(at) {
                continue; // a stale entry: another one is in the heap
            }
            match timer.deadline {
                Some(deadline) if deadline > now => {
                    timer.queued = Some(deadline);
                    self.heap.push(Reverse((deadline, token)));
                }
                Some(_) => {
                    timer.queued = None;
                    drop(timer);
                    conn.notify(TIMEOUT);
                }
                None => timer.queued = None,
            }
        }
    }

    /// Whether another arrival may be taken: a connection waiting for a slot
    /// stops accepting; datagrams wait up to a bound.
    pub(crate) fn has_room(&self) -> bool {
        match self.listener {
            Some(ListenSocket::Udp { .. }) => self.waiting.len() < DATAGRAMS_WAITING,
            _ => self.waiting.is_empty(),
        }
    }

    /// Gives waiting arrivals a slot as slots free, in order; turns away
    /// those whose retries are spent.
    fn retry_waiting(&mut self) {
        let now = Instant::now();
        let config = &self.server.config;
        let (count, wait) = (
            config.max_connections_retry_count,
            config.max_connections_retry_wait,
        );
        let mut i = 0;
        while i < self.waiting.len() {
            if self.shared.limiter.try_acquire() {
                if let Some(w) = self.waiting.remove(i) {
                    self.open(w.arrival);
                }
                continue;
            }
            let w = &mut self.waiting[i];
            if now >= w.next_try {
                w.attempts += 1;
                if w.attempts >= count {
                    if let Some(w) = self.waiting.remove(i) {
                        self.reject(w.arrival);
                    }
                    continue;
                }
                w.next_try = now + wait;
            }
            i += 1;
        }
        self.shared.limiter.set_waiting(!self.waiting.is_empty());
    }

    /// Turns away an arrival the limiter had no slot for.
    fn reject(&self, arrival: Arrival) {
        let peer = arrival.peer();
        drop(arrival);
        self.server.stats.rejected.fetch_add(1, Ordering::Relaxed);
        self.emit(Kind::SpawnError {
            peer: &peer,
            reason: SpawnError::Limiter,
        });
    }

    fn accept(&mut self) {
        if let Some(until) = self.backoff_until {
            if Instant::now() < until {
                return;
            }
            self.backoff_until = None;
        }
        let mut errors = 0;
        for _ in 0..ACCEPT_BATCH {
            if !self.can_accept() {
                return;
            }
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            if let ListenSocket::Udp { .. } = listener {
                self.receive();
                return;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    errors = 0;
                    self.server.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    self.count_accepted();
                    self.admit(Arrival::Stream(stream, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.server
                        .stats
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    errors += 1;
                    let exhausted = is_exhaustion(&e);
                    self.emit(if exhausted {
                        Kind::Emfile { error: &e }
                    } else if e.raw_os_error() == Some(libc::ECONNABORTED) {
                        Kind::ConnectionAborted
                    } else {
                        Kind::AcceptError { error: &e }
                    });
                    if exhausted || errors >= ACCEPT_ERRORS_BEFORE_BACKOFF {
                        self.backoff_until = Some(Instant::now() + ACCEPT_BACKOFF);
                        return;
                    }
                }
            }
        }
    }

    /// Opens an arrival if the limiter has a slot, or makes it wait for one.
    pub(crate) fn admit(&mut self, arrival: Arrival) {
        if self.waiting.is_empty() && self.shared.limiter.try_acquire() {
            self.open(arrival);
            return;
        }
        let config = &self.server.config;
        if config.max_connections_retry_count == 0 {
            self.reject(arrival);
            return;
        }
        self.shared.limiter.set_waiting(true);
        self.waiting.push_back(Waiting {
            arrival,
            attempts: 0,
            next_try: Instant::now() + config.max_connections_retry_wait,
        });
        // A slot may have freed between the failed acquire and `waiting`.
        self.retry_waiting();
    }

    /// Sets up a connection that holds a limiter slot and hands it to the
    /// workers.
    fn open(&mut self, arrival: Arrival) {
        match arrival {
            Arrival::Stream(sock, peer) => self.open_stream(sock, peer),
            Arrival::Datagram(peer, datagram) => self.open_session(peer, datagram),
        }
    }

    fn open_stream(&mut self, sock: RawSocket, peer: Addr) {
        let config = &self.server.config;
        config.listen.apply(&sock, peer.inet().is_some());
        let local = match self.fixed_local.clone() {
            Some(local) => local,
            None => match sock.local_addr() {
                Ok(local) => Addr::from_sock(&local),
                Err(e) => {
                    report!(
                        debug,
                        { peer = %peer, error = %e, "connection lost before setup" },
                        "atoll: connection from {peer} lost before setup: {e}"
                    );
                    self.shared.limiter.release();
                    return;
                }
            },
        };
        let io = Io::new(sock);
        let fd = io.raw_fd();
        let weak = io.weak();
        let setup = if config.proxy.is_some() {
            Setup::Proxy(io)
        } else {
            Setup::Accepted(io)
        };
        self.install(peer, local, setup, Some(fd), weak);
    }

    /// Makes the connection's record, registers its descriptor (if it has
    /// its own) and hands it to the workers. Returns its token.
    pub(crate) fn install(
        &mut self,
        peer: Addr,
        local: Addr,
        setup: Setup,
        fd: Option<std::os::fd::RawFd>,
        stream: std::sync::Weak<RawSocket>,
    ) -> Option<Token> {
        let config = &self.server.config;
        let id = self.server.next_id.fetch_add(1, Ordering::Relaxed);
        let mut socket = Socket::pending(
            id,
            peer.clone(),
            local.clone(),
            config.read_timeout,
            config.listen.send_timeout,
        );
        socket.set_secure(config.transport.is_secure(), config.handshake_timeout);
        if let Some(span) = &self.span {
            let span = ConnSpan {
                telemetry: self.server.telemetry.clone(),
                id: SpanId::next(),
                parent: span.id,
                listener: span.listener,
                connection: id,
                started: Instant::now(),
            };
            socket.set_span(span);
        }
        let pool = &self.server.pool;
        let mut slab = pool.slab.lock();
        let token = slab.vacant_token();
        #[cfg(feature = "tracing")]
        let span = {
            let transport = if config.listen.udp.is_some() {
                "udp"
            } else {
                config.transport.name()
            };
            let parent = self.span.as_ref().and_then(|s| s.tracing.id());
            tracing::info_span!(
                target: "atoll",
                parent: parent,
                "connection",
                id,
                peer = %peer,
                local = %local,
                proxy = tracing::field::Empty,
                transport
            )
        };
        let conn = Arc::new(Conn {
            meta: Meta {
                id,
                peer,
                local,
                started: SystemTime::now(),
                proxy: OnceLock::new(),
                #[cfg(feature = "tracing")]
                span,
            },
            token,
            sched: AtomicU32::new(CONNECT | SCHEDULED),
            queued_at: AtomicU64::new(pool.now_ns()),
            slow: AtomicBool::new(false),
            server: self.server.clone(),
            acceptor: self.shared.clone(),
            stream,
            phase: AtomicU8::new(OPEN),
            mailbox: Mutex::new(Default::default()),
            timer: Mutex::new(Timer::default()),
            state: Mutex::new(State {
                handler: None,
                socket: Some(socket),
                setup,
            }),
        });
        if let Some(fd) = fd {
            let registered = pool.register(fd, token);
            if let Err(e) = registered {
                slab.remove(token);
                drop(slab);
                report!(
                    error,
                    { connection = conn.meta.id, peer = %conn.meta.peer(), error = %e, "cannot watch the connection" },
                    target: "atoll", "cannot watch the connection from {}: {e}", conn.meta.peer()
                );
                self.shared.limiter.release();
                return None;
            }
        }
        slab.fill(token, conn.clone());
        drop(slab);
        pool.schedule(conn);
        Some(token)
    }

    /// The connection a token names, if it is still live.
    pub(crate) fn lookup(&self, token: Token) -> Option<Arc<Conn<H, M>>> {
        self.server.pool.slab.lock().get(token).cloned()
    }

    /// Telemetry of this acceptor, for the UDP receive path.
    pub(crate) fn emit_event(&self, kind: Kind<'_>) {
        self.emit(kind);
    }

    /// Counts an accepted connection or session in the acceptor span.
    pub(crate) fn count_accepted(&mut self) {
        if let Some(span) = &mut self.span {
            span.accepted += 1;
        }
    }
}

/// Errors that mean the process or system is out of a resource: accepting
/// again at once would fail the same way.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
