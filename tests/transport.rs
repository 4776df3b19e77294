//! Transports other than plain TCP on IPv4: Unix sockets, a transport the
//! application wrote, the standalone listener, and listen options.

mod util;

use std::io::{self, IoSlice, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use atoll::transport::{
    AcceptError, Addr, Handshake, Io, ListenOptions, Listener, Stream, Tcp, Transport,
};
use atoll::{Error, Flow, Handler, Socket, Timeout};
use util::{builder, connect, read_n, round_trip, tcp_addr, Echo, PATIENCE};

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("atoll-{name}-{}.sock", std::process::id()))
}

#[test]
fn unix_socket_echo_reports_paths_and_peer_credentials_and_removes_the_file_at_stop() {
    let path = socket_path("echo");
    let _ = std::fs::remove_file(&path);
    struct Creds(mpsc::Sender<(Addr, i32, u32)>);
    impl Handler for Creds {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let creds = socket.peer_credentials().unwrap();
            let _ = self
                .0
                .send((socket.local_addr().clone(), creds.pid, creds.uid));
            Flow::Continue
        }
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            socket
                .send(data)
                .map_or_else(Flow::error, |()| Flow::Continue)
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = builder()
        .unix(&path)
        .start(move |_| Ok(Creds(tx.clone())))
        .unwrap();
    assert_eq!(server.local_addr().unwrap(), Addr::Unix(Some(path.clone())));
    let mut client = UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    for msg in [&b"over a unix socket"[..], &[7u8; 100_000]] {
        client.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    let (local, pid, uid) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(local, Addr::Unix(Some(path.clone())));
    assert_eq!(pid, std::process::id() as i32);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let my_uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap();
    assert_eq!(uid, my_uid);
    server.stop(PATIENCE);
    assert!(!path.exists(), "the socket file is removed at stop");
}

#[test]
fn a_stale_unix_socket_file_is_removed_only_when_asked() {
    let path = socket_path("stale");
    let _ = std::fs::remove_file(&path);
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    match builder().unix(&path).start(|_| Ok(Echo)) {
        Err(Error::Bind { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::AddrInUse),
        other => panic!("expected a bind error, got {other:?}"),
    }
    let server = builder()
        .unix(&path)
        .remove_stale_socket(true)
        .start(|_| Ok(Echo))
        .unwrap();
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    client.read_exact(&mut b).unwrap();
    server.stop(PATIENCE);

    // A regular file is never removed.
    std::fs::write(&path, b"not a socket").unwrap();
    assert!(builder()
        .unix(&path)
        .remove_stale_socket(true)
        .start(|_| Ok(Echo))
        .is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    std::fs::remove_file(&path).unwrap();
}

/// A toy cipher: every byte XORed with a key.
struct Xor(u8);

struct XorStream {
    io: Io,
    key: u8,
}

impl Transport for Xor {
    fn name(&self) -> &'static str {
        "xor"
    }

    fn is_secure(&self) -> bool {
        true // it is not, but it says so, and the socket must report it
    }

    fn handshake(&self, io: Io) -> Handshake {
        Handshake::Done(Box::new(XorStream { io, key: self.0 }))
    }
}

impl Stream for XorStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.io.read_some(buf)?;
        buf[..n].iter_mut().for_each(|b| *b ^= self.key);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let plain = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        let cipher: Vec<u8> = plain.iter().map(|b| b ^ self.key).collect();
        self.io.write_some(&[IoSlice::new(&cipher)])
    }

    fn io(&self) -> &Io {
        &self.io
    }
}

#[test]
fn a_user_defined_transport_carries_the_connection() {
    struct Upper;
    impl Handler for Upper {
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            assert!(socket.is_secure());
            socket
                .send(&data.to_ascii_uppercase())
                .map_or_else(Flow::error, |()| Flow::Continue)
        }
    }
    let server = builder().transport(Xor(0x5a)).start(|_| Ok(Upper)).unwrap();
    let mut client = connect(tcp_addr(&server));
    let wire: Vec<u8> = b"hello".iter().map(|b| b ^ 0x5a).collect();
    client.write_all(&wire).unwrap();
    let mut back = [0u8; 5];
    client.read_exact(&mut back).unwrap();
    let plain: Vec<u8> = back.iter().map(|b| b ^ 0x5a).collect();
    assert_eq!(
        plain, b"HELLO",
        "the handler saw plaintext and its reply was encrypted"
    );
    server.stop(PATIENCE);
}

