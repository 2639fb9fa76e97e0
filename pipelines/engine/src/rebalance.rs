//! Partitions coming and going. Before partitions go, the open transaction
//! commits (or aborts, when the group already took them); before they are
//! used, their tasks' state is restored from the changelog's committed end.
//! The consumer's context routes librdkafka's callbacks here and feeds the
//! lag gauge (against the last stable offset, which is what a
//! read_committed consumer can reach).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};

use crate::changelog;
use crate::commit::Rewind;
use crate::core::Core;
use crate::failure::Reason;
use crate::metrics::PipelineMetrics;
use crate::processor::{Inputs, PartitionState, Processor};
use crate::runner::ExitReason;
use crate::task::Task;

pub(crate) struct EngineContext<P: Processor, I: Inputs<Message = P::Input>> {
    pub core: Arc<Mutex<Core<P, I>>>,
    pub metrics: PipelineMetrics,
    pub inputs: Vec<String>,
}

impl<P: Processor, I: Inputs<Message = P::Input>> ClientContext for EngineContext<P, I> {
    fn stats(&self, stats: Statistics) {
        for name in &self.inputs {
            let Some(topic) = stats.topics.get(name) else {
                continue;
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
                    .with_label_values(&[name, &id.to_string()])
                    .set((p.ls_offset - position).max(0));
            }
        }
    }
}

impl<P: Processor, I: Inputs<Message = P::Input>> ConsumerContext for EngineContext<P, I> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut core = self.core.lock().expect("core lock");
            core.on_revoke(consumer, tpl);
            for e in tpl.elements() {
                let _ = self
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[e.topic(), &e.partition().to_string()]);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(_) => {
                // The whole assignment, not only what was added: a task
                // needs every input of its partition number.
                let assignment = consumer.assignment().unwrap_or_default();
                self.core.lock().expect("core lock").on_assign(&assignment);
            }
            Rebalance::Error(e) => tracing::warn!(message = "rebalance error", error = %e),
            Rebalance::Revoke(_) => {}
        }
    }
}

impl<P: Processor, I: Inputs<Message = P::Input>> Core<P, I> {
    /// Partitions are about to go: commit what we did with them first, unless
    /// the group already took them from us.
    pub fn on_revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) {
        if self.exit.is_none() && self.batch.is_some() {
            if consumer.assignment_lost() {
                // Session timeout, unknown member or stale generation: another
                // member may be deciding these records already. Committing
                // would rely on the coordinator refusing our stale group
                // metadata, which it does not do for every combination (a
                // generation of -1 against an empty group is accepted), so
                // the open transaction is aborted, as Kafka Streams closes
                // lost tasks dirty. The partitions are going: no rewind.
                tracing::warn!(message = "assignment lost; aborting the open transaction", pipeline = %self.spec.name);
                self.abort(consumer, Reason::AssignmentLost, Rewind::No);
            } else {
                self.commit_or_abort(consumer);
            }
        }
        let numbers: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        for p in &numbers {
            if self.tasks.remove(p).is_some() {
                self.metrics.assigned_partitions.dec();
            }
        }
        self.touched.retain(|(_, p)| !numbers.contains(p));
        self.report_state_bytes();
        self.observe();
        tracing::info!(message = "partitions revoked", pipeline = %self.spec.name, partitions = ?numbers);
    }

    /// Every partition is gone at once (a fenced member about to rejoin):
    /// the open transaction cannot commit any more, and nothing of its
    /// state may be used before a restore from the changelog.
    pub fn forget_partitions(&mut self) {
        self.batch = None;
        for task in self.tasks.values_mut() {
            task.revert_all();
        }
        self.tasks.clear();
        self.touched.clear();
        self.exit = None;
        self.metrics.assigned_partitions.set(0);
        self.report_state_bytes();
        self.observe();
    }

    /// The assignment changed: restore the tasks that are new to us to the
    /// changelog's committed end before any of their records is decided.
    pub fn on_assign(&mut self, assignment: &TopicPartitionList) {
        let mut by_number: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
        for e in assignment.elements() {
            by_number
                .entry(e.partition())
                .or_default()
                .insert(e.topic().to_string());
        }
        // Co-partitioning: a task reads partition p of every input. An
        // assignor that splits them (an operator's override) would let two
        // members decide the same key from different inputs.
        for (p, topics) in &by_number {
            if topics.len() != self.spec.inputs.len() {
                self.exit = Some(ExitReason::Fatal(format!(
                    "partition {p} is assigned for {topics:?} but not for every input of {:?}; \
                     the assignor must co-partition the inputs (leave partition.assignment.strategy unset)",
                    self.spec.inputs
                )));
                return;
            }
        }
        let new: Vec<i32> = by_number
            .keys()
            .copied()
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        if new.is_empty() {
            return;
        }
        let started = Instant::now();
        match changelog::restore::<P::State>(
            &self.factory,
            &self.spec.changelog_topic,
            &new,
            surge_kafka::topics::RESTORE_LIMIT,
        ) {
            Ok((states, read)) => {
                let bytes: usize = states.values().map(|s| s.approx_bytes()).sum();
                for (p, state) in states {
                    self.tasks.insert(p, Task::new(state));
                }
                let secs = started.elapsed().as_secs_f64();
                self.metrics.restore_seconds.observe(secs);
                self.metrics.last_restore_seconds.set(secs);
                self.metrics.restore_records.inc_by(read.records);
                self.metrics.restore_tombstones.inc_by(read.tombstones);
                self.metrics.assigned_partitions.add(new.len() as i64);
                self.report_state_bytes();
                self.observe();
                tracing::info!(
                    message = "partitions assigned and restored",
                    pipeline = %self.spec.name,
                    partitions = ?new,
                    changelog_records = read.records,
                    tombstones = read.tombstones,
                    state_bytes = bytes,
                    restore_seconds = secs
                );
            }
            Err(e) => {
                self.exit = Some(ExitReason::Fatal(format!(
                    "restoring state of {new:?}: {e}"
                )));
            }
        }
    }
}
