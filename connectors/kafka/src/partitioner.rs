//! The partitioner Java clients use by default (and librdkafka's `murmur2`
//! / `murmur2_random` for non-null keys): `(murmur2(key) & 0x7fffffff) % n`.
//!
//! Every surge process that decides where a record belongs (the gateway's
//! producer, a pipeline routing a command to another pipeline, a pipeline
//! checking that an input record arrived on the partition that owns it)
//! uses this one function, so a key lands on the same partition whichever
//! client wrote it — Java's, the gateway's, or ours.

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (> 0), as Java's default
/// partitioner chooses it for a keyed record.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn matches_the_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), *want, "{}", String::from_utf8_lossy(data));
        }
    }

    /// Cross-checks against librdkafka's own murmur2 partitioner (the one a
    /// producer with `partitioner=murmur2_random` runs) on many keys.
    #[test]
    fn matches_librdkafka() {
        for i in 0..5_000u32 {
            let key = format!("coupon-{i}:{}", i.wrapping_mul(2654435761));
            for n in [1, 2, 3, 6, 12, 64] {
                let theirs = unsafe {
                    rdkafka::bindings::rd_kafka_msg_partitioner_murmur2(
                        std::ptr::null(),
                        key.as_ptr() as *const std::ffi::c_void,
                        key.len(),
                        n,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
                assert_eq!(partition_for(key.as_bytes(), n), theirs, "{key} over {n}");
            }
        }
    }
}
