//! [`Server`]: a running server (stream or UDP) and its lifecycle, and how
//! it starts from a builder. The face: nothing below imports it. Never
//! touches a connection's state but through the `Service` it made.

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, RwLock};

mod builder;
mod plan;
mod stream;
mod udp;

pub use self::builder::{
    default_num_acceptors, default_num_workers, Builder, Datagrams, Streams, DEFAULT_MAX_WORKERS,
};
pub use self::udp::UdpBuilder;

pub(crate) use self::plan::Plan;
use self::plan::{bind, Settings};
use crate::acceptor::{self, Acceptor, AcceptorOptions, Control};
use crate::connection::sched::Work;
use crate::connection::{Connection, Factory, Service, FORCE_GRACE};
use crate::error::Error;
use crate::handler::Handler;
use crate::pool::Pool;
use crate::stats::ServerStats;
use crate::telemetry::{Emitter, Kind, ListenerSpan, Sink, SinkId, Span, Telemetry};
use crate::transport::{Addr, ListenOptions, ListenSocket};

/// Whether a server accepts connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Listening and accepting.
    Running,
    /// Not listening; open connections carry on. See [`Server::suspend`].
    Suspended,
    /// [`Server::stop`] is draining the connections.
    Stopping,
    /// Stopped: no listener, no connections, no threads.
    Stopped,
}

/// What the server handle keeps of a running server.
struct Running<H, M> {
    settings: Settings,
    service: Arc<Service<H, M>>,
    /// Emptied once the acceptor threads are told to exit at stop, so that a
    /// stopped server that is not dropped holds none of their descriptors.
    acceptors: RwLock<Vec<Arc<acceptor::Handle>>>,
}

/// The server handle's view of the shared state, without the handler type.
trait Backend<M>: Send + Sync {
    fn connections(&self) -> Vec<Connection<M>>;
    fn live(&self) -> usize;
    fn shutdown_all(&self);
    fn force_close_all(&self);
    fn wait_drained(&self, deadline: Option<Instant>) -> bool;
    fn set_limit(&self, limit: Option<usize>);
    fn stats(&self) -> ServerStats;
    fn control(&self, make: &mut dyn FnMut(Sender<()>) -> Option<Control>) -> Result<(), Error>;
    fn exit_acceptors(&self);
    fn exit_workers(&self);
    fn settings(&self) -> &Settings;
    fn telemetry(&self) -> &Arc<Telemetry>;
}

impl<H: Handler<M>, M: Send + 'static> Backend<M> for Running<H, M> {
    fn connections(&self) -> Vec<Connection<M>> {
        self.service
            .connections()
            .iter()
            .map(|c| c.handle())
            .collect()
    }

    fn live(&self) -> usize {
        self.acceptors.read().iter().map(|a| a.limiter.live()).sum()
    }

    fn shutdown_all(&self) {
        for conn in self.service.connections() {
            conn.notify(Work::SHUTDOWN);
        }
    }

    fn force_close_all(&self) {
        for conn in self.service.connections() {
            conn.force_close();
        }
    }

    fn wait_drained(&self, deadline: Option<Instant>) -> bool {
        self.service.wait_ended(deadline, || self.live() == 0)
    }

    fn set_limit(&self, limit: Option<usize>) {
        for a in self.acceptors.read().iter() {
            a.limiter.set_limit(limit);
        }
    }

    fn stats(&self) -> ServerStats {
        let s = &self.service.counters;
        let pool = self.service.pool.stats();
        ServerStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            accept_errors: s.accept_errors.load(Ordering::Relaxed),
            panics: s.panics.load(Ordering::Relaxed),
            live: self.live() as u64,
            bytes_in: pool.traffic.bytes_in,
            bytes_out: pool.traffic.bytes_out,
            busy_workers: pool.busy as u64,
            queued: pool.queued as u64,
            workers: pool.workers as u64,
            blocked_workers: pool.blocked as u64,
            dispatches: pool.dispatches,
            dispatch_wait: pool.dispatch_wait,
            saturations: pool.saturations,
            messages_refused: s.messages_refused.load(Ordering::Relaxed),
            proxy_errors: s.proxy_errors.load(Ordering::Relaxed),
        }
    }

    /// Sends each acceptor the command `make` builds around an
    /// acknowledgement sender, and waits for the acknowledgements.
    fn control(&self, make: &mut dyn FnMut(Sender<()>) -> Option<Control>) -> Result<(), Error> {
        let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<()>();
        let mut expected = 0;
        for a in self.acceptors.read().iter() {
            let Some(control) = make(ack_tx.clone()) else {
                break;
            };
            if a.command(control) {
                expected += 1;
            }
        }
        for _ in 0..expected {
            ack_rx.recv_timeout(Duration::from_secs(10)).map_err(|_| {
                Error::Io(std::io::Error::other("an acceptor thread did not answer"))
            })?;
        }
        Ok(())
    }

    fn exit_acceptors(&self) {
        let acceptors = std::mem::take(&mut *self.acceptors.write());
        for a in acceptors {
            a.command(Control::Exit);
        }
    }

    fn exit_workers(&self) {
        self.service.pool.shutdown(FORCE_GRACE);
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn telemetry(&self) -> &Arc<Telemetry> {
        &self.service.telemetry
    }
}

