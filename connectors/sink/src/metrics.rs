//! Every metric a sink exports (label `sink` is set on the registry).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct SinkMetrics {
    pub registry: Registry,
    pub records: IntCounter,
    pub writes: IntCounter,
    pub batches: IntCounter,
    pub failures: IntCounterVec,
    pub rewinds: IntCounter,
    pub consumer_restarts: IntCounter,
    pub consumer_lag: IntGaugeVec,
    /// Unix time of the loop's last poll: /health fails when it stalls.
    pub last_poll: IntGauge,
}

impl SinkMetrics {
    /// A registry labelled `sink=<sink>` with every sink metric on it.
    pub fn new(sink: &str) -> Self {
        let registry = Registry::new_custom(
            Some("surge".into()),
            Some([("sink".to_string(), sink.to_string())].into()),
        )
        .expect("valid registry");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let failures = IntCounterVec::new(
            Opts::new(
                "sink_failures_total",
                "Store writes that failed and were retried, and records skipped, by kind.",
            ),
            &["kind"],
        )
        .expect("metric");
        registry
            .register(Box::new(failures.clone()))
            .expect("register");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "sink_consumer_lag_records",
                "Records between the sink's position and the last stable offset.",
            ),
            &["partition"],
        )
        .expect("metric");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("register");
        let last_poll = IntGauge::new(
            "sink_last_poll_timestamp_seconds",
            "Unix time of the loop's last poll.",
        )
        .expect("metric");
        registry
            .register(Box::new(last_poll.clone()))
            .expect("register");
        Self {
            records: counter("sink_records_total", "Records consumed and written."),
            writes: counter(
                "sink_writes_total",
                "Rows or keys written (upserted or deleted).",
            ),
            batches: counter("sink_batches_total", "Batches written with their offsets."),
            rewinds: counter(
                "sink_rewinds_total",
                "Times the store's offsets had moved (flushed, restored, another writer) and the sink rewound to them.",
            ),
            consumer_restarts: counter(
                "sink_consumer_restarts_total",
                "Consumers replaced after librdkafka declared them dead (e.g. fenced after a broker restart).",
            ),
            failures,
            consumer_lag,
            last_poll,
            registry,
        }
    }
}
