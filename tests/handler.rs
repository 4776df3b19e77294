//! The `Handler` callbacks and the `Flow` they return, as a client sees
//! them: real sockets on 127.0.0.1, real worker threads.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown as NetShutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use atoll::{BoxError, Builder, Connection, Error, Flow, Handler, SendError, Socket, Status};
use util::{
    connect, read_n, read_to_close, round_trip, tcp_addr, wait_no_connections, wait_until, CallLog,
    PATIENCE,
};

/// A small server: two workers, and a short drain at the end of a test.
fn builder() -> Builder {
    util::builder()
        .num_workers(2)
        .shutdown_timeout(Some(Duration::from_secs(2)))
}

/// How an error reached `handle_error`, as a short stable string.
fn describe(e: &Error) -> String {
    match e {
        Error::Handler(reason) => format!("handler:{reason}"),
        Error::Panic(msg) => format!("panic:{msg}"),
        Error::Io(io) => format!("io:{:?}", io.kind()),
        Error::Refused(reason) => format!("refused:{reason}"),
        Error::Closed => "closed".to_string(),
        Error::Timeout(kind) => format!("timeout:{kind}"),
        other => format!("other:{other}"),
    }
}

/// A handler that records every callback in a `CallLog` and delegates what
/// `handle_connection` and `handle_data` return to two functions.
///
/// Entries: `connection`, `data:<text>`, `close`, `error:<describe>`,
/// `timeout`, `shutdown`. A callback that finds the socket in the wrong
/// state (closed in close/timeout/shutdown, open in error) says so.
struct Scripted {
    log: CallLog,
    on_connection: fn(&mut Socket) -> Flow,
    on_data: fn(&[u8], &mut Socket) -> Flow,
}

impl Handler for Scripted {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        self.log.push("connection");
        (self.on_connection)(socket)
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        self.log
            .push(format!("data:{}", String::from_utf8_lossy(data)));
        (self.on_data)(data, socket)
    }

    fn handle_close(&mut self, socket: &mut Socket) {
        self.log.push(if socket.is_closed() {
            "close(socket already closed)"
        } else {
            "close"
        });
    }

    fn handle_error(&mut self, error: &Error, socket: &mut Socket) {
        let open = if socket.is_closed() {
            ""
        } else {
            "(socket still open)"
        };
        self.log.push(format!("error:{}{open}", describe(error)));
    }

    fn handle_timeout(&mut self, socket: &mut Socket) {
        self.log.push(if socket.is_closed() {
            "timeout(socket already closed)"
        } else {
            "timeout"
        });
    }

    fn handle_shutdown(&mut self, socket: &mut Socket) {
        self.log.push(if socket.is_closed() {
            "shutdown(socket already closed)"
        } else {
            "shutdown"
        });
    }
}

/// The factory of `Scripted` handlers sharing `log`.
fn scripted(
    log: &CallLog,
    on_connection: fn(&mut Socket) -> Flow,
    on_data: fn(&[u8], &mut Socket) -> Flow,
) -> impl Fn(&Connection) -> Result<Scripted, BoxError> + Send + Sync + 'static {
    let log = log.clone();
    move |_: &Connection| {
        Ok(Scripted {
            log: log.clone(),
            on_connection,
            on_data,
        })
    }
}

fn wait_for_data(_: &mut Socket) -> Flow {
    Flow::Continue
}

fn echo(data: &[u8], socket: &mut Socket) -> Flow {
    match socket.send(data) {
        Ok(()) => Flow::Continue,
        Err(e) => Flow::error(e),
    }
}

/// Every `data:` entry of the log, concatenated.
fn data_of(log: &CallLog) -> String {
    log.entries()
        .iter()
        .filter_map(|e| e.strip_prefix("data:"))
        .collect()
}

// ---------------------------------------------------------------------------
// handle_connection, handle_data, handle_close

#[test]
fn handle_connection_sends_hello_world_and_flow_close_runs_handle_close() {
    fn hello(socket: &mut Socket) -> Flow {
        match socket.send(b"Hello, World") {
            Ok(()) => Flow::Close,
            Err(e) => Flow::error(e),
        }
    }
    let log = CallLog::new();
    let server = builder().start(scripted(&log, hello, echo)).unwrap();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut client), b"Hello, World");
    wait_no_connections(&server);
    assert_eq!(log.entries(), ["connection", "close"]);
    server.stop(PATIENCE);
}

#[test]
fn handle_data_echoes_several_messages_byte_exact_on_one_connection() {
    let log = CallLog::new();
    let server = builder()
        .start(scripted(&log, wait_for_data, echo))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"first");
    round_trip(&mut client, b"second message");
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    round_trip(&mut client, &all_bytes);
    // Larger than one read of the server: arrives over several handle_data.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    round_trip(&mut client, &big);
    round_trip(&mut client, b"last");
    drop(client);
    wait_no_connections(&server);
    let entries = log.entries();
    assert_eq!(entries.first().map(String::as_str), Some("connection"));
    assert_eq!(entries.last().map(String::as_str), Some("close"));
    server.stop(PATIENCE);
}

#[test]
fn callbacks_run_in_order_connection_then_data_then_close_when_peer_closes() {
    let log = CallLog::new();
    let server = builder()
        .start(scripted(&log, wait_for_data, echo))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"one");
    round_trip(&mut client, b"two");
    round_trip(&mut client, b"three");
    drop(client);
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        ["connection", "data:one", "data:two", "data:three", "close"]
    );
    server.stop(PATIENCE);
}

