//! How connections share the workers.

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use atoll::{Flow, Handler, SendError, Socket};
use util::{builder, connect, round_trip, tcp_addr};

/// Echoes short messages, swallows bulk data slowly, so that the flood
/// always has more waiting in the kernel than one read takes.
struct PingOrSink;

impl Handler for PingOrSink {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        if data.starts_with(b"ping") {
            return socket
                .send(data)
                .map_or_else(Flow::error, |()| Flow::Continue);
        }
        thread::sleep(Duration::from_millis(1));
        Flow::Continue
    }
}

#[test]
fn a_flooding_client_does_not_starve_another_on_a_single_worker() {
    let server = builder()
        .num_workers(1)
        .recv_buffer_size(Some(1 << 20))
        .num_acceptors(1)
        .start(|_| Ok(PingOrSink))
        .unwrap();
    let addr = tcp_addr(&server);

    // The flood: as fast as loopback takes it, for at most 20 s, until told.
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut flood = connect(addr);
            let chunk = vec![b'x'; 256 * 1024];
            let until = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if flood.write_all(&chunk).is_err() {
                    break;
                }
            }
            stop.load(Ordering::Relaxed)
        })
    };
    // Let the flood reach the server.
    thread::sleep(Duration::from_millis(200));

    let mut pinger = connect(addr);
    for _ in 0..20 {
        round_trip(&mut pinger, b"ping");
    }
    assert!(
        !flooder.is_finished(),
        "the pings were answered while the flood went on"
    );
    stop.store(true, Ordering::Relaxed);
    assert!(
        flooder.join().unwrap(),
        "the flood ran until the pings were done"
    );
}

/// Records what a connection saw; any overlap of two callbacks, any message
/// out of order or seen twice, fails the test.
struct Audited {
    busy: Arc<AtomicBool>,
    last_seq: Vec<u64>,
    messages: Arc<std::sync::atomic::AtomicU64>,
    violations: Arc<std::sync::atomic::AtomicU64>,
}

impl Audited {
    fn enter(&self) {
        if self.busy.swap(true, Ordering::SeqCst) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn leave(&self) {
        self.busy.store(false, Ordering::SeqCst);
    }
}

impl Handler<(usize, u64)> for Audited {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        self.enter();
        let flow = socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue);
        self.leave();
        flow
    }

    fn handle_message(&mut self, (sender, seq): (usize, u64), _socket: &mut Socket) -> Flow {
        self.enter();
        if seq != self.last_seq[sender] + 1 {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        self.last_seq[sender] = seq;
        self.messages.fetch_add(1, Ordering::SeqCst);
        self.leave();
        Flow::Continue
    }
}

/// The scheduling state machine under load: readiness, messages from many
/// threads and callback returns racing on the same connections, thousands
/// of times. No event lost, none delivered twice, none out of order, no two
/// callbacks of a connection at once.
#[test]
fn readiness_and_messages_racing_on_shared_connections_lose_nothing_and_never_overlap() {
    use std::sync::atomic::AtomicU64;
    const CONNS: usize = 8;
    const SENDERS: usize = 4;
    const PER_SENDER: u64 = 2_500;
    let messages = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let (m, v) = (messages.clone(), violations.clone());
    let server = builder()
        .num_workers(4)
        .start(move |_| {
            Ok(Audited {
                busy: Arc::new(AtomicBool::new(false)),
                last_seq: vec![0; SENDERS],
                messages: m.clone(),
                violations: v.clone(),
            })
        })
        .unwrap();
    let addr = tcp_addr(&server);
    let mut clients: Vec<_> = (0..CONNS).map(|_| connect(addr)).collect();
    util::wait_until("all connections listed", || {
        server.connections().len() == CONNS
    });
    let handles = server.connections();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let handles = handles.clone();
            thread::spawn(move || {
                for seq in 1..=PER_SENDER {
                    for h in &handles {
                        // A full queue gives the message back: retry
                        // until the handler catches up (back-pressure).
                        let mut message = (sender, seq);
                        loop {
                            match h.send(message) {
                                Ok(()) => break,
                                Err(SendError::Full(back)) => {
                                    message = back;
                                    thread::yield_now();
                                }
                                Err(e) => panic!("the connection is alive: {e}"),
                            }
                        }
                    }
                }
            })
        })
        .collect();
    // Meanwhile every connection keeps its socket readable.
    for round in 0..200u32 {
        for c in clients.iter_mut() {
            round_trip(c, &round.to_be_bytes());
        }
    }
    for s in senders {
        s.join().unwrap();
    }
    let expected = CONNS as u64 * SENDERS as u64 * PER_SENDER;
    util::wait_until("every message handled", || {
        messages.load(Ordering::SeqCst) == expected
    });
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "overlapping callbacks or misordered messages"
    );
    server.stop(util::PATIENCE);
}
