//! Listening on sockets someone else made: systemd's socket activation, a
//! parent process, or a predecessor handing its listeners over during a
//! deploy.
//!
//! - [`systemd`] takes the sockets systemd (or `systemd-socket-activate`)
//!   passed, as `sd_listen_fds(3)` defines them.
//! - [`send`] and [`receive`] pass descriptors between processes over a
//!   Unix socket (`SCM_RIGHTS`): a running server gives
//!   [`Server::listener_fds`](crate::Server::listener_fds) to its
//!   successor, which listens on them with
//!   [`Builder::listen_fd`](crate::Builder::listen_fd) before the old one
//!   stops. No connection is refused in between: the system queues them on
//!   the socket while any process holds it. `examples/handover.rs` shows a
//!   whole handover; `docs/DEPLOYMENT.md` the setups that were tested.
//!
//! # Examples
//!
//! ```
//! use std::os::unix::net::UnixStream;
//! use atoll::{inherit, Handler, Server};
//! # struct Echo;
//! # impl Handler for Echo {}
//!
//! let old = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(Echo))?;
//! let addr = old.local_addr()?;
//!
//! // The two ends would be in two processes.
//! let (to_successor, from_predecessor) = UnixStream::pair()?;
//! inherit::send(&to_successor, &old.listener_fds()?)?;
//! let mut fds = inherit::receive(&from_predecessor)?;
//! let new = Server::builder().listen_fd(fds.remove(0)).start(|_| Ok(Echo))?;
//! old.stop(std::time::Duration::from_secs(5));
//! assert_eq!(new.local_addr()?, addr);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;
use crate::sys;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// Whether [`systemd`] took the descriptors already.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// A socket passed by systemd, with its name.
///
/// ```no_run
/// # use atoll::Handler;
/// # struct Echo;
/// # impl Handler for Echo {}
/// // Serve the socket named "api" (FileDescriptorName=api), if any.
/// let api = atoll::inherit::systemd()?
///     .into_iter()
///     .find(|s| s.name.as_deref() == Some("api"));
/// if let Some(socket) = api {
///     let server = atoll::Server::builder().listen_fd(socket.fd).start(|_| Ok(Echo))?;
/// }
/// # Ok::<(), atoll::Error>(())
/// ```
#[derive(Debug)]
pub struct ListenFd {
    /// The descriptor, now owned by this process (and close-on-exec).
    pub fd: OwnedFd,
    /// Its name from `LISTEN_FDNAMES` (`FileDescriptorName=` in the unit,
    /// `--fdname` of `systemd-socket-activate`), if names were given.
    pub name: Option<String>,
}

/// The sockets systemd passed to this process, as `sd_listen_fds(3)` and
/// `sd_listen_fds_with_names(3)` define them: `LISTEN_FDS` descriptors from
/// 3 on, when `LISTEN_PID` is this process. Empty when the process was not
/// socket-activated. Removes the three variables from the environment, so
/// that children do not see them; call it early, before other threads read
/// the environment. The descriptors are taken once: a second call is an
/// error.
///
/// ```no_run
/// use atoll::{inherit, Handler, Server};
/// # struct Echo;
/// # impl Handler for Echo {}
/// let mut builder = Server::builder().port(4000);
/// if let Some(socket) = inherit::systemd()?.into_iter().next() {
///     builder = builder.listen_fd(socket.fd);
/// }
/// let server = builder.start(|_| Ok(Echo))?;
/// # Ok::<(), atoll::Error>(())
/// ```
pub fn systemd() -> Result<Vec<ListenFd>, Error> {
    let bad = |what: String| Error::Config(format!("socket activation: {what}"));
    let var = |name: &str| match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(bad(format!("{name}: {e}"))),
    };
    let Some(pid) = var("LISTEN_PID")? else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid
        .parse()
        .map_err(|_| bad(format!("LISTEN_PID={pid} is not a process id")))?;
    if pid != std::process::id() {
        return Ok(Vec::new()); // meant for another process (our parent)
    }
    let count = var("LISTEN_FDS")?.unwrap_or_default();
    let n: usize = count
        .parse()
        .map_err(|_| bad(format!("LISTEN_FDS={count} is not a count")))?;
    let names = match var("LISTEN_FDNAMES")? {
        Some(names) => {
            let names: Vec<String> = names.split(':').map(String::from).collect();
            if names.len() != n {
                return Err(bad(format!(
                    "LISTEN_FDNAMES has {} names for {n} descriptors",
                    names.len()
                )));
            }
            names.into_iter().map(Some).collect()
        }
        None => vec![None; n],
    };
    if n > 4096 {
        return Err(bad(format!("LISTEN_FDS={n} is implausibly many")));
    }
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(bad("the descriptors were taken already".into()));
    }
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let mut sockets = Vec::with_capacity(n);
    for (raw, name) in (FIRST_FD..).zip(names) {
        let fd = sys::take_inherited(raw).map_err(|e| bad(format!("descriptor {raw}: {e}")))?;
        socket2::SockRef::from(&fd)
            .set_cloexec(true)
            .map_err(|e| bad(format!("descriptor {raw}: {e}")))?;
        sockets.push(ListenFd { fd, name });
    }
    Ok(sockets)
}

/// Sends descriptors (at most 253) over a connected Unix stream socket, in
/// one message that [`receive`] reads on the other end. They stay open
/// here: the receiving process gets duplicates.
///
/// ```
/// use std::os::unix::net::UnixStream;
/// let (a, b) = UnixStream::pair()?;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// atoll::inherit::send(&a, &[listener])?;
/// let fds = atoll::inherit::receive(&b)?;
/// assert_eq!(fds.len(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn send<F: AsFd>(stream: &UnixStream, fds: &[F]) -> io::Result<()> {
    let raw: Vec<_> = fds.iter().map(|f| f.as_fd().as_raw_fd()).collect();
    sys::send_fds(stream.as_raw_fd(), &raw)
}

/// Receives the descriptors of one [`send`], blocking as `stream` does
/// (set a read timeout on it to bound the wait). They are close-on-exec.
///
/// ```
/// use std::os::unix::net::UnixStream;
/// let (a, b) = UnixStream::pair()?;
/// drop(a);
/// assert!(atoll::inherit::receive(&b).is_err()); // the sender went away
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn receive(stream: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    sys::recv_fds(stream.as_raw_fd())
}
