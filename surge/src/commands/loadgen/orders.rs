//! `surge loadgen --orders N`: an order flash sale (surge_order::scenario):
//! the products, the coupon sale, then the orders in waves, each wave
//! followed by the cancels due then — straight to Kafka as upstream services
//! would produce it, or through the gateway's HTTP routes as backend teams
//! would post it (every id its Idempotency-Key, so a retry is the same
//! request). Check it with `surge verify --orders`.

use std::time::{Duration, Instant};

use anyhow::Context;
use surge_core::{Names, Settings};
use surge_kafka::{ClientFactory, OrderedSender};
use surge_order::scenario::{OrderSale, OrderScenario};
use surge_schemas::{Contract, Registry, TopicCodec};

use super::traffic::Progress;

/// Produces `records` to their contract's topic, each keyed by its own key,
/// in order; returns the records Kafka acknowledged.
pub(crate) async fn produce<T: Contract>(
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

pub(crate) async fn codec<T: Contract>(
    settings: &Settings,
) -> anyhow::Result<(TopicCodec<T>, String)> {
    let names = Names::from_settings(settings);
    let registry = Registry::new(&settings.registry.url);
    let subject = names.subject(T::TOPIC);
    let codec = TopicCodec::<T>::connect(&registry, &subject)
        .await
        .with_context(|| format!("registry: {subject} schema"))?;
    Ok((codec, names.topic(T::TOPIC)))
}

/// Says what is about to be sent where; returns how many records that is.
fn announce(sale: &OrderSale, to: &str) -> usize {
    eprintln!(
        "[loadgen] order sale: {} products, {} coupon commands, {} orders, {} cancels in {} waves → {to}",
        sale.products.len(),
        sale.coupons.len(),
        sale.creates().count(),
        sale.cancels().count(),
        sale.waves.len()
    );
    sale.products.len()
        + sale.coupons.len()
        + sale
            .waves
            .iter()
            .map(|(o, k)| o.len() + k.len())
            .sum::<usize>()
}

/// Sends the sale with `pause` between waves, to Kafka or (with `gateway`)
/// over HTTP; returns its manifest.
pub async fn send(
    scenario: &OrderScenario,
    pause: Duration,
    settings: &Settings,
    gateway: Option<&super::gateway::Gateway>,
) -> anyhow::Result<serde_json::Value> {
    let sale: OrderSale = scenario.generate();
    if let Some(gw) = gateway {
        return send_to_gateway(scenario, &sale, pause, gw).await;
    }
    let (products, products_topic) = codec(settings).await?;
    let (coupons, coupons_topic) = codec(settings).await?;
    let (creates, creates_topic) = codec(settings).await?;
    let (cancels, cancels_topic) = codec(settings).await?;
    let producer = ClientFactory::new(settings.kafka.clone()).idempotent_producer("loadgen")?;
    let total = announce(&sale, "kafka");
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

/// The same sale through the gateway: products and coupon creates one by
/// one (each acknowledged before anything that needs it), then coupon
/// requests, each wave's orders and its cancels with `concurrency` in flight.
async fn send_to_gateway(
    scenario: &OrderScenario,
    sale: &OrderSale,
    pause: Duration,
    gw: &super::gateway::Gateway,
) -> anyhow::Result<serde_json::Value> {
    use futures::StreamExt;
    use surge_schemas::coupon::CouponAction;
    use surge_schemas::inventory::InventoryAction;

    use super::gateway::{post, post_until_accepted};

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(gw.concurrency)
        .build()?;
    let base = gw.url.trim_end_matches('/').to_string();
    let token = gw.admin_token.as_deref();
    let total = announce(sale, &base);
    let started = Instant::now();
    let mut progress = Progress::new(total);
    let mut sent = 0usize;
    let mut unavailable = 0usize;
    for p in &sale.products {
        let InventoryAction::CreateProduct { stock } = &p.command else {
            anyhow::bail!("the order scenario only creates products")
        };
        let body = serde_json::json!({ "productId": p.product_id, "stock": stock });
        unavailable += post_until_accepted(
            &client,
            &format!("{base}/admin/products"),
            &p.request_id,
            &body,
            token,
        )
        .await?;
        sent += 1;
    }
    let (creates, issues): (Vec<_>, Vec<_>) = sale
        .coupons
        .iter()
        .partition(|c| matches!(c.command, CouponAction::Create { .. }));
    for c in creates {
        unavailable += post(&client, &base, c, token).await?;
        sent += 1;
    }
    // Every request with its own Idempotency-Key, `concurrency` at a time.
    let posts: Vec<(String, String, serde_json::Value)> = issues
        .iter()
        .map(|c| match &c.command {
            CouponAction::Issue { user_id } => Ok((
                format!("{base}/coupons/{}/issue", c.coupon_id),
                c.request_id.clone(),
                serde_json::json!({ "userId": user_id }),
            )),
            _ => Err(anyhow::anyhow!(
                "the order scenario's coupon sale only issues"
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    let mut batches = vec![posts];
    for (orders, due) in &sale.waves {
        batches.push(
            orders
                .iter()
                .map(|o| {
                    let mut body = serde_json::json!({
                        "userId": o.user_id,
                        "currency": o.currency,
                        "items": o.items.iter().map(|i| serde_json::json!({
                            "productId": i.product_id,
                            "quantity": i.quantity,
                            "unitPrice": i.unit_price.to_string(),
                        })).collect::<Vec<_>>(),
                    });
                    if let Some(c) = &o.coupon_id {
                        body["couponId"] = c.clone().into();
                    }
                    (format!("{base}/orders"), o.order_id.clone(), body)
                })
                .collect(),
        );
        batches.push(
            due.iter()
                .map(|k| {
                    let mut body = serde_json::json!({ "userId": k.user_id });
                    if let Some(r) = &k.reason {
                        body["reason"] = r.clone().into();
                    }
                    (
                        format!("{base}/orders/{}/cancel", urlencoding_segment(&k.order_id)),
                        k.request_id.clone(),
                        body,
                    )
                })
                .collect(),
        );
    }
    for (i, batch) in batches.into_iter().enumerate() {
        let mut in_flight = futures::stream::iter(batch)
            .map(|(url, key, body)| {
                let client = &client;
                async move { post_until_accepted(client, &url, &key, &body, None).await }
            })
            .buffer_unordered(gw.concurrency.max(1));
        while let Some(r) = in_flight.next().await {
            unavailable += r?;
            sent += 1;
            progress.tick(sent, "accepted (202)");
        }
        // Pause after each wave's cancels (batches: issues, then orders and
        // cancels per wave).
        if i > 0 && i % 2 == 0 {
            tokio::time::sleep(pause).await;
        }
    }
    progress.tick(sent, "accepted (202)");
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "scenario": "orders",
        "target": base,
        "idPrefix": scenario.prefix,
        "orders": scenario.orders,
        "users": scenario.users,
        "products": scenario.products,
        "waves": scenario.waves,
        "cancels": sale.cancels().count(),
        "seed": scenario.seed,
        "recordsSent": sent,
        "retriedUnavailable": unavailable,
        "seconds": secs,
        "recordsPerSecond": sent as f64 / secs,
    }))
}

/// An id as one path segment (the scenario's ids are URL-safe already;
/// anything else is percent-encoded).
fn urlencoding_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
