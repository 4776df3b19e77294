//! Active mode: one background poll thread, shared by every client
//! connection of the process, that turns an armed connection's next packet
//! into a message on the channel the caller chose.
//!
//! The thread is started by the first [`arm`] and lives as long as the
//! process. Arming registers the socket with the thread's `mio::Poll` and
//! asks the thread to try one read at once (the bytes may already be
//! there, in the kernel or in the TLS layer, and no readiness edge would
//! announce them). Only this thread reads an armed connection, so exactly
//! one message is sent per arming: the thread takes the arming out of its
//! table in the same critical section as the read that produced the
//! message, and deregisters the socket.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use parking_lot::Mutex;

use super::connection::{Shared, READ_CHUNK};
use super::error::ClientError;

/// A client connection's id, unique in the process: what active-mode
/// [`Packet`]s say they come from.
///
/// ```
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
/// println!("connection {} is up", conn.id());
/// assert!(conn.id().as_u64() > 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    pub(super) fn new(id: u64) -> ConnId {
        ConnId(id)
    }

    /// The id as a number.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// let n: u64 = conn.id().as_u64();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_u64(self) -> u64 {
        self.0
    }

    fn token(self) -> Token {
        // Ids count up from 1; on 32-bit targets they would have to pass
        // four billion connections to wrap onto a live one.
        Token(self.0 as usize)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The message an armed connection sends: its next
/// packet, its close, or its error, with the id of the connection.
///
/// # Examples
///
/// A loop over two connections and a stop channel:
///
/// ```
/// use std::io::Write;
/// use std::time::Duration;
/// use crossbeam_channel::{select, unbounded};
/// use atoll::client::{self, Packet};
///
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let port = listener.local_addr()?.port();
/// let mut a = client::connect("127.0.0.1", port)?;
/// let mut b = client::connect("127.0.0.1", port)?;
/// let (mut sa, _) = listener.accept()?;
/// let (mut sb, _) = listener.accept()?;
/// let (packets, incoming) = unbounded();
/// let (stop_tx, stop) = unbounded::<()>();
/// a.arm(&packets)?;
/// b.arm(&packets)?;
/// sa.write_all(b"from a")?;
/// sb.write_all(b"from b")?;
/// let mut seen = 0;
/// while seen < 2 {
///     select! {
///         recv(incoming) -> packet => match packet? {
///             Packet::Data(id, data) => {
///                 assert!(id == a.id() || id == b.id());
///                 assert!(data.starts_with(b"from "));
///                 seen += 1;
///             }
///             other => panic!("unexpected {other:?}"),
///         },
///         recv(stop) -> _ => break,
///         default(Duration::from_secs(5)) => panic!("no packet"),
///     }
/// }
/// # drop(stop_tx);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Bytes received: what one read returned, at most 64 KiB.
    Data(ConnId, Vec<u8>),
    /// The peer closed the connection.
    Closed(ConnId),
    /// Reading failed.
    Error(ConnId, ClientError),
}

impl Packet {
    /// The connection the message comes from.
    ///
    /// ```
    /// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let conn = atoll::client::connect("127.0.0.1", listener.local_addr()?.port())?;
    /// let packet = atoll::client::Packet::Closed(conn.id());
    /// assert_eq!(packet.id(), conn.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id(&self) -> ConnId {
        match self {
            Packet::Data(id, _) | Packet::Closed(id) | Packet::Error(id, _) => *id,
        }
    }
}

/// Sends one packet to where the arming said.
type Deliver = Box<dyn FnOnce(Packet) + Send>;

struct Armed {
    shared: Arc<Shared>,
    deliver: Deliver,
}

#[derive(Default)]
struct State {
    armed: HashMap<Token, Armed>,
    /// Newly armed connections to try one read on.
    check: Vec<Token>,
}

/// The shared poll thread's handle.
struct Poller {
    registry: Registry,
    waker: Waker,
    state: Mutex<State>,
}

