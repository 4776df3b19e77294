//! Transports: how bytes cross a connection, and how to listen. Imports
//! nothing of the server, the pool or UDP.
//!
//! The server listens and accepts itself, on TCP or a Unix socket (see
//! [`ListenOptions`]); a [`Transport`] then turns each accepted socket
//! ([`Io`]) into a [`Stream`], possibly after a handshake: [`Tcp`] passes
//! the bytes through, `NativeTls` (feature `tls`) and `Rustls` (feature
//! `rustls`) encrypt them. Applications can
//! implement [`Transport`] and [`Stream`] for their own framing or cipher.
//!
//! The same pieces work outside a server: [`Listener::bind`] listens with options, [`Listener::accept`]
//! accepts with an optional timeout and returns a ready [`Socket`](crate::Socket), whose
//! `recv` and `send` block with timeouts.
//!
//! # Implementing a transport
//!
//! A toy cipher that XORs every byte with a key, on top of the accepted
//! socket:
//!
//! ```
//! use std::io::{self, IoSlice, Read, Write};
//! use atoll::transport::{Handshake, Io, Stream, Transport};
//!
//! struct Xor(u8);
//!
//! struct XorStream {
//!     io: Io,
//!     key: u8,
//! }
//!
//! impl Transport for Xor {
//!     fn name(&self) -> &'static str {
//!         "xor"
//!     }
//!
//!     fn handshake(&self, io: Io) -> Handshake {
//!         Handshake::Done(Box::new(XorStream { io, key: self.0 }))
//!     }
//! }
//!
//! impl Stream for XorStream {
//!     fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
//!         let n = (&self.io).read(buf)?;
//!         buf[..n].iter_mut().for_each(|b| *b ^= self.key);
//!         Ok(n)
//!     }
//!
//!     fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
//!         // Encrypt the first slice only: a short write is allowed.
//!         let plain = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
//!         let cipher: Vec<u8> = plain.iter().map(|b| b ^ self.key).collect();
//!         (&self.io).write(&cipher)
//!     }
//!
//!     fn io(&self) -> &Io {
//!         &self.io
//!     }
//! }
//!
//! let server = atoll::Server::builder()
//!     .ip([127, 0, 0, 1].into())
//!     .port(0)
//!     .transport(Xor(0x5a))
//!     .start(|_| Ok(Echo))?;
//! # struct Echo;
//! # impl atoll::Handler for Echo {
//! #     fn handle_data(&mut self, d: &[u8], s: &mut atoll::Socket) -> atoll::Flow {
//! #         s.send(d).map_or_else(atoll::Flow::error, |()| atoll::Flow::Continue)
//! #     }
//! # }
//! let mut client = std::net::TcpStream::connect(server.local_addr()?.inet().unwrap())?;
//! client.write_all(&[b'h' ^ 0x5a, b'i' ^ 0x5a])?;
//! let mut reply = [0u8; 2];
//! client.read_exact(&mut reply)?;
//! assert_eq!(reply, [b'h' ^ 0x5a, b'i' ^ 0x5a]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod io;
mod listen;
mod listener;
#[cfg(feature = "tls")]
mod native;
#[cfg(feature = "rustls")]
mod rustls;

use std::fmt;
use std::io::IoSlice;
use std::os::fd::RawFd;

pub use self::io::{Credentials, Io};
pub use self::listen::ListenOptions;
pub(crate) use self::listen::{listen_setters, ListenSocket};
pub(crate) use self::listener::{handshake_blocking, AcceptFailure};
pub use self::listener::{AcceptError, Listener};
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use self::native::NativeTls;
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub use self::rustls::{ClientAuth, Rustls};
pub use crate::addr::Addr;

use crate::error::BoxError;

/// Turns accepted sockets into [`Stream`]s: the Rust form of Thousand
/// Island's `Transport` behaviour, for the part that differs between
/// transports (listening and accepting are the same for all, see
/// [`ListenOptions`]).
///
/// A transport is shared by every connection of a server; it must be
/// `Send + Sync`.
pub trait Transport: Send + Sync + 'static {
    /// A short name, for logs: `"tcp"`, `"tls"`, ...
    fn name(&self) -> &'static str;

    /// Whether the streams it makes are encrypted.
    fn is_secure(&self) -> bool {
        false
    }

    /// Starts the handshake on a freshly accepted, non-blocking socket.
    /// Called on a worker thread; it must not block: when it needs more
    /// bytes from the peer it returns [`Handshake::Pending`], and the server
    /// resumes it when the socket is readable, within the server's
    /// `handshake_timeout`.
    fn handshake(&self, io: Io) -> Handshake;
}

