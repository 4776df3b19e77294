//! Telemetry: spans and events that applications observe.
//!
//! As a low-level library atoll logs nothing inline; it emits events in
//! three nested spans:
//!
//! - the **listener** span: a listening socket, from bind to close (so a
//!   suspend ends it and a resume starts a new one);
//! - the **acceptor** span: a acceptor thread accepting from that listener, its
//!   parent the listener span;
//! - the **connection** span: one client connection, from accept to close,
//!   its parent the acceptor span that accepted it.
//!
//! Each [`Event`] carries its span's id, the parent's id, a monotonic
//! timestamp and what happened ([`Kind`]), whose fields are the event's
//! measurements and metadata; [`Event::measurements`] and
//! [`Event::metadata`] also list them by Thousand Island's keys. Events
//! that carry data lend it: a sink that wants to keep bytes copies them
//! itself.
//!
//! A [`Sink`] (any `Fn(&Event)` closure too) is attached to one server with
//! [`Server::attach_sink`](crate::Server::attach_sink) or to every server of
//! the process with [`attach`], and detached by the [`SinkId`] it got.
//! A sink receives the kinds of event in its [`Interest`]
//! ([`Sink::interest`], every kind by default; [`only`] narrows a closure's).
//! An event that no sink attached anywhere wants costs one relaxed atomic
//! load: it is not timed, dated or built, and the bytes of a send are not
//! kept for it. A sink that panics is detached and reported once, through
//! the `log` crate; it never breaks a connection.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use atoll::telemetry::{Event, Kind};
//!
//! let connections = Arc::new(AtomicUsize::new(0));
//! let seen = connections.clone();
//! let id = atoll::telemetry::attach(move |event: &Event<'_>| {
//!     if let Kind::ConnectionStart { .. } = event.kind {
//!         seen.fetch_add(1, Ordering::Relaxed);
//!     }
//! });
//! // ... run servers ...
//! atoll::telemetry::detach(id);
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::ops::{BitOr, BitOrAssign};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::error::Error;
use crate::stats::SocketStats;
use crate::transport::{Addr, ListenOptions};

/// The kinds some sink attached anywhere in the process wants: the one
/// load on the hot path.
static WANTED: AtomicU32 = AtomicU32::new(0);
/// How many attached sinks want each kind (bit), from which `WANTED` is
/// kept.
static WANTED_BY: Mutex<[usize; 32]> = Mutex::new([0; 32]);
/// Ids of spans and sinks.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// The process-wide sinks.
static GLOBAL: Sinks = Sinks::new();

/// The id of a span, unique in the process.
///
/// ```
/// # fn demo(event: &atoll::telemetry::Event<'_>) {
/// println!("span {} under {:?}", event.id.0, event.parent.map(|p| p.0));
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub u64);

impl SpanId {
    pub(crate) fn next() -> SpanId {
        SpanId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }
}

/// Which of the three spans an event belongs to.
///
/// ```
/// # fn demo(event: &atoll::telemetry::Event<'_>) {
/// if event.span == atoll::telemetry::Span::Connection {
///     println!("connection {:?}: {}", event.connection, event.name());
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// A listening socket.
    Listener,
    /// A acceptor thread accepting from a listener.
    Acceptor,
    /// A client connection.
    Connection,
}

/// Why a connection was turned away (`spawn_error`).
///
/// ```
/// use atoll::telemetry::{Event, Kind, SpawnError};
/// # fn demo(event: &Event<'_>) {
/// if let Kind::SpawnError { peer, reason: SpawnError::Limiter } = &event.kind {
///     eprintln!("{peer} turned away: raise num_connections?");
/// }
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnError<'a> {
    /// No limiter slot freed within the retries; the connection was closed.
    Limiter,
    /// The handler factory refused the connection, for this reason.
    Refused(&'a Error),
}

/// Why a datagram was dropped.
///
/// ```
/// # fn demo(event: &atoll::telemetry::Event<'_>) {
/// use atoll::telemetry::{DropReason, Kind};
/// if let Kind::DatagramDropped { reason: DropReason::TooLarge, len, .. } = event.kind {
///     eprintln!("a datagram of {len}+ bytes: raise max_datagram_size?");
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Larger than `max_datagram_size`: dropped whole, never cut.
    TooLarge,
    /// No session slot freed within the retries, or too many datagrams
    /// already waited for one.
    Limit,
}

