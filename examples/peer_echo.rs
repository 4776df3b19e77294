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
//! - `tokio-tls`: `tokio` over TLS (tokio-native-tls), with the PEM
//!   certificate and key of `--cert` and `--key`.
//! - `tokio-udp`: UDP echo, `--workers` sockets on one port
//!   (`SO_REUSEPORT`), one task each looping `recv_from` / `send_to`.
//!
//! Not an atoll example: it is what the benchmark compares atoll with.
//! Stops on SIGINT or SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const HELP: &str = "\
peer_echo: a tokio or thread-per-connection echo server (the benchmark's peer)

Options (defaults in brackets):
  --kind KIND       tokio, std, tokio-tls or tokio-udp [tokio]
  --cert PATH       tokio-tls: PEM certificate chain
  --key PATH        tokio-tls: PEM private key (PKCS#8)
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
    let (mut cert, mut key) = (None, None);
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--kind" => kind = args.value()?,
            "--cert" => cert = Some(args.value()?),
            "--key" => key = Some(args.value()?),
            "--ip" => ip = args.parse()?,
            "--port" => port = args.num()?.try_into()?,
            "--workers" => workers = args.num()?.try_into()?,
            "--delay-ms" => delay = args.ms()?,
            _ => return Err(args.unknown()),
        }
    }
    let addr = SocketAddr::new(ip, port);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .enable_all()
            .build()
    };
    match kind.as_str() {
        "std" => {
            let listener = TcpListener::bind(addr)?;
            println!("listening on {}", listener.local_addr()?);
            thread::spawn(move || serve_std(listener, delay));
        }
        "tokio" | "tokio-tls" => {
            let tls = match kind.as_str() {
                "tokio-tls" => {
                    let (Some(cert), Some(key)) = (&cert, &key) else {
                        return Err("--kind tokio-tls needs --cert and --key".into());
                    };
                    let identity = native_tls::Identity::from_pkcs8(
                        &std::fs::read(cert)?,
                        &std::fs::read(key)?,
                    )?;
                    Some(tokio_native_tls::TlsAcceptor::from(
                        native_tls::TlsAcceptor::new(identity)?,
                    ))
                }
                _ => None,
            };
            let listener = TcpListener::bind(addr)?;
            println!("listening on {}", listener.local_addr()?);
            listener.set_nonblocking(true)?;
            let runtime = runtime()?;
            thread::spawn(move || runtime.block_on(serve_tokio(listener, delay, tls)));
        }
        "tokio-udp" => {
            let runtime = runtime()?;
            let mut bound = addr;
            let mut sockets = Vec::new();
            for _ in 0..workers.max(1) {
                let domain = socket2::Domain::for_address(bound);
                let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
                socket.set_reuse_port(true)?;
                socket.set_nonblocking(true)?;
                socket.bind(&bound.into())?;
                // The first bind picks the port; the others share it.
                bound = socket
                    .local_addr()?
                    .as_socket()
                    .ok_or("not an inet socket")?;
                sockets.push(std::net::UdpSocket::from(socket));
            }
            println!("listening on {bound}");
            thread::spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = Vec::new();
                    for socket in sockets {
                        tasks.push(tokio::spawn(udp_echo(socket)));
                    }
                    for task in tasks {
                        let _ = task.await;
                    }
                })
            });
        }
        other => return Err(format!("--kind {other}: tokio, std, tokio-tls or tokio-udp").into()),
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

async fn udp_echo(socket: std::net::UdpSocket) {
    let Ok(socket) = tokio::net::UdpSocket::from_std(socket) else {
        return;
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        // An error is an ICMP report of an earlier send: go on.
        if let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    }
}

async fn serve_tokio(
    listener: TcpListener,
    delay: Duration,
    tls: Option<tokio_native_tls::TlsAcceptor>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => echo_tokio(stream, delay).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        echo_tokio(stream, delay).await;
                    }
                }
            }
        });
    }
}

async fn echo_tokio<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, delay: Duration) {
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
}
