//! The blocking client over rustls (`TlsConfig::from(Arc<ClientConfig>)`)
//! against real rustls servers on 127.0.0.1: atoll's own `Rustls`
//! transport, and a bare rustls `ServerConnection` on a thread for what a
//! server does that atoll's does not say (STARTTLS, a close with or
//! without a close notification, a peer that stops reading or never
//! answers). Certificates are the test PKI's.
#![cfg(feature = "rustls")]

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atoll::client::{self, ClientError, ConnectError, Options, Packet, Timeout, TlsConfig};
use atoll::transport::{ClientAuth, Rustls};
use atoll::{Flow, Handler, Server, Socket};
use crossbeam_channel::unbounded;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use util::tls::pki;
use util::{builder, tcp_addr, Echo, Issued, PATIENCE};

const WAIT: Option<Duration> = Some(PATIENCE);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(issued: &Issued) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(&issued.cert)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// A rustls client configuration trusting `roots` (PEM, none for an empty
/// store), offering `alpn`, presenting `identity` if given.
fn client_config(roots: Option<&[u8]>, alpn: &[&str], identity: Option<&Issued>) -> TlsConfig {
    let mut store = RootCertStore::empty();
    if let Some(pem) = roots {
        for cert in CertificateDer::pem_slice_iter(pem) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(chain(id), PrivateKeyDer::from_pem_slice(&id.key).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    TlsConfig::from(Arc::new(config))
}

/// A client configuration trusting the test CA, offering `alpn`.
fn trusting(alpn: &[&str]) -> TlsConfig {
    client_config(Some(&pki().ca), alpn, None)
}

type ServerTls = StreamOwned<ServerConnection, TcpStream>;

/// A bare rustls server on 127.0.0.1 for one connection, with the test
/// server certificate and these ALPN protocols: optionally a plain
/// `STARTTLS\r\n` / `GO\r\n` exchange first, then `session` over TLS. The
/// port, and the thread to join.
fn bare_server(
    alpn: &[&str],
    starttls: bool,
    session: impl FnOnce(&mut ServerTls) + Send + 'static,
) -> (u16, JoinHandle<()>) {
    let server = &pki().server;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain(server),
            PrivateKeyDer::from_pem_slice(&server.key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(PATIENCE)).unwrap();
        tcp.set_write_timeout(Some(PATIENCE)).unwrap();
        if starttls {
            let mut line = [0u8; 10];
            tcp.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"STARTTLS\r\n");
            tcp.write_all(b"GO\r\n").unwrap();
        }
        let conn = ServerConnection::new(config).unwrap();
        session(&mut StreamOwned::new(conn, tcp));
    });
    (port, handle)
}

/// Echoes until the client closes, or sends `bye` (echoed, then a close
/// notification and the close) or `drop` (echoed, then a TCP close
/// without a close notification).
fn echo(tls: &mut ServerTls) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        tls.write_all(&buf[..n]).unwrap();
        tls.flush().unwrap();
        if &buf[..n] == b"bye" {
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            return;
        }
        if &buf[..n] == b"drop" {
            return;
        }
    }
}

fn stop(server: Server) {
    server.stop(PATIENCE);
}

/// `n` bytes that are not all alike, so a misplaced record shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn atolls_rustls_server_with_alpn_over_every_method_and_the_shutdown() {
    let server = &pki().server;
    let tls = Rustls::from_pem(&server.cert, &server.key)
        .and_then(|t| t.with_alpn(&["atoll-test", "http/1.1"]))
        .unwrap();
    let server = builder().transport(tls).start(|_| Ok(Echo)).unwrap();
    let port = tcp_addr(&server).port();

    let mut conn = Options::new("localhost", port)
        .tls(Some(trusting(&["atoll-test"])))
        .connect()
        .expect("TLS connect to atoll's rustls server");
    assert!(conn.is_tls());
    assert_eq!(conn.alpn_protocol().as_deref(), Some(&b"atoll-test"[..]));

    // Passive mode, with its timeouts.
    assert_eq!(
        conn.recv(Some(Duration::ZERO)),
        Err(ClientError::Timeout(Timeout::Recv))
    );
    conn.send(b"over rustls").unwrap();
    assert_eq!(conn.recv_exact(11, WAIT).unwrap(), b"over rustls");
    conn.send(b"abc").unwrap();
    assert_eq!(
        conn.recv_exact(5, Some(Duration::from_millis(100))),
        Err(ClientError::Timeout(Timeout::Recv))
    );
    conn.send(b"de").unwrap();
    assert_eq!(conn.recv_exact(5, WAIT).unwrap(), b"abcde");

    // The std traits.
    conn.write_all(b"through Write").unwrap();
    conn.flush().unwrap();
    let mut back = [0u8; 13];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"through Write");

    // Active mode: decrypted packets, one per arming.
    let (tx, rx) = unbounded();
    conn.arm(&tx).unwrap();
    conn.send(b"armed").unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Data(conn.id(), b"armed".to_vec())
    );
    assert!(!conn.is_armed());

    conn.shutdown().unwrap();
    assert!(conn.is_closed());
    assert_eq!(conn.recv(WAIT), Err(ClientError::Closed));
    assert_eq!(conn.send(b"late"), Err(ClientError::Closed));
    stop(server);
}

