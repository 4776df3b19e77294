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
//!   (also `atoll+sink`, `atoll+log`, `atoll+proxy`: see below)
//! - `ATOLL_BENCH_CONNS`: connection counts, comma-separated [100,1000]
//! - `ATOLL_BENCH_PLAIN`: 0 skips the plaintext part [1]
//! - `ATOLL_BENCH_TLS`: 0 skips the TLS part [1]
//! - `ATOLL_BENCH_TELEMETRY`: 0 skips the telemetry-overhead part [1]:
//!   echo at 100 connections by atoll with no sink, with a counting sink
//!   (`atoll+sink`) and with the logger at info (`atoll+log`), and tokio
//! - `ATOLL_BENCH_TLS_CONNS`: TLS ping-pong connection counts [100]
//! - `ATOLL_BENCH_HS_CLIENTS`: handshake client threads [2 W]
//! - `ATOLL_BENCH_CHURN`: 0 skips the churn part [1]
//! - `ATOLL_BENCH_CHURN_CLIENTS`: churn client threads [2 W]
//!
//! Client and servers share the machine's cores, so absolute numbers
//! include the client's cost, and a latency includes the time the reply
//! waited for its client thread; the comparison is what matters.
//!
//! # TLS
//!
//! Then the same comparison over TLS, between atoll with
//! `atoll::transport::NativeTls` and a tokio-native-tls echo server on a
//! runtime of `W` workers, one task per connection that does the handshake
//! and then echoes (the std server has no TLS counterpart: of
//! `ATOLL_BENCH_SERVERS`, atoll and tokio take part). Both servers are
//! native-tls (OpenSSL on Linux) with the same identity and TLS 1.2 at
//! least, no ALPN; the identity is a throw-away P-256 certificate for
//! localhost that the `openssl` tool makes at start in a temporary
//! directory, deleted once read. The client is native-tls too, so the
//! highest common version is measured (1.3 with OpenSSL 1.1.1 or later).
//! Its connector is built once (it loads the system's roots, about 100 ms),
//! with the bench's certificate added as a root. Two figures:
//!
//! - Ping-pong, at 100 connections by default, with the plaintext client.
//!   Before the clock starts, the main thread opens every connection and
//!   finishes its handshake, blocking (it is not measured, so nothing is
//!   gained by driving it on readiness), then makes the socket under the
//!   `TlsStream` non-blocking and hands the stream to the client threads.
//!   They register its descriptor with mio, and native-tls's reads and
//!   writes return `WouldBlock` as a plain socket's do. That is sound with
//!   edge-triggered readiness: OpenSSL reports `WouldBlock` on a read only
//!   once the kernel said so, so the socket is drained when the client
//!   waits for the next edge (and a record half read is finished by the
//!   next read); a retried write passes the same bytes, as OpenSSL asks.
//!   So the load costs `ATOLL_BENCH_CLIENTS` threads, as plaintext, not one
//!   blocking thread per connection (100 threads would take a small
//!   machine's cores from the servers); rustls's client would allow the
//!   same but is no dependency of this crate.
//! - Handshakes per second: `ATOLL_BENCH_HS_CLIENTS` client threads, each
//!   in a closed loop of blocking steps, each step within 5 s: connect, a
//!   full handshake (no resumption: the connector keeps no session cache;
//!   it checks the certificate every time), a close_notify, and a wait for
//!   the server to close the connection. So a counted handshake is one the
//!   server has finished with, and the server, closing first, keeps the
//!   TIME_WAIT rather than the client's ports. Latencies time the whole
//!   loop. With OpenSSL 3.0 the client's part costs about three times the
//!   server's (perf: most of it decoding the server's certificate, through
//!   `OSSL_DECODER_CTX_new_for_pkey`), so on a small machine this figure is
//!   bounded by the client more than by either server, and a ratio near 1
//!   says little more than that neither server is the bottleneck.
//!
//! # Churn
//!
//! Then short connections per second, against the ping-pong's echo servers
//! (all of `ATOLL_BENCH_SERVERS`) and `atoll+proxy`, added after atoll:
//! atoll with `proxy_protocol(ProxyProtocol::new())`, whose clients send a
//! PROXY v2 header (28 bytes, encoded once at start) in the same write as
//! their 64 bytes; the ratio of atoll to it is what reading the header
//! costs per connection. `ATOLL_BENCH_CHURN_CLIENTS` client threads each
//! run a closed loop of blocking steps, as for handshakes, each within 5 s:
//! connect (`set_nodelay`), write the 64 bytes, read them back, close. A
//! counted connection is one whose reply came within the window; latencies
//! time connect to reply, the close (in the loop, so in the rate) aside.
//! Here the std server pays for its thread per connection: its accept loop
//! spawns one for each.
//!
//! Every client socket has a zero linger, so that its close sends a reset
//! and leaves no TIME_WAIT. The client closes first, so a normal close would
//! leave its port in TIME_WAIT for 60 s: at 20,000 connections a second,
//! all 28,232 ports of Linux's default ephemeral range (32768-60999) are
//! waiting within 1.5 s. Linux's default `tcp_tw_reuse` (2: loopback only)
//! lets a connect take back a port whose TIME_WAIT is a second old, so runs
//! do not fail, but connect then searches the range for one, starting with
//! the odd half it prefers. On the 2-core machine of docs/PERFORMANCE.md,
//! runs without the zero linger left about 14,000 sockets in TIME_WAIT per
//! server (the odd ports) and mostly gave about 13,500 connections/s,
//! whichever the server, with p99s of 3 to 5 ms; with it, 20,000 to 27,000
//! and mostly under 1 ms. The server closing first, as in the handshakes,
//! would keep the TIME_WAIT on its side, but these echo servers close only
//! when their client does; ones that close after a reply would no longer be
//! the ping-pong's. The reset is the same for every server: each sees its
//! next read fail (`ECONNRESET`) instead of an end of file, and closes as
//! it would then (atoll passes the error to `Handler::handle_error`, a
//! no-op here).
//!
//! Two client threads per server worker by default, as for handshakes. The
//! client threads take over half the machine's time (perf, against atoll),
//! nearly all of it in the kernel: connect's handshake, the close, and the
//! loopback's delivery of their packets. While a client does its part its
//! connection leaves the server nothing to do, so one client per worker
//! leaves the server idle at times. On 2 cores, W = 2, four clients gave
//! 10 to 50% more connections/s than two, and eight about as many as four
//! at twice the latency: four keep the cores busy, more only queue.
//!
//! `atoll+proxy` may be named in `ATOLL_BENCH_SERVERS` for the ping-pong
//! too: its connections then send the header once, before the clock starts.

