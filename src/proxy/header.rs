//! The PROXY header's types ([`ProxyHeader`], its parts, [`ProxyError`])
//! and its two entry points, `parse` and `encode`, which hand the bytes to
//! `v1` or `v2`; it never reads or writes a field of either wire format
//! itself, and does no I/O.

use std::fmt;
use std::net::SocketAddr;

use super::v1::{self, V1_MAX_LEN, V1_PREFIX};
use super::v2::{self, V2_SIGNATURE};
use crate::transport::Addr;

/// The type codes of version 2 TLVs (`PP2_TYPE_*` in the specification) and
/// of the sub-fields of the SSL TLV (`PP2_SUBTYPE_SSL_*`).
///
/// ```
/// use atoll::proxy::{tlv, ProxyHeader};
///
/// let header = ProxyHeader::tcp("192.0.2.7:51000".parse()?, "198.51.100.1:443".parse()?)
///     .with_tlv(tlv::AUTHORITY, "example.com");
/// assert_eq!(header.tlv(tlv::AUTHORITY), Some(&b"example.com"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub mod tlv {
    /// The application protocol the client negotiated (ALPN), e.g. `h2`.
    pub const ALPN: u8 = 0x01;
    /// The host name the client asked for (TLS SNI or HTTP authority).
    pub const AUTHORITY: u8 = 0x02;
    /// A CRC32C checksum of the whole header, 4 bytes big endian.
    pub const CRC32C: u8 = 0x03;
    /// Padding, to be ignored.
    pub const NOOP: u8 = 0x04;
    /// An opaque identifier of the connection, up to 128 bytes.
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS information: client flags, verification result, sub-fields.
    pub const SSL: u8 = 0x20;
    /// Sub-field of [`SSL`]: the TLS version, e.g. `TLSv1.3`.
    pub const SSL_VERSION: u8 = 0x21;
    /// Sub-field of [`SSL`]: the client certificate's common name.
    pub const SSL_CN: u8 = 0x22;
    /// Sub-field of [`SSL`]: the cipher, e.g. `ECDHE-RSA-AES128-GCM-SHA256`.
    pub const SSL_CIPHER: u8 = 0x23;
    /// Sub-field of [`SSL`]: the certificate's signature algorithm.
    pub const SSL_SIG_ALG: u8 = 0x24;
    /// Sub-field of [`SSL`]: the certificate's key algorithm, e.g. `RSA2048`.
    pub const SSL_KEY_ALG: u8 = 0x25;
    /// The network namespace the connection was accepted in.
    pub const NETNS: u8 = 0x30;
}

/// Which version of the PROXY protocol a header used.
///
/// ```
/// use atoll::proxy::{Parsed, ProxyHeader, Version};
///
/// let parsed = ProxyHeader::parse(b"PROXY UNKNOWN\r\n")?;
/// assert!(matches!(parsed, Parsed::Header(h, _) if h.version == Version::V1));
/// # Ok::<(), atoll::proxy::ProxyError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The text form: `PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n`.
    V1,
    /// The binary form, which can carry TLVs.
    V2,
}

/// A version 2 header's command. Version 1 headers are always `Proxy`.
///
/// ```
/// use atoll::proxy::{Command, ProxyHeader};
///
/// assert_eq!(ProxyHeader::local().command, Command::Local);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// A connection the proxy made itself, e.g. a health check: the real
    /// endpoints are the connection's own.
    Local,
    /// A connection relayed for a client.
    Proxy,
}

/// The relayed connection's transport: version 1 `TCP4` and `TCP6` are
/// `Stream`, `UNKNOWN` is `Unspecified`; version 2 says it in the low
/// nibble of its 14th byte.
///
/// ```
/// use atoll::proxy::{Protocol, ProxyHeader};
///
/// let header = ProxyHeader::tcp("192.0.2.7:51000".parse()?, "198.51.100.1:443".parse()?);
/// assert_eq!(header.protocol, Protocol::Stream);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Unknown or not said (`UNSPEC`).
    Unspecified,
    /// A stream: TCP, or a `SOCK_STREAM` Unix socket.
    Stream,
    /// Datagrams: UDP, or a `SOCK_DGRAM` Unix socket.
    Datagram,
}

