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
    pub fn new() -> Self {
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
        // `currency` of the amounts is open-ended (whatever a payer sends), so
        // those series appear with their currency's first approved payment.
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
    fn default() -> Self {
        Self::new()
    }
}