struct Life {
    status: Status,
    /// How to listen (again, after a suspend). The server's own copy: a
    /// stop lets go of an inherited socket here. Boxed: the handle stays
    /// small.
    listen: Box<ListenOptions>,
    local_addr: Option<Addr>,
    /// The open listener span: its id and start.
    listener_span: Option<(ListenerSpan, Instant)>,
    /// A suspended UDP server's address: its sockets are kept.
    parked: Option<Addr>,
    /// The listening sockets, for [`Server::listener_fds`]: the one the
    /// acceptors share (TCP, Unix), or each acceptor's own (UDP).
    listening: Vec<socket2::Socket>,
    /// Whether another process may hold the listening sockets: a Unix
    /// socket's file is then left in place.
    shared: bool,
    threads: Vec<JoinHandle<()>>,
}

/// A running TCP server: the handle [`Builder::start`] returns.
///
/// It reports the bound address, the status and the live connections, and
/// controls the lifecycle: [`suspend`](Server::suspend),
/// [`resume`](Server::resume), [`stop`](Server::stop). Dropping it stops
/// the server, waiting up to `shutdown_timeout`. All methods take `&self`:
/// share the server across threads in an `Arc`.
///
/// `M` is the type of the messages connections accept (see
/// [`Handler`]).
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use atoll::{Flow, Handler, Server, Socket};
///
/// struct HelloWorld;
///
/// impl Handler for HelloWorld {
///     fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
///         let _ = socket.send(b"Hello, World");
///         Flow::Close
///     }
/// }
///
/// let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(HelloWorld))?;
/// let mut client = std::net::TcpStream::connect(server.local_addr()?)?;
/// let mut reply = String::new();
/// client.read_to_string(&mut reply)?;
/// assert_eq!(reply, "Hello, World");
/// server.stop(Duration::from_secs(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "dropping a started server stops it at once"]
pub struct Server<M = ()> {
    backend: Arc<dyn Backend<M>>,
    life: Mutex<Life>,
    stopped: Condvar,
}

impl Server<()> {
    /// A [`Builder`] of a stream server (TCP, Unix, TLS) with every option
    /// at its default.
    ///
    /// ```
    /// let builder = atoll::Server::builder().port(0);
    /// ```
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A [`UdpBuilder`] of a UDP server (see [`crate::udp`]) with every
    /// option at its default.
    ///
    /// ```
    /// let builder = atoll::Server::udp().port(0);
    /// ```
    pub fn udp() -> UdpBuilder {
        UdpBuilder::default()
    }
}

