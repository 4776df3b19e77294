//! What happened: [`Kind`] and the [`Event`] that carries it, with its
//! measurements and metadata by Thousand Island's keys. Never delivers an
//! event.

use std::fs::File;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Interest, Span, SpanId};
use crate::error::Error;
use crate::stats::SocketStats;
use crate::transport::{Addr, ListenOptions};

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
    /// `[:acceptor, :start]`: an acceptor thread accepts from the listener.
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
    /// Another accept error, skipped; on a UDP server, a receive on its
    /// socket that failed.
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
