//! `surge bench --scenario orders`: the order saga end to end against the
//! design it replaces, at two provider latencies (pg-sim at 0 and 50 ms).
//!
//! For each latency, on fresh topics (a [`Sandbox`]) and a pg-sim ledger of
//! its own, the real `surge pipeline coupon|inventory|order|payment` and
//! `surge pg-sim` run as child processes of this binary. An order flash sale
//! (`surge_order::scenario`, no cancels) is set up first — products, the
//! coupons and their coupon sale, every one decided before the clock
//! starts — then:
//!
//! 1. throughput: every order-create produced as fast as it goes; orders/s
//!    = orders ÷ (first produce → the last order's first terminal
//!    order-status visible to a read_committed consumer);
//! 2. latency at half that rate (or `--rate`): a second sale of its own,
//!    paced; per order, requestedAt → its terminal order-status visible,
//!    the first second left out as in the coupon runs (and reported with it);
//! 3. the order audit of `surge verify --orders` on everything, pg-sim's
//!    ledger included: a figure from a saga that oversold or charged twice
//!    means nothing, so the run fails unless it holds;
//! 4. the same two sales through a Redis lock per product (see
//!    `redis_lock_orders`) with the same pg-sim; its approved charges in
//!    the ledger must equal the orders it marked paid with money due.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use surge_core::Settings;
use surge_kafka::OrderedSender;
use surge_order::scenario::{OrderSale, OrderScenario};
use surge_schemas::coupon::{CouponCommand, CouponDecision, Outcome};
use surge_schemas::inventory::{InventoryAction, InventoryCommand, InventoryEvent};
use surge_schemas::order::{OrderCreate, OrderState, OrderStatus};
use surge_schemas::{Contract, Registry};

use super::children::{self, approved_charges, drop_schema};
use super::latency::{percentile, Latency, WARMUP};
use super::redis_lock_orders::{self, LockOrders, Plan, CHARGE_KEY_PREFIX};
use super::sandbox::Sandbox;
use super::{say, visible};
use crate::commands::loadgen::orders::{codec, produce};
use crate::commands::loadgen::traffic::{Pace, Progress};
use crate::commands::verify::orders::{check, Ledger};
use surge_order::audit::OrderAudit;
use surge_sink::views::StockView;

/// pg-sim's latency per call in each run (sigma 0: every call takes exactly this).
const PROVIDER_LATENCIES_MS: [f64; 2] = [0.0, 50.0];

/// How long the sagas may take to settle their last releases after every
/// order reached a terminal state, before the audit counts a violation.
const AUDIT_WAIT: Duration = Duration::from_secs(60);

/// The sale's sizes and the drivers' settings.
#[derive(Debug, Clone)]
pub struct OrderArgs {
    pub orders: usize,
    pub users: usize,
    pub products: usize,
    pub clients: usize,
    pub rate: Option<u64>,
    pub latency_seconds: u64,
    pub seed: u64,
}

/// Both provider latencies, side by side.
pub async fn run(
    settings: &Settings,
    config: &Path,
    out_dir: &Path,
    run_id: &str,
    args: &OrderArgs,
) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    for latency in PROVIDER_LATENCIES_MS {
        runs.push(at_latency(settings, config, out_dir, run_id, args, latency).await?);
    }
    Ok(json!({
        "orders": args.orders,
        "users": args.users,
        "products": args.products,
        "clients": args.clients,
        "runs": runs,
    }))
}

async fn at_latency(
    settings: &Settings,
    config: &Path,
    out_dir: &Path,
    run_id: &str,
    args: &OrderArgs,
    latency_ms: f64,
) -> anyhow::Result<Value> {
    let label = format!("orders{}", latency_ms as u64);
    let (sandbox, logs) = Sandbox::for_step(settings, run_id, &label, out_dir).await?;
    say(format!(
        "{label}: topics under {}*, provider latency {latency_ms} ms",
        sandbox.prefix()
    ));
    let schema = format!("pgsim_bench_{run_id}_{label}");
    let outcome = side_by_side(&sandbox, config, &logs, &schema, run_id, args, latency_ms).await;
    drop_schema(&settings.postgres.url, &schema).await;
    sandbox.drop_topics().await;
    outcome
}

