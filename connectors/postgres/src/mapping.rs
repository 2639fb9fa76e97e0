//! coupon-result → rows (Kafka Connect JDBC sink conventions:
//! insert.mode=upsert, pk.mode=record_key; a tombstone deletes by key).

use std::collections::HashMap;

use surge_schemas::coupon::{CouponDecision, Outcome};
use surge_sink::{Mapping, Position};

/// coupon-result: the coupon row, the issued unit, the request's decision.
#[derive(Debug, Default)]
pub struct CouponResultRows {
    /// Latest decision per coupon (the coupon row is last-write-wins in log order).
    pub coupons: HashMap<String, CouponDecision>,
    pub issued: Vec<CouponDecision>,
    /// Latest per request id (there is one per request id on a healthy topic).
    pub decisions: HashMap<String, CouponDecision>,
    /// Coupons whose key got a tombstone: the coupon row and its issued units
    /// are deleted. Decisions stay: they are the answers requests got.
    pub deleted: Vec<String>,
}

impl Mapping for CouponResultRows {
    type Value = CouponDecision;

    fn add(&mut self, _at: Position, key: Option<&[u8]>, decision: Option<CouponDecision>) {
        match decision {
            None => {
                if let Some(k) = key.and_then(|k| std::str::from_utf8(k).ok()) {
                    self.coupons.remove(k);
                    self.issued.retain(|d| d.coupon_id != k);
                    self.deleted.push(k.to_string());
                }
            }
            Some(d) => {
                if d.outcome == Outcome::Issued {
                    self.issued.push(d.clone());
                }
                self.coupons.insert(d.coupon_id.clone(), d.clone());
                self.decisions.insert(d.request_id.clone(), d);
            }
        }
    }

    fn writes(&self) -> usize {
        self.coupons.len() + self.issued.len() + self.decisions.len() + self.deleted.len()
    }
}
