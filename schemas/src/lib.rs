//! surge's public contracts.
//!
//! The `.avsc` files next to this crate's manifest are the single source of
//! truth for every public topic and for the internal topics between
//! pipelines that carry Avro ([`ALL_CONTRACTS`]). This crate embeds them, gives each a Rust
//! type with an explicit Avro mapping (no serde guessing at unions or logical
//! types), frames records in the Confluent wire format, and talks to the
//! schema registry. It must never hold a schema of its own that is not one of
//! those files.

pub mod avro;
pub mod binary;
pub mod codec;
pub mod compat;
pub mod coupon;
pub mod inventory;
pub mod order;
pub mod registry;
pub mod wire;

pub use avro::{ContractError, Money};
pub use codec::{DecodeError, TopicCodec};
pub use registry::{Registry, RegistryError};

use apache_avro::{types::Value, Schema};

/// A message type bound to one topic and its `.avsc` file.
pub trait Contract: Sized {
    /// The topic; the registry subject is `<TOPIC>-value` (TopicNameStrategy).
    const TOPIC: &'static str;
    /// The `.avsc` text, embedded at build time.
    const SCHEMA_JSON: &'static str;
    /// The parsed schema (parsed once per process).
    fn schema() -> &'static Schema;
    /// The contract's own key field: the record key producers must set, and
    /// the value the partition is owned by (murmur2 of it, as Java clients
    /// partition).
    fn key(&self) -> &str;
    /// This message as an Avro value valid against [`Contract::schema`].
    fn to_avro(&self) -> Value;
    /// A decoded Avro value (already resolved to our schema) as this type.
    fn from_avro(value: Value) -> Result<Self, ContractError>;
    /// Appends this message's Avro binary straight from its fields, without
    /// building the [`Value`] tree; `false` (nothing written) where a
    /// contract has no such writer. Only for the messages of the hot path;
    /// the contract tests check its bytes equal apache-avro's.
    fn write_avro(&self, _out: &mut binary::Out<'_>) -> bool {
        false
    }
}

/// Implements [`Contract::schema`] with a per-type `OnceLock`.
macro_rules! contract_schema {
    () => {
        fn schema() -> &'static apache_avro::Schema {
            static SCHEMA: std::sync::OnceLock<apache_avro::Schema> = std::sync::OnceLock::new();
            SCHEMA.get_or_init(|| {
                apache_avro::Schema::parse_str(Self::SCHEMA_JSON)
                    .expect("embedded .avsc files are parsed by the tests of this crate")
            })
        }
    };
}
pub(crate) use contract_schema;

/// One topic's contract, for tools that handle all of them alike.
#[derive(Debug, Clone, Copy)]
pub struct TopicContract {
    pub topic: &'static str,
    pub schema_json: &'static str,
}

// No subject is made here: `surge_core::Names::subject(topic)` makes every
// one, with the deployment's topic prefix.

/// The current instant at the precision the contracts carry (milliseconds):
/// a message built with it survives an Avro round trip unchanged.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

macro_rules! topic_contract {
    ($t:ty) => {
        TopicContract {
            topic: <$t>::TOPIC,
            schema_json: <$t>::SCHEMA_JSON,
        }
    };
}

/// Every public topic and its schema, in the order of DESIGN.md.
pub const PUBLIC_CONTRACTS: &[TopicContract] = &PUBLIC;

/// The internal topics between pipelines that carry Avro contracts: not for
/// data teams, but registered and compatibility-checked like the public ones.
pub const INTERNAL_CONTRACTS: &[TopicContract] = &INTERNAL;

/// Every contract, public then internal: what `surge schemas register` and
/// `check` cover, one `.avsc` file each.
pub const ALL_CONTRACTS: &[TopicContract] = &ALL;

const ALL: [TopicContract; PUBLIC.len() + INTERNAL.len()] = concat(PUBLIC, INTERNAL);

const PUBLIC: [TopicContract; 6] = [
    topic_contract!(coupon::CouponCommand),
    topic_contract!(coupon::CouponDecision),
    topic_contract!(order::OrderCreate),
    topic_contract!(order::OrderCancel),
    topic_contract!(order::PaymentRequest),
    topic_contract!(order::OrderStatus),
];

const INTERNAL: [TopicContract; 3] = [
    topic_contract!(inventory::InventoryCommand),
    topic_contract!(inventory::InventoryEvent),
    topic_contract!(order::OrderReply),
];

const fn concat<const A: usize, const B: usize, const N: usize>(
    a: [TopicContract; A],
    b: [TopicContract; B],
) -> [TopicContract; N] {
    assert!(A + B == N);
    let mut out = [a[0]; N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - A];
        i += 1;
    }
    out
}
