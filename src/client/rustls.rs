//! A client connection's TLS with rustls: the handshake over the
//! connection's non-blocking socket and the encrypted stream after it;
//! never the configuration's options ([`TlsConfig`](super::TlsConfig)) or
//! the server's transports.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use ::rustls::pki_types::ServerName;
use ::rustls::{ClientConfig, ClientConnection};

use super::connection::TcpSocket;
use super::error::ClientError;
use crate::sys::{self, Wait};
use crate::timeout::Timeout;

/// A rustls client connection on its socket, after the handshake.
pub(super) struct RustlsStream {
    conn: ClientConnection,
    tcp: TcpSocket,
}

/// Runs a client handshake over the non-blocking socket `tcp` (whose
/// descriptor is `fd`), waiting for the socket until `deadline`.
pub(super) fn handshake(
    config: &Arc<ClientConfig>,
    domain: &str,
    tcp: TcpSocket,
    fd: RawFd,
    deadline: Option<Instant>,
) -> Result<RustlsStream, ClientError> {
    let name = ServerName::try_from(domain.to_string())
        .map_err(|e| ClientError::Tls(format!("server name {domain:?}: {e}")))?;
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(tls_error)?;
    let mut tls = RustlsStream { conn, tcp };
    loop {
        // What rustls has to say first: the hello, then its answers.
        match tls.push() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(fd, Wait::Write, deadline)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if !tls.conn.is_handshaking() {
            return Ok(tls);
        }
        match tls.receive() {
            Ok(0) => {
                return Err(ClientError::Tls(
                    "the server closed the connection during the handshake".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(fd, Wait::Read, deadline)?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits for the socket during the handshake;
/// [`Timeout::Handshake`](crate::Timeout::Handshake) at the deadline.
fn wait(fd: RawFd, what: Wait, deadline: Option<Instant>) -> Result<(), ClientError> {
    // The descriptor belongs to the `TcpSocket` the caller's stream holds, open
    // across the wait.
    if sys::wait_fd(fd, what, deadline)? {
        Ok(())
    } else {
        Err(ClientError::Timeout(Timeout::Handshake))
    }
}

fn tls_error(e: ::rustls::Error) -> ClientError {
    ClientError::Tls(e.to_string())
}

impl RustlsStream {
    /// Writes the records rustls holds until it has none left (`Ok`) or
    /// the socket would block (`WouldBlock`).
    fn push(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.tcp)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// One read from the socket into rustls, then decryption: `Ok(0)` at
    /// the end of the TCP stream, `WouldBlock` when the socket has nothing.
    /// A TLS error sends its alert, best effort, and reads as
    /// [`ClientError::Tls`].
    fn receive(&mut self) -> io::Result<usize> {
        let n = self.conn.read_tls(&mut self.tcp)?;
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.push();
            return Err(tls_error(e).into());
        }
        Ok(n)
    }

    /// One non-blocking read of plaintext. `Ok(0)` is the end of the
    /// stream: the server's close notification, or a TCP close without
    /// one (as with native-tls: protocols that must detect a truncated
    /// stream carry their own lengths).
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Records a write left behind: best effort, a reply may wait on them.
        match self.push() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        loop {
            // Plaintext already decrypted goes first: no readiness edge
            // announces it.
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // `WouldBlock` here: the socket has nothing more either. At the
            // end of the TCP stream the reader above says so next.
            self.receive()?;
            // What reading asked to send (a key update): best effort.
            match self.push() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }

    /// One non-blocking write of some of `bufs`. `WouldBlock` while the
    /// socket cannot take the records of earlier writes: no new plaintext
    /// is taken then (rustls would buffer it without bound). The records
    /// of this write that the socket cannot take yet wait for the next
    /// write, read or [`flush`](RustlsStream::flush).
    pub(super) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.push()?;
        let n = self.conn.writer().write_vectored(bufs)?;
        match self.push() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    /// Writes the records still held: `WouldBlock` while the socket cannot
    /// take them all.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.push()
    }

    /// Sends the close notification, best effort: it fits in an empty send
    /// buffer, and a server that is gone does not need it.
    pub(super) fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.push();
    }

    /// The protocol the server chose with ALPN.
    pub(super) fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The TCP socket underneath.
    pub(super) fn tcp(&self) -> &TcpSocket {
        &self.tcp
    }
}
