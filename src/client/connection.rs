//! [`Client`]: a client connection, passive by default, armable for
//! active mode, plain or TLS; its blocking reads and writes run the loop
//! of `blocking`, and nothing of the server's is used here.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use socket2::SockRef;

use super::active::{self, ConnId, Packet};
use super::error::ClientError;
use super::options::Options;
#[cfg(any(feature = "tls", feature = "rustls"))]
use super::tls::TlsStream;
use crate::blocking::{self, NonBlocking, SendStop, Stop};
use crate::sys::{self, Wait};
use crate::timeout::Timeout;

pub(super) use crate::blocking::READ_CHUNK;

/// The most slices one `sendmsg(2)` takes on Linux (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// A peer that went away is an error, not a `SIGPIPE` that kills the
/// process.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// A connected, non-blocking TCP socket whose writes never raise
/// `SIGPIPE`; also the transport under TLS.
#[derive(Debug)]
pub(super) struct TcpSocket(pub(super) TcpStream);

impl Read for TcpSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl Write for TcpSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let bufs = &bufs[..bufs.len().min(IOV_MAX)];
        loop {
            match SockRef::from(&self.0).send_vectored_with_flags(bufs, SEND_FLAGS) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The link a client talks over: plain TCP or TLS over it. Every operation
/// on it is non-blocking:
/// it is locked only for the length of one system call (or one TLS record),
/// so that the shared poll thread never waits on a user's blocking send.
pub(super) enum Link {
    Plain(TcpSocket),
    #[cfg(any(feature = "tls", feature = "rustls"))]
    Tls(TlsStream),
    /// Shut down; the socket is closed.
    Closed,
}

impl Link {
    /// One non-blocking read. `Ok(0)` is the end of the stream.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(tcp) => tcp.read(buf),
            #[cfg(any(feature = "tls", feature = "rustls"))]
            Link::Tls(tls) => tls.read(buf),
            Link::Closed => Err(ClientError::Closed.into()),
        }
    }

    /// One non-blocking write of some of `bufs`.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Link::Plain(tcp) => tcp.write_vectored(bufs),
            #[cfg(any(feature = "tls", feature = "rustls"))]
            Link::Tls(tls) => tls.write_vectored(bufs),
            Link::Closed => Err(ClientError::Closed.into()),
        }
    }

    /// Writes what earlier writes left in the TLS layer (a rustls record
    /// the socket could not take yet); `WouldBlock` while it cannot.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            #[cfg(any(feature = "tls", feature = "rustls"))]
            Link::Tls(tls) => tls.flush(),
            _ => Ok(()),
        }
    }
}

/// What a connection shares with the active-mode poll thread.
pub(super) struct Shared {
    pub(super) id: ConnId,
    /// The socket's descriptor, valid while `stream` is not `Closed`.
    pub(super) fd: RawFd,
    pub(super) stream: Mutex<Link>,
    /// Armed, and the message not yet taken by the poll thread.
    pub(super) armed: AtomicBool,
}

/// A TCP connection to a server, plain or TLS.
///
/// Made by [`Options::connect`] or [`connect`](super::connect). The socket
/// underneath is non-blocking, but every method blocks the caller as a
/// blocking socket would, bounded by the timeout it is given.
///
/// # Passive mode
///
/// A new connection is passive: read it with
/// [`recv`](Client::recv) (whatever arrives next),
/// [`recv_exact`](Client::recv_exact) (exactly `n` bytes), or the
/// [`Read`] impl, and write it with [`send`](Client::send),
/// [`send_vectored`](Client::send_vectored) or the [`Write`] impl.
///
/// # Active mode
///
/// [`arm`](Client::arm) hands the next packet, the peer's close, or an
/// error to a background poll thread, which sends it as one [`Packet`] on a
/// channel of the caller's choice; one thread can then `select!` over many
/// connections and its other channels. One message per arming, so a fast
/// peer cannot flood the receiver; arm again for the next one. While
/// armed, reading directly fails with [`ClientError::Armed`]; sending is allowed.
///
/// # Closing
///
/// [`shutdown`](Client::shutdown) closes the connection; afterwards
/// sends and receives fail with [`ClientError::Closed`]. Dropping the connection
/// closes it too (and cancels an arming).
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use atoll::client;
///
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let port = listener.local_addr()?.port();
/// # std::thread::spawn(move || -> std::io::Result<()> {
/// #     let (mut s, _) = listener.accept()?;
/// #     let mut buf = [0u8; 4];
/// #     s.read_exact(&mut buf)?;
/// #     s.write_all(&buf)
/// # });
/// let mut conn = client::connect("127.0.0.1", port)?;
/// conn.send(b"ping")?;
/// let reply = conn.recv_exact(4, Some(Duration::from_secs(5)))?;
/// assert_eq!(reply, b"ping");
/// conn.shutdown()?;
/// assert_eq!(conn.send(b"more"), Err(client::ClientError::Closed));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Client {
    shared: Arc<Shared>,
    host: String,
    peer: SocketAddr,
    local: SocketAddr,
    /// Bytes read but not yet returned: what a `recv_exact` that timed
    /// out had gathered.
    unread: Vec<u8>,
    send_timeout: Option<Duration>,
}

