//! A builder's options, of either kind, as the server starts and runs with
//! them, and binding by them. Never touches a running thread.

use std::sync::Arc;
use std::time::Duration;

use super::builder::Builder;
use crate::connection::ConnOptions;
use crate::error::Error;
use crate::pool::PoolConfig;
use crate::telemetry::Sink;
use crate::transport::ListenOptions;
use crate::udp::UdpOptions;

/// What the server handle needs of its builder once started.
pub(super) struct Settings {
    /// A UDP server's options; `None` for a stream server.
    pub(super) udp: Option<UdpOptions>,
    pub(super) num_acceptors: usize,
    pub(super) shutdown_timeout: Option<Duration>,
    pub(super) transport_name: &'static str,
}

/// A builder's options, of either kind, as the server starts with them.
pub(crate) struct Plan {
    pub(super) settings: Settings,
    pub(super) listen: ListenOptions,
    pub(super) num_connections: Option<usize>,
    pub(super) pool: PoolConfig,
    pub(super) conn: ConnOptions,
    pub(super) retry_count: u32,
    pub(super) retry_wait: Duration,
    pub(super) sinks: Vec<Arc<dyn Sink>>,
}

impl Plan {
    /// The plan of a stream server (`udp` is `None`) or a UDP server.
    pub(crate) fn new<K>(b: Builder<K>, udp: Option<UdpOptions>) -> Plan {
        let transport_name = if udp.is_some() {
            "udp"
        } else {
            b.transport.name()
        };
        Plan {
            settings: Settings {
                udp,
                num_acceptors: b.num_acceptors,
                shutdown_timeout: b.shutdown_timeout,
                transport_name,
            },
            num_connections: b.num_connections,
            pool: PoolConfig {
                base: b.num_workers,
                max: b.max_workers.max(b.num_workers),
                keepalive: b.worker_keepalive,
                blocking_after: b.blocking_after,
            },
            conn: ConnOptions {
                transport: b.transport,
                #[cfg(feature = "tracing")]
                transport_name,
                handshake_timeout: b.handshake_timeout,
                read_timeout: b.read_timeout,
                send_timeout: b.send,
                proxy: b.proxy,
                max_queued_messages: b.max_queued_messages,
                silent_terminate_on_error: b.silent_terminate_on_error,
            },
            retry_count: b.max_connections_retry_count,
            retry_wait: b.max_connections_retry_wait,
            sinks: b.sinks,
            listen: b.listen,
        }
    }
}

/// Binds the listening socket of a stream server, or one receiving socket
/// of a UDP server.
pub(super) fn bind(
    listen: &ListenOptions,
    udp: Option<&UdpOptions>,
) -> Result<socket2::Socket, Error> {
    let Some(udp) = udp else {
        return listen.bind();
    };
    let socket = listen.bind_datagram()?;
    udp.apply(&socket).map_err(|source| Error::Bind {
        addr: listen.bind_addr(),
        source,
    })?;
    Ok(socket)
}
