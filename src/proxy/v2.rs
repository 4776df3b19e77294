//! PROXY protocol version 2, the binary form: its fixed part, address
//! blocks and TLVs (the SSL TLV's sub-fields and the CRC32C check
//! included), parsed and encoded; never the version 1 text, never I/O.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::crc32c;
use super::header::{
    tlv, Command, Parsed, Protocol, ProxyError, ProxyHeader, SslInfo, Tlv, Version, MIXED_FAMILIES,
    ONE_ADDRESS,
};
use crate::transport::Addr;

/// The longest version 2 header, in bytes: the 16-byte fixed part and a
/// 16-bit length of addresses and TLVs.
///
/// ```
/// assert_eq!(atoll::proxy::V2_MAX_LEN, 65_551);
/// ```
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;

/// The 12 bytes a version 2 header starts with.
///
/// ```
/// use atoll::proxy::{ProxyHeader, Version, V2_SIGNATURE};
///
/// let bytes = ProxyHeader::local().encode(Version::V2)?;
/// assert!(bytes.starts_with(&V2_SIGNATURE));
/// # Ok::<(), atoll::proxy::ProxyError>(())
/// ```
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The signature, version and command, family and protocol, and length.
const V2_FIXED_LEN: usize = 16;

/// The length of each path of a v2 `AF_UNIX` address block.
const UNIX_PATH_LEN: usize = 108;

/// Parses a v2 header; `bytes` starts with the signature.
pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, ProxyError> {
    let incomplete = Ok(Parsed::Incomplete { total: None });
    let Some(&ver_cmd) = bytes.get(12) else {
        return incomplete;
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2BadVersion(ver_cmd >> 4));
    }
    let command = match ver_cmd & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        other => return Err(ProxyError::V2BadCommand(other)),
    };
    let Some(&fam) = bytes.get(13) else {
        return incomplete;
    };
    let family = match fam >> 4 {
        0 => Family::Unspec,
        1 => Family::Inet,
        2 => Family::Inet6,
        3 => Family::Unix,
        other => return Err(ProxyError::V2BadFamily(other)),
    };
    let protocol = match fam & 0x0f {
        0 => Protocol::Unspecified,
        1 => Protocol::Stream,
        2 => Protocol::Datagram,
        other => return Err(ProxyError::V2BadProtocol(other)),
    };
    let Some(&[hi, lo]) = bytes.get(14..V2_FIXED_LEN) else {
        return incomplete;
    };
    let total = V2_FIXED_LEN + usize::from(u16::from_be_bytes([hi, lo]));
    let Some(header) = bytes.get(..total) else {
        return Ok(Parsed::Incomplete { total: Some(total) });
    };
    let mut parsed = ProxyHeader {
        version: Version::V2,
        command,
        protocol,
        source: None,
        destination: None,
        tlvs: Vec::new(),
    };
    // The receiver ignores an UNSPEC header's bytes, TLVs included.
    if family == Family::Unspec {
        return Ok(Parsed::Header(parsed, total));
    }
    let body = header.get(V2_FIXED_LEN..).unwrap_or_default();
    let too_short = ProxyError::V2AddressesTooShort {
        len: body.len(),
        needed: family.block_len(),
    };
    let Some(block) = body.get(..family.block_len()) else {
        return Err(too_short);
    };
    let Some((source, destination)) = parse_addresses(family, block) else {
        return Err(too_short);
    };
    if command == Command::Proxy {
        parsed.source = Some(source);
        parsed.destination = Some(destination);
    }

    let mut offset = V2_FIXED_LEN + family.block_len();
    let mut rest = header.get(offset..).unwrap_or_default();
    let mut crc_at = None;
    while let Some(&kind) = rest.first() {
        let Some((value, after)) = split_tlv(rest) else {
            return Err(ProxyError::V2BadTlv {
                kind,
                reason: "runs past the end of the header".into(),
            });
        };
        if kind == tlv::CRC32C {
            if value.len() != 4 {
                return Err(ProxyError::V2BadTlv {
                    kind,
                    reason: format!("has a {}-byte value, not 4", value.len()),
                });
            }
            if crc_at.is_some() {
                return Err(ProxyError::V2BadTlv {
                    kind,
                    reason: "appears more than once".into(),
                });
            }
            crc_at = Some(offset + 3);
        }
        parsed.tlvs.push(Tlv {
            kind,
            value: value.to_vec(),
        });
        offset += 3 + value.len();
        rest = after;
    }
    if let Some(at) = crc_at {
        check_crc(header, at)?;
    }
    for t in &parsed.tlvs {
        if t.kind == tlv::SSL {
            ssl_info(&t.value)?;
        }
    }
    Ok(Parsed::Header(parsed, total))
}

