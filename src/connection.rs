//! A live connection: its scheduling state, its mailbox and idle timer, and
//! the [`Connection`] handle the application holds.

use std::collections::VecDeque;
use std::fmt;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Instant, SystemTime};

use mio::Token;
use parking_lot::Mutex;

use crate::handler::Handler;
use crate::proxy::{Proxied, ProxyHeader};
use crate::reactor::AcceptorShared;
use crate::server::Shared;
use crate::socket::Socket;
use crate::transport::{Addr, PendingHandshake};

// Work pending for a connection, set by whoever notices it (acceptor thread,
// application thread, stopper) and taken by the worker that runs it.
pub(crate) const CONNECT: u32 = 1;
pub(crate) const READABLE: u32 = 1 << 1;
pub(crate) const MESSAGE: u32 = 1 << 2;
pub(crate) const TIMEOUT: u32 = 1 << 3;
pub(crate) const SHUTDOWN: u32 = 1 << 4;
/// The peer closed its side or the socket failed: read until end of stream
/// or error, as a short read no longer means "drained".
pub(crate) const HANGUP: u32 = 1 << 5;
/// The connection is in the worker queue or on a worker. Only the thread
/// that sets it enqueues the connection, so it is never on two workers; a
/// worker clears it only when no work is pending, so no work is lost. A
/// closed connection keeps it set forever and is never scheduled again.
pub(crate) const SCHEDULED: u32 = 1 << 31;

// The phases of a connection, in `Conn::phase`.
/// Served by the workers; takes messages.
pub(crate) const OPEN: u8 = 0;
/// Driven by the application's own thread; takes no messages.
pub(crate) const DETACHED: u8 = 1;
/// Closed and forgotten.
pub(crate) const ENDED: u8 = 2;

/// What stays fixed for the life of a connection.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub(crate) id: u64,
    pub(crate) peer: Addr,
    pub(crate) local: Addr,
    pub(crate) started: SystemTime,
    /// The PROXY protocol header, once read.
    pub(crate) proxy: OnceLock<Arc<Proxied>>,
    /// The connection's `tracing` span, entered while a worker runs it.
    #[cfg(feature = "tracing")]
    pub(crate) span: tracing::Span,
}

impl Meta {
    /// Keeps the PROXY header that named the client (once); the `tracing`
    /// span then names the proxy and the original client.
    pub(crate) fn set_proxy(&self, proxied: Arc<Proxied>) {
        #[cfg(feature = "tracing")]
        {
            self.span.record("proxy", tracing::field::display(&proxied.via));
            if let Some(client) = proxied.client() {
                self.span.record("peer", tracing::field::display(client));
            }
        }
        let _ = self.proxy.set(proxied);
    }

    /// The peer as everything reports it: the original client when a
    /// PROXY header named one.
    pub(crate) fn peer(&self) -> &Addr {
        self.proxy
            .get()
            .and_then(|p| p.client())
            .unwrap_or(&self.peer)
    }
}

/// The idle timer. `deadline` is the truth, set by the worker when a
/// callback returns; `queued` is the deadline of this connection's entry in
/// its acceptor thread's timer heap (entries with another value are stale).
#[derive(Default)]
pub(crate) struct Timer {
    pub(crate) deadline: Option<Instant>,
    pub(crate) queued: Option<Instant>,
}

/// Where the transport's handshake stands.
pub(crate) enum Setup {
    /// Accepted; the PROXY protocol header comes first.
    Proxy(crate::transport::Io),
    /// Accepted; the handshake starts after the handler is made.
    Accepted(crate::transport::Io),
    /// Waiting for the peer.
    Handshaking(Box<dyn PendingHandshake>),
    /// A stream that needs no handshake (a UDP session).
    Stream(Box<dyn crate::transport::Stream>),
    /// The socket has its stream.
    Ready,
}

/// What only the worker running the connection touches.
pub(crate) struct State<H> {
    pub(crate) handler: Option<H>,
    pub(crate) socket: Option<Socket>,
    pub(crate) setup: Setup,
}

pub(crate) struct Conn<H, M> {
    pub(crate) meta: Meta,
    pub(crate) token: Token,
    pub(crate) sched: AtomicU32,
    /// When the connection last became runnable, in nanoseconds of the
    /// pool's clock: the start of its dispatch wait.
    pub(crate) queued_at: AtomicU64,
    /// Its last run lasted longer than `blocking_after`: the poller hands
    /// it to another worker rather than run it itself.
    pub(crate) slow: AtomicBool,
    pub(crate) server: Arc<Shared<H, M>>,
    pub(crate) acceptor: Arc<AcceptorShared>,
    /// For forcing the connection closed at stop from another thread.
    pub(crate) stream: Weak<socket2::Socket>,
    pub(crate) phase: AtomicU8,
    pub(crate) mailbox: Mutex<VecDeque<M>>,
    pub(crate) timer: Mutex<Timer>,
    pub(crate) state: Mutex<State<H>>,
}

