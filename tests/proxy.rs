//! The PROXY protocol against the proxies people put in front of servers:
//! HAProxy (`send-proxy`, `send-proxy-v2` with its TLVs, TLS termination
//! and passthrough, health checks) and nginx's stream module, each run as
//! a child process on loopback in front of an atoll server; plus headers
//! written by hand over raw sockets for what no proxy sends on purpose:
//! garbage, too long, malformed, refused versions, trickled, late, and a
//! header followed at once by the client's data.
//!
//! What the handler saw is sent back to the client as one line of
//! tab-separated `key=value` pairs, so every assertion is about what a
//! client observes.
//!
//! A missing `haproxy` or `nginx` fails its test with the Debian package
//! to install; `ATOLL_SKIP_EXTERNAL_CLIENTS=1` skips those tests instead.

mod util;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use atoll::proxy::{tlv, ProxyHeader, ProxyProtocol, Version};
use atoll::telemetry::{Event, Kind};
use atoll::transport::Addr;
use atoll::{Builder, Connection, Error, Flow, Handler, Socket, Timeout};
use util::{builder, connect, read_to_close, round_trip, tcp_addr, wait_until, PATIENCE};

// ------------------------------------------------------------ the handler

/// Tells the client, in one line, what the server saw of its connection,
/// then echoes; reports every callback on a channel.
struct Probe {
    events: mpsc::Sender<String>,
    /// What the factory saw: `peer|proxy`.
    made: String,
}

/// `None` as `none`, anything else by its `Display`.
fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn text(bytes: Option<&[u8]>) -> String {
    show(bytes.map(|b| b.escape_ascii().to_string()))
}

/// The handler's view of the connection as `key=value` pairs.
fn describe(socket: &Socket, made: &str) -> String {
    let mut kv: Vec<(&str, String)> = vec![
        ("id", socket.id().to_string()),
        ("peer", socket.peer_addr().to_string()),
        ("proxy", show(socket.proxy_addr())),
        ("made", made.to_string()),
        ("local", socket.local_addr().to_string()),
        ("secure", socket.is_secure().to_string()),
        ("tls_alpn", text(socket.negotiated_protocol().as_deref())),
    ];
    if let Some(h) = socket.proxy_header() {
        kv.push(("version", format!("{:?}", h.version)));
        kv.push(("command", format!("{:?}", h.command)));
        kv.push(("protocol", format!("{:?}", h.protocol)));
        kv.push(("source", show(h.source.as_ref())));
        kv.push(("destination", show(h.destination.as_ref())));
        let kinds: Vec<String> = h.tlvs.iter().map(|t| format!("{:#04x}", t.kind)).collect();
        kv.push(("tlvs", kinds.join(",")));
        kv.push(("alpn", text(h.alpn())));
        kv.push(("authority", show(h.authority())));
        kv.push(("unique_id", text(h.unique_id())));
        kv.push(("crc32c", text(h.tlv(tlv::CRC32C))));
        if let Some(ssl) = h.ssl() {
            kv.push(("ssl", ssl.is_ssl().to_string()));
            kv.push(("ssl_client", format!("{:#04x}", ssl.client)));
            kv.push(("ssl_verify", ssl.verify.to_string()));
            kv.push(("ssl_cert_verified", ssl.client_cert_verified().to_string()));
            kv.push(("ssl_version", show(ssl.version)));
            kv.push(("ssl_cn", show(ssl.common_name)));
            kv.push(("ssl_cipher", show(ssl.cipher)));
            kv.push(("ssl_sig_alg", show(ssl.sig_alg)));
            kv.push(("ssl_key_alg", show(ssl.key_alg)));
        }
    }
    let pairs: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("\t")
}

impl Handler for Probe {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        let line = describe(socket, &self.made);
        let _ = self
            .events
            .send(format!("connection {} {line}", socket.id()));
        socket
            .send(format!("{line}\n").as_bytes())
            .map_or_else(Flow::error, |()| Flow::Continue)
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        let head = data.get(..64).unwrap_or(data);
        let _ = self.events.send(format!(
            "data {} {} {}",
            socket.id(),
            data.len(),
            head.escape_ascii()
        ));
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }

    fn handle_close(&mut self, socket: &mut Socket) {
        let _ = self.events.send(format!("close {}", socket.id()));
    }

    fn handle_error(&mut self, error: &Error, socket: &mut Socket) {
        let kind = match error {
            Error::ProxyHeader(_) => "proxy",
            Error::Timeout(Timeout::ProxyHeader) => "proxy-timeout",
            _ => "other",
        };
        let _ = self.events.send(format!(
            "error {} {kind} {}",
            socket.id(),
            util::chain(error)
        ));
    }
}

/// A server on loopback reading PROXY headers with `options`.
fn proxied(options: ProxyProtocol) -> Builder {
    builder().proxy_protocol(options)
}

fn probe_server(b: Builder) -> (atoll::Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = b
        .start(move |conn: &Connection| {
            let _ = tx.send(format!("made {}", conn.id()));
            Ok(Probe {
                events: tx.clone(),
                made: format!("{}|{}", conn.peer_addr(), show(conn.proxy_addr())),
            })
        })
        .unwrap();
    (server, rx)
}

/// Receives events until one starts with `prefix`; returns it and those
/// before it.
fn event_starting(events: &mpsc::Receiver<String>, prefix: &str) -> (String, Vec<String>) {
    event_where(events, prefix, |e| e.starts_with(prefix))
}

/// Receives events until one satisfies `wanted` (described by `what`);
/// returns it and those before it.
fn event_where(
    events: &mpsc::Receiver<String>,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> (String, Vec<String>) {
    let deadline = Instant::now() + PATIENCE;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) if wanted(&e) => return (e, before),
            Ok(e) => before.push(e),
            Err(_) => panic!("no event {what:?} within {PATIENCE:?}; got {before:#?}"),
        }
    }
}

/// Events that arrive within `quiet` of each other, until none does.
fn drain(events: &mpsc::Receiver<String>, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = events.recv_timeout(quiet) {
        out.push(e);
        assert!(out.len() < 10_000, "events never stop: {:?}", &out[..10]);
    }
    out
}

