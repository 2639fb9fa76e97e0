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
    send_at(scenario, rate, settings, |_| None).await
}

/// [`send`], with request `i`'s log timestamp (and its `requestedAt`) set by
/// `log_time(i)` instead of the clock when that gives one; the coupons are
/// created at `log_time(0)`. The pipeline's stream clock follows log time,
/// so this replays a sale that lasted hours in seconds.
pub async fn send_at(
    scenario: &Scenario,
    rate: u64,
    settings: &Settings,
    log_time: impl Fn(usize) -> Option<i64>,
) -> anyhow::Result<usize> {
    let stamp = |command: &mut CouponCommand, at: Option<i64>| {
        command.requested_at = at
            .and_then(chrono::DateTime::from_timestamp_millis)
            .unwrap_or_else(surge_schemas::now);
    };
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
        stamp(&mut command, log_time(0));
        let bytes = codec.encode(&command)?;
        setup
            .send_at(&command.coupon_id, &bytes, log_time(0))
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
        let at = log_time(i);
        stamp(&mut command, at);
        let bytes = codec.encode(&command)?;
        sender
            .send_at(&command.coupon_id, &bytes, at)
            .await
            .context("producing to coupon-issue")?;
        sender.settle_ready()?;
        progress.tick(created + sender.acked(), "acknowledged");
    }
    let sent = created + sender.finish().await.context("producing to coupon-issue")?;
    progress.tick(sent, "acknowledged");
    Ok(sent)
}
