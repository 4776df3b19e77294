//! An echo server that hands its listening socket to its successor: a new
//! version of the program takes over the port without refusing a single
//! connection.
//!
//! ```text
//! cargo run --example handover -- --port 4000 --control /tmp/handover.sock   # version 1
//! cargo run --example handover -- --port 4000 --control /tmp/handover.sock   # version 2 takes over
//! ```
//!
//! The running server listens for its successor on a Unix socket, the
//! control socket at `--control PATH` ([`HandoverPoint`]). A new process
//! started with the same path:
//!
//! 1. asks for the listening socket ([`inherit::take_over`]). If nobody
//!    answers, it is the first: it binds the port itself, then the control
//!    path (replacing a socket file that a killed process left behind);
//! 2. otherwise the running server (the predecessor) sends duplicates of
//!    its listening socket over the control connection
//!    ([`Server::listener_fds`], [`HandoverPoint::hand_over`]);
//! 3. the successor starts serving them
//!    ([`Builder::listen_fd`](atoll::Builder::listen_fd)), says it is
//!    ready and takes the control path over
//!    ([`Takeover::ready`](inherit::Takeover::ready));
//! 4. then the predecessor stops: it stops accepting at once and drains its
//!    connections (up to `--shutdown-timeout-ms`), then exits; without a
//!    ready within 10 s (the successor failed), the predecessor carries on
//!    serving and waits for the next successor.
//!
//! No connection is refused meanwhile: both processes hold the same
//! listening socket (one socket, not two bound to the same port), and the
//! kernel queues connections on it as long as any process holds it open.
//! While both run, either may accept a connection; after the predecessor
//! stops accepting, the successor accepts everything in the queue.
//!
//! The predecessor's open connections end gracefully: at stop each idle one
//! gets [`Handler::handle_shutdown`], which closes it with
//! [`Socket::close_gracefully`]: it shuts down the write side (the client
//! reads end of stream after every reply already sent) and then reads and
//! discards until the client closes, for up to 2 s. Closing a
//! socket with unread data would send a TCP reset instead, and a reset can
//! destroy replies still in flight to the client. A client that reads end
//! of stream before the reply to its last request knows the request was
//! not answered (here: not even read), and sends it again on a new
//! connection, which the successor serves.
//!
//! On stdout: `listening on ADDR` once the process serves the port and the
//! control socket, then `took over from predecessor` if it inherited the
//! port; the predecessor prints `successor ready: handing over` and, once
//! drained, `handed over: stopped in T, N connections drained`; after a
//! failed handover, `handover failed (WHY): still serving`, then `waiting
//! for a successor again` once the control socket is back.
//!
//! Under systemd (`Type=notify`, `NotifyAccess=all`) it reports its state
//! ([`atoll::notify`]): `READY=1` once it serves; a successor sends
//! `MAINPID=` with its own id and `READY=1` before its predecessor exits,
//! so the service manager follows the new process; `STOPPING=1` when a
//! signal stops it. Outside systemd these do nothing.
//!
//! Stops gracefully on SIGINT or SIGTERM, like `echo`. One handover at a
//! time: while one is under way the control path does not exist, and a
//! third process started then would try to bind the port itself and fail.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use atoll::inherit::{self, HandoverPoint};
use atoll::{notify, Flow, Handler, Server, Socket};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// How long the predecessor waits for its successor to say it serves, and
/// the successor for the descriptors.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection closed at stop waits for its client to close.
const LINGER: Duration = Duration::from_secs(2);

struct Echo;

impl Handler for Echo {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        log::info!(target: "handover", "connection {} from {}", socket.id(), socket.peer_addr());
        Flow::Continue
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        match socket.send(data) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }

    /// Closes without a reset: end of stream after the replies sent, then
    /// whatever the client still sends is read and dropped until it closes.
    /// A request that arrives now is not answered: the client reads end of
    /// stream before any reply and sends it again elsewhere.
    fn handle_shutdown(&mut self, socket: &mut Socket) {
        let _ = socket.close_gracefully(LINGER);
    }
}

const HELP: &str = "\
handover: an echo server that hands its port over to its successor

Options (defaults in brackets):
  --control PATH            the control socket the successor connects to (required)
  --ip ADDR                 address to listen on [127.0.0.1]
  --port N                  port, 0 for a free one [4000]; a successor
                            serves its predecessor's socket instead
  --workers N               base worker threads [one per core]
  --max-workers N           most worker threads, for blocking handlers [4096]
  --acceptors N             acceptor threads [one per core, at most 16]
  --shutdown-timeout-ms MS  drain time at handover and on SIGINT/SIGTERM [15000]
  --log LEVEL               log events at error, info, debug or trace [off]
  --help                    this text";

