//! The Confluent wire format: magic byte 0, the schema id as a 4-byte
//! big-endian integer, then the Avro binary body. Any Confluent-compatible
//! client (Java, confluent-kafka for Python, Go) reads surge's records with it.

/// The only magic byte defined by the format.
pub const MAGIC: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// Bytes that are not a Confluent-framed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("record has no value (null or empty)")]
    Empty,
    #[error("record is {len} bytes, shorter than the 5-byte Confluent header")]
    Truncated { len: usize },
    #[error("magic byte is {0:#04x}, expected 0x00 (not Confluent wire format)")]
    BadMagic(u8),
}

/// Prefixes an Avro body with the header for `schema_id`.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a framed record into its schema id and Avro body.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), WireError> {
    match bytes {
        [] => Err(WireError::Empty),
        [magic, ..] if *magic != MAGIC => Err(WireError::BadMagic(*magic)),
        _ if bytes.len() < HEADER_LEN => Err(WireError::Truncated { len: bytes.len() }),
        _ => {
            let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
            Ok((id, &bytes[HEADER_LEN..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_splits() {
        let framed = frame(0x0102_0304, b"body");
        assert_eq!(&framed[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(split(&framed).unwrap(), (0x0102_0304, &b"body"[..]));
    }

    #[test]
    fn rejects_what_is_not_framed() {
        assert_eq!(split(&[]), Err(WireError::Empty));
        assert_eq!(split(&[0, 0, 1]), Err(WireError::Truncated { len: 3 }));
        assert_eq!(split(&[7, 0, 0, 0, 1, 2]), Err(WireError::BadMagic(7)));
        assert_eq!(split(b"{\"json\":1}"), Err(WireError::BadMagic(b'{')));
    }
}
