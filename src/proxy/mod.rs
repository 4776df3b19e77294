//! The PROXY protocol (versions 1 and 2): the original client's address,
//! sent by a load balancer (HAProxy, nginx, cloud L4 balancers) in front
//! of the first bytes of each connection it relays.
//!
//! Turn it on with [`Builder::proxy_protocol`](crate::Builder::proxy_protocol).
//! The server then reads the header before anything else (before the TLS
//! handshake, before the handler is made), without holding a worker while
//! it trickles in, and:
//!
//! - [`Socket::peer_addr`](crate::Socket::peer_addr),
//!   [`Connection::peer_addr`](crate::Connection::peer_addr), telemetry
//!   events and log lines report the original client;
//! - [`Socket::proxy_addr`](crate::Socket::proxy_addr) keeps the proxy's own
//!   address, and [`Socket::proxy_header`](crate::Socket::proxy_header) the
//!   whole header with its TLVs (ALPN, authority, SSL information, unique
//!   id);
//! - a header that is malformed, too long, of a version not accepted, or
//!   not complete within the header timeout closes the connection with
//!   [`Error::ProxyHeader`] to
//!   [`Handler::handle_error`](crate::Handler::handle_error); the handler's
//!   data callbacks never see it.
//!
//! A `LOCAL` header (a proxy's health check) or an `UNKNOWN` one leaves the
//! connection's own addresses in place.
//!
//! [`ProxyHeader::parse`] and [`ProxyHeader::encode`] also work on their
//! own, for a client that speaks to such a server or a proxy written with
//! atoll.
//!
//! # Examples
//!
//! ```
//! use std::io::{Read, Write};
//! use atoll::proxy::{ProxyHeader, ProxyProtocol, Version};
//! use atoll::{Flow, Handler, Server, Socket};
//!
//! struct Greet;
//!
//! impl Handler for Greet {
//!     fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
//!         let hello = format!("hello {}", socket.peer_addr());
//!         socket.send(hello.as_bytes()).map_or_else(Flow::error, |()| Flow::Close)
//!     }
//! }
//!
//! let server = Server::builder()
//!     .ip([127, 0, 0, 1].into())
//!     .port(0)
//!     .proxy_protocol(ProxyProtocol::new())
//!     .start(|_| Ok(Greet))?;
//!
//! // What a load balancer sends first on behalf of 192.0.2.7:
//! let header = ProxyHeader::tcp("192.0.2.7:51000".parse()?, "198.51.100.1:443".parse()?);
//! let mut conn = std::net::TcpStream::connect(server.local_addr()?)?;
//! conn.write_all(&header.encode(Version::V2)?)?;
//! let mut reply = String::new();
//! conn.read_to_string(&mut reply)?;
//! assert_eq!(reply, "hello 192.0.2.7:51000");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod crc32c;
mod header;
mod v1;
mod v2;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::header::*;
pub use self::v1::V1_MAX_LEN;
pub use self::v2::{V2_MAX_LEN, V2_SIGNATURE};

use crate::error::{BoxError, Error};
use crate::sys::Wait;
use crate::transport::{Addr, Io};

/// Whether and how a server reads PROXY protocol headers: the versions it
/// accepts, how long a header may take to arrive and how long it may be.
///
/// ```
/// use std::time::Duration;
/// use atoll::proxy::ProxyProtocol;
///
/// let options = ProxyProtocol::new()
///     .v1(false) // HAProxy's send-proxy-v2 only
///     .header_timeout(Duration::from_secs(2))
///     .max_len(1024);
/// let builder = atoll::Server::builder().proxy_protocol(options);
/// ```
#[derive(Clone)]
#[must_use = "PROXY protocol options do nothing until given to `Builder::proxy_protocol`"]
pub struct ProxyProtocol {
    pub(crate) v1: bool,
    pub(crate) v2: bool,
    pub(crate) header_timeout: Duration,
    pub(crate) max_len: usize,
    trusted: Option<Arc<Trust>>,
}

type Trust = dyn Fn(&Addr) -> bool + Send + Sync;

impl fmt::Debug for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyProtocol")
            .field("v1", &self.v1)
            .field("v2", &self.v2)
            .field("header_timeout", &self.header_timeout)
            .field("max_len", &self.max_len)
            .field("trusted", &self.trusted.as_ref().map(|_| ".."))
            .finish()
    }
}

