//! The PROXY protocol header itself: parsing and encoding, no I/O.

use std::ffi::OsStr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::transport::Addr;

/// The longest version 1 header, in bytes, its CRLF included.
///
/// ```
/// use atoll::proxy::{ProxyError, ProxyHeader, V1_MAX_LEN};
///
/// let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN));
/// assert_eq!(ProxyHeader::parse(long.as_bytes()), Err(ProxyError::V1TooLong));
/// ```
pub const V1_MAX_LEN: usize = 107;

/// The longest version 2 header, in bytes: the 16-byte fixed part and a
/// 16-bit length of addresses and TLVs.
///
/// ```
/// assert_eq!(atoll::proxy::V2_MAX_LEN, 65_551);
/// ```
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;

/// The 12 bytes a version 2 header starts with.
///
/// ```
/// use atoll::proxy::{ProxyHeader, Version, V2_SIGNATURE};
///
/// let bytes = ProxyHeader::local().encode(Version::V2)?;
/// assert!(bytes.starts_with(&V2_SIGNATURE));
/// # Ok::<(), atoll::proxy::ProxyError>(())
/// ```
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// What a version 1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";

/// The signature, version and command, family and protocol, and length.
const V2_FIXED_LEN: usize = 16;

/// The length of each path of a v2 `AF_UNIX` address block.
const UNIX_PATH_LEN: usize = 108;

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

    /// Reads the value of an SSL TLV, strictly.
    fn parse(value: &[u8]) -> Result<SslInfo, ProxyError> {
        let bad = |reason: String| ProxyError::V2BadTlv {
            kind: tlv::SSL,
            reason,
        };
        let [client, v0, v1, v2, v3, rest @ ..] = value else {
            return Err(bad(format!(
                "has {} bytes, fewer than its client and verify fields (5)",
                value.len()
            )));
        };
        let mut rest = rest;
        let mut info = SslInfo {
            client: *client,
            verify: u32::from_be_bytes([*v0, *v1, *v2, *v3]),
            version: None,
            common_name: None,
            cipher: None,
            sig_alg: None,
            key_alg: None,
        };
        while let Some(&kind) = rest.first() {
            let Some((value, after)) = split_tlv(rest) else {
                return Err(bad(format!(
                    "sub-field {kind:#04x} runs past the end of the SSL TLV"
                )));
            };
            rest = after;
            let field = match kind {
                tlv::SSL_VERSION => &mut info.version,
                tlv::SSL_CN => &mut info.common_name,
                tlv::SSL_CIPHER => &mut info.cipher,
                tlv::SSL_SIG_ALG => &mut info.sig_alg,
                tlv::SSL_KEY_ALG => &mut info.key_alg,
                // Sub-fields added to the specification later.
                _ => continue,
            };
            let Ok(text) = std::str::from_utf8(value) else {
                return Err(bad(format!("sub-field {kind:#04x} is not UTF-8")));
            };
            // Like `ProxyHeader::tlv`, the first of a kind counts.
            if field.is_none() {
                *field = Some(text.to_owned());
            }
        }
        Ok(info)
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
            parse_v1(bytes)
        } else if bytes.starts_with(&V2_SIGNATURE) {
            parse_v2(bytes)
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
            Version::V1 => self.encode_v1(),
            Version::V2 => self.encode_v2(),
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
        self.tlv(tlv::SSL).and_then(|v| SslInfo::parse(v).ok())
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

    fn encode_v1(&self) -> Result<Vec<u8>, ProxyError> {
        if !self.tlvs.is_empty() {
            return Err(ProxyError::Unencodable("PROXY v1 carries no TLVs"));
        }
        if self.command == Command::Local {
            return Ok(b"PROXY UNKNOWN\r\n".to_vec());
        }
        let (source, destination) = match (&self.source, &self.destination) {
            (None, None) => return Ok(b"PROXY UNKNOWN\r\n".to_vec()),
            (Some(Addr::Inet(s)), Some(Addr::Inet(d))) => (s, d),
            (Some(Addr::Unix(_)), _) | (_, Some(Addr::Unix(_))) => {
                return Err(ProxyError::Unencodable(
                    "PROXY v1 carries no Unix socket addresses",
                ))
            }
            _ => return Err(ProxyError::Unencodable(ONE_ADDRESS)),
        };
        if self.protocol != Protocol::Stream {
            return Err(ProxyError::Unencodable(
                "PROXY v1 carries only TCP (Protocol::Stream)",
            ));
        }
        let family = match (source, destination) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
            (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
            _ => return Err(ProxyError::Unencodable(MIXED_FAMILIES)),
        };
        let line = format!(
            "PROXY {family} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        );
        Ok(line.into_bytes())
    }

    fn encode_v2(&self) -> Result<Vec<u8>, ProxyError> {
        let family = match (&self.source, &self.destination) {
            (Some(Addr::Inet(SocketAddr::V4(_))), Some(Addr::Inet(SocketAddr::V4(_)))) => {
                Family::Inet
            }
            (Some(Addr::Inet(SocketAddr::V6(_))), Some(Addr::Inet(SocketAddr::V6(_)))) => {
                Family::Inet6
            }
            (Some(Addr::Inet(_)), Some(Addr::Inet(_))) => {
                return Err(ProxyError::Unencodable(MIXED_FAMILIES))
            }
            (Some(Addr::Unix(_)), Some(Addr::Unix(_))) => Family::Unix,
            (None, None) if self.tlvs.is_empty() => Family::Unspec,
            (None, None) if self.command == Command::Local => Family::Inet,
            (None, None) => {
                return Err(ProxyError::Unencodable(
                    "PROXY v2 TLVs need addresses: a receiver skips them after AF_UNSPEC",
                ))
            }
            (Some(_), Some(_)) => return Err(ProxyError::Unencodable(MIXED_FAMILIES)),
            _ => return Err(ProxyError::Unencodable(ONE_ADDRESS)),
        };
        let tlvs_len: usize = self.tlvs.iter().map(|t| 3 + encoded_tlv_len(t)).sum();
        let total = V2_FIXED_LEN + family.block_len() + tlvs_len;
        let Ok(len) = u16::try_from(total - V2_FIXED_LEN) else {
            return Err(ProxyError::TooLong {
                len: total,
                max: V2_MAX_LEN,
            });
        };

        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&V2_SIGNATURE);
        out.push(match self.command {
            Command::Local => 0x20,
            Command::Proxy => 0x21,
        });
        let protocol = match self.protocol {
            Protocol::Unspecified => 0,
            Protocol::Stream => 1,
            Protocol::Datagram => 2,
        };
        out.push((family.code() << 4) | protocol);
        out.extend_from_slice(&len.to_be_bytes());

        match (&self.source, &self.destination) {
            (Some(Addr::Inet(SocketAddr::V4(s))), Some(Addr::Inet(SocketAddr::V4(d)))) => {
                out.extend_from_slice(&s.ip().octets());
                out.extend_from_slice(&d.ip().octets());
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&d.port().to_be_bytes());
            }
            (Some(Addr::Inet(SocketAddr::V6(s))), Some(Addr::Inet(SocketAddr::V6(d)))) => {
                out.extend_from_slice(&s.ip().octets());
                out.extend_from_slice(&d.ip().octets());
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&d.port().to_be_bytes());
            }
            (Some(Addr::Unix(s)), Some(Addr::Unix(d))) => {
                write_unix_path(&mut out, s.as_deref())?;
                write_unix_path(&mut out, d.as_deref())?;
            }
            // LOCAL with TLVs: a zero INET block, or nothing for UNSPEC.
            _ => out.resize(out.len() + family.block_len(), 0),
        }

        let mut crc_at = None;
        for t in &self.tlvs {
            out.push(t.kind);
            if t.kind == tlv::CRC32C {
                if crc_at.is_some() {
                    return Err(ProxyError::Unencodable("more than one CRC32C TLV"));
                }
                out.extend_from_slice(&4u16.to_be_bytes());
                crc_at = Some(out.len());
                out.extend_from_slice(&[0; 4]);
            } else {
                // Each value fits: `total` is at most V2_MAX_LEN.
                let len = u16::try_from(t.value.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&t.value);
            }
        }
        if let Some(at) = crc_at {
            let crc = crc32c(&out).to_be_bytes();
            if let Some(slot) = out.get_mut(at..at + 4) {
                slot.copy_from_slice(&crc);
            }
        }
        Ok(out)
    }
}

