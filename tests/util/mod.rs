//! Helpers shared by the integration tests: servers on loopback port 0,
//! clients with timeouts, process counters read from /proc, the test
//! certificates and TLS clients ([`tls`]), and the examples as child
//! processes ([`examples`]).
#![allow(dead_code)]

pub mod examples;
pub mod tls;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use atoll::{Builder, Flow, Handler, Server, Socket};

/// Generous bound for anything a test waits on; never a performance claim.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// An error and its causes as `anyhow`'s `{:#}` shows them:
/// `error: cause: cause`, walking `source()`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// A builder bound to 127.0.0.1 on a free port, with the given workers.
pub fn builder() -> Builder {
    atoll::Server::builder()
        .ip([127, 0, 0, 1].into())
        .port(0)
        .num_workers(4)
}

/// Sends back every byte it receives.
pub struct Echo;

impl Handler for Echo {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

/// An [`Echo`] server from `b`.
pub fn echo_server(b: Builder) -> Server {
    b.start(|_| Ok(Echo)).expect("start")
}

/// A client connected to `addr` with read and write timeouts of `PATIENCE`,
/// or the error of the attempt.
pub fn dial(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A client connected to `addr` with read and write timeouts of `PATIENCE`.
pub fn connect(addr: SocketAddr) -> TcpStream {
    dial(addr).expect("connect")
}

/// Reads exactly `n` bytes or panics.
pub fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Sends `msg` and expects it back.
pub fn round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).expect("write");
    assert_eq!(read_n(stream, msg.len()), msg);
}

/// One short connection through the crate's own blocking client
/// ([`atoll::client`]): connect to `addr` (IPv4 or IPv6 only, as `addr`
/// is), send `msg`, expect it echoed whole, close.
pub fn client_round_trip(addr: SocketAddr, msg: &[u8]) {
    use atoll::client::{IpVersionPreference, Options};
    let family = if addr.is_ipv4() {
        IpVersionPreference::Ipv4Only
    } else {
        IpVersionPreference::Ipv6Only
    };
    let mut conn = Options::new(addr.ip().to_string(), addr.port())
        .ip_version_preference(family)
        .connect_timeout(Some(PATIENCE))
        .connect()
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.send(msg)
        .unwrap_or_else(|e| panic!("send to {addr}: {e}"));
    let echoed = conn
        .recv_exact(msg.len(), Some(PATIENCE))
        .unwrap_or_else(|e| panic!("echo from {addr}: {e}"));
    assert_eq!(echoed, msg, "the echo from {addr}");
}

/// Reads until the server closes; returns what came before the close.
/// Panics if the server does not close within `PATIENCE`.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Err(e) => panic!("expected a close, got {e} after {} bytes", out.len()),
    }
}

/// Whether the peer closed the connection: a read returns 0 or a reset.
pub fn is_closed(stream: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match stream.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Polls `cond` every few milliseconds until it holds or `PATIENCE` passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What `/proc/self/status` says the resident set is, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// splitmix64 of two numbers.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut x = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(0x94D0_49BB_1331_11EB);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `len` pseudo-random bytes from xorshift64 started at `seed`, each the
/// state's bits from `shift` up: a table that payloads are cut from, so
/// that any slice of it is checkable.
pub fn xorshift_bytes(len: usize, seed: u64, shift: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> shift) as u8
        })
        .collect()
}

/// Threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of this process whose name starts with `prefix` (names as the
/// kernel keeps them: at most 15 bytes).
pub fn threads_named(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

/// Threads of this process once the count has held still for 200 ms, for a
/// baseline that a test thread of the harness starting or ending does not
/// skew.
pub fn settled_thread_count() -> usize {
    let deadline = Instant::now() + PATIENCE;
    let mut last = thread_count();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(200) {
        assert!(Instant::now() < deadline, "the thread count never settled");
        std::thread::sleep(Duration::from_millis(5));
        let now = thread_count();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// An ordered, shared record of what handlers did (one string per event),
/// for asserting which callbacks ran and in what order.
#[derive(Clone, Debug, Default)]
pub struct CallLog(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl CallLog {
    pub fn new() -> CallLog {
        CallLog::default()
    }

    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn contains(&self, entry: &str) -> bool {
        self.0.lock().unwrap().iter().any(|e| e == entry)
    }

    /// Waits until `entry` has been recorded (panics after `PATIENCE`).
    pub fn wait_for(&self, entry: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.contains(entry) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for log entry {entry:?}; log: {:?}",
                self.entries()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Waits until the server has no live connection: every callback of the
/// connections that ended has returned and their slots are free.
pub fn wait_no_connections<M: Send + 'static>(server: &atoll::Server<M>) {
    wait_until("no live connections", || server.connection_count() == 0);
}

/// The TCP address a server listens on.
pub fn tcp_addr<M: Send + 'static>(server: &atoll::Server<M>) -> std::net::SocketAddr {
    let addr = server.local_addr().expect("listening");
    addr.inet().expect("a TCP listener")
}

/// A certificate issued by a [`TestCa`]: the PEM certificate, its PEM
/// private key (PKCS#8) and the certificate in DER.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub der: Vec<u8>,
}

/// A throw-away certificate authority made by the `openssl` tool at test
/// time (EC P-256, two days), working in `dir`, which the caller creates
/// and removes once it has the certificates in memory. Never a key used
/// anywhere else.
#[derive(Debug)]
pub struct TestCa {
    dir: std::path::PathBuf,
    name: String,
    /// The CA certificate in PEM, the root to trust.
    pub cert: Vec<u8>,
}

/// Runs `openssl` in `dir` with the whitespace-separated `args`; panics if
/// it fails.
pub fn openssl(dir: &std::path::Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = std::process::Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .output()
        .expect("the openssl tool");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl` arguments for a fresh EC P-256 key without a passphrase.
const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

impl TestCa {
    /// A new self-signed CA whose files in `dir` start with `name` (no
    /// whitespace).
    pub fn new(dir: &std::path::Path, name: &str) -> TestCa {
        openssl(
            dir,
            &format!(
                "req -x509 {NEW_KEY} -days 2 -subj /CN=atoll-test-{name} \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign \
                 -keyout {name}.key -out {name}.pem"
            ),
        );
        TestCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            cert: std::fs::read(dir.join(format!("{name}.pem"))).unwrap(),
        }
    }

    /// A leaf certificate for `cn` (no whitespace), signed by this CA, with
    /// the given subjectAltName (`"DNS:localhost,IP:127.0.0.1"`, or `None`)
    /// and extended key usage (`"serverAuth"`, `"clientAuth"`).
    pub fn issue(&self, cn: &str, san: Option<&str>, usage: &str) -> Issued {
        let (ca, base) = (&self.name, format!("{}-{cn}", self.name));
        let mut extensions = format!("basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n");
        if let Some(san) = san {
            extensions.push_str(&format!("subjectAltName={san}\n"));
        }
        std::fs::write(self.dir.join(format!("{base}.ext")), extensions).unwrap();
        openssl(
            &self.dir,
            &format!("req -new {NEW_KEY} -subj /CN={cn} -keyout {base}.key -out {base}.csr"),
        );
        openssl(
            &self.dir,
            &format!(
                "x509 -req -in {base}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
                 -days 2 -extfile {base}.ext -out {base}.pem"
            ),
        );
        openssl(
            &self.dir,
            &format!("x509 -in {base}.pem -outform DER -out {base}.der"),
        );
        let read = |ext: &str| std::fs::read(self.dir.join(format!("{base}.{ext}"))).unwrap();
        Issued {
            cert: read("pem"),
            key: read("key"),
            der: read("der"),
        }
    }
}
