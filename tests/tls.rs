//! TLS, one suite for every backend compiled in: NativeTls (feature `tls`)
//! in module `native`, Rustls (feature `rustls`) in module `rustls`. The
//! suite: echo, ALPN, bad and stalled handshakes, sendfile, many clients,
//! `openssl s_client`, STARTTLS. Then what only the rustls backend offers
//! or promises: mutual TLS, SNI, protocol versions, close_notify either
//! way, a handshake the client does not read, its configuration errors.
//!
//! The client side is native-tls (OpenSSL) and the `openssl` tool, so
//! every rustls test is also an interoperability test. Clients that ask for
//! ALPN need native-tls's `alpn` feature, which only the crate's `tls`
//! feature turns on: the ALPN tests run when `tls` is on.
#![cfg(any(feature = "tls", feature = "rustls"))]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use atoll::transport::Transport;
use atoll::{Builder, Error, Flow, Handler, Socket};
use native_tls::TlsStream;
#[cfg(feature = "tls")]
use util::tls::NativeTlsBackend;
#[cfg(feature = "rustls")]
use util::tls::RustlsBackend;
use util::tls::{plain_connector, Backend};
use util::{builder, connect, is_closed, read_to_close, tcp_addr, PATIENCE};

// -------------------------------------------------------------- backends

/// The backend's server side with the test server certificate.
fn tls<B: Backend>() -> B::Tls {
    B::server()
}

fn tls_builder<B: Backend>() -> Builder {
    builder().transport(tls::<B>())
}

// --------------------------------------------------------------- clients

/// A client asking for these ALPN protocols.
#[cfg(feature = "tls")]
fn alpn_connector(alpn: &[&str]) -> native_tls::TlsConnector {
    let mut b = util::tls::connector_builder(None, None);
    b.request_alpns(alpn);
    b.build().unwrap()
}

fn tls_connect(addr: SocketAddr) -> TlsStream<TcpStream> {
    plain_connector()
        .connect("localhost", connect(addr))
        .expect("TLS handshake")
}

fn tls_round_trip(stream: &mut TlsStream<TcpStream>, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// Asserts that the server closed `stream`, whose client sent no TLS, with
/// nothing before the close but, from a backend that alerts plain text, a
/// TLS alert record (type 21).
fn assert_plain_text_closed<B: Backend>(stream: &mut TcpStream) {
    let answer = read_to_close(stream);
    assert!(
        answer.is_empty() || (B::ALERTS_PLAIN_TEXT && answer[0] == 21),
        "{answer:?}"
    );
}

/// Runs `openssl s_client ARGS -connect ADDR` and returns its stdout.
/// With `echo` `(input, n)`: writes `input` and reads until `n` bytes came
/// back (the echo), keeping stdin open meanwhile, as closing it ends
/// s_client. Without: closes stdin at once and reads to the end.
fn s_client(addr: SocketAddr, args: &[&str], echo: Option<(&[u8], usize)>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .args(args)
        .arg("-connect")
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = child.stdin.take();
    let expect = match echo {
        Some((input, n)) => {
            stdin.as_mut().unwrap().write_all(input).unwrap();
            n
        }
        None => {
            stdin = None;
            usize::MAX
        }
    };
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < expect {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    });
    // A stuck s_client is killed after PATIENCE, which ends the reader.
    let deadline = Instant::now() + PATIENCE;
    while !reader.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap()
}

// -------------------------------------------------------------- handlers

/// What the handler saw.
#[derive(Debug)]
enum Event {
    Ready {
        secure: bool,
        alpn: Option<Vec<u8>>,
        cert: Option<Vec<u8>>,
    },
    Closed,
    HandshakeError(String),
    // Read by the rustls tests' `closed`.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    OtherError(String),
}

/// Echoes; reports the handler's view of the connection and its end.
struct Echo {
    events: mpsc::Sender<Event>,
}

