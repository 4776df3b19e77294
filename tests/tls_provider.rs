//! `Rustls::from_pem` uses the process's default crypto provider when the
//! application installed one. In a test binary of its own: the default is
//! process-wide and set once.
#![cfg(feature = "rustls")]

mod util;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustls::crypto::{ring, CryptoProvider};
use util::tls::pki;
use util::{echo_server, tcp_addr, PATIENCE};

/// Whether `openssl s_client` offering only TLS 1.3 with `suite`
/// completes a handshake and an echo with the server at `port`. Its stdin
/// stays open until the echo is back or it exits (closing stdin would end
/// it before the echo).
fn s_client_echoes(port: u16, suite: &str) -> bool {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-tls1_3", "-ciphersuites", suite])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the openssl tool");
    let mut stdin = child.stdin.take().unwrap();
    // A failed handshake ends s_client, and this write may find it gone.
    let _ = stdin.write_all(b"ping\n");
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"ping\n") {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    });
    // A stuck s_client is killed after PATIENCE, which ends the reader.
    let deadline = Instant::now() + PATIENCE;
    while !reader.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap() == b"ping\n"
}

#[test]
fn from_pem_takes_the_installed_default_provider() {
    // A provider with one TLS 1.3 suite: ring's default has three.
    let only_chacha = CryptoProvider {
        cipher_suites: vec![ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
        ..ring::default_provider()
    };
    only_chacha
        .install_default()
        .expect("no default provider installed before");
    assert!(CryptoProvider::get_default().is_some_and(|p| p.cipher_suites.len() == 1));

    let server = &pki().server;
    let tls = atoll::transport::Rustls::from_pem(&server.cert, &server.key).unwrap();
    let server = echo_server(util::builder().transport(tls));
    let port = tcp_addr(&server).port();
    assert!(
        s_client_echoes(port, "TLS_CHACHA20_POLY1305_SHA256"),
        "the provider's own suite was not served"
    );
    assert!(
        !s_client_echoes(port, "TLS_AES_128_GCM_SHA256"),
        "a suite outside the installed provider was served"
    );
    server.stop(PATIENCE);
}
