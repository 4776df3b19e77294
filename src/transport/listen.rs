//! Listening: [`ListenOptions`], the listening socket the poll threads
//! watch, and the standalone [`Listener`].

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockAddr, Socket as RawSocket, Type};

use super::{Addr, Handshake, Io, Stream, Transport};
use crate::error::Error;
use crate::proxy::{read_header_blocking, Proxied, ProxyProtocol};
use crate::socket::{SendPolicy, Socket};
use crate::sys::{self, Wait};

/// Where to listen.
#[derive(Clone, Debug)]
enum Bind {
    Inet(SocketAddr),
    Unix(PathBuf),
    /// A socket someone else bound: systemd, a parent, a predecessor.
    /// Shared by the clones of the options; taken (closed) when the server
    /// using it stops.
    Fd(Arc<parking_lot::Mutex<Option<OwnedFd>>>),
}

/// How to listen, and the options of every accepted socket: backlog,
/// address reuse, buffer sizes, keepalive, an inherited descriptor.
///
/// [`Builder`](crate::Builder) has a setter for each; use this type directly
/// for a standalone [`Listener`].
///
/// ```
/// use std::time::Duration;
/// use atoll::transport::ListenOptions;
///
/// let options = ListenOptions::new()
///     .ip("::".parse().unwrap())
///     .port(8080)
///     .only_v6(false) // dual-stack: IPv4 clients too
///     .backlog(4096)
///     .reuse_port(true)
///     .keepalive(true);
/// ```
#[derive(Clone, Debug)]
#[must_use = "listen options do nothing until given to a builder or `Listener::bind`"]
pub struct ListenOptions {
    bind: Bind,
    pub(crate) backlog: u32,
    pub(crate) only_v6: Option<bool>,
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    pub(crate) nodelay: bool,
    pub(crate) linger: Option<Duration>,
    /// The send timeout and `send_timeout_close`, as each accepted socket
    /// takes them.
    pub(crate) send_timeout: SendPolicy,
    pub(crate) keepalive: bool,
    pub(crate) recv_buffer_size: Option<usize>,
    pub(crate) send_buffer_size: Option<usize>,
    pub(crate) remove_stale_socket: bool,
    nonblocking: bool,
    /// Set for a UDP server.
    pub(crate) udp: Option<crate::udp::UdpOptions>,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            bind: Bind::Inet(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 4000)),
            backlog: 1024,
            only_v6: None,
            reuse_address: true,
            reuse_port: false,
            nodelay: true,
            linger: None,
            send_timeout: SendPolicy {
                timeout: Some(Duration::from_secs(30)),
                close: true,
            },
            keepalive: false,
            recv_buffer_size: None,
            send_buffer_size: None,
            remove_stale_socket: false,
            nonblocking: true,
            udp: None,
        }
    }
}

impl ListenOptions {
    /// The defaults: `0.0.0.0:4000`, backlog 1024, `SO_REUSEADDR` and
    /// `TCP_NODELAY` on, a 30 s send timeout.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new();
    /// ```
    pub fn new() -> ListenOptions {
        ListenOptions::default()
    }

    /// The IP address to listen on (any, loopback, or one interface's).
    /// Default is `0.0.0.0`.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().ip([127, 0, 0, 1].into());
    /// ```
    pub fn ip(mut self, ip: IpAddr) -> ListenOptions {
        let port = self.inet_port();
        self.bind = Bind::Inet(SocketAddr::new(ip, port));
        self
    }

