//! A blocking TCP client for threaded code, with TLS and happy eyeballs.
//!
//! Connect with a
//! per-family timeout and an IP version preference, send, receive with a
//! timeout, receive exactly `n` bytes, shut down; or arm the connection so
//! that its next packet arrives as a message on a channel. Also: TLS
//! (connect, or upgrade a live connection), RFC 8305 happy eyeballs, a
//! name-resolution timeout, and `Read`/`Write`.
//!
//! # Connecting
//!
//! [`connect`] takes a host and a port; [`Options`] holds everything else,
//! each option with its default (a 1 s connect timeout per address family,
//! IPv6 preferred). A failure says which family failed and why:
//!
//! ```
//! use std::time::Duration;
//! use atoll::client::{ConnectError, ClientError, IpVersionPreference, Options};
//!
//! // Nothing listens on this port of the loopback address.
//! # let port = { let l = std::net::TcpListener::bind("127.0.0.1:0")?; l.local_addr()?.port() };
//! let err = Options::new("127.0.0.1", port)
//!     .ip_version_preference(IpVersionPreference::Ipv4Only)
//!     .connect_timeout(Some(Duration::from_millis(500)))
//!     .connect()
//!     .unwrap_err();
//! assert_eq!(err, ConnectError::Ipv4(ClientError::Econnrefused));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Sending and receiving
//!
//! [`Client::send`] writes every byte; [`Client::recv`] returns
//! whatever arrives next, [`Client::recv_exact`] exactly `n` bytes.
//! Timeouts are `Option<Duration>`: `None` waits forever, a zero timeout
//! makes one non-blocking attempt.
//!
//! ```
//! use std::time::Duration;
//! use atoll::{Flow, Handler, Server, Socket};
//! use atoll::client::{self, ClientError, Timeout};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
//!         socket.send(data).map_or_else(Flow::error, |()| Flow::Continue)
//!     }
//! }
//!
//! let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(Echo))?;
//! let port = server.local_addr()?.port().ok_or("not a TCP listener")?;
//!
//! let mut conn = client::connect("127.0.0.1", port)?;
//! assert_eq!(conn.recv(Some(Duration::ZERO)), Err(ClientError::Timeout(Timeout::Recv)));
//! conn.send(b"hello")?;
//! assert_eq!(conn.recv_exact(5, Some(Duration::from_secs(5)))?, b"hello");
//! conn.shutdown()?;
//! assert_eq!(conn.recv(None), Err(ClientError::Closed));
//!
//! server.stop(Duration::from_secs(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Active mode
//!
//! [`Client::arm`] makes the connection deliver its next packet, its
//! close, or its error as one [`Packet`] on a crossbeam channel the caller
//! chose ([`Client::arm_with`] maps it into the channel's own type).
//! One thread can then `select!` over many connections and its other
//! channels, the way an actor waits on its mailbox. One message per
//! arming: arm again to get the next one. See [`Packet`] for a `select!`
//! loop.
//!
//! ## Implementation notes
//!
//! One background thread, `atoll-client-poll`, serves every armed
//! connection of the process. It starts with the first arming and lives as
//! long as the process; between armings a connection costs it nothing. It
//! reads an armed connection once when it is armed (bytes may already be
//! waiting) and again on each readiness event, and it is the only reader
//! while the connection is armed, so a message is never duplicated and
//! no byte is lost. A send from the owner while armed is fine: both sides
//! hold the connection's lock only for one non-blocking system call. The
//! thread waits while a full bounded channel has no room, holding up
//! every armed connection: use an unbounded channel, or one with room.
//!
//! # TLS
//!
//! With the `tls` feature (on by default), [`Options::tls`] connects over
//! TLS with SNI and the system's roots or given ones ([`TlsConfig`]), and
//! [`Client::upgrade_tls`] upgrades a live plain connection
//! (STARTTLS). ALPN is requested with [`TlsConfig::alpn_protocols`] and its
//! result read with [`Client::alpn_protocol`]. With the `rustls`
//! feature, a `rustls::ClientConfig` does the same (`TlsConfig::from`), no
//! OpenSSL needed. Everything else works the same over TLS, active mode
//! included.
//!
//! # Errors
//!
//! [`ClientError`] is one flat enum: [`ClientError::Closed`], [`ClientError::Timeout`] (whose
//! [`Timeout`] says which wait ran out: connect, resolve, handshake,
//! receive or send), [`ClientError::Nxdomain`] and one variant per POSIX socket
//! error code, plus a catch-all so that converting any [`std::io::Error`]
//! always succeeds. [`ConnectError`] says which address family failed. The
//! server's [`atoll::Error`](crate::Error) is a different type, with the
//! same [`Timeout`] kinds.

mod active;
mod connection;
mod error;
mod establish;
mod options;
mod resolve;
#[cfg(feature = "rustls")]
mod rustls;
#[cfg(any(feature = "tls", feature = "rustls"))]
mod tls;

/// The kind of an [`ClientError::Timeout`]: the same type as the server's
/// [`atoll::Timeout`](crate::Timeout).
pub use crate::timeout::Timeout;
pub use active::{ConnId, Packet};
pub use connection::Client;
pub use error::{ClientError, ConnectError};
pub use options::{connect, IpVersionPreference, Options, CONNECTION_ATTEMPT_DELAY};
#[cfg(any(feature = "tls", feature = "rustls"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tls", feature = "rustls"))))]
pub use tls::TlsConfig;

/// The channel crate of active mode: [`Client::arm`] takes its
/// `Sender`, so a program that uses no other version of it needs no
/// dependency of its own (`atoll::client::crossbeam_channel::unbounded()`).
/// A program that does depend on it must use the same major version.
///
/// ```
/// use atoll::client::crossbeam_channel;
///
/// let (tx, rx) = crossbeam_channel::unbounded::<atoll::client::Packet>();
/// # drop((tx, rx));
/// ```
pub use crossbeam_channel;
