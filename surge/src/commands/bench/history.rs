//! State and restore time as history grows: a long sale replayed at the
//! broker's pace. Its requests carry log timestamps spread over many dedupe
//! windows (the pipeline's stream clock follows log time, so an afternoon
//! of traffic is decided in a minute or two), the pipeline runs with a
//! one-minute window, and the changelog is compacted the way the topics
//! file lets the broker compact it, only faster.
//!
//! What it shows: the dedupe set holds one window of request ids plus the
//! holders, whatever the history — state bytes are sampled while the
//! backlog is decided — and a restarted pipeline restores the live state,
//! not every record and tombstone ever written. Restores are repeated,
//! with pauses for the log cleaner, until the records they read stop
//! falling. The baseline, side by side: the same history under a window
//! longer than all of it, i.e. what an unbounded dedupe set keeps.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use surge_core::Settings;
use surge_coupon::scenario::Scenario;
use surge_schemas::coupon::CouponCommand;
use surge_schemas::Contract;

use super::pipeline::{decide_backlog_with, PipelineProcess};
use super::sandbox::Sandbox;
use super::say;
use crate::commands::loadgen;

/// The dedupe window of the run: the stream clock's granularity (a minute).
const WINDOW: Duration = Duration::from_secs(60);

/// Sizes of a history run.
pub struct HistoryArgs {
    pub requests: usize,
    /// Dedupe windows the requests' log timestamps span.
    pub windows: u32,
    pub coupons: usize,
    pub stock: i64,
    pub users: usize,
    pub seed: u64,
    /// Restores after the run, at most (the first right away, then one per
    /// cleaner pause while the records read keep falling).
    pub restores: usize,
}

/// The bounded run, then the baseline, and their ratios.
pub async fn run(
    settings: &Settings,
    config: &Path,
    out_dir: &Path,
    run_id: &str,
    args: &HistoryArgs,
) -> anyhow::Result<Value> {
    let bounded = one_run(settings, config, out_dir, run_id, args, WINDOW, "bounded").await?;
    // Longer than the history (and the two minutes of bucket rounding):
    // nothing expires, as before the window was bounded.
    let everything = WINDOW * (args.windows.max(1) + 3);
    let unbounded = one_run(
        settings,
        config,
        out_dir,
        run_id,
        args,
        everything,
        "unbounded",
    )
    .await?;
    let ratio = |key: &str| {
        let (b, u) = (
            bounded[key].as_f64().unwrap_or(0.0),
            unbounded[key].as_f64().unwrap_or(0.0),
        );
        if u > 0.0 {
            json!(b / u)
        } else {
            Value::Null
        }
    };
    Ok(json!({
        "requests": args.requests,
        "coupons": args.coupons.max(1),
        "stock": args.stock,
        "users": args.users.max(1),
        "windows": args.windows,
        "windowSeconds": WINDOW.as_secs(),
        "bounded": bounded,
        "unbounded": unbounded,
        "boundedOverUnbounded": {
            "stateBytes": ratio("stateBytes"),
            "restoreRecords": ratio("restoreRecords"),
            "restoreSeconds": ratio("restoreSeconds"),
        },
    }))
}

