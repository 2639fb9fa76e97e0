//! `surge gateway`: the HTTP API (see surge-gateway). Serves until
//! SIGTERM/SIGINT, then stops accepting and finishes requests in flight.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use surge_core::shutdown::Shutdown;
use surge_core::{Names, Settings};
use surge_gateway::kafka::{GatewayContext, KafkaLink};
use surge_gateway::metrics::GatewayMetrics;
use surge_gateway::reads::Cache;
use surge_gateway::state::{Inner, OrderTopics};
use surge_gateway::throttle::AdminThrottle;
use surge_gateway::AppState;
use surge_kafka::ClientFactory;
use surge_redis::Keyspace;
use surge_schemas::coupon::CouponCommand;
use surge_schemas::{Contract, Registry, TopicCodec};

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Where to serve (overrides [gateway] listen), e.g. 0.0.0.0:8080.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

pub async fn run(args: GatewayArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    // A zero connection cap or timeout was refused when the settings were
    // loaded (exit 78), with the other [gateway] limits.
    let gw = &settings.gateway;
    let shutdown = Shutdown::on_signals();
    let names = Names::from_settings(settings);
    let registry = Registry::new(&settings.registry.url);
    // The schema is fetched once and cached: a registry outage later does
    // not stop requests from being encoded.
    let subject = names.subject(CouponCommand::TOPIC);
    let commands = TopicCodec::<CouponCommand>::connect(&registry, &subject)
        .await
        .with_context(|| format!("registry: {subject} schema"))?;
    let orders = OrderTopics::connect(&registry, &names).await?;
    let mut producer =
        ClientFactory::new(settings.kafka.clone()).idempotent_producer_config("gateway");
    // Delivery gives up when the answer is due: a 503 then means "not in the log".
    producer.set(
        "message.timeout.ms",
        gw.produce_timeout.as_millis().max(1).to_string(),
    );
    let metrics = GatewayMetrics::new();
    metrics.preregister_routes(gw);
    // librdkafka's complaints during an outage go to the link, which logs
    // the outage once instead of every reconnect.
    let kafka = Arc::new(KafkaLink::new(metrics.kafka_reachable.clone()));
    let producer = producer
        .create_with_context(GatewayContext::new(kafka.clone()))
        .context("creating the Kafka producer")?;
    let postgres = sqlx::postgres::PgPoolOptions::new()
        .max_connections(settings.postgres.max_connections)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&settings.postgres.url)
        .context("postgres URL")?;
    let state = AppState(Arc::new(Inner {
        producer,
        commands,
        coupon_issue: names.topic(CouponCommand::TOPIC),
        orders,
        redis: Cache::new(redis::Client::open(settings.redis.url.as_str()).context("redis URL")?),
        keys: Keyspace::new(&settings.redis.keyspace),
        postgres,
        settings: gw.clone(),
        admin_token: gw.admin_token.clone().filter(|t| !t.is_empty()),
        admin_throttle: AdminThrottle::new(gw.admin_auth_burst, gw.admin_auth_refill),
        produce_timeout: gw.produce_timeout,
        metrics,
        kafka,
    }));
    if state.admin_token.is_none() {
        tracing::warn!(message = "no [gateway] admin_token: admin endpoints answer 403");
    }
    let watcher = surge_gateway::kafka::watch(state.clone());
    let listen = args.listen.unwrap_or(gw.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    // Same words as every surge process, so tools find the address in the log.
    tracing::info!(message = "metrics and health", address = %address);
    tracing::info!(message = "gateway listening", address = %address, openapi = %format!("http://{address}/openapi.json"));
    surge_gateway::serve(listener, state, async move { shutdown.wait().await })
        .await
        .context("serving HTTP")?;
    watcher.abort();
    tracing::info!(message = "gateway stopped");
    Ok(ExitCode::SUCCESS)
}