/// Ids are unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Client {
    /// Wraps a freshly connected stream.
    pub(super) fn from_stream(
        stream: TcpStream,
        peer: SocketAddr,
        options: &Options,
    ) -> Result<Client, ClientError> {
        stream.set_nonblocking(true)?;
        if options.nodelay {
            stream.set_nodelay(true)?;
        }
        let local = stream.local_addr()?;
        let id = ConnId::new(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        Ok(Client {
            shared: Arc::new(Shared {
                id,
                fd: stream.as_raw_fd(),
                stream: Mutex::new(Link::Plain(TcpSocket(stream))),
                armed: AtomicBool::new(false),
            }),
            host: options.host.clone(),
            peer,
            local,
            unread: Vec::new(),
            send_timeout: options.send_timeout,
        })
    }

    /// This connection's id, unique in the process: the one its active-mode
    /// [`Packet`]s carry.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// # let port = listener.local_addr()?.port();
    /// let a = atoll::client::connect("127.0.0.1", port)?;
    /// let b = atoll::client::connect("127.0.0.1", port)?;
    /// assert_ne!(a.id(), b.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(&self) -> ConnId {
        self.shared.id
    }

    /// The host this connection was made to, as given to [`Options::new`].
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// # let port = listener.local_addr()?.port();
    /// let conn = atoll::client::connect("127.0.0.1", port)?;
    /// assert_eq!(conn.host(), "127.0.0.1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's address.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// assert_eq!(conn.peer_addr(), listener.local_addr()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address of the connection.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// let (_, from) = listener.accept()?;
    /// assert_eq!(conn.local_addr(), from);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether the connection runs over TLS.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// assert!(!conn.is_tls());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_tls(&self) -> bool {
        match &*self.shared.stream.lock() {
            #[cfg(any(feature = "tls", feature = "rustls"))]
            Link::Tls(_) => true,
            _ => false,
        }
    }

    /// Whether the connection has been [shut down](Client::shutdown).
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// conn.shutdown()?;
    /// assert!(conn.is_closed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(&*self.shared.stream.lock(), Link::Closed)
    }

    /// The send timeout of [`send`](Client::send), [`send_vectored`](Client::send_vectored)
    /// and [`Write`], from [`Options::send_timeout`].
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// assert_eq!(conn.send_timeout(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(&self) -> Option<Duration> {
        self.send_timeout
    }

    /// Replaces the send timeout; `None` waits forever.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// conn.set_send_timeout(Some(std::time::Duration::from_secs(5)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_send_timeout(&mut self, timeout: Option<Duration>) {
        self.send_timeout = timeout;
    }

    /// Sends all of `data`, waiting for room as long as the send timeout
    /// allows. Allowed while armed.
    ///
    /// Fails with [`ClientError::Closed`] after [`shutdown`](Client::shutdown),
    /// [`ClientError::Timeout`]`(`[`Timeout::Send`]`)` when the send timeout
    /// passes (it says how many bytes went out and holds the rest, to send
    /// again), and [`ClientError::Epipe`] or [`ClientError::Econnreset`] when the peer
    /// has gone away.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// conn.send(b"hello")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send_vectored(&[IoSlice::new(data)])
    }

    /// Sends all of the slices, in order, with as few system calls as the
    /// kernel allows, without joining them first: a header and a body go out
    /// together without being copied into one buffer first.
    ///
    /// ```
    /// use std::io::IoSlice;
    ///
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// conn.send_vectored(&[IoSlice::new(b"GET / HTTP/1.1\r\n"), IoSlice::new(b"\r\n")])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<(), ClientError> {
        let deadline = blocking::deadline(self.send_timeout);
        let mut owned: Vec<IoSlice<'_>> = bufs.to_vec();
        blocking::write_all(self, &mut owned, deadline)
            .map(drop)
            .map_err(send_error)
    }

    /// Receives whatever arrives next, at least one byte, waiting up to
    /// `timeout`; `None` waits forever.
    ///
    /// A zero timeout makes one non-blocking attempt: the bytes already
    /// there, or [`ClientError::Timeout`]`(`[`Timeout::Recv`]`)`. Fails with
    /// [`ClientError::Closed`] once the peer has closed and everything it sent
    /// has been received, and with [`ClientError::Armed`] while the connection
    /// is armed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use atoll::client::{ClientError, Timeout};
    ///
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// // Nothing has been sent yet.
    /// assert_eq!(conn.recv(Some(Duration::ZERO)), Err(ClientError::Timeout(Timeout::Recv)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Vec<u8>, ClientError> {
        self.check_passive()?;
        if !self.unread.is_empty() {
            return Ok(std::mem::take(&mut self.unread));
        }
        let deadline = blocking::deadline(timeout);
        let mut buf = vec![0u8; READ_CHUNK];
        let n = blocking::read(self, &mut buf, deadline).map_err(recv_error)?;
        buf.truncate(n);
        buf.shrink_to_fit();
        Ok(buf)
    }

    /// Receives exactly `n` bytes, waiting up to `timeout` for all of them;
    /// `None` waits forever.
    ///
    /// No byte is ever lost: when the timeout passes with only part of the
    /// bytes received, it fails with [`ClientError::Timeout`]`(`[`Timeout::Recv`]`)`
    /// and keeps them, and the next receive returns them first. When the peer closes
    /// before `n` bytes came, the bytes that did come are returned (fewer
    /// than `n`), and the next receive fails with [`ClientError::Closed`]. `n == 0`
    /// returns no bytes at once.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::Duration;
    /// use atoll::client::{ClientError, Timeout};
    ///
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// let (mut server, _) = listener.accept()?;
    /// server.write_all(b"hel")?;
    /// let wait = Some(Duration::from_millis(50));
    /// assert_eq!(conn.recv_exact(5, wait), Err(ClientError::Timeout(Timeout::Recv)));
    /// server.write_all(b"lo")?;
    /// assert_eq!(conn.recv_exact(5, Some(Duration::from_secs(5)))?, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_exact(
        &mut self,
        n: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, ClientError> {
        self.check_passive()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let deadline = blocking::deadline(timeout);
        let mut out = std::mem::take(&mut self.unread);
        if out.len() >= n {
            self.unread = out.split_off(n);
            return Ok(out);
        }
        match blocking::read_to_len(self, &mut out, n, deadline) {
            Ok(()) => Ok(out),
            // The peer closed: what came is all there will be.
            Err(Stop::Closed) if !out.is_empty() => Ok(out),
            Err(stop) => {
                self.unread = out;
                Err(recv_error(stop))
            }
        }
    }

    /// Closed or armed connections cannot be read.
    fn check_passive(&self) -> Result<(), ClientError> {
        if self.shared.armed.load(Ordering::Acquire) {
            return Err(ClientError::Armed);
        }
        if matches!(&*self.shared.stream.lock(), Link::Closed) {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    /// Closes the connection: a TLS connection sends its
    /// close notification, then the socket is shut down in both directions
    /// (what was sent still reaches the peer) and closed. Cancels an arming
    /// without a message. Afterwards [`send`](Client::send) and
    /// [`recv`](Client::recv) fail with [`ClientError::Closed`]; calling
    /// `shutdown` again does nothing.
    ///
    /// ```
    /// use atoll::client::ClientError;
    ///
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// conn.shutdown()?;
    /// assert_eq!(conn.recv(None), Err(ClientError::Closed));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        self.disarm();
        self.unread = Vec::new();
        let stream = std::mem::replace(&mut *self.shared.stream.lock(), Link::Closed);
        let tcp = match stream {
            Link::Closed => return Ok(()),
            Link::Plain(tcp) => tcp,
            #[cfg(any(feature = "tls", feature = "rustls"))]
            Link::Tls(mut tls) => {
                tls.close();
                let tcp = tls.tcp();
                return match tcp.0.shutdown(Shutdown::Both) {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e.into()),
                    _ => Ok(()),
                };
            }
        };
        match tcp.0.shutdown(Shutdown::Both) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Arms the connection: its next packet, the peer's close, or an error
    /// arrives as one [`Packet`] on `tx`. Arm again after each message for
    /// the next one.
    ///
    /// The message is sent by a background poll thread shared by all
    /// connections (see the module's "Active mode" section); give it an
    /// unbounded channel or one with room, as the thread waits while the
    /// channel is full. Bytes left over by a
    /// [`recv_exact`](Client::recv_exact) that timed out are sent
    /// at once. Fails with [`ClientError::Armed`] if already armed and
    /// [`ClientError::Closed`] after [`shutdown`](Client::shutdown).
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::Duration;
    /// use atoll::client::{self, Packet};
    ///
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// let (mut server, _) = listener.accept()?;
    /// let (tx, rx) = client::crossbeam_channel::unbounded();
    /// conn.arm(&tx)?;
    /// server.write_all(b"news")?;
    /// let packet = rx.recv_timeout(Duration::from_secs(5))?;
    /// assert_eq!(packet, Packet::Data(conn.id(), b"news".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn arm(&mut self, tx: &Sender<Packet>) -> Result<(), ClientError> {
        self.arm_with(tx, |packet| packet)
    }

    /// [`arm`](Client::arm), with the packet turned into the channel's
    /// own message type by `map`, so
    /// that connections and other events can share one channel.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::Duration;
    /// use atoll::client::{self, Packet};
    ///
    /// enum Event {
    ///     Net(Packet),
    ///     Tick,
    /// }
    ///
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// conn.arm_with(&tx, Event::Net)?;
    /// tx.send(Event::Tick)?;
    /// drop(listener.accept()?); // the server closes
    /// let mut closed = false;
    /// while !closed {
    ///     match rx.recv_timeout(Duration::from_secs(5))? {
    ///         Event::Net(Packet::Closed(id)) => closed = id == conn.id(),
    ///         Event::Net(other) => panic!("unexpected {other:?}"),
    ///         Event::Tick => {}
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn arm_with<T, F>(&mut self, tx: &Sender<T>, map: F) -> Result<(), ClientError>
    where
        T: Send + 'static,
        F: FnOnce(Packet) -> T + Send + 'static,
    {
        if self.shared.armed.load(Ordering::Acquire) {
            return Err(ClientError::Armed);
        }
        if matches!(&*self.shared.stream.lock(), Link::Closed) {
            return Err(ClientError::Closed);
        }
        if !self.unread.is_empty() {
            let data = std::mem::take(&mut self.unread);
            let _ = tx.send(map(Packet::Data(self.id(), data)));
            return Ok(());
        }
        let tx = tx.clone();
        active::arm(
            &self.shared,
            Box::new(move |packet| {
                // A receiver that is gone no longer wants the message.
                let _ = tx.send(map(packet));
            }),
        )
    }

    /// Cancels an arming. Returns `true` if it was cancelled before anything
    /// was read, so no message will come; `false` if the connection was not
    /// armed, or its message has already been taken (it is on the channel,
    /// or about to be).
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// let (tx, _rx) = crossbeam_channel::unbounded();
    /// conn.arm(&tx)?;
    /// assert!(conn.disarm());
    /// assert!(!conn.is_armed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn disarm(&mut self) -> bool {
        self.shared.armed.load(Ordering::Acquire) && active::disarm(&self.shared)
    }

    /// Whether the connection is armed and its message not yet taken.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// assert!(!conn.is_armed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_armed(&self) -> bool {
        self.shared.armed.load(Ordering::Acquire)
    }

    /// Whether bytes were received but not yet returned.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub(super) fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// Gives the TLS module the stream, for a handshake.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub(super) fn stream(&self) -> &Mutex<Link> {
        &self.shared.stream
    }

    /// The socket's descriptor, for the TLS handshake to wait on.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub(super) fn fd(&self) -> RawFd {
        self.shared.fd
    }
}

