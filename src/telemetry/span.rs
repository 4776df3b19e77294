//! Spans as their events need them: where a listener's, an acceptor's or
//! a connection's events go, and the one place an [`Event`] is made.
//! Never decides whether an event is wanted but by asking [`Telemetry`].

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::{Event, Kind, Span, SpanId, Telemetry};
use crate::transport::Addr;

/// Where one span's events go: which span, its id and its parent's, and
/// the server's telemetry. Every listener, acceptor and connection event
/// is made and emitted here.
#[derive(Clone)]
pub(crate) struct Emitter {
    telemetry: Arc<Telemetry>,
    span: Span,
    id: SpanId,
    parent: Option<SpanId>,
}

impl Emitter {
    /// A new span of kind `span` under `parent`, with an id of its own.
    pub(crate) fn new(telemetry: Arc<Telemetry>, span: Span, parent: Option<SpanId>) -> Emitter {
        Emitter {
            telemetry,
            span,
            id: SpanId::next(),
            parent,
        }
    }

    /// The span's id.
    pub(crate) fn id(&self) -> SpanId {
        self.id
    }

    /// Emits the event `kind` builds, if a sink wants its kind: `kind` is
    /// only built while some sink is attached, and the clock read (when
    /// `at` is `None`) only for a wanted event. A connection event names
    /// its connection and peer.
    #[inline]
    pub(crate) fn emit<'a>(
        &self,
        at: Option<Instant>,
        connection: Option<(u64, &'a Addr)>,
        kind: impl FnOnce() -> Kind<'a>,
    ) {
        if !Telemetry::enabled() {
            return;
        }
        let kind = kind();
        if Telemetry::wants(kind.interest()) {
            self.telemetry.emit(&Event {
                span: self.span,
                id: self.id,
                parent: self.parent,
                at: at.unwrap_or_else(Instant::now),
                connection: connection.map(|(id, _)| id),
                peer: connection.map(|(_, peer)| peer),
                kind,
            });
        }
    }
}

/// A listener span as the acceptor threads get it: where its events go
/// and, with the `tracing` feature, the `tracing` span their acceptor spans
/// go under.
#[derive(Clone)]
pub(crate) struct ListenerSpan {
    pub(crate) emitter: Emitter,
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
    emitter: Emitter,
    /// The acceptor's span, for acceptor events about this connection.
    acceptor: Emitter,
    connection: u64,
    started: Instant,
}

/// The internal name of [`ConnectionSpan`].
pub(crate) type ConnSpan = ConnectionSpan;

impl fmt::Debug for ConnectionSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSpan")
            .field("id", &self.emitter.id)
            .field("parent", &self.acceptor.id)
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
        self.emitter.id
    }

    /// The parent span's id: the acceptor that accepted the connection.
    ///
    /// ```
    /// # fn demo(socket: &atoll::Socket) {
    /// let acceptor = socket.span().map(|s| s.parent());
    /// # }
    /// ```
    pub fn parent(&self) -> SpanId {
        self.acceptor.id
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

    /// The span of connection `connection`, accepted now under the
    /// acceptor span `acceptor`.
    pub(crate) fn new(acceptor: &Emitter, connection: u64) -> ConnectionSpan {
        ConnectionSpan {
            emitter: Emitter::new(
                acceptor.telemetry.clone(),
                Span::Connection,
                Some(acceptor.id),
            ),
            acceptor: acceptor.clone(),
            connection,
            started: Instant::now(),
        }
    }

    /// Emits an event of the acceptor that accepted this connection.
    pub(crate) fn emit_acceptor(&self, kind: Kind<'_>) {
        self.acceptor.emit(None, None, || kind);
    }

    /// Emits a connection event if a sink wants its kind; `kind` is only
    /// built when some sink is attached, and the clock read when one wants
    /// it.
    #[inline]
    pub(crate) fn emit<'a>(&self, peer: &'a Addr, kind: impl FnOnce() -> Kind<'a>) {
        self.emitter.emit(None, Some((self.connection, peer)), kind)
    }

    /// [`emit`](ConnectionSpan::emit) with the time the event happened.
    #[inline]
    pub(crate) fn emit_at<'a>(&self, at: Instant, peer: &'a Addr, kind: impl FnOnce() -> Kind<'a>) {
        self.emitter
            .emit(Some(at), Some((self.connection, peer)), kind)
    }
}
