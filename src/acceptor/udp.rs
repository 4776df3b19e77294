//! The UDP half of an acceptor: its socket is watched by the pool, whose
//! worker that sees it ready receives a batch here, hands each datagram to
//! its session (a per-peer inbox) or starts one, and runs the sessions
//! itself; the acceptor's thread takes back what an ended session did not
//! handle. Never touches a stream listener.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use mio::Token;
use parking_lot::{Condvar, Mutex};

use super::{Arrival, Core};
use crate::connection::sched::Work;
use crate::connection::{Conn, Setup};
use crate::handler::Handler;
use crate::pool::Source;
use crate::telemetry::{DropReason, Kind};
use crate::transport::{Addr, Io, ListenSocket, Stream};
use crate::udp::SessionMode;

/// Datagrams received per loop before the acceptor serves its timers.
const RECV_BATCH: usize = 256;
/// Consecutive receive errors (ICMP reports) after which the loop yields.
const RECV_ERRORS: u32 = 16;

/// The datagrams waiting for one session.
#[derive(Default)]
struct Inbox {
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
type Returned = (SocketAddr, Vec<u8>);

/// Where a session that ends gives back the datagrams it did not handle
/// (they arrived after its handler decided to close): the acceptor
/// starts a new session with them.
type Returns = (
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
pub(super) struct Receiver {
    /// The socket's token in the pool's epoll, while it is read.
    watched: Option<Token>,
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
            watched: None,
            buf: Vec::new(),
            sessions: HashMap::new(),
            returned: crossbeam_channel::unbounded(),
        }
    }
}

/// An acceptor's UDP socket as the pool sees it: the worker that polls it
/// ready receives a batch and runs the sessions it made runnable, so a
/// datagram reaches its callback with no hand-over between threads.
struct Reception<H, M> {
    core: Weak<Mutex<Core<H, M>>>,
}

impl<H: Handler<M>, M: Send + 'static> Source<Conn<H, M>> for Reception<H, M> {
    fn ready(&self, runnable: &mut Vec<Arc<Conn<H, M>>>) -> bool {
        let Some(core) = self.core.upgrade() else {
            return false; // the acceptor has exited
        };
        let mut core = core.lock();
        #[cfg(feature = "tracing")]
        let span = core.span.as_ref().map(|s| s.tracing.clone());
        #[cfg(feature = "tracing")]
        let _entered = span.as_ref().map(tracing::Span::enter);
        core.receive(runnable)
    }
}

