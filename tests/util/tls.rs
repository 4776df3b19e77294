//! The test PKI and native-tls clients that trust it, for the tests that
//! speak TLS to the server (tests/tls.rs, the TLS parts of
//! tests/reliability.rs and tests/soak.rs).
//!
//! Clients that ask for ALPN stay in the tests: native-tls has
//! `request_alpns` only with its `alpn` feature, which the crate's `tls`
//! feature turns on.

use std::sync::OnceLock;

use native_tls::{Certificate, Identity, Protocol, TlsConnector, TlsConnectorBuilder};

use super::{Issued, TestCa};

/// The test PKI, made once per test binary by the openssl tool: a CA; a
/// server certificate for localhost/127.0.0.1, its renewal, and one for
/// `other.test`; a client certificate; and a stranger CA with a client certificate of its
/// own.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate in PEM, the root the clients trust.
    pub ca: Vec<u8>,
    pub server: Issued,
    /// Another certificate for localhost/127.0.0.1 from the same CA, with
    /// a key of its own: a renewal of [`Pki::server`].
    pub renewed: Issued,
    pub other: Issued,
    pub client: Issued,
    pub stranger: Issued,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("atoll-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = TestCa::new(&dir, "ca");
        let stranger_ca = TestCa::new(&dir, "stranger-ca");
        let pki = Pki {
            server: ca.issue(
                "localhost",
                Some("DNS:localhost,IP:127.0.0.1"),
                "serverAuth",
            ),
            renewed: ca.issue(
                "localhost",
                Some("DNS:localhost,IP:127.0.0.1"),
                "serverAuth",
            ),
            other: ca.issue("other.test", Some("DNS:other.test"), "serverAuth"),
            client: ca.issue("client", None, "clientAuth"),
            stranger: stranger_ca.issue("stranger", None, "clientAuth"),
            ca: ca.cert.clone(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        pki
    })
}

/// The server side with the platform's library, [`Pki::server`]'s
/// certificate.
#[cfg(feature = "tls")]
pub fn native_tls() -> atoll::transport::NativeTls {
    let server = &pki().server;
    atoll::transport::NativeTls::from_pem(&server.cert, &server.key).unwrap()
}

/// The server side with rustls, [`Pki::server`]'s certificate.
#[cfg(feature = "rustls")]
pub fn rustls() -> atoll::transport::Rustls {
    let server = &pki().server;
    atoll::transport::Rustls::from_pem(&server.cert, &server.key).unwrap()
}

/// A native-tls client configuration trusting the test CA, with a client
/// certificate and a highest protocol version if given.
pub fn connector_builder(identity: Option<&Issued>, max: Option<Protocol>) -> TlsConnectorBuilder {
    let mut b = TlsConnector::builder();
    b.add_root_certificate(Certificate::from_pem(&pki().ca).unwrap());
    b.max_protocol_version(max);
    if let Some(id) = identity {
        b.identity(Identity::from_pkcs8(&id.cert, &id.key).unwrap());
    }
    b
}

/// A native-tls client trusting the test CA (see [`connector_builder`]).
/// Building one loads the system's roots (about 100 ms): the common kinds
/// are built once, below.
pub fn connector(identity: Option<&Issued>, max: Option<Protocol>) -> TlsConnector {
    connector_builder(identity, max).build().unwrap()
}

/// A client trusting the test CA, without a certificate.
pub fn plain_connector() -> &'static TlsConnector {
    static C: OnceLock<TlsConnector> = OnceLock::new();
    C.get_or_init(|| connector(None, None))
}

/// A client trusting the test CA that speaks TLS 1.2 at most.
pub fn tls12_connector() -> &'static TlsConnector {
    static C: OnceLock<TlsConnector> = OnceLock::new();
    C.get_or_init(|| connector(None, Some(Protocol::Tlsv12)))
}

/// A server-side TLS backend, and what a client sees differently from it:
/// the TLS suite (tests/tls.rs) and the TLS fault tests
/// (tests/reliability.rs) are generic over it, and instantiated once per
/// backend compiled in.
#[cfg(any(feature = "tls", feature = "rustls"))]
pub trait Backend {
    type Tls: atoll::transport::Transport;

    /// Names the files of a test that runs for every backend at once.
    fn name() -> &'static str;

    /// The server side with `id`'s certificate and key.
    fn server_transport(id: &Issued) -> Self::Tls;

    /// The server side with [`Pki::server`]'s certificate.
    fn server() -> Self::Tls {
        Self::server_transport(&pki().server)
    }

    /// `tls` offering these ALPN protocols (for the ALPN test, which needs
    /// the `tls` feature).
    #[cfg(feature = "tls")]
    fn with_alpn(tls: Self::Tls, protocols: &[&str]) -> Self::Tls;

    /// Whether a client that sends plain text may get a TLS alert before
    /// the close (rustls: a TLS error sends its alert), rather than only
    /// the close (OpenSSL).
    const ALERTS_PLAIN_TEXT: bool;

    /// What the handshake error says of a client that is not TLS, where
    /// the backend's words are its own (not OpenSSL's, which vary).
    const SAYS_NOT_TLS: Option<&'static str>;

    /// What the handshake error says of a client that closed before the
    /// handshake was done, likewise.
    const SAYS_CLOSED_IN_HANDSHAKE: Option<&'static str>;
}

#[cfg(feature = "tls")]
pub struct NativeTlsBackend;

#[cfg(feature = "tls")]
impl Backend for NativeTlsBackend {
    type Tls = atoll::transport::NativeTls;

    fn name() -> &'static str {
        "native"
    }

    fn server_transport(id: &Issued) -> Self::Tls {
        atoll::transport::NativeTls::from_pem(&id.cert, &id.key).unwrap()
    }

    fn with_alpn(tls: Self::Tls, protocols: &[&str]) -> Self::Tls {
        tls.with_alpn(protocols).unwrap()
    }

    const ALERTS_PLAIN_TEXT: bool = false;
    const SAYS_NOT_TLS: Option<&'static str> = None;
    const SAYS_CLOSED_IN_HANDSHAKE: Option<&'static str> = None;
}

#[cfg(feature = "rustls")]
pub struct RustlsBackend;

#[cfg(feature = "rustls")]
impl Backend for RustlsBackend {
    type Tls = atoll::transport::Rustls;

    fn name() -> &'static str {
        "rustls"
    }

    fn server_transport(id: &Issued) -> Self::Tls {
        atoll::transport::Rustls::from_pem(&id.cert, &id.key).unwrap()
    }

    #[cfg(feature = "tls")]
    fn with_alpn(tls: Self::Tls, protocols: &[&str]) -> Self::Tls {
        tls.with_alpn(protocols).unwrap()
    }

    const ALERTS_PLAIN_TEXT: bool = true;
    const SAYS_NOT_TLS: Option<&'static str> = Some("not TLS");
    const SAYS_CLOSED_IN_HANDSHAKE: Option<&'static str> =
        Some("closed the connection during the handshake");
}
