//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use surge_redis::Keyspace;
use surge_schemas::coupon::CouponCommand;
use surge_schemas::TopicCodec;

use crate::metrics::GatewayMetrics;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub producer: FutureProducer,
    pub commands: TopicCodec<CouponCommand>,
    /// coupon-issue (with the topics name prefix).
    pub coupon_issue: String,
    pub redis: crate::reads::Cache,
    pub keys: Keyspace,
    pub postgres: sqlx::PgPool,
    pub admin_token: Option<String>,
    /// The longest a command waits for Kafka before the answer is 503.
    pub produce_timeout: Duration,
    pub metrics: GatewayMetrics,
    /// When Kafka last answered (for /health).
    pub kafka_seen: crate::routes::ops::KafkaSeen,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