    /// The port; 0 picks a free one. Default is 4000.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().port(0);
    /// ```
    pub fn port(mut self, port: u16) -> ListenOptions {
        let ip = match &self.bind {
            Bind::Inet(a) => a.ip(),
            Bind::Unix(_) | Bind::Fd(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        self.bind = Bind::Inet(SocketAddr::new(ip, port));
        self
    }

    /// Listens on a Unix socket at `path` instead of TCP (the seeds'
    /// `{:local, path}`). The file is removed when the listener closes.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().unix("/run/app.sock");
    /// ```
    pub fn unix(mut self, path: impl Into<PathBuf>) -> ListenOptions {
        self.bind = Bind::Unix(path.into());
        self
    }

    /// Listens on a socket that is already bound, instead of binding one:
    /// a socket passed by systemd (see
    /// [`inherit::systemd`](crate::inherit::systemd)), by a parent process,
    /// or by a predecessor in a handover (see
    /// [`inherit::receive`](crate::inherit::receive)). A TCP or Unix stream socket that is bound but not yet
    /// listening is made to listen with the backlog; a UDP socket suits a
    /// UDP server. The socket is made non-blocking and close-on-exec.
    ///
    /// The options keep the descriptor open (their clones share it), and
    /// each listen uses a duplicate: so
    /// [`Server::suspend`](crate::Server::suspend) stops accepting, but the
    /// system keeps queueing connections (up to the backlog) for
    /// [`resume`](crate::Server::resume) instead of refusing them. The
    /// descriptor is closed when the server stops (duplicates handed on by
    /// [`Server::listener_fds`](crate::Server::listener_fds) stay open). A
    /// Unix socket's file is left alone.
    ///
    /// ```
    /// let bound = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let options = atoll::transport::ListenOptions::new().fd(bound);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn fd(mut self, fd: impl Into<OwnedFd>) -> ListenOptions {
        self.bind = Bind::Fd(Arc::new(parking_lot::Mutex::new(Some(fd.into()))));
        self
    }

    /// Removes a file left at the Unix socket path by a process that did
    /// not clean up, before binding. Only a socket file is removed. Default
    /// is `false`.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().unix("/run/app.sock").remove_stale_socket(true);
    /// ```
    pub fn remove_stale_socket(mut self, remove: bool) -> ListenOptions {
        self.remove_stale_socket = remove;
        self
    }

    /// The listen backlog. Default is 1024.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().backlog(16);
    /// ```
    pub fn backlog(mut self, backlog: u32) -> ListenOptions {
        self.backlog = backlog;
        self
    }

    /// `IPV6_V6ONLY` on an IPv6 listener: `true` takes IPv6 clients only,
    /// `false` IPv4 ones too (dual-stack). Default is the system's.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().ip("::".parse().unwrap()).only_v6(true);
    /// ```
    pub fn only_v6(mut self, only_v6: bool) -> ListenOptions {
        self.only_v6 = Some(only_v6);
        self
    }

    /// `SO_REUSEADDR`. Default is `true`.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().reuse_address(false);
    /// ```
    pub fn reuse_address(mut self, reuse: bool) -> ListenOptions {
        self.reuse_address = reuse;
        self
    }

    /// `SO_REUSEPORT`: several listeners (processes) on one port, the
    /// kernel spreading connections. Default is `false`.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().reuse_port(true);
    /// ```
    pub fn reuse_port(mut self, reuse: bool) -> ListenOptions {
        self.reuse_port = reuse;
        self
    }

    /// `TCP_NODELAY` on accepted sockets. Default is `true`.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().nodelay(false);
    /// ```
    pub fn nodelay(mut self, nodelay: bool) -> ListenOptions {
        self.nodelay = nodelay;
        self
    }

    /// `SO_LINGER` on accepted sockets. Default is off.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().linger(Some(std::time::Duration::from_secs(1)));
    /// ```
    pub fn linger(mut self, linger: Option<Duration>) -> ListenOptions {
        self.linger = linger;
        self
    }

    /// How long a send may wait for the peer; then it fails and the
    /// connection closes. Default is 30 s.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().send_timeout(None);
    /// ```
    pub fn send_timeout(mut self, timeout: Option<Duration>) -> ListenOptions {
        self.send_timeout.timeout = timeout;
        self
    }

    /// Whether a send that times out closes the connection (Thousand
    /// Island's `send_timeout_close`). Off, the send fails with
    /// [`Timeout::Send`](crate::Timeout::Send) and the connection stays open. Default is
    /// `true`.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().send_timeout_close(false);
    /// ```
    pub fn send_timeout_close(mut self, close: bool) -> ListenOptions {
        self.send_timeout.close = close;
        self
    }

    /// `SO_KEEPALIVE` on accepted sockets. Default is `false`.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().keepalive(true);
    /// ```
    pub fn keepalive(mut self, keepalive: bool) -> ListenOptions {
        self.keepalive = keepalive;
        self
    }

    /// `SO_RCVBUF` on accepted sockets. Default is the system's.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().recv_buffer_size(Some(1 << 20));
    /// ```
    pub fn recv_buffer_size(mut self, size: Option<usize>) -> ListenOptions {
        self.recv_buffer_size = size;
        self
    }

    /// `SO_SNDBUF` on accepted sockets. Default is the system's.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().send_buffer_size(Some(1 << 20));
    /// ```
    pub fn send_buffer_size(mut self, size: Option<usize>) -> ListenOptions {
        self.send_buffer_size = size;
        self
    }

    /// Asks for blocking sockets. The server drives its sockets with
    /// readiness and needs them non-blocking, so `false` makes binding fail
    /// with [`Error::Config`] rather than being silently ignored. Default
    /// is `true`.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().nonblocking(false);
    /// let err = atoll::transport::Listener::bind(atoll::transport::Tcp, &options.port(0)).unwrap_err();
    /// assert!(matches!(err, atoll::Error::Config(_)));
    /// ```
    pub fn nonblocking(mut self, nonblocking: bool) -> ListenOptions {
        self.nonblocking = nonblocking;
        self
    }

    fn inet_port(&self) -> u16 {
        match &self.bind {
            Bind::Inet(a) => a.port(),
            Bind::Unix(_) | Bind::Fd(_) => 4000,
        }
    }

    /// The address this binds, for error messages.
    pub(crate) fn bind_addr(&self) -> Addr {
        match &self.bind {
            Bind::Inet(a) => Addr::Inet(*a),
            Bind::Unix(p) => Addr::Unix(Some(p.clone())),
            Bind::Fd(fd) => fd
                .lock()
                .as_ref()
                .and_then(|fd| socket2::SockRef::from(fd).local_addr().ok())
                .map_or(Addr::Unix(None), |a| Addr::from_sock(&a)),
        }
    }

    /// Whether the socket is an inherited one.
    pub(crate) fn is_inherited(&self) -> bool {
        matches!(self.bind, Bind::Fd(_))
    }

    /// Closes an inherited socket: the server that used it stopped.
    pub(crate) fn close_inherited(&self) {
        if let Bind::Fd(fd) = &self.bind {
            drop(fd.lock().take());
        }
    }

    pub(crate) fn unix_path(&self) -> Option<&PathBuf> {
        match &self.bind {
            Bind::Unix(p) => Some(p),
            Bind::Inet(_) | Bind::Fd(_) => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !self.nonblocking {
            return Err(Error::Config(
                "atoll drives its sockets by readiness and needs them non-blocking; \
                 Socket's methods already block with timeouts"
                    .into(),
            ));
        }
        if self.send_timeout.timeout == Some(Duration::ZERO) {
            return Err(Error::Config(
                "send_timeout must be positive or None".into(),
            ));
        }
        if self.only_v6.is_some() && !matches!(&self.bind, Bind::Inet(SocketAddr::V6(_))) {
            return Err(Error::Config(
                "only_v6 applies to an IPv6 listen address".into(),
            ));
        }
        Ok(())
    }

    /// Binds and listens; the socket is non-blocking.
    pub(crate) fn bind(&self) -> Result<RawSocket, Error> {
        self.validate()?;
        let addr = self.bind_addr();
        let fail = |source| Error::Bind {
            addr: addr.clone(),
            source,
        };
        let socket = match &self.bind {
            Bind::Inet(inet) if self.udp.is_some() => return self.bind_udp(*inet).map_err(fail),
            Bind::Inet(inet) => {
                let socket =
                    RawSocket::new(Domain::for_address(*inet), Type::STREAM, None).map_err(fail)?;
                socket.set_reuse_address(self.reuse_address).map_err(fail)?;
                if self.reuse_port {
                    socket.set_reuse_port(true).map_err(fail)?;
                }
                if let Some(only) = self.only_v6 {
                    socket.set_only_v6(only).map_err(fail)?;
                }
                socket.bind(&(*inet).into()).map_err(fail)?;
                socket
            }
            Bind::Fd(fd) => return self.inherit(fd.lock().as_ref()).map_err(fail),
            Bind::Unix(path) => {
                if self.remove_stale_socket {
                    remove_socket_file(path).map_err(fail)?;
                }
                let socket = RawSocket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
                socket
                    .bind(&SockAddr::unix(path).map_err(fail)?)
                    .map_err(fail)?;
                socket
            }
        };
        let backlog = i32::try_from(self.backlog).unwrap_or(i32::MAX);
        socket.listen(backlog).map_err(fail)?;
        socket.set_nonblocking(true).map_err(fail)?;
        Ok(socket)
    }

    /// A duplicate of an inherited socket, checked and made ready.
    fn inherit(&self, fd: Option<&OwnedFd>) -> io::Result<RawSocket> {
        let Some(fd) = fd else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the inherited socket was closed when the server using it stopped",
            ));
        };
        let socket = RawSocket::from(fd.try_clone()?);
        let kind = socket.r#type()?;
        let invalid = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()));
        if self.udp.is_some() {
            if kind != Type::DGRAM {
                return invalid("a UDP server needs a datagram socket; the inherited one is not");
            }
        } else {
            if kind != Type::STREAM {
                return invalid("the inherited socket is not a stream (TCP or Unix) socket");
            }
            if !socket.is_listener()? {
                let bound = socket.local_addr()?;
                if bound.as_socket().is_some_and(|a| a.port() == 0) {
                    return invalid("the inherited socket is not bound");
                }
                socket.listen(i32::try_from(self.backlog).unwrap_or(i32::MAX))?;
            }
        }
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        Ok(socket)
    }

    /// Binds a UDP socket: no listen; buffer sizes, broadcast and multicast
    /// on the socket itself.
    fn bind_udp(&self, addr: SocketAddr) -> io::Result<RawSocket> {
        let udp = self.udp.clone().unwrap_or_default();
        let socket = RawSocket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        socket.set_reuse_address(self.reuse_address)?;
        if self.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if let Some(only) = self.only_v6 {
            socket.set_only_v6(only)?;
        }
        if let Some(size) = self.recv_buffer_size {
            socket.set_recv_buffer_size(size)?;
        }
        if let Some(size) = self.send_buffer_size {
            socket.set_send_buffer_size(size)?;
        }
        socket.bind(&addr.into())?;
        udp.apply(&socket)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    /// Applies the accepted-socket options. Failures are not fatal: the
    /// peer may already have gone, or the option not apply (no Nagle on a
    /// Unix socket).
    pub(crate) fn apply(&self, sock: &RawSocket, inet: bool) {
        let results = [
            if inet && self.nodelay {
                sock.set_tcp_nodelay(true)
            } else {
                Ok(())
            },
            if self.linger.is_some() {
                sock.set_linger(self.linger)
            } else {
                Ok(())
            },
            if inet && self.keepalive {
                sock.set_keepalive(true)
            } else {
                Ok(())
            },
            self.recv_buffer_size
                .map_or(Ok(()), |s| sock.set_recv_buffer_size(s)),
            self.send_buffer_size
                .map_or(Ok(()), |s| sock.set_send_buffer_size(s)),
        ];
        for e in results.into_iter().filter_map(Result::err) {
            report!(
                debug,
                { error = %e, "socket option not applied" },
                "atoll: socket option not applied: {e}"
            );
        }
    }
}

