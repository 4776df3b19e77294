//! TLS from configurations built elsewhere: a rustls `ServerConfig`, a
//! `native_tls::TlsAcceptor`, a `native_tls::TlsConnector` for the client;
//! and the `tls_reload` example swapping the certificate of a running
//! server through its own rustls certificate resolver, seen by real TLS
//! clients.
#![cfg(any(feature = "tls", feature = "rustls"))]

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use native_tls::TlsStream;
use util::tls::{pki, plain_connector};
use util::{connect, PATIENCE};

/// A TLS client trusting the test CA, checking the name `localhost`.
#[cfg_attr(not(feature = "rustls"), allow(dead_code))] // the reload test's
fn tls_connect(addr: SocketAddr) -> TlsStream<TcpStream> {
    plain_connector()
        .connect("localhost", connect(addr))
        .expect("TLS handshake")
}

fn tls_round_trip(stream: &mut TlsStream<TcpStream>, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// The certificate the server presented, in DER.
fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let cert = stream.peer_certificate().unwrap().expect("a certificate");
    cert.to_der().unwrap()
}

#[cfg(feature = "rustls")]
mod rustls_config {
    use std::sync::Arc;

    use atoll::transport::{ClientAuth, Rustls, TlsVersion};
    use atoll::{Error, Flow, Handler, Socket};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{RootCertStore, ServerConfig};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;
    use util::tls::connector;
    use util::{builder, tcp_addr};

    /// Echoes, after a first line saying which client certificate it saw.
    struct Who;

    impl Handler for Who {
        fn handle_connection(&mut self, socket: &mut Socket) -> Flow {
            let who = match socket.peer_certificate() {
                Some(der) if der == pki().client.der => "client\n",
                Some(_) => "someone else\n",
                None => "anonymous\n",
            };
            socket
                .send(who.as_bytes())
                .map_or_else(Flow::error, |()| Flow::Continue)
        }

        fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Flow {
            socket
                .send(data)
                .map_or_else(Flow::error, |()| Flow::Continue)
        }
    }

