//! CRC32C (Castagnoli), the checksum of a PROXY v2 header's CRC32C TLV:
//! bytes in, a `u32` out; it never looks at a header or knows where the
//! checksum sits in one.

/// CRC32C (Castagnoli), reflected, polynomial 0x82F63B78.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Continues a CRC32C over `bytes`, without the initial and final
/// inversions.
pub(super) fn update(crc: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(crc, |crc, &b| {
        (crc >> 8) ^ TABLE[usize::from(crc as u8 ^ b)]
    })
}

/// The CRC32C of `bytes`.
pub(super) fn checksum(bytes: &[u8]) -> u32 {
    !update(!0, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value() {
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
        assert_eq!(checksum(b""), 0);
        // RFC 3720, B.4: 32 bytes of zeros.
        assert_eq!(checksum(&[0; 32]), 0x8A91_36AA);
        assert_eq!(checksum(&[0xff; 32]), 0x62A8_AB43);
    }
}
