//! Arbitrary bytes into `ProxyHeader::parse`: it must not panic, a header
//! it finds must lie within the input, and a header it finds must encode
//! and parse back to itself.
//!
//! `cd fuzz && cargo +nightly fuzz run proxy_header`

#![no_main]

use atoll::proxy::{tlv, Parsed, ProxyHeader};
use libfuzzer_sys::fuzz_target;

/// The header with its CRC32C value zeroed: re-encoding computes it anew
/// over bytes that may differ (a `LOCAL` header's addresses, an abstract
/// Unix socket name and the like are not kept).
fn without_crc_value(mut header: ProxyHeader) -> ProxyHeader {
    for t in &mut header.tlvs {
        if t.kind == tlv::CRC32C {
            t.value = vec![0; 4];
        }
    }
    header
}

fuzz_target!(|data: &[u8]| {
    let (header, len) = match ProxyHeader::parse(data) {
        Ok(Parsed::Header(header, len)) => (header, len),
        Ok(Parsed::Incomplete { total: Some(total) }) => {
            assert!(
                total > data.len(),
                "incomplete with all {total} bytes there"
            );
            return;
        }
        Ok(Parsed::Incomplete { total: None }) | Err(_) => return,
    };
    assert!(
        len <= data.len(),
        "header of {len} bytes in {} bytes",
        data.len()
    );
    // What follows the header does not change it.
    assert_eq!(
        ProxyHeader::parse(&data[..len]),
        Ok(Parsed::Header(header.clone(), len))
    );

    // Every parsed header can be written again in its version.
    let bytes = match header.encode(header.version) {
        Ok(bytes) => bytes,
        Err(e) => panic!("{header:?} parsed but does not encode: {e}"),
    };
    let again = match ProxyHeader::parse(&bytes) {
        Ok(Parsed::Header(again, n)) => {
            assert_eq!(n, bytes.len());
            again
        }
        other => panic!("{header:?} encoded as {bytes:?}, which parses as {other:?}"),
    };
    assert_eq!(without_crc_value(again.clone()), without_crc_value(header));
    // The re-encoded bytes are canonical.
    assert_eq!(again.encode(again.version).as_deref(), Ok(&bytes[..]));
});
