//! The standalone [`Listener`], for code that runs its own accept loop,
//! and [`AcceptError`]; the classification of accept failures the
//! server's acceptors share. Never touches a server.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket as RawSocket;

use super::{Addr, Handshake, Io, ListenOptions, Stream, Transport};
use crate::error::Error;
use crate::proxy::{read_header_blocking, Proxied, ProxyProtocol};
use crate::socket::{SendPolicy, Socket};
use crate::sys::{self, Wait};

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
        match AcceptFailure::of(&e) {
            AcceptFailure::SystemLimit => AcceptError::SystemLimit(e),
            AcceptFailure::Aborted => AcceptError::Aborted,
            AcceptFailure::Closed => AcceptError::Closed,
            AcceptFailure::Other => AcceptError::Io(e),
        }
    }
}

/// What a failed `accept` means, the same for a server's acceptors and a
/// standalone [`Listener`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    /// Out of descriptors or memory: accepting again at once would fail
    /// the same way.
    SystemLimit,
    /// The peer gave up first: accept the next one.
    Aborted,
    /// The listening socket is gone.
    Closed,
    Other,
}

impl AcceptFailure {
    pub(crate) fn of(e: &io::Error) -> AcceptFailure {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                AcceptFailure::SystemLimit
            }
            Some(libc::ECONNABORTED) => AcceptFailure::Aborted,
            Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK) => AcceptFailure::Closed,
            _ => AcceptFailure::Other,
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
    send: SendPolicy,
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
            send: SendPolicy::default(),
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
    /// [`AcceptError::Handshake`] holding a
    /// [`Timeout::Handshake`](crate::Timeout::Handshake); `None` waits
    /// forever. Default is 5 s, as a server's.
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

    /// How long a send on an accepted socket may wait for the peer; then
    /// it fails and, as [`send_timeout_close`](Listener::send_timeout_close)
    /// says, the socket closes. Default is 30 s, as a server's.
    ///
    /// ```
    /// use atoll::transport::{ListenOptions, Listener, Tcp};
    /// let listener = Listener::bind(Tcp, &ListenOptions::new().port(0))?.send_timeout(None);
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn send_timeout(mut self, timeout: Option<Duration>) -> Listener {
        self.send.timeout = timeout;
        self
    }

    /// Whether a send that times out closes the socket. Off, the send
    /// fails with [`Timeout::Send`](crate::Timeout::Send) and the socket
    /// stays open. Default
    /// is `true`.
    ///
    /// ```
    /// use atoll::transport::{ListenOptions, Listener, Tcp};
    /// let listener = Listener::bind(Tcp, &ListenOptions::new().port(0))?.send_timeout_close(false);
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn send_timeout_close(mut self, close: bool) -> Listener {
        self.send.close = close;
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
        let mut socket = Socket::new(stream, id, peer, local, None, self.send);
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
