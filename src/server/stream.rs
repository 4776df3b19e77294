//! The options only a stream server (TCP, Unix, TLS) has, and how it
//! starts. The options it shares with a UDP server are in
//! [`super::builder`].

use std::sync::Arc;
use std::time::Duration;

use super::builder::{Builder, Streams};
use super::{Plan, Server};
use crate::connection::Connection;
use crate::error::{BoxError, Error};
use crate::handler::Handler;
use crate::proxy::ProxyProtocol;
use crate::transport::{ListenOptions, Transport};

impl Builder<Streams> {
    /// Replaces every listen option at once.
    ///
    /// ```
    /// let options = atoll::transport::ListenOptions::new().port(0).backlog(64);
    /// let builder = atoll::Server::builder().listen_options(options);
    /// ```
    pub fn listen_options(mut self, options: ListenOptions) -> Self {
        self.listen = options;
        self
    }

    /// The transport: [`Tcp`](crate::transport::Tcp) (the default), TLS
    /// (`NativeTls` with feature `tls`, `Rustls` with feature `rustls`) or
    /// the application's own.
    ///
    /// ```
    /// let builder = atoll::Server::builder().transport(atoll::transport::Tcp);
    /// ```
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Arc::new(transport);
        self
    }

    /// How long the transport's handshake may take; then the connection is
    /// closed with [`Error::Handshake`] to
    /// [`Handler::handle_error`](crate::Handler::handle_error). While it
    /// waits for the client it holds no worker. `None` waits forever.
    /// Default is 5 s.
    ///
    /// ```
    /// let builder = atoll::Server::builder().handshake_timeout(Some(std::time::Duration::from_secs(10)));
    /// ```
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Reads a PROXY protocol header (v1 or v2, as `options` allow) at the
    /// start of every connection, before the transport's handshake: the
    /// original client's address then becomes the connection's peer
    /// address everywhere. Only for servers behind a proxy that always
    /// sends one: a connection without it is closed. See
    /// [`proxy`](crate::proxy).
    ///
    /// ```
    /// let builder = atoll::Server::builder().proxy_protocol(atoll::proxy::ProxyProtocol::new());
    /// ```
    pub fn proxy_protocol(mut self, options: ProxyProtocol) -> Self {
        self.proxy = Some(options);
        self
    }

    /// Binds the listener and starts the server: the acceptor threads and the
    /// worker pool. Returns once the listener is bound, or the bind error
    /// ([`Error::Bind`]) or configuration error ([`Error::Config`]).
    ///
    /// `factory` makes the handler of each new connection, on a worker
    /// thread; it gets the connection's [`Connection`] handle (its id,
    /// addresses, and the way to send it messages). Returning an error
    /// refuses the connection: its socket is closed, the refusal is logged
    /// and counted in [`ServerStats::refused`](crate::ServerStats), and the
    /// server goes on.
    ///
    /// ```
    /// use atoll::{Handler, Server};
    ///
    /// struct Quiet;
    /// impl Handler for Quiet {}
    ///
    /// let server = Server::builder().port(0).start(|conn| {
    ///     if conn.peer_addr().ip().is_some_and(|ip| ip.is_loopback()) {
    ///         Ok(Quiet)
    ///     } else {
    ///         Err("local clients only".into())
    ///     }
    /// })?;
    /// # Ok::<(), atoll::Error>(())
    /// ```
    pub fn start<H, M, F>(self, factory: F) -> Result<Server<M>, Error>
    where
        H: Handler<M>,
        M: Send + 'static,
        F: Fn(&Connection<M>) -> Result<H, BoxError> + Send + Sync + 'static,
    {
        self.validate()?;
        if let Some(proxy) = &self.proxy {
            proxy.validate().map_err(Error::Config)?;
        }
        if self.handshake_timeout == Some(Duration::ZERO) {
            return Err(Error::Config(
                "handshake_timeout must be positive or None".into(),
            ));
        }
        Server::start(Plan::new(self, None), Box::new(factory))
    }
}

/// Getters of the stream options (see [`Builder`]'s getters for the rest).
impl Builder<Streams> {
    /// Whether a stale Unix socket file is removed before binding. Default
    /// is `false`.
    ///
    /// ```
    /// assert!(!atoll::Builder::new().get_remove_stale_socket());
    /// ```
    pub fn get_remove_stale_socket(&self) -> bool {
        self.listen.remove_stale_socket
    }

    /// Every listen option at once.
    ///
    /// ```
    /// let options = atoll::Builder::new().get_listen_options().clone();
    /// ```
    pub fn get_listen_options(&self) -> &ListenOptions {
        &self.listen
    }

    /// The name of the transport ([`Transport::name`]). Default is
    /// `"tcp"`.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_transport_name(), "tcp");
    /// ```
    pub fn get_transport_name(&self) -> &'static str {
        self.transport.name()
    }

    /// The handshake timeout. Default is 5 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(atoll::Builder::new().get_handshake_timeout(), Some(Duration::from_secs(5)));
    /// ```
    pub fn get_handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }

    /// The listen backlog. Default is 1024.
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_backlog(), 1024);
    /// ```
    pub fn get_backlog(&self) -> u32 {
        self.listen.backlog
    }

    /// `TCP_NODELAY` on accepted sockets. Default is `true`.
    ///
    /// ```
    /// assert!(atoll::Builder::new().get_nodelay());
    /// ```
    pub fn get_nodelay(&self) -> bool {
        self.listen.nodelay
    }

    /// `SO_LINGER` on accepted sockets. Default is `None` (off).
    ///
    /// ```
    /// assert_eq!(atoll::Builder::new().get_linger(), None);
    /// ```
    pub fn get_linger(&self) -> Option<Duration> {
        self.listen.linger
    }

    /// `SO_KEEPALIVE` on accepted sockets. Default is `false`.
    ///
    /// ```
    /// assert!(!atoll::Builder::new().get_keepalive());
    /// ```
    pub fn get_keepalive(&self) -> bool {
        self.listen.keepalive
    }

    /// The PROXY protocol options, when headers are read. Default is
    /// `None`.
    ///
    /// ```
    /// assert!(atoll::Builder::new().get_proxy_protocol().is_none());
    /// ```
    pub fn get_proxy_protocol(&self) -> Option<&ProxyProtocol> {
        self.proxy.as_ref()
    }
}
