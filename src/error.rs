//! [`Error`], the server side's one error type: its cases, `Display` and
//! conversions; never the client's error, which shares only [`Timeout`].

use std::fmt;
use std::io;

use crate::addr::Addr;
use crate::timeout::Timeout;

/// A boxed error, the form in which handlers and factories give a reason.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in atoll, as one flat enum.
///
/// Socket operations fail with [`Error::Closed`], [`Error::Timeout`] or
/// [`Error::Io`]; a handler's own failure reaches
/// [`Handler::handle_error`](crate::Handler::handle_error) as
/// [`Error::Handler`] or [`Error::Panic`]; starting a server fails with
/// [`Error::Config`] or [`Error::Bind`]. New kinds may be added, so match with
/// a wildcard arm.
///
/// Every error converts into a [`std::io::Error`] of the matching kind, so `?`
/// works in functions returning `io::Result`; such an `io::Error` converts
/// back to the same `Error`.
///
/// # Examples
///
/// ```
/// use atoll::{Error, Timeout};
///
/// let err = Error::Timeout(Timeout::Recv);
/// assert!(err.is_timeout());
/// let io: std::io::Error = err.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
/// assert!(matches!(Error::from(io), Error::Timeout(Timeout::Recv)));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The connection is closed: the peer closed it, it was closed locally,
    /// or the server is stopping.
    Closed,
    /// A wait ran out of time; the [`Timeout`] says which: a read
    /// ([`Timeout::Recv`]), a send ([`Timeout::Send`], with what went out
    /// and the rest), the transport's handshake or a STARTTLS upgrade's
    /// ([`Timeout::Handshake`]), the PROXY protocol header
    /// ([`Timeout::ProxyHeader`]), an idle connection ([`Timeout::Idle`]).
    Timeout(Timeout),
    /// An operating-system error on the socket.
    Io(io::Error),
    /// A handler callback returned [`Flow::Error`](crate::Flow::Error) with
    /// this reason.
    Handler(BoxError),
    /// A handler callback panicked; the payload's message.
    Panic(String),
    /// The handler factory refused the connection, for this reason. It is
    /// logged and counted in [`ServerStats::refused`](crate::ServerStats);
    /// no handler exists to receive it.
    Refused(BoxError),
    /// The transport's handshake failed (plain text on a TLS port, a
    /// protocol version refused, the client rejected the certificate).
    /// One that ran out of time is [`Timeout::Handshake`].
    Handshake(BoxError),
    /// A STARTTLS upgrade ([`Socket::upgrade`](crate::Socket::upgrade))
    /// failed: the handshake on the live connection failed, or the
    /// connection was not a plain one (the connection is then closed), or
    /// bytes read ahead of the upgrade would have been lost (the
    /// connection is left as it was).
    Upgrade(BoxError),
    /// The PROXY protocol header was malformed, too long, of a version not
    /// accepted, cut short, or sent by a peer not trusted (see
    /// [`proxy`](crate::proxy)). A parse error is a
    /// [`ProxyError`](crate::proxy::ProxyError) inside. One that did not
    /// arrive within the header timeout is [`Timeout::ProxyHeader`].
    ProxyHeader(BoxError),
    /// The server configuration is invalid: an option, a transport's
    /// certificates, inherited sockets. Raised while building or starting,
    /// never by a live connection.
    Config(String),
    /// The listener could not be bound to this address.
    Bind {
        /// The address the server tried to bind.
        addr: Addr,
        /// Why it failed (in use, permission, address not available, ...).
        source: io::Error,
    },
}

impl Error {
    /// Whether this is [`Error::Closed`].
    ///
    /// ```
    /// assert!(atoll::Error::Closed.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }

    /// Whether an operation ran out of time: an [`Error::Timeout`] of any
    /// kind.
    ///
    /// ```
    /// use atoll::{Error, Timeout};
    /// assert!(Error::Timeout(Timeout::Handshake).is_timeout());
    /// assert!(Error::Timeout(Timeout::Send { sent: 0, unsent: b"rest".to_vec() }).is_timeout());
    /// assert!(!Error::Closed.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// Converts an I/O error: one made from an `Error` gives it back, the
    /// end of the stream is [`Error::Closed`], and anything else (a
    /// `WouldBlock` or an operating system's `ETIMEDOUT` included: atoll's
    /// own timeouts are raised where they pass) is [`Error::Io`].
    pub(crate) fn from_io(err: io::Error) -> Error {
        let kind = err.kind();
        if err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return match err.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(inner)) => *inner,
                // Not reached: the check above saw an `Error` inside.
                Some(Err(other)) => Error::Io(io::Error::new(kind, other)),
                None => Error::Io(kind.into()),
            };
        }
        match err.kind() {
            io::ErrorKind::UnexpectedEof => Error::Closed,
            _ => Error::Io(err),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("connection closed"),
            Error::Timeout(kind) => write!(f, "{kind}"),
            // The cause is the source's to print, not this message's: a
            // reporter that walks `source()` would print it twice.
            Error::Io(_) => f.write_str("socket error"),
            Error::Handler(_) => f.write_str("handler error"),
            Error::Panic(msg) => write!(f, "handler panicked: {msg}"),
            Error::Refused(_) => f.write_str("connection refused by the handler factory"),
            Error::Handshake(_) => f.write_str("handshake failed"),
            Error::Upgrade(_) => f.write_str("TLS upgrade failed"),
            Error::ProxyHeader(_) => f.write_str("PROXY protocol header refused"),
            Error::Config(msg) => write!(f, "invalid configuration: {msg}"),
            Error::Bind { addr, .. } => write!(f, "cannot bind {addr}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) | Error::Bind { source: e, .. } => Some(e),
            Error::Handler(e)
            | Error::Refused(e)
            | Error::Handshake(e)
            | Error::Upgrade(e)
            | Error::ProxyHeader(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::from_io(err)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        match err {
            Error::Io(e) => e,
            Error::Closed => io::Error::new(io::ErrorKind::NotConnected, Error::Closed),
            Error::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, err),
            Error::Bind { source, .. } => source,
            Error::Config(_) => io::Error::new(io::ErrorKind::InvalidInput, err),
            other => io::Error::other(other),
        }
    }
}

/// An error and its causes, `error: cause: cause`, as the log shows them:
/// each error's `Display` holds only its own message.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// A panic payload as text, for [`Error::Panic`] and the log.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