/// A type-length-value field of a version 2 header, its value as received.
///
/// ```
/// use atoll::proxy::{tlv, ProxyHeader, Tlv};
///
/// let header = ProxyHeader::local().with_tlv(tlv::UNIQUE_ID, *b"abc");
/// assert_eq!(header.tlvs, [Tlv { kind: tlv::UNIQUE_ID, value: b"abc".to_vec() }]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlv {
    /// The type, one of the [`tlv`] constants or any other.
    pub kind: u8,
    /// The value, at most 65,535 bytes.
    pub value: Vec<u8>,
}

/// The SSL information TLV ([`tlv::SSL`]): whether the client spoke TLS to
/// the proxy, whether it presented a certificate that verified, and the
/// sub-fields the proxy added.
///
/// ```
/// use atoll::proxy::{tlv, ProxyHeader};
///
/// // client: SSL | CERT_CONN, verify: 0, then the version sub-field.
/// let value = [&[0x03, 0, 0, 0, 0, tlv::SSL_VERSION, 0, 7][..], b"TLSv1.3"].concat();
/// let header = ProxyHeader::local().with_tlv(tlv::SSL, value);
/// let ssl = header.ssl().unwrap();
/// assert!(ssl.is_ssl() && ssl.client_cert_verified());
/// assert_eq!(ssl.version.as_deref(), Some("TLSv1.3"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SslInfo {
    /// Flags: `PP2_CLIENT_SSL` 0x01 (the client spoke TLS),
    /// `PP2_CLIENT_CERT_CONN` 0x02 (it presented a certificate on this
    /// connection), `PP2_CLIENT_CERT_SESS` 0x04 (on this TLS session).
    pub client: u8,
    /// The certificate verification result: 0 when it verified.
    pub verify: u32,
    /// [`tlv::SSL_VERSION`]: the TLS version, e.g. `TLSv1.3`.
    pub version: Option<String>,
    /// [`tlv::SSL_CN`]: the client certificate's common name.
    pub common_name: Option<String>,
    /// [`tlv::SSL_CIPHER`]: the cipher.
    pub cipher: Option<String>,
    /// [`tlv::SSL_SIG_ALG`]: the certificate's signature algorithm.
    pub sig_alg: Option<String>,
    /// [`tlv::SSL_KEY_ALG`]: the certificate's key algorithm.
    pub key_alg: Option<String>,
}

impl SslInfo {
    /// Whether the client spoke TLS to the proxy (`PP2_CLIENT_SSL`).
    ///
    /// ```
    /// use atoll::proxy::{tlv, ProxyHeader};
    ///
    /// let header = ProxyHeader::local().with_tlv(tlv::SSL, [0x01, 0, 0, 0, 0]);
    /// assert!(header.ssl().unwrap().is_ssl());
    /// ```
    pub fn is_ssl(&self) -> bool {
        self.client & 0x01 != 0
    }

    /// Whether the client presented a certificate (on this connection or
    /// its TLS session) and it verified.
    ///
    /// ```
    /// use atoll::proxy::{tlv, ProxyHeader};
    ///
    /// // SSL with a certificate whose verification failed (10: expired).
    /// let header = ProxyHeader::local().with_tlv(tlv::SSL, [0x03, 0, 0, 0, 10]);
    /// assert!(!header.ssl().unwrap().client_cert_verified());
    /// ```
    pub fn client_cert_verified(&self) -> bool {
        self.client & 0x06 != 0 && self.verify == 0
    }
}

