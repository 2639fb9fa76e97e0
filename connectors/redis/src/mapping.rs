//! coupon-result → keys. Every key of one coupon comes from the coupon's one
//! partition of coupon-result, so the record's offset orders its writes.

use std::collections::HashMap;

use surge_schemas::coupon::{CouponDecision, Outcome};
use surge_sink::{Mapping, Position};

/// One batch of coupon-result, reduced to what the cache keeps.
#[derive(Debug, Default)]
pub struct CouponResultKeys {
    /// Latest decision per coupon: the coupon hash is last-write-wins.
    pub coupons: HashMap<String, (Position, CouponDecision)>,
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
                self.coupons.insert(d.coupon_id.clone(), (at, d.clone()));
                self.decisions.push((at, d));
            }
        }
    }

    fn writes(&self) -> usize {
        self.coupons.len()
            + self.decisions.len()
            + self
                .decisions
                .iter()
                .filter(|(_, d)| d.user_id.is_some())
                .count()
            + self.deleted.len()
    }
}

/// The fields of a coupon hash (besides `offset`).
pub fn coupon_fields(at: Position, d: &CouponDecision) -> Vec<(&'static str, String)> {
    vec![
        ("stock", d.stock.to_string()),
        ("issued", d.issued.to_string()),
        ("remaining", d.remaining.to_string()),
        ("decided_at", d.decided_at.timestamp_millis().to_string()),
        ("partition", at.partition.to_string()),
    ]
}

/// The fields of a request hash (besides `offset`); absent values are left out.
pub fn request_fields(at: Position, d: &CouponDecision) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("outcome", d.outcome.symbol().to_string()),
        ("coupon_id", d.coupon_id.clone()),
        ("stock", d.stock.to_string()),
        ("issued", d.issued.to_string()),
        ("remaining", d.remaining.to_string()),
        (
            "requested_at",
            d.requested_at.timestamp_millis().to_string(),
        ),
        ("decided_at", d.decided_at.timestamp_millis().to_string()),
        ("partition", at.partition.to_string()),
    ];
    if let Some(u) = &d.user_id {
        f.push(("user_id", u.clone()));
    }
    if let Some(s) = d.sequence {
        f.push(("sequence", s.to_string()));
    }
    if let Some(r) = &d.reason {
        f.push(("reason", r.clone()));
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
