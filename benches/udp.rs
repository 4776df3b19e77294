//! UDP echo benchmark: atoll against a tokio server and a plain std loop.
//!
//! Many client UDP sockets (100 by default) each play a closed loop of
//! 64-byte request and response: send one datagram, wait for its echo,
//! send the next. UDP may drop a datagram, so a request unanswered after
//! `RESEND_AFTER` (100 ms) is given up and the socket sends a new one. Four
//! echo servers run in this process on 127.0.0.1, each with the system's
//! default socket buffers:
//!
//! - `atoll-peer`: atoll with `W` workers, the default listeners (poll
//!   threads, each its own `SO_REUSEPORT` socket), the default read
//!   timeout (60 s) and `SessionMode::PerPeer`: one session per client
//!   socket, its handler sends each datagram back and returns
//!   `Flow::Continue`;
//! - `atoll-dgram`: the same with `SessionMode::PerDatagram`: a session per
//!   datagram, whose handler sends it back and returns `Flow::Close`;
//! - `tokio`: a multi-thread runtime of `W` workers serving `W`
//!   `tokio::net::UdpSocket`s bound to one port with `SO_REUSEPORT`, one
//!   task per socket looping `recv_from` / `send_to`. The other fair
//!   design, one socket shared by `W` tasks (`ATOLL_BENCH_TOKIO=shared`),
//!   measured the same within noise on 2 cores (alternating 10 runs each:
//!   medians 77k and 74k datagrams/s one time, 132k and 147k another);
//!   this one is kept because it is atoll's own layout (a socket per
//!   listener, the kernel keeping each peer on one) and does not wake
//!   every waiting task for each datagram;
//! - `std`: one thread looping `recv_from` / `send_to` on a blocking
//!   `std::net::UdpSocket`.
//!
//! The load generator is the same for all of them: client threads (1 by
//! default), each driving its share of the sockets with edge-triggered mio
//! (every socket is connected to the server and read until `WouldBlock`),
//! with no allocation per datagram. Each request carries its sequence
//! number, so a late echo of a request already given up is told apart
//! from the echo awaited. Every round trip is timed from the send to its
//! echo. Servers alternate within each repetition; the table gives, per
//! configuration, the median over repetitions of datagrams (round trips)
//! per second and of the p50 and p99 latencies, then sums over the
//! repetitions: `resent`, the requests given up (whole run, warm-up
//! included); `lost`, those whose echo never came, not even late (the
//! client reads late echoes for `RESEND_AFTER` after the window); `errors`,
//! failed socket calls. Then each atoll mode's ratios to the other servers.
//! On loopback a datagram is lost when a receive buffer is full (Linux
//! counts it in `RcvbufErrors` of `/proc/net/snmp`): with 100 sockets that
//! does not happen; with 1,000 it does, for every server.
//!
//! ```text
//! cargo bench --bench udp
//! ATOLL_BENCH_SECS=1 ATOLL_BENCH_REPS=1 cargo bench --bench udp   # quick
//! ```
//!
//! Environment:
//! - `ATOLL_BENCH_WORKERS`: server worker threads `W` [2]
//! - `ATOLL_BENCH_ACCEPTORS`: atoll's listeners (poll threads) [atoll's
//!   default]
//! - `ATOLL_BENCH_SECS`: measured seconds per run [3]
//! - `ATOLL_BENCH_REPS`: repetitions [3]
//! - `ATOLL_BENCH_CLIENTS`: client threads [1]
//! - `ATOLL_BENCH_SERVERS`: servers to run, comma-separated
//!   [atoll-peer,atoll-dgram,tokio,std]
//! - `ATOLL_BENCH_SOCKETS`: client socket counts, comma-separated [100]
//! - `ATOLL_BENCH_TOKIO`: the tokio server's design, `reuseport` (`W`
//!   sockets on one port, a task each) or `shared` (one socket, `W` tasks)
//!   [reuseport]
//!
//! Client and servers share the machine's cores, so absolute numbers
//! include the client's cost, and a latency includes the time the echo
//! waited for its client thread; the comparison is what matters. The client
//! costs about 4 to 5 us of CPU per round trip (a `send`, a `recv`, the
//! `recv` that says `WouldBlock`, a share of an `epoll_wait`): one thread
//! is about half a core at 100,000 datagrams/s, so one is the default, and
//! on a small machine a second would take a core from the servers.

