//! Request → visible-result latency of the pipeline at a fixed offered rate:
//! requests paced on the async timer (loadgen's `Pace`), each stamped with
//! requestedAt when it is sent; a read_committed consumer of coupon-result
//! takes receive time − requestedAt per decision. Only the decisions of this
//! run's coupons are timed, so the backlog before it does not count.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use surge_coupon::scenario::Scenario;
use surge_schemas::coupon::CouponDecision;
use surge_schemas::{Contract, Registry, TopicCodec};

use super::sandbox::Sandbox;
use super::watch::{watch, Timed};
use crate::commands::loadgen;

/// Requests sent in the first second of a pipeline latency run are decided
/// and counted but not timed: the first ones wait ≈0.6 s (a start-up
/// transient — fresh load-generator producer, new watcher, idle pipeline —
/// seen in latency.csv), which would otherwise be most of a short run's p99.
/// Their p99 is reported too.
pub const WARMUP: Duration = Duration::from_secs(1);

/// Percentiles of one timed run.
#[derive(Debug, Default, Clone)]
pub struct Latency {
    pub offered_rate: u64,
    /// Requests actually sent per second (below `offered_rate` when the sender
    /// or the system under test could not keep up).
    pub achieved_rate: f64,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Latency {
    pub fn from_samples(offered_rate: u64, achieved_rate: f64, mut ms: Vec<f64>) -> Self {
        Self {
            offered_rate,
            achieved_rate,
            samples: ms.len(),
            p50_ms: percentile(&mut ms, 50.0),
            p99_ms: percentile(&mut ms, 99.0),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "offeredRate": self.offered_rate,
            "achievedRate": self.achieved_rate,
            "samples": self.samples,
            "p50Ms": self.p50_ms,
            "p99Ms": self.p99_ms,
        })
    }
}

/// Sends `sale` at `rate` per second to the running pipeline of `sandbox`
/// and times every decision of it. Every sample also goes to `csv`
/// (request, decision and receive times, latency), to see when the slow
/// ones happened and whether they waited for the pipeline or for the commit.
pub async fn pipeline(
    sandbox: &Sandbox,
    sale: &Scenario,
    rate: u64,
    csv: &Path,
) -> anyhow::Result<Timing> {
    let want = sale
        .commands()
        .map(|c| c.request_id)
        .collect::<HashSet<_>>()
        .len();
    let codec = TopicCodec::<CouponDecision>::connect(
        &Registry::new(&sandbox.settings.registry.url),
        &sandbox.names.subject(CouponDecision::TOPIC),
    )
    .await?;
    let timed = Timed {
        codec,
        runtime: tokio::runtime::Handle::current(),
        coupons: sale.prefix.clone(),
    };
    let watcher = {
        let (f, topic, partitions) = (
            sandbox.factory.clone(),
            sandbox.topic(CouponDecision::TOPIC),
            sandbox.partitions,
        );
        // The watcher positions itself at the end before it returns from
        // assign; a few ms of head start keeps the first decisions in view.
        let handle = tokio::task::spawn_blocking(move || {
            watch(
                &f,
                &topic,
                partitions,
                want,
                Duration::from_secs(300),
                Some(timed),
                "latency",
            )
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        handle
    };
    let started = std::time::Instant::now();
    let started_ms = chrono::Utc::now().timestamp_millis();
    let sent = loadgen::kafka::send(sale, rate, &sandbox.settings).await?;
    let achieved = sent as f64 / started.elapsed().as_secs_f64().max(1e-3);
    let seen = watcher.await??;
    // Every request of the sale is decided: fewer timed decisions means the
    // run did not finish or the watcher missed some, and a p99 of a part
    // would be no p99.
    if seen.latencies_ms.len() < want {
        anyhow::bail!(
            "latency: {} of the sale's {want} requests seen decided",
            seen.latencies_ms.len()
        );
    }
    let timed_from = started_ms + WARMUP.as_millis() as i64;
    let mut rows = String::from("requested_unix_ms,decided_unix_ms,received_unix_ms,latency_ms\n");
    let mut steady = Vec::with_capacity(seen.latencies_ms.len());
    let (mut to_decision, mut to_visible) = (Vec::new(), Vec::new());
    for (((req, decided), at), ms) in seen
        .requested_ms
        .iter()
        .zip(&seen.decided_ms)
        .zip(&seen.received_ms)
        .zip(&seen.latencies_ms)
    {
        rows += &format!("{req},{decided},{at},{ms:.3}\n");
        if *req >= timed_from {
            steady.push(*ms);
            to_decision.push((decided - req) as f64);
            to_visible.push((at - decided) as f64);
        }
    }
    std::fs::write(csv, rows)?;
    let all = Latency::from_samples(rate, achieved, seen.latencies_ms);
    Ok(Timing {
        steady: Latency::from_samples(rate, achieved, steady),
        with_warmup_p99_ms: all.p99_ms,
        to_decision: Split::of(to_decision),
        to_visible: Split::of(to_visible),
    })
}

/// The pipeline's latency after the warm-up, and the p99 with it; and the
/// same requests' latency in its two halves, to tell which one moved.
pub struct Timing {
    pub steady: Latency,
    pub with_warmup_p99_ms: f64,
    /// Request sent → decision handed to the pipeline's producer (its
    /// timestamp): the load generator's linger, the input's fetch, and the
    /// wait while the pipeline was busy — committing the previous batch
    /// blocks its loop.
    pub to_decision: Split,
    /// Decision handed to the producer → visible to a read_committed
    /// reader: the rest of its batch, the commit, and the reader's fetch.
    pub to_visible: Split,
}

/// p50 and p99 of one half of the latency, whole milliseconds (producer
/// timestamps are).
pub struct Split {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Split {
    fn of(mut ms: Vec<f64>) -> Self {
        Self {
            p50_ms: percentile(&mut ms, 50.0),
            p99_ms: percentile(&mut ms, 99.0),
        }
    }
}

impl Timing {
    pub fn json(&self) -> Value {
        let mut v = self.steady.json();
        v["warmupSeconds"] = json!(WARMUP.as_secs_f64());
        v["p99WithWarmupMs"] = json!(self.with_warmup_p99_ms);
        v["toDecisionP50Ms"] = json!(self.to_decision.p50_ms);
        v["toDecisionP99Ms"] = json!(self.to_decision.p99_ms);
        v["decisionToVisibleP50Ms"] = json!(self.to_visible.p50_ms);
        v["decisionToVisibleP99Ms"] = json!(self.to_visible.p99_ms);
        v
    }
}

/// The p-th percentile (0–100) of `values` (sorted in place), nearest rank.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&mut v, 50.0), 51.0);
        assert_eq!(super::percentile(&mut v, 99.0), 99.0);
        assert_eq!(super::percentile(&mut [], 99.0), 0.0);
    }
}