#[test]
fn data_sent_right_before_the_peer_closes_reaches_handle_data_before_handle_close() {
    let log = CallLog::new();
    let server = builder()
        .start(scripted(&log, wait_for_data, |_, _| Flow::Continue))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"last words").unwrap();
    drop(client);
    log.wait_for("close");
    wait_no_connections(&server);
    let entries = log.entries();
    assert_eq!(entries.first().map(String::as_str), Some("connection"));
    assert_eq!(
        entries.last().map(String::as_str),
        Some("close"),
        "{entries:?}"
    );
    assert_eq!(
        entries.len(),
        entries.iter().filter(|e| e.starts_with("data:")).count() + 2
    );
    assert_eq!(data_of(&log), "last words");
    server.stop(PATIENCE);
}

#[test]
fn all_data_sent_before_the_peer_closes_arrives_even_beyond_one_read_round() {
    struct Count {
        bytes: usize,
        checksum: u64,
        log: CallLog,
    }
    impl Handler for Count {
        fn handle_data(&mut self, data: &[u8], _: &mut Socket) -> Flow {
            for &b in data {
                self.checksum = self.checksum.wrapping_mul(31).wrapping_add(u64::from(b));
            }
            self.bytes += data.len();
            Flow::Continue
        }
        fn handle_close(&mut self, _: &mut Socket) {
            self.log.push(format!(
                "close after {} bytes, sum {}",
                self.bytes, self.checksum
            ));
        }
        fn handle_error(&mut self, error: &Error, _: &mut Socket) {
            self.log.push(format!("error:{}", describe(error)));
        }
    }
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        .start(move |_: &Connection| {
            Ok(Count {
                bytes: 0,
                checksum: 0,
                log: l.clone(),
            })
        })
        .unwrap();
    // 4 MiB: many more reads than a worker does for one connection per
    // round, and all of it in the kernel when the close comes.
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
    let checksum = data
        .iter()
        .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut client = connect(tcp_addr(&server));
    client.write_all(&data).unwrap();
    drop(client);
    let expected = format!("close after {} bytes, sum {checksum}", data.len());
    log.wait_for(&expected);
    assert_eq!(log.entries(), [expected]);
    server.stop(PATIENCE);
}

#[test]
fn half_closed_peer_gets_a_last_reply_sent_from_handle_close() {
    struct LastWord {
        log: CallLog,
    }
    impl Handler for LastWord {
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            self.log
                .push(format!("data:{}", String::from_utf8_lossy(data)));
            echo(data, socket)
        }
        fn handle_close(&mut self, socket: &mut Socket) {
            let sent = socket.send(b"|bye");
            self.log
                .push(format!("close, reply sent: {}", sent.is_ok()));
        }
        fn handle_error(&mut self, error: &Error, _: &mut Socket) {
            self.log.push(format!("error:{}", describe(error)));
        }
    }
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        .start(move |_: &Connection| Ok(LastWord { log: l.clone() }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"request");
    client.shutdown(NetShutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut client), b"|bye");
    wait_no_connections(&server);
    assert_eq!(log.entries(), ["data:request", "close, reply sent: true"]);
    server.stop(PATIENCE);
}

// ---------------------------------------------------------------------------
// Errors and panics

#[test]
fn flow_error_reaches_handle_error_as_handler_error_and_server_keeps_serving() {
    fn fail_on_bad(data: &[u8], socket: &mut Socket) -> Flow {
        if data == b"bad" {
            Flow::error("bad request")
        } else {
            echo(data, socket)
        }
    }
    let log = CallLog::new();
    let server = builder()
        .silent_terminate_on_error(true)
        .start(scripted(&log, wait_for_data, fail_on_bad))
        .unwrap();
    let addr = tcp_addr(&server);
    let mut first = connect(addr);
    round_trip(&mut first, b"fine");
    first.write_all(b"bad").unwrap();
    assert_eq!(read_to_close(&mut first), b"");
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        [
            "connection",
            "data:fine",
            "data:bad",
            "error:handler:bad request"
        ]
    );

    let mut second = connect(addr);
    round_trip(&mut second, b"still serving");
    server.stop(PATIENCE);
}

#[test]
fn panic_in_handle_data_closes_connection_reports_panic_and_worker_survives() {
    fn panic_on_boom(data: &[u8], socket: &mut Socket) -> Flow {
        if data == b"boom" {
            panic!("boom in handle_data");
        }
        echo(data, socket)
    }
    let log = CallLog::new();
    // One worker: the second client is served only if it survived.
    let server = builder()
        .num_workers(1)
        .start(scripted(&log, wait_for_data, panic_on_boom))
        .unwrap();
    let addr = tcp_addr(&server);
    let mut first = connect(addr);
    round_trip(&mut first, b"before");
    first.write_all(b"boom").unwrap();
    assert_eq!(read_to_close(&mut first), b"");
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        [
            "connection",
            "data:before",
            "data:boom",
            "error:panic:boom in handle_data"
        ]
    );
    assert_eq!(server.stats().panics, 1);

    let mut second = connect(addr);
    round_trip(&mut second, b"after");
    assert_eq!(server.stats().panics, 1);
    server.stop(PATIENCE);
}

