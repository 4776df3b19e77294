//! The few system calls std and mio do not wrap (it knows no atoll type):
//! `poll(2)` on one descriptor (to block a thread on a non-blocking socket
//! with a timeout, or until another thread wakes it through an
//! `eventfd(2)`), an epoll of a dedicated worker's own (through rustix),
//! `sendfile(2)`, `SO_PEERCRED`, `MSG_PEEK`, and descriptors passed with
//! `SCM_RIGHTS` or inherited from systemd. Descriptor passing goes through
//! rustix, whose typed control-message buffers replace the `CMSG_*`
//! pointer arithmetic and own each received descriptor as soon as it is
//! read; it needs no `unsafe` here. Every `unsafe` block of the crate lives
//! here, except the client's `getaddrinfo` (in `client/resolve.rs`, which
//! needs std's lookup's missing distinction between "no such name" and "try
//! again") and the client connection's `AsFd` (whose descriptor sits behind
//! a lock a borrow cannot outlive).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Instant;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// A descriptor that is always open and is no socket (`/dev/null`), handed
/// out by `AsFd` for a connection whose own descriptor is closed: the
/// number it had may already name another file, which must never be
/// reached through a closed connection.
///
/// Opened once per process, at the first need. If that very first open
/// fails (the process is out of descriptors) there is no descriptor to
/// give and it panics, as an infallible `AsFd` leaves no other way.
pub(crate) fn closed_fd() -> BorrowedFd<'static> {
    static DEV_NULL: OnceLock<OwnedFd> = OnceLock::new();
    DEV_NULL
        .get_or_init(|| match std::fs::File::open("/dev/null") {
            Ok(file) => OwnedFd::from(file),
            Err(e) => {
                panic!("atoll: cannot open /dev/null for a closed connection's descriptor: {e}")
            }
        })
        .as_fd()
}

/// Readiness to wait for in [`wait_fd`].
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    Read,
    Write,
}

/// Blocks until `fd` is ready for `what` or `deadline` passes (`None`: no
/// deadline). Returns `Ok(false)` on timeout. Hang-ups and errors count as
/// ready: the next read or write reports them.
pub(crate) fn wait_fd(fd: RawFd, what: Wait, deadline: Option<Instant>) -> io::Result<bool> {
    let events = match what {
        Wait::Read => libc::POLLIN,
        Wait::Write => libc::POLLOUT,
    };
    poll_until(&mut [pollfd(fd, events)], deadline)
}

/// Waits until `fd` is readable or `wake` is: `Ok(false)` when `deadline`
/// passed first. For waits another thread must be able to cut short.
pub(crate) fn wait_read_or_wake(
    fd: RawFd,
    wake: RawFd,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let mut pfds = [pollfd(fd, libc::POLLIN), pollfd(wake, libc::POLLIN)];
    poll_until(&mut pfds, deadline)
}

/// An epoll of one thread's own, for a wait repeated many times on the
/// same socket and `eventfd`: each wait is one `epoll_wait` on a ready
/// list, where `poll(2)` would look up both descriptors and hook onto
/// their wait queues every time. Closing it (on drop) unwatches both.
pub(crate) struct ReadOrWake {
    epoll: OwnedFd,
}

const READABLE: u64 = 0;
const WOKEN: u64 = 1;

impl ReadOrWake {
    /// Watches `fd` for reading, edge-triggered (a reader reads until it
    /// would block, or is woken through `wake` for what it left), and
    /// `wake`. `fd` must be open for the call.
    pub(crate) fn new(fd: RawFd, wake: BorrowedFd<'_>) -> io::Result<Self> {
        use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
        let epoll = epoll::create(CreateFlags::CLOEXEC)?;
        // SAFETY: the caller holds `fd` open for this call, and the borrow
        // does not outlive it (epoll keeps no reference to the number).
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        let read = EventFlags::IN | EventFlags::RDHUP | EventFlags::ET;
        epoll::add(&epoll, socket, EventData::new_u64(READABLE), read)?;
        epoll::add(&epoll, wake, EventData::new_u64(WOKEN), EventFlags::IN)?;
        Ok(ReadOrWake { epoll })
    }

