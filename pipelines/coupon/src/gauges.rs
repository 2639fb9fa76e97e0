//! Stock burn-down per coupon, derived from the committed books: what an
//! operator watches during a sale (how fast a coupon sells out, whether one
//! stalls) without querying a store.
//!
//! A label per coupon is a series per coupon, so only coupons a sale is
//! about are shown: those whose window has not closed, or closed less than
//! [`LINGER_MS`] ago (the last minutes of a sale stay on the chart), at most
//! [`MAX_COUPONS`] of them, the newest sales first. Series of coupons that
//! leave (window closed, partition revoked) are removed, not left stale.

use std::collections::HashSet;

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use crate::ledger::{CouponBook, CouponLedger};

/// How long a coupon stays on the chart after its window closed.
pub const LINGER_MS: i64 = 10 * 60 * 1000;
/// The most coupons shown at once (series per gauge).
pub const MAX_COUPONS: usize = 200;

#[derive(Clone)]
pub struct StockGauges {
    stock: IntGaugeVec,
    remaining: IntGaugeVec,
    not_shown: IntGauge,
    shown: HashSet<String>,
}

impl StockGauges {
    /// Registers the gauges in the pipeline's registry.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let stock = IntGaugeVec::new(
            Opts::new(
                "coupon_stock_units",
                "Units a coupon offers (its stock), for coupons on sale in partitions this instance owns.",
            ),
            &["coupon"],
        )?;
        let remaining = IntGaugeVec::new(
            Opts::new(
                "coupon_stock_remaining",
                "Units of a coupon not yet issued (committed state), for coupons on sale in partitions this instance owns.",
            ),
            &["coupon"],
        )?;
        let not_shown = IntGauge::new(
            "coupon_stock_coupons_not_shown",
            "Coupons on sale left out of the per-coupon stock gauges (more than their limit).",
        )?;
        registry.register(Box::new(stock.clone()))?;
        registry.register(Box::new(remaining.clone()))?;
        registry.register(Box::new(not_shown.clone()))?;
        Ok(Self {
            stock,
            remaining,
            not_shown,
            shown: HashSet::new(),
        })
    }

    /// Sets the gauges from the committed books of every owned partition
    /// at wall time `now` (unix ms).
    pub fn observe<'a>(&mut self, books: impl Iterator<Item = &'a CouponBook>, now: i64) {
        let mut on_sale: Vec<(&str, &CouponLedger, i64)> = books
            .flat_map(CouponBook::coupons)
            .filter_map(|(id, ledger)| {
                let terms = ledger.terms()?;
                let closed_long_ago = terms.active_until.is_some_and(|t| t + LINGER_MS <= now);
                (!closed_long_ago).then(|| (id, ledger, terms.active_from.unwrap_or(0)))
            })
            .collect();
        let left_out = on_sale.len().saturating_sub(MAX_COUPONS);
        if left_out > 0 {
            // The newest sales first; ids break ties so the choice is stable.
            on_sale.sort_unstable_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0)));
            on_sale.truncate(MAX_COUPONS);
        }
        self.not_shown.set(left_out as i64);
        let mut shown = HashSet::with_capacity(on_sale.len());
        for (id, ledger, _) in on_sale {
            let stock = ledger.terms().map_or(0, |t| t.stock);
            self.stock.with_label_values(&[id]).set(stock);
            self.remaining
                .with_label_values(&[id])
                .set((stock - ledger.issued()).max(0));
            shown.insert(id.to_string());
        }
        for gone in self.shown.difference(&shown) {
            // Absent already is fine: nothing to remove.
            let _ = self.stock.remove_label_values(&[gone]);
            let _ = self.remaining.remove_label_values(&[gone]);
        }
        self.shown = shown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use surge_engine::harness::Harness;
    use surge_schemas::coupon::{CouponAction, CouponCommand};
    use surge_schemas::TopicCodec;

    use crate::CouponProcessor;

    fn harness() -> Harness<CouponProcessor> {
        let p = CouponProcessor::new(
            TopicCodec::offline(1),
            TopicCodec::offline(2),
            "coupon-result",
            "order-replies",
        );
        Harness::new(
            p,
            &[("coupon-issue", 3)],
            &[("coupon-result", 3), ("order-replies", 3)],
        )
    }

    fn send(h: &mut Harness<CouponProcessor>, coupon: &str, request: &str, command: CouponAction) {
        let cmd = CouponCommand {
            request_id: request.into(),
            coupon_id: coupon.into(),
            requested_at: DateTime::from_timestamp_millis(1_000).unwrap(),
            command,
        };
        h.feed(0, coupon, cmd, 1_000).expect("decided");
    }

    fn create(h: &mut Harness<CouponProcessor>, coupon: &str, stock: i64, until: Option<i64>) {
        let command = CouponAction::Create {
            stock,
            active_from: None,
            active_until: until.map(|t| DateTime::from_timestamp_millis(t).unwrap()),
            discount: None,
        };
        send(h, coupon, &format!("create-{coupon}"), command);
    }

    fn issue(h: &mut Harness<CouponProcessor>, coupon: &str, user: usize) {
        let command = CouponAction::Issue {
            user_id: format!("u{user}"),
        };
        send(h, coupon, &format!("{coupon}-r{user}"), command);
    }

    fn observe(g: &mut StockGauges, h: &Harness<CouponProcessor>, partitions: &[i32], now: i64) {
        g.observe(partitions.iter().map(|p| h.state(*p)), now);
    }

    /// (coupon, stock, remaining) of every series, sorted, as a scrape reads them.
    fn series(registry: &Registry) -> Vec<(String, i64, i64)> {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        let values = |name: &str| -> Vec<(String, i64)> {
            let prefix = format!("{name}{{coupon=\"");
            text.lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|rest| {
                    let (coupon, value) = rest.split_once("\"} ").expect("one label");
                    (coupon.to_string(), value.parse().expect("a number"))
                })
                .collect()
        };
        let remaining = values("coupon_stock_remaining");
        let mut out: Vec<_> = values("coupon_stock_units")
            .into_iter()
            .map(|(c, s)| {
                let r = remaining
                    .iter()
                    .find(|(rc, _)| *rc == c)
                    .expect("both gauges")
                    .1;
                (c, s, r)
            })
            .collect();
        out.sort();
        assert_eq!(
            out.len(),
            remaining.len(),
            "one remaining series per stock series"
        );
        out
    }

    #[test]
    fn remaining_stock_follows_issues_and_coupons_leave_when_their_sale_is_over() {
        let registry = Registry::new();
        let mut g = StockGauges::register(&registry).unwrap();
        let mut h = harness();
        create(&mut h, "a", 5, None);
        create(&mut h, "b", 2, Some(60_000));
        for u in 0..3 {
            issue(&mut h, "a", u);
        }
        // b sells out, and a third ask is refused: remaining never below 0.
        for u in 0..3 {
            issue(&mut h, "b", u);
        }
        h.commit();
        let all: Vec<i32> = (0..3).collect();
        observe(&mut g, &h, &all, 30_000);
        assert_eq!(
            series(&registry),
            vec![("a".into(), 5, 2), ("b".into(), 2, 0)]
        );

        // b's window closed at 60 s: still shown for LINGER_MS, then gone.
        observe(&mut g, &h, &all, 60_000 + LINGER_MS - 1);
        assert_eq!(series(&registry).len(), 2);
        observe(&mut g, &h, &all, 60_000 + LINGER_MS);
        assert_eq!(series(&registry), vec![("a".into(), 5, 2)]);

        // The partition of a is revoked: its series goes with it.
        let a = h.partition_of(0, "a");
        let others: Vec<i32> = all.iter().copied().filter(|p| *p != a).collect();
        observe(&mut g, &h, &others, 0);
        assert!(
            series(&registry).iter().all(|(c, _, _)| c != "a"),
            "{:?}",
            series(&registry)
        );
    }

    #[test]
    fn at_most_max_coupons_are_shown_the_newest_sales_first() {
        let registry = Registry::new();
        let mut g = StockGauges::register(&registry).unwrap();
        let mut h = harness();
        let n = MAX_COUPONS + 3;
        for i in 0..n {
            let command = CouponAction::Create {
                stock: 1,
                active_from: Some(DateTime::from_timestamp_millis(i as i64 * 1_000).unwrap()),
                active_until: None,
                discount: None,
            };
            send(&mut h, &format!("c{i:04}"), &format!("create-{i}"), command);
        }
        h.commit();
        observe(&mut g, &h, &[0, 1, 2], 0);
        let shown = series(&registry);
        assert_eq!(shown.len(), MAX_COUPONS);
        assert!(
            shown.iter().all(|(c, _, _)| c.as_str() >= "c0003"),
            "the three oldest sales are the ones left out"
        );
        assert_eq!(g.not_shown.get(), 3);
    }
}