const MIXED_FAMILIES: &str = "the source and destination are of different address families";
const ONE_ADDRESS: &str = "a PROXY header needs both a source and a destination, or neither";

/// The length of a TLV's value as `encode_v2` writes it.
fn encoded_tlv_len(t: &Tlv) -> usize {
    if t.kind == tlv::CRC32C {
        4
    } else {
        t.value.len()
    }
}

/// Writes a 108-byte, NUL-padded `AF_UNIX` path.
fn write_unix_path(out: &mut Vec<u8>, path: Option<&std::path::Path>) -> Result<(), ProxyError> {
    let bytes = path.map_or(&[][..], |p| p.as_os_str().as_bytes());
    if bytes.len() > UNIX_PATH_LEN {
        return Err(ProxyError::Unencodable(
            "a Unix socket path is longer than 108 bytes",
        ));
    }
    if bytes.contains(&0) {
        return Err(ProxyError::Unencodable(
            "a Unix socket path contains a NUL byte",
        ));
    }
    out.extend_from_slice(bytes);
    out.resize(out.len() + UNIX_PATH_LEN - bytes.len(), 0);
    Ok(())
}

/// A version 2 address family.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Unspec,
    Inet,
    Inet6,
    Unix,
}

impl Family {
    fn code(self) -> u8 {
        match self {
            Family::Unspec => 0,
            Family::Inet => 1,
            Family::Inet6 => 2,
            Family::Unix => 3,
        }
    }

    /// The bytes of the family's source and destination addresses.
    fn block_len(self) -> usize {
        match self {
            Family::Unspec => 0,
            Family::Inet => 2 * 4 + 2 * 2,
            Family::Inet6 => 2 * 16 + 2 * 2,
            Family::Unix => 2 * UNIX_PATH_LEN,
        }
    }
}

fn v1_error(what: impl Into<String>) -> ProxyError {
    ProxyError::V1Malformed(what.into())
}

/// Parses a v1 header; `bytes` starts with "PROXY ".
fn parse_v1(bytes: &[u8]) -> Result<Parsed, ProxyError> {
    let window = bytes.get(..V1_MAX_LEN).unwrap_or(bytes);
    let mut line_len = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\r' => match bytes.get(i + 1) {
                Some(b'\n') => {
                    line_len = Some(i);
                    break;
                }
                Some(_) => return Err(v1_error("CR not followed by LF")),
                None => break,
            },
            b'\n' => return Err(v1_error("LF not preceded by CR")),
            b' '..=b'~' => {}
            other => return Err(v1_error(format!("unexpected byte {other:#04x}"))),
        }
    }
    // Refuse a wrong protocol word even before the line is complete.
    let rest = bytes.get(V1_PREFIX.len()..).unwrap_or_default();
    let known = [&b"TCP4 "[..], b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r"]
        .iter()
        .any(|word| match rest.get(..word.len()) {
            Some(start) => start == *word,
            None => word.starts_with(rest),
        });
    if !known {
        let end = rest
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(rest.len());
        let word = String::from_utf8_lossy(rest.get(..end).unwrap_or_default());
        return Err(v1_error(format!("unknown protocol {word:?}")));
    }
    match line_len {
        Some(len) if len + 2 <= V1_MAX_LEN => {
            let line = bytes.get(..len).unwrap_or_default();
            parse_v1_line(line).map(|header| Parsed::Header(header, len + 2))
        }
        Some(_) => Err(ProxyError::V1TooLong),
        None if bytes.len() >= V1_MAX_LEN => Err(ProxyError::V1TooLong),
        None => Ok(Parsed::Incomplete { total: None }),
    }
}

