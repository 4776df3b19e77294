//! The life of a server as its clients see it: binding, configuration
//! errors, the connection limiter, the connection list, suspend and resume,
//! stop (graceful and forced), wait, drop, and factory refusals.

mod util;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use atoll::{BoxError, Builder, Connection, Error, Flow, Handler, Server, Socket, Status};
use util::{
    builder, connect, echo_server, is_closed, read_n, read_to_close, round_trip, tcp_addr,
    wait_until, CallLog, Echo, PATIENCE,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A port that was free a moment ago (for tests that need an explicit one).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asserts that the system refuses a connection to `addr`.
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect(addr) {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "connect to {addr}: {e}"
        ),
        Ok(s) => panic!(
            "connect to {addr} succeeded (client {:?}); expected a refusal",
            s.local_addr()
        ),
    }
}

/// Asserts that nothing comes back on `stream` for `d` (and that the server
/// did not close it either).
fn assert_no_reply_within(stream: &mut TcpStream, d: Duration) {
    stream.set_read_timeout(Some(d)).unwrap();
    let mut b = [0u8; 1];
    match stream.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected no reply within {d:?}, got {other:?}"),
    }
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
}

/// Events that handlers record, in order, for the test to inspect.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(SocketAddr, String)>>>);

impl Log {
    fn push(&self, socket: &Socket, event: impl Into<String>) {
        self.0
            .lock()
            .unwrap()
            .push((socket.peer_addr().inet().unwrap(), event.into()));
    }

    /// The events of the connection whose client is `client`.
    fn of(&self, client: &TcpStream) -> Vec<String> {
        let me = client.local_addr().unwrap();
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(peer, _)| *peer == me)
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn all(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }
}

// ---------------------------------------------------------------- binding

#[test]
fn port_zero_reports_the_bound_port_and_a_taken_port_fails_with_a_bind_error() {
    let server = echo_server(builder().num_workers(2));
    let addr = tcp_addr(&server);
    assert_eq!(addr.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
    assert_ne!(addr.port(), 0, "port 0 must be replaced by the real port");
    round_trip(&mut connect(addr), b"ping");

    // SO_REUSEADDR does not let a second socket listen on a port that has a
    // listener (Linux), so both settings fail the same way.
    for reuse in [true, false] {
        let err = builder()
            .num_workers(2)
            .port(addr.port())
            .reuse_address(reuse)
            .start(|_| Ok(Echo))
            .expect_err("a second server on a taken port must not start");
        let text = err.to_string();
        // Each cause printed once: the message, then the OS error from
        // `source()` (as `anyhow`'s `{:#}` shows a chain).
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(
            util::chain(&err),
            format!("{text}: {}", cause.as_deref().unwrap_or("no source")),
        );
        assert!(
            !text.contains(cause.as_deref().unwrap_or("no source")),
            "{text}"
        );
        match err {
            Error::Bind {
                addr: tried,
                source,
            } => {
                assert_eq!(tried, addr, "reuse_address({reuse})");
                assert_eq!(
                    source.kind(),
                    ErrorKind::AddrInUse,
                    "reuse_address({reuse})"
                );
            }
            other => panic!("reuse_address({reuse}): expected Error::Bind, got {other:?}"),
        }
        assert!(
            text.contains(&addr.to_string()),
            "the message names the address: {text}"
        );
    }
    // The first server is unaffected.
    round_trip(&mut connect(addr), b"still here");
}

#[test]
fn invalid_configurations_are_refused_with_config_errors_before_binding() {
    // A taken port: a configuration error must win over the bind error,
    // which shows the configuration is checked before anything is bound.
    let taken = echo_server(builder().num_workers(2));
    let port = tcp_addr(&taken).port();
    let cases = [
        ("num_workers", builder().port(port).num_workers(0)),
        ("num_acceptors", builder().port(port).num_acceptors(0)),
        (
            "num_connections",
            builder().port(port).num_connections(Some(0)),
        ),
    ];
    for (option, b) in cases {
        let err = b.start(|_| Ok(Echo)).expect_err(option);
        let text = err.to_string();
        match err {
            Error::Config(msg) => {
                assert!(msg.contains(option), "{option}: message {msg:?}");
                assert!(msg.contains("at least 1"), "{option}: message {msg:?}");
            }
            other => panic!("{option} = 0: expected Error::Config, got {other:?}"),
        }
        assert!(text.starts_with("invalid configuration"), "{text}");
    }

    // The same rule at run time, and the limit is left as it was.
    match taken.set_num_connections(Some(0)) {
        Err(Error::Config(msg)) => assert!(msg.contains("num_connections"), "{msg}"),
        other => panic!("set_num_connections(Some(0)): expected Error::Config, got {other:?}"),
    }
    let clients: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut c = connect(tcp_addr(&taken));
            round_trip(&mut c, format!("client {i}").as_bytes());
            c
        })
        .collect();
    assert_eq!(clients.len(), 3);
}