#[path = "common/env.rs"]
mod env;
#[path = "common/histogram.rs"]
mod histogram;
use env::{env_list, env_or, median};
use histogram::Histogram;
use std::error::Error;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use atoll::udp::SessionMode;
use atoll::{Flow, Handler, Server, Socket};
use mio::{Events, Interest, Poll, Registry, Token};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Bytes per request and per echo.
const PAYLOAD: usize = 64;
/// Client sockets of each configuration, by default.
const LOADS: &str = "100";
/// Most client sockets per run (one descriptor each in this process).
const MAX_SOCKETS: usize = 10_000;
/// Load before each measurement, so that servers have made their sessions
/// and spun up their threads.
const WARMUP: Duration = Duration::from_millis(500);
/// How long a client socket waits for an echo before it gives the request
/// up and sends a new one: some 20 times a working server's p99 at 100
/// sockets (a few ms on a busy 2-core machine), so a resend means a loss or
/// a stall of the machine, and `lost` tells the two apart.
const RESEND_AFTER: Duration = Duration::from_millis(100);
/// How often a client thread looks for requests to resend; also the
/// longest it waits in one poll, so it notices the end of a run.
const SCAN_EVERY: Duration = Duration::from_millis(10);
/// Round trips one readiness event may drive before the socket goes to the
/// back of the line (a bound; in practice the echo is never there yet).
const ROUNDS_PER_EVENT: usize = 64;
/// Datagrams a client reads from one socket in one drive: echoes, late
/// echoes, errors (a bound on the read-until-`WouldBlock` loop).
const READS_PER_EVENT: usize = 256;
/// Receive buffer of the clients and of the tokio and std servers: more
/// than a payload, so that a longer echo is seen as wrong, not cut.
const BUF: usize = 2048;
/// How long the std server blocks in one `recv_from`, so it notices a stop.
const STD_POLL: Duration = Duration::from_millis(20);
/// How long stopping a server may take before the bench says so.
const SLOW_STOP: Duration = Duration::from_millis(500);

/// The request every socket sends, its first 8 bytes replaced by the
/// request's sequence number; echoes are checked against it.
const REQUEST: [u8; PAYLOAD] = {
    let mut r = [0u8; PAYLOAD];
    let mut i = 0;
    while i < PAYLOAD {
        r[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    r
};
/// Bytes of the sequence number at the start of a request.
const SEQ: usize = 8;

fn main() -> BoxResult<()> {
    let settings = Settings::from_env()?;
    settings.print_header();
    let table = measure(&settings)?;
    print_table(&table);
    Ok(())
}

/// Runs every server at every load, alternating servers within each
/// repetition, and gives the medians per load.
fn measure(settings: &Settings) -> BoxResult<Table> {
    let mut table = Vec::new();
    for &sockets in &settings.loads {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); settings.servers.len()];
        for rep in 1..=settings.reps {
            for (k, &kind) in settings.servers.iter().enumerate() {
                let sample = run_once(kind, sockets, settings)?;
                eprintln!(
                    "[{sockets} sockets, rep {rep}/{}] {:<11} {:>10.0} dg/s  p50 {:>7.1} us  \
                     p99 {:>7.1} us  resent {}  lost {}{}",
                    settings.reps,
                    kind.name(),
                    sample.rate,
                    sample.p50_us,
                    sample.p99_us,
                    sample.resent,
                    sample.lost(),
                    match (&sample.first_error, sample.errors) {
                        (_, 0) => String::new(),
                        (Some(e), n) => format!("  ({n} socket errors; first: {e})"),
                        (None, n) => format!("  ({n} socket errors)"),
                    }
                );
                samples[k].push(sample);
            }
        }
        let summaries = settings.servers.iter().zip(&samples);
        table.push((
            sockets,
            summaries.map(|(&k, s)| (k, Summary::of(s))).collect(),
        ));
    }
    Ok(table)
}

// ---------------------------------------------------------------------------
// Settings

/// How the tokio server uses its `W` workers.
#[derive(Clone, Copy, PartialEq)]
enum TokioDesign {
    /// `W` sockets on one port (`SO_REUSEPORT`), one task each.
    ReusePort,
    /// One socket, `W` tasks looping on it.
    Shared,
}

impl FromStr for TokioDesign {
    type Err = ();

