//! Blocking reads and writes with a deadline over a non-blocking socket,
//! shared by the server's `Socket` and the client's `Client`: it owns
//! the try, wait, retry loop and never touches either side's types or
//! errors (it imports only `sys`).
//!
//! A side implements [`NonBlocking`] (one attempt of each call, and a wait
//! for readiness) and maps a [`Stop`] to its own error type, choosing the
//! [`Timeout`](crate::Timeout) kind where the deadline passed.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use crate::sys::Wait;

/// Bytes one read asks the kernel for, where a read has no size of its own.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// The instant `timeout` from now: `None` for no timeout, and for one too
/// far away to be told from none.
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// A non-blocking socket, as the loops below drive it.
pub(crate) trait NonBlocking {
    /// One read: `Ok(0)` is the end of the stream, `WouldBlock` nothing yet.
    fn read_once(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// One write of some of `bufs`; `WouldBlock` when there is no room.
    fn write_once(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Pushes out what the stream holds itself (a TLS record);
    /// `WouldBlock` when there is no room. Nothing to do by default.
    fn flush_once(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Waits until the socket is ready for `what`; `Ok(false)` when
    /// `deadline` passed first.
    fn wait(&mut self, what: Wait, deadline: Option<Instant>) -> io::Result<bool>;
}

/// Why a blocking call stopped without its result.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The stream ended: a read of zero bytes, a write that took none.
    Closed,
    /// The deadline passed first.
    Deadline,
    /// A system call failed (never `WouldBlock` nor `Interrupted`: those
    /// are waited for and retried here).
    Io(io::Error),
}

/// A send that stopped part way.
#[derive(Debug)]
pub(crate) struct SendStop {
    pub(crate) stop: Stop,
    /// Bytes the stream took before it stopped.
    pub(crate) sent: u64,
    /// The bytes not taken, in order; gathered only for
    /// [`Stop::Deadline`], the one stop after which a caller may send
    /// them again.
    pub(crate) unsent: Vec<u8>,
}

/// Runs `op` until it does something other than `WouldBlock`, waiting for
/// `what` in between, until `deadline`; `Interrupted` is retried.
pub(crate) fn retry<S, T>(
    socket: &mut S,
    what: Wait,
    deadline: Option<Instant>,
    mut op: impl FnMut(&mut S) -> io::Result<T>,
) -> Result<T, Stop>
where
    S: NonBlocking + ?Sized,
{
    loop {
        match op(socket) {
            Ok(value) => return Ok(value),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => match socket.wait(what, deadline) {
                Ok(true) => {}
                Ok(false) => return Err(Stop::Deadline),
                Err(e) => return Err(Stop::Io(e)),
            },
            Err(e) => return Err(Stop::Io(e)),
        }
    }
}

/// Reads at least one byte into `buf` (which must not be empty), waiting
/// until `deadline`.
pub(crate) fn read<S: NonBlocking + ?Sized>(
    socket: &mut S,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<usize, Stop> {
    match retry(socket, Wait::Read, deadline, |s| s.read_once(buf))? {
        0 => Err(Stop::Closed),
        n => Ok(n),
    }
}

/// Reads until `out` holds `len` bytes, waiting until `deadline`. `out`
/// grows as bytes arrive, doubling from one read chunk, so a length the
/// peer chose costs memory only when the peer really sends that much.
/// On a stop `out` holds every byte it had and every byte read, so that
/// none is lost.
pub(crate) fn read_to_len<S: NonBlocking + ?Sized>(
    socket: &mut S,
    out: &mut Vec<u8>,
    len: usize,
    deadline: Option<Instant>,
) -> Result<(), Stop> {
    while out.len() < len {
        let filled = out.len();
        let grow = (len - filled).min(filled.max(READ_CHUNK));
        out.resize(filled + grow, 0);
        match read(socket, &mut out[filled..], deadline) {
            Ok(n) => out.truncate(filled + n),
            Err(stop) => {
                out.truncate(filled);
                return Err(stop);
            }
        }
    }
    Ok(())
}

impl SendStop {
    /// A stop after `sent` bytes, `rest` not taken. The rest is copied
    /// only at the deadline, the one stop after which it may be sent
    /// again: the caller's slices are borrowed and the error outlives them.
    fn new(stop: Stop, sent: u64, rest: &[IoSlice<'_>]) -> SendStop {
        let unsent = match stop {
            Stop::Deadline => gather(rest),
            Stop::Closed | Stop::Io(_) => Vec::new(),
        };
        SendStop { stop, sent, unsent }
    }
}

/// One write of at least one byte of `bufs` (not all empty), waiting until
/// `deadline`.
fn write_some<S: NonBlocking + ?Sized>(
    socket: &mut S,
    bufs: &[IoSlice<'_>],
    deadline: Option<Instant>,
) -> Result<usize, Stop> {
    match retry(socket, Wait::Write, deadline, |s| s.write_once(bufs))? {
        0 => Err(Stop::Closed),
        n => Ok(n),
    }
}

/// One write as `Write::write_vectored` makes it: `Ok(0)` for slices that
/// are all empty, else at least one byte, waiting until `deadline`.
pub(crate) fn write<S: NonBlocking + ?Sized>(
    socket: &mut S,
    bufs: &[IoSlice<'_>],
    deadline: Option<Instant>,
) -> Result<usize, SendStop> {
    if bufs.iter().all(|b| b.is_empty()) {
        return Ok(0);
    }
    write_some(socket, bufs, deadline).map_err(|stop| SendStop::new(stop, 0, bufs))
}

/// Waits until the stream has pushed out what it holds.
pub(crate) fn flush<S: NonBlocking + ?Sized>(
    socket: &mut S,
    deadline: Option<Instant>,
) -> Result<(), SendStop> {
    retry(socket, Wait::Write, deadline, |s| s.flush_once())
        .map_err(|stop| SendStop::new(stop, 0, &[]))
}

/// Writes all of `bufs`, in order, then flushes, waiting until `deadline`.
/// Returns the number of bytes sent; the slices are advanced as they go
/// out.
pub(crate) fn write_all<S: NonBlocking + ?Sized>(
    socket: &mut S,
    mut bufs: &mut [IoSlice<'_>],
    deadline: Option<Instant>,
) -> Result<u64, SendStop> {
    IoSlice::advance_slices(&mut bufs, 0);
    let mut sent = 0u64;
    while !bufs.is_empty() {
        match write_some(socket, bufs, deadline) {
            Ok(n) => {
                sent += n as u64;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(stop) => return Err(SendStop::new(stop, sent, bufs)),
        }
    }
    flush(socket, deadline).map_err(|stop| SendStop { sent, ..stop })?;
    Ok(sent)
}

/// The bytes of `bufs`, in one buffer.
fn gather(bufs: &[IoSlice<'_>]) -> Vec<u8> {
    bufs.iter().flat_map(|b| b.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted socket: each call takes the next step.
    #[derive(Default)]
    struct Script {
        reads: VecDeque<io::Result<Vec<u8>>>,
        writes: VecDeque<io::Result<usize>>,
        /// What each wait answers; an empty script is a deadline.
        waits: VecDeque<bool>,
        written: Vec<u8>,
    }

    impl NonBlocking for Script {
        fn read_once(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front() {
                Some(Ok(data)) => {
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    Ok(n)
                }
                Some(Err(e)) => Err(e),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }

        fn write_once(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let n = self
                .writes
                .pop_front()
                .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))?;
            let all = gather(bufs);
            let n = n.min(all.len());
            self.written.extend_from_slice(&all[..n]);
            Ok(n)
        }

        fn wait(&mut self, _what: Wait, _deadline: Option<Instant>) -> io::Result<bool> {
            Ok(self.waits.pop_front().unwrap_or(false))
        }
    }

    #[test]
    fn a_read_waits_then_retries_and_an_interrupted_call_is_retried() {
        let mut s = Script::default();
        s.reads.push_back(Err(io::ErrorKind::WouldBlock.into()));
        s.reads.push_back(Err(io::ErrorKind::Interrupted.into()));
        s.reads.push_back(Ok(b"abc".to_vec()));
        s.waits.push_back(true);
        let mut buf = [0u8; 8];
        assert_eq!(read(&mut s, &mut buf, None).ok(), Some(3));
        assert_eq!(&buf[..3], b"abc");
    }

    #[test]
    fn a_read_stops_at_the_deadline_and_at_the_end_of_the_stream() {
        let mut s = Script::default();
        let mut buf = [0u8; 8];
        assert!(matches!(read(&mut s, &mut buf, None), Err(Stop::Deadline)));
        s.reads.push_back(Ok(Vec::new()));
        assert!(matches!(read(&mut s, &mut buf, None), Err(Stop::Closed)));
        s.reads
            .push_back(Err(io::ErrorKind::ConnectionReset.into()));
        assert!(matches!(
            read(&mut s, &mut buf, None),
            Err(Stop::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset
        ));
    }

    #[test]
    fn read_to_len_keeps_what_it_had_and_what_came_when_it_stops() {
        let mut s = Script::default();
        s.reads.push_back(Ok(b"cd".to_vec()));
        let mut out = b"ab".to_vec();
        assert!(matches!(
            read_to_len(&mut s, &mut out, 10, None),
            Err(Stop::Deadline)
        ));
        assert_eq!(out, b"abcd");
        s.reads.push_back(Ok(b"efghijklmn".to_vec()));
        assert!(read_to_len(&mut s, &mut out, 10, None).is_ok());
        assert_eq!(out, b"abcdefghij");
    }

    #[test]
    fn write_all_reports_what_went_out_and_the_rest_at_the_deadline() {
        let mut s = Script::default();
        s.writes.push_back(Ok(3));
        let mut bufs = [IoSlice::new(b"hello"), IoSlice::new(b" world")];
        let stop = write_all(&mut s, &mut bufs, None).err();
        let Some(SendStop {
            stop: Stop::Deadline,
            sent,
            unsent,
        }) = stop
        else {
            panic!("expected a deadline, got {stop:?}");
        };
        assert_eq!(sent, 3);
        assert_eq!(unsent, b"lo world");
        assert_eq!(s.written, b"hel");
    }

    #[test]
    fn write_all_sends_every_slice_in_order() {
        let mut s = Script::default();
        s.writes
            .extend([Ok(2), Err(io::ErrorKind::WouldBlock.into()), Ok(100)]);
        s.waits.push_back(true);
        let mut bufs = [IoSlice::new(b"hello"), IoSlice::new(b" world")];
        assert_eq!(write_all(&mut s, &mut bufs, None).ok(), Some(11));
        assert_eq!(s.written, b"hello world");
    }

    #[test]
    fn a_write_that_takes_nothing_is_the_end_of_the_stream() {
        let mut s = Script::default();
        s.writes.push_back(Ok(0));
        let stop = write_all(&mut s, &mut [IoSlice::new(b"x")], None).err();
        assert!(matches!(
            stop,
            Some(SendStop { stop: Stop::Closed, sent: 0, ref unsent }) if unsent.is_empty()
        ));
    }
}
