//! Topic → rows, declared per topic. A mapping decodes a record and turns a
//! batch of them into upserts (Kafka Connect JDBC sink conventions:
//! insert.mode=upsert, pk.mode=record_key; a tombstone deletes by key).

use std::collections::HashMap;

use surge_schemas::coupon::{CouponDecision, Outcome};

/// coupon-result: the coupon row, the issued unit, the request's decision.
#[derive(Debug, Default)]
pub struct CouponResultRows {
    /// Latest decision per coupon (the coupon row is last-write-wins in log order).
    pub coupons: HashMap<String, CouponDecision>,
    pub issued: Vec<CouponDecision>,
    /// Latest per request id (there is one per request id on a healthy topic).
    pub decisions: HashMap<String, CouponDecision>,
    /// Coupons whose key got a tombstone: their rows are deleted.
    pub deleted: Vec<String>,
}

impl CouponResultRows {
    /// Adds one record, in log order.
    pub fn add(&mut self, key: Option<&[u8]>, decision: Option<CouponDecision>) {
        match decision {
            None => {
                if let Some(k) = key.and_then(|k| std::str::from_utf8(k).ok()) {
                    self.coupons.remove(k);
                    self.issued.retain(|d| d.coupon_id != k);
                    self.decisions.retain(|_, d| d.coupon_id != k);
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

    pub fn is_empty(&self) -> bool {
        self.coupons.is_empty()
            && self.issued.is_empty()
            && self.decisions.is_empty()
            && self.deleted.is_empty()
    }

    pub fn row_count(&self) -> usize {
        self.coupons.len() + self.issued.len() + self.decisions.len() + self.deleted.len()
    }
}
