//! Deploys without downtime, for real: the `handover` example passing its
//! listening socket to a successor process under load, `echo` started by
//! `systemd-socket-activate`, two `echo` processes sharing a port with
//! `SO_REUSEPORT`, and the same mechanisms between two servers in one
//! process (`listener_fds`, `inherit::send`/`receive`, `listen_fd`).
//!
//! Everything runs on loopback; every process started is killed by PID
//! when a test ends early. A missing `systemd-socket-activate` fails its
//! test with the Debian package to install (`systemd`);
//! `ATOLL_SKIP_EXTERNAL_CLIENTS=1` skips it instead.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use atoll::{inherit, Error, Flow, Handler, Socket};
use util::examples::{self, external, Process, Served};
use util::{builder, client_round_trip, connect, round_trip, tcp_addr, wait_until, PATIENCE};

// ---------------------------------------------------------------- helpers

/// A path in the temporary directory for this test, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        // Short: a Unix socket path has at most 107 bytes.
        let path = std::env::temp_dir().join(format!("atoll-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

/// What is left of `limit` before `deadline`, never more than `limit`.
fn before(deadline: Instant, limit: Duration) -> Duration {
    limit.min(deadline.saturating_duration_since(Instant::now()))
}

/// The connection log lines (`[INFO] connection N from PEER`) printed by
/// `echo --log info` or `handover --log info`.
fn connection_lines(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.starts_with("[INFO] connection ") && l.contains(" from "))
        .count()
}

/// The echo of `examples/handover.rs`, for servers inside this process:
/// at stop it sends end of stream and reads until the client closes, so
/// that no reply in flight is destroyed by a reset.
struct GracefulEcho;

impl Handler for GracefulEcho {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        match socket.send(data) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }

    fn handle_shutdown(&mut self, socket: &mut Socket) {
        let _ = socket.close_gracefully(Duration::from_secs(2));
    }
}

// ------------------------------------------------------ clients under load

/// How one exchange ended.
enum Outcome {
    /// The whole reply, equal to the request.
    Echoed,
    /// The server closed before any byte of the reply: the request was not
    /// answered, and is sent again on a new connection.
    Closed(&'static str),
    /// Anything else.
    Failed(String),
}

/// Sends `message` and reads exactly as many bytes back.
fn exchange(stream: &mut TcpStream, message: &[u8]) -> Outcome {
    if let Err(e) = stream.write_all(message) {
        // The server closed (and reset the connection) before the request.
        return match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Outcome::Closed("write"),
            _ => Outcome::Failed(format!("write: {e}")),
        };
    }
    let mut reply = vec![0u8; message.len()];
    let mut got = 0;
    while got < reply.len() {
        match stream.read(&mut reply[got..]) {
            Ok(0) if got == 0 => return Outcome::Closed("end of stream"),
            Ok(0) => return Outcome::Failed(format!("end of stream after {got} bytes of a reply")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && got == 0 => {
                return Outcome::Closed("reset")
            }
            Err(e) => return Outcome::Failed(format!("read after {got} bytes of a reply: {e}")),
        }
    }
    if reply == message {
        Outcome::Echoed
    } else {
        Outcome::Failed(format!(
            "sent {:?}, got {:?}",
            String::from_utf8_lossy(message),
            String::from_utf8_lossy(&reply)
        ))
    }
}

/// The phases of the handover test: on A, A → B, on B, B → C, on C.
const PHASES: usize = 5;

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    round_trips: [u64; PHASES],
    reconnects: [u64; PHASES],
    /// Of the reconnects, those after a reset rather than end of stream.
    resets: u64,
    refused: u64,
    failures: Vec<String>,
}

/// Clients in closed loop: each sends a unique 32-byte message, reads it
/// back, and sends the next.
struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    /// Round trips per client per phase, as they happen.
    progress: Arc<Vec<[AtomicU64; PHASES]>>,
    threads: Vec<JoinHandle<Tally>>,
}

