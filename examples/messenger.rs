//! The seed's Messenger: prints what clients send, while an application
//! thread pushes a message to every live connection through its handle.
//!
//! ```text
//! cargo run --example messenger -- --port 4000
//! ```
//!
//! Connect with `nc 127.0.0.1 4000`: every two seconds each client gets the
//! time since the server started; lines it types are printed by the server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll::{Flow, Handler, Server, Socket};

/// What the application sends to a connection.
enum Msg {
    Send(String),
}

struct Messenger;

impl Handler<Msg> for Messenger {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        print!(
            "{} says: {}",
            socket.peer_addr(),
            String::from_utf8_lossy(data)
        );
        Flow::Continue
    }

    fn handle_message(&mut self, msg: Msg, socket: &mut Socket) -> Flow {
        let Msg::Send(text) = msg;
        match socket.send(text.as_bytes()) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }
}

fn main() -> common::Result {
    let mut args = common::Args::from_env();
    let mut port: u16 = 4000;
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--port" => port = args.parse()?,
            _ => return Err("usage: messenger [--port N]".into()),
        }
    }
    let server = Arc::new(
        Server::builder()
            .ip([127, 0, 0, 1].into())
            .port(port)
            .read_timeout(None)
            .start(|_conn| Ok(Messenger))?,
    );
    println!("listening on {}", server.local_addr()?);

    // The application thread: it holds no socket, only the server handle.
    let pusher = server.clone();
    let started = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(2));
        let text = format!("tick {:.0?}\n", started.elapsed());
        for conn in pusher.connections() {
            // A connection that ended meanwhile gives the message back.
            let _ = conn.send(Msg::Send(text.clone()));
        }
    });

    common::wait_for_signal_then_stop(&server, Duration::from_secs(15))?;
    Ok(())
}
