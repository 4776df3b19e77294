//! An echo server: every byte a client sends comes back.
//!
//! ```text
//! cargo run --release --example echo -- --port 4000 --workers 4
//! ```
//!
//! Stops gracefully on SIGINT or SIGTERM: new connections are refused at
//! once, open ones are drained for up to `--shutdown-timeout-ms`.
//!
//! Started by systemd's socket activation (`LISTEN_FDS` set, as by
//! `systemd-socket-activate -l 127.0.0.1:4000 echo`), it serves the socket
//! it was given instead of binding one. `--proxy-protocol` expects a PROXY
//! protocol header (v1 or v2) from a load balancer on every connection;
//! `--log info` then logs each connection's original client.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use atoll::logger::Level;
use atoll::proxy::ProxyProtocol;
use atoll::{Flow, Handler, Server, Socket};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

struct Echo;

impl Handler for Echo {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        match socket.proxy_addr() {
            Some(proxy) => log::info!(
                target: "echo",
                "connection {} from {} via {proxy}",
                socket.id(),
                socket.peer_addr()
            ),
            None => {
                log::info!(target: "echo", "connection {} from {}", socket.id(), socket.peer_addr())
            }
        }
        Flow::Continue
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        match socket.send(data) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }
}

/// A tiny logger: atoll's and this example's records on stdout.
struct Stdout;

impl log::Log for Stdout {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        matches!(metadata.target(), "atoll" | "echo")
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            println!("[{}] {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

static STDOUT: Stdout = Stdout;

const HELP: &str = "\
echo: an atoll echo server

Options (defaults in brackets):
  --ip ADDR                 address to listen on [127.0.0.1]
  --port N                  port, 0 for a free one [4000]
  --unix PATH               listen on a Unix socket at PATH instead
  --reuseport               share the port with other processes (SO_REUSEPORT)
  --proxy-protocol          expect a PROXY protocol v1 or v2 header first
  --workers N               worker threads [2 x cores, at least 4]
  --acceptors N             poll threads [one per core, at most 16]
  --num-connections N       live connections per acceptor, 0 for no limit [16384]
  --retry-count N           waits for a free slot before closing [5]
  --retry-wait-ms MS        length of each wait [1000]
  --read-timeout-ms MS      idle timeout, 0 for none [60000]
  --shutdown-timeout-ms MS  drain time on SIGINT/SIGTERM [15000]
  --log LEVEL               log events at error, info, debug or trace [off]
  --help                    this text";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = Server::builder().ip(IpAddr::from([127, 0, 0, 1]));
    let mut shutdown_timeout = Duration::from_secs(15);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--reuseport" => {
                builder = builder.reuse_port(true);
                continue;
            }
            "--proxy-protocol" => {
                builder = builder.proxy_protocol(ProxyProtocol::new());
                continue;
            }
            _ => {}
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
        let num = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        let ms = |n: u64| (n > 0).then(|| Duration::from_millis(n));
        builder = match flag.as_str() {
            "--ip" => builder.ip(value.parse()?),
            "--port" => builder.port(num()?.try_into()?),
            "--unix" => builder.unix(&value).remove_stale_socket(true),
            "--workers" => builder.num_workers(num()? as usize),
            "--acceptors" => builder.num_acceptors(num()? as usize),
            "--num-connections" => {
                builder.num_connections(Some(num()? as usize).filter(|&n| n > 0))
            }
            "--retry-count" => builder.max_connections_retry_count(num()?.try_into()?),
            "--retry-wait-ms" => builder.max_connections_retry_wait(Duration::from_millis(num()?)),
            "--read-timeout-ms" => builder.read_timeout(ms(num()?)),
            "--log" => {
                let level = match value.as_str() {
                    "error" => Level::Error,
                    "info" => Level::Info,
                    "debug" => Level::Debug,
                    "trace" => Level::Trace,
                    _ => return Err(format!("--log {value}: error, info, debug or trace").into()),
                };
                log::set_logger(&STDOUT).map_err(|e| e.to_string())?;
                log::set_max_level(log::LevelFilter::Trace);
                atoll::logger::attach_logger(level).map_err(|e| e.to_string())?;
                builder
            }
            "--shutdown-timeout-ms" => {
                shutdown_timeout = Duration::from_millis(num()?);
                builder
            }
            _ => return Err(format!("unknown option {flag} (see --help)").into()),
        };
    }
    // Socket activation: serve the socket systemd passed, if any.
    let inherited = atoll::inherit::systemd()?.into_iter().next();
    if let Some(socket) = inherited {
        let name = socket.name.unwrap_or_else(|| "unnamed".into());
        println!("socket-activated: listening on the inherited socket ({name})");
        builder = builder.listen_fd(socket.fd);
    }
    let server = builder.start(|_conn| Ok(Echo))?;
    println!("listening on {}", server.local_addr()?);
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    signals.forever().next();
    let began = std::time::Instant::now();
    let open = server.connection_count();
    server.stop(shutdown_timeout);
    eprintln!(
        "stopped in {:?}, {open} connections drained",
        began.elapsed()
    );
    Ok(())
}