    fn from_str(s: &str) -> Result<TokioDesign, ()> {
        match s {
            "reuseport" => Ok(TokioDesign::ReusePort),
            "shared" => Ok(TokioDesign::Shared),
            _ => Err(()),
        }
    }
}

struct Settings {
    workers: usize,
    acceptors: usize,
    secs: f64,
    reps: usize,
    clients: usize,
    servers: Vec<Kind>,
    loads: Vec<usize>,
    tokio: TokioDesign,
}

impl Settings {
    fn from_env() -> BoxResult<Settings> {
        let settings = Settings {
            workers: env_or("ATOLL_BENCH_WORKERS", 2)?,
            acceptors: env_or("ATOLL_BENCH_ACCEPTORS", atoll::default_num_acceptors())?,
            secs: env_or("ATOLL_BENCH_SECS", 3.0)?,
            reps: env_or("ATOLL_BENCH_REPS", 3)?,
            clients: env_or("ATOLL_BENCH_CLIENTS", 1)?,
            servers: env_list("ATOLL_BENCH_SERVERS", "atoll-peer,atoll-dgram,tokio,std")?,
            loads: env_list("ATOLL_BENCH_SOCKETS", LOADS)?,
            tokio: env_or("ATOLL_BENCH_TOKIO", TokioDesign::ReusePort)?,
        };
        if settings.servers.is_empty()
            || settings.loads.is_empty()
            || settings.loads.iter().any(|&n| n == 0 || n > MAX_SOCKETS)
        {
            return Err(format!(
                "ATOLL_BENCH_SERVERS and _SOCKETS need entries (1..={MAX_SOCKETS})"
            )
            .into());
        }
        if settings.workers == 0
            || settings.acceptors == 0
            || settings.reps == 0
            || settings.clients == 0
        {
            return Err(
                "ATOLL_BENCH_WORKERS, _ACCEPTORS, _REPS and _CLIENTS must be at least 1".into(),
            );
        }
        if !(settings.secs > 0.0 && settings.secs <= 3600.0) {
            return Err("ATOLL_BENCH_SECS must be in (0, 3600]".into());
        }
        Ok(settings)
    }

    fn measured(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }

    fn print_header(&self) {
        let cores = thread::available_parallelism().map_or(0, |n| n.get());
        let tokio = match self.tokio {
            TokioDesign::ReusePort => "W SO_REUSEPORT sockets, a task each",
            TokioDesign::Shared => "one socket shared by W tasks",
        };
        println!(
            "udp: {PAYLOAD}-byte request/response, closed loop per client socket, 127.0.0.1; \
             {cores} cores\n\
             server workers W = {}, atoll listeners = {}, tokio = {tokio}, std = one thread\n\
             client threads = {}, resend after {} ms, {} s measured per run after {} ms \
             warm-up, {} repetitions (medians shown)",
            self.workers,
            self.acceptors,
            self.clients,
            RESEND_AFTER.as_millis(),
            self.secs,
            WARMUP.as_millis(),
            self.reps
        );
    }
}

// ---------------------------------------------------------------------------
// One run: start a server, load it, stop it.

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    AtollPeer,
    AtollDgram,
    Tokio,
    Std,
}

impl FromStr for Kind {
    type Err = ();

    fn from_str(s: &str) -> Result<Kind, ()> {
        match s {
            "atoll-peer" => Ok(Kind::AtollPeer),
            "atoll-dgram" => Ok(Kind::AtollDgram),
            "tokio" => Ok(Kind::Tokio),
            "std" => Ok(Kind::Std),
            _ => Err(()),
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AtollPeer => "atoll-peer",
            Kind::AtollDgram => "atoll-dgram",
            Kind::Tokio => "tokio",
            Kind::Std => "std",
        }
    }

    fn is_atoll(self) -> bool {
        matches!(self, Kind::AtollPeer | Kind::AtollDgram)
    }
}

/// What one run measured.
#[derive(Clone)]
struct Sample {
    /// Round trips (datagrams echoed) per second.
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    resent: u64,
    late: u64,
    errors: u64,
    /// What went wrong first, when something did.
    first_error: Option<String>,
}

