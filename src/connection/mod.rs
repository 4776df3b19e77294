//! A live connection: its scheduling state, its mailbox and idle timer,
//! the [`Service`] every connection of a server shares, and the
//! [`Connection`] handle the application holds. Never touches the server
//! handle or an acceptor but through the narrow handles it holds (limiter,
//! timers).

mod driver;
mod handle;
#[cfg(all(test, loom))]
mod model;
pub(crate) mod sched;

use std::collections::VecDeque;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use mio::Token;
use parking_lot::{Condvar, Mutex};

use self::handle::Mailbox;
pub use self::handle::{Connection, SendError};
use self::sched::{Sched, Work};
use crate::error::BoxError;
use crate::handler::Handler;
use crate::limiter::Limiter;
use crate::pool::{Dispatch, Pool, Task};
use crate::proxy::{Proxied, ProxyProtocol};
use crate::socket::{SendPolicy, Socket};
use crate::stats::{Counters, Traffic};
use crate::telemetry::Telemetry;
use crate::timer::Timers;
use crate::transport::{Addr, PendingHandshake, Transport};

pub(crate) use self::driver::FORCE_GRACE;

// The phases of a connection, in `Conn::phase`.
/// Served by the workers; takes messages.
pub(crate) const OPEN: u8 = 0;
/// Driven by the application's own thread; takes no messages.
pub(crate) const DETACHED: u8 = 1;
/// Closed and forgotten.
pub(crate) const ENDED: u8 = 2;

/// Makes the handler of each new connection.
pub(crate) type Factory<H, M> = Box<dyn Fn(&Connection<M>) -> Result<H, BoxError> + Send + Sync>;

/// The options every connection of a server is served with.
#[derive(Clone)]
pub(crate) struct ConnOptions {
    pub(crate) transport: Arc<dyn Transport>,
    /// What the connection's `tracing` span calls the transport.
    #[cfg(feature = "tracing")]
    pub(crate) transport_name: &'static str,
    pub(crate) handshake_timeout: Option<Duration>,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) send_timeout: SendPolicy,
    pub(crate) proxy: Option<ProxyProtocol>,
    pub(crate) max_queued_messages: Option<usize>,
    pub(crate) silent_terminate_on_error: bool,
}

/// What every connection of one server shares: the handler factory, the
/// options, the pool that runs them, the counters and telemetry. The server
/// makes it; acceptors make connections with it.
pub(crate) struct Service<H, M> {
    pub(crate) factory: Factory<H, M>,
    pub(crate) options: ConnOptions,
    pub(crate) pool: Arc<Pool<Conn<H, M>>>,
    pub(crate) counters: Counters,
    pub(crate) telemetry: Arc<Telemetry>,
    next_id: AtomicU64,
    /// Signalled whenever a connection ends, for a stop waiting for the
    /// last one.
    ended: (Mutex<()>, Condvar),
}

impl<H: Handler<M>, M: Send + 'static> Service<H, M> {
    pub(crate) fn new(
        factory: Factory<H, M>,
        options: ConnOptions,
        pool: Arc<Pool<Conn<H, M>>>,
        telemetry: Arc<Telemetry>,
    ) -> Service<H, M> {
        Service {
            factory,
            options,
            pool,
            counters: Counters::default(),
            telemetry,
            next_id: AtomicU64::new(1),
            ended: (Mutex::new(()), Condvar::new()),
        }
    }

    /// A new connection id, unique in this server.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The live connections.
    pub(crate) fn connections(&self) -> Vec<Arc<Conn<H, M>>> {
        self.pool.tasks()
    }

    /// Waits until `done` holds, checking it each time a connection ends;
    /// `false` if `deadline` passed first.
    pub(crate) fn wait_ended(&self, deadline: Option<Instant>, done: impl Fn() -> bool) -> bool {
        let mut guard = self.ended.0.lock();
        loop {
            if done() {
                return true;
            }
            match deadline {
                None => self.ended.1.wait(&mut guard),
                Some(d) => {
                    if self.ended.1.wait_until(&mut guard, d).timed_out() {
                        return done();
                    }
                }
            }
        }
    }

    fn connection_ended(&self) {
        let _guard = self.ended.0.lock();
        self.ended.1.notify_all();
    }
}

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
            self.span
                .record("proxy", tracing::field::display(&proxied.via));
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

/// A live connection: shared by the pool (which runs it), its acceptor
/// (which fires its timer), the application's [`Connection`] handles and
/// the stopping server.
pub(crate) struct Conn<H, M> {
    pub(crate) meta: Meta,
    pub(crate) token: Token,
    pub(crate) sched: Sched,
    /// The pool's bookkeeping: dispatch wait and slow mark.
    pub(crate) dispatch: Dispatch,
    pub(crate) service: Arc<Service<H, M>>,
    /// The acceptor's limiter slot this connection holds, and its timers.
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) timers: Arc<Timers>,
    /// For forcing the connection closed at stop from another thread.
    pub(crate) stream: Weak<socket2::Socket>,
    pub(crate) phase: AtomicU8,
    pub(crate) mailbox: Mutex<VecDeque<M>>,
    pub(crate) timer: Mutex<Timer>,
    pub(crate) state: Mutex<State<H>>,
}

impl<H: Handler<M>, M: Send + 'static> Task for Conn<H, M> {
    fn token(&self) -> Token {
        self.token
    }

    fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    fn ready(&self, hangup: bool) -> bool {
        let mut work = Work::READABLE;
        if hangup {
            work |= Work::HANGUP;
        }
        self.sched.mark(work)
    }

    fn run(self: &Arc<Self>, buf: &mut [u8], waited: Duration, at: Instant) -> Traffic {
        driver::run(self, buf, waited, at)
    }

    fn fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.stream.upgrade().map(|s| s.as_raw_fd())
    }

    fn is_open(&self) -> bool {
        self.phase.load(Ordering::Acquire) == OPEN
    }
}

impl<H: Handler<M>, M: Send + 'static> Conn<H, M> {
    /// Adds work; queues the connection if it was neither queued nor
    /// running.
    pub(crate) fn notify(self: &Arc<Self>, work: Work) {
        if self.sched.mark(work) {
            self.service.pool.schedule(self.clone());
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
        self.timers.add(d, self.token);
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
        if let Some(max) = self.service.options.max_queued_messages {
            if mailbox.len() >= max {
                drop(mailbox);
                let refused = &self.service.counters.messages_refused;
                refused.fetch_add(1, Ordering::Relaxed);
                return Err(SendError::Full(message));
            }
        }
        mailbox.push_back(message);
        drop(mailbox);
        self.notify(Work::MESSAGE);
        Ok(())
    }

    fn is_alive(&self) -> bool {
        self.phase.load(Ordering::Acquire) != ENDED
    }
}
