//! The ceiling: an at-least-once consume→produce copy of the request records
//! (no state, no transactions, no offsets committed), what any Kafka
//! service does at the least, over the backlog read [`passes`] times. The
//! pipeline does the same I/O plus decoding, deciding, a changelog and
//! transactions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, Statistics, TopicPartitionList};
use surge_kafka::{ClientFactory, QuietEofContext};

/// Tells when the idempotent producer has its producer id (from librdkafka's
/// statistics): until then it holds every record it is given, ≈0.5 s on
/// librdkafka 2.10+ in some runs, and records copied meanwhile would carry
/// timestamps from before the stall — counting a client's start-up against
/// the ceiling (the pipeline's producer has its id before it consumes).
#[derive(Default)]
struct ProducerId {
    assigned: AtomicBool,
}

impl ClientContext for ProducerId {
    fn stats(&self, statistics: Statistics) {
        if statistics
            .eos
            .is_some_and(|eos| eos.idemp_state == "Assigned")
        {
            self.assigned.store(true, Ordering::Relaxed);
        }
    }
}

impl ProducerContext for ProducerId {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// How many records the copy copies at least: the backlog read again
/// and again (at most [`MAX_PASSES`] times). One pass of a 200,000-record
/// backlog is over in 0.3–1.1 s, too short for a steady ceiling: runs of
/// the same command measured 171,000–180,000/s in some runs and
/// 451,000–781,000/s in others.
pub const MIN_RECORDS: usize = 1_000_000;
/// Bounds the passes over small backlogs (the smoke test's).
pub const MAX_PASSES: usize = 10;

/// How many times the copy reads a backlog of `records`.
pub fn passes(records: usize) -> usize {
    MIN_RECORDS.div_ceil(records.max(1)).clamp(1, MAX_PASSES)
}

/// Copies `from` (`partitions` of them) to `to`, reading each partition
/// from its beginning `passes` times, until `stop`; blocking.
pub fn run(
    factory: &ClientFactory,
    from: &str,
    partitions: i32,
    passes: usize,
    to: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut cfg =
        factory.read_committed_consumer_config("bench-copy", &format!("{from}-bench-copy"));
    // Assigned, not subscribed: a pass ends at a partition's end (EOF) and
    // the next starts by seeking back, with no group to rejoin.
    cfg.set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let producer: ThreadedProducer<ProducerId> = factory
        .idempotent_producer_config("bench-copy")
        .set("statistics.interval.ms", "50")
        .create_with_context(ProducerId::default())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !producer.context().assigned.load(Ordering::Relaxed) {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            anyhow::bail!("the copy's producer got no producer id within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Each pass ends in partition EOF: expected, not an ERROR line.
    let consumer: BaseConsumer<QuietEofContext> = cfg.create_with_context(QuietEofContext)?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(from, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut passes_done = vec![0usize; partitions as usize];
    while !stop.load(Ordering::Relaxed) {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = match polled {
            Err(KafkaError::PartitionEOF(p)) => {
                let done = &mut passes_done[p as usize];
                *done += 1;
                if *done < passes {
                    consumer.seek(from, p, Offset::Beginning, Duration::from_secs(10))?;
                }
                continue;
            }
            other => other?,
        };
        let mut record = BaseRecord::to(to).partition(m.partition());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(p) = m.payload() {
            record = record.payload(p);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    // Queue full: let deliveries drain.
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_copied_at_least_min_records_within_max_passes() {
        assert_eq!(passes(200_000), 5);
        assert_eq!(passes(1_000_000), 1);
        assert_eq!(passes(3_000_000), 1);
        assert_eq!(passes(300_000), 4, "rounded up");
        assert_eq!(passes(2_000), MAX_PASSES);
        assert_eq!(passes(0), MAX_PASSES);
    }
}