const WAKER: Token = Token(usize::MAX);

/// The poll thread, once started; it lives as long as the process.
static POLLER: Mutex<Option<&'static Poller>> = Mutex::new(None);

/// The poll thread, started if it is not running yet.
fn poller() -> Result<&'static Poller, ClientError> {
    let mut slot = POLLER.lock();
    if let Some(poller) = *slot {
        return Ok(poller);
    }
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let registry = poll.registry().try_clone()?;
    let poller: &'static Poller = Box::leak(Box::new(Poller {
        registry,
        waker,
        state: Mutex::new(State::default()),
    }));
    std::thread::Builder::new()
        .name("atoll-client-poll".into())
        .spawn(move || poller.run(poll))?;
    *slot = Some(poller);
    Ok(poller)
}

/// Arms `shared`: its next packet goes to `deliver`.
pub(super) fn arm(shared: &Arc<Shared>, deliver: Deliver) -> Result<(), ClientError> {
    let poller = poller()?;
    let token = shared.id.token();
    {
        let mut state = poller.state.lock();
        poller
            .registry
            .register(&mut SourceFd(&shared.fd), token, Interest::READABLE)?;
        shared.armed.store(true, Ordering::Release);
        state.armed.insert(
            token,
            Armed {
                shared: Arc::clone(shared),
                deliver,
            },
        );
        state.check.push(token);
    }
    if let Err(e) = poller.waker.wake() {
        report!(
            error,
            { error = %e, "client: cannot wake the poll thread" },
            "atoll client: cannot wake the poll thread: {e}"
        );
    }
    Ok(())
}

/// Cancels the arming of `shared`; `true` if no message was taken.
pub(super) fn disarm(shared: &Shared) -> bool {
    let Some(poller) = *POLLER.lock() else {
        return false;
    };
    let mut state = poller.state.lock();
    let Some(armed) = state.armed.remove(&shared.id.token()) else {
        return false;
    };
    let _ = poller.registry.deregister(&mut SourceFd(&shared.fd));
    shared.armed.store(false, Ordering::Release);
    drop(state);
    drop(armed);
    true
}

impl Poller {
    fn run(&self, mut poll: Poll) {
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut ready = Vec::new();
        loop {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // Nothing else can drive the armed connections: log,
                    // breathe, and go on.
                    report!(error, { error = %e, "client: poll failed" }, "atoll client: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    ready.append(&mut self.state.lock().check);
                } else {
                    ready.push(event.token());
                }
            }
            for token in ready.drain(..) {
                self.try_deliver(token, &mut buf);
            }
        }
    }

    /// One read for an armed connection; if it produced a message, disarms
    /// the connection and sends the message.
    fn try_deliver(&self, token: Token, buf: &mut [u8]) {
        let mut state = self.state.lock();
        let Some(armed) = state.armed.get(&token) else {
            return;
        };
        let id = armed.shared.id;
        let result = armed.shared.stream.lock().read(buf);
        let packet = match result {
            Ok(0) => Packet::Closed(id),
            Ok(n) => Packet::Data(id, buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => match ClientError::from(e) {
                ClientError::Closed => Packet::Closed(id),
                e => Packet::Error(id, e),
            },
        };
        let Some(armed) = state.armed.remove(&token) else {
            return;
        };
        let _ = self.registry.deregister(&mut SourceFd(&armed.shared.fd));
        armed.shared.armed.store(false, Ordering::Release);
        drop(state);
        let Armed { shared, deliver } = armed;
        drop(shared);
        // `deliver` runs the caller's mapping: a panic there must not stop
        // the thread that every armed connection depends on.
        let delivered = std::panic::catch_unwind(AssertUnwindSafe(|| deliver(packet)));
        if delivered.is_err() {
            report!(
                error,
                { connection = id.0, "client: a packet mapping panicked" },
                "atoll client: the packet mapping of connection {id} panicked"
            );
        }
    }
}
