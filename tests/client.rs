//! The blocking client (`atoll::client`) against atoll servers and plain
//! std listeners on loopback. Nothing here ever targets a non-loopback
//! address; "no such domain" uses the reserved `.invalid` domain.

mod util;

use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};

use atoll::client::{
    self, ClientError, ConnectError, IpVersionPreference, Options, Packet, Timeout,
};
use atoll::{Flow, Handler, Server, Socket};
use crossbeam_channel::{select, unbounded};
use socket2::{Domain, SockAddr, Type};
use util::{tcp_addr, Echo, PATIENCE};

const WAIT: Option<Duration> = Some(PATIENCE);

/// Closes every connection as soon as it is accepted.
struct Hangup;

impl Handler for Hangup {
    fn handle_connection(&mut self, _socket: &mut Socket) -> Flow {
        Flow::Close
    }
}

/// An atoll echo server on `ip`, port 0.
fn echo_on(ip: std::net::IpAddr) -> Server {
    Server::builder()
        .ip(ip)
        .port(0)
        .num_workers(2)
        .num_acceptors(1)
        .start(|_| Ok(Echo))
        .expect("start echo server")
}

fn echo_server() -> (Server, u16) {
    let server = echo_on([127, 0, 0, 1].into());
    let port = tcp_addr(&server).port();
    (server, port)
}

fn stop(server: Server) {
    server.stop(Duration::from_secs(1));
}

/// Whether this machine has an IPv6 loopback.
fn has_ipv6() -> bool {
    let ok = TcpListener::bind("[::1]:0").is_ok();
    if !ok {
        println!("skipped: no IPv6 loopback on this machine");
    }
    ok
}

/// A port with nothing listening on `ip` (taken from a listener that is
/// then closed).
fn closed_port(ip: &str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    listener.local_addr().expect("local_addr").port()
}

/// A listener on `addr` that never accepts, with its backlog filled, so
/// that a new connect gets no answer at all.
struct FullBacklog {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<socket2::Socket>,
}

fn full_backlog(ip: &str) -> FullBacklog {
    let addr: SocketAddr = (ip, 0)
        .to_socket_addrs()
        .expect("parse")
        .next()
        .expect("an address");
    let listener = socket2::Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    if addr.is_ipv6() {
        listener.set_only_v6(true).unwrap();
    }
    listener.bind(&SockAddr::from(addr)).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&SockAddr::from(addr));
        fillers.push(s);
    }
    // Let the handshakes that can complete do so.
    std::thread::sleep(Duration::from_millis(100));
    FullBacklog {
        addr,
        _listener: listener,
        _fillers: fillers,
    }
}

/// A resolver failure that is not "no such name" (an offline resolver that
/// answers "try again") is tolerated, with the reason printed.
fn assert_no_such_domain(err: &ClientError, what: &str) {
    match err {
        ClientError::Nxdomain => {}
        ClientError::Resolve(reason) => {
            println!("{what}: resolver did not answer ({reason}); tolerated")
        }
        ClientError::Timeout(Timeout::Resolve) => println!("{what}: resolver timed out; tolerated"),
        other => panic!("{what}: expected no such domain, got {other:?}"),
    }
}

#[test]
fn unknown_host_is_no_such_domain_for_each_family_tried() {
    let host = "atoll-client-test.invalid";
    for preference in [
        IpVersionPreference::Ipv4Only,
        IpVersionPreference::Ipv4Preferred,
        IpVersionPreference::Ipv6Only,
        IpVersionPreference::Ipv6Preferred,
    ] {
        let err = Options::new(host, 80)
            .ip_version_preference(preference)
            .resolve_timeout(Some(Duration::from_secs(3)))
            .connect()
            .expect_err("an .invalid name must not connect");
        let what = format!("{preference:?}");
        match (preference, &err) {
            (IpVersionPreference::Ipv4Only, ConnectError::Ipv4(e))
            | (IpVersionPreference::Ipv6Only, ConnectError::Ipv6(e)) => {
                assert_no_such_domain(e, &what)
            }
            (
                IpVersionPreference::Ipv4Preferred | IpVersionPreference::Ipv6Preferred,
                ConnectError::Both { ipv4, ipv6 },
            ) => {
                assert_no_such_domain(ipv4, &what);
                assert_no_such_domain(ipv6, &what);
            }
            _ => panic!("{what}: wrong families in {err:?}"),
        }
    }
}

#[test]
fn a_name_resolves_and_connects() {
    let (server, port) = echo_server();
    // localhost has 127.0.0.1 everywhere; with IPv6 preferred the IPv6
    // attempt fails or succeeds first, and the echo server is IPv4 only.
    let mut conn = Options::new("localhost", port)
        .connect()
        .expect("connect to localhost");
    assert!(conn.peer_addr().is_ipv4());
    conn.send(b"hi").unwrap();
    assert_eq!(conn.recv_exact(2, WAIT).unwrap(), b"hi");
    // With a resolution timeout the lookup runs in a helper thread.
    let conn = Options::new("localhost", port)
        .ip_version_preference(IpVersionPreference::Ipv4Only)
        .resolve_timeout(Some(PATIENCE))
        .connect()
        .expect("connect to localhost over IPv4");
    assert!(conn.peer_addr().is_ipv4());
    stop(server);
}

#[test]
fn a_send_to_a_peer_that_does_not_read_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let timeout = Duration::from_millis(200);
    let mut conn = Options::new("127.0.0.1", listener.local_addr().unwrap().port())
        .send_timeout(Some(timeout))
        .connect()
        .unwrap();
    let (_peer, _) = listener.accept().unwrap();
    assert_eq!(conn.send_timeout(), Some(timeout));
    // Far more than both socket buffers hold.
    let big = vec![0u8; 64 << 20];
    let began = Instant::now();
    let err = conn.send(&big).expect_err("the peer does not read");
    let took = began.elapsed();
    // The kind, what went out (the socket buffers' worth) and the rest.
    match err {
        ClientError::Timeout(Timeout::Send { sent, unsent }) => {
            assert!(sent > 0, "the socket buffers took nothing");
            assert_eq!(sent as usize + unsent.len(), big.len());
        }
        other => panic!("expected a send timeout, got {other:?}"),
    }
    assert!(took >= timeout && took < PATIENCE, "took {took:?}");
}