// ---------------------------------------------------------------- limiter

/// An echo server with one acceptor (the limit is per acceptor) and two
/// workers, admitting `slots` connections at a time; a client over the
/// limit is retried `retries` times, `wait` apart.
fn limited_echo_server(slots: Option<usize>, retries: u32, wait: Duration) -> Server {
    echo_server(
        builder()
            .num_workers(2)
            .num_acceptors(1)
            .num_connections(slots)
            .max_connections_retry_count(retries)
            .max_connections_retry_wait(wait),
    )
}

#[test]
fn over_limit_client_is_not_served_until_a_slot_frees() {
    let server = limited_echo_server(Some(2), 1000, ms(100));
    let addr = tcp_addr(&server);
    let mut c1 = connect(addr);
    round_trip(&mut c1, b"one");
    let mut c2 = connect(addr);
    round_trip(&mut c2, b"two");

    let mut c3 = connect(addr);
    c3.write_all(b"three").unwrap();
    assert_no_reply_within(&mut c3, ms(300));
    assert_eq!(server.connection_count(), 2);

    drop(c1);
    assert_eq!(read_n(&mut c3, 5), b"three", "served once a slot freed");
    round_trip(&mut c3, b"again");
    round_trip(&mut c2, b"two again");
    assert_eq!(server.connection_count(), 2);
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.rejected), (3, 0), "{stats:?}");
}

#[test]
fn freed_slot_admits_a_waiting_client_at_once_not_at_the_next_retry() {
    // The retry wait is far longer than PATIENCE: only the wake-up on a
    // freed slot can get the waiting client served in time.
    let server = limited_echo_server(Some(1), 5, Duration::from_secs(60));
    let addr = tcp_addr(&server);
    let mut c1 = connect(addr);
    round_trip(&mut c1, b"one");
    let mut c2 = connect(addr);
    c2.write_all(b"two").unwrap();
    assert_no_reply_within(&mut c2, ms(300));
    drop(c1);
    assert_eq!(read_n(&mut c2, 3), b"two");
}

#[test]
fn over_limit_client_is_closed_after_its_retries_and_counted_as_rejected() {
    let server = limited_echo_server(Some(2), 2, ms(100));
    let addr = tcp_addr(&server);
    let mut c1 = connect(addr);
    round_trip(&mut c1, b"one");
    let mut c2 = connect(addr);
    round_trip(&mut c2, b"two");

    let t0 = Instant::now();
    let mut c3 = connect(addr);
    assert!(is_closed(&mut c3), "the over-limit client must see a close");
    let waited = t0.elapsed();
    assert!(
        waited >= ms(200),
        "closed after {waited:?}, before 2 retries of 100 ms"
    );
    wait_until("rejected == 1", || server.stats().rejected == 1);
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.refused), (3, 0), "{stats:?}");

    round_trip(&mut c1, b"one still works");
    round_trip(&mut c2, b"two still works");
    assert_eq!(server.connection_count(), 2);
}