#[test]
fn panic_in_handle_connection_closes_connection_and_reports_panic() {
    fn panic_at_once(_: &mut Socket) -> Flow {
        panic!("boom in handle_connection");
    }
    let log = CallLog::new();
    let server = builder()
        .num_workers(1)
        .start(scripted(&log, panic_at_once, echo))
        .unwrap();
    let addr = tcp_addr(&server);
    let mut first = connect(addr);
    assert_eq!(read_to_close(&mut first), b"");
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        ["connection", "error:panic:boom in handle_connection"]
    );
    assert_eq!(server.stats().panics, 1);

    // The only worker survived: it runs the next connection's callbacks.
    let mut second = connect(addr);
    assert_eq!(read_to_close(&mut second), b"");
    wait_until("the second connection's callbacks", || {
        log.entries().len() == 4
    });
    assert_eq!(server.stats().panics, 2);
    server.stop(PATIENCE);
}

#[test]
fn flow_error_after_a_send_timeout_reaches_handle_error() {
    fn flood(socket: &mut Socket) -> Flow {
        match socket.send(&vec![0u8; 64 << 20]) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }
    let log = CallLog::new();
    let server = builder()
        .silent_terminate_on_error(true)
        .send_timeout(Some(Duration::from_millis(200)))
        .send_buffer_size(Some(8 * 1024))
        .start(scripted(&log, flood, echo))
        .unwrap();
    // The client never reads until the server gives up.
    let mut client = connect(tcp_addr(&server));
    log.wait_for("connection");
    wait_no_connections(&server);
    read_to_close(&mut client);
    let entries = log.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0], "connection");
    // The handler's error is the send's: how far it got, what was left.
    assert!(
        entries[1].starts_with("error:handler:send timed out after ")
            && entries[1].ends_with(" unsent"),
        "{}",
        entries[1]
    );
    server.stop(PATIENCE);
}

#[test]
fn panic_in_a_detach_function_releases_the_connection_and_is_counted() {
    fn detach_and_panic(_: &mut Socket) -> Flow {
        Flow::detach(|_socket: Socket| panic!("boom in the detach function"))
    }
    let log = CallLog::new();
    let server = builder()
        .num_workers(1)
        .start(scripted(&log, detach_and_panic, echo))
        .unwrap();
    let addr = tcp_addr(&server);
    let mut first = connect(addr);
    assert_eq!(read_to_close(&mut first), b"");
    wait_no_connections(&server);
    // Counted once the panic is caught, after the socket was dropped.
    wait_until("the panic to be counted", || server.stats().panics == 1);
    assert_eq!(log.entries(), ["connection"]);
    // The only worker survived.
    let mut second = connect(addr);
    assert_eq!(read_to_close(&mut second), b"");
    wait_until("the second panic", || server.stats().panics == 2);
    server.stop(PATIENCE);
}

#[test]
fn panic_in_handle_close_is_counted_and_the_worker_survives() {
    struct PanicOnClose;
    impl Handler for PanicOnClose {
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            echo(data, socket)
        }
        fn handle_close(&mut self, _: &mut Socket) {
            panic!("boom in handle_close");
        }
    }
    let server = builder()
        .num_workers(1)
        .start(|_: &Connection| Ok(PanicOnClose))
        .unwrap();
    let addr = tcp_addr(&server);
    let mut first = connect(addr);
    round_trip(&mut first, b"x");
    drop(first);
    wait_no_connections(&server);
    wait_until("the panic to be counted", || server.stats().panics == 1);
    let mut second = connect(addr);
    round_trip(&mut second, b"served after the panic");
    server.stop(PATIENCE);
}

#[test]
fn peer_reset_reaches_handle_error_as_io_error() {
    let log = CallLog::new();
    let server = builder()
        .start(scripted(&log, wait_for_data, echo))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"hi");
    // SO_LINGER 0: the close sends a reset instead of a FIN.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        ["connection", "data:hi", "error:io:ConnectionReset"]
    );
    server.stop(PATIENCE);
}

#[test]
fn factory_refusal_closes_the_connection_counts_it_and_serves_the_next() {
    let log = CallLog::new();
    let make = scripted(&log, wait_for_data, echo);
    let calls = AtomicUsize::new(0);
    let server = builder()
        .start(move |conn: &Connection| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("not you".into());
            }
            make(conn)
        })
        .unwrap();
    let addr = tcp_addr(&server);
    let mut refused = connect(addr);
    assert_eq!(read_to_close(&mut refused), b"");
    wait_until("the refusal to be counted", || server.stats().refused == 1);
    wait_no_connections(&server);

    let mut served = connect(addr);
    round_trip(&mut served, b"welcome");
    drop(served);
    wait_no_connections(&server);
    // The refused connection had no handler, so no callback ran for it.
    assert_eq!(log.entries(), ["connection", "data:welcome", "close"]);
    assert_eq!(server.stats().refused, 1);
    assert_eq!(server.stats().accepted, 2);
    server.stop(PATIENCE);
}

