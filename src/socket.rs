//! [`Socket`]: what a handler's callbacks use to talk to the peer.

use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::error::{Chain, Error};
use crate::proxy::{Proxied, ProxyHeader};
use crate::sys::{self, Wait};
use crate::telemetry::{ConnSpan, ConnectionSpan, Interest, Kind, Telemetry};
use crate::transport::{handshake_blocking, Addr, Credentials, Stream, Transport};

/// Bytes a worker reads per system call for
/// [`Handler::handle_data`](crate::Handler::handle_data).
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Chunk size of [`Socket::sendfile`] on a stream that cannot splice (TLS):
/// 1 MiB is large enough that the per-chunk cost vanishes, small enough
/// to bound the copy buffer.
const SENDFILE_CHUNK: u64 = 1 << 20;

/// Counters of a connection's traffic: bytes and calls, in and out.
///
/// ```
/// let stats = atoll::SocketStats::default();
/// assert_eq!(stats.recv_bytes + stats.send_bytes, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStats {
    /// Bytes received (`recv_oct`).
    pub recv_bytes: u64,
    /// Read calls that returned data (`recv_cnt`).
    pub recv_count: u64,
    /// Bytes sent (`send_oct`).
    pub send_bytes: u64,
    /// Write calls that sent data (`send_cnt`).
    pub send_count: u64,
}

/// How a connection's sends wait: the listen options' send timeout and
/// `send_timeout_close`, carried together to each accepted socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SendPolicy {
    pub(crate) timeout: Option<Duration>,
    pub(crate) close: bool,
}

/// Called when a detached socket is dropped, so the server can release the
/// connection's slot and forget it.
pub(crate) trait Release: Send + Sync {
    fn release(&self);
}