impl Sample {
    fn of(client: &Client, secs: f64) -> Sample {
        Sample {
            rate: client.round_trips as f64 / secs,
            p50_us: client.hist.quantile_us(0.50),
            p99_us: client.hist.quantile_us(0.99),
            resent: client.resent,
            late: client.late,
            errors: client.errors,
            first_error: client.first_error.clone(),
        }
    }

    /// Requests resent whose first echo never came: lost, or later than
    /// the end of the run.
    fn lost(&self) -> u64 {
        self.resent.saturating_sub(self.late)
    }
}

/// One run against a fresh server of `kind`.
fn run_once(kind: Kind, sockets: usize, settings: &Settings) -> BoxResult<Sample> {
    let server = Running::start(kind, settings)?;
    let result = load(server.addr(), sockets, settings);
    let started = Instant::now();
    server.stop();
    let took = started.elapsed();
    if took > SLOW_STOP {
        eprintln!("warning: stopping {} took {took:?}", kind.name());
    }
    Ok(Sample::of(&result?, settings.secs))
}

/// Opens `sockets` client sockets connected to `addr`, drives them from the
/// client threads through the warm-up and the measured window, and closes
/// them.
fn load(addr: SocketAddr, sockets: usize, settings: &Settings) -> BoxResult<Client> {
    let mut shares: Vec<Vec<mio::net::UdpSocket>> =
        (0..settings.clients).map(|_| Vec::new()).collect();
    for i in 0..sockets {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(addr)?;
        socket.set_nonblocking(true)?;
        shares[i % settings.clients].push(mio::net::UdpSocket::from_std(socket));
    }
    let from = Instant::now() + WARMUP;
    let window = Window {
        from,
        until: from + settings.measured(),
    };
    let clients: Vec<JoinHandle<io::Result<Client>>> = shares
        .into_iter()
        .enumerate()
        .map(|(i, sockets)| {
            thread::Builder::new()
                .name(format!("bench-client-{i}"))
                .spawn(move || Client::run(sockets, window))
        })
        .collect::<io::Result<_>>()?;
    let mut total = Client::new();
    for client in clients {
        total.merge(client.join().map_err(|_| "a client thread panicked")??);
    }
    Ok(total)
}

// ---------------------------------------------------------------------------
// The servers

enum Running {
    Atoll(Server, SocketAddr),
    Tokio(tokio::runtime::Runtime, SocketAddr),
    Std(StdServer),
}

impl Running {
    fn start(kind: Kind, settings: &Settings) -> BoxResult<Running> {
        Ok(match kind {
            Kind::AtollPeer | Kind::AtollDgram => {
                let builder = Server::udp()
                    .ip([127, 0, 0, 1].into())
                    .port(0)
                    .num_workers(settings.workers)
                    .num_acceptors(settings.acceptors);
                // The default read_timeout (60 s): per peer, sessions live
                // for the run and stop ends them; per datagram, each ends
                // with its echo.
                let server = if kind == Kind::AtollPeer {
                    builder
                        .session_mode(SessionMode::PerPeer)
                        .start(|_| Ok(AtollEcho(Flow::Continue)))?
                } else {
                    builder
                        .session_mode(SessionMode::PerDatagram)
                        .start(|_| Ok(AtollEcho(Flow::Close)))?
                };
                let addr = server.local_addr()?.inet().ok_or("atoll serves UDP")?;
                Running::Atoll(server, addr)
            }
            Kind::Tokio => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(settings.workers)
                    .thread_name("tokio-udp-echo")
                    .enable_all()
                    .build()?;
                let addr = tokio_serve(&runtime, settings.workers, settings.tokio)?;
                Running::Tokio(runtime, addr)
            }
            Kind::Std => Running::Std(StdServer::start()?),
        })
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Running::Atoll(_, addr) | Running::Tokio(_, addr) => *addr,
            Running::Std(server) => server.addr,
        }
    }

    fn stop(self) {
        match self {
            Running::Atoll(server, _) => server.stop(Duration::from_secs(1)),
            Running::Tokio(runtime, _) => runtime.shutdown_timeout(Duration::from_secs(1)),
            Running::Std(server) => server.stop(),
        }
    }
}

/// Sends every datagram back, then flows as told: `Continue` per peer,
/// `Close` per datagram.
struct AtollEcho(Flow);

