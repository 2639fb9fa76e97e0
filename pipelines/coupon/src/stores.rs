//! Invariant 6 of DESIGN.md: the stores say exactly what coupon-result
//! says. A store is read into a [`StoreView`]; the topic's committed
//! decisions give the expected view; [`compare`] names every difference.
//! Used by `surge verify` and the sink tests.

use std::collections::BTreeMap;

use surge_schemas::coupon::{CouponDecision, Outcome};

/// What a store holds for coupons, reduced to what must match the topic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreView {
    /// coupon id → (stock, issued, remaining) after its latest decision.
    pub coupons: BTreeMap<String, (i64, i64, i64)>,
    /// (coupon id, request id) → its decision (a request id names a
    /// request of one coupon).
    pub decisions: BTreeMap<(String, String), StoredDecision>,
    /// (coupon id, user id) → the sequence of the unit the user holds.
    pub holders: BTreeMap<(String, String), i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDecision {
    pub coupon_id: String,
    pub user_id: Option<String>,
    pub outcome: String,
    pub sequence: Option<i64>,
}

impl StoreView {
    /// The view the topic implies. `decisions` in log order within each
    /// partition (all of a coupon's decisions share one partition).
    pub fn from_topic<'a>(decisions: impl IntoIterator<Item = &'a CouponDecision>) -> Self {
        let mut view = Self::default();
        for d in decisions {
            // A coupon is there once a decision proved it; the others only
            // update it (see `Outcome::proves_coupon`), as the sinks do.
            if d.outcome.proves_coupon() || view.coupons.contains_key(&d.coupon_id) {
                view.coupons
                    .insert(d.coupon_id.clone(), (d.stock, d.issued, d.remaining));
            }
            view.decisions.insert(
                (d.coupon_id.clone(), d.request_id.clone()),
                StoredDecision {
                    coupon_id: d.coupon_id.clone(),
                    user_id: d.user_id.clone(),
                    outcome: d.outcome.symbol().to_string(),
                    sequence: d.sequence,
                },
            );
            if d.outcome == Outcome::Issued {
                if let (Some(user), Some(seq)) = (&d.user_id, d.sequence) {
                    view.holders
                        .insert((d.coupon_id.clone(), user.clone()), seq);
                }
            }
        }
        view
    }

    pub fn is_empty(&self) -> bool {
        self.coupons.is_empty() && self.decisions.is_empty() && self.holders.is_empty()
    }
}

/// Every way `store` differs from `expected`, one line per kind with counts
/// and first examples; empty when they are equal.
pub fn compare(store: &str, expected: &StoreView, actual: &StoreView) -> Vec<String> {
    let mut out = Vec::new();
    diff(
        store,
        "coupons",
        &expected.coupons,
        &actual.coupons,
        &mut out,
    );
    diff(
        store,
        "decisions",
        &expected.decisions,
        &actual.decisions,
        &mut out,
    );
    diff(
        store,
        "holders",
        &expected.holders,
        &actual.holders,
        &mut out,
    );
    out
}

fn diff<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    store: &str,
    what: &str,
    expected: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
    out: &mut Vec<String>,
) {
    let missing: Vec<&K> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    let extra: Vec<&K> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    let different: Vec<String> = expected
        .iter()
        .filter_map(|(k, v)| match actual.get(k) {
            Some(a) if a != v => Some(format!("{k:?}: topic {v:?}, store {a:?}")),
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "6. {store}: {} of {} {what} missing, e.g. {:?}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if !extra.is_empty() {
        out.push(format!(
            "6. {store}: {} {what} not on the topic, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(5)]
        ));
    }
    if !different.is_empty() {
        out.push(format!(
            "6. {store}: {} {what} differ from the topic, e.g. {:?}",
            different.len(),
            &different[..different.len().min(5)]
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn decision(
        request: &str,
        user: &str,
        outcome: Outcome,
        seq: Option<i64>,
        issued: i64,
    ) -> CouponDecision {
        CouponDecision {
            order_id: None,
            discount: None,
            request_id: request.into(),
            coupon_id: "c".into(),
            user_id: Some(user.into()),
            outcome,
            sequence: seq,
            stock: 1,
            issued,
            remaining: 1 - issued,
            reason: None,
            source_partition: 0,
            source_offset: 0,
            requested_at: Utc::now(),
            decided_at: Utc::now(),
        }
    }

    #[test]
    fn the_latest_decision_sets_the_coupon_row_and_issued_users_are_holders() {
        let log = [
            decision("r1", "u1", Outcome::Issued, Some(1), 1),
            decision("r2", "u2", Outcome::SoldOut, None, 1),
        ];
        let v = StoreView::from_topic(&log);
        assert_eq!(v.coupons["c"], (1, 1, 0));
        assert_eq!(v.holders.len(), 1);
        assert_eq!(v.holders[&("c".to_string(), "u1".to_string())], 1);
        assert_eq!(v.decisions[&("c".into(), "r2".into())].outcome, "SOLD_OUT");
        assert!(compare("s", &v, &v).is_empty());
    }

    #[test]
    fn a_coupon_nobody_created_never_becomes_a_row() {
        let ghost = |request: &str, outcome: Outcome| CouponDecision {
            coupon_id: "ghost".into(),
            stock: 0,
            remaining: 0,
            ..decision(request, "u1", outcome, None, 0)
        };
        let log = [
            ghost("g1", Outcome::UnknownCoupon),
            ghost("g2", Outcome::Invalid),
            ghost("g3", Outcome::RedeemRejected),
            // Then a real coupon's refusals do update its row.
            decision("r1", "u1", Outcome::Issued, Some(1), 1),
            CouponDecision {
                stock: 5,
                remaining: 4,
                ..decision("r9", "u9", Outcome::Invalid, None, 1)
            },
        ];
        let v = StoreView::from_topic(&log);
        assert_eq!(
            v.coupons.keys().collect::<Vec<_>>(),
            ["c"],
            "only the coupon a decision proved"
        );
        assert_eq!(v.coupons["c"], (5, 1, 4), "INVALID updates a known coupon");
        assert_eq!(
            v.decisions[&("ghost".into(), "g1".into())].outcome,
            "UNKNOWN_COUPON",
            "the decisions stay: they are the answers requests got"
        );
    }

    #[test]
    fn a_missing_row_an_extra_row_and_a_changed_row_are_each_reported() {
        let log = [
            decision("r1", "u1", Outcome::Issued, Some(1), 1),
            decision("r2", "u2", Outcome::SoldOut, None, 1),
        ];
        let expected = StoreView::from_topic(&log);
        let mut store = expected.clone();
        store.decisions.remove(&("c".into(), "r2".into()));
        store.holders.insert(("c".into(), "u9".into()), 2);
        store.coupons.insert("c".into(), (1, 0, 1));
        let found = compare("postgres", &expected, &store);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].contains("coupons differ") && found[0].contains("(1, 1, 0)"));
        assert!(found[1].contains("1 of 2 decisions missing") && found[1].contains("r2"));
        assert!(found[2].contains("holders not on the topic") && found[2].contains("u9"));
    }
}
