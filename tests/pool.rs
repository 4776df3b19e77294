//! How the worker pool serves callbacks that block: more workers while
//! they block, back to the base count after, a fixed pool when asked,
//! order kept, saturation reported; and what fast callbacks cost.

mod util;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use atoll::telemetry::Kind;
use atoll::{Flow, Handler, Socket};
use util::examples::{self, Process};
use util::{builder, connect, read_n, round_trip, tcp_addr, wait_until, PATIENCE};

/// Holds every callback that receives "block" until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    inside: AtomicUsize,
}

impl Gate {
    fn pass(&self) {
        self.inside.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Echoes; a message starting with "block" first waits at the gate, one
/// starting with "slow" sleeps 5 ms.
struct Gated(Arc<Gate>);

impl Handler for Gated {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        if data.starts_with(b"block") {
            self.0.pass();
        } else if data.starts_with(b"slow") {
            thread::sleep(Duration::from_millis(5));
        }
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

fn gated(b: atoll::Builder) -> (atoll::Server, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let server = b.start(move |_| Ok(Gated(g.clone()))).unwrap();
    (server, gate)
}

/// Opens `n` connections whose callbacks all block at the gate at once.
fn block(addr: std::net::SocketAddr, gate: &Gate, n: usize) -> Vec<TcpStream> {
    let blocked: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut c = connect(addr);
            c.write_all(b"block").unwrap();
            c
        })
        .collect();
    wait_until("every blocking callback to be running", || {
        gate.inside.load(Ordering::SeqCst) == n
    });
    blocked
}

#[test]
fn callbacks_blocking_on_more_than_the_base_workers_do_not_stall_the_other_connections() {
    let (server, gate) = gated(builder().num_workers(2));
    let addr = tcp_addr(&server);
    // Eight callbacks asleep at once: the pool had to grow past its two
    // base workers to run them.
    let mut blocked = block(addr, &gate, 8);
    for i in 0..20 {
        let mut fast = connect(addr);
        round_trip(&mut fast, format!("fast {i}").as_bytes());
    }
    let stats = server.stats();
    assert!(stats.workers > 8, "workers: {}", stats.workers);
    assert!(stats.blocked_workers >= 8, "{stats:?}");
    gate.open();
    for c in &mut blocked {
        assert_eq!(read_n(c, 5), b"block");
    }
}

#[test]
fn a_fixed_pool_does_not_grow_and_serves_waiting_data_in_order_once_a_worker_frees() {
    let (server, gate) = gated(builder().fixed_workers(2));
    let addr = tcp_addr(&server);
    let mut blocked = block(addr, &gate, 2);
    let mut waiting = connect(addr);
    for piece in [&b"one,"[..], b"two,", b"three"] {
        waiting.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    // Both workers are held: nothing comes back meanwhile.
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(waiting.read(&mut byte).is_err(), "served by a third worker");
    // Every worker busy with work waiting is reported once it lasts.
    wait_until("the saturation to be reported", || {
        server.stats().saturations >= 1
    });
    assert_eq!(server.stats().workers, 2);
    gate.open();
    waiting.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = Vec::new();
    while got.len() < 13 {
        let mut buf = [0u8; 64];
        let n = waiting.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"one,two,three");
    for c in &mut blocked {
        assert_eq!(read_n(c, 5), b"block");
    }
}

#[test]
fn workers_started_for_blocking_callbacks_exit_after_the_keepalive() {
    let (server, gate) = gated(
        builder()
            .num_workers(2)
            .worker_keepalive(Duration::from_millis(200)),
    );
    let addr = tcp_addr(&server);
    let mut blocked = block(addr, &gate, 6);
    assert!(server.stats().workers >= 6);
    gate.open();
    for c in &mut blocked {
        assert_eq!(read_n(c, 5), b"block");
    }
    wait_until("the extra workers to exit", || server.stats().workers == 2);
    // The base workers still serve.
    round_trip(&mut connect(addr), b"still here");
}

/// Sleeps in every callback, checking that no other callback of its
/// connection runs meanwhile.
struct SlowInOrder {
    running: Arc<AtomicBool>,
    overlaps: Arc<AtomicUsize>,
}

impl SlowInOrder {
    fn enter(&self) {
        if self.running.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        thread::sleep(Duration::from_millis(2));
        self.running.store(false, Ordering::SeqCst);
    }
}

impl Handler<Vec<u8>> for SlowInOrder {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        self.enter();
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }

    fn handle_message(&mut self, msg: Vec<u8>, socket: &mut Socket) -> Flow {
        self.enter();
        socket
            .send(&msg)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

/// A server of two base workers whose callbacks all sleep, and a client
/// that has made 20 round trips on it (enough for a worker to stay with it).
fn slow_server_and_client() -> (atoll::Server<Vec<u8>>, TcpStream) {
    let server = builder()
        .num_workers(2)
        .start(|_| {
            Ok(SlowInOrder {
                running: Arc::new(AtomicBool::new(false)),
                overlaps: Arc::new(AtomicUsize::new(0)),
            })
        })
        .unwrap();
    let mut conn = connect(tcp_addr(&server));
    for _ in 0..20 {
        round_trip(&mut conn, b"slow");
    }
    (server, conn)
}

#[test]
fn blocking_callbacks_of_one_connection_never_overlap_and_keep_data_and_messages_in_order() {
    let overlaps = Arc::new(AtomicUsize::new(0));
    let o = overlaps.clone();
    let server = builder()
        .num_workers(2)
        .start(move |_| {
            Ok(SlowInOrder {
                running: Arc::new(AtomicBool::new(false)),
                overlaps: o.clone(),
            })
        })
        .unwrap();
    let addr = tcp_addr(&server);
    // Messages to one connection, from this thread, interleaved with the
    // data of six others: each comes back in the order it was sent.
    let mut target = connect(addr);
    wait_until("the first connection", || server.connections().len() == 1);
    let conn = server.connections().remove(0);
    let clients: Vec<_> = (0..6)
        .map(|c| {
            thread::spawn(move || {
                let mut s = connect(addr);
                for i in 0..40 {
                    round_trip(&mut s, format!("{c}:{i};").as_bytes());
                }
            })
        })
        .collect();
    let mut expected = Vec::new();
    for i in 0..30 {
        let m = format!("m{i};").into_bytes();
        expected.extend_from_slice(&m);
        conn.send(m).unwrap();
    }
    let got = read_n(&mut target, expected.len());
    assert_eq!(got, expected);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(server.stats().panics, 0);
}

/// Echoes after computing for `time` (never asleep), noting which thread
/// ran it in `ran`.
struct Computes {
    time: Duration,
    ran: Arc<Mutex<Vec<thread::ThreadId>>>,
}

impl Handler for Computes {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        let start = std::time::Instant::now();
        while start.elapsed() < self.time {
            std::hint::spin_loop();
        }
        self.ran.lock().unwrap().push(thread::current().id());
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

/// A server of two workers whose callbacks compute for `time`, and the
/// threads that ran them.
fn computing(time: Duration) -> (atoll::Server, Arc<Mutex<Vec<thread::ThreadId>>>) {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let r = ran.clone();
    let server = builder()
        .num_workers(2)
        .start(move |_| {
            Ok(Computes {
                time,
                ran: r.clone(),
            })
        })
        .unwrap();
    (server, ran)
}

/// A callback that computes past `blocking_after` is not a blocking one,
/// however the monitor's look falls: one client, one request at a time,
/// so that each run ends with its worker going to sleep for the next
/// request. The monitor used to read whether the worker slept without
/// seeing that the run it timed had ended meanwhile, took the worker's
/// sleep for the callback's, and gave the connection a worker of its own
/// (blocked) for good: with the old look, 1,500 requests did that in
/// each of 4 runs.
#[test]
fn a_callback_that_computes_is_never_taken_for_a_blocking_one() {
    let _alone = counting_switches();
    // Longer than `blocking_after`.
    let (server, _) = computing(Duration::from_micros(1200));
    let mut c = connect(tcp_addr(&server));
    let mut most_blocked = 0;
    for i in 0..1500u32 {
        round_trip(&mut c, &i.to_be_bytes());
        most_blocked = most_blocked.max(server.stats().blocked_workers);
    }
    let stats = server.stats();
    assert_eq!(most_blocked, 0, "{stats:?}");
    assert_eq!(stats.workers, 2, "{stats:?}");
}

/// A poll that slept (the pool was idle) wakes no second worker for what
/// it found: for a light load, a worker woken per burst is a wake-up and
/// a sleep for a few requests. Work that has waited half a millisecond
/// gets one all the same: a burst of 16 requests of 400 µs each, sent
/// while the pool idles, is not left to the poller alone for 6 ms. Each
/// round the clients send all, then read all, and the pool idles between
/// rounds. Here 40 of 40 bursts ran on two workers in 3 runs; without the
/// wake for work that waited, 0, 1 and 5. Counts threads, never time.
#[test]
fn a_burst_of_computing_callbacks_after_idle_gets_a_second_worker() {
    let _alone = counting_switches();
    // Under `blocking_after`.
    let (server, ran) = computing(Duration::from_micros(400));
    let addr = tcp_addr(&server);
    let mut clients: Vec<TcpStream> = (0..16).map(|_| connect(addr)).collect();
    let mut shared = 0;
    for round in 0..40u32 {
        thread::sleep(Duration::from_millis(5));
        ran.lock().unwrap().clear();
        for c in &mut clients {
            c.write_all(&round.to_be_bytes()).unwrap();
        }
        for c in &mut clients {
            assert_eq!(read_n(c, 4), round.to_be_bytes());
        }
        let ran = ran.lock().unwrap();
        if ran.iter().any(|id| *id != ran[0]) {
            shared += 1;
        }
    }
    eprintln!("{shared} of 40 bursts ran on two workers");
    assert!(shared >= 20, "{shared} of 40 bursts ran on two workers");
}

#[test]
fn every_dispatch_is_counted_and_reported_with_its_wait() {
    let dispatches = Arc::new(AtomicUsize::new(0));
    let server = builder().start(|_| Ok(util::Echo)).unwrap();
    let d = dispatches.clone();
    server.attach_sink(move |event: &atoll::telemetry::Event<'_>| {
        if let Kind::Dispatch { wait } = event.kind {
            assert!(wait < Duration::from_secs(60));
            d.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut c = connect(tcp_addr(&server));
    round_trip(&mut c, b"warm");
    let before = server.stats();
    for i in 0..10 {
        round_trip(&mut c, format!("{i}").as_bytes());
    }
    let after = server.stats();
    // A run may serve a request that arrived before it ended: ten round
    // trips are at least one dispatch, each counted and reported.
    let counted = after.dispatches - before.dispatches;
    assert!(counted >= 1, "{after:?}");
    assert!(after.dispatch_wait > before.dispatch_wait, "{after:?}");
    assert!(dispatches.load(Ordering::SeqCst) as u64 >= counted);
    assert!(after.workers >= 1 && after.busy_workers <= after.workers);
}

/// Voluntary context switches of every thread of `pid`: each is a thread
/// going to sleep (in `epoll_wait`, on a futex), which is what the
/// dispatch design decides. Involuntary ones count preemptions, which
/// other load on the machine decides.
fn context_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Starts an example as servers are started: in a session of its own, so
/// the kernel schedules it as a group apart from its clients. `None` when
/// this machine has no `setsid`.
fn in_own_session(example: &str, args: &[&str]) -> Option<examples::Served> {
    if Command::new("setsid").arg("--version").output().is_err() {
        eprintln!("skipped: no setsid");
        return None;
    }
    let mut command = Command::new("setsid");
    command.arg(examples::path(example)).args(args);
    Some(examples::Served::wait(Process::spawn(example, command)))
}

const ROUNDS: usize = 1500;

/// The server's voluntary context switches per round trip over `ROUNDS`
/// rounds of `round`, each a round trip of every one of `clients` (after
/// 100 to warm up).
fn switches_per_round_trip(pid: u32, clients: usize, mut round: impl FnMut()) -> f64 {
    for _ in 0..100 {
        round();
    }
    let before = context_switches(pid);
    for _ in 0..ROUNDS {
        round();
    }
    let switches = context_switches(pid) - before;
    let per_round_trip = switches as f64 / (clients * ROUNDS) as f64;
    eprintln!(
        "{switches} context switches for {} round trips: {per_round_trip:.3} each",
        clients * ROUNDS
    );
    per_round_trip
}

/// The regression guard of the dispatch design: the echo example, in a
/// session of its own, serves closed-loop ping-pong on a few connections
/// with well under one context switch per round trip. It counts switches,
/// never time. The design that handed every readiness event from a poll
/// thread to a worker made 0.68 voluntary switches here (release build;
/// 0.19 in a luckier run), this one about 0.08.
#[test]
fn fast_echo_in_its_own_session_makes_few_context_switches_per_round_trip() {
    let Some(served) = in_own_session("echo", &["--port", "0", "--read-timeout-ms", "0"]) else {
        return;
    };
    // Clients in lock step, each sending one message per round.
    const CLIENTS: usize = 32;
    let mut conns: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(served.addr)).collect();
    let message = [7u8; 64];
    let per_round_trip = switches_per_round_trip(served.process.pid(), CLIENTS, || {
        for c in &mut conns {
            c.write_all(&message).unwrap();
        }
        for c in &mut conns {
            assert_eq!(read_n(c, message.len()), message);
        }
    });
    assert!(
        per_round_trip < 0.5,
        "{per_round_trip:.3} context switches per round trip"
    );
    // Fast callbacks keep the pool at its base count: one worker per core.
    let workers = workers_of(served.process.pid());
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("{workers} workers, {cores} cores");
    assert!(workers <= cores, "{workers} workers for {cores} cores");
    served.stop();
}

/// The server's worker threads, by their names.
fn workers_of(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    tasks
        .filter_map(|t| t.ok())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.starts_with("atoll-worker"))
        })
        .count()
}

/// Clients whose callbacks block get about one worker each, and clients
/// that come after them reuse those workers: the echo example, in a
/// session of its own, sleeps 2 ms before each echo, for two waves of 64
/// clients in lock step, the second after the first has gone. Waking
/// parked workers before starting new ones is what keeps the second wave
/// from doubling the pool (starting first made 98-126 workers after the
/// first wave, 213-243 after the second). Counts threads, never time.
#[test]
fn blocking_clients_get_about_one_worker_each_and_the_next_ones_reuse_them() {
    let Some(served) = in_own_session(
        "echo",
        &["--port", "0", "--read-timeout-ms", "0", "--delay-ms", "2"],
    ) else {
        return;
    };
    const CLIENTS: usize = 64;
    let message = [7u8; 64];
    for _wave in 0..2 {
        let mut conns: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(served.addr)).collect();
        for _ in 0..100 {
            for c in &mut conns {
                c.write_all(&message).unwrap();
            }
            for c in &mut conns {
                assert_eq!(read_n(c, message.len()), message);
            }
        }
        let workers = workers_of(served.process.pid());
        eprintln!("{workers} workers for {CLIENTS} blocking clients");
        assert!(
            (CLIENTS..2 * CLIENTS).contains(&workers),
            "{workers} workers for {CLIENTS} blocking clients"
        );
    }
    served.stop();
}

/// The same guard for UDP: the UDP echo example, per-peer sessions, in a
/// session of its own, and one client that pauses between round trips, so
/// that every datagram arrives alone and the server sleeps between two:
/// the thread that receives a datagram must be the one that runs its
/// callback. While the acceptor thread received every datagram and woke a
/// worker for it, this made 2.3 switches per round trip (two sleeps, and
/// the monitor's ticks); with reception in the pool, 1.3 (one).
#[test]
fn udp_echo_in_its_own_session_runs_each_datagram_on_the_thread_that_received_it() {
    let Some(served) = in_own_session("udp_echo", &["--port", "0", "--per-peer"]) else {
        return;
    };
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(served.addr).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let message = [7u8; 64];
    let mut buf = [0u8; 128];
    let per_round_trip = switches_per_round_trip(served.process.pid(), 1, || {
        socket.send(&message).unwrap();
        let n = socket.recv(&mut buf).expect("an echo within the patience");
        assert_eq!(&buf[..n], &message);
        // Long enough for any build of the server to go to sleep.
        thread::sleep(Duration::from_micros(200));
    });
    assert!(
        per_round_trip < 1.8,
        "{per_round_trip:.3} context switches per round trip"
    );
    served.stop();
}

/// Held by a test that counts this process's worker switches, and by one
/// whose workers switch thousands of times, so that neither runs beside
/// the other.
static SWITCHES: Mutex<()> = Mutex::new(());

fn counting_switches() -> std::sync::MutexGuard<'static, ()> {
    SWITCHES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Voluntary context switches of this process's worker threads.
fn worker_switches() -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").expect("this process's threads");
    tasks
        .filter_map(|t| t.ok())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.starts_with("atoll-worker"))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// A connection whose callbacks block gets a worker of its own, which
