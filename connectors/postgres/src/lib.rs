//! The PostgreSQL store of the exactly-once sink (the loop is surge-sink's):
//! each batch of coupon-result becomes one database transaction holding the
//! upserted rows *and* the next offsets to consume, so a crash anywhere, or
//! replaying the topic from the beginning, changes nothing.
//!
//! `mapping` declares how coupon-result's records become rows; `store`
//! writes a batch with its offsets.

pub mod mapping;
pub mod store;

pub use store::PostgresStore;

/// The embedded migrations, applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
