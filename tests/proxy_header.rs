//! Properties of the PROXY protocol header parser and encoder
//! (`atoll::proxy::ProxyHeader`): it never panics, what it encodes parses
//! back, a header cut short is incomplete, a CRC32C TLV catches a changed
//! byte, and v1 agrees with a plain formatter.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use atoll::proxy::{
    tlv, Command, Parsed, Protocol, ProxyError, ProxyHeader, SslInfo, Version, V1_MAX_LEN,
    V2_SIGNATURE,
};
use atoll::transport::Addr;
use proptest::prelude::*;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

// Strategies

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

/// IPv6 addresses with runs of zeros (so `::` appears), IPv4-mapped ones,
/// and random ones.
fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(Ipv6Addr::from),
        prop::array::uniform8(prop_oneof![Just(0u16), any::<u16>()]).prop_map(Ipv6Addr::from),
        ipv4().prop_map(|ip| ip.to_ipv6_mapped()),
    ]
}

fn v4_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    (ipv4(), any::<u16>(), ipv4(), any::<u16>())
        .prop_map(|(s, sp, d, dp)| (SocketAddr::new(s.into(), sp), SocketAddr::new(d.into(), dp)))
}

/// IPv6 pairs without flow information or scope id, which no PROXY header
/// carries.
fn v6_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    (ipv6(), any::<u16>(), ipv6(), any::<u16>()).prop_map(|(s, sp, d, dp)| {
        (
            SocketAddr::V6(SocketAddrV6::new(s, sp, 0, 0)),
            SocketAddr::V6(SocketAddrV6::new(d, dp, 0, 0)),
        )
    })
}

/// A named Unix socket path (1 to 108 bytes, no NUL) or an unnamed one.
fn unix_addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        Just(Addr::Unix(None)),
        prop::collection::vec(1u8..=255, 1..=108)
            .prop_map(|p| Addr::Unix(Some(PathBuf::from(OsStr::from_bytes(&p))))),
    ]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Unspecified),
        Just(Protocol::Stream),
        Just(Protocol::Datagram),
    ]
}

/// The headers `parse` gives for v1: TCP4, TCP6 and UNKNOWN.
fn v1_header() -> impl Strategy<Value = ProxyHeader> {
    let unknown = {
        let mut h = ProxyHeader::local();
        h.command = Command::Proxy;
        h
    };
    prop_oneof![
        v4_pair().prop_map(|(s, d)| ProxyHeader::tcp(s, d)),
        v6_pair().prop_map(|(s, d)| ProxyHeader::tcp(s, d)),
        Just(unknown),
    ]
    .prop_map(|mut h| {
        h.version = Version::V1;
        h
    })
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(".{0,24}")
}

