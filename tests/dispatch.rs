//! How connections share the workers.

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use atoll::{Flow, Handler, Socket};
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