/// What happened.
///
/// ```
/// use atoll::telemetry::{Event, Kind};
/// # fn demo(event: &Event<'_>) {
/// match &event.kind {
///     Kind::ConnectionStop { duration, stats, error } => {
///         println!("{:?} {} bytes in, error {:?}", duration, stats.recv_bytes, error);
///     }
///     Kind::AsyncRecv { data } => println!("{} bytes", data.len()),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Kind<'a> {
    /// `[:listener, :start]`: the server listens.
    ListenerStart {
        /// Where.
        local: &'a Addr,
        /// The transport's name.
        transport: &'static str,
        /// The listen options.
        options: &'a ListenOptions,
    },
    /// `[:listener, :stop]`: the listener closed (suspend or stop). Its
    /// metadata repeats the start's, as Thousand Island's does.
    ListenerStop {
        /// Where it listened.
        local: &'a Addr,
        /// How long it listened.
        duration: Duration,
        /// The transport's name.
        transport: &'static str,
        /// The listen options.
        options: &'a ListenOptions,
    },
    /// `[:acceptor, :start]`: a acceptor thread accepts from the listener.
    AcceptorStart,
    /// `[:acceptor, :stop]`: it stopped accepting.
    AcceptorStop {
        /// How long it accepted.
        duration: Duration,
        /// Connections it accepted.
        connections: u64,
    },
    /// `[:acceptor, :spawn_error]`: a connection was turned away.
    SpawnError {
        /// The client.
        peer: &'a Addr,
        /// Why.
        reason: SpawnError<'a>,
    },
    /// `[:acceptor, :econnaborted]`: a client gave up before its
    /// connection was accepted.
    ConnectionAborted,
    /// `[:acceptor, :emfile]`: the process or system ran out of
    /// descriptors or memory on accept (`EMFILE`, `ENFILE`, ...); accepting
    /// pauses briefly. [`Event::name`] gives Thousand Island's
    /// `acceptor.emfile` (it was `acceptor.exhausted`).
    Emfile {
        /// The error.
        error: &'a io::Error,
    },
    /// Another accept error, skipped.
    AcceptError {
        /// The error.
        error: &'a io::Error,
    },
    /// UDP: a datagram was dropped.
    DatagramDropped {
        /// Its sender.
        peer: &'a Addr,
        /// Its size (at least this, when too large).
        len: usize,
        /// Why.
        reason: DropReason,
    },
    /// `[:connection, :start]`: a connection was accepted.
    ConnectionStart {
        /// The client: the original one behind a proxy that sent a PROXY
        /// protocol header.
        peer: &'a Addr,
        /// The local end.
        local: &'a Addr,
        /// The proxy the connection came through, when the server reads
        /// PROXY protocol headers.
        via: Option<&'a Addr>,
    },
    /// `[:connection, :stop]`: the connection ended. `error` only for real
    /// errors: a peer close or a local close is none; an idle timeout is
    /// [`Timeout::Idle`](crate::Timeout::Idle).
    ConnectionStop {
        /// How long it lived.
        duration: Duration,
        /// Its traffic (`send_oct`, `send_cnt`, `recv_oct`, `recv_cnt`).
        stats: SocketStats,
        /// Why it ended, if in error.
        error: Option<&'a Error>,
    },
    /// `[:connection, :ready]`: set up (after any handshake), before
    /// `handle_connection`.
    Ready,
    /// `connection.dispatch` (atoll's own): a worker took the connection
    /// up to run its callbacks, `wait` after it became runnable (readiness,
    /// a message, a timer). Long waits mean the workers are saturated: see
    /// [`Builder::max_workers`](crate::Builder::max_workers).
    Dispatch {
        /// From readiness to the worker.
        wait: Duration,
    },
    /// `connection.callbacks` (atoll's own): a worker ran one round of the
    /// connection's pending work (the callbacks, with the reads that fed
    /// them and the sends they made), for `duration`. Timed only while a
    /// sink wants it ([`Interest::CALLBACKS`]): it costs nothing otherwise.
    Callbacks {
        /// How long the worker was held.
        duration: Duration,
    },
    /// `[:connection, :async_recv]`: data for `handle_data`.
    AsyncRecv {
        /// The bytes.
        data: &'a [u8],
    },
    /// `[:connection, :recv]`: data read by a synchronous `recv`.
    Recv {
        /// The bytes.
        data: &'a [u8],
    },
    /// `[:connection, :recv_error]`: a read failed.
    RecvError {
        /// The error.
        error: &'a Error,
    },
    /// `[:connection, :send]`: data sent.
    Send {
        /// The bytes, as the slices given to `send_vectored`.
        data: &'a [IoSlice<'a>],
    },
    /// `[:connection, :send_error]`: a send failed.
    SendError {
        /// The bytes that were being sent.
        data: &'a [IoSlice<'a>],
        /// The error.
        error: &'a Error,
    },
    /// `[:connection, :sendfile]`: a file was sent.
    Sendfile {
        /// The file's name as the caller gave it to
        /// [`Socket::sendfile_path`](crate::Socket::sendfile_path); `None`
        /// when it gave an open [`File`] to
        /// [`Socket::sendfile`](crate::Socket::sendfile).
        path: Option<&'a Path>,
        /// The file.
        file: &'a File,
        /// Where sending started.
        offset: u64,
        /// Bytes sent.
        bytes_written: u64,
    },
    /// `[:connection, :sendfile_error]`: sending a file failed.
    SendfileError {
        /// The file's name as the caller gave it (see
        /// [`Kind::Sendfile`]).
        path: Option<&'a Path>,
        /// The file; `None` when the file named by `path` could not be
        /// opened.
        file: Option<&'a File>,
        /// Where sending started.
        offset: u64,
        /// Bytes asked for (0: to the end).
        length: u64,
        /// The error.
        error: &'a Error,
    },
    /// `[:connection, :socket_shutdown]`: the handler shut the socket down.
    SocketShutdown {
        /// The direction.
        way: Shutdown,
    },
    /// An application's own event in the connection's span, emitted with
    /// [`Socket::span_event`](crate::Socket::span_event) (Thousand Island's
    /// `Telemetry.span_event` on the socket's span). [`Event::name`] gives
    /// `"connection.custom"`; `name` is the application's.
    Custom {
        /// The application's name for the event.
        name: &'a str,
        /// Numeric measurements, by name.
        measurements: &'a [(&'a str, i64)],
        /// Metadata, by name.
        metadata: &'a [(&'a str, &'a str)],
    },
}

