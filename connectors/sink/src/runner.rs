//! The consume loop. Runs on its own thread: a BaseConsumer whose rebalance
//! callback reads the store before partitions are used.
//!
//! Batches close on size or age. A batch is written with its offsets or not
//! at all: while the store is down the *same* batch is retried with capped
//! backoff and nothing is polled (a polled record would have to join it, and
//! one dropped would be lost); if the store's offsets moved under us, the
//! batch is dropped and the partitions rewound to what the store holds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset};
use surge_core::settings::SinkSettings;
use surge_kafka::ClientFactory;
use surge_schemas::TopicCodec;

use crate::context::{stored_offsets_patiently, Positions, SinkContext};
use crate::mapping::{Mapping, Position};
use crate::metrics::SinkMetrics;
use crate::store::{OffsetAdvance, SinkStore, StoreError};

/// Names and settings of one sink run.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// Identifies the sink in logs and in stores that keep several sinks' offsets.
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

type ValueOf<S> = <<S as SinkStore>::Batch as Mapping>::Value;

/// The batch being filled.
struct Pending<B> {
    batch: B,
    next: BTreeMap<i32, i64>,
    records: u64,
    started: Option<Instant>,
}

impl<B: Mapping> Pending<B> {
    fn new() -> Self {
        Self {
            batch: B::default(),
            next: BTreeMap::new(),
            records: 0,
            started: None,
        }
    }

    fn consumed(&mut self, at: Position) {
        self.next.insert(at.partition, at.offset + 1);
        self.records += 1;
        self.started.get_or_insert_with(Instant::now);
    }
}

/// What became of one batch.
enum Written {
    Yes,
    /// The store's offsets had moved: rewind and re-read.
    Diverged(String),
    /// Stopping while the store was down: the batch was not written and
    /// will be re-read from the stored offsets by the next run.
    Abandoned,
}

/// Runs the sink until `stop`; blocks the calling thread.
///
/// A consumer that librdkafka declares dead (a fatal error, e.g. a static
/// member fenced after a broker restart) is replaced by a fresh one: the
/// store holds the offsets, so nothing is lost or repeated by starting over.
pub fn run_sink<S: SinkStore>(
    spec: SinkSpec,
    factory: &ClientFactory,
    store: Arc<S>,
    codec: TopicCodec<ValueOf<S>>,
    runtime: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    metrics: SinkMetrics,
) -> SinkExit {
    let mut replaced = 0u32;
    loop {
        let ended = consume(&spec, factory, &store, &codec, &runtime, &stop, &metrics);
        match ended {
            Ended::ConsumerDied(why) if replaced < 10 && !stop.load(Ordering::Relaxed) => {
                replaced += 1;
                metrics.consumer_restarts.inc();
                tracing::warn!(message = "the consumer died; starting a new one at the store's offsets", sink = %spec.name, why = %why);
                std::thread::sleep(Duration::from_secs(1));
            }
            Ended::ConsumerDied(why) => return SinkExit::Fatal(format!("consumer: {why}")),
            Ended::Exit(exit) => return exit,
        }
    }
}

/// How one consumer's run ended.
enum Ended {
    Exit(SinkExit),
    ConsumerDied(String),
}

