//! Topic → rows, one module per topic (Kafka Connect JDBC sink conventions:
//! upsert by key, a tombstone deletes). Each batch writes its rows inside the
//! transaction that also moves the sink's offsets (`crate::store`).
//!
//! Upserts are guarded by the record's position, so a replay or a stale
//! instance never moves a row backwards.

pub mod coupon_result;
pub mod inventory_result;
pub mod order_status;

use std::future::Future;

use sqlx::PgConnection;
use surge_sink::Mapping;

pub use coupon_result::CouponResultRows;
pub use inventory_result::ProductStockRows;
pub use order_status::OrderStatusRows;

/// A batch that knows its SQL.
pub trait Rows: Mapping + Sync {
    /// Writes the batch's rows on `tx` (a transaction the caller commits).
    fn write(&self, tx: &mut PgConnection) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}