/// Parses a whole v1 line, its CRLF removed.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let mut fields = line.split(|&b| b == b' ').skip(1);
    let v4 = match fields.next() {
        Some(b"TCP4") => true,
        Some(b"TCP6") => false,
        // Whatever follows UNKNOWN is to be ignored.
        Some(b"UNKNOWN") => {
            return Ok(ProxyHeader {
                version: Version::V1,
                command: Command::Proxy,
                protocol: Protocol::Unspecified,
                source: None,
                destination: None,
                tlvs: Vec::new(),
            })
        }
        other => {
            let word = String::from_utf8_lossy(other.unwrap_or_default());
            return Err(v1_error(format!("unknown protocol {word:?}")));
        }
    };
    let mut next = |what: &str| {
        fields
            .next()
            .ok_or_else(|| v1_error(format!("missing {what}")))
    };
    let source_ip = v1_ip(next("source address")?, v4, "source address")?;
    let destination_ip = v1_ip(next("destination address")?, v4, "destination address")?;
    let source_port = v1_port(next("source port")?, "source port")?;
    let destination_port = v1_port(next("destination port")?, "destination port")?;
    if fields.next().is_some() {
        return Err(v1_error("unexpected data after the destination port"));
    }
    Ok(ProxyHeader {
        version: Version::V1,
        command: Command::Proxy,
        protocol: Protocol::Stream,
        source: Some(Addr::Inet(SocketAddr::new(source_ip, source_port))),
        destination: Some(Addr::Inet(SocketAddr::new(
            destination_ip,
            destination_port,
        ))),
        tlvs: Vec::new(),
    })
}

fn v1_ip(field: &[u8], v4: bool, what: &str) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(field).ok();
    let ip = if v4 {
        text.and_then(|t| t.parse::<Ipv4Addr>().ok())
            .map(IpAddr::V4)
    } else {
        text.and_then(|t| t.parse::<Ipv6Addr>().ok())
            .map(IpAddr::V6)
    };
    ip.ok_or_else(|| {
        v1_error(format!(
            "invalid {what} {:?}",
            String::from_utf8_lossy(field)
        ))
    })
}

/// A port: 0 to 65535 in decimal, no sign, no leading zero.
fn v1_port(field: &[u8], what: &str) -> Result<u16, ProxyError> {
    let digits = !field.is_empty()
        && field.len() <= 5
        && field.iter().all(u8::is_ascii_digit)
        && (field.len() == 1 || field.first() != Some(&b'0'));
    // At most 5 digits: no overflow.
    let value = digits.then(|| {
        field
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'))
    });
    match value.map(u16::try_from) {
        Some(Ok(port)) => Ok(port),
        _ => Err(v1_error(format!(
            "invalid {what} {:?}",
            String::from_utf8_lossy(field)
        ))),
    }
}

/// Parses a v2 header; `bytes` starts with the signature.
fn parse_v2(bytes: &[u8]) -> Result<Parsed, ProxyError> {
    let incomplete = Ok(Parsed::Incomplete { total: None });
    let Some(&ver_cmd) = bytes.get(12) else {
        return incomplete;
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2BadVersion(ver_cmd >> 4));
    }
    let command = match ver_cmd & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        other => return Err(ProxyError::V2BadCommand(other)),
    };
    let Some(&fam) = bytes.get(13) else {
        return incomplete;
    };
    let family = match fam >> 4 {
        0 => Family::Unspec,
        1 => Family::Inet,
        2 => Family::Inet6,
        3 => Family::Unix,
        other => return Err(ProxyError::V2BadFamily(other)),
    };
    let protocol = match fam & 0x0f {
        0 => Protocol::Unspecified,
        1 => Protocol::Stream,
        2 => Protocol::Datagram,
        other => return Err(ProxyError::V2BadProtocol(other)),
    };
    let Some(&[hi, lo]) = bytes.get(14..V2_FIXED_LEN) else {
        return incomplete;
    };
    let total = V2_FIXED_LEN + usize::from(u16::from_be_bytes([hi, lo]));
    let Some(header) = bytes.get(..total) else {
        return Ok(Parsed::Incomplete { total: Some(total) });
    };
    let mut parsed = ProxyHeader {
        version: Version::V2,
        command,
        protocol,
        source: None,
        destination: None,
        tlvs: Vec::new(),
    };
    // The receiver ignores an UNSPEC header's bytes, TLVs included.
    if family == Family::Unspec {
        return Ok(Parsed::Header(parsed, total));
    }
    let body = header.get(V2_FIXED_LEN..).unwrap_or_default();
    let too_short = ProxyError::V2AddressesTooShort {
        len: body.len(),
        needed: family.block_len(),
    };
    let Some(block) = body.get(..family.block_len()) else {
        return Err(too_short);
    };
    let Some((source, destination)) = parse_addresses(family, block) else {
        return Err(too_short);
    };
    if command == Command::Proxy {
        parsed.source = Some(source);
        parsed.destination = Some(destination);
    }

    let mut offset = V2_FIXED_LEN + family.block_len();
    let mut rest = header.get(offset..).unwrap_or_default();
    let mut crc_at = None;
    while let Some(&kind) = rest.first() {
        let Some((value, after)) = split_tlv(rest) else {
            return Err(ProxyError::V2BadTlv {
                kind,
                reason: "runs past the end of the header".into(),
            });
        };
        if kind == tlv::CRC32C {
            if value.len() != 4 {
                return Err(ProxyError::V2BadTlv {
                    kind,
                    reason: format!("has a {}-byte value, not 4", value.len()),
                });
            }
            if crc_at.is_some() {
                return Err(ProxyError::V2BadTlv {
                    kind,
                    reason: "appears more than once".into(),
                });
            }
            crc_at = Some(offset + 3);
        }
        parsed.tlvs.push(Tlv {
            kind,
            value: value.to_vec(),
        });
        offset += 3 + value.len();
        rest = after;
    }
    if let Some(at) = crc_at {
        check_crc(header, at)?;
    }
    for t in &parsed.tlvs {
        if t.kind == tlv::SSL {
            SslInfo::parse(&t.value)?;
        }
    }
    Ok(Parsed::Header(parsed, total))
}

