//! The consume loop of the PostgreSQL sink.
//!
//! Runs on its own thread (a BaseConsumer whose rebalance callback must read
//! the database before partitions are used). Partitions are assigned eagerly
//! at the offsets stored in PostgreSQL; each batch is written with its next
//! offsets in one transaction; while the database is down the same batch is
//! retried with capped backoff, never skipped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sqlx::PgPool;
use surge_core::settings::SinkSettings;
use surge_kafka::ClientFactory;
use surge_schemas::coupon::CouponDecision;
use surge_schemas::TopicCodec;

use crate::mapping::CouponResultRows;
use crate::store;

/// Names and settings of one sink run.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// Identifies the sink in `sink_offsets` and metrics.
    pub name: String,
    pub topic: String,
    pub group_id: String,
    pub settings: SinkSettings,
}

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkExit {
    Shutdown,
    Fatal(String),
}

/// The sink's metrics, registered on `registry`.
#[derive(Clone)]
pub struct SinkMetrics {
    pub records: IntCounter,
    pub rows: IntCounter,
    pub batches: IntCounter,
    pub failures: IntCounterVec,
    pub last_poll: IntGauge,
}

impl SinkMetrics {
    pub fn new(registry: &Registry) -> Self {
        let c = |name: &str, help: &str| {
            let m = IntCounter::new(name, help).expect("metric");
            registry.register(Box::new(m.clone())).expect("register");
            m
        };
        let failures = IntCounterVec::new(
            Opts::new(
                "sink_failures_total",
                "Failed store writes, retried, by kind.",
            ),
            &["kind"],
        )
        .expect("metric");
        registry
            .register(Box::new(failures.clone()))
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
            records: c("sink_records_total", "Records consumed and written."),
            rows: c("sink_rows_written_total", "Rows upserted or deleted."),
            batches: c("sink_batches_total", "Store transactions committed."),
            failures,
            last_poll,
        }
    }
}

/// Assigns partitions at the offsets the database holds.
struct SinkContext {
    pool: PgPool,
    runtime: tokio::runtime::Handle,
    sink: String,
    topic: String,
    failed: Arc<AtomicBool>,
    /// Set on every revocation: the batch in hand is dropped and re-read
    /// from the stored offsets by whoever owns the partitions next.
    revoked: Arc<AtomicBool>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr::*;
        match err {
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let stored = self.runtime.block_on(store::stored_offsets(
                    &self.pool,
                    &self.sink,
                    &self.topic,
                ));
                let stored = match stored {
                    Ok(s) => s,
                    Err(e) => {
                        // Without the stored offsets we cannot know where to resume: stop.
                        tracing::error!(message = "cannot read stored offsets", error = %e);
                        self.failed.store(true, Ordering::Relaxed);
                        let _ = consumer.assign(&TopicPartitionList::new());
                        return;
                    }
                };
                let mut with_offsets = TopicPartitionList::new();
                for e in tpl.elements() {
                    let offset = stored
                        .get(&e.partition())
                        .map_or(Offset::Beginning, |o| Offset::Offset(*o));
                    let _ = with_offsets.add_partition_offset(e.topic(), e.partition(), offset);
                }
                let partitions: Vec<String> =
                    with_offsets.elements().iter().map(describe).collect();
                tracing::info!(message = "partitions assigned at stored offsets", sink = %self.sink, ?partitions);
                if let Err(e) = consumer.assign(&with_offsets) {
                    tracing::error!(message = "assign failed", error = %e);
                    self.failed.store(true, Ordering::Relaxed);
                }
            }
            _ => {
                self.revoked.store(true, Ordering::Relaxed);
                let _ = consumer.assign(&TopicPartitionList::new());
            }
        }
    }
}

fn describe(e: &TopicPartitionListElem<'_>) -> String {
    format!("{}@{:?}", e.partition(), e.offset())
}