/// How long a client waits for a connection or a reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let progress: Arc<Vec<[AtomicU64; PHASES]>> =
            Arc::new((0..clients).map(|_| Default::default()).collect());
        let threads = (0..clients)
            .map(|id| {
                let (stop, phase, progress) = (stop.clone(), phase.clone(), progress.clone());
                std::thread::spawn(move || client(id, addr, &stop, &phase, &progress[id]))
            })
            .collect();
        Load {
            stop,
            phase,
            progress,
            threads,
        }
    }

    fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// Waits until every client completed a round trip in `phase`.
    fn wait_all_in(&self, phase: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let behind = self
                .progress
                .iter()
                .filter(|p| p[phase].load(Ordering::Relaxed) == 0)
                .count();
            if behind == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{behind} clients completed no round trip in phase {phase} within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the clients and returns what each saw.
    fn finish(mut self) -> Vec<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .drain(..)
            .map(|t| t.join().expect("a client panicked"))
            .collect()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One client of [`Load`], until `stop` (or a minute, or ten reconnects).
fn client(
    id: usize,
    addr: SocketAddr,
    stop: &AtomicBool,
    phase: &AtomicUsize,
    progress: &[AtomicU64; PHASES],
) -> Tally {
    let mut tally = Tally::default();
    let mut stream: Option<TcpStream> = None;
    let mut seq = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            tally.failures.push("still running after a minute".into());
            break;
        }
        let s = match &mut stream {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT) {
                Ok(s) => {
                    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                    s.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                    s.set_nodelay(true).unwrap();
                    stream.insert(s)
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::ConnectionRefused {
                        tally.refused += 1;
                    }
                    tally.failures.push(format!("client {id}: connect: {e}"));
                    break;
                }
            },
        };
        let message = format!("{id:03}/{seq:027}\n");
        assert_eq!(message.len(), 32);
        match exchange(s, message.as_bytes()) {
            Outcome::Echoed => {
                let p = phase.load(Ordering::SeqCst);
                tally.round_trips[p] += 1;
                progress[p].fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            Outcome::Closed(how) => {
                tally.resets += u64::from(how != "end of stream");
                // Not answered: the same message again, on a new connection.
                tally.reconnects[phase.load(Ordering::SeqCst)] += 1;
                stream = None;
                if tally.reconnects.iter().sum::<u64>() > 10 {
                    tally
                        .failures
                        .push(format!("client {id}: over ten reconnects"));
                    break;
                }
            }
            Outcome::Failed(why) => {
                tally.failures.push(format!("client {id}: {why}"));
                break;
            }
        }
    }
    tally
}

// --------------------------------------------------- handover between processes

