//! Establishing a TCP connection (never a TLS session): the candidate addresses, the
//! one-family-after-the-other order, and RFC 8305's race.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::error::{ClientError, ConnectError};
use super::options::{Family, Options, CONNECTION_ATTEMPT_DELAY};
use super::resolve;
use crate::sys::{self, Wait};
use crate::timeout::Timeout;

/// Connects as `options` say; returns the (non-blocking) stream and the
/// address it reached.
pub(super) fn establish(options: &Options) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let (first, second) = options.ip_version.families();
    let addrs = match candidates(options, first, second) {
        Ok(addrs) => addrs,
        Err(e) => return Err(failure(first, second, |_| e.clone())),
    };
    let of = |family: Family| -> Vec<SocketAddr> {
        addrs
            .iter()
            .copied()
            .filter(|a| Family::of(a) == family)
            .collect()
    };
    if options.happy_eyeballs {
        let preferred = of(first);
        let other = second.map(of).unwrap_or_default();
        return race(
            interleave(preferred, other),
            options.connect_timeout,
            CONNECTION_ATTEMPT_DELAY,
        )
        .map_err(|errors| {
            failure(first, second, |f| match f {
                Family::V4 => errors[0].clone().unwrap_or(ClientError::Nxdomain),
                Family::V6 => errors[1].clone().unwrap_or(ClientError::Nxdomain),
            })
        });
    }
    let first_err = match try_family(&of(first), options.connect_timeout) {
        Ok(found) => return Ok(found),
        Err(e) => e,
    };
    let Some(second) = second else {
        return Err(failure(first, None, |_| first_err.clone()));
    };
    match try_family(&of(second), options.connect_timeout) {
        Ok(found) => Ok(found),
        Err(second_err) => Err(failure(first, Some(second), |f| {
            if f == first {
                first_err.clone()
            } else {
                second_err.clone()
            }
        })),
    }
}

/// The connect error for the families tried, each failing with `why(f)`.
fn failure(
    first: Family,
    second: Option<Family>,
    why: impl Fn(Family) -> ClientError,
) -> ConnectError {
    match (first, second) {
        (Family::V4, None) => ConnectError::Ipv4(why(Family::V4)),
        (Family::V6, None) => ConnectError::Ipv6(why(Family::V6)),
        _ => ConnectError::Both {
            ipv4: why(Family::V4),
            ipv6: why(Family::V6),
        },
    }
}

/// The addresses to try: the given ones, the literal address, or the
/// host's addresses from the resolver.
fn candidates(
    options: &Options,
    first: Family,
    second: Option<Family>,
) -> Result<Vec<SocketAddr>, ClientError> {
    if let Some(addrs) = &options.addrs {
        return Ok(addrs.clone());
    }
    let host = options.host.as_str();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, options.port)]);
    }
    // Ask only for the family that may be used, so that an IPv4-only
    // client never waits for an AAAA answer.
    let family = if second.is_none() { Some(first) } else { None };
    resolve::lookup(bare, options.port, family, options.resolve_timeout)
}

/// Tries the addresses of one family in order, within one connect timeout
/// for them all (the timeout is per family).
fn try_family(
    addrs: &[SocketAddr],
    timeout: Option<Duration>,
) -> Result<(TcpStream, SocketAddr), ClientError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut last = ClientError::Nxdomain;
    for &addr in addrs {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(ClientError::Timeout(Timeout::Connect));
        }
        match connect_one(addr, deadline) {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A non-blocking socket with a connect to `addr` started. `Ok(true)` if it
/// connected at once (possible on loopback).
fn start(addr: SocketAddr) -> Result<(Socket, bool), ClientError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => Ok((socket, true)),
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == io::ErrorKind::Interrupted =>
        {
            Ok((socket, false))
        }
        Err(e) => Err(ClientError::from_connect(e)),
    }
}

/// Where a started connect stands once its socket reports writable.
fn outcome(socket: &Socket) -> Option<Result<(), ClientError>> {
    match socket.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(ClientError::from_connect(e))),
        Ok(None) => {}
    }
    match socket.peer_addr() {
        Ok(_) => Some(Ok(())),
        // Woken before the handshake finished: keep waiting.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) => Some(Err(ClientError::from_connect(e))),
    }
}

/// Connects to one address, waiting until `deadline`.
fn connect_one(addr: SocketAddr, deadline: Option<Instant>) -> Result<TcpStream, ClientError> {
    let (socket, done) = start(addr)?;
    if !done {
        loop {
            if !sys::wait_fd(socket.as_raw_fd(), Wait::Write, deadline)? {
                return Err(ClientError::Timeout(Timeout::Connect));
            }
            match outcome(&socket) {
                Some(result) => break result?,
                None => continue,
            }
        }
    }
    Ok(socket.into())
}

