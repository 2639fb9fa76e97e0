//! The order design surge replaces, as the source design's "before" does
//! it: a backend that, per order, takes a Redis lock on every product of it
//! and on the user's coupon (SET NX PX, in one sorted order so two orders
//! never wait on each other), checks stock and that the user holds the
//! coupon unused, decrements and marks the coupon used, unlocks
//! (compare-and-delete), then charges the payable amount through the same
//! pg-sim the pipelines use, and on a decline gives stock and coupon back
//! under the locks again. The payment call is made outside the locks — the
//! kinder version of this design; holding them across it would serialise
//! every order of a product behind the provider's latency.
//!
//! The coupon sale itself is not what this measures: its outcome (the first
//! `stock` users who asked for each coupon hold it) is loaded before the
//! clock starts, as the lock design's own coupon step would have left it.
//! Same orders as the pipelines, many concurrent clients, one Redis.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::aio::MultiplexedConnection;
use redis::Script;
use surge_order::scenario::OrderSale;
use surge_payment_gateway::{Charge, HttpGateway, Outcome, PaymentGateway};
use surge_schemas::coupon::{CouponAction, Discount};
use surge_schemas::inventory::InventoryAction;
use surge_schemas::order::OrderCreate;
use surge_schemas::Money;

use crate::commands::loadgen::traffic::Pace;

/// Idempotency keys of this design's charges start with it (pg-sim's ledger
/// is shared with the pipelines' run, whose keys differ).
pub const CHARGE_KEY_PREFIX: &str = "lock-";

/// A transient provider answer is retried this many times, then the run fails.
const CHARGE_ATTEMPTS: usize = 20;

/// Throughput, outcomes and per-order latency of one run.
#[derive(Debug, Default)]
pub struct LockOrders {
    pub orders: usize,
    pub seconds: f64,
    /// Final state of each order, by name (PAID, REJECTED, PAYMENT_FAILED).
    pub by_state: BTreeMap<&'static str, usize>,
    /// REJECTED orders by what refused them (stock, coupon).
    pub rejected_by: BTreeMap<&'static str, usize>,
    /// Units taken from stock by the orders it kept (initial − left).
    pub units_sold: i64,
    /// Approved charges made (orders with something to pay that were paid).
    pub charged: usize,
    /// Per order: from the client taking it to its final state written.
    pub latencies_ms: Vec<f64>,
    /// From the moment the order was offered (its slot at the rate): adds
    /// the wait for a free client when the design falls behind.
    pub offered_latencies_ms: Vec<f64>,
    pub lock_retries: usize,
}

const UNLOCK: &str = r#"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"#;

/// What every client reads: the orders, and the coupons' discounts (the
/// coupon definitions a backend would cache).
struct Shared {
    orders: Vec<OrderCreate>,
    discounts: HashMap<String, Option<Discount>>,
    next: AtomicUsize,
    pace: Pace,
    started: Instant,
    gap: Option<Duration>,
    gateway: HttpGateway,
    ns: String,
}

