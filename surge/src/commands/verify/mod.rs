//! `surge verify`: proves the coupon invariants of DESIGN.md from the
//! outside. From the topics, as any read_committed consumer sees them
//! (1–4): every request on coupon-issue has exactly one decision on
//! coupon-result, no coupon is oversold or leaks stock, no user holds a
//! coupon twice, and the units went to the first distinct users in the log
//! order. From the stores (6): PostgreSQL and Redis hold exactly what
//! coupon-result says. With `--orders`, invariant 5 instead (see
//! `orders.rs`). Exits 0 only if all hold.

pub(crate) mod orders;
mod stores;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use surge_core::{Names, Settings};
use surge_coupon::audit::{audit, Logged};
use surge_coupon::stores::{compare, StoreView};
use surge_kafka::{ClientFactory, TopicReader};
use surge_schemas::coupon::{CouponCommand, CouponDecision};
use surge_schemas::{Contract, Registry, TopicCodec};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only coupons whose id starts with this (e.g. one loadgen run's `flash-1a2b3c4d`).
    #[arg(long)]
    coupons: Option<String>,
    /// Wait up to this many seconds for requests still without a decision
    /// and for the stores to catch up with the topic.
    #[arg(long, default_value_t = 0)]
    wait: u64,
    /// Stores to compare with coupon-result (invariant 6).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "postgres,redis"
    )]
    stores: Vec<Store>,
    /// Check the topics only (no store is running, or none is wanted).
    #[arg(long, conflicts_with = "stores")]
    no_stores: bool,
    /// Check the order half instead (invariant 5): order-create,
    /// order-cancel, order-status, payment-request, inventory-result and
    /// coupon-result, and the payment provider's ledger.
    #[arg(long)]
    orders: bool,
    /// With --orders: the PostgreSQL schema of pg-sim's ledger (default
    /// [pg_sim] schema) ...
    #[arg(long, requires = "orders")]
    ledger_schema: Option<String>,
    /// ... or skip the money checks (a provider other than pg-sim).
    #[arg(long, requires = "orders", conflicts_with = "ledger_schema")]
    no_ledger: bool,
}

impl VerifyArgs {
    /// One run's coupons (`prefix`), waiting up to `wait` seconds, checking `stores`.
    pub fn for_run(prefix: &str, wait: u64, stores: Vec<Store>) -> Self {
        Self {
            coupons: Some(prefix.to_string()),
            wait,
            no_stores: stores.is_empty(),
            stores,
            orders: false,
            ledger_schema: None,
            no_ledger: false,
        }
    }
}