impl Handler for AtollEcho {
    fn handle_data(&mut self, datagram: &[u8], socket: &mut Socket) -> Flow {
        match socket.send(datagram) {
            Ok(()) => match self.0 {
                Flow::Close => Flow::Close,
                _ => Flow::Continue,
            },
            Err(e) => Flow::error(e),
        }
    }
}

/// Binds the tokio server's socket(s) on 127.0.0.1 and spawns its tasks.
fn tokio_serve(
    runtime: &tokio::runtime::Runtime,
    workers: usize,
    design: TokioDesign,
) -> io::Result<SocketAddr> {
    let _entered = runtime.enter();
    match design {
        TokioDesign::Shared => {
            let std = UdpSocket::bind("127.0.0.1:0")?;
            std.set_nonblocking(true)?;
            let socket = Arc::new(tokio::net::UdpSocket::from_std(std)?);
            let addr = socket.local_addr()?;
            for _ in 0..workers {
                runtime.spawn(tokio_echo(socket.clone()));
            }
            Ok(addr)
        }
        TokioDesign::ReusePort => {
            let mut addr: SocketAddr = ([127, 0, 0, 1], 0).into();
            for _ in 0..workers {
                let socket = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::DGRAM,
                    Some(socket2::Protocol::UDP),
                )?;
                socket.set_reuse_port(true)?;
                socket.set_nonblocking(true)?;
                socket.bind(&addr.into())?;
                // The first bind picks the port; the others share it.
                addr = socket
                    .local_addr()?
                    .as_socket()
                    .ok_or_else(|| io::Error::other("not an inet socket"))?;
                let socket = tokio::net::UdpSocket::from_std(socket.into())?;
                runtime.spawn(tokio_echo(Arc::new(socket)));
            }
            Ok(addr)
        }
    }
}

async fn tokio_echo(socket: Arc<tokio::net::UdpSocket>) {
    let mut buf = vec![0u8; BUF];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // An ICMP report from an earlier send: go on.
            Err(_) => continue,
        };
        let _ = socket.send_to(&buf[..n], peer).await;
    }
}

/// A one-thread echo loop on a blocking std socket.
struct StdServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl StdServer {
    fn start() -> io::Result<StdServer> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(STD_POLL))?;
        socket.set_write_timeout(Some(STD_POLL))?;
        let addr = socket.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let stopping = stopping.clone();
            thread::Builder::new()
                .name("std-udp-echo".into())
                .spawn(move || std_echo(&socket, &stopping))?
        };
        Ok(StdServer {
            addr,
            stopping,
            thread,
        })
    }

    /// The loop sees the flag within one `STD_POLL`.
    fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

fn std_echo(socket: &UdpSocket, stopping: &AtomicBool) {
    let mut buf = [0u8; BUF];
    while !stopping.load(Ordering::Relaxed) {
        // An error is a timeout (time to look at the flag) or an ICMP
        // report: go on.
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], peer);
        }
    }
}

// ---------------------------------------------------------------------------
// The load generator

/// When a client counts round trips: those completed in `from..until`.
/// Resent requests and late echoes count over the whole run, warm-up
/// included; after `until` the client sends no more and reads late echoes
/// for `RESEND_AFTER`, so that resent minus late is the requests or echoes
/// the network (or a server) lost.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn holds(&self, t: Instant) -> bool {
        t >= self.from && t < self.until
    }
}

/// One client socket's place in its loop.
struct Peer {
    socket: mio::net::UdpSocket,
    token: Token,
    /// Sequence number of the current request.
    seq: u64,
    /// The current request is sent (else it waits for the socket to take
    /// it).
    sent: bool,
    /// Registered for writable readiness too (after a send would block).
    writable: bool,
    /// When the current request was sent.
    sent_at: Instant,
}

/// What one client thread counted.
struct Client {
    round_trips: u64,
    /// Requests given up after `RESEND_AFTER` (and a new one sent).
    resent: u64,
    /// Echoes of requests given up.
    late: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram,
}

