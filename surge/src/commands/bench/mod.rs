//! `surge bench`: surge's performance claims measured side by side, in one
//! run, on the same machine and broker, for a `hot` (one coupon) and a
//! `spread` (many coupons) sale of the same generated requests:
//!
//! 1. the ceiling — an at-least-once consume→produce copy (no state, no
//!    transactions);
//! 2. the surge coupon pipeline, exactly once (the real `surge pipeline
//!    coupon` process);
//! 3. the design it replaces — a Redis lock per coupon around
//!    check-decrement-add, driven by many concurrent clients.
//!
//! Throughput is requests handled per second. For 1 and 2 it is counted the
//! same way, on the same preloaded backlog: a read_committed consumer reads
//! the output until every request is accounted for, and the backlog's size is
//! divided by the time from the start of processing (the first output
//! record's producer timestamp) to the moment the last output record was
//! visible to that consumer. Start-up of either (group join, state restore)
//! is not counted against it; the commit of the last transaction is. For 3
//! it is requests over the wall time of the clients. Then latency at a fixed offered rate, peak RSS, and state bytes per
//! issued user (its own run, see `state`). Prints the figures with the
//! ratios and the targets, writes JSON and an SVG chart. Targets are
//! reported, never asserted.
//!
//! `--scenario payments` (not run by default) measures the payment pipeline
//! behind a provider with 50 ms latency instead (see `payments`), and
//! `--scenario orders` the whole order saga against a Redis lock per
//! product, at 0 and 50 ms provider latency (see `orders`). `--scenario
//! history` replays a long sale (10 million requests whose log times span
//! 50 dedupe windows) to show state and restore time staying flat as
//! history grows (see `history`).

mod chart;
mod children;
mod copy;
mod gateway;
mod history;
mod latency;
mod orders;
mod payments;
mod pipeline;
mod redis_lock;
mod redis_lock_orders;
mod report;
mod sandbox;
mod state;
mod visible;
mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use surge_core::Settings;
use surge_coupon::scenario::Scenario;
use surge_schemas::coupon::CouponCommand;
use surge_schemas::Contract;

