//! `surge pg-sim`: the payment gateway simulator (see surge-pgsim). Serves
//! until SIGTERM/SIGINT, then finishes requests in flight.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use surge_core::shutdown::Shutdown;
use surge_core::Settings;

/// `surge pg-sim --help`.
pub const LONG_ABOUT: &str = "\
Serve a payment gateway simulator: POST /v1/charges and /v1/refunds under an \
Idempotency-Key header (a repeat replays the stored answer, a reused key with \
another body gets 422, one in flight 409), GET /v1/payments/{key}, \
GET/PUT /admin/faults, /metrics and /health.

Every definite answer is stored with its payment in PostgreSQL \
([postgres] url, schema [pg_sim] schema), the ledger `surge verify` audits. \
Faults (latency, declines, 500 before/after applying, hangs, conflicts) start \
from [pg_sim.faults] and change at run time with PUT /admin/faults.";

#[derive(Debug, Args)]
pub struct PgSimArgs {
    /// Where to serve (overrides [pg_sim] listen), e.g. 127.0.0.1:0 for a free port.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// PostgreSQL schema of the ledger (overrides [pg_sim] schema).
    #[arg(long)]
    schema: Option<String>,
}

pub async fn run(args: PgSimArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut sim = settings.pg_sim.clone();
    if let Some(listen) = args.listen {
        sim.listen = listen;
    }
    if let Some(schema) = args.schema {
        sim.schema = schema;
    }
    surge_pgsim::check_settings(&sim)?;
    let shutdown = Shutdown::on_signals();
    // Lazy: pg-sim serves /health (503) while PostgreSQL is still away.
    let postgres = sqlx::postgres::PgPoolOptions::new()
        .max_connections(settings.postgres.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&settings.postgres.url)
        .context("postgres URL")?;
    let listener = tokio::net::TcpListener::bind(sim.listen)
        .await
        .with_context(|| format!("binding {}", sim.listen))?;
    let address = listener.local_addr()?;
    // Same words as every surge process, so tools find the address in the log.
    tracing::info!(message = "metrics and health", address = %address);
    tracing::info!(message = "pg-sim listening", address = %address, schema = %sim.schema);
    if sim.admin_token.as_deref().is_none_or(str::is_empty) && !address.ip().is_loopback() {
        tracing::warn!(
            message = "no [pg_sim] admin_token: /admin/faults is open to the network",
            address = %address
        );
    }
    surge_pgsim::serve(
        listener,
        postgres,
        &sim,
        &settings.orders.currencies,
        shutdown,
    )
    .await?;
    tracing::info!(message = "pg-sim stopped");
    Ok(ExitCode::SUCCESS)
}
