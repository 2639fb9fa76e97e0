//! Every metric the engine exports, named in one place. Labels stay
//! low-cardinality: pipeline, outcome, reason, kind, topic, partition.
//!
//! Every label value of every counter that can be known in advance exists
//! from the start at 0 (see [`PipelineMetrics::new`]): a series born at its
//! first event has no earlier sample, so `rate()` and `increase()` would miss
//! that event and a dashboard would read 0 after it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, PullingGauge, Registry,
};
use surge_schemas::coupon::Outcome as CouponOutcome;
use surge_schemas::inventory::InventoryOutcome;
use surge_schemas::order::OrderState;

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
    /// The same, by step of the commit ([`COMMIT_PHASES`]).
    pub commit_phase_seconds: HistogramVec,
    pub batch_records: Histogram,
    pub restore_seconds: Histogram,
    pub restore_records: IntCounter,
    /// Of those, tombstones (deletes the log cleaner has not dropped yet).
    pub restore_tombstones: IntCounter,
    pub dlq_records: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub state_bytes: IntGauge,
    pub producer_recreated: IntCounter,
    /// Fences judged false (no other process holds our identity) and recovered in place.
    pub fence_recoveries: IntCounter,
    /// Inputs that arrived on a partition other than their owner's and were forwarded there.
    pub forwarded_records: IntCounter,
    pub assigned_partitions: IntGauge,
    /// Unix time of the loop's last poll: /health fails when it stalls.
    pub last_poll: IntGauge,
    /// Duration of the latest restore (`pipeline_last_restore_duration_seconds`).
    pub last_restore_seconds: Gauge,
    /// When the open transaction began; exported as its age
    /// (`pipeline_open_transaction_age_seconds`), computed at scrape time.
    pub(crate) open_transaction: TxnClock,
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
        let commit_phase_seconds = HistogramVec::new(
            HistogramOpts::new(
                "pipeline_commit_phase_duration_seconds",
                "Time of each step of a committed transaction's commit: changelog (queuing the state changes), send_offsets (AddOffsetsToTxn and TxnOffsetCommit), deliveries (until every record is acknowledged), end_txn (EndTxn).",
            )
            .buckets(COMMIT_BUCKETS.to_vec()),
            &["phase"],
        )
        .expect("metric");
        registry
            .register(Box::new(commit_phase_seconds.clone()))
            .expect("register");
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
        let last_restore_seconds = Gauge::new(
            "pipeline_last_restore_duration_seconds",
            "Duration of the latest restore of newly assigned partitions' state from the changelog (0 before the first).",
        )
        .expect("metric");
        registry
            .register(Box::new(last_restore_seconds.clone()))
            .expect("register");
        let open_transaction = TxnClock::default();
        let clock = open_transaction.clone();
        let open_age = PullingGauge::new(
            "pipeline_open_transaction_age_seconds",
            "Seconds since the open transaction began, 0 when none is open. Read at scrape time, so a commit stuck in the broker shows as a growing age.",
            Box::new(move || clock.age_seconds()),
        )
        .expect("metric");
        registry.register(Box::new(open_age)).expect("register");
        let m = Self {
            last_poll,
            last_restore_seconds,
            open_transaction,
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
                COMMIT_BUCKETS.to_vec(),
            ),
            commit_phase_seconds,
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
            restore_tombstones: counter(
                "pipeline_restore_tombstones_total",
                "Of the changelog records replayed, tombstones the log cleaner had not dropped yet.",
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
            fence_recoveries: counter(
                "pipeline_fence_recoveries_total",
                "Fences with no other process holding this instance's identity (a broker outage, a lost session), recovered in place by rejoining with a new producer epoch.",
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
        // event has no earlier sample to compare with). The enumerations are
        // bounded; labels that are not (topic and partition of the lag
        // gauge) appear with their assignment.
        for reason in crate::failure::Reason::ALL {
            m.transactions_aborted.with_label_values(&[reason.label()]);
        }
        for phase in COMMIT_PHASES {
            m.commit_phase_seconds.with_label_values(&[phase]);
        }
        for kind in ["output", "changelog", "dlq", "forwarded"] {
            m.records_out.with_label_values(&[kind]);
        }
        for reason in DECODE_DLQ_REASONS.iter().chain(poison_reasons(pipeline)) {
            m.dlq_records.with_label_values(&[reason]);
        }
        for outcome in decision_outcomes(pipeline) {
            m.decisions.with_label_values(&[&outcome]);
        }
        m
    }
}

const COMMIT_BUCKETS: [f64; 10] = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The steps of a commit, in order: the `phase` label of
/// `pipeline_commit_phase_duration_seconds`.
pub const COMMIT_PHASES: [&str; 4] = ["changelog", "send_offsets", "deliveries", "end_txn"];

/// Dead-letter reasons of records that do not decode, whatever the pipeline:
/// the values of `surge_schemas::DecodeError::reason_code` for a poison error
/// (a registry error that may pass is retried, never dead-lettered; one that
/// cannot is `registry_unavailable`).
const DECODE_DLQ_REASONS: [&str; 7] = [
    "empty",
    "truncated",
    "bad_magic",
    "unknown_schema_id",
    "registry_unavailable",
    "bad_avro_body",
    "contract_violation",
];

/// Dead-letter reasons a pipeline's processor gives (`Reject::Poison`)
/// besides the decoding ones.
fn poison_reasons(pipeline: &str) -> &'static [&'static str] {
    match pipeline {
        // pipelines/coupon/src/decide.rs `REQUEST_ID_REUSED`.
        "coupon" => &["request_id_reused"],
        "payment" => &["payment_id_reused"],
        // pipelines/order/src/identity.rs `ORDER_ID_REUSED`.
        "order" => &["order_id_reused"],
        _ => &[],
    }
}

