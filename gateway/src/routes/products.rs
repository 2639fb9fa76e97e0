//! A product's stock as users read it (`GET /products/{productId}`), from
//! the stores the sinks keep equal to inventory-result. Creating products
//! and changing their stock are admin routes (admin.rs).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::api::{ApiError, PathId};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/products/{productId}", get(read))
}

async fn read(
    State(state): State<AppState>,
    PathId(product_id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    match crate::reads::product_stock(&state, &product_id).await {
        Ok(Some((s, source))) => Ok(Json(json!({
            "productId": product_id,
            "available": s.available,
            "reserved": s.reserved,
            "sold": s.sold,
            "created": s.created,
            "updatedAt": chrono::DateTime::from_timestamp_millis(s.updated_at_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "source": source,
        }))),
        Ok(None) => Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "productId",
            format!("unknown product {product_id}"),
        )),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}