/// Which kinds of event a sink receives: a set of [`Kind`]s, one constant
/// per kind, joined with `|`. A sink declares it with [`Sink::interest`]
/// (or is given it with [`only`]); it is read once, when the sink is
/// attached, and the sink then receives the events of those kinds and no
/// other.
///
/// What nobody wants is not paid for: an event that no sink attached
/// anywhere in the process wants is not built, dated or delivered,
/// `connection.callbacks` is timed only while a sink wants it, and a send
/// copies its slices for `connection.send` only then.
///
/// ```
/// use atoll::telemetry::{Event, Interest, Kind, Sink};
///
/// struct Waits;
///
/// impl Sink for Waits {
///     fn event(&self, event: &Event<'_>) {
///         if let Kind::Dispatch { wait } = event.kind {
///             println!("waited {wait:?}");
///         }
///     }
///
///     fn interest(&self) -> Interest {
///         Interest::DISPATCH
///     }
/// }
///
/// let wanted = Interest::DISPATCH | Interest::CONNECTION_STOP;
/// assert!(wanted.contains(Interest::DISPATCH));
/// assert!(!wanted.contains(Interest::SEND));
/// assert!(Interest::ALL.contains(wanted));
/// let id = atoll::telemetry::attach(Waits);
/// # atoll::telemetry::detach(id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u32);

impl Interest {
    /// No event.
    pub const NONE: Interest = Interest(0);
    /// Every kind, including kinds added in later versions: the default of
    /// [`Sink::interest`].
    pub const ALL: Interest = Interest(u32::MAX);
    /// [`Kind::ListenerStart`]: `listener.start`.
    pub const LISTENER_START: Interest = Interest(1 << 0);
    /// [`Kind::ListenerStop`]: `listener.stop`.
    pub const LISTENER_STOP: Interest = Interest(1 << 1);
    /// [`Kind::AcceptorStart`]: `acceptor.start`.
    pub const ACCEPTOR_START: Interest = Interest(1 << 2);
    /// [`Kind::AcceptorStop`]: `acceptor.stop`.
    pub const ACCEPTOR_STOP: Interest = Interest(1 << 3);
    /// [`Kind::SpawnError`]: `acceptor.spawn_error`.
    pub const SPAWN_ERROR: Interest = Interest(1 << 4);
    /// [`Kind::ConnectionAborted`]: `acceptor.econnaborted`.
    pub const CONNECTION_ABORTED: Interest = Interest(1 << 5);
    /// [`Kind::Emfile`]: `acceptor.emfile`.
    pub const EMFILE: Interest = Interest(1 << 6);
    /// [`Kind::AcceptError`]: `acceptor.accept_error`.
    pub const ACCEPT_ERROR: Interest = Interest(1 << 7);
    /// [`Kind::DatagramDropped`]: `acceptor.datagram_dropped`.
    pub const DATAGRAM_DROPPED: Interest = Interest(1 << 8);
    /// [`Kind::ConnectionStart`]: `connection.start`.
    pub const CONNECTION_START: Interest = Interest(1 << 9);
    /// [`Kind::ConnectionStop`]: `connection.stop`.
    pub const CONNECTION_STOP: Interest = Interest(1 << 10);
    /// [`Kind::Ready`]: `connection.ready`.
    pub const READY: Interest = Interest(1 << 11);
    /// [`Kind::Dispatch`]: `connection.dispatch`.
    pub const DISPATCH: Interest = Interest(1 << 12);
    /// [`Kind::Callbacks`]: `connection.callbacks`.
    pub const CALLBACKS: Interest = Interest(1 << 13);
    /// [`Kind::AsyncRecv`]: `connection.async_recv`.
    pub const ASYNC_RECV: Interest = Interest(1 << 14);
    /// [`Kind::Recv`]: `connection.recv`.
    pub const RECV: Interest = Interest(1 << 15);
    /// [`Kind::RecvError`]: `connection.recv_error`.
    pub const RECV_ERROR: Interest = Interest(1 << 16);
    /// [`Kind::Send`]: `connection.send`.
    pub const SEND: Interest = Interest(1 << 17);
    /// [`Kind::SendError`]: `connection.send_error`.
    pub const SEND_ERROR: Interest = Interest(1 << 18);
    /// [`Kind::Sendfile`]: `connection.sendfile`.
    pub const SENDFILE: Interest = Interest(1 << 19);
    /// [`Kind::SendfileError`]: `connection.sendfile_error`.
    pub const SENDFILE_ERROR: Interest = Interest(1 << 20);
    /// [`Kind::SocketShutdown`]: `connection.socket_shutdown`.
    pub const SOCKET_SHUTDOWN: Interest = Interest(1 << 21);
    /// [`Kind::Custom`]: `connection.custom`.
    pub const CUSTOM: Interest = Interest(1 << 22);

