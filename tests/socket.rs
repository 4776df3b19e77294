//! `Socket`, as handler callbacks use it: sends (plain, vectored,
//! sendfile), reads through `std::io::Read`, options, shutdown, close,
//! timeouts, addresses and counters. Real sockets on loopback.

mod util;

use std::fs::File;
use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::net::Shutdown as NetShutdown;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use atoll::transport::Addr;
use atoll::{
    BoxError, Builder, Connection, Error, Flow, Handler, Shutdown, Socket, SocketStats, Timeout,
};
use util::{
    connect, read_n, read_to_close, round_trip, tcp_addr, wait_no_connections, CallLog, PATIENCE,
};

/// A small server: two workers, and a short drain at the end of a test.
fn builder() -> Builder {
    util::builder()
        .num_workers(2)
        .shutdown_timeout(Some(Duration::from_secs(2)))
}

/// A handler whose `handle_connection` is the given closure, made anew for
/// each connection by `make`; `handle_data` echoes; the last callbacks are
/// recorded in `log` as `close`, `error:<text>`, `timeout`.
struct OnConnect<F> {
    on_connection: F,
    log: CallLog,
}

impl<F: FnMut(&mut Socket) -> Flow + Send + 'static> Handler for OnConnect<F> {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        (self.on_connection)(socket)
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        self.log
            .push(format!("data:{}", String::from_utf8_lossy(data)));
        match socket.send(data) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }

    fn handle_close(&mut self, _: &mut Socket) {
        self.log.push("close");
    }

    fn handle_error(&mut self, error: &Error, _: &mut Socket) {
        self.log.push(format!("error:{error}"));
    }

    fn handle_timeout(&mut self, _: &mut Socket) {
        self.log.push("timeout");
    }
}

/// The factory of `OnConnect` handlers: `make` builds each connection's
/// `handle_connection` closure.
fn on_connect<F, G>(
    log: &CallLog,
    make: G,
) -> impl Fn(&Connection) -> Result<OnConnect<F>, BoxError> + Send + Sync + 'static
where
    F: FnMut(&mut Socket) -> Flow + Send + 'static,
    G: Fn() -> F + Send + Sync + 'static,
{
    let log = log.clone();
    move |_: &Connection| {
        Ok(OnConnect {
            on_connection: make(),
            log: log.clone(),
        })
    }
}

/// Deterministic bytes that differ between positions and between `seed`s.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(i >> 12).wrapping_add(seed) % 251) as u8)
        .collect()
}

/// A file under the temp dir, removed when dropped.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn with_contents(tag: &str, contents: &[u8]) -> TempFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "atoll-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------
// send_vectored