#[path = "common/env.rs"]
mod env;
#[path = "common/histogram.rs"]
mod histogram;
use env::{env_flag, env_list, env_or, median};
use histogram::Histogram;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use atoll::proxy::{ProxyHeader, Version};
use atoll::transport::NativeTls;
use atoll::{Flow, Handler, Server, Socket};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use native_tls::{Certificate, Identity, Protocol, TlsAcceptor, TlsConnector, TlsStream};

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
/// TLS ping-pong connection counts, by default.
const TLS_LOADS: &str = "100";
/// Most client threads of a closed loop of blocking steps (handshakes,
/// churn).
const MAX_LOOP_CLIENTS: usize = 256;
/// Longest a blocking client step (connect, handshake read or write, the
/// wait for the server's close) may take before it counts as an error.
const IO_LIMIT: Duration = Duration::from_secs(5);
/// Failed steps after which a closed-loop client gives up its run.
const MAX_LOOP_ERRORS: u64 = 100;
/// Pause after a failed step, so that a broken server is not hammered.
const LOOP_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Reads a handshake client makes while waiting for the server to close
/// (it sends session tickets first, a few hundred bytes).
const CLOSE_READS: usize = 64;

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
    if settings.plain {
        let label = |conns| format!("{conns} conns");
        let table = measure(
            &settings.servers,
            &settings.loads,
            label,
            "rt/s",
            &settings,
            |kind, conns| run_once(kind, conns, &settings, None),
        )?;
        print_table(None, &table, RATE_COLUMN);
    }
    if settings.tls {
        run_tls(&settings)?;
    }
    if settings.churn {
        run_churn(&settings)?;
    }
    if settings.telemetry {
        let servers = [Kind::Atoll, Kind::AtollSink, Kind::AtollLog, Kind::Tokio];
        let table = measure(
            &servers,
            &[TELEMETRY_LOAD],
            |conns| format!("telemetry, {conns} conns"),
            "rt/s",
            &settings,
            |kind, conns| run_once(kind, conns, &settings, None),
        )?;
        print_table(
            Some("Telemetry overhead: no sink, a counting sink, the logger at info; tokio for reference"),
            &table,
            RATE_COLUMN,
        );
    }
    Ok(())
}