#[test]
fn ipv6_preferred_reaches_an_ipv6_only_server() {
    if !has_ipv6() {
        return;
    }
    let server = echo_on("::1".parse().unwrap());
    let port = tcp_addr(&server).port();
    // The IPv4 address is listed first: the preference must reorder.
    let v4: SocketAddr = ([127, 0, 0, 1], closed_port("127.0.0.1")).into();
    let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
    let mut conn = Options::new("localhost", port)
        .addrs([v4, v6])
        .connect()
        .expect("connect over IPv6");
    assert_eq!(conn.peer_addr(), v6);
    conn.send(b"six").unwrap();
    assert_eq!(conn.recv_exact(3, WAIT).unwrap(), b"six");
    // A literal IPv6 address, with brackets, works too.
    let conn = client::connect("[::1]", port).expect("connect to [::1]");
    assert!(conn.peer_addr().is_ipv6());
    stop(server);
}

#[test]
fn ipv6_preferred_falls_back_to_an_ipv4_only_server() {
    let (server, port) = echo_server();
    let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, closed_port_v6_or(port)).into();
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut conn = Options::new("localhost", port)
        .addrs([v6, v4])
        .connect()
        .expect("fall back to IPv4");
    assert_eq!(conn.peer_addr(), v4);
    conn.send(b"four").unwrap();
    assert_eq!(conn.recv_exact(4, WAIT).unwrap(), b"four");
    // A literal IPv4 address has no IPv6 address: IPv6 fails with no such
    // domain and IPv4 connects.
    assert!(client::connect("127.0.0.1", port).is_ok());
    stop(server);
}

/// A closed IPv6 port if there is an IPv6 loopback; otherwise `port` (an
/// IPv6 connect then fails with "address family not supported" or
/// "address not available", which is a failure all the same).
fn closed_port_v6_or(port: u16) -> u16 {
    TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .map_or(port, |a| a.port())
}

#[test]
fn ipv6_only_against_an_ipv4_only_server_reports_the_ipv6_failure() {
    let (server, port) = echo_server();
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, closed_port_v6_or(port)).into();
    let err = Options::new("localhost", port)
        .addrs([v4, v6])
        .ip_version_preference(IpVersionPreference::Ipv6Only)
        .connect()
        .expect_err("no IPv6 server");
    match &err {
        ConnectError::Ipv6(e) => assert!(
            matches!(
                e,
                ClientError::Econnrefused | ClientError::Eaddrnotavail | ClientError::Eafnosupport
            ),
            "{e:?}"
        ),
        other => panic!("expected an IPv6 failure, got {other:?}"),
    }
    // The message is its own; the cause comes once, from `source()`.
    assert_eq!(err.to_string(), "IPv6 connection failed");
    let cause = std::error::Error::source(&err)
        .expect("a source")
        .to_string();
    assert_eq!(
        util::chain(&err),
        format!("IPv6 connection failed: {cause}")
    );
    // The literal IPv4 address has no IPv6 address at all.
    let err = Options::new("127.0.0.1", port)
        .ip_version_preference(IpVersionPreference::Ipv6Only)
        .connect()
        .expect_err("no IPv6 address");
    assert_eq!(err, ConnectError::Ipv6(ClientError::Nxdomain));
    stop(server);
}

#[test]
fn both_families_refused_reports_both_reasons() {
    if !has_ipv6() {
        return;
    }
    let v4: SocketAddr = ([127, 0, 0, 1], closed_port("127.0.0.1")).into();
    let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, closed_port("::1")).into();
    for happy in [false, true] {
        let err = Options::new("localhost", 1)
            .addrs([v4, v6])
            .happy_eyeballs(happy)
            .connect()
            .expect_err("nothing listens");
        assert_eq!(
            err,
            ConnectError::Both {
                ipv4: ClientError::Econnrefused,
                ipv6: ClientError::Econnrefused
            },
            "happy eyeballs {happy}"
        );
        let text = err.to_string();
        assert!(text.contains("IPv6") && text.contains("IPv4"), "{text}");
    }
}

#[test]
fn connect_times_out_against_a_full_backlog_per_family() {
    let timeout = Duration::from_millis(300);
    let v4 = full_backlog("127.0.0.1");
    let began = Instant::now();
    let err = Options::new("localhost", v4.addr.port())
        .addrs([v4.addr])
        .ip_version_preference(IpVersionPreference::Ipv4Only)
        .connect_timeout(Some(timeout))
        .connect()
        .expect_err("the backlog is full");
    let took = began.elapsed();
    assert_eq!(
        err,
        ConnectError::Ipv4(ClientError::Timeout(Timeout::Connect))
    );
    assert!(err.is_timeout());
    assert!(took >= timeout && took < PATIENCE, "IPv4 took {took:?}");

    if !has_ipv6() {
        return;
    }
    let v6 = full_backlog("::1");
    let began = Instant::now();
    let err = Options::new("localhost", v6.addr.port())
        .addrs([v6.addr])
        .ip_version_preference(IpVersionPreference::Ipv6Only)
        .connect_timeout(Some(timeout))
        .connect()
        .expect_err("the backlog is full");
    let took = began.elapsed();
    assert_eq!(
        err,
        ConnectError::Ipv6(ClientError::Timeout(Timeout::Connect))
    );
    assert!(took >= timeout && took < PATIENCE, "IPv6 took {took:?}");

    // Both families: as mug, the timeout is spent once per family.
    let began = Instant::now();
    let err = Options::new("localhost", 1)
        .addrs([v4.addr, v6.addr])
        .connect_timeout(Some(timeout))
        .connect()
        .expect_err("both backlogs are full");
    let took = began.elapsed();
    assert_eq!(
        err,
        ConnectError::Both {
            ipv4: ClientError::Timeout(Timeout::Connect),
            ipv6: ClientError::Timeout(Timeout::Connect)
        }
    );
    assert!(took >= timeout * 2 && took < PATIENCE, "both took {took:?}");
}

