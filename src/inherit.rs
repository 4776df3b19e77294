//! Listening on sockets someone else made: systemd's socket activation, a
//! parent process, or a predecessor handing its listeners over during a
//! deploy. Hands descriptors over; never starts a server itself.
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
//!   whole handover; [`docs/DEPLOYMENT.md`](https://github.com/atoll-rs/atoll/blob/main/docs/DEPLOYMENT.md) the setups that were tested.
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

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
#[non_exhaustive]
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
/// socket-activated. The descriptors are taken once: a second call is an
/// error.
///
/// The variables stay in the environment: removing them while another
/// thread may read the environment is undefined behaviour, and a child
/// that inherits them ignores them anyway, since `LISTEN_PID` is not its
/// own process id. [`systemd_unset_env`] removes them where that is
/// known to be safe.
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

/// Removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the
/// environment, as `sd_listen_fds(1)` does when asked to, for a program
/// that wants no trace of them (before it runs a child that might reuse
/// its process id, say).
///
/// # Safety
///
/// No other thread may read or write the environment meanwhile (not even
/// through `getenv` in a C library, DNS resolution, or time zone code):
/// call it at the start of `main`, before any thread, atoll's included, is
/// started. This is `std::env::remove_var`'s own condition.
///
/// ```
/// // Single-threaded here: nothing else reads the environment.
/// unsafe { atoll::inherit::systemd_unset_env() };
/// assert!(std::env::var_os("LISTEN_FDS").is_none());
/// ```
pub unsafe fn systemd_unset_env() {
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
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
    let fds: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    sys::send_fds(stream.as_fd(), &fds)
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
    sys::recv_fds(stream.as_fd())
}

/// The byte a successor sends once it serves the sockets it was given.
const READY: u8 = b'R';

/// The running server's side of a zero-downtime handover: a Unix control
/// socket on which its successor asks for the listening sockets.
/// `examples/handover.rs` shows the whole sequence with [`take_over`].
///
/// ```
/// use std::time::Duration;
/// use atoll::inherit::{self, HandoverPoint};
/// use atoll::{Handler, Server};
/// # struct Echo;
/// # impl Handler for Echo {}
///
/// let control = std::env::temp_dir().join(format!("doc-handover-{}.sock", std::process::id()));
/// let old = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(Echo))?;
/// let addr = old.local_addr()?;
/// let mut point = HandoverPoint::bind(&control)?;
/// let fds = old.listener_fds()?;
/// let waiting = std::thread::spawn(move || point.hand_over(&fds, Duration::from_secs(5)));
///
/// // The successor (another process, in real life):
/// let mut taken = inherit::take_over(&control, Duration::from_secs(5))?.expect("a predecessor answers");
/// let new = Server::builder().listen_fd(taken.fds.remove(0)).start(|_| Ok(Echo))?;
/// let next_point = taken.ready()?; // for the next successor
///
/// waiting.join().unwrap()?; // the successor serves: stop the old server
/// old.stop(Duration::from_secs(5));
/// assert_eq!(new.local_addr()?, addr);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct HandoverPoint {
    listener: UnixListener,
    path: PathBuf,
    /// Whether the file at `path` is this point's (until a successor
    /// replaced it).
    owned: bool,
}

impl HandoverPoint {
    /// Binds the control socket at `path`. A socket file that nobody
    /// answers on (left by a process that is gone) is replaced; any other
    /// file, or a process that answers, is an error.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("doc-point-{}.sock", std::process::id()));
    /// let point = atoll::inherit::HandoverPoint::bind(&path)?;
    /// assert_eq!(point.path(), path);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind(path: impl Into<PathBuf>) -> io::Result<HandoverPoint> {
        let path = path.into();
        let listener = bind_control(&path)?;
        Ok(HandoverPoint {
            listener,
            path,
            owned: true,
        })
    }

    /// The control socket's path.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("doc-path-{}.sock", std::process::id()));
    /// # let point = atoll::inherit::HandoverPoint::bind(&path)?;
    /// println!("successors connect to {}", point.path().display());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a successor, gives it `fds` (typically
    /// [`Server::listener_fds`](crate::Server::listener_fds)) and waits up
    /// to `timeout` for it to say it serves them.
    ///
    /// `Ok`: the successor serves the sockets; stop this server now (it
    /// drains its own connections). The control path is the successor's
    /// from then on, and this point is spent. `Err`: the handover failed
    /// (the successor went away or never said it was ready): this server
    /// still serves; call again for the next successor (one that is
    /// already waiting is not lost).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn demo(server: &atoll::Server, point: &mut atoll::inherit::HandoverPoint) -> std::io::Result<()> {
    /// loop {
    ///     let fds = server.listener_fds().map_err(std::io::Error::other)?;
    ///     match point.hand_over(&fds, Duration::from_secs(10)) {
    ///         Ok(()) => break,
    ///         Err(e) => eprintln!("handover failed ({e}): still serving"),
    ///     }
    /// }
    /// server.stop(Duration::from_secs(15));
    /// # Ok(()) }
    /// ```
    pub fn hand_over<F: AsFd>(&mut self, fds: &[F], timeout: Duration) -> io::Result<()> {
        let (stream, _) = self.listener.accept()?;
        offer(&stream, fds, timeout)?;
        // The successor replaces the file with its own control socket.
        self.owned = false;
        Ok(())
    }
}

