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

use atoll::telemetry::{only, Event, Interest, Kind, Sink, Span, SpanId, SpawnError};
use atoll::transport::{Handshake, Io, PendingHandshake, Transport};
use atoll::{Flow, Handler, Socket};
use util::{builder, connect, read_to_close, round_trip, tcp_addr, wait_until, Echo, PATIENCE};

/// The backlog of listen options, read through its `Debug` form (the
/// options have no getters of their own; the builder's are tested in
/// `tests/defaults.rs`).
fn options_backlog(options: &atoll::transport::ListenOptions) -> String {
    let text = format!("{options:?}");
    text.split("backlog: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_default()
        .to_string()
}

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
                    path: None,
                    offset,
                    bytes_written,
                    ..
                } => format!("{offset}+{bytes_written}"),
                Kind::Sendfile {
                    path: Some(path),
                    offset,
                    bytes_written,
                    ..
                } => format!("{} {offset}+{bytes_written}", path.display()),
                Kind::SendfileError {
                    path,
                    file,
                    offset,
                    length,
                    error,
                } => format!(
                    "path={:?} open={} {offset}+{length} error={error:?}",
                    path.map(|p| p.display().to_string()),
                    file.is_some()
                ),
                Kind::RecvError { error } => format!("error={error:?}"),
                Kind::SendError { data, error } => format!(
                    "bytes={} error={error:?}",
                    data.iter().map(|s| s.len()).sum::<usize>()
                ),
                Kind::ListenerStart {
                    transport, options, ..
                }
                | Kind::ListenerStop {
                    transport, options, ..
                } => format!("{transport} backlog={}", options_backlog(options)),
                Kind::Custom {
                    name,
                    measurements,
                    metadata,
                } => format!("{name} {measurements:?} {metadata:?}"),
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
fn a_refusing_factory_is_only_a_spawn_error_with_no_connection_span() {
    struct Never;
    impl Handler for Never {}
    let rec = Recorder::default();
    let server = builder()
        .start(|_| Err::<Never, _>("no room".into()))
        .unwrap();
    server.attach_sink(rec.sink());
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut client), b"");
    wait_until("the refusal is counted", || server.stats().refused == 1);
    // Stopping joins the workers: every event of the refused connection
    // has been delivered by then.
    server.stop(PATIENCE);
    let all = rec.all();
    let spawn = all
        .iter()
        .find(|r| r.name == "acceptor.spawn_error")
        .expect("spawn_error");
    assert_eq!(
        spawn.detail,
        "refused: connection refused by the handler factory: no room"
    );
    let connection_events: Vec<_> = all
        .iter()
        .filter(|r| r.span == Span::Connection)
        .map(|r| r.name)
        .collect();
    assert!(connection_events.is_empty(), "{connection_events:?}");
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
        let expected = if finish {
            "error=Some(\"handshake failed"
        } else {
            "error=Some(\"handshake timed out"
        };
        assert!(stop.detail.contains(expected), "{}", stop.detail);
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
    assert_eq!(errors, ["None", "Some(\"idle connection timed out\")"]);
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
    // A client stores a number only once the previous one came back: every
    // number below this was echoed, its event delivered, before detach.
    let before_detach: Vec<u64> = seqs.iter().map(|s| s.load(Ordering::SeqCst)).collect();
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
        // Sent after attach returned and echoed before detach: must be
        // seen. (Bounded by a reading after detach, this counted numbers
        // a client slowed by a loaded machine sent after detach.)
        for seq in after_attach[c] + 1..=before_detach[c].saturating_sub(1) {
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

/// Every event's name, in order.
#[derive(Clone, Default)]
struct Names(Arc<Mutex<Vec<&'static str>>>);

impl Names {
    fn sink(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let names = self.0.clone();
        move |e: &Event<'_>| {
            // The kind's interest is the one bit of its name.
            assert_eq!(
                format!("{:?}", e.kind.interest()),
                format!("Interest({})", e.name())
            );
            names.lock().unwrap().push(e.name());
        }
    }

    fn all(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
}

/// A sink of its own type that wants the connection's stop and its
/// callbacks' timing.
struct Timing(Names);

impl Sink for Timing {
    fn event(&self, event: &Event<'_>) {
        self.0 .0.lock().unwrap().push(event.name());
    }

    fn interest(&self) -> Interest {
        Interest::CALLBACKS | Interest::CONNECTION_STOP
    }
}

#[test]
fn a_sink_receives_the_kinds_of_event_in_its_interest_and_no_other() {
    let (everything, stops, sends, timing, none) = (
        Names::default(),
        Names::default(),
        Names::default(),
        Names::default(),
        Names::default(),
    );
    let server = builder()
        .sink(only(Interest::CONNECTION_STOP, stops.sink()))
        .start(|_| Ok(Echo))
        .unwrap();
    server.attach_sink(everything.sink());
    server.attach_sink(only(Interest::SEND | Interest::SEND_ERROR, sends.sink()));
    server.attach_sink(Timing(timing.clone()));
    server.attach_sink(only(Interest::NONE, none.sink()));
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"one");
    round_trip(&mut client, b"two");
    drop(client);
    wait_until("the connection stopped", || stops.all().len() == 1);
    server.stop(PATIENCE);

    let all = everything.all();
    let of = |names: &[&'static str], name: &str| names.iter().filter(|n| **n == name).count();
    // The sink that wants every kind saw the whole session.
    for name in [
        "listener.stop",
        "acceptor.stop",
        "connection.start",
        "connection.ready",
        "connection.dispatch",
        "connection.callbacks",
        "connection.async_recv",
        "connection.send",
        "connection.stop",
    ] {
        assert!(of(&all, name) >= 1, "no {name} in {all:?}");
    }
    assert_eq!(stops.all(), ["connection.stop"]);
    assert_eq!(sends.all(), ["connection.send", "connection.send"]);
    // Each round of callbacks timed, as the sink that wants every kind saw.
    let timed = timing.all();
    assert_eq!(of(&timed, "connection.stop"), 1, "{timed:?}");
    assert_eq!(
        of(&timed, "connection.callbacks"),
        of(&all, "connection.callbacks"),
        "{timed:?}"
    );
    assert_eq!(
        timed.len(),
        of(&all, "connection.callbacks") + 1,
        "{timed:?}"
    );
    assert_eq!(none.all(), Vec::<&str>::new());
}

#[test]
fn interests_combine_and_print_by_event_name() {
    let wanted = Interest::DISPATCH | Interest::CONNECTION_STOP;
    assert!(wanted.contains(Interest::DISPATCH));
    assert!(!wanted.contains(Interest::DISPATCH | Interest::SEND));
    assert!(wanted.intersects(Interest::DISPATCH | Interest::SEND));
    assert!(Interest::ALL.contains(wanted));
    assert!(Interest::NONE.is_empty());
    assert_eq!(Interest::default(), Interest::NONE);
    let mut grown = Interest::NONE;
    grown |= Interest::DISPATCH;
    grown |= Interest::CONNECTION_STOP;
    assert_eq!(grown, wanted);
    assert_eq!(
        format!("{wanted:?}"),
        "Interest(connection.stop | connection.dispatch)"
    );
    assert_eq!(format!("{:?}", Interest::ALL), "Interest(ALL)");
    assert_eq!(format!("{:?}", Interest::NONE), "Interest(NONE)");
    // A closure wants everything; `only` narrows it, never widens.
    let closure = |_: &Event<'_>| {};
    assert_eq!(closure.interest(), Interest::ALL);
    assert_eq!(only(wanted, closure).interest(), wanted);
    assert_eq!(
        only(Interest::ALL, Timing(Names::default())).interest(),
        Interest::CALLBACKS | Interest::CONNECTION_STOP
    );
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

#[test]
fn a_sink_given_to_the_builder_sees_the_first_listener_and_acceptor_starts_and_stops_with_their_metadata(
) {
    let rec = Recorder::default();
    let server = builder()
        .num_acceptors(1)
        .backlog(77)
        .sink(rec.sink())
        .start(|_| Ok(Echo))
        .unwrap();
    server.stop(PATIENCE);
    let all = rec.all();
    let names: Vec<_> = all.iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        [
            "listener.start",
            "acceptor.start",
            "acceptor.stop",
            "listener.stop"
        ]
    );
    // The stop repeats the start's transport and options.
    assert_eq!(all[0].detail, "tcp backlog=77");
    assert_eq!(all[3].detail, "tcp backlog=77");
    assert_eq!(all[0].id, all[3].id);
}

#[test]
fn a_handler_reaches_its_span_and_emits_its_own_events_in_it() {
    struct Traced(std::sync::mpsc::Sender<(SpanId, SpanId)>);
    impl Handler for Traced {
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            let span = socket.span().expect("a server connection has a span");
            let _ = self.0.send((span.id(), span.parent()));
            assert!(span.started().elapsed() < Duration::from_secs(3600));
            socket.span_event(
                "lookup",
                &[("hits", data.len() as i64)],
                &[("table", "users")],
            );
            socket
                .send(data)
                .map_or_else(Flow::error, |()| Flow::Continue)
        }
    }
    let rec = Recorder::default();
    let (tx, ids) = std::sync::mpsc::channel();
    let server = builder()
        .sink(rec.sink())
        .start(move |_| Ok(Traced(tx.clone())))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"abc");
    let (id, parent) = ids.recv_timeout(PATIENCE).unwrap();
    let all = rec.all();
    let start = all.iter().find(|r| r.name == "connection.start").unwrap();
    assert_eq!((start.id, start.parent), (id, Some(parent)));
    let custom = all.iter().find(|r| r.name == "connection.custom").unwrap();
    assert_eq!((custom.id, custom.span), (id, Span::Connection));
    assert_eq!(
        custom.detail,
        "lookup [(\"hits\", 3)] [(\"table\", \"users\")]"
    );
    server.stop(PATIENCE);
}

