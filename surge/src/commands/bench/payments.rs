//! `surge bench --scenario payments`: what the payment pipeline gets through
//! a slow provider. pg-sim answers every charge after exactly 50 ms; a caller
//! that waits for each answer before the next call manages 1 / 50 ms = 20
//! payments/s, and a pipeline that called once per partition at a time
//! would be capped at 20/s × partitions of payment-request. The pipeline
//! calls outside its transactions, up to `[payment] max_in_flight` at once,
//! so it should go far past that.
//!
//! Two runs, one after the other, each on fresh topics (a [`Sandbox`]) and a
//! pg-sim ledger schema of its own, with the real `surge pg-sim` and `surge
//! pipeline payment` as child processes of this binary: the configured
//! `max_in_flight`, then the sequential baseline (`max_in_flight` 1, fewer
//! payments). Each produces its payment-requests as fast as it can, once the
//! pipeline owns its partitions, and counts from the first produce to the
//! moment a read_committed consumer of order-replies has seen a PaymentReply
//! for every one of them. pg-sim's ledger must then hold exactly one
//! approved charge per request, or the run fails: a figure from a pipeline
//! that charged twice (or not at all) means nothing.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use surge_core::Settings;
use surge_kafka::partitioner::partition_for;
use surge_kafka::{ClientFactory, OrderedSender, QuietEofContext};
use surge_schemas::order::{OrderReply, PaymentKind, PaymentOutcome, PaymentRequest, Reply};
use surge_schemas::{Contract, Money, Registry, TopicCodec};

use super::children::{self, approved_charges, drop_schema};
use super::latency::percentile;
use super::sandbox::Sandbox;
use super::say;

/// pg-sim's added latency per charge (sigma 0: every call takes exactly this).
const PROVIDER_LATENCY_MS: f64 = 50.0;

/// Target: payments/s at least this many times partitions × 1/latency.
pub const TARGET_RATIO_TO_CEILING: f64 = 5.0;

/// The baseline gets this fraction of the payments (at least
/// [`MIN_SEQUENTIAL`]): at 20/s it would otherwise take minutes.
const SEQUENTIAL_SHARE: usize = 20;
const MIN_SEQUENTIAL: usize = 50;

/// One run's figures.
struct Run {
    max_in_flight: usize,
    requests: usize,
    partitions: i32,
    /// Partitions of payment-request the requests were keyed onto.
    partitions_used: usize,
    seconds: f64,
    /// From the first produce to the first reply visible.
    first_reply_seconds: f64,
    /// Request (requestedAt) → reply visible to read_committed, per payment.
    latencies_ms: Vec<f64>,
    declined: usize,
    ledger_approved: i64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn json(&self) -> Value {
        let mut ms = self.latencies_ms.clone();
        json!({
            "maxInFlight": self.max_in_flight,
            "requests": self.requests,
            "partitionsUsed": self.partitions_used,
            "seconds": self.seconds,
            "firstReplySeconds": self.first_reply_seconds,
            "paymentsPerSecond": self.rate(),
            "latencySamples": ms.len(),
            "latencyP50Ms": percentile(&mut ms, 50.0),
            "latencyP99Ms": percentile(&mut ms, 99.0),
            "declined": self.declined,
            "ledgerApprovedCharges": self.ledger_approved,
        })
    }
}

/// Both runs; `requests` payments for the configured `max_in_flight`.
pub async fn run(
    settings: &Settings,
    config: &Path,
    out_dir: &Path,
    run_id: &str,
    requests: usize,
) -> anyhow::Result<Value> {
    let in_flight = settings.payment.max_in_flight.max(1);
    say(format!(
        "payments: 1/2 {requests} payments, max_in_flight {in_flight}, provider {PROVIDER_LATENCY_MS} ms"
    ));
    let concurrent = measure(
        settings, config, out_dir, run_id, "payments", requests, in_flight,
    )
    .await?;
    let seq_requests = (requests / SEQUENTIAL_SHARE).max(MIN_SEQUENTIAL);
    say(format!(
        "payments: 2/2 sequential baseline, {seq_requests} payments, max_in_flight 1"
    ));
    let sequential = measure(
        settings,
        config,
        out_dir,
        run_id,
        "payments-seq",
        seq_requests,
        1,
    )
    .await?;
    let one_caller = 1000.0 / PROVIDER_LATENCY_MS;
    let ceiling = one_caller * f64::from(concurrent.partitions);
    Ok(json!({
        "providerLatencyMs": PROVIDER_LATENCY_MS,
        "partitions": concurrent.partitions,
        "perPartitionCeiling": one_caller,
        "ceilingPerSecond": ceiling,
        "concurrent": concurrent.json(),
        "sequential": sequential.json(),
        "ratioToCeiling": concurrent.rate() / ceiling,
        "ratioConcurrentToSequential": concurrent.rate() / sequential.rate(),
        "ratioSequentialToOneCaller": sequential.rate() / one_caller,
    }))
}

