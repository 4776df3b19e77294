//! TLS with native-tls (OpenSSL on Linux): a [`Transport`](super::Transport)
//! and its streams. Never touches a server.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use native_tls::{
    HandshakeError, Identity, MidHandshakeTlsStream, Protocol, TlsAcceptor, TlsStream,
};

use super::{Handshake, Io, PendingHandshake, Stream, TlsInfo, TlsVersion, Transport};
use crate::error::Error;

/// Plaintext gathered from several slices into one TLS record at most.
const GATHER: usize = 16 * 1024;

/// TLS by the platform's library (OpenSSL on Linux) through `native-tls`:
/// the TLS most deployments already trust. Feature `tls`, on by default.
///
/// It cannot ask clients for a certificate; for mutual TLS use
/// [`Rustls`](super::Rustls) (feature `rustls`).
///
/// A `native_tls::TlsAcceptor` built elsewhere becomes a transport with
/// `From` (`NativeTls::from(acceptor)`) and is used as it is; the `with_*`
/// methods rebuild an acceptor of atoll's own from the identity, so they
/// fail with [`Error::Config`] on one made this way.
///
/// ```no_run
/// use atoll::transport::{NativeTls, TlsVersion};
///
/// let cert = std::fs::read("cert.pem")?;
/// let key = std::fs::read("key.pem")?;
/// let tls = NativeTls::from_pem(&cert, &key)?
///     .with_alpn(&["h2", "http/1.1"])?
///     .with_min_version(TlsVersion::Tls12)?;
/// let builder = atoll::Server::builder().port(4443).transport(tls);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct NativeTls {
    /// `None` for an acceptor given whole (`From<TlsAcceptor>`).
    identity: Option<Identity>,
    min_version: TlsVersion,
    alpn: Vec<String>,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for NativeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.identity.is_none() {
            return f.debug_struct("NativeTls").finish_non_exhaustive();
        }
        f.debug_struct("NativeTls")
            .field("min_version", &self.min_version)
            .field("alpn", &self.alpn)
            .finish()
    }
}

impl NativeTls {
    /// An identity from a PEM certificate chain and a PEM private key
    /// (PKCS#8, or PKCS#1 RSA).
    ///
    /// ```no_run
    /// let tls = atoll::transport::NativeTls::from_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<NativeTls, Error> {
        let identity = Identity::from_pkcs8(cert_chain, key).map_err(config)?;
        NativeTls::new(identity)
    }

    /// An identity from a PKCS#12 archive and its password.
    ///
    /// ```no_run
    /// let tls = atoll::transport::NativeTls::from_pkcs12(&std::fs::read("id.p12")?, "secret")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<NativeTls, Error> {
        let identity = Identity::from_pkcs12(der, password).map_err(config)?;
        NativeTls::new(identity)
    }

    fn new(identity: Identity) -> Result<NativeTls, Error> {
        let acceptor = build(&identity, TlsVersion::Tls12, &[])?;
        Ok(NativeTls {
            identity: Some(identity),
            min_version: TlsVersion::Tls12,
            alpn: Vec::new(),
            acceptor,
        })
    }

    /// The application protocols offered by ALPN, in order of preference;
    /// the chosen one is [`Socket::negotiated_protocol`](crate::Socket::negotiated_protocol).
    ///
    /// ```no_run
    /// # let tls = atoll::transport::NativeTls::from_pem(b"", b"")?;
    /// let tls = tls.with_alpn(&["h2", "http/1.1"])?;
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn with_alpn(mut self, protocols: &[&str]) -> Result<NativeTls, Error> {
        self.alpn = protocols.iter().map(|p| p.to_string()).collect();
        self.acceptor = build(self.identity()?, self.min_version, &self.alpn)?;
        Ok(self)
    }

    /// The oldest protocol version accepted. Default is TLS 1.2.
    ///
    /// ```no_run
    /// # let tls = atoll::transport::NativeTls::from_pem(b"", b"")?;
    /// let tls = tls.with_min_version(atoll::transport::TlsVersion::Tls13)?;
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn with_min_version(mut self, version: TlsVersion) -> Result<NativeTls, Error> {
        self.min_version = version;
        self.acceptor = build(self.identity()?, self.min_version, &self.alpn)?;
        Ok(self)
    }

    /// The identity to rebuild the acceptor from; an error for an
    /// acceptor given whole.
    fn identity(&self) -> Result<&Identity, Error> {
        self.identity.as_ref().ok_or_else(|| {
            Error::Config(
                "TLS: this NativeTls was made from a TlsAcceptor: configure that instead".into(),
            )
        })
    }
}

