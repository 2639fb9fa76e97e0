//! The consume-process-produce loop.
//!
//! One transaction spans a batch of input records across all assigned
//! partitions: their outputs, their dead letters, their coalesced changelog
//! records and their input offsets (with the group metadata, KIP-447) commit
//! or abort together. A batch closes after `max_batch_records` inputs or
//! `commit_interval`, whichever comes first; an idle pipeline has no open
//! transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, OwnedHeaders};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_core::settings::PipelineSettings;
use surge_kafka::ClientFactory;
use surge_schemas::TopicCodec;

use crate::changelog;
use crate::context::EngineContext;
use crate::deadletter;
use crate::metrics::PipelineMetrics;
use crate::processor::{Incoming, Outbox, PartitionState, Processor, Reject, StateTxn};
use crate::txn::{self, TxnAction};

/// The names and settings one pipeline runs with.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Short name: metrics label, client ids.
    pub name: String,
    pub input_topic: String,
    pub output_topic: String,
    pub changelog_topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    pub settings: PipelineSettings,
}

impl PipelineSpec {
    /// transactional.id: stable per instance, so a restart fences its predecessor.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.settings.instance_id)
    }
}

/// Whether an aborted batch's partitions are sought back to their committed
/// offsets (not when they are being taken away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewind {
    Yes,
    No,
}

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// Asked to stop; the open transaction was committed or aborted.
    Shutdown,
    /// Another instance took over our identity or our partitions: a zombie must not write.
    Fenced(String),
    /// The producer or consumer is unusable; a supervisor should restart us.
    Fatal(String),
}

/// The open transaction.
struct Batch {
    started: Instant,
    records: usize,
    next_offsets: BTreeMap<i32, i64>,
    outcomes: Vec<&'static str>,
    duplicates: u64,
    outputs: u64,
    dlq: Vec<&'static str>,
}

impl Batch {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            records: 0,
            next_offsets: BTreeMap::new(),
            outcomes: Vec::new(),
            duplicates: 0,
            outputs: 0,
            dlq: Vec::new(),
        }
    }
}

/// Everything the loop and the rebalance callbacks share.
pub(crate) struct Core<P: Processor> {
    spec: PipelineSpec,
    factory: ClientFactory,
    producer: TxnProducer,
    processor: P,
    codec: TopicCodec<P::Input>,
    runtime: tokio::runtime::Handle,
    states: HashMap<i32, P::State>,
    journals: HashMap<i32, Vec<<P::State as PartitionState>::Change>>,
    batch: Option<Batch>,
    metrics: PipelineMetrics,
    exit: Option<ExitReason>,
    /// Set by the signal handler; a producer waiting for the broker gives up on it.
    shutdown: Arc<AtomicBool>,
}

type Ctx<P> = EngineContext<P>;