    /// Waits until the socket turns readable or the `eventfd` is; says
    /// which. Hang-ups and errors count as readable. No deadline: a
    /// timeout would cost a timer per wait; whoever wants the waiter back
    /// writes to the `eventfd`.
    pub(crate) fn wait(&self) -> io::Result<(bool, bool)> {
        use rustix::event::epoll::{self, Event, EventFlags};
        let mut events: [MaybeUninit<Event>; 2] = [MaybeUninit::uninit(); 2];
        loop {
            match epoll::wait(&self.epoll, &mut events, None) {
                Ok((ready, _)) => {
                    let (mut readable, mut woken) = (false, false);
                    let any =
                        EventFlags::IN | EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR;
                    for event in ready.iter() {
                        // Copied out: the kernel's struct is packed.
                        let (flags, data) = (event.flags, event.data);
                        match data.u64() {
                            READABLE => readable |= flags.intersects(any),
                            _ => woken = true,
                        }
                    }
                    return Ok((readable, woken));
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// How many times the calling thread went to sleep in the kernel
/// (voluntary context switches, `getrusage(RUSAGE_THREAD)`); 0 if unknown.
pub(crate) fn voluntary_switches() -> u64 {
    let mut usage = MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole rusage to the pointer, which points
    // to one; it is read only when the call succeeded.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    usage.ru_nvcsw as u64
}

/// A non-blocking, close-on-exec `eventfd(2)`: a counter one thread adds
/// to (`write` of 8 bytes) to wake another that polls it.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointer; a negative return is an error.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by eventfd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)` on `pfds` until one is ready (`Ok(true)`) or `deadline`
/// passes (`Ok(false)`), retrying on `EINTR`.
fn poll_until(pfds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        // SAFETY: `pfds` is a slice of valid, initialised pollfds that
        // lives across the call, and we pass its exact length.
        let rc = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                poll_timeout_ms(deadline),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if rc > 0 {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

/// The `poll` timeout until `deadline`, rounded up to a millisecond.
fn poll_timeout_ms(deadline: Option<Instant>) -> libc::c_int {
    match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                0
            } else {
                // Round up so a short wait does not become a busy loop.
                let ms = left.as_micros().div_ceil(1000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        }
    }
}

/// One `sendfile(2)` call: copies up to `count` bytes of `in_fd` from
/// `*offset` to the socket `out_fd`, advancing `*offset`.
pub(crate) fn sendfile(
    out_fd: RawFd,
    in_fd: RawFd,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    // SAFETY: both descriptors are borrowed from live owners for the whole
    // call, and `off` is a valid off_t the kernel may update.
    let rc = unsafe { libc::sendfile(out_fd, in_fd, &mut off, count) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(rc as usize)
}

/// `SO_PEERCRED` of a Unix socket: the peer's pid, uid and gid.
pub(crate) fn peer_credentials(fd: RawFd) -> io::Result<(i32, u32, u32)> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid ucred and `len` its exact size; the kernel
    // writes at most `len` bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.pid, cred.uid, cred.gid))
}

/// Copies the bytes waiting on socket `fd` into `buf` without taking them
/// (`MSG_PEEK`); does not block.
pub(crate) fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call, and the kernel writes at most that many.
    let rc = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// The most descriptors one `SCM_RIGHTS` message carries (Linux's
/// `SCM_MAX_FD`).
pub(crate) const MAX_FDS: usize = 253;

/// Control-message room for [`MAX_FDS`] descriptors. rustix's size
/// includes slack for aligning the buffer as `cmsghdr` needs, so a plain
/// byte array will do.
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// Calls `f` until it fails with something other than `EINTR`: a signal
/// that interrupts a send or receive must not cost a handover.
fn retry_eintr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}

/// Sends `fds` over the Unix stream socket `sock` in one `SCM_RIGHTS`
/// message, with a one-byte payload (a stream socket carries control data
/// only along with data).
pub(crate) fn send_fds(sock: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("between 1 and {MAX_FDS} descriptors per message"),
        ));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    // Cannot fail with at most MAX_FDS descriptors in room for MAX_FDS;
    // checked all the same rather than trusted.
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other(
            "the descriptors do not fit in one control message",
        ));
    }
    let payload = [1u8];
    retry_eintr(|| {
        rustix::net::sendmsg(
            sock,
            &[IoSlice::new(&payload)],
            &mut control,
            // A peer that went away is an error here, not a SIGPIPE.
            SendFlags::NOSIGNAL,
        )
    })?;
    Ok(())
}

/// Receives one message of [`send_fds`] from the Unix stream socket
/// `sock`: the descriptors, close-on-exec.
pub(crate) fn recv_fds(sock: BorrowedFd<'_>) -> io::Result<Vec<OwnedFd>> {
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    recv_fds_in(sock, &mut space)
}

/// [`recv_fds`] with `space` for the control data; apart from it, only
/// the tests pass a smaller one, to provoke truncation.
fn recv_fds_in(sock: BorrowedFd<'_>, space: &mut [MaybeUninit<u8>]) -> io::Result<Vec<OwnedFd>> {
    let mut payload = [0u8; 1];
    let mut control = RecvAncillaryBuffer::new(space);
    let received = retry_eintr(|| {
        rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(&mut payload)],
            &mut control,
            // Close-on-exec from the start: a child this process runs
            // meanwhile must not inherit the listeners.
            RecvFlags::CMSG_CLOEXEC,
        )
    })?;
    // Owned as soon as they are read: every early return below closes them.
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "descriptors were lost: the message was truncated",
        ));
    }
    if received.bytes == 0 && fds.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the message carried no descriptors",
        ));
    }
    Ok(fds)
}