/// The state of a handshake.
pub enum Handshake {
    /// The stream is ready.
    Done(Box<dyn Stream>),
    /// Waiting for the peer; resume when the socket is readable.
    Pending(Box<dyn PendingHandshake>),
    /// The handshake failed (plain text on a TLS port, bad version, the
    /// client refused the certificate, ...).
    Failed(BoxError),
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handshake::Done(_) => f.write_str("Done(..)"),
            Handshake::Pending(_) => f.write_str("Pending(..)"),
            Handshake::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

/// A handshake waiting for the peer.
pub trait PendingHandshake: Send {
    /// Continues the handshake after the socket became readable.
    fn resume(self: Box<Self>) -> Handshake;

    /// The socket the handshake runs on.
    fn io(&self) -> &Io;
}

/// A connection's byte stream over an accepted socket, as a [`Transport`]
/// made it. Reads and writes are non-blocking: they return
/// [`WouldBlock`](std::io::ErrorKind::WouldBlock) when the socket is not
/// ready, and [`Socket`](crate::Socket) waits for readiness around them.
pub trait Stream: Send {
    /// Reads bytes into `buf`; `Ok(0)` is the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;

    /// Writes some of the bytes of `bufs`, in order; returns how many.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize>;

    /// Pushes out bytes the stream buffered (a TLS record, say);
    /// `WouldBlock` if the socket cannot take them yet.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// The accepted socket underneath.
    fn io(&self) -> &Io;

    /// Waits until the stream is readable or `deadline` passes (`Ok(false)`
    /// then), for a stream whose readiness is not its descriptor's (a UDP
    /// session shares its socket with every other peer). `None`, the
    /// default, waits on [`io`](Stream::io)'s descriptor.
    fn wait_readable(&self, deadline: Option<std::time::Instant>) -> Option<std::io::Result<bool>> {
        let _ = deadline;
        None
    }

    /// Whether a read shorter than its buffer proves the socket drained.
    /// True for a plain socket; a stream that reads ahead into its own
    /// buffer (TLS) returns false, and the server reads it until
    /// `WouldBlock`.
    fn short_read_drains(&self) -> bool {
        false
    }

    /// Shuts down one or both directions. The default shuts down the
    /// socket; TLS sends its close alert first.
    fn shutdown(&mut self, how: std::net::Shutdown) -> std::io::Result<()> {
        self.io().shutdown(how)
    }

    /// The descriptor `sendfile(2)` can write to, when the stream's bytes
    /// go to the socket unchanged. `None` (the default) makes
    /// [`Socket::sendfile`](crate::Socket::sendfile) read and write in
    /// chunks instead.
    fn splice_fd(&self) -> Option<RawFd> {
        None
    }

    /// The application protocol chosen by ALPN, if any.
    fn negotiated_protocol(&self) -> Option<Vec<u8>> {
        None
    }

    /// The peer's certificate in DER, if it sent one.
    fn peer_certificate(&self) -> Option<Vec<u8>> {
        None
    }

    /// What the TLS handshake settled, for a TLS stream; `None` (the
    /// default) for a plain one.
    fn tls_info(&self) -> Option<TlsInfo> {
        None
    }

    /// Gives the socket back for an upgrade (STARTTLS), if the stream is a
    /// plain pass-through.
    fn into_io(self: Box<Self>) -> Option<Io> {
        None
    }
}

/// What a connection's TLS handshake settled (Thousand Island's
/// `connection_information`), from
/// [`Socket::tls_info`](crate::Socket::tls_info). A field is `None` where
/// the backend does not expose it: `Rustls` gives all three; `NativeTls`
/// (whose system libraries are hidden behind one portable API) gives none.
///
/// ```
/// let info = atoll::transport::TlsInfo::default();
/// assert_eq!(info.protocol, None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version.
    pub protocol: Option<TlsVersion>,
    /// The cipher suite, by its IANA name (`"TLS13_AES_256_GCM_SHA384"`).
    pub cipher_suite: Option<String>,
    /// The server name the client asked for (SNI).
    pub server_name: Option<String>,
}

/// The oldest TLS version a server accepts.
///
/// ```
/// assert_ne!(atoll::transport::TlsVersion::Tls12, atoll::transport::TlsVersion::Tls13);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (the default minimum).
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// Plain TCP (or Unix socket) bytes: the default transport.
///
/// ```
/// let builder = atoll::Server::builder().transport(atoll::transport::Tcp);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Tcp;

impl Transport for Tcp {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn handshake(&self, io: Io) -> Handshake {
        Handshake::Done(Box::new(Plain(io)))
    }
}

/// The stream of [`Tcp`].
struct Plain(Io);

impl Stream for Plain {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_some(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        self.0.write_some(bufs)
    }

    fn io(&self) -> &Io {
        &self.0
    }

    fn short_read_drains(&self) -> bool {
        true
    }

    fn splice_fd(&self) -> Option<RawFd> {
        Some(self.0.raw_fd())
    }

    fn into_io(self: Box<Self>) -> Option<Io> {
        Some(self.0)
    }
}