fn main() -> ExitCode {
    common::run_main("handover", run)
}

/// Why the server stops.
enum Event {
    Signal,
    HandedOver,
}

fn run() -> common::Result {
    let mut builder = Server::builder().ip(IpAddr::from([127, 0, 0, 1]));
    let mut shutdown_timeout = Duration::from_secs(15);
    let mut control = None;
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        if args.server_flag(&flag, &mut builder)? {
            continue;
        }
        builder = match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--control" => {
                control = Some(PathBuf::from(args.value()?));
                builder
            }
            "--shutdown-timeout-ms" => {
                shutdown_timeout = args.ms()?;
                builder
            }
            "--log" => {
                common::init_log(&args.value()?, &["atoll", "handover"])?;
                builder
            }
            _ => return Err(args.unknown()),
        };
    }
    let control = control.ok_or("--control PATH is required (see --help)")?;
    // From now on a signal waits until the server can stop gracefully.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;

    // A predecessor answering on the control socket gives its socket.
    let mut taken = inherit::take_over(&control, HANDOVER_TIMEOUT)
        .map_err(|e| format!("control socket {}: {e}", control.display()))?;
    let server = match &mut taken {
        Some(taken) => {
            if taken.fds.len() != 1 {
                return Err(
                    format!("expected one listening socket, got {}", taken.fds.len()).into(),
                );
            }
            builder.listen_fd(taken.fds.remove(0)).start(|_| Ok(Echo))?
        }
        None => builder.start(|_| Ok(Echo))?,
    };
    let server = Arc::new(server);
    let took_over = taken.is_some();
    // Serving already: the predecessor may stop accepting now, and the
    // control path becomes this process's. If the predecessor is gone,
    // this process serves the socket anyway.
    let point = match taken.map(|taken| taken.ready()) {
        Some(Ok(point)) => point,
        Some(Err(e)) => {
            eprintln!("handover: telling the predecessor: {e}");
            bind_point(&control)?
        }
        None => bind_point(&control)?,
    };
    // Up: the port and the control socket.
    println!("listening on {}", server.local_addr()?);
    if took_over {
        println!("took over from predecessor");
    }
    // The service manager follows this process from now on; the
    // predecessor exits once drained.
    let state = if took_over {
        format!("MAINPID={}\nREADY=1", std::process::id())
    } else {
        "READY=1".to_string()
    };
    if let Err(e) = notify::send(&state) {
        eprintln!("handover: telling the service manager: {e}");
    }

    let (events, stops) = mpsc::channel();
    let on_signal = events.clone();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = on_signal.send(Event::Signal);
        }
    });
    {
        let server = server.clone();
        std::thread::spawn(move || serve_control(point, &server, events));
    }

    let event = stops.recv().expect("the signal thread never ends first");
    let began = Instant::now();
    let open = server.connection_count();
    match event {
        Event::Signal => {
            if let Err(e) = notify::stopping() {
                eprintln!("handover: telling the service manager: {e}");
            }
            // The control socket's file stays behind (the control thread
            // holds it); the next start replaces it.
            server.stop(shutdown_timeout);
            println!(
                "stopped in {:?}, {open} connections drained",
                began.elapsed()
            );
        }
        Event::HandedOver => {
            server.stop(shutdown_timeout);
            println!(
                "handed over: stopped in {:?}, {open} connections drained",
                began.elapsed()
            );
        }
    }
    Ok(())
}

/// The control socket, for the next successor.
fn bind_point(control: &std::path::Path) -> common::Result<HandoverPoint> {
    HandoverPoint::bind(control)
        .map_err(|e| format!("control socket {}: {e}", control.display()).into())
}

/// Hands the listening socket to the first successor that takes it; after
/// a failed attempt, waits for the next.
fn serve_control<M: Send + 'static>(
    mut point: HandoverPoint,
    server: &Server<M>,
    events: mpsc::Sender<Event>,
) {
    loop {
        let fds = match server.listener_fds() {
            Ok(fds) if !fds.is_empty() => fds,
            _ => return, // stopping
        };
        match point.hand_over(&fds, HANDOVER_TIMEOUT) {
            Ok(()) => {
                println!("successor ready: handing over");
                let _ = events.send(Event::HandedOver);
                return;
            }
            Err(e) => {
                println!("handover failed ({e}): still serving");
                println!("waiting for a successor again");
            }
        }
    }
}