async fn side_by_side(
    sandbox: &Sandbox,
    config: &Path,
    logs: &Path,
    schema: &str,
    run_id: &str,
    args: &OrderArgs,
    latency_ms: f64,
) -> anyhow::Result<Value> {
    let label = format!("orders{}", latency_ms as u64);
    let (sim, address) =
        children::pg_sim(config, schema, latency_ms, logs.join("pg-sim.log")).await?;
    let provider = format!("http://{address}");
    let mut pipelines = Vec::new();
    for name in surge_core::names::PIPELINES {
        let extra = if *name == surge_core::names::PAYMENT {
            vec![("SURGE_PAYMENT__URL", provider.clone())]
        } else {
            Vec::new()
        };
        pipelines.push(children::pipeline(
            config,
            sandbox.prefix(),
            name,
            &extra,
            logs,
        )?);
    }
    for p in &mut pipelines {
        children::until_assigned(p).await?;
    }
    let scenario = OrderScenario {
        prefix: format!("b{run_id}"),
        orders: args.orders,
        users: args.users,
        products: args.products,
        waves: 1,
        seed: args.seed,
    };
    let max_sale = scenario.generate();
    let max_holders = set_up(sandbox, &max_sale).await?;
    say(format!(
        "{label}: 1/4 surge, {} orders as fast as they go",
        args.orders
    ));
    let mut max = drive(sandbox, &max_sale, 0).await?;
    let rate = args.rate.unwrap_or((max.rate() / 2.0) as u64).max(10);
    let lat_sale = OrderScenario {
        prefix: format!("l{run_id}"),
        orders: (rate * args.latency_seconds).max(10) as usize,
        seed: args.seed + 1,
        ..scenario
    }
    .generate();
    let lat_holders = set_up(sandbox, &lat_sale).await?;
    say(format!(
        "{label}: 2/4 surge at {rate} orders/s for {} s",
        args.latency_seconds
    ));
    let mut lat = drive(sandbox, &lat_sale, rate).await?;
    say(format!(
        "{label}: 3/4 the order audit (verify --orders, with the ledger)"
    ));
    let (audit, stock) = audit(sandbox, schema).await?;
    let sold = |sale: &OrderSale| {
        sale.products
            .iter()
            .filter_map(|p| stock.get(&p.product_id))
            .map(|s| s.sold)
            .sum::<i64>()
    };
    (max.units_sold, lat.units_sold) = (sold(&max_sale), sold(&lat_sale));
    drop(pipelines);

    say(format!(
        "{label}: 4/4 Redis lock per product, {} clients",
        args.clients
    ));
    let ns = format!("bench:{run_id}:{label}");
    let url = &sandbox.settings.redis.url;
    let plan = |ns, sale, holders, rate| Plan {
        ns,
        sale,
        holders,
        provider: &provider,
        clients: args.clients,
        rate,
    };
    let lock_max = redis_lock_orders::run(url, &plan(&ns, &max_sale, &max_holders, 0)).await?;
    say(format!(
        "{label}: latency of the Redis-lock design at {rate}/s"
    ));
    let lat_ns = format!("{ns}:lat");
    let lock_lat =
        redis_lock_orders::run(url, &plan(&lat_ns, &lat_sale, &lat_holders, rate)).await?;
    let ledger =
        approved_charges(&sandbox.settings.postgres.url, schema, CHARGE_KEY_PREFIX).await?;
    let marked = (lock_max.charged + lock_lat.charged) as i64;
    if ledger != marked {
        bail!(
            "pg-sim's ledger {schema} holds {ledger} approved charges of the Redis-lock design, \
             which charged {marked} orders: its figures mean nothing"
        );
    }
    drop(sim);

    let lock_rate = lock_max.orders as f64 / lock_max.seconds;
    let stock = stock_of(&max_sale);
    let (mut surge, mut lock) = (max.json(), lock_json(&lock_max));
    surge["stock"] = json!(stock);
    lock["stock"] = json!(stock);
    Ok(json!({
        "providerLatencyMs": latency_ms,
        "surge": surge,
        "redisLock": lock,
        "latencyOrders": lat.orders,
        "ratioSurgeToRedisLock": max.rate() / lock_rate,
        "latency": {
            "offeredRate": rate,
            "surge": lat.latency_json(rate),
            "redisLock": lock_latency_json(&lock_lat, rate),
        },
        "audit": {
            "holds": audit.holds(),
            "orders": audit.orders,
            "byFinalState": audit.by_final_state,
            "charged": audit.charged,
        },
        "redisLockLedgerCharges": ledger,
        "redisLockCharged": marked,
    }))
}

