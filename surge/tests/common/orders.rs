//! Shared by the order tests: the order pipelines as child processes,
//! producing any contract keyed by its own key, and a read_committed tail
//! of a topic that accumulates what it has seen.

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_schemas::{Contract, TopicCodec};

use super::coupon::{Fixture, Instance};

pub const PIPELINES: [&str; 3] = ["order", "inventory", "coupon"];

pub fn spawn(fx: &Fixture, pipeline: &str) -> Instance {
    let up = pipeline.to_uppercase();
    fx.spawn(
        &format!("pipeline-{pipeline}"),
        &["pipeline", pipeline],
        &[
            (
                &format!("SURGE_PIPELINES__{up}__METRICS_LISTEN"),
                "127.0.0.1:0",
            ),
            ("SURGE_LOG__LEVEL", "info,librdkafka=warn"),
        ],
    )
}

pub fn stack(args: &[&str]) {
    let ok = Command::new(super::repo_root().join("scripts/stack"))
        .args(args)
        .status()
        .expect("scripts/stack")
        .success();
    assert!(ok, "scripts/stack {args:?} failed");
}

/// Restarts the broker when dropped, so a failed assertion never leaves it down.
pub struct BrokerRestart;
impl Drop for BrokerRestart {
    fn drop(&mut self) {
        let _ = Command::new(super::repo_root().join("scripts/stack"))
            .args(["up", "kafka"])
            .status();
    }
}

pub async fn produce<T: Contract>(fx: &Fixture, records: &[T]) {
    let codec: TopicCodec<T> = super::codec(&fx.settings).await;
    let producer = fx.factory.idempotent_producer("test-producer").unwrap();
    let encoded: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|r| (r.key().to_string(), codec.encode(r).unwrap()))
        .collect();
    surge_kafka::produce_in_order(&producer, &fx.topic(T::TOPIC), encoded, |_| {})
        .await
        .expect("produce");
}

/// Accumulates a topic's committed records, all partitions, from the start.
pub struct Tail {
    consumer: BaseConsumer,
    pub records: Vec<(i32, i64, Vec<u8>)>,
}

impl Tail {
    pub fn new(fx: &Fixture, base: &str) -> Self {
        let topic = fx.topic(base);
        let consumer: BaseConsumer = fx
            .factory
            .read_committed_consumer_config("test-tail", &super::unique("tail"))
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Self {
            consumer,
            records: Vec::new(),
        }
    }

    /// Reads until nothing arrives for `quiet`.
    pub fn catch_up(&mut self, quiet: Duration) {
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    self.records.push((
                        m.partition(),
                        m.offset(),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                    last = Instant::now();
                }
                Some(Err(e)) => eprintln!("tail: {e}"),
                None => {}
            }
        }
    }

    /// The records decoded, in log order per partition.
    pub async fn decoded<T: Contract>(&self, codec: &TopicCodec<T>) -> Vec<T> {
        let mut raw: Vec<&(i32, i64, Vec<u8>)> = self.records.iter().collect();
        raw.sort_by_key(|(p, o, _)| (*p, *o));
        let mut out = Vec::with_capacity(raw.len());
        for (_, _, bytes) in raw {
            out.push(codec.decode(Some(bytes)).await.expect("decodes"));
        }
        out
    }
}
