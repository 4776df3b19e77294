//! Echo benchmark: atoll against a tokio server and a std
//! thread-per-connection server.
//!
//! Each connection plays a closed loop of 64-byte ping-pong: send 64 bytes,
//! wait for the 64 bytes back, repeat. The load runs at 100 and at 1,000
//! concurrent connections against three echo servers started in this
//! process on 127.0.0.1:
//!
//! - atoll, with `W` workers and the default acceptors;
//! - tokio, a multi-thread runtime of `W` workers, one task per connection;
//! - std, one OS thread per connection with blocking reads and writes.
//!
//! The load generator is the same for all three: a few client threads, each
//! driving its share of the connections with edge-triggered mio, timing
//! every round trip from the send to the full reply. Servers alternate
//! within each repetition; the table gives, per configuration, the median
//! over repetitions of round trips per second and of the p50 and p99
//! latencies, then atoll's ratios to the other two.
//!
//! ```text
//! cargo bench --bench echo
//! ATOLL_BENCH_SECS=1 ATOLL_BENCH_REPS=1 cargo bench --bench echo   # quick
//! ```
//!
//! Environment:
//! - `ATOLL_BENCH_WORKERS`: server worker threads `W` [2]
//! - `ATOLL_BENCH_ACCEPTORS`: atoll's poll threads [atoll's default]
//! - `ATOLL_BENCH_SECS`: measured seconds per run [3]
//! - `ATOLL_BENCH_REPS`: repetitions [3]
//! - `ATOLL_BENCH_CLIENTS`: client threads [2]
//! - `ATOLL_BENCH_SERVERS`: servers to run, comma-separated [atoll,tokio,std]
//! - `ATOLL_BENCH_CONNS`: connection counts, comma-separated [100,1000]
//!
//! Client and servers share the machine's cores, so absolute numbers
//! include the client's cost, and a latency includes the time the reply
//! waited for its client thread; the comparison is what matters.

use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use atoll::{Flow, Handler, Server, Socket};
use mio::{Events, Interest, Poll, Token};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Bytes per request and per reply.
const PAYLOAD: usize = 64;
/// Concurrent connections of each configuration, by default.
const LOADS: &str = "100,1000";
/// Most connections per run: each takes two descriptors in this process
/// (and a thread for the std server), within a 20,000-file limit.
const MAX_CONNS: usize = 8_000;
/// Load before each measurement, so that servers have accepted every
/// connection and spun up their threads.
const WARMUP: Duration = Duration::from_millis(500);
/// Longest a client waits in one poll, so it notices the end of a run.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Round trips one readiness event may drive before the connection goes to
/// the back of the line (a bound; in practice the reply is never there yet).
const ROUNDS_PER_EVENT: usize = 64;
/// Read buffer of the tokio and std servers (atoll reads 64 KiB chunks; for
/// 64-byte messages the size does not matter).
const SERVER_BUF: usize = 4096;
/// Stack of a std server connection thread: the echo loop needs little.
const STD_STACK: usize = 64 * 1024;
/// How long stopping a server may take before the bench says so.
const SLOW_STOP: Duration = Duration::from_millis(500);

/// The request every connection sends; replies are checked against it.
const REQUEST: [u8; PAYLOAD] = {
    let mut r = [0u8; PAYLOAD];
    let mut i = 0;
    while i < PAYLOAD {
        r[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    r
};

fn main() -> BoxResult<()> {
    let settings = Settings::from_env()?;
    settings.print_header();
    let mut table = Vec::new();
    for &conns in &settings.loads {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); settings.servers.len()];
        for rep in 1..=settings.reps {
            for (k, &kind) in settings.servers.iter().enumerate() {
                let sample = run_once(kind, conns, &settings)?;
                eprintln!(
                    "[{conns} conns, rep {rep}/{}] {:<5} {:>10.0} rt/s  p50 {:>7.1} us  p99 {:>7.1} us{}",
                    settings.reps,
                    kind.name(),
                    sample.rps,
                    sample.p50_us,
                    sample.p99_us,
                    if sample.errors > 0 {
                        format!("  ({} connection errors)", sample.errors)
                    } else {
                        String::new()
                    }
                );
                samples[k].push(sample);
            }
        }
        let summaries = settings.servers.iter().zip(&samples);
        table.push((
            conns,
            summaries.map(|(&k, s)| (k, Summary::of(s))).collect(),
        ));
    }
    print_table(&table);
    Ok(())
}