/// Takes ownership of descriptor `raw`, inherited from the parent process
/// (systemd's socket activation), after checking that it is open.
pub(crate) fn take_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags; an unopened
    // descriptor fails with EBADF.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open, and the protocol that passed it
    // (LISTEN_FDS) makes this process its owner; the caller takes each
    // number once (a process-wide flag guards against a second call).
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The calling thread's kernel id, for [`thread_sleeping`].
pub(crate) fn thread_id() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether thread `tid` of this process is asleep (blocked in the kernel:
/// state `S` or `D` in `/proc/self/task/TID/stat`) rather than running or
/// waiting for a CPU; `None` when that cannot be read.
pub(crate) fn thread_sleeping(tid: i32) -> Option<bool> {
    use std::io::Read;
    // One read: the state comes within the first few dozen bytes, and the
    // monitor asks often enough for `fs::read`'s `statx` and growing reads
    // to show.
    let mut file = std::fs::File::open(format!("/proc/self/task/{tid}/stat")).ok()?;
    let mut buf = [0u8; 512];
    let n = file.read(&mut buf).ok()?;
    let stat = buf.get(..n)?;
    // The state follows the command name, which is in parentheses and may
    // itself hold a ')'; no field after it does.
    let end = stat.iter().rposition(|&b| b == b')')?;
    let state = *stat.get(end + 2)?;
    Some(matches!(state, b'S' | b'D'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().expect("a socket pair")
    }

    #[test]
    fn descriptors_arrive_close_on_exec() {
        let (a, b) = pair();
        let (c, d) = pair();
        send_fds(a.as_fd(), &[c.as_fd(), d.as_fd()]).unwrap();
        let fds = recv_fds(b.as_fd()).unwrap();
        assert_eq!(fds.len(), 2);
        for fd in &fds {
            let flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
    }

    #[test]
    fn counts_outside_one_message_are_refused() {
        let (a, b) = pair();
        let err = send_fds(a.as_fd(), &[]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let too_many = vec![a.as_fd(); MAX_FDS + 1];
        let err = send_fds(a.as_fd(), &too_many).unwrap_err();
        assert_eq!(err.to_string(), "between 1 and 253 descriptors per message");
        // The most one message carries do go through.
        send_fds(a.as_fd(), &vec![a.as_fd(); MAX_FDS]).unwrap();
        assert_eq!(recv_fds(b.as_fd()).unwrap().len(), MAX_FDS);
    }

    #[test]
    fn a_truncated_message_is_an_error() {
        let (a, b) = pair();
        // Room for one descriptor holds a few more (alignment slack), not
        // sixteen.
        send_fds(a.as_fd(), &[a.as_fd(); 16]).unwrap();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let err = recv_fds_in(b.as_fd(), &mut space).unwrap_err();
        assert_eq!(
            err.to_string(),
            "descriptors were lost: the message was truncated"
        );
    }

    #[test]
    fn end_of_stream_and_bare_data_are_told_apart() {
        let (mut a, b) = pair();
        a.write_all(b"x").unwrap();
        let err = recv_fds(b.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(a);
        let err = recv_fds(b.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
