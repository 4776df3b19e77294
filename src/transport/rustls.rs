//! TLS with rustls: no OpenSSL, and client certificates (mutual TLS); a
//! [`Transport`](super::Transport) and its streams. Never touches a server.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::rustls::crypto::{ring, CryptoProvider};
use ::rustls::server::{
    ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni, WebPkiClientVerifier,
};
use ::rustls::sign::CertifiedKey;
use ::rustls::{version, RootCertStore, ServerConfig, ServerConnection, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{Handshake, Io, PendingHandshake, Stream, Transport};
use super::{TlsInfo, TlsVersion};
use crate::error::{BoxError, Error};
use crate::sys::{self, Wait};

/// How long one handshake step may wait for the socket to take the
/// server's handshake bytes before the handshake fails (see
/// [`Rustls`]'s notes on the handshake).
const HANDSHAKE_WRITE_WAIT: Duration = Duration::from_secs(1);

/// Whether and how a [`Rustls`] server asks clients for a certificate.
///
/// The roots are PEM certificates (one or more CA certificates, each in its
/// own `BEGIN CERTIFICATE` block); a client certificate must chain to one
/// of them. The certificate a client presented is
/// [`Socket::peer_certificate`](crate::Socket::peer_certificate).
///
/// ```no_run
/// use atoll::transport::{ClientAuth, Rustls};
///
/// let ca = std::fs::read("clients-ca.pem")?;
/// let tls = Rustls::from_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?
///     .with_client_auth(ClientAuth::Required(ca))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for (the default).
    ///
    /// ```
    /// assert_eq!(atoll::transport::ClientAuth::default(), atoll::transport::ClientAuth::None);
    /// ```
    #[default]
    None,
    /// A client may present a certificate, which must then chain to these
    /// PEM roots; a client without one is served too, anonymously.
    ///
    /// ```no_run
    /// let auth = atoll::transport::ClientAuth::Optional(std::fs::read("clients-ca.pem")?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Optional(Vec<u8>),
    /// A client must present a certificate that chains to these PEM roots;
    /// any other client fails the handshake.
    ///
    /// ```no_run
    /// let auth = atoll::transport::ClientAuth::Required(std::fs::read("clients-ca.pem")?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Required(Vec<u8>),
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::None => f.write_str("None"),
            ClientAuth::Optional(pem) => write!(f, "Optional({} bytes of PEM roots)", pem.len()),
            ClientAuth::Required(pem) => write!(f, "Required({} bytes of PEM roots)", pem.len()),
        }
    }
}

/// TLS by [rustls](https://docs.rs/rustls) (with the *ring* crypto
/// provider), feature `rustls`: the same server and socket API as
/// [`NativeTls`](super::NativeTls), plus what the platform's library cannot
/// do through `native-tls`.
///
/// Pick it over `NativeTls` for:
/// - **mutual TLS**: [`with_client_auth`](Rustls::with_client_auth) asks
///   clients for a certificate and verifies it against given roots,
///   required or optional; the certificate a client presented is
///   [`Socket::peer_certificate`](crate::Socket::peer_certificate);
/// - **a build without OpenSSL**: with `--no-default-features --features
///   rustls` nothing links to the system's TLS library;
/// - **several certificates by SNI name** on one port
///   ([`with_sni`](Rustls::with_sni)).
///
/// `NativeTls` stays the choice for PKCS#12 identities, and where the
/// system's TLS library and its configuration must be the one used.
///
/// **A `ServerConfig` built elsewhere** becomes a transport with `From`
/// (`Rustls::from(Arc<ServerConfig>)`): its certificate resolver (for
/// certificate rotation), client-certificate verifier, ALPN list and
/// protocol versions are used as they are, with no new `Transport` to
/// write. `examples/tls_reload.rs` swaps the certificate of a running
/// server that way. The `with_*` methods rebuild a configuration of
/// atoll's own, so they fail with [`Error::Config`] on one made this way.
///
/// The crypto provider of [`from_pem`](Rustls::from_pem) is the process
/// default when one is installed (`CryptoProvider::install_default`), else
/// *ring*.
///
/// Protocol versions are TLS 1.2 and 1.3 (1.3 only with
/// `with_min_version(TlsVersion::Tls13)`). With ALPN protocols set, a client that offers ALPN but none of
/// them is refused (RFC 7301's `no_application_protocol`); a client that
/// offers no ALPN is served with no protocol negotiated.
///
/// The handshake does not block a worker while it waits for the client: it
/// returns [`Handshake::Pending`] and the server resumes it on readability,
/// within its handshake timeout. Only when the socket cannot take the
/// server's own handshake bytes (its send buffer is full: a flight larger
/// than the buffer to a client that does not read) does a step wait for
/// writability, at most one second, then fail.
///
/// A client that closes the TCP connection without TLS's `close_notify`
/// alert (many do) ends the stream as a clean close does: the handler sees
/// the end of stream, not an error. Protocols that must detect a truncated
/// stream carry their own lengths, as HTTP does. Dropping a stream sends
/// `close_notify`, best effort.
///
/// ```no_run
/// use atoll::transport::{ClientAuth, Rustls};
///
/// let tls = Rustls::from_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?
///     .with_alpn(&["h2", "http/1.1"])?
///     .with_sni("api.example.com", &std::fs::read("api.pem")?, &std::fs::read("api-key.pem")?)?
///     .with_client_auth(ClientAuth::Required(std::fs::read("clients-ca.pem")?))?;
/// let builder = atoll::Server::builder().port(4443).transport(tls);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Rustls {
    /// `None` for a configuration given whole (`From<Arc<ServerConfig>>`).
    settings: Option<Settings>,
    config: Arc<ServerConfig>,
}

