//! [`Builder`]: the options every server has, with their defaults, for a
//! stream server (TCP, Unix, TLS; the default kind) and a UDP server
//! ([`UdpBuilder`](crate::UdpBuilder)) alike. The options of one kind are
//! in `stream.rs` and `udp.rs`.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::proxy::ProxyProtocol;
use crate::socket::SendPolicy;
use crate::telemetry::Sink;
use crate::transport::{listen_setters, Addr, ListenOptions, Tcp, Transport};
use crate::udp::UdpOptions;

/// Configures and starts a server. A `Builder` (of the default kind,
/// [`Streams`]) serves TCP, Unix sockets and TLS, and is made by
/// [`Server::builder`](crate::Server::builder); a
/// [`UdpBuilder`](crate::UdpBuilder) serves UDP, and is made by
/// [`Server::udp`](crate::Server::udp). The options both have are set the
/// same way; an option of one kind only exists on that kind's builder.
///
/// Every option documents its default.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use atoll::{Flow, Handler, Server, Socket};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
///         socket.send(data).map_or_else(Flow::error, |()| Flow::Continue)
///     }
/// }
///
/// let server = Server::builder()
///     .ip([127, 0, 0, 1].into())
///     .port(0)
///     .num_workers(4)
///     .read_timeout(Some(Duration::from_secs(10)))
///     .start(|_conn| Ok(Echo))?;
/// println!("listening on {}", server.local_addr()?);
/// server.stop(Duration::from_secs(1));
/// # Ok::<(), atoll::Error>(())
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct Builder<K = Streams> {
    pub(crate) listen: ListenOptions,
    pub(crate) send: SendPolicy,
    pub(crate) num_acceptors: usize,
    pub(crate) num_workers: usize,
    pub(crate) max_workers: usize,
    pub(crate) worker_keepalive: Duration,
    pub(crate) blocking_after: Duration,
    pub(crate) num_connections: Option<usize>,
    pub(crate) max_connections_retry_count: u32,
    pub(crate) max_connections_retry_wait: Duration,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) shutdown_timeout: Option<Duration>,
    pub(crate) silent_terminate_on_error: bool,
    pub(crate) max_queued_messages: Option<usize>,
    pub(crate) sinks: Vec<Arc<dyn Sink>>,
    // Stream servers only.
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) handshake_timeout: Option<Duration>,
    pub(crate) proxy: Option<ProxyProtocol>,
    // UDP servers only.
    pub(crate) udp: UdpOptions,
    kind: PhantomData<K>,
}

/// The kind of [`Builder`] that serves streams: TCP, Unix sockets, TLS.
/// The default kind.
///
/// ```
/// let builder: atoll::Builder<atoll::Streams> = atoll::Server::builder();
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Streams;

/// The kind of [`Builder`] that serves UDP: see
/// [`UdpBuilder`](crate::UdpBuilder).
///
/// ```
/// let builder: atoll::Builder<atoll::Datagrams> = atoll::Server::udp();
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Datagrams;

impl<K> fmt::Debug for Builder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("kind", &std::any::type_name::<K>())
            .field("listen", &self.listen)
            .field("send", &self.send)
            .field("num_acceptors", &self.num_acceptors)
            .field("num_workers", &self.num_workers)
            .field("max_workers", &self.max_workers)
            .field("worker_keepalive", &self.worker_keepalive)
            .field("blocking_after", &self.blocking_after)
            .field("num_connections", &self.num_connections)
            .field(
                "max_connections_retry_count",
                &self.max_connections_retry_count,
            )
            .field(
                "max_connections_retry_wait",
                &self.max_connections_retry_wait,
            )
            .field("read_timeout", &self.read_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("silent_terminate_on_error", &self.silent_terminate_on_error)
            .field("max_queued_messages", &self.max_queued_messages)
            .field("sinks", &self.sinks.len())
            .field("transport", &self.transport.name())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("proxy", &self.proxy)
            .field("udp", &self.udp)
            .finish()
    }
}