/// `handover` A serves 50 clients in closed loop; B takes its socket over
/// while they run, then C takes it from B. No connect is refused and no
/// round trip fails: a client whose connection the old process closes
/// reads end of stream before any byte of a reply, and sends its message
/// again on a new connection, served by the new process.
#[test]
fn handover_under_load_refuses_nothing_and_loses_no_round_trip() {
    const CLIENTS: usize = 50;
    let began = Instant::now();
    let deadline = began + Duration::from_secs(30);
    let control = TempPath::new("handover.sock");
    let common = [
        "--control",
        control.as_str(),
        "--workers",
        "4",
        "--shutdown-timeout-ms",
        "5000",
    ];
    let mut current = Served::start("handover", &common);
    let addr = current.addr;
    let port = current.port();
    let load = Load::start(addr, CLIENTS);
    load.wait_all_in(0, before(deadline, PATIENCE));
    std::thread::sleep(Duration::from_millis(300));

    let mut drained = Vec::new();
    for handover in 0..2 {
        let (during, after) = (1 + 2 * handover, 2 + 2 * handover);
        load.set_phase(during);
        let args: Vec<&str> = ["--port", port.as_str()]
            .into_iter()
            .chain(common)
            .collect();
        let mut next = Served::start_with("handover", &args);
        assert_eq!(next.addr, addr, "the successor listens elsewhere");
        next.process.wait_line(
            "`took over from predecessor`",
            before(deadline, PATIENCE),
            |l| l == "took over from predecessor",
        );
        let status = current.process.wait_exit(before(deadline, PATIENCE));
        assert!(status.success(), "the predecessor exited with {status}");
        let line = current
            .process
            .wait_line("`handed over`", Duration::ZERO, |l| {
                l.starts_with("handed over")
            });
        drained.push(line);
        load.set_phase(after);
        std::thread::sleep(Duration::from_secs(1));
        load.wait_all_in(after, before(deadline, PATIENCE));
        current = next;
    }
    let tallies = load.finish();
    current.stop();

    let sum = |f: &dyn Fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let trips: Vec<u64> = (0..PHASES).map(|p| sum(&|t| t.round_trips[p])).collect();
    let reconnects: Vec<u64> = (0..PHASES).map(|p| sum(&|t| t.reconnects[p])).collect();
    let refused = sum(&|t| t.refused);
    let resets = sum(&|t| t.resets);
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    println!(
        "handover under load: {CLIENTS} clients in {:?}; round trips on A {}, A->B {}, on B {}, \
         B->C {}, on C {}; reconnects A->B {}, B->C {} ({resets} after a reset); refused {refused}; \
         failures {}; {drained:?}",
        began.elapsed(),
        trips[0],
        trips[1],
        trips[2],
        trips[3],
        trips[4],
        reconnects[0] + reconnects[1] + reconnects[2],
        reconnects[3] + reconnects[4],
        failures.len(),
    );
    assert!(failures.is_empty(), "failures: {failures:#?}");
    assert_eq!(refused, 0, "refused connects");
    assert_eq!(reconnects[0], 0, "connections closed before any handover");
    for (id, tally) in tallies.iter().enumerate() {
        for phase in [0, 2, 4] {
            assert!(
                tally.round_trips[phase] > 0,
                "client {id} made no round trip in phase {phase}: {tally:?}"
            );
        }
        // Each handover closes a client's connection at most once (its
        // connection to the old process); twice would mean a connection
        // made during the handover reached the old process, still a
        // success.
        let first = tally.reconnects[1] + tally.reconnects[2];
        let second = tally.reconnects[3] + tally.reconnects[4];
        assert!(
            first <= 2 && second <= 2,
            "client {id} reconnected too often: {tally:?}"
        );
    }
    for r in [reconnects[1] + reconnects[2], reconnects[3] + reconnects[4]] {
        assert!(
            r <= CLIENTS as u64 + 5,
            "{r} reconnects for {CLIENTS} clients"
        );
    }
}

/// A successor that connects to the control socket but never says ready:
/// the predecessor keeps serving and takes successors again.
#[test]
fn a_successor_that_never_gets_ready_leaves_the_predecessor_serving() {
    let control = TempPath::new("stall.sock");
    let mut served = Served::start(
        "handover",
        &[
            "--control",
            control.as_str(),
            "--shutdown-timeout-ms",
            "1000",
        ],
    );
    // A fake successor: takes the socket, then goes away without a byte.
    let stream = UnixStream::connect(&control.0).expect("the control socket");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let fds = inherit::receive(&stream).expect("the listening socket");
    assert_eq!(fds.len(), 1);
    drop((stream, fds));
    served
        .process
        .wait_line("`handover failed`", PATIENCE, |l| {
            l.starts_with("handover failed")
        });
    let mut client = connect(served.addr);
    round_trip(&mut client, b"still here");
    // The control socket is back: a real successor takes over.
    served
        .process
        .wait_line("`waiting for a successor again`", PATIENCE, |l| {
            l == "waiting for a successor again"
        });
    let port = served.port();
    let next = Served::start_with(
        "handover",
        &["--port", &port, "--control", control.as_str()],
    );
    assert_eq!(next.addr, served.addr);
    // The old connection is closed with end of stream, no reset.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("end of stream");
    assert!(rest.is_empty());
    drop(client);
    let status = served.process.wait_exit(PATIENCE);
    assert!(status.success(), "the predecessor exited with {status}");
    let mut client = connect(next.addr);
    round_trip(&mut client, b"served by the successor");
    drop(client);
    next.stop();
}

// ------------------------------------------------------- socket activation

