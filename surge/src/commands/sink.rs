//! `surge sink <store>`: keep a store equal to the result topics, exactly
//! once. One loop (surge-sink) per topic, each on its own thread with its
//! own consumer group; the store decides how a batch and its offsets are
//! written atomically. The first loop to end stops the others.
//!
//! Exit codes: 0 after SIGTERM/SIGINT (the batches in hand are written
//! first), 1 on a fatal error.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use surge_core::service::{run_blocking_loops, BlockingLoop};
use surge_core::settings::SinkSettings;
use surge_core::shutdown::Shutdown;
use surge_core::{Names, Settings};
use surge_kafka::ClientFactory;
use surge_postgres::{CouponResultRows, OrderStatusRows, PostgresStore, ProductStockRows};
use surge_redis::{CouponResultKeys, Keyspace, OrderStatusKeys, ProductStockKeys, RedisStore};
use surge_schemas::{Contract, Registry, TopicCodec};
use surge_sink::{run_sink, Mapping, SinkExit, SinkMetricFamilies, SinkSpec, SinkStore};

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Which store.
    #[arg(value_enum)]
    store: StoreName,
    /// Keep only these topics (repeatable); default: every result topic.
    #[arg(long = "topic", value_enum)]
    topics: Vec<Sunk>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreName {
    /// Tables coupons, issued_coupons, coupon_decisions (coupon-result);
    /// orders, order_lines, order_status_history (order-status);
    /// product_stock (inventory-result). Migrations applied at start.
    /// Settings: [sinks.postgres].
    Postgres,
    /// The Redis read cache (keys in README "The Redis sink"; rebuilt from
    /// the topics after a FLUSHALL). Settings: [sinks.redis].
    Redis,
}

/// The result topics a sink keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sunk {
    CouponResult,
    OrderStatus,
    InventoryResult,
}

const ALL: [Sunk; 3] = [Sunk::CouponResult, Sunk::OrderStatus, Sunk::InventoryResult];

pub async fn run(args: SinkArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::on_signals();
    let names = Names::from_settings(settings);
    let topics = if args.topics.is_empty() {
        ALL.to_vec()
    } else {
        args.topics.clone()
    };
    let (kind, sink) = match args.store {
        StoreName::Postgres => ("postgres", settings.sinks.postgres.clone()),
        StoreName::Redis => ("redis", settings.sinks.redis.clone()),
    };
    let job = Job {
        kind,
        name: names.sink(kind),
        sink,
        settings,
        families: SinkMetricFamilies::new(kind),
    };
    let mut loops = Vec::new();
    match args.store {
        StoreName::Postgres => {
            let pool = connect_postgres(settings, &shutdown).await?;
            let name = job.name.clone();
            let pg = || {
                (
                    pool.clone(),
                    name.as_str(),
                    tokio::runtime::Handle::current(),
                )
            };
            for t in &topics {
                let (pool, name, rt) = pg();
                loops.push(match t {
                    Sunk::CouponResult => {
                        job.sink_loop(PostgresStore::<CouponResultRows>::new(pool, name, rt))
                            .await?
                    }
                    Sunk::OrderStatus => {
                        job.sink_loop(PostgresStore::<OrderStatusRows>::new(pool, name, rt))
                            .await?
                    }
                    Sunk::InventoryResult => {
                        job.sink_loop(PostgresStore::<ProductStockRows>::new(pool, name, rt))
                            .await?
                    }
                });
            }
        }
        StoreName::Redis => {
            let keys = Keyspace::new(&settings.redis.keyspace);
            let url = settings.redis.url.as_str();
            for t in &topics {
                let k = keys.clone();
                loops.push(match t {
                    Sunk::CouponResult => {
                        job.sink_loop(RedisStore::<CouponResultKeys>::new(url, k)?)
                            .await?
                    }
                    Sunk::OrderStatus => {
                        job.sink_loop(RedisStore::<OrderStatusKeys>::new(url, k)?)
                            .await?
                    }
                    Sunk::InventoryResult => {
                        job.sink_loop(RedisStore::<ProductStockKeys>::new(url, k)?)
                            .await?
                    }
                });
            }
        }
    }
    let listen = job.sink.metrics_listen;
    let ended = run_blocking_loops(listen, job.families.registry.clone(), shutdown, loops)
        .await
        .with_context(|| format!("serving metrics on {listen}"))?;
    let fatal: Vec<String> = ended
        .into_iter()
        .filter_map(|e| match e {
            SinkExit::Shutdown => None,
            SinkExit::Fatal(why) => Some(why),
        })
        .collect();
    if fatal.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for why in fatal {
        eprintln!("surge: fatal: {why}");
    }
    Ok(ExitCode::FAILURE)
}

/// What every loop of one sink process shares.
struct Job<'s> {
    kind: &'static str,
    /// The sink's name in the store's offsets table.
    name: String,
    sink: SinkSettings,
    settings: &'s Settings,
    families: SinkMetricFamilies,
}

impl Job<'_> {
    /// The loop that keeps `S`'s topic in `store`.
    async fn sink_loop<S>(&self, store: S) -> anyhow::Result<BlockingLoop<SinkExit>>
    where
        S: SinkStore,
        <S::Batch as Mapping>::Value: Contract,
    {
        let base = <<S::Batch as Mapping>::Value as Contract>::TOPIC;
        let names = Names::from_settings(self.settings);
        let group = self
            .sink
            .group_id
            .clone()
            .unwrap_or_else(|| names.sink_group(self.kind));
        let spec = SinkSpec {
            name: self.name.clone(),
            topic: names.topic(base),
            group_id: group_for(&group, base),
            settings: self.sink.clone(),
        };
        let registry = Registry::new(&self.settings.registry.url);
        let subject = names.subject(base);
        let codec = TopicCodec::connect(&registry, &subject)
            .await
            .with_context(|| format!("registry: {subject} schema"))?;
        let metrics = self.families.topic(&spec.topic);
        let heartbeat = metrics.last_poll.clone();
        let factory = ClientFactory::new(self.settings.kafka.clone());
        let runtime = tokio::runtime::Handle::current();
        let store = Arc::new(store);
        Ok(BlockingLoop {
            name: format!("{}-sink-{base}", self.kind),
            heartbeat,
            body: Box::new(move |stop| {
                run_sink(spec, &factory, store, codec, runtime, stop, metrics)
            }),
        })
    }
}

/// coupon-result keeps the sink's group as configured (its offsets predate
/// the other topics); every other topic gets a group of its own, so one
/// topic's rebalance never pauses another's loop.
fn group_for(group: &str, base_topic: &str) -> String {
    if base_topic == surge_schemas::coupon::CouponDecision::TOPIC {
        group.to_string()
    } else {
        format!("{group}-{base_topic}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coupon_result_keeps_the_configured_group_and_the_others_get_their_own() {
        assert_eq!(
            group_for("surge-sink-postgres", "coupon-result"),
            "surge-sink-postgres"
        );
        assert_eq!(
            group_for("t1-surge-sink-redis", "order-status"),
            "t1-surge-sink-redis-order-status"
        );
    }
}