/// Asserts that no connection reported an error, once the events stop.
fn assert_no_errors(events: &mpsc::Receiver<String>) {
    let errors: Vec<String> = drain(events, Duration::from_millis(50))
        .into_iter()
        .filter(|e| e.starts_with("error"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

// ------------------------------------------------------------ the client

/// What the handler said it saw.
#[derive(Debug)]
struct Seen(BTreeMap<String, String>);

impl Seen {
    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("the server did not report {key:?}: {self:#?}"))
    }

    fn addr(&self, key: &str) -> SocketAddr {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not an address: {self:#?}"))
    }
}

/// Reads the handler's line, byte by byte so nothing after it is taken.
fn read_seen(stream: &mut impl Read) -> Seen {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            Ok(_) => panic!(
                "the server closed after {:?}",
                String::from_utf8_lossy(&line)
            ),
            Err(e) => panic!(
                "no line from the server ({e}) after {:?}",
                String::from_utf8_lossy(&line)
            ),
        }
        assert!(line.len() < 64 * 1024, "an endless line");
    }
    let line = String::from_utf8(line).expect("a UTF-8 line");
    Seen(
        line.split('\t')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn echo_over(stream: &mut (impl Read + Write), msg: &[u8]) {
    stream.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

/// A direct (proxy-less) client that writes `bytes` first.
fn connect_with(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(bytes).expect("write the header");
    stream
}

// ------------------------------------------------------------- telemetry

/// The `connection.start` events of a server: (connection, event's peer,
/// start's peer, start's via).
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<Start>>>);

/// One `connection.start`: (connection, event's peer, start's peer, via).
type Start = (Option<u64>, String, String, String);

impl Starts {
    fn attach(server: &atoll::Server) -> Starts {
        let starts = Starts::default();
        let log = starts.0.clone();
        server.attach_sink(move |e: &Event<'_>| {
            if let Kind::ConnectionStart { peer, via, .. } = &e.kind {
                log.lock().unwrap().push((
                    e.connection,
                    show(e.peer),
                    peer.to_string(),
                    show(*via),
                ));
            }
        });
        starts
    }

    fn of(&self, id: u64) -> Vec<(String, String, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.0 == Some(id))
            .map(|s| (s.1.clone(), s.2.clone(), s.3.clone()))
            .collect()
    }
}

/// Checks that the server's connection list and its telemetry name the
/// client `me` (behind `proxy`) for connection `id`.
fn assert_listed_and_started(
    server: &atoll::Server,
    starts: &Starts,
    id: u64,
    me: SocketAddr,
    proxy: SocketAddr,
) {
    let listed = server.connections();
    let conn = listed
        .iter()
        .find(|c| c.id() == id)
        .unwrap_or_else(|| panic!("connection {id} not listed: {listed:?}"));
    assert_eq!(conn.peer_addr(), &me, "the connection list's peer");
    assert_eq!(
        conn.proxy_addr(),
        Some(&Addr::Inet(proxy)),
        "the list's proxy"
    );
    let header = conn.proxy_header().expect("the list's header");
    assert_eq!(header.source, Some(Addr::Inet(me)));
    let (me, proxy) = (me.to_string(), proxy.to_string());
    assert_eq!(
        starts.of(id),
        [(me.clone(), me, proxy)],
        "one connection.start, naming the client and the proxy"
    );
}

// ------------------------------------------------------- /proc/net/tcp

/// A TCP socket as the kernel lists it.
struct TcpEntry {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    inode: u64,
}

/// An address as /proc/net/tcp{,6} writes it: the 32-bit words of the
/// address in host order, in hex, then the port.
fn proc_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::new();
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend(word.to_ne_bytes());
    }
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn tcp_table() -> Vec<TcpEntry> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(content) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in content.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) = (
                f.get(1).and_then(|s| proc_addr(s)),
                f.get(2).and_then(|s| proc_addr(s)),
                f.get(3).and_then(|s| u8::from_str_radix(s, 16).ok()),
                f.get(9).and_then(|s| s.parse().ok()),
            ) else {
                continue;
            };
            out.push(TcpEntry {
                local,
                remote,
                state,
                inode,
            });
        }
    }
    out
}

fn is_listening(addr: SocketAddr) -> bool {
    const LISTEN: u8 = 0x0a;
    tcp_table()
        .iter()
        .any(|e| e.local == addr && e.state == LISTEN)
}

/// `pid` and its children.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...", comm may hold anything.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// Whether the TCP connection from `local` to `remote` is a socket of
/// process `pid` or of one of its children.
fn held_by(pid: u32, local: SocketAddr, remote: SocketAddr) -> bool {
    let inodes: Vec<String> = tcp_table()
        .iter()
        .filter(|e| e.local == local && e.remote == remote)
        .map(|e| format!("socket:[{}]", e.inode))
        .collect();
    process_tree(pid).iter().any(|p| {
        std::fs::read_dir(format!("/proc/{p}/fd")).is_ok_and(|fds| {
            fds.filter_map(|fd| fd.ok())
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|link| inodes.iter().any(|i| link.as_os_str() == i.as_str()))
        })
    })
}

// ------------------------------------------------------- child processes

/// The path of an external program, or `None` when it is missing and
/// `ATOLL_SKIP_EXTERNAL_CLIENTS=1` allows skipping.
fn program(name: &str, package: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Daemons live in sbin, which a user's PATH may lack.
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Some(found);
    }
    if std::env::var("ATOLL_SKIP_EXTERNAL_CLIENTS").as_deref() == Ok("1") {
        eprintln!("skipped: `{name}` is not installed");
        return None;
    }
    panic!(
        "`{name}` is not installed: install the Debian package `{package}` \
         (apt-get install {package}), or set ATOLL_SKIP_EXTERNAL_CLIENTS=1 to skip this test"
    );
}

/// A directory of its own for one test under the target's temporary
/// directory; removed at the end unless the test failed.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("proxy-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A free loopback port (IPv4 or IPv6): bound, read and released. Another
/// process may take it before the proxy binds it; `External::start`
/// retries then.
fn free_port(v6: bool) -> SocketAddr {
    let listener = if v6 {
        TcpListener::bind("[::1]:0")
    } else {
        TcpListener::bind("127.0.0.1:0")
    };
    listener.expect("bind a free port").local_addr().unwrap()
}

fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// A proxy running in the foreground as a child process, stopped (TERM,
/// then KILL) and reaped when dropped; its stderr (and nginx's error log)
/// is printed if the test fails.
struct External {
    child: Child,
    stderr: Arc<Mutex<String>>,
    log: Option<PathBuf>,
    /// The addresses it listens on, as configured.
    listens: Vec<SocketAddr>,
    /// The configuration it runs with.
    config: String,
}

impl External {
    /// Writes the configuration `make` returns (with the addresses to
    /// wait for) into `conf`, runs `program` with `args`, and waits until
    /// it listens on all of them. A bind that fails (a port taken
    /// meanwhile) is retried with a new configuration.
    fn start(
        program: &Path,
        args: &[&str],
        conf: &Path,
        log: Option<PathBuf>,
        make: impl Fn() -> (String, Vec<SocketAddr>),
    ) -> External {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (config, listens) = make();
            std::fs::write(conf, &config).unwrap();
            let mut child = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
            let stderr = Arc::new(Mutex::new(String::new()));
            let pipe = child.stderr.take().expect("piped stderr");
            let sink = stderr.clone();
            thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            let mut external = External {
                child,
                stderr,
                log: log.clone(),
                listens: listens.clone(),
                config,
            };
            let deadline = Instant::now() + PATIENCE;
            loop {
                if listens.iter().all(|a| is_listening(*a)) {
                    return external;
                }
                if let Some(status) = external.child.try_wait().unwrap() {
                    // Let the reader catch the last words.
                    thread::sleep(Duration::from_millis(100));
                    let said = external.said();
                    let bind_failed = said.contains("bind") || said.contains("in use");
                    if bind_failed && attempt < 3 {
                        break;
                    }
                    panic!(
                        "{} exited with {status} before listening on {listens:?}:\n{said}\n\
                         configuration:\n{}",
                        program.display(),
                        external.config
                    );
                }
                if Instant::now() > deadline {
                    panic!(
                        "{} did not listen on {listens:?} within {PATIENCE:?}:\n{}",
                        program.display(),
                        external.said()
                    );
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr and log so far.
    fn said(&self) -> String {
        let mut said = self.stderr.lock().unwrap().clone();
        if let Some(log) = &self.log {
            said.push_str(&std::fs::read_to_string(log).unwrap_or_default());
        }
        said
    }

    /// HAProxy with `config_for(listen addresses)`.
    fn haproxy(
        haproxy: &Path,
        dir: &Scratch,
        v6: bool,
        config_for: impl Fn(&[SocketAddr]) -> String,
    ) -> External {
        let conf = dir.path().join("haproxy.cfg");
        let conf_arg = conf.to_str().unwrap().to_string();
        External::start(haproxy, &["-db", "-f", &conf_arg], &conf, None, || {
            let mut listens = vec![free_port(false)];
            if v6 {
                listens.push(free_port(true));
            }
            (config_for(&listens), listens)
        })
    }
}

impl Drop for External {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- proxy configuration:\n{}\n--- proxy output:\n{}",
                self.config,
                self.said()
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -TERM {}", self.child.id())])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A HAProxy configuration in TCP mode: `frontend` lines (a `bind` per
/// address with `bind_options`), then the atoll server with
/// `server_options`.
fn haproxy_config(
    binds: &[SocketAddr],
    bind_options: &str,
    frontend: &str,
    atoll: SocketAddr,
    server_options: &str,
) -> String {
    let binds: String = binds
        .iter()
        .map(|a| {
            format!("    bind {a} {bind_options}")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect();
    format!(
        "global\n\
         \x20   maxconn 256\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         \n\
         frontend clients\n\
         {binds}\
         {frontend}\
         \x20   default_backend atoll\n\
         \n\
         backend atoll\n\
         \x20   server atoll {atoll} {server_options}\n"
    )
}

// ------------------------------------------------------ HAProxy, v1 and v2

/// Clients through HAProxy with `server_options`: each gets its own
/// address as the peer, HAProxy's outgoing address as the proxy, and an
/// echo; the connection list and telemetry say the same.
fn through_haproxy(test: &str, server_options: &str, version: &str) {
    let Some(haproxy) = program("haproxy", "haproxy") else {
        return;
    };
    let dir = Scratch::new(test);
    let (server, events) = probe_server(proxied(ProxyProtocol::new()));
    let starts = Starts::attach(&server);
    let atoll = tcp_addr(&server);
    let proxy = External::haproxy(&haproxy, &dir, ipv6_loopback(), |binds| {
        haproxy_config(binds, "", "", atoll, server_options)
    });
    // Two clients at once on each listening address (IPv6 too when the
    // machine has it: the header then names an IPv6 client on an IPv4
    // connection).
    let mut clients = Vec::new();
    for front in proxy.listens.iter().flat_map(|a| [*a, *a]) {
        let mut client = connect(front);
        let seen = read_seen(&mut client);
        clients.push((client, seen));
    }
    let mut proxies = Vec::new();
    for (client, seen) in &mut clients {
        let me = client.local_addr().unwrap();
        let front = client.peer_addr().unwrap();
        assert_eq!(seen.addr("peer"), me, "the peer is the client: {seen:#?}");
        let via = seen.addr("proxy");
        assert_ne!(via, me);
        // (The check below tells sockets apart: the client's is ours.)
        assert!(!held_by(proxy.pid(), me, front));
        assert!(
            held_by(proxy.pid(), via, atoll),
            "the proxy address {via} is not HAProxy's connection to {atoll}: {seen:#?}"
        );
        assert_eq!(
            seen.get("made"),
            format!("{me}|{via}"),
            "the factory's view"
        );
        assert_eq!(seen.get("version"), version);
        assert_eq!(seen.get("command"), "Proxy");
        assert_eq!(seen.get("protocol"), "Stream");
        assert_eq!(seen.addr("source"), me);
        assert_eq!(
            seen.addr("destination"),
            front,
            "the address the client dialled"
        );
        assert_eq!(seen.addr("local"), atoll);
        echo_over(client, format!("hello from {me}").as_bytes());
        let id: u64 = seen.get("id").parse().unwrap();
        assert_listed_and_started(&server, &starts, id, me, via);
        proxies.push(via);
    }
    proxies.sort();
    proxies.dedup();
    assert_eq!(proxies.len(), clients.len(), "one HAProxy connection each");
    drop(clients);
    util::wait_no_connections(&server);
    assert_no_errors(&events);
    server.stop(PATIENCE);
}

#[test]
fn haproxy_send_proxy_v1_names_the_client() {
    through_haproxy("v1", "send-proxy", "V1");
}

#[test]
fn haproxy_send_proxy_v2_names_the_client() {
    through_haproxy("v2", "send-proxy-v2", "V2");
}

// ----------------------------------------------------- HAProxy's v2 TLVs

/// HAProxy terminates TLS (with an optional client certificate) and sends
/// every TLV it can: the handler gets the client's ALPN, SNI, the unique
/// id, the checksum and the SSL details, and the client its echo.
#[cfg(feature = "tls")]
#[test]
fn haproxy_tls_termination_sends_alpn_authority_unique_id_and_ssl_tlvs() {
    use native_tls::{Certificate, Identity, TlsConnector};

    let Some(haproxy) = program("haproxy", "haproxy") else {
        return;
    };
    let dir = Scratch::new("tlvs");
    let pki = util::tls::pki();
    let (site, person) = (&pki.server, &pki.client);
    let pem = dir.path().join("haproxy.pem");
    std::fs::write(&pem, [&site.cert[..], &site.key[..]].concat()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca).unwrap();

    let (server, _events) = probe_server(proxied(ProxyProtocol::new()));
    let atoll = tcp_addr(&server);
    let bind = format!(
        "ssl crt {} alpn h2,http/1.1 verify optional ca-file {}",
        pem.display(),
        ca_file.display()
    );
    let proxy = External::haproxy(&haproxy, &dir, false, |binds| {
        haproxy_config(
            binds,
            &bind,
            "    unique-id-format atoll-%cp\n",
            atoll,
            "send-proxy-v2 proxy-v2-options \
             authority,unique-id,crc32c,ssl,ssl-cipher,cert-cn,cert-sig,cert-key",
        )
    });
    let front = proxy.listens[0];

    let connector = |alpn: &str, identity: bool| {
        let mut b = TlsConnector::builder();
        b.add_root_certificate(Certificate::from_pem(&pki.ca).unwrap());
        b.request_alpns(&[alpn]);
        if identity {
            b.identity(Identity::from_pkcs8(&person.cert, &person.key).unwrap());
        }
        b.build().unwrap()
    };
    for (alpn, identity) in [("http/1.1", true), ("h2", false)] {
        let tcp = connect(front);
        let me = tcp.local_addr().unwrap();
        let mut tls = connector(alpn, identity)
            .connect("localhost", tcp)
            .expect("TLS with HAProxy");
        assert_eq!(
            tls.negotiated_alpn().unwrap().as_deref(),
            Some(alpn.as_bytes())
        );
        let seen = read_seen(&mut tls);
        let what = format!("client cert {identity}: {seen:#?}");
        assert_eq!(seen.addr("peer"), me, "{what}");
        assert!(held_by(proxy.pid(), seen.addr("proxy"), atoll), "{what}");
        assert_eq!(seen.get("version"), "V2", "{what}");
        assert_eq!(seen.addr("destination"), front, "{what}");
        assert_eq!(seen.get("secure"), "false", "atoll gets plain text: {what}");
        assert_eq!(seen.get("alpn"), alpn, "{what}");
        assert_eq!(seen.get("authority"), "localhost", "the SNI: {what}");
        assert_eq!(
            seen.get("unique_id"),
            format!("atoll-{}", me.port()),
            "{what}"
        );
        assert_ne!(seen.get("crc32c"), "none", "a checksum, verified: {what}");
        assert_eq!(seen.get("ssl"), "true", "{what}");
        assert!(
            ["TLSv1.2", "TLSv1.3"].contains(&seen.get("ssl_version")),
            "{what}"
        );
        let cipher = seen.get("ssl_cipher");
        assert!(cipher != "none" && !cipher.is_empty(), "{what}");
        if seen.get("ssl_version") == "TLSv1.3" {
            assert!(cipher.starts_with("TLS_"), "{what}");
        }
        // The frontend's certificate: EC P-256, signed by an EC key with SHA-256.
        assert_eq!(seen.get("ssl_sig_alg"), "ecdsa-with-SHA256", "{what}");
        assert_eq!(seen.get("ssl_key_alg"), "EC256", "{what}");
        if identity {
            assert_eq!(seen.get("ssl_cn"), "client", "{what}");
            assert_eq!(
                seen.get("ssl_client"),
                "0x07",
                "SSL | CERT_CONN | CERT_SESS: {what}"
            );
            assert_eq!(seen.get("ssl_verify"), "0", "{what}");
            assert_eq!(seen.get("ssl_cert_verified"), "true", "{what}");
        } else {
            assert_eq!(seen.get("ssl_cn"), "none", "{what}");
            assert_eq!(seen.get("ssl_client"), "0x01", "SSL only: {what}");
            assert_eq!(seen.get("ssl_cert_verified"), "false", "{what}");
        }
        echo_over(&mut tls, b"through TLS and back");
    }
    server.stop(PATIENCE);
}

// ----------------------------------------------------------- passthrough

/// HAProxy relays TCP (no TLS termination) with a v2 header; atoll reads
/// the header, then does TLS itself with the client, which trusts only the
/// test CA. A direct client writing the header and then its handshake
/// works the same.
#[cfg(feature = "tls")]
#[test]
fn tls_passthrough_reads_the_header_then_does_tls_with_the_client() {
    use atoll::transport::NativeTls;
    use native_tls::{Certificate, TlsConnector};

    let Some(haproxy) = program("haproxy", "haproxy") else {
        return;
    };
    let dir = Scratch::new("passthrough");
    let pki = util::tls::pki();
    let site = &pki.server;
    let transport = NativeTls::from_pem(&site.cert, &site.key)
        .unwrap()
        .with_alpn(&["h2", "http/1.1"])
        .unwrap();
    let (server, events) = probe_server(proxied(ProxyProtocol::new()).transport(transport));
    let atoll = tcp_addr(&server);
    let proxy = External::haproxy(&haproxy, &dir, false, |binds| {
        haproxy_config(binds, "", "", atoll, "send-proxy-v2")
    });
    let front = proxy.listens[0];
    let mut b = TlsConnector::builder();
    b.add_root_certificate(Certificate::from_pem(&pki.ca).unwrap());
    b.request_alpns(&["h2"]);
    let connector = b.build().unwrap();

    let tcp = connect(front);
    let me = tcp.local_addr().unwrap();
    let mut tls = connector
        .connect("localhost", tcp)
        .expect("TLS with atoll through HAProxy");
    let seen = read_seen(&mut tls);
    assert_eq!(seen.addr("peer"), me, "{seen:#?}");
    assert!(held_by(proxy.pid(), seen.addr("proxy"), atoll), "{seen:#?}");
    assert_eq!(seen.addr("destination"), front, "{seen:#?}");
    assert_eq!(seen.get("secure"), "true", "{seen:#?}");
    assert_eq!(seen.get("tls_alpn"), "h2", "{seen:#?}");
    assert_eq!(seen.get("tlvs"), "", "no TLVs without options: {seen:#?}");
    echo_over(&mut tls, &[7u8; 50_000]);
    drop(tls);

    // By hand: the header, then the handshake on the same stream.
    let client: SocketAddr = "192.0.2.7:51000".parse().unwrap();
    let header = ProxyHeader::tcp(client, "198.51.100.1:443".parse().unwrap());
    let tcp = connect_with(atoll, &header.encode(Version::V2).unwrap());
    let mut tls = connector
        .connect("localhost", tcp)
        .expect("TLS after a header");
    let seen = read_seen(&mut tls);
    assert_eq!(seen.addr("peer"), client, "{seen:#?}");
    assert_eq!(seen.get("secure"), "true");
    echo_over(&mut tls, b"direct");
    drop(tls);
    util::wait_no_connections(&server);
    assert_no_errors(&events);
    server.stop(PATIENCE);
}

// ------------------------------------------------------------------ LOCAL

/// HAProxy's health checks send a v2 LOCAL header (`check-send-proxy`):
/// the handler sees the connection's own peer (HAProxy), not a client.
#[test]
fn haproxy_health_checks_send_local_headers_that_keep_the_connections_own_peer() {
    let Some(haproxy) = program("haproxy", "haproxy") else {
        return;
    };
    let dir = Scratch::new("local");
    let (server, events) = probe_server(proxied(ProxyProtocol::new()));
    let atoll = tcp_addr(&server);
    let _proxy = External::haproxy(&haproxy, &dir, false, |binds| {
        haproxy_config(
            binds,
            "",
            "",
            atoll,
            "send-proxy-v2 check check-send-proxy inter 200ms",
        )
    });
    // Checks come every 200 ms; look at two.
    for _ in 0..2 {
        let (event, _) = event_starting(&events, "connection ");
        let line = event.splitn(3, ' ').nth(2).unwrap();
        let seen = Seen(
            line.split('\t')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(seen.get("version"), "V2", "{seen:#?}");
        assert_eq!(seen.get("command"), "Local", "{seen:#?}");
        assert_eq!(seen.get("source"), "none", "{seen:#?}");
        assert_eq!(
            seen.get("peer"),
            seen.get("proxy"),
            "the peer stays HAProxy: {seen:#?}"
        );
        assert!(seen.addr("peer").ip().is_loopback());
        assert_eq!(
            seen.get("made"),
            format!("{}|{}", seen.get("peer"), seen.get("proxy"))
        );
        let id = seen.get("id");
        // HAProxy ends the check at once (with a reset: the line sent
        // back may fail): the connection ends without data.
        let (end, between) = event_where(&events, "the check's end", |e| {
            e == format!("close {id}") || e.starts_with(&format!("error {id} other "))
        });
        assert!(
            between
                .iter()
                .all(|e| !e.starts_with(&format!("data {id} "))),
            "{end}: {between:?}"
        );
    }
    server.stop(PATIENCE);
}

/// A LOCAL v2 header and a v1 UNKNOWN one written by hand: the peer stays
/// the client's own address, and data after the header is echoed.
#[test]
fn local_and_unknown_headers_keep_the_connections_own_peer() {
    let (server, _events) = probe_server(proxied(ProxyProtocol::new()));
    let addr = tcp_addr(&server);
    let local = ProxyHeader::local().encode(Version::V2).unwrap();
    for (name, header, version) in [
        ("LOCAL", &local[..], "V2"),
        ("UNKNOWN", &b"PROXY UNKNOWN\r\n"[..], "V1"),
        (
            "UNKNOWN with addresses",
            &b"PROXY UNKNOWN 192.0.2.7 198.51.100.1 51000 443\r\n"[..],
            "V1",
        ),
    ] {
        let mut client = connect_with(addr, header);
        let me = client.local_addr().unwrap();
        let seen = read_seen(&mut client);
        assert_eq!(seen.addr("peer"), me, "{name}: {seen:#?}");
        assert_eq!(seen.addr("proxy"), me, "{name}: {seen:#?}");
        assert_eq!(seen.get("made"), format!("{me}|{me}"), "{name}");
        assert_eq!(seen.get("version"), version, "{name}");
        assert_eq!(seen.get("source"), "none", "{name}: {seen:#?}");
        round_trip(&mut client, b"after the header");
    }
    server.stop(PATIENCE);
}

// ------------------------------------------------------------ bad headers

/// Sends `bytes` (then, if `eof`, shuts down writing) and expects the
/// server to close without a word, `handle_error` to get a PROXY header
/// error and no data callback to run. Returns the error's text.
fn refused(addr: SocketAddr, events: &mpsc::Receiver<String>, bytes: &[u8], eof: bool) -> String {
    let what = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
    let mut client = connect_with(addr, bytes);
    if eof {
        client.shutdown(Shutdown::Write).unwrap();
    }
    let answer = read_to_close(&mut client);
    assert!(answer.is_empty(), "{what:?}: the server said {answer:?}");
    let (made, before) = event_starting(events, "made ");
    assert!(before.is_empty(), "{what:?}: {before:?}");
    let id = made.strip_prefix("made ").unwrap();
    let (error, before) = event_starting(events, &format!("error {id} "));
    assert!(
        before.is_empty(),
        "{what:?}: callbacks before the error: {before:?}"
    );
    let text = error
        .strip_prefix(&format!("error {id} proxy "))
        .unwrap_or_else(|| panic!("{what:?}: not a PROXY header error: {error}"));
    assert!(
        text.starts_with("PROXY protocol header refused: "),
        "{what:?}: {text}"
    );
    text.to_string()
}

/// A v2 header for 192.0.2.7:51000 → 198.51.100.1:443 whose byte `at` is
/// replaced by `value`.
fn v2_with(at: usize, value: u8) -> Vec<u8> {
    let header = ProxyHeader::tcp(
        "192.0.2.7:51000".parse().unwrap(),
        "198.51.100.1:443".parse().unwrap(),
    );
    let mut bytes = header.encode(Version::V2).unwrap();
    bytes[at] = value;
    bytes
}

#[test]
fn malformed_headers_close_only_their_connection_with_a_proxy_header_error() {
    // One worker: a refused header must not keep it; a long header timeout:
    // every refusal below comes from reading the bytes, not from waiting.
    let options = ProxyProtocol::new().header_timeout(Duration::from_secs(60));
    let (server, events) = probe_server(proxied(options).num_workers(1));
    let addr = tcp_addr(&server);

    let mut long_v1 = b"PROXY TCP4 ".to_vec();
    long_v1.extend([b'1'; 150]);
    let mut v1_past_107 = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443".to_vec();
    v1_past_107.resize(120, b' ');
    v1_past_107.extend(b"\r\n");
    let mut v2_huge = v2_with(14, 0xea); // length 0xea60 = 60,000
    v2_huge[15] = 0x60;
    v2_huge.truncate(28);
    let mut bad_crc = ProxyHeader::tcp(
        "192.0.2.7:51000".parse().unwrap(),
        "198.51.100.1:443".parse().unwrap(),
    )
    .with_tlv(tlv::CRC32C, [0; 4])
    .encode(Version::V2)
    .unwrap();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "HTTP",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            "not a PROXY protocol header",
        ),
        ("v1 without CRLF in 107 bytes", long_v1, "longer than 107"),
        (
            "v1 with CRLF past 107 bytes",
            v1_past_107,
            "longer than 107",
        ),
        (
            "v1 bad address",
            b"PROXY TCP4 256.0.2.7 198.51.100.1 51000 443\r\n".to_vec(),
            "source address",
        ),
        (
            "v1 IPv6 in TCP4",
            b"PROXY TCP4 ::1 ::1 51000 443\r\n".to_vec(),
            "PROXY v1",
        ),
        (
            "v1 port out of range",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n".to_vec(),
            "port",
        ),
        (
            "v1 LF without CR",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\nGET / HTTP/1.1\r\n".to_vec(),
            "PROXY v1",
        ),
        ("v2 version nibble 1", v2_with(12, 0x11), "unknown version"),
        ("v2 command 0xf", v2_with(12, 0x2f), "unknown command"),
        ("v2 family 0x5", v2_with(13, 0x51), "family"),
        (
            "v2 length short of its addresses",
            v2_with(15, 4),
            "address block",
        ),
        ("v2 announcing 60,000 bytes", v2_huge, "60016 bytes"),
        (
            "v2 signature misspelt",
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c".to_vec(),
            "not a PROXY protocol header",
        ),
        ("v2 CRC32C mismatch", bad_crc, "CRC32C"),
    ];
    for (name, bytes, says) in &cases {
        let text = refused(addr, &events, bytes, false);
        assert!(text.contains(says), "{name}: {text:?} lacks {says:?}");
        // Still serving, on its one worker.
        let client: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let header = ProxyHeader::tcp(client, addr).encode(Version::V1).unwrap();
        let mut good = connect_with(addr, &header);
        assert_eq!(read_seen(&mut good).addr("peer"), client, "after {name}");
        round_trip(&mut good, b"still serving");
        drop(good);
        let (close, _) = event_starting(&events, "close ");
        assert!(close.starts_with("close "));
    }

    // The connection ends before its header does.
    let text = refused(addr, &events, b"PROXY TCP4 192.0.2.7 19", true);
    assert!(text.contains("closed before"), "{text}");
    let text = refused(addr, &events, &v2_with(0, b'\r')[..20], true);
    assert!(text.contains("closed before"), "{text}");
    server.stop(PATIENCE);
}

#[test]
fn a_version_turned_off_is_refused_and_the_other_accepted() {
    let client: SocketAddr = "192.0.2.7:51000".parse().unwrap();
    let header = ProxyHeader::tcp(client, "198.51.100.1:443".parse().unwrap());
    for (off, on) in [(Version::V2, Version::V1), (Version::V1, Version::V2)] {
        let options = ProxyProtocol::new()
            .v1(off != Version::V1)
            .v2(off != Version::V2);
        let (server, events) = probe_server(proxied(options));
        let addr = tcp_addr(&server);
        let text = refused(addr, &events, &header.encode(off).unwrap(), false);
        assert!(text.contains("not accepted"), "{off:?}: {text}");
        let mut good = connect_with(addr, &header.encode(on).unwrap());
        let seen = read_seen(&mut good);
        assert_eq!(seen.addr("peer"), client);
        assert_eq!(seen.get("version"), format!("{on:?}"));
        server.stop(PATIENCE);
    }
}

// --------------------------------------------------- trickled and late

/// A header sent one byte every 50 ms holds no worker: with a single one,
/// another client is served meanwhile; the trickled one is served once
/// its header is whole.
#[test]
fn a_trickled_header_holds_no_worker_and_is_served_when_complete() {
    let (server, _events) = probe_server(proxied(ProxyProtocol::new()).num_workers(1));
    let addr = tcp_addr(&server);
    let slow_client: SocketAddr = "192.0.2.1:1111".parse().unwrap();
    let header = ProxyHeader::tcp(slow_client, "192.0.2.2:2222".parse().unwrap())
        .encode(Version::V1)
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut slow = connect(addr);
    let trickle = {
        let (sent, done, header) = (sent.clone(), done.clone(), header.clone());
        let mut slow = slow.try_clone().unwrap();
        thread::spawn(move || {
            for byte in header {
                slow.write_all(&[byte]).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(50));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    wait_until("a few bytes trickled", || sent.load(Ordering::SeqCst) >= 3);
    let quick_client: SocketAddr = "192.0.2.3:3333".parse().unwrap();
    let quick = ProxyHeader::tcp(quick_client, addr)
        .encode(Version::V2)
        .unwrap();
    let mut quick = connect_with(addr, &quick);
    assert_eq!(read_seen(&mut quick).addr("peer"), quick_client);
    for i in 0..10 {
        round_trip(&mut quick, format!("echo {i}").as_bytes());
    }
    assert!(
        !done.load(Ordering::SeqCst),
        "the quick client was served only after the trickle ended ({} of {} bytes)",
        sent.load(Ordering::SeqCst),
        header.len()
    );
    trickle.join().unwrap();
    let seen = read_seen(&mut slow);
    assert_eq!(seen.addr("peer"), slow_client, "{seen:#?}");
    round_trip(&mut slow, b"worth the wait");
    server.stop(PATIENCE);
}

/// Half a header, or none, then silence: closed at the header timeout,
/// with the PROXY header's timeout as the error, counted as a PROXY error.
#[test]
fn a_header_not_complete_within_the_timeout_closes_the_connection() {
    let options = ProxyProtocol::new().header_timeout(Duration::from_millis(300));
    let (server, events) = probe_server(proxied(options).num_workers(1));
    let addr = tcp_addr(&server);
    for bytes in [&b"PROXY TCP4 192.0.2.7 "[..], &v2_with(0, b'\r')[..20], b""] {
        let started = Instant::now();
        let mut client = connect_with(addr, bytes);
        let answer = read_to_close(&mut client);
        let took = started.elapsed();
        assert!(answer.is_empty(), "{answer:?}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(5),
            "closed after {took:?}"
        );
        let (error, before) = event_starting(&events, "error ");
        assert!(before.iter().all(|e| e.starts_with("made ")), "{before:?}");
        assert!(
            error.contains(" proxy-timeout PROXY header timed out"),
            "{error}"
        );
        // The server goes on.
        let client: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let header = ProxyHeader::tcp(client, addr).encode(Version::V2).unwrap();
        let mut good = connect_with(addr, &header);
        assert_eq!(read_seen(&mut good).addr("peer"), client);
        round_trip(&mut good, b"ok");
        drop(good);
        event_starting(&events, "close ");
    }
    assert_eq!(server.stats().proxy_errors, 3);
    server.stop(PATIENCE);
}

// ------------------------------------------------ the header, then data

/// The header and the first data in one write: `handle_data` gets exactly
/// the data, none of the header, however much of it there is.
#[test]
fn data_in_the_same_write_as_the_header_reaches_handle_data_exactly() {
    let (server, events) = probe_server(proxied(ProxyProtocol::new()));
    let addr = tcp_addr(&server);
    let client: SocketAddr = "[2001:db8::7]:51000".parse().unwrap();
    let plain = ProxyHeader::tcp(client, "[2001:db8::1]:443".parse().unwrap());
    let with_tlvs = plain
        .clone()
        .with_tlv(tlv::CRC32C, [0; 4])
        .with_tlv(tlv::AUTHORITY, "example.com")
        .with_tlv(tlv::UNIQUE_ID, "request-42")
        .with_tlv(tlv::NOOP, [0; 100]);
    let big: Vec<u8> = (0..300_000).map(|i| b'a' + (i % 26) as u8).collect();
    for (header, tlvs, data) in [
        (
            plain.encode(Version::V1).unwrap(),
            false,
            &b"hello world"[..],
        ),
        (
            plain.encode(Version::V2).unwrap(),
            false,
            &b"hello world"[..],
        ),
        (with_tlvs.encode(Version::V2).unwrap(), true, &b"x"[..]),
        (with_tlvs.encode(Version::V2).unwrap(), true, &big[..]),
    ] {
        let mut client_stream = connect(addr);
        client_stream
            .write_all(&[&header[..], data].concat())
            .unwrap();
        let seen = read_seen(&mut client_stream);
        assert_eq!(seen.addr("peer"), client, "{seen:#?}");
        if tlvs {
            assert_eq!(seen.get("authority"), "example.com");
            assert_eq!(seen.get("unique_id"), "request-42");
        }
        let mut back = vec![0u8; data.len()];
        client_stream.read_exact(&mut back).unwrap();
        assert!(back == data, "the echo differs from the data sent");
        let id = seen.get("id");
        let prefix = format!("data {id} ");
        let (first, _) = event_starting(&events, &prefix);
        let head = &data[..data.len().min(64)];
        let mut fields = first[prefix.len()..].splitn(2, ' ');
        let len: usize = fields.next().unwrap().parse().unwrap();
        assert_eq!(
            fields.next().unwrap(),
            head.escape_ascii().to_string(),
            "the first data is the client's, not the header's"
        );
        if data.len() < 1000 {
            assert_eq!(len, data.len(), "all of it, at once");
        }
    }
    server.stop(PATIENCE);
}

// ------------------------------------------------------------------ nginx

/// nginx's stream module with `proxy_protocol on` (a v1 header) in front
/// of atoll.
#[test]
fn nginx_stream_proxy_protocol_names_the_client() {
    let Some(nginx) = program("nginx", "nginx") else {
        return;
    };
    let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
    let built_in = Command::new(&nginx)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).contains("--with-stream "))
        .unwrap_or(false);
    if !module.is_file() && !built_in {
        if std::env::var("ATOLL_SKIP_EXTERNAL_CLIENTS").as_deref() == Ok("1") {
            eprintln!("skipped: nginx has no stream module");
            return;
        }
        panic!(
            "nginx has no stream module: install the Debian package `libnginx-mod-stream` \
             (apt-get install libnginx-mod-stream), or set ATOLL_SKIP_EXTERNAL_CLIENTS=1"
        );
    }
    let dir = Scratch::new("nginx");
    let (server, _events) = probe_server(proxied(ProxyProtocol::new().v2(false)));
    let starts = Starts::attach(&server);
    let atoll = tcp_addr(&server);
    let conf = dir.path().join("nginx.conf");
    let log = dir.path().join("error.log");
    let prefix = dir.path().to_str().unwrap().to_string();
    let conf_arg = conf.to_str().unwrap().to_string();
    let load = if module.is_file() {
        format!("load_module {};\n", module.display())
    } else {
        String::new()
    };
    let proxy = External::start(
        &nginx,
        &["-p", &prefix, "-c", &conf_arg, "-g", "daemon off;"],
        &conf,
        Some(log.clone()),
        || {
            let front = free_port(false);
            let config = format!(
                "{load}\
                 worker_processes 1;\n\
                 error_log {log} info;\n\
                 pid {prefix}/nginx.pid;\n\
                 events {{ worker_connections 64; }}\n\
                 stream {{\n\
                 \x20   server {{\n\
                 \x20       listen {front};\n\
                 \x20       proxy_pass {atoll};\n\
                 \x20       proxy_protocol on;\n\
                 \x20   }}\n\
                 }}\n",
                log = log.display(),
            );
            (config, vec![front])
        },
    );
    let front = proxy.listens[0];
    let mut client = connect(front);
    let me = client.local_addr().unwrap();
    let seen = read_seen(&mut client);
    assert_eq!(seen.addr("peer"), me, "{seen:#?}");
    let via = seen.addr("proxy");
    assert!(
        held_by(proxy.pid(), via, atoll),
        "the proxy address {via} is not nginx's connection to {atoll}: {seen:#?}"
    );
    assert_eq!(seen.get("version"), "V1");
    assert_eq!(seen.addr("destination"), front);
    echo_over(&mut client, b"through nginx");
    let id: u64 = seen.get("id").parse().unwrap();
    assert_listed_and_started(&server, &starts, id, me, via);
    server.stop(PATIENCE);
}

// ------------------------------------------------- the standalone Listener

/// `Listener::proxy_protocol`: a header sent a byte at a time is read
/// whole, the data after it is the socket's, and garbage fails the accept
/// with `Error::ProxyHeader`, a late header with `Timeout::ProxyHeader`.
#[test]
fn the_standalone_listener_reads_headers_too() {
    use atoll::transport::{AcceptError, ListenOptions, Listener, Tcp};
    let options = ListenOptions::new().ip([127, 0, 0, 1].into()).port(0);
    let listener = Listener::bind(Tcp, &options)
        .unwrap()
        .proxy_protocol(ProxyProtocol::new().header_timeout(Duration::from_millis(500)));
    let addr = listener.local_addr().unwrap().inet().unwrap();
    let source: SocketAddr = "192.0.2.7:5000".parse().unwrap();
    let destination: SocketAddr = "192.0.2.1:80".parse().unwrap();

    // Trickled: one byte every 10 ms, then data.
    let trickler = thread::spawn(move || {
        let mut proxy = TcpStream::connect(addr).unwrap();
        let header = ProxyHeader::tcp(source, destination)
            .encode(Version::V2)
            .unwrap();
        for byte in header {
            proxy.write_all(&[byte]).unwrap();
            thread::sleep(Duration::from_millis(10));
        }
        proxy.write_all(b"data").unwrap();
        let local = proxy.local_addr().unwrap();
        let mut reply = [0u8; 2];
        proxy.read_exact(&mut reply).unwrap();
        (local, reply)
    });
    let mut socket = listener.accept(Some(PATIENCE)).unwrap();
    assert_eq!(socket.peer_addr(), &Addr::Inet(source));
    assert_eq!(socket.recv(4).unwrap(), b"data");
    socket.send(b"ok").unwrap();
    let (local, reply) = trickler.join().unwrap();
    assert_eq!(socket.proxy_addr(), Some(&Addr::Inet(local)));
    assert_eq!(&reply, b"ok");

    // Garbage, and half a header that never ends.
    for (what, bytes, timeout) in [
        ("garbage", &b"GET / HTTP/1.1\r\n\r\n"[..], false),
        ("half a header", &b"PROXY TCP4 192.0.2.7"[..], true),
    ] {
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(bytes).unwrap();
        let started = Instant::now();
        match listener.accept(Some(PATIENCE)) {
            Err(AcceptError::Handshake(Error::ProxyHeader(e))) if !timeout => {
                println!("{what}: {e} after {:?}", started.elapsed());
                assert!(started.elapsed() < PATIENCE, "{what}");
            }
            Err(AcceptError::Handshake(Error::Timeout(Timeout::ProxyHeader))) if timeout => {
                println!("{what}: timed out after {:?}", started.elapsed());
                assert!(started.elapsed() < PATIENCE, "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// `ProxyProtocol::trusted`: a valid header from a proxy the predicate
/// refuses closes the connection unread, with the reason in `handle_error`;
/// the same header from a trusted address is served.
#[test]
fn headers_from_an_untrusted_address_are_refused() {
    struct Note(mpsc::Sender<String>);
    impl Handler for Note {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let _ = self.0.send(format!("served {}", socket.peer_addr()));
            Flow::Close
        }
        fn handle_error(&mut self, error: &Error, _socket: &mut Socket) {
            let _ = self.0.send(format!("error {}", util::chain(error)));
        }
    }
    let (tx, notes) = mpsc::channel();
    let trusted = ProxyProtocol::new()
        .trusted(|proxy| proxy.ip() == Some(std::net::IpAddr::from([127, 0, 0, 2])));
    let server = builder()
        .ip([0, 0, 0, 0].into())
        .proxy_protocol(trusted)
        .start(move |_| Ok(Note(tx.clone())))
        .unwrap();
    let port = server.local_addr().unwrap().port().unwrap();
    let header = ProxyHeader::tcp(
        "192.0.2.7:5000".parse().unwrap(),
        "192.0.2.1:80".parse().unwrap(),
    )
    .encode(Version::V2)
    .unwrap();
    let from = |ip: [u8; 4]| {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
        sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        let mut stream = TcpStream::from(sock);
        stream.write_all(&header).unwrap();
        stream
    };
    let mut untrusted = from([127, 0, 0, 1]);
    let note = notes.recv_timeout(PATIENCE).unwrap();
    assert!(
        note.starts_with("error PROXY protocol header refused: 127.0.0.1:")
            && note.ends_with("is not a trusted proxy"),
        "{note}"
    );
    assert!(read_to_close(&mut untrusted).is_empty());
    assert_eq!(server.stats().proxy_errors, 1);
    let _trusted = from([127, 0, 0, 2]);
    assert_eq!(
        notes.recv_timeout(PATIENCE).unwrap(),
        "served 192.0.2.7:5000"
    );
}