/// Connects to `addr` as soon as something listens there (bounded).
fn connect_when_listening(addr: SocketAddr, process: &mut Process) -> TcpStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => {
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                stream.set_write_timeout(Some(PATIENCE)).unwrap();
                return stream;
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                assert!(
                    process.is_running(),
                    "{} exited before listening on {addr}",
                    process.name()
                );
                assert!(Instant::now() < deadline, "nothing listens on {addr}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

/// `systemd-socket-activate -l 127.0.0.1:PORT --fdname=echo echo --log
/// info`: it listens, and on the first connection execs `echo` with the
/// socket as descriptor 3 (`LISTEN_FDS=1`, `LISTEN_FDNAMES=echo`). No
/// connection is lost: the first one waits in the queue while echo starts.
#[test]
fn systemd_socket_activate_starts_echo_on_the_first_connection() {
    let Some(mut activate) = external("systemd-socket-activate", "systemd") else {
        return;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    activate
        .arg("-l")
        .arg(addr.to_string())
        .arg("--fdname=echo")
        .arg(examples::path("echo"))
        .args(["--log", "info"]);
    let mut echo = Process::spawn("systemd-socket-activate", activate);
    let mut first = connect_when_listening(addr, &mut echo);
    round_trip(&mut first, b"activated by this very connection");
    let said = echo.wait_line("`socket-activated`", PATIENCE, |l| {
        l.starts_with("socket-activated")
    });
    assert_eq!(
        said,
        "socket-activated: listening on the inherited socket (echo)"
    );
    let listening = echo.wait_line("`listening on`", PATIENCE, |l| {
        l.starts_with("listening on ")
    });
    assert_eq!(listening, format!("listening on {addr}"));
    let mut second = connect(addr);
    round_trip(&mut second, b"and the next one");
    round_trip(&mut first, b"the first is still served");
    drop((first, second));
    wait_until("two connection log lines", || {
        connection_lines(echo.poll_lines()) == 2
    });
    // systemd-socket-activate exec'd echo: the PID is echo's.
    echo.signal("TERM");
    let status = echo.wait_exit(PATIENCE);
    assert!(status.success(), "echo exited with {status}");
}

/// Two sockets (`-l` twice, `--fdname=first:second`): echo serves the
/// first and closes the one it does not use, so connecting there is
/// refused rather than queued forever.
#[test]
fn systemd_socket_activate_with_two_sockets_names_both() {
    let Some(mut activate) = external("systemd-socket-activate", "systemd") else {
        return;
    };
    let first = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let second = SocketAddr::from(([127, 0, 0, 1], free_port()));
    activate
        .arg("-l")
        .arg(first.to_string())
        .arg("-l")
        .arg(second.to_string())
        .arg("--fdname=first:second")
        .arg(examples::path("echo"));
    let mut echo = Process::spawn("systemd-socket-activate", activate);
    let mut client = connect_when_listening(first, &mut echo);
    round_trip(&mut client, b"on the first socket");
    echo.wait_line("`socket-activated ... (first)`", PATIENCE, |l| {
        l == "socket-activated: listening on the inherited socket (first)"
    });
    echo.wait_line("`listening on`", PATIENCE, |l| {
        l == format!("listening on {first}")
    });
    let refused = TcpStream::connect(second).map(drop);
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused),
        "the second socket is still held open"
    );
    drop(client);
    echo.signal("TERM");
    assert!(echo.wait_exit(PATIENCE).success());
}

/// `LISTEN_PID` naming another process (here PID 1): the variables are not
/// for echo, which binds its own port.
#[test]
fn listen_fds_meant_for_another_process_are_ignored() {
    let mut command = examples::command("echo");
    command
        .args(["--port", "0"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "other");
    let served = Served::wait(Process::spawn("echo", command));
    assert!(
        !served
            .process
            .seen()
            .iter()
            .any(|l| l.starts_with("socket-activated")),
        "{:?}",
        served.process.seen()
    );
    assert_ne!(served.addr.port(), 0);
    let mut client = connect(served.addr);
    round_trip(&mut client, b"bound by echo itself");
    drop(client);
    served.stop();
}

/// `LISTEN_PID` naming echo itself (the shell execs it, keeping its PID)
/// with a `LISTEN_FDS` that is not a count: echo refuses to start and says
/// why.
#[test]
fn a_malformed_listen_fds_is_an_error() {
    let mut child = Command::new("sh")
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=two exec \"$0\" --port 0"])
        .arg(examples::path("echo"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    let status = examples::wait_exit(&mut child, PATIENCE);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "echo started anyway: {stderr}");
    assert!(
        stderr.contains("LISTEN_FDS=two is not a count"),
        "echo said: {stderr}"
    );
}

// --------------------------------------------------- SO_REUSEPORT, two processes

/// Two `echo --reuseport` processes on one port: the kernel spreads the
/// connections between them. After one stops, the other serves every new
/// connection.
#[test]
fn two_processes_share_a_port_with_reuseport() {
    const CONNECTIONS: usize = 200;
    let mut one = Served::start("echo", &["--reuseport", "--log", "info", "--workers", "2"]);
    let port = one.port();
    let mut two = Served::start_with(
        "echo",
        &[
            "--port",
            &port,
            "--reuseport",
            "--log",
            "info",
            "--workers",
            "2",
        ],
    );
    assert_eq!(one.addr, two.addr);
    let addr = one.addr;
    for i in 0..CONNECTIONS {
        client_round_trip(addr, format!("connection {i}").as_bytes());
    }
    // Each connection's log line is printed before its reply is sent.
    let counts = |one: &mut Served, two: &mut Served| {
        (
            connection_lines(one.process.poll_lines()),
            connection_lines(two.process.poll_lines()),
        )
    };
    wait_until("every connection logged", || {
        let (a, b) = counts(&mut one, &mut two);
        a + b >= CONNECTIONS
    });
    let (a, b) = counts(&mut one, &mut two);
    println!("reuseport: {CONNECTIONS} connections, {a} served by one process, {b} by the other");
    assert_eq!(a + b, CONNECTIONS);
    assert!(a > 0 && b > 0, "one process served none: {a} and {b}");

    // Connections queued on the stopping process's socket would be reset by
    // the kernel; the next ones are made after it exited.
    two.process.signal("TERM");
    assert!(two.process.wait_exit(PATIENCE).success());
    for i in 0..CONNECTIONS / 2 {
        client_round_trip(addr, format!("after the stop {i}").as_bytes());
    }
    wait_until("the new connections logged", || {
        connection_lines(one.process.poll_lines()) >= a + CONNECTIONS / 2
    });
    assert_eq!(
        connection_lines(one.process.poll_lines()),
        a + CONNECTIONS / 2
    );
    one.stop();
}

// ------------------------------------------------------------ in one process

/// A handover between two servers of this process, as between two
/// processes: the old one's listening socket through a Unix socket pair to
/// the new one, then the old one stops. Clients connecting all the while
/// are never refused.
#[test]
fn in_process_handover_refuses_no_connection() {
    let served_old = Arc::new(AtomicUsize::new(0));
    let served_new = Arc::new(AtomicUsize::new(0));
    let counter = |served: &Arc<AtomicUsize>| {
        let served = served.clone();
        move |_: &atoll::Connection| {
            served.fetch_add(1, Ordering::Relaxed);
            Ok(GracefulEcho)
        }
    };
    let old = builder().start(counter(&served_old)).unwrap();
    let addr = util::tcp_addr(&old);
    let stop = Arc::new(AtomicBool::new(false));
    let after_stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|id| {
            let (stop, after_stop) = (stop.clone(), after_stop.clone());
            std::thread::spawn(move || {
                // Short connections: connect, one round trip, close.
                let (mut trips, mut trips_after, mut closed) = (0u64, 0u64, 0u64);
                let mut failures = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut seq = 0u64;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let mut stream = match TcpStream::connect(addr) {
                        Ok(s) => s,
                        Err(e) => {
                            failures.push(format!("connect: {e}"));
                            break;
                        }
                    };
                    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                    let message = format!("{id:03}/{seq:027}\n");
                    match exchange(&mut stream, message.as_bytes()) {
                        Outcome::Echoed => {
                            trips += 1;
                            seq += 1;
                            if after_stop.load(Ordering::SeqCst) {
                                trips_after += 1;
                            }
                        }
                        Outcome::Closed(_) => closed += 1,
                        Outcome::Failed(why) => {
                            failures.push(why);
                            break;
                        }
                    }
                }
                (trips, trips_after, closed, failures)
            })
        })
        .collect();
    wait_until("the first connections", || {
        served_old.load(Ordering::Relaxed) > 20
    });

    let (to_successor, from_predecessor) = UnixStream::pair().unwrap();
    inherit::send(&to_successor, &old.listener_fds().unwrap()).unwrap();
    let mut fds = inherit::receive(&from_predecessor).unwrap();
    assert_eq!(fds.len(), 1);
    let new = builder()
        .listen_fd(fds.remove(0))
        .start(counter(&served_new))
        .unwrap();
    assert_eq!(util::tcp_addr(&new), addr);
    std::thread::sleep(Duration::from_millis(100));
    old.stop(Duration::from_secs(5));
    after_stop.store(true, Ordering::SeqCst);
    let old_total = served_old.load(Ordering::Relaxed);
    let new_before = served_new.load(Ordering::Relaxed);
    wait_until("connections after the stop", || {
        served_new.load(Ordering::Relaxed) > new_before + 20
    });
    stop.store(true, Ordering::SeqCst);
    let (mut trips, mut trips_after, mut closed) = (0, 0, 0);
    for client in clients {
        let (t, a, c, failures) = client.join().unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        (trips, trips_after, closed) = (trips + t, trips_after + a, closed + c);
    }
    println!(
        "in-process handover: {trips} round trips ({trips_after} after the old server stopped), \
         {closed} closed before a reply; old served {old_total}, new {}",
        served_new.load(Ordering::Relaxed)
    );
    assert_eq!(served_old.load(Ordering::Relaxed), old_total);
    assert!(trips_after > 0);
    new.stop(Duration::from_secs(5));
}