// ---------------------------------------------------------------------------
// Settings

struct Settings {
    workers: usize,
    secs: f64,
    reps: usize,
    clients: usize,
    servers: Vec<Kind>,
    loads: Vec<usize>,
}

impl Settings {
    fn from_env() -> BoxResult<Settings> {
        let settings = Settings {
            workers: env_or("ATOLL_BENCH_WORKERS", 2)?,
            secs: env_or("ATOLL_BENCH_SECS", 3.0)?,
            reps: env_or("ATOLL_BENCH_REPS", 3)?,
            // One client thread tops out below the servers (about 95k round
            // trips/s for all three here); two load them harder.
            clients: env_or("ATOLL_BENCH_CLIENTS", 2)?,
            servers: env_list("ATOLL_BENCH_SERVERS", "atoll,tokio,std")?,
            loads: env_list("ATOLL_BENCH_CONNS", LOADS)?,
        };
        if settings.servers.is_empty() || settings.loads.iter().any(|&n| n == 0 || n > MAX_CONNS) {
            return Err(
                format!("ATOLL_BENCH_SERVERS and _CONNS need entries (1..={MAX_CONNS})").into(),
            );
        }
        if settings.workers == 0 || settings.reps == 0 || settings.clients == 0 {
            return Err("ATOLL_BENCH_WORKERS, _REPS and _CLIENTS must be at least 1".into());
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
        println!(
            "echo: {PAYLOAD}-byte ping-pong, closed loop, 127.0.0.1; {cores} cores\n\
             server workers W = {}, client threads = {}, {} s measured per run \
             after {} ms warm-up, {} repetitions (medians shown)",
            self.workers,
            self.clients,
            self.secs,
            WARMUP.as_millis(),
            self.reps
        );
    }
}

/// The value of an environment variable, or `default` when it is unset.
fn env_or<T: FromStr>(name: &str, default: T) -> BoxResult<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}: cannot parse {v:?}").into()),
        Err(_) => Ok(default),
    }
}

/// A comma-separated list from the environment, or `default`.
fn env_list<T: FromStr>(name: &str, default: &str) -> BoxResult<Vec<T>> {
    let list = std::env::var(name).unwrap_or_else(|_| default.to_string());
    list.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            item.trim()
                .parse()
                .map_err(|_| format!("{name}: cannot parse {item:?}").into())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// One run: start a server, load it, stop it.

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Atoll,
    Tokio,
    Std,
}

impl FromStr for Kind {
    type Err = ();

    fn from_str(s: &str) -> Result<Kind, ()> {
        match s {
            "atoll" => Ok(Kind::Atoll),
            "tokio" => Ok(Kind::Tokio),
            "std" => Ok(Kind::Std),
            _ => Err(()),
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Atoll => "atoll",
            Kind::Tokio => "tokio",
            Kind::Std => "std",
        }
    }
}

/// What one run measured.
#[derive(Clone, Copy)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

fn run_once(kind: Kind, conns: usize, settings: &Settings) -> BoxResult<Sample> {
    let server = Running::start(kind, settings.workers)?;
    let result = load(server.addr(), conns, settings);
    let started = Instant::now();
    server.stop();
    let took = started.elapsed();
    if took > SLOW_STOP {
        eprintln!("warning: stopping {} took {took:?}", kind.name());
    }
    let (round_trips, hist, errors) = result?;
    Ok(Sample {
        rps: round_trips as f64 / settings.secs,
        p50_us: hist.quantile_us(0.50),
        p99_us: hist.quantile_us(0.99),
        errors,
    })
}