impl Default for ProxyProtocol {
    fn default() -> ProxyProtocol {
        ProxyProtocol {
            v1: true,
            v2: true,
            header_timeout: Duration::from_secs(5),
            max_len: 4096,
            trusted: None,
        }
    }
}

impl ProxyProtocol {
    /// Both versions, a 5 s header timeout, headers up to 4 KiB.
    ///
    /// ```
    /// let options = atoll::proxy::ProxyProtocol::new();
    /// ```
    pub fn new() -> ProxyProtocol {
        ProxyProtocol::default()
    }

    /// Whether version 1 (text) headers are accepted. Default true.
    ///
    /// ```
    /// let options = atoll::proxy::ProxyProtocol::new().v1(false);
    /// ```
    pub fn v1(mut self, accept: bool) -> ProxyProtocol {
        self.v1 = accept;
        self
    }

    /// Whether version 2 (binary) headers are accepted. Default true.
    ///
    /// ```
    /// let options = atoll::proxy::ProxyProtocol::new().v2(false);
    /// ```
    pub fn v2(mut self, accept: bool) -> ProxyProtocol {
        self.v2 = accept;
        self
    }

    /// How long after the accept the whole header must have arrived.
    /// Default 5 s. The transport's handshake timeout starts after it.
    ///
    /// ```
    /// let options = atoll::proxy::ProxyProtocol::new()
    ///     .header_timeout(std::time::Duration::from_millis(500));
    /// ```
    pub fn header_timeout(mut self, timeout: Duration) -> ProxyProtocol {
        self.header_timeout = timeout;
        self
    }

    /// The longest header accepted, in bytes (a v2 header with its TLVs;
    /// a v1 header is at most 107 bytes whatever this says). Default 4096.
    ///
    /// ```
    /// let options = atoll::proxy::ProxyProtocol::new().max_len(16 + 65535);
    /// ```
    pub fn max_len(mut self, max: usize) -> ProxyProtocol {
        self.max_len = max;
        self
    }

    /// Accepts headers only from the proxies `trust` approves, by the
    /// address of the connection's own peer; a connection from anyone
    /// else is closed with [`Error::ProxyHeader`] before a byte is read.
    /// Without it (the default) any client that reaches the port may
    /// send a header and claim any address: fine when only the proxy can
    /// reach it (a firewall, a loopback or Unix socket).
    ///
    /// ```
    /// use atoll::proxy::ProxyProtocol;
    /// // Only the load balancers on 10.0.0.0/24, and health checks from here.
    /// let options = ProxyProtocol::new().trusted(|proxy| match proxy.ip() {
    ///     Some(std::net::IpAddr::V4(ip)) => ip.octets()[..3] == [10, 0, 0] || ip.is_loopback(),
    ///     _ => false,
    /// });
    /// ```
    pub fn trusted(
        mut self,
        trust: impl Fn(&Addr) -> bool + Send + Sync + 'static,
    ) -> ProxyProtocol {
        self.trusted = Some(Arc::new(trust));
        self
    }

    /// Whether version 1 headers are accepted. Default is `true`.
    ///
    /// ```
    /// assert!(atoll::proxy::ProxyProtocol::new().get_v1());
    /// ```
    pub fn get_v1(&self) -> bool {
        self.v1
    }

    /// Whether version 2 headers are accepted. Default is `true`.
    ///
    /// ```
    /// assert!(atoll::proxy::ProxyProtocol::new().get_v2());
    /// ```
    pub fn get_v2(&self) -> bool {
        self.v2
    }

    /// How long the header may take to arrive. Default is 5 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(atoll::proxy::ProxyProtocol::new().get_header_timeout(), Duration::from_secs(5));
    /// ```
    pub fn get_header_timeout(&self) -> Duration {
        self.header_timeout
    }

    /// The longest header accepted, in bytes. Default is 4096.
    ///
    /// ```
    /// assert_eq!(atoll::proxy::ProxyProtocol::new().get_max_len(), 4096);
    /// ```
    pub fn get_max_len(&self) -> usize {
        self.max_len
    }

    /// Whether a [`trusted`](ProxyProtocol::trusted) filter is set.
    /// Default is `false`: every peer may send a header.
    ///
    /// ```
    /// assert!(!atoll::proxy::ProxyProtocol::new().has_trusted());
    /// ```
    pub fn has_trusted(&self) -> bool {
        self.trusted.is_some()
    }

