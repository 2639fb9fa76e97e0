//! Reading decisions and coupons back: the Redis read cache first (the
//! Redis sink's keys), PostgreSQL behind it (the PostgreSQL sink's tables)
//! when Redis is down or has not caught up. Both are kept equal to
//! coupon-result by exactly-once sinks, so either answer is the topic's.

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
    match tokio::time::timeout(std::time::Duration::from_secs(1), read).await {
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
