//! `surge gateway`: the seed's controllers as an asynchronous API. A request
//! is validated, encoded with the registered Avro schema, produced to
//! coupon-issue (keyed by coupon) and answered `202 Accepted` with its
//! request id once Kafka acknowledged it; the decision is polled later from
//! the read stores (Redis first, PostgreSQL behind it). The gateway decides
//! nothing: first come first served is the pipeline's log order.
//!
//! - `routes/`: one module per area (coupons, admin, ops); orders slot in as
//!   `routes/orders.rs` with their own commands.
//! - `api`: the extractors, validation and the JSON error every 4xx/5xx is.
//! - `server`: connections — the cap, header/body/idle timeouts, shutdown.
//! - `throttle`: wrong admin tokens per client address.
//! - `submit`: Kafka (encode, produce, bounded wait). `reads`: the stores.
//! - `kafka`: whether Kafka answers, logged once per outage.
//! - `openapi`: the OpenAPI document served at /openapi.json.

pub mod api;
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