impl Client {
    fn new() -> Client {
        Client {
            round_trips: 0,
            resent: 0,
            late: 0,
            errors: 0,
            first_error: None,
            hist: Histogram::new(),
        }
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn merge(&mut self, other: Client) {
        self.round_trips += other.round_trips;
        self.resent += other.resent;
        self.late += other.late;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.hist.merge(&other.hist);
    }

    /// Drives `sockets` in a closed loop until the window ends, then reads
    /// late echoes for `RESEND_AFTER`.
    fn run(sockets: Vec<mio::net::UdpSocket>, window: Window) -> io::Result<Client> {
        let mut client = Client::new();
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let now = Instant::now();
        let mut peers = Vec::with_capacity(sockets.len());
        for (i, mut socket) in sockets.into_iter().enumerate() {
            // Readable only: a UDP socket's writable edge comes after every
            // send (when the datagram leaves its buffer), and would cost a
            // wasted drive per datagram. Writable is added only for a
            // socket whose send would block.
            poll.registry()
                .register(&mut socket, Token(i), Interest::READABLE)?;
            peers.push(Peer {
                socket,
                token: Token(i),
                seq: 0,
                sent: false,
                writable: false,
                sent_at: now,
            });
        }
        let mut scratch = Scratch {
            request: REQUEST,
            buf: [0u8; BUF],
            window,
            sending: true,
        };
        // Sockets whose event used up its budget; driven again without
        // waiting for a new edge (edge-triggered readiness does not repeat).
        let mut again: Vec<usize> = Vec::with_capacity(peers.len());
        let mut again_next: Vec<usize> = Vec::with_capacity(peers.len());
        // Start every loop.
        for (i, peer) in peers.iter_mut().enumerate() {
            client.drive(peer, &mut scratch, &mut again, i, poll.registry());
        }
        let drained = window.until + RESEND_AFTER;
        let mut next_scan = Instant::now() + SCAN_EVERY;
        loop {
            let now = Instant::now();
            if now >= drained {
                break;
            }
            scratch.sending = now < window.until;
            if scratch.sending && now >= next_scan {
                // Requests unanswered for too long: given up; send the next.
                for (i, peer) in peers.iter_mut().enumerate() {
                    if peer.sent && now - peer.sent_at >= RESEND_AFTER {
                        client.resent += 1;
                        peer.seq += 1;
                        peer.sent = false;
                        client.drive(peer, &mut scratch, &mut again, i, poll.registry());
                    }
                }
                next_scan = now + SCAN_EVERY;
            }
            let wait = if !again.is_empty() {
                Duration::ZERO
            } else if scratch.sending {
                (window.until - now).min(next_scan.saturating_duration_since(now))
            } else {
                (drained - now).min(SCAN_EVERY)
            };
            poll.poll(&mut events, Some(wait))?;
            std::mem::swap(&mut again, &mut again_next);
            for &i in &again_next {
                client.drive(&mut peers[i], &mut scratch, &mut again, i, poll.registry());
            }
            again_next.clear();
            for event in events.iter() {
                let i = event.token().0;
                client.drive(&mut peers[i], &mut scratch, &mut again, i, poll.registry());
            }
        }
        // Dropping `peers` closes the sockets.
        Ok(client)
    }

    /// Sends the pending request (while the run lasts), and reads echoes
    /// until the socket would block; on the awaited echo records it and
    /// sends the next request.
    fn drive(
        &mut self,
        peer: &mut Peer,
        scratch: &mut Scratch,
        again: &mut Vec<usize>,
        index: usize,
        registry: &Registry,
    ) {
        let mut rounds = 0;
        for _ in 0..READS_PER_EVENT {
            if !peer.sent && scratch.sending {
                if rounds == ROUNDS_PER_EVENT {
                    again.push(index);
                    return;
                }
                rounds += 1;
                scratch.request[..SEQ].copy_from_slice(&peer.seq.to_be_bytes());
                match peer.socket.send(&scratch.request) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Rare: then wait for room, from now on.
                        if !peer.writable {
                            let both = Interest::READABLE | Interest::WRITABLE;
                            if let Err(e) = registry.reregister(&mut peer.socket, peer.token, both)
                            {
                                self.error(format_args!("reregister: {e}"));
                            }
                            peer.writable = true;
                        }
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Counted; the request counts as sent, so it is given
                    // up and a new one sent after `RESEND_AFTER`.
                    Err(e) => self.error(format_args!("send: {e}")),
                }
                peer.sent = true;
                peer.sent_at = Instant::now();
            }
            match peer.socket.recv(&mut scratch.buf) {
                Ok(n) => {
                    let echo = &scratch.buf[..n];
                    if n != PAYLOAD || echo[SEQ..] != REQUEST[SEQ..] {
                        self.error(format_args!("wrong echo of {n} bytes"));
                        continue;
                    }
                    let seq = u64::from_be_bytes(echo[..SEQ].try_into().unwrap_or_default());
                    if seq < peer.seq {
                        self.late += 1; // of a request given up
                        continue;
                    }
                    if seq > peer.seq || !peer.sent {
                        self.error("echo of a request not sent");
                        continue;
                    }
                    let done = Instant::now();
                    if scratch.window.holds(done) {
                        self.round_trips += 1;
                        self.hist.record(done - peer.sent_at);
                    }
                    peer.seq += 1;
                    peer.sent = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP report (the server's port closed): counted.
                Err(e) => self.error(format_args!("recv: {e}")),
            }
        }
        again.push(index);
    }
}

/// A client thread's buffers and phase, lent to every drive.
struct Scratch {
    /// The request, with the sequence number of the one being sent.
    request: [u8; PAYLOAD],
    buf: [u8; BUF],
    window: Window,
    /// Before the end of the window: requests are sent. After it, late
    /// echoes are only read.
    sending: bool,
}

// ---------------------------------------------------------------------------
// Report

/// Medians over the repetitions of one server and load; sums of the
/// losses and errors.
struct Summary {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    resent: u64,
    lost: u64,
    errors: u64,
}

impl Summary {
    fn of(samples: &[Sample]) -> Summary {
        Summary {
            rate: median(samples.iter().map(|s| s.rate)),
            p50_us: median(samples.iter().map(|s| s.p50_us)),
            p99_us: median(samples.iter().map(|s| s.p99_us)),
            resent: samples.iter().map(|s| s.resent).sum(),
            lost: samples.iter().map(Sample::lost).sum(),
            errors: samples.iter().map(|s| s.errors).sum(),
        }
    }
}

/// Per load, each server's medians.
type Table = Vec<(usize, Vec<(Kind, Summary)>)>;

/// The table, then each atoll mode's ratios to the other servers.
fn print_table(table: &Table) {
    println!();
    println!(
        "{:>7}  {:<11} {:>13} {:>10} {:>10} {:>7} {:>7} {:>7}",
        "sockets", "server", "datagrams/s", "p50 us", "p99 us", "resent", "lost", "errors"
    );
    for (sockets, summaries) in table {
        for (kind, s) in summaries {
            println!(
                "{:>7}  {:<11} {:>13.0} {:>10.1} {:>10.1} {:>7} {:>7} {:>7}",
                sockets,
                kind.name(),
                s.rate,
                s.p50_us,
                s.p99_us,
                s.resent,
                s.lost,
                s.errors
            );
        }
    }
    let atoll_and_other = |s: &Vec<(Kind, Summary)>| {
        s.iter().any(|(k, _)| k.is_atoll()) && s.iter().any(|(k, _)| !k.is_atoll())
    };
    if table.iter().any(|(_, s)| atoll_and_other(s)) {
        print_ratios(table);
    }
    let summaries = || table.iter().flat_map(|(_, s)| s);
    if summaries().any(|(_, s)| s.resent > 0) {
        println!(
            "\nresent: requests unanswered after {} ms (then a new one was sent); lost: of \
             those, the ones whose echo never came; sums over the repetitions",
            RESEND_AFTER.as_millis()
        );
    }
    if summaries().any(|(_, s)| s.errors > 0) {
        println!("\nwarning: some socket operations failed (see the errors column)");
    }
}

/// Each atoll mode's throughput and p99 over each other server's.
fn print_ratios(table: &Table) {
    println!();
    println!("atoll / other (throughput above 1 and p99 below 1 favour atoll):");
    println!(
        "{:>7}  {:<11} {:<7} {:>11} {:>8}",
        "sockets", "atoll", "vs", "throughput", "p99"
    );
    for (sockets, summaries) in table {
        for (atoll_kind, atoll) in summaries.iter().filter(|(k, _)| k.is_atoll()) {
            for (kind, other) in summaries.iter().filter(|(k, _)| !k.is_atoll()) {
                println!(
                    "{:>7}  {:<11} {:<7} {:>10.2}x {:>7.2}x",
                    sockets,
                    atoll_kind.name(),
                    kind.name(),
                    atoll.rate / other.rate,
                    atoll.p99_us / other.p99_us
                );
            }
        }
    }
}
