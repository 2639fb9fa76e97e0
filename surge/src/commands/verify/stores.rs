//! Reading the stores back into the audit's [`StoreView`]: PostgreSQL's
//! tables and Redis's keys (the layout of surge_redis::Keyspace).

use std::collections::BTreeMap;

use anyhow::Context;
use redis::AsyncCommands;
use surge_coupon::stores::{StoreView, StoredDecision};
use surge_redis::keys::{Keyspace, UserStatus};

/// Everything PostgreSQL holds for coupons whose id starts with `prefix`.
pub async fn postgres(url: &str, prefix: &str) -> anyhow::Result<StoreView> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    let mut view = StoreView::default();
    let coupons: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "select coupon_id, stock, issued, remaining from coupons where starts_with(coupon_id, $1)",
    )
    .bind(prefix)
    .fetch_all(&pool)
    .await
    .context("reading coupons")?;
    for (c, stock, issued, remaining) in coupons {
        view.coupons.insert(c, (stock, issued, remaining));
    }
    let decisions: Vec<(String, String, Option<String>, String, Option<i64>)> = sqlx::query_as(
        "select request_id, coupon_id, user_id, outcome, sequence from coupon_decisions
         where starts_with(coupon_id, $1)",
    )
    .bind(prefix)
    .fetch_all(&pool)
    .await
    .context("reading coupon_decisions")?;
    for (request, coupon_id, user_id, outcome, sequence) in decisions {
        view.decisions.insert(
            request,
            StoredDecision {
                coupon_id,
                user_id,
                outcome,
                sequence,
            },
        );
    }
    let holders: Vec<(String, String, i64)> = sqlx::query_as(
        "select coupon_id, user_id, sequence from issued_coupons where starts_with(coupon_id, $1)",
    )
    .bind(prefix)
    .fetch_all(&pool)
    .await
    .context("reading issued_coupons")?;
    for (c, u, s) in holders {
        view.holders.insert((c, u), s);
    }
    pool.close().await;
    Ok(view)
}

/// Everything Redis holds under `keys` for coupons whose id starts with `prefix`.
pub async fn redis(url: &str, keys: &Keyspace, prefix: &str) -> anyhow::Result<StoreView> {
    let client = redis::Client::open(url).context("redis URL")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let mut view = StoreView::default();

    for key in scan(&mut conn, &keys.coupon_pattern()).await? {
        let Some(id) = keys.id_of(&key, "coupon") else {
            continue;
        };
        if !id.starts_with(prefix) {
            continue;
        }
        let h: BTreeMap<String, String> = conn.hgetall(&key).await?;
        view.coupons.insert(
            id.to_string(),
            (num(&h, "stock")?, num(&h, "issued")?, num(&h, "remaining")?),
        );
    }

    let requests = scan(&mut conn, &keys.request_pattern()).await?;
    for chunk in requests.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.hgetall(key);
        }
        let hashes: Vec<BTreeMap<String, String>> = pipe.query_async(&mut conn).await?;
        for (key, h) in chunk.iter().zip(hashes) {
            let coupon_id = h.get("coupon_id").cloned().unwrap_or_default();
            let (Some(id), true) = (keys.id_of(key, "request"), coupon_id.starts_with(prefix))
            else {
                continue;
            };
            view.decisions.insert(
                id.to_string(),
                StoredDecision {
                    coupon_id,
                    user_id: h.get("user_id").cloned(),
                    outcome: h.get("outcome").cloned().unwrap_or_default(),
                    sequence: h.get("sequence").and_then(|s| s.parse().ok()),
                },
            );
        }
    }

    for key in scan(&mut conn, &keys.users_pattern()).await? {
        let Some(coupon) = keys.id_of(&key, "users") else {
            continue;
        };
        if !coupon.starts_with(prefix) {
            continue;
        }
        let users: BTreeMap<String, String> = conn.hgetall(&key).await?;
        for (user, raw) in users {
            let status = UserStatus::parse(&raw)
                .with_context(|| format!("{key} {user}: unreadable status {raw:?}"))?;
            if status.outcome == "ISSUED" {
                view.holders
                    .insert((coupon.to_string(), user), status.sequence.unwrap_or(-1));
            }
        }
    }
    Ok(view)
}

async fn scan(
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(surge_redis::reads::scan(conn, pattern).await?)
}

fn num(h: &BTreeMap<String, String>, field: &str) -> anyhow::Result<i64> {
    h.get(field)
        .with_context(|| format!("field {field} missing"))?
        .parse()
        .with_context(|| format!("field {field} is not a number"))
}

/// What PostgreSQL and Redis hold for orders and products, compared with
/// what order-status and inventory-result say (invariant 6 for the order
/// half). One line per difference; empty when both stores agree.
pub async fn order_differences(
    settings: &surge_core::Settings,
    which: &[super::Store],
    statuses: &[(i64, surge_schemas::order::OrderStatus)],
    inventory: &[surge_schemas::inventory::InventoryEvent],
) -> anyhow::Result<Vec<String>> {
    use surge_sink::views::{compare_orders, compare_stock, expected_orders, expected_stock};
    let orders = expected_orders(statuses);
    let stock = expected_stock(inventory);
    let mut out = Vec::new();
    for store in which {
        let (name, held_orders, held_stock) = match store {
            super::Store::Postgres => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(&settings.postgres.url)
                    .await
                    .context("connecting to PostgreSQL")?;
                let o = surge_postgres::reads::all_orders(&pool)
                    .await
                    .context("reading orders")?;
                let s = surge_postgres::reads::all_product_stock(&pool)
                    .await
                    .context("reading product_stock")?;
                pool.close().await;
                ("postgres", o, s)
            }
            super::Store::Redis => {
                let keys = Keyspace::new(&settings.redis.keyspace);
                let mut conn = redis::Client::open(settings.redis.url.as_str())
                    .context("redis URL")?
                    .get_multiplexed_async_connection()
                    .await
                    .context("connecting to Redis")?;
                let o = surge_redis::reads::all_orders(&mut conn, &keys).await?;
                let s = surge_redis::reads::all_product_stock(&mut conn, &keys).await?;
                ("redis", o, s)
            }
        };
        eprintln!(
            "[verify] {name}: {} orders, {} products",
            held_orders.len(),
            held_stock.len()
        );
        out.extend(compare_orders(name, &orders, &held_orders, 20));
        out.extend(compare_stock(name, &stock, &held_stock));
    }
    Ok(out)
}
