//! Admin endpoints, behind a bearer token. They go through coupon-issue
//! like every request, so creates and stock changes are ordered with the
//! requests they affect.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use surge_schemas::coupon::{CouponAction, CouponCommand};

use super::coupons::{accepted, request_id};
use crate::api::{check_id, ApiError, Body};
use crate::state::AppState;
use crate::submit;

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/coupons", post(create))
        .route("/admin/coupons/{coupon_id}/stock", post(adjust))
        // Before anything reads the body: an unauthorized caller learns nothing.
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
}

async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match authorize(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let mut response = e.into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("header"));
            }
            response
        }
    }
}

/// 401 without credentials, 403 with wrong ones or when no token is configured.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(given) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin endpoints need Authorization: Bearer <token>",
        ));
    };
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin endpoints are disabled: no [gateway] admin_token is configured",
        ));
    };
    let given = given
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "wrong admin token"));
    }
    Ok(())
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    coupon_id: String,
    stock: i64,
    active_from: Option<String>,
    active_until: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<CreateBody>,
) -> Result<Response, ApiError> {
    check_id("couponId", &body.coupon_id)?;
    if body.stock < 0 {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "stock",
            "stock must be 0 or more",
        ));
    }
    let active_from = timestamp("activeFrom", body.active_from.as_deref())?;
    let active_until = timestamp("activeUntil", body.active_until.as_deref())?;
    if let (Some(from), Some(until)) = (active_from, active_until) {
        if until <= from {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "activeUntil",
                "activeUntil must be after activeFrom",
            ));
        }
    }
    let command = CouponCommand {
        request_id: request_id(&headers)?,
        coupon_id: body.coupon_id,
        requested_at: surge_schemas::now(),
        command: CouponAction::Create {
            stock: body.stock,
            active_from,
            active_until,
            discount: None,
        },
    };
    submit::submit(&state, &command).await?;
    Ok(accepted(&command.request_id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AdjustBody {
    delta: i64,
    reason: Option<String>,
}

async fn adjust(
    State(state): State<AppState>,
    Path(coupon_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<AdjustBody>,
) -> Result<Response, ApiError> {
    check_id("couponId", &coupon_id)?;
    if body.delta == 0 {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "delta",
            "delta must not be 0",
        ));
    }
    let command = CouponCommand {
        request_id: request_id(&headers)?,
        coupon_id,
        requested_at: surge_schemas::now(),
        command: CouponAction::AdjustStock {
            delta: body.delta,
            reason: body.reason,
        },
    };
    submit::submit(&state, &command).await?;
    Ok(accepted(&command.request_id))
}

fn timestamp(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::field(
                        StatusCode::BAD_REQUEST,
                        field,
                        format!("{field} must be an RFC 3339 timestamp: {e}"),
                    )
                })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret-longer"));
    }
}
