//! A UDP echo server: every datagram comes back to its sender.
//!
//! ```text
//! cargo run --release --example udp_echo -- --port 4000 --listeners 2 --per-peer
//! ```

mod common;

use std::time::Duration;

use atoll::udp::SessionMode;
use atoll::{Flow, Handler, Server, Socket};

struct Echo;

impl Handler for Echo {
    fn handle_data(&mut self, datagram: &[u8], socket: &mut Socket) -> Flow {
        match socket.send(datagram) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }
}

const USAGE: &str = "usage: udp_echo [--port N] [--workers N] [--listeners N] [--per-peer]";

fn main() -> common::Result {
    let mut builder = Server::builder().ip([127, 0, 0, 1].into()).port(4000);
    let mut mode = SessionMode::PerDatagram;
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        builder = match flag.as_str() {
            "--per-peer" => {
                if args.switch()? {
                    mode = SessionMode::PerPeer;
                }
                builder
            }
            "--port" => builder.port(args.parse()?),
            "--workers" => builder.num_workers(args.parse()?),
            "--listeners" => builder.num_acceptors(args.parse()?),
            _ => return Err(USAGE.into()),
        };
    }
    // Per datagram, a session ends with its reply; per peer, after a few
    // idle seconds.
    let server = builder
        .udp(mode)
        .read_timeout(Some(Duration::from_secs(5)))
        .start(move |_| Ok(Echo))?;
    println!("listening on {}", server.local_addr()?);
    common::wait_for_signal_then_stop(&server, Duration::from_secs(5))?;
    Ok(())
}
