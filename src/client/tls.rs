//! TLS for client connections: [`TlsConfig`], connecting over TLS and
//! upgrading a plain connection (STARTTLS), with the platform's library
//! (native-tls, feature `tls`) or a rustls configuration (feature
//! `rustls`, its stream in `rustls.rs`); never the server's transports.

use std::fmt;
use std::io::{self, IoSlice};
#[cfg(feature = "tls")]
use std::io::{Read, Write};
#[cfg(feature = "rustls")]
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use native_tls::{Certificate, HandshakeError, TlsConnector};

use super::connection::{Link, TcpSocket};
use super::error::ClientError;
#[cfg(feature = "rustls")]
use super::rustls::{self as with_rustls, RustlsStream};
use super::Client;
#[cfg(feature = "tls")]
use crate::sys::{self, Wait};
use crate::timeout::Timeout;

/// How a client connection speaks TLS: which roots to trust, which name
/// to check, which protocols to offer with ALPN.
///
/// Used by [`Options::tls`](super::Options::tls) to connect over TLS, and by
/// [`Client::upgrade_tls`] to upgrade a plain connection. The server's
/// name is sent with SNI and checked against its certificate; it is the
/// connection's host unless [`domain`](TlsConfig::domain) says otherwise.
///
/// # Backends
///
/// - **native-tls** (feature `tls`, on by default): [`TlsConfig::new`] and
///   its options (roots, ALPN, the `danger_*` switches), or a
///   `native_tls::TlsConnector` built elsewhere (with a client certificate,
///   say), with `From`.
/// - **rustls** (feature `rustls`): an `Arc<rustls::ClientConfig>` built
///   elsewhere, with `From`: its roots and verifier, client certificate,
///   ALPN protocols, versions and crypto provider. No OpenSSL.
///
/// A connector or a `ClientConfig` is used as it is: only
/// [`domain`](TlsConfig::domain) and
/// [`handshake_timeout`](TlsConfig::handshake_timeout) apply on top, and
/// the native-tls options are ignored. Either way the connection works
/// the same: [`send`](Client::send) and
/// [`recv`](Client::recv) with their timeouts, active mode,
/// [`shutdown`](Client::shutdown) with a close notification, and
/// [`alpn_protocol`](Client::alpn_protocol).
///
/// # Examples
///
/// ```no_run
/// # #[cfg(feature = "tls")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use atoll::client::{Options, TlsConfig};
///
/// let pem = std::fs::read("ca.pem")?;
/// let tls = TlsConfig::new()
///     .add_root_certificates_pem(&pem)?
///     .alpn_protocols(&["h2", "http/1.1"]);
/// let conn = Options::new("internal.example", 443).tls(Some(tls)).connect()?;
/// println!("ALPN chose {:?}", conn.alpn_protocol());
/// # Ok(()) }
/// # #[cfg(not(feature = "tls"))]
/// # fn main() {}
/// ```
#[derive(Clone)]
#[must_use = "a TLS configuration does nothing until a connection uses it"]
pub struct TlsConfig {
    backend: Backend,
    domain: Option<String>,
    handshake_timeout: Option<Duration>,
}

/// The library a [`TlsConfig`] speaks TLS with, and its settings.
#[derive(Clone)]
enum Backend {
    /// native-tls, with a connector built from these options for each
    /// handshake.
    #[cfg(feature = "tls")]
    Native(NativeOptions),
    /// native-tls, with a connector given whole.
    #[cfg(feature = "tls")]
    Connector(TlsConnector),
    /// rustls, with a configuration given whole.
    #[cfg(feature = "rustls")]
    Rustls(Arc<::rustls::ClientConfig>),
}

/// The options [`TlsConfig::new`] builds a native-tls connector from.
#[cfg(feature = "tls")]
#[derive(Clone)]
struct NativeOptions {
    roots: Vec<Certificate>,
    built_in_roots: bool,
    alpn: Vec<String>,
    accept_invalid_certs: bool,
    accept_invalid_hostnames: bool,
}

/// The default handshake timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
impl Default for TlsConfig {
    /// The same as [`TlsConfig::new`].
    fn default() -> TlsConfig {
        TlsConfig::with_backend(Backend::Native(NativeOptions {
            roots: Vec::new(),
            built_in_roots: true,
            alpn: Vec::new(),
            accept_invalid_certs: false,
            accept_invalid_hostnames: false,
        }))
    }
}

#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
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
        TlsConfig::with_backend(Backend::Connector(connector))
    }
}