/// Splits one type-length-value field off the start of `bytes`: its value
/// and what follows it, or `None` if it runs past the end.
fn split_tlv(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let [_kind, hi, lo, rest @ ..] = bytes else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

/// Takes the first `N` bytes off `bytes`.
fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let head = bytes.get(..N)?.try_into().ok()?;
    *bytes = bytes.get(N..)?;
    Some(head)
}

/// Reads the source and destination of a family's address block.
fn parse_addresses(family: Family, mut block: &[u8]) -> Option<(Addr, Addr)> {
    let b = &mut block;
    match family {
        Family::Unspec => None,
        Family::Inet => {
            let (s, d) = (Ipv4Addr::from(take::<4>(b)?), Ipv4Addr::from(take::<4>(b)?));
            let (sp, dp) = (u16::from_be_bytes(take(b)?), u16::from_be_bytes(take(b)?));
            Some((
                Addr::Inet(SocketAddr::V4(SocketAddrV4::new(s, sp))),
                Addr::Inet(SocketAddr::V4(SocketAddrV4::new(d, dp))),
            ))
        }
        Family::Inet6 => {
            let (s, d) = (
                Ipv6Addr::from(take::<16>(b)?),
                Ipv6Addr::from(take::<16>(b)?),
            );
            let (sp, dp) = (u16::from_be_bytes(take(b)?), u16::from_be_bytes(take(b)?));
            Some((
                Addr::Inet(SocketAddr::V6(SocketAddrV6::new(s, sp, 0, 0))),
                Addr::Inet(SocketAddr::V6(SocketAddrV6::new(d, dp, 0, 0))),
            ))
        }
        Family::Unix => {
            let s = take::<UNIX_PATH_LEN>(b)?;
            let d = take::<UNIX_PATH_LEN>(b)?;
            Some((unix_addr(&s), unix_addr(&d)))
        }
    }
}

/// A NUL-padded `AF_UNIX` path; an empty or abstract one (starting with
/// NUL) is an unnamed socket.
fn unix_addr(raw: &[u8]) -> Addr {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    match raw.get(..end) {
        Some(path) if !path.is_empty() => Addr::Unix(Some(PathBuf::from(OsStr::from_bytes(path)))),
        _ => Addr::Unix(None),
    }
}

/// Checks the CRC32C TLV whose 4-byte value is at `at` in `header`.
fn check_crc(header: &[u8], at: usize) -> Result<(), ProxyError> {
    let (Some(before), Some(value), Some(after)) = (
        header.get(..at),
        header.get(at..at + 4),
        header.get(at + 4..),
    ) else {
        return Err(ProxyError::Checksum);
    };
    let expected = value.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b));
    let crc = !crc32c_update(crc32c_update(crc32c_update(!0, before), &[0; 4]), after);
    if crc == expected {
        Ok(())
    } else {
        Err(ProxyError::Checksum)
    }
}

/// CRC32C (Castagnoli), reflected, polynomial 0x82F63B78.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Continues a CRC32C over `bytes`, without the initial and final
/// inversions.
fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(crc, |crc, &b| {
        (crc >> 8) ^ CRC32C_TABLE[usize::from(crc as u8 ^ b)]
    })
}