#[test]
fn sendfile_through_a_transport_that_cannot_splice_reads_and_writes_chunks() {
    let path = std::env::temp_dir().join(format!("atoll-xor-sendfile-{}", std::process::id()));
    let content: Vec<u8> = (0..2_500_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    struct Send(PathBuf);
    impl Handler for Send {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let file = std::fs::File::open(&self.0).unwrap();
            match socket.sendfile(&file, 10, 2_000_000) {
                Ok(2_000_000) => Flow::Close,
                Ok(n) => Flow::error(format!("sent {n}")),
                Err(e) => Flow::error(e),
            }
        }
    }
    let file = path.clone();
    let server = builder()
        .transport(Xor(0x21))
        .start(move |_| Ok(Send(file.clone())))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    std::fs::remove_file(&path).unwrap();
    let plain: Vec<u8> = got.iter().map(|b| b ^ 0x21).collect();
    assert!(
        plain == content[10..2_000_010],
        "{} bytes, content differs",
        plain.len()
    );
    server.stop(PATIENCE);
}

#[test]
fn the_standalone_listener_accepts_with_timeouts_and_gives_blocking_sockets() {
    let listener =
        Listener::bind(Tcp, &ListenOptions::new().ip([127, 0, 0, 1].into()).port(0)).unwrap();
    let addr = listener.local_addr().unwrap().inet().unwrap();
    match listener.accept(Some(Duration::from_millis(50))) {
        Err(AcceptError::Timeout) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    let mut client = connect(addr);
    client.write_all(b"ping").unwrap();
    let mut socket = listener.accept(Some(PATIENCE)).unwrap();
    assert_eq!(socket.peer_addr(), client.local_addr().unwrap());
    assert_eq!(socket.recv(4).unwrap(), b"ping");
    socket.send(b"pong").unwrap();
    let mut b = [0u8; 4];
    client.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    assert!(matches!(
        socket.recv_within(0, Some(Duration::from_millis(20))),
        Err(Error::Timeout(Timeout::Recv))
    ));
    drop(client);
    assert!(matches!(socket.recv(1), Err(Error::Closed)));
}

#[test]
fn asking_for_blocking_sockets_is_an_error_not_a_silent_change() {
    let options = ListenOptions::new().port(0).nonblocking(false);
    match builder().listen_options(options).start(|_| Ok(Echo)) {
        Err(Error::Config(msg)) => assert!(msg.contains("non-blocking"), "{msg}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn ipv6_only_and_dual_stack_listeners_differ_for_ipv4_clients() {
    let Ok(v6only) = builder()
        .ip("::".parse().unwrap())
        .only_v6(true)
        .start(|_| Ok(Echo))
    else {
        eprintln!("no IPv6 here; skipped");
        return;
    };
    let port = v6only.local_addr().unwrap().port().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "v6-only refuses IPv4"
    );
    round_trip(
        &mut connect(("::1".parse::<std::net::IpAddr>().unwrap(), port).into()),
        b"v6",
    );
    v6only.stop(PATIENCE);

    let dual = builder()
        .ip("::".parse().unwrap())
        .only_v6(false)
        .start(|_| Ok(Echo))
        .unwrap();
    let port = dual.local_addr().unwrap().port().unwrap();
    round_trip(
        &mut connect(([127, 0, 0, 1], port).into()),
        b"v4 on dual-stack",
    );
    dual.stop(PATIENCE);
}

#[test]
fn only_v6_on_an_ipv4_address_is_a_config_error() {
    assert!(matches!(
        builder().only_v6(true).start(|_| Ok(Echo)),
        Err(Error::Config(_))
    ));
}

#[test]
fn two_servers_share_a_port_with_reuse_port() {
    let first = builder().reuse_port(true).start(|_| Ok(Echo)).unwrap();
    let port = tcp_addr(&first).port();
    let second = builder()
        .port(port)
        .reuse_port(true)
        .start(|_| Ok(Echo))
        .unwrap();
    for _ in 0..20 {
        round_trip(&mut connect(([127, 0, 0, 1], port).into()), b"either");
    }
    assert!(first.stats().accepted + second.stats().accepted == 20);
    first.stop(PATIENCE);
    second.stop(PATIENCE);
}

#[test]
fn closing_a_listener_from_another_thread_wakes_a_blocked_accept_with_closed() {
    let listener = std::sync::Arc::new(
        Listener::bind(Tcp, &ListenOptions::new().ip([127, 0, 0, 1].into()).port(0)).unwrap(),
    );
    let addr = listener.local_addr().unwrap().inet().unwrap();
    // A connection accepted before the close goes on after it.
    let mut client = connect(addr);
    let mut before = listener.accept(Some(PATIENCE)).unwrap();
    let (tx, blocked) = mpsc::channel();
    let acceptors: Vec<_> = (0..2)
        .map(|_| {
            let listener = listener.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(());
                let result = listener.accept(None);
                assert!(matches!(result, Err(AcceptError::Closed)), "{result:?}");
            })
        })
        .collect();
    for _ in 0..2 {
        blocked.recv_timeout(PATIENCE).unwrap();
    }
    assert!(!listener.is_closed());
    listener.close();
    for acceptor in acceptors {
        acceptor.join().unwrap();
    }
    assert!(listener.is_closed());
    assert!(matches!(
        listener.accept(Some(PATIENCE)),
        Err(AcceptError::Closed)
    ));
    listener.close();
    client.write_all(b"still").unwrap();
    assert_eq!(before.recv(5).unwrap(), b"still");
}

