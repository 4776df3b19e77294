//! [`Timeout`]: which wait ran out of time, the kind both the server's and
//! the client's errors carry; it knows neither error type.

use std::fmt;

/// Which wait ran out of time: the kind that the server's
/// [`Error::Timeout`](crate::Error::Timeout) and the client's
/// [`client::ClientError::Timeout`](crate::client::ClientError::Timeout) carry, named
/// after the phase that waited (ureq's `Timeout`, for sockets).
///
/// | Kind | Raised by |
/// |------|-----------|
/// | [`Connect`](Timeout::Connect) | client: [`connect_timeout`](crate::client::Options::connect_timeout), or the kernel giving up on a connect |
/// | [`Resolve`](Timeout::Resolve) | client: [`resolve_timeout`](crate::client::Options::resolve_timeout) |
/// | [`Handshake`](Timeout::Handshake) | a TLS handshake: the server's [`handshake_timeout`](crate::Builder::handshake_timeout) (on accept and in [`Socket::upgrade`](crate::Socket::upgrade)), the client's [`TlsConfig::handshake_timeout`](crate::client::TlsConfig::handshake_timeout) |
/// | [`ProxyHeader`](Timeout::ProxyHeader) | server: a PROXY protocol header not complete within its [`header_timeout`](crate::proxy::ProxyProtocol::header_timeout) |
/// | [`Recv`](Timeout::Recv) | a read: [`Socket::recv`](crate::Socket::recv) and `Read` (the read timeout), [`Socket::recv_within`](crate::Socket::recv_within), the client's [`recv`](crate::client::Client::recv) and [`recv_exact`](crate::client::Client::recv_exact) |
/// | [`Send`](Timeout::Send) | a write: [`Socket::send`](crate::Socket::send) and the other sends (the send timeout), the client's [`send`](crate::client::Client::send) |
/// | [`Idle`](Timeout::Idle) | server: a connection with no data within its read timeout between callbacks ([`Handler::handle_timeout`](crate::Handler::handle_timeout)), or ended by [`Flow::Timeout`](crate::Flow::Timeout) |
///
/// New kinds may be added, so match with a wildcard arm.
///
/// # Examples
///
/// ```
/// use atoll::{Error, Timeout};
///
/// fn retry_later(err: &Error) -> bool {
///     matches!(err, Error::Timeout(Timeout::Recv | Timeout::Idle))
/// }
///
/// assert!(retry_later(&Error::Timeout(Timeout::Recv)));
/// assert!(!retry_later(&Error::Timeout(Timeout::Handshake)));
/// assert_eq!(Timeout::Recv.to_string(), "receive timed out");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timeout {
    /// Connecting did not finish in time (client only).
    Connect,
    /// Name resolution did not answer in time (client only).
    Resolve,
    /// A TLS handshake did not finish in time.
    Handshake,
    /// The PROXY protocol header did not arrive in time (server only).
    ProxyHeader,
    /// A read received nothing, or not all the bytes asked for, in time.
    /// No byte is lost: those that came are returned by the next read.
    Recv,
    /// A send did not complete in time (Erlang's `{:timeout, rest}`):
    /// `sent` bytes went out and `unsent` are the bytes the stream did
    /// not take, in order, to send again when the connection is kept
    /// (a server socket with `send_timeout_close` off; a client
    /// connection). A TLS stream may also hold some of what it took, to
    /// go out before anything sent next. For `sendfile`, `sent` counts
    /// the file's bytes and `unsent` is empty: the rest is in the file,
    /// from `offset + sent`.
    Send {
        /// Bytes of this send that the stream took.
        sent: u64,
        /// The rest of this send.
        unsent: Vec<u8>,
    },
    /// The connection received nothing within its read timeout while no
    /// callback ran, or a callback ended it with
    /// [`Flow::Timeout`](crate::Flow::Timeout) (server only): the error
    /// its stop event carries.
    Idle,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timeout::Connect => f.write_str("connect timed out"),
            Timeout::Resolve => f.write_str("name resolution timed out"),
            Timeout::Handshake => f.write_str("handshake timed out"),
            Timeout::ProxyHeader => f.write_str("PROXY header timed out"),
            Timeout::Recv => f.write_str("receive timed out"),
            Timeout::Send { sent, unsent } => write!(
                f,
                "send timed out after {sent} bytes, {} unsent",
                unsent.len()
            ),
            Timeout::Idle => f.write_str("idle connection timed out"),
        }
    }
}
