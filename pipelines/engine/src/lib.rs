//! The exactly-once engine: written once, used by every pipeline.
//!
//! A pipeline supplies a [`Processor`] ("given this input and this
//! partition's state, decide what to emit and how the state changes") and
//! the engine owns everything else: the read_committed consumer group, the
//! transactional producer, input offsets committed inside the transaction
//! with the group metadata (KIP-447), batching by count and time, the
//! per-partition state and its changelog, restore on assignment, commit on
//! revocation, the dead-letter topic, error classification, shutdown and
//! metrics.
//!
//! The loop runs on a dedicated OS thread: librdkafka's transaction calls
//! block, and they must never run on an async worker. It must never emit a
//! record outside a transaction, and never keep a state change whose
//! transaction did not commit.

mod changelog;
mod context;
mod deadletter;
mod metrics;
mod processor;
mod runner;
mod txn;

pub use metrics::PipelineMetrics;
pub use processor::{Incoming, Outbox, PartitionState, Processor, Reject, StateTxn};
pub use runner::{run_pipeline, ExitReason, PipelineSpec};
