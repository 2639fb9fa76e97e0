//! Every metric a sink exports. The registry carries `sink=<store>`; each
//! series carries the `topic` it keeps (one process sinks several topics,
//! one loop each). Every series a loop can move exists at 0 from its start,
//! so `rate()` and `increase()` see the first event.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The metric families of one sink process, registered once.
#[derive(Clone)]
pub struct SinkMetricFamilies {
    pub registry: Registry,
    records: IntCounterVec,
    writes: IntCounterVec,
    batches: IntCounterVec,
    failures: IntCounterVec,
    rewinds: IntCounterVec,
    consumer_restarts: IntCounterVec,
    consumer_lag: IntGaugeVec,
    last_poll: IntGaugeVec,
    write_seconds: HistogramVec,
}

impl SinkMetricFamilies {
    /// A registry labelled `sink=<sink>` with every sink metric family on it.
    pub fn new(sink: &str) -> Self {
        let registry = Registry::new_custom(
            Some("surge".into()),
            Some([("sink".to_string(), sink.to_string())].into()),
        )
        .expect("valid registry");
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        Self {
            records: counters(
                "sink_records_total",
                "Records consumed and written.",
                &["topic"],
            ),
            writes: counters(
                "sink_writes_total",
                "Rows or keys written (upserted or deleted).",
                &["topic"],
            ),
            batches: counters(
                "sink_batches_total",
                "Batches written with their offsets.",
                &["topic"],
            ),
            failures: counters(
                "sink_failures_total",
                "Store writes that failed and were retried (kind=store), and records skipped (kind=undecodable).",
                &["topic", "kind"],
            ),
            rewinds: counters(
                "sink_rewinds_total",
                "Times the store's offsets had moved (flushed, restored, another writer) and the sink rewound to them.",
                &["topic"],
            ),
            consumer_restarts: counters(
                "sink_consumer_restarts_total",
                "Consumers replaced after librdkafka declared them dead (e.g. fenced after a broker restart).",
                &["topic"],
            ),
            consumer_lag: gauges(
                "sink_consumer_lag_records",
                "Records between the sink's position and the last stable offset.",
                &["topic", "partition"],
            ),
            write_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "sink_write_seconds",
                        "One store write of a batch with its offsets (failed attempts included).",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ]),
                    &["topic"],
                )
                .expect("metric");
                registry.register(Box::new(h.clone())).expect("register");
                h
            },
            last_poll: gauges(
                "sink_last_poll_timestamp_seconds",
                "Unix time of the loop's last poll.",
                &["topic"],
            ),
            registry,
        }
    }

    /// The metrics of the loop that keeps `topic`, every counter at 0.
    pub fn topic(&self, topic: &str) -> SinkMetrics {
        SinkMetrics {
            records: self.records.with_label_values(&[topic]),
            writes: self.writes.with_label_values(&[topic]),
            batches: self.batches.with_label_values(&[topic]),
            store_failures: self.failures.with_label_values(&[topic, "store"]),
            undecodable: self.failures.with_label_values(&[topic, "undecodable"]),
            rewinds: self.rewinds.with_label_values(&[topic]),
            consumer_restarts: self.consumer_restarts.with_label_values(&[topic]),
            lag: Lag {
                family: self.consumer_lag.clone(),
                topic: topic.to_string(),
                partitions: Arc::default(),
            },
            last_poll: self.last_poll.with_label_values(&[topic]),
            write_seconds: self.write_seconds.with_label_values(&[topic]),
        }
    }
}

/// One loop's metrics.
#[derive(Clone)]
pub struct SinkMetrics {
    pub records: IntCounter,
    pub writes: IntCounter,
    pub batches: IntCounter,
    pub store_failures: IntCounter,
    pub undecodable: IntCounter,
    pub rewinds: IntCounter,
    pub consumer_restarts: IntCounter,
    pub lag: Lag,
    /// Unix time of the loop's last poll: /health fails when it stalls.
    pub last_poll: IntGauge,
    pub write_seconds: Histogram,
}

/// Lag per partition of one topic; cleared when the partitions are revoked
/// (another instance reports them then), without touching other topics'.
#[derive(Clone)]
pub struct Lag {
    family: IntGaugeVec,
    topic: String,
    partitions: Arc<Mutex<BTreeSet<i32>>>,
}

impl Lag {
    pub fn set(&self, partition: i32, records: i64) {
        self.partitions.lock().expect("lag lock").insert(partition);
        self.family
            .with_label_values(&[&self.topic, &partition.to_string()])
            .set(records);
    }

    pub fn clear(&self) {
        for p in std::mem::take(&mut *self.partitions.lock().expect("lag lock")) {
            let _ = self
                .family
                .remove_label_values(&[&self.topic, &p.to_string()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_counter_of_a_topic_exists_at_zero_and_lag_clears_per_topic() {
        let families = SinkMetricFamilies::new("postgres");
        let a = families.topic("coupon-result");
        let b = families.topic("order-status");
        let text = exposition(&families.registry);
        for series in [
            "surge_sink_records_total{topic=\"coupon-result\",sink=\"postgres\"} 0",
            "surge_sink_failures_total{kind=\"store\",topic=\"order-status\",sink=\"postgres\"} 0",
            "surge_sink_failures_total{kind=\"undecodable\",topic=\"coupon-result\",sink=\"postgres\"} 0",
            "surge_sink_rewinds_total{topic=\"order-status\",sink=\"postgres\"} 0",
            "surge_sink_consumer_restarts_total{topic=\"coupon-result\",sink=\"postgres\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
        a.lag.set(0, 5);
        b.lag.set(0, 7);
        a.lag.clear();
        let text = exposition(&families.registry);
        assert!(!text.contains("partition=\"0\",topic=\"coupon-result\""));
        assert!(
            text.contains(
                "surge_sink_consumer_lag_records{partition=\"0\",topic=\"order-status\",sink=\"postgres\"} 7"
            ),
            "{text}"
        );
    }
}
