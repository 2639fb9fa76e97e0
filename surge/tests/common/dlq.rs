//! Reading whole topics with their headers, for the dead-letter tests:
//! committed (what the pipelines see) or uncommitted (aborted records too).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_kafka::ClientFactory;

/// One record with its headers (values as UTF-8, lossy).
#[derive(Debug, Clone)]
pub struct Raw {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Raw {
    /// The last header `key` (surge's own, after any copied ones).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `key`, in order.
    pub fn headers_named(&self, key: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Every record of `topic` up to its end now, all partitions, in partition
/// then offset order; `committed` reads read_committed, else read_uncommitted.
pub fn read_all(factory: &ClientFactory, topic: &str, committed: bool) -> Vec<Raw> {
    let mut cfg = factory.read_committed_consumer_config("test-dlq-reader", &super::unique("g"));
    cfg.set("enable.partition.eof", "true");
    if !committed {
        cfg.set("isolation.level", "read_uncommitted");
    }
    let consumer: BaseConsumer = cfg.create().unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len();
    assert!(partitions > 0, "{topic} does not exist");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions {
        assert!(Instant::now() < deadline, "{topic}: never reached its end");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                out.push(Raw {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// [`read_all`] (committed) again and again until `done` holds; panics after `within`.
pub fn wait_for(
    factory: &ClientFactory,
    topic: &str,
    within: Duration,
    done: impl Fn(&[Raw]) -> bool,
) -> Vec<Raw> {
    let deadline = Instant::now() + within;
    loop {
        let records = read_all(factory, topic, true);
        if done(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: condition not met within {within:?}; it holds {records:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