/// Splits one type-length-value field off the start of `bytes`: its value
/// and what follows it, or `None` if it runs past the end.
fn split_tlv(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let [_kind, hi, lo, rest @ ..] = bytes else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

/// Takes the first `N` bytes off `bytes`.
fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let head = bytes.get(..N)?.try_into().ok()?;
    *bytes = bytes.get(N..)?;
    Some(head)
}

/// Reads the source and destination of a family's address block.
fn parse_addresses(family: Family, mut block: &[u8]) -> Option<(Addr, Addr)> {
    let b = &mut block;
    match family {
        Family::Unspec => None,
        Family::Inet => {
            let (s, d) = (Ipv4Addr::from(take::<4>(b)?), Ipv4Addr::from(take::<4>(b)?));
            let (sp, dp) = (u16::from_be_bytes(take(b)?), u16::from_be_bytes(take(b)?));
            Some((
                Addr::Inet(SocketAddr::V4(SocketAddrV4::new(s, sp))),
                Addr::Inet(SocketAddr::V4(SocketAddrV4::new(d, dp))),
            ))
        }
        Family::Inet6 => {
            let (s, d) = (
                Ipv6Addr::from(take::<16>(b)?),
                Ipv6Addr::from(take::<16>(b)?),
            );
            let (sp, dp) = (u16::from_be_bytes(take(b)?), u16::from_be_bytes(take(b)?));
            Some((
                Addr::Inet(SocketAddr::V6(SocketAddrV6::new(s, sp, 0, 0))),
                Addr::Inet(SocketAddr::V6(SocketAddrV6::new(d, dp, 0, 0))),
            ))
        }
        Family::Unix => {
            let s = take::<UNIX_PATH_LEN>(b)?;
            let d = take::<UNIX_PATH_LEN>(b)?;
            Some((unix_addr(&s), unix_addr(&d)))
        }
    }
}

/// A NUL-padded `AF_UNIX` path; an empty or abstract one (starting with
/// NUL) is an unnamed socket.
fn unix_addr(raw: &[u8]) -> Addr {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    match raw.get(..end) {
        Some(path) if !path.is_empty() => Addr::Unix(Some(PathBuf::from(OsStr::from_bytes(path)))),
        _ => Addr::Unix(None),
    }
}

/// Checks the CRC32C TLV whose 4-byte value is at `at` in `header`.
fn check_crc(header: &[u8], at: usize) -> Result<(), ProxyError> {
    let (Some(before), Some(value), Some(after)) = (
        header.get(..at),
        header.get(at..at + 4),
        header.get(at + 4..),
    ) else {
        return Err(ProxyError::Checksum);
    };
    let expected = value.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b));
    let crc = !crc32c::update(crc32c::update(crc32c::update(!0, before), &[0; 4]), after);
    if crc == expected {
        Ok(())
    } else {
        Err(ProxyError::Checksum)
    }
}

