//! What pg-sim exports (namespace `surge`), and the one place a request's
//! outcome is logged and counted.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::payment::Kind;

/// How a charge or refund request ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Approved,
    Declined,
    Replayed,
    /// 409: in flight, real or injected.
    Conflict,
    KeyReused,
    BadRequest,
    ErrorBefore,
    ErrorAfter,
    TimeoutAfter,
    /// 503: the ledger could not be reached.
    Unavailable,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 10] = [
        RequestOutcome::Approved,
        RequestOutcome::Declined,
        RequestOutcome::Replayed,
        RequestOutcome::Conflict,
        RequestOutcome::KeyReused,
        RequestOutcome::BadRequest,
        RequestOutcome::ErrorBefore,
        RequestOutcome::ErrorAfter,
        RequestOutcome::TimeoutAfter,
        RequestOutcome::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RequestOutcome::Approved => "approved",
            RequestOutcome::Declined => "declined",
            RequestOutcome::Replayed => "replayed",
            RequestOutcome::Conflict => "conflict",
            RequestOutcome::KeyReused => "key_reused",
            RequestOutcome::BadRequest => "bad_request",
            RequestOutcome::ErrorBefore => "error_before",
            RequestOutcome::ErrorAfter => "error_after",
            RequestOutcome::TimeoutAfter => "timeout_after",
            RequestOutcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone)]
pub struct SimMetrics {
    pub registry: Registry,
    requests: IntCounterVec,
    seconds: HistogramVec,
    lookups: IntCounterVec,
    charged: IntCounterVec,
    refunded: IntCounterVec,
}

impl SimMetrics {
    /// `currencies`: the ones payments are expected in (the orders'
    /// `[orders] currencies`), whose amount series exist from the start.
    pub fn new(currencies: &[String]) -> Self {
        let registry = Registry::new_custom(Some("surge".into()), None).expect("registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "pgsim_requests_total",
                "Charge and refund requests by endpoint and outcome.",
            ),
            &["endpoint", "outcome"],
        )
        .expect("metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "pgsim_request_seconds",
                "Time to handle a charge or refund (injected latency included, an injected hang not).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["endpoint"],
        )
        .expect("metric");
        let lookups = IntCounterVec::new(
            Opts::new("pgsim_lookups_total", "GET /v1/payments/{key} by outcome."),
            &["outcome"],
        )
        .expect("metric");
        let charged = IntCounterVec::new(
            Opts::new(
                "pgsim_charged_minor_total",
                "Minor units of charges approved by this process.",
            ),
            &["currency"],
        )
        .expect("metric");
        let refunded = IntCounterVec::new(
            Opts::new(
                "pgsim_refunded_minor_total",
                "Minor units of refunds approved by this process.",
            ),
            &["currency"],
        )
        .expect("metric");
        for metric in [&requests, &lookups, &charged, &refunded] {
            registry
                .register(Box::new(metric.clone()))
                .expect("register");
        }
        registry
            .register(Box::new(seconds.clone()))
            .expect("register");
        // Every series exists from the start, so rates and alerts see zeros.
        for kind in [Kind::Charge, Kind::Refund] {
            for outcome in RequestOutcome::ALL {
                requests.with_label_values(&[kind.label(), outcome.label()]);
            }
            seconds.with_label_values(&[kind.label()]);
        }
        for outcome in ["found", "not_found", "unavailable"] {
            lookups.with_label_values(&[outcome]);
        }
        // `currency` is open-ended (any ISO code a payer sends): the expected
        // ones exist from the start, any other with its first approved payment.
        for currency in currencies {
            charged.with_label_values(&[currency.as_str()]);
            refunded.with_label_values(&[currency.as_str()]);
        }
        Self {
            registry,
            requests,
            seconds,
            lookups,
            charged,
            refunded,
        }
    }

    /// One charge or refund answered.
    pub fn request(&self, kind: Kind, key: &str, outcome: RequestOutcome, took: Duration) {
        self.requests
            .with_label_values(&[kind.label(), outcome.label()])
            .inc();
        self.seconds
            .with_label_values(&[kind.label()])
            .observe(took.as_secs_f64());
        tracing::debug!(
            message = "payment request",
            endpoint = kind.label(),
            key,
            outcome = outcome.label(),
            seconds = took.as_secs_f64()
        );
    }

    /// A payment approved (first time only, never on a replay).
    pub fn applied(&self, kind: Kind, amount_minor: i64, currency: &str) {
        let counter = match kind {
            Kind::Charge => &self.charged,
            Kind::Refund => &self.refunded,
        };
        counter
            .with_label_values(&[currency])
            .inc_by(amount_minor.unsigned_abs());
    }

    pub fn lookup(&self, outcome: &str) {
        self.lookups.with_label_values(&[outcome]).inc();
    }
}

impl Default for SimMetrics {
    /// No currency expected in advance.
    fn default() -> Self {
        Self::new(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_at_zero_from_the_start_the_expected_currencies_too() {
        let m = SimMetrics::new(&["KRW".to_string(), "USD".to_string()]);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap();
        let zero = |series: &str| {
            assert!(
                text.lines().any(|l| l == format!("{series} 0")),
                "{series} 0 missing from:\n{text}"
            )
        };
        for endpoint in ["charges", "refunds"] {
            for outcome in RequestOutcome::ALL {
                zero(&format!(
                    "surge_pgsim_requests_total{{endpoint=\"{endpoint}\",outcome=\"{}\"}}",
                    outcome.label()
                ));
            }
            zero(&format!(
                "surge_pgsim_request_seconds_count{{endpoint=\"{endpoint}\"}}"
            ));
        }
        for outcome in ["found", "not_found", "unavailable"] {
            zero(&format!(
                "surge_pgsim_lookups_total{{outcome=\"{outcome}\"}}"
            ));
        }
        for currency in ["KRW", "USD"] {
            zero(&format!(
                "surge_pgsim_charged_minor_total{{currency=\"{currency}\"}}"
            ));
            zero(&format!(
                "surge_pgsim_refunded_minor_total{{currency=\"{currency}\"}}"
            ));
        }
    }
}