impl From<TlsAcceptor> for NativeTls {
    /// Serves with an acceptor built elsewhere, used as it is (its
    /// identity, protocol versions and ALPN).
    ///
    /// ```no_run
    /// use native_tls::{Identity, TlsAcceptor};
    ///
    /// let identity = Identity::from_pkcs12(&std::fs::read("id.p12")?, "secret")?;
    /// let acceptor = TlsAcceptor::builder(identity).build()?;
    /// let tls = atoll::transport::NativeTls::from(acceptor);
    /// let builder = atoll::Server::builder().port(4443).transport(tls);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn from(acceptor: TlsAcceptor) -> NativeTls {
        NativeTls {
            identity: None,
            min_version: TlsVersion::Tls12,
            alpn: Vec::new(),
            acceptor,
        }
    }
}

fn config(e: native_tls::Error) -> Error {
    Error::Config(format!("TLS: {e}"))
}

fn build(identity: &Identity, min: TlsVersion, alpn: &[String]) -> Result<TlsAcceptor, Error> {
    let mut builder = TlsAcceptor::builder(identity.clone());
    builder.min_protocol_version(Some(match min {
        TlsVersion::Tls12 => Protocol::Tlsv12,
        TlsVersion::Tls13 => Protocol::Tlsv13,
    }));
    if !alpn.is_empty() {
        builder.accept_alpn(alpn);
    }
    builder.build().map_err(config)
}

impl Transport for NativeTls {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn is_secure(&self) -> bool {
        true
    }

    fn handshake(&self, io: Io) -> Handshake {
        step(self.acceptor.accept(io))
    }
}

fn step(result: Result<TlsStream<Io>, HandshakeError<Io>>) -> Handshake {
    match result {
        Ok(tls) => Handshake::Done(Box::new(NativeStream {
            io: tls.get_ref().clone(),
            tls,
            gather: Vec::new(),
        })),
        Err(HandshakeError::WouldBlock(mid)) => Handshake::Pending(Box::new(Mid {
            io: mid.get_ref().clone(),
            mid,
        })),
        Err(HandshakeError::Failure(e)) => Handshake::Failed(Box::new(e)),
    }
}

struct Mid {
    io: Io,
    mid: MidHandshakeTlsStream<Io>,
}

impl PendingHandshake for Mid {
    fn resume(self: Box<Self>) -> Handshake {
        step(self.mid.handshake())
    }

    fn io(&self) -> &Io {
        &self.io
    }
}

struct NativeStream {
    io: Io,
    tls: TlsStream<Io>,
    gather: Vec<u8>,
}

impl Drop for NativeStream {
    fn drop(&mut self) {
        // The close alert, so that the peer sees a clean end of the TLS
        // stream rather than a truncation; best effort.
        let _ = self.tls.shutdown();
    }
}

impl Stream for NativeStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tls.read(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = slices.next() else {
            return Ok(0);
        };
        if first.len() >= GATHER || bufs.len() == 1 {
            return self.tls.write(first);
        }
        // Small slices go out as one record, not one record each. A retry
        // after WouldBlock starts with the same bytes, as OpenSSL requires.
        self.gather.clear();
        for slice in std::iter::once(first).chain(slices) {
            let room = GATHER - self.gather.len();
            self.gather
                .extend_from_slice(&slice[..slice.len().min(room)]);
            if self.gather.len() == GATHER {
                break;
            }
        }
        self.tls.write(&self.gather)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tls.flush()
    }

    fn io(&self) -> &Io {
        &self.io
    }

    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            // The close alert; a full socket buffer is no reason to fail.
            match self.tls.shutdown() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
        self.io.shutdown(how)
    }

    fn negotiated_protocol(&self) -> Option<Vec<u8>> {
        self.tls.negotiated_alpn().ok().flatten()
    }

    fn tls_info(&self) -> Option<TlsInfo> {
        // native-tls exposes neither the version, the suite nor the name.
        Some(TlsInfo::default())
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.tls
            .peer_certificate()
            .ok()
            .flatten()
            .and_then(|c| c.to_der().ok())
    }
}
