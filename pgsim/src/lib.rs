//! `surge pg-sim`: a payment gateway simulator that keeps the promise real
//! providers make about idempotency keys, so the payment pipeline can be
//! tested against timeouts, 5xx, conflicts and declines — and audited
//! against a ledger that is the provider's truth.
//!
//! - `api`: routes, request bodies, the error shape.
//! - `process`: one charge or refund from claim to answer, faults in order.
//! - `idempotency`: the key rules (pure). `payment`: the record and its body.
//! - `ledger`: every PostgreSQL query and the schema (documented there).
//! - `faults`: the knobs and their sampling. `metrics`: what is exported.
//!
//! pg-sim never answers a payment definitely unless the answer is stored:
//! a 200 or 402 is always in the ledger, and a 500 "before" never is.

pub mod api;
pub mod faults;
pub mod idempotency;
pub mod ledger;
pub mod metrics;
pub mod payment;
mod process;
mod state;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use surge_core::settings::PgSimSettings;
use surge_core::shutdown::Shutdown;

use crate::faults::FaultKnobs;
use crate::ledger::Ledger;
use crate::metrics::SimMetrics;
use crate::state::Sim;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("[pg_sim.faults]: {0}")]
    Faults(String),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks the settings `serve` would refuse, before anything is bound.
pub fn check_settings(settings: &PgSimSettings) -> Result<(), ServeError> {
    faults::validate(&settings.faults).map_err(ServeError::Faults)?;
    ledger::check_schema_name(&settings.schema)?;
    Ok(())
}

/// Serves the API, /admin/faults, /metrics and /health on `listener` until
/// `shutdown`, then lets requests in flight finish (an injected hang is cut
/// short). The ledger's schema is created in the background, retried until
/// PostgreSQL answers; until then /health and payments answer 503.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pool: sqlx::PgPool,
    settings: &PgSimSettings,
    currencies: &[String],
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    faults::validate(&settings.faults).map_err(ServeError::Faults)?;
    let sim = Arc::new(Sim {
        ledger: Ledger::new(pool, &settings.schema)?,
        faults: FaultKnobs::new(settings.faults.clone()),
        metrics: SimMetrics::new(currencies),
        key_retention: settings.key_retention,
        admin_token: settings.admin_token.clone().filter(|t| !t.is_empty()),
        ready: Default::default(),
        shutdown: shutdown.clone(),
    });
    let preparing = tokio::spawn(prepare(sim.clone(), settings.schema.clone()));
    let purging = tokio::spawn(purge(sim.clone()));
    let health = {
        let sim = sim.clone();
        move || {
            if sim.is_ready() {
                Ok("ledger ready".to_string())
            } else {
                Err("ledger schema not created yet (is PostgreSQL up?)".to_string())
            }
        }
    };
    let app = api::router(sim.clone()).merge(surge_core::telemetry::router(
        sim.metrics.registry.clone(),
        Arc::new(health),
    ));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.wait())
        .await;
    preparing.abort();
    purging.abort();
    Ok(served?)
}

/// Creates the schema, retrying with backoff while PostgreSQL is away.
async fn prepare(sim: Arc<Sim>, schema: String) {
    let mut delay = Duration::from_millis(250);
    loop {
        match sim.ledger.create_schema().await {
            Ok(()) => {
                sim.ready.store(true, Ordering::Release);
                tracing::info!(message = "ledger ready", schema);
                return;
            }
            Err(error) => {
                tracing::warn!(message = "ledger not ready, retrying", %error, schema, retry_in = ?delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = sim.shutdown.clone().wait() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Forgets expired keys now and then (a request with one overwrites it
/// anyway; this keeps the table to the keys still remembered).
async fn purge(sim: Arc<Sim>) {
    let every = sim
        .key_retention
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = sim.shutdown.clone().wait() => return,
        }
        if !sim.is_ready() {
            continue;
        }
        match sim.ledger.purge_expired(sim.key_retention).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(message = "expired idempotency keys purged", count = n),
            Err(error) => tracing::warn!(message = "purging expired keys failed", %error),
        }
    }
}