/// The default number of acceptor threads: one per available core, at
/// most 16. An acceptor accepts and sets up connections and runs their idle
/// timers; it does no work per request (the workers collect readiness), so
/// more acceptors only help a large machine accept faster under connection
/// churn. See [`docs/ARCHITECTURE.md`](https://github.com/atoll-rs/atoll/blob/main/docs/ARCHITECTURE.md).
///
/// ```
/// assert!(atoll::default_num_acceptors() >= 1);
/// ```
pub fn default_num_acceptors() -> usize {
    cores().min(16)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The default base number of worker threads: one per available core.
/// Fast callbacks need no more: the workers collect readiness themselves
/// and run it where it lands. Callbacks that block get more threads, up to
/// [`Builder::max_workers`]. See [`docs/ARCHITECTURE.md`](https://github.com/atoll-rs/atoll/blob/main/docs/ARCHITECTURE.md).
///
/// ```
/// assert!(atoll::default_num_workers() >= 1);
/// ```
pub fn default_num_workers() -> usize {
    cores()
}

/// The default cap on worker threads, [`Builder::max_workers`].
pub const DEFAULT_MAX_WORKERS: usize = 4096;

/// Makes the builders' listen setters of the list in `transport/listen.rs`
/// (where each is documented once): those of `any` server on every
/// builder, those of `stream` servers on [`Builder<Streams>`]. Each
/// forwards to the [`ListenOptions`] setter of its name.
macro_rules! builder_setters {
    ($(
        $(#[$attr:meta])*
        $kind:ident $name:ident($arg:ident: $ty:ty) $ex:literal |$o:ident| $body:block
    )*) => {
        builder_setters!(@split [] [] $([$kind] { $(#[$attr])* $name($arg: $ty) $ex })*);
    };
    (@split [$($any:tt)*] [$($stream:tt)*]) => {
        /// The listen options every server has.
        impl<K> Builder<K> {
            $($any)*
        }

        /// The listen options of stream servers.
        impl Builder<Streams> {
            $($stream)*
        }
    };
    (@split [$($any:tt)*] [$($stream:tt)*]
        [any] { $(#[$attr:meta])* $name:ident($arg:ident: $ty:ty) $ex:literal } $($rest:tt)*) => {
        builder_setters!(@split [$($any)* builder_setters!(@fn $(#[$attr])* $name($arg: $ty) $ex);] [$($stream)*] $($rest)*);
    };
    (@split [$($any:tt)*] [$($stream:tt)*]
        [stream] { $(#[$attr:meta])* $name:ident($arg:ident: $ty:ty) $ex:literal } $($rest:tt)*) => {
        builder_setters!(@split [$($any)*] [$($stream)* builder_setters!(@fn $(#[$attr])* $name($arg: $ty) $ex);] $($rest)*);
    };
    (@fn $(#[$attr:meta])* $name:ident($arg:ident: $ty:ty) $ex:literal) => {
        $(#[$attr])*
        #[doc = ""]
        #[doc = "```"]
        #[doc = concat!("let builder = atoll::Server::builder()", $ex, ";")]
        #[doc = "```"]
        pub fn $name(mut self, $arg: $ty) -> Self {
            self.listen = std::mem::take(&mut self.listen).$name($arg);
            self
        }
    };
}

listen_setters!(builder_setters);

impl<K> Builder<K> {
    /// Every option at its default, for either kind.
    fn with_defaults() -> Builder<K> {
        Builder {
            listen: ListenOptions::new(),
            send: SendPolicy::default(),
            num_acceptors: default_num_acceptors(),
            num_workers: default_num_workers(),
            max_workers: DEFAULT_MAX_WORKERS,
            worker_keepalive: Duration::from_secs(10),
            blocking_after: Duration::from_millis(1),
            num_connections: Some(16_384),
            max_connections_retry_count: 5,
            max_connections_retry_wait: Duration::from_secs(1),
            read_timeout: Some(Duration::from_secs(60)),
            shutdown_timeout: Some(Duration::from_secs(15)),
            silent_terminate_on_error: false,
            max_queued_messages: Some(4096),
            sinks: Vec::new(),
            transport: Arc::new(Tcp),
            handshake_timeout: Some(Duration::from_secs(5)),
            proxy: None,
            udp: UdpOptions::default(),
            kind: PhantomData,
        }
    }
}

impl Default for Builder<Streams> {
    fn default() -> Builder<Streams> {
        Builder::with_defaults()
    }
}

impl Default for Builder<Datagrams> {
    fn default() -> Builder<Datagrams> {
        Builder::with_defaults()
    }
}

impl Builder<Streams> {
    /// A stream server's builder with every option at its default (as
    /// [`Server::builder`](crate::Server::builder)).
    ///
    /// ```
    /// let builder = atoll::Builder::new();
    /// ```
    pub fn new() -> Builder<Streams> {
        Builder::default()
    }
}

/// The options every server has.
impl<K> Builder<K> {
    /// Sets the address and port at once.
    ///
    /// ```
    /// let builder = atoll::Server::builder().addr("127.0.0.1:0".parse().unwrap());
    /// ```
    pub fn addr(self, addr: SocketAddr) -> Self {
        self.ip(addr.ip()).port(addr.port())
    }

    /// Listens on a socket that is already bound instead of binding one:
    /// from systemd ([`inherit::systemd`](crate::inherit::systemd)), a
    /// parent process, or a predecessor in a handover
    /// ([`Server::listener_fds`](crate::Server::listener_fds),
    /// [`inherit::receive`](crate::inherit::receive)). The address options
    /// (`ip`, `port`, `unix`) are then ignored. See [`ListenOptions::fd`].
    ///
    /// ```
    /// # use atoll::Handler;
    /// # struct H;
    /// # impl Handler for H {}
    /// let bound = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let addr = bound.local_addr()?;
    /// // Anything that owns a descriptor: a std or socket2 listener, an `OwnedFd`.
    /// let server = atoll::Server::builder().listen_fd(bound).start(|_| Ok(H))?;
    /// assert_eq!(server.local_addr()?, addr);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listen_fd(mut self, fd: impl Into<std::os::fd::OwnedFd>) -> Self {
        self.listen = self.listen.fd(fd);
        self
    }

    /// The number of acceptor threads, each accepting from the listener,
    /// setting connections up for the workers and running their idle
    /// timers (a UDP acceptor also receives the datagrams). Default is
    /// [`default_num_acceptors`]: one accepts tens of thousands of
    /// connections a second, so a few are enough.
    ///
    /// ```
    /// let builder = atoll::Server::builder().num_acceptors(2);
    /// ```
    pub fn num_acceptors(mut self, n: usize) -> Self {
        self.num_acceptors = n;
        self
    }

    /// The base number of worker threads: started with the server and kept
    /// for its life. Workers collect the connections' readiness themselves
    /// and run the callbacks; fast callbacks never need more threads than
    /// this. Default is [`default_num_workers`] (one per core).
    ///
    /// ```
    /// let builder = atoll::Server::builder().num_workers(8);
    /// ```
    pub fn num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }

    /// The most worker threads at once. When callbacks block (a database
    /// query, a file read, a call to another service), the pool starts
    /// workers beyond [`num_workers`](Builder::num_workers) so that the
    /// other connections keep being served, up to this cap; past it, work
    /// waits in order, and a warning is logged when every worker has been
    /// busy for half a second with work waiting. Set it to the largest
    /// number of callbacks you expect to block at once. Default is
    /// [`DEFAULT_MAX_WORKERS`] (4,096).
    ///
    /// ```
    /// let builder = atoll::Server::builder().max_workers(256);
    /// ```
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = n;
        self
    }

    /// A fixed pool of `n` workers that never grows: sets both
    /// [`num_workers`](Builder::num_workers) and
    /// [`max_workers`](Builder::max_workers). A callback that blocks then
    /// holds one of the `n` threads, and other connections wait for it.
    ///
    /// ```
    /// let builder = atoll::Server::builder().fixed_workers(4);
    /// ```
    pub fn fixed_workers(self, n: usize) -> Self {
        self.num_workers(n).max_workers(n)
    }

    /// How long a worker beyond [`num_workers`](Builder::num_workers)
    /// waits without work before it exits. Default is 10 seconds.
    ///
    /// ```
    /// let builder = atoll::Server::builder().worker_keepalive(std::time::Duration::from_secs(60));
    /// ```
    pub fn worker_keepalive(mut self, keepalive: Duration) -> Self {
        self.worker_keepalive = keepalive;
        self
    }

    /// How long a connection's callbacks may run before they count as
    /// blocking. Such a connection is then always run by a worker other
    /// than the one collecting readiness, and a callback that has been
    /// running this long gets the other connections a new worker. Lower
    /// values react sooner to blocking and cost more monitor wake-ups
    /// (one per this period while callbacks run). At least 100 µs.
    /// Default is 1 ms.
    ///
    /// ```
    /// let builder = atoll::Server::builder().blocking_after(std::time::Duration::from_micros(500));
    /// ```
    pub fn blocking_after(mut self, after: Duration) -> Self {
        self.blocking_after = after;
        self
    }

    /// The most live connections per acceptor; `None` for no limit. The
    /// server-wide limit is this times `num_acceptors`. Can be changed on a
    /// running server with [`Server::set_num_connections`](crate::Server::set_num_connections). Default is
    /// 16,384.
    ///
    /// ```
    /// let builder = atoll::Server::builder().num_connections(Some(1_000));
    /// ```
    pub fn num_connections(mut self, n: Option<usize>) -> Self {
        self.num_connections = n;
        self
    }

    /// How many times an accepted connection waits
    /// `max_connections_retry_wait` for a free slot before it is closed.
    /// Default is 5.
    ///
    /// ```
    /// let builder = atoll::Server::builder().max_connections_retry_count(0); // close at once when full
    /// ```
    pub fn max_connections_retry_count(mut self, n: u32) -> Self {
        self.max_connections_retry_count = n;
        self
    }

    /// How long each wait for a free slot lasts. A slot that frees ends the
    /// wait at once. Default is 1 s.
    ///
    /// ```
    /// let builder = atoll::Server::builder().max_connections_retry_wait(std::time::Duration::from_millis(100));
    /// ```
    pub fn max_connections_retry_wait(mut self, wait: Duration) -> Self {
        self.max_connections_retry_wait = wait;
        self
    }

    /// How long a connection may go without receiving data before
    /// [`Handler::handle_timeout`](crate::Handler::handle_timeout) runs and it is closed; also the default
    /// timeout of [`Socket::recv`](crate::Socket::recv). `None` waits
    /// forever. Default is 60 s.
    ///
    /// ```
    /// let builder = atoll::Server::builder().read_timeout(Some(std::time::Duration::from_secs(5)));
    /// ```
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How long [`Server::shutdown`](crate::Server::shutdown) and dropping the server wait for
    /// connections to finish before forcing them closed; `None` waits
    /// forever. Default is 15 s.
    ///
    /// ```
    /// let builder = atoll::Server::builder().shutdown_timeout(None); // wait for every connection
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Whether a [`Flow::Error`](crate::Flow::Error) returned by a handler
    /// goes unlogged. Panics are always logged. Default is `false`.
    ///
    /// ```
    /// let builder = atoll::Server::builder().silent_terminate_on_error(true);
    /// ```
    pub fn silent_terminate_on_error(mut self, silent: bool) -> Self {
        self.silent_terminate_on_error = silent;
        self
    }

    /// How many messages may wait in one connection's queue for its
    /// handler; `None` for no limit. Default is 4096. Past it,
    /// [`Connection::send`](crate::Connection::send) gives the message back as
    /// [`SendError::Full`](crate::SendError::Full): a handler that far
    /// behind (a client that reads slowly, say) would otherwise grow the
    /// queue without bound, and the sender is the one who knows whether to
    /// drop the message, wait, or close the connection.
    ///
    /// ```
    /// let builder = atoll::Server::builder().max_queued_messages(Some(100));
    /// ```
    pub fn max_queued_messages(mut self, max: Option<usize>) -> Self {
        self.max_queued_messages = max;
        self
    }

    /// How long a send may wait for the peer to read before it fails with
    /// [`Timeout::Send`](crate::Timeout::Send) and (see
    /// [`send_timeout_close`](Builder::send_timeout_close)) the connection
    /// is closed; `None` waits forever. Default is 30 s.
    ///
    /// ```
    /// let builder = atoll::Server::builder().send_timeout(Some(std::time::Duration::from_secs(5)));
    /// ```
    pub fn send_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.send.timeout = timeout;
        self
    }

    /// Whether a send that times out closes the connection (Thousand
    /// Island's `send_timeout_close`). Off, the send fails with
    /// [`Timeout::Send`](crate::Timeout::Send), which holds the bytes not sent, and the
    /// connection stays open for the handler to retry or close. A handler
    /// can change it for its connection with
    /// [`Socket::set_send_timeout_close`](crate::Socket::set_send_timeout_close).
    /// Default is `true`.
    ///
    /// ```
    /// let builder = atoll::Server::builder().send_timeout_close(false);
    /// ```
    pub fn send_timeout_close(mut self, close: bool) -> Self {
        self.send.close = close;
        self
    }

    /// Attaches a telemetry sink to the server from its start, so that it
    /// sees the first `listener.start` and `acceptor.start` too (a sink
    /// attached with [`Server::attach_sink`](crate::Server::attach_sink) comes after them). It stays
    /// attached for the life of the server. May be called for several
    /// sinks. Default is none.
    ///
    /// ```
    /// # use atoll::Handler;
    /// # struct H;
    /// # impl Handler for H {}
    /// use std::sync::{Arc, Mutex};
    /// use atoll::telemetry::Event;
    ///
    /// let names = Arc::new(Mutex::new(Vec::new()));
    /// let seen = names.clone();
    /// let server = atoll::Server::builder()
    ///     .ip([127, 0, 0, 1].into())
    ///     .port(0)
    ///     .num_acceptors(1)
    ///     .sink(move |e: &Event<'_>| seen.lock().unwrap().push(e.name()))
    ///     .start(|_| Ok(H))?;
    /// server.stop(std::time::Duration::from_secs(1));
    /// assert_eq!(names.lock().unwrap()[0], "listener.start");
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Rejects configurations that cannot work, of either kind.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |msg: &str| Err(Error::Config(msg.to_string()));
        if self.num_workers == 0 {
            return bad("num_workers must be at least 1");
        }
        if self.num_acceptors == 0 {
            return bad("num_acceptors must be at least 1");
        }
        if self.num_connections == Some(0) {
            return bad(
                "num_connections must be at least 1 (use Server::suspend to stop accepting)",
            );
        }
        if self.max_queued_messages == Some(0) {
            return bad("max_queued_messages must be at least 1, or None for no limit");
        }
        if self.max_workers > 65_536 || self.num_acceptors > 256 {
            return bad("max_workers is at most 65,536 and num_acceptors at most 256");
        }
        if self.num_workers > self.max_workers {
            return Err(Error::Config(format!(
                "num_workers ({}) is more than max_workers ({})",
                self.num_workers, self.max_workers
            )));
        }
        if self.blocking_after < Duration::from_micros(100) {
            return bad("blocking_after must be at least 100 µs");
        }
        if self.read_timeout == Some(Duration::ZERO) {
            return bad("read_timeout must be positive or None");
        }
        if self.send.timeout == Some(Duration::ZERO) {
            return bad("send_timeout must be positive or None");
        }
        self.listen.validate()
    }
}

/// Getters: what each option is set to, by the setter's name with `get_`
/// in front (the setters take the builder by value, so the plain names are
/// taken). A fresh builder reports the defaults.
impl<K> Builder<K> {
    /// The address the server will bind: `ip`:`port`, the Unix socket path,
    /// or an inherited socket's own address. Default is `0.0.0.0:4000`.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_addr().to_string(), "0.0.0.0:4000");
    /// ```
    pub fn get_addr(&self) -> Addr {
        self.listen.bind_addr()
    }

    /// The IP address to listen on; `None` for a Unix socket. Default is
    /// `0.0.0.0`.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_ip(), Some([0, 0, 0, 0].into()));
    /// ```
    pub fn get_ip(&self) -> Option<IpAddr> {
        self.get_addr().ip()
    }

    /// The port to listen on; `None` for a Unix socket. Default is 4000.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_port(), Some(4000));
    /// ```
    pub fn get_port(&self) -> Option<u16> {
        self.get_addr().port()
    }

    /// `IPV6_V6ONLY`; `None` leaves the system's default.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_only_v6(), None);
    /// ```
    pub fn get_only_v6(&self) -> Option<bool> {
        self.listen.only_v6
    }

    /// `SO_REUSEPORT`. Default is `false`.
    ///
    /// ```
    /// assert!(!atoll::Builder::new().get_reuse_port());
    /// ```
    pub fn get_reuse_port(&self) -> bool {
        self.listen.reuse_port
    }

    /// The number of acceptor threads. Default is [`default_num_acceptors`].
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_num_acceptors(), atoll::default_num_acceptors());
    /// ```
    pub fn get_num_acceptors(&self) -> usize {
        self.num_acceptors
    }

    /// The base number of worker threads. Default is
    /// [`default_num_workers`] (one per core).
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_num_workers(), atoll::default_num_workers());
    /// ```
    pub fn get_num_workers(&self) -> usize {
        self.num_workers
    }

    /// The most worker threads at once. Default is
    /// [`DEFAULT_MAX_WORKERS`] (4,096).
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_max_workers(), 4_096);
    /// ```
    pub fn get_max_workers(&self) -> usize {
        self.max_workers
    }

    /// How long a worker beyond the base count waits for work before it
    /// exits. Default is 10 seconds.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(atoll::Builder::new().get_worker_keepalive(), Duration::from_secs(10));
    /// ```
    pub fn get_worker_keepalive(&self) -> Duration {
        self.worker_keepalive
    }

    /// How long a connection's callbacks may run before they count as
    /// blocking. Default is 1 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(atoll::Builder::new().get_blocking_after(), Duration::from_millis(1));
    /// ```
    pub fn get_blocking_after(&self) -> Duration {
        self.blocking_after
    }

    /// The most live connections per acceptor. Default is 16,384.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_num_connections(), Some(16_384));
    /// ```
    pub fn get_num_connections(&self) -> Option<usize> {
        self.num_connections
    }

    /// How many waits for a free slot. Default is 5.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_max_connections_retry_count(), 5);
    /// ```
    pub fn get_max_connections_retry_count(&self) -> u32 {
        self.max_connections_retry_count
    }

    /// How long each wait for a free slot lasts. Default is 1 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(atoll::Builder::new().get_max_connections_retry_wait(), Duration::from_secs(1));
    /// ```
    pub fn get_max_connections_retry_wait(&self) -> Duration {
        self.max_connections_retry_wait
    }

    /// The idle (and `recv`) timeout. Default is 60 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(atoll::Builder::new().get_read_timeout(), Some(Duration::from_secs(60)));
    /// ```
    pub fn get_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// How long a shutdown waits for connections. Default is 15 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(atoll::Builder::new().get_shutdown_timeout(), Some(Duration::from_secs(15)));
    /// ```
    pub fn get_shutdown_timeout(&self) -> Option<Duration> {
        self.shutdown_timeout
    }

    /// Whether handler errors go unlogged. Default is `false`.
    ///
    /// ```
    /// assert!(!atoll::Builder::new().get_silent_terminate_on_error());
    /// ```
    pub fn get_silent_terminate_on_error(&self) -> bool {
        self.silent_terminate_on_error
    }

    /// The cap of each connection's message queue. Default is 4096.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_max_queued_messages(), Some(4096));
    /// ```
    pub fn get_max_queued_messages(&self) -> Option<usize> {
        self.max_queued_messages
    }

    /// The send timeout. Default is 30 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(atoll::Builder::new().get_send_timeout(), Some(Duration::from_secs(30)));
    /// ```
    pub fn get_send_timeout(&self) -> Option<Duration> {
        self.send.timeout
    }

    /// Whether a send that times out closes the connection. Default is
    /// `true`.
    ///
    /// ```
    /// assert!(atoll::Builder::new().get_send_timeout_close());
    /// ```
    pub fn get_send_timeout_close(&self) -> bool {
        self.send.close
    }

    /// `SO_REUSEADDR` on the listener. Default is `true`.
    ///
    /// ```
    /// assert!(atoll::Builder::new().get_reuse_address());
    /// ```
    pub fn get_reuse_address(&self) -> bool {
        self.listen.reuse_address
    }

    /// `SO_RCVBUF` on accepted sockets; `None` leaves the kernel's.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_recv_buffer_size(), None);
    /// ```
    pub fn get_recv_buffer_size(&self) -> Option<usize> {
        self.listen.recv_buffer_size
    }

    /// `SO_SNDBUF` on accepted sockets; `None` leaves the kernel's.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_send_buffer_size(), None);
    /// ```
    pub fn get_send_buffer_size(&self) -> Option<usize> {
        self.listen.send_buffer_size
    }

    /// How many telemetry sinks were given with [`sink`](Builder::sink).
    /// Default is 0.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_sinks(), 0);
    /// ```
    pub fn get_sinks(&self) -> usize {
        self.sinks.len()
    }
}