#[test]
fn panic_in_the_factory_closes_the_connection_and_is_counted() {
    let log = CallLog::new();
    let make = scripted(&log, wait_for_data, echo);
    let calls = AtomicUsize::new(0);
    let server = builder()
        .num_workers(1)
        .start(move |conn: &Connection| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("boom in the factory");
            }
            make(conn)
        })
        .unwrap();
    let addr = tcp_addr(&server);
    let mut first = connect(addr);
    assert_eq!(read_to_close(&mut first), b"");
    wait_no_connections(&server);
    assert_eq!(server.stats().panics, 1);
    let mut second = connect(addr);
    round_trip(&mut second, b"ok");
    assert_eq!(log.entries(), ["connection", "data:ok"]);
    server.stop(PATIENCE);
}

// ---------------------------------------------------------------------------
// Idle timeouts

#[test]
fn idle_timeout_closes_a_silent_client_via_handle_timeout_not_before_read_timeout() {
    let log = CallLog::new();
    let server = builder()
        .read_timeout(Some(Duration::from_millis(200)))
        .start(scripted(&log, wait_for_data, echo))
        .unwrap();
    let started = Instant::now();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut client), b"");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200),
        "closed after {elapsed:?}"
    );
    wait_no_connections(&server);
    assert_eq!(log.entries(), ["connection", "timeout"]);
    server.stop(PATIENCE);
}

#[test]
fn data_restarts_the_idle_timer() {
    let log = CallLog::new();
    let server = builder()
        .read_timeout(Some(Duration::from_millis(300)))
        .start(scripted(&log, wait_for_data, echo))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let started = Instant::now();
    // 6 round trips 100 ms apart: 600 ms in all, never 300 ms of silence.
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(100));
        round_trip(&mut client, format!("ping{i}").as_bytes());
    }
    assert!(started.elapsed() >= Duration::from_millis(600));
    let last = Instant::now();
    assert_eq!(read_to_close(&mut client), b"");
    // The timer restarts when handle_data returns, a little after the
    // echo left: allow for that in this lower bound.
    assert!(last.elapsed() >= Duration::from_millis(200));
    wait_no_connections(&server);
    assert_eq!(log.entries().last().map(String::as_str), Some("timeout"));
    server.stop(PATIENCE);
}

#[test]
fn one_shot_timeout_fires_for_a_silent_client() {
    let log = CallLog::new();
    let server = builder()
        // Longer than PATIENCE: only the flow's timeout can close in time.
        .read_timeout(Some(Duration::from_secs(60)))
        .start(scripted(
            &log,
            |_| Flow::ContinueTimeout(Some(Duration::from_millis(300))),
            echo,
        ))
        .unwrap();
    let started = Instant::now();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut client), b"");
    assert!(started.elapsed() >= Duration::from_millis(300));
    wait_no_connections(&server);
    assert_eq!(log.entries(), ["connection", "timeout"]);
    server.stop(PATIENCE);
}

#[test]
fn one_shot_timeout_applies_once_then_read_timeout_returns() {
    let log = CallLog::new();
    let server = builder()
        .read_timeout(Some(Duration::from_secs(5)))
        .start(scripted(
            &log,
            |_| Flow::ContinueTimeout(Some(Duration::from_millis(150))),
            echo,
        ))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    // Sent at once: the data reaches handle_data, whose Continue puts the
    // 5 s read_timeout back in place of the one-shot 150 ms.
    round_trip(&mut client, b"first");
    std::thread::sleep(Duration::from_millis(450));
    round_trip(&mut client, b"still alive after 450 ms of silence");
    drop(client);
    wait_no_connections(&server);
    assert_eq!(log.entries().last().map(String::as_str), Some("close"));
    assert!(!log.contains("timeout"));
    server.stop(PATIENCE);
}

#[test]
fn persistent_timeout_keeps_applying_after_data() {
    struct Persistent {
        log: CallLog,
    }
    impl Handler for Persistent {
        fn handle_connection(&mut self, _: &mut Socket) -> Flow {
            Flow::ContinuePersistent(Some(Duration::from_millis(300)))
        }
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            self.log
                .push(format!("data, read_timeout={:?}", socket.read_timeout()));
            echo(data, socket)
        }
        fn handle_timeout(&mut self, _: &mut Socket) {
            self.log.push("timeout");
        }
        fn handle_close(&mut self, _: &mut Socket) {
            self.log.push("close");
        }
    }
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        // Longer than PATIENCE: only the flow's timeout can close in time.
        .read_timeout(Some(Duration::from_secs(60)))
        .start(move |_: &Connection| Ok(Persistent { log: l.clone() }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"a");
    round_trip(&mut client, b"b");
    let last = Instant::now();
    assert_eq!(read_to_close(&mut client), b"");
    let silent = last.elapsed();
    assert!(
        silent >= Duration::from_millis(200),
        "closed after {silent:?}"
    );
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        [
            "data, read_timeout=Some(300ms)",
            "data, read_timeout=Some(300ms)",
            "timeout"
        ]
    );
    server.stop(PATIENCE);
}

#[test]
fn continue_timeout_none_disables_the_idle_timeout() {
    let log = CallLog::new();
    let server = builder()
        .read_timeout(Some(Duration::from_millis(100)))
        .start(scripted(&log, |_| Flow::ContinueTimeout(None), echo))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    std::thread::sleep(Duration::from_millis(500));
    round_trip(&mut client, b"alive after 500 ms");
    // The next Continue brings the 100 ms read_timeout back.
    assert_eq!(read_to_close(&mut client), b"");
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        ["connection", "data:alive after 500 ms", "timeout"]
    );
    server.stop(PATIENCE);
}

