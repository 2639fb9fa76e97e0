//! The front door beside the pipeline: the real `surge gateway` (a child
//! process on bench-private topics) takes the hot sale's issue requests over
//! HTTP, `concurrency` in flight, each with its request id as
//! Idempotency-Key — as backend teams post them. The figure is accepted
//! requests per second (a 202 is sent once Kafka has acknowledged the
//! record) and the p50/p99 of the 202, divided by the pipeline's own hot
//! rate from the same run: whether the front door keeps up with what it
//! feeds. No pipeline runs behind it; a 202 never waits for a decision.
//!
//! Then the same requests (fresh request ids) in batches through
//! `POST /coupon-requests`, `batch_size` per call and `batch_concurrency`
//! calls in flight, as a backend gathering its users' clicks would post
//! them: the front door's cost per HTTP call paid once per batch.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use surge_coupon::scenario::Scenario;
use surge_schemas::coupon::CouponAction;

use super::children::Child;
use super::latency::Latency;
use super::sandbox::Sandbox;
use super::say;
use crate::commands::loadgen::gateway::{post, post_until_accepted};

const ADMIN_TOKEN: &str = "bench-admin";

/// How the front door is driven.
pub struct Load {
    /// Single requests in flight.
    pub concurrency: usize,
    /// Requests per batch call (0: no batched run) and calls in flight.
    pub batch_size: usize,
    pub batch_concurrency: usize,
}

/// Posts the sale's issue requests through a fresh gateway; returns its
/// figures, `ratioAcceptedToPipelineHot` against `pipeline_hot_rate`.
pub async fn run(
    sandbox: &Sandbox,
    config: &Path,
    logs: &Path,
    sale: &Scenario,
    load: &Load,
    pipeline_hot_rate: f64,
) -> anyhow::Result<Value> {
    // Its Idempotency-Key claims and accepted markers (two keys per
    // request, kept a day) go under the run's own keyspace, removed after:
    // the Redis may be a team's.
    let keyspace = sandbox.prefix().to_string();
    let mut gateway = Child::spawn(
        config,
        &["gateway"],
        &[
            ("SURGE_TOPICS__NAME_PREFIX", sandbox.prefix().into()),
            ("SURGE_GATEWAY__LISTEN", "127.0.0.1:0".into()),
            ("SURGE_GATEWAY__ADMIN_TOKEN", ADMIN_TOKEN.into()),
            ("SURGE_REDIS__KEYSPACE", keyspace.clone()),
        ],
        logs.join("gateway.log"),
    )?;
    let address = gateway
        .wait_for("gateway listening address=", Duration::from_secs(60))
        .await?;
    let base = format!("http://{address}");
    let figures = drive(&gateway, &base, sale, load, pipeline_hot_rate).await;
    // The keys go whether or not the run got through.
    drop(gateway);
    let removed = async {
        let redis = redis::Client::open(sandbox.settings.redis.url.as_str())?;
        let mut conn = redis.get_multiplexed_async_connection().await?;
        super::redis_lock::remove_namespace(&mut conn, &keyspace).await
    };
    if let Err(e) = removed.await {
        say(format!(
            "gateway: could not remove the Redis keys under {keyspace}: {e}"
        ));
    }
    figures
}