/// A parsed PROXY protocol header (HAProxy's specification, versions 1
/// and 2): the original client's address, the address it connected to,
/// and for version 2 the TLVs the proxy added.
///
/// [`parse`](ProxyHeader::parse) reads one from the start of a buffer;
/// [`encode`](ProxyHeader::encode) writes one, for a client of a server
/// behind a proxy or for a proxy itself.
///
/// # Examples
///
/// ```
/// use atoll::proxy::{tlv, Command, Parsed, ProxyHeader, Version};
///
/// // Version 1, as `send-proxy` writes it, with the client's first bytes after it.
/// let data = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\nGET / HTTP/1.1\r\n";
/// let Parsed::Header(header, len) = ProxyHeader::parse(data)? else { panic!("incomplete") };
/// assert_eq!(header.version, Version::V1);
/// assert_eq!(header.source.unwrap().to_string(), "192.0.2.7:51000");
/// assert_eq!(header.destination.unwrap().to_string(), "198.51.100.1:443");
/// assert_eq!(&data[len..], b"GET / HTTP/1.1\r\n");
///
/// // Version 2, as `send-proxy-v2` writes it: 16 bytes, the addresses, TLVs.
/// let mut data = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x11".to_vec();
/// data.extend([192, 0, 2, 7, 198, 51, 100, 1, 0xc7, 0x38, 0x01, 0xbb]);
/// data.extend(b"\x01\x00\x02h2"); // ALPN
/// let Parsed::Header(header, len) = ProxyHeader::parse(&data)? else { panic!("incomplete") };
/// assert_eq!((header.version, header.command), (Version::V2, Command::Proxy));
/// assert_eq!(header.alpn(), Some(&b"h2"[..]));
/// assert_eq!(header.source.unwrap().to_string(), "192.0.2.7:51000");
/// assert_eq!(len, data.len());
///
/// // The first bytes of a header: read more.
/// assert_eq!(ProxyHeader::parse(&data[..20])?, Parsed::Incomplete { total: Some(33) });
/// # Ok::<(), atoll::proxy::ProxyError>(())
/// ```
///
/// # Strictness
///
/// `parse` refuses anything the specification does not allow: a v1 line
/// with two spaces in a row, a port with a leading zero, an IPv4 address
/// with a leading zero, a v2 family or command not defined, TLVs that do
/// not end exactly at the end of the header, a CRC32C TLV whose checksum
/// does not match, an SSL TLV whose sub-fields are malformed. It never
/// allocates more than the bytes it is given.
///
/// # What is kept
///
/// The header keeps what a receiver needs, not every byte: the
/// address block of a `LOCAL` header, the bytes of a v2 `UNSPEC` header,
/// the text after `UNKNOWN` in v1, an abstract Unix socket name, and the
/// flow information and scope id of an IPv6 address are not kept. So
/// re-encoding a parsed header can give different bytes (and a different
/// CRC32C value) that parse to the same header.
///
/// A CRC32C TLV protects the bytes it covers, but not its own presence: a
/// receiver that requires integrity must check that
/// `header.tlv(tlv::CRC32C)` is there.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyHeader {
    /// The version the header used (or, for a header built here, the one
    /// it was built for).
    pub version: Version,
    /// `Proxy` for a relayed connection, `Local` for one the proxy made
    /// itself.
    pub command: Command,
    /// The relayed connection's transport.
    pub protocol: Protocol,
    /// The original client; `None` for `LOCAL`, v1 `UNKNOWN` and v2
    /// `AF_UNSPEC`.
    pub source: Option<Addr>,
    /// The address the client connected to; `None` likewise.
    pub destination: Option<Addr>,
    /// The v2 TLVs in order of appearance (`NOOP` included as received);
    /// empty for v1.
    pub tlvs: Vec<Tlv>,
}

/// What [`ProxyHeader::parse`] found.
///
/// ```
/// use atoll::proxy::{Parsed, ProxyHeader};
///
/// assert_eq!(ProxyHeader::parse(b"PROXY TCP4 192.0")?, Parsed::Incomplete { total: None });
/// # Ok::<(), atoll::proxy::ProxyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header and its length in bytes: the application's data
    /// starts at that offset.
    Header(ProxyHeader, usize),
    /// A valid beginning; more bytes are needed. `total` is the header's
    /// full length once known (v2 after 16 bytes), so a reader can refuse
    /// a too-long header early or read exactly that many.
    Incomplete {
        /// The header's length in bytes, when known.
        total: Option<usize>,
    },
}

