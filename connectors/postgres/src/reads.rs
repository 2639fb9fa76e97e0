//! Every read of the order tables (the gateway's and `surge verify`'s): the
//! tables are this crate's, so are the queries.

use sqlx::PgPool;
use surge_sink::views::{HistoryView, LineView, OrderView, StockView};

type OrderRow = (
    String,
    String,
    bool,
    Option<String>,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i32,
    chrono::DateTime<chrono::Utc>,
);

/// The order with its lines and history, `None` when the table has no row.
pub async fn order(pool: &PgPool, order_id: &str) -> Result<Option<OrderView>, sqlx::Error> {
    let row: Option<OrderRow> = sqlx::query_as(
        "select user_id, state, terminal, reason, total_minor, currency, coupon_id, payment_id, refund_id,
                version, updated_at
         from orders where order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    let Some((
        user_id,
        state,
        terminal,
        reason,
        total_minor,
        currency,
        coupon_id,
        payment_id,
        refund_id,
        version,
        updated_at,
    )) = row
    else {
        return Ok(None);
    };
    let lines: Vec<(String, i32, i64)> = sqlx::query_as(
        "select product_id, quantity, unit_price_minor from order_lines where order_id = $1 order by line",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    type HistoryRow = (
        i32,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
        i64,
    );
    let history: Vec<HistoryRow> = sqlx::query_as(
        "select version, event, state, reason, cancel_request_id, refund_id, occurred_at, source_offset
         from order_status_history where order_id = $1 order by source_partition, source_offset",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(OrderView {
        order_id: order_id.to_string(),
        user_id,
        state,
        terminal,
        reason,
        total_minor,
        currency,
        coupon_id,
        payment_id,
        refund_id,
        version,
        updated_at_ms: updated_at.timestamp_millis(),
        lines: lines
            .into_iter()
            .map(|(product_id, quantity, unit_price_minor)| LineView {
                product_id,
                quantity,
                unit_price_minor,
            })
            .collect(),
        history: history
            .into_iter()
            .map(
                |(version, event, state, reason, cancel_request_id, refund_id, at, offset)| {
                    HistoryView {
                        version,
                        event,
                        state,
                        reason,
                        cancel_request_id,
                        refund_id,
                        occurred_at_ms: at.timestamp_millis(),
                        offset,
                    }
                },
            )
            .collect(),
    }))
}

/// A product's stock, `None` when the table has no row.
pub async fn product_stock(
    pool: &PgPool,
    product_id: &str,
) -> Result<Option<StockView>, sqlx::Error> {
    let row: Option<(i64, i64, i64, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select available, reserved, sold, created, updated_at from product_stock where product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(pool)
    .await?;
    Ok(
        row.map(|(available, reserved, sold, created, at)| StockView {
            available,
            reserved,
            sold,
            created,
            updated_at_ms: at.timestamp_millis(),
        }),
    )
}

/// Every order with its lines and history, for `surge verify`.
pub async fn all_orders(
    pool: &PgPool,
) -> Result<std::collections::BTreeMap<String, OrderView>, sqlx::Error> {
    let rows: Vec<(String, String, String, bool, Option<String>, i64, String, Option<String>, Option<String>, Option<String>, i32, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as(
            "select order_id, user_id, state, terminal, reason, total_minor, currency, coupon_id, payment_id, refund_id,
                    version, updated_at from orders",
        )
        .fetch_all(pool)
        .await?;
    let mut out: std::collections::BTreeMap<String, OrderView> = rows
        .into_iter()
        .map(
            |(
                order_id,
                user_id,
                state,
                terminal,
                reason,
                total_minor,
                currency,
                coupon_id,
                payment_id,
                refund_id,
                version,
                at,
            )| {
                (
                    order_id.clone(),
                    OrderView {
                        order_id,
                        user_id,
                        state,
                        terminal,
                        reason,
                        total_minor,
                        currency,
                        coupon_id,
                        payment_id,
                        refund_id,
                        version,
                        updated_at_ms: at.timestamp_millis(),
                        lines: Vec::new(),
                        history: Vec::new(),
                    },
                )
            },
        )
        .collect();
    let lines: Vec<(String, String, i32, i64)> = sqlx::query_as(
        "select order_id, product_id, quantity, unit_price_minor from order_lines order by order_id, line",
    )
    .fetch_all(pool)
    .await?;
    for (order_id, product_id, quantity, unit_price_minor) in lines {
        if let Some(o) = out.get_mut(&order_id) {
            o.lines.push(LineView {
                product_id,
                quantity,
                unit_price_minor,
            });
        }
    }
    type HistoryRow = (
        String,
        i32,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
        i64,
    );
    let history: Vec<HistoryRow> = sqlx::query_as(
        "select order_id, version, event, state, reason, cancel_request_id, refund_id, occurred_at, source_offset
         from order_status_history order by order_id, source_partition, source_offset",
    )
    .fetch_all(pool)
    .await?;
    for (order_id, version, event, state, reason, cancel_request_id, refund_id, at, offset) in
        history
    {
        if let Some(o) = out.get_mut(&order_id) {
            o.history.push(HistoryView {
                version,
                event,
                state,
                reason,
                cancel_request_id,
                refund_id,
                occurred_at_ms: at.timestamp_millis(),
                offset,
            });
        }
    }
    Ok(out)
}

/// Every product's stock for `surge verify`.
pub async fn all_product_stock(
    pool: &PgPool,
) -> Result<std::collections::BTreeMap<String, StockView>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select product_id, available, reserved, sold, created, updated_at from product_stock",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, available, reserved, sold, created, at)| {
            (
                id,
                StockView {
                    available,
                    reserved,
                    sold,
                    created,
                    updated_at_ms: at.timestamp_millis(),
                },
            )
        })
        .collect())
}