/// Runs the sale's orders with `clients` concurrent clients, offered at
/// `rate` per second (0: as fast as they go), charging through `provider`.
/// Keys under `ns`, removed after. Fails if any product's stock went below
/// zero.
pub async fn run(
    url: &str,
    ns: &str,
    sale: &OrderSale,
    provider: &str,
    clients: usize,
    rate: u64,
) -> anyhow::Result<LockOrders> {
    let client = redis::Client::open(url).context("redis URL")?;
    let mut setup = client.get_multiplexed_async_connection().await?;
    let mut products = Vec::new();
    let mut initial = 0;
    for p in &sale.products {
        if let InventoryAction::CreateProduct { stock } = p.command {
            initial += stock;
            let key = format!("{ns}:stock:{}", p.product_id);
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(stock)
                .query_async(&mut setup)
                .await?;
            products.push(key);
        }
    }
    let mut discounts = HashMap::new();
    let mut left: HashMap<&str, i64> = HashMap::new();
    let mut holders: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in &sale.coupons {
        match &c.command {
            CouponAction::Create {
                stock, discount, ..
            } => {
                discounts.insert(c.coupon_id.clone(), *discount);
                left.insert(&c.coupon_id, *stock);
            }
            CouponAction::Issue { user_id } => {
                let units = left.entry(&c.coupon_id).or_insert(0);
                let held = holders.entry(&c.coupon_id).or_default();
                if *units > 0 && !held.contains(&user_id.as_str()) {
                    *units -= 1;
                    held.push(user_id);
                }
            }
            _ => {}
        }
    }
    for (coupon, users) in &holders {
        for chunk in users.chunks(1000) {
            let _: () = redis::cmd("SADD")
                .arg(format!("{ns}:holders:{coupon}"))
                .arg(chunk)
                .query_async(&mut setup)
                .await?;
        }
    }
    let shared = Arc::new(Shared {
        orders: sale.creates().cloned().collect(),
        discounts,
        next: AtomicUsize::new(0),
        pace: Pace::new(rate),
        started: Instant::now(),
        gap: (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64)),
        gateway: HttpGateway::new(provider, Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!(e))?,
        ns: ns.to_string(),
    });
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        // One connection per client, like one pool slot per request thread.
        let conn = client.get_multiplexed_async_connection().await?;
        let shared = shared.clone();
        tasks.push(tokio::spawn(
            async move { client_loop(conn, &shared).await },
        ));
    }
    let mut run = LockOrders::default();
    for t in tasks {
        let done = t.await??;
        for (state, n) in done.by_state {
            *run.by_state.entry(state).or_default() += n;
        }
        for (why, n) in done.rejected_by {
            *run.rejected_by.entry(why).or_default() += n;
        }
        run.charged += done.charged;
        run.lock_retries += done.lock_retries;
        run.latencies_ms.extend(done.latencies_ms);
        run.offered_latencies_ms.extend(done.offered_latencies_ms);
    }
    run.seconds = shared.started.elapsed().as_secs_f64();
    run.orders = shared.orders.len();
    let mut left = 0;
    for key in &products {
        let stock: i64 = redis::cmd("GET").arg(key).query_async(&mut setup).await?;
        if stock < 0 {
            bail!("the Redis-lock design oversold: {key} is {stock}");
        }
        left += stock;
    }
    run.units_sold = initial - left;
    // Leave nothing behind.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:*"))
        .query_async(&mut setup)
        .await?;
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut setup).await?;
    }
    Ok(run)
}

/// The locks an order takes, in the one order every client takes them.
fn locks(ns: &str, order: &OrderCreate) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = order
        .items
        .iter()
        .map(|i| format!("{ns}:lock:product:{}", i.product_id))
        .collect();
    if let Some(c) = &order.coupon_id {
        keys.insert(format!("{ns}:lock:coupon:{c}:{}", order.user_id));
    }
    keys
}

struct Locker {
    unlock: Script,
    token: String,
    retries: usize,
}