    /// Whether every kind in `other` is in this set.
    ///
    /// ```
    /// use atoll::telemetry::Interest;
    /// assert!((Interest::SEND | Interest::RECV).contains(Interest::SEND));
    /// assert!(!Interest::SEND.contains(Interest::SEND | Interest::RECV));
    /// ```
    pub const fn contains(self, other: Interest) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether this set and `other` have a kind in common.
    ///
    /// ```
    /// use atoll::telemetry::Interest;
    /// assert!(Interest::ALL.intersects(Interest::SEND | Interest::RECV));
    /// assert!(!Interest::SEND.intersects(Interest::RECV));
    /// ```
    pub const fn intersects(self, other: Interest) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    ///
    /// ```
    /// use atoll::telemetry::Interest;
    /// assert!(Interest::NONE.is_empty());
    /// assert!(!Interest::READY.is_empty());
    /// ```
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds of both sets (`|` does the same).
    ///
    /// ```
    /// use atoll::telemetry::Interest;
    /// const STOPS: Interest = Interest::LISTENER_STOP.union(Interest::CONNECTION_STOP);
    /// assert_eq!(STOPS, Interest::LISTENER_STOP | Interest::CONNECTION_STOP);
    /// ```
    pub const fn union(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    /// The event names of the kinds in the set, in the order of [`Kind`].
    fn names(self) -> impl Iterator<Item = &'static str> {
        const NAMES: [(Interest, &str); 23] = [
            (Interest::LISTENER_START, "listener.start"),
            (Interest::LISTENER_STOP, "listener.stop"),
            (Interest::ACCEPTOR_START, "acceptor.start"),
            (Interest::ACCEPTOR_STOP, "acceptor.stop"),
            (Interest::SPAWN_ERROR, "acceptor.spawn_error"),
            (Interest::CONNECTION_ABORTED, "acceptor.econnaborted"),
            (Interest::EMFILE, "acceptor.emfile"),
            (Interest::ACCEPT_ERROR, "acceptor.accept_error"),
            (Interest::DATAGRAM_DROPPED, "acceptor.datagram_dropped"),
            (Interest::CONNECTION_START, "connection.start"),
            (Interest::CONNECTION_STOP, "connection.stop"),
            (Interest::READY, "connection.ready"),
            (Interest::DISPATCH, "connection.dispatch"),
            (Interest::CALLBACKS, "connection.callbacks"),
            (Interest::ASYNC_RECV, "connection.async_recv"),
            (Interest::RECV, "connection.recv"),
            (Interest::RECV_ERROR, "connection.recv_error"),
            (Interest::SEND, "connection.send"),
            (Interest::SEND_ERROR, "connection.send_error"),
            (Interest::SENDFILE, "connection.sendfile"),
            (Interest::SENDFILE_ERROR, "connection.sendfile_error"),
            (Interest::SOCKET_SHUTDOWN, "connection.socket_shutdown"),
            (Interest::CUSTOM, "connection.custom"),
        ];
        NAMES
            .into_iter()
            .filter(move |(kind, _)| self.contains(*kind))
            .map(|(_, name)| name)
    }
}

impl BitOr for Interest {
    type Output = Interest;

    fn bitor(self, other: Interest) -> Interest {
        self.union(other)
    }
}

impl BitOrAssign for Interest {
    fn bitor_assign(&mut self, other: Interest) {
        *self = self.union(other);
    }
}

impl Default for Interest {
    /// [`Interest::NONE`].
    fn default() -> Interest {
        Interest::NONE
    }
}

impl fmt::Debug for Interest {
    /// `ALL`, `NONE`, or the event names joined by `|`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Interest::ALL => f.write_str("Interest(ALL)"),
            Interest::NONE => f.write_str("Interest(NONE)"),
            _ => {
                f.write_str("Interest(")?;
                for (i, name) in self.names().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    f.write_str(name)?;
                }
                f.write_str(")")
            }
        }
    }
}

impl Kind<'_> {
    /// The one-kind [`Interest`] of this event: a sink receives it when
    /// its interest contains that.
    ///
    /// ```
    /// use atoll::telemetry::{Interest, Kind};
    /// assert_eq!(Kind::Ready.interest(), Interest::READY);
    /// ```
    pub fn interest(&self) -> Interest {
        match self {
            Kind::ListenerStart { .. } => Interest::LISTENER_START,
            Kind::ListenerStop { .. } => Interest::LISTENER_STOP,
            Kind::AcceptorStart => Interest::ACCEPTOR_START,
            Kind::AcceptorStop { .. } => Interest::ACCEPTOR_STOP,
            Kind::SpawnError { .. } => Interest::SPAWN_ERROR,
            Kind::ConnectionAborted => Interest::CONNECTION_ABORTED,
            Kind::Emfile { .. } => Interest::EMFILE,
            Kind::AcceptError { .. } => Interest::ACCEPT_ERROR,
            Kind::DatagramDropped { .. } => Interest::DATAGRAM_DROPPED,
            Kind::ConnectionStart { .. } => Interest::CONNECTION_START,
            Kind::ConnectionStop { .. } => Interest::CONNECTION_STOP,
            Kind::Ready => Interest::READY,
            Kind::Dispatch { .. } => Interest::DISPATCH,
            Kind::Callbacks { .. } => Interest::CALLBACKS,
            Kind::AsyncRecv { .. } => Interest::ASYNC_RECV,
            Kind::Recv { .. } => Interest::RECV,
            Kind::RecvError { .. } => Interest::RECV_ERROR,
            Kind::Send { .. } => Interest::SEND,
            Kind::SendError { .. } => Interest::SEND_ERROR,
            Kind::Sendfile { .. } => Interest::SENDFILE,
            Kind::SendfileError { .. } => Interest::SENDFILE_ERROR,
            Kind::SocketShutdown { .. } => Interest::SOCKET_SHUTDOWN,
            Kind::Custom { .. } => Interest::CUSTOM,
        }
    }
}

/// One telemetry event.
///
/// ```
/// let id = atoll::telemetry::attach(|event: &atoll::telemetry::Event<'_>| {
///     println!("{:?} {} at {:?}", event.span, event.name(), event.at);
/// });
/// # atoll::telemetry::detach(id);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Event<'a> {
    /// The span the event belongs to.
    pub span: Span,
    /// That span's id.
    pub id: SpanId,
    /// The parent span's id (none for a listener).
    pub parent: Option<SpanId>,
    /// When (monotonic).
    pub at: Instant,
    /// The connection's id ([`Socket::id`](crate::Socket::id)), on
    /// connection events.
    pub connection: Option<u64>,
    /// The connection's peer, on connection events.
    pub peer: Option<&'a Addr>,
    /// What happened.
    pub kind: Kind<'a>,
}