/// The target, judged like the coupon ones (see `report::targets`).
pub fn targets(payments: &Value) -> Vec<Value> {
    if payments.is_null() {
        return Vec::new();
    }
    let value = payments["ratioToCeiling"].as_f64().unwrap_or(0.0);
    vec![json!({
        "scope": "payments",
        "target": format!("payments/ceiling >= {TARGET_RATIO_TO_CEILING:.0}"),
        "value": value,
        "bound": TARGET_RATIO_TO_CEILING,
        "met": value >= TARGET_RATIO_TO_CEILING,
    })]
}

pub fn print(payments: &Value) {
    if payments.is_null() {
        return;
    }
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    // Value's Display ignores width and alignment.
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    println!(
        "\npayments, {:.0} ms provider latency (sigma 0), {} partitions of payment-request:\n\
         first produce -> PaymentReply visible to read_committed for every request;\n\
         ceiling = partitions x 1/latency = {:.0}/s; latency = request -> reply visible, under the burst;\n\
         1st reply = first produce -> first reply (start-up of the first calls and transactions, counted)",
        f(&payments["providerLatencyMs"]),
        n(&payments["partitions"]),
        f(&payments["ceilingPerSecond"]),
    );
    println!(
        "{:<11} {:>9} {:>9} {:>10} {:>11} {:>9} {:>9} {:>14}",
        "run",
        "in flight",
        "requests",
        "payments/s",
        "1st reply s",
        "p50 ms",
        "p99 ms",
        "ledger charges"
    );
    for (name, r) in [
        ("concurrent", &payments["concurrent"]),
        ("sequential", &payments["sequential"]),
    ] {
        println!(
            "{:<11} {:>9} {:>9} {:>10.1} {:>11.2} {:>9.1} {:>9.1} {:>14}",
            name,
            n(&r["maxInFlight"]),
            n(&r["requests"]),
            f(&r["paymentsPerSecond"]),
            f(&r["firstReplySeconds"]),
            f(&r["latencyP50Ms"]),
            f(&r["latencyP99Ms"]),
            n(&r["ledgerApprovedCharges"]),
        );
    }
    let ratio = f(&payments["ratioToCeiling"]);
    println!(
        "  payments/s / (partitions x 1/latency)  {ratio:>8.2}  (goal >= {TARGET_RATIO_TO_CEILING:.0}: {})",
        if ratio >= TARGET_RATIO_TO_CEILING {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  concurrent / sequential                {:>8.2}",
        f(&payments["ratioConcurrentToSequential"])
    );
    println!(
        "  sequential / (1/latency)               {:>8.2}  (one call at a time: about 1)",
        f(&payments["ratioSequentialToOneCaller"])
    );
}

/// One run on its own sandbox and ledger schema, both dropped afterwards.
async fn measure(
    settings: &Settings,
    config: &Path,
    out_dir: &Path,
    run_id: &str,
    label: &str,
    requests: usize,
    max_in_flight: usize,
) -> anyhow::Result<Run> {
    let (sandbox, logs) = Sandbox::for_step(settings, run_id, label, out_dir).await?;
    say(format!("{label}: topics under {}*", sandbox.prefix()));
    let schema = format!("pgsim_bench_{run_id}_{}", label.replace('-', "_"));
    let outcome = drive(
        &sandbox,
        config,
        &logs,
        &schema,
        &format!("b{run_id}"),
        requests,
        max_in_flight,
    )
    .await;
    drop_schema(&settings.postgres.url, &schema).await;
    sandbox.drop_topics().await;
    outcome
}

async fn drive(
    sandbox: &Sandbox,
    config: &Path,
    logs: &Path,
    schema: &str,
    ids: &str,
    requests: usize,
    max_in_flight: usize,
) -> anyhow::Result<Run> {
    let names = &sandbox.names;
    let partitions = sandbox.partitions_of(PaymentRequest::TOPIC)?;
    let reply_partitions = sandbox.partitions_of(OrderReply::TOPIC)?;

    // A provider with latency and nothing else: no declines, errors or hangs.
    let (sim, address) =
        children::pg_sim(config, schema, PROVIDER_LATENCY_MS, logs.join("pg-sim.log")).await?;
    let mut pipeline = children::pipeline(
        config,
        sandbox.prefix(),
        surge_core::names::PAYMENT,
        &[
            ("SURGE_PAYMENT__URL", format!("http://{address}")),
            ("SURGE_PAYMENT__MAX_IN_FLIGHT", max_in_flight.to_string()),
        ],
        logs,
    )?;
    // Group join and restore are not what is measured: produce once the
    // pipeline owns its partitions.
    children::until_assigned(&mut pipeline).await?;

    let registry = Registry::new(&sandbox.settings.registry.url);
    let codec =
        TopicCodec::<PaymentRequest>::connect(&registry, &names.subject(PaymentRequest::TOPIC))
            .await
            .context("registry: payment-request schema")?;
    let replies = TopicCodec::<OrderReply>::connect(&registry, &names.subject(OrderReply::TOPIC))
        .await
        .context("registry: order-replies schema")?;
    let charges: Vec<PaymentRequest> = (0..requests)
        .map(|i| PaymentRequest {
            payment_id: format!("{ids}-charge-{i}"),
            order_id: format!("{ids}-order-{i}"),
            user_id: format!("{ids}-user-{}", i % 1_000),
            kind: PaymentKind::Charge,
            amount: Money(1_000 + (i % 100) as i64 * 100),
            currency: "KRW".into(),
            requested_at: surge_schemas::now(),
            refund_of: None,
        })
        .collect();
    let partitions_used = charges
        .iter()
        .map(|c| partition_for(c.order_id.as_bytes(), partitions))
        .collect::<HashSet<_>>()
        .len();
    let wanted: HashSet<String> = charges.iter().map(|c| c.payment_id.clone()).collect();

    // Generous: the sequential run needs requests × latency, the other far less.
    let timeout = Duration::from_secs(120)
        + Duration::from_secs_f64(
            requests as f64 * PROVIDER_LATENCY_MS / 1000.0 * 3.0 / max_in_flight as f64,
        );
    let (ready, reading) = tokio::sync::oneshot::channel();
    let watcher = {
        let (f, topic) = (sandbox.factory.clone(), sandbox.topic(OrderReply::TOPIC));
        tokio::task::spawn_blocking(move || {
            watch_replies(
                &f,
                &topic,
                reply_partitions,
                wanted,
                &replies,
                timeout,
                ready,
            )
        })
    };
    // The clock starts at the first produce: the watcher must be fetching by then.
    match tokio::time::timeout(Duration::from_secs(60), reading).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            watcher.await??;
            bail!("the reply watcher stopped before it read order-replies");
        }
        Err(_) => bail!("the reply watcher did not reach the end of order-replies within 60 s"),
    }

    let producer = sandbox.factory.idempotent_producer("bench-payments")?;
    let topic = sandbox.topic(PaymentRequest::TOPIC);
    let mut sender = OrderedSender::new(&producer, &topic);
    let mut requested_ms = HashMap::with_capacity(requests);
    let first_produce_ms = chrono::Utc::now().timestamp_millis();
    for mut charge in charges {
        charge.requested_at = surge_schemas::now();
        requested_ms.insert(
            charge.payment_id.clone(),
            charge.requested_at.timestamp_millis(),
        );
        sender
            .send(&charge.order_id, &codec.encode(&charge)?)
            .await
            .context("producing to payment-request")?;
        sender.settle_ready()?;
    }
    let sent = sender
        .finish()
        .await
        .context("producing to payment-request")?;
    if sent != requests {
        bail!("Kafka acknowledged {sent} of {requests} payment requests");
    }
    let seen = watcher.await??;
    if seen.visible_ms.len() < requests {
        bail!(
            "replies for {} of {requests} payments became visible; see {}",
            seen.visible_ms.len(),
            pipeline.log.display()
        );
    }
    if seen.duplicates > 0 {
        bail!(
            "{} payments got more than one reply on order-replies (exactly once broken); see {}",
            seen.duplicates,
            pipeline.log.display()
        );
    }
    let last_visible_ms = seen.visible_ms.values().copied().max().unwrap_or(0);
    let first_visible_ms = seen.visible_ms.values().copied().min().unwrap_or(0);
    let latencies_ms = seen
        .visible_ms
        .iter()
        .filter_map(|(id, at)| requested_ms.get(id).map(|r| (at - r) as f64))
        .collect();
    let ledger_approved = approved_charges(&sandbox.settings.postgres.url, schema, "").await?;
    say(format!(
        "pg-sim ledger {schema}: {ledger_approved} approved charges for {requests} requests"
    ));
    if ledger_approved != requests as i64 {
        bail!(
            "pg-sim's ledger {schema} holds {ledger_approved} approved charges for {requests} \
             payment requests: not exactly once; see {}",
            pipeline.log.display()
        );
    }
    drop(pipeline);
    drop(sim);
    Ok(Run {
        max_in_flight,
        requests,
        partitions,
        partitions_used,
        seconds: (last_visible_ms - first_produce_ms).max(1) as f64 / 1000.0,
        first_reply_seconds: (first_visible_ms - first_produce_ms) as f64 / 1000.0,
        latencies_ms,
        declined: seen.declined,
        ledger_approved,
    })
}

