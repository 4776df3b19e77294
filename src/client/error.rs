//! [`ClientError`] and [`ConnectError`]: what can go wrong on a client
//! connection; the server's error is another type, and only [`Timeout`] is
//! shared.

use std::fmt;
use std::io;

use crate::timeout::Timeout;

/// Declares [`ClientError`] with its POSIX cases, each with its `libc` code and
/// a short description, so that the variant list, the code table and the
/// descriptions cannot drift apart.
macro_rules! client_error {
    ($( $(#[$cfg:meta])* $variant:ident = $code:ident, $desc:literal; )*) => {
        /// Everything that can go wrong on a client [`Client`](super::Client),
        /// as one flat enum.
        ///
        /// Beside [`Closed`](ClientError::Closed), [`Timeout`](ClientError::Timeout) (of
        /// the [`Timeout`] kind that says which wait ran out),
        /// [`Nxdomain`](ClientError::Nxdomain), [`Exbadport`](ClientError::Exbadport) (a
        /// port number out of range) and [`Exbadseq`](ClientError::Exbadseq) (calls
        /// in an order the connection cannot take) there is one variant per
        /// POSIX code a socket call can return, on every platform (a code the
        /// platform lacks, such as `ENOPKG` off Linux, is never produced
        /// there, and its `raw_os_error` is `None`), named after it, so
        /// `ClientError::Econnrefused` is `ECONNREFUSED`. `Display` gives a short
        /// description ("connection refused").
        ///
        /// # Converting from `std::io::Error`
        ///
        /// `From<io::Error>` looks at the raw OS code first, then at the
        /// [`io::ErrorKind`] of errors that carry no code, and keeps anything
        /// else in [`ClientError::Other`], so no error ever fails to convert. Where
        /// two names share one code on a platform (`EAGAIN` and
        /// `EWOULDBLOCK`, `EDEADLK` and `EDEADLOCK`, `ENOTSUP` and
        /// `EOPNOTSUPP` on Linux), one is returned:
        /// `Ewouldblock`, `Edeadlk`, `Enotsup`. An `io::Error` made from an
        /// `ClientError` (as the [`Read`](std::io::Read) and
        /// [`Write`](std::io::Write) impls do) converts back to the same
        /// `ClientError`.
        ///
        /// The enum is `#[non_exhaustive]`: match with a wildcard arm.
        ///
        /// # Examples
        ///
        /// ```
        /// use atoll::client::ClientError;
        ///
        /// let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        /// assert_eq!(ClientError::from(refused), ClientError::Econnrefused);
        /// assert_eq!(ClientError::Econnrefused.to_string(), "connection refused");
        ///
        /// let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        /// assert!(ClientError::from(eof).is_closed());
        /// ```
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum ClientError {
            /// The connection is closed: the peer closed it, or it was shut
            /// down locally with [`shutdown`](super::Client::shutdown).
            Closed,
            /// A wait ran out of time; the [`Timeout`] says which: connecting
            /// ([`Timeout::Connect`]), name resolution ([`Timeout::Resolve`]),
            /// the TLS handshake ([`Timeout::Handshake`]), a receive
            /// ([`Timeout::Recv`]) or a send ([`Timeout::Send`], with what
            /// went out and the rest).
            Timeout(Timeout),
            /// No such domain: the name does not resolve, or has no address
            /// of the address family that was tried.
            Nxdomain,
            /// The connection is armed for active mode
            /// ([`arm`](super::Client::arm)), so it cannot be read
            /// directly until its message has been delivered or it is
            /// disarmed.
            Armed,
            /// `exbadport` of mug's list: Erlang's "invalid port state", an
            /// error of the Erlang port driver with no POSIX code. atoll
            /// never returns it; it exists so that code written against
            /// mug's list matches it unchanged.
            Exbadport,
            /// `exbadseq` of mug's list: Erlang's "bad command sequence",
            /// like [`Exbadport`](ClientError::Exbadport) never returned here.
            Exbadseq,
            $(
                #[doc = concat!("`", stringify!($code), "`: ", $desc, ".")]
                $variant,
            )*
            /// The TLS layer failed: a handshake that was refused, a
            /// certificate that did not verify, a corrupt record. The text
            /// is the TLS library's.
            Tls(String),
            /// Name resolution failed for another reason than "no such
            /// name": the resolver answered "try again", or could not be
            /// reached. The text is the resolver's.
            Resolve(String),
            /// An error this enum has no case for: an OS code outside the
            /// list, or an `io::Error` without a code whose kind maps to no
            /// case.
            Other {
                /// The kind of the original `io::Error`.
                kind: io::ErrorKind,
                /// The raw OS code, if it had one.
                code: Option<i32>,
                /// The original error's text.
                message: String,
            },
        }

        impl ClientError {
            /// The case for a raw OS error code (an `errno`), if the list
            /// has one.
            ///
            /// ```
            /// use atoll::client::ClientError;
            ///
            /// assert_eq!(ClientError::from_raw_os_error(libc::EPIPE), Some(ClientError::Epipe));
            /// assert_eq!(ClientError::from_raw_os_error(0), None);
            /// ```
            pub fn from_raw_os_error(code: i32) -> Option<ClientError> {
                $(
                    $(#[$cfg])*
                    {
                        if code == libc::$code {
                            return Some(ClientError::$variant);
                        }
                    }
                )*
                None
            }

            /// The raw OS error code of this error, for the POSIX cases and
            /// [`ClientError::Other`] errors that had one.
            ///
            /// ```
            /// use atoll::client::ClientError;
            ///
            /// assert_eq!(ClientError::Econnreset.raw_os_error(), Some(libc::ECONNRESET));
            /// assert_eq!(ClientError::Closed.raw_os_error(), None);
            /// ```
            pub fn raw_os_error(&self) -> Option<i32> {
                match self {
                    $(
                        ClientError::$variant => {
                            // Shadowed below where the platform has the code.
                            #[allow(unused_variables)]
                            let code: Option<i32> = None;
                            $(#[$cfg])*
                            let code = Some(libc::$code);
                            code
                        }
                    )*
                    ClientError::Other { code, .. } => *code,
                    _ => None,
                }
            }

            fn description(&self) -> Option<&'static str> {
                match self {
                    $( ClientError::$variant => Some($desc), )*
                    _ => None,
                }
            }
        }
    };
}

client_error! {
    Eaddrinuse = EADDRINUSE, "address already in use";
    Eaddrnotavail = EADDRNOTAVAIL, "cannot assign requested address";
    Eafnosupport = EAFNOSUPPORT, "address family not supported";
    Ealready = EALREADY, "operation already in progress";
    Econnaborted = ECONNABORTED, "connection aborted";
    Econnrefused = ECONNREFUSED, "connection refused";
    Econnreset = ECONNRESET, "connection reset by peer";
    Edestaddrreq = EDESTADDRREQ, "destination address required";
    Ehostdown = EHOSTDOWN, "host is down";
    Ehostunreach = EHOSTUNREACH, "no route to host";
    Einprogress = EINPROGRESS, "operation in progress";
    Eisconn = EISCONN, "socket is already connected";
    Emsgsize = EMSGSIZE, "message too long";
    Enetdown = ENETDOWN, "network is down";
    Enetunreach = ENETUNREACH, "network is unreachable";
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Enopkg = ENOPKG, "package not installed";
    Enoprotoopt = ENOPROTOOPT, "protocol not available";
    Enotconn = ENOTCONN, "socket is not connected";
    Enotty = ENOTTY, "inappropriate ioctl for device";
    Enotsock = ENOTSOCK, "not a socket";
    Eproto = EPROTO, "protocol error";
    Eprotonosupport = EPROTONOSUPPORT, "protocol not supported";
    Eprototype = EPROTOTYPE, "wrong protocol type for socket";
    Esocktnosupport = ESOCKTNOSUPPORT, "socket type not supported";
    Etimedout = ETIMEDOUT, "connection timed out";
    Ewouldblock = EWOULDBLOCK, "operation would block";
    Eacces = EACCES, "permission denied";
    Eagain = EAGAIN, "resource temporarily unavailable";
    Ebadf = EBADF, "bad file descriptor";
    Ebadmsg = EBADMSG, "bad message";
    Ebusy = EBUSY, "device or resource busy";
    Edeadlk = EDEADLK, "resource deadlock avoided";
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "solaris",
        target_os = "illumos"
    ))]
    Edeadlock = EDEADLOCK, "resource deadlock avoided";
    Edquot = EDQUOT, "disk quota exceeded";
    Eexist = EEXIST, "file exists";
    Efault = EFAULT, "bad address";
    Efbig = EFBIG, "file too large";
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    Eftype = EFTYPE, "inappropriate file type or format";
    Eintr = EINTR, "interrupted system call";
    Einval = EINVAL, "invalid argument";
    Eio = EIO, "input/output error";
    Eisdir = EISDIR, "is a directory";
    Eloop = ELOOP, "too many levels of symbolic links";
    Emfile = EMFILE, "too many open files";
    Emlink = EMLINK, "too many links";
    Emultihop = EMULTIHOP, "multihop attempted";
    Enametoolong = ENAMETOOLONG, "file name too long";
    Enfile = ENFILE, "too many open files in system";
    Enobufs = ENOBUFS, "no buffer space available";
    Enodev = ENODEV, "no such device";
    Enolck = ENOLCK, "no locks available";
    Enolink = ENOLINK, "link has been severed";
    Enoent = ENOENT, "no such file or directory";
    Enomem = ENOMEM, "cannot allocate memory";
    Enospc = ENOSPC, "no space left on device";
    Enosr = ENOSR, "out of streams resources";
    Enostr = ENOSTR, "device not a stream";
    Enosys = ENOSYS, "function not implemented";
    Enotblk = ENOTBLK, "block device required";
    Enotdir = ENOTDIR, "not a directory";
    Enotsup = ENOTSUP, "operation not supported";
    Enxio = ENXIO, "no such device or address";
    Eopnotsupp = EOPNOTSUPP, "operation not supported on socket";
    Eoverflow = EOVERFLOW, "value too large for defined data type";
    Eperm = EPERM, "operation not permitted";
    Epipe = EPIPE, "broken pipe";
    Erange = ERANGE, "numerical result out of range";
    Erofs = EROFS, "read-only file system";
    Espipe = ESPIPE, "illegal seek";
    Esrch = ESRCH, "no such process";
    Estale = ESTALE, "stale file handle";
    Etxtbsy = ETXTBSY, "text file busy";
    Exdev = EXDEV, "invalid cross-device link";
}

