//! A line client: sends each line of standard input and prints the reply
//! line, using `atoll::client`.
//!
//! ```text
//! cargo run --example echo &                  # an echo server on 127.0.0.1:4000
//! printf 'hello\nworld\n' | cargo run --example client -- 127.0.0.1 4000
//! ```
//!
//! A connect failure prints the typed error, saying which address family
//! failed and why, and exits with status 1.

mod common;

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use atoll::client::{IpVersionPreference, Options};

const HELP: &str = "\
client: send each stdin line to a server and print the reply line

Usage: client HOST PORT [options]

Options (defaults in brackets):
  --prefer ipv4|ipv6|ipv4-only|ipv6-only  IP version preference [ipv6]
  --timeout-ms N    connect timeout per address family [1000]
  --tls             connect over TLS (system roots, plus --ca)
  --ca PEM          also trust the certificates in this PEM file
  --help            this text";

/// How long to wait for each reply line.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    common::run_main("client", run)
}

fn run() -> common::Result {
    let mut args = common::Args::with_operands();
    let mut preference = IpVersionPreference::Ipv6Preferred;
    let mut timeout = Duration::from_secs(1);
    let mut tls = false;
    let mut ca: Option<String> = None;
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--prefer" => {
                preference = match args.value()?.as_str() {
                    "ipv4" => IpVersionPreference::Ipv4Preferred,
                    "ipv6" => IpVersionPreference::Ipv6Preferred,
                    "ipv4-only" => IpVersionPreference::Ipv4Only,
                    "ipv6-only" => IpVersionPreference::Ipv6Only,
                    other => return Err(format!("--prefer {other}: unknown (see --help)").into()),
                }
            }
            "--timeout-ms" => timeout = args.ms()?,
            "--tls" => tls = args.switch()?,
            "--ca" => ca = Some(args.value()?),
            _ => return Err(args.unknown()),
        }
    }
    let [host, port] = args.operands() else {
        return Err("expected HOST PORT (see --help)".into());
    };
    let mut options = Options::new(host.as_str(), port.parse()?)
        .ip_version_preference(preference)
        .connect_timeout(Some(timeout))
        .nodelay(true);
    if tls || ca.is_some() {
        options = with_tls(options, ca.as_deref())?;
    }

    let mut conn = match options.connect() {
        Ok(conn) => conn,
        Err(e) => {
            // The typed error: which family failed, and why.
            eprintln!("client: cannot connect to {host} port {port}: {e}\n  ({e:?})");
            std::process::exit(1);
        }
    };
    eprintln!(
        "connected to {} from {}",
        conn.peer_addr(),
        conn.local_addr()
    );

    // Bytes received after the last complete reply line.
    let mut pending: Vec<u8> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        conn.send_vectored(&[
            std::io::IoSlice::new(line.as_bytes()),
            std::io::IoSlice::new(b"\n"),
        ])?;
        let end = loop {
            if let Some(i) = pending.iter().position(|&b| b == b'\n') {
                break i;
            }
            pending.extend(conn.recv(Some(REPLY_TIMEOUT))?);
        };
        let reply: Vec<u8> = pending.drain(..=end).collect();
        println!("{}", String::from_utf8_lossy(&reply[..end]));
    }
    conn.shutdown()?;
    Ok(())
}

#[cfg(feature = "tls")]
fn with_tls(options: Options, ca: Option<&str>) -> common::Result<Options> {
    let mut config = atoll::client::TlsConfig::new();
    if let Some(path) = ca {
        config = config.add_root_certificates_pem(&std::fs::read(path)?)?;
    }
    Ok(options.tls(Some(config)))
}

#[cfg(not(feature = "tls"))]
fn with_tls(_: Options, _: Option<&str>) -> common::Result<Options> {
    Err("--tls needs the `tls` feature".into())
}