#[test]
fn over_limit_client_is_closed_at_once_without_retries() {
    // Retries far longer than PATIENCE would show if any were made.
    let server = limited_echo_server(Some(1), 0, Duration::from_secs(60));
    let addr = tcp_addr(&server);
    let mut c1 = connect(addr);
    round_trip(&mut c1, b"one");
    let mut c2 = connect(addr);
    assert!(is_closed(&mut c2), "no retry: closed at once");
    wait_until("rejected == 1", || server.stats().rejected == 1);
    round_trip(&mut c1, b"one still works");
    // Once the slot is free again, a new client is served.
    drop(c1);
    wait_until("the slot freed", || server.connection_count() == 0);
    round_trip(&mut connect(addr), b"three");
}

#[test]
fn raising_the_limit_admits_a_waiting_client_at_once() {
    let server = limited_echo_server(Some(1), 5, Duration::from_secs(60));
    let addr = tcp_addr(&server);
    let mut c1 = connect(addr);
    round_trip(&mut c1, b"one");
    let mut c2 = connect(addr);
    c2.write_all(b"two").unwrap();
    assert_no_reply_within(&mut c2, ms(300));

    server.set_num_connections(Some(2)).unwrap();
    assert_eq!(read_n(&mut c2, 3), b"two", "admitted by the raised limit");

    // The new limit is 2, not "no limit".
    let mut c3 = connect(addr);
    c3.write_all(b"three").unwrap();
    assert_no_reply_within(&mut c3, ms(300));
    server.set_num_connections(None).unwrap();
    assert_eq!(read_n(&mut c3, 5), b"three", "admitted once unlimited");

    round_trip(&mut c1, b"one");
    round_trip(&mut c2, b"two");
    assert_eq!(server.connection_count(), 3);
    assert_eq!(server.stats().rejected, 0);
}

#[test]
fn lowering_the_limit_closes_nobody_and_admits_nobody_until_under_it() {
    let server = limited_echo_server(None, 5, Duration::from_secs(60));
    let addr = tcp_addr(&server);
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = connect(addr);
            round_trip(&mut c, b"hi");
            c
        })
        .collect();
    server.set_num_connections(Some(1)).unwrap();
    for c in &mut open {
        round_trip(c, b"still served");
    }
    assert_eq!(server.connection_count(), 3);

    let mut late = connect(addr);
    late.write_all(b"late").unwrap();
    assert_no_reply_within(&mut late, ms(200));
    // Two leave: one is still live, which is not under the limit of 1.
    open.truncate(1);
    wait_until("two connections ended", || server.connection_count() == 1);
    assert_no_reply_within(&mut late, ms(200));
    open.clear();
    assert_eq!(read_n(&mut late, 4), b"late");
}

// ---------------------------------------------------------------- listing

