//! The echo load generator of `bench/run.sh`: closed-loop ping-pong over
//! many connections, as a process of its own.
//!
//! ```text
//! cargo run --release --example pingpong -- --addr 127.0.0.1:4000 --conns 100 --secs 3
//! ```
//!
//! Every connection sends `--size` bytes, waits for all of them to come
//! back, and sends again; `--threads` threads share the connections, each
//! driving its share with one mio poll. `--tls` speaks TLS (native-tls,
//! any certificate accepted: loopback benchmarks only); `--udp` uses
//! connected UDP sockets instead, each resending a datagram whose echo has
//! not come within 100 ms. Every connection first has one answer (a
//! server still accepting its clients is not measured; 30 s at most);
//! then the threads start, and after `--warmup-ms` they count round
//! trips for `--secs` seconds and print one line:
//!
//! ```text
//! round_trips=663912 secs=3.000 rate=221304 p50_us=431.1 p99_us=1190.4 errors=0 fewest=6512
//! ```
//!
//! A message still unanswered when the window closes counts in the
//! latencies with its wait so far (a server that leaves some connections
//! waiting cannot hide them by answering the others quickly), and
//! `fewest` is the fewest round trips any one connection completed in the
//! window.
//!
//! Not an atoll example: it is the benchmark's client.

mod common;

#[path = "../benches/common/histogram.rs"]
mod histogram;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use histogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// How long a UDP datagram waits for its echo before it is sent again.
const RESEND_AFTER: Duration = Duration::from_millis(100);
/// How long the connections may take to get their first answers before
/// the load starts anyway.
const FIRST_ANSWERS_WITHIN: Duration = Duration::from_secs(30);

const HELP: &str = "\
pingpong: closed-loop echo load (the benchmark's client)

Options (defaults in brackets):
  --addr ADDR       the echo server [127.0.0.1:4000]
  --conns N         connections [100]
  --threads N       client threads [2]
  --size N          bytes per message [64]
  --secs S          measured seconds [3]
  --warmup-ms MS    load before measuring [500]
  --hold-ms MS      keep the connections open this long after printing [0]
  --tls             TLS connections (any server certificate accepted)
  --udp             UDP sockets instead of TCP connections
  --help            this text";

fn main() -> ExitCode {
    common::run_main("pingpong", run)
}

struct Settings {
    size: usize,
    from: Instant,
    until: Instant,
}

/// How a client socket carries bytes.
enum Wire {
    Tcp(TcpStream),
    Tls(Box<native_tls::TlsStream<TcpStream>>),
    Udp(UdpSocket),
}

impl Wire {
    fn fd(&self) -> RawFd {
        match self {
            Wire::Tcp(s) => s.as_raw_fd(),
            Wire::Tls(s) => s.get_ref().as_raw_fd(),
            Wire::Udp(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Tcp(s) => s.read(buf),
            Wire::Tls(s) => s.read(buf),
            Wire::Udp(s) => s.recv(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Tcp(s) => s.write(buf),
            Wire::Tls(s) => s.write(buf),
            Wire::Udp(s) => s.send(buf),
        }
    }
}

/// Opens connection `i` to `addr` over the chosen wire, non-blocking.
fn open(
    i: usize,
    addr: SocketAddr,
    tls: Option<&native_tls::TlsConnector>,
    udp: bool,
) -> common::Result<Wire> {
    if udp {
        let socket = UdpSocket::bind(if addr.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        })?;
        socket.connect(addr)?;
        socket.set_nonblocking(true)?;
        return Ok(Wire::Udp(socket));
    }
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connection {i} to {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    let Some(connector) = tls else {
        stream.set_nonblocking(true)?;
        return Ok(Wire::Tcp(stream));
    };
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let tls = connector
        .connect("localhost", stream)
        .map_err(|e| format!("TLS handshake of connection {i}: {e}"))?;
    tls.get_ref().set_nonblocking(true)?;
    Ok(Wire::Tls(Box::new(tls)))
}

fn run() -> common::Result {
    let mut addr: SocketAddr = "127.0.0.1:4000".parse()?;
    let (mut conns, mut threads, mut size) = (100usize, 2usize, 64usize);
    let (mut secs, mut warmup) = (3.0f64, Duration::from_millis(500));
    let mut hold = Duration::ZERO;
    let (mut tls, mut udp) = (false, false);
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--addr" => addr = args.parse()?,
            "--conns" => conns = args.num()?.try_into()?,
            "--threads" => threads = args.num()?.try_into()?,
            "--size" => size = args.num()?.try_into()?,
            "--secs" => secs = args.parse()?,
            "--warmup-ms" => warmup = args.ms()?,
            "--hold-ms" => hold = args.ms()?,
            "--tls" => tls = args.switch()?,
            "--udp" => udp = args.switch()?,
            _ => return Err(args.unknown()),
        }
    }
    if conns == 0 || threads == 0 || size == 0 || !(secs > 0.0 && secs <= 3600.0) {
        return Err("--conns, --threads and --size must be positive, --secs in (0, 3600]".into());
    }
    // Connect before the clock starts: accepting is not what is measured.
    let connector = match tls {
        true => Some(
            native_tls::TlsConnector::builder()
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true)
                .build()?,
        ),
        false => None,
    };
    let mut opened = Vec::with_capacity(conns);
    for i in 0..conns {
        opened.push(Conn::new(open(i, addr, connector.as_ref(), udp)?));
    }
    let mut errors = answer_once(&mut opened, size)?;
    let mut shares: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, conn) in opened.into_iter().enumerate() {
        shares[i % threads].push(conn);
    }
    let from = Instant::now() + warmup;
    let until = from + Duration::from_secs_f64(secs);
    let handles: Vec<_> = shares
        .into_iter()
        .map(|streams| {
            let settings = Settings { size, from, until };
            thread::spawn(move || drive(streams, &settings))
        })
        .collect();
    let (mut total, mut hist) = (0u64, Histogram::new());
    let mut streams = Vec::new();
    for handle in handles {
        let (n, e, h, s) = handle.join().map_err(|_| "a client thread panicked")??;
        streams.push(s);
        total += n;
        errors += e;
        hist.merge(&h);
    }
    let fewest = streams
        .iter()
        .flatten()
        .filter(|c| c.alive)
        .map(|c| c.trips)
        .min()
        .unwrap_or(0);
    println!(
        "round_trips={total} secs={secs:.3} rate={:.0} p50_us={:.1} p99_us={:.1} errors={errors} fewest={fewest}",
        total as f64 / secs,
        hist.quantile_us(0.50),
        hist.quantile_us(0.99),
    );
    // Let whoever reads the line sample the server while every connection
    // is still open (a thread-per-connection server's threads end with
    // them).
    std::io::Write::flush(&mut std::io::stdout())?;
    thread::sleep(hold);
    Ok(())
}