/// What the reply watcher saw.
struct Replies {
    /// First visibility (ms since the epoch) of each wanted payment's reply.
    visible_ms: HashMap<String, i64>,
    /// Replies beyond the first for a payment.
    duplicates: usize,
    declined: usize,
}

/// Reads order-replies from the beginning as read_committed until every
/// payment in `wanted` has a PaymentReply or `timeout` passed; `ready`
/// once it has reached the end of every partition. Blocking.
fn watch_replies(
    factory: &ClientFactory,
    topic: &str,
    partitions: i32,
    wanted: HashSet<String>,
    codec: &TopicCodec<OrderReply>,
    timeout: Duration,
    ready: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<Replies> {
    let mut cfg =
        factory.read_committed_consumer_config("bench-watch", &format!("{topic}-bench-watch"));
    cfg.set("enable.partition.eof", "true");
    // A blocking-pool thread is inside the runtime: decoding may await the registry.
    let runtime = tokio::runtime::Handle::current();
    let consumer: BaseConsumer<QuietEofContext> = cfg.create_with_context(QuietEofContext)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut reported = Instant::now();
    let (mut ready, mut at_end) = (Some(ready), HashSet::new());
    let mut seen = Replies {
        visible_ms: HashMap::with_capacity(wanted.len()),
        duplicates: 0,
        declined: 0,
    };
    while seen.visible_ms.len() < wanted.len() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                // Visible now: taken before decoding, which is the watcher's cost.
                let received = chrono::Utc::now().timestamp_millis();
                let Some(Ok(reply)) = m.payload().map(|b| runtime.block_on(codec.decode(Some(b))))
                else {
                    continue;
                };
                let Reply::Payment(p) = reply.reply else {
                    continue;
                };
                if !wanted.contains(&p.payment_id) {
                    continue;
                }
                if seen.visible_ms.contains_key(&p.payment_id) {
                    seen.duplicates += 1;
                    continue;
                }
                if p.outcome == PaymentOutcome::Declined {
                    seen.declined += 1;
                }
                seen.visible_ms.insert(p.payment_id, received);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if at_end.len() == partitions as usize {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
            }
            None => {}
            Some(Err(e)) => tracing::warn!(message = "watch", error = %e),
        }
        if reported.elapsed() >= Duration::from_secs(2) && ready.is_none() {
            say(format!(
                "  payments: {}/{} replies visible",
                seen.visible_ms.len(),
                wanted.len()
            ));
            reported = Instant::now();
        }
    }
    Ok(seen)
}
