//! Many clients, many cycles, and the process-wide resources a server uses:
//! descriptors and threads. Every test here counts what the whole process
//! holds, so they run one at a time (`SERIAL`), and nothing else in this
//! binary starts servers or threads.

mod util;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use atoll::{Flow, Handler, Socket};
use util::{
    builder, connect, echo_server, is_closed, open_fds, read_to_close, round_trip,
    settled_thread_count, tcp_addr, thread_count, threads_named, wait_until, PATIENCE,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the calling test alone among the tests of this file (a failed test
/// poisons the lock; the next one runs anyway).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Threads the server names: `atoll-worker-N` and `atoll-acceptor-N`.
fn atoll_threads() -> usize {
    threads_named("atoll-")
}

/// The seed of message `round` of client `client`.
fn seed(client: usize, round: usize) -> u64 {
    let mut x = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (round as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 29)
}

/// The length of message `round` of client `client`: 1..=2000 bytes, the
/// extremes first.
fn message_len(client: usize, round: usize) -> usize {
    match round {
        0 => 1,
        1 => 2000,
        _ => 1 + (seed(client, round) % 2000) as usize,
    }
}

/// Writes message `round` of client `client` into `out`: its length and
/// bytes a function of both, so a byte sent to the wrong client or out of
/// order shows.
fn message(client: usize, round: usize, out: &mut Vec<u8>) {
    let x = seed(client, round);
    out.clear();
    out.extend((0..message_len(client, round)).map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8));
}

#[test]
fn thousand_concurrent_clients_each_echo_100_messages_byte_exact() {
    let _serial = serial();
    const CLIENTS: usize = 1000;
    const THREADS: usize = 8;
    const PER_THREAD: usize = CLIENTS / THREADS;
    const ROUNDS: usize = 100;

    let t0 = Instant::now();
    let server = echo_server(builder().num_workers(4));
    let addr = tcp_addr(&server);

    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let mut go = Vec::new();
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let ready_tx = ready_tx.clone();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        go.push(go_tx);
        handles.push(thread::spawn(move || {
            let ids: Vec<usize> = (t * PER_THREAD..(t + 1) * PER_THREAD).collect();
            let mut conns: Vec<TcpStream> = ids.iter().map(|_| connect(addr)).collect();
            ready_tx.send(()).unwrap();
            go_rx.recv_timeout(PATIENCE).expect("go");
            let mut bytes = 0usize;
            let mut sent: Vec<Vec<u8>> =
                (0..PER_THREAD).map(|_| Vec::with_capacity(2000)).collect();
            let mut got = vec![0u8; 2000];
            for round in 0..ROUNDS {
                // Send one message on every connection, then read every echo:
                // all of the thread's connections have a message in flight.
                for ((conn, &id), msg) in conns.iter_mut().zip(&ids).zip(&mut sent) {
                    message(id, round, msg);
                    conn.write_all(msg).expect("write");
                }
                for ((conn, &id), msg) in conns.iter_mut().zip(&ids).zip(&sent) {
                    let got = &mut got[..msg.len()];
                    conn.read_exact(got).expect("read echo");
                    assert!(got == &msg[..], "client {id} round {round}: echo differs");
                    bytes += msg.len();
                }
            }
            (bytes, conns)
        }));
    }
    drop(ready_tx);
    for _ in 0..THREADS {
        ready_rx
            .recv_timeout(PATIENCE)
            .expect("a client thread connected");
    }
    // Counted live when its limiter slot is taken, listed once set up: the
    // last one may be between the two.
    wait_until("1000 live connections, listed", || {
        server.connection_count() == CLIENTS && server.connections().len() == CLIENTS
    });
    for g in &go {
        g.send(()).unwrap();
    }
    let mut total = 0;
    let mut all = Vec::new();
    for h in handles {
        let (bytes, conns) = h.join().expect("client thread");
        total += bytes;
        all.extend(conns);
    }
    let expected: usize = (0..CLIENTS)
        .flat_map(|c| (0..ROUNDS).map(move |r| message_len(c, r)))
        .sum();
    assert_eq!(total, expected);
    // No connection was lost along the way.
    assert_eq!(server.connection_count(), CLIENTS);
    drop(all);
    wait_until("every connection ended", || server.connection_count() == 0);
    let stats = server.stats();
    assert_eq!(
        (
            stats.accepted,
            stats.rejected,
            stats.accept_errors,
            stats.panics
        ),
        (CLIENTS as u64, 0, 0, 0),
        "{stats:?}"
    );
    server.stop(PATIENCE);
    eprintln!(
        "1000 clients x 100 messages ({} MB each way): {:?}",
        expected / 1_000_000,
        t0.elapsed()
    );
}

#[test]
fn ten_thousand_connect_close_cycles_leak_no_descriptors_or_threads() {
    let _serial = serial();
    const CYCLES: usize = 10_000;
    let t0 = Instant::now();
    let threads_before = settled_thread_count();
    let fds_before = open_fds();

    // A fixed pool, so that the thread count below is exact.
    let server = echo_server(builder().fixed_workers(2).num_acceptors(1));
    let addr = tcp_addr(&server);
    // One cycle first, so that anything made once (not per connection)
    // exists before the baseline.
    round_trip(&mut connect(addr), b"warm-up");
    wait_until("the warm-up connection ended", || {
        server.connection_count() == 0
    });
    let fds_running = open_fds();

    for i in 0..CYCLES {
        let mut c = connect(addr);
        round_trip(&mut c, &(i as u32).to_be_bytes());
    }
    wait_until("every connection ended", || server.connection_count() == 0);
    assert_eq!(
        open_fds(),
        fds_running,
        "descriptors after {CYCLES} cycles vs before"
    );
    wait_until("2 workers, 1 acceptor and the monitor, no more", || {
        atoll_threads() == 4
    });
    let stats = server.stats();
    assert_eq!(
        (stats.accepted, stats.accept_errors),
        (CYCLES as u64 + 1, 0),
        "{stats:?}"
    );

    server.stop(PATIENCE);
    wait_until("the server's threads exited", || {
        thread_count() == threads_before
    });
    assert_eq!(atoll_threads(), 0);
    // A stopped server holds no descriptor, even before it is dropped.
    assert_eq!(
        open_fds(),
        fds_before,
        "descriptors after the server stopped"
    );
    drop(server);
    assert_eq!(
        open_fds(),
        fds_before,
        "descriptors after the server is gone"
    );
    eprintln!("{CYCLES} connect/close cycles: {:?}", t0.elapsed());
}

