//! `surge gateway`: the seed's controllers as an asynchronous API. A request
//! is validated, encoded with the registered Avro schema, produced to its
//! topic keyed by the contract's key (coupon-issue by coupon, order-create
//! and order-cancel by order, inventory-commands by product) and answered
//! `202 Accepted` with its id once Kafka acknowledged it; the decision is
//! polled later from the read stores (Redis first, PostgreSQL behind it),
//! and an accepted marker in Redis tells "not decided yet" from "never sent
//! here". The gateway decides nothing: first come first served is the
//! pipeline's log order, an order's fate the saga's.
//!
//! - `routes/`: one module per area (coupons, orders, products, admin, ops).
//! - `api`: the extractors, validation and the JSON error every 4xx/5xx is.
//! - `server`: connections — the cap, header/body/idle timeouts, shutdown.
//! - `throttle`: wrong admin tokens per client address.
//! - `submit`: Kafka (encode, produce, bounded wait). `reads`: the stores.
//! - `kafka`: whether Kafka answers, logged once per outage.
//! - `openapi`: the OpenAPI document served at /openapi.json.

// The OpenAPI document is one serde_json::json! tree, deeper than the
// default macro recursion limit allows.
#![recursion_limit = "256"]

pub mod api;
pub mod idempotency;
pub mod kafka;
pub mod metrics;
pub mod openapi;
pub mod reads;
pub mod routes;
pub mod server;
pub mod state;
pub mod submit;
pub mod throttle;

pub use routes::router;
pub use state::AppState;

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// accepting and lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = state.settings.clone();
    let metrics = state.metrics.clone();
    server::serve(listener, router(state), &settings, metrics, shutdown).await
}
