//! Closing the open transaction: commit (changelog, offsets with the group
//! metadata, commit) or, on failure, the one decision about what the error
//! means — retry, abort and rewind, recreate the producer, or stop.

use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::core::Core;
use crate::failure::{Failure, Reason};
use crate::metrics::COMMIT_PHASES;
use crate::processor::{Inputs, PartitionState, Processor};
use crate::producer::{self, exit_for, new_producer};
use crate::runner::ExitReason;
use crate::txn::{self, TxnAction};

/// Where one commit's time went, step by step
/// (`pipeline_commit_phase_duration_seconds`).
#[derive(Debug)]
struct CommitPhases {
    mark: Instant,
    /// Queuing the changelog records (waits only on a full producer queue).
    changelog: Duration,
    /// AddOffsetsToTxn and TxnOffsetCommit, through the group coordinator.
    send_offsets: Duration,
    /// Until the broker acknowledged every record of the transaction.
    deliveries: Duration,
    /// EndTxn: the coordinator's prepare-commit (its markers follow async).
    end_txn: Duration,
}

impl CommitPhases {
    fn start() -> Self {
        Self {
            mark: Instant::now(),
            changelog: Duration::ZERO,
            send_offsets: Duration::ZERO,
            deliveries: Duration::ZERO,
            end_txn: Duration::ZERO,
        }
    }

    /// Time since the previous lap.
    fn lap(&mut self) -> Duration {
        let now = Instant::now();
        let took = now - self.mark;
        self.mark = now;
        took
    }

    /// In [`COMMIT_PHASES`] order.
    fn named(&self) -> [(&'static str, Duration); 4] {
        let [changelog, offsets, deliveries, end] = COMMIT_PHASES;
        [
            (changelog, self.changelog),
            (offsets, self.send_offsets),
            (deliveries, self.deliveries),
            (end, self.end_txn),
        ]
    }

    fn total(&self) -> Duration {
        self.named().iter().map(|(_, d)| *d).sum()
    }

    /// Logs the commit as `slow commit`, step by step, when it took at
    /// least `interval`; says whether it did. A healthy commit takes a few
    /// ms; one longer than the interval between commits at least doubles
    /// the wait of the batch's requests, and the loop reads nothing
    /// meanwhile: the operator needs to know which step it was.
    fn warn_if_slow(&self, pipeline: &str, records: usize, interval: Duration) -> bool {
        if self.total() < interval {
            return false;
        }
        let [changelog, offsets, deliveries, end] = self.named().map(|(_, d)| d.as_millis());
        tracing::warn!(message = "slow commit", pipeline = %pipeline, records, total_ms = self.total().as_millis(), changelog_ms = changelog, send_offsets_ms = offsets, deliveries_ms = deliveries, end_txn_ms = end);
        true
    }
}

/// Whether an aborted batch's partitions are sought back to their committed
/// offsets (not when they are being taken away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rewind {
    Yes,
    No,
}

