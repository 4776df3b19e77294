//! UDP: datagram servers with the same handlers, workers and lifecycle.
//!
//! A UDP server is a [`Builder`](crate::Builder) with
//! [`udp`](crate::Builder::udp) set. Datagrams arrive through the poll
//! threads ("listeners", `num_acceptors`), and the same [`Handler`] runs on
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
//! larger than `max_datagram_size` is dropped whole and reported, never cut.
//! With several listeners, each has its own socket on the one port
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
//! let server = Server::builder()
//!     .ip([127, 0, 0, 1].into())
//!     .port(0)
//!     .udp(SessionMode::PerDatagram)
//!     .start(|_| Ok(Echo))?;
//! let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! client.set_read_timeout(Some(Duration::from_secs(5)))?;
//! client.send_to(b"ping", server.local_addr()?)?;
//! let mut buf = [0u8; 16];
//! let (n, _) = client.recv_from(&mut buf)?;
//! assert_eq!(&buf[..n], b"ping");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Instant;

use mio::Token;
use parking_lot::{Condvar, Mutex};

use crate::connection::Setup;
use crate::handler::Handler;
use crate::reactor::{Arrival, Reactor};
use crate::telemetry::{DropReason, Kind};
use crate::transport::{Addr, Io, ListenSocket, Stream};

/// Datagrams received per loop before the acceptor serves its timers.
const RECV_BATCH: usize = 256;
/// Consecutive receive errors (ICMP reports) after which the loop yields.
const RECV_ERRORS: u32 = 16;

/// How datagrams map to handler sessions.
///
/// ```
/// let builder = atoll::Server::builder().udp(atoll::udp::SessionMode::PerPeer);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionMode {
    /// Each datagram is a session of its own.
    #[default]
    PerDatagram,
    /// One session per remote address, while it keeps sending.
    PerPeer,
}

/// The UDP options of a server (see the `Builder` setters).
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

/// The datagrams waiting for one session.
#[derive(Default)]
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    datagrams: VecDeque<Vec<u8>>,
    /// The session ended: datagrams go to a new one.
    closed: bool,
}

impl Inbox {
    /// Queues a datagram, or gives it back if the session has ended.
    fn push(&self, datagram: Vec<u8>) -> Result<(), Vec<u8>> {
        let mut queue = self.queue.lock();
        if queue.closed {
            return Err(datagram);
        }
        queue.datagrams.push_back(datagram);
        drop(queue);
        self.ready.notify_all();
        Ok(())
    }
}

/// A datagram given back by an ended session, with its sender.
pub(crate) type Returned = (SocketAddr, Vec<u8>);

/// Where a session that ends gives back the datagrams it did not handle
/// (they arrived after its handler decided to close): the acceptor
/// starts a new session with them.
pub(crate) type Returns = (
    crossbeam_channel::Sender<Returned>,
    Arc<dyn Fn() + Send + Sync>,
);

/// A session's stream: datagrams from its inbox in, datagrams to its peer
/// out.
struct Session {
    io: Io,
    peer: SocketAddr,
    inbox: Arc<Inbox>,
    gather: Vec<u8>,
    returns: Returns,
}

impl Drop for Session {
    fn drop(&mut self) {
        let leftovers = {
            let mut queue = self.inbox.queue.lock();
            queue.closed = true;
            std::mem::take(&mut queue.datagrams)
        };
        if leftovers.is_empty() {
            return;
        }
        for datagram in leftovers {
            let _ = self.returns.0.send((self.peer, datagram));
        }
        (self.returns.1)();
    }
}

impl Stream for Session {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut queue = self.inbox.queue.lock();
        let Some(mut datagram) = queue.datagrams.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        if n < datagram.len() {
            // A reader with a small buffer gets the rest next time.
            datagram.drain(..n);
            queue.datagrams.push_front(datagram);
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // One call, one datagram.
        self.gather.clear();
        for b in bufs {
            self.gather.extend_from_slice(b);
        }
        self.io.sock().send_to(&self.gather, &self.peer.into())
    }

    fn io(&self) -> &Io {
        &self.io
    }

    fn wait_readable(&self, deadline: Option<Instant>) -> Option<io::Result<bool>> {
        let mut queue = self.inbox.queue.lock();
        while queue.datagrams.is_empty() {
            match deadline {
                None => self.inbox.ready.wait(&mut queue),
                Some(d) => {
                    if self.inbox.ready.wait_until(&mut queue, d).timed_out() {
                        return Some(Ok(!queue.datagrams.is_empty()));
                    }
                }
            }
        }
        Some(Ok(true))
    }

    fn shutdown(&mut self, _how: std::net::Shutdown) -> io::Result<()> {
        Ok(()) // a session shares its socket: nothing to shut down
    }
}

/// An acceptor's UDP state.
pub(crate) struct Receiver {
    buf: Vec<u8>,
    /// Per-peer mode: the live session of each peer.
    sessions: HashMap<SocketAddr, (Token, Arc<Inbox>)>,
    returned: (
        crossbeam_channel::Sender<Returned>,
        crossbeam_channel::Receiver<Returned>,
    ),
}