/// The transactional producer. Threaded: its own thread serves delivery
/// reports, which abort_transaction waits for (a BaseProducer nobody polls
/// would make every abort run into its timeout).
type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// Runs `processor` until shutdown or a fatal condition. Blocks the calling
/// thread: call it from a dedicated thread, never from an async worker.
pub fn run_pipeline<P: Processor>(
    spec: PipelineSpec,
    factory: ClientFactory,
    processor: P,
    codec: TopicCodec<P::Input>,
    runtime: tokio::runtime::Handle,
    shutdown: Arc<AtomicBool>,
    metrics: PipelineMetrics,
) -> ExitReason {
    // The producer is initialised before we join the group: init_transactions
    // fences our previous incarnation and aborts its open transaction, so the
    // changelog's committed end is final before we restore from it.
    let producer = match new_producer(&factory, &spec, &shutdown) {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let core = Arc::new(Mutex::new(Core {
        spec: spec.clone(),
        factory: factory.clone(),
        producer,
        processor,
        codec,
        runtime,
        states: HashMap::new(),
        journals: HashMap::new(),
        batch: None,
        metrics: metrics.clone(),
        exit: None,
        shutdown: shutdown.clone(),
    }));
    let mut cfg = factory.read_committed_consumer_config(&spec.name, &spec.group_id);
    // Static membership (KIP-345): a restarted instance takes its own place
    // in the group at once instead of waiting out its dead predecessor's
    // session, and a second live process with the same identity is fenced.
    cfg.set("partition.assignment.strategy", "cooperative-sticky")
        .set("group.instance.id", spec.transactional_id())
        .set("statistics.interval.ms", "5000");
    // Static members do not leave the group on shutdown: their partitions
    // move after the session times out. librdkafka's 45 s default is far too
    // long for a flash sale; 10 s unless the operator chose otherwise.
    if cfg.get("session.timeout.ms").is_none() {
        cfg.set("session.timeout.ms", "10000");
    }
    let context = EngineContext {
        core: core.clone(),
        metrics: metrics.clone(),
        input_topic: spec.input_topic.clone(),
    };
    let consumer: BaseConsumer<Ctx<P>> = match cfg.create_with_context(context) {
        Ok(c) => c,
        Err(e) => return ExitReason::Fatal(format!("creating the consumer: {e}")),
    };
    if let Err(e) = consumer.subscribe(&[&spec.input_topic]) {
        return ExitReason::Fatal(format!("subscribing to {}: {e}", spec.input_topic));
    }
    tracing::info!(
        message = "pipeline started",
        pipeline = %spec.name,
        input = %spec.input_topic,
        output = %spec.output_topic,
        group = %spec.group_id,
        transactional_id = %spec.transactional_id()
    );

    let interval = spec.settings.commit_interval;
    let exit = loop {
        if shutdown.load(Ordering::Relaxed) {
            let mut c = core.lock().expect("core lock");
            c.commit_or_abort(&consumer);
            break c.exit.clone().unwrap_or(ExitReason::Shutdown);
        }
        // Poll with the lock released: rebalance callbacks run inside poll.
        let timeout = {
            let c = core.lock().expect("core lock");
            match &c.batch {
                Some(b) => interval
                    .saturating_sub(b.started.elapsed())
                    .max(Duration::from_millis(1)),
                None => Duration::from_millis(100),
            }
        };
        let polled = consumer.poll(timeout);
        metrics.last_poll.set(unix_seconds());
        let mut c = core.lock().expect("core lock");
        if let Some(exit) = c.exit.clone() {
            break exit;
        }
        match polled {
            Some(Ok(msg)) => c.handle(&consumer, &msg),
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            // A fatal consumer error ends the loop: fenced by a static member
            // with our identity (or no longer a member) means zombie → exit 3.
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                let exit = match txn::classify(&e) {
                    TxnAction::Fenced => ExitReason::Fenced(format!("consumer: {e}")),
                    _ => ExitReason::Fatal(format!("consumer: {e}")),
                };
                tracing::error!(message = "fatal consumer error; stopping", pipeline = %c.spec.name, error = %e, fenced = matches!(exit, ExitReason::Fenced(_)));
                c.batch = None;
                c.exit = Some(exit.clone());
                break exit;
            }
            Some(Err(e)) => tracing::warn!(message = "consumer error", error = %e),
        }
        c.commit_if_due(&consumer);
        if let Some(exit) = c.exit.clone() {
            break exit;
        }
    };
    if exit == ExitReason::Shutdown {
        // Leaving the group revokes our partitions (the callback commits
        // nothing: no transaction is open) so others take over at once.
        let _ = consumer.unsubscribe();
        let _ = consumer.poll(Duration::from_millis(100));
    }
    tracing::info!(message = "pipeline stopped", pipeline = %spec.name, reason = ?exit);
    exit
}