/// Says which client certificate it saw, then echoes.
struct Who;

impl Handler for Who {
    fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
        let who: &[u8] = match socket.peer_certificate() {
            Some(der) if der == pki().client.der => b"client\n",
            Some(_) => b"someone else\n",
            None => b"anonymous\n",
        };
        socket
            .send(who)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }

    fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
        socket
            .send(data)
            .map_or_else(Flow::error, |()| Flow::Continue)
    }
}

#[test]
fn the_client_config_presents_its_client_certificate() {
    let server = &pki().server;
    let tls = Rustls::from_pem(&server.cert, &server.key)
        .and_then(|t| t.with_client_auth(ClientAuth::Required(pki().ca.clone())))
        .unwrap();
    let server = builder().transport(tls).start(|_| Ok(Who)).unwrap();
    let port = tcp_addr(&server).port();

    let mut conn = Options::new("127.0.0.1", port)
        .tls(Some(client_config(
            Some(&pki().ca),
            &[],
            Some(&pki().client),
        )))
        .connect()
        .expect("mutual TLS connect");
    assert_eq!(conn.recv_exact(7, WAIT).unwrap(), b"client\n");
    conn.send(b"mutual").unwrap();
    assert_eq!(conn.recv_exact(6, WAIT).unwrap(), b"mutual");
    conn.shutdown().unwrap();

    // Without a certificate no byte of the handler's comes through: the
    // handshake fails, or (TLS 1.3, where the client finishes first) the
    // first read does, with the server's alert.
    match Options::new("127.0.0.1", port)
        .tls(Some(trusting(&[])))
        .connect()
    {
        Err(e) => assert!(matches!(e, ConnectError::Tls(_)), "{e:?}"),
        Ok(mut conn) => {
            let got = conn.recv(WAIT);
            assert!(
                matches!(
                    got,
                    Err(ClientError::Tls(_) | ClientError::Econnreset | ClientError::Closed)
                ),
                "served without a certificate: {got:?}"
            );
        }
    }
    stop(server);
}

#[test]
fn a_bare_rustls_server_echoes_then_closes_with_a_close_notify() {
    let (port, server) = bare_server(&[], false, echo);
    // An IP address: no SNI, checked against the certificate's IP names.
    let mut conn = Options::new("127.0.0.1", port)
        .tls(Some(trusting(&[])))
        .connect()
        .expect("TLS connect to an IP address");
    assert!(conn.is_tls());
    assert_eq!(conn.alpn_protocol(), None);
    conn.send(b"secret").unwrap();
    assert_eq!(conn.recv_exact(6, WAIT).unwrap(), b"secret");
    assert_eq!(
        conn.recv(Some(Duration::ZERO)),
        Err(ClientError::Timeout(Timeout::Recv))
    );
    conn.send(b"bye").unwrap();
    assert_eq!(conn.recv_exact(3, WAIT).unwrap(), b"bye");
    assert_eq!(conn.recv(WAIT), Err(ClientError::Closed));
    server.join().unwrap();
}

#[test]
fn a_tcp_close_without_close_notify_is_a_close_in_active_mode() {
    let (port, server) = bare_server(&[], false, echo);
    let mut conn = Options::new("localhost", port)
        .tls(Some(trusting(&[])))
        .connect()
        .unwrap();
    let (tx, rx) = unbounded();
    conn.arm(&tx).unwrap();
    conn.send(b"armed").unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Data(conn.id(), b"armed".to_vec())
    );
    conn.send(b"drop").unwrap();
    assert_eq!(conn.recv_exact(4, WAIT).unwrap(), b"drop");
    conn.arm(&tx).unwrap();
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        Packet::Closed(conn.id())
    );
    assert_eq!(conn.recv(WAIT), Err(ClientError::Closed));
    server.join().unwrap();
}

#[test]
fn starttls_upgrades_a_live_connection_with_alpn_once() {
    let (port, server) = bare_server(&["atoll-test"], true, echo);
    let mut conn = client::connect("localhost", port).unwrap();
    assert!(!conn.is_tls());
    let id = conn.id();
    conn.send(b"STARTTLS\r\n").unwrap();
    assert_eq!(conn.recv_exact(4, WAIT).unwrap(), b"GO\r\n");
    conn.upgrade_tls(&trusting(&["atoll-test", "http/1.1"]))
        .expect("upgrade");
    assert!(conn.is_tls());
    assert_eq!(conn.id(), id);
    assert_eq!(conn.alpn_protocol().as_deref(), Some(&b"atoll-test"[..]));
    assert!(matches!(
        conn.upgrade_tls(&trusting(&[])),
        Err(ClientError::Tls(_))
    ));
    conn.send(b"over tls").unwrap();
    assert_eq!(conn.recv_exact(8, WAIT).unwrap(), b"over tls");
    conn.shutdown().unwrap();
    assert_eq!(conn.send(b"late"), Err(ClientError::Closed));
    server.join().unwrap();
}

