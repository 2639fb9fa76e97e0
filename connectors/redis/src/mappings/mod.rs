//! Topic → key writes, one module per topic. Every key of one entity (a
//! coupon, an order, a product) comes from that entity's one partition, so
//! the record's offset orders its writes.

pub mod coupon_result;
pub mod inventory_result;
pub mod order_status;

pub use coupon_result::CouponResultKeys;
pub use inventory_result::ProductStockKeys;
pub use order_status::OrderStatusKeys;

use surge_sink::Mapping;

use crate::keys::Keyspace;

/// A batch that knows the keys it writes.
pub trait KeyMapping: Mapping + Sync {
    fn key_writes(&self, keys: &Keyspace) -> KeyWrites;
}

/// What one batch does to Redis, in this order (see write_batch.lua).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyWrites {
    /// Keys deleted (tombstones), before anything else is written.
    pub deletes: Vec<String>,
    /// Hashes replaced whole by a newer record.
    pub hashes: Vec<HashWrite>,
    /// Single fields holding `<offset> WORD [rest]`, replaced by a newer record.
    pub statuses: Vec<StatusWrite>,
    /// Fields written once and never changed.
    pub once: Vec<(String, String, String)>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct HashWrite {
    pub key: String,
    pub offset: i64,
    /// Written only over an existing hash (never creates one).
    pub only_existing: bool,
    pub fields: Vec<(&'static str, String)>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct StatusWrite {
    pub key: String,
    pub field: String,
    pub offset: i64,
    pub status: String,
    /// A held status starting with this word is never replaced by another.
    pub sticky: Option<&'static str>,
}