impl<P: Processor, I: Inputs<Message = P::Input>> Core<P, I> {
    /// Commits when the batch is full, old enough, or — `drained`: the last
    /// poll found no input waiting — past `min_commit_interval`.
    pub fn commit_if_due<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, drained: bool) {
        let s = &self.spec.settings;
        let due = match &self.batch {
            Some(b) => {
                let age = b.started.elapsed();
                b.records >= s.max_batch_records
                    || age >= s.commit_interval
                    || (drained && age >= s.min_commit_interval)
            }
            None => false,
        };
        if due {
            self.commit_or_abort(consumer);
        }
    }

    /// Commits the open transaction; on failure takes the action its error calls for.
    pub fn commit_or_abort<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        if self.batch.is_none() {
            return;
        }
        let ratio = self.spec.settings.inject_abort_ratio;
        if ratio > 0.0 && rand::rng().random_bool(ratio.min(1.0)) {
            let f = Failure::new(
                TxnAction::Abort,
                Reason::Injected,
                "fault injection (inject_abort_ratio)",
            );
            self.fail(consumer, f);
            return;
        }
        let phases = match self.try_commit(consumer) {
            Ok(phases) => phases,
            Err(f) => {
                self.fail(consumer, f);
                return;
            }
        };
        let batch = self.batch.take().expect("open batch");
        self.touched.clear();
        for task in self.tasks.values_mut() {
            task.journal.clear();
        }
        let m = &self.metrics;
        m.commit_seconds.observe(phases.total().as_secs_f64());
        for (phase, took) in phases.named() {
            m.commit_phase_seconds
                .with_label_values(&[phase])
                .observe(took.as_secs_f64());
        }
        phases.warn_if_slow(
            &self.spec.name,
            batch.records,
            self.spec.settings.commit_interval,
        );
        m.transactions_committed.inc();
        m.batch_records.observe(batch.records as f64);
        m.records_out
            .with_label_values(&["output"])
            .inc_by(batch.outputs);
        m.records_out
            .with_label_values(&["forwarded"])
            .inc_by(batch.forwarded);
        m.forwarded_records.inc_by(batch.forwarded);
        m.duplicate_requests.inc_by(batch.duplicates);
        for o in batch.outcomes {
            m.decisions.with_label_values(&[o]).inc();
        }
        for r in &batch.dlq {
            m.dlq_records.with_label_values(&[r]).inc();
        }
        m.records_out
            .with_label_values(&["dlq"])
            .inc_by(batch.dlq.len() as u64);
        self.report_state_bytes();
        self.observe();
    }

    /// Sets the state size gauge to what the owned partitions hold now
    /// (after a commit, a restore, a revocation).
    pub fn report_state_bytes(&self) {
        self.metrics.state_bytes.set(
            self.tasks
                .values()
                .map(|t| t.state.approx_bytes())
                .sum::<usize>() as i64,
        );
    }

    /// Shows the processor the committed state of every owned partition.
    pub fn observe(&mut self) {
        let mut states = self.tasks.iter().map(|(p, t)| (*p, &t.state));
        self.processor.observe(&mut states);
    }

    fn try_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<CommitPhases, Failure> {
        let mut phases = CommitPhases::start();
        // Changelog: the last value per key per partition (compaction would
        // keep only that anyway), to the partition matching the task's.
        let mut written = 0u64;
        for (partition, task) in &self.tasks {
            for (key, value) in task.changelog() {
                let record = BaseRecord::<Vec<u8>, Vec<u8>>::to(&self.spec.changelog_topic)
                    .partition(*partition)
                    .key(&key);
                let record = match &value {
                    Some(v) => record.payload(v),
                    None => record,
                };
                producer::send(&self.producer, record)?;
                written += 1;
            }
        }
        self.metrics
            .records_out
            .with_label_values(&["changelog"])
            .inc_by(written);
        phases.changelog = phases.lap();

        let batch = self.batch.as_ref().expect("open batch");
        let mut offsets = TopicPartitionList::new();
        for ((input, p), next) in &batch.next_offsets {
            offsets
                .add_partition_offset(&self.spec.inputs[*input], *p, Offset::Offset(*next))
                .map_err(|e| Failure::new(TxnAction::Abort, Reason::Offsets, e.to_string()))?;
        }
        let group = consumer.group_metadata().ok_or_else(|| {
            Failure::new(
                TxnAction::Abort,
                Reason::Offsets,
                "no consumer group metadata",
            )
        })?;
        let timeout = self.spec.settings.transaction_call_timeout;
        if offsets.count() > 0 {
            producer::with_retries(Reason::SendOffsets, || {
                self.producer
                    .send_offsets_to_transaction(&offsets, &group, timeout)
            })?;
        }
        phases.send_offsets = phases.lap();
        producer::await_deliveries(&self.producer, timeout);
        phases.deliveries = phases.lap();
        producer::with_retries(Reason::Commit, || self.producer.commit_transaction(timeout))?;
        phases.end_txn = phases.lap();
        Ok(phases)
    }

    /// Handles a failed transaction according to its action.
    pub fn fail<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, f: Failure) {
        let Failure {
            action,
            reason,
            detail,
        } = f;
        let label = reason.label();
        let (action, detail) = match (action, producer::fatally_fenced(&self.producer)) {
            (TxnAction::Fatal, Some(fence)) => (TxnAction::Fenced, format!("{detail}: {fence}")),
            (action, _) => (action, detail),
        };
        match action {
            TxnAction::Fenced => {
                tracing::error!(message = "fenced: another instance owns this work; stopping without writing", pipeline = %self.spec.name, reason = label, detail);
                self.exit = Some(ExitReason::Fenced(format!("{label}: {detail}")));
                // Nothing of the open transaction can commit any more.
                self.batch = None;
            }
            TxnAction::Fatal => {
                // The producer is unusable but nobody else owns our work: a
                // new producer with the same transactional.id bumps the epoch,
                // which aborts whatever this one left open.
                tracing::error!(message = "fatal producer error; recreating the producer", pipeline = %self.spec.name, reason = label, detail);
                self.recreate(consumer, reason, Rewind::Yes);
            }
            TxnAction::Abort | TxnAction::Retry => {
                tracing::warn!(message = "aborting transaction", pipeline = %self.spec.name, reason = label, detail);
                if reason.pauses() {
                    // Registry outage or a processor asking to retry: don't spin.
                    std::thread::sleep(Duration::from_millis(500));
                }
                self.abort(consumer, reason, Rewind::Yes);
            }
            TxnAction::Recreate => {
                tracing::warn!(message = "recreating the transactional producer", pipeline = %self.spec.name, reason = label, detail);
                self.recreate(consumer, reason, Rewind::Yes);
            }
        }
    }

    pub fn abort<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        reason: Reason,
        rewind: Rewind,
    ) {
        if self.batch.is_none() {
            // Nothing open (begin itself failed): just undo and rewind.
            self.discard_batch(consumer, reason, rewind);
            return;
        }
        // Flush first: an abort that overtakes the transaction's first
        // AddPartitionsToTxn is rejected by the coordinator as
        // INVALID_TXN_STATE (librdkafka#4849); a delivered record
        // proves the transaction is registered. It is aborted anyway.
        let timeout = self.spec.settings.transaction_call_timeout;
        producer::await_deliveries(&self.producer, timeout);
        let _ = self.producer.flush(timeout);
        let aborted = self.producer.abort_transaction(timeout);
        match aborted.as_ref().map_err(txn::classify) {
            Ok(()) => self.discard_batch(consumer, reason, rewind),
            Err(TxnAction::Fenced) => {
                let e = aborted.unwrap_err();
                self.exit = Some(exit_for(&e, "abort"));
                self.batch = None;
            }
            Err(_) => {
                tracing::warn!(message = "abort failed; recreating the producer", pipeline = %self.spec.name, error = %aborted.unwrap_err());
                self.recreate(consumer, reason, rewind);
            }
        }
    }

    /// A new producer with the same transactional.id: its init bumps the
    /// epoch, which fences the old one and aborts whatever it left open.
    fn recreate<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        reason: Reason,
        rewind: Rewind,
    ) {
        match new_producer(&self.factory, &self.spec, &self.shutdown) {
            Ok(p) => {
                self.producer = p;
                self.metrics.producer_recreated.inc();
                self.discard_batch(consumer, reason, rewind);
            }
            Err(exit) => {
                // Nothing of the old producer's transaction can commit now.
                self.batch = None;
                self.exit = Some(exit);
            }
        }
    }

    /// After an abort: undo the batch's state changes and (unless the
    /// partitions are going away) rewind every partition read since the
    /// last commit to its committed offset, so the same records are decided
    /// again from the same state.
    fn discard_batch<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        reason: Reason,
        rewind: Rewind,
    ) {
        for task in self.tasks.values_mut() {
            task.revert_all();
        }
        if self.batch.take().is_some() {
            self.metrics
                .transactions_aborted
                .with_label_values(&[reason.label()])
                .inc();
        }
        let touched = std::mem::take(&mut self.touched);
        if touched.is_empty() || rewind == Rewind::No {
            return;
        }
        if let Err(e) = self.rewind(consumer, &touched) {
            // Without a rewind we would skip records: restart from the committed offsets instead.
            self.exit = Some(ExitReason::Fatal(format!("rewind after abort failed: {e}")));
        }
    }

    fn rewind<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: &std::collections::BTreeSet<(usize, i32)>,
    ) -> Result<(), KafkaError> {
        let timeout = self.spec.settings.transaction_call_timeout;
        let mut wanted = TopicPartitionList::new();
        for (input, p) in partitions {
            if self.tasks.contains_key(p) {
                wanted.add_partition(&self.spec.inputs[*input], *p);
            }
        }
        if wanted.count() == 0 {
            return Ok(());
        }
        let committed = consumer.committed_offsets(wanted, timeout)?;
        let mut seek = TopicPartitionList::new();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning, // nothing committed yet: auto.offset.reset=earliest
            };
            seek.add_partition_offset(e.topic(), e.partition(), offset)?;
        }
        for e in consumer.seek_partitions(seek, timeout)?.elements() {
            if let Err(err) = e.error() {
                return Err(err);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_named_in_metric_order_and_sum_to_the_total() {
        let mut p = CommitPhases::start();
        p.changelog = Duration::from_millis(1);
        p.send_offsets = Duration::from_millis(20);
        p.deliveries = Duration::from_millis(300);
        p.end_txn = Duration::from_millis(4000);
        let named = p.named();
        assert_eq!(named.map(|(n, _)| n), COMMIT_PHASES);
        assert_eq!(
            named.map(|(_, d)| d.as_millis()),
            [1, 20, 300, 4000],
            "each label carries its own step"
        );
        assert_eq!(p.total(), Duration::from_millis(4321));
    }

    /// What `phases.warn_if_slow(..)` wrote, through a subscriber of its own.
    fn logged(phases: &CommitPhases, interval: Duration) -> (bool, String) {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(sink.clone()))
            .with_ansi(false)
            .finish();
        let slow = tracing::subscriber::with_default(subscriber, || {
            phases.warn_if_slow("coupon", 812, interval)
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        (slow, text)
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_commit_past_the_interval_is_logged_with_its_steps() {
        let mut p = CommitPhases::start();
        p.changelog = Duration::from_millis(3);
        p.send_offsets = Duration::from_millis(86);
        p.deliveries = Duration::from_millis(9);
        p.end_txn = Duration::from_millis(2);
        let (slow, text) = logged(&p, Duration::from_millis(100));
        assert!(slow, "100 ms is the interval: {text}");
        for field in [
            "WARN",
            "slow commit",
            "pipeline=coupon",
            "records=812",
            "total_ms=100",
            "changelog_ms=3",
            "send_offsets_ms=86",
            "deliveries_ms=9",
            "end_txn_ms=2",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        let (slow, text) = logged(&p, Duration::from_millis(101));
        assert!(!slow && text.is_empty(), "under the interval: {text}");
    }

    #[test]
    fn a_lap_is_the_time_since_the_previous_one() {
        let mut p = CommitPhases::start();
        std::thread::sleep(Duration::from_millis(5));
        let first = p.lap();
        let second = p.lap();
        assert!(first >= Duration::from_millis(5), "{first:?}");
        assert!(second < first, "the mark moved: {second:?} after {first:?}");
    }
}
