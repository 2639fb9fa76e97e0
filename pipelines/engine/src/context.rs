//! The consumer's context: rebalance callbacks hand over to the pipeline
//! core (commit before partitions go, restore before they are used) and
//! librdkafka's statistics feed the lag gauge (against the last stable
//! offset, which is what a read_committed consumer can reach).

use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics};

use crate::metrics::PipelineMetrics;
use crate::processor::Processor;
use crate::runner::Core;

pub(crate) struct EngineContext<P: Processor> {
    pub core: Arc<Mutex<Core<P>>>,
    pub metrics: PipelineMetrics,
    pub input_topic: String,
}

impl<P: Processor> ClientContext for EngineContext<P> {
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.input_topic) else {
            return;
        };
        for (id, p) in &topic.partitions {
            if *id < 0 || p.ls_offset < 0 {
                continue;
            }
            // Position if we consumed from it, else the committed offset.
            let position = if p.app_offset >= 0 {
                p.app_offset
            } else {
                p.committed_offset
            };
            if position < 0 {
                continue;
            }
            self.metrics
                .consumer_lag
                .with_label_values(&[&id.to_string()])
                .set((p.ls_offset - position).max(0));
        }
    }
}

impl<P: Processor> ConsumerContext for EngineContext<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let mut core = self.core.lock().expect("core lock");
            core.on_revoke(consumer, &partitions);
            for p in &partitions {
                let _ = self
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[&p.to_string()]);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.core.lock().expect("core lock").on_assign(&partitions);
            }
            Rebalance::Error(e) => tracing::warn!(message = "rebalance error", error = %e),
            Rebalance::Revoke(_) => {}
        }
    }
}