impl Event<'_> {
    /// The event's name, `span.event`, such as
    /// `"connection.start"`.
    ///
    /// ```
    /// # fn demo(event: &atoll::telemetry::Event<'_>) {
    /// println!("{}", event.name());
    /// # }
    /// ```
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::ListenerStart { .. } => "listener.start",
            Kind::ListenerStop { .. } => "listener.stop",
            Kind::AcceptorStart => "acceptor.start",
            Kind::AcceptorStop { .. } => "acceptor.stop",
            Kind::SpawnError { .. } => "acceptor.spawn_error",
            Kind::ConnectionAborted => "acceptor.econnaborted",
            Kind::Emfile { .. } => "acceptor.emfile",
            Kind::AcceptError { .. } => "acceptor.accept_error",
            Kind::DatagramDropped { .. } => "acceptor.datagram_dropped",
            Kind::ConnectionStart { .. } => "connection.start",
            Kind::ConnectionStop { .. } => "connection.stop",
            Kind::Ready => "connection.ready",
            Kind::Dispatch { .. } => "connection.dispatch",
            Kind::Callbacks { .. } => "connection.callbacks",
            Kind::AsyncRecv { .. } => "connection.async_recv",
            Kind::Recv { .. } => "connection.recv",
            Kind::RecvError { .. } => "connection.recv_error",
            Kind::Send { .. } => "connection.send",
            Kind::SendError { .. } => "connection.send_error",
            Kind::Sendfile { .. } => "connection.sendfile",
            Kind::SendfileError { .. } => "connection.sendfile_error",
            Kind::SocketShutdown { .. } => "connection.socket_shutdown",
            Kind::Custom { .. } => "connection.custom",
        }
    }
}