struct Conn {
    wire: Wire,
    sent_at: Instant,
    /// Bytes of the current message still to come back.
    due: usize,
    alive: bool,
    /// Round trips completed inside the measured window.
    trips: u64,
}

impl Conn {
    fn new(wire: Wire) -> Conn {
        Conn {
            wire,
            sent_at: Instant::now(),
            due: 0,
            alive: true,
            trips: 0,
        }
    }
}

/// Has every connection answer one message before the load starts: a
/// server still accepting clients (a thread per connection accepts slowly
/// beside a thousand busy threads) would otherwise be measured on some of
/// them only. Gives up after `FIRST_ANSWERS_WITHIN`; returns the
/// connections that failed.
fn answer_once(conns: &mut [Conn], size: usize) -> io::Result<u64> {
    let message = vec![b'x'; size];
    let mut errors = 0;
    let until = Instant::now() + FIRST_ANSWERS_WITHIN;
    exchange(conns, &message, until, &mut errors, |_, _| false)?;
    Ok(errors)
}

/// Drives one thread's connections until `until`; returns the round trips
/// completed inside the measured window, the connections that failed,
/// their latencies, and the connections (still open).
fn drive(mut conns: Vec<Conn>, s: &Settings) -> io::Result<(u64, u64, Histogram, Vec<Conn>)> {
    let message = vec![b'x'; s.size];
    let (mut done, mut errors, mut hist) = (0u64, 0u64, Histogram::new());
    exchange(&mut conns, &message, s.until, &mut errors, |conn, at| {
        if at >= s.from && at < s.until {
            done += 1;
            conn.trips += 1;
            hist.record(at - conn.sent_at);
        }
        true
    })?;
    // Unanswered at the end: counted with the wait so far.
    for conn in conns.iter().filter(|c| c.alive && c.due > 0) {
        hist.record(s.until.saturating_duration_since(conn.sent_at));
    }
    Ok((done, errors, hist, conns))
}

/// Sends `message` on every live connection and reads the echoes until
/// `until`, or until no message is out: `answered` hears of each echo come
/// back whole (and when) and says whether to send the next message on that
/// connection. UDP datagrams whose echo is late are sent again.
fn exchange(
    conns: &mut [Conn],
    message: &[u8],
    until: Instant,
    errors: &mut u64,
    mut answered: impl FnMut(&mut Conn, Instant) -> bool,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    for (i, conn) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(&mut SourceFd(&conn.wire.fd()), Token(i), Interest::READABLE)?;
        if conn.alive {
            send(conn, message, errors);
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    // Set once a connection is left without a message out (answered for
    // good, or failed): from then on, look whether any still has one.
    let mut some_idle = conns.iter().any(|c| !c.alive);
    loop {
        let now = Instant::now();
        if now >= until || (some_idle && conns.iter().all(|c| !c.alive || c.due == 0)) {
            return Ok(());
        }
        let wait = (until - now).min(RESEND_AFTER);
        poll.poll(&mut events, Some(wait))?;
        for event in events.iter() {
            let Some(conn) = conns.get_mut(event.token().0) else {
                continue;
            };
            while conn.alive && conn.due > 0 {
                match conn.wire.read(&mut buf) {
                    // A datagram's echo comes whole; a late one, of a
                    // datagram already sent again, is not told apart.
                    Ok(n) if matches!(conn.wire, Wire::Udp(_)) && n != message.len() => {}
                    Ok(n) if n > 0 => {
                        conn.due = conn.due.saturating_sub(n);
                        if conn.due == 0 {
                            if answered(conn, Instant::now()) {
                                send(conn, message, errors);
                            } else {
                                some_idle = true;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(_) | Err(_) => {
                        fail(conn, errors);
                        some_idle = true;
                    }
                }
            }
        }
        // UDP may drop a datagram: send again what waited too long.
        let now = Instant::now();
        for conn in conns.iter_mut() {
            if conn.alive
                && conn.due > 0
                && matches!(conn.wire, Wire::Udp(_))
                && now - conn.sent_at >= RESEND_AFTER
            {
                send(conn, message, errors);
            }
        }
    }
}

/// Sends one message; 64 KiB at most fit an empty send buffer, so a write
/// that does not take it all is a failure here.
fn send(conn: &mut Conn, message: &[u8], errors: &mut u64) {
    conn.sent_at = Instant::now();
    conn.due = message.len();
    match conn.wire.write(message) {
        Ok(n) if n == message.len() => {}
        _ => fail(conn, errors),
    }
}

fn fail(conn: &mut Conn, errors: &mut u64) {
    if conn.alive {
        conn.alive = false;
        *errors += 1;
    }
}