impl<M: Send + 'static> Server<M> {
    pub(crate) fn start<H: Handler<M>>(
        plan: Plan,
        factory: Factory<H, M>,
    ) -> Result<Server<M>, Error> {
        let listener = bind(&plan.listen, plan.settings.udp.as_ref())?;
        let pool = Pool::start(plan.pool)?;
        let telemetry = Arc::new(Telemetry::with_sinks(&plan.sinks));
        let service = Arc::new(Service::new(factory, plan.conn, pool, telemetry));
        let acceptor_options = AcceptorOptions {
            listen: plan.listen.clone(),
            retry_count: plan.retry_count,
            retry_wait: plan.retry_wait,
            udp: plan.settings.udp.clone(),
        };
        let config = plan.settings;
        let mut acceptors = Vec::with_capacity(config.num_acceptors);
        let mut handles = Vec::with_capacity(config.num_acceptors);
        for _ in 0..config.num_acceptors {
            let (acceptor, handle) = Acceptor::new(
                service.clone(),
                acceptor_options.clone(),
                plan.num_connections,
            )?;
            acceptors.push(acceptor);
            handles.push(handle);
        }
        let running = Arc::new(Running {
            settings: config,
            service,
            acceptors: RwLock::new(handles),
        });
        let server = Server {
            backend: running.clone(),
            life: Mutex::new(Life {
                status: Status::Running,
                listen: Box::new(plan.listen),
                local_addr: None,
                listener_span: None,
                parked: None,
                listening: Vec::new(),
                shared: false,
                threads: Vec::new(),
            }),
            stopped: Condvar::new(),
        };
        {
            let mut life = server.life.lock();
            for (i, acceptor) in acceptors.into_iter().enumerate() {
                let handle = thread::Builder::new()
                    .name(format!("atoll-acceptor-{i}"))
                    .spawn(move || acceptor.run())?;
                life.threads.push(handle);
            }
            listen(&*running, &mut life, listener)?;
        }
        Ok(server)
    }

    /// Duplicates of the listening sockets, to hand to another process:
    /// a successor in a zero-downtime handover (over a Unix socket with
    /// [`inherit::send`](crate::inherit::send)), which listens on them
    /// with [`Builder::listen_fd`]. The system queues
    /// connections on a socket while any process holds it, so none are
    /// refused while this server stops and the successor starts.
    ///
    /// One socket for a TCP or Unix server (its acceptors share it); one
    /// per acceptor for a UDP server that bound its own (one for a UDP
    /// server on an inherited socket). Empty while suspended or stopped
    /// (a suspended UDP server keeps its sockets). A UDP successor serves
    /// one of them ([`Builder::listen_fd`] takes one socket); datagrams the
    /// kernel queued on the others are lost when this server stops, so
    /// hand over a UDP server started with one acceptor for no loss.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// let old = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// let addr = old.local_addr()?;
    /// let mut fds = old.listener_fds()?;
    /// // In the successor, after receiving the descriptors:
    /// let new = Server::builder().listen_fd(fds.remove(0)).start(|_| Ok(H))?;
    /// old.stop(std::time::Duration::from_secs(5)); // drains its own connections
    /// assert_eq!(new.local_addr()?, addr);
    /// std::net::TcpStream::connect(addr.inet().unwrap())?; // served by the successor
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listener_fds(&self) -> Result<Vec<OwnedFd>, Error> {
        let mut life = self.life.lock();
        life.shared = true;
        let fds = life
            .listening
            .iter()
            .map(|s| Ok(OwnedFd::from(s.try_clone()?)));
        fds.collect()
    }

    /// The address the server listens on; with port 0, the port the system
    /// picked. [`Error::Closed`] while suspended or stopped.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// let addr = server.local_addr()?;
    /// assert_ne!(addr.port(), Some(0));
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn local_addr(&self) -> Result<Addr, Error> {
        self.life.lock().local_addr.clone().ok_or(Error::Closed)
    }

    /// Whether the server is running, suspended or stopped.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// assert_eq!(server.status(), atoll::Status::Running);
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn status(&self) -> Status {
        self.life.lock().status
    }

    /// The number of live connections (detached ones included).
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// assert_eq!(server.connection_count(), 0);
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn connection_count(&self) -> usize {
        self.backend.live()
    }

    /// Handles to the live connections, in no particular order. Connections
    /// come and go while this runs: a listed one may have ended since.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// for conn in server.connections() {
    ///     println!("{} from {} since {:?}", conn.id(), conn.peer_addr(), conn.started());
    /// }
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn connections(&self) -> Vec<Connection<M>> {
        self.backend.connections()
    }

    /// Attaches a telemetry sink to this server; see
    /// [`telemetry`](crate::telemetry). Safe while traffic flows: the sink
    /// sees every event that starts after this returns.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// let id = server.attach_sink(|event: &atoll::telemetry::Event<'_>| println!("{}", event.name()));
    /// assert!(server.detach_sink(id));
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn attach_sink(&self, sink: impl Sink) -> SinkId {
        self.backend.telemetry().sinks.attach(Arc::new(sink))
    }

    /// Detaches a sink attached by [`attach_sink`](Server::attach_sink);
    /// `false` if it was not attached. No event reaches it after this
    /// returns.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// let id = server.attach_sink(|_: &atoll::telemetry::Event<'_>| {});
    /// assert!(server.detach_sink(id));
    /// assert!(!server.detach_sink(id));
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn detach_sink(&self, id: SinkId) -> bool {
        self.backend.telemetry().sinks.detach(id)
    }

    /// What the acceptors did so far.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// let stats = server.stats();
    /// println!("accepted {}, rejected {}", stats.accepted, stats.rejected);
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn stats(&self) -> ServerStats {
        self.backend.stats()
    }

    /// Reads the stats for as long as the server lives (the metrics
    /// thread must not keep a dropped server's records alive).
    #[cfg(feature = "metrics")]
    pub(crate) fn weak_stats(&self) -> Box<dyn Fn() -> Option<ServerStats> + Send + Sync> {
        let backend = Arc::downgrade(&self.backend);
        Box::new(move || backend.upgrade().map(|b| b.stats()))
    }

    /// The server's telemetry, for as long as the server lives: the
    /// metrics attach their sink there and mark the server published.
    #[cfg(feature = "metrics")]
    pub(crate) fn weak_telemetry(&self) -> std::sync::Weak<Telemetry> {
        Arc::downgrade(self.backend.telemetry())
    }

    /// Changes the limit of live connections per acceptor (`None`: no
    /// limit). A raised limit admits
    /// waiting connections at once; a lowered one closes nobody but admits
    /// no one until the count is under it.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// server.set_num_connections(Some(50_000))?;
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn set_num_connections(&self, limit: Option<usize>) -> Result<(), Error> {
        if limit == Some(0) {
            return Err(Error::Config("num_connections must be at least 1".into()));
        }
        self.backend.set_limit(limit);
        Ok(())
    }

    /// Closes the listener; open connections carry on. New connections are
    /// refused by the system until [`resume`](Server::resume).
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// let addr = server.local_addr()?;
    /// server.suspend()?;
    /// assert!(std::net::TcpStream::connect(addr).is_err());
    /// assert_eq!(server.status(), atoll::Status::Suspended);
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn suspend(&self) -> Result<(), Error> {
        let mut life = self.life.lock();
        if life.status != Status::Running {
            return Ok(());
        }
        self.backend
            .control(&mut |ack| Some(Control::Suspend(ack)))?;
        life.status = Status::Suspended;
        if self.backend.settings().udp.is_some() {
            life.parked = life.local_addr.clone();
        } else {
            life.listening.clear();
        }
        life.local_addr = None;
        end_listener_span(&*self.backend, &mut life);
        remove_unix_socket(&life);
        Ok(())
    }

    /// Listens again after [`suspend`](Server::suspend): on the same port
    /// when one was configured, on a new free port when the configured port
    /// is 0 (read it from [`local_addr`](Server::local_addr)).
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// server.suspend()?;
    /// server.resume()?;
    /// let addr = server.local_addr()?; // a new port: the configured one is 0
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn resume(&self) -> Result<(), Error> {
        let mut life = self.life.lock();
        if life.status != Status::Suspended {
            return Ok(());
        }
        if let Some(addr) = life.parked.take() {
            // UDP: the sockets were kept; read them again.
            let span = listener_start(&*self.backend, &life.listen, &addr);
            self.backend
                .control(&mut |ack| Some(Control::Resume(span.clone(), ack)))?;
            life.local_addr = Some(addr);
            life.listener_span = Some((span, Instant::now()));
        } else {
            let listener = bind(&life.listen, self.backend.settings().udp.as_ref())?;
            listen(&*self.backend, &mut life, listener)?;
        }
        life.status = Status::Running;
        Ok(())
    }

    /// Stops the server: stops accepting at once; idle connections get
    /// [`Handler::handle_shutdown`] with the socket still open and are
    /// closed; busy ones finish their callback first. A connection accepted
    /// but not yet set up is set up first and served what its client
    /// already sent, then shut down the same way (one still in a TLS
    /// handshake or waiting for its PROXY header just ends). After `wait` (`None`:
    /// no limit), the remaining connections are forced closed, which
    /// unblocks workers in a socket read or write, and every thread is
    /// joined. A worker stuck in a callback for another second is left
    /// behind and logged. Stopping twice is harmless.
    ///
    /// Do not call it from a handler callback: it waits for the callback.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// server.stop(std::time::Duration::from_secs(5));
    /// assert_eq!(server.status(), atoll::Status::Stopped);
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn stop(&self, wait: impl Into<Option<Duration>>) {
        stop(self, wait.into());
    }

    /// [`stop`](Server::stop) with the configured `shutdown_timeout`.
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// server.shutdown();
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn shutdown(&self) {
        self.stop(self.backend.settings().shutdown_timeout);
    }

    /// Blocks until the server is stopped (by another thread).
    ///
    /// ```
    /// # use atoll::{Handler, Server};
    /// # struct H;
    /// # impl Handler for H {}
    /// # let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(H))?;
    /// let server = std::sync::Arc::new(server);
    /// let stopper = server.clone();
    /// std::thread::spawn(move || stopper.stop(std::time::Duration::from_secs(1)));
    /// server.wait();
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn wait(&self) {
        let mut life = self.life.lock();
        while life.status != Status::Stopped {
            self.stopped.wait(&mut life);
        }
    }
}