/// What a [`Rustls`] was configured with, to rebuild its `ServerConfig`.
#[derive(Clone)]
struct Settings {
    provider: Arc<CryptoProvider>,
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
    alpn: Vec<String>,
    client_auth: ClientAuth,
    tls13_only: bool,
}

impl fmt::Debug for Rustls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(s) = &self.settings else {
            return f
                .debug_struct("Rustls")
                .field("alpn", &self.config.alpn_protocols.len())
                .finish_non_exhaustive();
        };
        let mut names: Vec<&String> = s.by_name.keys().collect();
        names.sort();
        f.debug_struct("Rustls")
            .field("min_version", &if s.tls13_only { "1.3" } else { "1.2" })
            .field("alpn", &s.alpn)
            .field("sni", &names)
            .field("client_auth", &s.client_auth)
            .finish()
    }
}

impl Rustls {
    /// The default identity from a PEM certificate chain (the server's
    /// certificate first) and a PEM private key (PKCS#8, PKCS#1 RSA or
    /// SEC1 EC). Fails with [`Error::Config`] when either does not parse
    /// or the key does not match the certificate.
    ///
    /// ```no_run
    /// let tls = atoll::transport::Rustls::from_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Rustls, Error> {
        // The application's choice of provider (FIPS, aws-lc-rs, ...) when
        // it made one; ring, which this feature builds, otherwise.
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(ring::default_provider()));
        let default = Arc::new(certified_key(&provider, cert_chain, key)?);
        let settings = Settings {
            provider,
            default,
            by_name: HashMap::new(),
            alpn: Vec::new(),
            client_auth: ClientAuth::None,
            tls13_only: false,
        };
        let config = settings.build()?;
        Ok(Rustls {
            settings: Some(settings),
            config,
        })
    }

    /// The settings of a configuration atoll builds, to change one; an
    /// error for a `ServerConfig` given whole.
    fn settings(&mut self) -> Result<&mut Settings, Error> {
        self.settings.as_mut().ok_or_else(|| {
            Error::Config(
                "TLS: this Rustls was made from a ServerConfig: configure that instead".into(),
            )
        })
    }

    /// The application protocols offered by ALPN, in order of preference;
    /// the chosen one is [`Socket::negotiated_protocol`](crate::Socket::negotiated_protocol).
    ///
    /// ```no_run
    /// # let tls = atoll::transport::Rustls::from_pem(b"", b"")?;
    /// let tls = tls.with_alpn(&["h2", "http/1.1"])?;
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn with_alpn(mut self, protocols: &[&str]) -> Result<Rustls, Error> {
        if protocols.iter().any(|p| p.is_empty() || p.len() > 255) {
            return Err(Error::Config(
                "TLS: an ALPN protocol name has 1 to 255 bytes".into(),
            ));
        }
        let settings = self.settings()?;
        settings.alpn = protocols.iter().map(|p| p.to_string()).collect();
        self.config = settings.build()?;
        Ok(self)
    }

    /// Asks clients for a certificate, verified against the given roots:
    /// [`ClientAuth::Required`] refuses clients without a valid one,
    /// [`ClientAuth::Optional`] serves them anonymously. Fails with
    /// [`Error::Config`] when the roots hold no valid certificate.
    ///
    /// ```no_run
    /// use atoll::transport::{ClientAuth, Rustls};
    ///
    /// # let tls = Rustls::from_pem(b"", b"")?;
    /// let tls = tls.with_client_auth(ClientAuth::Optional(std::fs::read("clients-ca.pem")?))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_client_auth(mut self, auth: ClientAuth) -> Result<Rustls, Error> {
        let settings = self.settings()?;
        settings.client_auth = auth;
        self.config = settings.build()?;
        Ok(self)
    }

    /// Serves this certificate chain and key (PEM, as
    /// [`from_pem`](Rustls::from_pem)) to clients that ask for
    /// `server_name` by SNI; other clients, and clients sending no name,
    /// get the default identity. The name is a DNS name, compared without
    /// regard to case, and the certificate must be valid for it. Call it
    /// once per name.
    ///
    /// ```no_run
    /// # let tls = atoll::transport::Rustls::from_pem(b"", b"")?;
    /// let tls = tls
    ///     .with_sni("a.example.com", &std::fs::read("a.pem")?, &std::fs::read("a-key.pem")?)?
    ///     .with_sni("b.example.com", &std::fs::read("b.pem")?, &std::fs::read("b-key.pem")?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_sni(
        mut self,
        server_name: &str,
        cert_chain: &[u8],
        key: &[u8],
    ) -> Result<Rustls, Error> {
        let settings = self.settings()?;
        let certified = certified_key(&settings.provider, cert_chain, key)?;
        // Checks that the name is a DNS name and the certificate covers it.
        ResolvesServerCertUsingSni::new()
            .add(server_name, certified.clone())
            .map_err(|e| Error::Config(format!("TLS: SNI name {server_name:?}: {e}")))?;
        settings
            .by_name
            .insert(server_name.to_ascii_lowercase(), Arc::new(certified));
        self.config = settings.build()?;
        Ok(self)
    }

    /// The oldest protocol version accepted. Default is TLS 1.2.
    ///
    /// ```no_run
    /// # let tls = atoll::transport::Rustls::from_pem(b"", b"")?;
    /// let tls = tls.with_min_version(atoll::transport::TlsVersion::Tls13)?;
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn with_min_version(mut self, version: TlsVersion) -> Result<Rustls, Error> {
        let settings = self.settings()?;
        settings.tls13_only = version == TlsVersion::Tls13;
        self.config = settings.build()?;
        Ok(self)
    }
}

