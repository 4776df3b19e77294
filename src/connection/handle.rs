//! [`Connection`], the handle to a live connection that the application's
//! other threads hold, and [`SendError`]. Owns nothing of the connection but
//! a reference to its mailbox; never touches its socket or handler.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use super::Meta;
use crate::proxy::ProxyHeader;
use crate::transport::Addr;

/// The type-erased side of a connection that [`Connection`] reaches.
pub(crate) trait Mailbox<M>: Send + Sync {
    fn meta(&self) -> &Meta;
    fn post(self: Arc<Self>, message: M) -> Result<(), SendError<M>>;
    fn is_alive(&self) -> bool;
}

/// Why [`Connection::send`] gave a message back.
///
/// ```
/// let err = atoll::SendError::Full("tick");
/// assert!(err.is_full());
/// assert_eq!(err.to_string(), "the connection's message queue is full");
/// assert_eq!(err.into_inner(), "tick");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SendError<M> {
    /// The connection's queue is full: its handler is not keeping up.
    Full(M),
    /// The connection ended or was detached.
    Closed(M),
}

impl<M> SendError<M> {
    /// The message that was not queued.
    ///
    /// ```
    /// assert_eq!(atoll::SendError::Closed(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Closed(m) => m,
        }
    }

    /// Whether the queue was full (rather than the connection gone).
    ///
    /// ```
    /// assert!(!atoll::SendError::Closed(()).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "Full(..)",
            SendError::Closed(_) => "Closed(..)",
        })
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "the connection's message queue is full",
            SendError::Closed(_) => "the connection is closed",
        })
    }
}

impl<M> std::error::Error for SendError<M> {}

/// A cloneable, `Send` handle to a live connection, for the application's
/// other threads: it identifies the connection and sends it messages, which
/// its handler receives in [`Handler::handle_message`](crate::Handler::handle_message).
///
/// Messages are delivered on a worker, one at a time, in the order they were
/// sent, never while another callback of the same connection runs.
///
/// A handle is given to the handler factory (keep it in the handler to reach
/// the connection from elsewhere) and listed by
/// [`Server::connections`](crate::Server::connections).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use atoll::{Connection, Flow, Handler, Server, Socket};
///
/// struct Push;
///
/// impl Handler<String> for Push {
///     fn handle_message(&mut self, msg: String, socket: &mut Socket) -> Flow {
///         socket.send(msg.as_bytes()).map_or_else(Flow::error, |()| Flow::Continue)
///     }
/// }
///
/// let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(Push))?;
/// let mut client = std::net::TcpStream::connect(server.local_addr()?)?;
/// # while server.connections().is_empty() { std::thread::sleep(Duration::from_millis(5)); }
/// for conn in server.connections() {
///     conn.send("hello".to_string()).ok();
/// }
/// # use std::io::Read;
/// let mut buf = [0u8; 5];
/// client.read_exact(&mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection<M = ()> {
    pub(super) inner: Arc<dyn Mailbox<M>>,
}

impl<M> Clone for Connection<M> {
    fn clone(&self) -> Self {
        Connection {
            inner: self.inner.clone(),
        }
    }
}

impl<M: Send + 'static> Connection<M> {
    /// Queues a message for the connection's handler. Gives the message back
    /// if the connection has ended or was detached
    /// ([`SendError::Closed`]), or if its queue already holds
    /// [`max_queued_messages`](crate::Builder::max_queued_messages)
    /// ([`SendError::Full`]). `Ok` means queued: a connection that ends
    /// before its handler gets to the message drops it.
    ///
    /// ```
    /// use atoll::SendError;
    /// # fn demo(conn: atoll::Connection<String>) {
    /// match conn.send("ping".to_string()) {
    ///     Ok(()) => {}
    ///     Err(SendError::Full(msg)) => eprintln!("{} is not keeping up; {msg} dropped", conn.id()),
    ///     Err(SendError::Closed(msg)) => eprintln!("connection gone, {msg} not delivered"),
    /// }
    /// # }
    /// ```
    pub fn send(&self, message: M) -> Result<(), SendError<M>> {
        self.inner.clone().post(message)
    }
}

impl<M> Connection<M> {
    /// The server-unique id of the connection.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// println!("connection {}", conn.id());
    /// # }
    /// ```
    pub fn id(&self) -> u64 {
        self.inner.meta().id
    }

    /// The peer's address: the original client's, once a PROXY protocol
    /// header named it (see [`proxy`](crate::proxy)).
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// println!("peer {}", conn.peer_addr());
    /// # }
    /// ```
    pub fn peer_addr(&self) -> &Addr {
        self.inner.meta().peer()
    }

    /// The address of the proxy the connection came through, once its
    /// PROXY protocol header was read; `None` otherwise.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// if let Some(proxy) = conn.proxy_addr() {
    ///     println!("{} via {proxy}", conn.peer_addr());
    /// }
    /// # }
    /// ```
    pub fn proxy_addr(&self) -> Option<&Addr> {
        self.inner.meta().proxy.get().map(|p| &p.via)
    }

    /// The connection's PROXY protocol header, once read.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// let sni = conn.proxy_header().and_then(|h| h.authority());
    /// # }
    /// ```
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.inner.meta().proxy.get().map(|p| &p.header)
    }

    /// The local address of the connection.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// println!("local {}", conn.local_addr());
    /// # }
    /// ```
    pub fn local_addr(&self) -> &Addr {
        &self.inner.meta().local
    }

    /// When the connection was accepted.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// let age = conn.started().elapsed().unwrap_or_default();
    /// # }
    /// ```
    pub fn started(&self) -> SystemTime {
        self.inner.meta().started
    }

    /// Whether the connection is still open.
    ///
    /// ```
    /// # fn demo(conn: atoll::Connection) {
    /// if !conn.is_alive() { /* forget it */ }
    /// # }
    /// ```
    pub fn is_alive(&self) -> bool {
        self.inner.is_alive()
    }
}

impl<M> fmt::Debug for Connection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = self.inner.meta();
        f.debug_struct("Connection")
            .field("id", &meta.id)
            .field("peer", meta.peer())
            .field("local", &meta.local)
            .field("alive", &self.is_alive())
            .finish()
    }
}
