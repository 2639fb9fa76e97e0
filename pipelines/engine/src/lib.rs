//! The exactly-once engine: written once, used by every pipeline.
//!
//! A pipeline supplies a [`Processor`] ("given this input and this
//! partition's state, decide what to emit and how the state changes") and
//! the engine owns everything else: the read_committed consumer group over
//! co-partitioned inputs, the transactional producer, records routed to any
//! declared topic, input offsets committed inside the transaction with the
//! group metadata (KIP-447), batching by count and time, the per-partition
//! state and its changelog, restore on assignment, commit on revocation, a
//! savepoint per record, forwarding of misrouted records, ticks, the
//! dead-letter topic, error classification, shutdown and metrics.
//!
//! The loop runs on a dedicated OS thread: librdkafka's transaction calls
//! block, and they must never run on an async worker. It must never emit a
//! record outside a transaction, and never keep a state change whose
//! transaction did not commit.
//!
//! Layout: `processor` (the contract a pipeline implements), `task` (one
//! partition's state, journal and savepoint), `output` (routing), `core`
//! (one record's path), `commit` (closing a transaction and every failure
//! path), `rebalance` (assignment and restore), `runner` (the loop and the
//! start-up checks), `producer`, `txn` (error classification), `failure`
//! (typed reasons), `changelog` (restore), `harness` (the same contract in
//! process, for tests), `laws` (what every state must satisfy).

pub mod canonical;
mod changelog;
mod commit;
mod core;
pub mod deadletter;
mod failure;
mod fence;
mod freeze;
pub mod harness;
pub mod laws;
mod metrics;
mod output;
mod processor;
mod producer;
mod rebalance;
mod runner;
mod spec;
mod task;
mod txn;

pub use crate::core::FORWARDED_FROM;
pub use metrics::PipelineMetrics;
pub use output::{Output, Route, Routes};
pub use processor::{ChangelogRecord, Incoming, Inputs, Millis, PartitionState, Processor, Reject};
pub use runner::{run_pipeline, ExitReason};
pub use spec::PipelineSpec;
pub use task::{Context, Effects};
