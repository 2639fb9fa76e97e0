//! `surge chaos`: a flash sale while things break. Starts its own coupon
//! pipelines (with injected transaction aborts), sinks and, for the gateway
//! target, the gateway — with `--orders`, also the inventory, order and
//! payment pipelines and pg-sim with its faults on, and an order sale beside
//! the coupon sale; sends the traffic; meanwhile SIGKILLs (sometimes
//! SIGTERMs) random members at random moments and restarts them, and
//! hard-restarts Kafka brokers (one node at a time on a multi-node cluster)
//! through scripts/stack. Then runs `surge verify` (and `surge verify
//! --orders`) on what it sent. Prints every action and the verdict; exits 0
//! only when every verify passes.

mod fleet;
mod stall;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use surge_core::Settings;

use super::loadgen::{self, LoadgenArgs, Target, Traffic};
use super::verify::{self, Store, VerifyArgs};
use fleet::Member;

#[derive(Debug, Args)]
pub struct ChaosArgs {
    #[command(flatten)]
    traffic: Traffic,
    /// Where the traffic goes: `kafka` (coupon-issue) or `gateway` (chaos starts one).
    #[arg(long, value_enum, default_value = "kafka")]
    target: Target,
    /// HTTP requests in flight (target gateway).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Pipeline, sink or gateway processes to kill (each then restarted).
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Share of kills that are SIGTERM (graceful) instead of SIGKILL.
    #[arg(long, default_value_t = 0.2)]
    term_ratio: f64,
    /// Kafka broker hard restarts (SIGKILL, then start) via scripts/stack.
    #[arg(long, default_value_t = 0)]
    broker_restarts: usize,
    /// Probability that a pipeline aborts a batch instead of committing it.
    #[arg(long, default_value_t = 0.33, value_parser = crate::commands::loadgen::traffic::parse_ratio)]
    abort_ratio: f64,
    /// Coupon pipeline instances.
    #[arg(long, default_value_t = 2)]
    pipelines: usize,
    /// Sinks to run (and to check in verify).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "postgres,redis"
    )]
    sinks: Vec<Store>,
    /// Run no sink (verify then checks the topics only).
    #[arg(long, conflicts_with = "sinks")]
    no_sinks: bool,
    /// Mean time between kills; default: spread over the expected run.
    #[arg(long, value_parser = humantime::parse_duration)]
    kill_interval: Option<Duration>,
    /// How long verify may wait for the last decisions and the stores.
    #[arg(long, default_value_t = 600)]
    wait: u64,
    /// Seed of the chaos schedule (which member, when, which signal).
    #[arg(long, default_value_t = 7)]
    chaos_seed: u64,
    /// The stack script that can kill and start brokers.
    #[arg(long, default_value = "scripts/stack")]
    stack: PathBuf,
    /// Where members' logs go (a folder per run).
    #[arg(long, default_value = "target/chaos")]
    logs: PathBuf,
    /// Also run the order half: an order sale of this many orders beside the
    /// coupon sale, the inventory, order and payment pipelines and pg-sim
    /// among the members killed, then `surge verify --orders` (whose store
    /// checks compare whole tables: give the run its own database).
    #[arg(long, default_value_t = 0)]
    orders: usize,
    /// Products of the order sale.
    #[arg(long, default_value_t = 8)]
    products: usize,
    /// Waves of the order sale, `--wave-pause-ms` apart.
    #[arg(long, default_value_t = 10)]
    waves: usize,
    #[arg(long, default_value_t = 300)]
    wave_pause_ms: u64,
    /// pg-sim's faults (with --orders), as `name=value` of [pg_sim.faults]
    /// (repeatable); default: decline_ratio=0.1, latency_median_ms=20,
    /// error_after_ratio=0.05, timeout_after_ratio=0.02, conflict_ratio=0.02.
    #[arg(long = "pg-sim-fault", value_parser = parse_fault)]
    pg_sim_faults: Vec<(String, String)>,
}