/// Reads the value of an SSL TLV ([`tlv::SSL`]), strictly.
pub(super) fn ssl_info(value: &[u8]) -> Result<SslInfo, ProxyError> {
    let bad = |reason: String| ProxyError::V2BadTlv {
        kind: tlv::SSL,
        reason,
    };
    let [client, v0, v1, v2, v3, rest @ ..] = value else {
        return Err(bad(format!(
            "has {} bytes, fewer than its client and verify fields (5)",
            value.len()
        )));
    };
    let mut rest = rest;
    let mut info = SslInfo {
        client: *client,
        verify: u32::from_be_bytes([*v0, *v1, *v2, *v3]),
        version: None,
        common_name: None,
        cipher: None,
        sig_alg: None,
        key_alg: None,
    };
    while let Some(&kind) = rest.first() {
        let Some((value, after)) = split_tlv(rest) else {
            return Err(bad(format!(
                "sub-field {kind:#04x} runs past the end of the SSL TLV"
            )));
        };
        rest = after;
        let field = match kind {
            tlv::SSL_VERSION => &mut info.version,
            tlv::SSL_CN => &mut info.common_name,
            tlv::SSL_CIPHER => &mut info.cipher,
            tlv::SSL_SIG_ALG => &mut info.sig_alg,
            tlv::SSL_KEY_ALG => &mut info.key_alg,
            // Sub-fields added to the specification later.
            _ => continue,
        };
        let Ok(text) = std::str::from_utf8(value) else {
            return Err(bad(format!("sub-field {kind:#04x} is not UTF-8")));
        };
        // Like `ProxyHeader::tlv`, the first of a kind counts.
        if field.is_none() {
            *field = Some(text.to_owned());
        }
    }
    Ok(info)
}

