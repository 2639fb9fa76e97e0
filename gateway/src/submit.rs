//! Handing a command to Kafka. 202 is only ever answered after Kafka
//! acknowledged the record (acks=all, idempotent producer), so every
//! accepted request is in the log and will be decided. When Kafka cannot
//! take it within `produce_timeout`, the answer is 503 and the client
//! retries with the same Idempotency-Key (the pipeline dedupes request ids).

use std::time::Instant;

use axum::http::StatusCode;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use surge_schemas::coupon::CouponCommand;

use crate::api::ApiError;
use crate::state::AppState;

pub async fn submit(state: &AppState, command: &CouponCommand) -> Result<(), ApiError> {
    let payload = state
        .commands
        .encode(command)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}")))?;
    let record = FutureRecord::to(&state.coupon_issue)
        .key(&command.coupon_id)
        .payload(&payload);
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
    let error = match sent {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err((e, _))) => e.to_string(),
        Err(_) => "no answer in time".to_string(),
    };
    // During an outage (and its aftermath) every request fails the same
    // way; the outage is logged once (crate::kafka), requests at debug.
    if state.kafka.in_outage() {
        tracing::debug!(message = "command not acknowledged by Kafka", request_id = %command.request_id, error);
    } else {
        tracing::warn!(message = "command not acknowledged by Kafka", request_id = %command.request_id, error);
    }
    Err(unavailable())
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Kafka did not acknowledge the request in time; retry with the same Idempotency-Key",
    )
}
