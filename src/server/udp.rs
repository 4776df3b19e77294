//! [`UdpBuilder`]: the options only a UDP server has, and how it starts.
//! The options it shares with a stream server are in [`super::builder`].

use std::net::{Ipv4Addr, Ipv6Addr};

use super::builder::{Builder, Datagrams};
use super::{Plan, Server};
use crate::connection::Connection;
use crate::error::{BoxError, Error};
use crate::handler::Handler;
use crate::udp::SessionMode;

/// A [`Builder`] of a UDP server, made by [`Server::udp`]: the handlers,
/// workers, limits, timeouts and lifecycle of a stream server, with
/// datagrams and sessions instead of connections (see
/// [`crate::udp`]). `num_acceptors` is the number of sockets receiving,
/// each its own on the one port (`SO_REUSEPORT`).
///
/// ```
/// use atoll::udp::SessionMode;
/// let builder: atoll::UdpBuilder = atoll::Server::udp()
///     .ip([127, 0, 0, 1].into())
///     .port(0)
///     .session_mode(SessionMode::PerPeer)
///     .read_timeout(Some(std::time::Duration::from_secs(30)));
/// ```
pub type UdpBuilder = Builder<Datagrams>;

impl Builder<Datagrams> {
    /// How datagrams map to sessions (see [`SessionMode`]). Default is
    /// [`SessionMode::PerDatagram`].
    ///
    /// ```
    /// let builder = atoll::Server::udp().session_mode(atoll::udp::SessionMode::PerPeer);
    /// ```
    pub fn session_mode(mut self, mode: SessionMode) -> Self {
        self.udp.mode = mode;
        self
    }

    /// the largest datagram taken; larger ones are dropped whole and
    /// reported. Default is 65,507 (the IPv4 maximum).
    ///
    /// ```
    /// let builder = atoll::Server::udp().max_datagram_size(1472);
    /// ```
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.udp.max_datagram_size = size;
        self
    }

    /// `SO_BROADCAST`. Default is `false`.
    ///
    /// ```
    /// let builder = atoll::Server::udp().broadcast(true);
    /// ```
    pub fn broadcast(mut self, broadcast: bool) -> Self {
        self.udp.broadcast = broadcast;
        self
    }

    /// joins an IPv4 multicast group on an interface (`0.0.0.0`: the
    /// system's choice). May be called for several groups.
    ///
    /// ```
    /// let builder = atoll::Server::udp()
    ///     .join_multicast_v4([239, 1, 2, 3].into(), [0, 0, 0, 0].into());
    /// ```
    pub fn join_multicast_v4(mut self, group: Ipv4Addr, interface: Ipv4Addr) -> Self {
        self.udp.multicast_v4.push((group, interface));
        self
    }

    /// joins an IPv6 multicast group on an interface index (0: any).
    ///
    /// ```
    /// let builder = atoll::Server::udp()
    ///     .ip("::".parse().unwrap())
    ///     .join_multicast_v6("ff02::1234".parse().unwrap(), 0);
    /// ```
    pub fn join_multicast_v6(mut self, group: Ipv6Addr, interface: u32) -> Self {
        self.udp.multicast_v6.push((group, interface));
        self
    }

    /// whether multicast this host sends loops back to it. Default is
    /// the system's (on).
    ///
    /// ```
    /// let builder = atoll::Server::udp().multicast_loop(false);
    /// ```
    pub fn multicast_loop(mut self, on: bool) -> Self {
        self.udp.multicast_loop = Some(on);
        self
    }

    /// the TTL (hop limit) of multicast sent. Default is the system's
    /// (1).
    ///
    /// ```
    /// let builder = atoll::Server::udp().multicast_ttl(4);
    /// ```
    pub fn multicast_ttl(mut self, ttl: u32) -> Self {
        self.udp.multicast_ttl = Some(ttl);
        self
    }

    /// Binds the sockets and starts the server, as
    /// [`Builder::start`] does for a stream server; `factory` makes the
    /// handler of each session.
    ///
    /// ```
    /// use atoll::{Handler, Server};
    ///
    /// struct Quiet;
    /// impl Handler for Quiet {}
    ///
    /// let server = Server::udp().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(Quiet))?;
    /// assert!(server.local_addr()?.port().is_some());
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn start<H, M, F>(self, factory: F) -> Result<Server<M>, Error>
    where
        H: Handler<M>,
        M: Send + 'static,
        F: Fn(&Connection<M>) -> Result<H, BoxError> + Send + Sync + 'static,
    {
        self.validate()?;
        if self.udp.max_datagram_size == 0 || self.udp.max_datagram_size > 65_535 {
            return Err(Error::Config(
                "max_datagram_size is between 1 and 65,535".into(),
            ));
        }
        let mut config = self;
        if config.num_acceptors > 1 {
            // A socket per acceptor, all on one port.
            config.listen = config.listen.reuse_port(true);
        }
        let udp = config.udp.clone();
        Server::start(Plan::new(config, Some(udp)), Box::new(factory))
    }
}

/// Getters of the UDP options (see [`Builder`]'s getters for the rest).
impl Builder<Datagrams> {
    /// How datagrams map to sessions. Default is
    /// [`SessionMode::PerDatagram`].
    ///
    /// ```
    /// use atoll::udp::SessionMode;
    /// assert_eq!(atoll::Server::udp().get_session_mode(), SessionMode::PerDatagram);
    /// ```
    pub fn get_session_mode(&self) -> SessionMode {
        self.udp.mode
    }

    /// the largest datagram taken. Default is 65,507.
    ///
    /// ```
    /// assert_eq!(atoll::Server::udp().get_max_datagram_size(), 65_507);
    /// ```
    pub fn get_max_datagram_size(&self) -> usize {
        self.udp.max_datagram_size
    }

    /// `SO_BROADCAST`. Default is `false`.
    ///
    /// ```
    /// assert!(!atoll::Server::udp().get_broadcast());
    /// ```
    pub fn get_broadcast(&self) -> bool {
        self.udp.broadcast
    }

    /// the IPv4 multicast groups joined, with their interfaces.
    /// Default is none.
    ///
    /// ```
    /// assert!(atoll::Server::udp().get_multicast_v4().is_empty());
    /// ```
    pub fn get_multicast_v4(&self) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        self.udp.multicast_v4.clone()
    }

    /// the IPv6 multicast groups joined, with their interface
    /// indexes. Default is none.
    ///
    /// ```
    /// assert!(atoll::Server::udp().get_multicast_v6().is_empty());
    /// ```
    pub fn get_multicast_v6(&self) -> Vec<(Ipv6Addr, u32)> {
        self.udp.multicast_v6.clone()
    }

    /// multicast loopback; `None` leaves the system's default.
    ///
    /// ```
    /// assert_eq!(atoll::Server::udp().get_multicast_loop(), None);
    /// ```
    pub fn get_multicast_loop(&self) -> Option<bool> {
        self.udp.multicast_loop
    }

    /// the multicast TTL; `None` leaves the system's default.
    ///
    /// ```
    /// assert_eq!(atoll::Server::udp().get_multicast_ttl(), None);
    /// ```
    pub fn get_multicast_ttl(&self) -> Option<u32> {
        self.udp.multicast_ttl
    }
}
