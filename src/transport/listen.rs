//! Listening: [`ListenOptions`] and binding by them, and the listening
//! socket the acceptor threads watch. Never touches a connection.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockAddr, Socket as RawSocket, Type};

use super::{Addr, Io};
use crate::error::Error;

/// Where to listen.
#[derive(Clone, Debug)]
enum Bind {
    Inet(SocketAddr),
    Unix(PathBuf),
    /// A socket someone else bound: systemd, a parent, a predecessor.
    /// Shared by the clones of the options; `None` in a stopped server's
    /// own copy.
    Fd(Option<Arc<OwnedFd>>),
}

/// How to listen, and the options of every accepted socket: backlog,
/// address reuse, buffer sizes, keepalive, an inherited descriptor.
///
/// [`Builder`](crate::Builder) has a setter for each; use this type directly
/// for a standalone [`Listener`](super::Listener).
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
    pub(crate) keepalive: bool,
    pub(crate) recv_buffer_size: Option<usize>,
    pub(crate) send_buffer_size: Option<usize>,
    pub(crate) remove_stale_socket: bool,
    nonblocking: bool,
}

/// The listen options, each defined once with its doc: `$then!` gets the
/// list and makes setters of it, for [`ListenOptions`] here and for the
/// server builders (which forward to these) in `server/builder.rs`. Each
/// entry: which servers have it (`any`, or `stream` for stream servers
/// only), the setter, the call its doc example makes, and how it sets a
/// `ListenOptions`.
macro_rules! listen_setters {
    ($then:ident) => {
        $then! {
            /// The IP address to listen on: an IPv4 or IPv6 address, `0.0.0.0`
            /// or `::` for any, `127.0.0.1` or `::1` for loopback. Default is
            /// `0.0.0.0`.
            any ip(ip: std::net::IpAddr) ".ip([127, 0, 0, 1].into())" |o| {
                let port = o.inet_port();
                o.bind = Bind::Inet(SocketAddr::new(ip, port));
            }
            /// The port to listen on; 0 picks a free one, which the listener's
            /// or server's `local_addr` reports. Default is 4000.
            any port(port: u16) ".port(0)" |o| {
                let ip = match &o.bind {
                    Bind::Inet(a) => a.ip(),
                    Bind::Unix(_) | Bind::Fd(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                };
                o.bind = Bind::Inet(SocketAddr::new(ip, port));
            }
            /// `IPV6_V6ONLY` on an IPv6 listener: `true` takes IPv6 clients
            /// only, `false` IPv4 ones too (dual-stack). Default is the
            /// system's.
            any only_v6(only_v6: bool) r#".ip("::".parse().unwrap()).only_v6(false)"# |o| {
                o.only_v6 = Some(only_v6);
            }
            /// `SO_REUSEADDR`. Default is `true`.
            any reuse_address(reuse: bool) ".reuse_address(false)" |o| {
                o.reuse_address = reuse;
            }
            /// `SO_REUSEPORT`: several listeners (or processes) on one port,
            /// the kernel spreading connections or datagrams. Default is
            /// `false`.
            any reuse_port(reuse: bool) ".reuse_port(true)" |o| {
                o.reuse_port = reuse;
            }
            /// `SO_RCVBUF` on accepted sockets (on the socket itself for
            /// UDP). Default is the system's.
            any recv_buffer_size(size: Option<usize>) ".recv_buffer_size(Some(1 << 20))" |o| {
                o.recv_buffer_size = size;
            }
            /// `SO_SNDBUF` on accepted sockets (on the socket itself for
            /// UDP). Default is the system's.
            any send_buffer_size(size: Option<usize>) ".send_buffer_size(Some(1 << 20))" |o| {
                o.send_buffer_size = size;
            }
            /// Listens on a Unix socket at `path` instead of TCP (the seeds'
            /// `{:local, path}`); a server removes the file at stop.
            stream unix(path: impl Into<std::path::PathBuf>) r#".unix("/run/app.sock")"# |o| {
                o.bind = Bind::Unix(path.into());
            }
            /// Removes a file left at the Unix socket path by a process that
            /// did not clean up, before binding. Only a socket file is
            /// removed. Default is `false`.
            stream remove_stale_socket(remove: bool) r#".unix("/run/app.sock").remove_stale_socket(true)"# |o| {
                o.remove_stale_socket = remove;
            }
            /// The listen backlog: connections the kernel queues before they
            /// are accepted. Default is 1024.
            stream backlog(backlog: u32) ".backlog(4096)" |o| {
                o.backlog = backlog;
            }
            /// `TCP_NODELAY` on accepted sockets. Default is `true`.
            stream nodelay(nodelay: bool) ".nodelay(false)" |o| {
                o.nodelay = nodelay;
            }
            /// `SO_LINGER` on accepted sockets. Default is off.
            stream linger(linger: Option<std::time::Duration>) ".linger(Some(std::time::Duration::from_secs(1)))" |o| {
                o.linger = linger;
            }
            /// `SO_KEEPALIVE` on accepted sockets. Default is `false`.
            stream keepalive(keepalive: bool) ".keepalive(true)" |o| {
                o.keepalive = keepalive;
            }
        }
    };
}
pub(crate) use listen_setters;

