//! Encoding and decoding one topic's records: Confluent framing around Avro,
//! with the local `.avsc` as the writer schema on the way out and as the
//! reader schema on the way in (so older and newer writers resolve to our
//! types by Avro's schema resolution rules).

use std::marker::PhantomData;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;

use crate::avro::ContractError;
use crate::registry::{Registry, RegistryError};
use crate::wire::{self, WireError};
use crate::{subject_for, Contract};

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
    _t: PhantomData<fn() -> T>,
}

impl<T: Contract> Clone for TopicCodec<T> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            writer_id: self.writer_id,
            _t: PhantomData,
        }
    }
}

impl<T: Contract> TopicCodec<T> {
    /// Finds (registering when absent) the id of our schema under `<topic>-value`.
    pub async fn connect(registry: &Registry) -> Result<Self, RegistryError> {
        let id = registry
            .register(&subject_for(T::TOPIC), T::SCHEMA_JSON)
            .await?;
        registry.remember(id, T::schema().clone());
        Ok(Self {
            registry: registry.clone(),
            writer_id: id,
            _t: PhantomData,
        })
    }

    /// The schema id stamped on every record this codec writes.
    pub fn schema_id(&self) -> u32 {
        self.writer_id
    }

    /// Confluent-framed Avro bytes for `msg`.
    pub fn encode(&self, msg: &T) -> Result<Vec<u8>, EncodeError> {
        let body = GenericDatumWriter::builder(T::schema())
            .build()
            .and_then(|w| w.write_value_to_vec(msg.to_avro()))
            .map_err(|e| EncodeError {
                topic: T::TOPIC,
                error: e.to_string(),
            })?;
        Ok(wire::frame(self.writer_id, &body))
    }

    /// The message in `bytes`, whatever (compatible) schema wrote it.
    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<T, DecodeError> {
        let (id, mut body) = wire::split(bytes.unwrap_or_default())?;
        let writer = self.registry.schema_by_id(id).await.map_err(|e| match e {
            RegistryError::UnknownSchemaId(id) => DecodeError::UnknownSchemaId(id),
            other => DecodeError::Registry(other),
        })?;
        let reader = GenericDatumReader::builder(&writer)
            .reader_schema(T::schema())
            .build()
            .map_err(|e| DecodeError::Body {
                schema_id: id,
                error: e.to_string(),
            })?;
        let value = reader
            .read_value(&mut body)
            .map_err(|e| DecodeError::Body {
                schema_id: id,
                error: e.to_string(),
            })?;
        if !body.is_empty() {
            return Err(DecodeError::Body {
                schema_id: id,
                error: format!("{} trailing bytes after the record", body.len()),
            });
        }
        Ok(T::from_avro(value)?)
    }
}