impl<H: Handler<M>, M: Send + 'static> Conn<H, M> {
    /// Adds work; enqueues the connection if it was neither queued nor
    /// running.
    pub(crate) fn notify(self: &Arc<Self>, flags: u32) {
        let pool = &self.server.pool;
        if self.mark(flags, pool.now_ns()) {
            pool.schedule(self.clone());
        }
    }

    /// Adds work; `true` when the caller set `SCHEDULED` and must queue or
    /// run the connection. `now` is the pool's clock.
    pub(crate) fn mark(&self, flags: u32, now: u64) -> bool {
        let prev = self.sched.fetch_or(flags | SCHEDULED, Ordering::AcqRel);
        if prev & SCHEDULED != 0 {
            return false;
        }
        self.queued_at.store(now, Ordering::Relaxed);
        true
    }

    pub(crate) fn queued_at(&self) -> u64 {
        self.queued_at.load(Ordering::Relaxed)
    }

    pub(crate) fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }

    pub(crate) fn set_slow(&self, slow: bool) {
        if self.is_slow() != slow {
            self.slow.store(slow, Ordering::Relaxed);
        }
    }

    /// Sets the idle deadline, telling the acceptor thread when its heap has no
    /// entry early enough.
    pub(crate) fn arm_timer(&self, deadline: Option<Instant>) {
        let mut timer = self.timer.lock();
        timer.deadline = deadline;
        let Some(d) = deadline else { return };
        if timer.queued.is_some_and(|q| q <= d) {
            return; // the acceptor will find the later deadline then
        }
        timer.queued = Some(d);
        drop(timer);
        self.acceptor.add_timer(d, self.token);
    }

    /// Whether the idle deadline has passed (a `TIMEOUT` may be stale: the
    /// deadline moves when a callback returns).
    pub(crate) fn timer_expired(&self) -> bool {
        self.timer
            .lock()
            .deadline
            .is_some_and(|d| d <= Instant::now())
    }

    /// Unblocks a worker stuck in a read or write of this connection and
    /// makes the peer see a close.
    pub(crate) fn force_close(&self) {
        if let Some(stream) = self.stream.upgrade() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Moves the connection to `phase`, dropping the messages it will
    /// never handle.
    pub(crate) fn set_phase(&self, phase: u8) {
        let dropped = {
            let mut mailbox = self.mailbox.lock();
            self.phase.store(phase, Ordering::Release);
            std::mem::take(&mut *mailbox)
        };
        drop(dropped);
    }

    pub(crate) fn handle(self: &Arc<Self>) -> Connection<M> {
        Connection {
            inner: self.clone(),
        }
    }
}

/// The type-erased side of a connection that [`Connection`] reaches.
trait Mailbox<M>: Send + Sync {
    fn meta(&self) -> &Meta;
    fn post(self: Arc<Self>, message: M) -> Result<(), SendError<M>>;
    fn is_alive(&self) -> bool;
}

impl<H: Handler<M>, M: Send + 'static> Mailbox<M> for Conn<H, M> {
    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn post(self: Arc<Self>, message: M) -> Result<(), SendError<M>> {
        let mut mailbox = self.mailbox.lock();
        // Checked under the mailbox lock: the worker that ends or detaches
        // the connection changes the phase under it too, so a message is
        // either refused here or seen by that worker.
        if self.phase.load(Ordering::Acquire) != OPEN {
            return Err(SendError::Closed(message));
        }
        if let Some(max) = self.server.config.max_queued_messages {
            if mailbox.len() >= max {
                drop(mailbox);
                let refused = &self.server.stats.messages_refused;
                refused.fetch_add(1, Ordering::Relaxed);
                return Err(SendError::Full(message));
            }
        }
        mailbox.push_back(message);
        drop(mailbox);
        self.notify(MESSAGE);
        Ok(())
    }

    fn is_alive(&self) -> bool {
        self.phase.load(Ordering::Acquire) != ENDED
    }
}

/// Why [`Connection::send`] gave a message back.
///
/// ```
/// let err = atoll::SendError::Full("tick");
/// assert!(err.is_full());
/// assert_eq!(err.to_string(), "the connection's message queue is full");
/// assert_eq!(err.into_inner(), "tick");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SendError<M> {
    /// The connection's queue is full: its handler is not keeping up.
    Full(M),
    /// The connection ended or was detached.
    Closed(M),
}

