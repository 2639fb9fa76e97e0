//! The payment attempts of one partition: every payment-request the
//! pipeline has accepted, and its definite outcome once known.
//!
//! An attempt is recorded (the intent, committed with the request's offset)
//! before any call is made for it, and resolved (committed with the reply)
//! once the provider's outcome is definite. Between the two, only calls
//! under the attempt's own idempotency key happen, so a crash anywhere in
//! between replays calls the provider answers from memory. The changelog is
//! one JSON record per payment id (last value wins).

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use surge_engine::{ChangelogRecord, Millis, PartitionState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Charge,
    Refund,
}

/// The provider's definite answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub approved: bool,
    /// The decline code when not approved.
    pub code: Option<String>,
    /// The provider's id of the charge or refund.
    pub provider_ref: Option<String>,
    /// True when found by lookup after the key's retention ran out.
    pub by_lookup: bool,
}

/// One charge or refund asked by the saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The idempotency key.
    pub payment_id: String,
    pub order_id: String,
    pub user_id: String,
    pub kind: Kind,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    /// When the saga asked: the key cannot have been used before.
    pub requested_at: Millis,
    /// REFUND: the charge's payment id.
    pub refund_of: Option<String>,
    pub resolution: Option<Resolution>,
}

/// All attempts of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentBook {
    attempts: HashMap<String, Attempt>,
    /// Attempts without a definite outcome yet.
    pending: BTreeSet<String>,
}

impl PaymentBook {
    pub fn attempt(&self, payment_id: &str) -> Option<&Attempt> {
        self.attempts.get(payment_id)
    }

    /// Attempts waiting for the provider, in payment id order.
    pub fn pending(&self) -> impl Iterator<Item = &Attempt> {
        self.pending.iter().filter_map(|id| self.attempts.get(id))
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn len(&self) -> usize {
        self.attempts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }

    fn put(&mut self, a: Attempt) {
        if a.resolution.is_none() {
            self.pending.insert(a.payment_id.clone());
        } else {
            self.pending.remove(&a.payment_id);
        }
        self.attempts.insert(a.payment_id.clone(), a);
    }

    fn remove(&mut self, id: &str) {
        self.attempts.remove(id);
        self.pending.remove(id);
    }
}

/// One attempt's entry replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptChange {
    pub before: Option<Box<Attempt>>,
    pub after: Box<Attempt>,
}

impl PartitionState for PaymentBook {
    type Change = AttemptChange;

    fn apply(&mut self, change: &AttemptChange) {
        self.put((*change.after).clone());
    }

    fn revert(&mut self, change: &AttemptChange) {
        match &change.before {
            Some(b) => self.put((**b).clone()),
            None => self.remove(&change.after.payment_id),
        }
    }

    fn changelog_records(&self, change: &AttemptChange, out: &mut Vec<ChangelogRecord>) {
        let id = &change.after.payment_id;
        if let Some(a) = self.attempts.get(id) {
            let value = serde_json::to_vec(a).expect("an attempt serializes");
            out.push((id.as_bytes().to_vec(), Some(value)));
        }
    }

    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let id = std::str::from_utf8(key).map_err(|e| format!("payment id: {e}"))?;
        match value {
            None => self.remove(id),
            Some(v) => {
                let a: Attempt =
                    serde_json::from_slice(v).map_err(|e| format!("attempt {id}: {e}"))?;
                if a.payment_id != id {
                    return Err(format!("key {id} holds attempt {}", a.payment_id));
                }
                self.put(a);
            }
        }
        Ok(())
    }

    fn approx_bytes(&self) -> usize {
        self.attempts
            .values()
            .map(|a| {
                std::mem::size_of::<Attempt>()
                    + a.payment_id.len() * 3
                    + a.order_id.len()
                    + a.user_id.len()
                    + 64
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_engine::laws;

    fn attempt(id: &str, resolved: bool) -> Attempt {
        Attempt {
            payment_id: id.into(),
            order_id: format!("o-{id}"),
            user_id: "u".into(),
            kind: Kind::Charge,
            amount: 1200,
            currency: "KRW".into(),
            requested_at: 7,
            refund_of: None,
            resolution: resolved.then(|| Resolution {
                approved: true,
                code: None,
                provider_ref: Some("ch_1".into()),
                by_lookup: false,
            }),
        }
    }

    #[test]
    fn the_book_obeys_the_state_laws_and_indexes_what_is_pending() {
        let changes = vec![
            AttemptChange {
                before: None,
                after: Box::new(attempt("a", false)),
            },
            AttemptChange {
                before: None,
                after: Box::new(attempt("b", false)),
            },
            AttemptChange {
                before: Some(Box::new(attempt("a", false))),
                after: Box::new(attempt("a", true)),
            },
        ];
        laws::assert_apply_revert_identity(&PaymentBook::default(), &changes);
        for n in 0..=changes.len() {
            let (state, log) = laws::changelog_of::<PaymentBook>(&changes[..n]);
            laws::assert_restore_rebuilds(&state, &log);
        }
        let (state, _) = laws::changelog_of::<PaymentBook>(&changes);
        let pending: Vec<&str> = state.pending().map(|a| a.payment_id.as_str()).collect();
        assert_eq!(pending, ["b"], "a is resolved");
    }
}
