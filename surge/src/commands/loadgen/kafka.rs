//! Target `kafka`: straight to coupon-issue, as upstream services that speak
//! Kafka would (idempotent producer, Avro, keyed by coupon, in order).

use anyhow::Context;
use surge_core::{Names, Settings};
use surge_coupon::scenario::Scenario;
use surge_kafka::{ClientFactory, OrderedSender};
use surge_schemas::coupon::{CouponAction, CouponCommand};
use surge_schemas::{Contract, Registry, TopicCodec};

use super::traffic::{Pace, Progress};

/// Sends the scenario; returns the records Kafka acknowledged.
pub async fn send(scenario: &Scenario, rate: u64, settings: &Settings) -> anyhow::Result<usize> {
    let names = Names::from_settings(settings);
    let registry = Registry::new(&settings.registry.url);
    let subject = names.subject(CouponCommand::TOPIC);
    let codec = TopicCodec::<CouponCommand>::connect(&registry, &subject)
        .await
        .with_context(|| format!("registry: {subject} schema"))?;
    let producer = ClientFactory::new(settings.kafka.clone()).idempotent_producer("loadgen")?;
    let topic = names.topic(CouponCommand::TOPIC);
    let mut progress = Progress::new(scenario.coupons + scenario.requests);
    let mut commands = scenario.commands().peekable();
    // The sale's coupons are created, and acknowledged, before its clock
    // starts. That also warms the producer: a fresh idempotent producer
    // holds its first records until it has a producer id (≈0.5 s on
    // librdkafka 2.10+, which retires the bootstrap connection first), and a
    // paced run must not start with that stall in its first requests.
    let mut setup = OrderedSender::new(&producer, &topic);
    while let Some(mut command) =
        commands.next_if(|c| matches!(c.command, CouponAction::Create { .. }))
    {
        command.requested_at = surge_schemas::now();
        let bytes = codec.encode(&command)?;
        setup
            .send(&command.coupon_id, &bytes)
            .await
            .context("producing to coupon-issue")?;
    }
    let created = setup.finish().await.context("producing to coupon-issue")?;
    progress.tick(created, "acknowledged");
    let pace = Pace::new(rate);
    let mut sender = OrderedSender::new(&producer, &topic);
    for (i, mut command) in commands.enumerate() {
        pace.slot(i).await;
        // The request is made now (paced), not when the scenario was generated.
        command.requested_at = surge_schemas::now();
        let bytes = codec.encode(&command)?;
        sender
            .send(&command.coupon_id, &bytes)
            .await
            .context("producing to coupon-issue")?;
        sender.settle_ready()?;
        progress.tick(created + sender.acked(), "acknowledged");
    }
    let sent = created + sender.finish().await.context("producing to coupon-issue")?;
    progress.tick(sent, "acknowledged");
    Ok(sent)
}
