//! [`Options`]: where to connect and how, every option with its default;
//! never a connection itself.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::ConnectError;
use super::establish;
use super::Client;
#[cfg(any(feature = "tls", feature = "rustls"))]
use super::TlsConfig;

/// The head start of the preferred address family in
/// [happy eyeballs](Options::happy_eyeballs) mode: RFC 8305's recommended
/// "Client Attempt Delay", 250 ms.
///
/// ```
/// assert_eq!(atoll::client::CONNECTION_ATTEMPT_DELAY.as_millis(), 250);
/// ```
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Which IP versions to try, and in which order.
///
/// IPv6 is the better choice when it works, but not every network carries
/// it, so the default tries IPv6 first and falls back to IPv4.
///
/// ```
/// use atoll::client::IpVersionPreference;
///
/// assert_eq!(IpVersionPreference::default(), IpVersionPreference::Ipv6Preferred);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IpVersionPreference {
    /// Only connect over IPv4.
    Ipv4Only,
    /// Try IPv4 first; if that does not succeed, try IPv6.
    Ipv4Preferred,
    /// Only connect over IPv6.
    Ipv6Only,
    /// Try IPv6 first; if that does not succeed, try IPv4. The default.
    #[default]
    Ipv6Preferred,
}

/// An address family, as the connect code tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl IpVersionPreference {
    /// The family to try first and the one to fall back to, if any.
    pub(super) fn families(self) -> (Family, Option<Family>) {
        match self {
            IpVersionPreference::Ipv4Only => (Family::V4, None),
            IpVersionPreference::Ipv4Preferred => (Family::V4, Some(Family::V6)),
            IpVersionPreference::Ipv6Only => (Family::V6, None),
            IpVersionPreference::Ipv6Preferred => (Family::V6, Some(Family::V4)),
        }
    }
}

/// Where to connect and how: address family order and timeouts, happy
/// eyeballs, a resolution timeout, a send timeout, TLS.
///
/// Built from a host and a port; every other option says its default. The
/// setters take and return the options by value, as the server's
/// [`Builder`](crate::Builder) does, and [`connect`](Options::connect)
/// borrows them, so one `Options` can open many connections.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use atoll::client::{IpVersionPreference, Options};
///
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let port = listener.local_addr()?.port();
/// let options = Options::new("localhost", port)
///     .connect_timeout(Some(Duration::from_millis(500)))
///     .ip_version_preference(IpVersionPreference::Ipv4Only)
///     .nodelay(true);
/// let conn = options.connect()?;
/// assert!(conn.peer_addr().is_ipv4());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "options do nothing until `connect` is called"]
pub struct Options {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) connect_timeout: Option<Duration>,
    pub(super) ip_version: IpVersionPreference,
    pub(super) happy_eyeballs: bool,
    pub(super) resolve_timeout: Option<Duration>,
    pub(super) nodelay: bool,
    pub(super) send_timeout: Option<Duration>,
    pub(super) addrs: Option<Vec<SocketAddr>>,
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub(super) tls: Option<TlsConfig>,
}

impl Options {
    /// Options for connecting to `host` (a name, or a literal IPv4 or IPv6
    /// address, with or without brackets) on `port`, every other option at
    /// its default.
    ///
    /// ```
    /// let options = atoll::client::Options::new("example.com", 80);
    /// assert_eq!(options.host(), "example.com");
    /// assert_eq!(options.port(), 80);
    /// ```
    pub fn new(host: impl Into<String>, port: u16) -> Options {
        Options {
            host: host.into(),
            port,
            connect_timeout: Some(Duration::from_secs(1)),
            ip_version: IpVersionPreference::default(),
            happy_eyeballs: false,
            resolve_timeout: None,
            nodelay: false,
            send_timeout: None,
            addrs: None,
            #[cfg(any(feature = "tls", feature = "rustls"))]
            tls: None,
        }
    }

    /// The host to connect to.
    ///
    /// ```
    /// assert_eq!(atoll::client::Options::new("::1", 80).host(), "::1");
    /// ```
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to.
    ///
    /// ```
    /// assert_eq!(atoll::client::Options::new("::1", 80).port(), 80);
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How long one address family may take to connect; `None` leaves it to
    /// the operating system (minutes on Linux).
    ///
    /// The timeout is per family: when IPv6 and then IPv4 are
    /// tried, connecting can take twice this long. In
    /// [happy eyeballs](Options::happy_eyeballs) mode it bounds each attempt
    /// from the moment that attempt starts. A timeout reported by the
    /// operating system is a [`Timeout::Connect`](super::Timeout::Connect) too,
    /// even before this one is reached. Default is 1 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = atoll::client::Options::new("::1", 80).connect_timeout(Some(Duration::from_millis(200)));
    /// ```
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Options {
        self.connect_timeout = timeout;
        self
    }

    /// Which IP versions to try, and in which order. Default is
    /// [`IpVersionPreference::Ipv6Preferred`].
    ///
    /// ```
    /// use atoll::client::{IpVersionPreference, Options};
    /// let options = Options::new("localhost", 80).ip_version_preference(IpVersionPreference::Ipv4Only);
    /// ```
    pub fn ip_version_preference(mut self, preference: IpVersionPreference) -> Options {
        self.ip_version = preference;
        self
    }

