//! The consumer's context: every assignment is placed at the offsets the
//! store holds (eager assignment, so each one passes through here), and
//! librdkafka's statistics feed the lag gauge against the last stable offset.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use crate::metrics::SinkMetrics;
use crate::store::{SinkStore, StoreError};

/// What the loop and the rebalance callback share.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    /// For each owned partition: the store's offset when we last read or
    /// wrote it (`None`: it held nothing, we started at the beginning).
    pub resumed: BTreeMap<i32, Option<i64>>,
    /// Set on every revocation: the batch in hand is dropped; whoever owns
    /// the partitions next re-reads it from the stored offsets.
    pub revoked: bool,
    /// The stored offsets could not be read for an assignment.
    pub failed: Option<String>,
}

pub(crate) struct SinkContext<S: SinkStore> {
    pub store: Arc<S>,
    pub topic: String,
    pub sink: String,
    pub positions: Arc<Mutex<Positions>>,
    pub metrics: SinkMetrics,
}

impl<S: SinkStore> ClientContext for SinkContext<S> {
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        for (id, p) in &topic.partitions {
            if *id < 0 || p.ls_offset < 0 || p.app_offset < 0 {
                continue;
            }
            self.metrics
                .lag
                .set(*id, (p.ls_offset - p.app_offset).max(0));
        }
    }
}

impl<S: SinkStore> ConsumerContext for SinkContext<S> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut positions = self.positions.lock().expect("positions lock");
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            positions.revoked = true;
            positions.resumed.clear();
            self.metrics.lag.clear();
            let _ = consumer.assign(&TopicPartitionList::new());
            return;
        }
        let stored = match stored_offsets_patiently(&*self.store, &self.topic) {
            Ok(s) => s,
            Err(e) => {
                // Without them we cannot know where to resume: stop, and let
                // the supervisor restart us.
                positions.failed = Some(e.to_string());
                let _ = consumer.assign(&TopicPartitionList::new());
                return;
            }
        };
        let mut at = TopicPartitionList::new();
        positions.resumed.clear();
        for e in tpl.elements() {
            let stored = stored.get(&e.partition()).copied();
            positions.resumed.insert(e.partition(), stored);
            let offset = stored.map_or(Offset::Beginning, Offset::Offset);
            let _ = at.add_partition_offset(e.topic(), e.partition(), offset);
        }
        tracing::info!(message = "partitions assigned at the store's offsets", sink = %self.sink, resumed = ?positions.resumed);
        if let Err(e) = consumer.assign(&at) {
            positions.failed = Some(format!("assign: {e}"));
        }
    }
}

/// Reads the stored offsets, retrying for a while if the store is down
/// (a rebalance during a store restart should not kill the sink).
pub(crate) fn stored_offsets_patiently<S: SinkStore + ?Sized>(
    store: &S,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, StoreError> {
    let mut attempt = 0u32;
    loop {
        match store.stored_offsets(topic) {
            Ok(s) => return Ok(s),
            Err(e) if attempt < 20 => {
                tracing::warn!(message = "cannot read stored offsets yet; retrying", error = %e);
                std::thread::sleep(Duration::from_millis(250u64 << attempt.min(3)));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