/// Why a PROXY header was refused by [`ProxyHeader::parse`], or could not
/// be written by [`ProxyHeader::encode`].
///
/// Its `Display` text is meant for an operator's log.
///
/// ```
/// use atoll::proxy::{ProxyError, ProxyHeader};
///
/// let err = ProxyHeader::parse(b"PROXY TCP4 1.2.3 198.51.100.1 51000 443\r\n").unwrap_err();
/// assert_eq!(err.to_string(), "PROXY v1: invalid source address \"1.2.3\"");
/// assert_eq!(ProxyHeader::parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// The bytes start with neither the v1 nor the v2 signature.
    NotProxy,
    /// A v1 header without a CRLF in its first 107 bytes.
    V1TooLong,
    /// A malformed v1 header: what is wrong, e.g. `invalid source port "080"`.
    V1Malformed(String),
    /// A v2 header whose version nibble is not 2: that nibble.
    V2BadVersion(u8),
    /// A v2 command other than `LOCAL` (0) or `PROXY` (1).
    V2BadCommand(u8),
    /// A v2 address family other than `UNSPEC`, `INET`, `INET6` and `UNIX`
    /// (0 to 3).
    V2BadFamily(u8),
    /// A v2 transport protocol other than `UNSPEC`, `STREAM` and `DGRAM`
    /// (0 to 2).
    V2BadProtocol(u8),
    /// A v2 header too short to hold the addresses of its family.
    V2AddressesTooShort {
        /// The bytes after the 16-byte fixed part.
        len: usize,
        /// The bytes the family's addresses take.
        needed: usize,
    },
    /// A malformed v2 TLV.
    V2BadTlv {
        /// The TLV's type.
        kind: u8,
        /// What is wrong, e.g. `runs past the end of the header`.
        reason: String,
    },
    /// The CRC32C TLV does not match the header's bytes.
    Checksum,
    /// A header longer than allowed.
    TooLong {
        /// The header's length in bytes.
        len: usize,
        /// The longest allowed.
        max: usize,
    },
    /// The header cannot be written in the version asked for: why.
    Unencodable(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("not a PROXY protocol header"),
            ProxyError::V1TooLong => {
                write!(f, "PROXY v1 header longer than {V1_MAX_LEN} bytes")
            }
            ProxyError::V1Malformed(what) => write!(f, "PROXY v1: {what}"),
            ProxyError::V2BadVersion(v) => write!(f, "PROXY v2: unknown version {v:#x}"),
            ProxyError::V2BadCommand(c) => write!(f, "PROXY v2: unknown command {c:#x}"),
            ProxyError::V2BadFamily(a) => write!(f, "PROXY v2: unknown address family {a:#x}"),
            ProxyError::V2BadProtocol(p) => {
                write!(f, "PROXY v2: unknown transport protocol {p:#x}")
            }
            ProxyError::V2AddressesTooShort { len, needed } => write!(
                f,
                "PROXY v2: header length {len} is shorter than its {needed}-byte address block"
            ),
            ProxyError::V2BadTlv { kind, reason } => {
                write!(f, "PROXY v2: TLV {kind:#04x} {reason}")
            }
            ProxyError::Checksum => f.write_str("PROXY v2: CRC32C checksum mismatch"),
            ProxyError::TooLong { len, max } => write!(
                f,
                "PROXY header of {len} bytes is longer than the maximum of {max}"
            ),
            ProxyError::Unencodable(why) => write!(f, "cannot encode the PROXY header: {why}"),
        }
    }
}

impl std::error::Error for ProxyError {}