/// One measurement or metadata value of an event, typed: what
/// [`Event::measurements`] and [`Event::metadata`] list by Thousand
/// Island's key.
///
/// ```
/// use atoll::telemetry::{Event, Value};
/// # fn demo(event: &Event<'_>) {
/// for (key, value) in event.measurements() {
///     if let Value::Count(n) = value {
///         println!("{} {key}={n}", event.name());
///     }
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Value<'a> {
    /// A point in time (`monotonic_time`).
    Time(Instant),
    /// A length of time (`duration`).
    Duration(Duration),
    /// A count of bytes, calls, connections, or an offset or a port.
    Count(u64),
    /// An application's own measurement ([`Kind::Custom`]).
    Int(i64),
    /// A span's id.
    Span(SpanId),
    /// An address (with its port, also given apart as `*_port`).
    Addr(&'a Addr),
    /// A name: a transport, a shutdown direction, an application's
    /// metadata.
    Text(&'a str),
    /// The listen options (`transport_options`).
    Options(&'a ListenOptions),
    /// Bytes received.
    Bytes(&'a [u8]),
    /// Bytes sent, as the slices given.
    Slices(&'a [IoSlice<'a>]),
    /// A file's name as the caller gave it.
    Path(&'a Path),
    /// An error of a connection.
    Error(&'a Error),
    /// An error of an accept.
    IoError(&'a io::Error),
    /// Why a connection was turned away.
    SpawnError(&'a SpawnError<'a>),
    /// Why a datagram was dropped.
    DropReason(DropReason),
}

impl Event<'_> {
    /// The event's measurements, by Thousand Island's keys and in its
    /// places (which put `data`, `error` and `filename` of the data events
    /// among the measurements). `monotonic_time` is [`Event::at`].
    ///
    /// ```
    /// use atoll::telemetry::{Event, Value};
    /// # fn demo(event: &Event<'_>) {
    /// if event.name() == "connection.stop" {
    ///     let octets_in = event.measurements().into_iter().find_map(|(k, v)| match (k, v) {
    ///         ("recv_oct", Value::Count(n)) => Some(n),
    ///         _ => None,
    ///     });
    /// }
    /// # }
    /// ```
    pub fn measurements(&self) -> Vec<(&str, Value<'_>)> {
        let mut out = vec![("monotonic_time", Value::Time(self.at))];
        match &self.kind {
            Kind::ListenerStop { duration, .. } => {
                out.push(("duration", Value::Duration(*duration)))
            }
            Kind::AcceptorStop {
                duration,
                connections,
            } => {
                out.push(("duration", Value::Duration(*duration)));
                out.push(("connections", Value::Count(*connections)));
            }
            Kind::ConnectionStop {
                duration, stats, ..
            } => {
                out.push(("duration", Value::Duration(*duration)));
                out.push(("send_oct", Value::Count(stats.send_bytes)));
                out.push(("send_cnt", Value::Count(stats.send_count)));
                out.push(("recv_oct", Value::Count(stats.recv_bytes)));
                out.push(("recv_cnt", Value::Count(stats.recv_count)));
            }
            Kind::AsyncRecv { data } | Kind::Recv { data } => {
                out.push(("data", Value::Bytes(data)))
            }
            Kind::RecvError { error } => out.push(("error", Value::Error(error))),
            Kind::Send { data } => out.push(("data", Value::Slices(data))),
            Kind::SendError { data, error } => {
                out.push(("data", Value::Slices(data)));
                out.push(("error", Value::Error(error)));
            }
            Kind::Sendfile {
                path,
                offset,
                bytes_written,
                ..
            } => {
                if let Some(path) = path {
                    out.push(("filename", Value::Path(path)));
                }
                out.push(("offset", Value::Count(*offset)));
                out.push(("bytes_written", Value::Count(*bytes_written)));
            }
            Kind::SendfileError {
                path,
                offset,
                length,
                error,
                ..
            } => {
                if let Some(path) = path {
                    out.push(("filename", Value::Path(path)));
                }
                out.push(("offset", Value::Count(*offset)));
                out.push(("length", Value::Count(*length)));
                out.push(("error", Value::Error(error)));
            }
            Kind::SocketShutdown { way } => out.push((
                "way",
                Value::Text(match way {
                    Shutdown::Read => "read",
                    Shutdown::Write => "write",
                    Shutdown::Both => "read_write",
                }),
            )),
            Kind::DatagramDropped { len, .. } => out.push(("length", Value::Count(*len as u64))),
            Kind::Custom { measurements, .. } => {
                out.extend(measurements.iter().map(|(k, v)| (*k, Value::Int(*v))));
            }
            _ => {}
        }
        out
    }

    /// The event's metadata, by Thousand Island's keys: the span context
    /// and its parent's, then the event's own (`local_address` and
    /// `local_port`, `transport_module`, `transport_options`,
    /// `remote_address` and `remote_port`, `error`, ...).
    ///
    /// ```
    /// use atoll::telemetry::{Event, Value};
    /// # fn demo(event: &Event<'_>) {
    /// for (key, value) in event.metadata() {
    ///     if let ("transport_module", Value::Text(name)) = (key, value) {
    ///         println!("listening with {name}");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn metadata(&self) -> Vec<(&str, Value<'_>)> {
        let mut out = vec![("telemetry_span_context", Value::Span(self.id))];
        if let Some(parent) = self.parent {
            out.push(("parent_telemetry_span_context", Value::Span(parent)));
        }
        match &self.kind {
            Kind::ListenerStart {
                local,
                transport,
                options,
            }
            | Kind::ListenerStop {
                local,
                transport,
                options,
                ..
            } => {
                push_addr(&mut out, ["local_address", "local_port"], local);
                out.push(("transport_module", Value::Text(transport)));
                out.push(("transport_options", Value::Options(options)));
            }
            Kind::SpawnError { peer, reason } => {
                push_addr(&mut out, ["remote_address", "remote_port"], peer);
                out.push(("error", Value::SpawnError(reason)));
            }
            Kind::Emfile { error } | Kind::AcceptError { error } => {
                out.push(("error", Value::IoError(error)));
            }
            Kind::DatagramDropped { peer, reason, .. } => {
                push_addr(&mut out, ["remote_address", "remote_port"], peer);
                out.push(("reason", Value::DropReason(*reason)));
            }
            Kind::ConnectionStart { peer, local, via } => {
                push_addr(&mut out, ["remote_address", "remote_port"], peer);
                push_addr(&mut out, ["local_address", "local_port"], local);
                if let Some(via) = via {
                    push_addr(&mut out, ["proxy_address", "proxy_port"], via);
                }
            }
            Kind::ConnectionStop { error, .. } => {
                if let Some(peer) = self.peer {
                    push_addr(&mut out, ["remote_address", "remote_port"], peer);
                }
                if let Some(error) = error {
                    out.push(("error", Value::Error(error)));
                }
            }
            Kind::Custom { name, metadata, .. } => {
                out.push(("name", Value::Text(name)));
                out.extend(metadata.iter().map(|(k, v)| (*k, Value::Text(v))));
            }
            _ => {}
        }
        out
    }
}

/// An address and, for an IP one, its port apart, as Thousand Island
/// gives them.
fn push_addr<'b>(out: &mut Vec<(&'b str, Value<'b>)>, keys: [&'static str; 2], addr: &'b Addr) {
    out.push((keys[0], Value::Addr(addr)));
    if let Some(port) = addr.port() {
        out.push((keys[1], Value::Count(u64::from(port))));
    }
}

/// Receives events. Closures `Fn(&Event)` are sinks too. Called on the
/// thread where the event happened (a acceptor thread or a worker): keep it
/// quick.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use atoll::telemetry::{Event, Interest, Kind, Sink};
///
/// #[derive(Default)]
/// struct BytesIn(AtomicU64);
///
/// impl Sink for BytesIn {
///     fn event(&self, event: &Event<'_>) {
///         if let Kind::AsyncRecv { data } = event.kind {
///             self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
///         }
///     }
///
///     // Only what `event` looks at: other events are not built for it.
///     fn interest(&self) -> Interest {
///         Interest::ASYNC_RECV
///     }
/// }
///
/// let id = atoll::telemetry::attach(BytesIn::default());
/// # atoll::telemetry::detach(id);
/// ```
pub trait Sink: Send + Sync + 'static {
    /// One event, of a kind in the sink's [`interest`](Sink::interest).
    fn event(&self, event: &Event<'_>);

    /// The kinds of event the sink receives, read once when it is attached.
    /// By default every kind ([`Interest::ALL`]); a sink that names only
    /// what it uses spares the server the work of the others (see
    /// [`Interest`]).
    ///
    /// ```
    /// use atoll::telemetry::{Event, Interest, Sink};
    ///
    /// struct Stops;
    ///
    /// impl Sink for Stops {
    ///     fn event(&self, event: &Event<'_>) {
    ///         println!("{} ended", event.connection.unwrap_or_default());
    ///     }
    ///
    ///     fn interest(&self) -> Interest {
    ///         Interest::CONNECTION_STOP
    ///     }
    /// }
    /// assert_eq!(Stops.interest(), Interest::CONNECTION_STOP);
    /// ```
    fn interest(&self) -> Interest {
        Interest::ALL
    }
}

impl<F: Fn(&Event<'_>) + Send + Sync + 'static> Sink for F {
    fn event(&self, event: &Event<'_>) {
        self(event)
    }
}

/// `sink` with its interest narrowed to `interest`: a closure (whose
/// interest is every kind) made to want only some.
///
/// ```
/// use atoll::telemetry::{only, Event, Interest};
///
/// let id = atoll::telemetry::attach(only(
///     Interest::CONNECTION_START | Interest::CONNECTION_STOP,
///     |event: &Event<'_>| println!("{}", event.name()),
/// ));
/// # atoll::telemetry::detach(id);
/// ```
pub fn only(interest: Interest, sink: impl Sink) -> impl Sink {
    Only { interest, sink }
}

/// What [`only`] returns.
struct Only<S> {
    interest: Interest,
    sink: S,
}

impl<S: Sink> Sink for Only<S> {
    fn event(&self, event: &Event<'_>) {
        self.sink.event(event)
    }

    fn interest(&self) -> Interest {
        Interest(self.interest.0 & self.sink.interest().0)
    }
}

/// The id an attached sink is detached by.
///
/// ```
/// let id: atoll::telemetry::SinkId = atoll::telemetry::attach(|_: &atoll::telemetry::Event<'_>| {});
/// atoll::telemetry::detach(id);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SinkId(u64);

/// One attached sink.
struct Attached {
    id: SinkId,
    interest: Interest,
    sink: Arc<dyn Sink>,
}

/// Copies of the list that [`Sinks`] keeps.
const SHARDS: usize = 8;

/// Which copy of every list this thread reads: threads take them in turn.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's copy of a list.
fn shard() -> usize {
    SHARD
        .try_with(|shard| {
            if shard.get() == usize::MAX {
                shard.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            shard.get()
        })
        .unwrap_or(0)
}

/// One copy of the list, under a lock of its own, alone on its cache
/// lines.
#[repr(align(128))]
struct Shard(RwLock<Vec<Attached>>);

/// A list of sinks. Every event of a kind one of them wants reads it, and
/// attaching or detaching is rare: so the list is kept in several copies,
/// each read by some of the threads under its own lock, and changed in
/// all. Workers delivering events at once then do not contend on one lock.
pub(crate) struct Sinks {
    shards: [Shard; SHARDS],
    /// Attaches and detaches one at a time.
    changes: Mutex<()>,
    /// What the sinks of the list want together: events of no other kind
    /// skip the list's lock.
    interest: AtomicU32,
}

impl fmt::Debug for Sinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sinks")
            .field("attached", &self.shards[0].0.read().len())
            .finish()
    }
}

/// Counts `interest` in (`add`) or out of what the process's sinks want.
fn want(interest: Interest, add: bool) {
    let mut by = WANTED_BY.lock();
    let mut wanted = 0;
    for (bit, count) in by.iter_mut().enumerate() {
        if interest.0 & (1 << bit) != 0 {
            *count = if add {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
        }
        if *count > 0 {
            wanted |= 1 << bit;
        }
    }
    WANTED.store(wanted, Ordering::Relaxed);
}

impl Sinks {
    pub(crate) const fn new() -> Sinks {
        Sinks {
            shards: [const { Shard(RwLock::new(Vec::new())) }; SHARDS],
            changes: Mutex::new(()),
            interest: AtomicU32::new(0),
        }
    }

    pub(crate) fn attach(&self, sink: Arc<dyn Sink>) -> SinkId {
        let id = SinkId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let interest = sink.interest();
        let _changing = self.changes.lock();
        for shard in &self.shards {
            shard.0.write().push(Attached {
                id,
                interest,
                sink: sink.clone(),
            });
        }
        self.interest.fetch_or(interest.0, Ordering::Relaxed);
        want(interest, true);
        id
    }

    /// Once this returns, no event reaches the sink: each copy's write
    /// lock waited for the deliveries reading it.
    pub(crate) fn detach(&self, id: SinkId) -> bool {
        let _changing = self.changes.lock();
        let mut gone = None;
        for shard in &self.shards {
            let mut list = shard.0.write();
            if let Some(at) = list.iter().position(|a| a.id == id) {
                gone = Some(list.remove(at).interest);
            }
        }
        let Some(interest) = gone else {
            return false;
        };
        let left = self.shards[0].0.read().iter().fold(0, |all, a| all | a.interest.0);
        self.interest.store(left, Ordering::Relaxed);
        want(interest, false);
        true
    }

    /// Delivers `event` to the sinks that want it.
    fn deliver(&self, event: &Event<'_>, kind: Interest) {
        if self.interest.load(Ordering::Relaxed) & kind.0 == 0 {
            return;
        }
        let mut panicked = Vec::new();
        for attached in self.shards[shard()].0.read().iter() {
            if !attached.interest.intersects(kind) {
                continue;
            }
            let sink = &attached.sink;
            if panic::catch_unwind(AssertUnwindSafe(|| sink.event(event))).is_err() {
                panicked.push(attached.id);
            }
        }
        for id in panicked {
            if self.detach(id) {
                report!(
                    error,
                    { sink = id.0, event = event.name(), "telemetry sink panicked; detached" },
                    target: "atoll",
                    "telemetry sink {id:?} panicked on {}; detached",
                    event.name()
                );
            }
        }
    }
}

impl Drop for Sinks {
    /// A server's sinks stop counting among what the process wants.
    fn drop(&mut self) {
        for attached in self.shards[0].0.get_mut().drain(..) {
            want(attached.interest, false);
        }
    }
}

/// Attaches a sink to every server of the process.
///
/// ```
/// let id = atoll::telemetry::attach(|event: &atoll::telemetry::Event<'_>| println!("{}", event.name()));
/// assert!(atoll::telemetry::detach(id));
/// ```
pub fn attach(sink: impl Sink) -> SinkId {
    GLOBAL.attach(Arc::new(sink))
}

/// Detaches a process-wide sink; `false` if it was not attached.
///
/// ```
/// let id = atoll::telemetry::attach(|_: &atoll::telemetry::Event<'_>| {});
/// assert!(atoll::telemetry::detach(id));
/// assert!(!atoll::telemetry::detach(id));
/// ```
pub fn detach(id: SinkId) -> bool {
    GLOBAL.detach(id)
}

/// A server's emitter: its own sinks, and the process-wide ones.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    pub(crate) sinks: Sinks,
    /// Whether a metrics publisher runs for the server: one at a time.
    #[cfg(feature = "metrics")]
    pub(crate) published: std::sync::atomic::AtomicBool,
}

impl Default for Sinks {
    fn default() -> Sinks {
        Sinks::new()
    }
}

impl Telemetry {
    /// Whether a sink attached anywhere wants some event: the hot path's
    /// one load.
    #[inline]
    pub(crate) fn enabled() -> bool {
        WANTED.load(Ordering::Relaxed) != 0
    }

    /// Whether a sink attached anywhere wants an event of a kind in
    /// `interest`: one load. Work done only for such events (timing them,
    /// keeping their data) asks this first.
    #[inline]
    pub(crate) fn wants(interest: Interest) -> bool {
        WANTED.load(Ordering::Relaxed) & interest.0 != 0
    }

    /// Delivers an event to the sinks of this server and of the process
    /// that want it. Call only when [`enabled`](Telemetry::enabled).
    pub(crate) fn emit(&self, event: &Event<'_>) {
        let kind = event.kind.interest();
        self.sinks.deliver(event, kind);
        GLOBAL.deliver(event, kind);
    }

    /// A server's emitter with the sinks given to its builder attached, so
    /// they see the first listener and acceptor starts.
    pub(crate) fn with_sinks(sinks: &[Arc<dyn Sink>]) -> Telemetry {
        let telemetry = Telemetry::default();
        for sink in sinks {
            telemetry.sinks.attach(sink.clone());
        }
        telemetry
    }
}

/// A listener span as the acceptor threads get it: the telemetry id and, with
/// the `tracing` feature, the `tracing` span their acceptor spans go under.
#[derive(Clone, Debug)]
pub(crate) struct ListenerSpan {
    pub(crate) id: SpanId,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: tracing::Span,
}

/// A connection's span: its place in the span tree, which
/// [`Socket::span`](crate::Socket::span) gives the handler (Thousand
/// Island's `telemetry_span`), so that the application can relate its own
/// telemetry to the connection's events or emit events in it with
/// [`Socket::span_event`](crate::Socket::span_event).
///
/// ```
/// use atoll::{Flow, Handler, Socket};
///
/// struct Traced;
///
/// impl Handler for Traced {
///     fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
///         if let Some(span) = socket.span() {
///             println!("span {:?} under acceptor {:?}, {:?} old", span.id(), span.parent(), span.started().elapsed());
///         }
///         Flow::Continue
///     }
/// }
/// ```
#[derive(Clone)]
pub struct ConnectionSpan {
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) id: SpanId,
    pub(crate) parent: SpanId,
    /// The acceptor's parent, for acceptor events about this connection.
    pub(crate) listener: SpanId,
    pub(crate) connection: u64,
    pub(crate) started: Instant,
}

