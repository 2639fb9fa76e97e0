//! The Redis store of the exactly-once sink (the loop is surge-sink's): the
//! read cache the gateway and users hit, kept equal to coupon-result,
//! order-status and inventory-result.
//!
//! Each batch is one Lua script that writes the keys *and* the next offsets
//! (Redis runs a script atomically), and writes a key only when the record is
//! newer than what the key holds, so a replay, a restart or a stale instance
//! cannot move the cache backwards. The script also checks that the stored
//! offsets are where this sink left them; after a FLUSHALL they are not, and
//! the sink rewinds and rebuilds the cache from the topic.
//!
//! `keys` names every key (README "The Redis sink"); `mappings` turns each
//! topic's records into key writes; `store` runs the script; `reads` reads
//! orders and products back as the read model.

pub mod keys;
pub mod mappings;
pub mod reads;
pub mod store;

pub use keys::Keyspace;
pub use mappings::{CouponResultKeys, KeyMapping, OrderStatusKeys, ProductStockKeys};
pub use store::RedisStore;
