//! Name resolution with `getaddrinfo(3)`, called directly because std's
//! lookup folds every resolver failure into one error kind: the client must
//! tell "no such name" ([`ClientError::Nxdomain`]) from "try again"
//! ([`ClientError::Resolve`]). The only `unsafe` of the client lives here.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use super::error::ClientError;
use super::options::Family;
use crate::timeout::Timeout;

/// The addresses of `host` on `port`, of `family` only or of both (`None`),
/// in the resolver's order. With a timeout the lookup runs in a helper
/// thread; the thread is left to finish alone if the timeout passes.
pub(super) fn lookup(
    host: &str,
    port: u16,
    family: Option<Family>,
    timeout: Option<Duration>,
) -> Result<Vec<SocketAddr>, ClientError> {
    let Some(timeout) = timeout else {
        return getaddrinfo(host, port, family);
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    let owned = host.to_string();
    std::thread::Builder::new()
        .name("atoll-client-resolve".into())
        .spawn(move || {
            let _ = tx.send(getaddrinfo(&owned, port, family));
        })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            Err(ClientError::Timeout(Timeout::Resolve))
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            Err(ClientError::Resolve("the resolver thread stopped".into()))
        }
    }
}

fn getaddrinfo(
    host: &str,
    port: u16,
    family: Option<Family>,
) -> Result<Vec<SocketAddr>, ClientError> {
    // A name with a NUL byte cannot be passed to C, and no name has one.
    let c_host = CString::new(host).map_err(|_| ClientError::Nxdomain)?;
    let hints = libc::addrinfo {
        ai_flags: 0,
        ai_family: match family {
            None => libc::AF_UNSPEC,
            Some(Family::V4) => libc::AF_INET,
            Some(Family::V6) => libc::AF_INET6,
        },
        // One entry per address, not one per socket type.
        ai_socktype: libc::SOCK_STREAM,
        ai_protocol: 0,
        ai_addrlen: 0,
        ai_addr: std::ptr::null_mut(),
        ai_canonname: std::ptr::null_mut(),
        ai_next: std::ptr::null_mut(),
    };
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c_host` is NUL-terminated and outlives the call, `hints` is a
    // valid addrinfo with null pointers, a null service is allowed, and
    // `list` is a valid out-pointer.
    let rc = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut list) };
    if rc != 0 {
        return Err(gai_error(rc));
    }
    let mut addrs = Vec::new();
    let mut node = list;
    while !node.is_null() {
        // SAFETY: `node` is a non-null entry of the list getaddrinfo
        // returned, valid until the freeaddrinfo below.
        let ai = unsafe { &*node };
        if let Some(addr) = to_socket_addr(ai, port) {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        node = ai.ai_next;
    }
    // SAFETY: `list` came from a successful getaddrinfo and is freed once;
    // no reference into it outlives this call.
    unsafe { libc::freeaddrinfo(list) };
    if addrs.is_empty() {
        return Err(ClientError::Nxdomain);
    }
    Ok(addrs)
}

/// The address of one addrinfo entry, if it is IPv4 or IPv6.
fn to_socket_addr(ai: &libc::addrinfo, port: u16) -> Option<SocketAddr> {
    if ai.ai_addr.is_null() {
        return None;
    }
    let len = ai.ai_addrlen as usize;
    if ai.ai_family == libc::AF_INET && len >= std::mem::size_of::<libc::sockaddr_in>() {
        // SAFETY: the resolver says this is an AF_INET address at least as
        // long as sockaddr_in; read_unaligned does not require alignment.
        let sin = unsafe { std::ptr::read_unaligned(ai.ai_addr.cast::<libc::sockaddr_in>()) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        return Some(SocketAddr::new(IpAddr::V4(ip), port));
    }
    if ai.ai_family == libc::AF_INET6 && len >= std::mem::size_of::<libc::sockaddr_in6>() {
        // SAFETY: as above, for AF_INET6 and sockaddr_in6.
        let sin6 = unsafe { std::ptr::read_unaligned(ai.ai_addr.cast::<libc::sockaddr_in6>()) };
        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
        let addr = SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id);
        return Some(SocketAddr::V6(addr));
    }
    None
}

/// The client error for a `getaddrinfo` failure code.
fn gai_error(rc: libc::c_int) -> ClientError {
    if rc == libc::EAI_SYSTEM {
        return ClientError::from(std::io::Error::last_os_error());
    }
    if rc == libc::EAI_NONAME || is_no_data(rc) {
        return ClientError::Nxdomain;
    }
    // SAFETY: gai_strerror returns a pointer to a static NUL-terminated
    // string for any code.
    let text = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
    ClientError::Resolve(text.to_string_lossy().into_owned())
}

/// Whether `rc` says the name exists but has no address (of the family
/// asked for): for the client, no such domain either.
fn is_no_data(rc: libc::c_int) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        if rc == libc::EAI_NODATA {
            return true;
        }
    }
    // glibc's EAI_ADDRFAMILY, which the libc crate does not export: the
    // host has no address of the requested family.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if rc == -9 {
            return true;
        }
    }
    let _ = rc;
    false
}
