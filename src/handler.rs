//! The [`Handler`] trait and the [`Flow`] its callbacks return. Owns no
//! state; knows nothing of threads.

use std::fmt;
use std::time::Duration;

use crate::error::{BoxError, Error};
use crate::socket::Socket;

/// What the server does with a connection after a callback returns.
///
/// | flow | the server then |
/// |---|---|
/// | [`Flow::Continue`] | waits for more data, with the read timeout |
/// | [`Flow::ContinueTimeout`] | waits with this timeout, for the next wait only |
/// | [`Flow::ContinuePersistent`] | waits with this timeout from now on |
/// | [`Flow::Close`] | calls `handle_close`, then closes the connection |
/// | [`Flow::Error`] | calls `handle_error` with the reason, then closes |
/// | [`Flow::Detach`] | hands the socket to the application's own thread |
/// | [`Flow::Timeout`] | calls `handle_timeout`, then closes, as an idle timeout does |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use atoll::{Flow, Handler, Socket};
///
/// struct Line;
///
/// impl Handler for Line {
///     fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
///         if data.starts_with(b"quit") {
///             return Flow::Close;
///         }
///         if socket.send(data).is_err() {
///             return Flow::error("echo failed");
///         }
///         // The next line must come within 5 s, this time only.
///         Flow::ContinueTimeout(Some(Duration::from_secs(5)))
///     }
/// }
/// ```
pub enum Flow {
    /// Keep the connection and wait for the next event. The idle timeout is
    /// the connection's current one (the server's `read_timeout` unless a
    /// persistent timeout replaced it).
    Continue,
    /// Keep the connection; the idle timeout until the next event is this
    /// one, once. `None` waits without a timeout.
    ContinueTimeout(Option<Duration>),
    /// Keep the connection and replace its idle timeout for good (also the
    /// default timeout of [`Socket::recv`]). `None` means no timeout.
    ContinuePersistent(Option<Duration>),
    /// Close the connection; [`Handler::handle_close`] runs first.
    Close,
    /// End the connection as timed out, as if its idle timeout had passed:
    /// [`Handler::handle_timeout`] runs (the socket still open), and the
    /// connection's stop event carries [`Timeout::Idle`](crate::Timeout::Idle) (Thousand
    /// Island's `{:error, :timeout, state}`). For a protocol timeout the
    /// handler noticed itself, such as a [`Socket::recv`] that timed out.
    ///
    /// ```
    /// use atoll::{Flow, Handler, Socket};
    ///
    /// struct Greeting;
    ///
    /// impl Handler for Greeting {
    ///     fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
    ///         match socket.recv(5) {
    ///             Ok(_) => Flow::Continue,
    ///             Err(e) if e.is_timeout() => Flow::Timeout,
    ///             Err(e) => Flow::error(e),
    ///         }
    ///     }
    ///
    ///     fn handle_timeout(&mut self, socket: &mut Socket) {
    ///         let _ = socket.send(b"too slow\n");
    ///     }
    /// }
    /// ```
    Timeout,
    /// Close the connection because of this error;
    /// [`Handler::handle_error`] receives it as [`Error::Handler`], and it is
    /// logged unless `silent_terminate_on_error` is set.
    Error(BoxError),
    /// Take the connection off the worker pool and give its [`Socket`] to
    /// this function, to be driven by the application's own thread with
    /// blocking calls. The connection still counts against the limiter,
    /// still appears in the connection list and is still closed at stop; it
    /// ends when the socket is dropped. No further callbacks run.
    Detach(Box<dyn FnOnce(Socket) + Send>),
}

impl Flow {
    /// [`Flow::Error`] from anything that converts into a boxed error,
    /// such as a `&str`, a `String` or an `io::Error`.
    ///
    /// ```
    /// let flow = atoll::Flow::error("bad request");
    /// assert!(matches!(flow, atoll::Flow::Error(_)));
    /// ```
    pub fn error(reason: impl Into<BoxError>) -> Flow {
        Flow::Error(reason.into())
    }