/// Opens `conns` connections, drives them from the client threads through
/// the warm-up and the measured window, and closes them.
fn load(addr: SocketAddr, conns: usize, settings: &Settings) -> BoxResult<(u64, Histogram, u64)> {
    // Connect before the clock starts, so that slow accepting (the std
    // server spawns a thread per connection) is not measured.
    let mut shares: Vec<Vec<TcpStream>> = (0..settings.clients).map(|_| Vec::new()).collect();
    for i in 0..conns {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        shares[i % settings.clients].push(stream);
    }
    let from = Instant::now() + WARMUP;
    let window = Window {
        from,
        until: from + settings.measured(),
    };
    let clients: Vec<JoinHandle<io::Result<Client>>> = shares
        .into_iter()
        .enumerate()
        .map(|(i, streams)| {
            thread::Builder::new()
                .name(format!("bench-client-{i}"))
                .spawn(move || Client::run(streams, window))
        })
        .collect::<io::Result<_>>()?;
    let mut total = Client::new();
    for client in clients {
        let client = client.join().map_err(|_| "a client thread panicked")??;
        total.round_trips += client.round_trips;
        total.errors += client.errors;
        total.hist.merge(&client.hist);
    }
    Ok((total.round_trips, total.hist, total.errors))
}

// ---------------------------------------------------------------------------
// The servers

/// atoll's poll threads: `ATOLL_BENCH_ACCEPTORS`, else the library default.
fn acceptors() -> usize {
    let default = atoll::default_num_acceptors();
    env_or("ATOLL_BENCH_ACCEPTORS", default).unwrap_or(default)
}

enum Running {
    Atoll(Server, SocketAddr),
    Tokio(tokio::runtime::Runtime, SocketAddr),
    Std(StdServer),
}

impl Running {
    fn start(kind: Kind, workers: usize) -> BoxResult<Running> {
        Ok(match kind {
            Kind::Atoll => {
                let server = Server::builder()
                    .ip([127, 0, 0, 1].into())
                    .port(0)
                    .num_workers(workers)
                    .num_acceptors(acceptors())
                    .read_timeout(None)
                    .start(|_conn| Ok(AtollEcho))?;
                let addr = server.local_addr()?.inet().ok_or("atoll listens on TCP")?;
                Running::Atoll(server, addr)
            }
            Kind::Tokio => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name("tokio-echo")
                    .enable_all()
                    .build()?;
                let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
                let addr = listener.local_addr()?;
                runtime.spawn(tokio_accept(listener));
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

struct AtollEcho;

impl Handler for AtollEcho {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        match socket.send(data) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }
}

async fn tokio_accept(listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(tokio_echo(stream));
            }
            // Out of descriptors, say: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn tokio_echo(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; SERVER_BUF];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A thread-per-connection echo server on blocking std sockets.
struct StdServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// Connection threads still running.
    live: Arc<AtomicUsize>,
    acceptor: JoinHandle<()>,
}

impl StdServer {
    fn start() -> io::Result<StdServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let acceptor = {
            let (stopping, live) = (stopping.clone(), live.clone());
            thread::Builder::new()
                .name("std-echo-accept".into())
                .spawn(move || std_accept(listener, &stopping, &live))?
        };
        Ok(StdServer {
            addr,
            stopping,
            live,
            acceptor,
        })
    }

    /// Stops accepting; connection threads end as their clients close
    /// (the clients are gone by now), and we wait a bounded time for that.
    fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Unblock the acceptor's `accept`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = self.acceptor.join();
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.live.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let left = self.live.load(Ordering::SeqCst);
        if left > 0 {
            eprintln!("warning: {left} std connection threads still running");
        }
    }
}

