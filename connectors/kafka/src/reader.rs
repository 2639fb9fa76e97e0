//! Reading a whole topic as a read_committed consumer would see it, up to
//! its committed end (the last stable offset, reported as partition EOF),
//! for tools that audit or rebuild from a topic. It never joins a group's
//! assignment and never commits.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::ClientFactory;

/// Reaching the end of a partition is what readers wait for, not an error
/// worth a log line.
pub struct QuietEofContext;

impl ClientContext for QuietEofContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(message = "kafka reader error", %error, reason);
        }
    }
}

impl ConsumerContext for QuietEofContext {}

/// One record read.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// Reads every partition of one topic from the beginning.
pub struct TopicReader {
    consumer: BaseConsumer<QuietEofContext>,
    partitions: usize,
    at_end: HashSet<i32>,
}

impl TopicReader {
    pub fn open(factory: &ClientFactory, topic: &str, timeout: Duration) -> KafkaResult<Self> {
        // A group id is required by librdkafka even for assign(); nothing is committed.
        let mut cfg = factory.read_committed_consumer_config(
            "reader",
            &format!("surge-reader-{}", std::process::id()),
        );
        cfg.set("enable.partition.eof", "true");
        let consumer: BaseConsumer<QuietEofContext> = cfg.create_with_context(QuietEofContext)?;
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        let t = md
            .topics()
            .first()
            .ok_or(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopic))?;
        if let Some(e) = t.error() {
            return Err(KafkaError::MetadataFetch(e.into()));
        }
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(Self {
            consumer,
            partitions: t.partitions().len(),
            at_end: HashSet::new(),
        })
    }

    /// The topic's partition count (at open).
    pub fn partitions(&self) -> i32 {
        self.partitions as i32
    }

    /// Everything committed that has not been read yet: returns once every
    /// partition is at its end, or after `max_wait`.
    pub fn read_available(&mut self, max_wait: Duration) -> KafkaResult<Vec<Record>> {
        let deadline = Instant::now() + max_wait;
        let mut out = Vec::new();
        // Already at the end everywhere: look briefly for anything new.
        let settle = if self.at_end.len() == self.partitions {
            Some(Instant::now() + Duration::from_millis(300))
        } else {
            None
        };
        while Instant::now() < deadline && settle.is_none_or(|s| Instant::now() < s) {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_end.insert(p);
                    if self.at_end.len() == self.partitions && settle.is_none() {
                        break;
                    }
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(m)) => {
                    self.at_end.remove(&m.partition());
                    out.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                }
            }
        }
        Ok(out)
    }
}