#[test]
fn connection_list_has_unique_ids_and_client_addresses_and_shrinks_as_clients_leave() {
    let before = SystemTime::now();
    let server = echo_server(builder().num_workers(2));
    let addr = tcp_addr(&server);
    assert_eq!(server.connection_count(), 0);
    assert!(server.connections().is_empty());

    let mut clients: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut c = connect(addr);
            round_trip(&mut c, b"hello");
            c
        })
        .collect();
    let peers = |clients: &[TcpStream]| -> HashSet<SocketAddr> {
        clients.iter().map(|c| c.local_addr().unwrap()).collect()
    };
    assert_eq!(server.connection_count(), 5);
    let list = server.connections();
    assert_eq!(list.len(), 5);
    let ids: HashSet<u64> = list.iter().map(Connection::id).collect();
    assert_eq!(ids.len(), 5, "ids must be unique: {list:?}");
    let listed: HashSet<SocketAddr> = list.iter().filter_map(|c| c.peer_addr().inet()).collect();
    assert_eq!(listed, peers(&clients));
    for conn in &list {
        assert_eq!(conn.local_addr(), addr);
        assert!(conn.is_alive());
        assert!(conn.started() >= before && conn.started() <= SystemTime::now());
    }

    let gone: Vec<TcpStream> = clients.drain(..2).collect();
    let gone_peers = peers(&gone);
    drop(gone);
    wait_until("count == 3", || server.connection_count() == 3);
    let list2 = server.connections();
    let listed: HashSet<SocketAddr> = list2.iter().filter_map(|c| c.peer_addr().inet()).collect();
    assert_eq!(listed, peers(&clients));
    for conn in &list {
        assert_eq!(
            conn.is_alive(),
            !gone_peers.contains(&conn.peer_addr().inet().unwrap()),
            "{conn:?}"
        );
    }

    // A new connection never reuses a live or past id.
    let mut c = connect(addr);
    round_trip(&mut c, b"new");
    let new_ids: Vec<u64> = server
        .connections()
        .iter()
        .filter(|conn| conn.peer_addr() == c.local_addr().unwrap())
        .map(Connection::id)
        .collect();
    assert_eq!(new_ids.len(), 1);
    assert!(!ids.contains(&new_ids[0]), "id {} reused", new_ids[0]);

    drop(clients);
    drop(c);
    wait_until("count == 0", || server.connection_count() == 0);
    assert!(server.connections().is_empty());
}

// ---------------------------------------------------------------- suspend

#[test]
fn suspended_server_refuses_new_clients_keeps_serving_open_ones_and_resumes() {
    // Two acceptors: each holds a clone of the listener, and all must let go.
    let server = echo_server(builder().num_workers(2).num_acceptors(2));
    let addr = tcp_addr(&server);
    let mut c1 = connect(addr);
    round_trip(&mut c1, b"before");

    server.suspend().unwrap();
    assert_eq!(server.status(), Status::Suspended);
    assert!(matches!(server.local_addr(), Err(Error::Closed)));
    assert_refused(addr);
    round_trip(&mut c1, b"while suspended");
    assert_eq!(server.connection_count(), 1);
    server.suspend().unwrap(); // twice is harmless
    assert_eq!(server.status(), Status::Suspended);

    // Port 0 configured: resume listens on a free port, maybe a new one.
    server.resume().unwrap();
    assert_eq!(server.status(), Status::Running);
    let addr2 = tcp_addr(&server);
    assert_eq!(addr2.ip(), addr.ip());
    assert_ne!(addr2.port(), 0);
    let mut c2 = connect(addr2);
    round_trip(&mut c2, b"after");
    round_trip(&mut c1, b"after too");
    server.resume().unwrap(); // twice is harmless
    assert_eq!(tcp_addr(&server), addr2);
    assert_eq!(server.connection_count(), 2);
}

#[test]
fn resume_listens_again_on_the_configured_port() {
    let port = free_port();
    let server = echo_server(builder().num_workers(2).port(port));
    let addr = tcp_addr(&server);
    assert_eq!(addr.port(), port);
    let mut c1 = connect(addr);
    round_trip(&mut c1, b"before");

    server.suspend().unwrap();
    assert_refused(addr);
    // With reuse_address (the default) the port binds again although an
    // accepted connection still uses it.
    server.resume().unwrap();
    assert_eq!(tcp_addr(&server), addr);
    let mut c2 = connect(addr);
    round_trip(&mut c2, b"after");
    round_trip(&mut c1, b"old one too");
}

#[test]
fn resume_fails_with_a_bind_error_and_stays_suspended_while_the_port_is_taken() {
    let port = free_port();
    let server = echo_server(builder().num_workers(2).port(port));
    let addr = tcp_addr(&server);
    let mut c1 = connect(addr);
    round_trip(&mut c1, b"before");
    server.suspend().unwrap();

    let squatter = TcpListener::bind(addr).expect("bind the freed port");
    match server.resume() {
        Err(Error::Bind {
            addr: tried,
            source,
        }) => {
            assert_eq!(tried, addr);
            assert_eq!(source.kind(), ErrorKind::AddrInUse);
        }
        other => panic!("resume on a taken port: expected Error::Bind, got {other:?}"),
    }
    assert_eq!(server.status(), Status::Suspended);
    assert!(server.local_addr().is_err());
    round_trip(&mut c1, b"open ones carry on");

    drop(squatter);
    server.resume().unwrap();
    assert_eq!(server.status(), Status::Running);
    assert_eq!(tcp_addr(&server), addr);
    round_trip(&mut connect(addr), b"after");
}