fn ssl_info() -> impl Strategy<Value = SslInfo> {
    (
        any::<u8>(),
        prop_oneof![Just(0u32), any::<u32>()],
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(
            |(client, verify, version, common_name, cipher, sig_alg, key_alg)| SslInfo {
                client,
                verify,
                version,
                common_name,
                cipher,
                sig_alg,
                key_alg,
            },
        )
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// An SSL TLV's value as HAProxy writes it, with an unknown sub-field
/// (which the parser skips) when `extra` says so.
fn ssl_value(info: &SslInfo, extra: bool) -> Vec<u8> {
    let mut out = vec![info.client];
    out.extend_from_slice(&info.verify.to_be_bytes());
    let fields = [
        (tlv::SSL_VERSION, &info.version),
        (tlv::SSL_CN, &info.common_name),
        (tlv::SSL_CIPHER, &info.cipher),
        (tlv::SSL_SIG_ALG, &info.sig_alg),
        (tlv::SSL_KEY_ALG, &info.key_alg),
    ];
    for (kind, text) in fields {
        if let Some(text) = text {
            push_tlv(&mut out, kind, text.as_bytes());
        }
    }
    if extra {
        push_tlv(&mut out, 0x26, b"\xff\x00\xfe");
    }
    out
}

/// Any TLV but CRC32C and SSL, whose values must be valid.
fn plain_tlv() -> impl Strategy<Value = (u8, Vec<u8>)> {
    (
        any::<u8>().prop_filter("CRC32C and SSL are generated apart", |k| {
            *k != tlv::CRC32C && *k != tlv::SSL
        }),
        prop::collection::vec(any::<u8>(), 0..48),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Unspec,
    Inet,
    Inet6,
    Unix,
}

fn addresses(family: Family) -> BoxedStrategy<Option<(Addr, Addr)>> {
    match family {
        Family::Unspec => Just(None).boxed(),
        Family::Inet => v4_pair()
            .prop_map(|(s, d)| Some((Addr::Inet(s), Addr::Inet(d))))
            .boxed(),
        Family::Inet6 => v6_pair()
            .prop_map(|(s, d)| Some((Addr::Inet(s), Addr::Inet(d))))
            .boxed(),
        Family::Unix => (unix_addr(), unix_addr()).prop_map(Some).boxed(),
    }
}

/// Where a CRC32C TLV goes among the others, if anywhere.
#[derive(Clone, Copy, Debug)]
enum Crc {
    None,
    First,
    At(prop::sample::Index),
}

/// A v2 header to encode: any command, family, protocol and TLVs (an SSL
/// one among them sometimes). A `PROXY` header without addresses carries
/// no TLVs: a receiver skips everything after `AF_UNSPEC`, so `encode`
/// refuses them.
fn v2_header(families: &'static [Family], crc: Crc) -> impl Strategy<Value = ProxyHeader> {
    let family = prop::sample::select(families);
    (
        family,
        prop_oneof![Just(Command::Local), Just(Command::Proxy)],
    )
        .prop_flat_map(move |(family, command)| {
            (
                Just(command),
                addresses(family),
                protocol(),
                prop::collection::vec(plain_tlv(), 0..5),
                prop::option::of((ssl_info(), any::<bool>(), any::<prop::sample::Index>())),
            )
        })
        .prop_map(move |(command, addrs, protocol, plain, ssl)| {
            let mut h = ProxyHeader::local();
            h.command = command;
            h.protocol = protocol;
            if let Some((s, d)) = addrs {
                h.source = Some(s);
                h.destination = Some(d);
            }
            for (kind, value) in plain {
                h = h.with_tlv(kind, value);
            }
            if let Some((info, extra, at)) = ssl {
                let at = at.index(h.tlvs.len() + 1);
                h.tlvs.insert(at, tlv_of(tlv::SSL, ssl_value(&info, extra)));
            }
            let at = match crc {
                Crc::None => None,
                Crc::First => Some(0),
                Crc::At(index) => Some(index.index(h.tlvs.len() + 1)),
            };
            if let Some(at) = at {
                // Its value is computed by `encode`.
                h.tlvs.insert(at, tlv_of(tlv::CRC32C, vec![0; 4]));
            }
            if h.command == Command::Proxy && h.source.is_none() {
                h.tlvs.clear();
            }
            h
        })
}

fn tlv_of(kind: u8, value: Vec<u8>) -> atoll::proxy::Tlv {
    atoll::proxy::Tlv { kind, value }
}

const ALL_FAMILIES: &[Family] = &[Family::Unspec, Family::Inet, Family::Inet6, Family::Unix];
const ADDRESS_FAMILIES: &[Family] = &[Family::Inet, Family::Inet6, Family::Unix];

fn any_crc() -> impl Strategy<Value = Crc> {
    prop_oneof![
        Just(Crc::None),
        Just(Crc::First),
        any::<prop::sample::Index>().prop_map(Crc::At),
    ]
}

fn any_v2_header() -> impl Strategy<Value = ProxyHeader> {
    any_crc().prop_flat_map(|crc| v2_header(ALL_FAMILIES, crc))
}

/// What `parse` gives back for an encoded v2 header: a `LOCAL` header's
/// addresses and an `UNSPEC` header's TLVs are not kept.
fn as_parsed(sent: &ProxyHeader) -> ProxyHeader {
    let mut h = sent.clone();
    h.version = Version::V2;
    if h.command == Command::Local {
        h.source = None;
        h.destination = None;
    }
    if h.source.is_none() && h.command == Command::Proxy {
        h.tlvs.clear();
    }
    h
}

/// The header with its CRC32C value zeroed: `encode` computes it.
fn without_crc_value(mut h: ProxyHeader) -> ProxyHeader {
    for t in &mut h.tlvs {
        if t.kind == tlv::CRC32C {
            t.value = vec![0; 4];
        }
    }
    h
}

fn parse_whole(bytes: &[u8]) -> (ProxyHeader, usize) {
    match ProxyHeader::parse(bytes) {
        Ok(Parsed::Header(h, n)) => (h, n),
        other => panic!("{bytes:?} parsed as {other:?}"),
    }
}

/// The invariants of any answer of `parse`, whatever the input.
fn check_answer(bytes: &[u8]) {
    match ProxyHeader::parse(bytes) {
        Ok(Parsed::Header(h, n)) => {
            assert!(n <= bytes.len());
            assert!(n >= 15, "no header is shorter than PROXY UNKNOWN\\r\\n");
            // The header does not depend on what follows it.
            assert_eq!(
                ProxyHeader::parse(&bytes[..n]),
                Ok(Parsed::Header(h.clone(), n))
            );
            if h.version == Version::V1 {
                assert!(n <= V1_MAX_LEN);
                assert!(h.tlvs.is_empty());
            }
            // SSL information is validated by parse.
            if h.tlv(tlv::SSL).is_some() {
                assert!(h.ssl().is_some());
            }
        }
        Ok(Parsed::Incomplete { total: Some(total) }) => {
            assert!(total > bytes.len());
            assert!(bytes.len() >= 16);
        }
        Ok(Parsed::Incomplete { total: None }) => {
            assert!(bytes.len() < 16 || bytes.starts_with(b"PROXY "))
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

// (1) parse never panics.

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check_answer(&bytes);
    }

    #[test]
    fn parse_never_panics_after_a_v1_signature(
        rest in prop::collection::vec(prop::sample::select(V1_ALPHABET), 0..120),
        junk in prop::option::weighted(0.2, (prop::sample::select(V1_JUNK), any::<prop::sample::Index>())),
        word in prop::sample::select(&["TCP4 ", "TCP6 ", "UNKNOWN", ""][..]),
        crlf in any::<bool>(),
    ) {
        let mut rest = rest;
        if let Some((byte, at)) = junk {
            rest.insert(at.index(rest.len() + 1), byte);
        }
        if crlf {
            rest.extend(b"\r\n");
        }
        let bytes = [b"PROXY ", word.as_bytes(), &rest].concat();
        check_answer(&bytes);
    }

    #[test]
    fn parse_never_panics_after_a_v2_signature(
        ver_cmd in prop_oneof![4 => 0x20u8..=0x21, 1 => any::<u8>()],
        fam in prop_oneof![4 => prop::sample::select(&[0x00u8, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32][..]), 1 => any::<u8>()],
        block in any::<[u8; 216]>(),
        block_skew in prop_oneof![4 => Just(0i32), 1 => -3i32..=3],
        tlvs in tlv_soup(),
        len in prop_oneof![4 => Just(None), 1 => any::<u16>().prop_map(Some)],
        after in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let block_len = match fam >> 4 {
            1 => 12,
            2 => 36,
            3 => 216,
            _ => 0,
        };
        let block_len = (block_len + block_skew).clamp(0, 216) as usize;
        let body = [&block[..block_len], &tlvs].concat();
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend([ver_cmd, fam]);
        bytes.extend(len.unwrap_or(body.len() as u16).to_be_bytes());
        bytes.extend(body);
        bytes.extend(after);
        check_answer(&bytes);
    }
}

/// Bytes a v1 line is made of, and some it must not contain.
const V1_ALPHABET: &[u8] = b"    0123456789abcdef.:TCPUNKOW";
const V1_JUNK: &[u8] = b"\0\t\r\n\x7f\xff";

/// Bytes that look like TLVs: known and unknown types, lengths mostly
/// right, SSL values with sub-fields.
fn tlv_soup() -> impl Strategy<Value = Vec<u8>> {
    let text = || prop::collection::vec(b' '..=b'~', 0..24);
    let bytes = || prop::collection::vec(any::<u8>(), 0..24);
    let sub_fields = fields(
        &[0x21, 0x22, 0x23, 0x24, 0x25, 0x26],
        prop_oneof![4 => text(), 1 => bytes()].boxed(),
    );
    let ssl_value =
        (any::<[u8; 5]>(), sub_fields).prop_map(|(head, rest)| [&head[..], &rest].concat());
    fields(
        &[0x01, 0x02, 0x03, 0x04, 0x05, 0x20, 0x30, 0xe0],
        prop_oneof![2 => bytes(), 1 => text(), 2 => ssl_value].boxed(),
    )
}

/// A run of type-length-value fields of the given kinds, their lengths
/// now and then off by one or two.
fn fields(kinds: &'static [u8], value: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let skew = prop_oneof![12 => Just(0i32), 1 => -2i32..=2];
    prop::collection::vec((prop::sample::select(kinds), value, skew), 0..6)
        .prop_map(|fields| {
            let mut out = Vec::new();
            for (kind, value, skew) in fields {
                out.push(kind);
                let len = (value.len() as i32 + skew).max(0) as u16;
                out.extend(len.to_be_bytes());
                out.extend(value);
            }
            out
        })
        .boxed()
}

// (2) Round trips, with and without the application's bytes after.

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn v1_headers_round_trip(h in v1_header(), after in prop::collection::vec(any::<u8>(), 0..64)) {
        let bytes = h.encode(Version::V1).unwrap();
        prop_assert!(bytes.len() <= V1_MAX_LEN);
        prop_assert_eq!(parse_whole(&bytes), (h.clone(), bytes.len()));
        let data = [&bytes[..], &after].concat();
        prop_assert_eq!(parse_whole(&data), (h, bytes.len()));
    }

    #[test]
    fn v2_headers_round_trip(h in any_v2_header(), after in prop::collection::vec(any::<u8>(), 0..64)) {
        let bytes = h.encode(Version::V2).unwrap();
        let (back, n) = parse_whole(&bytes);
        prop_assert_eq!(n, bytes.len());
        prop_assert_eq!(without_crc_value(back.clone()), as_parsed(&h));
        if let Some(t) = h.tlvs.iter().find(|t| t.kind == tlv::SSL) {
            prop_assert_eq!(back.ssl(), Some(parse_ssl_reference(&t.value)));
        }
        let data = [&bytes[..], &after].concat();
        prop_assert_eq!(parse_whole(&data), (back.clone(), bytes.len()));
        // What was parsed encodes to bytes that parse to it again, and
        // those bytes are the canonical form: encoding is then stable.
        let again = back.encode(Version::V2).unwrap();
        let (back_again, n) = parse_whole(&again);
        prop_assert_eq!(n, again.len());
        prop_assert_eq!(without_crc_value(back_again.clone()), without_crc_value(back));
        prop_assert_eq!(back_again.encode(Version::V2).unwrap(), again);
    }

    #[test]
    fn proxy_v2_without_addresses_refuses_tlvs(kind in any::<u8>(), value in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut h = ProxyHeader::local().with_tlv(kind, value);
        h.command = Command::Proxy;
        prop_assert!(matches!(h.encode(Version::V2), Err(ProxyError::Unencodable(_))));
    }
}

/// The SSL information `ssl_value` wrote, read back by hand.
fn parse_ssl_reference(value: &[u8]) -> SslInfo {
    let mut info = SslInfo {
        client: value[0],
        verify: u32::from_be_bytes([value[1], value[2], value[3], value[4]]),
        version: None,
        common_name: None,
        cipher: None,
        sig_alg: None,
        key_alg: None,
    };
    let mut rest = &value[5..];
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let text = String::from_utf8(rest[3..3 + len].to_vec());
        match rest[0] {
            tlv::SSL_VERSION => info.version = text.ok(),
            tlv::SSL_CN => info.common_name = text.ok(),
            tlv::SSL_CIPHER => info.cipher = text.ok(),
            tlv::SSL_SIG_ALG => info.sig_alg = text.ok(),
            tlv::SSL_KEY_ALG => info.key_alg = text.ok(),
            _ => {}
        }
        rest = &rest[3 + len..];
    }
    info
}

// (3) A header cut short is incomplete.

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn every_strict_prefix_is_incomplete(
        h in prop_oneof![v1_header(), any_v2_header()],
    ) {
        let bytes = h.encode(h.version).unwrap();
        for n in 0..bytes.len() {
            let total = match h.version {
                Version::V2 if n >= 16 => Some(bytes.len()),
                _ => None,
            };
            prop_assert_eq!(
                ProxyHeader::parse(&bytes[..n]),
                Ok(Parsed::Incomplete { total }),
                "prefix of {} bytes", n
            );
        }
    }
}

// (4) A CRC32C TLV catches a changed byte.
//
// The CRC32C covers every byte of the header, so a change that keeps the
// header's layout (where its TLVs are) always fails the check. What it
// cannot cover is its own presence or the layout: changing the CRC32C
// TLV's type removes it, changing the family to UNSPEC drops all TLVs,
// and changing the length or the family to another address family moves
// the TLVs, so that finding a CRC32C TLV whose checksum matches is left
// to chance (one in 2^32). Hence three claims, by where the byte is:
//
// - anywhere else (the signature, version and command, protocol,
//   addresses, the CRC32C's length and value, the other TLVs): an error;
// - the CRC32C TLV's type, or the family changed to UNSPEC or to no
//   family: an error, or a header without a CRC32C TLV (a receiver that
//   requires integrity must require the TLV);
// - the length, or the family changed to another address family: never
//   the original header.

#[derive(Debug, PartialEq)]
enum Outcome {
    Error,
    WithoutCrc,
    Other,
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn a_changed_byte_of_a_crc32c_header_is_caught(
        h in v2_header(ADDRESS_FAMILIES, Crc::First),
        at in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let bytes = h.encode(Version::V2).unwrap();
        let original = parse_whole(&bytes);
        let i = at.index(bytes.len());
        let mut changed = bytes.clone();
        changed[i] ^= delta;
        let family = |fam: u8| fam >> 4;
        let crc_type_at = 16 + match family(bytes[13]) {
            1 => 12,
            2 => 36,
            _ => 216,
        };
        let claim = match i {
            13 if family(changed[13]) == family(bytes[13]) => Outcome::Error,
            13 if matches!(family(changed[13]), 1..=3) => Outcome::Other,
            13 => Outcome::WithoutCrc,
            14 | 15 => Outcome::Other,
            i if i == crc_type_at => Outcome::WithoutCrc,
            _ => Outcome::Error,
        };
        let result = ProxyHeader::parse(&changed);
        match claim {
            Outcome::Error => prop_assert!(result.is_err(), "byte {} changed: {:?}", i, result),
            Outcome::WithoutCrc => prop_assert!(
                match &result {
                    Err(_) => true,
                    Ok(Parsed::Header(h, _)) => h.tlv(tlv::CRC32C).is_none(),
                    Ok(Parsed::Incomplete { .. }) => false,
                },
                "byte {} changed: {:?}", i, result
            ),
            Outcome::Other => prop_assert_ne!(result, Ok(Parsed::Header(original.0, original.1))),
        }
    }
}

// (5) v1 agrees with a plain formatter.

fn ipv6_expanded(ip: &Ipv6Addr) -> String {
    let s = ip.segments();
    format!(
        "{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
        s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
    )
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn v1_tcp4_agrees_with_a_plain_formatter(s in any::<[u8; 4]>(), d in any::<[u8; 4]>(), sp in any::<u16>(), dp in any::<u16>()) {
        let line = format!(
            "PROXY TCP4 {}.{}.{}.{} {}.{}.{}.{} {sp} {dp}\r\n",
            s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]
        );
        let (h, n) = parse_whole(line.as_bytes());
        prop_assert_eq!(n, line.len());
        prop_assert_eq!(&h.source, &Some(Addr::Inet(SocketAddr::new(Ipv4Addr::from(s).into(), sp))));
        prop_assert_eq!(&h.destination, &Some(Addr::Inet(SocketAddr::new(Ipv4Addr::from(d).into(), dp))));
        prop_assert_eq!(h.protocol, Protocol::Stream);
        // And the encoder writes exactly that line.
        prop_assert_eq!(h.encode(Version::V1).unwrap(), line.into_bytes());
    }

    #[test]
    fn v1_tcp6_agrees_with_a_plain_formatter(s in ipv6(), d in ipv6(), sp in any::<u16>(), dp in any::<u16>()) {
        // Uncompressed groups and std's canonical form are both read.
        for (src, dst) in [(ipv6_expanded(&s), ipv6_expanded(&d)), (s.to_string(), d.to_string())] {
            let line = format!("PROXY TCP6 {src} {dst} {sp} {dp}\r\n");
            let (h, n) = parse_whole(line.as_bytes());
            prop_assert_eq!(n, line.len());
            prop_assert_eq!(h.source, Some(Addr::Inet(SocketAddr::new(s.into(), sp))));
            prop_assert_eq!(h.destination, Some(Addr::Inet(SocketAddr::new(d.into(), dp))));
        }
    }

    #[test]
    fn v1_refuses_leading_zeros_and_out_of_range_ports(
        s in any::<[u8; 4]>(),
        port in any::<u16>(),
        big in 65_536u32..100_000,
        octet in 0usize..4,
    ) {
        let ip = format!("{}.{}.{}.{}", s[0], s[1], s[2], s[3]);
        let padded_port = format!("PROXY TCP4 {ip} {ip} 0{port} 1\r\n");
        prop_assert!(matches!(ProxyHeader::parse(padded_port.as_bytes()), Err(ProxyError::V1Malformed(_))));
        let big_port = format!("PROXY TCP4 {ip} {ip} 1 {big}\r\n");
        prop_assert!(matches!(ProxyHeader::parse(big_port.as_bytes()), Err(ProxyError::V1Malformed(_))));
        let mut octets: Vec<String> = s.iter().map(u8::to_string).collect();
        octets[octet] = format!("0{}", octets[octet]);
        let padded_ip = format!("PROXY TCP4 {} {ip} 1 2\r\n", octets.join("."));
        prop_assert!(matches!(ProxyHeader::parse(padded_ip.as_bytes()), Err(ProxyError::V1Malformed(_))));
    }
}
