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
//!
//! `--delay-ms MS` makes the handler sleep MS milliseconds before each
//! echo: a stand-in for a blocking call (a database query, a C library)
//! that holds its worker thread while other connections go on being
//! served by the rest of the pool.

mod common;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use atoll::proxy::ProxyProtocol;
use atoll::{Flow, Handler, Server, Socket};

struct Echo {
    /// Slept before each echo, on the worker thread, as a blocking call would.
    delay: Option<Duration>,
}

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
        if let Some(delay) = self.delay {
            std::thread::sleep(delay);
        }
        match socket.send(data) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::error(e),
        }
    }
}

const HELP: &str = "\
echo: an atoll echo server

Every option of atoll's TCP server, as a flag (defaults in brackets). A
value follows its flag as `--port 4000` or `--port=4000`; a switch takes
`=false` to turn off what is on by default.

Listening:
  --ip ADDR                    address to listen on [127.0.0.1]
  --port N                     port, 0 for a free one [4000]
  --unix PATH                  listen on a Unix socket at PATH instead (a stale
                               socket file there is removed)
  --only-v6                    an IPv6 address accepts no IPv4 [off]
  --reuseport                  share the port with other processes [off]
  --reuse-address[=BOOL]       SO_REUSEADDR on the listener [true]
  --backlog N                  listen backlog [1024]
  --proxy-protocol             expect a PROXY protocol v1 or v2 header first
Threads and limits:
  --workers N                  base worker threads [one per core]
  --max-workers N              most worker threads, for blocking handlers [4096]
  --acceptors N                acceptor threads [one per core, at most 16]
  --num-connections N          live connections per acceptor, 0 for no limit [16384]
  --retry-count N              waits for a free slot before closing [5]
  --retry-wait-ms MS           length of each wait [1000]
  --max-queued-messages N      messages queued per connection, 0 for no limit [4096]
Connections:
  --read-timeout-ms MS         idle timeout, 0 for none [60000]
  --send-timeout-ms MS         how long a send may wait, 0 for ever [30000]
  --nodelay[=BOOL]             TCP_NODELAY [true]
  --keepalive[=BOOL]           SO_KEEPALIVE [false]
  --linger-ms MS               SO_LINGER, 0 for off [off]
  --recv-buffer N              SO_RCVBUF in bytes, 0 for the kernel's [kernel's]
  --send-buffer N              SO_SNDBUF in bytes, 0 for the kernel's [kernel's]
  --silent-terminate-on-error  do not log handlers' errors [off]
Stopping:
  --shutdown-timeout-ms MS     drain time on SIGINT/SIGTERM or drop [15000]
This example:
  --delay-ms MS                sleep before each echo, as a blocking call [0]
  --log LEVEL                  log events at error, info, debug or trace [off]
  --help                       this text

TLS has its own example (tls_echo), UDP too (udp_echo). Started with a
socket from systemd (LISTEN_FDS), it serves that socket.";

fn main() -> ExitCode {
    common::run_main("echo", run)
}

fn run() -> common::Result {
    let mut builder = Server::builder().ip(IpAddr::from([127, 0, 0, 1]));
    let mut shutdown_timeout = Duration::from_secs(15);
    let mut delay = None;
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
            "--unix" => builder.unix(args.value()?).remove_stale_socket(true),
            // Set only when on: an IPv4 address refuses the option at all.
            "--only-v6" => {
                if args.switch()? {
                    builder.only_v6(true)
                } else {
                    builder
                }
            }
            "--reuseport" => builder.reuse_port(args.switch()?),
            "--reuse-address" => builder.reuse_address(args.switch()?),
            "--backlog" => builder.backlog(args.parse()?),
            "--proxy-protocol" => {
                if args.switch()? {
                    builder.proxy_protocol(ProxyProtocol::new())
                } else {
                    builder
                }
            }
            "--num-connections" => builder.num_connections(args.optional_num()?),
            "--retry-count" => builder.max_connections_retry_count(args.parse()?),
            "--retry-wait-ms" => builder.max_connections_retry_wait(args.ms()?),
            "--max-queued-messages" => builder.max_queued_messages(args.optional_num()?),
            "--read-timeout-ms" => builder.read_timeout(args.timeout_ms()?),
            "--send-timeout-ms" => builder.send_timeout(args.timeout_ms()?),
            "--nodelay" => builder.nodelay(args.switch()?),
            "--keepalive" => builder.keepalive(args.switch()?),
            "--linger-ms" => builder.linger(args.timeout_ms()?),
            "--recv-buffer" => builder.recv_buffer_size(args.optional_num()?),
            "--send-buffer" => builder.send_buffer_size(args.optional_num()?),
            "--silent-terminate-on-error" => builder.silent_terminate_on_error(args.switch()?),
            "--shutdown-timeout-ms" => {
                shutdown_timeout = args.ms()?;
                builder.shutdown_timeout(Some(shutdown_timeout))
            }
            "--delay-ms" => {
                delay = common::optional_ms(args.num()?);
                builder
            }
            "--log" => {
                common::init_log(&args.value()?, &["atoll", "echo"])?;
                builder
            }
            _ => return Err(args.unknown()),
        };
    }
    // Socket activation: serve the socket systemd passed, if any.
    let inherited = atoll::inherit::systemd()?.into_iter().next();
    if let Some(socket) = inherited {
        let name = socket.name.unwrap_or_else(|| "unnamed".into());
        println!("socket-activated: listening on the inherited socket ({name})");
        builder = builder.listen_fd(socket.fd);
    }
    let server = builder.start(move |_conn| Ok(Echo { delay }))?;
    println!("listening on {}", server.local_addr()?);
    common::wait_for_signal()?;
    let began = std::time::Instant::now();
    let open = server.connection_count();
    server.stop(shutdown_timeout);
    eprintln!(
        "stopped in {:?}, {open} connections drained",
        began.elapsed()
    );
    Ok(())
}
