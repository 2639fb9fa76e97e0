//! Users' endpoints: ask for a coupon (one, or many in a batch: see
//! `coupon_batch`), poll the answer, read a coupon.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use surge_schemas::coupon::{CouponAction, CouponCommand};
use tower::limit::ConcurrencyLimitLayer;

use crate::api::{check_id, path_segment, ApiError, Body, PathId, PathIds};
use crate::state::AppState;
use crate::{idempotency, reads, submit};

pub fn routes(state: &AppState) -> Router<AppState> {
    // A batch carries up to max_batch_requests requests: its own body
    // limit, and at most max_batch_calls of them read and held at once.
    let batch_limit = DefaultBodyLimit::max(state.settings.max_batch_body_bytes());
    let batch_calls = ConcurrencyLimitLayer::new(state.settings.max_batch_calls);
    Router::new()
        .route(
            "/coupon-requests",
            post(super::coupon_batch::issue_batch)
                .layer::<_, std::convert::Infallible>(batch_calls)
                .layer(batch_limit),
        )
        .route("/coupons/{couponId}/issue", post(issue))
        .route("/coupons/{couponId}", get(coupon))
        .route("/coupon-requests/{requestId}", get(request))
        .route(
            "/coupons/{couponId}/requests/{requestId}",
            get(coupon_request),
        )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssueBody {
    user_id: String,
}

async fn issue(
    State(state): State<AppState>,
    PathId(coupon_id): PathId,
    headers: HeaderMap,
    Body(body): Body<IssueBody>,
) -> Result<Response, ApiError> {
    check_id("userId", &body.user_id)?;
    let command = issue_command(request_id(&headers)?, coupon_id, body.user_id);
    submit::submit(&state, &headers, &command).await?;
    Ok(accepted(&command.request_id))
}

/// The Idempotency-Key when given (a retry is then the same request),
/// otherwise a fresh id; 400 for a bad key or more than one (see
/// [`idempotency::key`]).
pub fn request_id(headers: &HeaderMap) -> Result<String, ApiError> {
    Ok(match idempotency::key(headers)? {
        Some(key) => key.to_string(),
        None => uuid::Uuid::now_v7().to_string(),
    })
}

/// The issue request of `user_id` for one unit of `coupon_id`, sent now.
pub fn issue_command(request_id: String, coupon_id: String, user_id: String) -> CouponCommand {
    CouponCommand {
        request_id,
        coupon_id,
        requested_at: surge_schemas::now(),
        command: CouponAction::Issue { user_id },
    }
}

/// Where a coupon request's decision is polled.
pub fn poll_path(request_id: &str) -> String {
    format!("/coupon-requests/{}", path_segment(request_id))
}

/// 202 with the request id and where to poll for the decision.
pub fn accepted(request_id: &str) -> Response {
    let poll = poll_path(request_id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, poll.clone())],
        Json(json!({ "requestId": request_id, "status": "PENDING", "poll": poll })),
    )
        .into_response()
}

