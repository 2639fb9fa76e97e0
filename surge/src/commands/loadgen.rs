//! `surge loadgen`: a flash sale's traffic, produced to coupon-issue the way
//! upstream services would (idempotent producer, Avro, keyed by coupon).
//! Prints progress while it runs and writes a manifest that `surge verify`
//! and people can read afterwards.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use surge_core::Settings;
use surge_coupon::scenario::Scenario;
use surge_kafka::{produce_in_order, ClientFactory};
use surge_schemas::coupon::CouponCommand;
use surge_schemas::{Registry, TopicCodec};

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// `hot`: every request on one coupon; `spread`: requests over many coupons.
    #[arg(long, value_enum, default_value = "hot")]
    scenario: ScenarioKind,
    /// Coupons to create (spread only; hot always uses one).
    #[arg(long, default_value_t = 50)]
    coupons: usize,
    /// Stock of each coupon.
    #[arg(long, default_value_t = 1_000)]
    stock: i64,
    /// Distinct users asking.
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Issue requests to send (upstream retries included).
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Share of requests that re-send an earlier request id (upstream retries).
    #[arg(long, default_value_t = 0.05)]
    duplicate_ratio: f64,
    /// Requests per second to offer; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Prefix of coupon, request and user ids (default: a fresh `flash-<random>`).
    #[arg(long)]
    id_prefix: Option<String>,
    /// Where to write the manifest.
    #[arg(long, default_value = "target/loadgen-manifest.json")]
    manifest: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ScenarioKind {
    Hot,
    Spread,
}

pub async fn run(args: LoadgenArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let prefix = args
        .id_prefix
        .clone()
        .unwrap_or_else(|| format!("flash-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let scenario = Scenario {
        prefix: prefix.clone(),
        coupons: if args.scenario == ScenarioKind::Hot {
            1
        } else {
            args.coupons.max(1)
        },
        stock: args.stock,
        users: args.users,
        requests: args.requests,
        duplicate_ratio: args.duplicate_ratio,
        seed: args.seed,
    };
    let registry = Registry::new(&settings.registry.url);
    let codec = TopicCodec::<CouponCommand>::connect(&registry)
        .await
        .context("registry: coupon-issue schema")?;
    let producer = ClientFactory::new(settings.kafka.clone()).idempotent_producer("loadgen")?;
    let topic = format!("{}coupon-issue", settings.topics.name_prefix);
    let total = scenario.coupons + scenario.requests;
    eprintln!(
        "[loadgen] {} scenario: {} coupon(s) × {} stock, {} users, {} requests ({}% retries) → {topic}",
        if scenario.coupons == 1 { "hot" } else { "spread" },
        scenario.coupons,
        scenario.stock,
        scenario.users,
        scenario.requests,
        (scenario.duplicate_ratio * 100.0).round()
    );

    let started = Instant::now();
    let pace = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let mut encode_error = None;
    let records = scenario.commands().enumerate().map_while(|(i, c)| {
        if let Some(gap) = pace {
            // Offered rate: hold each record until its slot.
            let due = started + gap * i as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        match codec.encode(&c) {
            Ok(bytes) => Some((c.coupon_id, bytes)),
            Err(e) => {
                encode_error = Some(e);
                None
            }
        }
    });
    let mut last_report = Instant::now();
    let sent = produce_in_order(&producer, &topic, records, |acked| {
        if last_report.elapsed() >= Duration::from_secs(1) || acked == total {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "[loadgen] {acked:>9}/{total} acknowledged  {:>8.0}/s",
                acked as f64 / secs
            );
            last_report = Instant::now();
        }
    })
    .await?;
    if let Some(e) = encode_error {
        return Err(e.into());
    }
    let secs = started.elapsed().as_secs_f64();
    let manifest = serde_json::json!({
        "scenario": if scenario.coupons == 1 { "hot" } else { "spread" },
        "topic": topic,
        "idPrefix": prefix,
        "coupons": scenario.coupon_ids().map(|id| serde_json::json!({"couponId": id, "stock": scenario.stock})).collect::<Vec<_>>(),
        "users": scenario.users,
        "requests": scenario.requests,
        "duplicateRatio": scenario.duplicate_ratio,
        "seed": scenario.seed,
        "recordsSent": sent,
        "seconds": secs,
        "recordsPerSecond": sent as f64 / secs,
    });
    if let Some(dir) = args.manifest.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&args.manifest, serde_json::to_string_pretty(&manifest)?)?;
    println!(
        "sent {sent} records in {secs:.1} s ({:.0}/s); coupons {prefix}-*; manifest {}",
        sent as f64 / secs,
        args.manifest.display()
    );
    Ok(ExitCode::SUCCESS)
}
