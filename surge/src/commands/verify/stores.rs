//! Reading the stores back into the audit's [`StoreView`] through the
//! connectors' own reads (surge_postgres::reads, surge_redis::reads).

use anyhow::Context;
use surge_coupon::stores::{StoreView, StoredDecision};
use surge_redis::keys::Keyspace;
use surge_sink::views::{CouponView, DecisionView};

/// Everything PostgreSQL holds for coupons whose id starts with `prefix`.
pub async fn postgres(url: &str, prefix: &str) -> anyhow::Result<StoreView> {
    use surge_postgres::reads;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    let coupons = reads::all_coupons(&pool, prefix)
        .await
        .context("reading coupons")?;
    let decisions = reads::all_coupon_decisions(&pool, prefix)
        .await
        .context("reading coupon_decisions")?;
    let holders = reads::all_coupon_holders(&pool, prefix)
        .await
        .context("reading issued_coupons")?;
    pool.close().await;
    Ok(view(
        coupons.into_values(),
        decisions.into_values(),
        holders,
    ))
}

/// Everything Redis holds under `keys` for coupons whose id starts with `prefix`.
pub async fn redis(url: &str, keys: &Keyspace, prefix: &str) -> anyhow::Result<StoreView> {
    use surge_redis::reads;
    let client = redis::Client::open(url).context("redis URL")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let coupons = reads::all_coupons(&mut conn, keys, prefix).await?;
    let decisions = reads::all_coupon_decisions(&mut conn, keys, prefix).await?;
    let holders = reads::all_coupon_holders(&mut conn, keys, prefix).await?;
    Ok(view(
        coupons.into_values(),
        decisions.into_values(),
        // An issued status without a sequence differs from every unit.
        holders
            .into_iter()
            .map(|(k, s)| (k, s.unwrap_or(-1)))
            .collect(),
    ))
}

/// The audit's view of what a store holds.
fn view(
    coupons: impl IntoIterator<Item = CouponView>,
    decisions: impl IntoIterator<Item = DecisionView>,
    holders: std::collections::BTreeMap<(String, String), i64>,
) -> StoreView {
    StoreView {
        coupons: coupons
            .into_iter()
            .map(|c| (c.coupon_id, (c.stock, c.issued, c.remaining)))
            .collect(),
        decisions: decisions
            .into_iter()
            .map(|d| {
                (
                    (d.coupon_id.clone(), d.request_id),
                    StoredDecision {
                        coupon_id: d.coupon_id,
                        user_id: d.user_id,
                        outcome: d.outcome,
                        sequence: d.sequence,
                    },
                )
            })
            .collect(),
        holders,
    }
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