impl Handler for Echo {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        let _ = self.events.send(Event::Ready {
            secure: socket.is_secure(),
            alpn: socket.negotiated_protocol(),
            cert: socket.peer_certificate(),
        });
        Flow::Continue
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        if data == b"BYE\n" {
            // A TLS close from the server: close_notify, then FIN.
            return match socket.shutdown(atoll::Shutdown::Write) {
                Ok(()) => Flow::Continue,
                Err(e) => Flow::error(e),
            };
        }
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }

    fn handle_close(&mut self, _socket: &mut Socket) {
        let _ = self.events.send(Event::Closed);
    }

    fn handle_error(&mut self, error: &Error, _socket: &mut Socket) {
        let _ = self.events.send(match error {
            Error::Handshake(_) | Error::Timeout(atoll::Timeout::Handshake) => {
                Event::HandshakeError(util::chain(error))
            }
            _ => Event::OtherError(util::chain(error)),
        });
    }
}

fn echo_server(b: Builder) -> (atoll::Server, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let server = b.start(move |_| Ok(Echo { events: tx.clone() })).unwrap();
    (server, rx)
}

fn next(events: &mpsc::Receiver<Event>) -> Event {
    events.recv_timeout(PATIENCE).expect("a handler event")
}

/// The next event, which must be `Ready`: (alpn, peer certificate).
fn ready(events: &mpsc::Receiver<Event>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    match next(events) {
        Event::Ready { secure, alpn, cert } => {
            assert!(secure, "the socket says secure");
            (alpn, cert)
        }
        other => panic!("expected Ready, got {other:?}"),
    }
}