impl Drop for HandoverPoint {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Sends `fds` to the successor on `stream` and waits for its ready byte.
fn offer<F: AsFd>(stream: &UnixStream, fds: &[F], timeout: Duration) -> io::Result<()> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    send(stream, fds)?;
    let mut ready = [0u8; 1];
    match (&*stream).read(&mut ready) {
        Ok(1) if ready == [READY] => Ok(()),
        Ok(0) => Err(io::Error::other("the successor went away")),
        Ok(_) => Err(io::Error::other("the successor sent something else")),
        Err(e) => Err(e),
    }
}

/// The successor's side of a handover: the listening sockets received
/// from the running server, which waits for [`ready`](Takeover::ready).
#[derive(Debug)]
pub struct Takeover {
    /// The sockets, to serve with
    /// [`Builder::listen_fd`](crate::Builder::listen_fd).
    pub fds: Vec<OwnedFd>,
    stream: UnixStream,
    path: PathBuf,
}

impl Takeover {
    /// Tells the predecessor this process serves the sockets (it stops
    /// then), and takes the control path over: the returned point is
    /// where the next successor asks. Call it once the server is started
    /// on the sockets. If the predecessor is gone, the error says so; this
    /// process serves the sockets anyway, and binds its point with
    /// [`HandoverPoint::bind`].
    ///
    /// ```no_run
    /// # fn demo(mut taken: atoll::inherit::Takeover) -> Result<(), Box<dyn std::error::Error>> {
    /// # struct Echo;
    /// # impl atoll::Handler for Echo {}
    /// let server = atoll::Server::builder().listen_fd(taken.fds.remove(0)).start(|_| Ok(Echo))?;
    /// let point = taken.ready()?;
    /// # Ok(()) }
    /// ```
    pub fn ready(self) -> io::Result<HandoverPoint> {
        (&self.stream).write_all(&[READY])?;
        // The predecessor's socket stays bound until it has read the byte:
        // replace its file rather than asking who answers there.
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(HandoverPoint {
            listener: UnixListener::bind(&self.path)?,
            path: self.path,
            owned: true,
        })
    }
}

/// Asks the server answering on the control socket at `path` (a
/// [`HandoverPoint`]) for its listening sockets, waiting up to `timeout`.
/// `None` when nobody answers there (no file, or one left by a process
/// that is gone): this process is the first, and binds its own.
///
/// ```
/// let path = std::env::temp_dir().join(format!("doc-nobody-{}.sock", std::process::id()));
/// let taken = atoll::inherit::take_over(&path, std::time::Duration::from_secs(1))?;
/// assert!(taken.is_none());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn take_over(path: impl AsRef<Path>, timeout: Duration) -> io::Result<Option<Takeover>> {
    let path = path.as_ref();
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e) if is_nobody(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let fds = receive(&stream)?;
    Ok(Some(Takeover {
        fds,
        stream,
        path: path.to_path_buf(),
    }))
}

/// Whether a failed connect means nobody serves the control path: no file,
/// or a socket file left by a process that is gone.
fn is_nobody(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

/// Binds the control socket at `path`, replacing a socket file nobody
/// answers on (never another kind of file).
fn bind_control(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another process answers on {}", path.display()),
                    ))
                }
                Err(e) if is_nobody(&e) => {}
                Err(e) => return Err(e),
            }
            if std::fs::symlink_metadata(path)?.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
            UnixListener::bind(path)
        }
        other => other,
    }
}
