//! TLS for client connections, with the platform's library (native-tls):
//! [`TlsConfig`], connecting over TLS and upgrading a plain connection
//! (STARTTLS).

use std::fmt;
use std::time::{Duration, Instant};

use native_tls::{Certificate, HandshakeError, TlsConnector};

use super::connection::{Stream, Tcp};
use super::error::Error;
use super::Connection;
use crate::sys::{self, Wait};
use crate::timeout::Timeout;

/// How a client connection speaks TLS: which roots to trust, which name
/// to check, which protocols to offer with ALPN.
///
/// Used by [`Options::tls`](super::Options::tls) to connect over TLS, and by
/// [`Connection::upgrade_tls`] to upgrade a plain connection. The server's
/// name is sent with SNI and checked against its certificate; it is the
/// connection's host unless [`domain`](TlsConfig::domain) says otherwise.
///
/// # Examples
///
/// A `native_tls::TlsConnector` built elsewhere (with a client
/// certificate, say) becomes a configuration with `From`
/// (`TlsConfig::from(connector)`): the connector's roots, identity, ALPN
/// and checks are used as they are, and only
/// [`domain`](TlsConfig::domain) and
/// [`handshake_timeout`](TlsConfig::handshake_timeout) apply on top.
///
/// ```no_run
/// use atoll::client::{Options, TlsConfig};
///
/// let pem = std::fs::read("ca.pem")?;
/// let tls = TlsConfig::new()
///     .add_root_certificates_pem(&pem)?
///     .alpn_protocols(&["h2", "http/1.1"]);
/// let conn = Options::new("internal.example", 443).tls(Some(tls)).connect()?;
/// println!("ALPN chose {:?}", conn.alpn_protocol());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
#[must_use = "a TLS configuration does nothing until a connection uses it"]
pub struct TlsConfig {
    roots: Vec<Certificate>,
    built_in_roots: bool,
    alpn: Vec<String>,
    domain: Option<String>,
    accept_invalid_certs: bool,
    accept_invalid_hostnames: bool,
    handshake_timeout: Option<Duration>,
    /// A connector given whole (`From<TlsConnector>`), which the options
    /// above do not build.
    connector: Option<TlsConnector>,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            roots: Vec::new(),
            built_in_roots: true,
            alpn: Vec::new(),
            domain: None,
            accept_invalid_certs: false,
            accept_invalid_hostnames: false,
            handshake_timeout: Some(Duration::from_secs(5)),
            connector: None,
        }
    }
}

impl From<TlsConnector> for TlsConfig {
    /// Connects with a connector built elsewhere, used as it is; the
    /// name and the handshake timeout are still this configuration's
    /// (see [`TlsConfig`]), and the roots, ALPN and `danger_*` switches
    /// set here are ignored.
    ///
    /// ```no_run
    /// use atoll::client::{Options, TlsConfig};
    /// use native_tls::{Identity, TlsConnector};
    ///
    /// let me = Identity::from_pkcs8(&std::fs::read("me.pem")?, &std::fs::read("me.key")?)?;
    /// let connector = TlsConnector::builder().identity(me).build()?;
    /// let tls = TlsConfig::from(connector).domain("api.example.com");
    /// let conn = Options::new("10.0.0.7", 443).tls(Some(tls)).connect()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn from(connector: TlsConnector) -> TlsConfig {
        TlsConfig {
            connector: Some(connector),
            ..TlsConfig::default()
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("roots", &self.roots.len())
            .field("built_in_roots", &self.built_in_roots)
            .field("alpn", &self.alpn)
            .field("domain", &self.domain)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("accept_invalid_hostnames", &self.accept_invalid_hostnames)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("connector", &self.connector.is_some())
            .finish()
    }
}

impl TlsConfig {
    /// A configuration with every option at its default: the system's
    /// roots, the connection's host as the name, no ALPN.
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new();
    /// ```
    pub fn new() -> TlsConfig {
        TlsConfig::default()
    }