/// Units the sale's products start with.
fn stock_of(sale: &OrderSale) -> i64 {
    sale.products
        .iter()
        .map(|p| match p.command {
            InventoryAction::CreateProduct { stock } => stock,
            _ => 0,
        })
        .sum()
}

/// Sends the sale's products and coupon commands and waits until every one
/// is decided (an inventory event per product, a coupon decision per
/// command): orders must not race their own catalogue. Returns the
/// (coupon, user) pairs the coupon pipeline ISSUED: the holders the lock
/// design starts from.
async fn set_up(sandbox: &Sandbox, sale: &OrderSale) -> anyhow::Result<Vec<(String, String)>> {
    let label = "set-up";
    let products: std::collections::HashSet<String> =
        sale.products.iter().map(|p| p.request_id.clone()).collect();
    let coupons: std::collections::HashSet<String> =
        sale.coupons.iter().map(|c| c.request_id.clone()).collect();
    let timeout = Duration::from_secs(300);
    let (np, nc) = (products.len(), coupons.len());
    let product_events =
        visible::watch::<InventoryEvent, _>(sandbox, np, timeout, label, move |e| {
            products
                .contains(&e.request_id)
                .then(|| e.request_id.clone())
        })
        .await?;
    let decisions = visible::watch::<CouponDecision, _>(sandbox, nc, timeout, label, move |d| {
        coupons
            .contains(&d.request_id)
            .then(|| d.request_id.clone())
    })
    .await?;
    say(format!(
        "{label}: {np} products and {nc} coupon commands (the coupon sale)"
    ));
    let producer = sandbox.factory.idempotent_producer("bench-orders-setup")?;
    let mut progress = Progress::new(np + nc);
    let (c, topic) = codec::<InventoryCommand>(&sandbox.settings).await?;
    let sent = produce(&sale.products, &c, &producer, &topic, &mut progress, 0).await?;
    let (c, topic) = codec::<CouponCommand>(&sandbox.settings).await?;
    produce(&sale.coupons, &c, &producer, &topic, &mut progress, sent).await?;
    let (events, decided) = (product_events.finish().await?, decisions.finish().await?);
    if events.len() < np || decided.len() < nc {
        bail!(
            "set-up: {}/{np} products and {}/{nc} coupon commands decided within {timeout:?}",
            events.len(),
            decided.len()
        );
    }
    Ok(decided
        .into_values()
        .filter(|d| d.record.outcome == Outcome::Issued)
        .filter_map(|d| Some((d.record.coupon_id, d.record.user_id?)))
        .collect())
}

/// What surge did with one sale's orders.
struct SurgeRun {
    orders: usize,
    /// First produce → the last terminal order-status visible.
    seconds: f64,
    /// Orders produced per second (below the offered rate if the sender lagged).
    achieved_rate: f64,
    by_state: BTreeMap<&'static str, usize>,
    /// REJECTED orders by what refused them.
    rejected_by: BTreeMap<&'static str, usize>,
    /// Units sold to this sale's orders (filled in after the audit).
    units_sold: i64,
    /// (requestedAt, requestedAt → terminal status visible), ms.
    timed: Vec<(i64, f64)>,
    first_produce_ms: i64,
}

impl SurgeRun {
    fn rate(&self) -> f64 {
        self.orders as f64 / self.seconds
    }

    fn json(&self) -> Value {
        json!({
            "orders": self.orders,
            "seconds": self.seconds,
            "ordersPerSecond": self.rate(),
            "byState": self.by_state,
            "rejectedBy": self.rejected_by,
            "unitsSold": self.units_sold,
        })
    }

    /// The latency run's figures: after the warm-up, and the p99 with it.
    fn latency_json(&self, rate: u64) -> Value {
        let from = self.first_produce_ms + WARMUP.as_millis() as i64;
        let steady = self
            .timed
            .iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, ms)| *ms)
            .collect();
        let mut all: Vec<f64> = self.timed.iter().map(|(_, ms)| *ms).collect();
        let mut v = Latency::from_samples(rate, self.achieved_rate, steady).json();
        v["warmupSeconds"] = json!(WARMUP.as_secs_f64());
        v["p99WithWarmupMs"] = json!(percentile(&mut all, 99.0));
        v
    }
}

