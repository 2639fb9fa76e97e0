//! The Redis store of the exactly-once sink (the loop is surge-sink's): the
//! read cache the gateway and users hit, kept equal to coupon-result.
//!
//! Each batch is one Lua script that writes the keys *and* the next offsets
//! (Redis runs a script atomically), and writes a key only when the record is
//! newer than what the key holds, so a replay, a restart or a stale instance
//! cannot move the cache backwards. The script also checks that the stored
//! offsets are where this sink left them; after a FLUSHALL they are not, and
//! the sink rewinds and rebuilds the cache from the topic.
//!
//! `keys` names every key (README "The Redis sink"); `mapping` turns
//! coupon-result records into key writes; `store` runs the script.

pub mod keys;
pub mod mapping;
pub mod store;

pub use keys::Keyspace;
pub use mapping::CouponResultKeys;
pub use store::RedisStore;