impl<M> Drop for Server<M> {
    fn drop(&mut self) {
        stop(self, self.backend.settings().shutdown_timeout);
    }
}

/// The body of [`Server::stop`], free of bounds on `M` so that `Drop` can
/// call it.
fn stop<M>(server: &Server<M>, wait: Option<Duration>) {
    let backend = &server.backend;
    // The lock is held only to change the status and take the threads, so
    // that status(), local_addr() and a handler calling them answer while
    // the connections drain.
    let threads = {
        let mut life = server.life.lock();
        match life.status {
            Status::Stopped => return,
            Status::Stopping => {
                while life.status != Status::Stopped {
                    server.stopped.wait(&mut life);
                }
                return;
            }
            Status::Running | Status::Suspended => {}
        }
        if let Err(e) = backend.control(&mut |ack| Some(Control::Stop(ack))) {
            report!(error, { error = %e, "stop failed" }, "atoll: stop: {e}");
        }
        if life.status == Status::Running {
            remove_unix_socket(&life);
        }
        end_listener_span(&**backend, &mut life);
        life.status = Status::Stopping;
        life.local_addr = None;
        life.listening.clear();
        life.listen.release_fd();
        std::mem::take(&mut life.threads)
    };
    backend.shutdown_all();
    let deadline = wait.map(|w| Instant::now() + w);
    if !backend.wait_drained(deadline) {
        backend.force_close_all();
        if !backend.wait_drained(Some(Instant::now() + FORCE_GRACE)) {
            report!(
                error,
                { connections = backend.live(), "stop: connections still busy in a callback after the forced close" },
                "atoll: stop: {} connections still busy in a callback after the forced close",
                backend.live()
            );
        }
    }
    backend.exit_acceptors();
    for handle in threads {
        let _ = handle.join();
    }
    backend.exit_workers();
    server.life.lock().status = Status::Stopped;
    server.stopped.notify_all();
}