#[test]
fn happy_eyeballs_falls_back_to_ipv4_after_the_head_start() {
    if !has_ipv6() {
        return;
    }
    let v6 = full_backlog("::1");
    let (server, port) = echo_server();
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    // Without the race, IPv6 would hold the connect for its whole timeout.
    let began = Instant::now();
    let mut conn = Options::new("localhost", port)
        .addrs([v6.addr, v4])
        .happy_eyeballs(true)
        .connect_timeout(Some(Duration::from_secs(30)))
        .connect()
        .expect("IPv4 wins the race");
    let took = began.elapsed();
    assert_eq!(conn.peer_addr(), v4);
    assert!(
        took >= client::CONNECTION_ATTEMPT_DELAY && took < PATIENCE,
        "took {took:?}"
    );
    conn.send(b"raced").unwrap();
    assert_eq!(conn.recv_exact(5, WAIT).unwrap(), b"raced");

    // The sequential mode falls back too, after the IPv6 timeout.
    let timeout = Duration::from_millis(400);
    let began = Instant::now();
    let conn = Options::new("localhost", port)
        .addrs([v6.addr, v4])
        .connect_timeout(Some(timeout))
        .connect()
        .expect("IPv4 after IPv6 timed out");
    let took = began.elapsed();
    assert_eq!(conn.peer_addr(), v4);
    assert!(took >= timeout && took < PATIENCE, "took {took:?}");
    stop(server);
}

#[test]
fn happy_eyeballs_takes_the_preferred_family_when_both_answer() {
    if !has_ipv6() {
        return;
    }
    let v6_server = echo_on("::1".parse().unwrap());
    let (v4_server, v4_port) = echo_server();
    let v6: SocketAddr = tcp_addr(&v6_server);
    let v4: SocketAddr = ([127, 0, 0, 1], v4_port).into();
    let conn = Options::new("localhost", 1)
        .addrs([v4, v6])
        .happy_eyeballs(true)
        .connect()
        .expect("connect");
    assert_eq!(conn.peer_addr(), v6);
    let conn = Options::new("localhost", 1)
        .addrs([v4, v6])
        .happy_eyeballs(true)
        .ip_version_preference(IpVersionPreference::Ipv4Preferred)
        .connect()
        .expect("connect");
    assert_eq!(conn.peer_addr(), v4);
    stop(v6_server);
    stop(v4_server);
}

#[test]
fn happy_eyeballs_with_localhost_when_it_resolves_to_both_families() {
    let addrs: Vec<SocketAddr> = match ("localhost", 1).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            println!("skipped: localhost does not resolve ({e})");
            return;
        }
    };
    let both = addrs.iter().any(|a| a.is_ipv4()) && addrs.iter().any(|a| a.is_ipv6());
    if !both || !has_ipv6() {
        println!("skipped: localhost resolves to {addrs:?}, not to both families");
        return;
    }
    let (server, port) = echo_server();
    // Nothing on ::1 at this port: IPv6 is refused, the race goes to IPv4.
    let conn = Options::new("localhost", port)
        .happy_eyeballs(true)
        .connect()
        .expect("falls back to IPv4");
    assert!(conn.peer_addr().is_ipv4());
    stop(server);
}

#[test]
fn recv_with_zero_timeout_on_a_fresh_connection_times_out() {
    let (server, port) = echo_server();
    let mut conn = client::connect("127.0.0.1", port).unwrap();
    assert_eq!(
        conn.recv(Some(Duration::ZERO)),
        Err(ClientError::Timeout(Timeout::Recv))
    );
    let wait = Duration::from_millis(150);
    let began = Instant::now();
    assert_eq!(
        conn.recv(Some(wait)),
        Err(ClientError::Timeout(Timeout::Recv))
    );
    assert!(began.elapsed() >= wait);
    // The connection still works after a timeout.
    conn.send(b"ok").unwrap();
    assert_eq!(conn.recv_exact(2, WAIT).unwrap(), b"ok");
    stop(server);
}

/// Sends four messages as four writes, then reports on the channel.
struct FourWrites(crossbeam_channel::Sender<()>);

impl Handler for FourWrites {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        for part in [&b"one"[..], b"two", b"three", b"four"] {
            if let Err(e) = socket.send(part) {
                return Flow::error(e);
            }
        }
        let _ = self.0.send(());
        Flow::Continue
    }
}

#[test]
fn four_writes_arrive_in_one_receive() {
    let (tx, rx) = unbounded();
    let server = util::builder()
        .num_workers(2)
        .start(move |_| Ok(FourWrites(tx.clone())))
        .unwrap();
    let mut conn = client::connect("127.0.0.1", tcp_addr(&server).port()).unwrap();
    rx.recv_timeout(PATIENCE).expect("the server wrote");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(conn.recv(WAIT).unwrap(), b"onetwothreefour");
    stop(server);
}

#[test]
fn send_and_receive_report_closed_after_shutdown() {
    let (server, port) = echo_server();
    let mut conn = client::connect("127.0.0.1", port).unwrap();
    conn.send(b"x").unwrap();
    conn.shutdown().unwrap();
    assert!(conn.is_closed());
    assert_eq!(conn.send(b"y"), Err(ClientError::Closed));
    assert_eq!(conn.recv(WAIT), Err(ClientError::Closed));
    assert_eq!(conn.recv(Some(Duration::ZERO)), Err(ClientError::Closed));
    assert_eq!(conn.recv_exact(1, WAIT), Err(ClientError::Closed));
    let (tx, _rx) = unbounded();
    assert_eq!(conn.arm(&tx), Err(ClientError::Closed));
    // Through the std traits: end of stream, and the same error back.
    let mut buf = [0u8; 4];
    assert_eq!(conn.read(&mut buf).unwrap(), 0);
    let err = conn.write(b"z").unwrap_err();
    assert_eq!(ClientError::from(err), ClientError::Closed);
    // Shutting down twice is harmless.
    conn.shutdown().unwrap();
    stop(server);
}

#[test]
fn a_peer_close_is_closed() {
    let server = util::builder()
        .num_workers(2)
        .start(|_| Ok(Hangup))
        .unwrap();
    let mut conn = client::connect("127.0.0.1", tcp_addr(&server).port()).unwrap();
    assert_eq!(conn.recv(WAIT), Err(ClientError::Closed));
    assert_eq!(conn.recv(WAIT), Err(ClientError::Closed));
    stop(server);
}

