//! TLS: the handshake off the poll thread, its failures and timeout, ALPN,
//! sendfile, STARTTLS, and many clients; against the library's own client
//! side (native-tls) and the real `openssl s_client`.
#![cfg(feature = "tls")]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use atoll::transport::{NativeTls, Transport};
use atoll::{Builder, Error, Flow, Handler, Socket};
use native_tls::{Certificate, TlsConnector, TlsStream};
use util::{builder, connect, is_closed, read_to_close, tcp_addr, PATIENCE};

/// A throw-away certificate for localhost/127.0.0.1, made once per run by
/// the openssl tool: (cert.pem, key.pem).
fn cert() -> &'static (Vec<u8>, Vec<u8>) {
    static CERT: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    CERT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("atoll-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("the openssl tool");
        assert!(status.success(), "openssl req failed");
        let pair = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        pair
    })
}

fn tls() -> NativeTls {
    let (cert, key) = cert();
    NativeTls::from_pem(cert, key).unwrap()
}

fn tls_builder() -> Builder {
    builder().transport(tls())
}

fn connector(alpn: &[&str]) -> TlsConnector {
    let mut b = TlsConnector::builder();
    b.add_root_certificate(Certificate::from_pem(&cert().0).unwrap());
    if !alpn.is_empty() {
        b.request_alpns(alpn);
    }
    b.build().unwrap()
}

/// Building a connector loads the system's roots (about 100 ms): once.
fn tls_connect(addr: SocketAddr) -> TlsStream<TcpStream> {
    static PLAIN: OnceLock<TlsConnector> = OnceLock::new();
    let connector = PLAIN.get_or_init(|| connector(&[]));
    connector
        .connect("localhost", connect(addr))
        .expect("TLS handshake")
}

/// Echoes; reports the handler's view of the connection and its errors.
struct Echo {
    events: mpsc::Sender<String>,
}

impl Handler for Echo {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        let alpn = socket
            .negotiated_protocol()
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        let _ = self
            .events
            .send(format!("ready secure={} alpn={alpn:?}", socket.is_secure()));
        Flow::Continue
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }

    fn handle_error(&mut self, error: &Error, _socket: &mut Socket) {
        let kind = if matches!(error, Error::Handshake(_)) {
            "handshake"
        } else {
            "other"
        };
        let _ = self.events.send(format!("error {kind}: {error}"));
    }
}

fn echo_server(b: Builder) -> (atoll::Server, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = b.start(move |_| Ok(Echo { events: tx.clone() })).unwrap();
    (server, rx)
}

fn tls_round_trip(stream: &mut TlsStream<TcpStream>, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn tls_echo_is_byte_exact_and_the_socket_says_secure() {
    let (server, events) = echo_server(tls_builder());
    let mut client = tls_connect(tcp_addr(&server));
    for size in [1, 100, 16 * 1024, 200_000] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        tls_round_trip(&mut client, &msg);
    }
    assert_eq!(
        events.recv_timeout(PATIENCE).unwrap(),
        "ready secure=true alpn=None"
    );
    server.stop(PATIENCE);
}

#[test]
fn alpn_chooses_the_clients_protocol_among_the_offered_and_reports_it() {
    let transport = tls().with_alpn(&["h2", "http/1.1"]).unwrap();
    let (server, events) = echo_server(builder().transport(transport));
    let addr = tcp_addr(&server);
    let mut h2 = connector(&["h2"])
        .connect("localhost", connect(addr))
        .unwrap();
    assert_eq!(h2.negotiated_alpn().unwrap().as_deref(), Some(&b"h2"[..]));
    tls_round_trip(&mut h2, b"x");
    assert_eq!(
        events.recv_timeout(PATIENCE).unwrap(),
        "ready secure=true alpn=Some(\"h2\")"
    );
    let mut none = tls_connect(addr);
    tls_round_trip(&mut none, b"x");
    assert_eq!(
        events.recv_timeout(PATIENCE).unwrap(),
        "ready secure=true alpn=None"
    );
    server.stop(PATIENCE);
}

#[test]
fn plain_http_to_the_tls_port_is_closed_with_a_handshake_error_while_tls_clients_are_served() {
    let (server, events) = echo_server(tls_builder().num_workers(1));
    let addr = tcp_addr(&server);
    let mut good = tls_connect(addr);
    assert!(events.recv_timeout(PATIENCE).unwrap().starts_with("ready"));
    let mut plain = connect(addr);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(is_closed(&mut plain), "the plain client is closed");
    let error = events.recv_timeout(PATIENCE).unwrap();
    assert!(error.starts_with("error handshake:"), "{error}");
    tls_round_trip(&mut good, b"still here");
    server.stop(PATIENCE);
}

#[test]
fn garbage_and_a_truncated_client_hello_close_only_their_connection() {
    let (server, events) = echo_server(tls_builder());
    let addr = tcp_addr(&server);
    let mut garbage = connect(addr);
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .unwrap();
    // At most a TLS alert record (type 21), then the close.
    let answer = read_to_close(&mut garbage);
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    assert!(events
        .recv_timeout(PATIENCE)
        .unwrap()
        .starts_with("error handshake:"));
    let mut truncated = connect(addr);
    truncated
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    truncated.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = read_to_close(&mut truncated);
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    assert!(events
        .recv_timeout(PATIENCE)
        .unwrap()
        .starts_with("error handshake:"));
    tls_round_trip(&mut tls_connect(addr), b"fine");
    server.stop(PATIENCE);
}

