//! An echo server over TLS (rustls) whose certificate is reloaded from its
//! files on SIGHUP, without a restart: connections already open keep their
//! TLS sessions, and every handshake after the reload gets the new
//! certificate.
//!
//! The server is configured with a rustls `ServerConfig` of its own, whose
//! certificate resolver hands out whatever certificate is current; atoll
//! takes that configuration as it is (`Rustls::from`).
//!
//! ```text
//! cargo run --example tls_reload --features rustls -- --port 4443 --cert cert.pem --key key.pem
//! # renew cert.pem and key.pem, then:
//! kill -HUP <pid>
//! ```

mod common;

use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use atoll::transport::Rustls;
use atoll::{Flow, Handler, Server, Socket};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;

struct Echo;

impl Handler for Echo {
    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

/// The certificate every new handshake gets; replacing it changes no
/// session already established (those have their keys).
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole certificate: the writer only
        // swaps an `Arc`.
        let current = self.0.read().unwrap_or_else(|e| e.into_inner());
        Some(current.clone())
    }
}

/// Reads a PEM certificate chain and its key, and checks they match.
fn load(provider: &CryptoProvider, cert: &str, key: &str) -> common::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{cert}: no certificate").into());
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    // Refuses a key that does not belong to the certificate, which would
    // otherwise fail every handshake after the reload.
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}

const HELP: &str = "\
tls_reload: an atoll echo server over TLS that reloads its certificate on SIGHUP

Options:
  --port N     port, 0 for a free one [4443]
  --cert PEM   certificate chain (required)
  --key PEM    private key (required)";

fn main() -> ExitCode {
    common::run_main("tls_reload", run)
}

fn run() -> common::Result {
    let (mut port, mut cert, mut key) = (4443u16, String::new(), String::new());
    let mut args = common::Args::from_env();
    while let Some(flag) = args.flag()? {
        match flag.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--port" => port = args.parse()?,
            "--cert" => cert = args.value()?,
            "--key" => key = args.value()?,
            _ => return Err(args.unknown()),
        }
    }
    if cert.is_empty() || key.is_empty() {
        return Err("--cert and --key are required (see --help)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let current = Arc::new(Current(RwLock::new(Arc::new(load(
        &provider, &cert, &key,
    )?))));
    let config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    // Caught before anyone can know the server is up: SIGHUP's default
    // action would end the process.
    let mut hangups = Signals::new([SIGHUP])?;
    let server = Server::builder()
        .ip([127, 0, 0, 1].into())
        .port(port)
        .transport(Rustls::from(Arc::new(config)))
        .start(|_| Ok(Echo))?;
    println!("listening on {}", server.local_addr()?);

    std::thread::spawn(move || {
        for _ in hangups.forever() {
            // A renewal half written, or a key that does not match, keeps
            // the certificate being served.
            match load(&provider, &cert, &key) {
                Ok(renewed) => {
                    *current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(renewed);
                    println!("certificate reloaded");
                }
                Err(e) => println!("certificate not reloaded: {e}"),
            }
        }
    });
    common::wait_for_signal_then_stop(&server, Duration::from_secs(15))?;
    Ok(())
}