#[test]
fn recv_exact_keeps_partial_bytes_across_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut conn = client::connect("127.0.0.1", listener.local_addr().unwrap().port()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.write_all(b"hel").unwrap();
    let wait = Duration::from_millis(100);
    let began = Instant::now();
    assert_eq!(
        conn.recv_exact(5, Some(wait)),
        Err(ClientError::Timeout(Timeout::Recv))
    );
    assert!(began.elapsed() >= wait);
    // Still short: the partial bytes are kept a second time.
    assert_eq!(
        conn.recv_exact(5, Some(Duration::ZERO)),
        Err(ClientError::Timeout(Timeout::Recv))
    );
    peer.write_all(b"lo, world").unwrap();
    assert_eq!(conn.recv_exact(5, WAIT).unwrap(), b"hello");
    assert_eq!(conn.recv_exact(7, WAIT).unwrap(), b", world");
    // More than asked for stays buffered for the next call.
    peer.write_all(b"abcdef").unwrap();
    assert_eq!(conn.recv_exact(2, WAIT).unwrap(), b"ab");
    let mut rest = Vec::new();
    while rest.len() < 4 {
        rest.extend(conn.recv(WAIT).unwrap());
    }
    assert_eq!(rest, b"cdef");
}

#[test]
fn recv_exact_of_a_huge_length_times_out_without_allocating_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut conn = client::connect("127.0.0.1", listener.local_addr().unwrap().port()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.write_all(b"abc").unwrap();
    let wait = Some(Duration::from_millis(100));
    assert_eq!(
        conn.recv_exact(usize::MAX, wait),
        Err(ClientError::Timeout(Timeout::Recv))
    );
    assert_eq!(conn.recv(WAIT).unwrap(), b"abc");
}

#[test]
fn a_panicking_packet_mapping_does_not_stop_active_mode() {
    let (server, port) = echo_server();
    let mut bad = client::connect("127.0.0.1", port).unwrap();
    let mut good = client::connect("127.0.0.1", port).unwrap();
    let (tx, rx) = unbounded::<Packet>();
    bad.arm_with(&tx, |_| panic!("a mapping that panics (expected)"))
        .unwrap();
    bad.send(b"boom").unwrap();
    // Let the poll thread run into the panic first.
    std::thread::sleep(Duration::from_millis(200));
    good.arm(&tx).unwrap();
    good.send(b"fine").unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Data(good.id(), b"fine".to_vec())
    );
    stop(server);
}

#[test]
fn recv_exact_returns_what_came_when_the_peer_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut conn = client::connect("127.0.0.1", listener.local_addr().unwrap().port()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.write_all(b"abc").unwrap();
    drop(peer);
    assert_eq!(conn.recv_exact(10, WAIT).unwrap(), b"abc");
    assert_eq!(conn.recv_exact(10, WAIT), Err(ClientError::Closed));
}

#[test]
fn send_vectored_sends_every_slice_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut conn = client::connect("127.0.0.1", listener.local_addr().unwrap().port()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        peer.read_to_end(&mut all).map(|_| all)
    });
    // Large enough that the kernel takes it in several writes.
    let a = vec![b'a'; 700_000];
    let b = vec![b'b'; 3];
    let c = vec![b'c'; 500_000];
    conn.send_vectored(&[
        IoSlice::new(&a),
        IoSlice::new(&[]),
        IoSlice::new(&b),
        IoSlice::new(&c),
    ])
    .unwrap();
    conn.shutdown().unwrap();
    let all = reader.join().unwrap().unwrap();
    assert_eq!(all.len(), a.len() + b.len() + c.len());
    assert_eq!(all, [a, b, c].concat());
}

#[test]
fn read_and_write_traits_work_with_std_adapters() {
    let (server, port) = echo_server();
    let mut conn = client::connect("127.0.0.1", port).unwrap();
    writeln!(conn, "first line").unwrap();
    conn.write_all(b"second line\n").unwrap();
    conn.flush().unwrap();
    let mut reader = BufReader::new(&mut conn);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "first line\n");
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "second line\n");
    stop(server);
}

#[test]
fn active_mode_delivers_exactly_one_message_per_arming() {
    let (server, port) = echo_server();
    let mut conn = client::connect("127.0.0.1", port).unwrap();
    let (tx, rx) = unbounded();
    conn.arm(&tx).unwrap();
    assert!(conn.is_armed());
    assert_eq!(conn.recv(Some(Duration::ZERO)), Err(ClientError::Armed));
    assert_eq!(
        conn.recv_exact(1, Some(Duration::ZERO)),
        Err(ClientError::Armed)
    );
    assert_eq!(conn.arm(&tx), Err(ClientError::Armed));
    // Sending while armed is allowed.
    conn.send(b"one").unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Data(conn.id(), b"one".to_vec())
    );
    assert!(!conn.is_armed());
    // Not armed: the next echo stays in the socket.
    conn.send(b"two").unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    conn.arm(&tx).unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Data(conn.id(), b"two".to_vec())
    );
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    // Back in passive mode, receive works again.
    conn.send(b"three").unwrap();
    assert_eq!(conn.recv_exact(5, WAIT).unwrap(), b"three");
    stop(server);
}

#[test]
fn active_mode_reports_the_peer_close() {
    let server = util::builder()
        .num_workers(2)
        .start(|_| Ok(Hangup))
        .unwrap();
    let mut conn = client::connect("127.0.0.1", tcp_addr(&server).port()).unwrap();
    let (tx, rx) = unbounded();
    conn.arm(&tx).unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Closed(conn.id())
    );
    assert!(!conn.is_armed());
    stop(server);
}