/// The next event, which must be a handshake error; returns its text.
fn handshake_error(events: &mpsc::Receiver<Event>) -> String {
    match next(events) {
        Event::HandshakeError(e) => e,
        other => panic!("expected a handshake error, got {other:?}"),
    }
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

fn starttls_server(tls: impl Transport) -> atoll::Server {
    let tls: Arc<dyn Transport> = Arc::new(tls);
    builder()
        .start(move |_| Ok(StartTls { tls: tls.clone() }))
        .unwrap()
}

// ----------------------------------------------------------------- suite

/// Instantiates the suite below for backend `$backend`: one `#[test]` per
/// generic test. A generic test missing from this list is never
/// instantiated, which the compiler reports as unused.
macro_rules! suite {
    ($backend:ty) => {
        suite!(@tests $backend;
            tls_echo_is_byte_exact_and_the_socket_says_secure,
            #[cfg(feature = "tls")]
            alpn_chooses_the_clients_protocol_among_the_offered_and_reports_it,
            plain_http_to_the_tls_port_is_closed_with_a_handshake_error_while_tls_clients_are_served,
            garbage_and_a_truncated_client_hello_close_only_their_connection,
            a_client_that_never_handshakes_is_closed_after_the_timeout_holding_no_worker,
            sendfile_over_tls_arrives_byte_exact,
            two_hundred_concurrent_tls_clients_echo,
            openssl_s_client_is_echoed,
            starttls_upgrades_a_live_plain_connection,
            a_failed_starttls_upgrade_reaches_handle_error,
            the_socket_reports_the_tls_information_its_backend_exposes,
        );
    };
    (@tests $backend:ty; $($(#[$attr:meta])* $name:ident,)*) => {
        $(
            #[test]
            $(#[$attr])*
            fn $name() {
                super::$name::<$backend>();
            }
        )*
    };
}

#[cfg(feature = "tls")]
mod native {
    suite!(super::NativeTlsBackend);
}

fn tls_echo_is_byte_exact_and_the_socket_says_secure<B: Backend>() {
    let (server, events) = echo_server(tls_builder::<B>());
    let mut client = tls_connect(tcp_addr(&server));
    for size in [1, 100, 16 * 1024, 200_000] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        tls_round_trip(&mut client, &msg);
    }
    assert_eq!(ready(&events), (None, None));
    server.stop(PATIENCE);
}

#[cfg(feature = "tls")]
fn alpn_chooses_the_clients_protocol_among_the_offered_and_reports_it<B: Backend>() {
    let transport = B::with_alpn(tls::<B>(), &["h2", "http/1.1"]);
    let (server, events) = echo_server(builder().transport(transport));
    let addr = tcp_addr(&server);
    let mut h2 = alpn_connector(&["h2"])
        .connect("localhost", connect(addr))
        .unwrap();
    assert_eq!(h2.negotiated_alpn().unwrap().as_deref(), Some(&b"h2"[..]));
    tls_round_trip(&mut h2, b"x");
    assert_eq!(ready(&events).0.as_deref(), Some(&b"h2"[..]));
    // A client that offers no ALPN: served, nothing negotiated.
    let mut none = tls_connect(addr);
    tls_round_trip(&mut none, b"x");
    assert_eq!(ready(&events).0, None);
    server.stop(PATIENCE);
}

fn plain_http_to_the_tls_port_is_closed_with_a_handshake_error_while_tls_clients_are_served<
    B: Backend,
>() {
    let (server, events) = echo_server(tls_builder::<B>().num_workers(1));
    let addr = tcp_addr(&server);
    let mut good = tls_connect(addr);
    ready(&events);
    let mut plain = connect(addr);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_plain_text_closed::<B>(&mut plain);
    let error = handshake_error(&events);
    if let Some(words) = B::SAYS_NOT_TLS {
        assert!(error.contains(words), "{error}");
    }
    tls_round_trip(&mut good, b"still here");
    server.stop(PATIENCE);
}

fn garbage_and_a_truncated_client_hello_close_only_their_connection<B: Backend>() {
    let (server, events) = echo_server(tls_builder::<B>());
    let addr = tcp_addr(&server);
    let mut garbage = connect(addr);
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .unwrap();
    // At most a TLS alert record (type 21), then the close.
    let answer = read_to_close(&mut garbage);
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    handshake_error(&events);
    let mut truncated = connect(addr);
    truncated
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    truncated.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = read_to_close(&mut truncated);
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    let error = handshake_error(&events);
    if let Some(words) = B::SAYS_CLOSED_IN_HANDSHAKE {
        assert!(error.contains(words), "{error}");
    }
    tls_round_trip(&mut tls_connect(addr), b"fine");
    server.stop(PATIENCE);
}

fn a_client_that_never_handshakes_is_closed_after_the_timeout_holding_no_worker<B: Backend>() {
    let timeout = Duration::from_millis(300);
    let (server, events) = echo_server(
        tls_builder::<B>()
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
            .any(|e| matches!(e, Event::HandshakeError(e) if e.contains("timed out"))),
        "{seen:?}"
    );
    assert_eq!(
        server.connection_count(),
        1,
        "the stalled connection's slot is free"
    );
    server.stop(PATIENCE);
}

fn sendfile_over_tls_arrives_byte_exact<B: Backend>() {
    const SIZE: usize = 3 * 1024 * 1024 + 17;
    let path = std::env::temp_dir().join(format!(
        "atoll-{}-sendfile-{}",
        B::name(),
        std::process::id()
    ));
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
    let server = tls_builder::<B>()
        .start(move |_| Ok(SendFile(file.clone())))
        .unwrap();
    let mut client = tls_connect(tcp_addr(&server));
    let mut got = Vec::new();
    // The server's close sends close_notify: a clean end of stream.
    let end = client.read_to_end(&mut got);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(got.len(), SIZE);
    assert!(got == content, "content differs");
    assert!(end.is_ok(), "{end:?}");
    server.stop(PATIENCE);
}

fn two_hundred_concurrent_tls_clients_echo<B: Backend>() {
    let (server, _events) = echo_server(tls_builder::<B>());
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

fn openssl_s_client_is_echoed<B: Backend>() {
    let (server, _events) = echo_server(tls_builder::<B>());
    let got = s_client(
        tcp_addr(&server),
        &["-quiet"],
        Some((b"hello over openssl\n", 19)),
    );
    assert_eq!(got, b"hello over openssl\n");
    server.stop(PATIENCE);
}

fn starttls_upgrades_a_live_plain_connection<B: Backend>() {
    let server = starttls_server(tls::<B>());
    let mut plain = connect(tcp_addr(&server));
    plain.write_all(b"hi").unwrap();
    let mut buf = [0u8; 8];
    plain.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"plain:hi");
    plain.write_all(b"STARTTLS\n").unwrap();
    let mut go = [0u8; 3];
    plain.read_exact(&mut go).unwrap();
    assert_eq!(&go, b"GO\n");
    let mut secure = plain_connector().connect("localhost", plain).unwrap();
    secure.write_all(b"hi").unwrap();
    let mut buf = [0u8; 6];
    secure.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"tls:hi");
    server.stop(PATIENCE);
}

fn a_failed_starttls_upgrade_reaches_handle_error<B: Backend>() {
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
            let kind = match error {
                Error::Upgrade(_) => "upgrade",
                _ => "other",
            };
            let _ = self.events.send(format!("{kind}: {}", util::chain(error)));
        }
    }
    let tls: Arc<dyn Transport> = Arc::new(tls::<B>());
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
    assert_plain_text_closed::<B>(&mut plain);
    let error = rx.recv_timeout(PATIENCE).unwrap();
    assert!(error.starts_with("upgrade: TLS upgrade failed"), "{error}");
    server.stop(PATIENCE);
}

