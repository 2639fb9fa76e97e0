//! The Idempotency-Key rules (Stripe's and Toss's), as pure decisions: what
//! a key may look like, when two requests are "the same request", and what a
//! request meets when its key is already known. Storing keys is the
//! ledger's job; this module never touches the database.
//!
//! One key space serves both endpoints: a refund under a charge's key is a
//! different request (the endpoint is part of the hash) and is refused.

use std::time::Duration;

/// Longest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// The key from the `Idempotency-Key` header: 1..=255 bytes of printable
/// ASCII (space included, as providers allow). `Err` says what is wrong.
pub fn parse_key(header: Option<&[u8]>) -> Result<String, String> {
    let Some(raw) = header else {
        return Err("the Idempotency-Key header is required".into());
    };
    if raw.is_empty() || raw.len() > MAX_KEY_BYTES {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
            raw.len()
        ));
    }
    if !raw.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err("Idempotency-Key must be printable ASCII".into());
    }
    // All ASCII, so this never replaces anything.
    Ok(String::from_utf8_lossy(raw).into_owned())
}

/// What identifies a request for its key: the endpoint and the parsed body
/// fields (amounts in minor units, so "12.3" and "12.30" are one request).
/// Length-prefixed, so no two field lists share an encoding.
pub fn request_hash(endpoint: &str, fields: &[(&str, &str)]) -> String {
    let mut canonical = String::new();
    for part in std::iter::once(endpoint).chain(fields.iter().flat_map(|(k, v)| [*k, *v])) {
        canonical.push_str(&part.len().to_string());
        canonical.push(':');
        canonical.push_str(part);
    }
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(canonical.as_bytes()))
}

/// A key the ledger already holds, within its retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    pub request_hash: String,
    pub endpoint: String,
    pub state: KeyState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Claimed by a request still being processed.
    InFlight,
    /// Answered definitely: the payment holding the stored answer.
    Done { payment_id: String },
}

/// What a request meets under a known key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The same request was answered: send its stored answer again.
    Replay { payment_id: String },
    /// The key was used for a different request (body or endpoint): 422.
    KeyReused { endpoint: String },
    /// The same request is still being processed: 409.
    InFlight,
}

/// The rules for a known key. A different request is refused whatever the
/// first one's state, so a client learns about its bug at once.
pub fn judge(known: &KnownKey, request_hash: &str) -> Verdict {
    if known.request_hash != request_hash {
        return Verdict::KeyReused {
            endpoint: known.endpoint.clone(),
        };
    }
    match &known.state {
        KeyState::InFlight => Verdict::InFlight,
        KeyState::Done { payment_id } => Verdict::Replay {
            payment_id: payment_id.clone(),
        },
    }
}

/// A claim older than this belongs to a pg-sim that died mid-request (a live
/// request holds its claim for at most its latency, which is capped at half
/// of this, plus a few queries) and may be taken over. Even a wrong takeover
/// cannot apply a payment twice: completing needs the claim's own token.
pub fn takeover_after(hang: Duration) -> Duration {
    hang * 2 + Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_up_to_255_bytes() {
        assert_eq!(parse_key(Some(b"pay-1")).as_deref(), Ok("pay-1"));
        assert!(parse_key(Some(b"with space")).is_ok());
        assert!(parse_key(Some("x".repeat(255).as_bytes())).is_ok());
        assert!(parse_key(None).is_err());
        assert!(parse_key(Some(b"")).is_err());
        assert!(parse_key(Some("x".repeat(256).as_bytes())).is_err());
        assert!(parse_key(Some(b"tab\there")).is_err());
        assert!(parse_key(Some("caf\u{e9}".as_bytes())).is_err());
    }

    #[test]
    fn the_hash_covers_endpoint_and_every_field_unambiguously() {
        let a = request_hash("/v1/charges", &[("orderId", "o1"), ("amount", "1230")]);
        assert_eq!(
            a,
            request_hash("/v1/charges", &[("orderId", "o1"), ("amount", "1230")])
        );
        assert_ne!(
            a,
            request_hash("/v1/refunds", &[("orderId", "o1"), ("amount", "1230")])
        );
        assert_ne!(
            a,
            request_hash("/v1/charges", &[("orderId", "o1"), ("amount", "1231")])
        );
        // "ab"+"c" and "a"+"bc" must not collide.
        assert_ne!(
            request_hash("e", &[("ab", "c")]),
            request_hash("e", &[("a", "bc")])
        );
    }

    #[test]
    fn a_known_key_replays_refuses_or_waits() {
        let done = KnownKey {
            request_hash: "h".into(),
            endpoint: "/v1/charges".into(),
            state: KeyState::Done {
                payment_id: "ch_1".into(),
            },
        };
        assert_eq!(
            judge(&done, "h"),
            Verdict::Replay {
                payment_id: "ch_1".into()
            }
        );
        assert_eq!(
            judge(&done, "other"),
            Verdict::KeyReused {
                endpoint: "/v1/charges".into()
            }
        );
        let in_flight = KnownKey {
            state: KeyState::InFlight,
            ..done
        };
        assert_eq!(judge(&in_flight, "h"), Verdict::InFlight);
        assert!(matches!(
            judge(&in_flight, "other"),
            Verdict::KeyReused { .. }
        ));
    }
}