#[test]
fn active_mode_selects_over_connections_and_another_channel() {
    let (server, port) = echo_server();
    let mut a = client::connect("127.0.0.1", port).unwrap();
    let mut b = client::connect("127.0.0.1", port).unwrap();
    #[derive(Debug)]
    enum Event {
        A(Packet),
        B(Packet),
    }
    let (events_tx, events) = unbounded();
    let (ticks_tx, ticks) = unbounded::<&str>();
    a.arm_with(&events_tx, Event::A).unwrap();
    b.arm_with(&events_tx, Event::B).unwrap();
    b.send(b"to b").unwrap();
    ticks_tx.send("tick").unwrap();
    a.send(b"to a").unwrap();
    let (mut got_a, mut got_b, mut got_tick) = (false, false, false);
    while !(got_a && got_b && got_tick) {
        select! {
            recv(events) -> event => match event.unwrap() {
                Event::A(Packet::Data(id, data)) => {
                    assert_eq!((id, data.as_slice()), (a.id(), &b"to a"[..]));
                    got_a = true;
                }
                Event::B(Packet::Data(id, data)) => {
                    assert_eq!((id, data.as_slice()), (b.id(), &b"to b"[..]));
                    got_b = true;
                }
                other => panic!("unexpected {other:?}"),
            },
            recv(ticks) -> tick => {
                assert_eq!(tick.unwrap(), "tick");
                got_tick = true;
            }
            default(PATIENCE) => panic!("a: {got_a}, b: {got_b}, tick: {got_tick}"),
        }
    }
    stop(server);
}

#[test]
fn arming_delivers_bytes_a_timed_out_recv_exact_kept() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut conn = client::connect("127.0.0.1", listener.local_addr().unwrap().port()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.write_all(b"part").unwrap();
    assert_eq!(
        conn.recv_exact(10, Some(Duration::from_millis(100))),
        Err(ClientError::Timeout(Timeout::Recv))
    );
    let (tx, rx) = unbounded();
    conn.arm(&tx).unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Data(conn.id(), b"part".to_vec())
    );
    // The bytes already in the socket are found by the poll thread's
    // first read, without a new readiness edge.
    peer.write_all(b"next").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    conn.arm(&tx).unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Data(conn.id(), b"next".to_vec())
    );
}

#[test]
fn disarm_cancels_and_dropping_an_armed_connection_closes_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut conn = client::connect("127.0.0.1", port).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    let (tx, rx) = unbounded();
    conn.arm(&tx).unwrap();
    assert!(conn.disarm());
    assert!(!conn.disarm());
    peer.write_all(b"quiet").unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(conn.recv_exact(5, WAIT).unwrap(), b"quiet");

    conn.arm(&tx).unwrap();
    drop(conn);
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        peer.read(&mut buf).unwrap(),
        0,
        "the dropped connection closed"
    );
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_reset_is_an_error_in_active_and_passive_mode() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reset = |listener: &TcpListener| {
        let (peer, _) = listener.accept().unwrap();
        // Linger zero: the close sends a reset instead of a FIN.
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
    };
    let mut conn = client::connect("127.0.0.1", port).unwrap();
    reset(&listener);
    let (tx, rx) = unbounded();
    conn.arm(&tx).unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Error(conn.id(), ClientError::Econnreset)
    );

    let mut conn = client::connect("127.0.0.1", port).unwrap();
    reset(&listener);
    assert_eq!(conn.recv(WAIT), Err(ClientError::Econnreset));
}

#[test]
fn connections_and_errors_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<client::Client>();
    send_sync::<ClientError>();
    send_sync::<ConnectError>();
    send_sync::<Packet>();
    send_sync::<Options>();
}

#[test]
fn an_io_error_of_every_kind_and_code_converts_without_panic() {
    use io::ErrorKind as K;
    let mut kinds = vec![
        K::NotFound,
        K::PermissionDenied,
        K::ConnectionRefused,
        K::ConnectionReset,
        K::ConnectionAborted,
        K::NotConnected,
        K::AddrInUse,
        K::AddrNotAvailable,
        K::BrokenPipe,
        K::AlreadyExists,
        K::WouldBlock,
        K::InvalidInput,
        K::InvalidData,
        K::TimedOut,
        K::WriteZero,
        K::Interrupted,
        K::Unsupported,
        K::UnexpectedEof,
        K::OutOfMemory,
        K::Other,
    ];
    for code in 0..200 {
        // Every raw code converts, and keeps its code.
        let err = ClientError::from(io::Error::from_raw_os_error(code));
        assert_eq!(err.raw_os_error(), Some(code), "{err:?}");
        assert!(!err.to_string().is_empty());
        // The kinds std knows for OS codes, including those newer than
        // this crate's minimum Rust.
        kinds.push(io::Error::from_raw_os_error(code).kind());
    }
    for kind in kinds {
        for err in [
            io::Error::from(kind),
            io::Error::new(kind, "with a message"),
        ] {
            let converted = ClientError::from(err);
            assert!(!converted.to_string().is_empty());
            // And back to io::Error and again: the same error.
            let back: io::Error = converted.clone().into();
            assert_eq!(ClientError::from(back), converted);
        }
    }
    assert_eq!(
        ClientError::from(io::Error::from(K::UnexpectedEof)),
        ClientError::Closed
    );
    // A timeout without its kind is the system's, not one of atoll's.
    assert_eq!(
        ClientError::from(io::Error::from(K::TimedOut)),
        ClientError::Etimedout
    );
    assert_eq!(
        ClientError::from(io::Error::from(K::WouldBlock)),
        ClientError::Ewouldblock
    );
    assert_eq!(
        ClientError::from(io::Error::from_raw_os_error(libc::ECONNREFUSED)),
        ClientError::Econnrefused
    );
    assert_eq!(
        ClientError::from(io::Error::from_raw_os_error(libc::ETIMEDOUT)),
        ClientError::Etimedout
    );
    assert!(matches!(
        ClientError::from(io::Error::from(K::InvalidData)),
        ClientError::Other {
            kind: K::InvalidData,
            code: None,
            ..
        }
    ));
}