/// The single-request run, then the batched one, through the gateway at `base`.
async fn drive(
    gateway: &Child,
    base: &str,
    sale: &Scenario,
    load: &Load,
    pipeline_hot_rate: f64,
) -> anyhow::Result<Value> {
    let concurrency = load.concurrency;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let mut commands = sale.commands().peekable();
    while let Some(c) = commands.next_if(|c| matches!(c.command, CouponAction::Create { .. })) {
        post(&client, base, &c, Some(ADMIN_TOKEN)).await?;
    }
    let requests: Vec<(String, String, Value)> = commands
        .filter_map(|c| match &c.command {
            CouponAction::Issue { user_id } => Some((
                format!("{base}/coupons/{}/issue", c.coupon_id),
                c.request_id.clone(),
                json!({ "userId": user_id }),
            )),
            _ => None,
        })
        .collect();
    say(format!(
        "gateway: {} issue requests, {concurrency} in flight",
        requests.len()
    ));
    // The gateway's CPU from here: start-up and the coupons are not the run's.
    let cpu_before = super::pipeline::cpu_seconds(gateway.id());
    let started = Instant::now();
    let mut timed = futures::stream::iter(requests.iter())
        .map(|(url, key, body)| {
            let client = &client;
            async move {
                let t0 = Instant::now();
                let unavailable = post_until_accepted(client, url, key, body, None).await?;
                anyhow::Ok((t0.elapsed().as_secs_f64() * 1000.0, unavailable))
            }
        })
        .buffer_unordered(concurrency.max(1));
    let (mut latencies, mut unavailable) = (Vec::with_capacity(requests.len()), 0usize);
    while let Some(result) = timed.next().await {
        let (ms, retried) = result?;
        latencies.push(ms);
        unavailable += retried;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = super::pipeline::cpu_seconds(gateway.id());
    let cpu = cpu_after - cpu_before;
    let batched = if load.batch_size > 0 {
        let items: Vec<Value> = requests
            .iter()
            .map(|(url, key, body)| {
                let coupon = url
                    .rsplit('/')
                    .nth(1)
                    .expect("/coupons/{couponId}/issue");
                json!({ "couponId": coupon, "userId": body["userId"], "requestId": format!("{key}-b") })
            })
            .collect();
        say(format!(
            "gateway: the same {} requests (fresh ids) in batches of {}, {} calls in flight",
            items.len(),
            load.batch_size,
            load.batch_concurrency
        ));
        let mut b = batches(&client, base, &items, load).await?;
        let batch_cpu = super::pipeline::cpu_seconds(gateway.id()) - cpu_after;
        let rate = f(&b["acceptedPerSecond"]);
        b["gatewayCpuSeconds"] = json!(batch_cpu);
        b["ratioAcceptedToPipelineHot"] = json!(rate / pipeline_hot_rate);
        b
    } else {
        Value::Null
    };
    let accepted = latencies.len();
    let rate = accepted as f64 / seconds;
    let latency = Latency::from_samples(0, rate, latencies);
    Ok(json!({
        "batched": batched,
        "requests": accepted,
        "concurrency": concurrency,
        "seconds": seconds,
        "acceptedPerSecond": rate,
        "p50Ms": latency.p50_ms,
        "p99Ms": latency.p99_ms,
        "retriedUnavailable": unavailable,
        "gatewayCpuSeconds": cpu,
        "pipelineHotPerSecond": pipeline_hot_rate,
        "ratioAcceptedToPipelineHot": rate / pipeline_hot_rate,
    }))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Posts `items` in batches; every item retried until it is PENDING (an
/// UNAVAILABLE one goes again, with its requestId, in a later call).
async fn batches(
    client: &reqwest::Client,
    base: &str,
    items: &[Value],
    load: &Load,
) -> anyhow::Result<Value> {
    let url = format!("{base}/coupon-requests");
    let started = Instant::now();
    let mut calls = futures::stream::iter(items.chunks(load.batch_size.max(1)))
        .map(|chunk| {
            let (client, url) = (client, &url);
            async move {
                let t0 = Instant::now();
                let mut todo: Vec<Value> = chunk.to_vec();
                let mut retried = 0usize;
                loop {
                    let response = client
                        .post(url)
                        .json(&json!({ "requests": todo }))
                        .send()
                        .await?;
                    let status = response.status();
                    let body: Value = response.json().await?;
                    // 207 and 503 (Kafka took none) carry per-item outcomes.
                    if status != reqwest::StatusCode::ACCEPTED
                        && status != reqwest::StatusCode::MULTI_STATUS
                        && status != reqwest::StatusCode::SERVICE_UNAVAILABLE
                    {
                        anyhow::bail!("{url}: {status}: {body}");
                    }
                    let results = body["results"].as_array().cloned().unwrap_or_default();
                    if results.len() != todo.len() {
                        anyhow::bail!(
                            "{url}: {} results for {} requests: {body}",
                            results.len(),
                            todo.len()
                        );
                    }
                    let mut again = Vec::new();
                    for (item, r) in todo.into_iter().zip(results) {
                        match r["status"].as_str() {
                            Some("PENDING") => {}
                            Some("UNAVAILABLE") => again.push(item),
                            _ => anyhow::bail!("{url}: an item was not accepted: {r}"),
                        }
                    }
                    if again.is_empty() {
                        break;
                    }
                    retried += again.len();
                    if retried > 600 * chunk.len() {
                        anyhow::bail!("{url}: items still unavailable after {retried} tries");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    todo = again;
                }
                anyhow::Ok((t0.elapsed().as_secs_f64() * 1000.0, chunk.len(), retried))
            }
        })
        .buffer_unordered(load.batch_concurrency.max(1));
    let (mut latencies, mut accepted, mut retried) = (Vec::new(), 0usize, 0usize);
    while let Some(call) = calls.next().await {
        let (ms, n, r) = call?;
        latencies.push(ms);
        accepted += n;
        retried += r;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = accepted as f64 / seconds;
    let calls = latencies.len();
    let latency = Latency::from_samples(0, rate, latencies);
    Ok(json!({
        "requests": accepted,
        "batchSize": load.batch_size,
        "concurrency": load.batch_concurrency,
        "calls": calls,
        "seconds": seconds,
        "acceptedPerSecond": rate,
        "p50Ms": latency.p50_ms,
        "p99Ms": latency.p99_ms,
        "retriedUnavailable": retried,
    }))
}
