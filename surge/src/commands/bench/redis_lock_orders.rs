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
//! The locks of an order are taken all at once by one Lua script (all or
//! none, retried as a set), so a client never holds one while it waits for
//! another and a lock cannot expire under it while it waits; the unlock
//! counts locks found lost (expired and taken by another client), and any
//! such loss fails the run, since the check-and-decrement it guarded may
//! then have raced.
//!
//! The coupon sale itself is not what this measures: its outcome, the
//! holders the coupon pipeline ISSUED in the same run, is loaded before the
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

use super::redis_lock::remove_namespace;
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
    /// Per order: when it was offered (ms after the clients started; its
    /// slot at the rate, or when a client took it), the time from a client
    /// taking it to its final state written, and the time from its offer
    /// (adds the wait for a free client when the design falls behind).
    pub samples: Vec<Sample>,
    pub lock_retries: usize,
    /// Locks found expired and taken by another client at unlock.
    pub lost_locks: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub offered_ms: f64,
    pub latency_ms: f64,
    pub from_offered_ms: f64,
}

/// Takes every key or none: 1 when taken (each with ARGV[1] as owner,
/// expiring after ARGV[2] ms), 0 when any is held.
const LOCK_ALL: &str = r#"
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then return 0 end
end
for _, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
end
return 1
"#;

/// Deletes the keys still owned by ARGV[1]; returns how many were.
const UNLOCK_ALL: &str = r#"
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
"#;

/// Lock expiry: far above an order's time under its locks (a few Redis
/// round trips; the payment call is made outside them).
const LOCK_PX_MS: u64 = 1_000;

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

/// One run of the lock design.
pub struct Plan<'a> {
    /// Every key of the run starts with it (removed after).
    pub ns: &'a str,
    pub sale: &'a OrderSale,
    /// The (coupon, user) pairs the coupon sale issued.
    pub holders: &'a [(String, String)],
    /// pg-sim's base URL.
    pub provider: &'a str,
    pub clients: usize,
    /// Orders offered per second (0: as fast as the clients go).
    pub rate: u64,
}

/// Runs the plan's orders with its concurrent clients, charging through
/// its provider; its keys are removed after on every path. Fails if any
/// product's stock went below zero or any lock was lost.
pub async fn run(url: &str, plan: &Plan<'_>) -> anyhow::Result<LockOrders> {
    let client = redis::Client::open(url).context("redis URL")?;
    let mut setup = client.get_multiplexed_async_connection().await?;
    let outcome = drive(&client, &mut setup, plan).await;
    // Leave nothing behind, whatever happened.
    remove_namespace(&mut setup, plan.ns).await?;
    outcome
}