    /// Refuses a connection whose own peer is not a trusted proxy.
    pub(crate) fn check_trusted(&self, peer: &Addr) -> Result<(), Error> {
        match &self.trusted {
            Some(trust) if !trust(peer) => Err(Error::ProxyHeader(
                format!("{peer} is not a trusted proxy").into(),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.v1 && !self.v2 {
            return Err("proxy_protocol accepts neither version 1 nor version 2".into());
        }
        if self.header_timeout.is_zero() {
            return Err("proxy_protocol's header_timeout must be positive".into());
        }
        if self.max_len < 16 {
            return Err("proxy_protocol's max_len must be at least 16 bytes".into());
        }
        Ok(())
    }
}

/// A relayed connection's header and the proxy it came through.
#[derive(Debug)]
pub(crate) struct Proxied {
    pub(crate) header: ProxyHeader,
    /// The connection's own peer: the proxy.
    pub(crate) via: Addr,
}

impl Proxied {
    /// The original client, when the header names one.
    pub(crate) fn client(&self) -> Option<&Addr> {
        match self.header.command {
            Command::Proxy => self.header.source.as_ref(),
            Command::Local => None,
        }
    }
}

/// Why a connection that closed mid-header ended.
pub(crate) const CUT_SHORT: &str = "the connection closed before its PROXY header was complete";

/// Bytes to look at first: a whole v1 header, or a v2 header with a few
/// TLVs.
const FIRST_PEEK: usize = 256;

/// Reads the PROXY header at the start of `io` without blocking and
/// without taking a byte past it. `Ok(None)`: not all of it has arrived;
/// call again when the socket is readable.
pub(crate) fn read_header(
    io: &Io,
    options: &ProxyProtocol,
) -> Result<Option<ProxyHeader>, BoxError> {
    let mut want = FIRST_PEEK;
    loop {
        let mut buf = vec![0u8; want];
        let n = match crate::sys::peek(io.raw_fd(), &mut buf) {
            Ok(0) => return Err(CUT_SHORT.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Box::new(e)),
        };
        let bytes = buf.get(..n).unwrap_or_default();
        match ProxyHeader::parse(bytes)? {
            Parsed::Header(header, len) => {
                let accepted = match header.version {
                    Version::V1 => options.v1,
                    Version::V2 => options.v2,
                };
                if !accepted {
                    return Err(format!(
                        "PROXY {:?} headers are not accepted here",
                        header.version
                    )
                    .into());
                }
                consume(io, buf.get_mut(..len).unwrap_or_default())?;
                return Ok(Some(header));
            }
            Parsed::Incomplete { total: Some(total) } if total > options.max_len => {
                return Err(format!(
                    "the PROXY header is {total} bytes long, more than the {} accepted",
                    options.max_len
                )
                .into());
            }
            // All that has arrived is in `buf` but the header is longer:
            // look again with room for all of it.
            Parsed::Incomplete { total: Some(total) } if n == want && total > want => want = total,
            Parsed::Incomplete { .. } => return Ok(None),
        }
    }
}

/// [`read_header`] for a blocking accept: waits for the header's bytes
/// until the header timeout. A header that arrives in pieces is looked at
/// again after short pauses (readiness cannot tell new bytes from those
/// already seen).
pub(crate) fn read_header_blocking(
    io: &Io,
    options: &ProxyProtocol,
    peer: &Addr,
) -> Result<ProxyHeader, Error> {
    options.check_trusted(peer)?;
    let deadline = Instant::now() + options.header_timeout;
    let mut pause = Duration::from_millis(1);
    // Whether bytes were there at the last look: then readiness returns at
    // once, and a pause lets more arrive.
    let mut partial = false;
    loop {
        if let Some(header) = read_header(io, options).map_err(Error::ProxyHeader)? {
            return Ok(header);
        }
        if partial {
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        let ready = crate::sys::wait_fd(io.raw_fd(), Wait::Read, Some(deadline))?;
        if !ready || Instant::now() >= deadline {
            return Err(Error::Timeout(crate::Timeout::ProxyHeader));
        }
        partial = true;
    }
}

/// Takes the header's bytes, all already in the kernel's buffer, off the
/// socket, into `buf` (the buffer they were peeked into: the same bytes).
fn consume(io: &Io, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match io.read_some(buf.get_mut(done..).unwrap_or_default()) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