fn std_accept(listener: TcpListener, stopping: &AtomicBool, live: &Arc<AtomicUsize>) {
    while !stopping.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: back off instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let _ = stream.set_nodelay(true);
        live.fetch_add(1, Ordering::SeqCst);
        let counter = live.clone();
        let spawned = thread::Builder::new()
            .name("std-echo-conn".into())
            .stack_size(STD_STACK)
            .spawn(move || {
                std_echo(stream);
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            // The connection was dropped (closed) with the closure.
            live.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn std_echo(mut stream: TcpStream) {
    let mut buf = [0u8; SERVER_BUF];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The load generator

/// When a client counts round trips: those completed in `from..until`.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

/// One client connection's place in its ping-pong.
struct Conn {
    stream: mio::net::TcpStream,
    /// Bytes of the current request written.
    sent: usize,
    /// Bytes of the current reply read.
    received: usize,
    /// When the current request was started.
    started: Instant,
    open: bool,
}

/// What one client thread counted.
struct Client {
    round_trips: u64,
    errors: u64,
    hist: Histogram,
}

impl Client {
    fn new() -> Client {
        Client {
            round_trips: 0,
            errors: 0,
            hist: Histogram::new(),
        }
    }

    /// Drives `streams` in a closed loop until the window ends.
    fn run(streams: Vec<TcpStream>, window: Window) -> io::Result<Client> {
        let mut client = Client::new();
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let now = Instant::now();
        let mut conns = Vec::with_capacity(streams.len());
        for (i, stream) in streams.into_iter().enumerate() {
            let mut stream = mio::net::TcpStream::from_std(stream);
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(Conn {
                stream,
                sent: 0,
                received: 0,
                started: now,
                open: true,
            });
        }
        let mut reply = [0u8; PAYLOAD];
        // Connections whose event used up its budget; driven again without
        // waiting for a new edge (edge-triggered readiness does not repeat).
        let mut again: Vec<usize> = Vec::with_capacity(conns.len());
        let mut again_next: Vec<usize> = Vec::with_capacity(conns.len());
        // Start every ping-pong.
        for (i, conn) in conns.iter_mut().enumerate() {
            client.drive(conn, &mut reply, window, &mut again, i);
        }
        loop {
            let now = Instant::now();
            // Every failed connection counts one error and stays closed.
            if now >= window.until || client.errors as usize == conns.len() {
                break;
            }
            let wait = if again.is_empty() {
                (window.until - now).min(POLL_SLICE)
            } else {
                Duration::ZERO
            };
            poll.poll(&mut events, Some(wait))?;
            std::mem::swap(&mut again, &mut again_next);
            for &i in &again_next {
                client.drive(&mut conns[i], &mut reply, window, &mut again, i);
            }
            again_next.clear();
            for event in events.iter() {
                let i = event.token().0;
                client.drive(&mut conns[i], &mut reply, window, &mut again, i);
            }
        }
        // Dropping `conns` closes the connections.
        Ok(client)
    }

    /// Writes the pending request and reads the pending reply as far as
    /// the socket allows; on a full reply records it and starts the next.
    fn drive(
        &mut self,
        conn: &mut Conn,
        reply: &mut [u8; PAYLOAD],
        window: Window,
        again: &mut Vec<usize>,
        index: usize,
    ) {
        if !conn.open {
            return;
        }
        for _ in 0..ROUNDS_PER_EVENT {
            match conn.advance(reply) {
                Ok(false) => return, // waiting for the server
                Ok(true) => {
                    let done = Instant::now();
                    if done >= window.from && done < window.until {
                        self.round_trips += 1;
                        self.hist.record(done - conn.started);
                    }
                    conn.sent = 0;
                    conn.received = 0;
                    conn.started = done;
                }
                Err(_) => {
                    conn.open = false;
                    self.errors += 1;
                    return;
                }
            }
        }
        again.push(index);
    }
}

impl Conn {
    /// Moves the current round trip on; `Ok(true)` when its reply is
    /// complete, `Ok(false)` when the socket would block.
    fn advance(&mut self, reply: &mut [u8; PAYLOAD]) -> io::Result<bool> {
        while self.sent < PAYLOAD {
            match self.stream.write(&REQUEST[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while self.received < PAYLOAD {
            match self.stream.read(&mut reply[self.received..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.received += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if *reply != REQUEST {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "wrong echo"));
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// Latency histogram

/// A log-linear histogram of nanoseconds: exact below 128 ns, then 64
/// buckets per power of two (under 1.6% error), so recording is an index
/// computation and an increment, with no allocation.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any u64.
const BUCKETS: usize = (2 * SUB + (63 - SUB_BITS as u64) * SUB) as usize;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The `q` quantile in microseconds (the middle of its bucket), or NaN
    /// when nothing was recorded.
    fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket_range(i);
                return (low as f64 + width as f64 / 2.0) / 1_000.0;
            }
        }
        f64::NAN
    }
}

fn bucket(ns: u64) -> usize {
    if ns < 2 * SUB {
        return ns as usize;
    }
    let shift = (63 - ns.leading_zeros()) - SUB_BITS;
    (2 * SUB + (shift as u64 - 1) * SUB + ((ns >> shift) - SUB)) as usize
}

/// The lowest value of bucket `i` and its width.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < 2 * SUB {
        return (i, 1);
    }
    let k = i - 2 * SUB;
    let shift = k / SUB + 1;
    ((k % SUB + SUB) << shift, 1 << shift)
}

// ---------------------------------------------------------------------------
// Report

/// Medians over the repetitions of one server and load.
struct Summary {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

impl Summary {
    fn of(samples: &[Sample]) -> Summary {
        Summary {
            rps: median(samples.iter().map(|s| s.rps)),
            p50_us: median(samples.iter().map(|s| s.p50_us)),
            p99_us: median(samples.iter().map(|s| s.p99_us)),
            errors: samples.iter().map(|s| s.errors).sum(),
        }
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn print_table(table: &[(usize, Vec<(Kind, Summary)>)]) {
    println!();
    println!(
        "{:>6}  {:<6} {:>14} {:>10} {:>10} {:>8}",
        "conns", "server", "round trips/s", "p50 us", "p99 us", "errors"
    );
    for (conns, summaries) in table {
        for (kind, s) in summaries {
            println!(
                "{:>6}  {:<6} {:>14.0} {:>10.1} {:>10.1} {:>8}",
                conns,
                kind.name(),
                s.rps,
                s.p50_us,
                s.p99_us,
                s.errors
            );
        }
    }
    let atoll_and_other =
        |s: &Vec<(Kind, Summary)>| s.len() > 1 && s.iter().any(|(k, _)| *k == Kind::Atoll);
    if table.iter().any(|(_, s)| atoll_and_other(s)) {
        print_ratios(table);
    }
    if table.iter().flat_map(|(_, s)| s).any(|(_, s)| s.errors > 0) {
        println!("\nwarning: some connections failed (see the errors column)");
    }
}

/// atoll's throughput and p99 over each other server's.
fn print_ratios(table: &[(usize, Vec<(Kind, Summary)>)]) {
    println!();
    println!("atoll / other (throughput above 1 and p99 below 1 favour atoll):");
    println!(
        "{:>6}  {:<6} {:>11} {:>8}",
        "conns", "vs", "throughput", "p99"
    );
    for (conns, summaries) in table {
        let Some((_, atoll)) = summaries.iter().find(|(k, _)| *k == Kind::Atoll) else {
            continue;
        };
        for (kind, other) in summaries.iter().filter(|(k, _)| *k != Kind::Atoll) {
            println!(
                "{:>6}  {:<6} {:>10.2}x {:>7.2}x",
                conns,
                kind.name(),
                atoll.rps / other.rps,
                atoll.p99_us / other.p99_us
            );
        }
    }
}
