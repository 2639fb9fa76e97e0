//! What an operator watches on the payment pipeline: calls by result,
//! unknown outcomes by cause, lookups, calls in flight and their latency,
//! and attempts still waiting for a definite outcome.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use surge_payment_gateway::UnknownKind;

#[derive(Clone)]
pub struct PaymentMetrics {
    pub calls: IntCounterVec,
    pub unknown: IntCounterVec,
    pub lookups: IntCounterVec,
    pub in_flight: IntGauge,
    pub call_seconds: Histogram,
    pub pending: IntGauge,
}

impl PaymentMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let calls = IntCounterVec::new(
            Opts::new(
                "payment_calls_total",
                "Calls to the payment provider, by kind (charge, refund) and result (approved, declined, unknown).",
            ),
            &["kind", "result"],
        )?;
        let unknown = IntCounterVec::new(
            Opts::new(
                "payment_unknown_outcomes_total",
                "Calls whose outcome was unknown (retried with the same key), by cause.",
            ),
            &["cause"],
        )?;
        let lookups = IntCounterVec::new(
            Opts::new(
                "payment_lookups_total",
                "Attempts resolved by looking the payment up after the key's retention, by result (found, not_found, unknown).",
            ),
            &["result"],
        )?;
        let in_flight = IntGauge::new(
            "payment_calls_in_flight",
            "Attempts being resolved right now (calls, retries, lookups).",
        )?;
        let call_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "payment_call_seconds",
                "Duration of one call to the payment provider.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let pending = IntGauge::new(
            "payment_attempts_pending",
            "Committed payment attempts without a definite outcome yet.",
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(unknown.clone()))?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(call_seconds.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        // Every label combination exists from the start, so a dashboard's
        // rate() sees 0 rather than no series.
        for kind in ["charge", "refund"] {
            for result in ["approved", "declined", "unknown"] {
                calls.with_label_values(&[kind, result]);
            }
        }
        for cause in UnknownKind::ALL {
            unknown.with_label_values(&[cause.label()]);
        }
        for result in ["found", "not_found", "unknown"] {
            lookups.with_label_values(&[result]);
        }
        Ok(Self {
            calls,
            unknown,
            lookups,
            in_flight,
            call_seconds,
            pending,
        })
    }

    /// Unregistered metrics, for tests.
    pub fn detached() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_value_exists_at_zero_from_the_start() {
        let registry = Registry::new();
        PaymentMetrics::register(&registry).unwrap();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        let zero = |series: String| {
            assert!(
                text.lines().any(|l| l == format!("{series} 0")),
                "{series} 0 missing from:\n{text}"
            )
        };
        for kind in ["charge", "refund"] {
            for result in ["approved", "declined", "unknown"] {
                zero(format!(
                    "payment_calls_total{{kind=\"{kind}\",result=\"{result}\"}}"
                ));
            }
        }
        for cause in UnknownKind::ALL {
            zero(format!(
                "payment_unknown_outcomes_total{{cause=\"{}\"}}",
                cause.label()
            ));
        }
        for result in ["found", "not_found", "unknown"] {
            zero(format!("payment_lookups_total{{result=\"{result}\"}}"));
        }
    }
}