#[test]
fn an_unknown_root_a_wrong_name_or_a_bad_name_fails_the_handshake() {
    let tls_error = |tls: TlsConfig| {
        let (port, server) = bare_server(&[], false, echo);
        let err = Options::new("localhost", port)
            .tls(Some(tls))
            .connect()
            .expect_err("the handshake should fail");
        // The client closed: the server's session ends.
        server.join().unwrap();
        match err {
            ConnectError::Tls(ClientError::Tls(text)) => text,
            other => panic!("not a TLS error: {other:?}"),
        }
    };
    let text = tls_error(client_config(None, &[], None));
    assert!(text.contains("UnknownIssuer"), "{text}");
    let text = tls_error(trusting(&[]).domain("other.test"));
    assert!(text.contains("not valid for name"), "{text}");
    let text = tls_error(trusting(&[]).domain("not a name"));
    assert!(text.contains("\"not a name\""), "{text}");
}

#[test]
fn a_server_that_never_answers_times_the_handshake_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    let err = Options::new("127.0.0.1", port)
        .tls(Some(trusting(&[]).handshake_timeout(Some(timeout))))
        .connect()
        .expect_err("nothing answers the hello");
    let took = start.elapsed();
    assert_eq!(
        err,
        ConnectError::Tls(ClientError::Timeout(Timeout::Handshake))
    );
    assert!(took >= timeout, "gave up after {took:?}");
    assert!(took < PATIENCE, "took {took:?}");
    drop(listener);
}

#[test]
fn sent_bytes_reach_the_server_with_no_read_or_flush_after_them() {
    // The server reports what it read on a channel of its own, so that the
    // client does nothing with the connection after its write: no record
    // may wait in the TLS layer for a later call.
    let (got_tx, got) = unbounded();
    let (port, server) = bare_server(&[], false, move |tls| {
        for _ in 0..2 {
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).unwrap();
            got_tx.send(buf).unwrap();
        }
    });
    let mut conn = Options::new("localhost", port)
        .tls(Some(trusting(&[])))
        .connect()
        .unwrap();
    conn.send(b"send").unwrap();
    assert_eq!(got.recv_timeout(PATIENCE), Ok(*b"send"));
    conn.write_all(b"writ").unwrap();
    assert_eq!(got.recv_timeout(PATIENCE), Ok(*b"writ"));
    server.join().unwrap();
}

#[test]
fn megabytes_cross_both_ways_through_full_socket_buffers() {
    const LEN: usize = 8 << 20;
    // Reads everything, then sends it all back: the client's sends wait
    // for room, and its receive gathers many records.
    let (port, server) = bare_server(&[], false, |tls| {
        let mut all = vec![0u8; LEN];
        tls.read_exact(&mut all).unwrap();
        tls.write_all(&all).unwrap();
        tls.flush().unwrap();
    });
    let mut conn = Options::new("localhost", port)
        .tls(Some(trusting(&[])))
        .send_timeout(WAIT)
        .connect()
        .unwrap();
    let data = pattern(LEN);
    conn.send(&data).unwrap();
    let back = conn.recv_exact(LEN, WAIT).unwrap();
    assert!(back == data, "the bytes came back changed");
    server.join().unwrap();
}

#[test]
fn a_send_to_a_server_that_does_not_read_times_out() {
    let (release, released) = unbounded::<()>();
    let (port, server) = bare_server(&[], false, move |tls| {
        // The handshake, then nothing read until the test is done.
        tls.conn.complete_io(&mut tls.sock).unwrap();
        let _ = released.recv_timeout(PATIENCE);
    });
    let mut conn = Options::new("localhost", port)
        .tls(Some(trusting(&[])))
        .send_timeout(Some(Duration::from_millis(300)))
        .connect()
        .unwrap();
    let start = Instant::now();
    let sent = pattern(32 << 20);
    match conn.send(&sent) {
        Err(ClientError::Timeout(Timeout::Send { sent: n, unsent })) => {
            assert_eq!(
                n as usize + unsent.len(),
                sent.len(),
                "sent and unsent add up"
            );
        }
        other => panic!("a send timeout, not {other:?}"),
    }
    assert!(start.elapsed() < PATIENCE);
    release.send(()).unwrap();
    server.join().unwrap();
}