use super::loadgen;
use latency::Latency;
use redis_lock::Design;
use sandbox::{Sandbox, COPY_TOPIC};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run, side by side.
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
    /// Coupons in the spread scenario (and in the state run).
    #[arg(long, default_value_t = 50)]
    coupons: usize,
    /// Concurrent clients of the Redis-lock design.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Requests in flight through the gateway (after the hot scenario, the
    /// same sale over HTTP).
    #[arg(long, default_value_t = 256)]
    gateway_concurrency: usize,
    /// Requests per call of the gateway's batched run (`POST
    /// /coupon-requests`, the same requests with fresh ids); 0 skips it.
    #[arg(long, default_value_t = 100)]
    gateway_batch: usize,
    /// Batch calls in flight in the batched run (16 × 100 keeps this
    /// machine's two cores busy; 8 leave the gateway waiting on acks, 32
    /// only add contention).
    #[arg(long, default_value_t = 16)]
    gateway_batch_concurrency: usize,
    /// Offered rate of the latency runs, requests/s (default: half the
    /// pipeline maximum measured in the same scenario).
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds of traffic in each latency run.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Distinct users of the state run (a spread sale where every request
    /// issues) that measures state bytes per issued user; 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    state_users: usize,
    /// The JSON result; the SVG chart is written next to it (same name,
    /// .svg) and the pipelines' logs in folders beside them.
    #[arg(long, default_value = "target/bench/bench.json")]
    out: PathBuf,
    /// Payment requests of the payments scenario (its sequential baseline
    /// gets a twentieth of them, at least 50).
    #[arg(long, default_value_t = 5_000)]
    payments: usize,
    /// Orders of the orders scenario's throughput run (its latency run gets
    /// `--latency-seconds` of them at half the measured rate).
    #[arg(long, default_value_t = 20_000)]
    orders: usize,
    /// Distinct users of the orders scenario (half of them ask for a coupon).
    #[arg(long, default_value_t = 5_000)]
    order_users: usize,
    /// Products of the orders scenario.
    #[arg(long, default_value_t = 20)]
    order_products: usize,
    /// Requests of the history scenario.
    #[arg(long, default_value_t = 10_000_000)]
    history_requests: usize,
    /// Dedupe windows (one minute each) the history scenario's log times span.
    #[arg(long, default_value_t = 50)]
    history_windows: u32,
    /// Seed of the generated requests (the same for every design).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Tiny sizes: checks the whole path in seconds (the figures mean nothing).
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Hot,
    Spread,
    /// Payment throughput behind a 50 ms provider (pg-sim).
    Payments,
    /// The order saga end to end vs a Redis lock per product, pg-sim at 0 and 50 ms.
    Orders,
    /// State bytes and restore time after a long history (many dedupe windows).
    History,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Hot => "hot",
            Kind::Spread => "spread",
            Kind::Payments => "payments",
            Kind::Orders => "orders",
            Kind::History => "history",
        }
    }
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
        args.gateway_concurrency = args.gateway_concurrency.min(16);
        args.state_users = args.state_users.min(2_000);
        args.payments = args.payments.min(300);
        args.orders = args.orders.min(400);
        args.order_users = args.order_users.min(200);
        args.order_products = args.order_products.min(5);
        args.history_requests = args.history_requests.min(20_000);
        args.history_windows = args.history_windows.min(5);
    }
    let out_dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&out_dir)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let broker = broker_census(settings).await;
    let mut scenarios = Vec::new();
    let mut payments = Value::Null;
    let mut orders = Value::Null;
    let mut history = Value::Null;
    for kind in args.scenario.clone() {
        if kind == Kind::History {
            let sizes = history::HistoryArgs {
                requests: args.history_requests,
                windows: args.history_windows,
                coupons: args.coupons.max(1) * 2,
                stock: args.stock,
                users: (args.history_requests / 10).max(1),
                seed: args.seed,
                restores: if args.quick { 2 } else { 6 },
            };
            history = history::run(settings, config, &out_dir, &run_id, &sizes).await?;
            continue;
        }
        if kind == Kind::Payments {
            payments = payments::run(settings, config, &out_dir, &run_id, args.payments).await?;
            continue;
        }
        if kind == Kind::Orders {
            let sizes = orders::OrderArgs {
                orders: args.orders,
                users: args.order_users,
                products: args.order_products,
                clients: args.clients,
                rate: args.rate,
                latency_seconds: args.latency_seconds,
                seed: args.seed,
            };
            orders = orders::run(settings, config, &out_dir, &run_id, &sizes).await?;
            continue;
        }
        scenarios.push(scenario(&args, kind, settings, config, &out_dir, &run_id).await?);
    }
    // The front door, on the hot sale, against the pipeline's hot rate.
    let gateway = match scenarios.iter().find(|s| s["scenario"] == "hot") {
        Some(hot) => {
            let pipeline_rate = hot["throughput"]["surgeExactlyOnce"]
                .as_f64()
                .unwrap_or(0.0);
            gateway_run(&args, settings, config, &out_dir, &run_id, pipeline_rate).await?
        }
        None => Value::Null,
    };
    // The state run measures the coupon pipeline: not for a payments-only run.
    let state = if args.state_users > 0 && !scenarios.is_empty() {
        let s = state::run(
            settings,
            config,
            &out_dir,
            &run_id,
            args.state_users,
            args.coupons,
            args.seed,
        )
        .await?;
        Some(s)
    } else {
        None
    };
    let mut report = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine(),
        "brokerBefore": broker,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "commitIntervalMs": settings.pipelines.coupon.commit_interval.as_secs_f64() * 1000.0,
        "scenarios": scenarios,
        "state": state,
        "gateway": gateway,
        "payments": payments,
        "orders": orders,
        "history": history,
    });
    let mut targets = report::targets(&report);
    if let Some(all) = targets.as_array_mut() {
        all.extend(payments::targets(&report["payments"]));
    }
    report["targets"] = targets;
    report::print(&report);
    payments::print(&report["payments"]);
    orders::print(&report["orders"]);
    history::print(&report["history"]);
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    let svg = args.out.with_extension("svg");
    std::fs::write(&svg, chart::svg(&report))?;
    println!("wrote {} and {}", args.out.display(), svg.display());
    Ok(ExitCode::SUCCESS)
}