/// One history under dedupe window `window`, on its own sandbox.
async fn one_run(
    settings: &Settings,
    config: &Path,
    out_dir: &Path,
    run_id: &str,
    args: &HistoryArgs,
    window: Duration,
    name: &str,
) -> anyhow::Result<Value> {
    let (sandbox, logs) =
        Sandbox::for_step(settings, run_id, &format!("history-{name}"), out_dir).await?;
    let changelog = sandbox.names.changelog(surge_core::names::COUPON);
    compact_fast(&sandbox, &changelog).await?;

    let sale = Scenario {
        prefix: format!("h{run_id}{name}"),
        coupons: args.coupons.max(1),
        stock: args.stock,
        users: args.users.max(1),
        requests: args.requests,
        // Every request is its own: one decision each, counted on the output.
        duplicate_ratio: 0.0,
        seed: args.seed,
    };
    let span_ms = i64::from(args.windows.max(1)) * WINDOW.as_millis() as i64;
    // Ends a minute ago: every record well inside the input's retention.
    let start_ms = chrono::Utc::now().timestamp_millis() - span_ms - 60_000;
    let requests = sale.requests.max(1) as i128;
    let log_time = |i: usize| Some(start_ms + (i as i128 * i128::from(span_ms) / requests) as i64);
    say(format!(
        "history ({name}): {} requests over {} coupons, log times spanning {} minutes, dedupe window {}s, into {}",
        sale.requests,
        sale.coupons,
        span_ms / 60_000,
        window.as_secs(),
        sandbox.topic(CouponCommand::TOPIC)
    ));
    loadgen::kafka::send_at(&sale, 0, &sandbox.settings, log_time).await?;

    let extra = [(
        "SURGE_PIPELINES__COUPON__DEDUPE_WINDOW",
        format!("{}s", window.as_secs()),
    )];
    let want = sale.coupons + sale.requests;
    let started = Instant::now();
    let (seen, pipeline, samples) =
        decide_backlog_with(&sandbox, config, &logs, want, &extra, true).await?;
    let decided_seconds = started.elapsed().as_secs_f64();
    let end = pipeline.settled_figures().await;
    pipeline.stop();
    say(format!(
        "history ({name}): {} decisions in {decided_seconds:.1}s; {} changelog records written; state {:.1} MiB",
        seen.records,
        end.changelog_records,
        end.state_bytes / 1048576.0
    ));

    let mut restores: Vec<Value> = Vec::new();
    let after_run = Instant::now();
    for attempt in 0..args.restores.max(1) {
        if attempt > 0 {
            // The broker's cleaner wakes every 15 s (log.cleaner.backoff.ms).
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        let mut restarted = PipelineProcess::spawn_with(config, sandbox.prefix(), &extra, &logs)?;
        restarted.until_restored().await?;
        let f = restarted.settled_figures().await;
        let tombstones = f.restore_tombstones;
        restarted.stop();
        say(format!(
            "history ({name}): restore {} at +{:.0}s read {} changelog records ({tombstones} tombstones) in {:.2}s",
            attempt + 1,
            after_run.elapsed().as_secs_f64(),
            f.restore_records,
            f.restore_seconds
        ));
        let fell = restores.last().is_none_or(|last: &Value| {
            f.restore_records < 0.95 * last["changelogRecords"].as_f64().unwrap_or(0.0)
        });
        restores.push(json!({
            "afterRunSeconds": after_run.elapsed().as_secs_f64(),
            "seconds": f.restore_seconds,
            "changelogRecords": f.restore_records,
            "tombstones": tombstones,
            "stateBytes": f.state_bytes,
        }));
        if attempt > 0 && !fell {
            break;
        }
    }
    sandbox.drop_topics().await;

    let at_share = |share: f64| -> Value {
        let target = share * want as f64;
        samples
            .iter()
            .find(|(decisions, _)| *decisions >= target)
            .or(samples.last())
            .map_or(
                Value::Null,
                |(d, b)| json!({"decisions": d, "stateBytes": b}),
            )
    };
    let last = restores.last().cloned().unwrap_or(Value::Null);
    Ok(json!({
        "dedupeWindowSeconds": window.as_secs(),
        "decisions": seen.records,
        "decidedSeconds": decided_seconds,
        "issued": end.issued,
        "changelogRecordsWritten": end.changelog_records,
        "stateBytes": end.state_bytes,
        "pipelinePeakRssBytes": end.peak_rss_bytes,
        "stateBytesAt": {
            "quarter": at_share(0.25),
            "half": at_share(0.5),
            "threeQuarters": at_share(0.75),
            "end": at_share(1.0),
        },
        "restores": restores,
        "restoreSeconds": last["seconds"],
        "restoreRecords": last["changelogRecords"],
        "restoreTombstones": last["tombstones"],
        "restoredStateBytes": last["stateBytes"],
    }))
}

/// Compaction in seconds instead of hours: small segments rolled every 10 s
/// (the cleaner never touches the active one), any dirty share worth
/// cleaning, and tombstones dropped on the pass after they were cleaned
/// (the broker's default keeps them a day, which a real changelog also
/// restores: one day of expiries).
async fn compact_fast(sandbox: &Sandbox, changelog: &str) -> anyhow::Result<()> {
    let changes = BTreeMap::from([
        ("segment.ms", "10000".to_string()),
        ("segment.bytes", (1024 * 1024).to_string()),
        ("min.cleanable.dirty.ratio", "0.01".to_string()),
        ("delete.retention.ms", "0".to_string()),
    ]);
    surge_kafka::topics::set_topic_configs(
        &sandbox.factory.admin()?,
        changelog,
        &changes,
        Duration::from_secs(30),
    )
    .await?;
    Ok(())
}

/// The history run's lines of the report.
pub fn print(history: &Value) {
    if history.is_null() {
        return;
    }
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mib = |v: &Value| f(v) / 1048576.0;
    println!(
        "\nhistory: {} requests over {} coupons (stock {} each), log times spanning {} minutes;\n\
         bounded: a {} s dedupe window; unbounded: a window longer than the history (nothing expires)",
        history["requests"],
        history["coupons"],
        history["stock"],
        history["windows"],
        history["windowSeconds"],
    );
    println!(
        "{:<10} {:>9} {:>11} {:>12} | {:>8} {:>8} {:>8} {:>8} | {:>8} | restores after the run: records read, seconds",
        "run", "decided s", "ISSUED", "changelog", "state@¼", "@½", "@¾", "end MiB", "peak RSS"
    );
    for name in ["bounded", "unbounded"] {
        let r = &history[name];
        let at = &r["stateBytesAt"];
        let restores = r["restores"].as_array().map_or(String::new(), |all| {
            all.iter()
                .map(|x| {
                    format!(
                        "+{:.0}s: {} ({} tombstones) in {:.2}",
                        f(&x["afterRunSeconds"]),
                        f(&x["changelogRecords"]),
                        f(&x["tombstones"]),
                        f(&x["seconds"])
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        });
        println!(
            "{:<10} {:>9.1} {:>11} {:>12} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>8.1} | {restores}",
            name,
            f(&r["decidedSeconds"]),
            f(&r["issued"]),
            f(&r["changelogRecordsWritten"]),
            mib(&at["quarter"]["stateBytes"]),
            mib(&at["half"]["stateBytes"]),
            mib(&at["threeQuarters"]["stateBytes"]),
            mib(&at["end"]["stateBytes"]),
            f(&r["pipelinePeakRssBytes"]) / 1048576.0,
        );
    }
    let q = &history["boundedOverUnbounded"];
    println!(
        "bounded / unbounded: state {:.3}, restore records {:.3}, restore seconds {:.3}",
        f(&q["stateBytes"]),
        f(&q["restoreRecords"]),
        f(&q["restoreSeconds"]),
    );
}
