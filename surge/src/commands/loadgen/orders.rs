//! `surge loadgen --orders N`: an order flash sale straight to Kafka, as
//! upstream services would send it (surge_order::scenario): the products,
//! the coupon sale, then the orders in waves, each wave followed by the
//! cancels due then. Check it with `surge verify --orders`.

use std::time::{Duration, Instant};

use anyhow::Context;
use surge_core::{Names, Settings};
use surge_kafka::{ClientFactory, OrderedSender};
use surge_order::scenario::{OrderSale, OrderScenario};
use surge_schemas::{Contract, Registry, TopicCodec};

use super::traffic::Progress;

/// Produces `records` to their contract's topic, each keyed by its own key,
/// in order; returns the records Kafka acknowledged.
async fn produce<T: Contract>(
    records: &[T],
    codec: &TopicCodec<T>,
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    progress: &mut Progress,
    done_before: usize,
) -> anyhow::Result<usize> {
    let mut sender = OrderedSender::new(producer, topic);
    for r in records {
        let bytes = codec.encode(r)?;
        sender
            .send(r.key(), &bytes)
            .await
            .with_context(|| format!("producing to {topic}"))?;
        sender.settle_ready()?;
        progress.tick(done_before + sender.acked(), "acknowledged");
    }
    sender
        .finish()
        .await
        .with_context(|| format!("producing to {topic}"))
}

async fn codec<T: Contract>(settings: &Settings) -> anyhow::Result<(TopicCodec<T>, String)> {
    let names = Names::from_settings(settings);
    let registry = Registry::new(&settings.registry.url);
    let subject = names.subject(T::TOPIC);
    let codec = TopicCodec::<T>::connect(&registry, &subject)
        .await
        .with_context(|| format!("registry: {subject} schema"))?;
    Ok((codec, names.topic(T::TOPIC)))
}

/// Sends the sale with `pause` between waves; returns its manifest.
pub async fn send(
    scenario: &OrderScenario,
    pause: Duration,
    settings: &Settings,
) -> anyhow::Result<serde_json::Value> {
    let sale: OrderSale = scenario.generate();
    let (products, products_topic) = codec(settings).await?;
    let (coupons, coupons_topic) = codec(settings).await?;
    let (creates, creates_topic) = codec(settings).await?;
    let (cancels, cancels_topic) = codec(settings).await?;
    let producer = ClientFactory::new(settings.kafka.clone()).idempotent_producer("loadgen")?;
    let total = sale.products.len()
        + sale.coupons.len()
        + sale
            .waves
            .iter()
            .map(|(o, k)| o.len() + k.len())
            .sum::<usize>();
    eprintln!(
        "[loadgen] order sale: {} products, {} coupon commands, {} orders, {} cancels in {} waves → kafka",
        sale.products.len(),
        sale.coupons.len(),
        sale.creates().count(),
        sale.cancels().count(),
        sale.waves.len()
    );
    let started = Instant::now();
    let mut progress = Progress::new(total);
    let mut sent = 0;
    sent += produce(
        &sale.products,
        &products,
        &producer,
        &products_topic,
        &mut progress,
        sent,
    )
    .await?;
    sent += produce(
        &sale.coupons,
        &coupons,
        &producer,
        &coupons_topic,
        &mut progress,
        sent,
    )
    .await?;
    for (orders, due) in &sale.waves {
        sent += produce(
            orders,
            &creates,
            &producer,
            &creates_topic,
            &mut progress,
            sent,
        )
        .await?;
        sent += produce(
            due,
            &cancels,
            &producer,
            &cancels_topic,
            &mut progress,
            sent,
        )
        .await?;
        tokio::time::sleep(pause).await;
    }
    progress.tick(sent, "acknowledged");
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "scenario": "orders",
        "target": "kafka",
        "idPrefix": scenario.prefix,
        "orders": scenario.orders,
        "users": scenario.users,
        "products": scenario.products,
        "waves": scenario.waves,
        "cancels": sale.cancels().count(),
        "seed": scenario.seed,
        "recordsSent": sent,
        "seconds": secs,
        "recordsPerSecond": sent as f64 / secs,
    }))
}
