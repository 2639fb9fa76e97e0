//! Reading decisions, coupons, orders and stock back through the
//! connectors' own reads (surge_redis::reads, surge_postgres::reads): the
//! Redis read cache first, PostgreSQL behind it when Redis is down or has
//! not caught up. Both are kept equal to the result topics by exactly-once
//! sinks, so either answer is the topic's.
//! Beside them, the gateway's own accepted markers ([`accepted`],
//! [`mark_accepted`]): which ids it handed to Kafka, so an undecided id can
//! be told from one never sent here.

use serde_json::{json, Value};
use surge_sink::views::{CouponView, DecisionView};

use crate::state::AppState;

/// The decision of request `request_id` of coupon `coupon_id` as JSON, or
/// `None` while it is still pending.
pub async fn decision(
    state: &AppState,
    coupon_id: &str,
    request_id: &str,
) -> Result<Option<Value>, String> {
    let read = async {
        let mut conn = state.redis.connection().await?;
        surge_redis::reads::coupon_decision(&mut conn, &state.keys, coupon_id, request_id).await
    };
    let cached = cached(state, read).await;
    if let Some(Some(d)) = cached {
        return Ok(Some(decision_json(&d, "redis")));
    }
    let d = stored(surge_postgres::reads::coupon_decision(
        &state.postgres,
        coupon_id,
        request_id,
    ))
    .await
    .map_err(|e| match cached {
        // Both stores unreachable: the caller answers 503.
        None => format!("Redis and PostgreSQL unavailable: {e}"),
        Some(_) => format!("PostgreSQL unavailable: {e}"),
    })?;
    Ok(d.map(|d| decision_json(&d, "postgres")))
}

/// Which coupons have a decision under request id `request_id` (sorted; at
/// most [`COUPONS_NAMED`]): the read cache's index, PostgreSQL when Redis
/// cannot answer or has none.
pub async fn coupons_of_request(state: &AppState, request_id: &str) -> Result<Vec<String>, String> {
    let read = async {
        let mut conn = state.redis.connection().await?;
        surge_redis::reads::coupons_of_request(&mut conn, &state.keys, request_id)
            .await
            .map(Some)
    };
    let cached = cached(state, read).await.flatten();
    if let Some(coupons) = cached.as_ref().filter(|c| !c.is_empty()) {
        return Ok(coupons.iter().take(COUPONS_NAMED).cloned().collect());
    }
    let decided = stored(surge_postgres::reads::coupon_decisions_of_request(
        &state.postgres,
        request_id,
        COUPONS_NAMED as i64,
    ))
    .await
    .map_err(|e| match cached {
        None => format!("Redis and PostgreSQL unavailable: {e}"),
        Some(_) => format!("PostgreSQL unavailable: {e}"),
    })?;
    Ok(decided.into_iter().map(|d| d.coupon_id).collect())
}

/// How many coupons an ambiguous request id's answer names.
pub const COUPONS_NAMED: usize = 20;

fn decision_json(d: &DecisionView, source: &str) -> Value {
    json!({
        "requestId": d.request_id,
        "status": "DECIDED",
        "outcome": d.outcome,
        "couponId": d.coupon_id,
        "userId": d.user_id,
        "sequence": d.sequence,
        "stock": d.stock,
        "issued": d.issued,
        "remaining": d.remaining,
        "reason": d.reason,
        "decidedAt": chrono::DateTime::from_timestamp_millis(d.decided_at_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "source": source,
    })
}

/// A coupon's stock, issued and remaining, or `None` when unknown.
pub async fn coupon(state: &AppState, coupon_id: &str) -> Result<Option<Value>, String> {
    let read = async {
        let mut conn = state.redis.connection().await?;
        surge_redis::reads::coupon(&mut conn, &state.keys, coupon_id).await
    };
    if let Some(c) = from_cache(state, read).await {
        return Ok(Some(coupon_json(&c, "redis")));
    }
    let c = stored(surge_postgres::reads::coupon(&state.postgres, coupon_id))
        .await
        .map_err(|e| format!("stores unavailable: {e}"))?;
    Ok(c.map(|c| coupon_json(&c, "postgres")))
}

fn coupon_json(c: &CouponView, source: &str) -> Value {
    json!({
        "couponId": c.coupon_id,
        "stock": c.stock,
        "issued": c.issued,
        "remaining": c.remaining,
        "source": source,
    })
}

/// How long one Redis call may take before the answer goes on without it.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the gateway's marker of `id` (a request id or an order id) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// No marker: not known to this gateway.
    No,
    /// Accepted, as a record with this key (the couponId of a coupon
    /// request, the orderId of an order); `None` for a marker written by a
    /// version that kept no key.
    Yes { key: Option<String> },
}

/// Marker values: the record key after this prefix (a version before wrote `1`).
const KEY_PREFIX: &str = "key=";

