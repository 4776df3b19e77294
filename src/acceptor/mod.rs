//! The acceptor threads: each owns a clone of the listening socket, its
//! limiter and the wait for a free slot, and the idle timers of the
//! connections it accepted. It sets connections up and hands them to the
//! pool; their readiness is the pool's. A UDP socket's readiness is the
//! pool's too: its workers receive datagrams and start sessions through
//! the acceptor's state, locked, in [`udp`]. It never touches
//! the server handle or its configuration: the server gives it a
//! [`Service`] and [`AcceptorOptions`].

mod udp;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use parking_lot::Mutex;
use socket2::Socket as RawSocket;

use crate::connection::sched::{Sched, Work};
use crate::connection::{Conn, Meta, Service, Setup, State, Timer, OPEN};
use crate::handler::Handler;
use crate::limiter::Limiter;
use crate::socket::Socket;
use crate::telemetry::{ConnSpan, Emitter, Kind, ListenerSpan, Span, SpawnError};
use crate::timer::{TimerHeap, Timers};
use crate::transport::{AcceptFailure, Addr, Io, ListenOptions, ListenSocket};
use crate::udp::UdpOptions;

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

/// Commands from the [`Server`](crate::Server) handle to an acceptor thread. Each
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

/// What the server handle holds of an acceptor: its limiter, and the way
/// to command and wake its thread.
pub(crate) struct Handle {
    pub(crate) limiter: Arc<Limiter>,
    timers: Arc<Timers>,
    control: Sender<Control>,
}

impl Handle {
    /// Sends the thread a command and wakes it; `false` if it has exited.
    pub(crate) fn command(&self, control: Control) -> bool {
        let sent = self.control.send(control).is_ok();
        self.timers.wake();
        sent
    }
}

/// What an acceptor needs of the server's configuration.
#[derive(Clone)]
pub(crate) struct AcceptorOptions {
    /// Applied to each accepted socket.
    pub(crate) listen: ListenOptions,
    pub(crate) retry_count: u32,
    pub(crate) retry_wait: Duration,
    /// A UDP server's options; `None` for a stream server.
    pub(crate) udp: Option<UdpOptions>,
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

/// An acceptor thread: its epoll (its waker, and a stream listener) and its
/// state.
pub(crate) struct Acceptor<H, M> {
    poll: Poll,
    core: Arc<Mutex<Core<H, M>>>,
}

/// An acceptor's state: locked by its thread, and for a UDP socket by the
/// pool's worker that receives from it.
pub(crate) struct Core<H, M> {
    /// Itself, for the UDP socket's [`Source`](crate::pool::Source).
    me: Weak<Mutex<Core<H, M>>>,
    limiter: Arc<Limiter>,
    timers: Arc<Timers>,
    heap: TimerHeap,
    service: Arc<Service<H, M>>,
    options: AcceptorOptions,
    /// Where a stream listener is watched (the thread's epoll).
    registry: Registry,
    control: Receiver<Control>,
    listener: Option<ListenSocket>,
    /// The listener's address when it is bound to one IP or a Unix path,
    /// which is then every connection's local address (saves a system call
    /// per accept).
    fixed_local: Option<Addr>,
    /// The listener may have connections queued (edge-triggered readiness
    /// is not repeated, so we remember it).
    listener_ready: bool,
    /// Arrivals waiting for a limiter slot: at most one connection (the
    /// acceptor accepts no other meanwhile), or many datagrams (reception
    /// goes on).
    waiting: VecDeque<Waiting>,
    backoff_until: Option<Instant>,
    /// The acceptor span while a listener is open.
    span: Option<AcceptorSpan>,
    /// UDP: the receive buffer and the sessions by peer.
    udp: udp::Receiver,
    /// A suspended UDP socket, kept for resume.
    parked: Option<ListenSocket>,
}

/// An acceptor span: this acceptor thread accepting from one listener.
struct AcceptorSpan {
    emitter: Emitter,
    #[cfg(feature = "tracing")]
    tracing: tracing::Span,
    started: Instant,
    accepted: u64,
}

impl<H: Handler<M>, M: Send + 'static> Acceptor<H, M> {
    /// An acceptor with at most `limit` live connections, and the server's
    /// handle to it; its thread runs [`run`](Acceptor::run).
    pub(crate) fn new(
        service: Arc<Service<H, M>>,
        options: AcceptorOptions,
        limit: Option<usize>,
    ) -> io::Result<(Acceptor<H, M>, Arc<Handle>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (control_tx, control) = crossbeam_channel::unbounded();
        let limiter_waker = waker.clone();
        let limiter = Arc::new(Limiter::new(
            limit,
            Box::new(move || {
                let _ = limiter_waker.wake();
            }),
        ));
        let (timers, heap) = Timers::new(waker);
        let handle = Arc::new(Handle {
            limiter: limiter.clone(),
            timers: timers.clone(),
            control: control_tx,
        });
        let registry = poll.registry().try_clone()?;
        let core = Arc::new_cyclic(|me| {
            Mutex::new(Core {
                me: me.clone(),
                limiter,
                timers,
                heap,
                service,
                options,
                registry,
                control,
                listener: None,
                fixed_local: None,
                listener_ready: false,
                waiting: VecDeque::new(),
                backoff_until: None,
                span: None,
                udp: udp::Receiver::default(),
                parked: None,
            })
        });
        Ok((Acceptor { poll, core }, handle))
    }

