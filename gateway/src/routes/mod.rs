//! The router, one module per area: coupons, orders (`POST /orders`,
//! `POST /orders/{orderId}/cancel`, `GET /orders/{orderId}`), products
//! (`GET /products/{productId}`), admin (coupons and products, behind the
//! token), ops.

pub mod admin;
pub mod coupon_batch;
pub mod coupons;
pub mod ops;
pub mod orders;
pub mod products;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use crate::api;
use crate::state::AppState;

/// Every route, JSON errors for everything else, the body limit, and
/// request metrics.
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.settings.max_body_bytes;
    Router::new()
        .merge(coupons::routes(&state))
        .merge(orders::routes())
        .merge(products::routes())
        .merge(admin::routes(&state))
        .merge(ops::routes())
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::wrong_method)
        .layer(middleware::from_fn(api::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Counts requests by route template (bounded label values) and status.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    state
        .metrics
        .requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}