/// Sends `slices` with one `send_vectored` from handle_connection, then
/// closes; returns what the client read.
fn send_vectored_and_read(slices: Vec<Vec<u8>>) -> Vec<u8> {
    let log = CallLog::new();
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let slices = std::sync::Arc::new(slices);
    let server = builder()
        .start(on_connect(&log, move || {
            let tx = tx.clone();
            let slices = slices.clone();
            move |socket: &mut Socket| {
                let mut io: Vec<IoSlice> = slices.iter().map(|s| IoSlice::new(s)).collect();
                let sent = socket.send_vectored(&mut io);
                let _ = tx.send(sent.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                Flow::Close
            }
        }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let received = read_to_close(&mut client);
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Ok(()));
    server.stop(PATIENCE);
    received
}

#[test]
fn send_vectored_sends_all_slices_in_order() {
    let slices = vec![
        b"HTTP/1.1 200 OK\r\n".to_vec(),
        Vec::new(),
        b"Content-Length: 2\r\n\r\n".to_vec(),
        b"hi".to_vec(),
    ];
    assert_eq!(
        send_vectored_and_read(slices),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    );
}

#[test]
fn send_vectored_sends_three_one_mib_slices_byte_exact() {
    let slices: Vec<Vec<u8>> = (0..3).map(|seed| pattern(1 << 20, seed)).collect();
    let expected = slices.concat();
    let received = send_vectored_and_read(slices);
    assert_eq!(received.len(), expected.len());
    assert!(received == expected, "the bytes differ");
}

#[test]
fn send_vectored_sends_iov_max_slices() {
    let slices: Vec<Vec<u8>> = (0..1024).map(|i| format!("<{i}>").into_bytes()).collect();
    let expected = slices.concat();
    assert_eq!(send_vectored_and_read(slices), expected);
}

#[test]
fn send_vectored_sends_more_slices_than_iov_max() {
    let slices: Vec<Vec<u8>> = (0..3000).map(|i| format!("<{i}>").into_bytes()).collect();
    let expected = slices.concat();
    assert_eq!(send_vectored_and_read(slices), expected);
}

// ---------------------------------------------------------------------------
// sendfile

/// Serves `file` with one `sendfile(offset, len)` from handle_connection,
/// then closes; returns what the client read and what sendfile returned.
fn sendfile_and_read(file: &TempFile, offset: u64, len: u64) -> (Vec<u8>, Result<u64, String>) {
    let log = CallLog::new();
    let (tx, rx) = mpsc::channel::<Result<u64, String>>();
    let path = file.path.clone();
    let server = builder()
        .start(on_connect(&log, move || {
            let tx = tx.clone();
            let path = path.clone();
            move |socket: &mut Socket| {
                let sent = File::open(&path)
                    .map_err(Error::from)
                    .and_then(|f| socket.sendfile(&f, offset, len));
                let _ = tx.send(sent.map_err(|e| e.to_string()));
                Flow::Close
            }
        }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let received = read_to_close(&mut client);
    let sent = rx.recv_timeout(PATIENCE).unwrap();
    server.stop(PATIENCE);
    (received, sent)
}

#[test]
fn sendfile_sends_a_whole_10_mib_file_byte_exact_and_returns_its_length() {
    let contents = pattern(10 << 20, 7);
    let file = TempFile::with_contents("sendfile-whole", &contents);
    let (received, sent) = sendfile_and_read(&file, 0, 0);
    assert_eq!(sent, Ok(10 << 20));
    assert_eq!(received.len(), contents.len());
    assert!(received == contents, "the bytes differ");
}

#[test]
fn sendfile_sends_an_offset_and_length_sub_range() {
    let contents = pattern(1 << 20, 3);
    let file = TempFile::with_contents("sendfile-range", &contents);
    let (received, sent) = sendfile_and_read(&file, 12_345, 100_000);
    assert_eq!(sent, Ok(100_000));
    assert!(received == contents[12_345..112_345], "the bytes differ");
}

#[test]
fn sendfile_from_an_offset_to_the_end_with_len_zero() {
    let contents = pattern(300_000, 5);
    let file = TempFile::with_contents("sendfile-tail", &contents);
    let (received, sent) = sendfile_and_read(&file, 250_000, 0);
    assert_eq!(sent, Ok(50_000));
    assert!(received == contents[250_000..], "the bytes differ");
}

#[test]
fn sendfile_past_the_end_of_the_file_returns_what_was_sent() {
    let contents = pattern(10_000, 9);
    let file = TempFile::with_contents("sendfile-short", &contents);
    let (received, sent) = sendfile_and_read(&file, 9_000, 5_000);
    assert_eq!(sent, Ok(1_000));
    assert_eq!(received, &contents[9_000..]);
}

// ---------------------------------------------------------------------------
// Counters, Read and Write

#[test]
fn stats_count_the_bytes_received_and_sent() {
    struct Counted {
        stats: mpsc::Sender<SocketStats>,
    }
    impl Handler for Counted {
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            match socket.send(data) {
                Ok(()) => Flow::Continue,
                Err(e) => Flow::error(e),
            }
        }
        fn handle_close(&mut self, socket: &mut Socket) {
            let _ = self.stats.send(socket.stats());
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = builder()
        .start(move |_: &Connection| Ok(Counted { stats: tx.clone() }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let messages = [
        pattern(1, 0),
        pattern(100, 1),
        pattern(5000, 2),
        pattern(200_000, 3),
    ];
    for m in &messages {
        round_trip(&mut client, m);
    }
    let total: u64 = messages.iter().map(|m| m.len() as u64).sum();
    drop(client);
    let stats = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(stats.recv_bytes, total, "{stats:?}");
    assert_eq!(stats.send_bytes, total, "{stats:?}");
    assert!(stats.recv_count >= messages.len() as u64, "{stats:?}");
    assert!(stats.send_count >= messages.len() as u64, "{stats:?}");
    server.stop(PATIENCE);
}

#[test]
fn read_and_write_traits_drive_a_line_protocol_through_a_bufreader() {
    /// Upper-cases each line until `quit` or the end of the stream.
    fn lines(socket: &mut Socket, log: &CallLog) -> Flow {
        let mut reader = BufReader::new(&mut *socket);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => {
                    log.push("eof");
                    return Flow::Close;
                }
                Ok(_) if line == "quit\n" => {
                    log.push("quit");
                    return match writeln!(reader.get_mut(), "bye") {
                        Ok(()) => Flow::Close,
                        Err(e) => Flow::error(e),
                    };
                }
                Ok(_) => {
                    let reply = line.trim_end().to_uppercase();
                    if let Err(e) = writeln!(reader.get_mut(), "{reply}") {
                        return Flow::error(e);
                    }
                }
                Err(e) => return Flow::error(e),
            }
        }
    }
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        .start(on_connect(&log, move || {
            let log = l.clone();
            move |socket: &mut Socket| lines(socket, &log)
        }))
        .unwrap();
    let addr = tcp_addr(&server);

    let mut client = connect(addr);
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut read_line = || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    };
    client.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(), "HELLO\n");
    // Two lines in one write, and a line in two writes.
    client.write_all(b"two lines\nat once\n").unwrap();
    assert_eq!(read_line(), "TWO LINES\n");
    assert_eq!(read_line(), "AT ONCE\n");
    client.write_all(b"spl").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    client.write_all(b"it\n").unwrap();
    assert_eq!(read_line(), "SPLIT\n");
    client.write_all(b"quit\n").unwrap();
    assert_eq!(read_line(), "bye\n");
    assert_eq!(read_line(), "", "the server closes after bye");

    // Read gives Ok(0) when the peer closes its side.
    let mut second = connect(addr);
    second.write_all(b"last\n").unwrap();
    second.shutdown(NetShutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut second), b"LAST\n");
    log.wait_for("eof");
    wait_no_connections(&server);
    assert_eq!(log.entries(), ["quit", "close", "eof", "close"]);
    server.stop(PATIENCE);
}

// ---------------------------------------------------------------------------
// Options and timeouts of the socket

#[derive(Debug, PartialEq)]
struct Options {
    nodelay: bool,
    keepalive: bool,
    linger: Option<Duration>,
    recv_buffer_size: usize,
    send_buffer_size: usize,
    read_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
    is_secure: bool,
}

fn options_of(socket: &Socket) -> Result<Options, Error> {
    Ok(Options {
        nodelay: socket.nodelay()?,
        keepalive: socket.keepalive()?,
        linger: socket.linger()?,
        recv_buffer_size: socket.recv_buffer_size()?,
        send_buffer_size: socket.send_buffer_size()?,
        read_timeout: socket.read_timeout(),
        send_timeout: socket.send_timeout(),
        is_secure: socket.is_secure(),
    })
}

/// The options of the accepted socket as the first callback sees them,
/// then after `change` ran on it.
fn options_seen(b: Builder, change: fn(&mut Socket) -> Result<(), Error>) -> (Options, Options) {
    let log = CallLog::new();
    let (tx, rx) = mpsc::channel::<Result<(Options, Options), String>>();
    let server = b
        .start(on_connect(&log, move || {
            let tx = tx.clone();
            move |socket: &mut Socket| {
                let seen = (|| -> Result<(Options, Options), Error> {
                    let before = options_of(socket)?;
                    change(socket)?;
                    Ok((before, options_of(socket)?))
                })();
                let _ = tx.send(seen.map_err(|e| e.to_string()));
                Flow::Close
            }
        }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut client), b"");
    let seen = rx.recv_timeout(PATIENCE).unwrap().unwrap();
    server.stop(PATIENCE);
    seen
}

#[test]
fn socket_options_set_in_a_callback_read_back_the_new_values() {
    let (before, after) = options_seen(builder(), |socket| {
        socket.set_nodelay(false)?;
        socket.set_keepalive(true)?;
        socket.set_linger(Some(Duration::from_secs(1)))?;
        socket.set_recv_buffer_size(96 * 1024)?;
        socket.set_send_buffer_size(80 * 1024)?;
        socket.set_read_timeout(Some(Duration::from_millis(1234)));
        socket.set_send_timeout(None);
        Ok(())
    });
    // The defaults first: nodelay on, keepalive and linger off.
    assert!(before.nodelay);
    assert!(!before.keepalive);
    assert_eq!(before.linger, None);
    assert_eq!(before.read_timeout, Some(Duration::from_secs(60)));
    assert_eq!(before.send_timeout, Some(Duration::from_secs(30)));
    assert!(!before.is_secure);

    assert!(!after.nodelay);
    assert!(after.keepalive);
    assert_eq!(after.linger, Some(Duration::from_secs(1)));
    // Linux doubles the asked size for its bookkeeping.
    assert!(after.recv_buffer_size >= 96 * 1024, "{after:?}");
    assert!(after.send_buffer_size >= 80 * 1024, "{after:?}");
    assert_eq!(after.read_timeout, Some(Duration::from_millis(1234)));
    assert_eq!(after.send_timeout, None);
}

#[test]
fn builder_socket_options_apply_to_accepted_sockets() {
    let b = builder()
        .keepalive(true)
        .linger(Some(Duration::from_secs(2)))
        .recv_buffer_size(Some(48 * 1024))
        .send_buffer_size(Some(40 * 1024))
        .read_timeout(Some(Duration::from_secs(7)))
        .send_timeout(Some(Duration::from_secs(9)));
    let (seen, _) = options_seen(b, |_| Ok(()));
    assert!(seen.nodelay);
    assert!(seen.keepalive);
    assert_eq!(seen.linger, Some(Duration::from_secs(2)));
    assert!(seen.recv_buffer_size >= 48 * 1024, "{seen:?}");
    assert!(seen.send_buffer_size >= 40 * 1024, "{seen:?}");
    assert_eq!(seen.read_timeout, Some(Duration::from_secs(7)));
    assert_eq!(seen.send_timeout, Some(Duration::from_secs(9)));
}

#[test]
fn set_read_timeout_in_a_callback_replaces_the_idle_timeout() {
    let log = CallLog::new();
    let server = builder()
        // Longer than PATIENCE: only the socket's new timeout can close in time.
        .read_timeout(Some(Duration::from_secs(60)))
        .start(on_connect(&log, || {
            |socket: &mut Socket| {
                socket.set_read_timeout(Some(Duration::from_millis(200)));
                Flow::Continue
            }
        }))
        .unwrap();
    let started = Instant::now();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"x");
    assert_eq!(read_to_close(&mut client), b"");
    assert!(started.elapsed() >= Duration::from_millis(200));
    wait_no_connections(&server);
    assert_eq!(log.entries(), ["data:x", "timeout"]);
    server.stop(PATIENCE);
}

#[test]
fn read_trait_times_out_with_timed_out_after_the_read_timeout() {
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        .start(on_connect(&log, move || {
            let log = l.clone();
            move |socket: &mut Socket| {
                socket.set_read_timeout(Some(Duration::from_millis(150)));
                let started = Instant::now();
                let mut buf = [0u8; 16];
                match socket.read(&mut buf) {
                    Ok(n) => log.push(format!("read {n} bytes")),
                    Err(e) => log.push(format!(
                        "read failed: {:?}, after >= 150 ms: {}",
                        e.kind(),
                        started.elapsed() >= Duration::from_millis(150)
                    )),
                }
                // The socket is still usable after a read timeout.
                match socket.write_all(b"still here") {
                    Ok(()) => Flow::Close,
                    Err(e) => Flow::error(e),
                }
            }
        }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    assert_eq!(read_to_close(&mut client), b"still here");
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        ["read failed: TimedOut, after >= 150 ms: true", "close"]
    );
    server.stop(PATIENCE);
}

#[test]
fn shutdown_write_from_the_handler_gives_the_client_eof_after_the_data() {
    struct HalfClose {
        log: CallLog,
    }
    impl Handler for HalfClose {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let done = socket
                .send(b"all of it")
                .and_then(|()| socket.shutdown(Shutdown::Write));
            self.log.push(format!("shutdown ok: {}", done.is_ok()));
            Flow::Continue
        }
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            let again = socket.send(b"x").map_err(|e| e.to_string());
            self.log.push(format!(
                "data:{}, send after shutdown: {again:?}",
                String::from_utf8_lossy(data)
            ));
            Flow::Continue
        }
        fn handle_close(&mut self, _: &mut Socket) {
            self.log.push("close");
        }
        fn handle_error(&mut self, error: &Error, _: &mut Socket) {
            self.log.push(format!("error:{error}"));
        }
    }
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        .start(move |_: &Connection| Ok(HalfClose { log: l.clone() }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let mut received = Vec::new();
    // A clean end of stream (not a reset) right after the data.
    client.read_to_end(&mut received).unwrap();
    assert_eq!(received, b"all of it");
    // Only the write side is shut: the server still reads.
    client.write_all(b"more").unwrap();
    client.shutdown(NetShutdown::Write).unwrap();
    log.wait_for("close");
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        [
            "shutdown ok: true",
            "data:more, send after shutdown: Err(\"connection closed\")",
            "close"
        ]
    );
    server.stop(PATIENCE);
}

#[test]
fn close_inside_handle_data_closes_the_connection_without_handle_close() {
    struct Closer {
        log: CallLog,
    }
    impl Handler for Closer {
        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            self.log
                .push(format!("data:{}", String::from_utf8_lossy(data)));
            socket.close();
            socket.close(); // harmless twice
            let send = socket.send(b"x").map_err(|e| e.is_closed());
            let recv = socket.recv(0).map_err(|e| e.is_closed());
            self.log.push(format!(
                "closed: {}, send: {send:?}, recv: {recv:?}, nodelay: {:?}",
                socket.is_closed(),
                socket.nodelay().map_err(|e| e.is_closed()),
            ));
            Flow::Continue
        }
        fn handle_close(&mut self, _: &mut Socket) {
            self.log.push("close");
        }
        fn handle_error(&mut self, error: &Error, _: &mut Socket) {
            self.log.push(format!("error:{error}"));
        }
    }
    let log = CallLog::new();
    let l = log.clone();
    let server = builder()
        .start(move |_: &Connection| Ok(Closer { log: l.clone() }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"close me").unwrap();
    assert_eq!(read_to_close(&mut client), b"");
    wait_no_connections(&server);
    assert_eq!(
        log.entries(),
        [
            "data:close me",
            "closed: true, send: Err(true), recv: Err(true), nodelay: Err(true)"
        ]
    );
    server.stop(PATIENCE);
}

#[test]
fn send_to_a_client_that_never_reads_times_out_closes_and_reaches_handle_error() {
    const BIG: usize = 64 << 20;
    let log = CallLog::new();
    let (tx, rx) = mpsc::channel::<(String, bool, u64, Duration)>();
    let server = builder()
        .send_timeout(Some(Duration::from_millis(200)))
        .send_buffer_size(Some(8 * 1024))
        .start(on_connect(&log, move || {
            let tx = tx.clone();
            move |socket: &mut Socket| {
                let big = vec![b'z'; BIG];
                let started = Instant::now();
                let result = match socket.send(&big) {
                    Ok(()) => "sent".to_string(),
                    Err(e) if e.is_timeout() => "timeout".to_string(),
                    Err(e) => format!("other error: {e}"),
                };
                let _ = tx.send((
                    result,
                    socket.is_closed(),
                    socket.stats().send_bytes,
                    started.elapsed(),
                ));
                Flow::Continue
            }
        }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let (result, closed, sent, waited) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(result, "timeout");
    assert!(closed, "the socket is closed after a send timeout");
    assert!(sent < BIG as u64);
    assert!(
        waited >= Duration::from_millis(200),
        "gave up after {waited:?}"
    );
    // The client gets what was sent before the timeout, then the close.
    let received = read_to_close(&mut client);
    assert!(received.len() as u64 <= sent);
    assert!(received.iter().all(|&b| b == b'z'));
    wait_no_connections(&server);
    // The timeout is the connection's error, whatever the handler returned:
    // the send's, with its kind and its count of bytes.
    assert_eq!(
        log.entries(),
        vec![format!(
            "error:send timed out after {sent} bytes, {} unsent",
            BIG as u64 - sent
        )]
    );
    server.stop(PATIENCE);
}

// ---------------------------------------------------------------------------
// Addresses

#[test]
fn peer_and_local_addresses_match_what_the_client_sees() {
    struct Addrs {
        conn: Connection,
        tx: mpsc::Sender<(u64, Addr, Addr, u64, Addr, Addr)>,
    }
    impl Handler for Addrs {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let c = &self.conn;
            let _ = self.tx.send((
                socket.id(),
                socket.peer_addr().clone(),
                socket.local_addr().clone(),
                c.id(),
                c.peer_addr().clone(),
                c.local_addr().clone(),
            ));
            Flow::Continue
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = builder()
        .start(move |conn: &Connection| {
            Ok(Addrs {
                conn: conn.clone(),
                tx: tx.clone(),
            })
        })
        .unwrap();
    let addr = tcp_addr(&server);
    let first = connect(addr);
    let second = connect(addr);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (id, peer, local, conn_id, conn_peer, conn_local) = rx.recv_timeout(PATIENCE).unwrap();
        assert!(
            peer == first.local_addr().unwrap() || peer == second.local_addr().unwrap(),
            "{peer} is neither client"
        );
        assert_eq!(local, addr);
        assert_eq!(local, first.peer_addr().unwrap());
        assert_eq!((conn_id, &conn_peer, &conn_local), (id, &peer, &local));
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "connection ids are unique");
    server.stop(PATIENCE);
}

#[test]
fn ipv6_loopback_echo() {
    let log = CallLog::new();
    let started = builder()
        .ip("::1".parse().unwrap())
        .start(on_connect(&log, || |_: &mut Socket| Flow::Continue));
    let server = match started {
        Ok(server) => server,
        Err(Error::Bind { source, .. }) => {
            eprintln!("::1 cannot be bound here ({source}); skipping");
            return;
        }
        Err(e) => panic!("unexpected error starting on ::1: {e}"),
    };
    let addr = tcp_addr(&server);
    assert!(addr.is_ipv6());
    let mut client = connect(addr);
    round_trip(&mut client, b"over IPv6");
    assert_eq!(log.entries(), ["data:over IPv6"]);
    server.stop(PATIENCE);
}

#[test]
fn client_reads_everything_sent_before_a_flow_close() {
    // 4 MiB sent then Close: the close must not cut the data short.
    let data = pattern(4 << 20, 11);
    let expected = data.clone();
    let data = std::sync::Arc::new(data);
    let log = CallLog::new();
    let server = builder()
        .start(on_connect(&log, move || {
            let data = data.clone();
            move |socket: &mut Socket| match socket.send(&data) {
                Ok(()) => Flow::Close,
                Err(e) => Flow::error(e),
            }
        }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let received = read_n(&mut client, expected.len());
    assert!(received == expected, "the bytes differ");
    assert_eq!(read_to_close(&mut client), b"");
    server.stop(PATIENCE);
}

/// `recv` with a length a peer announced (here 1 TiB) costs memory only as
/// bytes arrive: the peer sends 10 bytes and closes, the handler gets
/// `Closed` and the 10 bytes stay readable. Allocating the whole length up
/// front would abort the process.
#[test]
fn recv_of_a_huge_announced_length_allocates_as_bytes_arrive() {
    struct Greedy;
    impl Handler for Greedy {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let first = socket.recv(1 << 40);
            let kept = socket.recv(0).unwrap_or_default();
            let reply = format!(
                "closed={} kept={}",
                first.is_err_and(|e| e.is_closed()),
                String::from_utf8_lossy(&kept)
            );
            let _ = socket.send(reply.as_bytes());
            Flow::Close
        }
    }
    let server = builder().start(|_| Ok(Greedy)).unwrap();
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"0123456789").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let reply = read_to_close(&mut client);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "closed=true kept=0123456789"
    );
}

/// `close_gracefully` after a reply, with the client's next bytes already
/// unread on the server: the client reads the whole reply and a clean end
/// of stream (a plain close would reset the connection), and once it
/// closes, `close_gracefully` returns `Ok`.
#[test]
fn close_gracefully_ends_without_a_reset_despite_unread_bytes() {
    struct Bye(mpsc::Sender<String>);
    impl Handler for Bye {
        fn handle_data(&mut self, _data: &[u8], socket: &mut Socket) -> Flow {
            // Let the client's second write arrive unread.
            std::thread::sleep(Duration::from_millis(200));
            let reply = vec![b'b'; 100_000];
            let sent = socket.send(&reply);
            let closed = socket.close_gracefully(Duration::from_secs(10));
            let _ = self.0.send(format!("{sent:?} {closed:?}"));
            Flow::Close
        }
    }
    let (tx, results) = mpsc::channel();
    let server = builder().start(move |_| Ok(Bye(tx.clone()))).unwrap();
    let mut client = connect(tcp_addr(&server));
    client.write_all(b"first").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    client
        .write_all(b"second, never read by the handler")
        .unwrap();
    let mut reply = Vec::new();
    let read = client.read_to_end(&mut reply);
    assert!(
        read.is_ok(),
        "the client saw {read:?} after {} bytes",
        reply.len()
    );
    assert_eq!(reply.len(), 100_000);
    drop(client);
    let result = results.recv_timeout(PATIENCE).unwrap();
    assert_eq!(result, "Ok(()) Ok(())");
}

/// Answers each connection with the peer address that `socket2` reads
/// from the socket's descriptor, then closes and reports what `SockRef`
/// says of the closed socket.
struct PeerThroughFd {
    closed: mpsc::Sender<Option<i32>>,
}

impl Handler for PeerThroughFd {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        use std::os::fd::AsRawFd;
        let peer = socket2::SockRef::from(&*socket)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket());
        let line = format!("{peer:?} {}\n", socket.as_raw_fd() >= 0);
        if let Err(e) = socket.send(line.as_bytes()) {
            return Flow::error(e);
        }
        socket.close();
        let after = socket2::SockRef::from(&*socket).peer_addr();
        let _ = self.closed.send(after.err().and_then(|e| e.raw_os_error()));
        Flow::Close
    }
}

