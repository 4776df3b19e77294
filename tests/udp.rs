//! The UDP server: sessions per datagram and per peer, limits, timeouts,
//! lifecycle, several listeners, IPv6, multicast, oversized datagrams.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use atoll::telemetry::{DropReason, Event, Kind};
use atoll::udp::SessionMode;
use atoll::{Flow, Handler, Server, Socket, UdpBuilder};
use util::{wait_until, PATIENCE};

fn udp_addr(server: &Server) -> SocketAddr {
    server.local_addr().unwrap().inet().unwrap()
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c
}

fn ask(c: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    c.send_to(msg, to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = c.recv_from(&mut buf).expect("a reply");
    assert_eq!(from, to, "the reply comes from the server's port");
    buf[..n].to_vec()
}

/// Echoes, then closes: one datagram, one session.
struct Echo;

impl Handler for Echo {
    fn handle_data(&mut self, d: &[u8], s: &mut Socket) -> Flow {
        s.send(d).map_or_else(Flow::error, |()| Flow::Close)
    }
}

/// A UDP builder bound to 127.0.0.1 on a free port, with four workers.
fn udp_builder() -> UdpBuilder {
    Server::udp()
        .ip([127, 0, 0, 1].into())
        .port(0)
        .num_workers(4)
}

fn udp(mode: SessionMode) -> UdpBuilder {
    udp_builder().session_mode(mode)
}

#[test]
fn ten_thousand_datagrams_from_ten_sockets_are_echoed_to_their_senders() {
    for mode in [SessionMode::PerDatagram, SessionMode::PerPeer] {
        let server = udp(mode).num_acceptors(2).start(|_| Ok(Echo)).unwrap();
        let to = udp_addr(&server);
        let clients: Vec<_> = (0..10u8)
            .map(|c| {
                thread::spawn(move || {
                    let s = client();
                    for i in 0..1000u32 {
                        let msg = [&[c][..], &i.to_be_bytes()[..], &[c; 50][..]].concat();
                        assert_eq!(ask(&s, to, &msg), msg, "{mode:?}");
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        server.stop(PATIENCE);
    }
}

/// Counts the datagrams of its session and answers with the count.
struct Counter {
    seen: u32,
    timeouts: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl Handler for Counter {
    fn handle_connection(&mut self, _: &mut Socket) -> Flow {
        self.connections.fetch_add(1, Ordering::SeqCst);
        Flow::Continue
    }
    fn handle_data(&mut self, _: &[u8], s: &mut Socket) -> Flow {
        self.seen += 1;
        s.send(&self.seen.to_be_bytes())
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
    fn handle_timeout(&mut self, _: &mut Socket) {
        self.timeouts.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_per_peer_session_keeps_state_across_datagrams_and_expires_after_its_idle_timeout() {
    let (timeouts, connections) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (t, c) = (timeouts.clone(), connections.clone());
    let server = udp(SessionMode::PerPeer)
        .read_timeout(Some(Duration::from_millis(200)))
        .start(move |_| {
            Ok(Counter {
                seen: 0,
                timeouts: t.clone(),
                connections: c.clone(),
            })
        })
        .unwrap();
    let to = udp_addr(&server);
    let (a, b) = (client(), client());
    for n in 1..=3u32 {
        assert_eq!(ask(&a, to, b"x"), n.to_be_bytes(), "one session per peer");
    }
    assert_eq!(
        ask(&b, to, b"x"),
        1u32.to_be_bytes(),
        "another peer, another session"
    );
    wait_until("both idle sessions timed out", || {
        timeouts.load(Ordering::SeqCst) == 2
    });
    assert_eq!(
        ask(&a, to, b"x"),
        1u32.to_be_bytes(),
        "a new session after the timeout"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 3);
    thread::sleep(Duration::from_millis(400));
    assert_eq!(
        timeouts.load(Ordering::SeqCst),
        3,
        "handle_timeout once per session"
    );
    server.stop(PATIENCE);
}

#[test]
fn one_shot_and_persistent_timeouts_apply_to_sessions() {
    struct Timed(mpsc::Sender<(&'static str, Instant)>);
    impl Handler for Timed {
        fn handle_data(&mut self, d: &[u8], _: &mut Socket) -> Flow {
            match d {
                b"once" => Flow::ContinueTimeout(Some(Duration::from_millis(100))),
                b"always" => Flow::ContinuePersistent(Some(Duration::from_millis(150))),
                _ => Flow::Continue,
            }
        }
        fn handle_timeout(&mut self, _: &mut Socket) {
            let _ = self.0.send(("timeout", Instant::now()));
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = udp(SessionMode::PerPeer)
        .read_timeout(Some(Duration::from_secs(30)))
        .start(move |_| Ok(Timed(tx.clone())))
        .unwrap();
    let to = udp_addr(&server);
    let started = Instant::now();
    client().send_to(b"once", to).unwrap();
    let (_, at) = rx.recv_timeout(PATIENCE).unwrap();
    assert!(at - started >= Duration::from_millis(100));
    let c = client();
    c.send_to(b"always", to).unwrap();
    thread::sleep(Duration::from_millis(50));
    let sent = Instant::now();
    c.send_to(b"again", to).unwrap();
    let (_, at) = rx.recv_timeout(PATIENCE).unwrap();
    assert!(
        at - sent >= Duration::from_millis(150),
        "the persistent timeout applied after the later datagram"
    );
    server.stop(PATIENCE);
}

/// Replies after a pause.
struct Slow;

impl Handler for Slow {
    fn handle_data(&mut self, d: &[u8], s: &mut Socket) -> Flow {
        thread::sleep(Duration::from_millis(200));
        s.send(d).map_or_else(Flow::error, |()| Flow::Close)
    }
}

#[test]
fn with_one_session_slot_a_second_datagram_waits_for_it_or_is_dropped_without_retries() {
    let server = udp(SessionMode::PerDatagram)
        .num_acceptors(1)
        .num_connections(Some(1))
        .max_connections_retry_wait(Duration::from_secs(5))
        .start(|_| Ok(Slow))
        .unwrap();
    let to = udp_addr(&server);
    let (a, b) = (client(), client());
    a.send_to(b"first", to).unwrap();
    thread::sleep(Duration::from_millis(50));
    b.send_to(b"second", to).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = a.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"first");
    let (n, _) = b.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"second", "served once the first session ended");
    server.stop(PATIENCE);

    let drops = Arc::new(Mutex::new(Vec::new()));
    let server = udp(SessionMode::PerDatagram)
        .num_acceptors(1)
        .num_connections(Some(1))
        .max_connections_retry_count(0)
        .start(|_| Ok(Slow))
        .unwrap();
    let seen = drops.clone();
    server.attach_sink(move |e: &Event<'_>| {
        if let Kind::SpawnError { .. } = e.kind {
            seen.lock().unwrap().push(e.name());
        }
    });
    let to = udp_addr(&server);
    a.send_to(b"first", to).unwrap();
    thread::sleep(Duration::from_millis(50));
    b.send_to(b"second", to).unwrap();
    let (n, _) = a.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"first");
    b.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    assert!(
        b.recv_from(&mut buf).is_err(),
        "the second datagram was dropped"
    );
    assert_eq!(server.stats().rejected, 1);
    assert_eq!(*drops.lock().unwrap(), ["acceptor.spawn_error"]);
    server.stop(PATIENCE);
}

#[test]
fn an_oversized_datagram_is_dropped_whole_and_reported_never_cut() {
    let drops = Arc::new(Mutex::new(Vec::new()));
    let server = udp(SessionMode::PerDatagram)
        .max_datagram_size(100)
        .start(|_| Ok(Echo))
        .unwrap();
    let seen = drops.clone();
    server.attach_sink(move |e: &Event<'_>| {
        if let Kind::DatagramDropped { len, reason, .. } = e.kind {
            seen.lock().unwrap().push((len, reason));
        }
    });
    let to = udp_addr(&server);
    let c = client();
    c.send_to(&[1u8; 200], to).unwrap();
    assert_eq!(
        ask(&c, to, &[2u8; 100]),
        [2u8; 100],
        "a datagram at the limit is served"
    );
    assert_eq!(*drops.lock().unwrap(), [(101, DropReason::TooLarge)]);
    server.stop(PATIENCE);
}

#[test]
fn several_listeners_share_one_port_and_all_serve() {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let server = udp(SessionMode::PerDatagram)
        .num_acceptors(3)
        .start(|_| Ok(Echo))
        .unwrap();
    let seen = accepted.clone();
    server.attach_sink(move |e: &Event<'_>| {
        if let Kind::AcceptorStop { connections, .. } = e.kind {
            seen.lock().unwrap().push(connections);
        }
    });
    let to = udp_addr(&server);
    assert_ne!(to.port(), 0);
    for _ in 0..90 {
        let c = client();
        assert_eq!(ask(&c, to, b"hi"), b"hi");
    }
    server.stop(PATIENCE);
    let per_listener = accepted.lock().unwrap().clone();
    assert_eq!(per_listener.len(), 3);
    assert_eq!(per_listener.iter().sum::<u64>(), 90);
    assert!(
        per_listener.iter().all(|&n| n > 0),
        "each listener served: {per_listener:?}"
    );
}

#[test]
fn stop_runs_handle_shutdown_on_live_sessions_and_returns() {
    struct Stay(mpsc::Sender<&'static str>);
    impl Handler for Stay {
        fn handle_data(&mut self, _: &[u8], s: &mut Socket) -> Flow {
            s.send(b"hello")
                .map_or_else(Flow::error, |()| Flow::Continue)
        }
        fn handle_shutdown(&mut self, s: &mut Socket) {
            let _ = s.send(b"bye");
            let _ = self.0.send("shutdown");
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = udp(SessionMode::PerPeer)
        .start(move |_| Ok(Stay(tx.clone())))
        .unwrap();
    let to = udp_addr(&server);
    let c = client();
    assert_eq!(ask(&c, to, b"x"), b"hello");
    let started = Instant::now();
    server.stop(PATIENCE);
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(rx.try_recv(), Ok("shutdown"));
    let mut buf = [0u8; 8];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"bye",
        "the socket was still open in handle_shutdown"
    );
}

#[test]
fn suspend_stops_handling_and_resume_restores_it_on_the_same_port() {
    let server = udp(SessionMode::PerDatagram).start(|_| Ok(Echo)).unwrap();
    let to = udp_addr(&server);
    let c = client();
    assert_eq!(ask(&c, to, b"before"), b"before");
    server.suspend().unwrap();
    assert!(server.local_addr().is_err());
    c.send_to(b"while suspended", to).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        c.recv_from(&mut buf).is_err(),
        "not handled while suspended"
    );
    server.resume().unwrap();
    assert_eq!(udp_addr(&server), to, "the same port");
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    // The datagram the kernel kept while suspended is handled now.
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"while suspended");
    assert_eq!(ask(&c, to, b"after"), b"after");
    server.stop(PATIENCE);
}

#[test]
fn ipv6_loopback_sessions_are_served() {
    let Ok(server) = udp(SessionMode::PerPeer)
        .ip("::1".parse().unwrap())
        .start(|_| Ok(Echo))
    else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let to = udp_addr(&server);
    let c = UdpSocket::bind("[::1]:0").unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(ask(&c, to, b"six"), b"six");
    server.stop(PATIENCE);
}

#[test]
fn a_multicast_group_joined_on_loopback_is_served_where_the_kernel_allows() {
    let group: std::net::Ipv4Addr = [239, 255, 42, 99].into();
    let server = match udp(SessionMode::PerDatagram)
        .ip([0, 0, 0, 0].into())
        .join_multicast_v4(group, [127, 0, 0, 1].into())
        .multicast_loop(true)
        .start(|_| Ok(Echo))
    {
        Ok(server) => server,
        Err(e) => {
            eprintln!("multicast on loopback not allowed here ({e}); skipped");
            return;
        }
    };
    let port = udp_addr(&server).port();
    let c = client();
    let sock = socket2::SockRef::from(&c);
    if let Err(e) = sock.set_multicast_if_v4(&[127, 0, 0, 1].into()) {
        eprintln!("cannot send multicast on loopback ({e}); skipped");
        server.stop(PATIENCE);
        return;
    }
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.send_to(b"to the group", (group, port)).unwrap();
    let mut buf = [0u8; 32];
    match c.recv_from(&mut buf) {
        Ok((n, _)) => assert_eq!(&buf[..n], b"to the group"),
        Err(e) => eprintln!("no multicast delivery on loopback here ({e}); skipped"),
    }
    server.stop(PATIENCE);
}

#[test]
fn send_to_reaches_a_third_party_from_the_servers_port() {
    struct Relay(SocketAddr);
    impl Handler for Relay {
        fn handle_data(&mut self, d: &[u8], s: &mut Socket) -> Flow {
            let relayed = [b"relay:", d].concat();
            s.send_to(&relayed, self.0)
                .map_or_else(Flow::error, |()| Flow::Close)
        }
    }
    let third = client();
    let third_addr = third.local_addr().unwrap();
    let server = udp(SessionMode::PerDatagram)
        .start(move |_| Ok(Relay(third_addr)))
        .unwrap();
    let to = udp_addr(&server);
    client().send_to(b"hi", to).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = third.recv_from(&mut buf).expect("the relayed datagram");
    assert_eq!((&buf[..n], from), (&b"relay:hi"[..], to));
    server.stop(PATIENCE);
}

#[test]
fn recv_in_a_per_peer_session_returns_that_peers_next_datagram() {
    struct Pairs;
    impl Handler for Pairs {
        fn handle_data(&mut self, first: &[u8], s: &mut Socket) -> Flow {
            let second = match s.recv(0) {
                Ok(d) => d,
                Err(e) => return Flow::error(e),
            };
            s.send(&[first, b"+", &second].concat())
                .map_or_else(Flow::error, |()| Flow::Continue)
        }
    }
    let server = udp(SessionMode::PerPeer).start(|_| Ok(Pairs)).unwrap();
    let to = udp_addr(&server);
    let (a, b) = (client(), client());
    a.send_to(b"a1", to).unwrap();
    b.send_to(b"b1", to).unwrap();
    b.send_to(b"b2", to).unwrap();
    a.send_to(b"a2", to).unwrap();
    let mut buf = [0u8; 64];
    let n = a.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"a1+a2");
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"b1+b2");
    server.stop(PATIENCE);
}

#[test]
fn a_udp_session_ends_with_handle_close_on_close_and_handle_error_on_error() {
    struct Ends(mpsc::Sender<String>);
    impl Handler for Ends {
        fn handle_data(&mut self, d: &[u8], _: &mut Socket) -> Flow {
            match d {
                b"close" => Flow::Close,
                b"fail" => Flow::error("bad datagram"),
                _ => Flow::Continue,
            }
        }
        fn handle_close(&mut self, s: &mut Socket) {
            // The socket is still open: a last datagram reaches the peer.
            let _ = s.send(b"bye");
            let _ = self.0.send("close".into());
        }
        fn handle_error(&mut self, error: &atoll::Error, _: &mut Socket) {
            let _ = self.0.send(format!("error: {}", util::chain(error)));
        }
    }
    for mode in [SessionMode::PerDatagram, SessionMode::PerPeer] {
        let (tx, rx) = mpsc::channel();
        let server = udp(mode).start(move |_| Ok(Ends(tx.clone()))).unwrap();
        let to = udp_addr(&server);
        let c = client();
        assert_eq!(ask(&c, to, b"close"), b"bye", "{mode:?}");
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "close", "{mode:?}");
        client().send_to(b"fail", to).unwrap();
        assert_eq!(
            rx.recv_timeout(PATIENCE).unwrap(),
            "error: handler error: bad datagram",
            "{mode:?}"
        );
        server.stop(PATIENCE);
    }
}
