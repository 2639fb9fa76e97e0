//! The PostgreSQL sink: keeps tables equal to a result topic, exactly once.
//!
//! Each batch of consumed records becomes one database transaction holding
//! the upserted rows *and* the next offsets to consume; on start and on every
//! assignment the sink seeks to the offsets stored in the database, so a
//! crash anywhere, or replaying the topic from the beginning, changes
//! nothing. Kafka's committed group offsets are never used.
//!
//! `mapping` declares how a topic's records become rows (one per topic;
//! order-status joins as another mapping, not another sink); `store` writes
//! batches; `sink` is the consume loop.

pub mod mapping;
pub mod sink;
pub mod store;

pub use sink::{run_sink, SinkExit, SinkSpec};

/// The embedded migrations, applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
