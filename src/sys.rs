//! The few system calls std and mio do not wrap: `poll(2)` on one descriptor
//! (to block a worker on a non-blocking socket with a timeout),
//! `sendfile(2)` and `SO_PEERCRED`. Every `unsafe` block of the crate lives
//! here, except the client's `getaddrinfo` (in `client/resolve.rs`, which
//! needs std's lookup's missing distinction between "no such name" and "try
//! again").

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

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