    /// The thread's loop: commands, timers, the wait for limiter slots,
    /// and accepting.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut runnable = Vec::new();
        loop {
            let timeout = self.core.lock().next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    report!(error, { error = %e, "acceptor poll failed" }, "atoll: poll failed: {e}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
            let mut core = self.core.lock();
            if !core.handle_controls() {
                break;
            }
            if events.iter().any(|e| e.token() == LISTENER) {
                core.listener_ready = true;
            }
            // What the acceptor reports while it accepts carries its span
            // (a clone: accepting needs the core whole).
            #[cfg(feature = "tracing")]
            let span = core.span.as_ref().map(|s| s.tracing.clone());
            #[cfg(feature = "tracing")]
            let _entered = span.as_ref().map(tracing::Span::enter);
            core.fire_timers();
            core.redeliver(&mut runnable);
            core.retry_waiting(&mut runnable);
            core.accept(&mut runnable);
            let pool = core.service.pool.clone();
            drop(core);
            for conn in runnable.drain(..) {
                pool.schedule(conn);
            }
        }
        // Leaving without a stop (the server was dropped): the pool must
        // not keep watching a socket nobody reads.
        let mut core = self.core.lock();
        if core.listener.is_some() {
            core.close_listener();
        }
    }
}

impl<H: Handler<M>, M: Send + 'static> Core<H, M> {
    /// Moves new timer entries to the heap and returns how long to sleep.
    fn next_timeout(&mut self) -> Option<Duration> {
        let mut wake_at = self.waiting.iter().map(|w| w.next_try).min();
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
            }
        };
        earliest(self.backoff_until);
        if self.can_accept() {
            earliest(Some(Instant::now()));
        }
        let live = self.limiter.live();
        let pool = &self.service.pool;
        self.heap.sleep_until(&self.timers, wake_at, |heap| {
            // Drops the entries of closed connections and stale ones once
            // they outnumber the live connections, so that churn cannot
            // grow the heap for a whole read timeout.
            if heap.len() < 4096 || heap.len() < 4 * live {
                return;
            }
            let slab = pool.slab.lock();
            heap.retain(|std::cmp::Reverse((at, token))| {
                slab.get(*token)
                    .is_some_and(|conn| conn.timer.lock().queued == Some(*at))
            });
        })
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
                    self.limiter.set_waiting(false);
                    let _ = ack.send(());
                }
                Control::Exit => return false,
            }
        }
        true
    }

    /// Watches a listener and opens an acceptor span for it.
    fn start_listening(&mut self, mut listener: ListenSocket, listener_span: ListenerSpan) {
        // A UDP socket is read by the pool's workers, a stream listener by
        // this thread.
        let watched = match &listener {
            ListenSocket::Udp { recv, .. } => self.watch_udp(recv.as_raw_fd()),
            _ => self
                .registry
                .register(&mut listener, LISTENER, Interest::READABLE),
        };
        if let Err(e) = watched {
            report!(
                error,
                { error = %e, "cannot watch the listener" },
                target: "atoll", "cannot watch the listener: {e}"
            );
            return;
        }
        self.fixed_local = listener.fixed_local();
        self.listener_ready = !matches!(listener, ListenSocket::Udp { .. });
        self.listener = Some(listener);
        self.span = Some(AcceptorSpan {
            emitter: Emitter::new(
                self.service.telemetry.clone(),
                Span::Acceptor,
                Some(listener_span.emitter.id()),
            ),
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
        match listener.as_mut() {
            Some(ListenSocket::Udp { recv, .. }) => self.unwatch_udp(recv.as_raw_fd()),
            Some(listener) => {
                let _ = self.registry.deregister(listener);
            }
            None => {}
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

    /// Emits an acceptor event, if a sink wants it and a span is open.
    fn emit(&self, kind: Kind<'_>) {
        if let Some(span) = &self.span {
            span.emitter.emit(None, None, || kind);
        }
    }

    /// Pops due timers. An entry whose connection moved its deadline later
    /// is pushed again at the new deadline; a due one notifies the worker.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((at, token)) = self.heap.pop_due(now) {
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
                    self.heap.push(deadline, token);
                }
                Some(_) => {
                    timer.queued = None;
                    drop(timer);
                    conn.notify(Work::TIMEOUT);
                }
                None => timer.queued = None,
            }
        }
    }

    /// Whether another arrival may be taken: a connection waiting for a slot
    /// stops accepting; datagrams wait up to a bound.
    fn has_room(&self) -> bool {
        match self.listener {
            Some(ListenSocket::Udp { .. }) => self.waiting.len() < DATAGRAMS_WAITING,
            _ => self.waiting.is_empty(),
        }
    }

    /// Gives waiting arrivals a slot as slots free, in order; turns away
    /// those whose retries are spent.
    fn retry_waiting(&mut self, runnable: &mut Vec<Arc<Conn<H, M>>>) {
        let now = Instant::now();
        let (count, wait) = (self.options.retry_count, self.options.retry_wait);
        let mut i = 0;
        while i < self.waiting.len() {
            if self.limiter.try_acquire() {
                if let Some(w) = self.waiting.remove(i) {
                    self.open(w.arrival, runnable);
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
        self.limiter.set_waiting(!self.waiting.is_empty());
    }

    /// Turns away an arrival the limiter had no slot for.
    fn reject(&self, arrival: Arrival) {
        let peer = arrival.peer();
        drop(arrival);
        self.service
            .counters
            .rejected
            .fetch_add(1, Ordering::Relaxed);
        self.emit(Kind::SpawnError {
            peer: &peer,
            reason: SpawnError::Limiter,
        });
    }

    fn accept(&mut self, runnable: &mut Vec<Arc<Conn<H, M>>>) {
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
                return; // the pool's workers receive
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    errors = 0;
                    self.service
                        .counters
                        .accepted
                        .fetch_add(1, Ordering::Relaxed);
                    self.count_accepted();
                    self.admit(Arrival::Stream(stream, peer), runnable);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.service
                        .counters
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    errors += 1;
                    let failure = AcceptFailure::of(&e);
                    let exhausted = failure == AcceptFailure::SystemLimit;
                    self.emit(match failure {
                        AcceptFailure::SystemLimit => Kind::Emfile { error: &e },
                        AcceptFailure::Aborted => Kind::ConnectionAborted,
                        AcceptFailure::Closed | AcceptFailure::Other => {
                            Kind::AcceptError { error: &e }
                        }
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
    fn admit(&mut self, arrival: Arrival, runnable: &mut Vec<Arc<Conn<H, M>>>) {
        if self.waiting.is_empty() && self.limiter.try_acquire() {
            self.open(arrival, runnable);
            return;
        }
        if self.options.retry_count == 0 {
            self.reject(arrival);
            return;
        }
        self.limiter.set_waiting(true);
        self.waiting.push_back(Waiting {
            arrival,
            attempts: 0,
            next_try: Instant::now() + self.options.retry_wait,
        });
        // A worker receiving datagrams may be the one making it wait: the
        // acceptor thread must learn when to try again.
        self.timers.wake();
        // A slot may have freed between the failed acquire and `waiting`.
        self.retry_waiting(runnable);
    }

    /// Sets up a connection that holds a limiter slot; it joins
    /// `runnable`, for the workers.
    fn open(&mut self, arrival: Arrival, runnable: &mut Vec<Arc<Conn<H, M>>>) {
        let conn = match arrival {
            Arrival::Stream(sock, peer) => self.open_stream(sock, peer),
            Arrival::Datagram(peer, datagram) => self.open_session(peer, datagram),
        };
        runnable.extend(conn);
    }

    fn open_stream(&mut self, sock: RawSocket, peer: Addr) -> Option<Arc<Conn<H, M>>> {
        self.options.listen.apply(&sock, peer.inet().is_some());
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
                    self.limiter.release();
                    return None;
                }
            },
        };
        let io = Io::new(sock);
        let fd = io.raw_fd();
        let weak = io.weak();
        let setup = if self.service.options.proxy.is_some() {
            Setup::Proxy(io)
        } else {
            Setup::Accepted(io)
        };
        self.install(peer, local, setup, Some(fd), weak)
    }

    /// Makes the connection's record and registers its descriptor (if it
    /// has its own); returns it, scheduled (its `CONNECT` work is marked),
    /// for the caller to hand to the workers.
    fn install(
        &mut self,
        peer: Addr,
        local: Addr,
        setup: Setup,
        fd: Option<std::os::fd::RawFd>,
        stream: std::sync::Weak<RawSocket>,
    ) -> Option<Arc<Conn<H, M>>> {
        let options = &self.service.options;
        let id = self.service.next_id();
        let mut socket = Socket::pending(
            id,
            peer.clone(),
            local.clone(),
            options.read_timeout,
            options.send_timeout,
        );
        socket.set_secure(options.transport.is_secure(), options.handshake_timeout);
        if let Some(span) = &self.span {
            let span = ConnSpan::new(&span.emitter, id);
            socket.set_span(span);
        }
        let pool = &self.service.pool;
        let mut slab = pool.slab.lock();
        let token = slab.vacant_token();
        #[cfg(feature = "tracing")]
        let span = {
            let transport = options.transport_name;
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
            sched: Sched::scheduled(Work::CONNECT),
            dispatch: Default::default(),
            service: self.service.clone(),
            limiter: self.limiter.clone(),
            timers: self.timers.clone(),
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
                self.limiter.release();
                return None;
            }
        }
        slab.fill(token, conn.clone());
        Some(conn)
    }

    /// The connection a token names, if it is still live.
    fn lookup(&self, token: Token) -> Option<Arc<Conn<H, M>>> {
        self.service.pool.slab.lock().get(token).cloned()
    }

    /// Counts an accepted connection or session in the acceptor span.
    fn count_accepted(&mut self) {
        if let Some(span) = &mut self.span {
            span.accepted += 1;
        }
    }
}