/// The name mug gives each case: a `match` naming every case of mug's
/// list, which must compile on every platform.
fn mug_name(err: &ClientError) -> &'static str {
    match err {
        ClientError::Closed => "Closed",
        ClientError::Timeout(_) => "Timeout",
        ClientError::Eaddrinuse => "Eaddrinuse",
        ClientError::Eaddrnotavail => "Eaddrnotavail",
        ClientError::Eafnosupport => "Eafnosupport",
        ClientError::Ealready => "Ealready",
        ClientError::Econnaborted => "Econnaborted",
        ClientError::Econnrefused => "Econnrefused",
        ClientError::Econnreset => "Econnreset",
        ClientError::Edestaddrreq => "Edestaddrreq",
        ClientError::Ehostdown => "Ehostdown",
        ClientError::Ehostunreach => "Ehostunreach",
        ClientError::Einprogress => "Einprogress",
        ClientError::Eisconn => "Eisconn",
        ClientError::Emsgsize => "Emsgsize",
        ClientError::Enetdown => "Enetdown",
        ClientError::Enetunreach => "Enetunreach",
        ClientError::Enopkg => "Enopkg",
        ClientError::Enoprotoopt => "Enoprotoopt",
        ClientError::Enotconn => "Enotconn",
        ClientError::Enotty => "Enotty",
        ClientError::Enotsock => "Enotsock",
        ClientError::Eproto => "Eproto",
        ClientError::Eprotonosupport => "Eprotonosupport",
        ClientError::Eprototype => "Eprototype",
        ClientError::Esocktnosupport => "Esocktnosupport",
        ClientError::Etimedout => "Etimedout",
        ClientError::Ewouldblock => "Ewouldblock",
        ClientError::Exbadport => "Exbadport",
        ClientError::Exbadseq => "Exbadseq",
        ClientError::Nxdomain => "Nxdomain",
        ClientError::Eacces => "Eacces",
        ClientError::Eagain => "Eagain",
        ClientError::Ebadf => "Ebadf",
        ClientError::Ebadmsg => "Ebadmsg",
        ClientError::Ebusy => "Ebusy",
        ClientError::Edeadlk => "Edeadlk",
        ClientError::Edeadlock => "Edeadlock",
        ClientError::Edquot => "Edquot",
        ClientError::Eexist => "Eexist",
        ClientError::Efault => "Efault",
        ClientError::Efbig => "Efbig",
        ClientError::Eftype => "Eftype",
        ClientError::Eintr => "Eintr",
        ClientError::Einval => "Einval",
        ClientError::Eio => "Eio",
        ClientError::Eisdir => "Eisdir",
        ClientError::Eloop => "Eloop",
        ClientError::Emfile => "Emfile",
        ClientError::Emlink => "Emlink",
        ClientError::Emultihop => "Emultihop",
        ClientError::Enametoolong => "Enametoolong",
        ClientError::Enfile => "Enfile",
        ClientError::Enobufs => "Enobufs",
        ClientError::Enodev => "Enodev",
        ClientError::Enolck => "Enolck",
        ClientError::Enolink => "Enolink",
        ClientError::Enoent => "Enoent",
        ClientError::Enomem => "Enomem",
        ClientError::Enospc => "Enospc",
        ClientError::Enosr => "Enosr",
        ClientError::Enostr => "Enostr",
        ClientError::Enosys => "Enosys",
        ClientError::Enotblk => "Enotblk",
        ClientError::Enotdir => "Enotdir",
        ClientError::Enotsup => "Enotsup",
        ClientError::Enxio => "Enxio",
        ClientError::Eopnotsupp => "Eopnotsupp",
        ClientError::Eoverflow => "Eoverflow",
        ClientError::Eperm => "Eperm",
        ClientError::Epipe => "Epipe",
        ClientError::Erange => "Erange",
        ClientError::Erofs => "Erofs",
        ClientError::Espipe => "Espipe",
        ClientError::Esrch => "Esrch",
        ClientError::Estale => "Estale",
        ClientError::Etxtbsy => "Etxtbsy",
        ClientError::Exdev => "Exdev",
        _ => "not in mug's list",
    }
}

