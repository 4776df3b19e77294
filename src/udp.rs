//! UDP: datagram servers with the same handlers, workers and lifecycle.
//! This module holds their documentation, [`SessionMode`] and the UDP
//! options the builder sets and the acceptors use; the builder is
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

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

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

/// The options of a UDP server's sockets and sessions.
#[derive(Clone, Debug)]
pub(crate) struct UdpOptions {
    pub(crate) mode: SessionMode,
    pub(crate) max_datagram_size: usize,
    pub(crate) broadcast: bool,
    pub(crate) multicast_v4: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub(crate) multicast_v6: Vec<(Ipv6Addr, u32)>,
    pub(crate) multicast_loop: Option<bool>,
    pub(crate) multicast_ttl: Option<u32>,
}

impl Default for UdpOptions {
    fn default() -> UdpOptions {
        UdpOptions {
            mode: SessionMode::PerDatagram,
            max_datagram_size: 65_507,
            broadcast: false,
            multicast_v4: Vec::new(),
            multicast_v6: Vec::new(),
            multicast_loop: None,
            multicast_ttl: None,
        }
    }
}

impl UdpOptions {
    /// Applies the socket-level options to a bound UDP socket.
    pub(crate) fn apply(&self, socket: &socket2::Socket) -> io::Result<()> {
        if self.broadcast {
            socket.set_broadcast(true)?;
        }
        for (group, interface) in &self.multicast_v4 {
            socket.join_multicast_v4(group, interface)?;
        }
        for (group, interface) in &self.multicast_v6 {
            socket.join_multicast_v6(group, *interface)?;
        }
        let v6 = socket.local_addr()?.is_ipv6();
        if let Some(on) = self.multicast_loop {
            if v6 {
                socket.set_multicast_loop_v6(on)?;
            } else {
                socket.set_multicast_loop_v4(on)?;
            }
        }
        if let Some(ttl) = self.multicast_ttl {
            if v6 {
                socket.set_multicast_hops_v6(ttl)?;
            } else {
                socket.set_multicast_ttl_v4(ttl)?;
            }
        }
        Ok(())
    }
}