#[test]
fn a_client_that_never_handshakes_is_closed_after_the_timeout_holding_no_worker() {
    let timeout = Duration::from_millis(300);
    let (server, events) = echo_server(
        tls_builder()
            .num_workers(1)
            .handshake_timeout(Some(timeout)),
    );
    let addr = tcp_addr(&server);
    let started = Instant::now();
    let mut silent = connect(addr);
    // While it stalls, the only worker serves another client.
    let mut other = tls_connect(addr);
    tls_round_trip(&mut other, b"served meanwhile");
    assert!(is_closed(&mut silent));
    assert!(
        started.elapsed() >= timeout,
        "closed after {:?}",
        started.elapsed()
    );
    let mut seen = Vec::new();
    while let Ok(e) = events.recv_timeout(Duration::from_millis(200)) {
        seen.push(e);
    }
    assert!(
        seen.iter()
            .any(|e| e.starts_with("error handshake:") && e.contains("did not finish")),
        "{seen:?}"
    );
    assert_eq!(
        server.connection_count(),
        1,
        "the stalled connection's slot is free"
    );
    server.stop(PATIENCE);
}

#[test]
fn sendfile_over_tls_arrives_byte_exact() {
    const SIZE: usize = 3 * 1024 * 1024 + 17;
    let path = std::env::temp_dir().join(format!("atoll-tls-sendfile-{}", std::process::id()));
    let content: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    struct SendFile(PathBuf);
    impl Handler for SendFile {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let file = std::fs::File::open(&self.0).unwrap();
            match socket.sendfile(&file, 0, 0) {
                Ok(_) => Flow::Close,
                Err(e) => Flow::error(e),
            }
        }
    }
    let file = path.clone();
    let server = tls_builder()
        .start(move |_| Ok(SendFile(file.clone())))
        .unwrap();
    let mut client = tls_connect(tcp_addr(&server));
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(got.len(), SIZE);
    assert!(got == content, "content differs");
    server.stop(PATIENCE);
}

#[test]
fn two_hundred_concurrent_tls_clients_echo() {
    let (server, _events) = echo_server(tls_builder());
    let addr = tcp_addr(&server);
    let clients: Vec<_> = (0..8)
        .map(|t| {
            thread::spawn(move || {
                let mut streams: Vec<_> = (0..25).map(|_| tls_connect(addr)).collect();
                for round in 0..10u8 {
                    for (i, s) in streams.iter_mut().enumerate() {
                        tls_round_trip(s, &[t, i as u8, round, 42]);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    server.stop(PATIENCE);
}

#[test]
fn openssl_s_client_is_echoed() {
    let (server, _events) = echo_server(tls_builder());
    let addr = tcp_addr(&server);
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello over openssl\n").unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut got = vec![0u8; 19];
    let reader = thread::spawn(move || stdout.read_exact(&mut got).map(|()| got));
    let got = reader.join().unwrap();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.unwrap(), b"hello over openssl\n");
    server.stop(PATIENCE);
}

/// STARTTLS: plain until the client asks, then TLS on the same socket.
struct StartTls {
    tls: Arc<dyn Transport>,
}

impl Handler for StartTls {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        if data == b"STARTTLS\n" {
            if let Err(e) = socket.send(b"GO\n") {
                return Flow::error(e);
            }
            return match socket.upgrade(&*self.tls) {
                Ok(()) => Flow::Continue,
                Err(e) => Flow::error(e),
            };
        }
        let tag: &[u8] = if socket.is_secure() {
            b"tls:"
        } else {
            b"plain:"
        };
        let _ = socket.send(tag);
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

#[test]
fn starttls_upgrades_a_live_plain_connection() {
    let tls: Arc<dyn Transport> = Arc::new(tls());
    let server = builder()
        .start(move |_| Ok(StartTls { tls: tls.clone() }))
        .unwrap();
    let mut plain = connect(tcp_addr(&server));
    plain.write_all(b"hi").unwrap();
    let mut buf = [0u8; 8];
    plain.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"plain:hi");
    plain.write_all(b"STARTTLS\n").unwrap();
    let mut go = [0u8; 3];
    plain.read_exact(&mut go).unwrap();
    assert_eq!(&go, b"GO\n");
    let mut secure = connector(&[]).connect("localhost", plain).unwrap();
    secure.write_all(b"hi").unwrap();
    let mut buf = [0u8; 6];
    secure.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"tls:hi");
    server.stop(PATIENCE);
}

#[test]
fn a_failed_starttls_upgrade_reaches_handle_error() {
    struct Upgrade {
        tls: Arc<dyn Transport>,
        events: mpsc::Sender<String>,
    }
    impl Handler for Upgrade {
        fn handle_data(&mut self, _data: &[u8], socket: &mut Socket) -> Flow {
            let _ = socket.upgrade(&*self.tls);
            Flow::Continue // the failure is the connection's error anyway
        }
        fn handle_error(&mut self, error: &Error, _socket: &mut Socket) {
            let _ = self.events.send(format!("{error}"));
        }
    }
    let tls: Arc<dyn Transport> = Arc::new(tls());
    let (tx, rx) = mpsc::channel();
    let server = builder()
        .start(move |_| {
            Ok(Upgrade {
                tls: tls.clone(),
                events: tx.clone(),
            })
        })
        .unwrap();
    let mut plain = connect(tcp_addr(&server));
    plain.write_all(b"STARTTLS\n").unwrap();
    thread::sleep(Duration::from_millis(50));
    plain.write_all(b"this is not a client hello").unwrap();
    assert!(is_closed(&mut plain));
    let error = rx.recv_timeout(PATIENCE).unwrap();
    assert!(error.starts_with("handshake failed"), "{error}");
    server.stop(PATIENCE);
}