// ---------------------------------------------------------------- stop

/// Echoes; "slow" takes 300 ms; says "bye" at shutdown; records it all.
struct Drain {
    log: Log,
    busy: mpsc::Sender<()>,
}

impl Handler for Drain {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        if data == b"slow" {
            let _ = self.busy.send(());
            thread::sleep(ms(300));
            self.log.push(socket, "slow done");
        }
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }

    fn handle_shutdown(&mut self, socket: &mut Socket) {
        let sent = socket.send(b"bye");
        self.log
            .push(socket, format!("shutdown, bye sent: {}", sent.is_ok()));
    }

    fn handle_close(&mut self, socket: &mut Socket) {
        self.log.push(socket, "close");
    }

    fn handle_error(&mut self, error: &Error, socket: &mut Socket) {
        self.log
            .push(socket, format!("error: {}", util::chain(error)));
    }
}

#[test]
fn stop_says_goodbye_to_idle_clients_and_lets_busy_ones_finish_their_reply() {
    let log = Log::default();
    let (busy_tx, busy_rx) = mpsc::channel();
    let busy_tx = Mutex::new(busy_tx);
    let l = log.clone();
    let server = builder()
        .num_workers(2)
        .start(move |_| {
            Ok(Drain {
                log: l.clone(),
                busy: busy_tx.lock().unwrap().clone(),
            })
        })
        .unwrap();
    let addr = tcp_addr(&server);
    let mut idle = connect(addr);
    round_trip(&mut idle, b"hello");
    let mut busy = connect(addr);
    busy.write_all(b"slow").unwrap();
    busy_rx.recv_timeout(PATIENCE).expect("handler got busy");

    let t0 = Instant::now();
    server.stop(PATIENCE);
    assert!(
        t0.elapsed() < PATIENCE,
        "stop returned after {:?}",
        t0.elapsed()
    );

    assert_eq!(read_to_close(&mut idle), b"bye");
    assert_eq!(
        read_to_close(&mut busy),
        b"slowbye",
        "the busy one finishes its reply, then gets the goodbye"
    );
    assert_eq!(log.of(&idle), ["shutdown, bye sent: true"]);
    assert_eq!(log.of(&busy), ["slow done", "shutdown, bye sent: true"]);

    assert_eq!(server.status(), Status::Stopped);
    assert_eq!(server.connection_count(), 0);
    assert!(server.connections().is_empty());
    assert!(matches!(server.local_addr(), Err(Error::Closed)));
    assert_refused(addr);

    // Stopping again, suspending or resuming a stopped server changes nothing.
    server.stop(None);
    server.suspend().unwrap();
    server.resume().unwrap();
    assert_eq!(server.status(), Status::Stopped);
    assert!(server.local_addr().is_err());
    assert_refused(addr);
}

/// Blocks in a `recv` without a timeout on any data; records what happens.
/// When the `recv` fails it returns `Flow::Error`, or `Flow::Continue` if
/// `ignore_errors`.
struct Blocker {
    log: Log,
    ignore_errors: bool,
}

impl Handler for Blocker {
    fn handle_data(&mut self, _data: &[u8], socket: &mut Socket) -> Flow {
        self.log.push(socket, "blocking");
        match socket.recv_within(0, None) {
            Ok(data) => {
                self.log.push(socket, format!("recv: {} bytes", data.len()));
                Flow::Continue
            }
            Err(e) => {
                self.log.push(socket, format!("recv failed: {e:?}"));
                if self.ignore_errors {
                    Flow::Continue
                } else {
                    Flow::error(e)
                }
            }
        }
    }