/// Produces the sale's order-creates at `rate` per second (0: as fast as
/// they go), each stamped requestedAt when sent, and waits for every
/// order's first terminal order-status.
async fn drive(sandbox: &Sandbox, sale: &OrderSale, rate: u64) -> anyhow::Result<SurgeRun> {
    let creates: Vec<OrderCreate> = sale.creates().cloned().collect();
    let orders = creates.len();
    let ids: std::collections::HashSet<String> =
        creates.iter().map(|c| c.order_id.clone()).collect();
    // Generous: a debug build on two cores, with a slow provider.
    let timeout = Duration::from_secs(180) + Duration::from_millis(orders as u64 * 20);
    let watcher =
        visible::watch::<OrderStatus, _>(sandbox, orders, timeout, "terminal orders", move |s| {
            (s.state.is_terminal() && ids.contains(&s.order_id)).then(|| s.order_id.clone())
        })
        .await?;
    let (codec, topic) = codec::<OrderCreate>(&sandbox.settings).await?;
    let producer = sandbox.factory.idempotent_producer("bench-orders")?;
    let mut sender = OrderedSender::new(&producer, &topic);
    let mut requested_ms = HashMap::with_capacity(orders);
    let pace = Pace::new(rate);
    let started = Instant::now();
    let first_produce_ms = chrono::Utc::now().timestamp_millis();
    for (i, mut order) in creates.into_iter().enumerate() {
        pace.slot(i).await;
        order.requested_at = surge_schemas::now();
        requested_ms.insert(
            order.order_id.clone(),
            order.requested_at.timestamp_millis(),
        );
        sender
            .send(order.key(), &codec.encode(&order)?)
            .await
            .with_context(|| format!("producing to {topic}"))?;
        sender.settle_ready()?;
    }
    let sent = sender
        .finish()
        .await
        .with_context(|| format!("producing to {topic}"))?;
    let achieved_rate = sent as f64 / started.elapsed().as_secs_f64().max(1e-3);
    if sent != orders {
        bail!("Kafka acknowledged {sent} of {orders} order-creates");
    }
    let seen = watcher.finish().await?;
    if seen.len() < orders {
        bail!(
            "{} of {orders} orders reached a terminal order-status within {timeout:?}",
            seen.len()
        );
    }
    let mut by_state = BTreeMap::new();
    let mut rejected_by = BTreeMap::new();
    let mut timed = Vec::with_capacity(orders);
    let mut last_ms = first_produce_ms;
    for (id, v) in &seen {
        *by_state.entry(v.record.state.symbol()).or_default() += 1;
        if v.record.state == OrderState::Rejected {
            *rejected_by
                .entry(refusal(v.record.reason.as_deref()))
                .or_default() += 1;
        }
        last_ms = last_ms.max(v.at_ms);
        if let Some(at) = requested_ms.get(id) {
            timed.push((*at, (v.at_ms - at) as f64));
        }
    }
    Ok(SurgeRun {
        orders,
        seconds: (last_ms - first_produce_ms).max(1) as f64 / 1000.0,
        achieved_rate,
        by_state,
        rejected_by,
        units_sold: 0,
        timed,
        first_produce_ms,
    })
}

/// What refused an order, from the saga's reason.
fn refusal(reason: Option<&str>) -> &'static str {
    match reason.unwrap_or("") {
        r if r.starts_with("out of stock") => "stock",
        r if r.starts_with("coupon") => "coupon",
        _ => "other",
    }
}