#[test]
fn read_timeout_none_never_times_out() {
    let log = CallLog::new();
    let server = builder()
        .read_timeout(None)
        .start(scripted(&log, wait_for_data, echo))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    std::thread::sleep(Duration::from_millis(500));
    round_trip(&mut client, b"alive");
    std::thread::sleep(Duration::from_millis(300));
    round_trip(&mut client, b"still alive");
    drop(client);
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        ["connection", "data:alive", "data:still alive", "close"]
    );
    server.stop(PATIENCE);
}

// ---------------------------------------------------------------------------
// Messages through Connection handles

/// Records messages and echoes data, one line per message; counts any
/// callback that starts while another one of the same connection runs.
struct Mailbox {
    conn: Connection<String>,
    handles: mpsc::Sender<Connection<String>>,
    in_callback: Arc<AtomicBool>,
    overlaps: Arc<AtomicUsize>,
    log: CallLog,
}

impl Mailbox {
    fn enter(&self) {
        if self.in_callback.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        // Widen the window in which an overlapping callback would be seen.
        std::thread::yield_now();
    }

    fn leave(&self) {
        self.in_callback.store(false, Ordering::SeqCst);
    }
}

impl Handler<String> for Mailbox {
    fn handle_connection(&mut self, _: &mut Socket) -> Flow {
        self.enter();
        let _ = self.handles.send(self.conn.clone());
        self.leave();
        Flow::Continue
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        self.enter();
        let flow = echo(data, socket);
        self.leave();
        flow
    }

    fn handle_message(&mut self, message: String, socket: &mut Socket) -> Flow {
        self.enter();
        self.log.push(message.clone());
        let flow = match socket.send(format!("{message}\n").as_bytes()) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        };
        self.leave();
        flow
    }

    fn handle_close(&mut self, _: &mut Socket) {
        self.enter();
        self.log.push("close");
        self.leave();
    }

    fn handle_timeout(&mut self, _: &mut Socket) {
        self.enter();
        self.log.push("timeout");
        self.leave();
    }
}

/// A server of `Mailbox` handlers; returns the server, the channel of the
/// connections' handles, the overlap counter and the log.
fn mailbox_server(
    b: Builder,
) -> (
    atoll::Server<String>,
    mpsc::Receiver<Connection<String>>,
    Arc<AtomicUsize>,
    CallLog,
) {
    let (tx, rx) = mpsc::channel();
    let overlaps = Arc::new(AtomicUsize::new(0));
    let log = CallLog::new();
    let (o, l) = (overlaps.clone(), log.clone());
    let server = b
        .start(move |conn: &Connection<String>| {
            Ok(Mailbox {
                conn: conn.clone(),
                handles: tx.clone(),
                in_callback: Arc::new(AtomicBool::new(false)),
                overlaps: o.clone(),
                log: l.clone(),
            })
        })
        .unwrap();
    (server, rx, overlaps, log)
}

#[test]
fn messages_arrive_in_order_never_concurrently_and_are_refused_after_the_end() {
    let (server, handles, overlaps, log) = mailbox_server(builder().num_workers(3));
    let client = connect(tcp_addr(&server));
    let conn = handles.recv_timeout(PATIENCE).unwrap();
    assert!(conn.is_alive());
    assert_eq!(conn.peer_addr(), client.local_addr().unwrap());

    const MESSAGES: usize = 300;
    const LINES: usize = 30;
    let sender = {
        let conn = conn.clone();
        std::thread::spawn(move || {
            for i in 0..MESSAGES {
                conn.send(format!("m{i}")).expect("the connection is alive");
            }
        })
    };
    // Data from the client at the same time as the messages.
    let mut writer = client.try_clone().unwrap();
    for j in 0..LINES {
        writer.write_all(format!("d{j}\n").as_bytes()).unwrap();
    }
    let mut reader = BufReader::new(client);
    let (mut messages, mut echoes) = (Vec::new(), Vec::new());
    while messages.len() < MESSAGES || echoes.len() < LINES {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "closed early");
        let line = line.trim_end().to_string();
        if line.starts_with('m') {
            messages.push(line);
        } else {
            echoes.push(line);
        }
    }
    sender.join().unwrap();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
    assert_eq!(messages, expected);
    let expected: Vec<String> = (0..LINES).map(|j| format!("d{j}")).collect();
    assert_eq!(echoes, expected);

    drop(reader);
    drop(writer);
    wait_until("the connection to end", || !conn.is_alive());
    assert_eq!(
        conn.send("late".to_string()),
        Err(SendError::Closed("late".to_string()))
    );
    wait_no_connections(&server);
    let mut entries = log.entries();
    assert_eq!(entries.pop().as_deref(), Some("close"));
    assert_eq!(entries.len(), MESSAGES);
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    server.stop(PATIENCE);
}