/// Runs `handler` on one connection whose client does what `client` does,
/// and returns the events of that connection once it stopped.
fn events_of<H: Handler>(
    b: atoll::Builder,
    handler: impl Fn() -> H + Send + Sync + 'static,
    client: impl FnOnce(std::net::TcpStream),
) -> Vec<Rec> {
    let rec = Recorder::default();
    let server = b.sink(rec.sink()).start(move |_| Ok(handler())).unwrap();
    client(connect(tcp_addr(&server)));
    wait_until("the connection stopped", || {
        rec.all().iter().any(|r| r.name == "connection.stop")
    });
    server.stop(PATIENCE);
    rec.all()
        .into_iter()
        .filter(|r| r.span == Span::Connection)
        .collect()
}

fn detail_of(events: &[Rec], name: &str) -> String {
    events
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.detail.clone())
        .unwrap_or_else(|| panic!("no {name} in {events:?}"))
}

#[test]
fn a_recv_that_times_out_or_is_reset_emits_recv_error_with_the_error() {
    struct Waits;
    impl Handler for Waits {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            match socket.recv_within(10, Some(Duration::from_millis(50))) {
                Ok(_) => Flow::Close,
                Err(e) if e.is_timeout() => {
                    // Now wait for the reset the client sends next.
                    let _ = socket.send(b"go");
                    match socket.recv_within(10, Some(PATIENCE)) {
                        Ok(_) => Flow::Close,
                        Err(e) => Flow::error(e),
                    }
                }
                Err(e) => Flow::error(e),
            }
        }
    }
    let events = events_of(
        builder(),
        || Waits,
        |mut client| {
            let mut go = [0u8; 2];
            client.read_exact(&mut go).unwrap();
            // A close with unread data (and no linger) resets the connection.
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(client);
        },
    );
    let errors: Vec<_> = events
        .iter()
        .filter(|r| r.name == "connection.recv_error")
        .map(|r| r.detail.as_str())
        .collect();
    assert_eq!(errors.len(), 2, "{events:?}");
    assert_eq!(errors[0], "error=Timeout(Recv)");
    assert!(
        errors[1].contains("ConnectionReset") || errors[1] == "error=Closed",
        "{}",
        errors[1]
    );
}