/// `surge verify --orders` on the sandbox, with pg-sim's ledger, until the
/// invariants hold or [`AUDIT_WAIT`] ran out (then the run fails).
async fn audit(
    sandbox: &Sandbox,
    schema: &str,
) -> anyhow::Result<(OrderAudit, BTreeMap<String, StockView>)> {
    let registry = Registry::new(&sandbox.settings.registry.url);
    let ledger = Ledger {
        postgres_url: sandbox.settings.postgres.url.clone(),
        schema: schema.to_string(),
    };
    let deadline = Instant::now() + AUDIT_WAIT;
    loop {
        let (report, stock) = check(
            &sandbox.settings,
            &registry,
            &sandbox.factory,
            Some(&ledger),
            &[],
        )
        .await?;
        if report.holds() {
            return Ok((report, stock));
        }
        if Instant::now() >= deadline {
            bail!(
                "the order audit failed after {AUDIT_WAIT:?}: {} violation(s): {}",
                report.violations.len(),
                report.violations.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn lock_json(run: &LockOrders) -> Value {
    json!({
        "orders": run.orders,
        "seconds": run.seconds,
        "ordersPerSecond": run.orders as f64 / run.seconds,
        "byState": run.by_state,
        "rejectedBy": run.rejected_by,
        "unitsSold": run.units_sold,
        "charged": run.charged,
        "lockRetries": run.lock_retries,
    })
}

/// The lock design's latency run, timed like surge's: orders offered in
/// the first second are left out of p50/p99 (and in the p99 beside them).
fn lock_latency_json(run: &LockOrders, rate: u64) -> Value {
    let achieved = run.orders as f64 / run.seconds;
    let warm = WARMUP.as_secs_f64() * 1000.0;
    let steady = run.samples.iter().filter(|s| s.offered_ms >= warm);
    let mut v = Latency::from_samples(
        rate,
        achieved,
        steady.clone().map(|s| s.latency_ms).collect(),
    )
    .json();
    let offered =
        Latency::from_samples(rate, achieved, steady.map(|s| s.from_offered_ms).collect());
    let mut all: Vec<f64> = run.samples.iter().map(|s| s.latency_ms).collect();
    v["warmupSeconds"] = json!(WARMUP.as_secs_f64());
    v["p99WithWarmupMs"] = json!(percentile(&mut all, 99.0));
    v["fromOfferedP50Ms"] = json!(offered.p50_ms);
    v["fromOfferedP99Ms"] = json!(offered.p99_ms);
    v
}

/// The table: per provider latency, orders/s of both designs and their
/// ratio, then the latency at the offered rate.
pub fn print(orders: &Value) {
    if orders.is_null() {
        return;
    }
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let states = |v: &Value| {
        let listed = |m: &Value| {
            m.as_object().map_or(String::new(), |m| {
                m.iter()
                    .map(|(k, c)| format!("{k} {}", n(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        format!(
            "{} (rejected by {})",
            listed(&v["byState"]),
            listed(&v["rejectedBy"])
        )
    };
    println!(
        "\norders, end to end: order-create -> first terminal order-status visible to read_committed;\n\
         {} orders, {} users, {} products; the Redis lock per product with {} clients, the same orders and pg-sim",
        n(&orders["orders"]),
        n(&orders["users"]),
        n(&orders["products"]),
        n(&orders["clients"]),
    );
    println!(
        "{:<9} {:<11} {:>9} {:>9} {:>10} | {:>9} {:>8} {:>8}  final states",
        "provider", "design", "orders/s", "seconds", "units sold", "offered/s", "p50 ms", "p99 ms"
    );
    for run in orders["runs"].as_array().into_iter().flatten() {
        let provider = format!("{:.0} ms", f(&run["providerLatencyMs"]));
        let lat = &run["latency"];
        for (name, max, l) in [
            ("surge", &run["surge"], &lat["surge"]),
            ("redis lock", &run["redisLock"], &lat["redisLock"]),
        ] {
            println!(
                "{:<9} {:<11} {:>9.1} {:>9.2} {:>10} | {:>9} {:>8.1} {:>8.1}  {}",
                provider,
                name,
                f(&max["ordersPerSecond"]),
                f(&max["seconds"]),
                n(&max["unitsSold"]),
                n(&lat["offeredRate"]),
                f(&l["p50Ms"]),
                f(&l["p99Ms"]),
                states(max),
            );
        }
        println!(
            "{:<9} surge / redis lock {:>6.2}   (p99 with the first second: surge {:.1} ms, lock {:.1} ms; lock p99 from offered: {:.1} ms; the saga's audit held)",
            "",
            f(&run["ratioSurgeToRedisLock"]),
            f(&lat["surge"]["p99WithWarmupMs"]),
            f(&lat["redisLock"]["p99WithWarmupMs"]),
            f(&lat["redisLock"]["fromOfferedP99Ms"]),
        );
    }
}