impl Default for Receiver {
    fn default() -> Receiver {
        Receiver {
            buf: Vec::new(),
            sessions: HashMap::new(),
            returned: crossbeam_channel::unbounded(),
        }
    }
}

impl<H: Handler<M>, M: Send + 'static> Reactor<H, M> {
    /// Receives a batch of datagrams and hands each to its session.
    pub(crate) fn receive(&mut self) {
        let (max, mode) = {
            let udp = self.server.config.listen.udp.as_ref();
            (
                udp.map_or(65_507, |u| u.max_datagram_size),
                udp.map(|u| u.mode).unwrap_or_default(),
            )
        };
        // One byte more than the largest datagram taken: a datagram that
        // fills it was larger, and is dropped whole.
        if self.udp.buf.len() != max + 1 {
            self.udp.buf = vec![0u8; max + 1];
        }
        let mut errors = 0;
        for _ in 0..RECV_BATCH {
            let Some(ListenSocket::Udp { recv, .. }) = self.listener.as_ref() else {
                return;
            };
            match recv.recv_from(&mut self.udp.buf) {
                Ok((n, peer)) if n > max => {
                    self.emit_event(Kind::DatagramDropped {
                        peer: &Addr::Inet(peer),
                        len: n,
                        reason: DropReason::TooLarge,
                    });
                }
                Ok((n, peer)) => {
                    errors = 0;
                    let datagram = self.udp.buf[..n].to_vec();
                    self.deliver(peer, datagram, mode);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP reports (a peer's port unreachable) surface here:
                    // report and go on; a run of them yields the thread.
                    self.emit_event(Kind::AcceptError { error: &e });
                    errors += 1;
                    if errors >= RECV_ERRORS {
                        return;
                    }
                }
            }
        }
    }

    /// Starts new sessions with the datagrams ended sessions gave back.
    pub(crate) fn redeliver(&mut self) {
        let mode = self
            .server
            .config
            .listen
            .udp
            .as_ref()
            .map(|u| u.mode)
            .unwrap_or_default();
        while let Ok((peer, datagram)) = self.udp.returned.1.try_recv() {
            self.deliver(peer, datagram, mode);
        }
    }

    fn deliver(&mut self, peer: SocketAddr, mut datagram: Vec<u8>, mode: SessionMode) {
        if mode == SessionMode::PerPeer {
            if let Some((token, inbox)) = self.udp.sessions.get(&peer) {
                if let Some(conn) = self.lookup(*token) {
                    match inbox.push(datagram) {
                        Ok(()) => {
                            conn.notify(crate::connection::READABLE);
                            return;
                        }
                        Err(back) => datagram = back, // it just ended
                    }
                }
                self.udp.sessions.remove(&peer);
            }
        }
        if !self.has_room() {
            self.server
                .stats
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.emit_event(Kind::DatagramDropped {
                peer: &Addr::Inet(peer),
                len: datagram.len(),
                reason: DropReason::Limit,
            });
            return;
        }
        self.admit(Arrival::Datagram(peer, datagram));
    }

    /// Starts a session for a datagram that holds a limiter slot.
    pub(crate) fn open_session(&mut self, peer: SocketAddr, datagram: Vec<u8>) {
        let Some(ListenSocket::Udp { io, .. }) = self.listener.as_ref() else {
            self.shared.limiter.release(); // the listener closed meanwhile
            return;
        };
        let inbox = Arc::new(Inbox::default());
        let _ = inbox.push(datagram);
        let acceptor = self.shared.clone();
        let session = Session {
            io: io.clone(),
            peer,
            inbox: inbox.clone(),
            gather: Vec::new(),
            returns: (
                self.udp.returned.0.clone(),
                Arc::new(move || acceptor.wake()),
            ),
        };
        let local = self.fixed_local.clone().unwrap_or(Addr::Unix(None));
        self.server
            .stats
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.count_accepted();
        let token = self.install(
            Addr::Inet(peer),
            local,
            Setup::Stream(Box::new(session)),
            None,
            Weak::new(),
        );
        let mode = self.server.config.listen.udp.as_ref().map(|u| u.mode);
        if let (Some(token), Some(SessionMode::PerPeer)) = (token, mode) {
            self.udp.sessions.insert(peer, (token, inbox));
            self.prune_sessions();
        }
    }

    /// Forgets the peers whose session ended, once they outnumber the live
    /// sessions.
    fn prune_sessions(&mut self) {
        let live = self.shared.limiter.live();
        if self.udp.sessions.len() < 1024 || self.udp.sessions.len() < 2 * live {
            return;
        }
        let tokens: Vec<(SocketAddr, Token)> = self
            .udp
            .sessions
            .iter()
            .map(|(p, (t, _))| (*p, *t))
            .collect();
        for (peer, token) in tokens {
            if self.lookup(token).is_none() {
                self.udp.sessions.remove(&peer);
            }
        }
    }
}
