//! Shared by the order tests: the order pipelines as child processes,
//! producing any contract keyed by its own key, and a read_committed tail
//! of a topic that accumulates what it has seen.

use std::process::Command;
use std::time::Duration;

use surge_kafka::TopicReader;
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

/// Accumulates a topic's committed records, all partitions, from the start
/// (surge_kafka's TopicReader, keeping what it has read).
pub struct Tail {
    reader: TopicReader,
    pub records: Vec<(i32, i64, Vec<u8>)>,
}

impl Tail {
    pub fn new(fx: &Fixture, base: &str) -> Self {
        let reader = TopicReader::open(&fx.factory, &fx.topic(base), Duration::from_secs(10))
            .expect("open a reader");
        Self {
            reader,
            records: Vec::new(),
        }
    }

    /// Reads until every partition is at its committed end and nothing more
    /// arrived within `quiet`.
    pub fn catch_up(&mut self, quiet: Duration) {
        loop {
            let got = self.reader.read_available(quiet).expect("read");
            if got.is_empty() {
                return;
            }
            self.records.extend(
                got.into_iter()
                    .map(|r| (r.partition, r.offset, r.payload.unwrap_or_default())),
            );
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