impl Locker {
    async fn lock(
        &mut self,
        conn: &mut MultiplexedConnection,
        keys: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        for key in keys {
            loop {
                let got: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(&self.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(1000)
                    .query_async(conn)
                    .await?;
                if got.is_some() {
                    break;
                }
                self.retries += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(())
    }

    async fn unlock(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        for key in keys.iter().rev() {
            let _: i64 = self
                .unlock
                .key(key)
                .arg(&self.token)
                .invoke_async(conn)
                .await?;
        }
        Ok(())
    }
}

async fn client_loop(
    mut conn: MultiplexedConnection,
    shared: &Shared,
) -> anyhow::Result<LockOrders> {
    let mut locker = Locker {
        unlock: Script::new(UNLOCK),
        token: uuid::Uuid::new_v4().to_string(),
        retries: 0,
    };
    let ns = &shared.ns;
    let mut done = LockOrders::default();
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(order) = shared.orders.get(i) else {
            done.lock_retries = locker.retries;
            return Ok(done);
        };
        shared.pace.slot(i).await;
        let t0 = Instant::now();
        // The pacer may release a slot up to a millisecond early.
        let offered_at = shared
            .gap
            .map_or(t0, |g| (shared.started + g.mul_f64(i as f64)).min(t0));
        let keys = locks(ns, order);
        locker.lock(&mut conn, &keys).await?;
        let refused = reserve(&mut conn, ns, order).await;
        locker.unlock(&mut conn, &keys).await?;
        let state = if let Some(why) = refused? {
            *done.rejected_by.entry(why).or_default() += 1;
            "REJECTED"
        } else {
            let total = Money(
                order
                    .items
                    .iter()
                    .map(|l| l.unit_price.0 * i64::from(l.quantity))
                    .sum(),
            );
            let off = order
                .coupon_id
                .as_ref()
                .and_then(|c| shared.discounts.get(c).copied().flatten())
                .map_or(Money(0), |d| d.apply(total));
            let payable = total.0 - off.0;
            if payable <= 0 || charge(&shared.gateway, order, payable).await? {
                done.charged += usize::from(payable > 0);
                "PAID"
            } else {
                locker.lock(&mut conn, &keys).await?;
                let restored = restore(&mut conn, ns, order).await;
                locker.unlock(&mut conn, &keys).await?;
                restored?;
                "PAYMENT_FAILED"
            }
        };
        let _: () = redis::cmd("SET")
            .arg(format!("{ns}:order:{}", order.order_id))
            .arg(state)
            .query_async(&mut conn)
            .await?;
        *done.by_state.entry(state).or_default() += 1;
        done.latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        done.offered_latencies_ms
            .push(offered_at.elapsed().as_secs_f64() * 1000.0);
    }
}

/// Under the order's locks: every line in stock and the coupon held and
/// unused, then all of it taken (`None`); or nothing taken, and what
/// refused it (`stock`, `coupon`).
async fn reserve(
    conn: &mut MultiplexedConnection,
    ns: &str,
    order: &OrderCreate,
) -> anyhow::Result<Option<&'static str>> {
    for line in &order.items {
        let stock: Option<i64> = redis::cmd("GET")
            .arg(format!("{ns}:stock:{}", line.product_id))
            .query_async(conn)
            .await?;
        if stock.unwrap_or(0) < i64::from(line.quantity) {
            return Ok(Some("stock"));
        }
    }
    if let Some(c) = &order.coupon_id {
        let held: bool = redis::cmd("SISMEMBER")
            .arg(format!("{ns}:holders:{c}"))
            .arg(&order.user_id)
            .query_async(conn)
            .await?;
        let used: bool = redis::cmd("SISMEMBER")
            .arg(format!("{ns}:used:{c}"))
            .arg(&order.user_id)
            .query_async(conn)
            .await?;
        if !held || used {
            return Ok(Some("coupon"));
        }
        let _: i64 = redis::cmd("SADD")
            .arg(format!("{ns}:used:{c}"))
            .arg(&order.user_id)
            .query_async(conn)
            .await?;
    }
    for line in &order.items {
        let _: i64 = redis::cmd("DECRBY")
            .arg(format!("{ns}:stock:{}", line.product_id))
            .arg(line.quantity)
            .query_async(conn)
            .await?;
    }
    Ok(None)
}

/// Under the order's locks again: what [`reserve`] took, given back.
async fn restore(
    conn: &mut MultiplexedConnection,
    ns: &str,
    order: &OrderCreate,
) -> anyhow::Result<()> {
    for line in &order.items {
        let _: i64 = redis::cmd("INCRBY")
            .arg(format!("{ns}:stock:{}", line.product_id))
            .arg(line.quantity)
            .query_async(conn)
            .await?;
    }
    if let Some(c) = &order.coupon_id {
        let _: i64 = redis::cmd("SREM")
            .arg(format!("{ns}:used:{c}"))
            .arg(&order.user_id)
            .query_async(conn)
            .await?;
    }
    Ok(())
}

/// Charges `amount` for `order` under one idempotency key, retrying an
/// unknown outcome; true when approved.
async fn charge(gateway: &HttpGateway, order: &OrderCreate, amount: i64) -> anyhow::Result<bool> {
    let charge = Charge {
        key: format!("{CHARGE_KEY_PREFIX}{}", order.order_id),
        order_id: order.order_id.clone(),
        user_id: order.user_id.clone(),
        amount,
        currency: order.currency.clone(),
    };
    let mut last = None;
    for _ in 0..CHARGE_ATTEMPTS {
        match gateway.charge(&charge).await {
            Ok(Outcome::Approved { .. }) => return Ok(true),
            Ok(Outcome::Declined { .. }) => return Ok(false),
            Err(unknown) => last = Some(unknown),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!(
        "charge {} stayed unknown after {CHARGE_ATTEMPTS} attempts: {}",
        charge.key,
        last.map_or_else(String::new, |u| u.to_string())
    )
}