impl From<Arc<ServerConfig>> for Rustls {
    /// Serves with a rustls configuration built elsewhere, used as it is:
    /// its certificate resolver, client verifier, ALPN list and versions.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rustls::server::{ClientHello, ResolvesServerCert};
    /// use rustls::sign::CertifiedKey;
    ///
    /// /// Hands out whatever certificate is current: swap it to rotate.
    /// #[derive(Debug)]
    /// struct Current(std::sync::RwLock<Option<Arc<CertifiedKey>>>);
    ///
    /// impl ResolvesServerCert for Current {
    ///     fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
    ///         self.0.read().ok()?.clone()
    ///     }
    /// }
    ///
    /// let config = rustls::ServerConfig::builder_with_provider(Arc::new(
    ///     rustls::crypto::ring::default_provider(),
    /// ))
    /// .with_safe_default_protocol_versions()?
    /// .with_no_client_auth()
    /// .with_cert_resolver(Arc::new(Current(Default::default())));
    /// let tls = atoll::transport::Rustls::from(Arc::new(config));
    /// let builder = atoll::Server::builder().port(4443).transport(tls);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn from(config: Arc<ServerConfig>) -> Rustls {
        Rustls {
            settings: None,
            config,
        }
    }
}

impl Settings {
    fn build(&self) -> Result<Arc<ServerConfig>, Error> {
        let versions: &[&'static SupportedProtocolVersion] = if self.tls13_only {
            &[&version::TLS13]
        } else {
            &[&version::TLS13, &version::TLS12]
        };
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions)
            .map_err(config)?;
        let builder = match &self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional(pem) | ClientAuth::Required(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| {
                        Error::Config(format!("TLS: client certificate roots: {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        Error::Config(format!("TLS: client certificate roots: {e}"))
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                );
                let verifier = if matches!(self.client_auth, ClientAuth::Optional(_)) {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| Error::Config(format!("TLS: client certificate roots: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(Certificates {
            default: self.default.clone(),
            by_name: self.by_name.clone(),
        }));
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn config(e: ::rustls::Error) -> Error {
    Error::Config(format!("TLS: {e}"))
}

/// A certificate chain and its key, from PEM.
fn certified_key(
    provider: &CryptoProvider,
    cert_chain: &[u8],
    key: &[u8],
) -> Result<CertifiedKey, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("TLS: certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Config(
            "TLS: certificate chain: no certificate in the PEM".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| Error::Config(format!("TLS: private key: {e}")))?;
    CertifiedKey::from_der(chain, key, provider).map_err(config)
}

/// The certificate for the client's SNI name, or the default one.
#[derive(Debug)]
struct Certificates {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls gives the name in lower case already.
        let named = hello.server_name().and_then(|n| self.by_name.get(n));
        Some(named.unwrap_or(&self.default).clone())
    }
}

impl Transport for Rustls {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn is_secure(&self) -> bool {
        true
    }

    fn handshake(&self, io: Io) -> Handshake {
        match ServerConnection::new(self.config.clone()) {
            Ok(conn) => step(Tls {
                io,
                conn,
                framing: Some(Framing::default()),
            }),
            Err(e) => Handshake::Failed(Box::new(Failure(e))),
        }
    }
}

/// A rustls connection on its socket, during or after the handshake.
struct Tls {
    io: Io,
    conn: ServerConnection,
    /// During the handshake: where the socket's bytes are in the current
    /// TLS record (see [`RecordReader`]).
    framing: Option<Framing>,
}

/// The position in the TLS record being read: its 5-byte header, then its
/// body.
#[derive(Default)]
struct Framing {
    header: [u8; 5],
    header_read: usize,
    body_left: usize,
}

/// Reads from the socket no further than the end of the current TLS
/// record. A handshake reads this way so that it never takes the bytes
/// after its last record (the client's first data, often in the same
/// segment as its Finished) out of the kernel: taken into rustls's buffer
/// while a handshake runs inside a callback (STARTTLS), they would be
/// waiting where the socket's readiness no longer announces them.
struct RecordReader<'a> {
    io: &'a Io,
    framing: &'a mut Framing,
}

impl Read for RecordReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let f = &mut *self.framing;
        let want = if f.header_read < f.header.len() {
            f.header.len() - f.header_read
        } else {
            f.body_left
        };
        let want = want.min(buf.len());
        let n = self.io.read_some(&mut buf[..want])?;
        if f.header_read < f.header.len() {
            f.header[f.header_read..f.header_read + n].copy_from_slice(&buf[..n]);
            f.header_read += n;
            if f.header_read == f.header.len() {
                f.body_left = usize::from(u16::from_be_bytes([f.header[3], f.header[4]]));
            }
        } else {
            f.body_left -= n;
        }
        if f.header_read == f.header.len() && f.body_left == 0 {
            *f = Framing::default(); // the record is complete
        }
        Ok(n)
    }
}

