//! The PostgreSQL store of the exactly-once sink (the loop is surge-sink's):
//! each batch of a result topic becomes one database transaction holding the
//! upserted rows *and* the next offsets to consume, so a crash anywhere, or
//! replaying the topic from the beginning, changes nothing.
//!
//! - `rows`: how each topic's records become rows (coupon-result,
//!   order-status, inventory-result), one module per topic;
//! - `store`: writes a batch with its offsets, for any of them;
//! - `reads`: every query that reads the tables back. The tables are this
//!   crate's (migrations/), so nothing outside it writes SQL against them.

pub mod reads;
pub mod rows;
pub mod store;

pub use rows::{CouponResultRows, OrderStatusRows, ProductStockRows, Rows};
pub use store::PostgresStore;

/// The embedded migrations, applied at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
