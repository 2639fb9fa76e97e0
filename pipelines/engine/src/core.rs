//! The pipeline core: everything the poll loop and the rebalance callbacks
//! share, and the path of one record — decode, check that it arrived on the
//! partition that owns it, decide against a savepoint, send what the
//! decision emits — inside the open transaction.
//!
//! Committing, aborting and failure handling live in `commit.rs`, the
//! rebalance side in `rebalance.rs`; all three are `impl Core` blocks so
//! none of them reaches into another's fields by way of a callback type.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Message, Timestamp};
use surge_kafka::ClientFactory;

use crate::deadletter;
use crate::failure::{Failure, Reason};
use crate::metrics::{OpenTxn, PipelineMetrics, TxnClock};
use crate::output::Routes;
use crate::processor::{Incoming, Inputs, Processor, Reject};
use crate::producer::{self, TxnProducer};
use crate::runner::ExitReason;
use crate::spec::PipelineSpec;
use crate::task::{Effects, Task};
use crate::txn::TxnAction;

/// Header on a record forwarded to the partition that owns it.
pub const FORWARDED_FROM: &str = "surge.forwarded.from";

/// The open transaction's bookkeeping.
pub(crate) struct Batch {
    pub started: Instant,
    pub records: usize,
    /// Next offset per (input index, partition), sent with the transaction.
    pub next_offsets: BTreeMap<(usize, i32), i64>,
    pub outcomes: Vec<&'static str>,
    pub duplicates: u64,
    pub outputs: u64,
    pub forwarded: u64,
    pub dlq: Vec<&'static str>,
    /// Marks the transaction open for the age gauge until the batch is dropped.
    _open: OpenTxn,
}

impl Batch {
    fn new(clock: &TxnClock) -> Self {
        Self {
            _open: clock.open(),
            started: Instant::now(),
            records: 0,
            next_offsets: BTreeMap::new(),
            outcomes: Vec::new(),
            duplicates: 0,
            outputs: 0,
            forwarded: 0,
            dlq: Vec::new(),
        }
    }
}

pub(crate) struct Core<P: Processor, I: Inputs<Message = P::Input>> {
    pub spec: PipelineSpec,
    pub factory: ClientFactory,
    pub producer: TxnProducer,
    pub processor: P,
    pub inputs: I,
    pub runtime: tokio::runtime::Handle,
    /// Partition counts of inputs and outputs (looked up at start).
    pub routes: Routes,
    /// Owned partition numbers and their state.
    pub tasks: HashMap<i32, Task<P::State>>,
    pub batch: Option<Batch>,
    /// Every (input, partition) read since the last commit: an abort rewinds
    /// them all, including a record that failed before it joined the batch.
    pub touched: BTreeSet<(usize, i32)>,
    pub metrics: PipelineMetrics,
    pub exit: Option<ExitReason>,
    /// Set by the signal handler; a producer waiting for the broker gives up on it.
    pub shutdown: Arc<AtomicBool>,
    pub last_tick: Instant,
}

impl<P: Processor, I: Inputs<Message = P::Input>> Core<P, I> {
    /// Opens a transaction unless one is open.
    pub fn ensure_batch<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> bool {
        if self.batch.is_some() {
            return true;
        }
        if let Err(e) = rdkafka::producer::Producer::begin_transaction(&self.producer) {
            let f = Failure::new(crate::txn::classify(&e), Reason::Begin, e.to_string());
            self.fail(consumer, f);
            return false;
        }
        self.batch = Some(Batch::new(&self.metrics.open_transaction));
        true
    }