    fn handle_shutdown(&mut self, socket: &mut Socket) {
        let sent = socket.send(b"bye");
        self.log
            .push(socket, format!("shutdown, bye sent: {sent:?}"));
    }

    fn handle_close(&mut self, socket: &mut Socket) {
        self.log.push(socket, "close");
    }

    fn handle_error(&mut self, error: &Error, socket: &mut Socket) {
        self.log
            .push(socket, format!("error: {}", util::chain(error)));
    }
}

fn blocker_server(b: Builder, log: &Log, ignore_errors: bool) -> Server {
    let log = log.clone();
    b.start(move |_| {
        Ok(Blocker {
            log: log.clone(),
            ignore_errors,
        })
    })
    .unwrap()
}

#[test]
fn stop_forces_closed_a_handler_blocked_in_recv_after_the_wait() {
    let log = Log::default();
    let server = blocker_server(builder().num_workers(2), &log, false);
    let addr = tcp_addr(&server);
    let mut client = connect(addr);
    client.write_all(b"go").unwrap();
    wait_until("the handler blocks", || log.all().len() == 1);

    let t0 = Instant::now();
    server.stop(ms(200));
    let took = t0.elapsed();
    assert!(took >= ms(200), "stop forced the close after only {took:?}");
    assert!(took < PATIENCE, "stop took {took:?}");

    // The forced close ends the recv with Closed; the handler turned that
    // into Flow::Error, so handle_error ran and handle_shutdown did not.
    assert_eq!(
        log.of(&client),
        [
            "blocking",
            "recv failed: Closed",
            "error: handler error: connection closed",
        ]
    );
    assert!(is_closed(&mut client), "the client sees the forced close");
    assert_eq!(server.status(), Status::Stopped);
    assert_eq!(server.connection_count(), 0);
    assert_refused(addr);
}

#[test]
fn forced_close_then_runs_handle_shutdown_if_the_blocked_handler_carries_on() {
    let log = Log::default();
    let server = blocker_server(builder().num_workers(2), &log, true);
    let addr = tcp_addr(&server);
    let mut client = connect(addr);
    client.write_all(b"go").unwrap();
    wait_until("the handler blocks", || log.all().len() == 1);

    server.stop(ms(200));
    // The handler ignored the failed recv and returned Flow::Continue: the
    // stop's pending shutdown then runs handle_shutdown, on a socket the
    // forced close already shut down, so its goodbye cannot be sent.
    assert_eq!(
        log.of(&client),
        [
            "blocking",
            "recv failed: Closed",
            "shutdown, bye sent: Err(Closed)",
        ]
    );
    assert_eq!(
        read_to_close(&mut client),
        b"",
        "no goodbye reached the client"
    );
    assert_eq!(server.status(), Status::Stopped);
}

#[test]
fn status_and_local_addr_answer_while_a_stop_drains() {
    let log = Log::default();
    let server = Arc::new(blocker_server(builder().num_workers(2), &log, false));
    let addr = tcp_addr(&server);
    let mut client = connect(addr);
    client.write_all(b"go").unwrap();
    wait_until("the handler blocks", || log.all().len() == 1);

    // The blocked handler keeps this stop draining until the client leaves.
    let stopper = {
        let server = server.clone();
        thread::spawn(move || server.stop(2 * PATIENCE))
    };
    wait_until("the stop closed the listener", || {
        TcpStream::connect(addr).is_err()
    });
    let (tx, rx) = mpsc::channel();
    {
        let server = server.clone();
        thread::spawn(move || {
            let _ = tx.send((server.status(), server.local_addr().is_err()));
        });
    }
    let answer = rx.recv_timeout(PATIENCE);
    drop(client); // ends the blocked recv, so the stop completes
    stopper.join().unwrap();
    let (status, no_addr) = answer.expect("status() did not answer during the stop");
    assert_eq!(status, Status::Stopping);
    assert!(no_addr, "local_addr() while stopping must be Err(Closed)");
    assert_eq!(server.status(), Status::Stopped);
}

