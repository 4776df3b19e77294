//! The few system calls std and mio do not wrap: `poll(2)` on one descriptor
//! (to block a worker on a non-blocking socket with a timeout),
//! `sendfile(2)`, `SO_PEERCRED`, `MSG_PEEK`, and descriptors passed with
//! `SCM_RIGHTS` or inherited from systemd. Every `unsafe` block of the crate lives
//! here, except the client's `getaddrinfo` (in `client/resolve.rs`, which
//! needs std's lookup's missing distinction between "no such name" and "try
//! again") and the client connection's `AsFd` (whose descriptor sits behind
//! a lock a borrow cannot outlive).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Instant;

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
/// Waits until `fd` is readable or `wake` is: `Ok(false)` when `deadline`
/// passed first. For waits another thread must be able to cut short.
pub(crate) fn wait_read_or_wake(
    fd: RawFd,
    wake: RawFd,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    loop {
        let mut pfds = [fd, wake].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `pfds` is an array of valid, initialised pollfds that
        // lives across the call, and we pass its exact length.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), 2, poll_timeout_ms(deadline)) };
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

pub(crate) fn wait_fd(fd: RawFd, what: Wait, deadline: Option<Instant>) -> io::Result<bool> {
    let events = match what {
        Wait::Read => libc::POLLIN,
        Wait::Write => libc::POLLOUT,
    };
    loop {
        let timeout_ms: libc::c_int = match deadline {
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
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid, initialised pollfd that lives across the
        // call, and we pass a count of exactly one.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
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

/// Control-message room for [`MAX_FDS`] descriptors, aligned as
/// `cmsghdr` needs.
fn cmsg_buffer() -> Vec<u64> {
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    vec![0u64; (space as usize).div_ceil(8)]
}

/// Sends `fds` over the Unix stream socket `sock` in one `SCM_RIGHTS`
/// message, with a one-byte payload.
pub(crate) fn send_fds(sock: RawFd, fds: &[RawFd]) -> io::Result<()> {
    if fds.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("between 1 and {MAX_FDS} descriptors per message"),
        ));
    }
    let payload = [1u8];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let data_len = std::mem::size_of_val(fds);
    let mut control = cmsg_buffer();
    // SAFETY: a zeroed msghdr is a valid empty message; every pointer set
    // below points into `iov` and `control`, which outlive the sendmsg call.
    // CMSG_FIRSTHDR is non-null because `control` has room for a header,
    // and CMSG_SPACE(data_len) <= its size since data_len is at most that
    // of MAX_FDS descriptors; the descriptors are copied unaligned into
    // CMSG_DATA, inside that space.
    let rc = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(data_len as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), data_len);
        loop {
            let rc = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if rc >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break rc;
            }
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one message of [`send_fds`] from the Unix stream socket
/// `sock`: the descriptors, close-on-exec.
pub(crate) fn recv_fds(sock: RawFd) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    let mut payload = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut control = cmsg_buffer();
    let control_len = control.len() * 8;
    // SAFETY: a zeroed msghdr is a valid empty message; its pointers point
    // into `iov` and `control`, which outlive the call, with their sizes.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_len as _;
    let rc = loop {
        // SAFETY: `msg` describes live buffers of the stated sizes.
        let rc = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if rc >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break rc;
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg`'s control buffer with well-formed
    // headers; CMSG_FIRSTHDR/CMSG_NXTHDR walk them within msg_controllen.
    // Each SCM_RIGHTS header carries (cmsg_len - CMSG_LEN(0)) / 4 new
    // descriptors that this process now owns; they are read unaligned and
    // owned exactly once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data_len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg);
                for i in 0..data_len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(std::os::fd::OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "descriptors were lost: the message was truncated",
        ));
    }
    if rc == 0 && fds.is_empty() {
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
pub(crate) fn take_inherited(raw: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only reads the descriptor's flags; an unopened
    // descriptor fails with EBADF.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open, and the protocol that passed it
    // (LISTEN_FDS) makes this process its owner; the caller takes each
    // number once (a process-wide flag guards against a second call).
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
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
    let stat = std::fs::read(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may
    // itself hold a ')'.
    let end = stat.iter().rposition(|&b| b == b')')?;
    let state = *stat.get(end + 2)?;
    Some(matches!(state, b'S' | b'D'))
}
