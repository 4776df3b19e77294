//! PROXY protocol version 1, the text line (`PROXY TCP4 ... \r\n`): parsing
//! and encoding it; never the binary version 2 form, never I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::header::{
    Command, Parsed, Protocol, ProxyError, ProxyHeader, Version, MIXED_FAMILIES, ONE_ADDRESS,
};
use crate::transport::Addr;

/// The longest version 1 header, in bytes, its CRLF included.
///
/// ```
/// use atoll::proxy::{ProxyError, ProxyHeader, V1_MAX_LEN};
///
/// let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN));
/// assert_eq!(ProxyHeader::parse(long.as_bytes()), Err(ProxyError::V1TooLong));
/// ```
pub const V1_MAX_LEN: usize = 107;

/// What a version 1 header starts with.
pub(super) const V1_PREFIX: &[u8] = b"PROXY ";

fn v1_error(what: impl Into<String>) -> ProxyError {
    ProxyError::V1Malformed(what.into())
}

/// Parses a v1 header; `bytes` starts with "PROXY ".
pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, ProxyError> {
    let window = bytes.get(..V1_MAX_LEN).unwrap_or(bytes);
    let mut line_len = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\r' => match bytes.get(i + 1) {
                Some(b'\n') => {
                    line_len = Some(i);
                    break;
                }
                Some(_) => return Err(v1_error("CR not followed by LF")),
                None => break,
            },
            b'\n' => return Err(v1_error("LF not preceded by CR")),
            b' '..=b'~' => {}
            other => return Err(v1_error(format!("unexpected byte {other:#04x}"))),
        }
    }
    // Refuse a wrong protocol word even before the line is complete.
    let rest = bytes.get(V1_PREFIX.len()..).unwrap_or_default();
    let known = [&b"TCP4 "[..], b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r"]
        .iter()
        .any(|word| match rest.get(..word.len()) {
            Some(start) => start == *word,
            None => word.starts_with(rest),
        });
    if !known {
        let end = rest
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(rest.len());
        let word = String::from_utf8_lossy(rest.get(..end).unwrap_or_default());
        return Err(v1_error(format!("unknown protocol {word:?}")));
    }
    match line_len {
        Some(len) if len + 2 <= V1_MAX_LEN => {
            let line = bytes.get(..len).unwrap_or_default();
            parse_v1_line(line).map(|header| Parsed::Header(header, len + 2))
        }
        Some(_) => Err(ProxyError::V1TooLong),
        None if bytes.len() >= V1_MAX_LEN => Err(ProxyError::V1TooLong),
        None => Ok(Parsed::Incomplete { total: None }),
    }
}

/// Parses a whole v1 line, its CRLF removed.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let mut fields = line.split(|&b| b == b' ').skip(1);
    let v4 = match fields.next() {
        Some(b"TCP4") => true,
        Some(b"TCP6") => false,
        // Whatever follows UNKNOWN is to be ignored.
        Some(b"UNKNOWN") => {
            return Ok(ProxyHeader {
                version: Version::V1,
                command: Command::Proxy,
                protocol: Protocol::Unspecified,
                source: None,
                destination: None,
                tlvs: Vec::new(),
            })
        }
        other => {
            let word = String::from_utf8_lossy(other.unwrap_or_default());
            return Err(v1_error(format!("unknown protocol {word:?}")));
        }
    };
    let mut next = |what: &str| {
        fields
            .next()
            .ok_or_else(|| v1_error(format!("missing {what}")))
    };
    let source_ip = v1_ip(next("source address")?, v4, "source address")?;
    let destination_ip = v1_ip(next("destination address")?, v4, "destination address")?;
    let source_port = v1_port(next("source port")?, "source port")?;
    let destination_port = v1_port(next("destination port")?, "destination port")?;
    if fields.next().is_some() {
        return Err(v1_error("unexpected data after the destination port"));
    }
    Ok(ProxyHeader {
        version: Version::V1,
        command: Command::Proxy,
        protocol: Protocol::Stream,
        source: Some(Addr::Inet(SocketAddr::new(source_ip, source_port))),
        destination: Some(Addr::Inet(SocketAddr::new(
            destination_ip,
            destination_port,
        ))),
        tlvs: Vec::new(),
    })
}

fn v1_ip(field: &[u8], v4: bool, what: &str) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(field).ok();
    let ip = if v4 {
        text.and_then(|t| t.parse::<Ipv4Addr>().ok())
            .map(IpAddr::V4)
    } else {
        text.and_then(|t| t.parse::<Ipv6Addr>().ok())
            .map(IpAddr::V6)
    };
    ip.ok_or_else(|| {
        v1_error(format!(
            "invalid {what} {:?}",
            String::from_utf8_lossy(field)
        ))
    })
}