/// Connections of the telemetry-overhead section.
const TELEMETRY_LOAD: usize = 100;

/// A `log` logger that takes info records and drops them, so that the
/// logger's cost up to the `log` call is measured.
fn install_null_logger() {
    struct Null;
    impl log::Log for Null {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Info
        }
        fn log(&self, _: &log::Record<'_>) {}
        fn flush(&self) {}
    }
    static NULL: Null = Null;
    if log::set_logger(&NULL).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Runs every server at every load, alternating servers within each
/// repetition, and gives the medians per load.
fn measure(
    servers: &[Kind],
    loads: &[usize],
    label: impl Fn(usize) -> String,
    unit: &str,
    settings: &Settings,
    mut run: impl FnMut(Kind, usize) -> BoxResult<Sample>,
) -> BoxResult<Table> {
    let mut table = Vec::new();
    for &conns in loads {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
        for rep in 1..=settings.reps {
            for (k, &kind) in servers.iter().enumerate() {
                let sample = run(kind, conns)?;
                eprintln!(
                    "[{}, rep {rep}/{}] {:<11} {:>10.0} {unit}  p50 {:>7.1} us  p99 {:>7.1} us{}",
                    label(conns),
                    settings.reps,
                    kind.name(),
                    sample.rps,
                    sample.p50_us,
                    sample.p99_us,
                    match (&sample.first_error, sample.errors) {
                        (_, 0) => String::new(),
                        (Some(e), n) => format!("  ({n} connection errors; first: {e})"),
                        (None, n) => format!("  ({n} connection errors)"),
                    }
                );
                samples[k].push(sample);
            }
        }
        let summaries = servers.iter().zip(&samples);
        table.push((
            conns,
            summaries.map(|(&k, s)| (k, Summary::of(s))).collect(),
        ));
    }
    Ok(table)
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
    /// Run the plaintext part.
    plain: bool,
    /// Run the TLS part.
    tls: bool,
    /// Run the telemetry-overhead part.
    telemetry: bool,
    tls_loads: Vec<usize>,
    hs_clients: usize,
    /// Run the churn part.
    churn: bool,
    churn_clients: usize,
    /// What atoll+proxy's clients send first: a PROXY v2 header.
    proxy_header: Vec<u8>,
}

impl Settings {
    fn from_env() -> BoxResult<Settings> {
        let workers = env_or("ATOLL_BENCH_WORKERS", 2)?;
        let settings = Settings {
            workers,
            secs: env_or("ATOLL_BENCH_SECS", 3.0)?,
            reps: env_or("ATOLL_BENCH_REPS", 3)?,
            // One client thread tops out below the servers (about 95k round
            // trips/s for all three here); two load them harder.
            clients: env_or("ATOLL_BENCH_CLIENTS", 2)?,
            servers: env_list("ATOLL_BENCH_SERVERS", "atoll,tokio,std")?,
            loads: env_list("ATOLL_BENCH_CONNS", LOADS)?,
            plain: env_flag("ATOLL_BENCH_PLAIN")?,
            tls: env_flag("ATOLL_BENCH_TLS")?,
            telemetry: env_flag("ATOLL_BENCH_TELEMETRY")?,
            tls_loads: env_list("ATOLL_BENCH_TLS_CONNS", TLS_LOADS)?,
            // Two per server worker, so that a handshake waits for each
            // worker while the clients do their part (with OpenSSL 3.0, the
            // larger part: see the module docs).
            hs_clients: env_or("ATOLL_BENCH_HS_CLIENTS", workers.saturating_mul(2))?,
            churn: env_flag("ATOLL_BENCH_CHURN")?,
            // Two per server worker, as for handshakes: see the module docs.
            churn_clients: env_or("ATOLL_BENCH_CHURN_CLIENTS", workers.saturating_mul(2))?,
            // A balancer's header for a client of one of its addresses
            // (28 bytes; the addresses are documentation ones).
            proxy_header: ProxyHeader::tcp(
                ([192, 0, 2, 7], 51000).into(),
                ([198, 51, 100, 1], 443).into(),
            )
            .encode(Version::V2)?,
        };
        if settings.servers.is_empty() || settings.loads.iter().any(|&n| n == 0 || n > MAX_CONNS) {
            return Err(
                format!("ATOLL_BENCH_SERVERS and _CONNS need entries (1..={MAX_CONNS})").into(),
            );
        }
        if settings.tls_loads.is_empty()
            || settings.tls_loads.iter().any(|&n| n == 0 || n > MAX_CONNS)
        {
            return Err(format!("ATOLL_BENCH_TLS_CONNS needs entries (1..={MAX_CONNS})").into());
        }
        if settings.workers == 0 || settings.reps == 0 || settings.clients == 0 {
            return Err("ATOLL_BENCH_WORKERS, _REPS and _CLIENTS must be at least 1".into());
        }
        let clients = [settings.hs_clients, settings.churn_clients];
        if clients.iter().any(|&n| n == 0 || n > MAX_LOOP_CLIENTS) {
            return Err(format!(
                "ATOLL_BENCH_HS_CLIENTS and _CHURN_CLIENTS must be in 1..={MAX_LOOP_CLIENTS}"
            )
            .into());
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

// ---------------------------------------------------------------------------
// One run: start a server, load it, stop it.

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Atoll,
    Tokio,
    Std,
    /// atoll with a counting telemetry sink attached.
    AtollSink,
    /// atoll with the logger at info (and a `log` logger that drops
    /// records).
    AtollLog,
    /// atoll reading a PROXY header first, which its clients send.
    AtollProxy,
}

impl FromStr for Kind {
    type Err = ();

    fn from_str(s: &str) -> Result<Kind, ()> {
        match s {
            "atoll" => Ok(Kind::Atoll),
            "tokio" => Ok(Kind::Tokio),
            "std" => Ok(Kind::Std),
            "atoll+sink" => Ok(Kind::AtollSink),
            "atoll+log" => Ok(Kind::AtollLog),
            "atoll+proxy" => Ok(Kind::AtollProxy),
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
            Kind::AtollSink => "atoll+sink",
            Kind::AtollLog => "atoll+log",
            Kind::AtollProxy => "atoll+proxy",
        }
    }

    /// What this server's clients send first on every connection: the
    /// PROXY header for atoll+proxy, nothing for the others.
    fn prefix(self, settings: &Settings) -> &[u8] {
        match self {
            Kind::AtollProxy => &settings.proxy_header,
            _ => &[],
        }
    }
}

/// What one run measured: round trips (or handshakes) per second.
#[derive(Clone)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    /// What went wrong first, when something did.
    first_error: Option<String>,
}

impl Sample {
    fn of(client: &Client, secs: f64) -> Sample {
        Sample {
            rps: client.round_trips as f64 / secs,
            p50_us: client.hist.quantile_us(0.50),
            p99_us: client.hist.quantile_us(0.99),
            errors: client.errors,
            first_error: client.first_error.clone(),
        }
    }
}

/// One ping-pong run; over TLS when `tls` is given.
fn run_once(kind: Kind, conns: usize, settings: &Settings, tls: Option<&Tls>) -> BoxResult<Sample> {
    let server = match tls {
        None => Running::start(kind, settings.workers)?,
        Some(tls) => Running::start_tls(kind, settings.workers, tls)?,
    };
    let prefix = kind.prefix(settings);
    let result = load(
        server.addr(),
        conns,
        settings,
        tls.map(|t| &t.connector),
        prefix,
    );
    stop(server, kind);
    Ok(Sample::of(&result?, settings.secs))
}

/// Stops a server, saying so when that is slow.
fn stop(server: Running, kind: Kind) {
    let started = Instant::now();
    server.stop();
    let took = started.elapsed();
    if took > SLOW_STOP {
        eprintln!("warning: stopping {} took {took:?}", kind.name());
    }
}

/// Opens `conns` connections (over TLS with `tls`; plain ones send `prefix`
/// first), drives them from the client threads through the warm-up and the
/// measured window, and closes them.
fn load(
    addr: SocketAddr,
    conns: usize,
    settings: &Settings,
    tls: Option<&TlsConnector>,
    prefix: &[u8],
) -> BoxResult<Client> {
    // Connect before the clock starts, so that slow accepting (the std
    // server spawns a thread per connection) is not measured; and so are
    // TLS handshakes.
    let mut shares: Vec<Vec<Wire>> = (0..settings.clients).map(|_| Vec::new()).collect();
    for i in 0..conns {
        let mut stream = TcpStream::connect_timeout(&addr, IO_LIMIT)?;
        stream.set_nodelay(true)?;
        let wire = match tls {
            None => {
                // 28 bytes at most, into an empty send buffer.
                stream.write_all(prefix)?;
                stream.set_nonblocking(true)?;
                Wire::Plain(mio::net::TcpStream::from_std(stream))
            }
            Some(connector) => {
                stream.set_read_timeout(Some(IO_LIMIT))?;
                stream.set_write_timeout(Some(IO_LIMIT))?;
                let tls = connector
                    .connect("localhost", stream)
                    .map_err(|e| format!("TLS handshake of connection {i}: {e}"))?;
                tls.get_ref().set_nonblocking(true)?;
                Wire::Tls(Box::new(tls))
            }
        };
        shares[i % settings.clients].push(wire);
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
        total.merge(client.join().map_err(|_| "a client thread panicked")??);
    }
    Ok(total)
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
            Kind::AtollSink | Kind::AtollLog => {
                let Running::Atoll(server, addr) = Running::start(Kind::Atoll, workers)? else {
                    return Err("atoll did not start".into());
                };
                if kind == Kind::AtollSink {
                    let events = AtomicUsize::new(0);
                    server.attach_sink(move |_: &atoll::telemetry::Event<'_>| {
                        events.fetch_add(1, Ordering::Relaxed);
                    });
                } else {
                    install_null_logger();
                    atoll::logger::attach_logger(atoll::logger::Level::Info)
                        .map_err(|e| e.to_string())?;
                }
                Running::Atoll(server, addr)
            }
            Kind::Atoll | Kind::AtollProxy => {
                let mut builder = Server::builder()
                    .ip([127, 0, 0, 1].into())
                    .port(0)
                    .num_workers(workers)
                    .num_acceptors(acceptors())
                    .read_timeout(None);
                if kind == Kind::AtollProxy {
                    builder = builder.proxy_protocol(atoll::proxy::ProxyProtocol::new());
                }
                let server = builder.start(|_conn| Ok(AtollEcho))?;
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

    /// The TLS echo server of `kind`: atoll with `NativeTls`, or tokio with
    /// tokio-native-tls; both with `tls`'s identity.
    fn start_tls(kind: Kind, workers: usize, tls: &Tls) -> BoxResult<Running> {
        Ok(match kind {
            Kind::Atoll => {
                let server = Server::builder()
                    .ip([127, 0, 0, 1].into())
                    .port(0)
                    .num_workers(workers)
                    .num_acceptors(acceptors())
                    .read_timeout(None)
                    .transport(tls.atoll.clone())
                    .start(|_conn| Ok(AtollEcho))?;
                let addr = server.local_addr()?.inet().ok_or("atoll listens on TCP")?;
                Running::Atoll(server, addr)
            }
            Kind::Tokio => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name("tokio-tls-echo")
                    .enable_all()
                    .build()?;
                let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
                let addr = listener.local_addr()?;
                let acceptor = tokio_native_tls::TlsAcceptor::from(tls.tokio.clone());
                runtime.spawn(tokio_tls_accept(listener, acceptor));
                Running::Tokio(runtime, addr)
            }
            Kind::Std | Kind::AtollSink | Kind::AtollLog | Kind::AtollProxy => {
                return Err(format!("{} has no TLS variant here", kind.name()).into())
            }
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
            Running::Atoll(server, _) => {
                server.stop(Duration::from_secs(1));
                // The logger is process-wide: off again for the next run.
                let _ = atoll::logger::detach_logger(atoll::logger::Level::Error);
            }
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

async fn tokio_tls_accept(
    listener: tokio::net::TcpListener,
    acceptor: tokio_native_tls::TlsAcceptor,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                // The handshake runs in the connection's task, on a worker.
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        tokio_echo(stream).await;
                    }
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn tokio_echo<S>(mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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

/// A client connection: plain, or TLS over a non-blocking socket.
enum Wire {
    Plain(mio::net::TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Wire {
    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Wire::Plain(stream) => registry.register(stream, token, interest),
            Wire::Tls(tls) => {
                registry.register(&mut SourceFd(&tls.get_ref().as_raw_fd()), token, interest)
            }
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(stream) => stream.read(buf),
            Wire::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(stream) => stream.write(buf),
            Wire::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(stream) => stream.flush(),
            Wire::Tls(tls) => tls.flush(),
        }
    }
}

/// One client connection's place in its ping-pong.
struct Conn {
    stream: Wire,
    /// Bytes of the current request written.
    sent: usize,
    /// Bytes of the current reply read.
    received: usize,
    /// When the current request was started.
    started: Instant,
    open: bool,
}

/// What one client thread counted (round trips, or handshakes).
struct Client {
    round_trips: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram,
}

impl Client {
    fn new() -> Client {
        Client {
            round_trips: 0,
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
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.hist.merge(&other.hist);
    }

    /// Drives `streams` in a closed loop until the window ends.
    fn run(streams: Vec<Wire>, window: Window) -> io::Result<Client> {
        let mut client = Client::new();
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let now = Instant::now();
        let mut conns = Vec::with_capacity(streams.len());
        for (i, mut stream) in streams.into_iter().enumerate() {
            stream.register(poll.registry(), Token(i))?;
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
                Err(e) => {
                    conn.open = false;
                    self.error(e);
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
// TLS

/// The TLS side of the bench: both servers' configuration, from one
/// throw-away identity, and the client's connector, built once.
struct Tls {
    atoll: NativeTls,
    tokio: TlsAcceptor,
    connector: TlsConnector,
}

impl Tls {
    fn new() -> BoxResult<Tls> {
        let (cert, key) = make_cert()?;
        let atoll = NativeTls::from_pem(&cert, &key)?;
        // As atoll's acceptor: TLS 1.2 at least, no ALPN.
        let tokio = TlsAcceptor::builder(Identity::from_pkcs8(&cert, &key)?)
            .min_protocol_version(Some(Protocol::Tlsv12))
            .build()?;
        let connector = TlsConnector::builder()
            .add_root_certificate(Certificate::from_pem(&cert)?)
            .min_protocol_version(Some(Protocol::Tlsv12))
            .build()?;
        Ok(Tls {
            atoll,
            tokio,
            connector,
        })
    }
}

/// A P-256 certificate for localhost and 127.0.0.1 and its PKCS#8 key, in
/// PEM, made by the openssl tool in a temporary directory that is gone
/// when this returns.
fn make_cert() -> BoxResult<(Vec<u8>, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("atoll-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    let pair = match made {
        Ok(out) if out.status.success() => {
            std::fs::read(&cert).and_then(|c| Ok((c, std::fs::read(&key)?)))
        }
        Ok(out) => Err(io::Error::other(format!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    pair.map_err(|e| {
        format!("making a certificate with the openssl tool (ATOLL_BENCH_TLS=0 skips TLS): {e}")
            .into()
    })
}

/// The TLS part: ping-pong, then handshakes, atoll against tokio.
fn run_tls(settings: &Settings) -> BoxResult<()> {
    let servers: Vec<Kind> = settings
        .servers
        .iter()
        .copied()
        .filter(|&k| matches!(k, Kind::Atoll | Kind::Tokio))
        .collect();
    if servers.is_empty() {
        println!("\nTLS: skipped (ATOLL_BENCH_SERVERS has neither atoll nor tokio)");
        return Ok(());
    }
    let tls = Tls::new()?;
    println!(
        "\nTLS: native-tls (OpenSSL) at both ends, P-256 certificate, no session resumption; \
         tokio = tokio-native-tls on W workers"
    );
    let label = |conns| format!("tls, {conns} conns");
    let table = measure(
        &servers,
        &settings.tls_loads,
        label,
        "rt/s",
        settings,
        |kind, conns| run_once(kind, conns, settings, Some(&tls)),
    )?;
    let title = format!("TLS echo, {PAYLOAD}-byte ping-pong:");
    print_table(Some(&title), &table, RATE_COLUMN);
    let label = |clients| format!("handshakes, {clients} clients");
    let loads = [settings.hs_clients];
    let table = measure(
        &servers,
        &loads,
        label,
        "hs/s",
        settings,
        |kind, clients| handshakes(kind, clients, settings, &tls),
    )?;
    let title = "TLS handshakes: connect, full handshake, close_notify, server's close, \
                 one at a time per client thread (conns = client threads); \
                 latencies of the whole";
    print_table(Some(title), &table, "handshakes/s");
    Ok(())
}

/// One handshake run: `clients` threads connect, shake hands and close
/// against a TLS server of `kind`, in a closed loop.
fn handshakes(kind: Kind, clients: usize, settings: &Settings, tls: &Tls) -> BoxResult<Sample> {
    let server = Running::start_tls(kind, settings.workers, tls)?;
    let connector = tls.connector.clone();
    let mut junk = [0u8; 4096];
    closed_loops(server, kind, clients, settings, "handshake", move |addr| {
        handshake_once(addr, &connector, &mut junk)
    })
}

/// One run of `clients` threads against `server`, each repeating `step` (a
/// clone of it) in a closed loop until the window ends; `server` is
/// stopped once every thread has ended.
fn closed_loops<T, F>(
    server: Running,
    kind: Kind,
    clients: usize,
    settings: &Settings,
    what: &str,
    step: F,
) -> BoxResult<Sample>
where
    F: FnMut(SocketAddr) -> io::Result<T> + Clone + Send + 'static,
{
    let addr = server.addr();
    let from = Instant::now() + WARMUP;
    let window = Window {
        from,
        until: from + settings.measured(),
    };
    let mut threads = Vec::with_capacity(clients);
    let mut failed = None;
    for i in 0..clients {
        let step = step.clone();
        let spawned = thread::Builder::new()
            .name(format!("bench-{what}-{i}"))
            .spawn(move || repeat(addr, window, step));
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Every client is joined (each ends with the window) before the server
    // stops, whatever happened.
    let mut total = Client::new();
    let mut panicked = false;
    for thread in threads {
        match thread.join() {
            Ok(client) => total.merge(client),
            Err(_) => panicked = true,
        }
    }
    stop(server, kind);
    if let Some(e) = failed {
        return Err(format!("starting a {what} client: {e}").into());
    }
    if panicked {
        return Err(format!("a {what} client thread panicked").into());
    }
    Ok(Sample::of(&total, settings.secs))
}

/// A closed-loop client: `step`, one at a time, until the window ends.
/// Each step is timed from its start to its return; what it returns (a
/// connection, say) is dropped after that.
fn repeat<T>(
    addr: SocketAddr,
    window: Window,
    mut step: impl FnMut(SocketAddr) -> io::Result<T>,
) -> Client {
    let mut client = Client::new();
    loop {
        let started = Instant::now();
        if started >= window.until {
            break;
        }
        let outcome = step(addr);
        let done = Instant::now();
        match outcome {
            Ok(_done_with) => {
                if done >= window.from && done < window.until {
                    client.round_trips += 1;
                    client.hist.record(done - started);
                }
            }
            Err(e) => {
                client.error(e);
                if client.errors >= MAX_LOOP_ERRORS {
                    break;
                }
                thread::sleep(LOOP_ERROR_PAUSE);
            }
        }
    }
    client
}

/// Connect, a full handshake, close_notify, and the server's close.
fn handshake_once(addr: SocketAddr, connector: &TlsConnector, junk: &mut [u8]) -> io::Result<()> {
    let stream = TcpStream::connect_timeout(&addr, IO_LIMIT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_LIMIT))?;
    stream.set_write_timeout(Some(IO_LIMIT))?;
    let mut tls = connector
        .connect("localhost", stream)
        .map_err(|e| io::Error::other(format!("handshake: {e}")))?;
    tls.shutdown()?;
    // The server answers the close_notify by closing. What comes before
    // (session tickets, its own close_notify) is read past, not decrypted.
    let stream = tls.get_mut();
    for _ in 0..CLOSE_READS {
        match stream.read(junk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("waiting for the server's close: {e}"),
                ))
            }
        }
    }
    Err(io::Error::other("the server sent on after close_notify"))
}

// ---------------------------------------------------------------------------
// Churn

/// The churn part: short connections against every server, and atoll
/// reading a PROXY header.
fn run_churn(settings: &Settings) -> BoxResult<()> {
    let mut servers = settings.servers.clone();
    if !servers.contains(&Kind::AtollProxy) {
        if let Some(i) = servers.iter().position(|&k| k == Kind::Atoll) {
            servers.insert(i + 1, Kind::AtollProxy);
        }
    }
    let label = |clients| format!("churn, {clients} clients");
    let loads = [settings.churn_clients];
    let table = measure(
        &servers,
        &loads,
        label,
        "conn/s",
        settings,
        |kind, clients| churn(kind, clients, settings),
    )?;
    let title = format!(
        "Churn: connect, {PAYLOAD} bytes there and back, close (reset by the client), \
         one at a time per client thread (conns = client threads); \
         latencies from connect to reply; atoll+proxy's clients send a {}-byte \
         PROXY v2 header in the same write",
        settings.proxy_header.len()
    );
    print_table(Some(&title), &table, "connections/s");
    Ok(())
}

/// One churn run: `clients` threads open, use once and close connections
/// to a server of `kind`, in a closed loop.
fn churn(kind: Kind, clients: usize, settings: &Settings) -> BoxResult<Sample> {
    let server = Running::start(kind, settings.workers)?;
    let request = [kind.prefix(settings), &REQUEST].concat();
    closed_loops(server, kind, clients, settings, "churn", move |addr| {
        churn_once(addr, &request)
    })
}

/// Connect, send `request`, read the echo of its last `PAYLOAD` bytes (the
/// whole of it but a PROXY header). The connection is returned to be
/// closed: with a zero linger, the close sends a reset and leaves no
/// TIME_WAIT behind (see the module docs).
fn churn_once(addr: SocketAddr, request: &[u8]) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_LIMIT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_LIMIT))?;
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    // Into an empty send buffer: it does not block.
    stream.write_all(request)?;
    let mut reply = [0u8; PAYLOAD];
    stream.read_exact(&mut reply)?;
    if reply != REQUEST {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "wrong echo"));
    }
    Ok(stream)
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

/// Per load, each server's medians.
type Table = Vec<(usize, Vec<(Kind, Summary)>)>;

/// The throughput column of the ping-pong tables.
const RATE_COLUMN: &str = "round trips/s";

/// The table, under `title` when there is one, then atoll's ratios.
fn print_table(title: Option<&str>, table: &[(usize, Vec<(Kind, Summary)>)], rate: &str) {
    println!();
    if let Some(title) = title {
        println!("{title}");
    }
    println!(
        "{:>6}  {:<10} {:>14} {:>10} {:>10} {:>8}",
        "conns", "server", rate, "p50 us", "p99 us", "errors"
    );
    for (conns, summaries) in table {
        for (kind, s) in summaries {
            println!(
                "{:>6}  {:<10} {:>14.0} {:>10.1} {:>10.1} {:>8}",
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
        "{:>6}  {:<10} {:>11} {:>8}",
        "conns", "vs", "throughput", "p99"
    );
    for (conns, summaries) in table {
        let Some((_, atoll)) = summaries.iter().find(|(k, _)| *k == Kind::Atoll) else {
            continue;
        };
        for (kind, other) in summaries.iter().filter(|(k, _)| *k != Kind::Atoll) {
            println!(
                "{:>6}  {:<10} {:>10.2}x {:>7.2}x",
                conns,
                kind.name(),
                atoll.rps / other.rps,
                atoll.p99_us / other.p99_us
            );
        }
    }
}
