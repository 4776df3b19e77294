//! UDP: datagram servers with the same handlers, workers and lifecycle.
//! This module holds their documentation and [`SessionMode`]; the builder is
//! [`UdpBuilder`](crate::UdpBuilder), the reception the acceptors'.
//!
//! A UDP server is built by a [`UdpBuilder`](crate::UdpBuilder), made by
//! [`Server::udp`](crate::Server::udp). Datagrams arrive through the
//! acceptor threads (`num_acceptors`), and the same [`Handler`](crate::Handler) runs on
//! the same worker pool, with the same callbacks, flows, limiter, timeouts,
//! messages, telemetry and lifecycle as TCP. A *session* takes the place of
//! a connection:
//!
//! - [`SessionMode::PerDatagram`] : every datagram starts a
//!   session: `handle_connection`, then `handle_data` with the datagram.
//!   The session then lives on only for messages, until a callback closes
//!   it or its idle timeout passes.
//! - [`SessionMode::PerPeer`]: one session (one handler value) per remote
//!   address, fed every datagram that peer sends, in order, one at a time,
//!   and closed after `read_timeout` without one: the mode a protocol with
//!   sessions needs.
//!
//! In a callback, [`Socket::send`](crate::Socket::send) sends one datagram
//! to the session's peer and [`Socket::send_to`](crate::Socket::send_to) to
//! any address; `recv` returns the session's next datagram. From other
//! threads, send the session a message through its
//! [`Connection`](crate::Connection).
//!
//! `num_connections` counts live sessions; when it is reached, a new
//! session's datagram waits for a slot (up to the retries, without blocking
//! reception; at most 1,024 wait), then is dropped and reported as
//! [`DatagramDropped`](crate::telemetry::Kind::DatagramDropped). A datagram
//! larger than [`max_datagram_size`](crate::UdpBuilder::max_datagram_size)
//! is dropped whole and reported, never cut.
//! With several acceptors, each has its own socket on the one port
//! (`SO_REUSEPORT`), and the kernel keeps a peer on one of them.
//!
//! ```
//! use std::time::Duration;
//! use atoll::udp::SessionMode;
//! use atoll::{Flow, Handler, Server, Socket};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn handle_data(&mut self, datagram: &[u8], socket: &mut Socket) -> Flow {
//!         socket.send(datagram).map_or_else(Flow::error, |()| Flow::Close)
//!     }
//! }
//!
//! let server = Server::udp()
//!     .ip([127, 0, 0, 1].into())
//!     .port(0)
//!     .session_mode(SessionMode::PerDatagram)
//!     .start(|_| Ok(Echo))?;
//! let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! client.set_read_timeout(Some(Duration::from_secs(5)))?;
//! client.send_to(b"ping", server.local_addr()?)?;
//! let mut buf = [0u8; 16];
//! let (n, _) = client.recv_from(&mut buf)?;
//! assert_eq!(&buf[..n], b"ping");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// How datagrams map to handler sessions.
///
/// ```
/// let builder = atoll::Server::udp().session_mode(atoll::udp::SessionMode::PerPeer);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionMode {
    /// Each datagram is a session of its own.
    #[default]
    PerDatagram,
    /// One session per remote address, while it keeps sending.
    PerPeer,
}