#[test]
fn as_fd_reaches_the_connection_and_never_a_closed_descriptor() {
    let (tx, closed) = mpsc::channel();
    let server = builder()
        .start(move |_| Ok(PeerThroughFd { closed: tx.clone() }))
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    let mut line = String::new();
    BufReader::new(&mut client).read_line(&mut line).unwrap();
    // The handler's descriptor is this client's connection.
    assert_eq!(
        line,
        format!("Some({:?}) true\n", client.local_addr().unwrap())
    );
    // Closed: the old number is not handed out; socket calls fail.
    assert_eq!(closed.recv_timeout(PATIENCE).unwrap(), Some(libc::ENOTSOCK));
    server.stop(PATIENCE);
}
#[test]
fn a_timed_out_send_gives_back_exactly_the_unsent_bytes_and_keeps_the_connection_when_asked() {
    const TOTAL: usize = 32 << 20;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i % 253) as u8).collect();
    let expected = data.clone();
    let (read_now, go) = mpsc::channel::<()>();
    let (report, reports) = mpsc::channel::<(u64, usize)>();
    struct Keeps {
        data: Vec<u8>,
        read_now: mpsc::Sender<()>,
        report: mpsc::Sender<(u64, usize)>,
    }
    impl Handler for Keeps {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            assert!(!socket.send_timeout_close());
            let _ = socket.set_send_buffer_size(4096);
            match socket.send(&self.data) {
                Err(Error::Timeout(Timeout::Send { sent, unsent })) => {
                    let _ = self.report.send((sent, unsent.len()));
                    assert_eq!(&self.data[sent as usize..], &unsent[..]);
                    assert!(!socket.is_closed());
                    // The client reads from now on: the rest goes out.
                    let _ = self.read_now.send(());
                    socket.set_send_timeout(None);
                    socket
                        .send(&unsent)
                        .map_or_else(Flow::error, |()| Flow::Close)
                }
                other => Flow::error(format!("expected a send timeout, got {other:?}")),
            }
        }
    }
    let server = builder()
        .send_timeout(Some(Duration::from_millis(100)))
        .send_timeout_close(false)
        .start(move |_| {
            Ok(Keeps {
                data: data.clone(),
                read_now: read_now.clone(),
                report: report.clone(),
            })
        })
        .unwrap();
    let mut client = connect(tcp_addr(&server));
    go.recv_timeout(PATIENCE).unwrap();
    let (sent, unsent) = reports.recv_timeout(PATIENCE).unwrap();
    assert!(
        unsent > 0 && sent as usize + unsent == TOTAL,
        "{sent} + {unsent}"
    );
    let got = read_to_close(&mut client);
    assert!(got == expected, "{} bytes back of {TOTAL}", got.len());
    server.stop(PATIENCE);
}