fn consume<S: SinkStore>(
    spec: &SinkSpec,
    factory: &ClientFactory,
    store: &Arc<S>,
    codec: &TopicCodec<ValueOf<S>>,
    runtime: &tokio::runtime::Handle,
    stop: &AtomicBool,
    metrics: &SinkMetrics,
) -> Ended {
    let positions = Arc::new(Mutex::new(Positions::default()));
    let context = SinkContext {
        store: store.clone(),
        topic: spec.topic.clone(),
        sink: spec.name.clone(),
        positions: positions.clone(),
        metrics: metrics.clone(),
    };
    let mut cfg =
        factory.read_committed_consumer_config(&format!("sink-{}", spec.name), &spec.group_id);
    // Offsets live in the store; eager assignment so that every assignment
    // passes through the callback that seeks to them.
    cfg.set("partition.assignment.strategy", "range")
        // Static membership: a restarted instance takes its own place at once.
        .set(
            "group.instance.id",
            format!("{}-{}", spec.group_id, spec.settings.instance_id),
        )
        .set("statistics.interval.ms", "5000");
    if cfg.get("session.timeout.ms").is_none() {
        cfg.set("session.timeout.ms", "10000");
    }
    let consumer: BaseConsumer<SinkContext<S>> = match cfg.create_with_context(context) {
        Ok(c) => c,
        Err(e) => return Ended::Exit(SinkExit::Fatal(format!("creating the consumer: {e}"))),
    };
    if let Err(e) = consumer.subscribe(&[&spec.topic]) {
        return Ended::Exit(SinkExit::Fatal(format!(
            "subscribing to {}: {e}",
            spec.topic
        )));
    }
    tracing::info!(message = "sink started", sink = %spec.name, topic = %spec.topic, group = %spec.group_id);

    let s = &spec.settings;
    let mut pending = Pending::<S::Batch>::new();
    let mut last_offset_check = Instant::now();
    loop {
        if let Some(why) = positions.lock().expect("positions lock").failed.take() {
            return Ended::Exit(SinkExit::Fatal(format!(
                "cannot resume at the store's offsets: {why}"
            )));
        }
        let stopping = stop.load(Ordering::Relaxed);
        let due = pending
            .started
            .is_some_and(|t| t.elapsed() >= s.max_batch_wait)
            || pending.records as usize >= s.max_batch_records;
        if (due || stopping) && pending.records > 0 {
            let advance = {
                let p = positions.lock().expect("positions lock");
                OffsetAdvance {
                    from: pending
                        .next
                        .keys()
                        .map(|part| (*part, p.resumed.get(part).copied().flatten()))
                        .collect(),
                    to: pending.next.clone(),
                }
            };
            match write(&**store, spec, &pending.batch, &advance, stop, metrics) {
                Written::Yes => {
                    let mut p = positions.lock().expect("positions lock");
                    for (part, next) in &advance.to {
                        p.resumed.insert(*part, Some(*next));
                    }
                    drop(p);
                    report_to_group(&consumer, &spec.topic, &advance.to);
                    metrics.batches.inc();
                    metrics.records.inc_by(pending.records);
                    metrics.writes.inc_by(pending.batch.writes() as u64);
                }
                Written::Diverged(why) => {
                    tracing::warn!(message = "the store's offsets moved; rewinding to them", sink = %spec.name, why = %why);
                    metrics.rewinds.inc();
                    if let Err(e) = rewind(&consumer, &**store, &spec.topic, &positions) {
                        return Ended::Exit(SinkExit::Fatal(format!(
                            "rewinding to the store's offsets: {e}"
                        )));
                    }
                }
                Written::Abandoned => {}
            }
            pending = Pending::new();
        }
        if stopping {
            consumer.unsubscribe();
            return Ended::Exit(SinkExit::Shutdown);
        }
        // A write notices a flushed or rolled-back store; so must an idle
        // sink, or a cache flushed after the last decision stays empty.
        if pending.records == 0 && last_offset_check.elapsed() >= OFFSET_CHECK_INTERVAL {
            last_offset_check = Instant::now();
            if let Some(why) = moved_while_idle(&**store, &spec.topic, &positions) {
                tracing::warn!(message = "the store's offsets moved; rewinding to them", sink = %spec.name, why = %why);
                metrics.rewinds.inc();
                if let Err(e) = rewind(&consumer, &**store, &spec.topic, &positions) {
                    return Ended::Exit(SinkExit::Fatal(format!(
                        "rewinding to the store's offsets: {e}"
                    )));
                }
            }
        }

        let polled = consumer.poll(Duration::from_millis(50));
        metrics.last_poll.set(chrono::Utc::now().timestamp());
        let revoked = std::mem::take(&mut positions.lock().expect("positions lock").revoked);
        if revoked && pending.records > 0 {
            // Not written, and no longer ours: the next owner re-reads it.
            tracing::info!(message = "partitions revoked; dropping the unwritten batch", sink = %spec.name, records = pending.records);
            pending = Pending::new();
        }
        match polled {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            // The consumer is dead (e.g. fenced as a static member after a
            // broker restart); the unwritten batch goes with it.
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                return Ended::ConsumerDied(e.to_string());
            }
            Some(Err(e)) => tracing::warn!(message = "consumer error", error = %e),
            Some(Ok(m)) => {
                let at = Position {
                    partition: m.partition(),
                    offset: m.offset(),
                };
                let value = match m.payload() {
                    None => None, // tombstone: delete by key
                    Some(bytes) => match runtime.block_on(codec.decode(Some(bytes))) {
                        Ok(v) => Some(v),
                        Err(e) if e.is_poison() => {
                            // Result topics hold only what the pipelines wrote; a
                            // foreign record is skipped loudly, never guessed at.
                            metrics.undecodable.inc();
                            tracing::error!(message = "undecodable record skipped", partition = at.partition, offset = at.offset, error = %e);
                            pending.consumed(at);
                            continue;
                        }
                        Err(e) => {
                            // Registry unreachable: read this record again after a pause.
                            tracing::warn!(message = "registry unavailable; will retry", error = %e);
                            let _ = consumer.seek(
                                m.topic(),
                                at.partition,
                                Offset::Offset(at.offset),
                                Duration::from_secs(10),
                            );
                            std::thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                    },
                };
                pending.batch.add(at, m.key(), value);
                pending.consumed(at);
            }
        }
    }
}