/// The connection's descriptor, for options this client does not wrap
/// (through `socket2::SockRef`) or a system call of the application's own.
/// Over TLS it is the TCP socket underneath: reading or writing it
/// directly would corrupt the TLS stream.
///
/// # Closed connections
///
/// After [`shutdown`](Client::shutdown) the descriptor is gone, and its
/// number may already be another file's: a closed connection gives a
/// descriptor of `/dev/null` instead, on which socket calls fail with
/// `ENOTSOCK`.
///
/// ```
/// use atoll::client;
/// use socket2::SockRef;
///
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let port = listener.local_addr()?.port();
/// let conn = client::connect("127.0.0.1", port)?;
/// SockRef::from(&conn).set_keepalive(true)?;
/// assert!(SockRef::from(&conn).keepalive()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        if self.is_closed() {
            return sys::closed_fd();
        }
        // SAFETY: `shared.fd` is the stream's descriptor and stays open
        // until the stream becomes `Closed`, which only `shutdown` and the
        // TLS upgrade do (taking `&mut self`) or the drop of the last
        // `Shared` (this `Client` holds one): none can happen while the
        // returned borrow of `self` lives.
        unsafe { BorrowedFd::borrow_raw(self.shared.fd) }
    }
}

/// The connection's descriptor number; that of `/dev/null` once closed
/// (see [`AsFd`](#impl-AsFd-for-Client)).
///
/// ```
/// use std::os::fd::AsRawFd;
///
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let port = listener.local_addr()?.port();
/// let conn = atoll::client::connect("127.0.0.1", port)?;
/// assert!(conn.as_raw_fd() >= 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl AsRawFd for Client {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The poll thread must let go of the descriptor before it closes.
        self.disarm();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.shared.id)
            .field("host", &self.host)
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("tls", &self.is_tls())
            .field("armed", &self.is_armed())
            .finish()
    }
}