#[test]
fn thread_count_is_fixed_with_500_connections_open() {
    let _serial = serial();
    const CONNS: usize = 500;
    const WORKERS: usize = 3;
    const ACCEPTORS: usize = 2;
    let t0 = Instant::now();
    let before = settled_thread_count();
    let server = echo_server(
        builder()
            .num_workers(WORKERS)
            .num_acceptors(ACCEPTORS)
            .num_connections(None),
    );
    let addr = tcp_addr(&server);
    let mut conns: Vec<TcpStream> = (0..CONNS).map(|_| connect(addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        round_trip(c, format!("connection {i}").as_bytes());
    }
    wait_until("500 live connections", || {
        server.connection_count() == CONNS
    });
    // The workers, the acceptors and the pool's monitor.
    wait_until("every thread named", || {
        atoll_threads() == WORKERS + ACCEPTORS + 1
    });
    assert_eq!(thread_count(), before + WORKERS + ACCEPTORS + 1);
    // And still after every connection was served a second time.
    for c in conns.iter_mut() {
        round_trip(c, b"again");
    }
    assert_eq!(thread_count(), before + WORKERS + ACCEPTORS + 1);

    server.stop(PATIENCE);
    wait_until("the server's threads exited", || thread_count() == before);
    assert_eq!(atoll_threads(), 0);
    for c in conns.iter_mut() {
        assert!(is_closed(c), "closed by the stop");
    }
    eprintln!("500 connections, thread count: {:?}", t0.elapsed());
}

static WATCHED: AtomicUsize = AtomicUsize::new(0);
static EXITED: AtomicUsize = AtomicUsize::new(0);

/// Counts, once dropped, that a watched thread has exited.
struct ExitWatch;

impl Drop for ExitWatch {
    fn drop(&mut self) {
        EXITED.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static WATCH: RefCell<Option<ExitWatch>> = const { RefCell::new(None) };
}

/// Watches the calling thread: its thread-local `ExitWatch` is dropped as
/// it exits, before a join of it returns.
fn watch_this_thread() {
    WATCH.with(|w| {
        let mut w = w.borrow_mut();
        if w.is_none() {
            *w = Some(ExitWatch);
            WATCHED.fetch_add(1, Ordering::SeqCst);
        }
    });
}

/// Echoes; "slow" says it is busy and takes 300 ms. Watches every worker
/// it runs on.
struct Slow(mpsc::Sender<()>);

impl Handler for Slow {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        watch_this_thread();
        if data == b"slow" {
            let _ = self.0.send(());
            thread::sleep(Duration::from_millis(300));
        }
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

#[test]
fn suspend_and_resume_start_no_threads_and_stop_joins_every_thread() {
    let _serial = serial();
    const WORKERS: usize = 4;
    let before = settled_thread_count();
    let fds_before = open_fds();
    let (busy_tx, busy_rx) = mpsc::channel();
    let busy_tx = Mutex::new(busy_tx);
    // A fixed pool: the slow requests below would otherwise get workers
    // of their own.
    let server = builder()
        .fixed_workers(WORKERS)
        .num_acceptors(2)
        .start(move |_| Ok(Slow(busy_tx.lock().unwrap().clone())))
        .unwrap();
    // The workers, two acceptors and the pool's monitor.
    assert_eq!(thread_count(), before + WORKERS + 3);
    let mut idle = connect(tcp_addr(&server));
    round_trip(&mut idle, b"idle");
    for _ in 0..3 {
        server.suspend().unwrap();
        server.resume().unwrap();
    }
    // Threads of earlier tests may still be leaving the kernel's list.
    wait_until("no thread besides the server's", || {
        thread_count() == before + WORKERS + 3
    });
    // A thread names itself once it first runs, which a loaded machine
    // may delay.
    wait_until("every thread named", || atoll_threads() == WORKERS + 3);

    // One slow request per worker: all busy at once, so every worker thread
    // is watched.
    let mut busy: Vec<TcpStream> = (0..WORKERS).map(|_| connect(tcp_addr(&server))).collect();
    for c in &mut busy {
        c.write_all(b"slow").unwrap();
    }
    for _ in 0..WORKERS {
        busy_rx.recv_timeout(PATIENCE).expect("a worker got busy");
    }
    assert_eq!(WATCHED.load(Ordering::SeqCst), WORKERS);

    server.stop(PATIENCE);
    // Joined: each worker's thread-locals were dropped before stop returned.
    assert_eq!(EXITED.load(Ordering::SeqCst), WORKERS, "workers not joined");
    wait_until("the server's threads exited", || thread_count() == before);
    assert_eq!(atoll_threads(), 0);
    for c in &mut busy {
        assert_eq!(read_to_close(c), b"slow", "busy ones finished first");
    }
    assert_eq!(read_to_close(&mut idle), b"");
    drop(server);
    drop((idle, busy));
    assert_eq!(open_fds(), fds_before);
}
