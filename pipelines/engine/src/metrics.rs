//! Every metric the engine exports, named in one place. Labels stay
//! low-cardinality: pipeline, outcome, reason, partition.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct PipelineMetrics {
    pub registry: Registry,
    pub records_in: IntCounter,
    pub records_out: IntCounterVec,
    pub decisions: IntCounterVec,
    pub duplicate_requests: IntCounter,
    pub transactions_committed: IntCounter,
    pub transactions_aborted: IntCounterVec,
    pub commit_seconds: Histogram,
    pub batch_records: Histogram,
    pub restore_seconds: Histogram,
    pub restore_records: IntCounter,
    pub dlq_records: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub state_bytes: IntGauge,
    pub producer_recreated: IntCounter,
    /// Inputs that arrived on a partition other than their owner's and were forwarded there.
    pub forwarded_records: IntCounter,
    pub assigned_partitions: IntGauge,
    /// Unix time of the loop's last poll: /health fails when it stalls.
    pub last_poll: IntGauge,
}

impl PipelineMetrics {
    pub fn new(pipeline: &str) -> Self {
        let registry = Registry::new_custom(
            Some("surge".into()),
            Some([("pipeline".to_string(), pipeline.to_string())].into()),
        )
        .expect("valid registry");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("metric");
            registry.register(Box::new(h.clone())).expect("register");
            h
        };
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "pipeline_consumer_lag_records",
                "Records between the consumer position and the last stable offset.",
            ),
            &["topic", "partition"],
        )
        .expect("metric");
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("register");
        let state_bytes = IntGauge::new(
            "pipeline_state_bytes",
            "Approximate bytes of in-memory partition state.",
        )
        .expect("metric");
        registry
            .register(Box::new(state_bytes.clone()))
            .expect("register");
        let assigned = IntGauge::new(
            "pipeline_assigned_partitions",
            "Input partitions currently owned.",
        )
        .expect("metric");
        registry
            .register(Box::new(assigned.clone()))
            .expect("register");
        let last_poll = IntGauge::new(
            "pipeline_last_poll_timestamp_seconds",
            "Unix time of the loop's last poll.",
        )
        .expect("metric");
        registry
            .register(Box::new(last_poll.clone()))
            .expect("register");
        let m = Self {
            last_poll,
            records_in: counter("pipeline_records_in_total", "Input records read."),
            records_out: counter_vec(
                "pipeline_records_out_total",
                "Records written, by kind (output, changelog, dlq).",
                &["kind"],
            ),
            decisions: counter_vec(
                "pipeline_decisions_total",
                "Committed decisions by outcome.",
                &["outcome"],
            ),
            duplicate_requests: counter(
                "pipeline_duplicate_requests_total",
                "Inputs whose request id was already decided (no second decision).",
            ),
            transactions_committed: counter(
                "pipeline_transactions_committed_total",
                "Transactions committed.",
            ),
            transactions_aborted: counter_vec(
                "pipeline_transactions_aborted_total",
                "Transactions aborted, by reason.",
                &["reason"],
            ),
            commit_seconds: histogram(
                "pipeline_commit_duration_seconds",
                "Time to send offsets and commit one transaction.",
                vec![0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            ),
            batch_records: histogram(
                "pipeline_batch_records",
                "Input records per committed transaction.",
                vec![1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0],
            ),
            restore_seconds: histogram(
                "pipeline_restore_duration_seconds",
                "Time to restore one assignment's state from the changelog.",
                vec![0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            ),
            restore_records: counter(
                "pipeline_restore_records_total",
                "Changelog records replayed into state.",
            ),
            dlq_records: counter_vec(
                "pipeline_dlq_records_total",
                "Records sent to the dead-letter topic, by reason.",
                &["reason"],
            ),
            consumer_lag,
            state_bytes,
            producer_recreated: counter(
                "pipeline_producer_recreated_total",
                "Transactional producers recreated after a timeout.",
            ),
            assigned_partitions: assigned,
            forwarded_records: counter(
                "pipeline_forwarded_records_total",
                "Input records that arrived on a partition that does not own their key, forwarded to the owner.",
            ),
            registry,
        };
        // Every label value exists from the start at 0, so rate() and
        // increase() see the first event (a counter born at its first
        // event has no earlier sample to compare with).
        for reason in crate::failure::Reason::ALL {
            m.transactions_aborted.with_label_values(&[reason.label()]);
        }
        for kind in ["output", "changelog", "dlq", "forwarded"] {
            m.records_out.with_label_values(&[kind]);
        }
        m
    }
}
