//! The front door beside the pipeline: the real `surge gateway` (a child
//! process on bench-private topics) takes the hot sale's issue requests over
//! HTTP, `concurrency` in flight, each with its request id as
//! Idempotency-Key — as backend teams post them. The figure is accepted
//! requests per second (a 202 is sent once Kafka has acknowledged the
//! record) and the p50/p99 of the 202, divided by the pipeline's own hot
//! rate from the same run: whether the front door keeps up with what it
//! feeds. No pipeline runs behind it; a 202 never waits for a decision.

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

/// Posts the sale's issue requests through a fresh gateway; returns its
/// figures, `ratioAcceptedToPipelineHot` against `pipeline_hot_rate`.
pub async fn run(
    sandbox: &Sandbox,
    config: &Path,
    logs: &Path,
    sale: &Scenario,
    concurrency: usize,
    pipeline_hot_rate: f64,
) -> anyhow::Result<Value> {
    let mut gateway = Child::spawn(
        config,
        &["gateway"],
        &[
            ("SURGE_TOPICS__NAME_PREFIX", sandbox.prefix().into()),
            ("SURGE_GATEWAY__LISTEN", "127.0.0.1:0".into()),
            ("SURGE_GATEWAY__ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ],
        logs.join("gateway.log"),
    )?;
    let address = gateway
        .wait_for("gateway listening address=", Duration::from_secs(60))
        .await?;
    let base = format!("http://{address}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let mut commands = sale.commands().peekable();
    while let Some(c) = commands.next_if(|c| matches!(c.command, CouponAction::Create { .. })) {
        post(&client, &base, &c, Some(ADMIN_TOKEN)).await?;
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
    let cpu = super::pipeline::cpu_seconds(gateway.id());
    drop(gateway);
    let accepted = latencies.len();
    let rate = accepted as f64 / seconds;
    let latency = Latency::from_samples(0, rate, latencies);
    Ok(json!({
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