impl<M> fmt::Debug for Server<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let life = self.life.lock();
        f.debug_struct("Server")
            .field("status", &life.status)
            .field("local_addr", &life.local_addr)
            .field("connections", &self.backend.live())
            .finish()
    }
}

/// Removes the socket file of a Unix listener once nobody accepts on it.
fn remove_unix_socket(life: &Life) {
    if life.shared {
        return;
    }
    if let Some(path) = life.listen.unix_path() {
        if let Err(e) = std::fs::remove_file(path) {
            report!(
                warn,
                { path = %path.display(), error = %e, "cannot remove the Unix socket" },
                "atoll: cannot remove {}: {e}",
                path.display()
            );
        }
    }
}

/// Gives each acceptor a clone of the listener, in a new listener span.
fn listen<M>(
    backend: &dyn Backend<M>,
    life: &mut Life,
    listener: socket2::Socket,
) -> Result<(), Error> {
    let addr = Addr::from_sock(&listener.local_addr()?);
    let settings = backend.settings();
    let span = listener_start(backend, &life.listen, &addr);
    let n = settings.num_acceptors;
    let (sockets, listening) = if let Some(udp) = &settings.udp {
        // One socket each, on the one port (SO_REUSEPORT), or duplicates of
        // the one inherited socket.
        let inherited = life.listen.is_inherited();
        let port = addr.port().unwrap_or(0);
        let mut all = Vec::with_capacity(n);
        for _ in 1..n {
            all.push(if inherited {
                listener.try_clone()?
            } else {
                bind(&life.listen.clone().port(port), Some(udp))?
            });
        }
        all.insert(0, listener);
        // The distinct sockets, each once.
        let distinct = if inherited { 1 } else { all.len() };
        let kept = all
            .iter()
            .take(distinct)
            .map(|s| s.try_clone())
            .collect::<Result<Vec<_>, _>>()?;
        let sockets = all
            .into_iter()
            .map(ListenSocket::udp)
            .collect::<Result<Vec<_>, _>>()?;
        (sockets, kept)
    } else {
        let sockets = ListenSocket::clones(&listener, n)?;
        (sockets, vec![listener])
    };
    let mut clones = sockets.into_iter();
    backend.control(&mut |ack| clones.next().map(|l| Control::Listen(l, span.clone(), ack)))?;
    life.local_addr = Some(addr);
    life.listener_span = Some((span, Instant::now()));
    life.listening = listening;
    Ok(())
}

/// Starts a listener span.
fn listener_start<M>(
    backend: &dyn Backend<M>,
    options: &ListenOptions,
    addr: &Addr,
) -> ListenerSpan {
    let transport = backend.settings().transport_name;
    let span = ListenerSpan {
        // A root: a listener outlives whatever span its caller was in.
        emitter: Emitter::new(backend.telemetry().clone(), Span::Listener, None),
        #[cfg(feature = "tracing")]
        tracing: tracing::info_span!(
            target: "atoll",
            parent: None,
            "listener",
            local = %addr,
            transport
        ),
    };
    span.emitter.emit(None, None, || Kind::ListenerStart {
        local: addr,
        transport,
        options,
    });
    span
}

/// Ends the listener span once its acceptors stopped.
fn end_listener_span<M>(backend: &dyn Backend<M>, life: &mut Life) {
    let (Some((span, started)), Some(local)) =
        (life.listener_span.take(), life.local_addr.as_ref())
    else {
        return;
    };
    let duration = started.elapsed();
    span.emitter.emit(None, None, || Kind::ListenerStop {
        local,
        duration,
        transport: backend.settings().transport_name,
        options: &life.listen,
    });
}
