//! The idle-scale client of `bench/run.sh`: holds many idle connections to
//! an echo server and, on demand, measures 64-byte ping-pong on a few
//! active ones beside them.
//!
//! ```text
//! cargo run --release --example echo -- --port 4000 --read-timeout-ms 0 --num-connections 0 &
//! cargo run --release --example idle_client -- --addr 127.0.0.1:4000 --idle 10000
//! ```
//!
//! It reads commands on standard input, one a line, and answers each with
//! one line on standard output:
//!
//! - `idle N`: hold `N` idle connections, opening more or closing the last
//!   ones opened; answers `idle N held (opened A, closed C, in T ms)`.
//! - `active C S`: open `C` connections, play a closed loop of 64-byte
//!   ping-pong on them from `--clients` threads for 500 ms of warm-up and
//!   `S` seconds of measure, close them; answers
//!   `active conns=C secs=S rt/s=R p50_us=P p99_us=Q errors=E`.
//!
//! `--idle N` does the first `idle N` before reading. It exits when its
//! input closes (or on SIGTERM), closing every connection.
//!
//! Idle connections are spread over source addresses 127.0.0.2, 127.0.0.3,
//! ... (`--per-source` each, bound before connecting), so that many
//! connections to one server port never run short of source ports, even
//! with the TIME_WAIT of the ones closed earlier: every connection opened
//! takes the next source slot and slots are not reused until all 253
//! addresses are. Each new idle connection makes one 1-byte round trip
//! before it falls silent, so the server has accepted it and served it once
//! when `idle` answers. Active connections come from 127.0.0.1.
//!
//! A bench tool, not an atoll example: it uses no atoll code, only mio and
//! socket2.

mod common;

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Bytes of an active request and of its reply.
const PAYLOAD: usize = 64;
/// Longest any connect, ping or setup step may take.
const IO_LIMIT: Duration = Duration::from_secs(5);
/// Active load before the measure starts.
const WARMUP: Duration = Duration::from_millis(500);
/// Longest one poll waits, so a client thread notices the end of its run.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Idle connections opened before their pings are answered, so that the
/// server's accept queue (backlog 1,024 by default) never overflows.
const BATCH: usize = 500;
/// Source addresses: 127.0.0.FIRST_SOURCE ..= 127.0.0.LAST_SOURCE.
const FIRST_SOURCE: u32 = 2;
const LAST_SOURCE: u32 = 254;

const HELP: &str = "\
idle_client: hold idle connections to an echo server, measure active ones

Options (defaults in brackets):
  --addr ADDR        the echo server [127.0.0.1:4000]
  --idle N           hold N idle connections before reading commands [0]
  --per-source N     idle connections per source address [2000]
  --clients N        threads driving the active connections [2]
  --help             this text

Commands on standard input: `idle N`, `active CONNS SECS`; EOF exits.";

const REQUEST: [u8; PAYLOAD] = {
    let mut r = [0u8; PAYLOAD];
    let mut i = 0;
    while i < PAYLOAD {
        r[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    r
};

fn main() -> ExitCode {
    common::run_main("idle_client", run)
}

fn run() -> common::Result {
    let mut addr: SocketAddr = "127.0.0.1:4000".parse()?;
    let mut first_idle = 0usize;
    let mut per_source = 2000usize;
    let mut clients = 2usize;
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--addr" => addr = args.parse()?,
            "--idle" => first_idle = args.parse()?,
            "--per-source" => per_source = args.parse()?,
            "--clients" => clients = args.parse()?,
            _ => return Err(args.unknown()),
        }
    }
    if per_source == 0 || clients == 0 {
        return Err("--per-source and --clients must be at least 1".into());
    }
    let mut idle = Idle {
        addr,
        per_source,
        opened: 0,
        held: Vec::new(),
    };
    if first_idle > 0 {
        println!("{}", idle.hold(first_idle)?);
    }
    for line in io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            [] => continue,
            ["idle", n] => idle.hold(n.parse()?)?,
            ["active", conns, secs] => {
                let secs: f64 = secs.parse()?;
                if !(secs > 0.0 && secs <= 3600.0) {
                    return Err("active: seconds in (0, 3600]".into());
                }
                active(addr, conns.parse()?, secs, clients)?
            }
            _ => return Err(format!("unknown command {line:?}").into()),
        };
        println!("{answer}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Idle connections

struct Idle {
    addr: SocketAddr,
    per_source: usize,
    /// Connections opened so far: the next one's source slot.
    opened: usize,
    held: Vec<TcpStream>,
}

impl Idle {
    /// Holds `n` idle connections.
    fn hold(&mut self, n: usize) -> common::Result<String> {
        let started = Instant::now();
        let before = self.held.len();
        self.held.truncate(n);
        let closed = before - self.held.len();
        while self.held.len() < n {
            let batch = (n - self.held.len()).min(BATCH);
            let mut fresh = Vec::with_capacity(batch);
            for _ in 0..batch {
                let mut stream = self.connect()?;
                stream.write_all(b"p")?;
                fresh.push(stream);
            }
            for stream in &mut fresh {
                let mut byte = [0u8; 1];
                stream
                    .read_exact(&mut byte)
                    .map_err(|e| format!("ping of idle connection {}: {e}", self.held.len()))?;
            }
            self.held.append(&mut fresh);
        }
        Ok(format!(
            "idle {n} held (opened {}, closed {closed}, in {} ms)",
            n.saturating_sub(before),
            started.elapsed().as_millis()
        ))
    }

    /// Opens the next idle connection from its source address.
    fn connect(&mut self) -> common::Result<TcpStream> {
        let sources = (LAST_SOURCE - FIRST_SOURCE + 1) as usize;
        let source = FIRST_SOURCE + ((self.opened / self.per_source) % sources) as u32;
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + source);
        self.opened += 1;
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket
            .bind(&SockAddr::from(SocketAddrV4::new(ip, 0)))
            .map_err(|e| format!("bind to {ip}: {e}"))?;
        socket
            .connect_timeout(&SockAddr::from(self.addr), IO_LIMIT)
            .map_err(|e| format!("connect from {ip} to {}: {e}", self.addr))?;
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(IO_LIMIT))?;
        stream.set_write_timeout(Some(IO_LIMIT))?;
        Ok(stream)
    }
}