/// The internal name of [`ConnectionSpan`].
pub(crate) type ConnSpan = ConnectionSpan;

impl fmt::Debug for ConnectionSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSpan")
            .field("id", &self.id)
            .field("parent", &self.parent)
            .field("connection", &self.connection)
            .finish()
    }
}

impl ConnectionSpan {
    /// The span's id: the [`Event::id`] of the connection's events.
    ///
    /// ```
    /// # fn demo(socket: &atoll::Socket) {
    /// let id = socket.span().map(|s| s.id());
    /// # }
    /// ```
    pub fn id(&self) -> SpanId {
        self.id
    }

    /// The parent span's id: the acceptor that accepted the connection.
    ///
    /// ```
    /// # fn demo(socket: &atoll::Socket) {
    /// let acceptor = socket.span().map(|s| s.parent());
    /// # }
    /// ```
    pub fn parent(&self) -> SpanId {
        self.parent
    }

    /// When the span started (the connection was accepted): the
    /// [`Event::at`] of its `connection.start`.
    ///
    /// ```
    /// # fn demo(socket: &atoll::Socket) {
    /// let age = socket.span().map(|s| s.started().elapsed());
    /// # }
    /// ```
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Emits an event of the acceptor that accepted this connection.
    pub(crate) fn emit_acceptor(&self, kind: Kind<'_>) {
        if Telemetry::wants(kind.interest()) {
            self.telemetry.emit(&Event {
                span: Span::Acceptor,
                id: self.parent,
                parent: Some(self.listener),
                at: Instant::now(),
                connection: None,
                peer: None,
                kind,
            });
        }
    }

    /// Emits a connection event if a sink wants its kind; `kind` is only
    /// built when some sink is attached, and the clock read when one wants
    /// it.
    #[inline]
    pub(crate) fn emit<'a>(&self, peer: &'a Addr, kind: impl FnOnce() -> Kind<'a>) {
        self.emit_when(None, peer, kind)
    }

    /// [`emit`](ConnectionSpan::emit) with the time the event happened.
    #[inline]
    pub(crate) fn emit_at<'a>(&self, at: Instant, peer: &'a Addr, kind: impl FnOnce() -> Kind<'a>) {
        self.emit_when(Some(at), peer, kind)
    }

    #[inline]
    fn emit_when<'a>(&self, at: Option<Instant>, peer: &'a Addr, kind: impl FnOnce() -> Kind<'a>) {
        if !Telemetry::enabled() {
            return;
        }
        let kind = kind();
        if Telemetry::wants(kind.interest()) {
            self.telemetry.emit(&Event {
                span: Span::Connection,
                id: self.id,
                parent: Some(self.parent),
                at: at.unwrap_or_else(Instant::now),
                connection: Some(self.connection),
                peer: Some(peer),
                kind,
            });
        }
    }
}
