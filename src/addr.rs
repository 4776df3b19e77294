//! [`Addr`]: an IP address and port, or a Unix socket path; re-exported
//! by [`transport`](crate::transport). Knows no socket of atoll's.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Where a socket is: an IP address and port, or a Unix socket path (the
/// seeds' `{:local, path}`). The peer of a Unix connection usually has no
/// path (`Unix(None)`).
///
/// It compares equal to a [`SocketAddr`] and converts with
/// [`ToSocketAddrs`], so `TcpStream::connect(server.local_addr()?)` works.
///
/// ```
/// use std::net::SocketAddr;
/// use atoll::transport::Addr;
///
/// let addr = Addr::from("127.0.0.1:4000".parse::<SocketAddr>().unwrap());
/// assert_eq!(addr.port(), Some(4000));
/// assert_eq!(addr.to_string(), "127.0.0.1:4000");
/// assert_eq!(Addr::Unix(Some("/run/app.sock".into())).to_string(), "/run/app.sock");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix socket path; `None` for an unnamed socket.
    Unix(Option<PathBuf>),
}

impl Addr {
    /// The IP address and port, if this is one.
    ///
    /// ```
    /// let addr = atoll::transport::Addr::Unix(None);
    /// assert!(addr.inet().is_none());
    /// ```
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }

    /// The IP address, if this is one.
    ///
    /// ```
    /// let addr = atoll::transport::Addr::from("[::1]:80".parse::<std::net::SocketAddr>().unwrap());
    /// assert!(addr.ip().unwrap().is_loopback());
    /// ```
    pub fn ip(&self) -> Option<IpAddr> {
        self.inet().map(|a| a.ip())
    }

    /// The port, if this is an IP address.
    ///
    /// ```
    /// assert_eq!(atoll::transport::Addr::Unix(None).port(), None);
    /// ```
    pub fn port(&self) -> Option<u16> {
        self.inet().map(|a| a.port())
    }

    /// The Unix socket path, if this is a named Unix socket.
    ///
    /// ```
    /// let addr = atoll::transport::Addr::Unix(Some("/tmp/s".into()));
    /// assert_eq!(addr.unix_path().unwrap().to_str(), Some("/tmp/s"));
    /// ```
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Addr::Unix(p) => p.as_deref(),
            Addr::Inet(_) => None,
        }
    }

    pub(crate) fn from_sock(addr: &socket2::SockAddr) -> Addr {
        match addr.as_socket() {
            Some(inet) => Addr::Inet(inet),
            None => Addr::Unix(addr.as_pathname().map(Path::to_path_buf)),
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Addr {
        Addr::Inet(addr)
    }
}

impl PartialEq<SocketAddr> for Addr {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.inet() == Some(*other)
    }
}

impl PartialEq<SocketAddr> for &Addr {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.inet() == Some(*other)
    }
}

impl PartialEq<Addr> for SocketAddr {
    fn eq(&self, other: &Addr) -> bool {
        other == self
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => a.fmt(f),
            Addr::Unix(Some(p)) => p.display().fmt(f),
            Addr::Unix(None) => f.write_str("(unnamed unix socket)"),
        }
    }
}

impl ToSocketAddrs for Addr {
    type Iter = std::option::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        match self.inet() {
            Some(a) => Ok(Some(a).into_iter()),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self} is a Unix socket, not an IP address"),
            )),
        }
    }
}