// ---------------------------------------------------------------------------
// Active connections

/// What a client thread measured.
#[derive(Default)]
struct Measured {
    round_trips: u64,
    /// Round-trip times in the measured window, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Measured {
    fn error(&mut self, e: impl ToString) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

/// Runs `conns` active connections for `secs` seconds after the warm-up.
fn active(addr: SocketAddr, conns: usize, secs: f64, clients: usize) -> common::Result<String> {
    let mut shares: Vec<Vec<mio::net::TcpStream>> = (0..clients).map(|_| Vec::new()).collect();
    for i in 0..conns {
        let stream = TcpStream::connect_timeout(&addr, IO_LIMIT)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        shares[i % clients].push(mio::net::TcpStream::from_std(stream));
    }
    let warm = Instant::now() + WARMUP;
    let until = warm + Duration::from_secs_f64(secs);
    let threads: Vec<thread::JoinHandle<io::Result<Measured>>> = shares
        .into_iter()
        .map(|share| thread::spawn(move || drive(share, warm, until)))
        .collect();
    let mut total = Measured::default();
    for t in threads {
        let m = t.join().map_err(|_| "a client thread panicked")??;
        total.round_trips += m.round_trips;
        total.latencies.extend(m.latencies);
        total.errors += m.errors;
        if total.first_error.is_none() {
            total.first_error = m.first_error;
        }
    }
    total.latencies.sort_unstable();
    let quantile_us = |q: f64| {
        let v = &total.latencies;
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1000.0
    };
    let mut line = format!(
        "active conns={conns} secs={secs} rt/s={:.0} p50_us={:.1} p99_us={:.1} errors={}",
        total.round_trips as f64 / secs,
        quantile_us(0.50),
        quantile_us(0.99),
        total.errors
    );
    if let Some(e) = total.first_error {
        line.push_str(&format!(" first_error={e:?}"));
    }
    Ok(line)
}

struct Active {
    stream: mio::net::TcpStream,
    sent: Instant,
    got: usize,
    buf: [u8; PAYLOAD],
    live: bool,
}

/// One client thread: a closed loop of ping-pong on each of its
/// connections, on edge-triggered readiness.
fn drive(streams: Vec<mio::net::TcpStream>, warm: Instant, until: Instant) -> io::Result<Measured> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut conns = Vec::with_capacity(streams.len());
    let mut m = Measured::default();
    for (i, mut stream) in streams.into_iter().enumerate() {
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        conns.push(Active {
            stream,
            sent: Instant::now(),
            got: 0,
            buf: [0; PAYLOAD],
            live: true,
        });
    }
    for c in &mut conns {
        if let Err(e) = send(c) {
            c.live = false;
            m.error(e);
        }
    }
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        poll.poll(&mut events, Some(POLL_SLICE.min(until - now)))?;
        for event in events.iter() {
            let c = &mut conns[event.token().0];
            if c.live {
                if let Err(e) = serve(c, warm, until, &mut m) {
                    c.live = false;
                    m.error(e);
                }
            }
        }
    }
    Ok(m)
}

/// Sends the request on a connection whose last reply is complete.
fn send(c: &mut Active) -> io::Result<()> {
    c.got = 0;
    c.sent = Instant::now();
    match c.stream.write(&REQUEST) {
        Ok(PAYLOAD) => Ok(()),
        Ok(n) => Err(io::Error::other(format!("short write of {n} bytes"))),
        Err(e) => Err(e),
    }
}

/// Reads what arrived on a connection until the kernel has no more,
/// counting each complete reply and sending the next request.
fn serve(c: &mut Active, warm: Instant, until: Instant, m: &mut Measured) -> io::Result<()> {
    loop {
        match c.stream.read(&mut c.buf[c.got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed",
                ))
            }
            Ok(n) => {
                c.got += n;
                if c.got == PAYLOAD {
                    if c.buf != REQUEST {
                        return Err(io::Error::other("reply differs from the request"));
                    }
                    let now = Instant::now();
                    if now >= warm && now < until {
                        m.round_trips += 1;
                        m.latencies.push((now - c.sent).as_nanos() as u64);
                    }
                    send(c)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
