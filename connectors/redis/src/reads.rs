//! Reading orders and products back from their keys as the read model. The
//! keys are this crate's (`keys`), so are the reads.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use surge_sink::views::{HistoryView, LineView, OrderView, StockView};

use crate::keys::Keyspace;

/// The order with its lines and history; `None` when its hash is absent.
pub async fn order<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    order_id: &str,
) -> redis::RedisResult<Option<OrderView>> {
    let (h, lines, history): (
        HashMap<String, String>,
        Option<String>,
        HashMap<String, String>,
    ) = redis::pipe()
        .cmd("HGETALL")
        .arg(keys.order(order_id))
        .cmd("HGET")
        .arg(keys.order_lines(order_id))
        .arg("lines")
        .cmd("HGETALL")
        .arg(keys.order_history(order_id))
        .query_async(conn)
        .await?;
    if h.is_empty() {
        return Ok(None);
    }
    let text = |f: &str| h.get(f).cloned();
    let num = |f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok());
    let lines: Vec<LineView> = match lines {
        Some(json) => serde_json::from_str(&json).map_err(corrupt)?,
        None => Vec::new(),
    };
    let mut history = history
        .into_iter()
        .map(|(at, json)| {
            let position = at
                .split_once(':')
                .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)));
            let entry: HistoryView = serde_json::from_str(&json).map_err(corrupt)?;
            Ok((position, entry))
        })
        .collect::<redis::RedisResult<Vec<_>>>()?;
    history.sort_by_key(|(position, _)| *position);
    Ok(Some(OrderView {
        order_id: order_id.to_string(),
        user_id: text("user_id").unwrap_or_default(),
        state: text("state").unwrap_or_default(),
        terminal: h.get("terminal").is_some_and(|t| t == "true"),
        reason: text("reason"),
        total_minor: num("total_minor").unwrap_or(0),
        currency: text("currency").unwrap_or_default(),
        coupon_id: text("coupon_id"),
        payment_id: text("payment_id"),
        refund_id: text("refund_id"),
        version: num("version").unwrap_or(0) as i32,
        updated_at_ms: num("updated_at").unwrap_or(0),
        lines,
        history: history.into_iter().map(|(_, e)| e).collect(),
    }))
}

/// A product's stock; `None` when its hash is absent.
pub async fn product_stock<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
    product_id: &str,
) -> redis::RedisResult<Option<StockView>> {
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.product(product_id))
        .query_async(conn)
        .await?;
    if h.is_empty() {
        return Ok(None);
    }
    let num = |f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    Ok(Some(StockView {
        available: num("available"),
        reserved: num("reserved"),
        sold: num("sold"),
        created: num("created"),
        updated_at_ms: num("updated_at"),
    }))
}

/// Every order under `keys`, for `surge verify`.
pub async fn all_orders<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
) -> redis::RedisResult<std::collections::BTreeMap<String, OrderView>> {
    let mut out = std::collections::BTreeMap::new();
    for key in scan(conn, &keys.order_pattern()).await? {
        if let Some(id) = keys.id_of(&key, "order") {
            if let Some(o) = order(conn, keys, id).await? {
                out.insert(id.to_string(), o);
            }
        }
    }
    Ok(out)
}

/// Every product's stock under `keys`, for `surge verify`.
pub async fn all_product_stock<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keyspace,
) -> redis::RedisResult<std::collections::BTreeMap<String, StockView>> {
    let mut out = std::collections::BTreeMap::new();
    for key in scan(conn, &keys.product_pattern()).await? {
        if let Some(id) = keys.id_of(&key, "product") {
            if let Some(s) = product_stock(conn, keys, id).await? {
                out.insert(id.to_string(), s);
            }
        }
    }
    Ok(out)
}

/// Every key matching `pattern` (SCAN, never KEYS: the server stays responsive).
pub async fn scan<C: ConnectionLike + Send>(
    conn: &mut C,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

fn corrupt(e: serde_json::Error) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::TypeError,
        "a stored order key is not the JSON the sink writes",
        e.to_string(),
    ))
}
