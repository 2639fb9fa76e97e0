//! Handing a command to Kafka. 202 is only ever answered after Kafka
//! acknowledged the record (acks=all, idempotent producer), so every
//! accepted request is in the log and will be decided. When Kafka cannot
//! take it within `produce_timeout`, the answer is 503 and the client
//! retries with the same Idempotency-Key (the pipelines dedupe request ids,
//! the saga order ids). The 503 carries the id (`requestId`), also when
//! the gateway made it: the record may still be delivered, so a retry
//! without that key would be a second request.
//!
//! After the acknowledgement the id the client polls by is marked as
//! accepted in Redis (best effort, see [`crate::reads::accepted`]), so a
//! poll can tell "not decided yet" from "never sent here".

use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use surge_schemas::coupon::CouponCommand;
use surge_schemas::Contract;

use crate::api::ApiError;
use crate::idempotency;
use crate::state::{AppState, Topic};

/// A coupon command (issue request or admin) to coupon-issue. `headers`
/// say whether the client chose the request id (then it is claimed first,
/// see [`crate::idempotency`]).
pub async fn submit(
    state: &AppState,
    headers: &HeaderMap,
    command: &CouponCommand,
) -> Result<(), ApiError> {
    claim(state, headers, command, &command.request_id).await?;
    let topic = &state.coupon_issue;
    let payload = state.commands.encode(command).map_err(encoding)?;
    produce(state, topic, command.key(), &payload, &command.request_id).await
}

/// `message` to `topic`, keyed by its contract key; `id` is the id the
/// client polls by (request id or order id), claimed first when the client
/// chose it and marked as accepted once Kafka acknowledged the record.
pub async fn send<T: Contract>(
    state: &AppState,
    headers: &HeaderMap,
    topic: &Topic<T>,
    message: &T,
    id: &str,
) -> Result<(), ApiError> {
    claim(state, headers, message, id).await?;
    let payload = topic.codec.encode(message).map_err(encoding)?;
    produce(state, &topic.name, message.key(), &payload, id).await
}

async fn claim<T: Contract>(
    state: &AppState,
    headers: &HeaderMap,
    message: &T,
    id: &str,
) -> Result<(), ApiError> {
    if !idempotency::client_chosen(headers) {
        return Ok(());
    }
    idempotency::claim(state, id, &idempotency::fingerprint(message)).await
}

fn encoding(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}"))
}

async fn produce(
    state: &AppState,
    topic: &str,
    key: &str,
    payload: &[u8],
    id: &str,
) -> Result<(), ApiError> {
    match deliver(state, topic, key, payload).await {
        Ok(()) => {
            // Never fails the 202: the record is in the log either way.
            crate::reads::mark_accepted(state, id, key).await;
            Ok(())
        }
        Err(error) => {
            not_acknowledged(state, topic, id, &error);
            Err(unavailable(id))
        }
    }
}

/// Sends one record and waits, bounded, for Kafka's acknowledgement; the
/// error as text when none came.
pub(crate) async fn deliver(
    state: &AppState,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> Result<(), String> {
    let record = FutureRecord::to(topic).key(key).payload(payload);
    let started = Instant::now();
    // message.timeout.ms (= produce_timeout) bounds delivery and usually
    // answers first; the outer timeout also bounds the wait for queue space,
    // so the answer always comes in time. A 503 from the outer timeout can
    // leave the record queued and later delivered: hence "retry with the
    // same Idempotency-Key", which makes that harmless.
    let sent = tokio::time::timeout(
        state.produce_timeout + std::time::Duration::from_millis(1500),
        state
            .producer
            .send(record, Timeout::After(state.produce_timeout)),
    )
    .await;
    state
        .metrics
        .produce_seconds
        .observe(started.elapsed().as_secs_f64());
    match sent {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.to_string()),
        Err(_) => Err("no answer in time".to_string()),
    }
}

/// Logs a record Kafka did not acknowledge. During an outage (and its
/// aftermath) every request fails the same way; the outage is logged once
/// (crate::kafka), requests at debug.
pub(crate) fn not_acknowledged(state: &AppState, topic: &str, id: &str, error: &str) {
    if state.kafka.in_outage() {
        tracing::debug!(
            message = "command not acknowledged by Kafka",
            topic,
            id,
            error
        );
    } else {
        tracing::warn!(
            message = "command not acknowledged by Kafka",
            topic,
            id,
            error
        );
    }
}

/// The 503 of a record Kafka did not acknowledge in time, naming the id
/// to retry with (`requestId`, the order id for an order): the record may
/// still be delivered, and only the same key makes the retry the same
/// request.
fn unavailable(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "Kafka did not acknowledge the request in time; retry with Idempotency-Key: {id} \
             (its requestId): it may still be delivered, and only the same key makes the retry \
             the same request"
        ),
    )
    .with("requestId", id)
}