/// RFC 8305 section 4: the first address of the preferred family, then
/// alternately one of each.
fn interleave(preferred: Vec<SocketAddr>, other: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(preferred.len() + other.len());
    let mut a = preferred.into_iter();
    let mut b = other.into_iter();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// An attempt of the race, in flight.
struct Attempt {
    socket: Socket,
    addr: SocketAddr,
    deadline: Option<Instant>,
}

/// Races connects to `addrs` in order, starting each one `delay` after the
/// one before or as soon as it fails; the first to connect wins. On failure,
/// the last error of each family (IPv4, IPv6), `None` for a family with no
/// address.
fn race(
    addrs: Vec<SocketAddr>,
    timeout: Option<Duration>,
    delay: Duration,
) -> Result<(TcpStream, SocketAddr), [Option<ClientError>; 2]> {
    let mut errors: [Option<ClientError>; 2] = [None, None];
    let slot = |addr: &SocketAddr| match Family::of(addr) {
        Family::V4 => 0,
        Family::V6 => 1,
    };
    let mut poll = match Poll::new() {
        Ok(poll) => poll,
        Err(e) => {
            let e = ClientError::from(e);
            for addr in &addrs {
                errors[slot(addr)] = Some(e.clone());
            }
            return Err(errors);
        }
    };
    let mut events = Events::with_capacity(8);
    // Indexed by token: the attempt for addrs[i], while in flight.
    let mut attempts: Vec<Option<Attempt>> = addrs.iter().map(|_| None).collect();
    let mut in_flight = 0usize;
    let mut next = 0usize;
    let mut next_start = Instant::now();
    loop {
        let now = Instant::now();
        if next < addrs.len() && (in_flight == 0 || now >= next_start) {
            let addr = addrs[next];
            let token = Token(next);
            next += 1;
            let registered = start(addr).and_then(|(socket, done)| {
                if !done {
                    poll.registry()
                        .register(
                            &mut SourceFd(&socket.as_raw_fd()),
                            token,
                            Interest::WRITABLE,
                        )
                        .map_err(ClientError::from)?;
                }
                Ok((socket, done))
            });
            match registered {
                Ok((socket, true)) => return Ok((socket.into(), addr)),
                Ok((socket, false)) => {
                    attempts[token.0] = Some(Attempt {
                        socket,
                        addr,
                        deadline: timeout.map(|t| now + t),
                    });
                    in_flight += 1;
                    next_start = now + delay;
                }
                // A failure starts the next attempt at once.
                Err(e) => {
                    errors[slot(&addr)] = Some(e);
                    next_start = now;
                }
            }
            continue;
        }
        if in_flight == 0 {
            return Err(errors);
        }
        // Attempts past their deadline fail with a timeout.
        for entry in attempts.iter_mut() {
            if entry
                .as_ref()
                .is_some_and(|a| a.deadline.is_some_and(|d| now >= d))
            {
                if let Some(a) = entry.take() {
                    let _ = poll
                        .registry()
                        .deregister(&mut SourceFd(&a.socket.as_raw_fd()));
                    errors[slot(&a.addr)] = Some(ClientError::Timeout(Timeout::Connect));
                    in_flight -= 1;
                    next_start = now;
                }
            }
        }
        if in_flight == 0 {
            continue;
        }
        let mut wake = attempts.iter().flatten().filter_map(|a| a.deadline).min();
        if next < addrs.len() {
            wake = Some(wake.map_or(next_start, |w| w.min(next_start)));
        }
        let wait = wake.map(|w| w.saturating_duration_since(now));
        if let Err(e) = poll.poll(&mut events, wait) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let e = ClientError::from(e);
            for a in attempts.iter().flatten() {
                errors[slot(&a.addr)] = Some(e.clone());
            }
            return Err(errors);
        }
        for event in events.iter() {
            let i = event.token().0;
            let Some(a) = attempts.get(i).and_then(Option::as_ref) else {
                continue;
            };
            match outcome(&a.socket) {
                None => {}
                Some(Ok(())) => {
                    let a = attempts[i].take().map(|a| (a.socket, a.addr));
                    if let Some((socket, addr)) = a {
                        let _ = poll
                            .registry()
                            .deregister(&mut SourceFd(&socket.as_raw_fd()));
                        return Ok((socket.into(), addr));
                    }
                }
                Some(Err(e)) => {
                    errors[slot(&a.addr)] = Some(e);
                    if let Some(a) = attempts[i].take() {
                        let _ = poll
                            .registry()
                            .deregister(&mut SourceFd(&a.socket.as_raw_fd()));
                    }
                    in_flight -= 1;
                    next_start = Instant::now();
                }
            }
        }
    }
}
