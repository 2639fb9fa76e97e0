//! The canonical encoding request fingerprints are hashed from, shared by
//! every pipeline that tells a retry from a reused id (the coupon
//! pipeline's request ids, the saga's order ids).
//!
//! Fingerprints are persisted in changelogs, so this encoding is frozen: a
//! tag is one byte; a string its length (u64 BE) then its bytes; a number
//! i64 BE; an optional value a tag 0 (none) or 1 followed by the value.
//! Streamed into xxh3 on the stack: no allocation.

use xxhash_rust::xxh3::Xxh3Default;

pub struct Canonical(Xxh3Default);

impl Canonical {
    pub fn new() -> Self {
        Self(Xxh3Default::new())
    }

    pub fn tag(&mut self, t: u8) {
        self.0.update(&[t]);
    }

    pub fn str(&mut self, s: &str) {
        self.0.update(&(s.len() as u64).to_be_bytes());
        self.0.update(s.as_bytes());
    }

    pub fn int(&mut self, v: i64) {
        self.0.update(&v.to_be_bytes());
    }

    pub fn opt<T>(&mut self, v: Option<T>, mut f: impl FnMut(&mut Self, T)) {
        match v {
            None => self.tag(0),
            Some(v) => {
                self.tag(1);
                f(self, v);
            }
        }
    }

    pub fn digest64(&self) -> u64 {
        self.0.digest()
    }

    pub fn digest128(&self) -> u128 {
        self.0.digest128()
    }
}

impl Default for Canonical {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Canonical;

    #[test]
    fn the_encoding_is_the_frozen_one() {
        // Written out byte by byte: a change to Canonical that alters what
        // is hashed fails here before it misreads any stored fingerprint.
        let mut c = Canonical::new();
        c.tag(7);
        c.str("ab");
        c.int(-2);
        c.opt(None::<i64>, Canonical::int);
        c.opt(Some("x"), Canonical::str);
        let mut bytes = vec![7u8];
        bytes.extend(2u64.to_be_bytes());
        bytes.extend(b"ab");
        bytes.extend((-2i64).to_be_bytes());
        bytes.push(0);
        bytes.push(1);
        bytes.extend(1u64.to_be_bytes());
        bytes.extend(b"x");
        assert_eq!(c.digest64(), xxhash_rust::xxh3::xxh3_64(&bytes));
        assert_eq!(c.digest128(), xxhash_rust::xxh3::xxh3_128(&bytes));
    }
}
