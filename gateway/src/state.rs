//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use surge_core::settings::GatewaySettings;
use surge_redis::Keyspace;
use surge_schemas::coupon::CouponCommand;
use surge_schemas::TopicCodec;

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
