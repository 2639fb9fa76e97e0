//! `surge bench`: the two claims measured side by side, in one run, on the
//! same machine and broker, for a `hot` (one coupon) and a `spread` (many
//! coupons) sale of the same generated requests:
//!
//! 1. the ceiling — an at-least-once consume→produce copy (no state, no
//!    transactions);
//! 2. the surge coupon pipeline, exactly once (the real `surge pipeline
//!    coupon` process);
//! 3. the design it replaces — a Redis lock per coupon around
//!    check-decrement-add, driven by many concurrent clients.
//!
//! Throughput of 1 and 2 is counted the same way, on a preloaded backlog:
//! output records seen by a read_committed consumer, divided by the span of
//! their producer timestamps (first to last output record). Then
//! latency (request → visible decision) at a fixed offered rate, peak RSS of
//! the pipeline and its state bytes per issued user. Prints a table with the
//! ratios and the targets, writes JSON and an SVG chart. Targets are
//! reported, never asserted.

mod chart;
mod copy;
mod redis_lock;
mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use surge_core::Settings;
use surge_coupon::scenario::Scenario;
use surge_kafka::{topics, ClientFactory};
use surge_schemas::{Registry, TopicCodec};

use super::loadgen;
use watch::{percentile, watch, Timed};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "hot,spread")]
    scenario: Vec<Kind>,
    /// Requests per scenario (retries included).
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
    /// Distinct users.
    #[arg(long, default_value_t = 50_000)]
    users: usize,
    /// Stock per coupon.
    #[arg(long, default_value_t = 1_000)]
    stock: i64,
    /// Coupons in the spread scenario.
    #[arg(long, default_value_t = 50)]
    coupons: usize,
    /// Concurrent clients of the Redis-lock design.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Offered rate of the latency runs (default: half the measured pipeline maximum).
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds of traffic in each latency run.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Where the JSON result and the chart go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Seed of the generated requests.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Tiny sizes: checks the whole path in seconds (figures mean nothing).
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Hot,
    Spread,
}

