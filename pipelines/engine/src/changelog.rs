//! Restoring partition state from the changelog: read each assigned
//! changelog partition from the beginning to its committed end (the last
//! stable offset, reached when read_committed reports partition EOF) and
//! replay it into fresh state before the first input record is processed.
//! The changelog is compacted, so restore time follows the number of live
//! keys, not the length of history.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_kafka::{ClientFactory, QuietEofContext};

use crate::processor::PartitionState;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("changelog {topic}[{partition}] offset {offset}: {reason}")]
    Corrupt {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("restore of {0} did not reach the end within {1:?}")]
    Timeout(String, Duration),
}

/// What a restore read: every record, and how many of them were
/// tombstones (deletes the cleaner has not dropped yet, see the changelogs'
/// `delete_retention`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub records: u64,
    pub tombstones: u64,
}

/// Reads `partitions` of `topic` and returns their rebuilt states and what was read.
pub fn restore<S: PartitionState>(
    factory: &ClientFactory,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<(HashMap<i32, S>, Restored), RestoreError> {
    let mut states: HashMap<i32, S> = partitions.iter().map(|p| (*p, S::default())).collect();
    if partitions.is_empty() {
        return Ok((states, Restored::default()));
    }
    // assign() only, never commits; librdkafka still wants a group id.
    let mut cfg = factory.read_committed_consumer_config("restore", &format!("{topic}-restore"));
    cfg.set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "52428800");
    let consumer: BaseConsumer<QuietEofContext> = cfg.create_with_context(QuietEofContext)?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut pending: HashSet<i32> = partitions.iter().copied().collect();
    let deadline = Instant::now() + timeout;
    let mut read = Restored::default();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(RestoreError::Timeout(
                format!("{topic} {pending:?}"),
                timeout,
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            // Fatal means this consumer is dead; anything else (a broker
            // restarting, a leader moving) librdkafka retries on its own.
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => return Err(e.into()),
            Some(Err(e)) => {
                tracing::warn!(message = "changelog read error; still restoring", topic, error = %e);
            }
            Some(Ok(m)) => {
                let state = states.get_mut(&m.partition()).expect("assigned partition");
                state
                    .restore(m.key().unwrap_or_default(), m.payload())
                    .map_err(|reason| RestoreError::Corrupt {
                        topic: topic.to_string(),
                        partition: m.partition(),
                        offset: m.offset(),
                        reason,
                    })?;
                read.records += 1;
                read.tombstones += u64::from(m.payload().is_none());
            }
        }
    }
    Ok((states, read))
}
