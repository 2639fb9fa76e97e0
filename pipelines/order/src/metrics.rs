//! Gauges the saga derives from its committed state: open sagas by state
//! and the age of the oldest, so an operator sees orders stuck waiting for
//! a reply (a stopped inventory or coupon pipeline) before users do.

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

use crate::book::{OrderBook, Stage};

#[derive(Clone)]
pub struct SagaGauges {
    open: IntGaugeVec,
    oldest_age: IntGauge,
}

/// The open states, each a label value from the start (at 0).
const OPEN: [Stage; 2] = [Stage::Created, Stage::PaymentPending];

impl SagaGauges {
    /// Registers the gauges in the pipeline's registry.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let open = IntGaugeVec::new(
            Opts::new(
                "order_sagas_open",
                "Orders not yet in a terminal state, by state.",
            ),
            &["state"],
        )?;
        let oldest_age = IntGauge::new(
            "order_oldest_open_saga_age_seconds",
            "Age of the oldest open order (since its order-create record), 0 when none is open.",
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(oldest_age.clone()))?;
        for s in OPEN {
            open.with_label_values(&[s.label()]).set(0);
        }
        Ok(Self { open, oldest_age })
    }

    pub(crate) fn observe(&self, states: &mut dyn Iterator<Item = (i32, &OrderBook)>) {
        let mut counts = [0i64; OPEN.len()];
        let mut oldest: Option<i64> = None;
        for (_, book) in states {
            for o in book.open() {
                if let Some(i) = OPEN.iter().position(|s| *s == o.stage) {
                    counts[i] += 1;
                }
                oldest = Some(oldest.map_or(o.created_at, |t: i64| t.min(o.created_at)));
            }
        }
        for (s, n) in OPEN.iter().zip(counts) {
            self.open.with_label_values(&[s.label()]).set(n);
        }
        let now = chrono::Utc::now().timestamp_millis();
        self.oldest_age
            .set(oldest.map_or(0, |t| ((now - t) / 1000).max(0)));
    }
}