/// Blocks without a timeout; the end of the stream (the peer closed, or
/// [`shutdown`](Client::shutdown)) reads as `Ok(0)`. Use
/// [`recv`](Client::recv) for a timeout.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
///
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
/// listener.accept()?.0.write_all(b"line one\nline two\n")?;
/// let mut lines = BufReader::new(conn).lines();
/// assert_eq!(lines.next().transpose()?.as_deref(), Some("line one"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.check_passive() {
            Err(ClientError::Closed) => return Ok(0),
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.len());
            buf[..n].copy_from_slice(&self.unread[..n]);
            self.unread.drain(..n);
            return Ok(n);
        }
        match blocking::read(self, buf, None) {
            Ok(n) => Ok(n),
            Err(Stop::Closed) => Ok(0),
            Err(stop) => Err(recv_error(stop).into()),
        }
    }
}

/// Each write waits for room as long as the send timeout allows; an error
/// converts back to the same [`ClientError`] with `ClientError::from`.
///
/// ```
/// use std::io::Write;
///
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let mut conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
/// writeln!(conn, "HELLO {}", 42)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let deadline = blocking::deadline(self.send_timeout);
        let n = blocking::write(self, bufs, deadline).map_err(send_error)?;
        // Over rustls the last record may still be in the TLS layer: it is
        // handed to the socket here, as a plain write would have been. If
        // that runs out of time the record goes with the next write, read
        // or flush; the bytes are taken either way.
        let _ = blocking::flush(self, deadline);
        Ok(n)
    }

    /// Waits, as long as the send timeout allows, until what was written
    /// has been handed to the socket.
    fn flush(&mut self) -> io::Result<()> {
        let deadline = blocking::deadline(self.send_timeout);
        Ok(blocking::flush(self, deadline).map_err(send_error)?)
    }
}

