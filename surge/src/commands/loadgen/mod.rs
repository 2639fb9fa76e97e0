//! `surge loadgen`: a flash sale's traffic, sent the way upstream services
//! would — to coupon-issue directly (Kafka) or through the HTTP gateway.
//! Prints progress while it runs and writes a manifest that `surge verify`
//! and people can read afterwards.

pub mod gateway;
pub mod kafka;
pub mod orders;
pub mod traffic;

use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};
use surge_core::{Names, Settings};
use surge_schemas::coupon::CouponCommand;
use surge_schemas::Contract;

pub use traffic::Traffic;

#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    pub traffic: Traffic,
    /// Where requests go: `kafka` (coupon-issue) or `gateway` (HTTP API).
    #[arg(long, value_enum, default_value = "kafka")]
    pub target: Target,
    /// The gateway's base URL (target gateway); default: http://<[gateway] listen>.
    #[arg(long)]
    pub gateway_url: Option<String>,
    /// HTTP requests in flight (target gateway).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Where to write the manifest.
    #[arg(long, default_value = "target/loadgen-manifest.json")]
    pub manifest: std::path::PathBuf,
    /// Send an order sale of this many orders instead of a coupon sale
    /// (to Kafka or through the gateway; uses --users, --seed, --id-prefix
    /// and, for the gateway, --concurrency): products, a
    /// coupon sale, orders in waves and cancels (see surge_order::scenario).
    /// Check it with `surge verify --orders`.
    #[arg(long, default_value_t = 0)]
    pub orders: usize,
    /// Order sale: products on sale.
    #[arg(long, default_value_t = 40)]
    pub products: usize,
    /// Order sale: waves the orders are sent in (cancels come up to 8 waves later).
    #[arg(long, default_value_t = 20)]
    pub waves: usize,
    /// Order sale: pause between waves, in milliseconds.
    #[arg(long, default_value_t = 400)]
    pub wave_pause_ms: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Target {
    Kafka,
    Gateway,
}

pub async fn run(args: LoadgenArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let manifest = send(&args, settings).await?;
    if let Some(dir) = args.manifest.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&args.manifest, serde_json::to_string_pretty(&manifest)?)?;
    println!(
        "sent {} records in {:.1} s ({:.0}/s) via {}; ids {}-*; manifest {}",
        manifest["recordsSent"],
        manifest["seconds"].as_f64().unwrap_or(0.0),
        manifest["recordsPerSecond"].as_f64().unwrap_or(0.0),
        manifest["target"].as_str().unwrap_or(""),
        manifest["idPrefix"].as_str().unwrap_or(""),
        args.manifest.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Sends the traffic and returns its manifest (also used by `surge chaos`).
pub async fn send(args: &LoadgenArgs, settings: &Settings) -> anyhow::Result<serde_json::Value> {
    if args.orders > 0 {
        let scenario = surge_order::scenario::OrderScenario {
            prefix: args.traffic.id_prefix.clone().unwrap_or_else(|| {
                format!("sale-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
            }),
            orders: args.orders,
            users: args.traffic.users,
            products: args.products.max(1),
            waves: args.waves.max(1),
            seed: args.traffic.seed,
        };
        let gateway = (args.target == Target::Gateway).then(|| gateway::Gateway {
            url: args
                .gateway_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", settings.gateway.listen)),
            admin_token: settings.gateway.admin_token.clone(),
            concurrency: args.concurrency,
        });
        return orders::send(
            &scenario,
            std::time::Duration::from_millis(args.wave_pause_ms),
            settings,
            gateway.as_ref(),
        )
        .await;
    }
    let scenario = args.traffic.scenario();
    let target = match args.target {
        Target::Kafka => format!(
            "kafka:{}",
            Names::from_settings(settings).topic(CouponCommand::TOPIC)
        ),
        Target::Gateway => args
            .gateway_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", settings.gateway.listen)),
    };
    eprintln!(
        "[loadgen] {} scenario: {} coupon(s) × {} stock, {} users, {} requests ({}% retries){} → {target}",
        if scenario.coupons == 1 { "hot" } else { "spread" },
        scenario.coupons,
        scenario.stock,
        scenario.users,
        scenario.requests,
        (scenario.duplicate_ratio * 100.0).round(),
        if args.traffic.rate > 0 {
            format!(" at {}/s", args.traffic.rate)
        } else {
            String::new()
        }
    );
    let started = Instant::now();
    let (sent, unavailable) = match args.target {
        Target::Kafka => (
            kafka::send(&scenario, args.traffic.rate, settings).await?,
            0,
        ),
        Target::Gateway => {
            let gw = gateway::Gateway {
                url: target.clone(),
                admin_token: settings.gateway.admin_token.clone(),
                concurrency: args.concurrency,
            };
            let s = gateway::send(&scenario, args.traffic.rate, &gw).await?;
            (s.accepted, s.retried_unavailable)
        }
    };
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "scenario": if scenario.coupons == 1 { "hot" } else { "spread" },
        "target": target,
        "idPrefix": scenario.prefix,
        "coupons": scenario.coupon_ids().map(|id| serde_json::json!({"couponId": id, "stock": scenario.stock})).collect::<Vec<_>>(),
        "users": scenario.users,
        "requests": scenario.requests,
        "duplicateRatio": scenario.duplicate_ratio,
        "seed": scenario.seed,
        "offeredRate": args.traffic.rate,
        "recordsSent": sent,
        "retriedUnavailable": unavailable,
        "seconds": secs,
        "recordsPerSecond": sent as f64 / secs,
    }))
}