/// waits on its socket as a thread per connection would: per request, one
/// sleep in the callback and one in the wait, and no other worker wakes.
/// Handed from the poller to a parked worker instead, each request woke
/// two threads: 3 switches. Counts switches, never time.
#[test]
fn a_connection_whose_callbacks_block_gets_a_worker_that_waits_on_its_socket() {
    let _alone = counting_switches();
    let (server, mut conn) = slow_server_and_client();
    const ROUND_TRIPS: u64 = 150;
    let before = worker_switches();
    for _ in 0..ROUND_TRIPS {
        round_trip(&mut conn, b"slow");
    }
    let per_request = (worker_switches() - before) as f64 / ROUND_TRIPS as f64;
    eprintln!("{per_request:.2} worker context switches per request");
    assert!(
        per_request < 2.5,
        "{per_request:.2} worker context switches per request"
    );
    server.stop(None);
}

/// A worker dedicated to a connection waits on it with no timer: when the
/// connection goes quiet, the monitor sends the worker back (it no longer
/// counts as blocked), and the connection, still open, is served again.
#[test]
fn a_dedicated_worker_gives_a_connection_that_went_quiet_back() {
    let (server, mut conn) = slow_server_and_client();
    wait_until("a worker dedicated to the connection", || {
        server.stats().blocked_workers == 1
    });
    // Quiet for a second: given back while the connection stays open.
    wait_until("the dedicated worker to give the connection back", || {
        server.stats().blocked_workers == 0
    });
    round_trip(&mut conn, b"still served");
    server.stop(None);
}