impl ClientError {
    /// Whether this is [`ClientError::Closed`].
    ///
    /// ```
    /// assert!(atoll::client::ClientError::Closed.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, ClientError::Closed)
    }

    /// Whether this is an [`ClientError::Timeout`], of any kind.
    ///
    /// ```
    /// use atoll::client::{ClientError, Timeout};
    ///
    /// assert!(ClientError::Timeout(Timeout::Connect).is_timeout());
    /// assert!(!ClientError::Etimedout.is_timeout()); // the kernel's, not a timeout of atoll's
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Timeout(_))
    }

    /// The [`io::ErrorKind`] this error converts to.
    ///
    /// ```
    /// use atoll::client::{ClientError, Timeout};
    /// use std::io::ErrorKind;
    ///
    /// assert_eq!(ClientError::Econnrefused.kind(), ErrorKind::ConnectionRefused);
    /// assert_eq!(ClientError::Timeout(Timeout::Recv).kind(), ErrorKind::TimedOut);
    /// ```
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            ClientError::Closed => io::ErrorKind::NotConnected,
            ClientError::Timeout(_) => io::ErrorKind::TimedOut,
            ClientError::Nxdomain => io::ErrorKind::NotFound,
            ClientError::Armed
            | ClientError::Resolve(_)
            | ClientError::Exbadport
            | ClientError::Exbadseq => io::ErrorKind::Other,
            ClientError::Tls(_) => io::ErrorKind::InvalidData,
            ClientError::Other { kind, .. } => *kind,
            posix => posix.raw_os_error().map_or(io::ErrorKind::Other, |c| {
                io::Error::from_raw_os_error(c).kind()
            }),
        }
    }

    /// The case for an `io::Error` that has no raw OS code, by its kind.
    fn from_kind(kind: io::ErrorKind) -> Option<ClientError> {
        use io::ErrorKind as K;
        Some(match kind {
            K::NotFound => ClientError::Enoent,
            K::PermissionDenied => ClientError::Eacces,
            K::ConnectionRefused => ClientError::Econnrefused,
            K::ConnectionReset => ClientError::Econnreset,
            K::ConnectionAborted => ClientError::Econnaborted,
            K::NotConnected => ClientError::Enotconn,
            K::AddrInUse => ClientError::Eaddrinuse,
            K::AddrNotAvailable => ClientError::Eaddrnotavail,
            K::BrokenPipe => ClientError::Epipe,
            K::AlreadyExists => ClientError::Eexist,
            K::WouldBlock => ClientError::Ewouldblock,
            K::InvalidInput => ClientError::Einval,
            K::TimedOut => ClientError::Etimedout,
            K::Interrupted => ClientError::Eintr,
            K::Unsupported => ClientError::Enotsup,
            K::UnexpectedEof => ClientError::Closed,
            K::OutOfMemory => ClientError::Enomem,
            _ => return None,
        })
    }

    /// The error a failed connect attempt reports: a timeout from
    /// the operating system is a [`Timeout::Connect`] too.
    pub(super) fn from_connect(err: io::Error) -> ClientError {
        match ClientError::from(err) {
            ClientError::Etimedout => ClientError::Timeout(Timeout::Connect),
            other => other,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(desc) = self.description() {
            return f.write_str(desc);
        }
        match self {
            ClientError::Closed => f.write_str("connection closed"),
            ClientError::Timeout(kind) => write!(f, "{kind}"),
            ClientError::Nxdomain => f.write_str("no such domain"),
            ClientError::Armed => f.write_str("connection is armed for active mode"),
            ClientError::Exbadport => f.write_str("invalid port state"),
            ClientError::Exbadseq => f.write_str("bad command sequence"),
            ClientError::Tls(msg) => write!(f, "TLS error: {msg}"),
            ClientError::Resolve(msg) => write!(f, "name resolution failed: {msg}"),
            ClientError::Other { message, .. } => f.write_str(message),
            // Every POSIX case has a description, returned above.
            _ => f.write_str("socket error"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> ClientError {
        if let Some(code) = err.raw_os_error() {
            if let Some(e) = ClientError::from_raw_os_error(code) {
                return e;
            }
        } else {
            if let Some(inner) = err.get_ref().and_then(|e| e.downcast_ref::<ClientError>()) {
                return inner.clone();
            }
            if let Some(e) = ClientError::from_kind(err.kind()) {
                return e;
            }
        }
        ClientError::Other {
            kind: err.kind(),
            code: err.raw_os_error(),
            message: err.to_string(),
        }
    }
}

impl From<ClientError> for io::Error {
    fn from(err: ClientError) -> io::Error {
        io::Error::new(err.kind(), err)
    }
}

/// Why [`connect`](super::Options::connect) failed: which address family
/// failed and why, or the TLS handshake after a TCP
/// connection was made.
///
/// A family that was allowed but has no address for the host failed with
/// [`ClientError::Nxdomain`]; an attempt that ran out of its
/// [`connect_timeout`](super::Options::connect_timeout) failed with
/// [`ClientError::Timeout`]`(`[`Timeout::Connect`]`)`.
///
/// # Examples
///
/// ```
/// use atoll::client::{ConnectError, ClientError, IpVersionPreference, Options};
///
/// // A literal IPv4 address has no IPv6 address: IPv6-only fails at once.
/// let err = Options::new("127.0.0.1", 9)
///     .ip_version_preference(IpVersionPreference::Ipv6Only)
///     .connect()
///     .unwrap_err();
/// assert_eq!(err, ConnectError::Ipv6(ClientError::Nxdomain));
/// assert_eq!(err.ipv6(), Some(&ClientError::Nxdomain));
/// assert_eq!(err.ipv4(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// Only IPv4 was tried, and it failed.
    Ipv4(ClientError),
    /// Only IPv6 was tried, and it failed.
    Ipv6(ClientError),
    /// Both families were tried and both failed.
    Both {
        /// Why IPv4 failed.
        ipv4: ClientError,
        /// Why IPv6 failed.
        ipv6: ClientError,
    },
    /// The TCP connection was made but the TLS handshake failed.
    Tls(ClientError),
}

impl ConnectError {
    /// Why IPv4 failed, if it was tried and failed.
    ///
    /// ```
    /// use atoll::client::{ConnectError, ClientError};
    ///
    /// let err = ConnectError::Both { ipv4: ClientError::Econnrefused, ipv6: ClientError::Nxdomain };
    /// assert_eq!(err.ipv4(), Some(&ClientError::Econnrefused));
    /// ```
    pub fn ipv4(&self) -> Option<&ClientError> {
        match self {
            ConnectError::Ipv4(e) | ConnectError::Both { ipv4: e, .. } => Some(e),
            _ => None,
        }
    }

    /// Why IPv6 failed, if it was tried and failed.
    ///
    /// ```
    /// use atoll::client::{ConnectError, ClientError, Timeout};
    ///
    /// let err = ConnectError::Ipv6(ClientError::Timeout(Timeout::Connect));
    /// assert_eq!(err.ipv6(), Some(&ClientError::Timeout(Timeout::Connect)));
    /// ```
    pub fn ipv6(&self) -> Option<&ClientError> {
        match self {
            ConnectError::Ipv6(e) | ConnectError::Both { ipv6: e, .. } => Some(e),
            _ => None,
        }
    }

    /// Whether every failure was a timeout.
    ///
    /// ```
    /// use atoll::client::{ConnectError, ClientError, Timeout};
    ///
    /// let timeout = ClientError::Timeout(Timeout::Connect);
    /// assert!(ConnectError::Both { ipv4: timeout.clone(), ipv6: timeout }.is_timeout());
    /// assert!(!ConnectError::Ipv4(ClientError::Econnrefused).is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        match self {
            ConnectError::Ipv4(e) | ConnectError::Ipv6(e) | ConnectError::Tls(e) => e.is_timeout(),
            ConnectError::Both { ipv4, ipv6 } => ipv4.is_timeout() && ipv6.is_timeout(),
        }
    }

    /// The error that best stands for the whole failure: the only one, or
    /// the IPv4 one of two.
    fn primary(&self) -> &ClientError {
        match self {
            ConnectError::Ipv4(e) | ConnectError::Ipv6(e) | ConnectError::Tls(e) => e,
            ConnectError::Both { ipv4, .. } => ipv4,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // One failure is the source's to print; two are both printed
            // here, as `source()` can give only one.
            ConnectError::Ipv4(_) => f.write_str("IPv4 connection failed"),
            ConnectError::Ipv6(_) => f.write_str("IPv6 connection failed"),
            ConnectError::Both { ipv4, ipv6 } => {
                write!(
                    f,
                    "IPv6 connection failed: {ipv6}; IPv4 connection failed: {ipv4}"
                )
            }
            ConnectError::Tls(_) => f.write_str("TLS handshake failed"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Ipv4(e) | ConnectError::Ipv6(e) | ConnectError::Tls(e) => Some(e),
            ConnectError::Both { .. } => None,
        }
    }
}

impl From<ConnectError> for io::Error {
    fn from(err: ConnectError) -> io::Error {
        io::Error::new(err.primary().kind(), err)
    }
}