/// The CRC32C of `bytes`.
fn crc32c(bytes: &[u8]) -> u32 {
    !crc32c_update(!0, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header laid out as HAProxy writes it for `send-proxy-v2` with
    /// `proxy-v2-options crc32c,authority,unique-id,ssl,cert-cn,ssl-cipher,
    /// cert-sig,cert-key` on a TLS connection in a network namespace:
    /// 192.0.2.10:56324 -> 198.51.100.1:443, then the TLVs in HAProxy's
    /// order (CRC32C, ALPN, AUTHORITY, UNIQUE_ID, SSL, NETNS). Built byte
    /// by byte from the specification, its checksum computed by a separate
    /// implementation.
    const HAPROXY_V2: [u8; 159] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00,
        0x8f, 0xc0, 0x00, 0x02, 0x0a, 0xc6, 0x33, 0x64, 0x01, 0xdc, 0x04, 0x01, 0xbb, 0x03, 0x00,
        0x04, 0xa1, 0x6f, 0xb5, 0x5d, 0x01, 0x00, 0x02, 0x68, 0x32, 0x02, 0x00, 0x0b, 0x65, 0x78,
        0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x05, 0x00, 0x08, 0x63, 0x30, 0x66,
        0x66, 0x65, 0x65, 0x2d, 0x31, 0x20, 0x00, 0x54, 0x07, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00,
        0x07, 0x54, 0x4c, 0x53, 0x76, 0x31, 0x2e, 0x33, 0x22, 0x00, 0x12, 0x63, 0x6c, 0x69, 0x65,
        0x6e, 0x74, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x23,
        0x00, 0x16, 0x54, 0x4c, 0x53, 0x5f, 0x41, 0x45, 0x53, 0x5f, 0x32, 0x35, 0x36, 0x5f, 0x47,
        0x43, 0x4d, 0x5f, 0x53, 0x48, 0x41, 0x33, 0x38, 0x34, 0x24, 0x00, 0x0a, 0x52, 0x53, 0x41,
        0x2d, 0x53, 0x48, 0x41, 0x32, 0x35, 0x36, 0x25, 0x00, 0x07, 0x52, 0x53, 0x41, 0x32, 0x30,
        0x34, 0x38, 0x30, 0x00, 0x04, 0x62, 0x6c, 0x75, 0x65,
    ];

    fn header(bytes: &[u8]) -> (ProxyHeader, usize) {
        match ProxyHeader::parse(bytes) {
            Ok(Parsed::Header(h, n)) => (h, n),
            other => panic!("expected a header, got {other:?}"),
        }
    }

    fn error(bytes: &[u8]) -> ProxyError {
        match ProxyHeader::parse(bytes) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn inet(s: &str) -> Option<Addr> {
        Some(Addr::Inet(s.parse().unwrap()))
    }

    /// A v2 header: ver_cmd, fam, then the body; the length is filled in.
    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend([ver_cmd, fam]);
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
        out
    }

    fn tlv_bytes(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend((value.len() as u16).to_be_bytes());
        out.extend(value);
        out
    }

    const INET_BLOCK: [u8; 12] = [192, 0, 2, 7, 198, 51, 100, 1, 0xc7, 0x38, 0x01, 0xbb];

    // CRC32C

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720, B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xff; 32]), 0x62A8_AB43);
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

    // Version 1

    #[test]
    fn v1_tcp4_with_data_after_it() {
        let data = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\nGET /";
        let (h, n) = header(data);
        assert_eq!(n, data.len() - 5);
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(h.protocol, Protocol::Stream);
        assert_eq!(h.source, inet("192.0.2.7:51000"));
        assert_eq!(h.destination, inet("198.51.100.1:443"));
        assert!(h.tlvs.is_empty());
    }

    #[test]
    fn v1_tcp6_and_ports_at_the_limits() {
        let (h, _) = header(b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 0 65535\r\n");
        assert_eq!(h.source, inet("[::ffff:192.0.2.7]:0"));
        assert_eq!(h.destination, inet("[2001:db8::1]:65535"));
    }

    #[test]
    fn v1_unknown_ignores_the_rest_of_the_line() {
        let unknown = ProxyHeader {
            version: Version::V1,
            command: Command::Proxy,
            protocol: Protocol::Unspecified,
            source: None,
            destination: None,
            tlvs: vec![],
        };
        assert_eq!(header(b"PROXY UNKNOWN\r\n"), (unknown.clone(), 15));
        let line = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(header(line), (unknown, line.len()));
    }

    #[test]
    fn v1_longest_header_is_accepted() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 2, b'x');
        line.extend(b"\r\n");
        assert_eq!(header(&line).1, V1_MAX_LEN);
        // The TCP6 header with the longest addresses and ports fits too.
        let max = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {max} {max} 65535 65535\r\n");
        assert_eq!(header(line.as_bytes()).1, line.len());
    }

    #[test]
    fn v1_without_crlf_in_107_bytes_is_too_long() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(
            ProxyHeader::parse(&line),
            Ok(Parsed::Incomplete { total: None })
        );
        line.push(b'\r');
        assert_eq!(error(&line), ProxyError::V1TooLong);
        line.push(b'\n');
        assert_eq!(error(&line), ProxyError::V1TooLong);
        assert_eq!(
            error(&line).to_string(),
            "PROXY v1 header longer than 107 bytes"
        );
    }

    #[test]
    fn v1_partial_lines_are_incomplete() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n";
        for n in 0..line.len() {
            assert_eq!(
                ProxyHeader::parse(&line[..n]),
                Ok(Parsed::Incomplete { total: None }),
                "{n}"
            );
        }
    }

    #[test]
    fn v1_unknown_protocol_is_refused_before_the_line_ends() {
        assert_eq!(error(b"PROXY UDP4 "), v1_error("unknown protocol \"UDP4\""));
        assert_eq!(error(b"PROXY TCPX"), v1_error("unknown protocol \"TCPX\""));
        assert_eq!(
            error(b"PROXY TCP4\r\n"),
            v1_error("unknown protocol \"TCP4\"")
        );
        assert_eq!(
            error(b"PROXY UNKNOWNX\r\n"),
            v1_error("unknown protocol \"UNKNOWNX\"")
        );
        assert_eq!(error(b"PROXY  TCP4"), v1_error("unknown protocol \"\""));
    }

    #[test]
    fn v1_bad_addresses_name_the_field() {
        let cases: [(&[u8], &str); 7] = [
            (
                b"PROXY TCP4 1.2.3 198.51.100.1 1 2\r\n",
                "invalid source address \"1.2.3\"",
            ),
            (
                b"PROXY TCP4 192.0.2.7 ::1 1 2\r\n",
                "invalid destination address \"::1\"",
            ),
            (
                b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
                "invalid source address \"192.0.2.7\"",
            ),
            (
                b"PROXY TCP4 192.0.2.07 198.51.100.1 1 2\r\n",
                "invalid source address \"192.0.2.07\"",
            ),
            (
                b"PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n",
                "invalid destination address \"\"",
            ),
            (
                b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
                "invalid source address \"fe80::1%eth0\"",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n",
                "unexpected data after the destination port",
            ),
        ];
        for (line, why) in cases {
            assert_eq!(
                error(line),
                v1_error(why),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            error(cases[0].0).to_string(),
            "PROXY v1: invalid source address \"1.2.3\""
        );
    }

    #[test]
    fn v1_bad_ports_name_the_field() {
        for port in [
            "", "65536", "99999", "080", "00", "+80", "-1", "8a", "123456", " 1",
        ] {
            let line = format!("PROXY TCP4 192.0.2.7 198.51.100.1 {port} 443\r\n");
            assert!(
                matches!(error(line.as_bytes()), ProxyError::V1Malformed(ref why) if why.contains("source port") || why.contains("destination port")),
                "{line:?}"
            );
        }
        assert_eq!(
            error(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 0443\r\n"),
            v1_error("invalid destination port \"0443\"")
        );
    }

    #[test]
    fn v1_missing_fields_are_named() {
        assert_eq!(
            error(b"PROXY TCP4 \r\n"),
            v1_error("invalid source address \"\"")
        );
        assert_eq!(
            error(b"PROXY TCP4 192.0.2.7\r\n"),
            v1_error("missing destination address")
        );
        assert_eq!(
            error(b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n"),
            v1_error("missing destination port")
        );
    }

    #[test]
    fn v1_stray_cr_lf_nul_and_controls_are_malformed() {
        assert_eq!(
            error(b"PROXY UNKNOWN\rx\n"),
            v1_error("CR not followed by LF")
        );
        assert_eq!(error(b"PROXY UNKNOWN\n"), v1_error("LF not preceded by CR"));
        assert_eq!(
            error(b"PROXY UNKNOWN \0\r\n"),
            v1_error("unexpected byte 0x00")
        );
        assert_eq!(error(b"PROXY UNKNOWN \t"), v1_error("unexpected byte 0x09"));
        assert_eq!(
            error(b"PROXY UNKNOWN \xc3\xa9\r\n"),
            v1_error("unexpected byte 0xc3")
        );
    }

    // Version 2

    #[test]
    fn v2_as_haproxy_sends_it() {
        let mut data = HAPROXY_V2.to_vec();
        data.extend(b"\x16\x03\x01"); // the client's TLS hello follows
        let (h, n) = header(&data);
        assert_eq!(n, HAPROXY_V2.len());
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(h.protocol, Protocol::Stream);
        assert_eq!(h.source, inet("192.0.2.10:56324"));
        assert_eq!(h.destination, inet("198.51.100.1:443"));
        let kinds: Vec<u8> = h.tlvs.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                tlv::CRC32C,
                tlv::ALPN,
                tlv::AUTHORITY,
                tlv::UNIQUE_ID,
                tlv::SSL,
                tlv::NETNS
            ]
        );
        assert_eq!(h.tlv(tlv::CRC32C), Some(&[0xa1, 0x6f, 0xb5, 0x5d][..]));
        assert_eq!(h.alpn(), Some(&b"h2"[..]));
        assert_eq!(h.authority(), Some("example.com"));
        assert_eq!(h.unique_id(), Some(&b"c0ffee-1"[..]));
        assert_eq!(h.netns(), Some("blue"));
        let ssl = h.ssl().unwrap();
        assert_eq!(
            ssl,
            SslInfo {
                client: 0x07,
                verify: 0,
                version: Some("TLSv1.3".into()),
                common_name: Some("client.example.com".into()),
                cipher: Some("TLS_AES_256_GCM_SHA384".into()),
                sig_alg: Some("RSA-SHA256".into()),
                key_alg: Some("RSA2048".into()),
            }
        );
        assert!(ssl.is_ssl());
        assert!(ssl.client_cert_verified());
        // Our encoder writes the same bytes.
        assert_eq!(h.encode(Version::V2).unwrap(), HAPROXY_V2);
    }

    #[test]
    fn v2_prefixes_are_incomplete_with_the_total_once_known() {
        for n in 0..HAPROXY_V2.len() {
            let want = if n < 16 { None } else { Some(HAPROXY_V2.len()) };
            assert_eq!(
                ProxyHeader::parse(&HAPROXY_V2[..n]),
                Ok(Parsed::Incomplete { total: want }),
                "{n}"
            );
        }
    }

    #[test]
    fn v2_inet6_and_unix_addresses() {
        let mut block = vec![0x20, 0x01, 0x0d, 0xb8];
        block.resize(16, 0);
        block.extend(Ipv6Addr::LOCALHOST.octets());
        block.extend([0xc7, 0x38, 0x01, 0xbb]);
        let (h, _) = header(&v2(0x21, 0x22, &block));
        assert_eq!(h.protocol, Protocol::Datagram);
        assert_eq!(h.source, inet("[2001:db8::]:51000"));
        assert_eq!(h.destination, inet("[::1]:443"));

        let mut block = b"/run/client.sock".to_vec();
        block.resize(108, 0);
        block.extend(b"\0abstract");
        block.resize(216, 0);
        let (h, _) = header(&v2(0x21, 0x31, &block));
        assert_eq!(h.source, Some(Addr::Unix(Some("/run/client.sock".into()))));
        assert_eq!(h.destination, Some(Addr::Unix(None)));
        // A path of all 108 bytes, no NUL.
        let (h, _) = header(&v2(0x21, 0x31, &[b'a'; 216]));
        let path = h.source.as_ref().and_then(Addr::unix_path).unwrap();
        assert_eq!(path.as_os_str().len(), 108);
    }

    #[test]
    fn v2_local_parses_the_block_and_tlvs_but_keeps_no_addresses() {
        let mut body = INET_BLOCK.to_vec();
        body.extend(tlv_bytes(tlv::NOOP, b""));
        body.extend(tlv_bytes(tlv::UNIQUE_ID, b"id"));
        let (h, _) = header(&v2(0x20, 0x11, &body));
        assert_eq!(h.command, Command::Local);
        assert_eq!((h.source, h.destination), (None, None));
        assert_eq!(
            h.tlvs,
            [
                Tlv {
                    kind: tlv::NOOP,
                    value: vec![]
                },
                Tlv {
                    kind: tlv::UNIQUE_ID,
                    value: b"id".to_vec()
                }
            ]
        );
        assert_eq!(
            error(&v2(0x20, 0x11, &INET_BLOCK[..11])),
            ProxyError::V2AddressesTooShort {
                len: 11,
                needed: 12
            }
        );
    }

    #[test]
    fn v2_unspec_skips_the_whole_block() {
        let (h, n) = header(&v2(0x21, 0x00, b"\xff\xff anything"));
        assert_eq!(n, 16 + 11);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!((h.source, h.destination), (None, None));
        assert!(h.tlvs.is_empty());
        assert_eq!(header(&v2(0x20, 0x00, b"")).0, ProxyHeader::local());
    }

    #[test]
    fn v2_bad_fixed_part_fields() {
        assert_eq!(
            error(&v2(0x11, 0x11, &INET_BLOCK)),
            ProxyError::V2BadVersion(1)
        );
        assert_eq!(
            error(&v2(0x25, 0x11, &INET_BLOCK)),
            ProxyError::V2BadCommand(5)
        );
        assert_eq!(
            error(&v2(0x21, 0x41, &INET_BLOCK)),
            ProxyError::V2BadFamily(4)
        );
        assert_eq!(
            error(&v2(0x21, 0x13, &INET_BLOCK)),
            ProxyError::V2BadProtocol(3)
        );
        // Refused as soon as the byte arrives.
        assert_eq!(
            error(&v2(0x25, 0x11, &INET_BLOCK)[..13]),
            ProxyError::V2BadCommand(5)
        );
        assert_eq!(
            error(&v2(0x21, 0x41, &INET_BLOCK)[..14]),
            ProxyError::V2BadFamily(4)
        );
        assert_eq!(
            ProxyError::V2BadCommand(5).to_string(),
            "PROXY v2: unknown command 0x5"
        );
    }

    #[test]
    fn v2_addresses_too_short() {
        assert_eq!(
            error(&v2(0x21, 0x21, &[0; 35])),
            ProxyError::V2AddressesTooShort {
                len: 35,
                needed: 36
            }
        );
        assert_eq!(
            error(&v2(0x21, 0x31, &[0; 215])),
            ProxyError::V2AddressesTooShort {
                len: 215,
                needed: 216
            }
        );
    }

    #[test]
    fn v2_tlv_running_past_the_end() {
        let mut body = INET_BLOCK.to_vec();
        body.extend([tlv::SSL, 0x00, 0x06, 1, 0, 0, 0, 0]);
        let err = error(&v2(0x21, 0x11, &body));
        assert_eq!(
            err.to_string(),
            "PROXY v2: TLV 0x20 runs past the end of the header"
        );
        // Fewer than 3 bytes left for a TLV's type and length.
        for tail in [&[0x01][..], &[0x01, 0x00]] {
            let body = [&INET_BLOCK[..], tail].concat();
            assert!(matches!(
                error(&v2(0x21, 0x11, &body)),
                ProxyError::V2BadTlv { kind: 1, .. }
            ));
        }
    }

    fn with_crc(body: &[u8]) -> Vec<u8> {
        let mut bytes = v2(0x21, 0x11, body);
        let at = bytes.len() - 4;
        let crc = crc32c(&bytes);
        bytes[at..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn v2_crc32c_is_checked() {
        let mut body = INET_BLOCK.to_vec();
        body.extend(tlv_bytes(tlv::CRC32C, &[0; 4]));
        let good = with_crc(&body);
        assert_eq!(header(&good).1, good.len());
        let mut bad = good.clone();
        bad[17] ^= 1;
        assert_eq!(error(&bad), ProxyError::Checksum);
        assert_eq!(
            error(&bad).to_string(),
            "PROXY v2: CRC32C checksum mismatch"
        );
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0x80;
        assert_eq!(error(&bad), ProxyError::Checksum);
    }

    #[test]
    fn v2_crc32c_of_the_wrong_size_or_twice_is_refused() {
        let mut body = INET_BLOCK.to_vec();
        body.extend(tlv_bytes(tlv::CRC32C, &[0; 3]));
        assert!(matches!(
            error(&v2(0x21, 0x11, &body)),
            ProxyError::V2BadTlv { kind: tlv::CRC32C, ref reason } if reason == "has a 3-byte value, not 4"
        ));
        let mut body = INET_BLOCK.to_vec();
        body.extend(tlv_bytes(tlv::CRC32C, &[0; 4]));
        body.extend(tlv_bytes(tlv::CRC32C, &[0; 4]));
        assert!(matches!(
            error(&v2(0x21, 0x11, &body)),
            ProxyError::V2BadTlv { kind: tlv::CRC32C, ref reason } if reason == "appears more than once"
        ));
    }

    #[test]
    fn v2_malformed_ssl_tlvs_are_refused() {
        let cases: [(&[u8], &str); 4] = [
            (
                &[0x01, 0, 0, 0],
                "has 4 bytes, fewer than its client and verify fields (5)",
            ),
            (
                &[0x01, 0, 0, 0, 0, 0x21, 0x00],
                "sub-field 0x21 runs past the end of the SSL TLV",
            ),
            (
                &[0x01, 0, 0, 0, 0, 0x22, 0x00, 0x05, b'a'],
                "sub-field 0x22 runs past the end of the SSL TLV",
            ),
            (
                &[0x01, 0, 0, 0, 0, 0x23, 0x00, 0x01, 0xff],
                "sub-field 0x23 is not UTF-8",
            ),
        ];
        for (value, why) in cases {
            let body = [&INET_BLOCK[..], &tlv_bytes(tlv::SSL, value)].concat();
            let err = error(&v2(0x21, 0x11, &body));
            assert_eq!(
                err,
                ProxyError::V2BadTlv {
                    kind: tlv::SSL,
                    reason: why.into()
                }
            );
            // A hand-built header with such a value has no SSL information.
            assert_eq!(ProxyHeader::local().with_tlv(tlv::SSL, value).ssl(), None);
        }
    }

    #[test]
    fn v2_ssl_unknown_sub_fields_are_skipped_and_the_first_of_a_kind_counts() {
        let mut value = vec![0x05, 0, 0, 0, 0];
        value.extend(tlv_bytes(0x26, b"\xff\xfe"));
        value.extend(tlv_bytes(tlv::SSL_CN, b"first"));
        value.extend(tlv_bytes(tlv::SSL_CN, b"second"));
        let body = [&INET_BLOCK[..], &tlv_bytes(tlv::SSL, &value)].concat();
        let ssl = header(&v2(0x21, 0x11, &body)).0.ssl().unwrap();
        assert_eq!(ssl.common_name.as_deref(), Some("first"));
        assert!(ssl.is_ssl());
        assert!(ssl.client_cert_verified()); // CERT_SESS, verify 0
        let no_cert = SslInfo {
            client: 0x01,
            ..ssl.clone()
        };
        assert!(!no_cert.client_cert_verified());
        let failed = SslInfo { verify: 20, ..ssl };
        assert!(!failed.client_cert_verified());
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

    // Encoding

    #[test]
    fn encode_v1_refuses_what_it_cannot_carry() {
        let tcp = ProxyHeader::tcp(
            "192.0.2.7:1".parse().unwrap(),
            "198.51.100.1:2".parse().unwrap(),
        );
        let with_tlv = tcp.clone().with_tlv(tlv::ALPN, "h2");
        assert_eq!(
            with_tlv.encode(Version::V1),
            Err(ProxyError::Unencodable("PROXY v1 carries no TLVs"))
        );
        let mut unix = tcp.clone();
        unix.source = Some(Addr::Unix(None));
        unix.destination = Some(Addr::Unix(None));
        assert!(unix.encode(Version::V1).is_err());
        let mut udp = tcp.clone();
        udp.protocol = Protocol::Datagram;
        assert!(udp.encode(Version::V1).is_err());
        let mixed = ProxyHeader::tcp("192.0.2.7:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(
            mixed.encode(Version::V1),
            Err(ProxyError::Unencodable(MIXED_FAMILIES))
        );
        assert_eq!(
            mixed.encode(Version::V2),
            Err(ProxyError::Unencodable(MIXED_FAMILIES))
        );
        let mut half = tcp;
        half.destination = None;
        assert_eq!(
            half.encode(Version::V1),
            Err(ProxyError::Unencodable(ONE_ADDRESS))
        );
        assert_eq!(
            half.encode(Version::V2),
            Err(ProxyError::Unencodable(ONE_ADDRESS))
        );
    }

    #[test]
    fn encode_v2_refuses_what_it_cannot_carry() {
        let mut h = ProxyHeader::local()
            .with_tlv(tlv::CRC32C, [0; 4])
            .with_tlv(tlv::CRC32C, [0; 4]);
        h.source = inet("192.0.2.7:1");
        h.destination = inet("198.51.100.1:2");
        assert!(h.encode(Version::V2).is_err());
        let mut h = ProxyHeader::local().with_tlv(tlv::NOOP, "x");
        h.command = Command::Proxy;
        assert!(h.encode(Version::V2).is_err());
        let long = ProxyHeader::local().with_tlv(0xe0, vec![0u8; 65_535]);
        assert_eq!(
            long.encode(Version::V2),
            Err(ProxyError::TooLong {
                len: 16 + 12 + 3 + 65_535,
                max: V2_MAX_LEN
            })
        );
        let fits = ProxyHeader::local().with_tlv(0xe0, vec![0u8; 65_535 - 12 - 3]);
        assert_eq!(fits.encode(Version::V2).unwrap().len(), V2_MAX_LEN);
        let mut h = ProxyHeader::local();
        h.source = Some(Addr::Unix(Some("a\0b".into())));
        h.destination = Some(Addr::Unix(None));
        assert!(h.encode(Version::V2).is_err());
        h.source = Some(Addr::Unix(Some("a".repeat(109).into())));
        assert!(h.encode(Version::V2).is_err());
    }

    #[test]
    fn encode_v2_local_with_tlvs_round_trips() {
        let h = ProxyHeader::local()
            .with_tlv(tlv::CRC32C, [0; 4])
            .with_tlv(tlv::UNIQUE_ID, "id");
        let bytes = h.encode(Version::V2).unwrap();
        assert_eq!(bytes[13], 0x10);
        let (back, n) = header(&bytes);
        assert_eq!(n, bytes.len());
        assert_eq!(back.tlvs[1], h.tlvs[1]);
        assert_eq!(back.tlv(tlv::CRC32C).map(<[u8]>::len), Some(4));
    }

    #[test]
    fn encode_v1_unknown_for_local_and_addressless_headers() {
        assert_eq!(
            ProxyHeader::local().encode(Version::V1).unwrap(),
            b"PROXY UNKNOWN\r\n"
        );
        let mut h = ProxyHeader::local();
        h.command = Command::Proxy;
        assert_eq!(h.encode(Version::V1).unwrap(), b"PROXY UNKNOWN\r\n");
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
