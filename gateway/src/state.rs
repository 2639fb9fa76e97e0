//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use surge_core::settings::GatewaySettings;
use surge_core::Names;
use surge_redis::Keyspace;
use surge_schemas::coupon::CouponCommand;
use surge_schemas::inventory::InventoryCommand;
use surge_schemas::order::{OrderCancel, OrderCreate};
use surge_schemas::{Contract, Registry, RegistryError, TopicCodec};

use crate::kafka::{GatewayContext, KafkaLink};
use crate::metrics::GatewayMetrics;
use crate::throttle::AdminThrottle;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub producer: FutureProducer<GatewayContext>,
    pub commands: TopicCodec<CouponCommand>,
    /// coupon-issue (with the topics name prefix).
    pub coupon_issue: String,
    /// order-create, order-cancel and inventory-commands: the order half.
    pub orders: OrderTopics,
    pub redis: crate::reads::Cache,
    pub keys: Keyspace,
    pub postgres: sqlx::PgPool,
    /// [gateway] as loaded: limits and timeouts (also in /openapi.json).
    pub settings: GatewaySettings,
    /// The configured admin token, `None` when unset or empty.
    pub admin_token: Option<String>,
    pub admin_throttle: AdminThrottle,
    /// The longest a command waits for Kafka before the answer is 503.
    pub produce_timeout: Duration,
    pub metrics: GatewayMetrics,
    /// Whether and when Kafka last answered (for /health, logs, the gauge).
    pub kafka: Arc<KafkaLink>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// One topic the gateway writes: its name (with the topics name prefix)
/// and the codec of its registered schema.
pub struct Topic<T: Contract> {
    pub name: String,
    pub codec: TopicCodec<T>,
}

impl<T: Contract> Topic<T> {
    /// Registers (or finds) `T`'s schema under the subject `names` makes.
    /// The schema is fetched once: a registry outage later does not stop
    /// requests from being encoded.
    pub async fn connect(registry: &Registry, names: &Names) -> Result<Self, ConnectError> {
        let subject = names.subject(T::TOPIC);
        match TopicCodec::<T>::connect(registry, &subject).await {
            Ok(codec) => Ok(Self {
                name: names.topic(T::TOPIC),
                codec,
            }),
            Err(error) => Err(ConnectError { subject, error }),
        }
    }
}

/// The topics of the order routes.
pub struct OrderTopics {
    pub create: Topic<OrderCreate>,
    pub cancel: Topic<OrderCancel>,
    /// Product admin commands (CreateProduct, AdjustStock).
    pub inventory: Topic<InventoryCommand>,
}

impl OrderTopics {
    pub async fn connect(registry: &Registry, names: &Names) -> Result<Self, ConnectError> {
        Ok(Self {
            create: Topic::connect(registry, names).await?,
            cancel: Topic::connect(registry, names).await?,
            inventory: Topic::connect(registry, names).await?,
        })
    }
}

/// A schema that could not be registered or found, with its subject.
#[derive(Debug)]
pub struct ConnectError {
    pub subject: String,
    pub error: RegistryError,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "registry: {} schema: {}", self.subject, self.error)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