impl<H: Handler<M>, M: Send + 'static> Core<H, M> {
    /// Has the pool's workers read the UDP socket `fd`.
    pub(super) fn watch_udp(&mut self, fd: std::os::fd::RawFd) -> io::Result<()> {
        let source = Arc::new(Reception {
            core: self.me.clone(),
        });
        self.udp.watched = Some(self.service.pool.watch(fd, source)?);
        Ok(())
    }

    pub(super) fn unwatch_udp(&mut self, fd: std::os::fd::RawFd) {
        if let Some(token) = self.udp.watched.take() {
            self.service.pool.unwatch(token, fd);
        }
    }

    /// Receives a batch of datagrams and hands each to its session; the
    /// sessions made runnable join `runnable`. `true` when the batch ended
    /// before the socket had none left.
    fn receive(&mut self, runnable: &mut Vec<Arc<Conn<H, M>>>) -> bool {
        let Some(udp) = &self.options.udp else {
            return false;
        };
        let (max, mode) = (udp.max_datagram_size, udp.mode);
        // One byte more than the largest datagram taken: a datagram that
        // fills it was larger, and is dropped whole.
        if self.udp.buf.len() != max + 1 {
            self.udp.buf = vec![0u8; max + 1];
        }
        let mut errors = 0;
        for _ in 0..RECV_BATCH {
            let Some(ListenSocket::Udp { recv, .. }) = self.listener.as_ref() else {
                return false; // suspended or stopped meanwhile
            };
            match recv.recv_from(&mut self.udp.buf) {
                Ok((n, peer)) if n > max => {
                    self.emit(Kind::DatagramDropped {
                        peer: &Addr::Inet(peer),
                        len: n,
                        reason: DropReason::TooLarge,
                    });
                }
                Ok((n, peer)) => {
                    errors = 0;
                    let datagram = self.udp.buf[..n].to_vec();
                    self.deliver(peer, datagram, mode, runnable);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Receiving is this acceptor's accept: counted and
                    // reported as one that failed, then it goes on (a run
                    // of them yields the thread). An unconnected socket
                    // hears no ICMP report, so this is the kernel short of
                    // memory or the like.
                    self.service
                        .counters
                        .accept_errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.emit(Kind::AcceptError { error: &e });
                    errors += 1;
                    if errors >= RECV_ERRORS {
                        return true;
                    }
                }
            }
        }
        true
    }

    /// Starts new sessions with the datagrams ended sessions gave back.
    pub(super) fn redeliver(&mut self, runnable: &mut Vec<Arc<Conn<H, M>>>) {
        let mode = self
            .options
            .udp
            .as_ref()
            .map(|u| u.mode)
            .unwrap_or_default();
        while let Ok((peer, datagram)) = self.udp.returned.1.try_recv() {
            self.deliver(peer, datagram, mode, runnable);
        }
    }

    fn deliver(
        &mut self,
        peer: SocketAddr,
        mut datagram: Vec<u8>,
        mode: SessionMode,
        runnable: &mut Vec<Arc<Conn<H, M>>>,
    ) {
        if mode == SessionMode::PerPeer {
            if let Some((token, inbox)) = self.udp.sessions.get(&peer) {
                if let Some(conn) = self.lookup(*token) {
                    match inbox.push(datagram) {
                        Ok(()) => {
                            if conn.sched.mark(Work::READABLE) {
                                runnable.push(conn);
                            }
                            return;
                        }
                        Err(back) => datagram = back, // it just ended
                    }
                }
                self.udp.sessions.remove(&peer);
            }
        }
        if !self.has_room() {
            self.service
                .counters
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            self.emit(Kind::DatagramDropped {
                peer: &Addr::Inet(peer),
                len: datagram.len(),
                reason: DropReason::Limit,
            });
            return;
        }
        self.admit(Arrival::Datagram(peer, datagram), runnable);
    }

    /// Starts a session for a datagram that holds a limiter slot.
    pub(super) fn open_session(
        &mut self,
        peer: SocketAddr,
        datagram: Vec<u8>,
    ) -> Option<Arc<Conn<H, M>>> {
        let Some(ListenSocket::Udp { io, .. }) = self.listener.as_ref() else {
            self.limiter.release(); // the listener closed meanwhile
            return None;
        };
        let inbox = Arc::new(Inbox::default());
        let _ = inbox.push(datagram);
        let timers = self.timers.clone();
        let session = Session {
            io: io.clone(),
            peer,
            inbox: inbox.clone(),
            gather: Vec::new(),
            returns: (self.udp.returned.0.clone(), Arc::new(move || timers.wake())),
        };
        let local = self.fixed_local.clone().unwrap_or(Addr::Unix(None));
        self.service
            .counters
            .accepted
            .fetch_add(1, Ordering::Relaxed);
        self.count_accepted();
        let conn = self.install(
            Addr::Inet(peer),
            local,
            Setup::Stream(Box::new(session)),
            None,
            Weak::new(),
        );
        let mode = self.options.udp.as_ref().map(|u| u.mode);
        if let (Some(conn), Some(SessionMode::PerPeer)) = (&conn, mode) {
            self.udp.sessions.insert(peer, (conn.token, inbox));
            self.prune_sessions();
        }
        conn
    }

    /// Forgets the peers whose session ended, once they outnumber the live
    /// sessions.
    fn prune_sessions(&mut self) {
        let live = self.limiter.live();
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
