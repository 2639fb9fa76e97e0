//! `surge sink <store>`: keep a store equal to coupon-result, exactly once.
//! One loop (surge-sink) for every store; the store decides how a batch and
//! its offsets are written atomically.
//!
//! Exit codes: 0 after SIGTERM/SIGINT (the batch in hand is written first),
//! 1 on a fatal error.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use surge_core::service::run_blocking_loop;
use surge_core::settings::SinkSettings;
use surge_core::shutdown::Shutdown;
use surge_core::{Names, Settings};
use surge_kafka::ClientFactory;
use surge_postgres::PostgresStore;
use surge_redis::{Keyspace, RedisStore};
use surge_schemas::coupon::CouponDecision;
use surge_schemas::{Contract, Registry, TopicCodec};
use surge_sink::{run_sink, SinkExit, SinkMetrics, SinkSpec, SinkStore};

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Which store.
    #[arg(value_enum)]
    store: StoreName,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreName {
    /// coupon-result → PostgreSQL tables coupons, issued_coupons, coupon_decisions
    /// (migrations applied at start). Settings: [sinks.postgres].
    Postgres,
    /// coupon-result → the Redis read cache (keys in README "The Redis sink";
    /// rebuilt from the topic after a FLUSHALL). Settings: [sinks.redis].
    Redis,
}

pub async fn run(args: SinkArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::on_signals();
    let names = Names::from_settings(settings);
    match args.store {
        StoreName::Postgres => {
            let sink = settings.sinks.postgres.clone();
            let name = names.sink("postgres");
            let pool = connect_postgres(settings, &shutdown).await?;
            let store = PostgresStore::new(pool, &name, tokio::runtime::Handle::current());
            run_store("postgres", name, store, sink, settings, shutdown).await
        }
        StoreName::Redis => {
            let sink = settings.sinks.redis.clone();
            let name = names.sink("redis");
            let store =
                RedisStore::new(&settings.redis.url, Keyspace::new(&settings.redis.keyspace))
                    .context("redis URL")?;
            run_store("redis", name, store, sink, settings, shutdown).await
        }
    }
}

/// A pool with the embedded migrations applied (retried while PostgreSQL comes up).
async fn connect_postgres(
    settings: &Settings,
    shutdown: &Shutdown,
) -> anyhow::Result<sqlx::PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(settings.postgres.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&settings.postgres.url)
        .context("postgres URL")?;
    let mut attempt = 0u32;
    loop {
        match surge_postgres::MIGRATOR.run(&pool).await {
            Ok(()) => return Ok(pool),
            Err(e) if attempt < 30 && !shutdown.is_triggered() => {
                tracing::warn!(message = "migrations not applied yet; retrying", error = %e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                attempt += 1;
            }
            Err(e) => return Err(e).context("applying migrations"),
        }
    }
}

async fn run_store<
    S: SinkStore<Batch: surge_sink::Mapping<Value = surge_schemas::coupon::CouponDecision>>,
>(
    kind: &str,
    name: String,
    store: S,
    sink: SinkSettings,
    settings: &Settings,
    shutdown: Shutdown,
) -> anyhow::Result<ExitCode> {
    let names = Names::from_settings(settings);
    let spec = SinkSpec {
        name,
        topic: names.topic(CouponDecision::TOPIC),
        group_id: sink
            .group_id
            .clone()
            .unwrap_or_else(|| names.sink_group(kind)),
        settings: sink,
    };
    let registry = Registry::new(&settings.registry.url);
    let subject = names.subject(CouponDecision::TOPIC);
    let codec = TopicCodec::<CouponDecision>::connect(&registry, &subject)
        .await
        .with_context(|| format!("registry: {subject} schema"))?;
    let metrics = SinkMetrics::new(kind);
    let factory = ClientFactory::new(settings.kafka.clone());
    let runtime = tokio::runtime::Handle::current();
    let listen = spec.settings.metrics_listen;
    let store = Arc::new(store);
    let exit = run_blocking_loop(
        &format!("{kind}-sink"),
        listen,
        metrics.registry.clone(),
        metrics.last_poll.clone(),
        shutdown,
        move |stop| run_sink(spec, &factory, store, codec, runtime, stop, metrics),
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