fn parse_fault(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not name=value"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

const DEFAULT_FAULTS: [(&str, &str); 5] = [
    ("decline_ratio", "0.1"),
    ("latency_median_ms", "20"),
    ("error_after_ratio", "0.05"),
    ("timeout_after_ratio", "0.02"),
    ("conflict_ratio", "0.02"),
];

/// What happened, for the report.
#[derive(Default)]
struct Tally {
    sigkill: usize,
    sigterm: usize,
    broker_restarts: usize,
    supervisor_restarts: usize,
}

pub async fn run(args: ChaosArgs, settings: &Settings, config: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut traffic = args.traffic.clone();
    let prefix = traffic.scenario().prefix;
    traffic.id_prefix = Some(prefix.clone());
    let logs = args.logs.join(&prefix);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let brokers = settings.kafka.bootstrap_servers.split(',').count();
    if args.broker_restarts > 0 && !args.stack.exists() {
        bail!(
            "--broker-restarts needs the stack script, {} does not exist",
            args.stack.display()
        );
    }
    let sinks = if args.no_sinks {
        vec![]
    } else {
        args.sinks.clone()
    };
    let say = |what: String| eprintln!("[chaos] {:>7.1}s  {what}", started.elapsed().as_secs_f64());

    let pg_sim_port = free_port()?;
    let mut fleet = fleet_for(&args, &sinks, &logs, pg_sim_port);
    for m in &mut fleet {
        m.start(config)
            .with_context(|| format!("starting {}", m.name))?;
    }
    say(format!(
        "started {} ({} pipelines with abort ratio {}); logs in {}",
        fleet
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        args.pipelines,
        args.abort_ratio,
        logs.display()
    ));
    wait_until_serving(&mut fleet, settings, args.target).await?;
    say("every member serves /health; sending traffic".into());

    let loadgen_args = LoadgenArgs {
        traffic: traffic.clone(),
        target: args.target,
        gateway_url: None,
        concurrency: args.concurrency,
        manifest: logs.join("manifest.json"),
        orders: 0,
        products: 0,
        waves: 0,
        wave_pause_ms: 0,
    };
    let traffic_task = {
        let settings = settings.clone();
        tokio::spawn(async move { loadgen::send(&loadgen_args, &settings).await })
    };
    // The order sale beside it, under its own id prefix.
    let orders_task = (args.orders > 0).then(|| {
        let mut order_traffic = traffic.clone();
        // Not under the coupon sale's prefix: its coupons are the order
        // sale's own, checked by verify --orders, not by the coupon verify.
        order_traffic.id_prefix = Some(format!("orders-{prefix}"));
        let order_args = LoadgenArgs {
            traffic: order_traffic,
            target: args.target,
            gateway_url: None,
            concurrency: args.concurrency,
            manifest: logs.join("orders-manifest.json"),
            orders: args.orders,
            products: args.products,
            waves: args.waves,
            wave_pause_ms: args.wave_pause_ms,
        };
        let settings = settings.clone();
        tokio::spawn(async move { loadgen::send(&order_args, &settings).await })
    });

    // The schedule: kills and broker restarts interleaved, broker restarts
    // spread evenly among them.
    let events = args.kills + args.broker_restarts;
    let expected_secs = args.traffic.requests as f64
        / if args.traffic.rate > 0 {
            args.traffic.rate as f64
        } else {
            4_000.0
        };
    let interval = args.kill_interval.unwrap_or_else(|| {
        Duration::from_secs_f64((expected_secs / (events + 1) as f64).clamp(1.0, 30.0))
    });
    let broker_at: Vec<usize> = (1..=args.broker_restarts)
        .map(|i| i * events / (args.broker_restarts + 1))
        .collect();
    let mut rng = StdRng::seed_from_u64(args.chaos_seed);
    let mut tally = Tally::default();
    for event in 0..events {
        tokio::time::sleep(interval.mul_f64(rng.random_range(0.5..1.5))).await;
        tally.supervisor_restarts += supervise(&mut fleet, config, &say)?;
        if broker_at.contains(&event) {
            let node = rng.random_range(1..=brokers);
            say(format!("SIGKILL kafka-{node}"));
            stack(&args.stack, &["kill", &format!("kafka-{node}")]).await?;
            tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..4_000))).await;
            stack(&args.stack, &["up", &format!("kafka-{node}")]).await?;
            say(format!("kafka-{node} restarted"));
            tally.broker_restarts += 1;
            continue;
        }
        let victim = rng.random_range(0..fleet.len());
        let term = rng.random_bool(args.term_ratio.clamp(0.0, 1.0));
        let m = &mut fleet[victim];
        let pid = m.pid().unwrap_or(0);
        m.stop(if term { libc::SIGTERM } else { libc::SIGKILL });
        if term {
            tally.sigterm += 1;
        } else {
            tally.sigkill += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_500))).await;
        m.start(config)?;
        say(format!(
            "{} {} (pid {pid}); restarted as pid {}",
            if term { "SIGTERM" } else { "SIGKILL" },
            m.name,
            m.pid().unwrap_or(0)
        ));
    }

    let manifest = traffic_task.await.context("traffic task")??;
    say(format!(
        "traffic done: {} records sent ({} scenario, prefix {prefix})",
        manifest["recordsSent"], manifest["scenario"]
    ));
    if let Some(task) = orders_task {
        let manifest = task.await.context("order traffic task")??;
        say(format!(
            "order traffic done: {} records sent ({} orders, {} cancels)",
            manifest["recordsSent"], manifest["orders"], manifest["cancels"]
        ));
    }
    tally.supervisor_restarts += supervise(&mut fleet, config, &say)?;

    // A supervisor keeps restarting what dies while verify waits, as
    // systemd or Kubernetes would.
    let mut outcome = verify_supervised(
        VerifyArgs::for_run(&prefix, args.wait, sinks.clone()),
        settings,
        &mut fleet,
        config,
        &mut tally,
        &say,
    )
    .await?;
    if args.orders > 0 && matches!(outcome, Ok(ExitCode::SUCCESS)) {
        outcome = verify_supervised(
            VerifyArgs::for_orders(args.wait, sinks),
            settings,
            &mut fleet,
            config,
            &mut tally,
            &say,
        )
        .await?;
    }
    tally.supervisor_restarts += supervise(&mut fleet, config, &say)?;
    report(&fleet, &tally, started);
    if !matches!(outcome, Ok(ExitCode::SUCCESS)) {
        let settings = settings.clone();
        let with_orders = args.orders > 0;
        let text = tokio::task::spawn_blocking(move || stall::report(&settings, with_orders))
            .await
            .context("stall report")?;
        print!("{text}");
        print_member_warnings(&fleet);
    }
    for m in &mut fleet {
        m.stop(libc::SIGTERM);
    }
    let code = outcome?;
    println!(
        "chaos: {} — {} SIGKILL, {} SIGTERM, {} broker restart(s), then verify {}",
        if code == ExitCode::SUCCESS {
            "PASSED"
        } else {
            "FAILED"
        },
        tally.sigkill,
        tally.sigterm,
        tally.broker_restarts,
        if code == ExitCode::SUCCESS {
            "passed"
        } else {
            "failed"
        }
    );
    Ok(code)
}

