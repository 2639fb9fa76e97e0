//! Reading decisions and coupons back: the Redis read cache first (the
//! Redis sink's keys), PostgreSQL behind it (the PostgreSQL sink's tables)
//! when Redis is down or has not caught up. Both are kept equal to
//! coupon-result by exactly-once sinks, so either answer is the topic's.
//! Beside them, the gateway's own accepted markers ([`accepted`],
//! [`mark_accepted`]): which ids it handed to Kafka, so an undecided id can
//! be told from one never sent here.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::state::AppState;

/// A request's decision as JSON, or `None` while it is still pending.
pub async fn decision(state: &AppState, request_id: &str) -> Result<Option<Value>, String> {
    let cached = hash(state, &state.keys.request(request_id)).await;
    if let Some(h) = cached.as_ref().filter(|h| !h.is_empty()) {
        let num = |f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok());
        return Ok(Some(json!({
            "requestId": request_id,
            "status": "DECIDED",
            "outcome": h.get("outcome"),
            "couponId": h.get("coupon_id"),
            "userId": h.get("user_id"),
            "sequence": num("sequence"),
            "stock": num("stock"),
            "issued": num("issued"),
            "remaining": num("remaining"),
            "reason": h.get("reason"),
            "decidedAt": num("decided_at")
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "source": "redis",
        })));
    }
    type Row = (
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
    let row: Option<Row> = sqlx::query_as(
        "select coupon_id, user_id, outcome, sequence, stock, issued, remaining, reason, decided_at
         from coupon_decisions where request_id = $1",
    )
    .bind(request_id)
    .fetch_optional(&state.postgres)
    .await
    .map_err(|e| match cached {
        // Both stores unreachable: the caller answers 503.
        None => format!("Redis and PostgreSQL unavailable: {e}"),
        Some(_) => format!("PostgreSQL unavailable: {e}"),
    })?;
    Ok(row.map(
        |(coupon_id, user_id, outcome, sequence, stock, issued, remaining, reason, decided_at)| {
            json!({
                "requestId": request_id,
                "status": "DECIDED",
                "outcome": outcome,
                "couponId": coupon_id,
                "userId": user_id,
                "sequence": sequence,
                "stock": stock,
                "issued": issued,
                "remaining": remaining,
                "reason": reason,
                "decidedAt": decided_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "source": "postgres",
            })
        },
    ))
}

/// A coupon's stock, issued and remaining, or `None` when unknown.
pub async fn coupon(state: &AppState, coupon_id: &str) -> Result<Option<Value>, String> {
    let cached = hash(state, &state.keys.coupon(coupon_id)).await;
    if let Some(h) = cached.as_ref().filter(|h| !h.is_empty()) {
        let num = |f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok());
        return Ok(Some(json!({
            "couponId": coupon_id,
            "stock": num("stock"),
            "issued": num("issued"),
            "remaining": num("remaining"),
            "source": "redis",
        })));
    }
    let row: Option<(i64, i64, i64)> =
        sqlx::query_as("select stock, issued, remaining from coupons where coupon_id = $1")
            .bind(coupon_id)
            .fetch_optional(&state.postgres)
            .await
            .map_err(|e| format!("stores unavailable: {e}"))?;
    Ok(row.map(|(stock, issued, remaining)| {
        json!({
            "couponId": coupon_id,
            "stock": stock,
            "issued": issued,
            "remaining": remaining,
            "source": "postgres",
        })
    }))
}

/// How long one Redis call may take before the answer goes on without it.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the gateway accepted `id` (a request id or an order id) within
/// `accepted_marker_ttl`: `Some(true)` it did (Kafka acknowledged it, so it
/// will be decided), `Some(false)` it did not, `None` cannot tell (Redis
/// did not answer, or the markers are off). Best effort: a marker write
/// can fail and a FLUSHALL drops them all, so `Some(false)` means "not
/// known to this gateway", never "not in Kafka" — an id produced straight
/// to Kafka has no marker either.
pub async fn accepted(state: &AppState, id: &str) -> Option<bool> {
    if state.settings.accepted_marker_ttl.is_zero() {
        return None;
    }
    let key = state.keys.accepted(id);
    let read = async {
        let mut conn = state.redis.connection().await?;
        redis::cmd("EXISTS")
            .arg(&key)
            .query_async::<i64>(&mut conn)
            .await
    };
    match tokio::time::timeout(REDIS_TIMEOUT, read).await {
        Ok(Ok(n)) => Some(n > 0),
        Ok(Err(e)) => {
            tracing::debug!(message = "redis read of an accepted marker failed", error = %e);
            state.redis.forget().await;
            None
        }
        Err(_) => {
            state.redis.forget().await;
            None
        }
    }
}

