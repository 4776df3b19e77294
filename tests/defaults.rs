//! Every documented default of the `Builder` (and of the PROXY protocol
//! options), read through the getters: a silent change of a default fails
//! here, and the README table must follow.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use atoll::proxy::ProxyProtocol;
use atoll::udp::SessionMode;
use atoll::Builder;

#[test]
fn every_documented_builder_default_holds() {
    let b = Builder::new();
    // Where and how to listen.
    assert_eq!(b.get_ip(), Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    assert_eq!(b.get_port(), Some(4000));
    assert_eq!(b.get_addr().to_string(), "0.0.0.0:4000");
    assert_eq!(b.get_transport_name(), "tcp");
    assert!(!b.get_remove_stale_socket());
    assert_eq!(b.get_only_v6(), None);
    assert!(!b.get_reuse_port());
    assert_eq!(b.get_backlog(), 1024);
    assert!(b.get_reuse_address());
    // Accepted sockets.
    assert!(b.get_nodelay());
    assert_eq!(b.get_send_timeout(), Some(Duration::from_secs(30)));
    assert_eq!(b.get_linger(), None);
    assert!(!b.get_keepalive());
    assert_eq!(b.get_recv_buffer_size(), None);
    assert_eq!(b.get_send_buffer_size(), None);
    // Threads and limits.
    assert_eq!(b.get_num_acceptors(), atoll::default_num_acceptors());
    assert_eq!(b.get_num_workers(), atoll::default_num_workers());
    assert_eq!(b.get_num_connections(), Some(16_384));
    assert_eq!(b.get_max_connections_retry_count(), 5);
    assert_eq!(b.get_max_connections_retry_wait(), Duration::from_secs(1));
    assert_eq!(b.get_max_queued_messages(), Some(4096));
    // Timeouts.
    assert_eq!(b.get_handshake_timeout(), Some(Duration::from_secs(5)));
    assert_eq!(b.get_read_timeout(), Some(Duration::from_secs(60)));
    assert_eq!(b.get_shutdown_timeout(), Some(Duration::from_secs(15)));
    assert!(!b.get_silent_terminate_on_error());
    // Off unless asked for.
    assert!(b.get_proxy_protocol().is_none());
}

#[test]
fn the_thread_defaults_follow_the_cores() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(atoll::default_num_acceptors(), cores.min(16));
    assert_eq!(atoll::default_num_workers(), cores);
    let b = Builder::new();
    assert_eq!(b.get_num_workers(), cores);
    assert_eq!(b.get_max_workers(), atoll::DEFAULT_MAX_WORKERS);
    assert_eq!(atoll::DEFAULT_MAX_WORKERS, 4096);
    assert_eq!(b.get_worker_keepalive(), Duration::from_secs(10));
    assert_eq!(b.get_blocking_after(), Duration::from_millis(1));
    let fixed = Builder::new().fixed_workers(3);
    assert_eq!((fixed.get_num_workers(), fixed.get_max_workers()), (3, 3));
}

#[test]
fn every_documented_udp_default_holds() {
    let b = atoll::Server::udp();
    assert_eq!(b.get_session_mode(), SessionMode::PerDatagram);
    // The options both kinds share have the same defaults.
    assert_eq!(b.get_addr().to_string(), "0.0.0.0:4000");
    assert_eq!(b.get_read_timeout(), Some(Duration::from_secs(60)));
    assert_eq!(b.get_num_connections(), Some(16_384));
    assert_eq!(b.get_max_datagram_size(), 65_507);
    assert!(!b.get_broadcast());
    assert!(b.get_multicast_v4().is_empty());
    assert!(b.get_multicast_v6().is_empty());
    assert_eq!(b.get_multicast_loop(), None);
    assert_eq!(b.get_multicast_ttl(), None);
}

#[test]
fn every_documented_proxy_protocol_default_holds() {
    let p = ProxyProtocol::new();
    assert!(p.get_v1());
    assert!(p.get_v2());
    assert_eq!(p.get_header_timeout(), Duration::from_secs(5));
    assert_eq!(p.get_max_len(), 4096);
    assert!(!p.has_trusted());
    let b = Builder::new().proxy_protocol(ProxyProtocol::new());
    assert_eq!(b.get_proxy_protocol().map(|p| p.get_max_len()), Some(4096));
}

#[test]
fn the_getters_report_what_the_setters_set() {
    let b = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .backlog(7)
        .nodelay(false)
        .send_timeout(None)
        .linger(Some(Duration::from_secs(2)))
        .keepalive(true)
        .read_timeout(None)
        .num_connections(None)
        .max_queued_messages(Some(3));
    assert_eq!(b.get_addr().to_string(), "127.0.0.1:0");
    assert_eq!(b.get_backlog(), 7);
    assert!(!b.get_nodelay());
    assert_eq!(b.get_send_timeout(), None);
    assert_eq!(b.get_linger(), Some(Duration::from_secs(2)));
    assert!(b.get_keepalive());
    assert_eq!(b.get_read_timeout(), None);
    assert_eq!(b.get_num_connections(), None);
    assert_eq!(b.get_max_queued_messages(), Some(3));
    let unix = Builder::new().unix("/tmp/x.sock");
    assert_eq!(unix.get_port(), None);
    assert_eq!(
        unix.get_addr().unix_path(),
        Some(std::path::Path::new("/tmp/x.sock"))
    );
}
