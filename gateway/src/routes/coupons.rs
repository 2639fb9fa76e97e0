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

use crate::api::{check_id, path_segment, ApiError, Body, PathId};
use crate::state::AppState;
use crate::{reads, submit};

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
/// otherwise a fresh id.
pub fn request_id(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(uuid::Uuid::now_v7().to_string()),
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "Idempotency-Key",
                    "Idempotency-Key must be visible ASCII",
                )
            })?;
            check_id("Idempotency-Key", key)?;
            Ok(key.to_string())
        }
    }
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

async fn request(
    State(state): State<AppState>,
    PathId(request_id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    match reads::decision(&state, &request_id).await {
        Ok(Some(d)) => Ok(Json(d)),
        // Not decided (yet): PENDING if this gateway accepted it, or if
        // Redis cannot say; 404 if it never did.
        Ok(None) => match reads::accepted(&state, &request_id).await {
            Some(true) | None => Ok(Json(
                json!({ "requestId": request_id, "status": "PENDING" }),
            )),
            Some(false) => Err(not_accepted(&state, "requestId", &request_id)),
        },
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
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
