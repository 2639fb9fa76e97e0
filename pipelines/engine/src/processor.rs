//! What a pipeline plugs into the engine: a [`Processor`] (the business
//! rules), its [`PartitionState`] (what it remembers per partition) and the
//! [`Inputs`] that decode its input topics.

use std::future::Future;

use surge_schemas::{Contract, DecodeError, TopicCodec};

use crate::task::Context;

/// Milliseconds since the Unix epoch: the engine's only notion of time.
pub type Millis = i64;

/// The business logic of one pipeline.
///
/// `process` and `tick` read and change partition state through the
/// [`Context`] (so the engine can make changes durable with the transaction
/// or undo them) and send records through it. Both must be deterministic in
/// (state, input, time given): after an abort the same inputs are decided
/// again from the same state, and only what commits is ever seen.
pub trait Processor: Send + 'static {
    /// One decoded input message, whichever input topic it came from.
    type Input: Send;
    /// The state of one partition number (shared by all co-partitioned inputs).
    type State: PartitionState;

    /// Decides one input record. Time-dependent rules use `input.timestamp`
    /// (the record's timestamp in the log), never the wall clock.
    fn process(
        &mut self,
        ctx: &mut Context<'_, Self::State>,
        input: Incoming<Self::Input>,
    ) -> Result<(), Reject>;

    /// How often [`Processor::tick`] runs for each owned partition; `None`
    /// (the default) never ticks.
    fn tick_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Acts on elapsed time (expiry, timeouts) for one partition. What it
    /// changes and sends commits or aborts with the open transaction, like
    /// a record's decision. `now` is the engine's clock (wall time in a
    /// pipeline, a value the test sets in the harness).
    fn tick(&mut self, ctx: &mut Context<'_, Self::State>, now: Millis) -> Result<(), Reject> {
        let _ = (ctx, now);
        Ok(())
    }

    /// Sees the committed state of every owned partition, after each commit
    /// and each change of assignment: the place for gauges a pipeline
    /// derives from its state (open sagas, oldest age). Never changes state.
    fn observe(&mut self, states: &mut dyn Iterator<Item = (i32, &Self::State)>) {
        let _ = states;
    }
}

/// Per-partition state, made durable as a changelog of its changes.
///
/// A change is applied in memory at once, journaled for the open
/// transaction, written to the changelog (keyed, compacted: last value per
/// key wins) when the transaction commits, and reverted if it aborts or if
/// the record that made it is rejected. The laws in [`crate::laws`] hold for
/// every implementation: apply then revert is the identity, and restoring
/// the changelog of a run rebuilds the state of the run.
pub trait PartitionState: Default + Send + 'static {
    type Change: Send + 'static;

    fn apply(&mut self, change: &Self::Change);
    /// Undoes `change`; called in reverse order of application.
    fn revert(&mut self, change: &Self::Change);
    /// The changelog records (key, value; `None` = tombstone) that make
    /// `change` durable. Called when the transaction commits, so `self` is
    /// the state after every change of the batch: a record built from the
    /// current value of an entry is right (the last value per key wins).
    fn changelog_records(&self, change: &Self::Change, out: &mut Vec<ChangelogRecord>);
    /// Rebuilds state from one committed changelog record, in log order.
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;
    /// Approximate heap bytes held (reported as a metric).
    fn approx_bytes(&self) -> usize;
}

/// One record of a changelog: key and value (`None` deletes the key).
pub type ChangelogRecord = (Vec<u8>, Option<Vec<u8>>);

/// How the engine decodes a pipeline's input topics, and which contract key
/// owns each message's partition.
pub trait Inputs: Send + 'static {
    type Message: Send;

    /// Decodes one record of input topic number `input` (its index in
    /// [`crate::PipelineSpec::inputs`]).
    fn decode(
        &self,
        input: usize,
        bytes: Option<&[u8]>,
    ) -> impl Future<Output = Result<Self::Message, DecodeError>> + Send;

    /// The contract's own key field (couponId, orderId, productId): the
    /// record belongs to the partition murmur2 of it selects, whatever key
    /// or partitioner its producer used.
    fn owner_key(message: &Self::Message) -> &str;
}

/// A single-topic pipeline decodes with the topic's codec.
impl<T: Contract + Send + 'static> Inputs for TopicCodec<T> {
    type Message = T;

    fn decode(
        &self,
        _input: usize,
        bytes: Option<&[u8]>,
    ) -> impl Future<Output = Result<T, DecodeError>> + Send {
        TopicCodec::decode(self, bytes)
    }

    fn owner_key(message: &T) -> &str {
        message.key()
    }
}

/// One decoded input record and where it came from.
#[derive(Debug, Clone)]
pub struct Incoming<T> {
    pub message: T,
    /// Index of its topic in the spec's inputs.
    pub input: usize,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp in the log (CreateTime or LogAppendTime):
    /// replay sees the same value, so decisions on it are deterministic.
    pub timestamp: Millis,
}

/// Why a record was not decided. Whatever the processor changed for it is
/// undone and nothing it sent is kept.
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    /// The record breaks its contract in a way no retry can fix: it goes to
    /// the dead-letter topic, processing continues.
    #[error("{reason}: {message}")]
    Poison {
        reason: &'static str,
        message: String,
    },
    /// Something failed that may succeed on a retry: the batch is aborted and
    /// its records processed again.
    #[error("{0}")]
    Retry(String),
}