#[test]
fn mugs_whole_error_list_exists_on_every_platform_with_a_description() {
    let all = [
        ClientError::Closed,
        ClientError::Timeout(Timeout::Recv),
        ClientError::Eaddrinuse,
        ClientError::Eaddrnotavail,
        ClientError::Eafnosupport,
        ClientError::Ealready,
        ClientError::Econnaborted,
        ClientError::Econnrefused,
        ClientError::Econnreset,
        ClientError::Edestaddrreq,
        ClientError::Ehostdown,
        ClientError::Ehostunreach,
        ClientError::Einprogress,
        ClientError::Eisconn,
        ClientError::Emsgsize,
        ClientError::Enetdown,
        ClientError::Enetunreach,
        ClientError::Enopkg,
        ClientError::Enoprotoopt,
        ClientError::Enotconn,
        ClientError::Enotty,
        ClientError::Enotsock,
        ClientError::Eproto,
        ClientError::Eprotonosupport,
        ClientError::Eprototype,
        ClientError::Esocktnosupport,
        ClientError::Etimedout,
        ClientError::Ewouldblock,
        ClientError::Exbadport,
        ClientError::Exbadseq,
        ClientError::Nxdomain,
        ClientError::Eacces,
        ClientError::Eagain,
        ClientError::Ebadf,
        ClientError::Ebadmsg,
        ClientError::Ebusy,
        ClientError::Edeadlk,
        ClientError::Edeadlock,
        ClientError::Edquot,
        ClientError::Eexist,
        ClientError::Efault,
        ClientError::Efbig,
        ClientError::Eftype,
        ClientError::Eintr,
        ClientError::Einval,
        ClientError::Eio,
        ClientError::Eisdir,
        ClientError::Eloop,
        ClientError::Emfile,
        ClientError::Emlink,
        ClientError::Emultihop,
        ClientError::Enametoolong,
        ClientError::Enfile,
        ClientError::Enobufs,
        ClientError::Enodev,
        ClientError::Enolck,
        ClientError::Enolink,
        ClientError::Enoent,
        ClientError::Enomem,
        ClientError::Enospc,
        ClientError::Enosr,
        ClientError::Enostr,
        ClientError::Enosys,
        ClientError::Enotblk,
        ClientError::Enotdir,
        ClientError::Enotsup,
        ClientError::Enxio,
        ClientError::Eopnotsupp,
        ClientError::Eoverflow,
        ClientError::Eperm,
        ClientError::Epipe,
        ClientError::Erange,
        ClientError::Erofs,
        ClientError::Espipe,
        ClientError::Esrch,
        ClientError::Estale,
        ClientError::Etxtbsy,
        ClientError::Exdev,
    ];
    let mut names = std::collections::HashSet::new();
    for err in &all {
        assert!(names.insert(mug_name(err)), "{err:?} named twice");
        assert!(!err.to_string().is_empty());
        // A case with a code on this platform converts back from it.
        if let Some(code) = err.raw_os_error() {
            let back = ClientError::from(io::Error::from_raw_os_error(code));
            assert_eq!(back.raw_os_error(), Some(code));
        }
    }
    assert_eq!(names.len(), 78);
    assert_eq!(ClientError::Exbadport.raw_os_error(), None);
    assert_eq!(ClientError::Exbadport.to_string(), "invalid port state");
    assert_eq!(ClientError::Exbadseq.to_string(), "bad command sequence");
}

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use atoll::client::TlsConfig;
    use atoll::transport::NativeTls;
    use native_tls::{Identity, TlsAcceptor};
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::OnceLock;

    /// A self-signed certificate for localhost and 127.0.0.1, made by the
    /// `openssl` command once per test run: (certificate PEM, key PEM).
    fn certificate() -> Option<&'static (Vec<u8>, Vec<u8>)> {
        static CERT: OnceLock<Option<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
        CERT.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("atoll-client-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let cert: PathBuf = dir.join("cert.pem");
            let key: PathBuf = dir.join("key.pem");
            let status = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=localhost"])
                .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            match status {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    println!("skipped: no openssl command to make a certificate");
                    None
                }
                Err(e) => panic!("openssl: {e}"),
                Ok(s) => {
                    assert!(s.success(), "openssl req failed: {s}");
                    let pair = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
                    let _ = std::fs::remove_dir_all(&dir);
                    Some(pair)
                }
            }
        })
        .as_ref()
    }

    fn trusting(cert: &[u8]) -> TlsConfig {
        TlsConfig::new()
            .add_root_certificates_pem(cert)
            .unwrap()
            .built_in_roots(false)
    }

    /// A native-tls server on 127.0.0.1 for one connection: optionally a
    /// plain "STARTTLS" exchange first, then TLS with these ALPN protocols,
    /// echoing until the client closes or sends "bye" (then it closes with
    /// a close notification) or "drop" (then it closes without one).
    fn tls_server(alpn: &[&str], starttls: bool) -> (u16, std::thread::JoinHandle<()>) {
        let (cert, key) = certificate().expect("certificate");
        let identity = Identity::from_pkcs8(cert, key).unwrap();
        let mut builder = TlsAcceptor::builder(identity);
        builder.accept_alpn(alpn);
        let acceptor = builder.build().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(PATIENCE)).unwrap();
            if starttls {
                let mut line = [0u8; 10];
                tcp.read_exact(&mut line).unwrap();
                assert_eq!(&line, b"STARTTLS\r\n");
                tcp.write_all(b"GO\r\n").unwrap();
            }
            let Ok(mut tls) = acceptor.accept(tcp) else {
                return; // a client that refused the certificate
            };
            let mut buf = [0u8; 4096];
            loop {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        tls.write_all(&buf[..n]).unwrap();
                        if &buf[..n] == b"bye" {
                            let _ = tls.shutdown();
                            return;
                        }
                        if &buf[..n] == b"drop" {
                            return;
                        }
                    }
                }
            }
        });
        (port, handle)
    }

    fn cert_or_skip() -> Option<&'static (Vec<u8>, Vec<u8>)> {
        certificate()
    }

    /// Echoes, and upgrades to TLS when the client says "STARTTLS\n".
    struct StartTlsEcho {
        tls: std::sync::Arc<dyn atoll::transport::Transport>,
    }

    impl Handler for StartTlsEcho {
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            if data == b"STARTTLS\n" {
                if let Err(e) = socket.send(b"GO\n") {
                    return Flow::error(e);
                }
                return socket
                    .upgrade(&*self.tls)
                    .map_or_else(Flow::error, |()| Flow::Continue);
            }
            socket
                .send(data)
                .map_or_else(Flow::error, |()| Flow::Continue)
        }
    }

    fn atoll_tls(cert: &[u8], key: &[u8], alpn: &[&str]) -> NativeTls {
        NativeTls::from_pem(cert, key)
            .and_then(|t| t.with_alpn(alpn))
            .expect("server TLS configuration")
    }

    #[test]
    fn tls_echo_against_atolls_tls_server_with_alpn_and_active_mode() {
        let Some((cert, key)) = cert_or_skip() else {
            return;
        };
        let server = util::builder()
            .num_workers(2)
            .transport(atoll_tls(cert, key, &["atoll-test", "http/1.1"]))
            .start(|_| Ok(Echo))
            .unwrap();
        let port = tcp_addr(&server).port();
        let mut conn = Options::new("localhost", port)
            .tls(Some(trusting(cert).alpn_protocols(&["atoll-test"])))
            .connect()
            .expect("TLS connect to atoll");
        assert!(conn.is_tls());
        assert_eq!(conn.alpn_protocol().as_deref(), Some(&b"atoll-test"[..]));
        conn.send(b"over tls").unwrap();
        assert_eq!(conn.recv_exact(8, WAIT).unwrap(), b"over tls");
        let (tx, rx) = unbounded();
        conn.arm(&tx).unwrap();
        conn.send(b"armed").unwrap();
        assert_eq!(
            rx.recv_timeout(PATIENCE).unwrap(),
            Packet::Data(conn.id(), b"armed".to_vec())
        );
        conn.shutdown().unwrap();
        assert_eq!(conn.recv(WAIT), Err(ClientError::Closed));
        stop(server);
    }

    #[test]
    fn starttls_upgrades_a_live_connection_to_atolls_server() {
        let Some((cert, key)) = cert_or_skip() else {
            return;
        };
        let tls: std::sync::Arc<dyn atoll::transport::Transport> =
            std::sync::Arc::new(atoll_tls(cert, key, &[]));
        let server = util::builder()
            .num_workers(2)
            .start(move |_| Ok(StartTlsEcho { tls: tls.clone() }))
            .unwrap();
        let mut conn = client::connect("localhost", tcp_addr(&server).port()).unwrap();
        conn.send(b"plain").unwrap();
        assert_eq!(conn.recv_exact(5, WAIT).unwrap(), b"plain");
        conn.send(b"STARTTLS\n").unwrap();
        assert_eq!(conn.recv_exact(3, WAIT).unwrap(), b"GO\n");
        conn.upgrade_tls(&trusting(cert)).expect("upgrade");
        assert!(conn.is_tls());
        conn.send(b"secure").unwrap();
        assert_eq!(conn.recv_exact(6, WAIT).unwrap(), b"secure");
        stop(server);
    }

    #[test]
    fn tls_echo_with_a_given_root_then_the_peer_close() {
        let Some((cert, _)) = cert_or_skip() else {
            return;
        };
        let (port, server) = tls_server(&[], false);
        let mut conn = Options::new("localhost", port)
            .tls(Some(trusting(cert)))
            .connect()
            .expect("TLS connect");
        assert!(conn.is_tls());
        assert_eq!(conn.alpn_protocol(), None);
        conn.send(b"secret").unwrap();
        assert_eq!(conn.recv_exact(6, WAIT).unwrap(), b"secret");
        assert_eq!(
            conn.recv(Some(Duration::ZERO)),
            Err(ClientError::Timeout(Timeout::Recv))
        );
        conn.send(b"bye").unwrap();
        assert_eq!(conn.recv_exact(3, WAIT).unwrap(), b"bye");
        assert_eq!(conn.recv(WAIT), Err(ClientError::Closed));
        server.join().unwrap();
    }

    #[test]
    fn tls_active_mode_delivers_decrypted_packets() {
        let Some((cert, _)) = cert_or_skip() else {
            return;
        };
        let (port, server) = tls_server(&[], false);
        let mut conn = Options::new("127.0.0.1", port)
            .tls(Some(trusting(cert)))
            .connect()
            .expect("TLS connect to an IP address");
        let (tx, rx) = unbounded();
        conn.arm(&tx).unwrap();
        conn.send(b"armed").unwrap();
        assert_eq!(
            rx.recv_timeout(PATIENCE).unwrap(),
            Packet::Data(conn.id(), b"armed".to_vec())
        );
        // The server goes away without a close notification: still a close.
        conn.send(b"drop").unwrap();
        assert_eq!(conn.recv_exact(4, WAIT).unwrap(), b"drop");
        conn.arm(&tx).unwrap();
        assert_eq!(
            rx.recv_timeout(PATIENCE).unwrap(),
            Packet::Closed(conn.id())
        );
        server.join().unwrap();
    }

    #[test]
    fn a_tls_server_that_never_answers_is_a_handshake_timeout() {
        // Accepts, reads the client's hello, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            // Reads whatever comes, held open until the client gives up
            // and closes.
            let mut hello = [0u8; 4096];
            while peer.read(&mut hello).is_ok_and(|n| n > 0) {}
        });
        let limit = Duration::from_millis(200);
        let began = Instant::now();
        let err = Options::new("127.0.0.1", port)
            .tls(Some(TlsConfig::new().handshake_timeout(Some(limit))))
            .connect()
            .expect_err("the server never answers");
        let took = began.elapsed();
        assert_eq!(
            err,
            ConnectError::Tls(ClientError::Timeout(Timeout::Handshake))
        );
        assert!(err.is_timeout());
        assert!(took >= limit && took < PATIENCE, "took {took:?}");
        silent.join().unwrap();
    }

    #[test]
    fn tls_with_an_unknown_root_or_the_wrong_name_fails_the_handshake() {
        let Some((cert, _)) = cert_or_skip() else {
            return;
        };
        let (port, server) = tls_server(&[], false);
        let err = Options::new("localhost", port)
            .tls(Some(TlsConfig::new().built_in_roots(false)))
            .connect()
            .expect_err("the certificate is not trusted");
        assert!(
            matches!(err, ConnectError::Tls(ClientError::Tls(_))),
            "{err:?}"
        );
        server.join().unwrap();

        let (port, server) = tls_server(&[], false);
        let err = Options::new("localhost", port)
            .tls(Some(trusting(cert).domain("not-localhost.invalid")))
            .connect()
            .expect_err("the name does not match");
        assert!(
            matches!(err, ConnectError::Tls(ClientError::Tls(_))),
            "{err:?}"
        );
        server.join().unwrap();
    }

    #[test]
    fn starttls_upgrades_a_live_connection_with_alpn() {
        let Some((cert, _)) = cert_or_skip() else {
            return;
        };
        let (port, server) = tls_server(&["atoll-test"], true);
        let mut conn = client::connect("localhost", port).unwrap();
        assert!(!conn.is_tls());
        let id = conn.id();
        conn.send(b"STARTTLS\r\n").unwrap();
        assert_eq!(conn.recv_exact(4, WAIT).unwrap(), b"GO\r\n");
        conn.upgrade_tls(&trusting(cert).alpn_protocols(&["atoll-test", "http/1.1"]))
            .expect("upgrade");
        assert!(conn.is_tls());
        assert_eq!(conn.id(), id);
        assert_eq!(conn.alpn_protocol().as_deref(), Some(&b"atoll-test"[..]));
        assert!(matches!(
            conn.upgrade_tls(&trusting(cert)),
            Err(ClientError::Tls(_))
        ));
        conn.send(b"over tls").unwrap();
        assert_eq!(conn.recv_exact(8, WAIT).unwrap(), b"over tls");
        conn.shutdown().unwrap();
        assert_eq!(conn.send(b"late"), Err(ClientError::Closed));
        server.join().unwrap();
    }
}

#[test]
fn as_fd_reaches_the_connection_and_never_a_closed_descriptor() {
    use std::os::fd::AsRawFd;
    let (server, port) = echo_server();
    let mut conn = client::connect("127.0.0.1", port).unwrap();
    let sock = socket2::SockRef::from(&conn);
    assert_eq!(
        sock.local_addr().unwrap().as_socket(),
        Some(conn.local_addr())
    );
    sock.set_keepalive(true).unwrap();
    assert!(sock.keepalive().unwrap());
    assert!(conn.as_raw_fd() >= 0);
    conn.send(b"still works\n").unwrap();
    assert_eq!(
        conn.recv_exact(12, Some(PATIENCE)).unwrap(),
        b"still works\n"
    );
    conn.shutdown().unwrap();
    let err = socket2::SockRef::from(&conn).local_addr().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK));
    stop(server);
}