/// Removes `path` if it is a socket file; a missing file is fine.
fn remove_socket_file(path: &PathBuf) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; not removed",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A bound listening socket in the form a poll thread registers.
pub(crate) enum ListenSocket {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
    /// A UDP socket: the poll thread receives on `recv`; sessions send on
    /// `io`, a second descriptor of the same socket.
    Udp {
        recv: mio::net::UdpSocket,
        io: Io,
    },
}

impl ListenSocket {
    /// One clone per poll thread; each accepts from the same queue.
    pub(crate) fn clones(socket: &RawSocket, n: usize) -> io::Result<Vec<ListenSocket>> {
        let unix = socket.domain()? == Domain::UNIX;
        (0..n)
            .map(|_| {
                let fd = OwnedFd::from(socket.try_clone()?);
                Ok(if unix {
                    ListenSocket::Unix(mio::net::UnixListener::from(fd))
                } else {
                    ListenSocket::Tcp(mio::net::TcpListener::from(fd))
                })
            })
            .collect()
    }

    /// The UDP form, for one socket of its own.
    pub(crate) fn udp(socket: RawSocket) -> io::Result<ListenSocket> {
        let recv = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(OwnedFd::from(
            socket.try_clone()?,
        )));
        Ok(ListenSocket::Udp {
            recv,
            io: Io::new(socket),
        })
    }

    /// Accepts one connection: a non-blocking socket and its peer.
    pub(crate) fn accept(&self) -> io::Result<(RawSocket, Addr)> {
        match self {
            ListenSocket::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                Ok((RawSocket::from(OwnedFd::from(stream)), Addr::Inet(peer)))
            }
            ListenSocket::Unix(l) => {
                let (stream, peer) = l.accept()?;
                let path = peer.as_pathname().map(|p| p.to_path_buf());
                Ok((RawSocket::from(OwnedFd::from(stream)), Addr::Unix(path)))
            }
            ListenSocket::Udp { .. } => Err(io::Error::from(io::ErrorKind::Unsupported)),
        }
    }

    /// The address every accepted connection has as its local address,
    /// when that is fixed (a listener on one IP, or a Unix path).
    pub(crate) fn fixed_local(&self) -> Option<Addr> {
        match self {
            ListenSocket::Tcp(l) => l
                .local_addr()
                .ok()
                .filter(|a| !a.ip().is_unspecified())
                .map(Addr::Inet),
            ListenSocket::Unix(l) => {
                let addr = l.local_addr().ok()?;
                Some(Addr::Unix(addr.as_pathname().map(|p| p.to_path_buf())))
            }
            ListenSocket::Udp { recv, .. } => recv.local_addr().ok().map(Addr::Inet),
        }
    }
}