/// `listen_fd` with a Unix listener bound by the application.
#[test]
fn listen_fd_serves_an_inherited_unix_listener() {
    let path = TempPath::new("inherited-unix.sock");
    let listener = UnixListener::bind(&path.0).unwrap();
    let server = builder()
        .listen_fd(OwnedFd::from(listener))
        .start(|_| Ok(GracefulEcho))
        .unwrap();
    let addr = server.local_addr().unwrap();
    assert_eq!(
        addr.to_string(),
        atoll::transport::Addr::Unix(Some(path.0.clone())).to_string()
    );
    let mut client = UnixStream::connect(&path.0).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"over a Unix socket").unwrap();
    let mut reply = [0u8; 18];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"over a Unix socket");
    drop(client);
    server.stop(Duration::from_secs(5));
}

/// A TCP socket that is bound but not listening is made to listen.
#[test]
fn listen_fd_listens_on_a_bound_socket() {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let bound = SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(&bound.into()).unwrap();
    let bound = socket.local_addr().unwrap().as_socket().unwrap();
    let server = builder()
        .listen_fd(OwnedFd::from(socket))
        .start(|_| Ok(GracefulEcho))
        .unwrap();
    assert_eq!(util::tcp_addr(&server), bound);
    let mut client = connect(bound);
    round_trip(&mut client, b"listened on by atoll");
    drop(client);
    server.stop(Duration::from_secs(5));
}

