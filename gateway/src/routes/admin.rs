//! Admin endpoints, behind a bearer token. Coupon commands go through
//! coupon-issue and product commands through inventory-commands, like the
//! requests they affect, so creates and stock changes are ordered with them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use surge_schemas::coupon::{CouponAction, CouponCommand, Discount, DiscountKind};
use surge_schemas::inventory::{InventoryAction, InventoryCommand};

use super::coupons::{accepted, request_id};
use crate::api::{
    check_id, integer, money, path_segment, string_if_present, timestamp, ApiError, Body, PathId,
};
use crate::state::AppState;
use crate::submit;

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/coupons", post(create))
        .route("/admin/coupons/{couponId}/stock", post(adjust))
        .route("/admin/products", post(create_product))
        .route("/admin/products/{productId}/stock", post(adjust_product))
        // Before anything reads the body: an unauthorized caller learns nothing.
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
}

/// The token, then the throttle: an address out of attempts gets 429
/// whatever its token (so a guesser cannot tell a right guess); otherwise
/// a wrong token uses up one attempt and gets 403, and a request without a
/// bearer token (none, or another scheme) gets 401 and uses up none.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let verdict = authorize(&state, req.headers());
    // Only a token that was presented and wrong is a guess.
    let wrong_token = matches!(&verdict, Err(e) if e.status == StatusCode::FORBIDDEN)
        && state.admin_token.is_some();
    if let Err(throttled) =
        state
            .admin_throttle
            .attempt(client, tokio::time::Instant::now(), wrong_token)
    {
        state.metrics.admin_auth_throttled.inc();
        if throttled.first {
            tracing::warn!(
                message = "too many wrong admin tokens: admin requests from this address get 429 for now",
                %client
            );
        }
        let secs = throttled.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed admin authentications from this address; retry after {secs} s"
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }
    match verdict {
        Ok(()) => next.run(req).await,
        Err(e) => {
            if wrong_token {
                state.metrics.admin_auth_failures.inc();
            }
            let mut response = e.into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// 401 without a bearer token — no Authorization header, another scheme
/// (`Basic ...`), or `Bearer` with no token: nothing was guessed, so it
/// uses up no attempt; 403 with a wrong token or when no token is
/// configured.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(header::AUTHORIZATION);
    let Some(token) = given.and_then(bearer) else {
        let why = if given.is_some() {
            "; this Authorization header is not a Bearer token"
        } else {
            ""
        };
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("admin endpoints need Authorization: Bearer <token>{why}"),
        ));
    };
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin endpoints are disabled: no [gateway] admin_token is configured",
        ));
    };
    if same_token(token.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "wrong admin token"))
    }
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110
/// section 11.1) and may be followed by more than one space. `None` for
/// another scheme, a value that is not visible ASCII, or no token.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares digests in constant time: neither a shared prefix nor the
/// expected token's length shows in the timing.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    Sha256::digest(given)
        .ct_eq(&Sha256::digest(expected))
        .into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    coupon_id: String,
    #[serde(deserialize_with = "integer")]
    stock: i64,
    #[serde(default, deserialize_with = "string_if_present")]
    active_from: Option<String>,
    #[serde(default, deserialize_with = "string_if_present")]
    active_until: Option<String>,
    /// What the coupon takes off an order it is redeemed with; none: the
    /// coupon only records who got it.
    #[serde(default)]
    discount: Option<DiscountBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DiscountBody {
    kind: String,
    /// FIXED: the amount off; PERCENT: the percentage (`"12.5"`), both
    /// decimal strings.
    value: String,
    #[serde(default, deserialize_with = "string_if_present")]
    cap: Option<String>,
}