#[test]
fn shutdown_waits_the_configured_shutdown_timeout_then_forces_the_close() {
    let log = Log::default();
    let server = blocker_server(
        builder().num_workers(2).shutdown_timeout(Some(ms(300))),
        &log,
        false,
    );
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"go").unwrap();
    wait_until("the handler blocks", || log.all().len() == 1);
    let t0 = Instant::now();
    server.shutdown();
    let took = t0.elapsed();
    assert!(took >= ms(300), "forced after {took:?}, before 300 ms");
    assert!(took < PATIENCE, "shutdown took {took:?}");
    assert!(is_closed(&mut client));
    assert_eq!(server.status(), Status::Stopped);
}

#[test]
fn stop_closes_a_client_waiting_for_a_slot() {
    let server = limited_echo_server(Some(1), 5, Duration::from_secs(60));
    let addr = tcp_addr(&server);
    let mut c1 = connect(addr);
    round_trip(&mut c1, b"one");
    let mut waiting = connect(addr);
    waiting.write_all(b"two").unwrap();
    assert_no_reply_within(&mut waiting, ms(200));
    let t0 = Instant::now();
    server.stop(PATIENCE);
    assert!(t0.elapsed() < PATIENCE);
    assert!(is_closed(&mut waiting), "never served, now closed");
    assert!(is_closed(&mut c1));
    assert_eq!(server.status(), Status::Stopped);
}

#[test]
fn wait_returns_once_another_thread_stops_the_server() {
    let server = Arc::new(echo_server(builder().num_workers(2)));
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let server = server.clone();
        thread::spawn(move || {
            server.wait();
            tx.send(server.status()).unwrap();
        })
    };
    assert!(
        rx.recv_timeout(ms(200)).is_err(),
        "wait returned while the server runs"
    );
    round_trip(&mut connect(tcp_addr(&server)), b"running");
    server.stop(PATIENCE);
    assert_eq!(rx.recv_timeout(PATIENCE), Ok(Status::Stopped));
    waiter.join().unwrap();
    server.wait(); // already stopped: returns at once
}

/// Echoes and counts the shutdowns it sees.
struct CountShutdown(Arc<AtomicUsize>);

impl Handler for CountShutdown {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }

    fn handle_shutdown(&mut self, _socket: &mut Socket) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn dropping_the_server_stops_it() {
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let s = shutdowns.clone();
    let server = builder()
        .num_workers(2)
        .start(move |_| Ok(CountShutdown(s.clone())))
        .unwrap();
    let addr = tcp_addr(&server);
    let mut client = connect(addr);
    round_trip(&mut client, b"hi");
    let t0 = Instant::now();
    drop(server);
    assert!(t0.elapsed() < PATIENCE, "drop took {:?}", t0.elapsed());
    assert_eq!(shutdowns.load(Ordering::SeqCst), 1);
    assert!(is_closed(&mut client));
    assert_refused(addr);
}

// ---------------------------------------------------------------- factory

#[test]
fn accepting_goes_on_after_a_factory_refusal() {
    let made = Arc::new(AtomicUsize::new(0));
    let m = made.clone();
    let server = builder()
        .num_workers(2)
        .start(move |_: &Connection| -> Result<Echo, BoxError> {
            if m.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("the first one is refused".into())
            } else {
                Ok(Echo)
            }
        })
        .unwrap();
    let addr = tcp_addr(&server);
    let mut refused = connect(addr);
    assert!(is_closed(&mut refused), "a refused client sees a close");
    wait_until("refused == 1", || server.stats().refused == 1);

    let mut c2 = connect(addr);
    round_trip(&mut c2, b"second");
    let mut c3 = connect(addr);
    round_trip(&mut c3, b"third");
    assert_eq!(made.load(Ordering::SeqCst), 3);
    let stats = server.stats();
    assert_eq!(
        (stats.accepted, stats.refused, stats.rejected, stats.panics),
        (3, 1, 0, 0),
        "{stats:?}"
    );
    assert_eq!(server.connection_count(), 2);
}