/// Makes [`ListenOptions`]' setters of the list.
macro_rules! options_setters {
    ($(
        $(#[$attr:meta])*
        $kind:ident $name:ident($arg:ident: $ty:ty) $ex:literal |$o:ident| $body:block
    )*) => {
        impl ListenOptions {
            $(
                $(#[$attr])*
                #[doc = ""]
                #[doc = "```"]
                #[doc = concat!("let options = atoll::transport::ListenOptions::new()", $ex, ";")]
                #[doc = "```"]
                pub fn $name(mut self, $arg: $ty) -> ListenOptions {
                    let $o = &mut self;
                    $body
                    self
                }
            )*
        }
    };
}

listen_setters!(options_setters);

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
            keepalive: false,
            recv_buffer_size: None,
            send_buffer_size: None,
            remove_stale_socket: false,
            nonblocking: true,
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
    /// [`resume`](crate::Server::resume) instead of refusing them. A server
    /// lets go of its own copy when it stops (duplicates handed on by
    /// [`Server::listener_fds`](crate::Server::listener_fds) stay open, and
    /// so does the descriptor while a clone of the options holds it). A
    /// Unix socket's file is left alone.
    ///
    /// ```
    /// let bound = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let options = atoll::transport::ListenOptions::new().fd(bound);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn fd(mut self, fd: impl Into<OwnedFd>) -> ListenOptions {
        self.bind = Bind::Fd(Some(Arc::new(fd.into())));
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
                .as_ref()
                .and_then(|fd| socket2::SockRef::from(fd).local_addr().ok())
                .map_or(Addr::Unix(None), |a| Addr::from_sock(&a)),
        }
    }

    /// Whether the socket is an inherited one.
    pub(crate) fn is_inherited(&self) -> bool {
        matches!(self.bind, Bind::Fd(_))
    }

    /// Lets go of an inherited socket: the server that used it stopped.
    /// Other clones of the options keep theirs.
    pub(crate) fn release_fd(&mut self) {
        if let Bind::Fd(fd) = &mut self.bind {
            *fd = None;
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
        if self.only_v6.is_some() && !matches!(&self.bind, Bind::Inet(SocketAddr::V6(_))) {
            return Err(Error::Config(
                "only_v6 applies to an IPv6 listen address".into(),
            ));
        }
        Ok(())
    }

    /// Binds a stream socket and listens; the socket is non-blocking.
    pub(crate) fn bind(&self) -> Result<RawSocket, Error> {
        self.validate()?;
        let addr = self.bind_addr();
        let fail = |source| Error::Bind {
            addr: addr.clone(),
            source,
        };
        let socket = match &self.bind {
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
            Bind::Fd(fd) => return self.inherit(fd.as_deref(), Type::STREAM).map_err(fail),
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
    fn inherit(&self, fd: Option<&OwnedFd>, want: Type) -> io::Result<RawSocket> {
        let Some(fd) = fd else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the inherited socket was closed when the server using it stopped",
            ));
        };
        let socket = RawSocket::from(fd.try_clone()?);
        let kind = socket.r#type()?;
        let invalid = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()));
        if want == Type::DGRAM {
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

    /// Binds a UDP socket (no listen; the buffer sizes on the socket
    /// itself), or takes the inherited one; non-blocking.
    pub(crate) fn bind_datagram(&self) -> Result<RawSocket, Error> {
        self.validate()?;
        let fail = |source| Error::Bind {
            addr: self.bind_addr(),
            source,
        };
        match &self.bind {
            Bind::Inet(inet) => self.bind_udp(*inet).map_err(fail),
            Bind::Fd(fd) => self.inherit(fd.as_deref(), Type::DGRAM).map_err(fail),
            Bind::Unix(_) => Err(Error::Config(
                "a UDP server listens on an IP address, not a Unix socket path".into(),
            )),
        }
    }

    fn bind_udp(&self, addr: SocketAddr) -> io::Result<RawSocket> {
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

/// A bound listening socket in the form an acceptor thread registers.
pub(crate) enum ListenSocket {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener),
    /// A UDP socket: the acceptor thread receives on `recv`; sessions send on
    /// `io`, a second descriptor of the same socket.
    Udp {
        recv: mio::net::UdpSocket,
        io: Io,
    },
}

impl ListenSocket {
    /// One clone per acceptor thread; each accepts from the same queue.
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