/// Runs the coupon-result sink until `stop`; blocks the calling thread.
pub fn run_sink(
    spec: SinkSpec,
    factory: ClientFactory,
    pool: PgPool,
    codec: TopicCodec<CouponDecision>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    metrics: SinkMetrics,
) -> SinkExit {
    let failed = Arc::new(AtomicBool::new(false));
    let revoked = Arc::new(AtomicBool::new(false));
    let context = SinkContext {
        revoked: revoked.clone(),
        pool: pool.clone(),
        runtime: runtime.clone(),
        sink: spec.name.clone(),
        topic: spec.topic.clone(),
        failed: failed.clone(),
    };
    let mut cfg =
        factory.read_committed_consumer_config(&format!("sink-{}", spec.name), &spec.group_id);
    // Offsets live in the database; eager assignment so every assignment goes
    // through the callback that seeks to them.
    cfg.set("partition.assignment.strategy", "range")
        // Static membership: a restarted instance takes its own place at once.
        .set(
            "group.instance.id",
            format!("{}-{}", spec.group_id, spec.settings.instance_id),
        );
    if cfg.get("session.timeout.ms").is_none() {
        cfg.set("session.timeout.ms", "10000");
    }
    let consumer: BaseConsumer<SinkContext> = match cfg.create_with_context(context) {
        Ok(c) => c,
        Err(e) => return SinkExit::Fatal(format!("creating the consumer: {e}")),
    };
    if let Err(e) = consumer.subscribe(&[&spec.topic]) {
        return SinkExit::Fatal(format!("subscribing to {}: {e}", spec.topic));
    }
    tracing::info!(message = "sink started", sink = %spec.name, topic = %spec.topic, group = %spec.group_id);

    let s = &spec.settings;
    let mut rows = CouponResultRows::default();
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut records = 0u64;
    let mut batch_started: Option<Instant> = None;
    loop {
        if failed.load(Ordering::Relaxed) {
            return SinkExit::Fatal("could not assign partitions at the stored offsets".into());
        }
        let stopping = stop.load(Ordering::Relaxed);
        let due = batch_started.is_some_and(|t| t.elapsed() >= s.max_batch_wait)
            || records as usize >= s.max_batch_records;
        if (due || stopping) && records > 0 {
            // The same batch until it is written: a database outage stalls the sink, never skips.
            let mut attempt = 0u32;
            loop {
                match runtime.block_on(store::write_batch(
                    &pool,
                    &spec.name,
                    &spec.topic,
                    &rows,
                    &next_offsets,
                )) {
                    Ok(()) => break,
                    Err(e) => {
                        metrics.failures.with_label_values(&["store"]).inc();
                        let wait = Duration::from_millis(100u64 << attempt.min(6))
                            .min(s.max_retry_backoff);
                        tracing::warn!(message = "store write failed; retrying the same batch", sink = %spec.name, error = %e, retry_in = ?wait);
                        // No poll while retrying: a polled record would have to
                        // join this batch, and one dropped would be lost. Past
                        // max.poll.interval.ms the member rejoins and resumes
                        // from the stored offsets.
                        std::thread::sleep(wait);
                        attempt += 1;
                    }
                }
            }
            metrics.batches.inc();
            metrics.records.inc_by(records);
            metrics.rows.inc_by(rows.row_count() as u64);
            rows = CouponResultRows::default();
            next_offsets.clear();
            records = 0;
            batch_started = None;
        }
        if stopping {
            let _ = consumer.unsubscribe();
            return SinkExit::Shutdown;
        }
        let polled = consumer.poll(Duration::from_millis(50));
        metrics.last_poll.set(chrono::Utc::now().timestamp());
        if revoked.swap(false, Ordering::Relaxed) && records > 0 {
            // Not written, and no longer ours: the next owner re-reads it.
            tracing::info!(message = "partitions revoked; dropping the unwritten batch", sink = %spec.name, records);
            rows = CouponResultRows::default();
            next_offsets.clear();
            records = 0;
            batch_started = None;
        }
        match polled {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!(message = "consumer error", error = %e),
            Some(Ok(m)) => {
                let decision = match m.payload() {
                    None => None, // tombstone: delete by key
                    Some(bytes) => match runtime.block_on(codec.decode(Some(bytes))) {
                        Ok(d) => Some(d),
                        Err(e) if e.is_poison() => {
                            // The pipeline only writes valid decisions; a foreign record is skipped loudly.
                            metrics.failures.with_label_values(&["undecodable"]).inc();
                            tracing::error!(message = "undecodable record skipped", partition = m.partition(), offset = m.offset(), error = %e);
                            next_offsets.insert(m.partition(), m.offset() + 1);
                            records += 1;
                            batch_started.get_or_insert_with(Instant::now);
                            continue;
                        }
                        Err(e) => {
                            // Registry outage: rewind this record and retry after a pause.
                            tracing::warn!(message = "registry unavailable; will retry", error = %e);
                            let _ = consumer.seek(
                                m.topic(),
                                m.partition(),
                                Offset::Offset(m.offset()),
                                Duration::from_secs(10),
                            );
                            std::thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                    },
                };
                rows.add(m.key(), decision);
                next_offsets.insert(m.partition(), m.offset() + 1);
                records += 1;
                batch_started.get_or_insert_with(Instant::now);
            }
        }
    }
}
