//! [`Io`]: an accepted, non-blocking socket. Never touches a connection's
//! scheduling.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Weak};

use super::Addr;
use crate::sys;

/// The most slices one `sendmsg(2)` takes on Linux (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// An accepted socket (TCP or Unix), non-blocking: what a
/// [`Transport`](super::Transport) builds its [`Stream`](super::Stream) on.
///
/// Reads and writes return `WouldBlock` instead of waiting; `Read` and
/// `Write` are implemented for `&Io` too, so a TLS library can own one
/// while the stream keeps another reference.
///
/// ```no_run
/// # fn demo(io: &atoll::transport::Io) -> std::io::Result<()> {
/// use std::io::Read;
/// let mut buf = [0u8; 1024];
/// match (&*io).read(&mut buf) {
///     Ok(n) => println!("{n} bytes from {}", io.peer_addr()?),
///     Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => println!("nothing yet"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Io {
    sock: Arc<socket2::Socket>,
}

/// The process that opened the other end of a Unix socket (`SO_PEERCRED`).
///
/// ```
/// let me = atoll::transport::Credentials { pid: std::process::id() as i32, uid: 0, gid: 0 };
/// assert!(me.pid > 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Io {
    pub(crate) fn new(sock: socket2::Socket) -> Io {
        Io {
            sock: Arc::new(sock),
        }
    }

    /// A reference that does not keep the socket open, to shut it down from
    /// another thread at a forced stop.
    pub(crate) fn weak(&self) -> Weak<socket2::Socket> {
        Arc::downgrade(&self.sock)
    }

    pub(crate) fn sock(&self) -> &socket2::Socket {
        &self.sock
    }

    /// The descriptor, for waiting on readiness.
    ///
    /// ```no_run
    /// # fn demo(io: &atoll::transport::Io) {
    /// println!("fd {}", io.raw_fd());
    /// # }
    /// ```
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The peer's address.
    ///
    /// ```no_run
    /// # fn demo(io: &atoll::transport::Io) -> std::io::Result<()> {
    /// println!("peer {}", io.peer_addr()?);
    /// # Ok(()) }
    /// ```
    pub fn peer_addr(&self) -> io::Result<Addr> {
        Ok(Addr::from_sock(&self.sock.peer_addr()?))
    }

    /// The local address.
    ///
    /// ```no_run
    /// # fn demo(io: &atoll::transport::Io) -> std::io::Result<()> {
    /// println!("local {}", io.local_addr()?);
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> io::Result<Addr> {
        Ok(Addr::from_sock(&self.sock.local_addr()?))
    }

    /// Shuts down one or both directions.
    ///
    /// ```no_run
    /// # fn demo(io: &atoll::transport::Io) -> std::io::Result<()> {
    /// io.shutdown(std::net::Shutdown::Write)?;
    /// # Ok(()) }
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.shutdown(how)
    }

    /// One non-blocking read; `Ok(0)` is the end of the stream.
    ///
    /// ```no_run
    /// # fn demo(io: &atoll::transport::Io) -> std::io::Result<()> {
    /// let mut buf = [0u8; 512];
    /// let n = io.read_some(&mut buf)?;
    /// # Ok(()) }
    /// ```
    pub fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.sock).read(buf)
    }

    /// One non-blocking write of as much of `bufs` as the socket takes.
    /// A peer that went away is an error, never `SIGPIPE`.
    ///
    /// ```no_run
    /// # fn demo(io: &atoll::transport::Io) -> std::io::Result<()> {
    /// let n = io.write_some(&[std::io::IoSlice::new(b"hello")])?;
    /// # Ok(()) }
    /// ```
    pub fn write_some(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // One slice (the common case) goes by send(2), which copies no
        // message header or vector into the kernel.
        if let [one] = bufs {
            return self.sock.send_with_flags(one, libc::MSG_NOSIGNAL);
        }
        let bufs = &bufs[..bufs.len().min(IOV_MAX)];
        self.sock.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }

    /// The process at the other end of a Unix socket.
    ///
    /// ```no_run
    /// # fn demo(io: &atoll::transport::Io) -> std::io::Result<()> {
    /// let creds = io.peer_credentials()?;
    /// println!("pid {} uid {}", creds.pid, creds.uid);
    /// # Ok(()) }
    /// ```
    pub fn peer_credentials(&self) -> io::Result<Credentials> {
        let (pid, uid, gid) = sys::peer_credentials(self.raw_fd())?;
        Ok(Credentials { pid, uid, gid })
    }
}

impl Read for &Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf)
    }
}

impl Write for &Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_some(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_some(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Io {
    fn as_raw_fd(&self) -> RawFd {
        self.raw_fd()
    }
}
