//! Telemetry: spans and events that applications observe. Delivers events
//! to sinks; never touches a socket or a thread of the server.
//!
//! As a low-level library atoll logs nothing inline; it emits events in
//! three nested spans:
//!
//! - the **listener** span: a listening socket, from bind to close (so a
//!   suspend ends it and a resume starts a new one);
//! - the **acceptor** span: an acceptor thread accepting from that listener, its
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

mod event;
mod interest;
mod sink;
mod span;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub use self::event::{DropReason, Event, Kind, SpawnError, Value};
pub use self::interest::Interest;
pub(crate) use self::sink::Sinks;
pub use self::sink::{only, Sink, SinkId};
pub use self::span::ConnectionSpan;
pub(crate) use self::span::{ConnSpan, Emitter, ListenerSpan};

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
    /// An acceptor thread accepting from a listener.
    Acceptor,
    /// A client connection.
    Connection,
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