async fn scenario(
    args: &BenchArgs,
    kind: Kind,
    settings: &Settings,
    config: &Path,
    out_dir: &Path,
    run_id: &str,
) -> anyhow::Result<Value> {
    let name = kind.name();
    let (sandbox, logs) = Sandbox::for_step(settings, run_id, name, out_dir).await?;
    say(format!("{name}: topics under {}*", sandbox.prefix()));
    let sale = sale(args, kind, format!("b{run_id}"));
    let records = sale.coupons + sale.requests;
    // One decision per distinct request id (retries get none).
    let distinct = sale
        .commands()
        .map(|c| c.request_id)
        .collect::<HashSet<_>>()
        .len();
    say(format!(
        "{name}: preloading {records} records into {}",
        sandbox.topic(CouponCommand::TOPIC)
    ));
    loadgen::kafka::send(&sale, 0, &sandbox.settings).await?;

    say(format!("{name}: 1/4 at-least-once copy"));
    let copy_rate = copy_backlog(&sandbox, records).await?;

    say(format!("{name}: 2/4 surge coupon pipeline (exactly once)"));
    let (decided, pipeline) = pipeline::decide_backlog(&sandbox, config, &logs, distinct).await?;
    let backlog = pipeline.settled_figures().await;
    // Requests handled per second, like the copy and the lock design: the
    // pipeline read every request of the backlog in that span, retries
    // included, though a retry gets no second decision on coupon-result.
    let eos_rate = records as f64 / decided.span_seconds();
    let rate = args.rate.unwrap_or(((eos_rate / 2.0) as u64).max(10));
    let lat_sale = Scenario {
        prefix: format!("l{run_id}"),
        requests: (rate * args.latency_seconds).max(10) as usize,
        ..sale.clone()
    };
    say(format!(
        "{name}: latency of the pipeline at {rate}/s for {} s",
        args.latency_seconds
    ));
    let csv = logs.join("latency.csv");
    let surge_latency = latency::pipeline(&sandbox, &lat_sale, rate, &csv).await;
    let after = pipeline.settled_figures().await;
    pipeline.stop();
    let surge_latency = surge_latency?;
    sandbox.drop_topics().await;

    say(format!(
        "{name}: 3/4 Redis lock per coupon, {} clients",
        args.clients
    ));
    let ns = format!("bench:{run_id}:{name}");
    let lock = redis_design(
        settings,
        &ns,
        &sale,
        &lat_sale,
        args.clients,
        rate,
        Design::Lock,
    )
    .await?;
    say(format!(
        "{name}: 4/4 atomic Lua decision on Redis, {} clients",
        args.clients
    ));
    let lua = redis_design(
        settings,
        &format!("{ns}:lua"),
        &sale,
        &lat_sale,
        args.clients,
        rate,
        Design::AtomicLua,
    )
    .await?;
    for (design, run) in [("lock", &lock), ("atomic-Lua", &lua)] {
        if run.issued as f64 != backlog.issued {
            say(format!(
                "{name}: note: the {design} design issued {} units, the pipeline {}",
                run.issued, backlog.issued
            ));
        }
    }
    let (lock_rate, lua_rate) = (lock.rate, lua.rate);
    // Commits during the latency run only: what a request waits behind.
    let commits = after.commits - backlog.commits;
    let mean_commit_ms = if commits > 0.0 {
        (after.commit_seconds - backlog.commit_seconds) / commits * 1000.0
    } else {
        0.0
    };
    Ok(json!({
        "scenario": name,
        "coupons": sale.coupons,
        "stock": sale.stock,
        "users": sale.users,
        "requests": sale.requests,
        "distinctRequests": distinct,
        "throughput": {
            "copyAtLeastOnce": copy_rate,
            "surgeExactlyOnce": eos_rate,
            "redisLock": lock_rate,
            "redisAtomicLua": lua_rate,
            "surgeDecisionsPerSecond": decided.rate(),
            // Every request of the backlog is decided (a retry as one), by
            // the whole process, its start-up and librdkafka's threads included.
            "surgeCpuSeconds": backlog.cpu_seconds,
            "surgeRequestsPerCpuSecond": records as f64 / backlog.cpu_seconds.max(1e-9),
            "ratioSurgeToCopy": eos_rate / copy_rate,
            "ratioSurgeToRedisLock": eos_rate / lock_rate,
            "ratioSurgeToRedisAtomicLua": eos_rate / lua_rate,
        },
        "latency": {
            "offeredRate": rate,
            "surge": surge_latency.json(),
            "surgeMeanCommitMs": mean_commit_ms,
            // How batches closed: full batches mean the pipeline ran behind
            // its input; small ones that it kept up and committed early.
            "surgeCommits": commits,
            "surgeRecordsPerCommit": if commits > 0.0 { lat_sale.requests as f64 / commits } else { 0.0 },
            "redisLock": lock.latency,
            "redisAtomicLua": lua.latency,
        },
        "memory": {
            "pipelinePeakRssBytes": after.peak_rss_bytes,
            "stateBytes": backlog.state_bytes,
            "issued": backlog.issued,
            "stateBytesPerIssuedUser": backlog.state_bytes / backlog.issued.max(1.0),
        },
        "redisLockRetries": lock.retries,
        "redisLockIssued": lock.issued,
        "redisAtomicLuaIssued": lua.issued,
    }))
}

/// The generated sale of a coupon scenario: the same requests for every design.
fn sale(args: &BenchArgs, kind: Kind, prefix: String) -> Scenario {
    Scenario {
        prefix,
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
    }
}

