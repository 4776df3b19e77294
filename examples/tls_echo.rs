//! An echo server over TLS.
//!
//! ```text
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
//!     -subj /CN=localhost -keyout key.pem -out cert.pem
//! cargo run --example tls_echo -- --port 4443 --cert cert.pem --key key.pem --alpn h2,http/1.1
//! openssl s_client -connect 127.0.0.1:4443 -alpn h2
//! ```
//!
//! With `--backend rustls` (feature `rustls`) and `--client-ca ca.pem`,
//! clients must present a certificate signed by that CA (mutual TLS).

mod common;

use std::process::ExitCode;
use std::time::Duration;

use atoll::{Flow, Handler, Server, Socket};

struct Echo;

impl Handler for Echo {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        let alpn = socket
            .negotiated_protocol()
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        println!("{} connected, ALPN {alpn:?}", socket.peer_addr());
        Flow::Continue
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }

    fn handle_error(&mut self, error: &atoll::Error, socket: &mut Socket) {
        println!("{}: {error}", socket.peer_addr());
    }
}

const HELP: &str = "\
tls_echo: an atoll echo server over TLS

Options:
  --port N                  port, 0 for a free one [4443]
  --cert PEM                certificate chain (required)
  --key PEM                 private key (required)
  --alpn LIST               protocols offered by ALPN, comma-separated
  --backend NAME            native-tls or rustls [native-tls]
  --client-ca PEM           require client certificates signed by this CA (rustls)
  --handshake-timeout-ms MS handshake timeout, 0 for none [5000]";

/// The command line's settings.
#[derive(Default)]
struct Options {
    port: u16,
    cert: String,
    key: String,
    alpn: Vec<String>,
    backend: String,
    client_ca: Option<String>,
    handshake_timeout: Option<Duration>,
}

fn main() -> ExitCode {
    common::run_main("tls_echo", run)
}

fn parse() -> common::Result<Option<Options>> {
    let mut a = Options {
        port: 4443,
        backend: "native-tls".into(),
        handshake_timeout: Some(Duration::from_secs(5)),
        ..Options::default()
    };
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(None);
            }
            "--port" => a.port = args.parse()?,
            "--cert" => a.cert = args.value()?,
            "--key" => a.key = args.value()?,
            "--alpn" => a.alpn = args.value()?.split(',').map(str::to_string).collect(),
            "--backend" => a.backend = args.value()?,
            "--client-ca" => a.client_ca = Some(args.value()?),
            "--handshake-timeout-ms" => {
                a.handshake_timeout = args.timeout_ms()?;
            }
            _ => return Err(args.unknown()),
        }
    }
    if a.cert.is_empty() || a.key.is_empty() {
        return Err("--cert and --key are required (see --help)".into());
    }
    Ok(Some(a))
}

fn run() -> common::Result {
    let Some(args) = parse()? else { return Ok(()) };
    let cert = std::fs::read(&args.cert)?;
    let key = std::fs::read(&args.key)?;
    let alpn: Vec<&str> = args.alpn.iter().map(String::as_str).collect();
    let builder = Server::builder()
        .ip([127, 0, 0, 1].into())
        .port(args.port)
        .handshake_timeout(args.handshake_timeout);
    let builder = match args.backend.as_str() {
        #[cfg(feature = "tls")]
        "native-tls" => {
            if args.client_ca.is_some() {
                return Err(
                    "native-tls cannot ask for client certificates; use --backend rustls".into(),
                );
            }
            builder.transport(atoll::transport::NativeTls::from_pem(&cert, &key)?.with_alpn(&alpn)?)
        }
        #[cfg(feature = "rustls")]
        "rustls" => {
            use atoll::transport::{ClientAuth, Rustls};
            let mut tls = Rustls::from_pem(&cert, &key)?.with_alpn(&alpn)?;
            if let Some(ca) = &args.client_ca {
                tls = tls.with_client_auth(ClientAuth::Required(std::fs::read(ca)?))?;
            }
            builder.transport(tls)
        }
        other => return Err(format!("backend {other} is unknown or not built in").into()),
    };
    let server = builder.start(|_| Ok(Echo))?;
    println!("listening on {}", server.local_addr()?);
    common::wait_for_signal_then_stop(&server, Duration::from_secs(15))?;
    Ok(())
}
