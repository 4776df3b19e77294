//! The socket's reads, writes and `sendfile`, each bounded by its timeout
//! through the blocking loop it shares with the client; never the
//! connection's set-up, span or release (those are `plumbing`'s).

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Socket;
use crate::blocking::{self, NonBlocking, SendStop, Stop};
use crate::error::Error;
use crate::sys::{self, Wait};
use crate::telemetry::{Interest, Kind, Telemetry};
use crate::timeout::Timeout;

/// Chunk size of [`Socket::sendfile`] on a stream that cannot splice (TLS):
/// 1 MiB is large enough that the per-chunk cost vanishes, small enough
/// to bound the copy buffer.
const SENDFILE_CHUNK: u64 = 1 << 20;

/// Bytes a `recv(0)` reads at most.
const RECV_ANY: usize = 16 * 1024;

/// The shared loops reach the peer through the socket's stream. A closed
/// socket fails each call with `NotConnected`, which reads as
/// [`Error::Closed`].
impl NonBlocking for Socket {
    fn read_once(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_read(buf)
    }

    fn write_once(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self
            .stream
            .as_mut()
            .ok_or_else(closed_io)?
            .write_vectored(bufs)?;
        if n > 0 {
            self.count_sent(n);
        }
        Ok(n)
    }

    fn flush_once(&mut self) -> io::Result<()> {
        self.stream.as_mut().ok_or_else(closed_io)?.flush()
    }

    fn wait(&mut self, what: Wait, deadline: Option<Instant>) -> io::Result<bool> {
        let stream = self.stream.as_ref().ok_or_else(closed_io)?;
        let own = match what {
            Wait::Read => stream.wait_readable(deadline),
            Wait::Write => None,
        };
        own.unwrap_or_else(|| sys::wait_fd(self.fd, what, deadline))
    }
}

impl Socket {
    /// Receives data, waiting up to the read timeout.
    ///
    /// With `len == 0`, returns whatever is available (at least one byte);
    /// otherwise exactly `len` bytes. Fails with [`Error::Closed`] when the
    /// peer closed the connection first and
    /// [`Error::Timeout`]`(`[`Timeout::Recv`]`)` when the timeout passed;
    /// bytes received before a timeout are not lost: the next `recv` or
    /// [`Handler::handle_data`](crate::Handler::handle_data) gets them.
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let greeting = socket.recv(5)?; // exactly 5 bytes
    /// let rest = socket.recv(0)?;     // whatever came next
    /// # Ok(()) }
    /// ```
    pub fn recv(&mut self, len: usize) -> Result<Vec<u8>, Error> {
        self.recv_within(len, self.read_timeout)
    }

