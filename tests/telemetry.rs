//! Telemetry: the exact events of a session, the span tree, spawn errors,
//! sinks attached and detached under traffic, panicking sinks.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use atoll::telemetry::{Event, Kind, Span, SpanId, SpawnError};
use atoll::transport::{Handshake, Io, PendingHandshake, Transport};
use atoll::{Flow, Handler, Socket};
use util::{builder, connect, read_to_close, round_trip, tcp_addr, wait_until, Echo, PATIENCE};

/// An event, owned.
#[derive(Clone, Debug)]
struct Rec {
    name: &'static str,
    span: Span,
    id: SpanId,
    parent: Option<SpanId>,
    connection: Option<u64>,
    detail: String,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Rec>>>);

impl Recorder {
    fn sink(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let log = self.0.clone();
        move |e: &Event<'_>| {
            // How often a connection is dispatched (and so how many rounds
            // of callbacks it runs) depends on the timing of its reads; the
            // scripts below pin what the handler did.
            if matches!(e.kind, Kind::Dispatch { .. } | Kind::Callbacks { .. }) {
                return;
            }
            let detail = match &e.kind {
                Kind::Recv { data } | Kind::AsyncRecv { data } => {
                    String::from_utf8_lossy(data).into_owned()
                }
                Kind::Send { data } => data.iter().map(|s| String::from_utf8_lossy(s)).collect(),
                Kind::Sendfile {
                    offset,
                    bytes_written,
                    ..
                } => format!("{offset}+{bytes_written}"),
                Kind::SocketShutdown { way } => format!("{way:?}"),
                Kind::ConnectionStop { stats, error, .. } => format!(
                    "in={}/{} out={}/{} error={:?}",
                    stats.recv_bytes,
                    stats.recv_count,
                    stats.send_bytes,
                    stats.send_count,
                    error.map(|e| util::chain(e))
                ),
                Kind::SpawnError {
                    reason: SpawnError::Limiter,
                    ..
                } => "limiter".into(),
                Kind::SpawnError {
                    reason: SpawnError::Refused(e),
                    ..
                } => format!("refused: {}", util::chain(e)),
                Kind::AcceptorStop { connections, .. } => format!("accepted {connections}"),
                _ => String::new(),
            };
            log.lock().unwrap().push(Rec {
                name: e.name(),
                span: e.span,
                id: e.id,
                parent: e.parent,
                connection: e.connection,
                detail,
            });
        }
    }

    fn all(&self) -> Vec<Rec> {
        self.0.lock().unwrap().clone()
    }

    fn names_of(&self, connection: u64) -> Vec<&'static str> {
        self.all()
            .iter()
            .filter(|r| r.connection == Some(connection))
            .map(|r| r.name)
            .collect()
    }
}

/// The scripted session: read 5 bytes synchronously, send, sendfile,
/// shut down writing, close.
struct Script {
    file: std::path::PathBuf,
    ids: std::sync::mpsc::Sender<u64>,
}

impl Handler for Script {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        let _ = self.ids.send(socket.id());
        let hello = socket.recv(5).unwrap();
        assert_eq!(hello, b"hello");
        socket.send(b"world").unwrap();
        let file = std::fs::File::open(&self.file).unwrap();
        socket.sendfile(&file, 0, 0).unwrap();
        socket.shutdown(Shutdown::Write).unwrap();
        Flow::Close
    }
}

