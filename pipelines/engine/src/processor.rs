//! What a pipeline plugs into the engine.

use surge_schemas::Contract;

/// The business logic of one pipeline.
pub trait Processor: Send + 'static {
    /// The decoded input message.
    type Input: Contract + Send;
    /// The state of one input partition.
    type State: PartitionState;

    /// Decides one input: reads and changes `state` (through [`StateTxn`],
    /// so the engine can make changes durable or undo them) and puts the
    /// records to emit in `out`. Must be deterministic in (state, input):
    /// after an abort the same input is decided again from the same state.
    fn process(
        &mut self,
        state: &mut StateTxn<'_, Self::State>,
        input: Incoming<Self::Input>,
        out: &mut Outbox,
    ) -> Result<(), Reject>;
}

/// Per-partition state, made durable as a changelog of its changes.
///
/// A change is applied in memory at once, journaled for the open
/// transaction, written to the changelog (keyed, compacted: last value per
/// key wins) when the transaction commits, and reverted if it aborts.
pub trait PartitionState: Default + Send + 'static {
    type Change: Send + 'static;

    fn apply(&mut self, change: &Self::Change);
    /// Undoes `change`; called in reverse order of application.
    fn revert(&mut self, change: &Self::Change);
    /// The changelog records (key, value; `None` = tombstone) that make `change` durable.
    fn changelog_records(change: &Self::Change, out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>);
    /// Rebuilds state from one committed changelog record, in log order.
    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;
    /// Approximate heap bytes held (reported as a metric).
    fn approx_bytes(&self) -> usize;
}

/// The state of one partition during one decision.
pub struct StateTxn<'a, S: PartitionState> {
    state: &'a mut S,
    journal: &'a mut Vec<S::Change>,
}

impl<'a, S: PartitionState> StateTxn<'a, S> {
    pub(crate) fn new(state: &'a mut S, journal: &'a mut Vec<S::Change>) -> Self {
        Self { state, journal }
    }

    /// The current state.
    pub fn get(&self) -> &S {
        self.state
    }

    /// Applies `change` now; it becomes durable only with the transaction.
    pub fn apply(&mut self, change: S::Change) {
        self.state.apply(&change);
        self.journal.push(change);
    }
}

/// One decoded input record and where it came from.
#[derive(Debug, Clone)]
pub struct Incoming<T> {
    pub message: T,
    pub partition: i32,
    pub offset: i64,
}

/// Records a decision emits to the pipeline's output topic, in order. The
/// engine writes them to the output partition equal to the input partition,
/// so per-key order carries through.
#[derive(Debug, Default)]
pub struct Outbox {
    pub(crate) records: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) outcomes: Vec<&'static str>,
    pub(crate) duplicates: u64,
}

impl Outbox {
    /// Emits `payload` (already encoded) with `key`.
    pub fn emit(&mut self, key: impl Into<Vec<u8>>, payload: Vec<u8>) {
        self.records.push((key.into(), payload));
    }

    /// Notes an input that was already decided (same request id): nothing is
    /// emitted for it, and it is counted apart from decisions.
    pub fn already_decided(&mut self) {
        self.duplicates += 1;
    }

    /// Counts a decision under `outcome` (a low-cardinality label).
    pub fn outcome(&mut self, outcome: &'static str) {
        self.outcomes.push(outcome);
    }
}

/// Why a record was not decided.
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