/// A transactional producer, initialised: its init_transactions bumps the
/// epoch of our transactional.id, which fences any older incarnation and
/// aborts what it left open. Used at start and whenever the producer is
/// replaced. The broker may be away (a restart, a rolling upgrade,
/// everything booting at once): a timed-out or retriable init is called
/// again — librdkafka resumes it — until it succeeds or we are asked to stop,
/// instead of exiting into the outage.
fn new_producer(
    factory: &ClientFactory,
    spec: &PipelineSpec,
    shutdown: &AtomicBool,
) -> Result<TxnProducer, ExitReason> {
    let what = "initialising the transactional producer";
    let cfg = factory.transactional_producer_config(&spec.name, &spec.transactional_id());
    let producer: TxnProducer = cfg.create().map_err(|e| exit_for(&e, what))?;
    // Short attempts, so that a stop request is seen within seconds.
    let attempt_timeout = spec
        .settings
        .transaction_call_timeout
        .min(Duration::from_secs(5));
    let mut attempt = 0;
    loop {
        match producer.init_transactions(attempt_timeout) {
            Ok(()) => return Ok(producer),
            Err(e) if matches!(txn::classify(&e), TxnAction::Retry | TxnAction::Recreate) => {
                if shutdown.load(Ordering::Relaxed) {
                    return Err(ExitReason::Shutdown);
                }
                tracing::warn!(message = "transactional producer not initialised yet; retrying", pipeline = %spec.name, attempt, error = %e);
                std::thread::sleep(txn::backoff(attempt));
                attempt += 1;
            }
            Err(e) => return Err(exit_for(&e, what)),
        }
    }
}

