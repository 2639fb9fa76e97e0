//! `POST /coupon-requests`: many issue requests in one call, for backends
//! that gather their users' clicks. Each item is the request
//! `POST /coupons/{couponId}/issue` would make (its `requestId` the
//! Idempotency-Key, claimed the same way), polled at the same
//! `/coupon-requests/{requestId}`. What one HTTP request costs — a
//! connection turn, parsing, two Redis round trips, waiting for Kafka — is
//! paid once per batch, so the front door keeps up with the pipeline
//! behind it.
//!
//! The body is checked whole first: one bad item, or one requestId on two
//! different requests, is 400 naming it (`requests[3].userId`) and nothing is sent.
//! Then each item stands alone, as REST Proxy answers per record: 202 when
//! every item is in the log, 503 when Kafka took none of them, else 207;
//! each with every item's outcome — PENDING (in the log), REFUSED (its
//! requestId used for another request; 422 on its own) or UNAVAILABLE (not
//! acknowledged by Kafka in time; retry it with the same requestId). The
//! claims take one pipelined Redis round trip, the markers another.

use super::coupons::{issue_command, poll_path};
use crate::api::{check_id, string_if_present, ApiError, Body};
use crate::state::AppState;
use crate::{idempotency, reads, submit};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    requests: Vec<BatchItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BatchItem {
    coupon_id: String,
    user_id: String,
    /// The item's Idempotency-Key; absent: the gateway makes a UUIDv7.
    #[serde(default, deserialize_with = "string_if_present")]
    request_id: Option<String>,
}

/// What became of one item.
enum Outcome {
    Pending,
    Refused(ApiError),
    Unavailable,
}

pub async fn issue_batch(
    State(state): State<AppState>,
    Body(body): Body<BatchBody>,
) -> Result<Response, ApiError> {
    let max = state.settings.max_batch_requests;
    if body.requests.is_empty() || body.requests.len() > max {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "requests",
            format!(
                "requests must hold 1 to {max} issue requests, not {}",
                body.requests.len()
            ),
        ));
    }
    let mut commands = Vec::with_capacity(body.requests.len());
    let mut claims = Vec::new();
    let mut keys = std::collections::HashMap::new();
    for (i, item) in body.requests.into_iter().enumerate() {
        let field = |name: &str| format!("requests[{i}].{name}");
        check_id(&field("couponId"), &item.coupon_id)?;
        check_id(&field("userId"), &item.user_id)?;
        if let Some(id) = &item.request_id {
            check_id(&field("requestId"), id)?;
        }
        let chosen = item.request_id.is_some();
        let command = issue_command(
            item.request_id
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            item.coupon_id,
            item.user_id,
        );
        if chosen {
            let fingerprint = idempotency::fingerprint(&command);
            // Checked here, not only in Redis: with Redis down, one id on
            // two requests would reach two coupons' partitions unchecked.
            // The same request twice is a retry inside the batch: fine.
            match keys.get(&command.request_id) {
                Some(first) if first != &fingerprint => {
                    return Err(ApiError::field(
                        StatusCode::BAD_REQUEST,
                        &field("requestId"),
                        format!(
                            "requestId {} names another request earlier in this batch; a requestId names one request",
                            command.request_id
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    keys.insert(command.request_id.clone(), fingerprint.clone());
                }
            }
            claims.push((i, fingerprint));
        }
        commands.push(command);
    }

    let mut outcomes: Vec<Outcome> = (0..commands.len()).map(|_| Outcome::Pending).collect();
    let keyed: Vec<(&str, String)> = claims
        .iter()
        .map(|(i, f)| (commands[*i].request_id.as_str(), f.clone()))
        .collect();
    let reused = idempotency::claim_many(&state, &keyed).await;
    for ((i, _), reused) in claims.iter().zip(reused) {
        if reused {
            outcomes[*i] = Outcome::Refused(idempotency::reused(
                &state,
                &format!("requests[{i}].requestId"),
                &commands[*i].request_id,
            ));
        }
    }

    let state = &state;
    let topic = state.coupon_issue.as_str();
    let mut sends = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        if matches!(outcomes[i], Outcome::Pending) {
            let payload = state.commands.encode(command).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}"))
            })?;
            sends.push(async move {
                (
                    i,
                    submit::deliver(state, topic, &command.coupon_id, &payload).await,
                )
            });
        }
    }
    let mut failed = None;
    let mut failed_any = false;
    for (i, sent) in futures::future::join_all(sends).await {
        if let Err(error) = sent {
            failed_any = true;
            failed.get_or_insert((i, error));
            outcomes[i] = Outcome::Unavailable;
        }
    }
    if let Some((i, error)) = failed {
        // Once per batch: its items fail alike.
        submit::not_acknowledged(state, topic, &commands[i].request_id, &error);
    }
    let pending: Vec<(&str, &str)> = commands
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, Outcome::Pending))
        .map(|(c, _)| (c.request_id.as_str(), c.coupon_id.as_str()))
        .collect();
    // Never fails the answer: the records are in the log either way.
    reads::mark_accepted_many(state, &pending).await;

    let accepted = pending.len();
    let all = accepted == commands.len();
    let none_in_log = accepted == 0 && failed_any;
    let results: Vec<Value> = commands
        .iter()
        .zip(outcomes)
        .map(|(c, outcome)| match outcome {
            Outcome::Pending => json!({
                "requestId": c.request_id, "status": "PENDING",
                "poll": poll_path(&c.request_id),
            }),
            Outcome::Refused(e) => json!({
                "requestId": c.request_id, "status": "REFUSED", "error": e.error, "field": e.field,
            }),
            Outcome::Unavailable => json!({
                "requestId": c.request_id, "status": "UNAVAILABLE",
                "error": "Kafka did not acknowledge the request in time; retry it with the same requestId",
            }),
        })
        .collect();
    // Nothing in the log because Kafka took nothing: 503, as one request
    // would get, so that outages show as 5xx on batches too.
    let status = if all {
        StatusCode::ACCEPTED
    } else if none_in_log {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((
        status,
        Json(json!({ "accepted": accepted, "results": results })),
    )
        .into_response())
}
