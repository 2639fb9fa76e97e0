//! What the gateway exports (namespace `surge`).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    /// By route template and status code.
    pub requests: IntCounterVec,
    /// Time until Kafka acknowledged a command (or gave up).
    pub produce_seconds: Histogram,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("surge".into()), None).expect("registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "HTTP requests by route and status.",
            ),
            &["route", "status"],
        )
        .expect("metric");
        let produce_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_produce_seconds",
                "Time for Kafka to acknowledge one command (acks=all).",
            )
            .buckets(vec![
                0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("register");
        registry
            .register(Box::new(produce_seconds.clone()))
            .expect("register");
        Self {
            registry,
            requests,
            produce_seconds,
        }
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