impl Tls {
    /// Writes what rustls has for the socket until it has nothing left or
    /// the socket would block.
    fn push(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut &self.io) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads from the socket and decrypts: `Ok(0)` at the end of the TCP
    /// stream, `WouldBlock` when the socket has nothing. A TLS error sends
    /// its alert, best effort.
    fn receive(&mut self) -> Result<usize, Received> {
        let n = loop {
            let read = match &mut self.framing {
                Some(framing) => self.conn.read_tls(&mut RecordReader {
                    io: &self.io,
                    framing,
                }),
                None => self.conn.read_tls(&mut &self.io),
            };
            match read {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Received::Io(e)),
            }
        };
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.push();
            return Err(Received::Tls(e));
        }
        Ok(n)
    }

    /// Writes the handshake bytes rustls has for the peer; while the
    /// handshake runs, waits (bounded) for a full socket to take them, as
    /// the server resumes a pending handshake on readability only.
    fn push_handshake(&mut self) -> Result<(), BoxError> {
        let deadline = Instant::now() + HANDSHAKE_WRITE_WAIT;
        loop {
            match self.push() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.conn.is_handshaking() {
                        return Ok(()); // session tickets: the stream sends them later
                    }
                    if !sys::wait_fd(self.io.raw_fd(), Wait::Write, Some(deadline))? {
                        return Err(format!(
                            "the client did not read the handshake for {HANDSHAKE_WRITE_WAIT:?}"
                        )
                        .into());
                    }
                }
                Err(e) => return Err(Box::new(e)),
            }
        }
    }
}