#[test]
fn flow_close_from_handle_message_runs_handle_close() {
    struct CloseOnMessage {
        log: CallLog,
    }
    impl Handler<&'static str> for CloseOnMessage {
        fn handle_message(&mut self, message: &'static str, socket: &mut Socket) -> Flow {
            self.log.push(message);
            let _ = socket.send(message.as_bytes());
            Flow::Close
        }
        fn handle_close(&mut self, socket: &mut Socket) {
            let _ = socket.send(b"|closing");
            self.log.push("close");
        }
    }
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        .start(move |conn: &Connection<&'static str>| {
            // Queued before handle_connection has even run.
            conn.send("from the factory").unwrap();
            Ok(CloseOnMessage { log: l.clone() })
        })
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut client), b"from the factory|closing");
    wait_no_connections(&server);
    assert_eq!(log.entries(), ["from the factory", "close"]);
    server.stop(PATIENCE);
}

#[test]
fn messages_do_not_restart_the_idle_timer() {
    let (server, handles, overlaps, log) =
        mailbox_server(builder().read_timeout(Some(Duration::from_millis(300))));
    let started = Instant::now();
    let mut client = connect(tcp_addr(&server));
    let conn = handles.recv_timeout(PATIENCE).unwrap();
    let mut sent = 0;
    while conn.send(format!("tick{sent}")).is_ok() {
        sent += 1;
        assert!(started.elapsed() < PATIENCE, "the idle timeout never fired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let received = read_to_close(&mut client);
    assert!(started.elapsed() >= Duration::from_millis(300));
    wait_no_connections(&server);
    let mut entries = log.entries();
    assert_eq!(entries.pop().as_deref(), Some("timeout"), "{entries:?}");
    // Messages did arrive (and were answered) while the timer ran.
    assert!(
        entries.len() >= 2,
        "only {} messages delivered",
        entries.len()
    );
    assert!(String::from_utf8(received)
        .unwrap()
        .starts_with("tick0\ntick1\n"));
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    server.stop(PATIENCE);
}

#[test]
fn messenger_pushes_a_message_to_every_live_connection() {
    struct Messenger {
        log: CallLog,
    }
    impl Handler<String> for Messenger {
        fn handle_data(&mut self, data: &[u8], _: &mut Socket) -> Flow {
            self.log.push(String::from_utf8_lossy(data));
            Flow::Continue
        }
        fn handle_message(&mut self, message: String, socket: &mut Socket) -> Flow {
            match socket.send(format!("{message}\n").as_bytes()) {
                Ok(()) => Flow::Continue,
                Err(e) => Flow::error(e),
            }
        }
    }
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        .start(move |_: &Connection<String>| Ok(Messenger { log: l.clone() }))
        .unwrap();
    let addr = tcp_addr(&server);
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(format!("hello from {i}").as_bytes())
            .unwrap();
    }
    for i in 0..3 {
        log.wait_for(&format!("hello from {i}"));
    }
    assert_eq!(server.connections().len(), 3);

    let app = std::thread::scope(|s| {
        s.spawn(|| {
            let mut pushed = 0;
            for conn in server.connections() {
                conn.send("news for everyone".to_string()).unwrap();
                pushed += 1;
            }
            pushed
        })
        .join()
        .unwrap()
    });
    assert_eq!(app, 3);
    for client in &mut clients {
        assert_eq!(read_n(client, 18), b"news for everyone\n");
    }
    server.stop(PATIENCE);
}

// ---------------------------------------------------------------------------
// Synchronous recv inside callbacks

#[test]
fn bytes_left_by_a_synchronous_recv_reach_handle_data_at_once() {
    fn recv_five(socket: &mut Socket) -> Flow {
        match socket.recv(5) {
            Ok(head) => {
                let _ = socket.send(&head);
                Flow::Continue
            }
            Err(e) => Flow::error(e),
        }
    }
    let log = CallLog::new();
    let server = builder()
        .start(scripted(&log, recv_five, |_, _| Flow::Continue))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"0123456789").unwrap();
    assert_eq!(read_n(&mut client, 5), b"01234");
    // Nothing more is sent: the rest must come from what is already there.
    wait_until("the other five bytes in handle_data", || {
        data_of(&log).len() >= 5
    });
    assert_eq!(data_of(&log), "56789");
    assert_eq!(log.entries()[0], "connection");
    server.stop(PATIENCE);
}

#[test]
fn recv_zero_returns_the_bytes_available() {
    fn ready_then_recv_any(socket: &mut Socket) -> Flow {
        let got = socket.send(b"ready").and_then(|()| socket.recv(0));
        match got.and_then(|data| socket.send(&[b"got:", &data[..]].concat())) {
            Ok(()) => Flow::Close,
            Err(e) => Flow::error(e),
        }
    }
    let log = CallLog::new();
    let server = builder()
        .start(scripted(&log, ready_then_recv_any, echo))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_n(&mut client, 5), b"ready");
    client.write_all(b"abc").unwrap();
    assert_eq!(read_to_close(&mut client), b"got:abc");
    server.stop(PATIENCE);
}

#[test]
fn recv_n_waits_for_exactly_n_bytes_sent_in_pieces() {
    fn ready_then_recv_nine(socket: &mut Socket) -> Flow {
        let got = socket.send(b"ready").and_then(|()| socket.recv(9));
        match got.and_then(|data| socket.send(&[b"got:", &data[..]].concat())) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }
    let log = CallLog::new();
    let server = builder()
        .start(scripted(&log, ready_then_recv_nine, |_, _| Flow::Continue))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_n(&mut client, 5), b"ready");
    for piece in [&b"12"[..], b"345", b"6789XY"] {
        client.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    assert_eq!(read_n(&mut client, 13), b"got:123456789");
    // Bytes past the nine go to handle_data.
    wait_until("the extra bytes", || data_of(&log) == "XY");
    server.stop(PATIENCE);
}