/// `surge gateway` on a sandbox of its own, taking the hot sale over HTTP.
async fn gateway_run(
    args: &BenchArgs,
    settings: &Settings,
    config: &Path,
    out_dir: &Path,
    run_id: &str,
    pipeline_hot_rate: f64,
) -> anyhow::Result<Value> {
    let (sandbox, logs) = Sandbox::for_step(settings, run_id, "gateway", out_dir).await?;
    say(format!(
        "gateway: the hot sale over HTTP, topics under {}*",
        sandbox.prefix()
    ));
    let sale = sale(args, Kind::Hot, format!("g{run_id}"));
    let load = gateway::Load {
        concurrency: args.gateway_concurrency,
        batch_size: args.gateway_batch,
        batch_concurrency: args.gateway_batch_concurrency,
    };
    let figures = gateway::run(&sandbox, config, &logs, &sale, &load, pipeline_hot_rate).await;
    sandbox.drop_topics().await;
    figures
}

/// One Redis design's figures: its throughput on the scenario, its latency
/// at the pipeline's offered rate.
struct RedisFigures {
    rate: f64,
    issued: usize,
    retries: usize,
    latency: Value,
}

async fn redis_design(
    settings: &Settings,
    ns: &str,
    sale: &Scenario,
    lat_sale: &Scenario,
    clients: usize,
    rate: u64,
    design: Design,
) -> anyhow::Result<RedisFigures> {
    let url = &settings.redis.url;
    let full = redis_lock::run(url, ns, sale, clients, 0, design).await?;
    let timed = redis_lock::run(url, &format!("{ns}:lat"), lat_sale, clients, rate, design).await?;
    let achieved = timed.requests as f64 / timed.seconds;
    let offered = Latency::from_samples(rate, achieved, timed.offered_latencies_ms);
    let mut latency = Latency::from_samples(rate, achieved, timed.latencies_ms).json();
    latency["fromOfferedP50Ms"] = json!(offered.p50_ms);
    latency["fromOfferedP99Ms"] = json!(offered.p99_ms);
    Ok(RedisFigures {
        rate: full.requests as f64 / full.seconds,
        issued: full.issued,
        retries: full.lock_retries,
        latency,
    })
}

/// The ceiling on the backlog: copies coupon-issue to the scratch topic
/// ([`copy::passes`] times over, for a steady figure) and returns
/// records/s, counted like the pipeline's output.
async fn copy_backlog(sandbox: &Sandbox, backlog: usize) -> anyhow::Result<f64> {
    let passes = copy::passes(backlog);
    let records = backlog * passes;
    say(format!(
        "copy: {passes} passes over the backlog, {records} records"
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let copier = {
        let (f, from, partitions, to, stop) = (
            sandbox.factory.clone(),
            sandbox.topic(CouponCommand::TOPIC),
            sandbox.partitions,
            sandbox.topic(COPY_TOPIC),
            stop.clone(),
        );
        std::thread::spawn(move || copy::run(&f, &from, partitions, passes, &to, stop))
    };
    let copied = watch::count(sandbox, &sandbox.topic(COPY_TOPIC), records, "copy").await;
    stop.store(true, Ordering::Relaxed);
    copier
        .join()
        .map_err(|_| anyhow::anyhow!("copier panicked"))??;
    let copied = copied?;
    if copied.records < records {
        bail!(
            "the copy made {} of {records} records visible",
            copied.records
        );
    }
    Ok(copied.rate())
}

/// A progress line on stderr (stdout carries the report).
fn say(what: String) {
    eprintln!("[bench] {what}");
}

/// What the broker already holds before the run. Every partition is open
/// files, indexes and metrics on its heap: a dev broker left with thousands
/// of partitions by earlier test runs decided 119k/s where a clean one
/// decided 202k/s on the same spread sale, so the report says what it ran on.
async fn broker_census(settings: &Settings) -> Value {
    let factory = surge_kafka::ClientFactory::new(settings.kafka.clone());
    let census = tokio::task::spawn_blocking(move || -> anyhow::Result<(usize, usize)> {
        let admin = factory.admin()?;
        let md = admin
            .inner()
            .fetch_metadata(None, std::time::Duration::from_secs(10))?;
        let partitions = md.topics().iter().map(|t| t.partitions().len()).sum();
        Ok((md.topics().len(), partitions))
    })
    .await;
    match census {
        Ok(Ok((topics, partitions))) => {
            if partitions > 1_000 {
                say(format!(
                    "note: the broker already holds {topics} topics, {partitions} partitions; \
                     their heap and CPU weigh on every figure (`surge topics drop` removes a \
                     scratch prefix's topics)"
                ));
            }
            json!({ "topics": topics, "partitions": partitions })
        }
        _ => Value::Null,
    }
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({ "cores": cores, "os": std::env::consts::OS })
}