/// What a handler's socket reports about its TLS connection: `None` on a
/// plain connection; on a TLS one, whatever the backend exposes (see
/// `tls_info_names_the_version_the_suite_and_the_server_name` for rustls).
fn tls_info_of(b: Builder, secure: bool) -> Option<atoll::transport::TlsInfo> {
    struct Tell(mpsc::Sender<Option<atoll::transport::TlsInfo>>);
    impl Handler for Tell {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let _ = self.0.send(socket.tls_info());
            Flow::Close
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = b.start(move |_| Ok(Tell(tx.clone()))).unwrap();
    let stream = connect(tcp_addr(&server));
    let _held = secure.then(|| plain_connector().connect("localhost", stream));
    let info = rx.recv_timeout(PATIENCE).unwrap();
    server.stop(PATIENCE);
    info
}

fn the_socket_reports_the_tls_information_its_backend_exposes<B: Backend>() {
    assert_eq!(tls_info_of(builder(), false), None);
    let info = tls_info_of(tls_builder::<B>(), true).expect("a TLS connection has information");
    if B::name() == "rustls" {
        assert!(
            info.protocol.is_some() && info.cipher_suite.is_some(),
            "{info:?}"
        );
    } else {
        assert_eq!(info, atoll::transport::TlsInfo::default());
    }
}

// ------------------------------------------------------------ rustls only

/// The suite, then what only the rustls backend offers or promises.
#[cfg(feature = "rustls")]
mod rustls {
    use super::*;
    use atoll::transport::{ClientAuth, Rustls, TlsVersion};
    use native_tls::{Protocol, TlsConnector};
    use std::sync::OnceLock;
    use util::tls::{connector, pki, tls12_connector};

    suite!(super::RustlsBackend);

    fn tls() -> Rustls {
        super::tls::<RustlsBackend>()
    }

    fn tls_builder() -> Builder {
        builder().transport(tls())
    }

    fn client_connector() -> &'static TlsConnector {
        static C: OnceLock<TlsConnector> = OnceLock::new();
        C.get_or_init(|| connector(Some(&pki().client), None))
    }

    fn client12_connector() -> &'static TlsConnector {
        static C: OnceLock<TlsConnector> = OnceLock::new();
        C.get_or_init(|| connector(Some(&pki().client), Some(Protocol::Tlsv12)))
    }

    fn stranger_connector() -> &'static TlsConnector {
        static C: OnceLock<TlsConnector> = OnceLock::new();
        C.get_or_init(|| connector(Some(&pki().stranger), None))
    }

    /// The next event, which must be the end of the connection as a close,
    /// not an error.
    fn closed(events: &mpsc::Receiver<Event>) {
        match next(events) {
            Event::Closed => {}
            Event::OtherError(e) => panic!("the close reached handle_error: {e}"),
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    /// Whether the server refused this TLS client: at the handshake (TLS
    /// 1.2), or, as TLS 1.3 clients finish their side before the server
    /// checks their certificate, at the first read after it.
    fn refused(
        attempt: Result<TlsStream<TcpStream>, native_tls::HandshakeError<TcpStream>>,
    ) -> bool {
        let Ok(mut stream) = attempt else {
            return true;
        };
        let _ = stream.write_all(b"let me in");
        let mut buf = [0u8; 16];
        matches!(stream.read(&mut buf), Ok(0) | Err(_))
    }

    #[test]
    fn tls_info_names_the_version_the_suite_and_the_server_name() {
        let info = tls_info_of(tls_builder(), true).unwrap();
        assert_eq!(info.server_name.as_deref(), Some("localhost"));
        let suite = info.cipher_suite.unwrap();
        match info.protocol {
            Some(TlsVersion::Tls13) => assert!(suite.starts_with("TLS13_"), "{suite}"),
            Some(TlsVersion::Tls12) => assert!(suite.starts_with("TLS_ECDHE_"), "{suite}"),
            other => panic!("no version: {other:?}"),
        }
    }

    #[test]
    fn a_tls12_client_is_served_and_a_tls13_minimum_refuses_it() {
        let (server, events) = echo_server(tls_builder());
        let mut old = tls12_connector()
            .connect("localhost", connect(tcp_addr(&server)))
            .unwrap();
        tls_round_trip(&mut old, b"tls 1.2");
        ready(&events);
        server.stop(PATIENCE);

        let strict = tls().with_min_version(TlsVersion::Tls13).unwrap();
        let (server, events) = echo_server(builder().transport(strict));
        let addr = tcp_addr(&server);
        assert!(tls12_connector()
            .connect("localhost", connect(addr))
            .is_err());
        handshake_error(&events);
        tls_round_trip(&mut tls_connect(addr), b"tls 1.3");
        server.stop(PATIENCE);
    }

    #[test]
    #[cfg(feature = "tls")]
    fn alpn_without_a_common_protocol_refuses_the_client() {
        let transport = tls().with_alpn(&["h2"]).unwrap();
        let (server, events) = echo_server(builder().transport(transport));
        let attempt = alpn_connector(&["spdy/1"]).connect("localhost", connect(tcp_addr(&server)));
        assert!(attempt.is_err());
        let error = handshake_error(&events);
        assert!(error.contains("ALPN"), "{error}");
        server.stop(PATIENCE);
    }

    /// Records what a TLS client writes; reading would block. Gives a real
    /// ClientHello to replay on a raw socket.
    struct Recorder(Vec<u8>);

    impl Read for Recorder {
        fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_client_that_does_not_read_the_servers_handshake_fails_it_after_a_bounded_wait() {
        // A certificate message far larger than the kernel buffers between
        // the two ends (both made small), to a client that never reads.
        let mut chain = pki().server.cert.clone();
        for _ in 0..150 {
            chain.extend_from_slice(&pki().ca);
        }
        let transport = Rustls::from_pem(&chain, &pki().server.key).unwrap();
        let options = atoll::transport::ListenOptions::new()
            .ip([127, 0, 0, 1].into())
            .port(0)
            .send_buffer_size(Some(4096));
        let (server, events) = echo_server(
            builder()
                .listen_options(options)
                .num_workers(1)
                .transport(transport),
        );
        let addr = tcp_addr(&server);
        let hello = match plain_connector().connect("localhost", Recorder(Vec::new())) {
            Err(native_tls::HandshakeError::WouldBlock(mid)) => mid.get_ref().0.clone(),
            _ => panic!("the client hello"),
        };
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&addr.into()).unwrap();
        let mut mute: TcpStream = sock.into();
        mute.set_read_timeout(Some(PATIENCE)).unwrap();
        let started = Instant::now();
        mute.write_all(&hello).unwrap();
        let error = handshake_error(&events);
        let waited = started.elapsed();
        assert!(error.contains("did not read the handshake"), "{error}");
        assert!(
            waited >= Duration::from_millis(900),
            "failed after {waited:?}"
        );
        // The worker is free again.
        tls_round_trip(&mut tls_connect(addr), b"next");
        let answer = read_to_close(&mut mute);
        assert!(answer.starts_with(&[22]), "a handshake record first");
        server.stop(PATIENCE);
    }

    #[test]
    fn closes_with_and_without_close_notify_both_end_as_a_close() {
        let (server, events) = echo_server(tls_builder());
        let addr = tcp_addr(&server);
        // close_notify from the client, then FIN.
        let mut polite = tls_connect(addr);
        tls_round_trip(&mut polite, b"hi");
        ready(&events);
        polite.shutdown().unwrap();
        drop(polite);
        closed(&events);
        // FIN without close_notify (native-tls sends none on drop).
        let mut abrupt = tls_connect(addr);
        tls_round_trip(&mut abrupt, b"hi");
        ready(&events);
        drop(abrupt);
        closed(&events);
        // The server's shutdown sends close_notify: the client reads a clean end.
        let mut told = tls_connect(addr);
        ready(&events);
        told.write_all(b"BYE\n").unwrap();
        let mut rest = Vec::new();
        told.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        server.stop(PATIENCE);
    }

    /// The temp file of a test's PEM, removed on drop.
    struct TempPem(PathBuf);

    impl TempPem {
        fn new(tag: &str, pem: &[u8]) -> TempPem {
            let path =
                std::env::temp_dir().join(format!("atoll-rustls-{}-{tag}.pem", std::process::id()));
            std::fs::write(&path, pem).unwrap();
            TempPem(path)
        }

        fn arg(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempPem {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn openssl_s_client_with_a_client_certificate_passes_mutual_tls() {
        let auth = ClientAuth::Required(pki().ca.clone());
        let (server, events) =
            echo_server(builder().transport(tls().with_client_auth(auth).unwrap()));
        let cert = TempPem::new("s-client-cert", &pki().client.cert);
        let key = TempPem::new("s-client-key", &pki().client.key);
        let got = s_client(
            tcp_addr(&server),
            &["-quiet", "-cert", cert.arg(), "-key", key.arg()],
            Some((b"mutual\n", 7)),
        );
        assert_eq!(got, b"mutual\n");
        assert_eq!(ready(&events).1, Some(pki().client.der.clone()));
        server.stop(PATIENCE);
    }

    #[test]
    fn mutual_tls_required_serves_a_certified_client_and_reports_its_certificate() {
        let auth = ClientAuth::Required(pki().ca.clone());
        let (server, events) =
            echo_server(builder().transport(tls().with_client_auth(auth).unwrap()));
        let addr = tcp_addr(&server);
        for connector in [client_connector(), client12_connector()] {
            let mut client = connector.connect("localhost", connect(addr)).unwrap();
            tls_round_trip(&mut client, b"certified");
            let (_, cert) = ready(&events);
            assert_eq!(cert, Some(pki().client.der.clone()), "the client's DER");
            drop(client);
            closed(&events);
        }
        server.stop(PATIENCE);
    }

    #[test]
    fn mutual_tls_required_refuses_a_client_without_a_certificate() {
        let auth = ClientAuth::Required(pki().ca.clone());
        let (server, events) =
            echo_server(builder().transport(tls().with_client_auth(auth).unwrap()));
        let addr = tcp_addr(&server);
        for connector in [plain_connector(), tls12_connector()] {
            assert!(refused(connector.connect("localhost", connect(addr))));
            let error = handshake_error(&events);
            assert!(error.contains("no certificates"), "{error}");
        }
        // A raw client without TLS sees the close too.
        let mut raw = connect(addr);
        raw.write_all(b"hello").unwrap();
        let answer = read_to_close(&mut raw);
        assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
        handshake_error(&events);
        util::wait_no_connections(&server);
        server.stop(PATIENCE);
    }

    #[test]
    fn mutual_tls_required_refuses_a_certificate_from_another_ca() {
        let auth = ClientAuth::Required(pki().ca.clone());
        let (server, events) =
            echo_server(builder().transport(tls().with_client_auth(auth).unwrap()));
        let addr = tcp_addr(&server);
        assert!(refused(
            stranger_connector().connect("localhost", connect(addr))
        ));
        let error = handshake_error(&events);
        assert!(error.contains("UnknownIssuer"), "{error}");
        util::wait_no_connections(&server);
        // The server goes on serving certified clients.
        let mut good = client_connector()
            .connect("localhost", connect(addr))
            .unwrap();
        tls_round_trip(&mut good, b"ok");
        server.stop(PATIENCE);
    }

    #[test]
    fn mutual_tls_optional_serves_anonymous_and_certified_clients() {
        let auth = ClientAuth::Optional(pki().ca.clone());
        let (server, events) =
            echo_server(builder().transport(tls().with_client_auth(auth).unwrap()));
        let addr = tcp_addr(&server);
        let mut anonymous = tls_connect(addr);
        tls_round_trip(&mut anonymous, b"anonymous");
        assert_eq!(ready(&events).1, None);
        let mut certified = client_connector()
            .connect("localhost", connect(addr))
            .unwrap();
        tls_round_trip(&mut certified, b"certified");
        assert_eq!(ready(&events).1, Some(pki().client.der.clone()));
        // A certificate is optional, but one that does not verify is refused.
        assert!(refused(
            stranger_connector().connect("localhost", connect(addr))
        ));
        handshake_error(&events);
        server.stop(PATIENCE);
    }

    #[test]
    fn sni_picks_the_certificate_for_the_requested_name_and_the_default_otherwise() {
        let other = &pki().other;
        let transport = tls()
            .with_sni("Other.Test", &other.cert, &other.key)
            .unwrap();
        let (server, _events) = echo_server(builder().transport(transport));
        let addr = tcp_addr(&server);
        // The client verifies the name: only the right certificate passes.
        let served = |name: &str| {
            let mut s = plain_connector().connect(name, connect(addr)).unwrap();
            tls_round_trip(&mut s, name.as_bytes());
            s.peer_certificate().unwrap().unwrap().to_der().unwrap()
        };
        assert_eq!(served("other.test"), other.der);
        assert_eq!(served("localhost"), pki().server.der);
        // No SNI (an IP address) and an unknown name get the default.
        assert_eq!(served("127.0.0.1"), pki().server.der);
        let out = s_client(addr, &["-servername", "unknown.test"], None);
        let out = String::from_utf8_lossy(&out).replace(' ', "");
        assert!(out.contains("subject=CN=localhost"), "{out}");
        let out = s_client(addr, &["-servername", "other.test"], None);
        let out = String::from_utf8_lossy(&out).replace(' ', "");
        assert!(out.contains("subject=CN=other.test"), "{out}");
        server.stop(PATIENCE);
    }

    #[test]
    fn bad_configuration_is_a_config_error() {
        let p = pki();
        let config = |r: Result<Rustls, Error>| match r {
            Err(Error::Config(msg)) => msg,
            other => panic!("expected Error::Config, got {other:?}"),
        };
        config(Rustls::from_pem(b"not a certificate", &p.server.key));
        config(Rustls::from_pem(&p.server.cert, b"not a key"));
        let mismatch = config(Rustls::from_pem(&p.server.cert, &p.client.key));
        assert!(mismatch.contains("key"), "{mismatch}");
        let wrong_name = config(tls().with_sni("elsewhere.test", &p.other.cert, &p.other.key));
        assert!(wrong_name.contains("elsewhere.test"), "{wrong_name}");
        config(tls().with_sni("127.0.0.1", &p.server.cert, &p.server.key));
        config(tls().with_client_auth(ClientAuth::Required(Vec::new())));
        config(tls().with_client_auth(ClientAuth::Optional(b"junk".to_vec())));
        config(tls().with_alpn(&[""]));
        let debug = format!(
            "{:?}",
            tls()
                .with_client_auth(ClientAuth::Optional(p.ca.clone()))
                .unwrap()
        );
        assert!(debug.contains("Optional("), "{debug}");
    }

    /// Holds what a TLS client writes until it next reads: its Finished and
    /// its first data leave in one segment.
    #[derive(Debug)]
    struct Coalesce {
        tcp: TcpStream,
        pending: Vec<u8>,
    }

    impl Read for Coalesce {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.flush()?;
            self.tcp.read(buf)
        }
    }

    impl Write for Coalesce {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.pending.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.tcp.write_all(&self.pending)?;
            self.pending.clear();
            Ok(())
        }
    }

    #[test]
    fn starttls_delivers_data_that_came_with_the_clients_finished() {
        let server = starttls_server(tls());
        for _ in 0..5 {
            let mut plain = connect(tcp_addr(&server));
            plain.write_all(b"STARTTLS\n").unwrap();
            let mut go = [0u8; 3];
            plain.read_exact(&mut go).unwrap();
            let coalesce = Coalesce {
                tcp: plain,
                pending: Vec::new(),
            };
            let mut secure = plain_connector().connect("localhost", coalesce).unwrap();
            secure.write_all(b"hi").unwrap();
            let mut buf = [0u8; 6];
            secure.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"tls:hi");
        }
        server.stop(PATIENCE);
    }
}