#[test]
fn recv_within_fails_with_a_recv_timeout_and_keeps_the_partial_bytes_for_the_next_recv() {
    struct Partial {
        log: CallLog,
    }
    impl Handler for Partial {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            if let Err(e) = socket.send(b"ready") {
                return Flow::error(e);
            }
            let started = Instant::now();
            match socket.recv_within(10, Some(Duration::from_millis(200))) {
                Err(e) => self.log.push(format!(
                    "first recv: {}, waited >= 200 ms: {}",
                    describe(&e),
                    started.elapsed() >= Duration::from_millis(200)
                )),
                Ok(data) => self.log.push(format!("first recv: got {data:?}")),
            }
            let second = socket.send(b"T").and_then(|()| socket.recv(10));
            match second.and_then(|data| socket.send(&data)) {
                Ok(()) => Flow::Close,
                Err(e) => Flow::error(e),
            }
        }
    }
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        .start(move |_: &Connection| Ok(Partial { log: l.clone() }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_n(&mut client, 5), b"ready");
    client.write_all(b"abcd").unwrap();
    assert_eq!(read_n(&mut client, 1), b"T");
    client.write_all(b"efghij").unwrap();
    assert_eq!(read_to_close(&mut client), b"abcdefghij");
    assert_eq!(
        log.entries(),
        ["first recv: timeout:receive timed out, waited >= 200 ms: true"]
    );
    server.stop(PATIENCE);
}

#[test]
fn bytes_of_a_timed_out_recv_reach_handle_data_after_the_callback() {
    fn recv_ten_briefly(socket: &mut Socket) -> Flow {
        if let Err(e) = socket.send(b"ready") {
            return Flow::error(e);
        }
        match socket.recv_within(10, Some(Duration::from_millis(200))) {
            Err(e) if e.is_timeout() => Flow::Continue,
            Err(e) => Flow::error(e),
            Ok(_) => Flow::error("ten bytes came from a client that sent four"),
        }
    }
    let log = CallLog::new();
    let server = builder()
        .start(scripted(&log, recv_ten_briefly, |_, _| Flow::Continue))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_n(&mut client, 5), b"ready");
    client.write_all(b"abcd").unwrap();
    wait_until("the four bytes in handle_data", || {
        !data_of(&log).is_empty()
    });
    assert_eq!(log.entries(), ["connection", "data:abcd"]);
    server.stop(PATIENCE);
}

// ---------------------------------------------------------------------------
// Detach

/// Detaches; a thread of the test's own echoes the socket with `Read` and
/// `Write` until the peer closes, then drops it.
fn detach_echo(_: &mut Socket) -> Flow {
    Flow::detach(|mut socket: Socket| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match socket.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if socket.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(socket);
        });
    })
}

#[test]
fn detached_connection_is_echoed_by_the_app_thread_counted_and_released_on_drop() {
    let log = CallLog::new();
    let server = builder().start(scripted(&log, detach_echo, echo)).unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"echoed by the detached thread");
    round_trip(&mut client, &[7u8; 100_000]);
    assert_eq!(server.connection_count(), 1);
    let listed = server.connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].peer_addr(), client.local_addr().unwrap());
    assert!(listed[0].is_alive());
    // Detached: no callback would ever run, so messages are refused.
    assert_eq!(listed[0].send(()), Err(SendError::Closed(())));

    drop(client); // the detached thread reads the end and drops the socket
    wait_no_connections(&server);
    assert!(server.connections().is_empty());
    wait_until("the handle to see the end", || !listed[0].is_alive());
    // No callback after the detach: not even handle_close.
    assert_eq!(log.entries(), ["connection"]);
    server.stop(PATIENCE);
}

#[test]
fn stop_closes_a_detached_connection_after_its_wait() {
    let log = CallLog::new();
    let server = builder().start(scripted(&log, detach_echo, echo)).unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"detached");
    let wait = Duration::from_millis(300);
    std::thread::scope(|s| {
        let started = Instant::now();
        let stopper = s.spawn(|| server.stop(wait));
        assert_eq!(read_to_close(&mut client), b"");
        let elapsed = started.elapsed();
        assert!(elapsed >= wait, "closed after {elapsed:?}, before the wait");
        stopper.join().unwrap();
    });
    assert_eq!(server.status(), Status::Stopped);
    assert_eq!(server.connection_count(), 0);
    assert_eq!(log.entries(), ["connection"]);
}

#[test]
fn detach_hands_over_the_bytes_a_timed_out_recv_kept() {
    fn recv_then_detach(socket: &mut Socket) -> Flow {
        if let Err(e) = socket.send(b"ready") {
            return Flow::error(e);
        }
        // Times out with the client's 7 bytes kept in the socket.
        match socket.recv_within(100, Some(Duration::from_millis(200))) {
            Err(e) if e.is_timeout() => detach_echo(socket),
            Err(e) => Flow::error(e),
            Ok(_) => Flow::error("100 bytes came from a client that sent 7"),
        }
    }
    let log = CallLog::new();
    let server = builder()
        .start(scripted(&log, recv_then_detach, echo))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_n(&mut client, 5), b"ready");
    client.write_all(b"hi:rest").unwrap();
    // The detached thread's first read gets the kept bytes.
    assert_eq!(read_n(&mut client, 7), b"hi:rest");
    round_trip(&mut client, b"more");
    drop(client);
    wait_no_connections(&server);
    assert_eq!(log.entries(), ["connection"]);
    server.stop(PATIENCE);
}

