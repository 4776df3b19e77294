//! [`Socket`] as handler callbacks see it: the type, its addresses, TLS
//! facts, options, timeouts, closing and STARTTLS; never the reads and
//! writes (those are `io`'s) nor the pool's plumbing (`plumbing`'s).

use std::fmt;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;

use crate::error::{Chain, Error};
use crate::proxy::{Proxied, ProxyHeader};
use crate::sys;
use crate::telemetry::{ConnSpan, ConnectionSpan, Kind};
use crate::transport::{handshake_blocking, Addr, Credentials, Stream, Transport};

mod io;
mod plumbing;

pub(crate) use crate::blocking::READ_CHUNK;
pub use crate::stats::SocketStats;
use io::{closed_io, io_error};
pub(crate) use plumbing::{Release, SendPolicy};

/// A connection's socket, as handler callbacks see it.
///
/// The Rust form of `ThousandIsland.Socket`. The descriptor underneath is
/// non-blocking (the server watches it for readiness between callbacks), but
/// every method here blocks the calling worker as a blocking socket would,
/// bounded by a timeout:
///
/// - reads by [`recv`](Socket::recv) and [`Read`](std::io::Read) use the
///   connection's read timeout (the server's `read_timeout` unless a
///   [`Flow::ContinuePersistent`](crate::Flow::ContinuePersistent) replaced
///   it);
/// - writes by [`send`](Socket::send), [`send_vectored`](Socket::send_vectored),
///   [`sendfile`](Socket::sendfile) and [`Write`](std::io::Write) use the
///   send timeout, and a send that times out closes the connection unless
///   `send_timeout_close` is off
///   ([`set_send_timeout_close`](Socket::set_send_timeout_close)).
///
/// A timeout is an [`Error::Timeout`] whose [`Timeout`](crate::Timeout)
/// says which: [`Recv`](crate::Timeout::Recv) or
/// [`Send`](crate::Timeout::Send), the latter with the bytes not sent.
///
/// `Socket` implements [`Read`](std::io::Read) and
/// [`Write`](std::io::Write), so `BufReader`, `write!` and existing protocol
/// code work on it unchanged.
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
    /// of time ([`Error::Timeout`] of
    /// [`Timeout::Handshake`](crate::Timeout::Handshake)) the connection is
    /// closed and ends with
    /// [`Handler::handle_error`](crate::Handler::handle_error) receiving
    /// that error. Bytes already read ahead by [`recv`](Socket::recv) and
    /// not yet taken would be lost: the upgrade then fails with
    /// [`Error::Upgrade`] and leaves the connection as it was.
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
            return Err(Error::Upgrade(
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
                    Error::Timeout(kind) => (Error::Timeout(kind.clone()), Error::Timeout(kind)),
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

    /// The read timeout that [`recv`](Socket::recv) and [`Read`](std::io::Read) use.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let timeout = socket.read_timeout();
    /// # Ok(()) }
    /// ```
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// Replaces the read timeout of [`recv`](Socket::recv) and [`Read`](std::io::Read) and
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
    /// send fails with [`Timeout::Send`](crate::Timeout::Send) (what went
    /// out and the rest) and the connection stays open: the handler may send
    /// the rest later, or close it.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) {
    /// socket.set_send_timeout_close(false);
    /// # }
    /// ```
    pub fn set_send_timeout_close(&mut self, close: bool) {
        self.send_timeout_close = close;
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