impl<M> SendError<M> {
    /// The message that was not queued.
    ///
    /// ```
    /// assert_eq!(atoll::SendError::Closed(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Closed(m) => m,
        }
    }

    /// Whether the queue was full (rather than the connection gone).
    ///
    /// ```
    /// assert!(!atoll::SendError::Closed(()).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "Full(..)",
            SendError::Closed(_) => "Closed(..)",
        })
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "the connection's message queue is full",
            SendError::Closed(_) => "the connection is closed",
        })
    }
}

impl<M> std::error::Error for SendError<M> {}

/// A cloneable, `Send` handle to a live connection, for the application's
/// other threads: it identifies the connection and sends it messages, which
/// its handler receives in [`Handler::handle_message`].
///
/// Messages are delivered on a worker, one at a time, in the order they were
/// sent, never while another callback of the same connection runs.
///
/// A handle is given to the handler factory (keep it in the handler to reach
/// the connection from elsewhere) and listed by
/// [`Server::connections`](crate::Server::connections).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use atoll::{Connection, Flow, Handler, Server, Socket};
///
/// struct Push;
///
/// impl Handler<String> for Push {
///     fn handle_message(&mut self, msg: String, socket: &mut Socket) -> Flow {
///         socket.send(msg.as_bytes()).map_or_else(Flow::error, |()| Flow::Continue)
///     }
/// }
///
/// let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(Push))?;
/// let mut client = std::net::TcpStream::connect(server.local_addr()?)?;
/// # while server.connections().is_empty() { std::thread::sleep(Duration::from_millis(5)); }
/// for conn in server.connections() {
///     conn.send("hello".to_string()).ok();
/// }
/// # use std::io::Read;
/// let mut buf = [0u8; 5];
/// client.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection<M = ()> {
    inner: Arc<dyn Mailbox<M>>,
}

impl<M> Clone for Connection<M> {
    fn clone(&self) -> Self {
        Connection {
            inner: self.inner.clone(),
        }
    }
}

impl<M: Send + 'static> Connection<M> {
    /// Queues a message for the connection's handler. Gives the message back
    /// if the connection has ended or was detached
    /// ([`SendError::Closed`]), or if its queue already holds
    /// [`max_queued_messages`](crate::Builder::max_queued_messages)
    /// ([`SendError::Full`]). `Ok` means queued: a connection that ends
    /// before its handler gets to the message drops it.
    ///
    /// ```
    /// use atoll::SendError;
    /// # fn demo(conn: atoll::Connection<String>) {
    /// match conn.send("ping".to_string()) {
    ///     Ok(()) => {}
    ///     Err(SendError::Full(msg)) => eprintln!("{} is not keeping up; {msg} dropped", conn.id()),
    ///     Err(SendError::Closed(msg)) => eprintln!("connection gone, {msg} not delivered"),
    /// }
    /// # }
    /// ```
    pub fn send(&self, message: M) -> Result<(), SendError<M>> {
        self.inner.clone().post(message)
    }
}

impl<M> Connection<M> {
    /// The server-unique id of the connection.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// println!("connection {}", conn.id());
    /// # }
    /// ```
    pub fn id(&self) -> u64 {
        self.inner.meta().id
    }

    /// The peer's address: the original client's, once a PROXY protocol
    /// header named it (see [`proxy`](crate::proxy)).
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// println!("peer {}", conn.peer_addr());
    /// # }
    /// ```
    pub fn peer_addr(&self) -> &Addr {
        self.inner.meta().peer()
    }

    /// The address of the proxy the connection came through, once its
    /// PROXY protocol header was read; `None` otherwise.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// if let Some(proxy) = conn.proxy_addr() {
    ///     println!("{} via {proxy}", conn.peer_addr());
    /// }
    /// # }
    /// ```
    pub fn proxy_addr(&self) -> Option<&Addr> {
        self.inner.meta().proxy.get().map(|p| &p.via)
    }

    /// The connection's PROXY protocol header, once read.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// let sni = conn.proxy_header().and_then(|h| h.authority());
    /// # }
    /// ```
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.inner.meta().proxy.get().map(|p| &p.header)
    }

    /// The local address of the connection.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// println!("local {}", conn.local_addr());
    /// # }
    /// ```
    pub fn local_addr(&self) -> &Addr {
        &self.inner.meta().local
    }

    /// When the connection was accepted.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// let age = conn.started().elapsed().unwrap_or_default();
    /// # }
    /// ```
    pub fn started(&self) -> SystemTime {
        self.inner.meta().started
    }

    /// Whether the connection is still open.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// if !conn.is_alive() { /* forget it */ }
    /// # }
    /// ```
    pub fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }
}

impl<M> fmt::Debug for Connection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = self.inner.meta();
        f.debug_struct("Connection")
            .field("id", &meta.id)
            .field("peer", meta.peer())
            .field("local", &meta.local)
            .field("alive", &self.is_alive())
            .finish()
    }
}
