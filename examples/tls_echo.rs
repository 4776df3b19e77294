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

use std::process::ExitCode;
use std::time::Duration;

use atoll::{Flow, Handler, Server, Socket};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

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

#[derive(Default)]
struct Args {
    port: u16,
    cert: String,
    key: String,
    alpn: Vec<String>,
    backend: String,
    client_ca: Option<String>,
    handshake_timeout: Option<Duration>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tls_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse() -> Result<Option<Args>, Box<dyn std::error::Error>> {
    let mut a = Args {
        port: 4443,
        backend: "native-tls".into(),
        handshake_timeout: Some(Duration::from_secs(5)),
        ..Args::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{HELP}");
            return Ok(None);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
        match flag.as_str() {
            "--port" => a.port = value.parse()?,
            "--cert" => a.cert = value,
            "--key" => a.key = value,
            "--alpn" => a.alpn = value.split(',').map(str::to_string).collect(),
            "--backend" => a.backend = value,
            "--client-ca" => a.client_ca = Some(value),
            "--handshake-timeout-ms" => {
                let ms: u64 = value.parse()?;
                a.handshake_timeout = (ms > 0).then(|| Duration::from_millis(ms));
            }
            _ => return Err(format!("unknown option {flag} (see --help)").into()),
        }
    }
    if a.cert.is_empty() || a.key.is_empty() {
        return Err("--cert and --key are required (see --help)".into());
    }
    Ok(Some(a))
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
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
    Signals::new([SIGINT, SIGTERM])?.forever().next();
    server.stop(Duration::from_secs(15));
    Ok(())
}
