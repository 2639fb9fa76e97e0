//! Logs, metrics and health for every long-running process: tracing to
//! stderr (text or JSON), Prometheus text on `/metrics`, and `/health`
//! answering 200 while the process can do its job and 503 otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::settings::{LogFormat, LogSettings};
use crate::shutdown::Shutdown;

/// The tracing filter `directives` (e.g. `info,rdkafka=warn`), or why it
/// is not one. Every directive must parse: settings refuse a `[log] level`
/// that this refuses, rather than dropping the bad part with a note on stderr.
pub fn log_filter(directives: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(directives)
        .map_err(|e| e.to_string())
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides the configured level.
pub fn init_logging(settings: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(error) => {
            if let Some(value) = std::env::var_os("RUST_LOG") {
                eprintln!(
                    "ignoring RUST_LOG={}: {error}; using [log] level",
                    value.to_string_lossy()
                );
            }
            // Settings loaded by `Settings::load` have a valid level; one
            // built by hand keeps the directives that parse.
            log_filter(&settings.level).unwrap_or_else(|_| EnvFilter::new(&settings.level))
        }
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// What `/health` reports.
pub trait HealthCheck: Send + Sync + 'static {
    /// `Ok` with a short status when healthy, `Err` with the reason otherwise.
    fn check(&self) -> Result<String, String>;
}

impl<F: Fn() -> Result<String, String> + Send + Sync + 'static> HealthCheck for F {
    fn check(&self) -> Result<String, String> {
        self()
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    health: Arc<dyn HealthCheck>,
}

/// The `/metrics` and `/health` routes, to mount on a server of one's own.
pub fn router(registry: Registry, health: Arc<dyn HealthCheck>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health_route))
        .with_state(AppState { registry, health })
}

/// Serves [`router`] on `addr` (port 0 picks a free one) until `shutdown`.
/// Returns the bound address and the server task.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    health: Arc<dyn HealthCheck>,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(registry, health);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.wait())
            .await
        {
            tracing::warn!(message = "telemetry server stopped", %error);
        }
    });
    Ok((local, task))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let families = state.registry.gather();
    match TextEncoder::new().encode(&families, &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn health_route(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.check() {
        Ok(status) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ok", "detail": status })),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "unavailable", "detail": reason })),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_with_a_bad_directive_is_refused() {
        assert!(log_filter("info").is_ok());
        assert!(log_filter("info,librdkafka=warn,rdkafka=warn").is_ok());
        assert!(
            log_filter("surge=debug,,rdkafka=warn").is_ok(),
            "empty parts are fine"
        );
        assert!(log_filter("info,,,=x[").is_err());
        assert!(log_filter("loud").is_ok(), "a bare target");
        assert!(log_filter("surge=loud").is_err(), "not a level");
    }
}