/// Sockets a TCP server cannot listen on are refused by `start`.
#[test]
fn listen_fd_refuses_a_udp_socket_and_an_unbound_one() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let refused = builder()
        .listen_fd(OwnedFd::from(udp))
        .start(|_| Ok(GracefulEcho));
    match refused {
        Err(Error::Bind { .. } | Error::Config(_)) => {}
        Err(e) => panic!("a UDP socket: unexpected error {e:?}"),
        Ok(_) => panic!("a TCP server started on a UDP socket"),
    }
    let unbound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let refused = builder()
        .listen_fd(OwnedFd::from(unbound))
        .start(|_| Ok(GracefulEcho));
    match refused {
        Err(Error::Bind { .. } | Error::Config(_)) => {}
        Err(e) => panic!("an unbound socket: unexpected error {e:?}"),
        Ok(_) => panic!("a TCP server started on an unbound socket"),
    }
}

/// A server started on an inherited socket that stops (without handing the
/// socket on) closes it: new clients are refused, not queued for nobody,
/// as for a server that bound its own port.
#[test]
fn a_stopped_server_releases_its_inherited_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = builder()
        .listen_fd(OwnedFd::from(listener))
        .start(|_| Ok(GracefulEcho))
        .unwrap();
    let mut client = connect(addr);
    round_trip(&mut client, b"served");
    drop(client);
    server.stop(Duration::from_secs(5));
    let after = TcpStream::connect(addr).map(drop);
    assert_eq!(
        after.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionRefused),
        "the stopped server still holds the listening socket"
    );
    drop(server);
}