impl Source for ListenSocket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.register(registry, token, interests),
            ListenSocket::Unix(l) => l.register(registry, token, interests),
            ListenSocket::Udp { recv, .. } => recv.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.reregister(registry, token, interests),
            ListenSocket::Unix(l) => l.reregister(registry, token, interests),
            ListenSocket::Udp { recv, .. } => recv.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(l) => l.deregister(registry),
            ListenSocket::Unix(l) => l.deregister(registry),
            ListenSocket::Udp { recv, .. } => recv.deregister(registry),
        }
    }
}

/// Why [`Listener::accept`] returned no connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcceptError {
    /// No connection came within the timeout.
    Timeout,
    /// The listening socket is closed.
    Closed,
    /// The process or system is out of descriptors or memory (`EMFILE`,
    /// `ENFILE`, `ENOBUFS`, `ENOMEM`); accepting later may work.
    SystemLimit(io::Error),
    /// The peer gave up before the connection was accepted
    /// (`ECONNABORTED`); accept again.
    Aborted,
    /// The transport's handshake failed.
    Handshake(Error),
    /// Another error.
    Io(io::Error),
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::Timeout => f.write_str("no connection within the timeout"),
            AcceptError::Closed => f.write_str("the listener is closed"),
            AcceptError::SystemLimit(_) => f.write_str("out of descriptors or memory"),
            AcceptError::Aborted => {
                f.write_str("the connection was aborted before it was accepted")
            }
            AcceptError::Handshake(_) => f.write_str("handshake failed"),
            AcceptError::Io(_) => f.write_str("accept failed"),
        }
    }
}