/// The contract's discount, or the 400 naming the field (`discount.value`).
fn discount(body: DiscountBody) -> Result<Discount, ApiError> {
    let kind = DiscountKind::from_symbol(&body.kind).ok_or_else(|| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "discount.kind",
            format!(
                "discount.kind must be FIXED or PERCENT, not {:?}",
                body.kind
            ),
        )
    })?;
    let d = Discount {
        kind,
        value: money("discount.value", &body.value)?,
        cap: body
            .cap
            .as_deref()
            .map(|c| money("discount.cap", c))
            .transpose()?,
    };
    d.validate().map_err(|e| {
        let field = match &e {
            surge_schemas::ContractError::Invalid { field, .. } => format!("discount.{field}"),
            _ => "discount".to_string(),
        };
        ApiError::field(StatusCode::BAD_REQUEST, &field, e.to_string())
    })?;
    Ok(d)
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
            discount: body.discount.map(discount).transpose()?,
        },
    };
    submit::submit(&state, &headers, &command).await?;
    Ok(accepted(&command.request_id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AdjustBody {
    #[serde(deserialize_with = "integer")]
    delta: i64,
    #[serde(default, deserialize_with = "string_if_present")]
    reason: Option<String>,
}

async fn adjust(
    State(state): State<AppState>,
    PathId(coupon_id): PathId,
    headers: HeaderMap,
    Body(body): Body<AdjustBody>,
) -> Result<Response, ApiError> {
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
    submit::submit(&state, &headers, &command).await?;
    Ok(accepted(&command.request_id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CreateProductBody {
    product_id: String,
    #[serde(deserialize_with = "integer")]
    stock: i64,
}

/// The CreateProduct command of a body, or the 400 naming the field.
pub(crate) fn product_create(
    request_id: String,
    body: CreateProductBody,
) -> Result<InventoryCommand, ApiError> {
    check_id("productId", &body.product_id)?;
    if body.stock < 0 {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "stock",
            "stock must be 0 or more",
        ));
    }
    Ok(InventoryCommand {
        request_id,
        product_id: body.product_id,
        requested_at: surge_schemas::now(),
        command: InventoryAction::CreateProduct { stock: body.stock },
    })
}

async fn create_product(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<CreateProductBody>,
) -> Result<Response, ApiError> {
    let command = product_create(request_id(&headers)?, body)?;
    submit::send(
        &state,
        &headers,
        &state.orders.inventory,
        &command,
        &command.request_id,
    )
    .await?;
    Ok(product_accepted(&command))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AdjustProductBody {
    #[serde(deserialize_with = "integer")]
    delta: i64,
    #[serde(default, deserialize_with = "string_if_present")]
    reason: Option<String>,
}

/// The AdjustStock command of a body: `delta` is added to the product's
/// available (and created) units; the pipeline refuses (INVALID) a delta
/// that would take available below 0.
pub(crate) fn product_adjust(
    request_id: String,
    product_id: String,
    body: AdjustProductBody,
) -> Result<InventoryCommand, ApiError> {
    if body.delta == 0 {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "delta",
            "delta must not be 0",
        ));
    }
    Ok(InventoryCommand {
        request_id,
        product_id,
        requested_at: surge_schemas::now(),
        command: InventoryAction::AdjustStock {
            delta: body.delta,
            reason: body.reason,
        },
    })
}

async fn adjust_product(
    State(state): State<AppState>,
    PathId(product_id): PathId,
    headers: HeaderMap,
    Body(body): Body<AdjustProductBody>,
) -> Result<Response, ApiError> {
    let command = product_adjust(request_id(&headers)?, product_id, body)?;
    submit::send(
        &state,
        &headers,
        &state.orders.inventory,
        &command,
        &command.request_id,
    )
    .await?;
    Ok(product_accepted(&command))
}

/// 202 with the request id and where the product's stock is read.
fn product_accepted(command: &InventoryCommand) -> Response {
    let poll = format!("/products/{}", path_segment(&command.product_id));
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, poll.clone())],
        Json(serde_json::json!({
            "requestId": command.request_id,
            "productId": command.product_id,
            "status": "PENDING",
            "poll": poll,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequest;

    async fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, ApiError> {
        let req = axum::http::Request::builder()
            .method("POST")
            .uri("/admin/products")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(json.to_string()))
            .unwrap();
        Body::<T>::from_request(req, &()).await.map(|Body(b)| b)
    }

    #[tokio::test]
    async fn product_commands_from_bodies() {
        let c = product_create(
            "r1".into(),
            parse(r#"{"productId":"p1","stock":5}"#).await.unwrap(),
        )
        .unwrap();
        assert_eq!((c.request_id.as_str(), c.product_id.as_str()), ("r1", "p1"));
        assert_eq!(c.command, InventoryAction::CreateProduct { stock: 5 });
        let c = product_create(
            "r".into(),
            parse(r#"{"productId":"p1","stock":0}"#).await.unwrap(),
        )
        .unwrap();
        assert_eq!(c.command, InventoryAction::CreateProduct { stock: 0 });
        let c = product_adjust(
            "r2".into(),
            "p1".into(),
            parse(r#"{"delta":-3,"reason":"damaged"}"#).await.unwrap(),
        )
        .unwrap();
        assert_eq!(c.product_id, "p1");
        assert_eq!(
            c.command,
            InventoryAction::AdjustStock {
                delta: -3,
                reason: Some("damaged".into())
            }
        );
        let c = product_adjust(
            "r".into(),
            "p".into(),
            parse(r#"{"delta":4}"#).await.unwrap(),
        )
        .unwrap();
        assert_eq!(
            c.command,
            InventoryAction::AdjustStock {
                delta: 4,
                reason: None
            }
        );
    }

    #[tokio::test]
    async fn bad_product_bodies_name_their_field() {
        for (json, want) in [
            (r#"{"stock":1}"#, "productId"),
            (r#"{"productId":"","stock":1}"#, "productId"),
            (r#"{"productId":"a b","stock":1}"#, "productId"),
            (r#"{"productId":"p"}"#, "stock"),
            (r#"{"productId":"p","stock":-1}"#, "stock"),
            (r#"{"productId":"p","stock":"5"}"#, "stock"),
            (r#"{"productId":"p","stock":1.5}"#, "stock"),
            (r#"{"productId":"p","stock":1,"reason":"x"}"#, "reason"),
        ] {
            let e = match parse::<CreateProductBody>(json).await {
                Ok(b) => product_create("r".into(), b).unwrap_err(),
                Err(e) => e,
            };
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{json}");
            assert_eq!(e.field.as_deref(), Some(want), "{json}: {}", e.error);
        }
        for (json, want) in [
            ("{}", "delta"),
            (r#"{"delta":0}"#, "delta"),
            (r#"{"delta":null}"#, "delta"),
            (r#"{"delta":1,"reason":null}"#, "reason"),
            (r#"{"delta":1,"stock":1}"#, "stock"),
        ] {
            let e = match parse::<AdjustProductBody>(json).await {
                Ok(b) => product_adjust("r".into(), "p".into(), b).unwrap_err(),
                Err(e) => e,
            };
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{json}");
            assert_eq!(e.field.as_deref(), Some(want), "{json}: {}", e.error);
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"secret", b"secret"));
        assert!(!same_token(b"secret", b"secreT"));
        assert!(!same_token(b"secret", b"secret-longer"));
        assert!(!same_token(b"", b"secret"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let token = |v: &'static str| bearer(&HeaderValue::from_static(v)).map(str::to_string);
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("BEARER  abc").as_deref(), Some("abc"));
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearerabc"), None);
        assert_eq!(token("Bearer "), None, "no token");
        assert_eq!(token("Bearer"), None);
    }
}