/// A port nobody listens on now (pg-sim's, so parallel runs do not collide).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn fleet_for(args: &ChaosArgs, sinks: &[Store], logs: &Path, pg_sim_port: u16) -> Vec<Member> {
    let env = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let mut fleet = Vec::new();
    for i in 0..args.pipelines {
        fleet.push(Member::new(
            &format!("pipeline-{i}"),
            &["pipeline", "coupon"],
            env(&[
                ("SURGE_PIPELINES__COUPON__INSTANCE_ID", format!("chaos-{i}")),
                (
                    "SURGE_PIPELINES__COUPON__METRICS_LISTEN",
                    "127.0.0.1:0".into(),
                ),
                (
                    "SURGE_PIPELINES__COUPON__INJECT_ABORT_RATIO",
                    args.abort_ratio.to_string(),
                ),
            ]),
            logs,
        ));
    }
    for store in sinks {
        let (name, section) = match store {
            Store::Postgres => ("postgres", "POSTGRES"),
            Store::Redis => ("redis", "REDIS"),
        };
        fleet.push(Member::new(
            &format!("sink-{name}"),
            &["sink", name],
            env(&[
                (
                    &format!("SURGE_SINKS__{section}__INSTANCE_ID"),
                    "chaos-0".into(),
                ),
                (
                    &format!("SURGE_SINKS__{section}__METRICS_LISTEN"),
                    "127.0.0.1:0".into(),
                ),
            ]),
            logs,
        ));
    }
    if args.orders > 0 {
        // pg-sim first: the payment pipeline calls it from its first poll.
        let mut faults: Vec<(String, String)> = DEFAULT_FAULTS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .filter(|(k, _)| !args.pg_sim_faults.iter().any(|(n, _)| n == k))
            .collect();
        faults.extend(args.pg_sim_faults.iter().cloned());
        let mut pg_sim_env: Vec<(String, String)> = faults
            .into_iter()
            .map(|(k, v)| (format!("SURGE_PG_SIM__FAULTS__{}", k.to_uppercase()), v))
            .collect();
        pg_sim_env.push((
            "SURGE_PG_SIM__LISTEN".into(),
            format!("127.0.0.1:{pg_sim_port}"),
        ));
        fleet.insert(0, Member::new("pg-sim", &["pg-sim"], pg_sim_env, logs));
        for pipeline in ["inventory", "order", "payment"] {
            let section = pipeline.to_uppercase();
            let mut vars = vec![
                (
                    format!("SURGE_PIPELINES__{section}__INSTANCE_ID"),
                    "chaos-0".to_string(),
                ),
                (
                    format!("SURGE_PIPELINES__{section}__METRICS_LISTEN"),
                    "127.0.0.1:0".into(),
                ),
                (
                    format!("SURGE_PIPELINES__{section}__INJECT_ABORT_RATIO"),
                    args.abort_ratio.to_string(),
                ),
            ];
            if pipeline == "payment" {
                vars.push((
                    "SURGE_PAYMENT__URL".into(),
                    format!("http://127.0.0.1:{pg_sim_port}"),
                ));
            }
            fleet.push(Member::new(
                &format!("pipeline-{pipeline}"),
                &["pipeline", pipeline],
                vars,
                logs,
            ));
        }
    }
    if args.target == Target::Gateway {
        fleet.push(Member::new("gateway", &["gateway"], vec![], logs));
    }
    fleet
}