impl ProxyHeader {
    /// Parses the header at the start of `bytes`, which may continue with
    /// the application's data.
    ///
    /// Returns [`Parsed::Incomplete`] while `bytes` is a valid beginning of
    /// a header (an empty slice included), and an error as soon as it
    /// cannot be one.
    ///
    /// ```
    /// use atoll::proxy::{Parsed, ProxyError, ProxyHeader};
    ///
    /// let data = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\nhello";
    /// match ProxyHeader::parse(data)? {
    ///     Parsed::Header(header, len) => {
    ///         assert_eq!(header.source.unwrap().to_string(), "[2001:db8::7]:51000");
    ///         assert_eq!(&data[len..], b"hello");
    ///     }
    ///     Parsed::Incomplete { .. } => unreachable!(),
    /// }
    /// assert_eq!(ProxyHeader::parse(b"PRO")?, Parsed::Incomplete { total: None });
    /// assert!(ProxyHeader::parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 051000 443\r\n").is_err());
    /// # Ok::<(), ProxyError>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Parsed, ProxyError> {
        if bytes.starts_with(V1_PREFIX) {
            v1::parse(bytes)
        } else if bytes.starts_with(&V2_SIGNATURE) {
            v2::parse(bytes)
        } else if V1_PREFIX.starts_with(bytes) || V2_SIGNATURE.starts_with(bytes) {
            Ok(Parsed::Incomplete { total: None })
        } else {
            Err(ProxyError::NotProxy)
        }
    }

    /// Encodes the header as `version`, whatever `self.version` says.
    ///
    /// Version 1 carries `Protocol::Stream` with two IP addresses of the
    /// same family (`PROXY TCP4 ...`), or nothing (`PROXY UNKNOWN`, written
    /// for a `LOCAL` header or one without addresses); it has no TLVs and
    /// no Unix sockets.
    ///
    /// Version 2 writes the addresses' family (`UNSPEC` when there are
    /// none) and the TLVs in order; a [`tlv::CRC32C`] TLV gets the
    /// checksum of the final bytes whatever its value. Because a receiver
    /// skips everything after an `UNSPEC` fixed part, a `LOCAL` header
    /// with TLVs but no addresses is written with a zero `INET` address
    /// block, which `LOCAL` tells the receiver to ignore; a `PROXY` one is
    /// refused.
    ///
    /// ```
    /// use atoll::proxy::{ProxyHeader, Version};
    ///
    /// let header = ProxyHeader::tcp("192.0.2.7:51000".parse()?, "198.51.100.1:443".parse()?);
    /// assert_eq!(header.encode(Version::V1)?, b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n");
    /// assert_eq!(header.encode(Version::V2)?.len(), 16 + 12);
    /// assert_eq!(ProxyHeader::local().encode(Version::V1)?, b"PROXY UNKNOWN\r\n");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode(&self, version: Version) -> Result<Vec<u8>, ProxyError> {
        match version {
            Version::V1 => v1::encode(self),
            Version::V2 => v2::encode(self),
        }
    }

    /// A header for a relayed TCP connection: command `Proxy`, protocol
    /// `Stream`, version 2 unless encoded otherwise, no TLVs. Both
    /// addresses must be of the same family to be encoded.
    ///
    /// ```
    /// use atoll::proxy::ProxyHeader;
    ///
    /// let header = ProxyHeader::tcp("192.0.2.7:51000".parse()?, "198.51.100.1:443".parse()?);
    /// assert_eq!(header.source.unwrap().port(), Some(51000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tcp(source: SocketAddr, destination: SocketAddr) -> ProxyHeader {
        ProxyHeader {
            version: Version::V2,
            command: Command::Proxy,
            protocol: Protocol::Stream,
            source: Some(Addr::Inet(source)),
            destination: Some(Addr::Inet(destination)),
            tlvs: Vec::new(),
        }
    }

    /// A `LOCAL` header (version 2), written `PROXY UNKNOWN` in version 1:
    /// a connection the proxy made itself, such as a health check.
    ///
    /// ```
    /// use atoll::proxy::{ProxyHeader, Version};
    ///
    /// let bytes = ProxyHeader::local().encode(Version::V2)?;
    /// assert_eq!(bytes, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
    /// # Ok::<(), atoll::proxy::ProxyError>(())
    /// ```
    pub fn local() -> ProxyHeader {
        ProxyHeader {
            version: Version::V2,
            command: Command::Local,
            protocol: Protocol::Unspecified,
            source: None,
            destination: None,
            tlvs: Vec::new(),
        }
    }

    /// The header with one more TLV at the end.
    ///
    /// ```
    /// use atoll::proxy::{tlv, ProxyHeader};
    ///
    /// let header = ProxyHeader::tcp("192.0.2.7:51000".parse()?, "198.51.100.1:443".parse()?)
    ///     .with_tlv(tlv::CRC32C, [0; 4]) // computed when encoded
    ///     .with_tlv(tlv::ALPN, "h2");
    /// assert_eq!(header.alpn(), Some(&b"h2"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_tlv(mut self, kind: u8, value: impl AsRef<[u8]>) -> ProxyHeader {
        self.tlvs.push(Tlv {
            kind,
            value: value.as_ref().to_vec(),
        });
        self
    }

    /// The value of the first TLV of type `kind`.
    ///
    /// ```
    /// use atoll::proxy::ProxyHeader;
    ///
    /// let header = ProxyHeader::local().with_tlv(0xe0, "custom").with_tlv(0xe0, "second");
    /// assert_eq!(header.tlv(0xe0), Some(&b"custom"[..]));
    /// assert_eq!(header.tlv(0xe1), None);
    /// ```
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| t.value.as_slice())
    }

    /// The application protocol the client negotiated with the proxy
    /// ([`tlv::ALPN`]), e.g. `h2`.
    ///
    /// ```
    /// use atoll::proxy::{tlv, ProxyHeader};
    ///
    /// let header = ProxyHeader::local().with_tlv(tlv::ALPN, "http/1.1");
    /// assert_eq!(header.alpn(), Some(&b"http/1.1"[..]));
    /// ```
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tlv(tlv::ALPN)
    }

    /// The host name the client asked for ([`tlv::AUTHORITY`], e.g. TLS
    /// SNI); `None` if absent or not UTF-8.
    ///
    /// ```
    /// use atoll::proxy::{tlv, ProxyHeader};
    ///
    /// let header = ProxyHeader::local().with_tlv(tlv::AUTHORITY, "example.com");
    /// assert_eq!(header.authority(), Some("example.com"));
    /// ```
    pub fn authority(&self) -> Option<&str> {
        self.tlv(tlv::AUTHORITY)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The proxy's identifier of the connection ([`tlv::UNIQUE_ID`]).
    ///
    /// ```
    /// use atoll::proxy::{tlv, ProxyHeader};
    ///
    /// let header = ProxyHeader::local().with_tlv(tlv::UNIQUE_ID, "c0ffee");
    /// assert_eq!(header.unique_id(), Some(&b"c0ffee"[..]));
    /// ```
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.tlv(tlv::UNIQUE_ID)
    }

    /// The SSL information ([`tlv::SSL`]), if the proxy sent it. `parse`
    /// has already refused a malformed one; for a header built by hand a
    /// malformed one gives `None`.
    ///
    /// ```
    /// use atoll::proxy::{tlv, ProxyHeader};
    ///
    /// let value = [&[0x01, 0, 0, 0, 0, tlv::SSL_CIPHER, 0, 22][..], b"TLS_AES_128_GCM_SHA256"].concat();
    /// let header = ProxyHeader::local().with_tlv(tlv::SSL, value);
    /// assert_eq!(header.ssl().unwrap().cipher.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
    /// assert!(ProxyHeader::local().ssl().is_none());
    /// ```
    pub fn ssl(&self) -> Option<SslInfo> {
        self.tlv(tlv::SSL).and_then(|v| v2::ssl_info(v).ok())
    }

    /// The network namespace the proxy accepted the connection in
    /// ([`tlv::NETNS`]); `None` if absent or not UTF-8.
    ///
    /// ```
    /// use atoll::proxy::{tlv, ProxyHeader};
    ///
    /// let header = ProxyHeader::local().with_tlv(tlv::NETNS, "blue");
    /// assert_eq!(header.netns(), Some("blue"));
    /// ```
    pub fn netns(&self) -> Option<&str> {
        self.tlv(tlv::NETNS)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Why a header with an IPv4 and an IPv6 address cannot be encoded.
pub(super) const MIXED_FAMILIES: &str =
    "the source and destination are of different address families";
/// Why a header with one address but not the other cannot be encoded.
pub(super) const ONE_ADDRESS: &str =
    "a PROXY header needs both a source and a destination, or neither";

#[cfg(test)]
pub(super) mod tests {
    //! The tests of the version dispatch, the accessors and the errors'
    //! text, and the helpers the `v1` and `v2` tests share.

    use super::*;

    /// Parses `bytes`, which must hold a whole header: it and its length.
    pub(in crate::proxy) fn header(bytes: &[u8]) -> (ProxyHeader, usize) {
        match ProxyHeader::parse(bytes) {
            Ok(Parsed::Header(h, n)) => (h, n),
            other => panic!("expected a header, got {other:?}"),
        }
    }

    /// Parses `bytes`, which must be refused: why.
    pub(in crate::proxy) fn error(bytes: &[u8]) -> ProxyError {
        match ProxyHeader::parse(bytes) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// An IP address and port, as a header's source or destination.
    pub(in crate::proxy) fn inet(s: &str) -> Option<Addr> {
        Some(Addr::Inet(s.parse().unwrap()))
    }

    // Detection

    #[test]
    fn empty_and_signature_prefixes_are_incomplete() {
        let incomplete = Ok(Parsed::Incomplete { total: None });
        assert_eq!(ProxyHeader::parse(b""), incomplete);
        for n in 1..V1_PREFIX.len() {
            assert_eq!(ProxyHeader::parse(&V1_PREFIX[..n]), incomplete);
        }
        for n in 1..=V2_SIGNATURE.len() {
            assert_eq!(ProxyHeader::parse(&V2_SIGNATURE[..n]), incomplete);
        }
    }

    #[test]
    fn other_protocols_are_not_proxy() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01",
            b"PROXY\r\n",
            b"proxy ",
            b"\r\n\r\n\0\r\nQUIX",
        ] {
            assert_eq!(error(bytes), ProxyError::NotProxy, "{bytes:?}");
        }
        assert_eq!(error(b"x").to_string(), "not a PROXY protocol header");
    }

    #[test]
    fn tlv_accessors_refuse_non_utf8_text_and_keep_raw_bytes() {
        let h = ProxyHeader::local()
            .with_tlv(tlv::AUTHORITY, b"\xff")
            .with_tlv(tlv::NETNS, b"\xfe")
            .with_tlv(tlv::ALPN, b"\x00\x01");
        assert_eq!(h.authority(), None);
        assert_eq!(h.netns(), None);
        assert_eq!(h.tlv(tlv::AUTHORITY), Some(&b"\xff"[..]));
        assert_eq!(h.alpn(), Some(&b"\x00\x01"[..]));
        assert_eq!(h.unique_id(), None);
        assert_eq!(h.ssl(), None);
    }

    #[test]
    fn errors_display_for_operators() {
        let cases = [
            (ProxyError::V2BadVersion(3), "PROXY v2: unknown version 0x3"),
            (
                ProxyError::V2BadFamily(4),
                "PROXY v2: unknown address family 0x4",
            ),
            (
                ProxyError::V2BadProtocol(15),
                "PROXY v2: unknown transport protocol 0xf",
            ),
            (
                ProxyError::V2AddressesTooShort { len: 4, needed: 12 },
                "PROXY v2: header length 4 is shorter than its 12-byte address block",
            ),
            (
                ProxyError::TooLong {
                    len: 5000,
                    max: 4096,
                },
                "PROXY header of 5000 bytes is longer than the maximum of 4096",
            ),
            (
                ProxyError::Unencodable("PROXY v1 carries no TLVs"),
                "cannot encode the PROXY header: PROXY v1 carries no TLVs",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }
}