/// A request id names a request of one coupon. The gateway refuses one
/// Idempotency-Key on two coupons, but a producer straight to Kafka can
/// send `r1` for c1 and for c2: two requests. So the poll by id alone
/// answers for the coupon this gateway accepted the id for (its marker
/// keeps the record key), else for the one coupon with a decision under
/// the id, and is 409 naming them when there are several — never another
/// request's decision.
async fn request(
    State(state): State<AppState>,
    PathId(request_id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    let marker = reads::accepted_as(&state, &request_id).await;
    if let Some(reads::Accepted::Yes { key: Some(coupon) }) = &marker {
        return decided_or_pending(&state, coupon, &request_id).await;
    }
    let coupons = reads::coupons_of_request(&state, &request_id)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    match coupons.as_slice() {
        [coupon] => decided_or_pending(&state, coupon, &request_id).await,
        // Not decided (yet): PENDING if this gateway accepted it, or if
        // Redis cannot say; 404 if it never did.
        [] => match marker {
            Some(reads::Accepted::Yes { .. }) | None => Ok(pending(&request_id)),
            Some(reads::Accepted::No) => Err(not_accepted(&state, "requestId", &request_id)),
        },
        several => Err(ambiguous(&request_id, several)),
    }
}

/// The decision of request `requestId` of coupon `couponId`: exact, also
/// for ids used on several coupons.
async fn coupon_request(
    State(state): State<AppState>,
    PathIds(ids): PathIds,
) -> Result<Json<serde_json::Value>, ApiError> {
    let [coupon_id, request_id] = <[String; 2]>::try_from(ids)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "route has two ids"))?;
    match reads::decision(&state, &coupon_id, &request_id).await {
        Ok(Some(d)) => Ok(Json(d)),
        Ok(None) => match reads::accepted_as(&state, &request_id).await {
            Some(reads::Accepted::Yes { key }) if key.as_deref().is_none_or(|k| k == coupon_id) => {
                Ok(pending(&request_id))
            }
            None => Ok(pending(&request_id)),
            Some(reads::Accepted::Yes { key }) => Err(not_accepted_for_coupon(
                &state,
                &coupon_id,
                &request_id,
                key.as_deref(),
            )),
            Some(reads::Accepted::No) => Err(not_accepted_for_coupon(
                &state,
                &coupon_id,
                &request_id,
                None,
            )),
        },
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

async fn decided_or_pending(
    state: &AppState,
    coupon_id: &str,
    request_id: &str,
) -> Result<Json<serde_json::Value>, ApiError> {
    match reads::decision(state, coupon_id, request_id).await {
        Ok(Some(d)) => Ok(Json(d)),
        Ok(None) => Ok(pending(request_id)),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

fn pending(request_id: &str) -> Json<serde_json::Value> {
    Json(json!({ "requestId": request_id, "status": "PENDING" }))
}

/// 409: one request id, requests of several coupons (sent straight to Kafka).
fn ambiguous(request_id: &str, coupons: &[String]) -> ApiError {
    let polls: Vec<String> = coupons
        .iter()
        .map(|c| coupon_poll_path(c, request_id))
        .collect();
    ApiError::field(
        StatusCode::CONFLICT,
        "requestId",
        format!(
            "request id {request_id} names requests of {} coupons ({}); a request id names a \
             request of one coupon: poll {}",
            coupons.len(),
            coupons.join(", "),
            polls.join(" or ")
        ),
    )
}

/// Where the decision of request `request_id` of coupon `coupon_id` is read.
pub fn coupon_poll_path(coupon_id: &str, request_id: &str) -> String {
    format!(
        "/coupons/{}/requests/{}",
        path_segment(coupon_id),
        path_segment(request_id)
    )
}

/// 404 for an undecided id this gateway has no accepted marker of.
pub fn not_accepted(state: &AppState, field: &str, id: &str) -> ApiError {
    ApiError::field(
        StatusCode::NOT_FOUND,
        field,
        format!(
            "{field} {id} is not decided and was not accepted by this gateway in the last {}; \
             requests produced straight to Kafka read as 404 until decided",
            humantime::format_duration(state.settings.accepted_marker_ttl)
        ),
    )
}

/// 404 for request `request_id` of coupon `coupon_id`: undecided, and not
/// accepted by this gateway for this coupon — `accepted_for` names the
/// coupon it was accepted for instead, if any (the id alone is not the
/// request: it names one request per coupon).
pub fn not_accepted_for_coupon(
    state: &AppState,
    coupon_id: &str,
    request_id: &str,
    accepted_for: Option<&str>,
) -> ApiError {
    let elsewhere = accepted_for.map_or_else(String::new, |other| {
        format!(
            " (this gateway accepted {request_id} as a request of coupon {other}: poll {})",
            coupon_poll_path(other, request_id)
        )
    });
    ApiError::field(
        StatusCode::NOT_FOUND,
        "requestId",
        format!(
            "no request {request_id} of coupon {coupon_id} is decided, nor was one accepted by this \
             gateway in the last {}{elsewhere}; requests produced straight to Kafka read as 404 \
             until decided",
            humantime::format_duration(state.settings.accepted_marker_ttl)
        ),
    )
}

async fn coupon(
    State(state): State<AppState>,
    PathId(coupon_id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    match reads::coupon(&state, &coupon_id).await {
        Ok(Some(c)) => Ok(Json(c)),
        Ok(None) => Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "couponId",
            format!("unknown coupon {coupon_id}"),
        )),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_of_another_coupon_is_not_said_to_be_unknown() {
        let state = super::super::testing::state(surge_core::settings::GatewaySettings {
            accepted_marker_ttl: std::time::Duration::from_secs(3600),
            ..super::super::testing::settings()
        });
        let e = not_accepted_for_coupon(&state, "c6", "key-001", Some("c1"));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.field.as_deref(), Some("requestId"));
        assert!(
            e.error.starts_with(
                "no request key-001 of coupon c6 is decided, nor was one accepted by this gateway in the last 1h"
            ),
            "{}",
            e.error
        );
        assert!(
            e.error
                .contains("coupon c1: poll /coupons/c1/requests/key-001"),
            "{}",
            e.error
        );
        assert!(!e.error.contains("was not accepted"), "{}", e.error);
        let e = not_accepted_for_coupon(&state, "c6", "key-001", None);
        assert!(!e.error.contains("c1"), "{}", e.error);
    }
}
