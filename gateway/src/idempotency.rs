//! An Idempotency-Key names one request. A retry with the same key and the
//! same request is the same request (the pipelines dedupe it); the same key
//! on a different request — another route, another path id, another body —
//! is refused 422, as payment providers do, instead of being handed to a
//! pipeline that would drop it as a duplicate (one partition) or decide it
//! a second time (another partition) and let polls of the key read the
//! other request's decision.
//!
//! The gateway remembers what each client-given key was first used for in
//! Redis (`<keyspace>:idempotency:<id>`, for `accepted_marker_ttl`), claimed
//! with `SET NX` before the record is produced, so two racing requests with
//! one key cannot both pass. Best effort like the accepted markers: when
//! Redis does not answer the request goes on unchecked (counted in
//! `surge_gateway_idempotency_unchecked_total`), since refusing every write
//! during a cache outage would be worse; a reuse then reaches the pipeline,
//! which dead-letters what it can tell (a reused request id on the same
//! partition).

use axum::http::{HeaderMap, StatusCode};
use surge_schemas::Contract;

use crate::api::{check_id, ApiError};
use crate::state::AppState;

/// How long one Redis call may take before the request goes on unchecked.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a request is, for comparing two uses of one key: its topic and its
/// record, without the time it was sent (a retry is sent later). A hex
/// xxh3-128 of the record's Avro value, so two gateway versions agree as
/// long as the contract does.
pub fn fingerprint<T: Contract>(message: &T) -> String {
    let mut value = message.to_avro();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        fields.retain(|(name, _)| name != "requestedAt");
    }
    let text = format!("{}\n{value:?}", T::TOPIC);
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

/// The request's Idempotency-Key, `None` without one; 400 naming
/// Idempotency-Key for one that is not an id (visible ASCII, see
/// [`check_id`]) or for more than one Idempotency-Key header, which would
/// leave open which of them names the request.
pub fn key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let given = headers.get_all("idempotency-key");
    let Some(value) = given.iter().next() else {
        return Ok(None);
    };
    let count = given.iter().count();
    if count > 1 {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key",
            format!(
                "{count} Idempotency-Key headers: send exactly one Idempotency-Key header (a key names one request)"
            ),
        ));
    }
    let key = value.to_str().map_err(|_| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key",
            "Idempotency-Key must be visible ASCII",
        )
    })?;
    check_id("Idempotency-Key", key)?;
    Ok(Some(key))
}

/// Whether the client chose the id (only then can it be reused: ids the
/// gateway makes are fresh UUIDv7s): exactly one valid Idempotency-Key,
/// the one [`key`] reads (the routes have refused any other by then).
pub fn client_chosen(headers: &HeaderMap) -> bool {
    matches!(key(headers), Ok(Some(_)))
}

/// Claims every (id, fingerprint) in one pipelined round trip (`SET NX
/// GET`: the claim and, when the key is taken, what took it, atomically):
/// per claim, whether the key was already used for another request. When
/// Redis does not answer they all go on unchecked (`false`).
pub async fn claim_many(state: &AppState, claims: &[(&str, String)]) -> Vec<bool> {
    let ttl = state.settings.accepted_marker_ttl;
    if ttl.is_zero() || claims.is_empty() {
        return vec![false; claims.len()];
    }
    let check = async {
        let mut conn = state.redis.connection().await?;
        let mut pipe = redis::pipe();
        for (id, fingerprint) in claims {
            pipe.cmd("SET")
                .arg(state.keys.idempotency(id))
                .arg(fingerprint)
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(crate::reads::ttl_ms(ttl));
        }
        // Nil: the key was free and is ours now; else the fingerprint of
        // the request that holds it (this same one, for a retry).
        let first: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok::<_, redis::RedisError>(
            first
                .into_iter()
                .zip(claims)
                .map(|(first, (_, fingerprint))| first.is_some_and(|f| &f != fingerprint))
                .collect(),
        )
    };
    let error = match tokio::time::timeout(REDIS_TIMEOUT, check).await {
        Ok(Ok(reused)) => return reused,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer in time".to_string(),
    };
    state.redis.forget().await;
    state
        .metrics
        .idempotency_unchecked
        .inc_by(claims.len() as u64);
    tracing::debug!(
        message = "idempotency keys not checked (Redis did not answer)",
        keys = claims.len(),
        error
    );
    vec![false; claims.len()]
}

/// The 422 of an Idempotency-Key (or a batch's requestId, `field`) already
/// used for another request.
pub fn reused(state: &AppState, field: &str, id: &str) -> ApiError {
    ApiError::field(
        StatusCode::UNPROCESSABLE_ENTITY,
        field,
        format!(
            "{field} {id} was already used for a different request (another route, path or body) in the last {}; a key names one request: use a new key for a new request",
            humantime::format_duration(state.settings.accepted_marker_ttl)
        ),
    )
}

/// Claims `id` for the request `fingerprint` describes. Ok when the key is
/// new, or was used for this same request (a retry); 422 when it was used
/// for another one.
pub async fn claim(state: &AppState, id: &str, fingerprint: &str) -> Result<(), ApiError> {
    match claim_many(state, &[(id, fingerprint.to_string())]).await[..] {
        [true] => Err(reused(state, "Idempotency-Key", id)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(keys: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for k in keys {
            h.append("idempotency-key", HeaderValue::from_static(k));
        }
        h
    }

    #[test]
    fn exactly_one_key_names_the_request() {
        assert_eq!(key(&headers(&[])), Ok(None));
        assert_eq!(key(&headers(&["k-1"])), Ok(Some("k-1")));
        assert!(client_chosen(&headers(&["k-1"])));
        assert!(!client_chosen(&headers(&[])));
        for two in [&["two-a", "two-b"][..], &["same", "same"], &["a", "b", "c"]] {
            let e = key(&headers(two)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{two:?}");
            assert_eq!(e.field.as_deref(), Some("Idempotency-Key"));
            assert!(
                e.error.contains("exactly one Idempotency-Key header"),
                "{}",
                e.error
            );
            assert!(!client_chosen(&headers(two)));
        }
        let e = key(&headers(&["a b"])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Idempotency-Key"));
    }
}