/// Marks `id` as accepted for `accepted_marker_ttl` (see [`accepted`]).
/// Called after Kafka acknowledged the record; a failure is logged at
/// debug and counted in `surge_gateway_accepted_marker_failures_total`,
/// never turned into an error (the record is in the log either way).
pub async fn mark_accepted(state: &AppState, id: &str) {
    let ttl = state.settings.accepted_marker_ttl;
    if ttl.is_zero() {
        return;
    }
    let key = state.keys.accepted(id);
    let write = async {
        let mut conn = state.redis.connection().await?;
        redis::cmd("SET")
            .arg(&key)
            .arg("1")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async::<()>(&mut conn)
            .await
    };
    let error = match tokio::time::timeout(REDIS_TIMEOUT, write).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer in time".to_string(),
    };
    state.redis.forget().await;
    state.metrics.accepted_marker_failures.inc();
    tracing::debug!(
        message = "accepted marker not written; a poll may read 404 until the decision",
        id,
        error
    );
}

/// One multiplexed Redis connection shared by all requests, reopened after
/// an error.
pub struct Cache {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl Cache {
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.client.get_multiplexed_async_connection().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self) {
        *self.connection.lock().await = None;
    }
}

/// HGETALL, or `None` when Redis cannot be reached (then PostgreSQL answers).
async fn hash(state: &AppState, key: &str) -> Option<HashMap<String, String>> {
    let read = async {
        let mut conn = state.redis.connection().await?;
        redis::cmd("HGETALL")
            .arg(key)
            .query_async::<HashMap<String, String>>(&mut conn)
            .await
    };
    match tokio::time::timeout(REDIS_TIMEOUT, read).await {
        Ok(Ok(h)) => Some(h),
        Ok(Err(e)) => {
            tracing::debug!(message = "redis read failed; asking PostgreSQL", error = %e);
            state.redis.forget().await;
            None
        }
        Err(_) => {
            state.redis.forget().await;
            None
        }
    }
}

/// An order from the read cache, PostgreSQL behind it: the view and which
/// store answered, or `None` when neither holds it (not decided yet, or
/// never sent).
pub async fn order(
    state: &AppState,
    order_id: &str,
) -> Result<Option<(surge_sink::views::OrderView, &'static str)>, String> {
    let cached = async {
        let mut conn = state.redis.connection().await?;
        surge_redis::reads::order(&mut conn, &state.keys, order_id).await
    };
    if let Some(v) = from_cache(state, cached).await {
        return Ok(Some((v, "redis")));
    }
    surge_postgres::reads::order(&state.postgres, order_id)
        .await
        .map(|v| v.map(|v| (v, "postgres")))
        .map_err(|e| format!("stores unavailable: {e}"))
}

/// A product's stock, the read cache first, as [`order`].
pub async fn product_stock(
    state: &AppState,
    product_id: &str,
) -> Result<Option<(surge_sink::views::StockView, &'static str)>, String> {
    let cached = async {
        let mut conn = state.redis.connection().await?;
        surge_redis::reads::product_stock(&mut conn, &state.keys, product_id).await
    };
    if let Some(v) = from_cache(state, cached).await {
        return Ok(Some((v, "redis")));
    }
    surge_postgres::reads::product_stock(&state.postgres, product_id)
        .await
        .map(|v| v.map(|v| (v, "postgres")))
        .map_err(|e| format!("stores unavailable: {e}"))
}

/// What the cache holds, or `None` when it holds nothing or does not answer
/// within [`REDIS_TIMEOUT`] (then PostgreSQL is asked).
async fn from_cache<T>(
    state: &AppState,
    read: impl std::future::Future<Output = redis::RedisResult<Option<T>>>,
) -> Option<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, read).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::debug!(message = "redis read failed; asking PostgreSQL", error = %e);
            state.redis.forget().await;
            None
        }
        Err(_) => {
            state.redis.forget().await;
            None
        }
    }
}