impl VerifyArgs {
    /// The order half (invariant 5) with pg-sim's ledger under its
    /// configured schema, waiting up to `wait` seconds, checking `stores`.
    pub fn for_orders(wait: u64, stores: Vec<Store>) -> Self {
        Self {
            coupons: None,
            wait,
            no_stores: stores.is_empty(),
            stores,
            orders: true,
            ledger_schema: None,
            no_ledger: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Store {
    Postgres,
    Redis,
}

pub async fn run(args: VerifyArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    if args.orders {
        let ledger = (!args.no_ledger).then(|| orders::Ledger {
            postgres_url: settings.postgres.url.clone(),
            schema: args
                .ledger_schema
                .clone()
                .unwrap_or_else(|| settings.pg_sim.schema.clone()),
        });
        let stores = if args.no_stores {
            Vec::new()
        } else {
            args.stores.clone()
        };
        return orders::run(settings, args.wait, ledger, stores).await;
    }
    let names = Names::from_settings(settings);
    let registry = Registry::new(&settings.registry.url);
    let commands =
        TopicCodec::<CouponCommand>::connect(&registry, &names.subject(CouponCommand::TOPIC))
            .await?;
    let results =
        TopicCodec::<CouponDecision>::connect(&registry, &names.subject(CouponDecision::TOPIC))
            .await?;
    let factory = ClientFactory::new(settings.kafka.clone());
    let wanted = |coupon: &str| {
        args.coupons
            .as_deref()
            .is_none_or(|p| coupon.starts_with(p))
    };

    let mut input = TopicReader::open(
        &factory,
        &names.topic(CouponCommand::TOPIC),
        Duration::from_secs(10),
    )?;
    let mut log: Vec<(i32, i64, CouponCommand)> = Vec::new();
    let mut undecodable = 0usize;
    for r in input.read_available(Duration::from_secs(120))? {
        match commands.decode(r.payload.as_deref()).await {
            Ok(c) if wanted(&c.coupon_id) => log.push((r.partition, r.offset, c)),
            Ok(_) => {}
            Err(_) => undecodable += 1, // the pipeline's dead-letter topic has these
        }
    }
    log.sort_by_key(|(p, o, _)| (*p, *o));
    // A request is a request id within its coupon.
    let requested: std::collections::HashSet<(String, String)> = log
        .iter()
        .map(|(_, _, c)| (c.coupon_id.clone(), c.request_id.clone()))
        .collect();
    eprintln!(
        "[verify] coupon-issue: {} records ({} distinct requests), {undecodable} undecodable",
        log.len(),
        requested.len()
    );

    let mut output = TopicReader::open(
        &factory,
        &names.topic(CouponDecision::TOPIC),
        Duration::from_secs(10),
    )?;
    let mut decisions: Vec<CouponDecision> = Vec::new();
    let mut decided: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let mut undecodable_results = 0usize;
    loop {
        for r in output.read_available(Duration::from_secs(60))? {
            let d = match results.decode(r.payload.as_deref()).await {
                Ok(d) => d,
                Err(e) if e.is_poison() => {
                    // Not a decision of this contract (e.g. written against an
                    // older registry): it cannot belong to the requests checked.
                    if undecodable_results == 0 {
                        eprintln!("[verify] coupon-result {}/{}: undecodable ({e}); counting such records", r.partition, r.offset);
                    }
                    undecodable_results += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if wanted(&d.coupon_id) {
                decided.insert((d.coupon_id.clone(), d.request_id.clone()));
                decisions.push(d);
            }
        }
        let pending = requested.iter().filter(|r| !decided.contains(*r)).count();
        if pending == 0 || Instant::now() >= deadline {
            break;
        }
        eprintln!(
            "[verify] waiting: {pending} request(s) not decided yet ({} decisions so far)",
            decisions.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // A record on a partition that does not own its coupon is forwarded to
    // the owner and decided there, at its copy's position (see
    // surge_coupon::audit). Copies forwarded while we waited are in the log
    // now (a decision is only ever taken on a committed copy): read them, so
    // FCFS is replayed in the order decided. Only requests already counted;
    // requests sent since are not this run's to check.
    let mut forwarded_late = 0usize;
    for r in input.read_available(Duration::from_secs(60))? {
        if let Ok(c) = commands.decode(r.payload.as_deref()).await {
            if wanted(&c.coupon_id)
                && requested.contains(&(c.coupon_id.clone(), c.request_id.clone()))
            {
                log.push((r.partition, r.offset, c));
                forwarded_late += 1;
            }
        }
    }
    if forwarded_late > 0 {
        eprintln!("[verify] coupon-issue: {forwarded_late} more records of those requests (forwarded copies) while waiting");
        log.sort_by_key(|(p, o, _)| (*p, *o));
    }

    let logged: Vec<Logged<'_>> = log
        .iter()
        .map(|(partition, offset, command)| Logged {
            partition: *partition,
            offset: *offset,
            command,
        })
        .collect();
    let mut report = audit(&logged, input.partitions(), &decisions);

    // 6. The stores equal the topic; they may still be catching up, so a
    // difference is only final once --wait has run out.
    let stores = if args.no_stores {
        vec![]
    } else {
        args.stores.clone()
    };
    let expected = StoreView::from_topic(&decisions);
    let prefix = args.coupons.as_deref().unwrap_or("");
    let mut checked = Vec::new();
    for store in stores {
        loop {
            let (name, view) = match store {
                Store::Postgres => (
                    "postgres",
                    stores::postgres(&settings.postgres.url, prefix).await?,
                ),
                Store::Redis => (
                    "redis",
                    stores::redis(
                        &settings.redis.url,
                        &surge_redis::Keyspace::new(&settings.redis.keyspace),
                        prefix,
                    )
                    .await?,
                ),
            };
            let differences = compare(name, &expected, &view);
            if differences.is_empty() || Instant::now() >= deadline {
                eprintln!(
                    "[verify] {name}: {} coupons, {} decisions, {} holders{}",
                    view.coupons.len(),
                    view.decisions.len(),
                    view.holders.len(),
                    if differences.is_empty() {
                        " — equal to the topic"
                    } else {
                        ""
                    }
                );
                report.violations.extend(differences);
                checked.push(name);
                break;
            }
            eprintln!(
                "[verify] waiting: {name} differs from the topic ({})",
                differences[0]
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    println!("requests   {}", report.requests);
    println!("decisions  {}", report.decisions);
    if undecodable_results > 0 {
        println!("undecodable coupon-result records (not counted): {undecodable_results}");
    }
    println!("coupons    {}", report.coupons);
    for (outcome, n) in &report.by_outcome {
        println!("  {outcome:<15} {n}");
    }
    if report.holds() {
        let stores = if checked.is_empty() {
            String::new()
        } else {
            format!(", {} equal to the topic", checked.join(" and "))
        };
        println!("verify: OK — one decision per request, no oversell, no leaked stock, one unit per user, first come first served{stores}");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("verify: FAILED — {} violation(s):", report.violations.len());
        for v in &report.violations {
            println!("  {v}");
        }
        Ok(ExitCode::from(1))
    }
}