#[test]
fn a_send_the_peer_never_reads_emits_send_error_with_the_bytes_and_the_timeout() {
    const BIG: usize = 64 << 20;
    struct Floods;
    impl Handler for Floods {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let _ = socket.set_send_buffer_size(4096);
            match socket.send(&vec![7u8; BIG]) {
                Ok(()) => Flow::Close,
                Err(e) => Flow::error(e),
            }
        }
    }
    let (hold, held) = std::sync::mpsc::channel();
    let events = events_of(
        builder().send_timeout(Some(Duration::from_millis(100))),
        || Floods,
        move |client| {
            // Connected, never read until the server gave up.
            let _ = hold.send(client);
        },
    );
    drop(held);
    let detail = detail_of(&events, "connection.send_error");
    assert!(
        detail.starts_with(&format!("bytes={BIG} error=")) && detail.contains("Timeout(Send"),
        "{detail}"
    );
    assert!(detail_of(&events, "connection.stop").contains("send timed out"));
}

#[test]
fn a_sendfile_that_fails_emits_sendfile_error_with_the_file_name_and_the_error() {
    let dir = std::env::temp_dir().join(format!("atoll-sendfile-error-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let present = dir.join("present");
    std::fs::write(&present, b"0123456789").unwrap();
    let missing = dir.join("missing");
    struct Sends(std::path::PathBuf, std::path::PathBuf);
    impl Handler for Sends {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            assert_eq!(socket.sendfile_path(&self.0, 2, 3).unwrap(), 3);
            assert!(socket.sendfile_path(&self.1, 0, 0).is_err());
            // A file open for writing only cannot be read from.
            let write_only = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.0)
                .unwrap();
            assert!(socket.sendfile(&write_only, 0, 4).is_err());
            Flow::Close
        }
    }
    let (p, m) = (present.clone(), missing.clone());
    let events = events_of(
        builder(),
        move || Sends(p.clone(), m.clone()),
        |mut client| {
            assert_eq!(read_to_close(&mut client), b"234");
        },
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        detail_of(&events, "connection.sendfile"),
        format!("{} 2+3", present.display())
    );
    let errors: Vec<_> = events
        .iter()
        .filter(|r| r.name == "connection.sendfile_error")
        .map(|r| r.detail.clone())
        .collect();
    assert_eq!(errors.len(), 2, "{events:?}");
    assert!(
        errors[0].starts_with(&format!(
            "path=Some({:?}) open=false 0+0 error=Io(",
            missing.display().to_string()
        )) && errors[0].contains("NotFound"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("path=None open=true 0+4 error=Io(") && errors[1].contains("code: 9"),
        "{}",
        errors[1]
    );
}

#[test]
fn measurements_and_metadata_are_listed_by_thousand_islands_keys() {
    use atoll::telemetry::Value;
    type Keys = (String, Vec<String>, Vec<String>);
    let seen: Arc<Mutex<Vec<Keys>>> = Arc::default();
    let log = seen.clone();
    let server = builder()
        .num_acceptors(1)
        .sink(move |e: &Event<'_>| {
            let keys = |list: Vec<(&str, Value<'_>)>| {
                list.iter()
                    .map(|(k, v)| match v {
                        Value::Count(n) if k.ends_with("_oct") => format!("{k}={n}"),
                        Value::Text(t) => format!("{k}={t}"),
                        _ => k.to_string(),
                    })
                    .collect()
            };
            log.lock().unwrap().push((
                e.name().to_string(),
                keys(e.measurements()),
                keys(e.metadata()),
            ));
        })
        .start(|_| Ok(Echo))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"four");
    drop(client);
    wait_until("the stop", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(name, ..)| name == "connection.stop")
    });
    server.stop(PATIENCE);
    let seen = seen.lock().unwrap();
    let of = |name: &str| seen.iter().find(|(n, ..)| n == name).cloned().unwrap();
    let (_, m, d) = of("listener.start");
    assert_eq!(m, ["monotonic_time"]);
    assert_eq!(
        d,
        [
            "telemetry_span_context",
            "local_address",
            "local_port",
            "transport_module=tcp",
            "transport_options"
        ]
    );
    let (_, m, d) = of("connection.stop");
    assert_eq!(
        m,
        [
            "monotonic_time",
            "duration",
            "send_oct=4",
            "send_cnt",
            "recv_oct=4",
            "recv_cnt"
        ]
    );
    assert_eq!(
        d,
        [
            "telemetry_span_context",
            "parent_telemetry_span_context",
            "remote_address",
            "remote_port"
        ]
    );
    let (_, m, _) = of("connection.async_recv");
    assert_eq!(m, ["monotonic_time", "data"]);
}