/// A handler that falls behind fills its queue up to `max_queued_messages`;
/// then `send` gives messages back as `Full`, keeping the ones queued,
/// which are all delivered, in order, once the handler catches up.
#[test]
fn a_full_message_queue_gives_messages_back_and_loses_none_queued() {
    struct Slow {
        gate: Arc<std::sync::Mutex<()>>,
        log: CallLog,
    }
    impl Handler<u32> for Slow {
        fn handle_message(&mut self, n: u32, _socket: &mut Socket) -> Flow {
            drop(self.gate.lock()); // blocks while the test holds the gate
            self.log.push(n.to_string());
            Flow::Continue
        }
    }
    const MAX: u32 = 8;
    let gate = Arc::new(std::sync::Mutex::new(()));
    let log = CallLog::new();
    let (tx, handles) = mpsc::channel();
    let (g, l) = (gate.clone(), log.clone());
    let server = builder()
        .max_queued_messages(Some(MAX as usize))
        .start(move |conn: &Connection<u32>| {
            tx.send(conn.clone()).unwrap();
            Ok(Slow {
                gate: g.clone(),
                log: l.clone(),
            })
        })
        .unwrap();
    let _client = connect(tcp_addr(&server));
    let conn = handles.recv_timeout(PATIENCE).unwrap();

    let held = gate.lock().unwrap();
    conn.send(0).unwrap();
    // Message 0 is taken off the queue by the handler, which then blocks.
    std::thread::sleep(Duration::from_millis(100));
    let mut queued = vec![0];
    let mut refused = Vec::new();
    for n in 1..=3 * MAX {
        match conn.send(n) {
            Ok(()) => queued.push(n),
            Err(e) => {
                assert!(e.is_full(), "message {n}: {e}");
                refused.push(e.into_inner());
            }
        }
    }
    assert!(
        queued.len() as u32 <= MAX + 1,
        "{} queued past a limit of {MAX}: {queued:?}",
        queued.len()
    );
    assert!(!refused.is_empty(), "nothing was refused");
    assert_eq!(server.stats().messages_refused, refused.len() as u64);
    drop(held);
    let expected: Vec<String> = queued.iter().map(u32::to_string).collect();
    wait_until("every queued message delivered", || {
        log.entries().len() == expected.len()
    });
    assert_eq!(log.entries(), expected);
    // Caught up: the queue takes messages again.
    conn.send(100).unwrap();
    log.wait_for("100");
}

#[test]
fn flow_timeout_runs_handle_timeout_and_the_connection_stops_with_the_timeout_error() {
    struct GivesUp(mpsc::Sender<String>);
    impl Handler<&'static str> for GivesUp {
        fn handle_data(&mut self, data: &[u8], _: &mut Socket) -> Flow {
            if data == b"slow" {
                Flow::Timeout
            } else {
                Flow::Continue
            }
        }
        fn handle_message(&mut self, _: &'static str, _: &mut Socket) -> Flow {
            Flow::Timeout
        }
        fn handle_timeout(&mut self, socket: &mut Socket) {
            // Still open: the peer gets a last word.
            let _ = socket.send(b"timed out\n");
            let _ = self.0.send("timeout".into());
        }
        fn handle_error(&mut self, error: &Error, _: &mut Socket) {
            let _ = self.0.send(format!("error:{}", describe(error)));
        }
        fn handle_close(&mut self, _: &mut Socket) {
            let _ = self.0.send("close".into());
        }
    }
    let (tx, rx) = mpsc::channel();
    let (stops, stopped) = mpsc::channel();
    let stops = std::sync::Mutex::new(stops);
    let server = builder()
        .sink(move |e: &atoll::telemetry::Event<'_>| {
            if let atoll::telemetry::Kind::ConnectionStop { error, .. } = &e.kind {
                let _ = stops.lock().unwrap().send(error.map(|e| e.is_timeout()));
            }
        })
        .start(move |_| Ok(GivesUp(tx.clone())))
        .unwrap();
    // From a data callback.
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"slow").unwrap();
    assert_eq!(read_to_close(&mut client), b"timed out\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "timeout");
    assert_eq!(stopped.recv_timeout(PATIENCE).unwrap(), Some(true));
    // From a message callback, sent to this client's connection (the
    // first one may still be listed while it ends).
    let mut client = connect(tcp_addr(&server));
    let me = client.local_addr().unwrap();
    wait_until("the connection is listed", || {
        server.connections().iter().any(|c| *c.peer_addr() == me)
    });
    for conn in server.connections() {
        if *conn.peer_addr() == me {
            conn.send("tick").unwrap();
        }
    }
    assert_eq!(read_to_close(&mut client), b"timed out\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "timeout");
    assert_eq!(stopped.recv_timeout(PATIENCE).unwrap(), Some(true));
    server.stop(PATIENCE);
    assert!(rx.try_recv().is_err(), "only handle_timeout ran");
}