/// A port: 0 to 65535 in decimal, no sign, no leading zero.
fn v1_port(field: &[u8], what: &str) -> Result<u16, ProxyError> {
    let digits = !field.is_empty()
        && field.len() <= 5
        && field.iter().all(u8::is_ascii_digit)
        && (field.len() == 1 || field.first() != Some(&b'0'));
    // At most 5 digits: no overflow.
    let value = digits.then(|| {
        field
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'))
    });
    match value.map(u16::try_from) {
        Some(Ok(port)) => Ok(port),
        _ => Err(v1_error(format!(
            "invalid {what} {:?}",
            String::from_utf8_lossy(field)
        ))),
    }
}

/// Writes `header` as a version 1 line: see [`ProxyHeader::encode`].
pub(super) fn encode(header: &ProxyHeader) -> Result<Vec<u8>, ProxyError> {
    if !header.tlvs.is_empty() {
        return Err(ProxyError::Unencodable("PROXY v1 carries no TLVs"));
    }
    if header.command == Command::Local {
        return Ok(b"PROXY UNKNOWN\r\n".to_vec());
    }
    let (source, destination) = match (&header.source, &header.destination) {
        (None, None) => return Ok(b"PROXY UNKNOWN\r\n".to_vec()),
        (Some(Addr::Inet(s)), Some(Addr::Inet(d))) => (s, d),
        (Some(Addr::Unix(_)), _) | (_, Some(Addr::Unix(_))) => {
            return Err(ProxyError::Unencodable(
                "PROXY v1 carries no Unix socket addresses",
            ))
        }
        _ => return Err(ProxyError::Unencodable(ONE_ADDRESS)),
    };
    if header.protocol != Protocol::Stream {
        return Err(ProxyError::Unencodable(
            "PROXY v1 carries only TCP (Protocol::Stream)",
        ));
    }
    let family = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
        (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
        _ => return Err(ProxyError::Unencodable(MIXED_FAMILIES)),
    };
    let line = format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
    Ok(line.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::header::tests::{error, header, inet};
    use crate::proxy::tlv;

    #[test]
    fn v1_tcp4_with_data_after_it() {
        let data = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\nGET /";
        let (h, n) = header(data);
        assert_eq!(n, data.len() - 5);
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(h.protocol, Protocol::Stream);
        assert_eq!(h.source, inet("192.0.2.7:51000"));
        assert_eq!(h.destination, inet("198.51.100.1:443"));
        assert!(h.tlvs.is_empty());
    }

    #[test]
    fn v1_tcp6_and_ports_at_the_limits() {
        let (h, _) = header(b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 0 65535\r\n");
        assert_eq!(h.source, inet("[::ffff:192.0.2.7]:0"));
        assert_eq!(h.destination, inet("[2001:db8::1]:65535"));
    }

    #[test]
    fn v1_unknown_ignores_the_rest_of_the_line() {
        let unknown = ProxyHeader {
            version: Version::V1,
            command: Command::Proxy,
            protocol: Protocol::Unspecified,
            source: None,
            destination: None,
            tlvs: vec![],
        };
        assert_eq!(header(b"PROXY UNKNOWN\r\n"), (unknown.clone(), 15));
        let line = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(header(line), (unknown, line.len()));
    }

    #[test]
    fn v1_longest_header_is_accepted() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 2, b'x');
        line.extend(b"\r\n");
        assert_eq!(header(&line).1, V1_MAX_LEN);
        // The TCP6 header with the longest addresses and ports fits too.
        let max = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {max} {max} 65535 65535\r\n");
        assert_eq!(header(line.as_bytes()).1, line.len());
    }

    #[test]
    fn v1_without_crlf_in_107_bytes_is_too_long() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(
            ProxyHeader::parse(&line),
            Ok(Parsed::Incomplete { total: None })
        );
        line.push(b'\r');
        assert_eq!(error(&line), ProxyError::V1TooLong);
        line.push(b'\n');
        assert_eq!(error(&line), ProxyError::V1TooLong);
        assert_eq!(
            error(&line).to_string(),
            "PROXY v1 header longer than 107 bytes"
        );
    }

    #[test]
    fn v1_partial_lines_are_incomplete() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n";
        for n in 0..line.len() {
            assert_eq!(
                ProxyHeader::parse(&line[..n]),
                Ok(Parsed::Incomplete { total: None }),
                "{n}"
            );
        }
    }

    #[test]
    fn v1_unknown_protocol_is_refused_before_the_line_ends() {
        assert_eq!(error(b"PROXY UDP4 "), v1_error("unknown protocol \"UDP4\""));
        assert_eq!(error(b"PROXY TCPX"), v1_error("unknown protocol \"TCPX\""));
        assert_eq!(
            error(b"PROXY TCP4\r\n"),
            v1_error("unknown protocol \"TCP4\"")
        );
        assert_eq!(
            error(b"PROXY UNKNOWNX\r\n"),
            v1_error("unknown protocol \"UNKNOWNX\"")
        );
        assert_eq!(error(b"PROXY  TCP4"), v1_error("unknown protocol \"\""));
    }

    #[test]
    fn v1_bad_addresses_name_the_field() {
        let cases: [(&[u8], &str); 7] = [
            (
                b"PROXY TCP4 1.2.3 198.51.100.1 1 2\r\n",
                "invalid source address \"1.2.3\"",
            ),
            (
                b"PROXY TCP4 192.0.2.7 ::1 1 2\r\n",
                "invalid destination address \"::1\"",
            ),
            (
                b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
                "invalid source address \"192.0.2.7\"",
            ),
            (
                b"PROXY TCP4 192.0.2.07 198.51.100.1 1 2\r\n",
                "invalid source address \"192.0.2.07\"",
            ),
            (
                b"PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n",
                "invalid destination address \"\"",
            ),
            (
                b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
                "invalid source address \"fe80::1%eth0\"",
            ),
            (
                b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n",
                "unexpected data after the destination port",
            ),
        ];
        for (line, why) in cases {
            assert_eq!(
                error(line),
                v1_error(why),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            error(cases[0].0).to_string(),
            "PROXY v1: invalid source address \"1.2.3\""
        );
    }

    #[test]
    fn v1_bad_ports_name_the_field() {
        for port in [
            "", "65536", "99999", "080", "00", "+80", "-1", "8a", "123456", " 1",
        ] {
            let line = format!("PROXY TCP4 192.0.2.7 198.51.100.1 {port} 443\r\n");
            assert!(
                matches!(error(line.as_bytes()), ProxyError::V1Malformed(ref why) if why.contains("source port") || why.contains("destination port")),
                "{line:?}"
            );
        }
        assert_eq!(
            error(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 0443\r\n"),
            v1_error("invalid destination port \"0443\"")
        );
    }

    #[test]
    fn v1_missing_fields_are_named() {
        assert_eq!(
            error(b"PROXY TCP4 \r\n"),
            v1_error("invalid source address \"\"")
        );
        assert_eq!(
            error(b"PROXY TCP4 192.0.2.7\r\n"),
            v1_error("missing destination address")
        );
        assert_eq!(
            error(b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n"),
            v1_error("missing destination port")
        );
    }

    #[test]
    fn v1_stray_cr_lf_nul_and_controls_are_malformed() {
        assert_eq!(
            error(b"PROXY UNKNOWN\rx\n"),
            v1_error("CR not followed by LF")
        );
        assert_eq!(error(b"PROXY UNKNOWN\n"), v1_error("LF not preceded by CR"));
        assert_eq!(
            error(b"PROXY UNKNOWN \0\r\n"),
            v1_error("unexpected byte 0x00")
        );
        assert_eq!(error(b"PROXY UNKNOWN \t"), v1_error("unexpected byte 0x09"));
        assert_eq!(
            error(b"PROXY UNKNOWN \xc3\xa9\r\n"),
            v1_error("unexpected byte 0xc3")
        );
    }

    // Encoding

    #[test]
    fn encode_v1_refuses_what_it_cannot_carry() {
        let tcp = ProxyHeader::tcp(
            "192.0.2.7:1".parse().unwrap(),
            "198.51.100.1:2".parse().unwrap(),
        );
        let with_tlv = tcp.clone().with_tlv(tlv::ALPN, "h2");
        assert_eq!(
            with_tlv.encode(Version::V1),
            Err(ProxyError::Unencodable("PROXY v1 carries no TLVs"))
        );
        let mut unix = tcp.clone();
        unix.source = Some(Addr::Unix(None));
        unix.destination = Some(Addr::Unix(None));
        assert!(unix.encode(Version::V1).is_err());
        let mut udp = tcp.clone();
        udp.protocol = Protocol::Datagram;
        assert!(udp.encode(Version::V1).is_err());
        let mixed = ProxyHeader::tcp("192.0.2.7:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(
            mixed.encode(Version::V1),
            Err(ProxyError::Unencodable(MIXED_FAMILIES))
        );
        let mut half = tcp;
        half.destination = None;
        assert_eq!(
            half.encode(Version::V1),
            Err(ProxyError::Unencodable(ONE_ADDRESS))
        );
    }

    #[test]
    fn encode_v1_unknown_for_local_and_addressless_headers() {
        assert_eq!(
            ProxyHeader::local().encode(Version::V1).unwrap(),
            b"PROXY UNKNOWN\r\n"
        );
        let mut h = ProxyHeader::local();
        h.command = Command::Proxy;
        assert_eq!(h.encode(Version::V1).unwrap(), b"PROXY UNKNOWN\r\n");
    }
}