/// A transport whose handshake never finishes.
struct Stalls;

struct Stalled(Io);

impl atoll::transport::PendingHandshake for Stalled {
    fn resume(self: Box<Self>) -> Handshake {
        Handshake::Pending(self)
    }
    fn io(&self) -> &Io {
        &self.0
    }
}

impl Transport for Stalls {
    fn name(&self) -> &'static str {
        "stalls"
    }
    fn handshake(&self, io: Io) -> Handshake {
        Handshake::Pending(Box::new(Stalled(io)))
    }
}

#[test]
fn a_handshake_that_runs_out_of_time_is_a_typed_timeout_and_a_failed_one_is_not() {
    let limit = Duration::from_millis(50);
    let listener = Listener::bind(
        Stalls,
        &ListenOptions::new().ip([127, 0, 0, 1].into()).port(0),
    )
    .unwrap()
    .handshake_timeout(Some(limit));
    let mut client = connect(listener.local_addr().unwrap().inet().unwrap());
    client.write_all(b"hello?").unwrap();
    match listener.accept(Some(PATIENCE)) {
        Err(AcceptError::Handshake(e)) => {
            assert!(e.is_timeout(), "{e}");
            assert!(matches!(e, Error::Timeout(Timeout::Handshake)), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    let failing = Error::Handshake("no such protocol".into());
    assert!(!failing.is_timeout());
    let io: io::Error = Error::Timeout(Timeout::Handshake).into();
    assert_eq!(io.kind(), io::ErrorKind::TimedOut);
    assert!(matches!(
        Error::from(io),
        Error::Timeout(Timeout::Handshake)
    ));
}

#[test]
fn a_starttls_upgrade_that_runs_out_of_time_reaches_handle_error_as_a_handshake_timeout() {
    struct Upgrades(mpsc::Sender<String>);
    impl Handler for Upgrades {
        fn handle_data(&mut self, _: &[u8], socket: &mut Socket) -> Flow {
            match socket.upgrade(&Stalls) {
                Err(e) if e.is_timeout() => Flow::Continue, // the connection's error anyway
                other => panic!("{other:?}"),
            }
        }
        fn handle_error(&mut self, error: &Error, _: &mut Socket) {
            let kind = match error {
                Error::Timeout(Timeout::Handshake) => "timeout",
                Error::Upgrade(_) => "upgrade",
                _ => "other",
            };
            let _ = self.0.send(kind.to_string());
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = builder()
        .handshake_timeout(Some(Duration::from_millis(50)))
        .start(move |_| Ok(Upgrades(tx.clone())))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"STARTTLS").unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "timeout");
    server.stop(PATIENCE);
}

#[test]
fn a_server_handshake_that_never_finishes_reaches_handle_error_as_a_handshake_timeout() {
    struct Waits(mpsc::Sender<String>);
    impl Handler for Waits {
        fn handle_error(&mut self, error: &Error, _: &mut Socket) {
            let kind = match error {
                Error::Timeout(Timeout::Handshake) => "handshake timeout".to_string(),
                other => format!("other: {other:?}"),
            };
            let _ = self.0.send(kind);
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = builder()
        .transport(Stalls)
        .handshake_timeout(Some(Duration::from_millis(100)))
        .start(move |_| Ok(Waits(tx.clone())))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"hello?").unwrap();
    // The client sees the connection closed, and the handler why.
    assert_eq!(util::read_to_close(&mut client), b"");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "handshake timeout");
    server.stop(PATIENCE);
}

#[test]
fn upgrading_with_bytes_read_ahead_is_an_upgrade_error_and_keeps_the_connection() {
    struct ReadsAhead;
    impl Handler for ReadsAhead {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            // Two bytes come, five are asked for: the two stay read ahead.
            let first = socket.recv_within(5, Some(Duration::from_millis(100)));
            let upgrade = socket.upgrade(&Tcp);
            let verdict = match (&first, &upgrade) {
                (Err(Error::Timeout(Timeout::Recv)), Err(Error::Upgrade(why))) => {
                    format!("upgrade refused: {why}; open: {}", !socket.is_closed())
                }
                other => format!("unexpected: {other:?}"),
            };
            match socket
                .send(format!("{verdict}\n").as_bytes())
                .and_then(|()| socket.recv(2))
                .and_then(|kept| socket.send(&kept))
            {
                Ok(()) => Flow::Close,
                Err(e) => Flow::error(e),
            }
        }
    }
    let server = builder().start(|_| Ok(ReadsAhead)).unwrap();
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"ab").unwrap();
    let reply = util::read_to_close(&mut client);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "upgrade refused: bytes read ahead of the upgrade would be lost; open: true\nab"
    );
    server.stop(PATIENCE);
}

