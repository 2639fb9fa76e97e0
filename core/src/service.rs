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
    let mut ended = run_blocking_loops(
        listen,
        registry,
        shutdown,
        vec![BlockingLoop {
            name: name.to_string(),
            heartbeat,
            body: Box::new(body),
        }],
    )
    .await?;
    Ok(ended.pop().expect("one loop, one result"))
}

/// One loop of a process that runs several (a sink keeps several topics).
pub struct BlockingLoop<T> {
    /// The thread's name, also the loop's name in health messages.
    pub name: String,
    /// Unix time of the loop's last poll.
    pub heartbeat: IntGauge,
    pub body: Box<dyn FnOnce(Arc<AtomicBool>) -> T + Send + 'static>,
}

/// Like [`run_blocking_loop`] for several loops sharing one stop flag: the
/// first loop to end (a shutdown, or a fatal error) stops the others, so the
/// process never lives on with part of its work dead. Health fails when any
/// loop's heartbeat is stale. Returns every loop's result, in order.
pub async fn run_blocking_loops<T: Send + 'static>(
    listen: SocketAddr,
    registry: Registry,
    shutdown: Shutdown,
    loops: Vec<BlockingLoop<T>>,
) -> std::io::Result<Vec<T>> {
    let beats: Vec<(String, IntGauge)> = loops
        .iter()
        .map(|l| (l.name.clone(), l.heartbeat.clone()))
        .collect();
    let health = move || {
        let now = unix_now();
        let mut ok = Vec::new();
        for (name, beat) in &beats {
            let last = beat.get();
            let age = now - last;
            if last == 0 {
                return Err(format!("{name} starting: not polling yet"));
            } else if age > 30 {
                return Err(format!("{name} stalled: last poll {age} s ago"));
            }
            ok.push(format!("{name} polling (last {age} s ago)"));
        }
        Ok(ok.join("; "))
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
    let mut threads = Vec::new();
    for l in loops {
        let stop = stop.clone();
        let body = l.body;
        let thread = std::thread::Builder::new()
            .name(l.name.clone())
            .spawn(move || {
                // Raised however the loop ends, a panic included.
                let _stop_others = StopOnDrop(stop.clone());
                body(stop)
            })?;
        threads.push((l.name, thread));
    }
    tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|(name, t)| {
                t.join()
                    .map_err(|_| std::io::Error::other(format!("{name} thread panicked")))
            })
            .collect::<std::io::Result<Vec<T>>>()
    })
    .await
    .map_err(std::io::Error::other)?
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
