//! For operators and clients: /health, /metrics, /openapi.json.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, TextEncoder};
use rdkafka::producer::Producer;
use serde_json::json;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// Unix time of the last successful Kafka metadata round trip, kept fresh
/// by [`watch_kafka`] so /health never blocks on the broker.
#[derive(Default)]
pub struct KafkaSeen(AtomicI64);

impl KafkaSeen {
    pub fn age_secs(&self) -> Option<i64> {
        let at = self.0.load(Ordering::Relaxed);
        (at > 0).then(|| chrono::Utc::now().timestamp() - at)
    }
}

/// Asks the producer's cluster for metadata every 2 s.
pub fn watch_kafka(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let s = state.clone();
            let ok = tokio::task::spawn_blocking(move || {
                s.producer
                    .client()
                    .fetch_metadata(Some(&s.coupon_issue), Duration::from_secs(2))
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            if ok {
                state
                    .kafka_seen
                    .0
                    .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

async fn health(State(state): State<AppState>) -> Response {
    match state.kafka_seen.age_secs() {
        Some(age) if age <= 10 => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "detail": format!("kafka answered {age} s ago") })),
        )
            .into_response(),
        Some(age) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "detail": format!("kafka last answered {age} s ago") })),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "detail": "kafka not reached yet" })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&state.metrics.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
