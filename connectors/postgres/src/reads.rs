//! Every read of the tables (the gateway's and `surge verify`'s): the
//! tables are this crate's, so are the queries.

use std::collections::BTreeMap;

use sqlx::PgPool;
use surge_sink::views::{CouponView, DecisionView, HistoryView, LineView, OrderView, StockView};

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

type DecisionRow = (
    String,
    String,
    Option<String>,
    String,
    Option<i64>,
    i64,
    i64,
    i64,
    Option<String>,
    chrono::DateTime<chrono::Utc>,
);

const DECISION_COLUMNS: &str =
    "request_id, coupon_id, user_id, outcome, sequence, stock, issued, remaining, reason, decided_at";

fn decision_view(
    (request_id, coupon_id, user_id, outcome, sequence, stock, issued, remaining, reason, at): DecisionRow,
) -> DecisionView {
    DecisionView {
        request_id,
        coupon_id,
        user_id,
        outcome,
        sequence,
        stock,
        issued,
        remaining,
        reason,
        decided_at_ms: at.timestamp_millis(),
    }
}

/// The decision of request `request_id` of coupon `coupon_id`, `None` when
/// the table has no row (not decided yet, or never sent).
pub async fn coupon_decision(
    pool: &PgPool,
    coupon_id: &str,
    request_id: &str,
) -> Result<Option<DecisionView>, sqlx::Error> {
    let row: Option<DecisionRow> = sqlx::query_as(&format!(
        "select {DECISION_COLUMNS} from coupon_decisions where coupon_id = $1 and request_id = $2"
    ))
    .bind(coupon_id)
    .bind(request_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(decision_view))
}

/// Every decision under request id `request_id`, of whichever coupon (a
/// request id names a request of one coupon; producers straight to Kafka
/// can use one id on several), at most `limit`, by coupon id.
pub async fn coupon_decisions_of_request(
    pool: &PgPool,
    request_id: &str,
    limit: i64,
) -> Result<Vec<DecisionView>, sqlx::Error> {
    let rows: Vec<DecisionRow> = sqlx::query_as(&format!(
        "select {DECISION_COLUMNS} from coupon_decisions where request_id = $1 \
         order by coupon_id limit $2"
    ))
    .bind(request_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(decision_view).collect())
}

/// A coupon's stock, issued and remaining, `None` when the table has no row.
pub async fn coupon(pool: &PgPool, coupon_id: &str) -> Result<Option<CouponView>, sqlx::Error> {
    let row: Option<(i64, i64, i64)> =
        sqlx::query_as("select stock, issued, remaining from coupons where coupon_id = $1")
            .bind(coupon_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(stock, issued, remaining)| CouponView {
        coupon_id: coupon_id.to_string(),
        stock,
        issued,
        remaining,
    }))
}

/// Every coupon whose id starts with `prefix`, by id, for `surge verify`.
pub async fn all_coupons(
    pool: &PgPool,
    prefix: &str,
) -> Result<BTreeMap<String, CouponView>, sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "select coupon_id, stock, issued, remaining from coupons where starts_with(coupon_id, $1)",
    )
    .bind(prefix)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(coupon_id, stock, issued, remaining)| {
            (
                coupon_id.clone(),
                CouponView {
                    coupon_id,
                    stock,
                    issued,
                    remaining,
                },
            )
        })
        .collect())
}

/// Every decision of a coupon whose id starts with `prefix`, by (coupon
/// id, request id), for `surge verify`.
pub async fn all_coupon_decisions(
    pool: &PgPool,
    prefix: &str,
) -> Result<BTreeMap<(String, String), DecisionView>, sqlx::Error> {
    let rows: Vec<DecisionRow> = sqlx::query_as(&format!(
        "select {DECISION_COLUMNS} from coupon_decisions where starts_with(coupon_id, $1)"
    ))
    .bind(prefix)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let d = decision_view(row);
            ((d.coupon_id.clone(), d.request_id.clone()), d)
        })
        .collect())
}

/// Who holds a unit of a coupon whose id starts with `prefix`: (coupon id,
/// user id) → the unit's sequence, for `surge verify`.
pub async fn all_coupon_holders(
    pool: &PgPool,
    prefix: &str,
) -> Result<BTreeMap<(String, String), i64>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select coupon_id, user_id, sequence from issued_coupons where starts_with(coupon_id, $1)",
    )
    .bind(prefix)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(coupon_id, user_id, sequence)| ((coupon_id, user_id), sequence))
        .collect())
}