    /// [`recv`](Socket::recv) within `timeout` instead of the read
    /// timeout; `None` waits forever. (Thousand Island's
    /// `recv(socket, length, timeout)`; the name keeps it apart from the
    /// [`read_timeout`](Socket::read_timeout) and
    /// [`send_timeout`](Socket::send_timeout) getters.)
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// use atoll::{Error, Timeout};
    ///
    /// match socket.recv_within(0, Some(std::time::Duration::from_millis(100))) {
    ///     Ok(data) => println!("{} bytes", data.len()),
    ///     Err(Error::Timeout(Timeout::Recv)) => println!("nothing yet"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn recv_within(&mut self, len: usize, timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        let result = self.recv_inner(len, timeout);
        match &result {
            Ok(data) => self.emit(|| Kind::Recv { data }),
            Err(error) => self.emit(|| Kind::RecvError { error }),
        }
        result
    }

    fn recv_inner(&mut self, len: usize, timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        let deadline = blocking::deadline(timeout);
        if len == 0 {
            if !self.unread.is_empty() {
                return Ok(std::mem::take(&mut self.unread));
            }
            let mut buf = [0u8; RECV_ANY];
            let n = blocking::read(self, &mut buf, deadline).map_err(recv_error)?;
            return Ok(buf[..n].to_vec());
        }
        let mut out = std::mem::take(&mut self.unread);
        if out.len() >= len {
            self.unread = out.split_off(len);
            return Ok(out);
        }
        match blocking::read_to_len(self, &mut out, len, deadline) {
            Ok(()) => Ok(out),
            Err(stop) => {
                // Keep what arrived so that no byte is lost.
                self.unread = out;
                Err(recv_error(stop))
            }
        }
    }

    /// Copies buffered bytes into `buf`, returning how many.
    fn take_unread(&mut self, buf: &mut [u8]) -> usize {
        let n = self.unread.len().min(buf.len());
        buf[..n].copy_from_slice(&self.unread[..n]);
        self.unread.drain(..n);
        n
    }

    /// Sends all of `data`, waiting up to the send timeout. On timeout it
    /// fails with [`Error::Timeout`]`(`[`Timeout::Send`]`)`, which holds
    /// the bytes not sent, and the connection is closed (unless
    /// `send_timeout_close` is off, see
    /// [`set_send_timeout_close`](Socket::set_send_timeout_close)).
    ///
    /// ```
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.send(b"+OK\r\n")?;
    /// # Ok(()) }
    /// ```
    pub fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        self.send_vectored(&mut [IoSlice::new(data)])
    }

    /// UDP: sends `datagram` to any address, from the server's socket (a
    /// reply to a third party, say), waiting for room as long as the send
    /// timeout allows, with [`send`](Socket::send)'s timeout rule. On a
    /// stream socket this fails.
    ///
    /// ```no_run
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// socket.send_to(b"notice", "127.0.0.1:9999".parse().unwrap())?;
    /// # Ok(()) }
    /// ```
    pub fn send_to(&mut self, datagram: &[u8], addr: std::net::SocketAddr) -> Result<(), Error> {
        let to = socket2::SockAddr::from(addr);
        let deadline = blocking::deadline(self.send_timeout);
        let sent = blocking::retry(self, Wait::Write, deadline, |socket| {
            let stream = socket.stream.as_ref().ok_or_else(closed_io)?;
            stream.io().sock().send_to(datagram, &to)
        });
        match sent {
            Ok(n) => {
                self.count_sent(n);
                let data = [IoSlice::new(datagram)];
                self.emit(|| Kind::Send { data: &data });
                Ok(())
            }
            Err(stop) => {
                let unsent = match stop {
                    Stop::Deadline => datagram.to_vec(),
                    _ => Vec::new(),
                };
                Err(self.send_error(SendStop {
                    stop,
                    sent: 0,
                    unsent,
                }))
            }
        }
    }

    /// Sends all of the slices, in order, with as few system calls as the
    /// kernel allows, without joining them first. Same timeout rule as
    /// [`send`](Socket::send).
    ///
    /// ```no_run
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// use std::io::IoSlice;
    /// socket.send_vectored(&mut [IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n"), IoSlice::new(b"hi")])?;
    /// # Ok(()) }
    /// ```
    pub fn send_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> Result<(), Error> {
        // The slices are advanced as they go out: keep them for the event,
        // only when a sink wants it.
        let wanted = Telemetry::wants(Interest::SEND.union(Interest::SEND_ERROR));
        let data: Option<Vec<IoSlice<'_>>> = (self.span.is_some() && wanted).then(|| bufs.to_vec());
        let deadline = blocking::deadline(self.send_timeout);
        let result = match blocking::write_all(self, bufs, deadline) {
            Ok(_) => Ok(()),
            Err(stop) => Err(self.send_error(stop)),
        };
        if let Some(data) = &data {
            match &result {
                Ok(()) => self.emit(|| Kind::Send { data }),
                Err(error) => self.emit(|| Kind::SendError { data, error }),
            }
        }
        result
    }

    pub(super) fn count_sent(&mut self, n: usize) {
        self.stats.send_bytes += n as u64;
        self.stats.send_count += 1;
    }

    /// The error of a send that stopped. At the send timeout the socket
    /// closes, unless `send_timeout_close` is off: the peer that stopped
    /// reading is then the handler's to deal with.
    fn send_error(&mut self, stop: SendStop) -> Error {
        match stop.stop {
            Stop::Closed => Error::Closed,
            Stop::Io(e) => io_error(e),
            Stop::Deadline => {
                let kind = Timeout::Send {
                    sent: stop.sent,
                    unsent: stop.unsent,
                };
                if self.send_timeout_close {
                    self.fatal = Some(Error::Timeout(kind.clone()));
                    self.close();
                }
                Error::Timeout(kind)
            }
        }
    }

    /// Sends `len` bytes of `file` from `offset` with `sendfile(2)`, without
    /// copying through user space; `len == 0` sends to the end of the file.
    /// Returns the number of bytes sent. Same timeout rule as
    /// [`send`](Socket::send); a timeout's [`Timeout::Send`] counts the
    /// file's bytes sent. `sendfile(2)` raises `SIGPIPE` when the peer
    /// has gone; Rust programs ignore that signal from `main` on, but a
    /// program that restores it must expect it here.
    ///
    /// ```no_run
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let file = std::fs::File::open("index.html")?;
    /// let sent = socket.sendfile(&file, 0, 0)?;
    /// # Ok(()) }
    /// ```
    pub fn sendfile(&mut self, file: &File, offset: u64, len: u64) -> Result<u64, Error> {
        self.sendfile_traced(None, file, offset, len)
    }

    /// [`sendfile`](Socket::sendfile) of the file at `path` (Thousand
    /// Island's `sendfile` by file name): opens it, sends `len` bytes from
    /// `offset` (`0`: to the end) and closes it. The telemetry events carry
    /// the name as given. A file that cannot be opened fails with
    /// [`Error::Io`] and a `sendfile_error` event.
    ///
    /// ```no_run
    /// # fn demo(socket: &mut atoll::Socket) -> Result<(), atoll::Error> {
    /// let sent = socket.sendfile_path("static/index.html", 0, 0)?;
    /// # Ok(()) }
    /// ```
    pub fn sendfile_path(
        &mut self,
        path: impl AsRef<Path>,
        offset: u64,
        len: u64,
    ) -> Result<u64, Error> {
        let path = path.as_ref();
        match File::open(path) {
            Ok(file) => self.sendfile_traced(Some(path), &file, offset, len),
            Err(e) => {
                let error = Error::Io(e);
                self.emit(|| Kind::SendfileError {
                    path: Some(path),
                    file: None,
                    offset,
                    length: len,
                    error: &error,
                });
                Err(error)
            }
        }
    }

    fn sendfile_traced(
        &mut self,
        path: Option<&Path>,
        file: &File,
        offset: u64,
        len: u64,
    ) -> Result<u64, Error> {
        let result = self.sendfile_inner(file, offset, len);
        match &result {
            Ok(bytes_written) => self.emit(|| Kind::Sendfile {
                path,
                file,
                offset,
                bytes_written: *bytes_written,
            }),
            Err(error) => self.emit(|| Kind::SendfileError {
                path,
                file: Some(file),
                offset,
                length: len,
                error,
            }),
        }
        result
    }

    fn sendfile_inner(&mut self, file: &File, offset: u64, len: u64) -> Result<u64, Error> {
        let end = if len == 0 {
            file.metadata()?.len()
        } else {
            offset.saturating_add(len)
        };
        let splice = self.stream.as_ref().ok_or(Error::Closed)?.splice_fd();
        let Some(out_fd) = splice else {
            return self.sendfile_by_chunks(file, offset, end);
        };
        let deadline = blocking::deadline(self.send_timeout);
        let mut pos = offset;
        while pos < end {
            let chunk = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let sent = blocking::retry(self, Wait::Write, deadline, |_| {
                sys::sendfile(out_fd, file.as_raw_fd(), &mut pos, chunk)
            });
            match sent {
                Ok(0) => break, // the file is shorter than asked
                Ok(n) => self.count_sent(n),
                Err(stop) => {
                    return Err(self.send_error(SendStop {
                        stop,
                        sent: pos - offset,
                        unsent: Vec::new(),
                    }))
                }
            }
        }
        Ok(pos - offset)
    }

    /// `sendfile` for streams that transform bytes: read and send in
    /// bounded chunks, never the whole file in memory. Each chunk has the
    /// whole send timeout, as a `send` would.
    fn sendfile_by_chunks(&mut self, file: &File, offset: u64, end: u64) -> Result<u64, Error> {
        let mut buf = vec![0u8; end.saturating_sub(offset).min(SENDFILE_CHUNK) as usize];
        let mut pos = offset;
        while pos < end {
            let want = (end - pos).min(buf.len() as u64) as usize;
            let n = match file.read_at(&mut buf[..want], pos) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            };
            let deadline = blocking::deadline(self.send_timeout);
            if let Err(stop) = blocking::write_all(self, &mut [IoSlice::new(&buf[..n])], deadline) {
                // The rest is in the file: the error counts the file's
                // bytes sent, not the chunk's.
                return Err(self.send_error(SendStop {
                    stop: stop.stop,
                    sent: pos - offset + stop.sent,
                    unsent: Vec::new(),
                }));
            }
            pos += n as u64;
        }
        Ok(pos - offset)
    }

    /// Closes without a TCP reset: shuts down the write side (the peer
    /// reads end of stream after everything already sent), then reads and
    /// discards what the peer still sends until it closes or `timeout`
    /// passes, then closes. Closing with unread bytes would send a reset
    /// instead, which can destroy replies still in flight to the peer: use
    /// it where a server ends a connection the peer may still be writing
    /// to, as at a stop (in [`Handler::handle_shutdown`](crate::Handler::handle_shutdown))
    /// or after an error reply. [`Error::Timeout`]`(`[`Timeout::Recv`]`)`
    /// if the peer kept the connection open; the socket is closed either
    /// way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use atoll::{Handler, Socket};
    ///
    /// struct Graceful;
    ///
    /// impl Handler for Graceful {
    ///     fn handle_shutdown(&mut self, socket: &mut Socket) {
    ///         let _ = socket.close_gracefully(Duration::from_secs(2));
    ///     }
    /// }
    /// ```
    pub fn close_gracefully(&mut self, timeout: Duration) -> Result<(), Error> {
        let result = self.shutdown(Shutdown::Write).and_then(|()| {
            let deadline = blocking::deadline(Some(timeout));
            let mut junk = [0u8; 4096];
            self.unread.clear();
            loop {
                match blocking::read(self, &mut junk, deadline).map_err(recv_error) {
                    Ok(_) => {}
                    Err(Error::Closed) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        });
        self.close();
        match result {
            // The peer's reset ends it as well as its close.
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            other => other,
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.unread.is_empty() {
            return Ok(self.take_unread(buf));
        }
        let deadline = blocking::deadline(self.read_timeout);
        match blocking::read(self, buf, deadline).map_err(recv_error) {
            Ok(n) => {
                self.emit(|| Kind::Recv { data: &buf[..n] });
                Ok(n)
            }
            Err(Error::Closed) => Ok(0),
            Err(error) => {
                self.emit(|| Kind::RecvError { error: &error });
                Err(error.into())
            }
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let deadline = blocking::deadline(self.send_timeout);
        blocking::write(self, bufs, deadline).map_err(|stop| self.send_error(stop).into())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Ok(self.send(buf)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        let deadline = blocking::deadline(self.send_timeout);
        blocking::flush(self, deadline).map_err(|stop| self.send_error(stop).into())
    }
}

/// The error of a read that stopped.
fn recv_error(stop: Stop) -> Error {
    match stop {
        Stop::Closed => Error::Closed,
        Stop::Deadline => Error::Timeout(Timeout::Recv),
        Stop::Io(e) => io_error(e),
    }
}

/// The error of a call on a closed socket, as `io::Error`.
pub(super) fn closed_io() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, Error::Closed)
}

/// Maps a socket error: a peer that went away is [`Error::Closed`].
pub(super) fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected => Error::Closed,
        _ => Error::from_io(e),
    }
}