/// Writes `header` in the binary form: see [`ProxyHeader::encode`].
pub(super) fn encode(header: &ProxyHeader) -> Result<Vec<u8>, ProxyError> {
    let family = match (&header.source, &header.destination) {
        (Some(Addr::Inet(SocketAddr::V4(_))), Some(Addr::Inet(SocketAddr::V4(_)))) => Family::Inet,
        (Some(Addr::Inet(SocketAddr::V6(_))), Some(Addr::Inet(SocketAddr::V6(_)))) => Family::Inet6,
        (Some(Addr::Inet(_)), Some(Addr::Inet(_))) => {
            return Err(ProxyError::Unencodable(MIXED_FAMILIES))
        }
        (Some(Addr::Unix(_)), Some(Addr::Unix(_))) => Family::Unix,
        (None, None) if header.tlvs.is_empty() => Family::Unspec,
        (None, None) if header.command == Command::Local => Family::Inet,
        (None, None) => {
            return Err(ProxyError::Unencodable(
                "PROXY v2 TLVs need addresses: a receiver skips them after AF_UNSPEC",
            ))
        }
        (Some(_), Some(_)) => return Err(ProxyError::Unencodable(MIXED_FAMILIES)),
        _ => return Err(ProxyError::Unencodable(ONE_ADDRESS)),
    };
    let tlvs_len: usize = header.tlvs.iter().map(|t| 3 + encoded_tlv_len(t)).sum();
    let total = V2_FIXED_LEN + family.block_len() + tlvs_len;
    let Ok(len) = u16::try_from(total - V2_FIXED_LEN) else {
        return Err(ProxyError::TooLong {
            len: total,
            max: V2_MAX_LEN,
        });
    };

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(match header.command {
        Command::Local => 0x20,
        Command::Proxy => 0x21,
    });
    let protocol = match header.protocol {
        Protocol::Unspecified => 0,
        Protocol::Stream => 1,
        Protocol::Datagram => 2,
    };
    out.push((family.code() << 4) | protocol);
    out.extend_from_slice(&len.to_be_bytes());

    match (&header.source, &header.destination) {
        (Some(Addr::Inet(SocketAddr::V4(s))), Some(Addr::Inet(SocketAddr::V4(d)))) => {
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (Some(Addr::Inet(SocketAddr::V6(s))), Some(Addr::Inet(SocketAddr::V6(d)))) => {
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (Some(Addr::Unix(s)), Some(Addr::Unix(d))) => {
            write_unix_path(&mut out, s.as_deref())?;
            write_unix_path(&mut out, d.as_deref())?;
        }
        // LOCAL with TLVs: a zero INET block, or nothing for UNSPEC.
        _ => out.resize(out.len() + family.block_len(), 0),
    }

    let mut crc_at = None;
    for t in &header.tlvs {
        out.push(t.kind);
        if t.kind == tlv::CRC32C {
            if crc_at.is_some() {
                return Err(ProxyError::Unencodable("more than one CRC32C TLV"));
            }
            out.extend_from_slice(&4u16.to_be_bytes());
            crc_at = Some(out.len());
            out.extend_from_slice(&[0; 4]);
        } else {
            // Each value fits: `total` is at most V2_MAX_LEN.
            let len = u16::try_from(t.value.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&t.value);
        }
    }
    if let Some(at) = crc_at {
        let crc = crc32c::checksum(&out).to_be_bytes();
        if let Some(slot) = out.get_mut(at..at + 4) {
            slot.copy_from_slice(&crc);
        }
    }
    Ok(out)
}

/// The length of a TLV's value as `encode` writes it.
fn encoded_tlv_len(t: &Tlv) -> usize {
    if t.kind == tlv::CRC32C {
        4
    } else {
        t.value.len()
    }
}

/// Writes a 108-byte, NUL-padded `AF_UNIX` path.
fn write_unix_path(out: &mut Vec<u8>, path: Option<&std::path::Path>) -> Result<(), ProxyError> {
    let bytes = path.map_or(&[][..], |p| p.as_os_str().as_bytes());
    if bytes.len() > UNIX_PATH_LEN {
        return Err(ProxyError::Unencodable(
            "a Unix socket path is longer than 108 bytes",
        ));
    }
    if bytes.contains(&0) {
        return Err(ProxyError::Unencodable(
            "a Unix socket path contains a NUL byte",
        ));
    }
    out.extend_from_slice(bytes);
    out.resize(out.len() + UNIX_PATH_LEN - bytes.len(), 0);
    Ok(())
}

/// A version 2 address family.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Unspec,
    Inet,
    Inet6,
    Unix,
}

impl Family {
    fn code(self) -> u8 {
        match self {
            Family::Unspec => 0,
            Family::Inet => 1,
            Family::Inet6 => 2,
            Family::Unix => 3,
        }
    }

    /// The bytes of the family's source and destination addresses.
    fn block_len(self) -> usize {
        match self {
            Family::Unspec => 0,
            Family::Inet => 2 * 4 + 2 * 2,
            Family::Inet6 => 2 * 16 + 2 * 2,
            Family::Unix => 2 * UNIX_PATH_LEN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::header::tests::{error, header, inet};

    /// A v2 header laid out as HAProxy writes it for `send-proxy-v2` with
    /// `proxy-v2-options crc32c,authority,unique-id,ssl,cert-cn,ssl-cipher,
    /// cert-sig,cert-key` on a TLS connection in a network namespace:
    /// 192.0.2.10:56324 -> 198.51.100.1:443, then the TLVs in HAProxy's
    /// order (CRC32C, ALPN, AUTHORITY, UNIQUE_ID, SSL, NETNS). Built byte
    /// by byte from the specification, its checksum computed by a separate
    /// implementation.
    const HAPROXY_V2: [u8; 159] = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00,
        0x8f, 0xc0, 0x00, 0x02, 0x0a, 0xc6, 0x33, 0x64, 0x01, 0xdc, 0x04, 0x01, 0xbb, 0x03, 0x00,
        0x04, 0xa1, 0x6f, 0xb5, 0x5d, 0x01, 0x00, 0x02, 0x68, 0x32, 0x02, 0x00, 0x0b, 0x65, 0x78,
        0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x05, 0x00, 0x08, 0x63, 0x30, 0x66,
        0x66, 0x65, 0x65, 0x2d, 0x31, 0x20, 0x00, 0x54, 0x07, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00,
        0x07, 0x54, 0x4c, 0x53, 0x76, 0x31, 0x2e, 0x33, 0x22, 0x00, 0x12, 0x63, 0x6c, 0x69, 0x65,
        0x6e, 0x74, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x63, 0x6f, 0x6d, 0x23,
        0x00, 0x16, 0x54, 0x4c, 0x53, 0x5f, 0x41, 0x45, 0x53, 0x5f, 0x32, 0x35, 0x36, 0x5f, 0x47,
        0x43, 0x4d, 0x5f, 0x53, 0x48, 0x41, 0x33, 0x38, 0x34, 0x24, 0x00, 0x0a, 0x52, 0x53, 0x41,
        0x2d, 0x53, 0x48, 0x41, 0x32, 0x35, 0x36, 0x25, 0x00, 0x07, 0x52, 0x53, 0x41, 0x32, 0x30,
        0x34, 0x38, 0x30, 0x00, 0x04, 0x62, 0x6c, 0x75, 0x65,
    ];

    /// A v2 header: ver_cmd, fam, then the body; the length is filled in.
    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend([ver_cmd, fam]);
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
        out
    }

    fn tlv_bytes(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend((value.len() as u16).to_be_bytes());
        out.extend(value);
        out
    }

    const INET_BLOCK: [u8; 12] = [192, 0, 2, 7, 198, 51, 100, 1, 0xc7, 0x38, 0x01, 0xbb];

    #[test]
    fn v2_as_haproxy_sends_it() {
        let mut data = HAPROXY_V2.to_vec();
        data.extend(b"\x16\x03\x01"); // the client's TLS hello follows
        let (h, n) = header(&data);
        assert_eq!(n, HAPROXY_V2.len());
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(h.protocol, Protocol::Stream);
        assert_eq!(h.source, inet("192.0.2.10:56324"));
        assert_eq!(h.destination, inet("198.51.100.1:443"));
        let kinds: Vec<u8> = h.tlvs.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                tlv::CRC32C,
                tlv::ALPN,
                tlv::AUTHORITY,
                tlv::UNIQUE_ID,
                tlv::SSL,
                tlv::NETNS
            ]
        );
        assert_eq!(h.tlv(tlv::CRC32C), Some(&[0xa1, 0x6f, 0xb5, 0x5d][..]));
        assert_eq!(h.alpn(), Some(&b"h2"[..]));
        assert_eq!(h.authority(), Some("example.com"));
        assert_eq!(h.unique_id(), Some(&b"c0ffee-1"[..]));
        assert_eq!(h.netns(), Some("blue"));
        let ssl = h.ssl().unwrap();
        assert_eq!(
            ssl,
            SslInfo {
                client: 0x07,
                verify: 0,
                version: Some("TLSv1.3".into()),
                common_name: Some("client.example.com".into()),
                cipher: Some("TLS_AES_256_GCM_SHA384".into()),
                sig_alg: Some("RSA-SHA256".into()),
                key_alg: Some("RSA2048".into()),
            }
        );
        assert!(ssl.is_ssl());
        assert!(ssl.client_cert_verified());
        // Our encoder writes the same bytes.
        assert_eq!(h.encode(Version::V2).unwrap(), HAPROXY_V2);
    }

    #[test]
    fn v2_prefixes_are_incomplete_with_the_total_once_known() {
        for n in 0..HAPROXY_V2.len() {
            let want = if n < 16 { None } else { Some(HAPROXY_V2.len()) };
            assert_eq!(
                ProxyHeader::parse(&HAPROXY_V2[..n]),
                Ok(Parsed::Incomplete { total: want }),
                "{n}"
            );
        }
    }

    #[test]
    fn v2_inet6_and_unix_addresses() {
        let mut block = vec![0x20, 0x01, 0x0d, 0xb8];
        block.resize(16, 0);
        block.extend(Ipv6Addr::LOCALHOST.octets());
        block.extend([0xc7, 0x38, 0x01, 0xbb]);
        let (h, _) = header(&v2(0x21, 0x22, &block));
        assert_eq!(h.protocol, Protocol::Datagram);
        assert_eq!(h.source, inet("[2001:db8::]:51000"));
        assert_eq!(h.destination, inet("[::1]:443"));

        let mut block = b"/run/client.sock".to_vec();
        block.resize(108, 0);
        block.extend(b"\0abstract");
        block.resize(216, 0);
        let (h, _) = header(&v2(0x21, 0x31, &block));
        assert_eq!(h.source, Some(Addr::Unix(Some("/run/client.sock".into()))));
        assert_eq!(h.destination, Some(Addr::Unix(None)));
        // A path of all 108 bytes, no NUL.
        let (h, _) = header(&v2(0x21, 0x31, &[b'a'; 216]));
        let path = h.source.as_ref().and_then(Addr::unix_path).unwrap();
        assert_eq!(path.as_os_str().len(), 108);
    }

    #[test]
    fn v2_local_parses_the_block_and_tlvs_but_keeps_no_addresses() {
        let mut body = INET_BLOCK.to_vec();
        body.extend(tlv_bytes(tlv::NOOP, b""));
        body.extend(tlv_bytes(tlv::UNIQUE_ID, b"id"));
        let (h, _) = header(&v2(0x20, 0x11, &body));
        assert_eq!(h.command, Command::Local);
        assert_eq!((h.source, h.destination), (None, None));
        assert_eq!(
            h.tlvs,
            [
                Tlv {
                    kind: tlv::NOOP,
                    value: vec![]
                },
                Tlv {
                    kind: tlv::UNIQUE_ID,
                    value: b"id".to_vec()
                }
            ]
        );
        assert_eq!(
            error(&v2(0x20, 0x11, &INET_BLOCK[..11])),
            ProxyError::V2AddressesTooShort {
                len: 11,
                needed: 12
            }
        );
    }

    #[test]
    fn v2_unspec_skips_the_whole_block() {
        let (h, n) = header(&v2(0x21, 0x00, b"\xff\xff anything"));
        assert_eq!(n, 16 + 11);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!((h.source, h.destination), (None, None));
        assert!(h.tlvs.is_empty());
        assert_eq!(header(&v2(0x20, 0x00, b"")).0, ProxyHeader::local());
    }

    #[test]
    fn v2_bad_fixed_part_fields() {
        assert_eq!(
            error(&v2(0x11, 0x11, &INET_BLOCK)),
            ProxyError::V2BadVersion(1)
        );
        assert_eq!(
            error(&v2(0x25, 0x11, &INET_BLOCK)),
            ProxyError::V2BadCommand(5)
        );
        assert_eq!(
            error(&v2(0x21, 0x41, &INET_BLOCK)),
            ProxyError::V2BadFamily(4)
        );
        assert_eq!(
            error(&v2(0x21, 0x13, &INET_BLOCK)),
            ProxyError::V2BadProtocol(3)
        );
        // Refused as soon as the byte arrives.
        assert_eq!(
            error(&v2(0x25, 0x11, &INET_BLOCK)[..13]),
            ProxyError::V2BadCommand(5)
        );
        assert_eq!(
            error(&v2(0x21, 0x41, &INET_BLOCK)[..14]),
            ProxyError::V2BadFamily(4)
        );
        assert_eq!(
            ProxyError::V2BadCommand(5).to_string(),
            "PROXY v2: unknown command 0x5"
        );
    }

    #[test]
    fn v2_addresses_too_short() {
        assert_eq!(
            error(&v2(0x21, 0x21, &[0; 35])),
            ProxyError::V2AddressesTooShort {
                len: 35,
                needed: 36
            }
        );
        assert_eq!(
            error(&v2(0x21, 0x31, &[0; 215])),
            ProxyError::V2AddressesTooShort {
                len: 215,
                needed: 216
            }
        );
    }

    #[test]
    fn v2_tlv_running_past_the_end() {
        let mut body = INET_BLOCK.to_vec();
        body.extend([tlv::SSL, 0x00, 0x06, 1, 0, 0, 0, 0]);
        let err = error(&v2(0x21, 0x11, &body));
        assert_eq!(
            err.to_string(),
            "PROXY v2: TLV 0x20 runs past the end of the header"
        );
        // Fewer than 3 bytes left for a TLV's type and length.
        for tail in [&[0x01][..], &[0x01, 0x00]] {
            let body = [&INET_BLOCK[..], tail].concat();
            assert!(matches!(
                error(&v2(0x21, 0x11, &body)),
                ProxyError::V2BadTlv { kind: 1, .. }
            ));
        }
    }

    fn with_crc(body: &[u8]) -> Vec<u8> {
        let mut bytes = v2(0x21, 0x11, body);
        let at = bytes.len() - 4;
        let crc = crc32c::checksum(&bytes);
        bytes[at..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn v2_crc32c_is_checked() {
        let mut body = INET_BLOCK.to_vec();
        body.extend(tlv_bytes(tlv::CRC32C, &[0; 4]));
        let good = with_crc(&body);
        assert_eq!(header(&good).1, good.len());
        let mut bad = good.clone();
        bad[17] ^= 1;
        assert_eq!(error(&bad), ProxyError::Checksum);
        assert_eq!(
            error(&bad).to_string(),
            "PROXY v2: CRC32C checksum mismatch"
        );
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0x80;
        assert_eq!(error(&bad), ProxyError::Checksum);
    }

    #[test]
    fn v2_crc32c_of_the_wrong_size_or_twice_is_refused() {
        let mut body = INET_BLOCK.to_vec();
        body.extend(tlv_bytes(tlv::CRC32C, &[0; 3]));
        assert!(matches!(
            error(&v2(0x21, 0x11, &body)),
            ProxyError::V2BadTlv { kind: tlv::CRC32C, ref reason } if reason == "has a 3-byte value, not 4"
        ));
        let mut body = INET_BLOCK.to_vec();
        body.extend(tlv_bytes(tlv::CRC32C, &[0; 4]));
        body.extend(tlv_bytes(tlv::CRC32C, &[0; 4]));
        assert!(matches!(
            error(&v2(0x21, 0x11, &body)),
            ProxyError::V2BadTlv { kind: tlv::CRC32C, ref reason } if reason == "appears more than once"
        ));
    }

    #[test]
    fn v2_malformed_ssl_tlvs_are_refused() {
        let cases: [(&[u8], &str); 4] = [
            (
                &[0x01, 0, 0, 0],
                "has 4 bytes, fewer than its client and verify fields (5)",
            ),
            (
                &[0x01, 0, 0, 0, 0, 0x21, 0x00],
                "sub-field 0x21 runs past the end of the SSL TLV",
            ),
            (
                &[0x01, 0, 0, 0, 0, 0x22, 0x00, 0x05, b'a'],
                "sub-field 0x22 runs past the end of the SSL TLV",
            ),
            (
                &[0x01, 0, 0, 0, 0, 0x23, 0x00, 0x01, 0xff],
                "sub-field 0x23 is not UTF-8",
            ),
        ];
        for (value, why) in cases {
            let body = [&INET_BLOCK[..], &tlv_bytes(tlv::SSL, value)].concat();
            let err = error(&v2(0x21, 0x11, &body));
            assert_eq!(
                err,
                ProxyError::V2BadTlv {
                    kind: tlv::SSL,
                    reason: why.into()
                }
            );
            // A hand-built header with such a value has no SSL information.
            assert_eq!(ProxyHeader::local().with_tlv(tlv::SSL, value).ssl(), None);
        }
    }

    #[test]
    fn v2_ssl_unknown_sub_fields_are_skipped_and_the_first_of_a_kind_counts() {
        let mut value = vec![0x05, 0, 0, 0, 0];
        value.extend(tlv_bytes(0x26, b"\xff\xfe"));
        value.extend(tlv_bytes(tlv::SSL_CN, b"first"));
        value.extend(tlv_bytes(tlv::SSL_CN, b"second"));
        let body = [&INET_BLOCK[..], &tlv_bytes(tlv::SSL, &value)].concat();
        let ssl = header(&v2(0x21, 0x11, &body)).0.ssl().unwrap();
        assert_eq!(ssl.common_name.as_deref(), Some("first"));
        assert!(ssl.is_ssl());
        assert!(ssl.client_cert_verified()); // CERT_SESS, verify 0
        let no_cert = SslInfo {
            client: 0x01,
            ..ssl.clone()
        };
        assert!(!no_cert.client_cert_verified());
        let failed = SslInfo { verify: 20, ..ssl };
        assert!(!failed.client_cert_verified());
    }

    #[test]
    fn encode_v2_refuses_what_it_cannot_carry() {
        let mut h = ProxyHeader::local()
            .with_tlv(tlv::CRC32C, [0; 4])
            .with_tlv(tlv::CRC32C, [0; 4]);
        h.source = inet("192.0.2.7:1");
        h.destination = inet("198.51.100.1:2");
        assert!(h.encode(Version::V2).is_err());
        let mut h = ProxyHeader::local().with_tlv(tlv::NOOP, "x");
        h.command = Command::Proxy;
        assert!(h.encode(Version::V2).is_err());
        let long = ProxyHeader::local().with_tlv(0xe0, vec![0u8; 65_535]);
        assert_eq!(
            long.encode(Version::V2),
            Err(ProxyError::TooLong {
                len: 16 + 12 + 3 + 65_535,
                max: V2_MAX_LEN
            })
        );
        let fits = ProxyHeader::local().with_tlv(0xe0, vec![0u8; 65_535 - 12 - 3]);
        assert_eq!(fits.encode(Version::V2).unwrap().len(), V2_MAX_LEN);
        let mut h = ProxyHeader::local();
        h.source = Some(Addr::Unix(Some("a\0b".into())));
        h.destination = Some(Addr::Unix(None));
        assert!(h.encode(Version::V2).is_err());
        h.source = Some(Addr::Unix(Some("a".repeat(109).into())));
        assert!(h.encode(Version::V2).is_err());
        let mixed = ProxyHeader::tcp("192.0.2.7:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(
            mixed.encode(Version::V2),
            Err(ProxyError::Unencodable(MIXED_FAMILIES))
        );
        let mut half = ProxyHeader::tcp(
            "192.0.2.7:1".parse().unwrap(),
            "198.51.100.1:2".parse().unwrap(),
        );
        half.destination = None;
        assert_eq!(
            half.encode(Version::V2),
            Err(ProxyError::Unencodable(ONE_ADDRESS))
        );
    }

    #[test]
    fn encode_v2_local_with_tlvs_round_trips() {
        let h = ProxyHeader::local()
            .with_tlv(tlv::CRC32C, [0; 4])
            .with_tlv(tlv::UNIQUE_ID, "id");
        let bytes = h.encode(Version::V2).unwrap();
        assert_eq!(bytes[13], 0x10);
        let (back, n) = header(&bytes);
        assert_eq!(n, bytes.len());
        assert_eq!(back.tlvs[1], h.tlvs[1]);
        assert_eq!(back.tlv(tlv::CRC32C).map(<[u8]>::len), Some(4));
    }
}