fn exit_for(e: &KafkaError, what: &str) -> ExitReason {
    match txn::classify(e) {
        TxnAction::Fenced => ExitReason::Fenced(format!("{what}: {e}")),
        _ => ExitReason::Fatal(format!("{what}: {e}")),
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl<P: Processor> Core<P> {
    /// Decides one input record inside the open transaction (opening one if needed).
    fn handle(&mut self, consumer: &BaseConsumer<Ctx<P>>, msg: &BorrowedMessage<'_>) {
        if self.batch.is_none() {
            if let Err(e) = self.producer.begin_transaction() {
                let action = txn::classify(&e);
                self.fail(consumer, action, "begin", &e.to_string());
                return;
            }
            self.batch = Some(Batch::new());
        }
        self.metrics.records_in.inc();
        let (partition, offset) = (msg.partition(), msg.offset());
        let decoded = self.runtime.block_on(self.codec.decode(msg.payload()));
        let result = match decoded {
            Err(e) if e.is_poison() => self.dead_letter(msg, e.reason_code(), &e.to_string()),
            Err(e) => Err(Failure::retry(e.to_string())),
            Ok(message) => self.decide(
                msg,
                Incoming {
                    message,
                    partition,
                    offset,
                },
            ),
        };
        match result {
            Ok(()) => {
                let batch = self.batch.as_mut().expect("open batch");
                batch.next_offsets.insert(partition, offset + 1);
                batch.records += 1;
            }
            Err(f) => self.fail(consumer, f.action, f.reason, &f.detail),
        }
    }

    fn decide(
        &mut self,
        msg: &BorrowedMessage<'_>,
        input: Incoming<P::Input>,
    ) -> Result<(), Failure> {
        let partition = input.partition;
        let state = self.states.entry(partition).or_default();
        let journal = self.journals.entry(partition).or_default();
        let mut out = Outbox::default();
        match self
            .processor
            .process(&mut StateTxn::new(state, journal), input, &mut out)
        {
            Ok(()) => {
                let records = std::mem::take(&mut out.records);
                let topic = self.spec.output_topic.clone();
                for (key, payload) in &records {
                    self.send(
                        BaseRecord::to(&topic)
                            .partition(partition)
                            .key(key)
                            .payload(payload),
                    )?;
                }
                let batch = self.batch.as_mut().expect("open batch");
                batch.outputs += records.len() as u64;
                batch.outcomes.extend(out.outcomes);
                batch.duplicates += out.duplicates;
                Ok(())
            }
            Err(Reject::Poison { reason, message }) => self.dead_letter(msg, reason, &message),
            Err(Reject::Retry(detail)) => Err(Failure::retry(detail)),
        }
    }

    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        reason: &'static str,
        message: &str,
    ) -> Result<(), Failure> {
        tracing::warn!(
            message = "record sent to the dead-letter topic",
            pipeline = %self.spec.name,
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            reason,
            error = message
        );
        let headers: OwnedHeaders = deadletter::headers(msg, &self.spec.name, reason, message);
        let topic = self.spec.dlq_topic.clone();
        let mut record = BaseRecord::to(&topic).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        self.send(record)?;
        self.batch.as_mut().expect("open batch").dlq.push(reason);
        Ok(())
    }

    /// Produces one record of the open transaction, waiting out a full queue.
    fn send<K, V>(&self, mut record: BaseRecord<'_, K, V>) -> Result<(), Failure>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        V: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The producer thread drains the queue; wait a little.
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(Failure {
                        action: txn::classify(&e),
                        reason: "produce",
                        detail: e.to_string(),
                    })
                }
            }
        }
    }

    fn commit_if_due(&mut self, consumer: &BaseConsumer<Ctx<P>>) {
        let due = match &self.batch {
            Some(b) => {
                b.records >= self.spec.settings.max_batch_records
                    || b.started.elapsed() >= self.spec.settings.commit_interval
            }
            None => false,
        };
        if due {
            self.commit_or_abort(consumer);
        }
    }

    /// Commits the open transaction; on failure takes the action its error calls for.
    fn commit_or_abort(&mut self, consumer: &BaseConsumer<Ctx<P>>) {
        if self.batch.is_none() {
            return;
        }
        let ratio = self.spec.settings.inject_abort_ratio;
        if ratio > 0.0 && rand::rng().random_bool(ratio.min(1.0)) {
            self.fail(
                consumer,
                TxnAction::Abort,
                "injected",
                "fault injection (inject_abort_ratio)",
            );
            return;
        }
        let started = Instant::now();
        if let Err(f) = self.try_commit(consumer) {
            self.fail(consumer, f.action, f.reason, &f.detail);
            return;
        }
        let batch = self.batch.take().expect("open batch");
        for j in self.journals.values_mut() {
            j.clear();
        }
        let m = &self.metrics;
        m.commit_seconds.observe(started.elapsed().as_secs_f64());
        m.transactions_committed.inc();
        m.batch_records.observe(batch.records as f64);
        m.records_out
            .with_label_values(&["output"])
            .inc_by(batch.outputs);
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
        m.state_bytes.set(
            self.states
                .values()
                .map(|s| s.approx_bytes())
                .sum::<usize>() as i64,
        );
    }

    fn try_commit(&mut self, consumer: &BaseConsumer<Ctx<P>>) -> Result<(), Failure> {
        // Changelog: the last value per key per partition (compaction would
        // keep only that anyway), to the partition matching the input's.
        let topic = self.spec.changelog_topic.clone();
        let mut written = 0u64;
        for (partition, journal) in &self.journals {
            let mut order: Vec<Vec<u8>> = Vec::new();
            let mut last: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
            let mut records = Vec::new();
            for change in journal {
                <P::State as PartitionState>::changelog_records(change, &mut records);
            }
            for (key, value) in records {
                if last.insert(key.clone(), value).is_none() {
                    order.push(key);
                }
            }
            for key in order {
                let value = last.remove(&key).expect("recorded key");
                let record = BaseRecord::<Vec<u8>, Vec<u8>>::to(&topic)
                    .partition(*partition)
                    .key(&key);
                let record = match &value {
                    Some(v) => record.payload(v),
                    None => record,
                };
                self.send(record)?;
                written += 1;
            }
        }
        self.metrics
            .records_out
            .with_label_values(&["changelog"])
            .inc_by(written);

        let batch = self.batch.as_ref().expect("open batch");
        let mut offsets = TopicPartitionList::new();
        for (p, next) in &batch.next_offsets {
            offsets
                .add_partition_offset(&self.spec.input_topic, *p, Offset::Offset(*next))
                .map_err(|e| Failure {
                    action: TxnAction::Abort,
                    reason: "offsets",
                    detail: e.to_string(),
                })?;
        }
        let group = consumer.group_metadata().ok_or_else(|| Failure {
            action: TxnAction::Abort,
            reason: "offsets",
            detail: "no consumer group metadata".into(),
        })?;
        let timeout = self.spec.settings.transaction_call_timeout;
        self.with_retries("send_offsets", || {
            self.producer
                .send_offsets_to_transaction(&offsets, &group, timeout)
        })?;
        self.await_deliveries(timeout);
        self.with_retries("commit", || self.producer.commit_transaction(timeout))
    }

    /// Waits (1 ms steps, up to `timeout`) until every record produced is
    /// acknowledged. rust-rdkafka's `flush`, which its `commit_transaction`
    /// runs first, polls the event queue for up to 100 ms while anything is in
    /// flight; here the ThreadedProducer's own thread takes the delivery
    /// reports off that queue, so the poll sleeps its full 100 ms — one per
    /// commit (found by `surge bench`). Afterwards that flush finds nothing in
    /// flight and returns at once.
    fn await_deliveries(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn with_retries(
        &self,
        what: &'static str,
        mut call: impl FnMut() -> Result<(), KafkaError>,
    ) -> Result<(), Failure> {
        let mut attempt = 0;
        loop {
            match call() {
                Ok(()) => return Ok(()),
                Err(e) => match txn::classify(&e) {
                    TxnAction::Retry if attempt < 8 => {
                        tracing::info!(message = "retrying transaction call", call = what, attempt, error = %e);
                        std::thread::sleep(txn::backoff(attempt));
                        attempt += 1;
                    }
                    TxnAction::Retry => {
                        return Err(Failure {
                            action: TxnAction::Recreate,
                            reason: what,
                            detail: e.to_string(),
                        })
                    }
                    action => {
                        return Err(Failure {
                            action,
                            reason: what,
                            detail: e.to_string(),
                        })
                    }
                },
            }
        }
    }

    /// Handles a failed transaction according to `action`.
    fn fail(
        &mut self,
        consumer: &BaseConsumer<Ctx<P>>,
        action: TxnAction,
        reason: &'static str,
        detail: &str,
    ) {
        match action {
            TxnAction::Fenced => {
                tracing::error!(message = "fenced: another instance owns this work; stopping without writing", pipeline = %self.spec.name, detail);
                self.exit = Some(ExitReason::Fenced(format!("{reason}: {detail}")));
                // Nothing of the open transaction can commit any more.
                self.batch = None;
            }
            TxnAction::Fatal => {
                // The producer is unusable but nobody else owns our work: a
                // new producer with the same transactional.id bumps the epoch,
                // which aborts whatever this one left open.
                tracing::error!(message = "fatal producer error; recreating the producer", pipeline = %self.spec.name, reason, detail);
                self.recreate(consumer, reason, Rewind::Yes);
            }
            TxnAction::Abort | TxnAction::Retry => {
                tracing::warn!(message = "aborting transaction", pipeline = %self.spec.name, reason, detail);
                if reason == "retry" {
                    // Registry outage or a processor asking to retry: don't spin.
                    std::thread::sleep(Duration::from_millis(500));
                }
                self.abort(consumer, reason, Rewind::Yes);
            }
            TxnAction::Recreate => {
                tracing::warn!(message = "recreating the transactional producer", pipeline = %self.spec.name, reason, detail);
                self.recreate(consumer, reason, Rewind::Yes);
            }
        }
    }

    fn abort(&mut self, consumer: &BaseConsumer<Ctx<P>>, reason: &'static str, rewind: Rewind) {
        // Flush first: an abort that overtakes the transaction's first
        // AddPartitionsToTxn is rejected by the coordinator as
        // INVALID_TXN_STATE (librdkafka#4849); a delivered record
        // proves the transaction is registered. It is aborted anyway.
        let timeout = self.spec.settings.transaction_call_timeout;
        self.await_deliveries(timeout);
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
    fn recreate(&mut self, consumer: &BaseConsumer<Ctx<P>>, reason: &'static str, rewind: Rewind) {
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
    /// partitions are going away) rewind them to their committed offsets, so
    /// the same records are decided again from the same state.
    fn discard_batch(
        &mut self,
        consumer: &BaseConsumer<Ctx<P>>,
        reason: &'static str,
        rewind: Rewind,
    ) {
        for (p, journal) in self.journals.iter_mut() {
            if let Some(state) = self.states.get_mut(p) {
                for change in journal.iter().rev() {
                    state.revert(change);
                }
            }
            journal.clear();
        }
        let Some(batch) = self.batch.take() else {
            return;
        };
        self.metrics
            .transactions_aborted
            .with_label_values(&[reason])
            .inc();
        if batch.next_offsets.is_empty() || rewind == Rewind::No {
            return;
        }
        if let Err(e) = self.rewind(consumer, batch.next_offsets.keys().copied()) {
            // Without a rewind we would skip records: restart from the committed offsets instead.
            self.exit = Some(ExitReason::Fatal(format!("rewind after abort failed: {e}")));
        }
    }

    fn rewind(
        &self,
        consumer: &BaseConsumer<Ctx<P>>,
        partitions: impl Iterator<Item = i32>,
    ) -> Result<(), KafkaError> {
        let timeout = self.spec.settings.transaction_call_timeout;
        let mut wanted = TopicPartitionList::new();
        for p in partitions {
            wanted.add_partition(&self.spec.input_topic, p);
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

    /// Partitions are about to go: commit what we did with them first, unless
    /// the group already took them from us.
    pub(crate) fn on_revoke(&mut self, consumer: &BaseConsumer<Ctx<P>>, partitions: &[i32]) {
        if self.exit.is_none() && self.batch.is_some() {
            if consumer.assignment_lost() {
                // Session timeout, unknown member or stale generation: another
                // member may be deciding these records already. Committing
                // would rely on the coordinator refusing our stale group
                // metadata, which it does not do for every combination (a
                // generation of -1 against an empty group is accepted), so
                // the open transaction is aborted, as Kafka Streams closes
                // lost tasks dirty. The partitions are going: no rewind.
                tracing::warn!(message = "assignment lost; aborting the open transaction", pipeline = %self.spec.name, ?partitions);
                self.abort(consumer, "assignment_lost", Rewind::No);
            } else {
                self.commit_or_abort(consumer);
            }
        }
        for p in partitions {
            self.states.remove(p);
            self.journals.remove(p);
        }
        self.metrics
            .assigned_partitions
            .sub(partitions.len() as i64);
        tracing::info!(message = "partitions revoked", pipeline = %self.spec.name, ?partitions);
    }

    /// Partitions arrived: restore their state to the changelog's committed end first.
    pub(crate) fn on_assign(&mut self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        let started = Instant::now();
        match changelog::restore::<P::State>(
            &self.factory,
            &self.spec.changelog_topic,
            partitions,
            Duration::from_secs(600),
        ) {
            Ok((states, records)) => {
                let bytes: usize = states.values().map(|s| s.approx_bytes()).sum();
                self.states.extend(states);
                let secs = started.elapsed().as_secs_f64();
                self.metrics.restore_seconds.observe(secs);
                self.metrics.restore_records.inc_by(records);
                self.metrics
                    .assigned_partitions
                    .add(partitions.len() as i64);
                tracing::info!(
                    message = "partitions assigned and restored",
                    pipeline = %self.spec.name,
                    ?partitions,
                    changelog_records = records,
                    state_bytes = bytes,
                    restore_seconds = secs
                );
            }
            Err(e) => {
                self.exit = Some(ExitReason::Fatal(format!(
                    "restoring state of {partitions:?}: {e}"
                )));
            }
        }
    }
}

/// A failed step of the open transaction and what to do about it.
struct Failure {
    action: TxnAction,
    reason: &'static str,
    detail: String,
}

impl Failure {
    fn retry(detail: String) -> Self {
        // A record that may decode later (registry outage) or a processor
        // asking for a retry: abort and decide the batch again.
        Self {
            action: TxnAction::Abort,
            reason: "retry",
            detail,
        }
    }
}