#[test]
fn a_scripted_session_emits_exactly_its_events_in_a_span_tree() {
    let file = std::env::temp_dir().join(format!("atoll-telemetry-{}", std::process::id()));
    std::fs::write(&file, b"0123456789").unwrap();
    let rec = Recorder::default();
    let (tx, ids) = std::sync::mpsc::channel();
    let path = file.clone();
    let server = builder()
        .num_acceptors(1)
        .start(move |_| {
            Ok(Script {
                file: path.clone(),
                ids: tx.clone(),
            })
        })
        .unwrap();
    // Attached after start: the listener and acceptor started before; a
    // suspend and resume make new ones the sink sees.
    server.attach_sink(rec.sink());
    server.suspend().unwrap();
    server.resume().unwrap();

    let mut client = connect(tcp_addr(&server));
    client.write_all(b"hello").unwrap();
    assert_eq!(read_to_close(&mut client), b"world0123456789");
    let id = ids.recv_timeout(PATIENCE).unwrap();
    wait_until("the connection ended", || server.connection_count() == 0);
    server.stop(PATIENCE);
    std::fs::remove_file(&file).unwrap();

    assert_eq!(
        rec.names_of(id),
        [
            "connection.start",
            "connection.ready",
            "connection.recv",
            "connection.send",
            "connection.sendfile",
            "connection.socket_shutdown",
            "connection.stop"
        ]
    );
    let all = rec.all();
    let of = |name: &str| {
        all.iter()
            .filter(|r| r.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let conn: Vec<Rec> = all
        .iter()
        .filter(|r| r.connection == Some(id))
        .cloned()
        .collect();
    assert_eq!(conn[2].detail, "hello");
    assert_eq!(conn[3].detail, "world");
    assert_eq!(conn[4].detail, "0+10");
    assert_eq!(conn[5].detail, "Write");
    assert_eq!(conn[6].detail, "in=5/1 out=15/2 error=None");
    // One span id for the whole connection, under the acceptor that
    // accepted it, under the listener it accepted from.
    assert!(conn
        .iter()
        .all(|r| r.span == Span::Connection && r.id == conn[0].id));
    let acceptor_starts = of("acceptor.start");
    let acceptor = acceptor_starts
        .iter()
        .find(|a| Some(a.id) == conn[0].parent)
        .expect("the parent acceptor");
    let listener = of("listener.start")
        .into_iter()
        .find(|l| Some(l.id) == acceptor.parent)
        .expect("its listener");
    assert_eq!(listener.parent, None);
    // The stop events close the same spans; the acceptor counts its accept.
    assert!(of("acceptor.stop")
        .iter()
        .any(|s| s.id == acceptor.id && s.detail == "accepted 1"));
    assert!(of("listener.stop").iter().any(|s| s.id == listener.id));
}

#[test]
fn the_limiter_turning_a_client_away_is_a_spawn_error_of_the_acceptor() {
    let rec = Recorder::default();
    let server = builder()
        .num_acceptors(1)
        .num_connections(Some(1))
        .max_connections_retry_count(0)
        .start(|_| Ok(Echo))
        .unwrap();
    server.attach_sink(rec.sink());
    let mut first = connect(tcp_addr(&server));
    round_trip(&mut first, b"in");
    let mut second = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut second), b"");
    wait_until("the spawn error", || {
        rec.all().iter().any(|r| r.name == "acceptor.spawn_error")
    });
    let spawn = rec
        .all()
        .into_iter()
        .find(|r| r.name == "acceptor.spawn_error")
        .unwrap();
    assert_eq!(
        (spawn.span, spawn.detail.as_str()),
        (Span::Acceptor, "limiter")
    );
    assert_eq!(server.stats().rejected, 1);
    server.stop(PATIENCE);
}

#[test]
fn a_refusing_factory_is_a_spawn_error_and_the_connection_stops_with_it() {
    struct Never;
    impl Handler for Never {}
    let rec = Recorder::default();
    let server = builder()
        .start(|_| Err::<Never, _>("no room".into()))
        .unwrap();
    server.attach_sink(rec.sink());
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut client), b"");
    wait_until("the stop", || {
        rec.all().iter().any(|r| r.name == "connection.stop")
    });
    let all = rec.all();
    let spawn = all
        .iter()
        .find(|r| r.name == "acceptor.spawn_error")
        .expect("spawn_error");
    assert_eq!(
        spawn.detail,
        "refused: connection refused by the handler factory: no room"
    );
    let stop = all.iter().find(|r| r.name == "connection.stop").unwrap();
    assert!(
        stop.detail.contains("error=Some(\"connection refused"),
        "{}",
        stop.detail
    );
    assert_eq!(
        all.iter().filter(|r| r.name == "connection.start").count(),
        1
    );
    server.stop(PATIENCE);
}

/// A transport whose handshake fails at once, or never finishes.
struct Broken {
    finish: bool,
}

struct Forever(Io);

impl PendingHandshake for Forever {
    fn resume(self: Box<Self>) -> Handshake {
        Handshake::Pending(self)
    }
    fn io(&self) -> &Io {
        &self.0
    }
}

impl Transport for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn handshake(&self, io: Io) -> Handshake {
        if self.finish {
            Handshake::Failed("no such protocol".into())
        } else {
            Handshake::Pending(Box::new(Forever(io)))
        }
    }
}

#[test]
fn failed_and_timed_out_handshakes_have_one_start_and_one_stop_with_the_error() {
    struct Quiet;
    impl Handler for Quiet {}
    for finish in [true, false] {
        let rec = Recorder::default();
        let server = builder()
            .transport(Broken { finish })
            .handshake_timeout(Some(Duration::from_millis(100)))
            .start(|_| Ok(Quiet))
            .unwrap();
        server.attach_sink(rec.sink());
        let mut client = connect(tcp_addr(&server));
        client.write_all(b"x").unwrap();
        assert_eq!(read_to_close(&mut client), b"");
        wait_until("the stop", || {
            rec.all().iter().any(|r| r.name == "connection.stop")
        });
        let names: Vec<_> = rec
            .all()
            .iter()
            .filter(|r| r.connection.is_some())
            .map(|r| r.name)
            .collect();
        assert_eq!(
            names,
            ["connection.start", "connection.stop"],
            "finish={finish}"
        );
        let stop = rec
            .all()
            .into_iter()
            .find(|r| r.name == "connection.stop")
            .unwrap();
        assert!(
            stop.detail.contains("error=Some(\"handshake failed"),
            "{}",
            stop.detail
        );
        server.stop(PATIENCE);
    }
}

