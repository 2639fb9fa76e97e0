//! Encoding and decoding one topic's records: Confluent framing around Avro,
//! with the local `.avsc` as the writer schema on the way out and as the
//! reader schema on the way in (so older and newer writers resolve to our
//! types by Avro's schema resolution rules).

use std::marker::PhantomData;
use std::sync::Arc;

use apache_avro::schema::ResolvedSchema;
use apache_avro::writer::datum::GenericDatumWriter;

use crate::avro::ContractError;
use crate::binary;
use crate::registry::{Registry, RegistryError};
use crate::wire::{self, WireError};
use crate::Contract;

/// Why a record could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("schema id {0} is not in the registry")]
    UnknownSchemaId(u32),
    #[error("registry: {0}")]
    Registry(RegistryError),
    #[error("Avro body does not decode with writer schema {schema_id}: {error}")]
    Body { schema_id: u32, error: String },
    #[error("contract broken: {0}")]
    Contract(#[from] ContractError),
}

impl DecodeError {
    /// A poison record: retrying can never succeed, so it belongs in the
    /// dead-letter topic. Only registry outages are worth a retry.
    pub fn is_poison(&self) -> bool {
        !matches!(self, Self::Registry(e) if e.is_retriable())
    }

    /// A short machine-readable reason for dead-letter headers and metrics.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::Wire(WireError::Empty) => "empty",
            Self::Wire(WireError::Truncated { .. }) => "truncated",
            Self::Wire(WireError::BadMagic(_)) => "bad_magic",
            Self::UnknownSchemaId(_) => "unknown_schema_id",
            Self::Registry(_) => "registry_unavailable",
            Self::Body { .. } => "bad_avro_body",
            Self::Contract(_) => "contract_violation",
        }
    }
}

/// Encoding a message failed: our own value does not fit our own schema (a bug).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {topic} value: {error}")]
pub struct EncodeError {
    pub topic: &'static str,
    pub error: String,
}

/// Codec for the value of topic `T::TOPIC`.
pub struct TopicCodec<T: Contract> {
    registry: Registry,
    writer_id: u32,
    /// Our schema, resolved once: writing, and resolving what others wrote.
    ours: Arc<Ours>,
    _t: PhantomData<fn() -> T>,
}

/// Our schema's writer and resolved names, built when the codec is (they
/// cost more than a record to build).
struct Ours {
    writer: GenericDatumWriter<'static>,
    names: ResolvedSchema<'static>,
}

impl<T: Contract> Clone for TopicCodec<T> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            writer_id: self.writer_id,
            ours: self.ours.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Contract> TopicCodec<T> {
    /// Finds (registering when absent) the id of our schema under `subject`.
    ///
    /// The subject comes from `surge_core::Names::subject(T::TOPIC)`, which
    /// carries the deployment's topic prefix: there is deliberately no
    /// variant that makes the subject itself.
    pub async fn connect(registry: &Registry, subject: &str) -> Result<Self, RegistryError> {
        let id = registry.register(subject, T::SCHEMA_JSON).await?;
        Ok(Self::with_id(registry, id))
    }

    /// A codec that needs no registry at all (in-process tests): it writes
    /// `schema_id` and reads records of that id (our own schema); any other
    /// id is an unknown schema id, as with a real registry that lacks it.
    pub fn offline(schema_id: u32) -> Self {
        Self::with_id(&Registry::offline(), schema_id)
    }

    fn with_id(registry: &Registry, id: u32) -> Self {
        registry.remember(id, T::schema());
        let schema: &'static apache_avro::Schema = T::schema();
        let ours = Ours {
            writer: GenericDatumWriter::builder(schema)
                .build()
                .expect("a contract's own schema resolves"),
            names: ResolvedSchema::try_from(schema).expect("a contract's own schema resolves"),
        };
        Self {
            registry: registry.clone(),
            writer_id: id,
            ours: Arc::new(ours),
            _t: PhantomData,
        }
    }

    /// The schema id stamped on every record this codec writes.
    pub fn schema_id(&self) -> u32 {
        self.writer_id
    }

    /// Confluent-framed Avro bytes for `msg`.
    pub fn encode(&self, msg: &T) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        out.push(wire::MAGIC);
        out.extend_from_slice(&self.writer_id.to_be_bytes());
        if msg.write_avro(&mut binary::Out(&mut out)) {
            return Ok(out);
        }
        let value = msg.to_avro();
        if binary::encode(&value, T::schema(), self.ours.names.get_names(), &mut out).is_some() {
            return Ok(out);
        }
        // Not a value the positional walk encodes: apache-avro's validating
        // writer says why (or encodes it).
        out.truncate(wire::HEADER_LEN);
        self.ours
            .writer
            .write_value(&mut out, value)
            .map_err(|e| EncodeError {
                topic: T::TOPIC,
                error: e.to_string(),
            })?;
        Ok(out)
    }

    /// The message in `bytes`, whatever (compatible) schema wrote it.
    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<T, DecodeError> {
        let (id, mut body) = wire::split(bytes.unwrap_or_default())?;
        let writer = self.registry.schema_by_id(id).await.map_err(|e| match e {
            RegistryError::UnknownSchemaId(id) => DecodeError::UnknownSchemaId(id),
            other => DecodeError::Registry(other),
        })?;
        let body_error = |e: apache_avro::Error| DecodeError::Body {
            schema_id: id,
            error: e.to_string(),
        };
        // Read with the writer's schema, then resolve to ours in a second
        // step: apache-avro's resolution refuses a bytes-backed decimal whose
        // byte length could not hold the schema's full precision (a 2-byte
        // 5.00 against precision 18), although Avro encodes bytes decimals
        // minimally — as Python, Java and we ourselves write them. Widening
        // every decimal to 8 bytes first (sign-extended: the same number)
        // satisfies that check without changing any value.
        let value = writer.read(&mut body).map_err(body_error)?;
        if !body.is_empty() {
            return Err(DecodeError::Body {
                schema_id: id,
                error: format!("{} trailing bytes after the record", body.len()),
            });
        }
        // Resolved even when the writer's schema is ours: resolution is also
        // what finds a body that decoded into something the schema does not
        // allow (a truncated record can), which is bad Avro, not a broken
        // contract.
        let value = widen_decimals(value)
            .resolve_with_names(T::schema(), self.ours.names.get_names())
            .map_err(body_error)?;
        Ok(T::from_avro(value)?)
    }
}