enum Received {
    Io(io::Error),
    Tls(::rustls::Error),
}

/// Why a handshake failed: rustls's error, with its usual cause.
#[derive(Debug)]
struct Failure(::rustls::Error);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ::rustls::{Error as E, InvalidMessage as M};
        // rustls's own text is the source's to print.
        f.write_str(match &self.0 {
            E::InvalidMessage(M::InvalidContentType | M::UnknownProtocolVersion) => {
                "not TLS (plain text on a TLS port?)"
            }
            E::NoApplicationProtocol => "no ALPN protocol in common with the client",
            E::NoCertificatesPresented => "client certificate required",
            E::InvalidCertificate(_) => "client certificate refused",
            _ => "TLS error",
        })
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Moves the handshake on as far as the socket allows.
fn step(mut tls: Tls) -> Handshake {
    loop {
        if let Err(e) = tls.push_handshake() {
            return Handshake::Failed(e);
        }
        if !tls.conn.is_handshaking() {
            tls.framing = None;
            return Handshake::Done(Box::new(RustlsStream { tls }));
        }
        match tls.receive() {
            Ok(0) => {
                return Handshake::Failed(
                    "the client closed the connection during the handshake".into(),
                )
            }
            Ok(_) => {}
            Err(Received::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return Handshake::Pending(Box::new(Mid { tls }))
            }
            Err(Received::Io(e)) => return Handshake::Failed(Box::new(e)),
            Err(Received::Tls(e)) => return Handshake::Failed(Box::new(Failure(e))),
        }
    }
}

struct Mid {
    tls: Tls,
}

impl PendingHandshake for Mid {
    fn resume(self: Box<Self>) -> Handshake {
        step(self.tls)
    }

    fn io(&self) -> &Io {
        &self.tls.io
    }
}

struct RustlsStream {
    tls: Tls,
}

impl Stream for RustlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut eof = false;
        loop {
            // Plaintext already decrypted goes first: no readiness edge
            // will announce it.
            match self.tls.conn.reader().read(buf) {
                // `Ok(0)`: the peer sent close_notify.
                Ok(n) => return Ok(n),
                // A TCP close without close_notify: the end of the stream
                // too (see the type's documentation).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && eof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.tls.receive() {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(Received::Io(e)) => return Err(e),
                Err(Received::Tls(e)) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, Failure(e)))
                }
            }
            // What reading asked to send (a key update): best effort, the
            // next write or flush sends the rest.
            match self.tls.push() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records of earlier writes first: while the socket cannot take
        // them, take no new plaintext (rustls would buffer it unbounded).
        self.tls.push()?;
        let n = self.tls.conn.writer().write_vectored(bufs)?;
        match self.tls.push() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tls.push()
    }

    fn io(&self) -> &Io {
        &self.tls.io
    }

    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            // The close alert; a full socket buffer is no reason to fail.
            self.tls.conn.send_close_notify();
            match self.tls.push() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
        self.tls.io.shutdown(how)
    }

    fn negotiated_protocol(&self) -> Option<Vec<u8>> {
        self.tls.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.tls
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.as_ref().to_vec())
    }
    fn tls_info(&self) -> Option<TlsInfo> {
        let conn = &self.tls.conn;
        Some(TlsInfo {
            protocol: conn.protocol_version().and_then(|v| match v {
                ::rustls::ProtocolVersion::TLSv1_2 => Some(TlsVersion::Tls12),
                ::rustls::ProtocolVersion::TLSv1_3 => Some(TlsVersion::Tls13),
                _ => None,
            }),
            cipher_suite: conn.negotiated_cipher_suite().map(|s| {
                s.suite()
                    .as_str()
                    .map_or_else(|| format!("{:?}", s.suite()), str::to_string)
            }),
            server_name: conn.server_name().map(str::to_string),
        })
    }
}

impl Drop for RustlsStream {
    fn drop(&mut self) {
        // Tells the peer the stream ended here, not truncated; once, and
        // never after a fatal alert (rustls checks both).
        self.tls.conn.send_close_notify();
        let _ = self.tls.push();
    }
}