    /// Also trusts the certificates of a PEM file (one or more `BEGIN
    /// CERTIFICATE` blocks). Fails with [`Error::Tls`] if none can be
    /// parsed. Default: no extra roots.
    ///
    /// ```
    /// use atoll::client::{Error, TlsConfig};
    ///
    /// let err = TlsConfig::new().add_root_certificates_pem(b"not a certificate").unwrap_err();
    /// assert!(matches!(err, Error::Tls(_)));
    /// ```
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<TlsConfig, Error> {
        let certs = Certificate::stack_from_pem(pem).map_err(tls_error)?;
        if certs.is_empty() {
            return Err(Error::Tls("no certificate in the PEM data".into()));
        }
        self.roots.extend(certs);
        Ok(self)
    }

    /// Also trusts one DER-encoded certificate. Fails with [`Error::Tls`] if
    /// it cannot be parsed. Default: no extra roots.
    ///
    /// ```
    /// let err = atoll::client::TlsConfig::new().add_root_certificate_der(&[0x30, 0x00]);
    /// assert!(err.is_err());
    /// ```
    pub fn add_root_certificate_der(mut self, der: &[u8]) -> Result<TlsConfig, Error> {
        self.roots
            .push(Certificate::from_der(der).map_err(tls_error)?);
        Ok(self)
    }

    /// Whether to trust the system's root certificates as well as the added
    /// ones. Default is `true`.
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new().built_in_roots(false);
    /// ```
    pub fn built_in_roots(mut self, enabled: bool) -> TlsConfig {
        self.built_in_roots = enabled;
        self
    }

    /// The protocols to offer with ALPN, most preferred first; the server's
    /// choice is [`Connection::alpn_protocol`]. Default: none (no ALPN).
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new().alpn_protocols(&["h2", "http/1.1"]);
    /// ```
    pub fn alpn_protocols(mut self, protocols: &[&str]) -> TlsConfig {
        self.alpn = protocols.iter().map(|p| p.to_string()).collect();
        self
    }

    /// The server name to send with SNI and to check the certificate
    /// against. Default: the connection's host (no SNI for a literal IP
    /// address, which is checked against the certificate's IP names).
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new().domain("api.example.com");
    /// ```
    pub fn domain(mut self, name: impl Into<String>) -> TlsConfig {
        self.domain = Some(name.into());
        self
    }

    /// Accepts any certificate, valid or not. **Dangerous**: anyone on the
    /// path can then read and change the traffic; for tests only. Default
    /// is `false`.
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new().danger_accept_invalid_certs(true);
    /// ```
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> TlsConfig {
        self.accept_invalid_certs = accept;
        self
    }

    /// Accepts a valid certificate for another name. **Dangerous**, as
    /// [`danger_accept_invalid_certs`](TlsConfig::danger_accept_invalid_certs).
    /// Default is `false`.
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new().danger_accept_invalid_hostnames(true);
    /// ```
    pub fn danger_accept_invalid_hostnames(mut self, accept: bool) -> TlsConfig {
        self.accept_invalid_hostnames = accept;
        self
    }

    /// How long the handshake may take; `None` waits forever. Default is
    /// 5 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// let tls = atoll::client::TlsConfig::new().handshake_timeout(Some(Duration::from_secs(2)));
    /// ```
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> TlsConfig {
        self.handshake_timeout = timeout;
        self
    }

    fn connector(&self) -> Result<TlsConnector, Error> {
        if let Some(connector) = &self.connector {
            return Ok(connector.clone());
        }
        let mut builder = TlsConnector::builder();
        for root in &self.roots {
            builder.add_root_certificate(root.clone());
        }
        let alpn: Vec<&str> = self.alpn.iter().map(String::as_str).collect();
        builder
            .disable_built_in_roots(!self.built_in_roots)
            .request_alpns(&alpn)
            .danger_accept_invalid_certs(self.accept_invalid_certs)
            .danger_accept_invalid_hostnames(self.accept_invalid_hostnames);
        builder.build().map_err(tls_error)
    }
}

