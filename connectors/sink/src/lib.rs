//! The exactly-once sink loop, written once for every store.
//!
//! A sink keeps a store equal to a result topic. Each batch of consumed
//! records is written by the store *together with the next offsets to
//! consume*, atomically (a database transaction, a Redis script); on every
//! assignment the loop seeks to the offsets the store holds, never to
//! Kafka's group offsets. So a crash anywhere, a replay of the whole topic,
//! or a store restored from an older snapshot changes nothing: the store
//! always says exactly what the topic says up to its own offsets.
//!
//! - [`mapping`]: how one topic's records become a batch of writes, declared
//!   per topic and per store (coupon-result, order-status and
//!   inventory-result, each → rows and → keys; one loop runs them all).
//! - [`store`]: what a store must do — read its offsets, write a batch with
//!   its offsets — and the two ways that can fail.
//! - [`runner`]: the consume loop. [`metrics`]: what it exports.
//! - [`views`]: the read model every store holds, as its readers get it.

pub mod mapping;
pub mod metrics;
pub mod runner;
pub mod store;
pub mod views;

mod context;

pub use mapping::{Mapping, Position};
pub use metrics::{SinkMetricFamilies, SinkMetrics};
pub use runner::{run_sink, SinkExit, SinkSpec};
pub use store::{OffsetAdvance, SinkStore, StoreError};