/// Echoes; the factory that makes it panics for the first connection.
#[test]
fn accepting_goes_on_after_a_factory_panic() {
    let made = Arc::new(AtomicUsize::new(0));
    let m = made.clone();
    let server = builder()
        .num_workers(2)
        .start(move |_: &Connection| -> Result<Echo, BoxError> {
            if m.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("factory panics on purpose");
            }
            Ok(Echo)
        })
        .unwrap();
    let addr = tcp_addr(&server);
    let mut first = connect(addr);
    assert!(
        is_closed(&mut first),
        "the client of a panicked factory sees a close"
    );
    wait_until("panics == 1", || server.stats().panics == 1);
    // Both workers are still there: two clients are served at once.
    let mut c2 = connect(addr);
    let mut c3 = connect(addr);
    round_trip(&mut c2, b"second");
    round_trip(&mut c3, b"third");
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.refused), (3, 0), "{stats:?}");
    assert_eq!(server.connection_count(), 2);
}

/// A connection accepted but still waiting for a worker when `stop` begins
/// is set up and served what it already sent, then gets
/// `handle_shutdown`: its client reads the reply and a clean end of stream
/// rather than a reset.
#[test]
fn a_connection_accepted_but_not_yet_served_at_stop_is_served_then_shut_down() {
    struct Gated {
        gate: Arc<Mutex<()>>,
        log: CallLog,
    }
    impl Handler for Gated {
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            drop(self.gate.lock()); // the first connection blocks the only worker here
            self.log
                .push(format!("data {}", String::from_utf8_lossy(data)));
            socket
                .send(data)
                .map_or_else(Flow::error, |()| Flow::Continue)
        }
        fn handle_shutdown(&mut self, socket: &mut Socket) {
            self.log.push("shutdown");
            let _ = socket.close_gracefully(PATIENCE);
        }
    }
    let gate = Arc::new(Mutex::new(()));
    let log = CallLog::new();
    let (g, l) = (gate.clone(), log.clone());
    // One worker that never grows: the second connection must still be
    // waiting for it when the stop begins.
    let server = Arc::new(
        builder()
            .fixed_workers(1)
            .start(move |_| {
                Ok(Gated {
                    gate: g.clone(),
                    log: l.clone(),
                })
            })
            .unwrap(),
    );
    let addr = tcp_addr(&server);
    let held = gate.lock().unwrap();
    let mut busy = connect(addr);
    busy.write_all(b"first").unwrap();
    // The worker is now blocked in the first connection's handle_data; the
    // second connection is accepted and queued behind it, with its request.
    wait_until("the first connection listed", || {
        server.connection_count() == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut queued = connect(addr);
    queued.write_all(b"second").unwrap();
    wait_until("the second connection accepted", || {
        server.connection_count() == 2
    });
    let stopper = {
        let server = server.clone();
        thread::spawn(move || server.stop(PATIENCE))
    };
    wait_until("the stop begun", || server.status() == Status::Stopping);
    std::thread::sleep(Duration::from_millis(100));
    drop(held);

    // Each client closes once it read everything, which ends the
    // handler's graceful close and frees the one worker.
    for (mut client, request) in [(busy, &b"first"[..]), (queued, &b"second"[..])] {
        let mut reply = Vec::new();
        let read = client.read_to_end(&mut reply);
        assert!(
            read.is_ok(),
            "{:?}: {read:?} after {reply:?}",
            String::from_utf8_lossy(request)
        );
        assert_eq!(reply, request);
    }
    stopper.join().unwrap();
    let entries = log.entries();
    assert!(entries.contains(&"data second".to_string()), "{entries:?}");
    assert_eq!(
        entries.iter().filter(|e| *e == "shutdown").count(),
        2,
        "{entries:?}"
    );
}