fn tls_error(e: native_tls::Error) -> Error {
    Error::Tls(e.to_string())
}

#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
impl Connection {
    /// Upgrades a plain connection to TLS in place (STARTTLS): runs the
    /// handshake over it, after which every method works as before, over
    /// TLS. The id stays the same.
    ///
    /// Fails with [`Error::Armed`] while armed, [`Error::Closed`] after
    /// [`shutdown`](Connection::shutdown), [`Error::Tls`] if the connection
    /// already runs over TLS or the handshake fails, and
    /// [`Error::Timeout`]`(`[`Timeout::Handshake`]`)` after the
    /// [`handshake_timeout`](TlsConfig::handshake_timeout). A failed
    /// handshake leaves the connection closed. Bytes already received and
    /// not yet read would belong to the plain protocol: the upgrade fails
    /// with [`Error::Tls`] rather than lose them.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use atoll::client::{self, TlsConfig};
    ///
    /// let mut conn = client::connect("mail.example.com", 587)?;
    /// conn.recv(Some(Duration::from_secs(5)))?; // the greeting
    /// conn.send(b"STARTTLS\r\n")?;
    /// conn.recv(Some(Duration::from_secs(5)))?; // "220 ready"
    /// conn.upgrade_tls(&TlsConfig::new())?;
    /// assert!(conn.is_tls());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn upgrade_tls(&mut self, config: &TlsConfig) -> Result<(), Error> {
        if self.is_armed() {
            return Err(Error::Armed);
        }
        if self.has_unread() {
            return Err(Error::Tls(
                "plain bytes received but not read before the upgrade".into(),
            ));
        }
        let connector = config.connector()?;
        let domain = match &config.domain {
            Some(d) => d.clone(),
            None => {
                let host = self.host();
                host.strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host)
                    .to_string()
            }
        };
        let tcp = {
            let mut stream = self.stream().lock();
            match std::mem::replace(&mut *stream, Stream::Closed) {
                Stream::Plain(tcp) => tcp,
                Stream::Closed => return Err(Error::Closed),
                tls @ Stream::Tls(_) => {
                    *stream = tls;
                    return Err(Error::Tls("the connection already runs over TLS".into()));
                }
            }
        };
        let deadline = config.handshake_timeout.map(|t| Instant::now() + t);
        let tls = handshake(&connector, &domain, tcp, self.fd(), deadline)?;
        *self.stream().lock() = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// The protocol the server chose with ALPN, if any.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// assert_eq!(conn.alpn_protocol(), None); // plain TCP
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        match &*self.stream().lock() {
            Stream::Tls(tls) => tls.negotiated_alpn().ok().flatten(),
            _ => None,
        }
    }
}

/// Runs a client handshake over a non-blocking socket, waiting for the
/// server's messages until `deadline`. The client's own handshake messages
/// are small enough for an empty send buffer, so only reads ever wait.
fn handshake(
    connector: &TlsConnector,
    domain: &str,
    tcp: Tcp,
    fd: std::os::fd::RawFd,
    deadline: Option<Instant>,
) -> Result<native_tls::TlsStream<Tcp>, Error> {
    let mut result = connector.connect(domain, tcp);
    loop {
        match result {
            Ok(tls) => return Ok(tls),
            Err(HandshakeError::Failure(e)) => return Err(tls_error(e)),
            Err(HandshakeError::WouldBlock(mid)) => {
                // The descriptor belongs to the stream inside `mid`, alive
                // across the wait.
                if !sys::wait_fd(fd, Wait::Read, deadline)? {
                    return Err(Error::Timeout(Timeout::Handshake));
                }
                result = mid.handshake();
            }
        }
    }
}
