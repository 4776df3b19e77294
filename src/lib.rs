//! atoll: a socket server library for programs that are not async.
//!
//! Acceptor threads accept connections; a pool of worker threads (one per
//! core) waits for their readiness with mio and runs the application's
//! blocking [`Handler`] callbacks where the readiness lands, adding threads
//! while callbacks block; a counting limiter caps live connections. Between callbacks a connection costs no thread, so a handful
//! of threads holds tens of thousands of connections, and the handler code
//! stays plain blocking Rust: no runtime, no futures.
//!
//! # A server in a few lines
//!
//! ```
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use atoll::{Flow, Handler, Server, Socket};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
//!         match socket.send(data) {
//!             Ok(()) => Flow::Continue,
//!             Err(e) => Flow::error(e),
//!         }
//!     }
//! }
//!
//! let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_conn| Ok(Echo))?;
//!
//! let mut client = std::net::TcpStream::connect(server.local_addr()?)?;
//! client.write_all(b"ping")?;
//! let mut reply = [0u8; 4];
//! client.read_exact(&mut reply)?;
//! assert_eq!(&reply, b"ping");
//!
//! server.stop(Duration::from_secs(5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The pieces
//!
//! - [`Builder`] holds every option, each documenting its default;
//!   [`Builder::start`] binds and returns a [`Server`].
//! - [`Handler`] is the application's per-connection value; its callbacks
//!   return a [`Flow`].
//! - [`Socket`] is what callbacks read from and write to, with timeouts;
//!   it implements `Read` and `Write`.
//! - [`Connection`] is a handle to a live connection for other threads, to
//!   send it messages.
//! - [`Error`] is the one error type; [`Timeout`] says which wait ran out
//!   of time, for the client's errors too.
//! - [`transport`] holds the transports (TCP, TLS, Unix sockets, your own)
//!   and a standalone listener.
//! - [`telemetry`] and [`logger`] let the application observe a running
//!   server; `metrics` (feature `metrics`) publishes its numbers through
//!   the `metrics` facade; with the feature `tracing`, listeners,
//!   acceptors and connections have `tracing` spans, the connection's
//!   entered around its callbacks, and atoll's own lines are `tracing`
//!   events with fields.
//! - [`udp`] serves datagrams with the same handlers.
//! - [`client`] is a blocking TCP client (with TLS) for threaded code.
//!
//! See [`docs/ARCHITECTURE.md`](https://github.com/atoll-rs/atoll/blob/main/docs/ARCHITECTURE.md)
//! for the threads and the life of a connection. Readers who know
//! Thousand Island (Elixir) find each of its names mapped to atoll's in
//! [`docs/COMING_FROM_THOUSAND_ISLAND.md`](https://github.com/atoll-rs/atoll/blob/main/docs/COMING_FROM_THOUSAND_ISLAND.md).
#![warn(missing_docs, missing_debug_implementations)]
// docs.rs builds with every feature and marks what each item needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]

// atoll is Linux-only, and says so once instead of failing with a page of
// errors: every module is compiled on Linux alone (each declared with its
// own `cfg`, where rustfmt sees it: a macro around them hid every module
// from `cargo fmt`).
#[cfg(not(target_os = "linux"))]
compile_error!(
    "atoll supports Linux only: it needs sendfile(2), SO_PEERCRED, \
     MSG_CMSG_CLOEXEC and MSG_NOSIGNAL, and systemd's socket activation, \
     which this target lacks or spells differently"
);

// First: its `report!` macro serves the modules below.
#[cfg(target_os = "linux")]
#[macro_use]
mod trace;
#[cfg(target_os = "linux")]
mod acceptor;
#[cfg(target_os = "linux")]
mod addr;
#[cfg(target_os = "linux")]
mod blocking;
#[cfg(target_os = "linux")]
pub mod client;
#[cfg(target_os = "linux")]
mod connection;
#[cfg(target_os = "linux")]
mod error;
#[cfg(target_os = "linux")]
mod handler;
#[cfg(target_os = "linux")]
pub mod inherit;
#[cfg(target_os = "linux")]
mod limiter;
#[cfg(target_os = "linux")]
pub mod logger;
#[cfg(target_os = "linux")]
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(target_os = "linux")]
pub mod notify;
#[cfg(target_os = "linux")]
mod pool;
#[cfg(target_os = "linux")]
pub mod proxy;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
mod socket;
#[cfg(target_os = "linux")]
mod stats;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(target_os = "linux")]
pub mod telemetry;
#[cfg(target_os = "linux")]
mod timeout;
#[cfg(target_os = "linux")]
mod timer;
#[cfg(target_os = "linux")]
pub mod transport;
#[cfg(target_os = "linux")]
pub mod udp;

#[cfg(target_os = "linux")]
pub use connection::{Connection, SendError};
#[cfg(target_os = "linux")]
pub use error::{BoxError, Error};
#[cfg(target_os = "linux")]
pub use handler::{Flow, Handler};
#[cfg(target_os = "linux")]
pub use server::{
    default_num_acceptors, default_num_workers, Builder, Datagrams, Server, Status, Streams,
    UdpBuilder, DEFAULT_MAX_WORKERS,
};
#[cfg(target_os = "linux")]
pub use socket::{Socket, SocketStats};
#[cfg(target_os = "linux")]
pub use stats::ServerStats;
#[cfg(target_os = "linux")]
pub use std::net::Shutdown;
#[cfg(target_os = "linux")]
pub use timeout::Timeout;
