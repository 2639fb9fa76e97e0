//! Orders: place an order (order-create) and ask for its cancellation
//! (order-cancel), both keyed by order id and answered 202 once Kafka
//! acknowledged the record; read an order back (`GET /orders/{orderId}`)
//! from the stores the sinks keep equal to order-status. The gateway checks what the
//! contracts require (a record that breaks them would go to the saga's
//! dead-letter topic); the saga's own rules (currencies, line and quantity
//! limits, prices, duplicate products) are its to apply, and it answers
//! REJECTED on order-status. The decision is polled at `/orders/{orderId}`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use surge_schemas::order::{OrderCancel, OrderCreate, OrderItem};

use super::coupons::request_id;
use crate::api::{
    check_id, integer, money, path_segment, string_if_present, ApiError, Body, PathId,
};
use crate::state::AppState;
use crate::submit;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/orders", post(create))
        .route("/orders/{orderId}/cancel", post(cancel))
        .route("/orders/{orderId}", get(read))
}

/// The order as its latest transition left it, its lines and its whole
/// status history; PENDING while the gateway accepted it but no store has
/// it yet (or when it cannot tell), 404 when it never accepted it.
async fn read(
    State(state): State<AppState>,
    PathId(order_id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    match crate::reads::order(&state, &order_id).await {
        Ok(Some((o, source))) => Ok(Json(order_json(&o, source))),
        Ok(None) => match crate::reads::accepted(&state, &order_id).await {
            Some(false) => Err(ApiError::field(
                StatusCode::NOT_FOUND,
                "orderId",
                format!(
                    "no order {order_id} was accepted by this gateway and none is on order-status yet \
                     (an order produced straight to Kafka reads as 404 until the saga answers it)"
                ),
            )),
            Some(true) | None => Ok(Json(json!({ "orderId": order_id, "status": "PENDING" }))),
        },
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

fn time(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The read model as the API shows it: money as decimal strings, times as
/// RFC 3339.
fn order_json(o: &surge_sink::views::OrderView, source: &str) -> serde_json::Value {
    use surge_schemas::Money;
    json!({
        "orderId": o.order_id,
        "status": "DECIDED",
        "userId": o.user_id,
        "state": o.state,
        "terminal": o.terminal,
        "reason": o.reason,
        "total": Money(o.total_minor).to_string(),
        "currency": o.currency,
        "couponId": o.coupon_id,
        "paymentId": o.payment_id,
        "refundId": o.refund_id,
        "version": o.version,
        "updatedAt": time(o.updated_at_ms),
        "lines": o.lines.iter().map(|l| json!({
            "productId": l.product_id,
            "quantity": l.quantity,
            "unitPrice": Money(l.unit_price_minor).to_string(),
        })).collect::<Vec<_>>(),
        "history": o.history.iter().map(|h| json!({
            "version": h.version,
            "event": h.event,
            "state": h.state,
            "reason": h.reason,
            "cancelRequestId": h.cancel_request_id,
            "refundId": h.refund_id,
            "occurredAt": time(h.occurred_at_ms),
        })).collect::<Vec<_>>(),
        "source": source,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CreateBody {
    user_id: String,
    items: Vec<ItemBody>,
    currency: String,
    #[serde(default, deserialize_with = "string_if_present")]
    coupon_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ItemBody {
    product_id: String,
    #[serde(deserialize_with = "integer")]
    quantity: i32,
    /// A decimal string (`"12.50"`): JSON numbers are binary floats.
    unit_price: String,
}

/// The order-create record of a body, or the 400 naming the field that
/// breaks the contract (`items[2].quantity`, ...).
pub(crate) fn order_create(order_id: String, body: CreateBody) -> Result<OrderCreate, ApiError> {
    check_id("userId", &body.user_id)?;
    if body.items.is_empty() {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "items",
            "items must hold at least one line",
        ));
    }
    let mut items = Vec::with_capacity(body.items.len());
    for (i, item) in body.items.into_iter().enumerate() {
        let field = |name: &str| format!("items[{i}].{name}");
        check_id(&field("productId"), &item.product_id)?;
        if item.quantity < 1 {
            let f = field("quantity");
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                &f,
                format!("{f} must be at least 1"),
            ));
        }
        items.push(OrderItem {
            product_id: item.product_id,
            quantity: item.quantity,
            unit_price: money(&field("unitPrice"), &item.unit_price)?,
        });
    }
    check_id("currency", &body.currency)?;
    if let Some(coupon) = &body.coupon_id {
        check_id("couponId", coupon)?;
    }
    Ok(OrderCreate {
        order_id,
        user_id: body.user_id,
        items,
        currency: body.currency,
        coupon_id: body.coupon_id,
        requested_at: surge_schemas::now(),
    })
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body<CreateBody>,
) -> Result<Response, ApiError> {
    // The Idempotency-Key is the order id: a retry is the same order.
    let order = order_create(request_id(&headers)?, body)?;
    submit::send(
        &state,
        &headers,
        &state.orders.create,
        &order,
        &order.order_id,
    )
    .await?;
    let poll = poll(&order.order_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, poll.clone())],
        Json(json!({ "orderId": order.order_id, "status": "PENDING", "poll": poll })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CancelBody {
    /// Who asks; the saga refuses (CANCEL_REFUSED) anyone but the buyer.
    user_id: String,
    #[serde(default, deserialize_with = "string_if_present")]
    reason: Option<String>,
}

pub(crate) fn order_cancel(
    request_id: String,
    order_id: String,
    body: CancelBody,
) -> Result<OrderCancel, ApiError> {
    check_id("userId", &body.user_id)?;
    Ok(OrderCancel {
        request_id,
        order_id,
        user_id: body.user_id,
        reason: body.reason,
        requested_at: surge_schemas::now(),
    })
}

async fn cancel(
    State(state): State<AppState>,
    PathId(order_id): PathId,
    headers: HeaderMap,
    Body(body): Body<CancelBody>,
) -> Result<Response, ApiError> {
    let cancel = order_cancel(request_id(&headers)?, order_id, body)?;
    submit::send(
        &state,
        &headers,
        &state.orders.cancel,
        &cancel,
        &cancel.request_id,
    )
    .await?;
    let poll = poll(&cancel.order_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, poll.clone())],
        Json(json!({
            "requestId": cancel.request_id,
            "orderId": cancel.order_id,
            "status": "PENDING",
            "poll": poll,
        })),
    )
        .into_response())
}

/// Where an order's state is read.
fn poll(order_id: &str) -> String {
    format!("/orders/{}", path_segment(order_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequest;
    use surge_schemas::Money;

    /// The body as the route reads it: through [`Body`], then the checks.
    async fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, ApiError> {
        let req = axum::http::Request::builder()
            .method("POST")
            .uri("/orders")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(json.to_string()))
            .unwrap();
        Body::<T>::from_request(req, &()).await.map(|Body(b)| b)
    }

    async fn create(json: &str) -> Result<OrderCreate, ApiError> {
        order_create("o-1".into(), parse::<CreateBody>(json).await?)
    }

    async fn field_of(json: &str) -> (StatusCode, Option<String>) {
        let e = create(json).await.unwrap_err();
        assert!(!e.error.is_empty());
        (e.status, e.field)
    }

    const GOOD: &str = r#"{"userId":"u1","currency":"KRW","couponId":"c1",
        "items":[{"productId":"p1","quantity":2,"unitPrice":"12.50"},
                 {"productId":"p2","quantity":1,"unitPrice":"3"}]}"#;

    #[tokio::test]
    async fn a_good_order_becomes_its_record() {
        let o = create(GOOD).await.unwrap();
        assert_eq!(o.order_id, "o-1");
        assert_eq!(o.user_id, "u1");
        assert_eq!(o.currency, "KRW");
        assert_eq!(o.coupon_id.as_deref(), Some("c1"));
        assert_eq!(
            o.items,
            vec![
                OrderItem {
                    product_id: "p1".into(),
                    quantity: 2,
                    unit_price: Money(1250)
                },
                OrderItem {
                    product_id: "p2".into(),
                    quantity: 1,
                    unit_price: Money(300)
                },
            ]
        );
        let without_coupon = r#"{"userId":"u1","currency":"KRW","items":[{"productId":"p1","quantity":1,"unitPrice":"0.5"}]}"#;
        let o = create(without_coupon).await.unwrap();
        assert_eq!(o.coupon_id, None);
        assert_eq!(o.items[0].unit_price, Money(50));
    }

    #[tokio::test]
    async fn bad_orders_name_their_field() {
        let bad = StatusCode::BAD_REQUEST;
        let line = |item: &str| {
            format!(
                r#"{{"userId":"u1","currency":"KRW","items":[{{"productId":"p0","quantity":1,"unitPrice":"1.00"}},{item}]}}"#
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (r#"{"currency":"KRW","items":[]}"#.into(), "userId"),
            (r#"{"userId":"","currency":"KRW","items":[]}"#.into(), "userId"),
            (r#"{"userId":"u1","currency":"KRW","items":[]}"#.into(), "items"),
            (r#"{"userId":"u1","currency":"KRW"}"#.into(), "items"),
            (r#"{"userId":"u1","currency":"KRW","items":null}"#.into(), "items"),
            (r#"{"userId":"u1","currency":"KRW","items":{}}"#.into(), "items"),
            (r#"{"userId":"u1","items":[{"productId":"p","quantity":1,"unitPrice":"1"}]}"#.into(), "currency"),
            (r#"{"userId":"u1","currency":" ","items":[{"productId":"p","quantity":1,"unitPrice":"1"}]}"#.into(), "currency"),
            (r#"{"userId":"u1","currency":"KRW","couponId":null,"items":[{"productId":"p","quantity":1,"unitPrice":"1"}]}"#.into(), "couponId"),
            (r#"{"userId":"u1","currency":"KRW","couponId":"","items":[{"productId":"p","quantity":1,"unitPrice":"1"}]}"#.into(), "couponId"),
            (r#"{"userId":"u1","currency":"KRW","orderId":"x","items":[{"productId":"p","quantity":1,"unitPrice":"1"}]}"#.into(), "orderId"),
            (line(r#"{"productId":"p1","quantity":0,"unitPrice":"1.00"}"#), "items[1].quantity"),
            (line(r#"{"productId":"p1","quantity":-3,"unitPrice":"1.00"}"#), "items[1].quantity"),
            (line(r#"{"productId":"p1","quantity":1.5,"unitPrice":"1.00"}"#), "items[1].quantity"),
            (line(r#"{"productId":"p1","quantity":2147483648,"unitPrice":"1.00"}"#), "items[1].quantity"),
            (line(r#"{"productId":"p1","quantity":"1","unitPrice":"1.00"}"#), "items[1].quantity"),
            (line(r#"{"productId":"p1","unitPrice":"1.00"}"#), "items[1].quantity"),
            (line(r#"{"productId":"","quantity":1,"unitPrice":"1.00"}"#), "items[1].productId"),
            (line(r#"{"productId":"a b","quantity":1,"unitPrice":"1.00"}"#), "items[1].productId"),
            (line(r#"{"quantity":1,"unitPrice":"1.00"}"#), "items[1].productId"),
            (line(r#"{"productId":"p1","quantity":1,"unitPrice":"1.005"}"#), "items[1].unitPrice"),
            (line(r#"{"productId":"p1","quantity":1,"unitPrice":12.5}"#), "items[1].unitPrice"),
            (line(r#"{"productId":"p1","quantity":1,"unitPrice":"twelve"}"#), "items[1].unitPrice"),
            (line(r#"{"productId":"p1","quantity":1,"unitPrice":"12345678901234567.00"}"#), "items[1].unitPrice"),
            (line(r#"{"productId":"p1","quantity":1}"#), "items[1].unitPrice"),
            (line(r#"{"productId":"p1","quantity":1,"unitPrice":"1","colour":"red"}"#), "items[1].colour"),
            (line(r#""p1""#), "items[1]"),
        ];
        let mut failures = Vec::new();
        for (json, want) in &cases {
            let got = field_of(json).await;
            if got != (bad, Some(want.to_string())) {
                failures.push(format!("{json}: want {want}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[tokio::test]
    async fn business_rules_are_the_sagas() {
        // Unknown currency, a negative price, one product twice, a huge
        // quantity: contract-valid, so accepted and REJECTED by the saga.
        let o = create(
            r#"{"userId":"u1","currency":"ZZZ","items":[
            {"productId":"p1","quantity":2000000000,"unitPrice":"-1.00"},
            {"productId":"p1","quantity":1,"unitPrice":"9999999999999999.99"}]}"#,
        )
        .await
        .unwrap();
        assert_eq!(o.items[0].unit_price, Money(-100));
        assert_eq!(o.items[1].unit_price, Money(999_999_999_999_999_999));
    }

    #[test]
    fn polls_route_back_to_the_order() {
        assert_eq!(poll("o-1"), "/orders/o-1");
        assert_eq!(poll("a/b?c"), "/orders/a%2Fb%3Fc");
    }

    #[tokio::test]
    async fn a_cancel_needs_the_buyer_and_may_say_why() {
        let k = order_cancel(
            "r-1".into(),
            "o-1".into(),
            parse(r#"{"userId":"u1","reason":"changed my mind"}"#)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                k.request_id.as_str(),
                k.order_id.as_str(),
                k.user_id.as_str()
            ),
            ("r-1", "o-1", "u1")
        );
        assert_eq!(k.reason.as_deref(), Some("changed my mind"));
        let k = order_cancel(
            "r".into(),
            "o".into(),
            parse(r#"{"userId":"u1"}"#).await.unwrap(),
        )
        .unwrap();
        assert_eq!(k.reason, None);
        for (json, want) in [
            ("{}", "userId"),
            (r#"{"userId":""}"#, "userId"),
            (r#"{"userId":"u1","reason":null}"#, "reason"),
            (r#"{"userId":"u1","reason":7}"#, "reason"),
            (r#"{"userId":"u1","why":"x"}"#, "why"),
        ] {
            let e = match parse::<CancelBody>(json).await {
                Ok(b) => order_cancel("r".into(), "o".into(), b).unwrap_err(),
                Err(e) => e,
            };
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{json}");
            assert_eq!(e.field.as_deref(), Some(want), "{json}: {}", e.error);
        }
    }
}