    /// Decides one input record inside the open transaction.
    pub fn handle<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        msg: &BorrowedMessage<'_>,
    ) {
        let Some(input) = self.spec.input_index(msg.topic()) else {
            tracing::warn!(
                message = "record of a topic we did not subscribe to",
                topic = msg.topic()
            );
            return;
        };
        let (partition, offset) = (msg.partition(), msg.offset());
        self.touched.insert((input, partition));
        if !self.ensure_batch(consumer) {
            return;
        }
        self.metrics.records_in.inc();
        let decoded = self
            .runtime
            .block_on(self.inputs.decode(input, msg.payload()));
        let result = match decoded {
            Err(e) if e.is_poison() => self.dead_letter(msg, e.reason_code(), &e.to_string()),
            Err(e) => Err(Failure::retry(e.to_string())),
            Ok(message) => {
                let owner = self.owner_of(input, I::owner_key(&message));
                if owner != partition {
                    self.forward(msg, owner)
                } else {
                    let timestamp = match msg.timestamp() {
                        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
                        Timestamp::NotAvailable => 0,
                    };
                    self.decide(
                        msg,
                        Incoming {
                            message,
                            input,
                            partition,
                            offset,
                            timestamp,
                        },
                    )
                }
            }
        };
        match result {
            Ok(()) => {
                let batch = self.batch.as_mut().expect("open batch");
                batch.next_offsets.insert((input, partition), offset + 1);
                batch.records += 1;
            }
            Err(f) => self.fail(consumer, f),
        }
    }

    /// The partition of input `input` that owns `key`.
    fn owner_of(&self, input: usize, key: &str) -> i32 {
        let n = self
            .routes
            .partitions(&self.spec.inputs[input])
            .expect("input partition counts are looked up at start");
        surge_kafka::partition_for(key.as_bytes(), n)
    }

    fn decide(
        &mut self,
        msg: &BorrowedMessage<'_>,
        input: Incoming<P::Input>,
    ) -> Result<(), Failure> {
        let partition = input.partition;
        let Some(task) = self.tasks.get_mut(&partition) else {
            // Only records of assigned (and restored) partitions are polled.
            return Err(Failure::new(
                TxnAction::Abort,
                Reason::Retry,
                format!("partition {partition} has no restored state"),
            ));
        };
        match task.decide(&mut self.processor, partition, |p, ctx| {
            p.process(ctx, input)
        }) {
            Ok(effects) => self.emit(partition, effects),
            Err(Reject::Poison { reason, message }) => self.dead_letter(msg, reason, &message),
            Err(Reject::Retry(detail)) => Err(Failure::retry(detail)),
        }
    }

    /// Runs the processor's tick for every owned partition when it is due.
    pub fn tick_if_due<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let Some(interval) = self.processor.tick_interval() else {
            return;
        };
        if self.last_tick.elapsed() < interval || self.tasks.is_empty() {
            return;
        }
        self.last_tick = Instant::now();
        let now = crate::task::wall_clock();
        let mut partitions: Vec<i32> = self.tasks.keys().copied().collect();
        partitions.sort_unstable();
        for partition in partitions {
            if self.exit.is_some() {
                return;
            }
            let task = self.tasks.get_mut(&partition).expect("owned task");
            let before = task.journal.len();
            let result = task.decide(&mut self.processor, partition, |p, ctx| p.tick(ctx, now));
            let changed = task.journal.len() != before;
            let result = match result {
                Ok(effects) if effects.outputs.is_empty() && !changed => Ok(()),
                Ok(effects) => {
                    // Begin only now: most ticks change nothing.
                    if !self.ensure_batch(consumer) {
                        return;
                    }
                    self.emit(partition, effects)
                }
                Err(e) => Err(Failure::retry(format!("tick: {e}"))),
            };
            if let Err(f) = result {
                self.fail(consumer, f);
                return;
            }
        }
    }

    /// Sends a successful decision's records and counts it.
    fn emit(&mut self, partition: i32, effects: Effects) -> Result<(), Failure> {
        let Effects {
            outputs,
            outcomes,
            duplicates,
        } = effects;
        for out in &outputs {
            let target = self.routes.partition(out, partition).map_err(|e| {
                // A processor bug: never commit a half-sent decision.
                Failure::new(TxnAction::Fatal, Reason::Produce, e.to_string())
            })?;
            let mut headers = OwnedHeaders::new();
            for (k, v) in &out.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(&out.topic)
                .partition(target)
                .key(&out.key)
                .headers(headers);
            if let Some(p) = &out.payload {
                record = record.payload(p);
            }
            producer::send(&self.producer, record)?;
        }
        let batch = self.batch.as_mut().expect("open batch");
        batch.outputs += outputs.len() as u64;
        batch.outcomes.extend(outcomes);
        batch.duplicates += duplicates;
        Ok(())
    }

    /// A record that arrived on a partition that does not own its contract
    /// key (a producer with another partitioner, or keyed by something
    /// else): its bytes, key, timestamp and headers go unchanged to the
    /// owning partition of the same topic, inside this transaction, and it
    /// is decided there in that partition's order. Deciding it here would
    /// open a second book for the same coupon, order or product.
    fn forward(&mut self, msg: &BorrowedMessage<'_>, owner: i32) -> Result<(), Failure> {
        let from = format!("{}:{}", msg.partition(), msg.offset());
        let mut headers = OwnedHeaders::new();
        if let Some(original) = msg.headers() {
            // A stale provenance header (copied by a producer) would be read
            // first; ours replaces it.
            for h in original.iter().filter(|h| h.key != FORWARDED_FROM) {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        headers = headers.insert(Header {
            key: FORWARDED_FROM,
            value: Some(&from),
        });
        let mut record = BaseRecord::to(msg.topic())
            .partition(owner)
            .headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        if let Timestamp::CreateTime(t) = msg.timestamp() {
            record = record.timestamp(t);
        }
        producer::send(&self.producer, record)?;
        self.batch.as_mut().expect("open batch").forwarded += 1;
        Ok(())
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
        let mut record = BaseRecord::to(&self.spec.dlq_topic).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        producer::send(&self.producer, record)?;
        self.batch.as_mut().expect("open batch").dlq.push(reason);
        Ok(())
    }
}