#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
impl From<Arc<::rustls::ClientConfig>> for TlsConfig {
    /// Connects with rustls and a configuration built elsewhere, used as
    /// it is: its roots and certificate verifier, client certificate,
    /// ALPN protocols, protocol versions and crypto provider. The name and
    /// the handshake timeout are still this configuration's (see
    /// [`TlsConfig`]).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use atoll::client::{Options, TlsConfig};
    /// use rustls::pki_types::pem::PemObject;
    /// use rustls::pki_types::CertificateDer;
    ///
    /// let mut roots = rustls::RootCertStore::empty();
    /// for cert in CertificateDer::pem_file_iter("ca.pem")? {
    ///     roots.add(cert?)?;
    /// }
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let mut config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// config.alpn_protocols = vec![b"h2".to_vec()];
    /// let tls = TlsConfig::from(Arc::new(config));
    /// let conn = Options::new("internal.example", 443).tls(Some(tls)).connect()?;
    /// assert!(conn.is_tls());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn from(config: Arc<::rustls::ClientConfig>) -> TlsConfig {
        TlsConfig::with_backend(Backend::Rustls(config))
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TlsConfig");
        match &self.backend {
            #[cfg(feature = "tls")]
            Backend::Native(o) => d
                .field("roots", &o.roots.len())
                .field("built_in_roots", &o.built_in_roots)
                .field("alpn", &o.alpn)
                .field("accept_invalid_certs", &o.accept_invalid_certs)
                .field("accept_invalid_hostnames", &o.accept_invalid_hostnames),
            #[cfg(feature = "tls")]
            Backend::Connector(_) => d.field("connector", &"native_tls::TlsConnector"),
            #[cfg(feature = "rustls")]
            Backend::Rustls(_) => d.field("connector", &"rustls::ClientConfig"),
        };
        d.field("domain", &self.domain)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl TlsConfig {
    fn with_backend(backend: Backend) -> TlsConfig {
        TlsConfig {
            backend,
            domain: None,
            handshake_timeout: Some(HANDSHAKE_TIMEOUT),
        }
    }

    /// A native-tls configuration with every option at its default: the
    /// system's roots, the connection's host as the name, no ALPN.
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new();
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn new() -> TlsConfig {
        TlsConfig::default()
    }

    /// The native-tls options of a configuration made by
    /// [`new`](TlsConfig::new); `None` for one given whole.
    #[cfg(feature = "tls")]
    fn native(&mut self) -> Option<&mut NativeOptions> {
        match &mut self.backend {
            Backend::Native(options) => Some(options),
            _ => None,
        }
    }

    /// Also trusts the certificates of a PEM file (one or more `BEGIN
    /// CERTIFICATE` blocks). Fails with [`ClientError::Tls`] if none can be
    /// parsed. Default: no extra roots.
    ///
    /// ```
    /// use atoll::client::{ClientError, TlsConfig};
    ///
    /// let err = TlsConfig::new().add_root_certificates_pem(b"not a certificate").unwrap_err();
    /// assert!(matches!(err, ClientError::Tls(_)));
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<TlsConfig, ClientError> {
        let certs = Certificate::stack_from_pem(pem).map_err(native_error)?;
        if certs.is_empty() {
            return Err(ClientError::Tls("no certificate in the PEM data".into()));
        }
        if let Some(native) = self.native() {
            native.roots.extend(certs);
        }
        Ok(self)
    }

    /// Also trusts one DER-encoded certificate. Fails with [`ClientError::Tls`] if
    /// it cannot be parsed. Default: no extra roots.
    ///
    /// ```
    /// let err = atoll::client::TlsConfig::new().add_root_certificate_der(&[0x30, 0x00]);
    /// assert!(err.is_err());
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn add_root_certificate_der(mut self, der: &[u8]) -> Result<TlsConfig, ClientError> {
        let cert = Certificate::from_der(der).map_err(native_error)?;
        if let Some(native) = self.native() {
            native.roots.push(cert);
        }
        Ok(self)
    }

    /// Whether to trust the system's root certificates as well as the added
    /// ones. Default is `true`.
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new().built_in_roots(false);
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn built_in_roots(mut self, enabled: bool) -> TlsConfig {
        if let Some(native) = self.native() {
            native.built_in_roots = enabled;
        }
        self
    }

    /// The protocols to offer with ALPN, most preferred first; the server's
    /// choice is [`Client::alpn_protocol`]. Default: none (no ALPN).
    /// With rustls, the `ClientConfig`'s `alpn_protocols` say it instead.
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new().alpn_protocols(&["h2", "http/1.1"]);
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn alpn_protocols(mut self, protocols: &[&str]) -> TlsConfig {
        if let Some(native) = self.native() {
            native.alpn = protocols.iter().map(|p| p.to_string()).collect();
        }
        self
    }

    /// The server name to send with SNI and to check the certificate
    /// against. Default: the connection's host (no SNI for a literal IP
    /// address, which is checked against the certificate's IP names).
    ///
    /// ```
    /// # #[cfg(feature = "tls")] {
    /// let tls = atoll::client::TlsConfig::new().domain("api.example.com");
    /// # }
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
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> TlsConfig {
        if let Some(native) = self.native() {
            native.accept_invalid_certs = accept;
        }
        self
    }

    /// Accepts a valid certificate for another name. **Dangerous**, as
    /// [`danger_accept_invalid_certs`](TlsConfig::danger_accept_invalid_certs).
    /// Default is `false`.
    ///
    /// ```
    /// let tls = atoll::client::TlsConfig::new().danger_accept_invalid_hostnames(true);
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn danger_accept_invalid_hostnames(mut self, accept: bool) -> TlsConfig {
        if let Some(native) = self.native() {
            native.accept_invalid_hostnames = accept;
        }
        self
    }

    /// How long the handshake may take; `None` waits forever. Default is
    /// 5 s.
    ///
    /// ```
    /// # #[cfg(feature = "tls")] {
    /// use std::time::Duration;
    /// let tls = atoll::client::TlsConfig::new().handshake_timeout(Some(Duration::from_secs(2)));
    /// # }
    /// ```
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> TlsConfig {
        self.handshake_timeout = timeout;
        self
    }

    /// What runs the handshake, made before the connection is touched: a
    /// configuration that cannot be built leaves it as it was.
    fn connector(&self) -> Result<Connector, ClientError> {
        Ok(match &self.backend {
            #[cfg(feature = "tls")]
            Backend::Native(options) => Connector::Native(options.connector()?),
            #[cfg(feature = "tls")]
            Backend::Connector(connector) => Connector::Native(connector.clone()),
            #[cfg(feature = "rustls")]
            Backend::Rustls(config) => Connector::Rustls(Arc::clone(config)),
        })
    }
}

#[cfg(feature = "tls")]
impl NativeOptions {
    fn connector(&self) -> Result<TlsConnector, ClientError> {
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
        builder.build().map_err(native_error)
    }
}

#[cfg(feature = "tls")]
fn native_error(e: native_tls::Error) -> ClientError {
    ClientError::Tls(e.to_string())
}

/// A configuration ready for one handshake.
enum Connector {
    #[cfg(feature = "tls")]
    Native(TlsConnector),
    #[cfg(feature = "rustls")]
    Rustls(Arc<::rustls::ClientConfig>),
}

impl Connector {
    /// Runs the handshake over `tcp`, whose descriptor is `fd`, until
    /// `deadline`.
    fn handshake(
        &self,
        domain: &str,
        tcp: TcpSocket,
        fd: std::os::fd::RawFd,
        deadline: Option<Instant>,
    ) -> Result<TlsStream, ClientError> {
        match self {
            #[cfg(feature = "tls")]
            Connector::Native(connector) => native_handshake(connector, domain, tcp, fd, deadline)
                .map(|tls| TlsStream::Native(Box::new(tls))),
            #[cfg(feature = "rustls")]
            Connector::Rustls(config) => with_rustls::handshake(config, domain, tcp, fd, deadline)
                .map(|tls| TlsStream::Rustls(Box::new(tls))),
        }
    }
}

/// A connection's TLS stream, after the handshake. Every operation is
/// non-blocking, as [`Link`]'s are.
pub(super) enum TlsStream {
    #[cfg(feature = "tls")]
    Native(Box<native_tls::TlsStream<TcpSocket>>),
    #[cfg(feature = "rustls")]
    Rustls(Box<RustlsStream>),
}

impl TlsStream {
    /// One non-blocking read of plaintext; `Ok(0)` is the end of the
    /// stream.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            #[cfg(feature = "tls")]
            TlsStream::Native(tls) => tls.read(buf),
            #[cfg(feature = "rustls")]
            TlsStream::Rustls(tls) => tls.read(buf),
        }
    }

    /// One non-blocking write of some of `bufs`.
    pub(super) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            #[cfg(feature = "tls")]
            TlsStream::Native(tls) => tls.write_vectored(bufs),
            #[cfg(feature = "rustls")]
            TlsStream::Rustls(tls) => tls.write_vectored(bufs),
        }
    }

    /// Writes what earlier writes left in the TLS layer: `WouldBlock`
    /// while the socket cannot take it all. native-tls leaves nothing
    /// (a write it could not finish fails and is repeated).
    pub(super) fn flush(&mut self) -> io::Result<()> {
        match self {
            #[cfg(feature = "tls")]
            TlsStream::Native(_) => Ok(()),
            #[cfg(feature = "rustls")]
            TlsStream::Rustls(tls) => tls.flush(),
        }
    }

    /// Sends the close notification, best effort: the alert fits in an
    /// empty send buffer, and a peer that is gone does not need it.
    pub(super) fn close(&mut self) {
        match self {
            #[cfg(feature = "tls")]
            TlsStream::Native(tls) => {
                let _ = tls.shutdown();
            }
            #[cfg(feature = "rustls")]
            TlsStream::Rustls(tls) => tls.close(),
        }
    }

    /// The TCP socket underneath.
    pub(super) fn tcp(&self) -> &TcpSocket {
        match self {
            #[cfg(feature = "tls")]
            TlsStream::Native(tls) => tls.get_ref(),
            #[cfg(feature = "rustls")]
            TlsStream::Rustls(tls) => tls.tcp(),
        }
    }

    /// The protocol the server chose with ALPN.
    fn alpn_protocol(&self) -> Option<Vec<u8>> {
        match self {
            #[cfg(feature = "tls")]
            TlsStream::Native(tls) => tls.negotiated_alpn().ok().flatten(),
            #[cfg(feature = "rustls")]
            TlsStream::Rustls(tls) => tls.alpn_protocol(),
        }
    }
}

