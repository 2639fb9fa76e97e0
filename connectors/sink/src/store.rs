//! What a store must provide to be a sink's target.

use std::collections::BTreeMap;

use crate::mapping::Mapping;

/// The offsets one batch moves: for each partition in the batch, where the
/// store was when this sink last read or wrote it (`None`: it held nothing
/// for that partition) and the next offset to consume after the batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetAdvance {
    pub from: BTreeMap<i32, Option<i64>>,
    pub to: BTreeMap<i32, i64>,
}

/// Why a write did not happen. Either way nothing of the batch was written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the write: retry the same batch.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store's offsets are not where this sink left them (it was flushed,
    /// restored from an older snapshot, or written by another instance):
    /// rewind to what it holds and write again from there.
    #[error("stored offsets moved under the sink: {0}")]
    Diverged(String),
}

/// A store a sink keeps equal to a topic. Calls block (the loop runs on its
/// own thread); a store that is async inside blocks on its runtime.
pub trait SinkStore: Send + Sync + 'static {
    type Batch: Mapping;

    /// partition → next offset to consume, as stored with the data.
    fn stored_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, StoreError>;

    /// Writes `batch` and moves the stored offsets to `offsets.to`, atomically.
    fn write(
        &self,
        topic: &str,
        batch: &Self::Batch,
        offsets: &OffsetAdvance,
    ) -> Result<(), StoreError>;
}