/// Waits until every member answers /health (the gateway on its API port).
async fn wait_until_serving(
    fleet: &mut [Member],
    settings: &Settings,
    target: Target,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for m in fleet.iter_mut() {
        loop {
            let address = if m.name == "gateway" && target == Target::Gateway {
                Some(settings.gateway.listen.to_string())
            } else {
                m.metrics_address()
            };
            if let Some(a) = address {
                let healthy = client
                    .get(format!("http://{a}/health"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if healthy {
                    break;
                }
            }
            if !m.check() {
                bail!("{} exited at start; see {}", m.name, m.log_path().display());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not healthy after 120 s; see {}",
                    m.name,
                    m.log_path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    Ok(())
}

/// The last warnings and errors surge itself logged in each member (not
/// librdkafka's connection noise), for a failed run's report.
fn print_member_warnings(fleet: &[Member]) {
    println!("the members' last warnings:");
    for m in fleet {
        let text = m.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                (l.contains(" WARN surge") || l.contains(" ERROR surge"))
                    && !l.contains("librdkafka")
            })
            .collect();
        for l in &lines[lines.len().saturating_sub(4)..] {
            let l: String = l.chars().take(300).collect();
            println!("  {}: {l}", m.name);
        }
    }
}

/// Runs verify while restarting members that die meanwhile.
async fn verify_supervised(
    verify_args: VerifyArgs,
    settings: &Settings,
    fleet: &mut [Member],
    config: &Path,
    tally: &mut Tally,
    say: &impl Fn(String),
) -> anyhow::Result<anyhow::Result<ExitCode>> {
    let settings = settings.clone();
    let mut task = tokio::spawn(async move { verify::run(verify_args, &settings).await });
    loop {
        tokio::select! {
            done = &mut task => return Ok(done.context("verify task")?),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                tally.supervisor_restarts += supervise(fleet, config, say)?;
            }
        }
    }
}

/// Restarts members that died on their own; returns how many.
fn supervise(fleet: &mut [Member], config: &Path, say: &impl Fn(String)) -> anyhow::Result<usize> {
    let mut restarted = 0;
    for m in fleet.iter_mut() {
        if !m.check() {
            let why = m.unexpected_exits.last().cloned().unwrap_or_default();
            m.start(config)?;
            say(format!(
                "{} had exited on its own ({why}); restarted",
                m.name
            ));
            restarted += 1;
        }
    }
    Ok(restarted)
}

async fn stack(script: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(script)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}",
            script.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// What the members' logs say happened, beside what chaos did.
fn report(fleet: &[Member], tally: &Tally, started: Instant) {
    let count = |prefix: &str, needle: &str| -> usize {
        fleet
            .iter()
            .filter(|m| m.name.starts_with(prefix))
            .map(|m| m.log_text().matches(needle).count())
            .sum()
    };
    println!("chaos report ({:.0} s)", started.elapsed().as_secs_f64());
    println!(
        "  kills               {} SIGKILL, {} SIGTERM",
        tally.sigkill, tally.sigterm
    );
    println!("  broker restarts     {}", tally.broker_restarts);
    println!(
        "  transactions        {} aborted on purpose, {} aborted for other reasons, {} producers recreated",
        count("pipeline", "reason=\"injected\""),
        count("pipeline", "aborting transaction") - count("pipeline", "reason=\"injected\""),
        count("pipeline", "recreating the")
    );
    println!(
        "  assignments         {} (each restored from the changelog before use)",
        count("pipeline", "partitions assigned and restored")
    );
    println!(
        "  fences              {} judged false and recovered in place, {} real (exit 3)",
        count("pipeline", "recovered in place from a fence"),
        count("pipeline", "this one is a zombie; stopping")
    );
    println!(
        "  sinks               {} store writes retried, {} rewinds",
        count("sink", "retrying the same batch"),
        count("sink", "rewinding to them")
    );
    for m in fleet {
        if !m.unexpected_exits.is_empty() {
            println!(
                "  {} exited on its own {} time(s): {}",
                m.name,
                m.unexpected_exits.len(),
                m.unexpected_exits.join(", ")
            );
        }
    }
    if tally.supervisor_restarts == 0 {
        println!("  no member exited on its own");
    }
}