/// `echo --proxy-protocol --log info`: a v1 and a v2 header name the
/// client, whose address the handler logs (with the proxy's), and nothing
/// of the headers is echoed; a connection without a header is closed
/// unanswered.
#[test]
fn echo_with_proxy_protocol_logs_the_client_and_echoes_only_data() {
    use atoll::proxy::{ProxyHeader, Version};
    let mut echo = Served::start("echo", &["--proxy-protocol", "--log", "info"]);
    for (version, client) in [
        (Version::V1, "192.0.2.7:5555"),
        (Version::V2, "[2001:db8::7]:6666"),
    ] {
        let source: SocketAddr = client.parse().unwrap();
        let destination: SocketAddr = if source.is_ipv4() {
            "198.51.100.1:4000".parse().unwrap()
        } else {
            "[2001:db8::1]:4000".parse().unwrap()
        };
        let mut header = ProxyHeader::tcp(source, destination)
            .encode(version)
            .unwrap();
        header.extend_from_slice(b"hello");
        let mut conn = connect(echo.addr);
        conn.write_all(&header).unwrap();
        let mut reply = [0u8; 5];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"hello", "{version:?}: only the data comes back");
        round_trip(&mut conn, b"and more");
        let proxy = conn.local_addr().unwrap();
        let logged = format!("from {client} via {proxy}");
        echo.process
            .wait_line(&logged, PATIENCE, |line| line.ends_with(&logged));
    }
    let mut plain = connect(echo.addr);
    plain.write_all(b"no header\r\n").unwrap();
    let mut rest = Vec::new();
    let read = plain.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "a connection without a header got {rest:?} ({read:?})"
    );
}

/// The library's handover pieces in one process: a successor that takes
/// the sockets and leaves without `ready` fails that handover, and the
/// next successor (already waiting) succeeds and takes the control path
/// over; a second point on a path that answers, or on a path that is not
/// a socket, is refused.
#[test]
fn handover_point_survives_a_failed_successor_and_refuses_a_taken_path() {
    use atoll::inherit::{take_over, HandoverPoint};
    let path = TempPath::new("point");
    let server = builder().start(|_| Ok(GracefulEcho)).unwrap();
    let addr = tcp_addr(&server);
    let mut point = HandoverPoint::bind(&path.0).unwrap();

    let fds = server.listener_fds().unwrap();
    let attempts = thread::spawn(move || {
        let first = point.hand_over(&fds, Duration::from_secs(5));
        let second = point.hand_over(&fds, Duration::from_secs(5));
        (
            first.map_err(|e| e.to_string()),
            second.map_err(|e| e.to_string()),
        )
    });
    let gone = take_over(&path.0, PATIENCE)
        .unwrap()
        .expect("the point answers");
    assert_eq!(gone.fds.len(), 1);
    // The next successor queues while the first holds the point.
    let next = {
        let path = path.0.clone();
        thread::spawn(move || take_over(&path, PATIENCE).unwrap())
    };
    thread::sleep(Duration::from_millis(100));
    drop(gone); // leaves without saying it is ready
    let mut taken = next.join().unwrap().expect("the point answers again");
    let successor = builder()
        .listen_fd(taken.fds.remove(0))
        .start(|_| Ok(GracefulEcho))
        .unwrap();
    let next_point = taken.ready().unwrap();
    let (first, second) = attempts.join().unwrap();
    assert_eq!(first, Err("the successor went away".to_string()));
    assert_eq!(second, Ok(()));
    server.stop(PATIENCE);
    round_trip(&mut connect(addr), b"served by the successor");
    drop(successor);

    // The successor's point answers on the path now.
    let answers = HandoverPoint::bind(&path.0).unwrap_err();
    assert_eq!(answers.kind(), io::ErrorKind::AddrInUse, "{answers}");
    drop(next_point);
    assert!(!path.0.exists(), "a point removes its file when dropped");

    let file = TempPath::new("not-a-socket");
    std::fs::write(&file.0, b"data").unwrap();
    assert!(HandoverPoint::bind(&file.0).is_err());
    assert_eq!(
        std::fs::read(&file.0).unwrap(),
        b"data",
        "the file was left alone"
    );
}