#[test]
fn would_block_and_the_systems_timed_out_are_io_errors_not_timeouts() {
    for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
        let err = Error::from(io::Error::from(kind));
        assert!(matches!(&err, Error::Io(e) if e.kind() == kind), "{err:?}");
        assert!(!err.is_timeout());
    }
    // An error of atoll's own comes back as itself.
    let recv: io::Error = Error::Timeout(Timeout::Recv).into();
    assert!(matches!(Error::from(recv), Error::Timeout(Timeout::Recv)));
}
/// A handshake that waits for one byte from the client, then carries the
/// stream in the clear.
struct Knock;

struct Knocking(Io);

impl atoll::transport::PendingHandshake for Knocking {
    fn resume(self: Box<Self>) -> Handshake {
        let mut knock = [0u8; 1];
        match self.0.read_some(&mut knock) {
            Ok(1) => Handshake::Done(Box::new(XorStream { io: self.0, key: 0 })),
            Ok(_) => Handshake::Failed("closed before the knock".into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Handshake::Pending(self),
            Err(e) => Handshake::Failed(e.into()),
        }
    }
    fn io(&self) -> &Io {
        &self.0
    }
}

impl Transport for Knock {
    fn name(&self) -> &'static str {
        "knock"
    }
    fn handshake(&self, io: Io) -> Handshake {
        atoll::transport::PendingHandshake::resume(Box::new(Knocking(io)))
    }
}

#[test]
fn messages_sent_during_the_handshake_are_handled_once_it_is_done() {
    // Found by the scheduling model (src/connection/model.rs): a round that
    // took MESSAGE while the handshake waited used it up, and the messages
    // stayed in the mailbox until the next one was sent.
    struct Relay;
    impl Handler<&'static str> for Relay {
        fn handle_message(&mut self, msg: &'static str, socket: &mut Socket) -> Flow {
            socket
                .send(msg.as_bytes())
                .map_or_else(Flow::error, |()| Flow::Continue)
        }
    }
    let (made, was_made) = mpsc::channel();
    let server = builder()
        .transport(Knock)
        .start(move |conn| {
            // The factory greets its own connection, before the handshake.
            conn.send("hello ").unwrap();
            let _ = made.send(conn.clone());
            Ok(Relay)
        })
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let conn = was_made.recv_timeout(PATIENCE).unwrap();
    // Another thread's message while the handshake still waits.
    conn.send("world").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    client.write_all(b"!").unwrap();
    assert_eq!(read_n(&mut client, 11), b"hello world");
    server.stop(PATIENCE);
}