#[test]
fn by_default_a_timed_out_send_closes_the_connection_and_reports_the_unsent_bytes() {
    struct Closes(mpsc::Sender<String>);
    impl Handler for Closes {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let _ = socket.set_send_buffer_size(4096);
            let result = socket.send(&vec![1u8; 32 << 20]);
            let _ = self.0.send(match &result {
                Err(Error::Timeout(Timeout::Send { sent, unsent })) => {
                    format!(
                        "{} closed={}",
                        *sent as usize + unsent.len(),
                        socket.is_closed()
                    )
                }
                other => format!("{other:?}"),
            });
            if let Err(e) = result {
                let _ = self.0.send(format!("error: {e}"));
            }
            Flow::Continue
        }
        fn handle_error(&mut self, error: &Error, _: &mut Socket) {
            let _ = self.0.send(format!("error: {error}"));
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = builder()
        .send_timeout(Some(Duration::from_millis(100)))
        .start(move |_| Ok(Closes(tx.clone())))
        .unwrap();
    let _client = connect(tcp_addr(&server));
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        format!("{} closed=true", 32 << 20)
    );
    // handle_error receives the same send timeout as the send returned.
    let returned = rx.recv_timeout(PATIENCE).unwrap();
    assert!(
        returned.starts_with("error: send timed out after "),
        "{returned}"
    );
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), returned);
    server.stop(PATIENCE);
}
