//! `surge sink <name>`: keep a store equal to a result topic, exactly once.
//!
//! Exit codes: 0 after SIGTERM/SIGINT (the batch in hand is written first),
//! 1 on a fatal error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use surge_core::service::run_blocking_loop;
use surge_core::shutdown::Shutdown;
use surge_core::Settings;
use surge_kafka::ClientFactory;
use surge_postgres::sink::SinkMetrics;
use surge_postgres::{run_sink, SinkExit, SinkSpec};
use surge_schemas::coupon::CouponDecision;
use surge_schemas::{Registry, TopicCodec};

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Which store.
    #[arg(value_enum)]
    name: SinkName,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SinkName {
    /// coupon-result → PostgreSQL tables coupons, issued_coupons, coupon_decisions.
    Postgres,
}

pub async fn run(args: SinkArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    match args.name {
        SinkName::Postgres => run_postgres(settings).await,
    }
}

async fn run_postgres(settings: &Settings) -> anyhow::Result<ExitCode> {
    let prefix = &settings.topics.name_prefix;
    let sink_settings = settings.sinks.postgres.clone();
    let spec = SinkSpec {
        name: format!("{prefix}postgres"),
        topic: format!("{prefix}coupon-result"),
        group_id: sink_settings
            .group_id
            .clone()
            .unwrap_or_else(|| format!("{prefix}surge-sink-postgres")),
        settings: sink_settings,
    };
    let shutdown = Shutdown::on_signals();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(settings.postgres.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&settings.postgres.url)
        .context("postgres URL")?;
    // Migrations are embedded and applied at start (retried while PostgreSQL comes up).
    let mut attempt = 0u32;
    loop {
        match surge_postgres::MIGRATOR.run(&pool).await {
            Ok(()) => break,
            Err(e) if attempt < 30 && !shutdown.is_triggered() => {
                tracing::warn!(message = "migrations not applied yet; retrying", error = %e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                attempt += 1;
            }
            Err(e) => return Err(e).context("applying migrations"),
        }
    }
    let registry = Registry::new(&settings.registry.url);
    let codec = TopicCodec::<CouponDecision>::connect(&registry)
        .await
        .context("registry: coupon-result schema")?;

    let prometheus = prometheus::Registry::new_custom(
        Some("surge".into()),
        Some([("sink".to_string(), "postgres".to_string())].into()),
    )?;
    let metrics = SinkMetrics::new(&prometheus);
    let factory = ClientFactory::new(settings.kafka.clone());
    let runtime = tokio::runtime::Handle::current();
    let listen = spec.settings.metrics_listen;
    let exit = run_blocking_loop(
        "postgres-sink",
        listen,
        prometheus,
        metrics.last_poll.clone(),
        shutdown,
        move |stop| run_sink(spec, factory, pool, codec, runtime, stop, metrics),
    )
    .await
    .with_context(|| format!("serving metrics on {listen}"))?;
    Ok(match exit {
        SinkExit::Shutdown => ExitCode::SUCCESS,
        SinkExit::Fatal(why) => {
            eprintln!("surge: fatal: {why}");
            ExitCode::FAILURE
        }
    })
}
