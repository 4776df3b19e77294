//! Telling the service manager how the service is doing: the
//! `sd_notify(3)` readiness protocol of systemd. Sends datagrams to it;
//! never touches a server.
//!
//! A unit with `Type=notify` waits for [`ready`] before it counts the
//! service as started (and starts the units ordered after it); [`stopping`]
//! says a stop has begun; [`main_pid`] names a new main process, as a
//! successor does during a handover (the unit then needs
//! `NotifyAccess=all`, since the message comes from a process that is not
//! yet the main one). Outside systemd (`NOTIFY_SOCKET` unset) every call
//! does nothing and returns `Ok(false)`.
//!
//! Each call reads `NOTIFY_SOCKET` and never changes the environment, so
//! any thread may call it at any time.
//!
//! # Examples
//!
//! ```
//! use atoll::{notify, Handler, Server};
//! # struct Echo;
//! # impl Handler for Echo {}
//!
//! let server = Server::builder().ip([127, 0, 0, 1].into()).port(0).start(|_| Ok(Echo))?;
//! // Serving: now the units that need this one may start.
//! notify::ready()?;
//! // ... until a signal says to stop:
//! notify::stopping()?;
//! server.stop(std::time::Duration::from_secs(5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// `READY=1`: the service is up. Returns whether a service manager was
/// told (`false` outside systemd).
///
/// ```
/// // Outside systemd: nothing to tell.
/// # std::env::remove_var("NOTIFY_SOCKET");
/// assert!(!atoll::notify::ready()?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn ready() -> io::Result<bool> {
    send("READY=1")
}

/// `STOPPING=1`: the service is stopping (draining its connections).
///
/// ```
/// # std::env::remove_var("NOTIFY_SOCKET");
/// assert!(!atoll::notify::stopping()?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn stopping() -> io::Result<bool> {
    send("STOPPING=1")
}

/// `MAINPID=pid`: the service's main process is now `pid`. A handover's
/// successor sends its own id before its predecessor exits, so that
/// systemd follows it instead of taking the service for dead; with
/// [`send`], `MAINPID=` and `READY=1` go in one message.
///
/// ```
/// # std::env::remove_var("NOTIFY_SOCKET");
/// assert!(!atoll::notify::main_pid(std::process::id())?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn main_pid(pid: u32) -> io::Result<bool> {
    send(&format!("MAINPID={pid}"))
}

/// Sends `state`, one or more `NAME=value` lines (`STATUS=draining`,
/// `RELOADING=1`, ...), in one datagram to the socket `NOTIFY_SOCKET`
/// names: a path, or an abstract address when it starts with `@`. Returns
/// `Ok(false)` when the variable is not set; an error when the socket
/// cannot be reached or the address is of a kind this module does not
/// speak (`vsock:`).
///
/// ```
/// # std::env::remove_var("NOTIFY_SOCKET");
/// assert!(!atoll::notify::send("STATUS=warming the cache")?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn send(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target
        .into_string()
        .map_err(|_| invalid("NOTIFY_SOCKET is not UTF-8"))?;
    let addr = match target.as_bytes() {
        [] => return Ok(false),
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name)?,
        [b'/', ..] => SocketAddr::from_pathname(&target)?,
        _ => {
            return Err(invalid(
                "NOTIFY_SOCKET is neither a path nor an abstract address",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification was cut short",
        ));
    }
    Ok(true)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}
