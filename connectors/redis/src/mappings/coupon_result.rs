//! coupon-result → the coupon hash, one hash per request and its entry in
//! the request id's coupons, the coupon's users hash (README "The Redis sink").

use std::collections::HashMap;

use surge_schemas::coupon::{CouponDecision, Outcome};
use surge_sink::{Mapping, Position};

use super::{HashWrite, KeyMapping, KeyWrites, StatusWrite};
use crate::keys::Keyspace;

/// One batch of coupon-result, reduced to what the cache keeps.
#[derive(Debug, Default)]
pub struct CouponResultKeys {
    /// Latest decision per coupon: the coupon hash is last-write-wins; and
    /// whether a decision of the batch proved the coupon exists
    /// (`Outcome::proves_coupon`): only then may the hash be created.
    pub coupons: HashMap<String, (Position, CouponDecision, bool)>,
    /// Every decision, in log order: one request hash each, and the user's
    /// status when the request came from a user.
    pub decisions: Vec<(Position, CouponDecision)>,
    /// Coupons whose key got a tombstone: the coupon and users hashes go
    /// (before anything later in the batch is written). Request decisions
    /// stay: they are the answers requests got.
    pub deleted: Vec<String>,
}

impl Mapping for CouponResultKeys {
    type Value = CouponDecision;

    fn add(&mut self, at: Position, key: Option<&[u8]>, value: Option<CouponDecision>) {
        match value {
            None => {
                if let Some(k) = key.and_then(|k| std::str::from_utf8(k).ok()) {
                    self.coupons.remove(k);
                    self.decisions.retain(|(_, d)| d.coupon_id != k);
                    self.deleted.push(k.to_string());
                }
            }
            Some(d) => {
                let proved = d.outcome.proves_coupon()
                    || self.coupons.get(&d.coupon_id).is_some_and(|(_, _, p)| *p);
                self.coupons
                    .insert(d.coupon_id.clone(), (at, d.clone(), proved));
                self.decisions.push((at, d));
            }
        }
    }

    fn writes(&self) -> usize {
        self.coupons.len()
            + 2 * self.decisions.len()
            + self
                .decisions
                .iter()
                .filter(|(_, d)| d.user_id.is_some())
                .count()
            + self.deleted.len()
    }
}

/// The field names of the coupon and request hashes: written by
/// [`coupon_fields`] and [`request_fields`], read back by `crate::reads`,
/// so writer and reader cannot drift. (`offset`, the record's offset, is
/// the script's.)
pub mod fields {
    pub const OUTCOME: &str = "outcome";
    pub const COUPON_ID: &str = "coupon_id";
    pub const USER_ID: &str = "user_id";
    pub const SEQUENCE: &str = "sequence";
    pub const STOCK: &str = "stock";
    pub const ISSUED: &str = "issued";
    pub const REMAINING: &str = "remaining";
    pub const REASON: &str = "reason";
    /// Milliseconds since the epoch.
    pub const REQUESTED_AT: &str = "requested_at";
    /// Milliseconds since the epoch.
    pub const DECIDED_AT: &str = "decided_at";
    pub const PARTITION: &str = "partition";
}

/// The fields of a coupon hash (besides `offset`).
pub fn coupon_fields(at: Position, d: &CouponDecision) -> Vec<(&'static str, String)> {
    vec![
        (fields::STOCK, d.stock.to_string()),
        (fields::ISSUED, d.issued.to_string()),
        (fields::REMAINING, d.remaining.to_string()),
        (
            fields::DECIDED_AT,
            d.decided_at.timestamp_millis().to_string(),
        ),
        (fields::PARTITION, at.partition.to_string()),
    ]
}

/// The fields of a request hash (besides `offset`); absent values are left out.
pub fn request_fields(at: Position, d: &CouponDecision) -> Vec<(&'static str, String)> {
    let mut f = vec![
        (fields::OUTCOME, d.outcome.symbol().to_string()),
        (fields::COUPON_ID, d.coupon_id.clone()),
        (fields::STOCK, d.stock.to_string()),
        (fields::ISSUED, d.issued.to_string()),
        (fields::REMAINING, d.remaining.to_string()),
        (
            fields::REQUESTED_AT,
            d.requested_at.timestamp_millis().to_string(),
        ),
        (
            fields::DECIDED_AT,
            d.decided_at.timestamp_millis().to_string(),
        ),
        (fields::PARTITION, at.partition.to_string()),
    ];
    if let Some(u) = &d.user_id {
        f.push((fields::USER_ID, u.clone()));
    }
    if let Some(s) = d.sequence {
        f.push((fields::SEQUENCE, s.to_string()));
    }
    if let Some(r) = &d.reason {
        f.push((fields::REASON, r.clone()));
    }
    f
}

/// What a user's status becomes with this decision (ISSUED sticks: the
/// script never replaces it with a later non-ISSUED status).
pub fn user_status(d: &CouponDecision) -> (&'static str, Option<i64>) {
    let sequence = if d.outcome == Outcome::Issued {
        d.sequence
    } else {
        None
    };
    (d.outcome.symbol(), sequence)
}

impl KeyMapping for CouponResultKeys {
    fn key_writes(&self, keys: &Keyspace) -> KeyWrites {
        let mut w = KeyWrites::default();
        for coupon in &self.deleted {
            w.deletes.push(keys.coupon(coupon));
            w.deletes.push(keys.users(coupon));
        }
        for (at, d, proved) in self.coupons.values() {
            w.hashes.push(HashWrite {
                key: keys.coupon(&d.coupon_id),
                offset: at.offset,
                // A decision that does not prove its coupon exists
                // (UNKNOWN_COUPON, ...) only updates a coupon that does.
                only_existing: !proved,
                fields: coupon_fields(*at, d),
            });
        }
        for (at, d) in &self.decisions {
            w.once.push((
                keys.request_coupons(&d.request_id),
                d.coupon_id.clone(),
                "1".to_string(),
            ));
            w.hashes.push(HashWrite {
                key: keys.request(&d.coupon_id, &d.request_id),
                offset: at.offset,
                only_existing: false,
                fields: request_fields(*at, d),
            });
            if let Some(user) = &d.user_id {
                let (outcome, sequence) = user_status(d);
                w.statuses.push(StatusWrite {
                    key: keys.users(&d.coupon_id),
                    field: user.clone(),
                    offset: at.offset,
                    status: match sequence {
                        Some(s) => format!("{outcome} {s}"),
                        None => outcome.to_string(),
                    },
                    // A holder stays a holder.
                    sticky: Some(Outcome::Issued.symbol()),
                });
            }
        }
        w
    }
}
