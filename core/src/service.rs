//! How a long-running surge process runs its blocking loop: the loop gets a
//! dedicated OS thread (librdkafka's blocking calls never touch an async
//! worker) and a stop flag raised by SIGTERM/SIGINT; `/metrics` and
//! `/health` are served beside it. Health fails until the loop's first poll
//! and whenever its heartbeat is older than 30 s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::{IntGauge, Registry};

use crate::shutdown::Shutdown;

/// Serves telemetry on `listen`, runs `body(stop)` on a thread named `name`,
/// and returns what it returned once it ends. `heartbeat` holds the Unix
/// time of the loop's last poll.
pub async fn run_blocking_loop<T: Send + 'static>(
    name: &str,
    listen: SocketAddr,
    registry: Registry,
    heartbeat: IntGauge,
    shutdown: Shutdown,
    body: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
) -> std::io::Result<T> {
    let health = move || {
        let last = heartbeat.get();
        let age = unix_now() - last;
        if last == 0 {
            Err("starting: not polling yet".to_string())
        } else if age > 30 {
            Err(format!("stalled: last poll {age} s ago"))
        } else {
            Ok(format!("polling (last {age} s ago)"))
        }
    };
    let (addr, _server) =
        crate::telemetry::serve(listen, registry, Arc::new(health), shutdown.clone()).await?;
    tracing::info!(message = "metrics and health", address = %addr);

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || body(stop))?;
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(std::io::Error::other)?
        .map_err(|_| std::io::Error::other(format!("{name} thread panicked")))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