impl std::error::Error for AcceptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AcceptError::SystemLimit(e) | AcceptError::Io(e) => Some(e),
            AcceptError::Handshake(e) => Some(e),
            _ => None,
        }
    }
}

impl AcceptError {
    fn from_io(e: io::Error) -> AcceptError {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                AcceptError::SystemLimit(e)
            }
            Some(libc::ECONNABORTED) => AcceptError::Aborted,
            Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK) => AcceptError::Closed,
            _ => AcceptError::Io(e),
        }
    }
}

/// A listening socket used on its own, without a server, for code that
/// runs its own accept loop. Accepted connections come back as ready
/// [`Socket`]s with blocking, timed `recv` and `send`.
///
/// Share it in an `Arc` to accept on several threads; [`close`](Listener::close)
/// from any thread wakes them all with [`AcceptError::Closed`].
///
/// ```
/// use std::io::Write;
/// use std::time::Duration;
/// use atoll::transport::{ListenOptions, Listener, Tcp};
///
/// let listener = Listener::bind(Tcp, &ListenOptions::new().ip([127, 0, 0, 1].into()).port(0))?;
/// let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
/// client.write_all(b"hi")?;
/// let mut socket = listener.accept(Some(Duration::from_secs(5)))?;
/// assert_eq!(socket.recv(2)?, b"hi");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Listener {
    socket: RawSocket,
    transport: Arc<dyn Transport>,
    options: ListenOptions,
    handshake_timeout: Option<Duration>,
    proxy: Option<ProxyProtocol>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Readable once closed: wakes threads blocked in `accept`.
    wake: (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ),
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("transport", &self.transport.name())
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl Listener {
    /// Binds and listens with `options`; connections will go through
    /// `transport`'s handshake when accepted.
    ///
    /// ```
    /// use atoll::transport::{ListenOptions, Listener, Tcp};
    /// let listener = Listener::bind(Tcp, &ListenOptions::new().port(0))?;
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn bind(transport: impl Transport, options: &ListenOptions) -> Result<Listener, Error> {
        Ok(Listener {
            socket: options.bind()?,
            transport: Arc::new(transport),
            options: options.clone(),
            handshake_timeout: Some(Duration::from_secs(5)),
            proxy: None,
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            wake: std::os::unix::net::UnixStream::pair()?,
        })
    }

    /// Reads a PROXY protocol header at the start of every accepted
    /// connection, before the handshake, as
    /// [`Builder::proxy_protocol`](crate::Builder::proxy_protocol) does for
    /// a server: the socket's peer is then the original client. A bad or
    /// late header fails the accept with
    /// [`AcceptError::Handshake`]`(`[`Error::ProxyHeader`]`)`.
    ///
    /// ```
    /// use std::io::Write;
    /// use atoll::proxy::{ProxyHeader, ProxyProtocol, Version};
    /// use atoll::transport::{ListenOptions, Listener, Tcp};
    ///
    /// let listener = Listener::bind(Tcp, &ListenOptions::new().ip([127, 0, 0, 1].into()).port(0))?
    ///     .proxy_protocol(ProxyProtocol::new());
    /// let mut proxy = std::net::TcpStream::connect(listener.local_addr()?.inet().unwrap())?;
    /// let header = ProxyHeader::tcp("192.0.2.7:5000".parse()?, "192.0.2.1:80".parse()?);
    /// proxy.write_all(&header.encode(Version::V1)?)?;
    /// let socket = listener.accept(None)?;
    /// assert_eq!(socket.peer_addr().to_string(), "192.0.2.7:5000");
    /// assert_eq!(socket.proxy_addr().unwrap(), &proxy.local_addr()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn proxy_protocol(mut self, options: ProxyProtocol) -> Listener {
        self.proxy = Some(options);
        self
    }

    /// How long the transport's handshake may take in
    /// [`accept`](Listener::accept) before it fails with
    /// [`AcceptError::Handshake`] holding a [`Timeout::Handshake`](crate::Timeout::Handshake); `None`
    /// waits forever. Default is 5 s, as a server's.
    ///
    /// ```
    /// use atoll::transport::{ListenOptions, Listener, Tcp};
    /// let listener = Listener::bind(Tcp, &ListenOptions::new().port(0))?
    ///     .handshake_timeout(Some(std::time::Duration::from_secs(1)));
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Listener {
        self.handshake_timeout = timeout;
        self
    }

    /// The bound address (with port 0, the port the system picked).
    ///
    /// ```
    /// use atoll::transport::{ListenOptions, Listener, Tcp};
    /// let listener = Listener::bind(Tcp, &ListenOptions::new().port(0))?;
    /// assert_ne!(listener.local_addr()?.port(), Some(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::from_sock(&self.socket.local_addr()?))
    }

    /// Waits up to `timeout` (`None`: forever) for a connection, then runs
    /// the transport's handshake (bounded by
    /// [`handshake_timeout`](Listener::handshake_timeout)). Fails with
    /// [`AcceptError::Closed`] once the listener is
    /// [closed](Listener::close).
    ///
    /// ```
    /// use std::time::Duration;
    /// use atoll::transport::{AcceptError, ListenOptions, Listener, Tcp};
    /// let listener = Listener::bind(Tcp, &ListenOptions::new().port(0))?;
    /// assert!(matches!(listener.accept(Some(Duration::from_millis(10))), Err(AcceptError::Timeout)));
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn accept(&self, timeout: Option<Duration>) -> Result<Socket, AcceptError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let (sock, peer) = loop {
            if self.is_closed() {
                return Err(AcceptError::Closed);
            }
            match self.socket.accept() {
                Ok(accepted) => break accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let fd = self.socket.as_raw_fd();
                    if !sys::wait_read_or_wake(fd, self.wake.0.as_raw_fd(), deadline)
                        .map_err(AcceptError::from_io)?
                    {
                        return Err(AcceptError::Timeout);
                    }
                }
                Err(_) if self.is_closed() => return Err(AcceptError::Closed),
                Err(e) => return Err(AcceptError::from_io(e)),
            }
        };
        sock.set_nonblocking(true).map_err(AcceptError::Io)?;
        let peer = Addr::from_sock(&peer);
        self.options.apply(&sock, peer.inet().is_some());
        let io = Io::new(sock);
        let local = io.local_addr().map_err(AcceptError::Io)?;
        let proxied = match &self.proxy {
            Some(options) => Some(Proxied {
                header: read_header_blocking(&io, options, &peer)
                    .map_err(AcceptError::Handshake)?,
                via: peer.clone(),
            }),
            None => None,
        };
        let stream = handshake_blocking(self.transport.handshake(io), self.handshake_timeout)
            .map_err(AcceptError::Handshake)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut socket = Socket::new(stream, id, peer, local, None, self.options.send_timeout);
        if let Some(proxied) = proxied {
            socket.set_proxied(Arc::new(proxied));
        }
        Ok(socket)
    }
}