// ------------------------------------------- service manager notifications

/// The service manager's end of `NOTIFY_SOCKET`: a datagram socket.
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
}

impl NotifySocket {
    fn at_path(path: &TempPath) -> NotifySocket {
        let socket = std::os::unix::net::UnixDatagram::bind(&path.0).expect("bind NOTIFY_SOCKET");
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        NotifySocket { socket }
    }

    fn abstract_named(name: &str) -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind");
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        NotifySocket { socket }
    }

    /// The next message, as text.
    fn next(&self, what: &str) -> String {
        let mut buf = [0u8; 512];
        let n = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {what} notification: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Nothing more came within a short while.
    fn assert_quiet(&self) {
        self.socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 512];
        if let Ok(n) = self.socket.recv(&mut buf) {
            panic!(
                "unexpected notification {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
        self.socket.set_read_timeout(Some(PATIENCE)).unwrap();
    }
}

/// A `handover` process told to notify `notify_socket`.
fn notifying_handover(notify_socket: &str, args: &[&str]) -> Served {
    let mut command = examples::command("handover");
    command.env("NOTIFY_SOCKET", notify_socket).args(args);
    Served::wait(Process::spawn("handover", command))
}

#[test]
fn handover_tells_the_service_manager_ready_new_main_pid_and_stopping() {
    let control = TempPath::new("notify-control.sock");
    let notify_path = TempPath::new("notify.sock");
    let manager = NotifySocket::at_path(&notify_path);
    let common = ["--control", control.as_str(), "--workers", "2"];

    let first_args: Vec<&str> = ["--port", "0"].into_iter().chain(common).collect();
    let mut first = notifying_handover(notify_path.as_str(), &first_args);
    assert_eq!(manager.next("first READY"), "READY=1");

    let port = first.port();
    let next_args: Vec<&str> = ["--port", port.as_str()]
        .into_iter()
        .chain(common)
        .collect();
    let successor = notifying_handover(notify_path.as_str(), &next_args);
    assert_eq!(
        manager.next("successor MAINPID"),
        format!("MAINPID={}\nREADY=1", successor.process.pid())
    );
    // The predecessor hands over and exits without saying STOPPING: the
    // service goes on, in the successor.
    let status = first.process.wait_exit(PATIENCE);
    assert!(status.success(), "the predecessor exited with {status}");
    manager.assert_quiet();
    round_trip(&mut connect(successor.addr), b"served by the successor");

    successor.process.signal("TERM");
    assert_eq!(manager.next("STOPPING"), "STOPPING=1");
    let mut successor = successor;
    assert!(successor.process.wait_exit(PATIENCE * 2).success());
}

#[test]
fn notify_reaches_an_abstract_notify_socket() {
    let name = format!("atoll-notify-{}", std::process::id());
    let manager = NotifySocket::abstract_named(&name);
    let control = TempPath::new("notify-abstract.sock");
    let served = notifying_handover(
        &format!("@{name}"),
        &["--port", "0", "--control", control.as_str()],
    );
    assert_eq!(manager.next("READY"), "READY=1");
    served.stop();
    assert_eq!(manager.next("STOPPING"), "STOPPING=1");
}

#[test]
fn an_unreachable_notify_socket_is_reported_and_the_server_serves_on() {
    let control = TempPath::new("notify-missing-control.sock");
    let missing = TempPath::new("notify-nobody.sock");
    let served = notifying_handover(
        missing.as_str(),
        &["--port", "0", "--control", control.as_str()],
    );
    round_trip(&mut connect(served.addr), b"still serving");
    served.stop();
}
