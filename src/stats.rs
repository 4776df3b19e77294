//! The counters: the public [`ServerStats`] snapshot and the atomic
//! counters the acceptors and workers add to, and a connection's
//! [`SocketStats`]. Never touches a connection or a thread.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// A snapshot of the server's counters, for monitoring and tests: cheap to
/// take (a few relaxed loads).
///
/// ```
/// let stats = atoll::ServerStats::default();
/// assert_eq!(stats.accepted, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted from the listener.
    pub accepted: u64,
    /// Connections closed because no slot of the limiter freed within the
    /// retries (each also a `SpawnError` telemetry event).
    pub rejected: u64,
    /// Connections the handler factory refused.
    pub refused: u64,
    /// Failed `accept` calls (descriptor exhaustion, aborted connections),
    /// and failed receives on a UDP server's socket.
    pub accept_errors: u64,
    /// Handler callbacks that panicked.
    pub panics: u64,
    /// Live connections now.
    pub live: u64,
    /// Bytes received from clients (counted when a worker finishes a
    /// dispatch, so a callback still running is not counted yet).
    pub bytes_in: u64,
    /// Bytes sent to clients (same rule).
    pub bytes_out: u64,
    /// Workers running a callback now.
    pub busy_workers: u64,
    /// Connections waiting for a worker now.
    pub queued: u64,
    /// Worker threads now: the base count, plus those started for
    /// callbacks that block (see [`Builder::max_workers`](crate::Builder::max_workers)).
    pub workers: u64,
    /// Workers in a callback that has run longer than
    /// [`Builder::blocking_after`](crate::Builder::blocking_after), or of a connection whose last callbacks
    /// did, or dedicated to such a connection (waiting on its socket for
    /// its next request): they do not count toward the base count of
    /// working threads.
    pub blocked_workers: u64,
    /// Times a worker took a connection up to run its callbacks.
    pub dispatches: u64,
    /// The sum over those of the time from readiness (data, a message, a
    /// timer) to the worker: divided by `dispatches`, the mean dispatch
    /// wait. It grows when the workers are saturated.
    pub dispatch_wait: Duration,
    /// Saturation episodes: times every worker, at
    /// [`Builder::max_workers`](crate::Builder::max_workers), stayed busy in callbacks for half a second
    /// with work waiting. A warning is logged for them, at most once a
    /// minute.
    pub saturations: u64,
    /// Messages [`Connection::send`](crate::Connection::send) gave back because the connection's
    /// queue was full ([`SendError::Full`](crate::SendError::Full)): a
    /// handler not keeping up.
    pub messages_refused: u64,
    /// Connections closed for a bad, late or untrusted PROXY protocol
    /// header ([`Error::ProxyHeader`](crate::Error::ProxyHeader); a late one
    /// is [`Timeout::ProxyHeader`](crate::Timeout::ProxyHeader)).
    pub proxy_errors: u64,
}

/// Bytes received and sent: by a connection during one dispatch, or by
/// all of them.
#[derive(Clone, Copy, Default)]
pub(crate) struct Traffic {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, other: Traffic) {
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// The totals, added to by the acceptors and workers.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) messages_refused: AtomicU64,
    pub(crate) proxy_errors: AtomicU64,
}

/// Counters of a connection's traffic: bytes and calls, in and out.
///
/// ```
/// let stats = atoll::SocketStats::default();
/// assert_eq!(stats.recv_bytes + stats.send_bytes, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStats {
    /// Bytes received (`recv_oct`).
    pub recv_bytes: u64,
    /// Read calls that returned data (`recv_cnt`).
    pub recv_count: u64,
    /// Bytes sent (`send_oct`).
    pub send_bytes: u64,
    /// Write calls that sent data (`send_cnt`).
    pub send_count: u64,
}