pub async fn run(
    mut args: BenchArgs,
    settings: &Settings,
    config: &Path,
) -> anyhow::Result<ExitCode> {
    if args.quick {
        args.requests = args.requests.min(3_000);
        args.users = args.users.min(1_000);
        args.stock = args.stock.min(100);
        args.coupons = args.coupons.min(5);
        args.latency_seconds = args.latency_seconds.min(2);
        args.clients = args.clients.min(16);
    }
    std::fs::create_dir_all(&args.out)?;
    let mut results = Vec::new();
    for kind in args.scenario.clone() {
        results.push(scenario(&args, kind, settings, config).await?);
    }
    let report = json!({
        "machine": machine(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "commitInterval": humantime::format_duration(settings.pipelines.coupon.commit_interval).to_string(),
        "scenarios": results,
    });
    print_table(&report);
    let json_path = args.out.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let svg_path = args.out.join("bench.svg");
    std::fs::write(&svg_path, chart::svg(&report))?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(ExitCode::SUCCESS)
}

async fn scenario(
    args: &BenchArgs,
    kind: Kind,
    settings: &Settings,
    config: &Path,
) -> anyhow::Result<Value> {
    let name = match kind {
        Kind::Hot => "hot",
        Kind::Spread => "spread",
    };
    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut settings = settings.clone();
    settings.topics.name_prefix = format!("bench-{run_id}-{name}-");
    let prefix = settings.topics.name_prefix.clone();
    let factory = ClientFactory::new(settings.kafka.clone());
    let logs = args.out.join(prefix.trim_end_matches('-'));
    std::fs::create_dir_all(&logs)?;
    say(format!("{name}: topics under {prefix}*"));
    let partitions = create_topics(&settings, &factory).await?;

    let sale = Scenario {
        prefix: format!("b{run_id}"),
        coupons: if kind == Kind::Hot {
            1
        } else {
            args.coupons.max(1)
        },
        stock: args.stock,
        users: args.users,
        requests: args.requests,
        duplicate_ratio: 0.05,
        seed: args.seed,
    };
    let records = sale.coupons + sale.requests;
    let distinct = sale
        .commands()
        .map(|c| c.request_id)
        .collect::<HashSet<_>>()
        .len();
    say(format!(
        "{name}: preloading {records} records into {prefix}coupon-issue"
    ));
    loadgen::kafka::send(&sale, 0, &settings).await?;

    // 1. The ceiling: at-least-once copy.
    say(format!("{name}: 1/3 at-least-once copy"));
    let stop = Arc::new(AtomicBool::new(false));
    let copier = {
        let (f, from, to, stop) = (
            factory.clone(),
            format!("{prefix}coupon-issue"),
            format!("{prefix}bench-copy"),
            stop.clone(),
        );
        std::thread::spawn(move || copy::run(&f, &from, &to, stop))
    };
    let copied = blocking_watch(
        &factory,
        &format!("{prefix}bench-copy"),
        partitions,
        records,
        None,
        "copy",
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    copier
        .join()
        .map_err(|_| anyhow::anyhow!("copier panicked"))??;
    if copied.records < records {
        bail!(
            "the copy made {} of {records} records visible",
            copied.records
        );
    }

    // 2. The surge pipeline, exactly once.
    say(format!("{name}: 2/3 surge coupon pipeline (exactly once)"));
    let mut pipeline = spawn_pipeline(config, &prefix, &logs)?;
    let decided = blocking_watch(
        &factory,
        &format!("{prefix}coupon-result"),
        partitions,
        distinct,
        None,
        "pipeline",
    )
    .await;
    let decided = match decided {
        Ok(d) if d.records >= distinct => d,
        Ok(d) => {
            stop_child(&mut pipeline);
            bail!(
                "the pipeline decided {} of {distinct} requests; see {}",
                d.records,
                logs.display()
            );
        }
        Err(e) => {
            stop_child(&mut pipeline);
            return Err(e);
        }
    };
    let metrics = scrape(&logs.join("pipeline.log")).await.unwrap_or_default();
    let state_bytes = metric(&metrics, "surge_pipeline_state_bytes");
    let issued = metric(
        &metrics,
        "surge_pipeline_decisions_total{outcome=\"ISSUED\"",
    );

    // Latency at a fixed offered rate: half the maximum unless given.
    let rate = args.rate.unwrap_or(((decided.rate() / 2.0) as u64).max(10));
    let lat_requests = (rate * args.latency_seconds).max(10) as usize;
    let lat_sale = Scenario {
        prefix: format!("l{run_id}"),
        requests: lat_requests,
        ..sale.clone()
    };
    let lat_distinct = lat_sale
        .commands()
        .map(|c| c.request_id)
        .collect::<HashSet<_>>()
        .len();
    say(format!(
        "{name}: latency of the pipeline at {rate}/s for {} s",
        args.latency_seconds
    ));
    let codec = TopicCodec::connect(&Registry::new(&settings.registry.url)).await?;
    let timed = Timed {
        codec,
        runtime: tokio::runtime::Handle::current(),
        coupons: lat_sale.prefix.clone(),
    };
    let watcher = {
        let (f, topic) = (factory.clone(), format!("{prefix}coupon-result"));
        tokio::task::spawn_blocking(move || {
            watch(
                &f,
                &topic,
                partitions,
                lat_distinct,
                Duration::from_secs(300),
                Some(timed),
                "latency",
            )
        })
    };
    loadgen::kafka::send(&lat_sale, rate, &settings).await?;
    let mut lat = watcher.await??;
    let peak_rss = peak_rss_bytes(pipeline.id());
    stop_child(&mut pipeline);

    // 3. The Redis-lock design.
    say(format!(
        "{name}: 3/3 Redis lock per coupon, {} clients",
        args.clients
    ));
    let lock = redis_lock::run(
        &settings.redis.url,
        &format!("bench:{run_id}:{name}"),
        &sale,
        args.clients,
        0,
    )
    .await?;
    let lock_rate = lock.requests as f64 / lock.seconds;
    say(format!(
        "{name}: latency of the Redis-lock design at {rate}/s"
    ));
    let mut lock_lat = redis_lock::run(
        &settings.redis.url,
        &format!("bench:{run_id}:{name}:lat"),
        &lat_sale,
        args.clients,
        rate,
    )
    .await?;

    let copy_rate = copied.rate();
    let eos_rate = decided.rate();
    let commit_ms = settings.pipelines.coupon.commit_interval.as_secs_f64() * 1000.0;
    let p99 = percentile(&mut lat.latencies_ms, 99.0);
    let per_user = if issued > 0.0 {
        state_bytes / issued
    } else {
        0.0
    };
    let (ratio_copy, ratio_lock) = (eos_rate / copy_rate, eos_rate / lock_rate);
    let lock_target = if kind == Kind::Hot { 10.0 } else { 3.0 };
    Ok(json!({
        "scenario": name,
        "coupons": sale.coupons,
        "requests": sale.requests,
        "distinctRequests": distinct,
        "throughput": {
            "copyAtLeastOnce": copy_rate,
            "surgeExactlyOnce": eos_rate,
            "redisLock": lock_rate,
            "ratioSurgeToCopy": ratio_copy,
            "ratioSurgeToRedisLock": ratio_lock,
        },
        "latency": {
            "offeredRate": rate,
            "surgeP50Ms": percentile(&mut lat.latencies_ms, 50.0),
            "surgeP99Ms": p99,
            "redisLockP50Ms": percentile(&mut lock_lat.latencies_ms, 50.0),
            "redisLockP99Ms": percentile(&mut lock_lat.latencies_ms, 99.0),
            "samples": lat.latencies_ms.len(),
        },
        "memory": {
            "pipelinePeakRssBytes": peak_rss,
            "stateBytes": state_bytes,
            "issued": issued,
            "stateBytesPerIssuedUser": per_user,
        },
        "redisLockRetries": lock.lock_retries,
        "targets": {
            "surgeToCopyAtLeast0.9": ratio_copy >= 0.9,
            (format!("surgeToRedisLockAtLeast{lock_target}")): ratio_lock >= lock_target,
            "p99WithinCommitIntervalPlus50ms": p99 <= commit_ms + 50.0,
            "stateAtMost64BytesPerIssuedUser": per_user > 0.0 && per_user <= 64.0,
        },
    }))
}

fn say(what: String) {
    eprintln!("[bench] {what}");
}

/// The declared topics under the bench prefix, plus a scratch copy target
/// shaped like coupon-result. Returns the partition count of coupon-issue.
async fn create_topics(settings: &Settings, factory: &ClientFactory) -> anyhow::Result<i32> {
    let mut specs = topics::load(&settings.topics.file, &settings.topics)?;
    let prefix = &settings.topics.name_prefix;
    let result = specs
        .iter()
        .find(|s| s.name == format!("{prefix}coupon-result"))
        .context("coupon-result in the topics file")?
        .clone();
    let partitions = specs
        .iter()
        .find(|s| s.name == format!("{prefix}coupon-issue"))
        .context("coupon-issue in the topics file")?
        .partitions;
    specs.push(topics::TopicSpec {
        name: format!("{prefix}bench-copy"),
        ..result
    });
    let admin = factory.admin()?;
    topics::apply(&admin, &specs, Duration::from_secs(30)).await?;
    Ok(partitions)
}

async fn blocking_watch(
    factory: &ClientFactory,
    topic: &str,
    partitions: i32,
    want: usize,
    timed: Option<Timed>,
    what: &'static str,
) -> anyhow::Result<watch::Seen> {
    let (f, topic) = (factory.clone(), topic.to_string());
    Ok(tokio::task::spawn_blocking(move || {
        watch(
            &f,
            &topic,
            partitions,
            want,
            Duration::from_secs(900),
            timed,
            what,
        )
    })
    .await??)
}

fn spawn_pipeline(config: &Path, prefix: &str, logs: &Path) -> anyhow::Result<std::process::Child> {
    let log = std::fs::File::create(logs.join("pipeline.log"))?;
    Ok(Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(config)
        .args(["pipeline", "coupon"])
        .env("SURGE_TOPICS__NAME_PREFIX", prefix)
        .env("SURGE_PIPELINES__COUPON__INSTANCE_ID", "bench")
        .env("SURGE_PIPELINES__COUPON__METRICS_LISTEN", "127.0.0.1:0")
        .env("SURGE_PIPELINES__COUPON__INJECT_ABORT_RATIO", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?)
}

fn stop_child(child: &mut std::process::Child) {
    // SAFETY: signalling our own child, whose pid is valid until we wait on it.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

/// The pipeline's /metrics (address from its log).
async fn scrape(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let (_, rest) = text.rsplit_once("metrics and health address=")?;
    let addr = rest.split_whitespace().next()?;
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The first sample whose series starts with `series` (0 when absent).
fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Peak resident set (VmHWM) of a process, in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({ "cores": cores, "os": std::env::consts::OS })
}

fn print_table(report: &Value) {
    println!(
        "surge bench ({} build, {} cores, commit interval {})",
        report["build"].as_str().unwrap_or(""),
        report["machine"]["cores"],
        report["commitInterval"].as_str().unwrap_or("")
    );
    println!(
        "{:<8} {:>14} {:>14} {:>14} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10}",
        "scenario",
        "copy ALOS/s",
        "surge EOS/s",
        "redis lock/s",
        "EOS/copy",
        "EOS/lock",
        "rate/s",
        "EOS p50",
        "EOS p99",
        "lock p99",
        "RSS MiB",
        "B/issued"
    );
    for s in report["scenarios"].as_array().into_iter().flatten() {
        let t = &s["throughput"];
        let l = &s["latency"];
        let m = &s["memory"];
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        println!("{:<8} {:>14.0} {:>14.0} {:>14.0} {:>9.2} {:>9.2} {:>10} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>9.1} {:>10.1}",
            s["scenario"].as_str().unwrap_or(""), f(&t["copyAtLeastOnce"]), f(&t["surgeExactlyOnce"]), f(&t["redisLock"]),
            f(&t["ratioSurgeToCopy"]), f(&t["ratioSurgeToRedisLock"]), l["offeredRate"], f(&l["surgeP50Ms"]), f(&l["surgeP99Ms"]),
            f(&l["redisLockP99Ms"]), f(&m["pipelinePeakRssBytes"]) / 1048576.0, f(&m["stateBytesPerIssuedUser"]));
        for (target, met) in s["targets"].as_object().into_iter().flatten() {
            println!(
                "    target {target:<40} {}",
                if met.as_bool() == Some(true) {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
    }
}