    /// [`Flow::Detach`] from a closure.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use atoll::{Flow, Handler, Socket};
    ///
    /// struct Takeover;
    ///
    /// impl Handler for Takeover {
    ///     fn handle_connection(&mut self, _socket: &mut Socket) -> Flow {
    ///         Flow::detach(|mut socket: Socket| {
    ///             std::thread::spawn(move || {
    ///                 let mut buf = [0u8; 1024];
    ///                 while let Ok(n @ 1..) = socket.read(&mut buf) {
    ///                     if socket.write_all(&buf[..n]).is_err() {
    ///                         break;
    ///                     }
    ///                 }
    ///             });
    ///         })
    ///     }
    /// }
    /// ```
    pub fn detach(f: impl FnOnce(Socket) + Send + 'static) -> Flow {
        Flow::Detach(Box::new(f))
    }
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flow::Continue => f.write_str("Continue"),
            Flow::ContinueTimeout(t) => f.debug_tuple("ContinueTimeout").field(t).finish(),
            Flow::ContinuePersistent(t) => f.debug_tuple("ContinuePersistent").field(t).finish(),
            Flow::Close => f.write_str("Close"),
            Flow::Timeout => f.write_str("Timeout"),
            Flow::Error(e) => f.debug_tuple("Error").field(e).finish(),
            Flow::Detach(_) => f.write_str("Detach(..)"),
        }
    }
}

/// The application's side of a connection: one value per connection, made by
/// the factory given to [`Builder::start`](crate::Builder::start), holding
/// the connection's state in its fields.
///
/// Every callback has a default, so a handler implements only what it needs.
/// Callbacks run on a worker thread and may block (for example in
/// [`Socket::recv`]); while one runs, no other callback of the same
/// connection runs. Between callbacks the connection costs no thread.
///
/// `M` is the type of the messages the application can send to a live
/// connection through its [`Connection`](crate::Connection) handle (the
/// seed's `handle_info`); it defaults to `()`.
///
/// # Which callback runs when
///
/// - [`handle_connection`](Handler::handle_connection): first, once the
///   connection is set up. The default returns [`Flow::Continue`].
/// - [`handle_data`](Handler::handle_data): each time data arrives after a
///   callback returned a `Continue*` flow, and at once if a synchronous
///   [`Socket::recv`] left bytes unread.
/// - [`handle_message`](Handler::handle_message): for each message sent
///   through a [`Connection`](crate::Connection) handle, in order.
/// - Last, exactly one of the following, unless the handler closed the
///   socket itself with [`Socket::close`]:
///   - [`handle_close`](Handler::handle_close): the peer closed the
///     connection, or a callback returned [`Flow::Close`]. The socket is
///     still open (a half-closed peer can still be sent a last reply); it is
///     closed right after.
///   - [`handle_error`](Handler::handle_error): a socket error, a send
///     that timed out ([`Timeout::Send`](crate::Timeout::Send)), a failed
///     or timed-out handshake or PROXY header, a [`Flow::Error`], or a panic in
///     a callback. The socket is already closed.
///   - [`handle_timeout`](Handler::handle_timeout): no data came within the
///     idle timeout, or a callback returned [`Flow::Timeout`]. The socket
///     is still open.
///   - [`handle_shutdown`](Handler::handle_shutdown): the server is
///     stopping. The socket is still open.
///
/// # Examples
///
/// ```
/// use atoll::{Flow, Handler, Socket};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
///         match socket.send(data) {
///             Ok(()) => Flow::Continue,
///             Err(e) => Flow::error(e),
///         }
///     }
/// }
/// ```
pub trait Handler<M = ()>: Send + 'static {
    /// The connection is ready (after any handshake). The default waits for
    /// data.
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        let _ = socket;
        Flow::Continue
    }

    /// Data arrived from the peer. The default ignores it.
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        let _ = (data, socket);
        Flow::Continue
    }

    /// A message arrived from elsewhere in the application. Returning
    /// [`Flow::Continue`] leaves the idle timer as it was: messages do not
    /// count as activity. The default ignores the message.
    fn handle_message(&mut self, message: M, socket: &mut Socket) -> Flow {
        let _ = (message, socket);
        Flow::Continue
    }

    /// The peer closed the connection, or a callback returned
    /// [`Flow::Close`]. The socket is closed after this returns.
    fn handle_close(&mut self, socket: &mut Socket) {
        let _ = socket;
    }

    /// The connection failed; the socket is already closed.
    fn handle_error(&mut self, error: &Error, socket: &mut Socket) {
        let _ = (error, socket);
    }

    /// The server is stopping; the socket is still open (unless the stop
    /// had to force it closed to unblock this connection), and closed
    /// after this returns.
    fn handle_shutdown(&mut self, socket: &mut Socket) {
        let _ = socket;
    }

    /// The idle timeout passed with no data, or a callback returned
    /// [`Flow::Timeout`]; the socket is still open, and closed after this
    /// returns.
    fn handle_timeout(&mut self, socket: &mut Socket) {
        let _ = socket;
    }
}