/// Every bytes-backed decimal in `value`, sign-extended to 8 bytes (18
/// digits, the precision of every money field in our contracts).
fn widen_decimals(value: apache_avro::types::Value) -> apache_avro::types::Value {
    use apache_avro::types::Value;
    match value {
        Value::Decimal(d) => {
            let bytes: Vec<u8> = match Vec::try_from(&d) {
                Ok(b) if !b.is_empty() && b.len() < 8 => b,
                _ => return Value::Decimal(d),
            };
            let fill = if bytes[0] & 0x80 != 0 { 0xFF } else { 0x00 };
            let mut wide = vec![fill; 8];
            wide[8 - bytes.len()..].copy_from_slice(&bytes);
            Value::Decimal(apache_avro::Decimal::from(wide))
        }
        Value::Record(fields) => Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| (k, widen_decimals(v)))
                .collect(),
        ),
        Value::Union(i, v) => Value::Union(i, Box::new(widen_decimals(*v))),
        Value::Array(items) => Value::Array(items.into_iter().map(widen_decimals).collect()),
        Value::Map(m) => Value::Map(m.into_iter().map(|(k, v)| (k, widen_decimals(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupon::{CouponAction, CouponCommand, CouponDecision};

    fn command() -> CouponCommand {
        CouponCommand {
            request_id: "r-1".into(),
            coupon_id: "c-1".into(),
            requested_at: crate::now(),
            command: CouponAction::Issue {
                user_id: "u-1".into(),
            },
        }
    }

    #[tokio::test]
    async fn offline_codec_round_trips_its_own_schema_id() {
        let codec = TopicCodec::<CouponCommand>::offline(7);
        assert_eq!(codec.schema_id(), 7);
        let msg = command();
        let bytes = codec.encode(&msg).unwrap();
        assert_eq!(
            wire::split(&bytes).unwrap().0,
            7,
            "framed with the given id"
        );
        assert_eq!(codec.decode(Some(&bytes)).await.unwrap(), msg);
        // A clone (as pipelines hold them) decodes too.
        assert_eq!(codec.clone().decode(Some(&bytes)).await.unwrap(), msg);
    }

    #[tokio::test]
    async fn offline_codec_treats_other_ids_as_poison_without_calling_out() {
        let commands = TopicCodec::<CouponCommand>::offline(1);
        let other = TopicCodec::<CouponDecision>::offline(2);
        let bytes = commands.encode(&command()).unwrap();
        let e = other.decode(Some(&bytes)).await.unwrap_err();
        assert!(matches!(e, DecodeError::UnknownSchemaId(1)), "{e}");
        assert!(e.is_poison(), "goes to the dead-letter topic, not a retry");
    }

    #[tokio::test]
    async fn offline_registry_refuses_subject_calls() {
        let e = Registry::offline()
            .register("x-value", CouponCommand::SCHEMA_JSON)
            .await
            .unwrap_err();
        assert!(matches!(e, RegistryError::Unavailable(_)), "{e}");
    }
}

#[cfg(test)]
mod decimal_resolution {
    use super::*;
    use crate::coupon::{CouponAction, CouponCommand, Discount};
    use crate::order::{OrderCreate, OrderItem};
    use crate::Money;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Money of every size, in records, arrays and unions, decodes through
    /// schema resolution (apache-avro alone refuses minimal-length decimals).
    #[test]
    fn minimal_decimals_decode_through_resolution() {
        let orders = TopicCodec::<OrderCreate>::offline(7);
        for cents in [
            0,
            1,
            -5,
            500,
            1999,
            -129,
            i64::from(i32::MAX),
            99_999_999_999,
        ] {
            let o = OrderCreate {
                order_id: "o".into(),
                user_id: "u".into(),
                items: vec![OrderItem {
                    product_id: "p".into(),
                    quantity: 1,
                    unit_price: Money(cents),
                }],
                currency: "KRW".into(),
                coupon_id: None,
                requested_at: crate::now(),
            };
            let back = block_on(orders.decode(Some(&orders.encode(&o).unwrap())));
            assert_eq!(back.unwrap(), o, "{cents}");
        }
        let coupons = TopicCodec::<CouponCommand>::offline(8);
        let c = CouponCommand {
            request_id: "r".into(),
            coupon_id: "c".into(),
            requested_at: crate::now(),
            command: CouponAction::Create {
                stock: 1,
                active_from: None,
                active_until: None,
                discount: Some(Discount::percent(Money(1250), Some(Money(300)))),
            },
        };
        let back = block_on(coupons.decode(Some(&coupons.encode(&c).unwrap())));
        assert_eq!(back.unwrap(), c);
    }
}