    /// Races the address families (RFC 8305, "happy eyeballs") instead of
    /// trying them one after the other.
    ///
    /// The addresses are interleaved, preferred family first; each attempt
    /// starts when the one before it fails or after
    /// [`CONNECTION_ATTEMPT_DELAY`] (250 ms), whichever comes first; the
    /// first connection made wins and the others are dropped. With a
    /// broken IPv6 path this connects over IPv4 after 250 ms rather than
    /// after the whole IPv6 [`connect_timeout`](Options::connect_timeout).
    /// With an `...Only` preference, only the addresses of that family are
    /// raced. Default is `false`: one family after the other.
    ///
    /// ```
    /// let options = atoll::client::Options::new("localhost", 80).happy_eyeballs(true);
    /// ```
    pub fn happy_eyeballs(mut self, enabled: bool) -> Options {
        self.happy_eyeballs = enabled;
        self
    }

    /// How long name resolution may take. With a timeout the lookup runs in
    /// a helper thread, which is left to finish on its own when the timeout
    /// passes; with `None` it runs in the calling thread, bounded only by
    /// the system resolver's own timeouts. A lookup that times out fails
    /// both families with [`Timeout::Resolve`](super::Timeout::Resolve).
    /// Literal addresses are never looked up. Default is `None`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = atoll::client::Options::new("localhost", 80).resolve_timeout(Some(Duration::from_secs(2)));
    /// ```
    pub fn resolve_timeout(mut self, timeout: Option<Duration>) -> Options {
        self.resolve_timeout = timeout;
        self
    }

    /// Sets `TCP_NODELAY` on the connection, so that small sends go out at
    /// once instead of waiting to be coalesced (Nagle's algorithm). Default
    /// is `false`, the operating system's default.
    ///
    /// ```
    /// let options = atoll::client::Options::new("localhost", 80).nodelay(true);
    /// ```
    pub fn nodelay(mut self, nodelay: bool) -> Options {
        self.nodelay = nodelay;
        self
    }

    /// How long one [`send`](Client::send) (or [`Write`](std::io::Write)
    /// call) may wait for the peer to make room; `None` waits forever. A
    /// send that times out has sent an unknown part of its bytes, so the
    /// stream should be closed. Can be changed on the connection with
    /// [`Client::set_send_timeout`]. Default is `None`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = atoll::client::Options::new("localhost", 80).send_timeout(Some(Duration::from_secs(5)));
    /// ```
    pub fn send_timeout(mut self, timeout: Option<Duration>) -> Options {
        self.send_timeout = timeout;
        self
    }

    /// Connects to these addresses instead of looking the host up. The
    /// [IP version preference](Options::ip_version_preference) still
    /// filters and orders them, and the host still names the server for
    /// TLS. Useful with a resolver of one's own, or to pin a name to known
    /// addresses. Default: look the host up.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// let addrs: [SocketAddr; 2] = ["[::1]:443".parse().unwrap(), "127.0.0.1:443".parse().unwrap()];
    /// let options = atoll::client::Options::new("localhost", 443).addrs(addrs);
    /// ```
    pub fn addrs(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Options {
        self.addrs = Some(addrs.into_iter().collect());
        self
    }

    /// Makes [`connect`](Options::connect) run a TLS handshake over the new
    /// TCP connection, with this configuration; `None` for plain TCP.
    /// Default is `None`. Needs the `tls` or the `rustls` feature (see
    /// [`TlsConfig`]).
    ///
    /// ```no_run
    /// # #[cfg(feature = "tls")]
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use atoll::client::{Options, TlsConfig};
    ///
    /// let conn = Options::new("example.com", 443).tls(Some(TlsConfig::new())).connect()?;
    /// assert!(conn.is_tls());
    /// # Ok(()) }
    /// # #[cfg(not(feature = "tls"))]
    /// # fn main() {}
    /// ```
    #[cfg(any(feature = "tls", feature = "rustls"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "tls", feature = "rustls"))))]
    pub fn tls(mut self, config: Option<TlsConfig>) -> Options {
        self.tls = config;
        self
    }

    /// Establishes a connection, in passive mode: read it
    /// with [`recv`](Client::recv), or
    /// [`arm`](Client::arm) it to have its next packet delivered as a
    /// message.
    ///
    /// Fails with the error of each address family that was tried; see
    /// [`ConnectError`].
    ///
    /// ```
    /// use atoll::client::Options;
    ///
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// # let port = listener.local_addr()?.port();
    /// let conn = Options::new("127.0.0.1", port).connect()?;
    /// assert_eq!(conn.peer_addr().port(), port);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(&self) -> Result<Client, ConnectError> {
        let (stream, peer) = establish::establish(self)?;
        // A socket that connected but cannot be set up is reported against
        // the family it connected over.
        let conn =
            Client::from_stream(stream, peer, self).map_err(|e| match Family::of(&peer) {
                Family::V4 => ConnectError::Ipv4(e),
                Family::V6 => ConnectError::Ipv6(e),
            })?;
        #[cfg(any(feature = "tls", feature = "rustls"))]
        if let Some(config) = &self.tls {
            let mut conn = conn;
            conn.upgrade_tls(config).map_err(ConnectError::Tls)?;
            return Ok(conn);
        }
        Ok(conn)
    }
}

/// Connects to `host` on `port` with the default [`Options`]: a shorthand
/// for `Options::new(host, port).connect()`.
///
/// ```
/// use atoll::client;
///
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let port = listener.local_addr()?.port();
/// let conn = client::connect("127.0.0.1", port)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect(host: &str, port: u16) -> Result<Client, ConnectError> {
    Options::new(host, port).connect()
}