/// Whether the gateway accepted `id` within `accepted_marker_ttl`:
/// `Some(true)` it did (Kafka acknowledged it, so it will be decided),
/// `Some(false)` it did not, `None` cannot tell (Redis did not answer, or
/// the markers are off). Best effort: a marker write can fail and a
/// FLUSHALL drops them all, so `Some(false)` means "not known to this
/// gateway", never "not in Kafka" — an id produced straight to Kafka has
/// no marker either.
pub async fn accepted(state: &AppState, id: &str) -> Option<bool> {
    accepted_as(state, id)
        .await
        .map(|a| matches!(a, Accepted::Yes { .. }))
}

/// [`accepted`], with the key the record was sent with.
pub async fn accepted_as(state: &AppState, id: &str) -> Option<Accepted> {
    if state.settings.accepted_marker_ttl.is_zero() {
        return None;
    }
    let key = state.keys.accepted(id);
    let read = async {
        let mut conn = state.redis.connection().await?;
        redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(&mut conn)
            .await
    };
    match tokio::time::timeout(REDIS_TIMEOUT, read).await {
        Ok(Ok(None)) => Some(Accepted::No),
        Ok(Ok(Some(v))) => Some(Accepted::Yes {
            key: v.strip_prefix(KEY_PREFIX).map(str::to_string),
        }),
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

/// Marks `id`, sent as a record keyed `key`, as accepted for
/// `accepted_marker_ttl` (see [`accepted`]). Called after Kafka
/// acknowledged the record; a failure is logged at debug and counted in
/// `surge_gateway_accepted_marker_failures_total`, never turned into an
/// error (the record is in the log either way).
pub async fn mark_accepted(state: &AppState, id: &str, key: &str) {
    mark_accepted_many(state, &[(id, key)]).await
}

/// A TTL in whole milliseconds for `PX` (at least 1).
pub fn ttl_ms(ttl: std::time::Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// [`mark_accepted`] for every (id, record key) of a batch, in one
/// pipelined round trip (one id: one SET).
pub async fn mark_accepted_many(state: &AppState, ids: &[(&str, &str)]) {
    let ttl = state.settings.accepted_marker_ttl;
    if ttl.is_zero() || ids.is_empty() {
        return;
    }
    let ttl_ms = ttl_ms(ttl);
    let write = async {
        let mut conn = state.redis.connection().await?;
        let mut pipe = redis::pipe();
        for (id, key) in ids {
            pipe.cmd("SET")
                .arg(state.keys.accepted(id))
                .arg(format!("{KEY_PREFIX}{key}"))
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    };
    let error = match tokio::time::timeout(REDIS_TIMEOUT, write).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer in time".to_string(),
    };
    state.redis.forget().await;
    state
        .metrics
        .accepted_marker_failures
        .inc_by(ids.len() as u64);
    tracing::debug!(
        message = "accepted markers not written; a poll may read 404 until the decision",
        ids = ids.len(),
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

    pub(crate) async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.client.get_multiplexed_async_connection().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    pub(crate) async fn forget(&self) {
        *self.connection.lock().await = None;
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
    stored(surge_postgres::reads::order(&state.postgres, order_id))
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
    stored(surge_postgres::reads::product_stock(
        &state.postgres,
        product_id,
    ))
    .await
    .map(|v| v.map(|v| (v, "postgres")))
    .map_err(|e| format!("stores unavailable: {e}"))
}

/// A PostgreSQL read where a table that does not exist yet holds nothing:
/// the PostgreSQL sink creates the tables when it first starts, and until
/// then a read answers as an empty store does (404, PENDING), not 503 with
/// the database's error. Said once per process, at WARN.
async fn stored<T: Default>(
    read: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    match read.await {
        Err(e) if is_undefined_table(&e) => {
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    message = "PostgreSQL has no surge tables yet (the PostgreSQL sink creates them when it starts); reads answer as an empty store until then",
                    error = %e
                );
            }
            Ok(T::default())
        }
        other => other,
    }
}

/// PostgreSQL's undefined_table (SQLSTATE 42P01).
fn is_undefined_table(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01"))
}

/// What the cache holds, or `None` when it holds nothing or does not answer
/// within [`REDIS_TIMEOUT`] (then PostgreSQL is asked).
async fn from_cache<T, E: std::fmt::Display>(
    state: &AppState,
    read: impl std::future::Future<Output = Result<Option<T>, E>>,
) -> Option<T> {
    cached(state, read).await.flatten()
}

/// What the cache answered (`Some(None)`: it holds nothing), or `None` when
/// the read failed or took longer than [`REDIS_TIMEOUT`]; then the
/// connection is dropped, to be reopened by the next read. A hash the sink
/// did not write counts as a failed read: PostgreSQL answers instead.
async fn cached<T, E: std::fmt::Display>(
    state: &AppState,
    read: impl std::future::Future<Output = Result<Option<T>, E>>,
) -> Option<Option<T>> {
    match tokio::time::timeout(REDIS_TIMEOUT, read).await {
        Ok(Ok(v)) => Some(v),
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
