//! The hyper-on-tokio peer of `bench/run.sh`: an HTTP/1.1 server answering
//! every request with "Hello, World!", as `examples/http_hello.rs` does with
//! atoll.
//!
//! ```text
//! cargo run --release --example peer_hyper_hello -- --port 8080 --workers 2
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! ```
//!
//! hyper 1.x's `http1` connection (keep-alive on, its default) over
//! hyper-util's `TokioIo`, one task per connection, on a multi-thread tokio
//! runtime of `--workers` threads. Not an atoll example: it is what the
//! benchmark compares atoll with. Stops on SIGINT or SIGTERM.

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const HELP: &str = "\
peer_hyper_hello: a hyper/tokio \"Hello, World!\" server (the benchmark's peer)

Options (defaults in brackets):
  --ip ADDR      address to listen on [127.0.0.1]
  --port N       port, 0 for a free one [8080]
  --workers N    tokio worker threads [one per core]
  --help         this text";

const HELLO: &[u8] = b"Hello, World!";

fn main() -> ExitCode {
    common::run_main("peer_hyper_hello", run)
}

fn run() -> common::Result {
    let mut ip = IpAddr::from([127, 0, 0, 1]);
    let mut port: u16 = 8080;
    let mut workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--ip" => ip = args.parse()?,
            "--port" => port = args.parse()?,
            "--workers" => workers = args.parse()?,
            _ => return Err(args.unknown()),
        }
    }
    if workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("hyper-hello")
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(SocketAddr::new(ip, port)))?;
    println!("listening on {}", listener.local_addr()?);
    runtime.spawn(accept(listener));
    common::wait_for_signal()?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn accept(listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service_fn(hello))
                        .await;
                });
            }
            // Out of descriptors, say: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(HELLO))))
}