#[cfg_attr(docsrs, doc(cfg(any(feature = "tls", feature = "rustls"))))]
impl Client {
    /// Upgrades a plain connection to TLS in place (STARTTLS): runs the
    /// handshake over it, after which every method works as before, over
    /// TLS. The id stays the same.
    ///
    /// Fails with [`ClientError::Armed`] while armed, [`ClientError::Closed`] after
    /// [`shutdown`](Client::shutdown), [`ClientError::Tls`] if the connection
    /// already runs over TLS or the handshake fails, and
    /// [`ClientError::Timeout`]`(`[`Timeout::Handshake`]`)` after the
    /// [`handshake_timeout`](TlsConfig::handshake_timeout). A failed
    /// handshake leaves the connection closed. Bytes already received and
    /// not yet read would belong to the plain protocol: the upgrade fails
    /// with [`ClientError::Tls`] rather than lose them.
    ///
    /// ```no_run
    /// # #[cfg(feature = "tls")]
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use atoll::client::{self, TlsConfig};
    ///
    /// let mut conn = client::connect("mail.example.com", 587)?;
    /// conn.recv(Some(Duration::from_secs(5)))?; // the greeting
    /// conn.send(b"STARTTLS\r\n")?;
    /// conn.recv(Some(Duration::from_secs(5)))?; // "220 ready"
    /// conn.upgrade_tls(&TlsConfig::new())?;
    /// assert!(conn.is_tls());
    /// # Ok(()) }
    /// # #[cfg(not(feature = "tls"))]
    /// # fn main() {}
    /// ```
    pub fn upgrade_tls(&mut self, config: &TlsConfig) -> Result<(), ClientError> {
        if self.is_armed() {
            return Err(ClientError::Armed);
        }
        if self.has_unread() {
            return Err(ClientError::Tls(
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
            match std::mem::replace(&mut *stream, Link::Closed) {
                Link::Plain(tcp) => tcp,
                Link::Closed => return Err(ClientError::Closed),
                tls @ Link::Tls(_) => {
                    *stream = tls;
                    return Err(ClientError::Tls(
                        "the connection already runs over TLS".into(),
                    ));
                }
            }
        };
        let deadline = config.handshake_timeout.map(|t| Instant::now() + t);
        let tls = connector.handshake(&domain, tcp, self.fd(), deadline)?;
        *self.stream().lock() = Link::Tls(tls);
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
            Link::Tls(tls) => tls.alpn_protocol(),
            _ => None,
        }
    }
}

/// Runs a native-tls client handshake over a non-blocking socket, waiting
/// for the server's messages until `deadline`. The client's own handshake
/// messages are small enough for an empty send buffer, so only reads ever
/// wait.
#[cfg(feature = "tls")]
fn native_handshake(
    connector: &TlsConnector,
    domain: &str,
    tcp: TcpSocket,
    fd: std::os::fd::RawFd,
    deadline: Option<Instant>,
) -> Result<native_tls::TlsStream<TcpSocket>, ClientError> {
    let mut result = connector.connect(domain, tcp);
    loop {
        match result {
            Ok(tls) => return Ok(tls),
            Err(HandshakeError::Failure(e)) => return Err(native_error(e)),
            Err(HandshakeError::WouldBlock(mid)) => {
                // The descriptor belongs to the stream inside `mid`, alive
                // across the wait.
                if !sys::wait_fd(fd, Wait::Read, deadline)? {
                    return Err(ClientError::Timeout(Timeout::Handshake));
                }
                result = mid.handshake();
            }
        }
    }
}
