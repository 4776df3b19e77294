//! Sends "Hello, World" to every client and closes: the seed's HelloWorld.
//!
//! ```text
//! cargo run --example hello_world -- --port 4000
//! ```

mod common;

use std::time::Duration;

use atoll::{Flow, Handler, Server, Socket};

struct HelloWorld;

impl Handler for HelloWorld {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        match socket.send(b"Hello, World") {
            Ok(()) => Flow::Close,
            Err(e) => Flow::error(e),
        }
    }
}

fn main() -> common::Result {
    let port = port_arg()?;
    let server = Server::builder()
        .ip([127, 0, 0, 1].into())
        .port(port)
        .start(|_conn| Ok(HelloWorld))?;
    println!("listening on {}", server.local_addr()?);
    common::wait_for_signal_then_stop(&server, Duration::from_secs(15))?;
    Ok(())
}

/// `--port N` (default 4000; 0 picks a free port).
fn port_arg() -> common::Result<u16> {
    let mut args = common::Args::from_env();
    let mut port = 4000;
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--port" => port = args.parse()?,
            _ => return Err("usage: hello_world [--port N]".into()),
        }
    }
    Ok(port)
}
