//! surge's public contracts.
//!
//! The `.avsc` files next to this crate's manifest are the single source of
//! truth for every public topic. This crate embeds them, gives each a Rust
//! type with an explicit Avro mapping (no serde guessing at unions or logical
//! types), frames records in the Confluent wire format, and talks to the
//! schema registry. It must never hold a schema of its own that is not one of
//! those files.

pub mod avro;
pub mod codec;
pub mod compat;
pub mod coupon;
pub mod order;
pub mod registry;
pub mod wire;

pub use avro::{ContractError, Money};
pub use codec::{DecodeError, TopicCodec};
pub use registry::{Registry, RegistryError};

use apache_avro::{types::Value, Schema};

/// A message type bound to one public topic and its `.avsc` file.
pub trait Contract: Sized {
    /// The topic; the registry subject is `<TOPIC>-value` (TopicNameStrategy).
    const TOPIC: &'static str;
    /// The `.avsc` text, embedded at build time.
    const SCHEMA_JSON: &'static str;
    /// The parsed schema (parsed once per process).
    fn schema() -> &'static Schema;
    /// This message as an Avro value valid against [`Contract::schema`].
    fn to_avro(&self) -> Value;
    /// A decoded Avro value (already resolved to our schema) as this type.
    fn from_avro(value: Value) -> Result<Self, ContractError>;
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

/// One public topic's contract, for tools that handle all of them alike.
#[derive(Debug, Clone, Copy)]
pub struct TopicContract {
    pub topic: &'static str,
    pub schema_json: &'static str,
}

impl TopicContract {
    /// The registry subject under TopicNameStrategy.
    pub fn subject(&self) -> String {
        subject_for(self.topic)
    }
}

/// The current instant at the precision the contracts carry (milliseconds):
/// a message built with it survives an Avro round trip unchanged.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// `<topic>-value`.
pub fn subject_for(topic: &str) -> String {
    format!("{topic}-value")
}

/// Every public topic and its schema, in the order of DESIGN.md.
pub const PUBLIC_CONTRACTS: &[TopicContract] = &[
    TopicContract {
        topic: coupon::CouponCommand::TOPIC,
        schema_json: coupon::CouponCommand::SCHEMA_JSON,
    },
    TopicContract {
        topic: coupon::CouponDecision::TOPIC,
        schema_json: coupon::CouponDecision::SCHEMA_JSON,
    },
    TopicContract {
        topic: order::OrderCreate::TOPIC,
        schema_json: order::OrderCreate::SCHEMA_JSON,
    },
    TopicContract {
        topic: order::OrderCancel::TOPIC,
        schema_json: order::OrderCancel::SCHEMA_JSON,
    },
    TopicContract {
        topic: order::PaymentRequest::TOPIC,
        schema_json: order::PaymentRequest::SCHEMA_JSON,
    },
    TopicContract {
        topic: order::OrderStatus::TOPIC,
        schema_json: order::OrderStatus::SCHEMA_JSON,
    },
];
