//! A UDP echo server: every datagram comes back to its sender.
//!
//! ```text
//! cargo run --release --example udp_echo -- --port 4000 --acceptors 2 --per-peer
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

const USAGE: &str =
    "usage: udp_echo [--ip IP] [--port N] [--workers N] [--acceptors N] [--max-workers N] [--per-peer]";

fn main() -> common::Result {
    let mut builder = Server::udp().ip([127, 0, 0, 1].into()).port(4000);
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        if args.server_flag(&flag, &mut builder)? {
            continue;
        }
        match flag.as_str() {
            "--per-peer" => {
                if args.switch()? {
                    builder = builder.session_mode(SessionMode::PerPeer);
                }
            }
            _ => return Err(USAGE.into()),
        }
    }
    // Per datagram, a session ends with its reply; per peer, after a few
    // idle seconds.
    let server = builder
        .read_timeout(Some(Duration::from_secs(5)))
        .start(move |_| Ok(Echo))?;
    println!("listening on {}", server.local_addr()?);
    common::wait_for_signal_then_stop(&server, Duration::from_secs(5))?;
    Ok(())
}
