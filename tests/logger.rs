//! The dynamic logger: levels switched on and off on a running server,
//! records through the `log` crate with the target `atoll`.

mod util;

use std::sync::Mutex;

use atoll::logger::{attach_logger, detach_logger, Level, LoggerError};
use util::{builder, connect, round_trip, tcp_addr, wait_until, Echo, PATIENCE};

/// Keeps every record of the target `atoll`.
struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == "atoll"
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0
                .lock()
                .unwrap()
                .push((record.level(), record.args().to_string()));
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn take() -> Vec<(log::Level, String)> {
    std::mem::take(&mut *CAPTURE.0.lock().unwrap())
}

/// One test, because the logger and the `log` crate are process-wide.
#[test]
fn each_level_logs_its_events_and_nothing_is_logged_after_detach() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    // Info: the listener, not the connections.
    attach_logger(Level::Info).unwrap();
    assert_eq!(attach_logger(Level::Error), Err(LoggerError::AlreadyExists));
    let server = builder().start(|_| Ok(Echo)).unwrap();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"quiet");
    let records = take();
    assert!(
        records
            .iter()
            .any(|(l, m)| *l == log::Level::Info && m.starts_with("listener.start")),
        "{records:?}"
    );
    assert!(
        records.iter().all(|(l, _)| *l <= log::Level::Info),
        "{records:?}"
    );

    // Trace: every byte, with the connection id and the peer.
    attach_logger(Level::Trace).unwrap();
    round_trip(&mut client, b"loud");
    let peer = client.local_addr().unwrap().to_string();
    wait_until("the send record", || {
        CAPTURE
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.starts_with("connection.send"))
    });
    let records = take();
    let recv = records
        .iter()
        .find(|(_, m)| m.starts_with("connection.async_recv"))
        .expect("async_recv");
    assert_eq!(recv.0, log::Level::Trace);
    assert!(
        recv.1.contains(&format!("peer={peer}")) && recv.1.contains("bytes=4"),
        "{}",
        recv.1
    );
    assert!(recv.1.contains(" connection="), "{}", recv.1);

    // Detaching debug leaves error and info.
    detach_logger(Level::Debug).unwrap();
    assert_eq!(atoll::logger::level(), Some(Level::Info));
    round_trip(&mut client, b"quiet again");
    drop(client);
    wait_until("the connection ended", || server.connection_count() == 0);
    let records = take();
    assert!(
        records.iter().all(|(l, _)| *l <= log::Level::Info),
        "{records:?}"
    );

    // Errors are logged at error: a spawn error from a full limiter.
    let full = builder()
        .num_acceptors(1)
        .num_connections(Some(1))
        .max_connections_retry_count(0)
        .start(|_| Ok(Echo))
        .unwrap();
    let mut holder = connect(tcp_addr(&full));
    round_trip(&mut holder, b"in");
    let mut turned_away = connect(tcp_addr(&full));
    assert!(util::is_closed(&mut turned_away));
    wait_until("the spawn error record", || {
        CAPTURE
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(l, m)| *l == log::Level::Error && m.starts_with("acceptor.spawn_error"))
    });

    // Off: nothing at all.
    detach_logger(Level::Error).unwrap();
    assert_eq!(detach_logger(Level::Error), Err(LoggerError::NotFound));
    take();
    let mut client = connect(tcp_addr(&server));
    round_trip(&mut client, b"silence");
    server.stop(PATIENCE);
    full.stop(PATIENCE);
    assert_eq!(take(), vec![]);
}