/// A connection's socket, as handler callbacks see it.
///
/// The Rust form of `ThousandIsland.Socket`. The descriptor underneath is
/// non-blocking (the server watches it for readiness between callbacks), but
/// every method here blocks the calling worker as a blocking socket would,
/// bounded by a timeout:
///
/// - reads by [`recv`](Socket::recv) and [`Read`] use the connection's read
///   timeout (the server's `read_timeout` unless a
///   [`Flow::ContinuePersistent`](crate::Flow::ContinuePersistent) replaced
///   it);
/// - writes by [`send`](Socket::send), [`send_vectored`](Socket::send_vectored),
///   [`sendfile`](Socket::sendfile) and [`Write`] use the send timeout, and a
///   send that times out closes the connection unless `send_timeout_close`
///   is off ([`set_send_timeout_close`](Socket::set_send_timeout_close)).
///
/// `Socket` implements [`Read`] and [`Write`], so `BufReader`, `write!` and
/// existing protocol code work on it unchanged.
///
/// # Examples
///
/// A handler that reads a 4-byte length and then exactly that many bytes:
///
/// ```
/// use atoll::{Flow, Handler, Socket};
///
/// struct Framed;
///
/// impl Handler for Framed {
///     fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
///         let head = match socket.recv(4) {
///             Ok(head) => head,
///             Err(e) => return Flow::error(e),
///         };
///         let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
///         match socket.recv(len).and_then(|body| socket.send(&body)) {
///             Ok(()) => Flow::Close,
///             Err(e) => Flow::error(e),
///         }
///     }
/// }
/// ```
pub struct Socket {
    /// `None` once closed, and during the transport's handshake.
    stream: Option<Box<dyn Stream>>,
    /// The stream's descriptor, for waiting on readiness.
    fd: RawFd,
    id: u64,
    peer: Addr,
    local: Addr,
    secure: bool,
    handshake_timeout: Option<Duration>,
    /// Bytes read from the kernel but not yet given to the handler.
    unread: Vec<u8>,
    /// The last read filled its buffer, so more may be waiting in the kernel
    /// without a new readiness edge.
    maybe_more: bool,
    read_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
    /// Whether a send that times out closes the socket.
    send_timeout_close: bool,
    /// Why the socket closed itself (a send timeout, a failed upgrade):
    /// the connection's error, whatever the callback returns.
    fatal: Option<Error>,
    stats: SocketStats,
    /// Bytes (in, out) already added to the server's counters.
    published: (u64, u64),
    release: Option<Arc<dyn Release>>,
    /// The connection span (none for a standalone listener's sockets);
    /// taken when the stop event is emitted.
    span: Option<ConnSpan>,
    /// Whether the span's start event was emitted (atomic only so that
    /// `emit`, which takes `&self`, can emit it first).
    announced: AtomicBool,
    /// The PROXY protocol header and the proxy's address.
    proxy: Option<Arc<Proxied>>,
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
        span.emit_at(span.started, &self.peer, || Kind::ConnectionStart {
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

    /// Bytes (in, out) moved since the last call.
    pub(crate) fn unpublished(&mut self) -> (u64, u64) {
        let now = (self.stats.recv_bytes, self.stats.send_bytes);
        let delta = (now.0 - self.published.0, now.1 - self.published.1);
        self.published = now;
        delta
    }

    /// The connection's telemetry span (Thousand Island's
    /// `telemetry_span`): its id, its parent's and its start, to relate
    /// the application's own telemetry to the connection's events. `None`
    /// for a socket of a standalone [`Listener`](crate::transport::Listener),
    /// and once the connection's stop event was emitted.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) {
    /// if let Some(span) = socket.span() {
    ///     println!("connection span {} under {}", span.id().0, span.parent().0);
    /// }
    /// # }
    /// ```
    pub fn span(&self) -> Option<&ConnectionSpan> {
        self.span.as_ref()
    }

    /// Emits the application's own event in the connection's span
    /// ([`Kind::Custom`](crate::telemetry::Kind::Custom), named
    /// `"connection.custom"`), to the server's and the process's sinks
    /// (Thousand Island's `Telemetry.span_event`). Costs one atomic load
    /// when no sink is attached.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) {
    /// socket.span_event("cache_lookup", &[("hits", 3), ("misses", 1)], &[("table", "users")]);
    /// # }
    /// ```
    pub fn span_event(&self, name: &str, measurements: &[(&str, i64)], metadata: &[(&str, &str)]) {
        self.emit(|| Kind::Custom {
            name,
            measurements,
            metadata,
        });
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
                duration: span.started.elapsed(),
                stats,
                error,
            });
        }
    }

    pub(crate) fn set_secure(&mut self, secure: bool, handshake_timeout: Option<Duration>) {
        self.secure = secure;
        self.handshake_timeout = handshake_timeout;
    }

    /// The server-unique id of this connection, the same as
    /// [`Connection::id`](crate::Connection::id).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// println!("connection {}", socket.id());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The peer's address: the original
    /// client's when a PROXY protocol header named it (see
    /// [`proxy`](crate::proxy)).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// println!("peer {}", socket.peer_addr());
    /// # Ok(()) }
    /// ```
    pub fn peer_addr(&self) -> &Addr {
        &self.peer
    }

    /// The address of the proxy the connection came through, when the
    /// server reads PROXY protocol headers; `None` otherwise.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// if let Some(proxy) = socket.proxy_addr() {
    ///     println!("{} via {proxy}", socket.peer_addr());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn proxy_addr(&self) -> Option<&Addr> {
        self.proxy.as_ref().map(|p| &p.via)
    }

    /// The connection's PROXY protocol header, when the server reads them:
    /// its version, addresses and TLVs.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// if let Some(header) = socket.proxy_header() {
    ///     let alpn = header.alpn();
    ///     let tls = header.ssl().is_some_and(|ssl| ssl.is_ssl());
    ///     println!("alpn {alpn:?}, TLS at the proxy: {tls}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.proxy.as_ref().map(|p| &p.header)
    }

    /// The local address of the connection.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// println!("local {}", socket.local_addr());
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> &Addr {
        &self.local
    }

    /// Whether the transport is encrypted (TLS, or a user transport that
    /// says so).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// assert!(!socket.is_secure());
    /// # Ok(()) }
    /// ```
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The application protocol chosen by ALPN during the TLS handshake;
    /// `None` when none was negotiated (no ALPN, or a plain transport).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// if socket.negotiated_protocol().as_deref() == Some(b"h2") {
    ///     // speak HTTP/2
    /// }
    /// # Ok(()) }
    /// ```
    pub fn negotiated_protocol(&self) -> Option<Vec<u8>> {
        self.stream.as_ref()?.negotiated_protocol()
    }

    /// The peer's certificate in DER, when it sent one (mutual TLS).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// match socket.peer_certificate() {
    ///     Some(der) => println!("client certificate of {} bytes", der.len()),
    ///     None => println!("anonymous client"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.stream.as_ref()?.peer_certificate()
    }

    /// What the TLS handshake settled: protocol version, cipher suite and
    /// the server name the client asked for (Thousand Island's
    /// `connection_information`), as far as the backend tells (see
    /// [`TlsInfo`](crate::transport::TlsInfo)); `None` on a plain
    /// connection.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) {
    /// if let Some(info) = socket.tls_info() {
    ///     println!("{:?} {:?} for {:?}", info.protocol, info.cipher_suite, info.server_name);
    /// }
    /// # }
    /// ```
    pub fn tls_info(&self) -> Option<crate::transport::TlsInfo> {
        self.stream.as_ref()?.tls_info()
    }

    /// The process at the other end of a Unix socket (pid, uid, gid).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let creds = socket.peer_credentials()?;
    /// println!("uid {}", creds.uid);
    /// # Ok(()) }
    /// ```
    pub fn peer_credentials(&self) -> Result<Credentials, Error> {
        let stream = self.stream.as_ref().ok_or(Error::Closed)?;
        Ok(stream.io().peer_credentials()?)
    }

    /// Upgrades a plain connection to TLS in place (STARTTLS, the seed's
    /// `switch_transport`): runs `transport`'s handshake on the live socket,
    /// waiting up to the server's `handshake_timeout`, and goes on over the
    /// new stream. If the handshake fails ([`Error::Upgrade`]) or runs out
    /// of time ([`Error::HandshakeTimeout`]) the connection is closed and
    /// ends with [`Handler::handle_error`](crate::Handler::handle_error)
    /// receiving that error.
    ///
    /// ```no_run
    /// # #[cfg(feature = "tls")]
    /// # fn demo(socket: &mut atoll::Socket, tls: &atoll::transport::NativeTls) -> Result<(), atoll::Error> {
    /// socket.send(b"220 go ahead\r\n")?;
    /// socket.upgrade(tls)?;
    /// assert!(socket.is_secure());
    /// # Ok(()) }
    /// ```
    pub fn upgrade(&mut self, transport: &dyn Transport) -> Result<(), Error> {
        if !self.unread.is_empty() {
            return Err(Error::Config(
                "bytes read ahead of the upgrade would be lost".into(),
            ));
        }
        let stream = self.stream.take().ok_or(Error::Closed)?;
        let Some(io) = stream.into_io() else {
            let err = "only a plain connection can be upgraded";
            self.fatal = Some(Error::Upgrade(err.into()));
            return Err(Error::Upgrade(err.into()));
        };
        match handshake_blocking(transport.handshake(io), self.handshake_timeout) {
            Ok(stream) => {
                self.attach(stream);
                self.secure = transport.is_secure();
                // The handshake may have read the client's first bytes
                // ahead: read again before waiting for a new edge.
                self.maybe_more = true;
                Ok(())
            }
            Err(e) => {
                // The connection's error keeps the whole reason, causes and
                // all; `e` itself goes back to the caller. A timeout keeps
                // its kind; a failure is the upgrade's.
                let (fatal, e) = match e {
                    Error::HandshakeTimeout(limit) => (
                        Error::HandshakeTimeout(limit),
                        Error::HandshakeTimeout(limit),
                    ),
                    Error::Handshake(reason) => (
                        Error::Upgrade(Chain(reason.as_ref()).to_string().into()),
                        Error::Upgrade(reason),
                    ),
                    other => (Error::Upgrade(Chain(&other).to_string().into()), other),
                };
                self.fatal = Some(fatal);
                Err(e)
            }
        }
    }

    /// The traffic counters of this connection.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let stats = socket.stats();
    /// println!("{} bytes in, {} bytes out", stats.recv_bytes, stats.send_bytes);
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> SocketStats {
        self.stats
    }

    /// Whether the socket has been closed, locally or by a send timeout.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// if socket.is_closed() { return Ok(()); }
    /// # Ok(()) }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.stream.is_none()
    }

    /// The read timeout that [`recv`](Socket::recv) and [`Read`] use.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let timeout = socket.read_timeout();
    /// # Ok(()) }
    /// ```
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// Replaces the read timeout of [`recv`](Socket::recv) and [`Read`] and
    /// the connection's idle timeout, as
    /// [`Flow::ContinuePersistent`](crate::Flow::ContinuePersistent) does.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    /// # Ok(()) }
    /// ```
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// The send timeout of this connection.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let timeout = socket.send_timeout();
    /// # Ok(()) }
    /// ```
    pub fn send_timeout(&self) -> Option<Duration> {
        self.send_timeout
    }

    /// Replaces the send timeout of this connection. `None` waits forever.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.set_send_timeout(None);
    /// # Ok(()) }
    /// ```
    pub fn set_send_timeout(&mut self, timeout: Option<Duration>) {
        self.send_timeout = timeout;
    }

    /// Whether a send that times out closes the connection (Thousand
    /// Island's `send_timeout_close`); the server's
    /// [`send_timeout_close`](crate::Builder::send_timeout_close) unless
    /// changed here.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) {
    /// let closes = socket.send_timeout_close();
    /// # }
    /// ```
    pub fn send_timeout_close(&self) -> bool {
        self.send_timeout_close
    }

    /// Sets whether a send that times out closes the connection. Off, the
    /// send fails with [`Error::SendTimeout`] (what went out and the rest)
    /// and the connection stays open: the handler may send the rest later,
    /// or close it.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) {
    /// socket.set_send_timeout_close(false);
    /// # }
    /// ```
    pub fn set_send_timeout_close(&mut self, close: bool) {
        self.send_timeout_close = close;
    }

    /// Receives data, waiting up to the read timeout.
    ///
    /// With `len == 0`, returns whatever is available (at least one byte);
    /// otherwise exactly `len` bytes. Fails with [`Error::Closed`] when the
    /// peer closed the connection first and [`Error::Timeout`] when the
    /// timeout passed; bytes received before a timeout are not lost: the
    /// next `recv` or [`Handler::handle_data`](crate::Handler::handle_data)
    /// gets them.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let greeting = socket.recv(5)?; // exactly 5 bytes
    /// let rest = socket.recv(0)?;     // whatever came next
    /// # Ok(()) }
    /// ```
    pub fn recv(&mut self, len: usize) -> Result<Vec<u8>, Error> {
        self.recv_timeout(len, self.read_timeout)
    }

    /// [`recv`](Socket::recv) with an explicit timeout; `None` waits forever.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// match socket.recv_timeout(0, Some(std::time::Duration::from_millis(100))) {
    ///     Ok(data) => println!("{} bytes", data.len()),
    ///     Err(e) if e.is_timeout() => println!("nothing yet"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn recv_timeout(
        &mut self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
        let result = self.recv_inner(len, timeout);
        match &result {
            Ok(data) => self.emit(|| Kind::Recv { data }),
            Err(error) => self.emit(|| Kind::RecvError { error }),
        }
        result
    }

    fn recv_inner(&mut self, len: usize, timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        if len == 0 {
            if !self.unread.is_empty() {
                return Ok(std::mem::take(&mut self.unread));
            }
            let mut buf = [0u8; 16 * 1024];
            let n = self.read_blocking(&mut buf, deadline)?;
            return Ok(buf[..n].to_vec());
        }
        // The buffer grows as bytes arrive (doubling, from one read chunk),
        // so a length taken from the peer costs memory only when the peer
        // really sends that much.
        let mut out = Vec::new();
        let mut filled = 0;
        while filled < len {
            if filled == out.len() {
                let grow = (len - filled).min(out.len().max(READ_CHUNK));
                out.resize(out.len() + grow, 0);
                filled += self.take_unread(&mut out[filled..]);
                continue;
            }
            match self.read_blocking(&mut out[filled..], deadline) {
                Ok(n) => filled += n,
                Err(e) => {
                    // Keep what arrived so that no byte is lost.
                    out.truncate(filled);
                    out.append(&mut self.unread);
                    self.unread = out;
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Copies buffered bytes into `buf`, returning how many.
    fn take_unread(&mut self, buf: &mut [u8]) -> usize {
        let n = self.unread.len().min(buf.len());
        buf[..n].copy_from_slice(&self.unread[..n]);
        self.unread.drain(..n);
        n
    }

    /// Reads at least one byte into `buf`, waiting until `deadline`.
    fn read_blocking(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> Result<usize, Error> {
        loop {
            match self.try_read(buf) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(Wait::Read, deadline)?;
                }
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    /// Waits for readiness; `Error::Timeout` when the deadline passes.
    fn wait(&self, what: Wait, deadline: Option<Instant>) -> Result<(), Error> {
        let stream = self.stream.as_ref().ok_or(Error::Closed)?;
        let own = match what {
            Wait::Read => stream.wait_readable(deadline),
            Wait::Write => None,
        };
        if own.unwrap_or_else(|| sys::wait_fd(self.fd, what, deadline))? {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
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

    /// Sends all of `data`, waiting up to the send timeout. On timeout it
    /// fails with [`Error::SendTimeout`], which holds the bytes not sent,
    /// and the connection is closed (unless `send_timeout_close` is off, see
    /// [`set_send_timeout_close`](Socket::set_send_timeout_close)).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.send(b"+OK\r\n")?;
    /// # Ok(()) }
    /// ```
    pub fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        self.send_vectored(&mut [IoSlice::new(data)])
    }

    /// UDP: sends `datagram` to any address, from the server's socket (a
    /// reply to a third party, say). On a stream socket this fails.
    ///
    /// ```no_run
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.send_to(b"notice", "127.0.0.1:9999".parse().unwrap())?;
    /// # Ok(()) }
    /// ```
    pub fn send_to(&mut self, datagram: &[u8], addr: std::net::SocketAddr) -> Result<(), Error> {
        let stream = self.stream.as_ref().ok_or(Error::Closed)?;
        let n = stream
            .io()
            .sock()
            .send_to(datagram, &addr.into())
            .map_err(io_error)?;
        self.count_sent(n);
        let data = [IoSlice::new(datagram)];
        self.emit(|| Kind::Send { data: &data });
        Ok(())
    }

    /// Sends all of the slices, in order, with as few system calls as the
    /// kernel allows, without joining them first. Same timeout rule as
    /// [`send`](Socket::send).
    ///
    /// ```no_run
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// use std::io::IoSlice;
    /// socket.send_vectored(&mut [IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n"), IoSlice::new(b"hi")])?;
    /// # Ok(()) }
    /// ```
    pub fn send_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> Result<(), Error> {
        // The slices are advanced as they go out: keep them for the event,
        // only when a sink wants it.
        let wanted = Telemetry::wants(Interest::SEND.union(Interest::SEND_ERROR));
        let data: Option<Vec<IoSlice<'_>>> = (self.span.is_some() && wanted).then(|| bufs.to_vec());
        let result = self.send_inner(bufs);
        if let Some(data) = &data {
            match &result {
                Ok(()) => self.emit(|| Kind::Send { data }),
                Err(error) => self.emit(|| Kind::SendError { data, error }),
            }
        }
        result
    }

    fn send_inner(&mut self, mut bufs: &mut [IoSlice<'_>]) -> Result<(), Error> {
        let deadline = self.send_timeout.map(|t| Instant::now() + t);
        IoSlice::advance_slices(&mut bufs, 0);
        let mut sent = 0u64;
        while !bufs.is_empty() {
            match self.write_blocking(bufs, deadline) {
                Ok(n) => {
                    sent += n as u64;
                    IoSlice::advance_slices(&mut bufs, n);
                }
                Err(Error::Timeout) => {
                    // Copied only on this path: the caller's slices are
                    // borrowed and the error outlives them.
                    let unsent = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                    return Err(Error::SendTimeout { sent, unsent });
                }
                Err(e) => return Err(e),
            }
        }
        match self.flush_blocking(deadline) {
            Err(Error::Timeout) => Err(Error::SendTimeout {
                sent,
                unsent: Vec::new(),
            }),
            other => other,
        }
    }

    /// One write of at least one byte, waiting until `deadline`. A timeout
    /// closes the socket.
    fn write_blocking(
        &mut self,
        bufs: &[IoSlice<'_>],
        deadline: Option<Instant>,
    ) -> Result<usize, Error> {
        loop {
            let stream = self.stream.as_mut().ok_or(Error::Closed)?;
            match stream.write_vectored(bufs) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => {
                    self.count_sent(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable(deadline)?,
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    /// Waits until the stream has pushed out what it buffered.
    fn flush_blocking(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        loop {
            let stream = self.stream.as_mut().ok_or(Error::Closed)?;
            match stream.flush() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable(deadline)?,
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    fn count_sent(&mut self, n: usize) {
        self.stats.send_bytes += n as u64;
        self.stats.send_count += 1;
    }

    /// Waits until writable; on timeout closes the socket unless
    /// `send_timeout_close` is off: the peer that stopped reading is then
    /// the handler's to deal with.
    fn wait_writable(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        let res = self.wait(Wait::Write, deadline);
        if matches!(res, Err(Error::Timeout)) && self.send_timeout_close {
            self.fatal = Some(Error::Timeout);
            self.close();
        }
        res
    }

    /// Sends `len` bytes of `file` from `offset` with `sendfile(2)`, without
    /// copying through user space; `len == 0` sends to the end of the file.
    /// Returns the number of bytes sent. Same timeout rule as
    /// [`send`](Socket::send). `sendfile(2)` raises `SIGPIPE` when the peer
    /// has gone; Rust programs ignore that signal from `main` on, but a
    /// program that restores it must expect it here.
    ///
    /// ```no_run
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let file = std::fs::File::open("index.html")?;
    /// let sent = socket.sendfile(&file, 0, 0)?;
    /// # Ok(()) }
    /// ```
    pub fn sendfile(&mut self, file: &File, offset: u64, len: u64) -> Result<u64, Error> {
        self.sendfile_traced(None, file, offset, len)
    }

    /// [`sendfile`](Socket::sendfile) of the file at `path` (Thousand
    /// Island's `sendfile` by file name): opens it, sends `len` bytes from
    /// `offset` (`0`: to the end) and closes it. The telemetry events carry
    /// the name as given. A file that cannot be opened fails with
    /// [`Error::Io`] and a `sendfile_error` event.
    ///
    /// ```no_run
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let sent = socket.sendfile_path("static/index.html", 0, 0)?;
    /// # Ok(()) }
    /// ```
    pub fn sendfile_path(
        &mut self,
        path: impl AsRef<Path>,
        offset: u64,
        len: u64,
    ) -> Result<u64, Error> {
        let path = path.as_ref();
        match File::open(path) {
            Ok(file) => self.sendfile_traced(Some(path), &file, offset, len),
            Err(e) => {
                let error = Error::Io(e);
                self.emit(|| Kind::SendfileError {
                    path: Some(path),
                    file: None,
                    offset,
                    length: len,
                    error: &error,
                });
                Err(error)
            }
        }
    }

    fn sendfile_traced(
        &mut self,
        path: Option<&Path>,
        file: &File,
        offset: u64,
        len: u64,
    ) -> Result<u64, Error> {
        let result = self.sendfile_inner(file, offset, len);
        match &result {
            Ok(bytes_written) => self.emit(|| Kind::Sendfile {
                path,
                file,
                offset,
                bytes_written: *bytes_written,
            }),
            Err(error) => self.emit(|| Kind::SendfileError {
                path,
                file: Some(file),
                offset,
                length: len,
                error,
            }),
        }
        result
    }

    fn sendfile_inner(&mut self, file: &File, offset: u64, len: u64) -> Result<u64, Error> {
        let end = if len == 0 {
            file.metadata()?.len()
        } else {
            offset.saturating_add(len)
        };
        let splice = self.stream.as_ref().ok_or(Error::Closed)?.splice_fd();
        let Some(out_fd) = splice else {
            return self.sendfile_by_chunks(file, offset, end);
        };
        let deadline = self.send_timeout.map(|t| Instant::now() + t);
        let mut pos = offset;
        while pos < end {
            let chunk = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            match sys::sendfile(out_fd, file.as_raw_fd(), &mut pos, chunk) {
                Ok(0) => break, // the file is shorter than asked
                Ok(n) => self.count_sent(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable(deadline)?,
                Err(e) => return Err(io_error(e)),
            }
        }
        Ok(pos - offset)
    }

    /// `sendfile` for streams that transform bytes: read and send in
    /// bounded chunks, never the whole file in memory.
    fn sendfile_by_chunks(&mut self, file: &File, offset: u64, end: u64) -> Result<u64, Error> {
        let mut buf = vec![0u8; end.saturating_sub(offset).min(SENDFILE_CHUNK) as usize];
        let mut pos = offset;
        while pos < end {
            let want = (end - pos).min(buf.len() as u64) as usize;
            let n = match file.read_at(&mut buf[..want], pos) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            };
            self.send(&buf[..n])?;
            pos += n as u64;
        }
        Ok(pos - offset)
    }

    /// Shuts down reading, writing or both.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.send(b"bye")?;
    /// socket.shutdown(atoll::Shutdown::Write)?; // the peer reads end of stream
    /// # Ok(()) }
    /// ```
    pub fn shutdown(&mut self, how: Shutdown) -> Result<(), Error> {
        let stream = self.stream.as_mut().ok_or(Error::Closed)?;
        stream.shutdown(how).map_err(io_error)?;
        self.emit(|| Kind::SocketShutdown { way: how });
        Ok(())
    }

    /// Closes the connection now. Called inside a callback, the connection
    /// ends when the callback returns, with no further callback: the
    /// handler closed it and knows. Closing twice is harmless.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.close();
    /// assert!(socket.is_closed());
    /// # Ok(()) }
    /// ```
    pub fn close(&mut self) {
        self.stream = None;
    }

    /// Closes without a TCP reset: shuts down the write side (the peer
    /// reads end of stream after everything already sent), then reads and
    /// discards what the peer still sends until it closes or `timeout`
    /// passes, then closes. Closing with unread bytes would send a reset
    /// instead, which can destroy replies still in flight to the peer: use
    /// it where a server ends a connection the peer may still be writing
    /// to, as at a stop (in [`Handler::handle_shutdown`](crate::Handler::handle_shutdown))
    /// or after an error reply. `Err(Timeout)` if the peer kept the
    /// connection open; the socket is closed either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use atoll::{Handler, Socket};
    ///
    /// struct Graceful;
    ///
    /// impl Handler for Graceful {
    ///     fn handle_shutdown(&mut self, socket: &mut Socket) {
    ///         let _ = socket.close_gracefully(Duration::from_secs(2));
    ///     }
    /// }
    /// ```
    pub fn close_gracefully(&mut self, timeout: Duration) -> Result<(), Error> {
        let result = self.shutdown(Shutdown::Write).and_then(|()| {
            let deadline = Some(Instant::now() + timeout);
            let mut junk = [0u8; 4096];
            self.unread.clear();
            loop {
                match self.read_blocking(&mut junk, deadline) {
                    Ok(_) => {}
                    Err(Error::Closed) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        });
        self.close();
        match result {
            // The peer's reset ends it as well as its close.
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            other => other,
        }
    }

    fn sock(&self) -> Result<SockRef<'_>, Error> {
        self.stream
            .as_ref()
            .map(|s| SockRef::from(s.io().sock()))
            .ok_or(Error::Closed)
    }

    /// Whether Nagle's algorithm is off (`TCP_NODELAY`).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// assert!(socket.nodelay()?);
    /// # Ok(()) }
    /// ```
    pub fn nodelay(&self) -> Result<bool, Error> {
        Ok(self.sock()?.tcp_nodelay()?)
    }

    /// Turns Nagle's algorithm off (`true`) or on.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.set_nodelay(false)?;
    /// # Ok(()) }
    /// ```
    pub fn set_nodelay(&self, nodelay: bool) -> Result<(), Error> {
        Ok(self.sock()?.set_tcp_nodelay(nodelay)?)
    }

    /// The `SO_LINGER` setting.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let linger = socket.linger()?;
    /// # Ok(()) }
    /// ```
    pub fn linger(&self) -> Result<Option<Duration>, Error> {
        Ok(self.sock()?.linger()?)
    }

    /// Sets `SO_LINGER`; `None` turns lingering off.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.set_linger(Some(std::time::Duration::ZERO))?; // reset on close
    /// # Ok(()) }
    /// ```
    pub fn set_linger(&self, linger: Option<Duration>) -> Result<(), Error> {
        Ok(self.sock()?.set_linger(linger)?)
    }

    /// Whether `SO_KEEPALIVE` is on.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let on = socket.keepalive()?;
    /// # Ok(()) }
    /// ```
    pub fn keepalive(&self) -> Result<bool, Error> {
        Ok(self.sock()?.keepalive()?)
    }

    /// Turns `SO_KEEPALIVE` on or off.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.set_keepalive(true)?;
    /// # Ok(()) }
    /// ```
    pub fn set_keepalive(&self, keepalive: bool) -> Result<(), Error> {
        Ok(self.sock()?.set_keepalive(keepalive)?)
    }

    /// The kernel receive buffer size (`SO_RCVBUF`).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let size = socket.recv_buffer_size()?;
    /// # Ok(()) }
    /// ```
    pub fn recv_buffer_size(&self) -> Result<usize, Error> {
        Ok(self.sock()?.recv_buffer_size()?)
    }

    /// Sets the kernel receive buffer size (`SO_RCVBUF`).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.set_recv_buffer_size(1 << 20)?;
    /// # Ok(()) }
    /// ```
    pub fn set_recv_buffer_size(&self, size: usize) -> Result<(), Error> {
        Ok(self.sock()?.set_recv_buffer_size(size)?)
    }

    /// The kernel send buffer size (`SO_SNDBUF`).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let size = socket.send_buffer_size()?;
    /// # Ok(()) }
    /// ```
    pub fn send_buffer_size(&self) -> Result<usize, Error> {
        Ok(self.sock()?.send_buffer_size()?)
    }

    /// Sets the kernel send buffer size (`SO_SNDBUF`).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.set_send_buffer_size(1 << 20)?;
    /// # Ok(()) }
    /// ```
    pub fn set_send_buffer_size(&self, size: usize) -> Result<(), Error> {
        Ok(self.sock()?.set_send_buffer_size(size)?)
    }

    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        self.stream.as_ref().map(|_| self.fd)
    }

    /// Makes this socket end its connection when dropped (detached mode).
    pub(crate) fn set_release(&mut self, release: Arc<dyn Release>) {
        self.release = Some(release);
    }
}

/// The connection's descriptor, for options atoll does not wrap (through
/// `socket2::SockRef`) or a system call of the application's own.
///
/// # Closed sockets
///
/// Once the socket is closed ([`close`](Socket::close), a send timeout, a
/// failed upgrade) its descriptor is gone, and may already be another
/// file's: it is never handed out. A closed socket gives a descriptor of
/// `/dev/null` instead, on which every socket call fails with `ENOTSOCK`.
/// Check [`is_closed`](Socket::is_closed) first where that matters.
///
/// ```
/// use atoll::{Flow, Handler, Socket};
/// use socket2::SockRef;
///
/// struct Tuned;
///
/// impl Handler for Tuned {
///     fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
///         // An option atoll has no method for.
///         match SockRef::from(&*socket).set_tcp_keepalive(
///             &socket2::TcpKeepalive::new().with_time(std::time::Duration::from_secs(30)),
///         ) {
///             Ok(()) => Flow::Continue,
///             Err(e) => Flow::error(e),
///         }
///     }
/// }
/// ```
impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.stream {
            Some(stream) => stream.io().sock().as_fd(),
            None => sys::closed_fd(),
        }
    }
}

/// The connection's descriptor number; that of `/dev/null` once closed
/// (see [`AsFd`](#impl-AsFd-for-Socket)).
///
/// ```
/// use std::os::fd::AsRawFd;
///
/// # fn demo(socket: &atoll::Socket) {
/// println!("connection {} on descriptor {}", socket.id(), socket.as_raw_fd());
/// # }
/// ```
impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.unread.is_empty() {
            return Ok(self.take_unread(buf));
        }
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        match self.read_blocking(buf, deadline) {
            Ok(n) => {
                self.emit(|| Kind::Recv { data: &buf[..n] });
                Ok(n)
            }
            Err(Error::Closed) => Ok(0),
            Err(error) => {
                self.emit(|| Kind::RecvError { error: &error });
                Err(error.into())
            }
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.send_timeout.map(|t| Instant::now() + t);
        Ok(self.write_blocking(&[IoSlice::new(buf)], deadline)?)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let deadline = self.send_timeout.map(|t| Instant::now() + t);
        Ok(self.write_blocking(bufs, deadline)?)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Ok(self.send(buf)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        let deadline = self.send_timeout.map(|t| Instant::now() + t);
        Ok(self.flush_blocking(deadline)?)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.close();
        self.emit_stop(None);
        if let Some(release) = self.release.take() {
            release.release();
        }
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("closed", &self.is_closed())
            .field("stats", &self.stats)
            .finish()
    }
}

fn closed_io() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, Error::Closed)
}

/// Maps a socket error: a peer that went away is [`Error::Closed`].
fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected => Error::Closed,
        _ => Error::from_io(e),
    }
}