#[test]
fn a_read_timeout_ends_the_span_with_the_timeout_error_and_a_peer_close_with_none() {
    struct Quiet;
    impl Handler for Quiet {}
    let rec = Recorder::default();
    let server = builder()
        .read_timeout(Some(Duration::from_millis(100)))
        .start(|_| Ok(Quiet))
        .unwrap();
    server.attach_sink(rec.sink());
    let mut idle = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut idle), b"");
    drop(connect(tcp_addr(&server)));
    wait_until("two stops", || {
        rec.all()
            .iter()
            .filter(|r| r.name == "connection.stop")
            .count()
            == 2
    });
    let mut errors: Vec<String> = rec
        .all()
        .into_iter()
        .filter(|r| r.name == "connection.stop")
        .map(|r| {
            r.detail
                .split("error=")
                .nth(1)
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    errors.sort();
    assert_eq!(errors, ["None", "Some(\"timed out\")"]);
    server.stop(PATIENCE);
}

#[test]
fn attaching_and_detaching_under_traffic_loses_nothing_after_attach_and_delivers_nothing_after_detach(
) {
    const CLIENTS: usize = 100;
    let server = Arc::new(builder().start(|_| Ok(Echo)).unwrap());
    let addr = tcp_addr(&server);
    let stop = Arc::new(AtomicBool::new(false));
    // Each client's last sequence number sent, published before sending.
    let seqs: Arc<Vec<AtomicU64>> = Arc::new((0..CLIENTS).map(|_| AtomicU64::new(0)).collect());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, seqs) = (stop.clone(), seqs.clone());
            thread::spawn(move || {
                let mut s = connect(addr);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) && seq < 100_000 {
                    seq += 1;
                    seqs[c].store(seq, Ordering::SeqCst);
                    let msg = format!("{c:03}:{seq:08};");
                    s.write_all(msg.as_bytes()).unwrap();
                    let mut back = [0u8; 13];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(&back, msg.as_bytes());
                    thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let rec = Recorder::default();
    let sink = server.attach_sink(rec.sink());
    let after_attach: Vec<u64> = seqs.iter().map(|s| s.load(Ordering::SeqCst)).collect();
    thread::sleep(Duration::from_millis(300));
    assert!(server.detach_sink(sink));
    let after_detach: Vec<u64> = seqs.iter().map(|s| s.load(Ordering::SeqCst)).collect();
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let seen: HashSet<String> = rec
        .all()
        .into_iter()
        .filter(|r| r.name == "connection.async_recv")
        .flat_map(|r| {
            r.detail
                .split_terminator(';')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut checked = 0;
    for c in 0..CLIENTS {
        // Sent after attach returned: must be seen.
        for seq in after_attach[c] + 1..=after_detach[c].saturating_sub(1) {
            assert!(
                seen.contains(&format!("{c:03}:{seq:08}")),
                "lost {c:03}:{seq:08}"
            );
            checked += 1;
        }
        // Sent after detach returned: must not be seen.
        for seq in after_detach[c] + 1..after_detach[c] + 20 {
            assert!(
                !seen.contains(&format!("{c:03}:{seq:08}")),
                "{c:03}:{seq:08} after detach"
            );
        }
    }
    assert!(
        checked > CLIENTS,
        "the clients ran while the sink was attached ({checked})"
    );
    Arc::try_unwrap(server).unwrap().stop(PATIENCE);
}

#[test]
fn a_panicking_sink_is_detached_and_never_breaks_a_connection() {
    let calls = Arc::new(AtomicU64::new(0));
    let server = builder().start(|_| Ok(Echo)).unwrap();
    let counted = calls.clone();
    let id = server.attach_sink(move |_: &Event<'_>| {
        counted.fetch_add(1, Ordering::SeqCst);
        panic!("a broken sink");
    });
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"still echoed");
    round_trip(&mut client, b"and again");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "called once, then detached"
    );
    assert!(!server.detach_sink(id), "already detached");
    server.stop(PATIENCE);
}

#[test]
fn the_counters_snapshot_live_connections_bytes_and_workers() {
    let server = builder().start(|_| Ok(Echo)).unwrap();
    let mut a = connect(tcp_addr(&server));
    let mut b = connect(tcp_addr(&server));
    round_trip(&mut a, &[1u8; 1000]);
    round_trip(&mut b, &[2u8; 500]);
    // Counted when the workers finish their dispatch, just after the reply.
    wait_until("the bytes counted and the workers idle", || {
        let s = server.stats();
        (s.bytes_in, s.bytes_out, s.busy_workers, s.queued) == (1500, 1500, 0, 0)
    });
    let s = server.stats();
    assert_eq!((s.live, s.accepted), (2, 2));
    drop(a);
    wait_until("one live", || server.stats().live == 1);
    server.stop(PATIENCE);
}
