//! The echo peers of `bench/run.sh`: what atoll's `echo` example is
//! compared with, each a process of its own as a user would run it.
//!
//! ```text
//! cargo run --release --example peer_echo -- --kind tokio --port 5000 --workers 2
//! cargo run --release --example peer_echo -- --kind std --port 5001 --delay-ms 1
//! ```
//!
//! - `tokio`: a task per connection on a multi-thread runtime of
//!   `--workers` threads; with `--delay-ms`, the delay is a blocking
//!   sleep run by `spawn_blocking` (tokio's way to call blocking code).
//! - `std`: one thread per connection, blocking reads and writes; with
//!   `--delay-ms`, the thread sleeps before each echo.
//!
//! Not an atoll example: it is what the benchmark compares atoll with.
//! Stops on SIGINT or SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HELP: &str = "\
peer_echo: a tokio or thread-per-connection echo server (the benchmark's peer)

Options (defaults in brackets):
  --kind tokio|std  which server [tokio]
  --ip ADDR         address to listen on [127.0.0.1]
  --port N          port, 0 for a free one [5000]
  --workers N       tokio worker threads [one per core]
  --delay-ms MS     block MS milliseconds before each echo [0]
  --help            this text";

fn main() -> ExitCode {
    common::run_main("peer_echo", run)
}

fn run() -> common::Result {
    let mut ip = IpAddr::from([127, 0, 0, 1]);
    let mut port: u16 = 5000;
    let mut workers = thread::available_parallelism().map_or(1, |n| n.get());
    let mut delay = Duration::ZERO;
    let mut kind = String::from("tokio");
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--kind" => kind = args.value()?,
            "--ip" => ip = args.parse()?,
            "--port" => port = args.num()?.try_into()?,
            "--workers" => workers = args.num()?.try_into()?,
            "--delay-ms" => delay = args.ms()?,
            _ => return Err(args.unknown()),
        }
    }
    let listener = TcpListener::bind(SocketAddr::new(ip, port))?;
    println!("listening on {}", listener.local_addr()?);
    match kind.as_str() {
        "std" => {
            thread::spawn(move || serve_std(listener, delay));
        }
        "tokio" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers.max(1))
                .enable_all()
                .build()?;
            listener.set_nonblocking(true)?;
            thread::spawn(move || runtime.block_on(serve_tokio(listener, delay)));
        }
        other => return Err(format!("--kind {other}: tokio or std").into()),
    }
    common::wait_for_signal()?;
    Ok(())
}

fn serve_std(listener: TcpListener, delay: Duration) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || echo_std(stream, delay));
    }
}

fn echo_std(mut stream: TcpStream, delay: Duration) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

async fn serve_tokio(listener: TcpListener, delay: Duration) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !delay.is_zero()
                    && tokio::task::spawn_blocking(move || thread::sleep(delay))
                        .await
                        .is_err()
                {
                    return;
                }
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}