    /// A configuration atoll's own methods cannot make: client certificates
    /// required, verified by a verifier the application built.
    fn mutual_config() -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(&pki().ca).unwrap())
            .unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let server = &pki().server;
        let chain = CertificateDer::pem_slice_iter(&server.cert)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(&server.key).unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    #[test]
    fn a_server_config_built_elsewhere_is_served_as_it_is() {
        let server = builder()
            .transport(Rustls::from(mutual_config()))
            .start(|_| Ok(Who))
            .unwrap();
        let addr = tcp_addr(&server);

        // Its verifier: a client with the CA's certificate is let in and
        // seen by the handler ...
        let with_cert = connector(Some(&pki().client), None);
        let mut tls = with_cert.connect("localhost", connect(addr)).unwrap();
        let mut line = [0; 7];
        tls.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"client\n");
        tls_round_trip(&mut tls, b"mutual");
        assert_eq!(presented(&tls), pki().server.der);

        // ... and one without a certificate gets no data through.
        let refused = match plain_connector().connect("localhost", connect(addr)) {
            Err(_) => true,
            // TLS 1.3: the refusal may come after the client's side of the
            // handshake completed, with its first read.
            Ok(mut tls) => {
                let _ = tls.write_all(b"x");
                let mut buf = [0; 16];
                !matches!(tls.read(&mut buf), Ok(n) if n > 0)
            }
        };
        assert!(refused, "served without a certificate");
        server.stop(PATIENCE);
    }

    #[test]
    fn the_settings_of_a_config_built_elsewhere_are_its_own() {
        let tls = Rustls::from(mutual_config());
        let err = |r: Result<Rustls, Error>| match r {
            Err(Error::Config(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(err(tls.clone().with_alpn(&["h2"])).contains("ServerConfig"));
        assert!(err(tls.clone().with_min_version(TlsVersion::Tls13)).contains("ServerConfig"));
        assert!(err(tls.clone().with_client_auth(ClientAuth::None)).contains("ServerConfig"));
        let other = &pki().other;
        assert!(err(tls.with_sni("other.test", &other.cert, &other.key)).contains("ServerConfig"));
    }
}

#[cfg(feature = "tls")]
mod native {
    use atoll::transport::{NativeTls, TlsVersion};
    use native_tls::{Identity, TlsAcceptor};

    use super::*;
    use util::{builder, echo_server, tcp_addr};

    #[test]
    fn an_acceptor_built_elsewhere_is_served_as_it_is() {
        let renewed = &pki().renewed;
        let identity = Identity::from_pkcs8(&renewed.cert, &renewed.key).unwrap();
        let acceptor = TlsAcceptor::builder(identity)
            .accept_alpn(&["x-atoll"])
            .build()
            .unwrap();
        let tls = NativeTls::from(acceptor);
        assert!(matches!(
            tls.clone().with_min_version(TlsVersion::Tls12),
            Err(atoll::Error::Config(_))
        ));
        assert!(matches!(
            tls.clone().with_alpn(&["h2"]),
            Err(atoll::Error::Config(_))
        ));
        let server = echo_server(builder().transport(tls));
        let addr = tcp_addr(&server);

        // Its identity and its ALPN protocols.
        let mut alpn = util::tls::connector_builder(None, None);
        alpn.request_alpns(&["h2", "x-atoll"]);
        let mut client = alpn
            .build()
            .unwrap()
            .connect("localhost", connect(addr))
            .unwrap();
        assert_eq!(presented(&client), renewed.der);
        assert_eq!(
            client.negotiated_alpn().unwrap().as_deref(),
            Some(&b"x-atoll"[..])
        );
        tls_round_trip(&mut client, b"from an acceptor");
        server.stop(PATIENCE);
    }

    #[test]
    fn the_client_connects_with_a_connector_built_elsewhere() {
        use atoll::client::{Options, TlsConfig};

        let server = echo_server(builder().transport(util::tls::native_tls()));
        let port = tcp_addr(&server).port();
        let connector = || {
            native_tls::TlsConnector::builder()
                .add_root_certificate(native_tls::Certificate::from_pem(&pki().ca).unwrap())
                .disable_built_in_roots(true)
                .build()
                .unwrap()
        };

        // atoll's own configuration does not trust the test CA ...
        let own = Options::new("127.0.0.1", port)
            .tls(Some(TlsConfig::new().built_in_roots(false)))
            .connect();
        assert!(own.is_err(), "an untrusted certificate was accepted");
        // ... the connector's roots do, checked against the IP address ...
        let mut conn = Options::new("127.0.0.1", port)
            .tls(Some(TlsConfig::from(connector())))
            .connect()
            .unwrap();
        assert!(conn.is_tls());
        conn.send(b"through a connector").unwrap();
        let back = conn
            .recv_exact("through a connector".len(), Some(PATIENCE))
            .unwrap();
        assert_eq!(back, b"through a connector");
        // ... and the configuration's name still applies on top.
        let wrong_name = Options::new("127.0.0.1", port)
            .tls(Some(TlsConfig::from(connector()).domain("other.test")))
            .connect();
        assert!(
            wrong_name.is_err(),
            "a certificate for another name was accepted"
        );
        server.stop(PATIENCE);
    }
}

#[cfg(feature = "rustls")]
mod reload {
    use std::path::Path;

    use super::*;
    use util::examples::Served;

    /// Replaces a file whole, so the server never reads half of it.
    fn replace(path: &Path, contents: &[u8]) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn the_tls_reload_example_swaps_its_certificate_and_keeps_its_connections() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let (first, renewed) = (&pki().server, &pki().renewed);
        replace(&cert, &first.cert);
        replace(&key, &first.key);
        let mut served = Served::start(
            "tls_reload",
            &[
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
        );

        let mut old = tls_connect(served.addr);
        assert_eq!(presented(&old), first.der);
        tls_round_trip(&mut old, b"before the reload");

        replace(&cert, &renewed.cert);
        replace(&key, &renewed.key);
        served.process.signal("HUP");
        served
            .process
            .wait_line("`certificate reloaded`", PATIENCE, |l| {
                l == "certificate reloaded"
            });

        // A new connection gets the renewed certificate ...
        let mut new = tls_connect(served.addr);
        assert_eq!(presented(&new), renewed.der);
        tls_round_trip(&mut new, b"after the reload");
        // ... and the old one goes on in its session.
        tls_round_trip(&mut old, b"still here after the reload");

        // A key that does not match its certificate is refused, and the
        // renewed certificate stays.
        replace(&key, &first.key);
        served.process.signal("HUP");
        served
            .process
            .wait_line("`certificate not reloaded`", PATIENCE, |l| {
                l.starts_with("certificate not reloaded")
            });
        let mut after_bad = tls_connect(served.addr);
        assert_eq!(presented(&after_bad), renewed.der);
        tls_round_trip(&mut after_bad, b"after a bad reload");
        tls_round_trip(&mut old, b"and the first one still");

        drop((old, new, after_bad));
        served.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