/// The shared loops reach the peer through the stream, locked for one
/// call at a time so that the active-mode poll thread never waits on a
/// blocked send.
impl NonBlocking for Client {
    fn read_once(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.stream.lock().read(buf)
    }

    fn write_once(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.shared.stream.lock().write_vectored(bufs)
    }

    fn flush_once(&mut self) -> io::Result<()> {
        self.shared.stream.lock().flush()
    }

    fn wait(&mut self, what: Wait, deadline: Option<Instant>) -> io::Result<bool> {
        // `&mut self` methods are the only ones that close the socket, so
        // the descriptor stays open while we wait on it.
        sys::wait_fd(self.shared.fd, what, deadline)
    }
}

/// The error of a read that stopped.
fn recv_error(stop: Stop) -> ClientError {
    match stop {
        Stop::Closed => ClientError::Closed,
        Stop::Deadline => ClientError::Timeout(Timeout::Recv),
        Stop::Io(e) => ClientError::from(e),
    }
}

/// The error of a send that stopped.
fn send_error(stop: SendStop) -> ClientError {
    match stop.stop {
        Stop::Closed => ClientError::Closed,
        Stop::Deadline => ClientError::Timeout(Timeout::Send {
            sent: stop.sent,
            unsent: stop.unsent,
        }),
        Stop::Io(e) => ClientError::from(e),
    }
}