/// The `outcome` labels each pipeline's processor passes to
/// `Context::outcome`, so they can exist at 0 from the start. The engine
/// cannot ask a processor (the trait has no such method yet), so they are
/// listed here by the pipeline's name; an outcome missing here still counts,
/// it only appears at its first event. Contract enums are taken whole, so a
/// new symbol is covered without an edit here.
fn decision_outcomes(pipeline: &str) -> Vec<String> {
    let literal = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match pipeline {
        // The decision's Avro symbol (pipelines/coupon/src/decide.rs).
        "coupon" => CouponOutcome::ALL
            .iter()
            .map(|o| o.symbol().to_string())
            .collect(),
        // The symbol in lowercase (pipelines/inventory/src/decide.rs `label`).
        "inventory" => InventoryOutcome::ALL
            .iter()
            .map(|o| o.symbol().to_ascii_lowercase())
            .collect(),
        // Each transition by its new state, and what the saga answered to
        // cancels and replies that change no state (pipelines/order/src/
        // saga.rs and payment.rs).
        "order" => {
            let mut all: Vec<String> = OrderState::ALL
                .iter()
                .map(|s| s.symbol().to_string())
                .collect();
            all.extend(literal(&[
                "cancel_refused",
                "cancel_waits_for_payment",
                "refund_requested",
                "reply_for_unknown_order",
                "reply_unmatched",
                "reply_repeat",
                "late_charge_refund_requested",
                "late_charge_declined",
                "late_charge_refunded",
                "late_refund_declined",
                "payment_expired",
            ]));
            all
        }
        // pipelines/payment/src/pipeline.rs.
        "payment" => literal(&["intent_recorded", "answered_again", "approved", "declined"]),
        _ => Vec::new(),
    }
}

/// When the open transaction began, in Unix milliseconds (0: none open),
/// shared between the loop and the gauge that reports its age.
#[derive(Clone, Default)]
pub(crate) struct TxnClock(Arc<AtomicI64>);

impl TxnClock {
    /// Marks a transaction open from now until the returned guard drops
    /// (with the batch that holds it: committed, aborted or abandoned).
    pub(crate) fn open(&self) -> OpenTxn {
        let started = now_millis().max(1);
        self.0.store(started, Ordering::Relaxed);
        OpenTxn {
            clock: self.0.clone(),
            started,
        }
    }

    fn age_seconds(&self) -> f64 {
        match self.0.load(Ordering::Relaxed) {
            0 => 0.0,
            started => (now_millis() - started).max(0) as f64 / 1000.0,
        }
    }
}

/// An open transaction's mark on its [`TxnClock`]; clears it on drop
/// (unless a newer transaction has marked it since).
pub(crate) struct OpenTxn {
    clock: Arc<AtomicI64>,
    started: i64,
}

impl Drop for OpenTxn {
    fn drop(&mut self) {
        let _ = self
            .clock
            .compare_exchange(self.started, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    fn exposition(m: &PipelineMetrics) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Whether `text` has a series of `name` with every label of `labels` (in any order) at 0.
    fn has_zero(text: &str, name: &str, labels: &[(&str, &str)]) -> bool {
        text.lines().any(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('{'))
                .is_some_and(|rest| {
                    rest.ends_with("} 0")
                        && labels
                            .iter()
                            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                })
        })
    }

    #[test]
    fn bounded_label_values_exist_at_zero_from_the_start() {
        for (pipeline, outcome, reason) in [
            ("coupon", "SOLD_OUT", "bad_magic"),
            ("inventory", "insufficient_stock", "contract_violation"),
            ("order", "PAYMENT_FAILED", "unknown_schema_id"),
            ("order", "payment_expired", "empty"),
            ("order", "CANCELLED", "order_id_reused"),
            ("payment", "declined", "payment_id_reused"),
        ] {
            let text = exposition(&PipelineMetrics::new(pipeline));
            for (name, label) in [
                ("surge_pipeline_decisions_total", ("outcome", outcome)),
                ("surge_pipeline_dlq_records_total", ("reason", reason)),
                (
                    "surge_pipeline_transactions_aborted_total",
                    ("reason", "commit"),
                ),
                ("surge_pipeline_records_out_total", ("kind", "dlq")),
            ] {
                assert!(
                    has_zero(&text, name, &[("pipeline", pipeline), label]),
                    "no {name}{{pipeline={pipeline:?},{label:?}}} 0 in:\n{text}"
                );
            }
        }
    }

    #[test]
    fn open_transaction_age_is_read_at_scrape_time_and_cleared_with_the_batch() {
        let m = PipelineMetrics::new("coupon");
        let age = |m: &PipelineMetrics| {
            let text = exposition(m);
            let line = text
                .lines()
                .find(|l| l.starts_with("surge_pipeline_open_transaction_age_seconds{"))
                .unwrap_or_else(|| panic!("no open transaction age in:\n{text}"));
            assert!(line.contains("pipeline=\"coupon\""), "{line}");
            line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
        };
        assert_eq!(age(&m), 0.0);
        let open = m.open_transaction.open();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(age(&m) >= 0.02, "{}", age(&m));
        // A newer transaction's mark survives an older guard's drop.
        let newer = m.open_transaction.open();
        drop(open);
        assert!(age(&m) >= 0.0 && m.open_transaction.0.load(Ordering::Relaxed) != 0);
        drop(newer);
        assert_eq!(age(&m), 0.0);
    }
}
