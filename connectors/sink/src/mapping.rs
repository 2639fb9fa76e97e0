//! Topic → writes. A mapping accumulates one batch of a topic's records, in
//! log order, into the writes a store will make (Kafka Connect sink
//! conventions: upsert by record key; a tombstone deletes).

use surge_schemas::Contract;

/// Where a record sits in the topic being sunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// One batch of writes for one topic. `Default` is the empty batch.
pub trait Mapping: Default + Send + 'static {
    /// The topic's record value (decoded with the topic's registered schema).
    type Value: Contract + Send;

    /// Adds one record; called in log order within each partition. `value`
    /// is `None` for a tombstone.
    fn add(&mut self, at: Position, key: Option<&[u8]>, value: Option<Self::Value>);

    /// Rows or keys this batch will write (for metrics).
    fn writes(&self) -> usize;
}