async fn drive(
    client: &redis::Client,
    setup: &mut MultiplexedConnection,
    plan: &Plan<'_>,
) -> anyhow::Result<LockOrders> {
    let Plan {
        ns,
        sale,
        holders,
        provider,
        clients,
        rate,
    } = *plan;
    let mut products = Vec::new();
    let mut initial = 0;
    for p in &sale.products {
        if let InventoryAction::CreateProduct { stock } = p.command {
            initial += stock;
            let key = format!("{ns}:stock:{}", p.product_id);
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(stock)
                .query_async(setup)
                .await?;
            products.push(key);
        }
    }
    let discounts: HashMap<String, Option<Discount>> = sale
        .coupons
        .iter()
        .filter_map(|c| match &c.command {
            CouponAction::Create { discount, .. } => Some((c.coupon_id.clone(), *discount)),
            _ => None,
        })
        .collect();
    for (coupon, user) in holders {
        let _: i64 = redis::cmd("SADD")
            .arg(format!("{ns}:holders:{coupon}"))
            .arg(user)
            .query_async(setup)
            .await?;
    }
    // One connection per client, like one pool slot per request thread;
    // all open before the clock starts.
    let mut conns = Vec::with_capacity(clients.max(1));
    for _ in 0..clients.max(1) {
        conns.push(client.get_multiplexed_async_connection().await?);
    }
    let gateway =
        HttpGateway::new(provider, Duration::from_secs(10)).map_err(|e| anyhow::anyhow!(e))?;
    let shared = Arc::new(Shared {
        orders: sale.creates().cloned().collect(),
        discounts,
        next: AtomicUsize::new(0),
        pace: Pace::new(rate),
        started: Instant::now(),
        gap: (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64)),
        gateway,
        ns: ns.to_string(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns {
        let shared = shared.clone();
        tasks.spawn(async move { client_loop(conn, &shared).await });
    }
    let mut run = LockOrders::default();
    let mut lost = 0;
    while let Some(done) = tasks.join_next().await {
        // The first failure stops every other client (dropping the set aborts them).
        let done = done??;
        for (state, n) in done.by_state {
            *run.by_state.entry(state).or_default() += n;
        }
        for (why, n) in done.rejected_by {
            *run.rejected_by.entry(why).or_default() += n;
        }
        run.charged += done.charged;
        run.lock_retries += done.lock_retries;
        run.samples.extend(done.samples);
        lost += done.lost_locks;
    }
    run.seconds = shared.started.elapsed().as_secs_f64();
    run.orders = shared.orders.len();
    if lost > 0 {
        bail!("the Redis-lock design lost {lost} locks to expiry: its figures mean nothing");
    }
    let mut left = 0;
    for key in &products {
        let stock: i64 = redis::cmd("GET").arg(key).query_async(setup).await?;
        if stock < 0 {
            bail!("the Redis-lock design oversold: {key} is {stock}");
        }
        left += stock;
    }
    run.units_sold = initial - left;
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
    lock: Script,
    unlock: Script,
    token: String,
    retries: usize,
    /// Locks found expired and taken by another client at unlock.
    lost: i64,
}

impl Locker {
    async fn lock(
        &mut self,
        conn: &mut MultiplexedConnection,
        keys: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        loop {
            let mut call = self.lock.prepare_invoke();
            for k in keys {
                call.key(k);
            }
            let got: i64 = call
                .arg(&self.token)
                .arg(LOCK_PX_MS)
                .invoke_async(conn)
                .await?;
            if got == 1 {
                return Ok(());
            }
            self.retries += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn unlock(
        &mut self,
        conn: &mut MultiplexedConnection,
        keys: &BTreeSet<String>,
    ) -> anyhow::Result<()> {
        let mut call = self.unlock.prepare_invoke();
        for k in keys {
            call.key(k);
        }
        let released: i64 = call.arg(&self.token).invoke_async(conn).await?;
        self.lost += keys.len() as i64 - released;
        Ok(())
    }
}

async fn client_loop(
    mut conn: MultiplexedConnection,
    shared: &Shared,
) -> anyhow::Result<LockOrders> {
    let mut locker = Locker {
        lock: Script::new(LOCK_ALL),
        unlock: Script::new(UNLOCK_ALL),
        token: uuid::Uuid::new_v4().to_string(),
        retries: 0,
        lost: 0,
    };
    let ns = &shared.ns;
    let mut done = LockOrders::default();
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(order) = shared.orders.get(i) else {
            done.lock_retries = locker.retries;
            done.lost_locks = locker.lost;
            return Ok(done);
        };
        shared.pace.slot(i).await;
        let t0 = Instant::now();
        // The pacer may release a slot up to a millisecond early.
        let offered_at = shared
            .gap
            .map_or(t0, |g| (shared.started + g.mul_f64(i as f64)).min(t0))
            .max(shared.started);
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
        done.samples.push(Sample {
            offered_ms: (offered_at - shared.started).as_secs_f64() * 1000.0,
            latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
            from_offered_ms: offered_at.elapsed().as_secs_f64() * 1000.0,
        });
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