/// Commits the offsets just written to the store to the sink's Kafka group
/// as well, so Kafka's own tools (`kafka-consumer-groups --describe`) show
/// the sink's lag. For tools only: the store stays the truth, and every
/// assignment seeks to the store's offsets, whatever the group holds. Async
/// and best effort: a lost commit only makes the reported lag stale.
fn report_to_group<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    written: &std::collections::BTreeMap<i32, i64>,
) {
    let mut offsets = rdkafka::TopicPartitionList::new();
    for (part, next) in written {
        if offsets
            .add_partition_offset(topic, *part, Offset::Offset(*next))
            .is_err()
        {
            return;
        }
    }
    if let Err(e) = consumer.commit(&offsets, rdkafka::consumer::CommitMode::Async) {
        tracing::debug!(message = "offsets not reported to the group (tools only)", error = %e);
    }
}

/// How often an idle sink checks that the store still holds its offsets.
const OFFSET_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Whether the store's offsets differ from where this sink left them (an
/// unreachable store is not a difference: the next write will retry).
fn moved_while_idle<S: SinkStore>(
    store: &S,
    topic: &str,
    positions: &Mutex<Positions>,
) -> Option<String> {
    let stored = store.stored_offsets(topic).ok()?;
    let p = positions.lock().expect("positions lock");
    p.resumed.iter().find_map(|(part, resumed)| {
        let now = stored.get(part).copied();
        (now != *resumed).then(|| format!("partition {part}: stored {now:?}, expected {resumed:?}"))
    })
}

/// Writes one batch, retrying the same batch while the store is unavailable.
fn write<S: SinkStore>(
    store: &S,
    spec: &SinkSpec,
    batch: &S::Batch,
    advance: &OffsetAdvance,
    stop: &AtomicBool,
    metrics: &SinkMetrics,
) -> Written {
    let mut attempt = 0u32;
    loop {
        let started = Instant::now();
        let written = store.write(&spec.topic, batch, advance);
        metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        match written {
            Ok(()) => return Written::Yes,
            Err(StoreError::Diverged(why)) => return Written::Diverged(why),
            Err(StoreError::Unavailable(why)) => {
                metrics.store_failures.inc();
                if stop.load(Ordering::Relaxed) {
                    tracing::warn!(message = "stopping with the store down; the unwritten batch will be re-read", sink = %spec.name, error = %why);
                    return Written::Abandoned;
                }
                let wait = Duration::from_millis(100u64 << attempt.min(6))
                    .min(spec.settings.max_retry_backoff);
                tracing::warn!(message = "store write failed; retrying the same batch", sink = %spec.name, error = %why, retry_in = ?wait);
                // No poll while retrying. Past max.poll.interval.ms the member
                // rejoins and resumes from the stored offsets, which is safe.
                std::thread::sleep(wait);
                attempt += 1;
            }
        }
    }
}

/// Seeks every owned partition to the offset the store holds now (the
/// beginning when it holds none): the cache is rebuilt from the topic.
fn rewind<S: SinkStore, C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    store: &S,
    topic: &str,
    positions: &Mutex<Positions>,
) -> Result<(), String> {
    let stored = stored_offsets_patiently(store, topic).map_err(|e| e.to_string())?;
    let mut p = positions.lock().expect("positions lock");
    for (part, resumed) in p.resumed.iter_mut() {
        let at = stored.get(part).copied();
        *resumed = at;
        consumer
            .seek(
                topic,
                *part,
                at.map_or(Offset::Beginning, Offset::Offset),
                Duration::from_secs(10),
            )
            .map_err(|e| format!("seek {topic}/{part}: {e}"))?;
    }
    tracing::info!(message = "rewound to the store's offsets", topic, resumed = ?p.resumed);
    Ok(())
}