/// The run of a worker dedicated to a connection counts as busy, as any
/// other callback does.
#[test]
fn a_dedicated_workers_callback_counts_as_busy() {
    let (server, gate) = gated(builder().num_workers(2));
    let mut conn = connect(tcp_addr(&server));
    for _ in 0..20 {
        round_trip(&mut conn, b"slow");
    }
    wait_until("a worker dedicated to the connection", || {
        server.stats().blocked_workers == 1
    });
    conn.write_all(b"block").unwrap();
    wait_until("the callback to be at the gate", || {
        gate.inside.load(Ordering::SeqCst) == 1
    });
    let stats = server.stats();
    assert_eq!((stats.busy_workers, stats.blocked_workers), (1, 1));
    gate.open();
    assert_eq!(read_n(&mut conn, 5), b"block");
    wait_until("no callback running", || server.stats().busy_workers == 0);
    server.stop(None);
}

/// At the cap, a worker that stays with a busy slow connection comes back
/// for a connection that no other worker can serve: the monitor recalls
/// it, and both connections are then served from the pool's queue.
#[test]
fn at_the_cap_a_dedicated_worker_is_recalled_for_a_connection_nobody_serves() {
    let (server, gate) = gated(builder().num_workers(1).max_workers(3));
    let addr = tcp_addr(&server);
    let mut slow = connect(addr);
    for _ in 0..20 {
        round_trip(&mut slow, b"slow");
    }
    wait_until("a worker dedicated to the slow connection", || {
        server.stats().blocked_workers == 1
    });
    // Busy enough never to go quiet: its worker would not come back alone.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let busy = thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            round_trip(&mut slow, b"slow");
            thread::sleep(Duration::from_millis(20));
        }
    });
    // The two other workers the cap allows are held at the gate.
    let mut blocked = block(addr, &gate, 2);
    assert_eq!(server.stats().workers, 3);
    let mut waiting = connect(addr);
    round_trip(&mut waiting, b"served");
    assert_eq!(server.stats().workers, 3);
    stop.store(true, Ordering::SeqCst);
    busy.join().unwrap();
    gate.open();
    for c in &mut blocked {
        assert_eq!(read_n(c, 5), b"block");
    }
    server.stop(None);
}