impl Listener {
    /// Closes the listener from any thread (Pool's `close`): every
    /// [`accept`](Listener::accept) blocked on it, and every later one,
    /// fails with [`AcceptError::Closed`], and the socket stops listening
    /// (new clients are refused). Connections already accepted go on.
    /// Closing twice is harmless.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use atoll::transport::{AcceptError, ListenOptions, Listener, Tcp};
    ///
    /// let listener = Arc::new(Listener::bind(Tcp, &ListenOptions::new().ip([127, 0, 0, 1].into()).port(0))?);
    /// let acceptor = listener.clone();
    /// let blocked = std::thread::spawn(move || acceptor.accept(None));
    /// listener.close();
    /// assert!(matches!(blocked.join().unwrap(), Err(AcceptError::Closed)));
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // The byte wakes the waiting threads, and stays unread so that
        // every one of them, now and later, sees it.
        let _ = (&self.wake.1).write(&[1]);
        // Stops listening where the system allows it (Linux): queued and
        // new clients are refused rather than left waiting for a drop.
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// Whether [`close`](Listener::close) was called.
    ///
    /// ```
    /// use atoll::transport::{ListenOptions, Listener, Tcp};
    /// let listener = Listener::bind(Tcp, &ListenOptions::new().port(0))?;
    /// assert!(!listener.is_closed());
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = self.options.unix_path() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Drives a handshake to its end on the calling thread, waiting for
/// readability between steps, for up to `timeout`.
pub(crate) fn handshake_blocking(
    mut state: Handshake,
    timeout: Option<Duration>,
) -> Result<Box<dyn Stream>, Error> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        match state {
            Handshake::Done(stream) => return Ok(stream),
            Handshake::Failed(e) => return Err(Error::Handshake(e)),
            Handshake::Pending(pending) => {
                // Checked on its own as well: a peer that keeps the socket
                // readable (trickling bytes, or bytes the handshake does
                // not take) would otherwise never let the wait time out.
                let late = deadline.is_some_and(|d| Instant::now() >= d);
                if late || !sys::wait_fd(pending.io().raw_fd(), Wait::Read, deadline)? {
                    return Err(Error::Timeout(crate::Timeout::Handshake));
                }
                state = pending.resume();
            }
        }
    }
}
