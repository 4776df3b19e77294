//! The crate-private side of [`Socket`]: what the acceptor, the driver
//! and the worker use to build it, feed it, observe it and release it.
//! Nothing here is public, and nothing here blocks.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{closed_io, Socket, SocketStats};
use crate::error::Error;
use crate::proxy::Proxied;
use crate::stats::Traffic;
use crate::telemetry::{ConnSpan, Kind, Telemetry};
use crate::transport::{Addr, Stream};

/// How a connection's sends wait: the listen options' send timeout and
/// `send_timeout_close`, carried together to each accepted socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SendPolicy {
    pub(crate) timeout: Option<Duration>,
    pub(crate) close: bool,
}

impl Default for SendPolicy {
    /// 30 s, and a send that times out closes the connection.
    fn default() -> SendPolicy {
        SendPolicy {
            timeout: Some(Duration::from_secs(30)),
            close: true,
        }
    }
}

/// Called when a detached socket is dropped, so the server can release the
/// connection's slot and forget it.
pub(crate) trait Release: Send + Sync {
    fn release(&self);
}

impl Socket {
    pub(crate) fn new(
        stream: Box<dyn Stream>,
        id: u64,
        peer: Addr,
        local: Addr,
        read_timeout: Option<Duration>,
        send: SendPolicy,
    ) -> Socket {
        let mut socket = Socket::pending(id, peer, local, read_timeout, send);
        socket.attach(stream);
        socket
    }

    /// A socket whose stream comes later, when the handshake is done.
    pub(crate) fn pending(
        id: u64,
        peer: Addr,
        local: Addr,
        read_timeout: Option<Duration>,
        send: SendPolicy,
    ) -> Socket {
        Socket {
            stream: None,
            fd: -1,
            id,
            peer,
            local,
            secure: false,
            handshake_timeout: None,
            unread: Vec::new(),
            maybe_more: false,
            read_timeout,
            send_timeout: send.timeout,
            send_timeout_close: send.close,
            fatal: None,
            stats: SocketStats::default(),
            published: (0, 0),
            release: None,
            span: None,
            announced: AtomicBool::new(false),
            proxy: None,
        }
    }

    /// Gives the socket its stream.
    pub(crate) fn attach(&mut self, stream: Box<dyn Stream>) {
        self.fd = stream.io().raw_fd();
        self.stream = Some(stream);
    }

    /// Joins the connection span. Its start event waits for
    /// [`start_span`](Socket::start_span), once the handler exists (or for
    /// the stop of a connection that had one), so a connection the factory
    /// refuses emits none: only the acceptor's `spawn_error`. It carries
    /// the accept time all the same.
    pub(crate) fn set_span(&mut self, span: ConnSpan) {
        self.span = Some(span);
    }

    /// The connection has its handler: its span starts (the event carries
    /// the accept time). Until then no event of it is emitted, so a
    /// connection the factory refuses is only a spawn error.
    pub(crate) fn start_span(&mut self) {
        self.announce();
    }

    /// Emits the span's start event, once, with the accept time.
    fn announce(&self) {
        let Some(span) = &self.span else { return };
        // A load first: after the first event, no read-modify-write.
        if self.announced.load(Ordering::Relaxed) || self.announced.swap(true, Ordering::Relaxed) {
            return;
        }
        span.emit_at(span.started(), &self.peer, || Kind::ConnectionStart {
            peer: &self.peer,
            local: &self.local,
            via: self.proxy.as_ref().map(|p| &p.via),
        });
    }

    /// Takes the PROXY protocol header: the client it names becomes the
    /// peer.
    pub(crate) fn set_proxied(&mut self, proxied: Arc<Proxied>) {
        if let Some(client) = proxied.client() {
            self.peer = client.clone();
        }
        self.proxy = Some(proxied);
    }

    /// Bytes moved since the last call.
    pub(crate) fn unpublished(&mut self) -> Traffic {
        let now = (self.stats.recv_bytes, self.stats.send_bytes);
        let delta = Traffic {
            bytes_in: now.0 - self.published.0,
            bytes_out: now.1 - self.published.1,
        };
        self.published = now;
        delta
    }

    /// Emits a connection event if a sink is attached.
    #[inline]
    pub(crate) fn emit<'a>(&'a self, kind: impl FnOnce() -> Kind<'a>) {
        if let Some(span) = &self.span {
            if Telemetry::enabled() {
                self.announce();
            }
            span.emit(&self.peer, kind);
        }
    }

    /// Ends the connection span: the stop event, once, with `error` only
    /// for a real error. A connection the factory refused never started.
    pub(crate) fn emit_stop(&mut self, error: Option<&Error>) {
        let never_started = !self.announced.load(Ordering::Relaxed);
        if never_started && matches!(error, Some(Error::Refused(_))) {
            self.span = None;
            return;
        }
        if Telemetry::enabled() {
            self.announce();
        }
        if let Some(span) = self.span.take() {
            let stats = self.stats;
            span.emit(&self.peer, || Kind::ConnectionStop {
                duration: span.started().elapsed(),
                stats,
                error,
            });
        }
    }

    /// Whether the transport encrypts, and the handshake timeout a
    /// STARTTLS [`upgrade`](Socket::upgrade) waits for.
    pub(crate) fn set_secure(&mut self, secure: bool, handshake_timeout: Option<Duration>) {
        self.secure = secure;
        self.handshake_timeout = handshake_timeout;
    }

    /// One non-blocking read from the kernel. `Ok(0)` is end of stream.
    pub(crate) fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stream = self.stream.as_mut().ok_or_else(closed_io)?;
        loop {
            match stream.read(buf) {
                Ok(n) => {
                    self.maybe_more = n > 0 && (n == buf.len() || !stream.short_read_drains());
                    if n > 0 {
                        self.stats.recv_bytes += n as u64;
                        self.stats.recv_count += 1;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.maybe_more = false;
                    return Err(e);
                }
            }
        }
    }

    /// Why the socket closed itself, if it did.
    pub(crate) fn take_fatal(&mut self) -> Option<Error> {
        self.fatal.take()
    }

    /// Takes the bytes a synchronous `recv` read ahead, if any.
    pub(crate) fn take_unread_vec(&mut self) -> Option<Vec<u8>> {
        (!self.unread.is_empty()).then(|| std::mem::take(&mut self.unread))
    }

    /// Whether the kernel may hold more data that no readiness edge will
    /// announce.
    pub(crate) fn maybe_more(&self) -> bool {
        self.maybe_more
    }

    /// The descriptor while the socket is open, to deregister it.
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        self.stream.as_ref().map(|_| self.fd)
    }

    /// Makes this socket end its connection when dropped (detached mode).
    pub(crate) fn set_release(&mut self, release: Arc<dyn Release>) {
        self.release = Some(release);
    }
}
