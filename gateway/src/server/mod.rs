//! Serving connections: what `axum::serve` does, plus what a public
//! endpoint needs against slow and idle clients.
//!
//! - A cap on open connections ([gateway] max_connections). At the cap the
//!   gateway stops accepting: new connections wait in the kernel's listen
//!   backlog, holding no descriptor or task of ours, and are served in
//!   order as others close. Answering 503 instead would cost a descriptor
//!   and a task per refusal, exactly what a flood exhausts; and since every
//!   connection here is bounded by the timeouts below, a waiting client is
//!   served within seconds rather than told to retry.
//! - A request head must arrive within header_read_timeout of the accept or
//!   of its first byte (slowloris), a body within body_read_timeout of its
//!   head (408), and a kept-alive connection may idle for idle_timeout.
//!   hyper's own header timeout also runs through the idle gap, which would
//!   make the idle timeout meaningless, so both are timed here ([`clock`]).
//! - hyper's bodiless answers to unparseable heads become JSON ([`io`]).
//! - Graceful shutdown: stop accepting, let in-flight requests finish,
//!   close idle connections, and return when every connection is gone.

mod body;
mod clock;
mod io;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

pub use body::BodyReadTimeout;
use body::{DeadlineBody, TrackedBody};
use clock::{ConnClock, Expiry, InFlight};
use io::ConnIo;

use crate::metrics::GatewayMetrics;

/// What every connection task shares.
struct Shared {
    app: Router,
    http: hyper::server::conn::http1::Builder,
    metrics: GatewayMetrics,
    header_read_timeout: Duration,
    body_read_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and returns once every connection has finished.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &surge_core::settings::GatewaySettings,
    metrics: GatewayMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // acquire_many takes a u32; a cap of 0 would never serve anyone.
    let max_connections = settings.max_connections.clamp(1, u32::MAX as usize);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_header_size(settings.max_header_bytes)
        // Timed by the clock instead (see the module doc).
        .header_read_timeout(None)
        .keep_alive(true);
    let shared = Arc::new(Shared {
        app,
        http,
        metrics,
        header_read_timeout: settings.header_read_timeout,
        body_read_timeout: settings.body_read_timeout,
        idle_timeout: settings.idle_timeout,
        max_header_bytes: settings.max_header_bytes,
    });
    shared.metrics.max_connections.set(max_connections as i64);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut cap_warned: Option<Instant> = None;
    let mut accept_warned: Option<Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                shared.metrics.connection_cap_waits.inc();
                if once_a_minute(&mut cap_warned) {
                    tracing::warn!(
                        message =
                            "connection cap reached: new connections wait in the listen backlog",
                        max_connections
                    );
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: pause rather than spin.
                    if once_a_minute(&mut accept_warned) {
                        tracing::warn!(message = "accepting a connection failed", %error);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            stream,
            peer,
            slot,
            shared.clone(),
            stopping.clone(),
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot: all slots back means all are done.
    let _ = slots.acquire_many(max_connections as u32).await;
    Ok(())
}

fn once_a_minute(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|at| now - at < Duration::from_secs(60)) {
        return false;
    }
    *last = Some(now);
    true
}

enum Ended {
    Closed(Option<hyper::Error>),
    TimedOut(Expiry),
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) {
    let metrics = &shared.metrics;
    metrics.connections.inc();
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let clock = Arc::new(ConnClock::new(
        Instant::now(),
        shared.header_read_timeout,
        shared.idle_timeout,
    ));
    let ended = {
        let io = TokioIo::new(ConnIo::new(
            stream.clone(),
            clock.clone(),
            shared.max_header_bytes,
        ));
        let service = ConnService {
            shared: shared.clone(),
            clock: clock.clone(),
            peer,
        };
        let conn = shared.http.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut draining = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => break Ended::Closed(result.err()),
                expiry = watchdog(&clock) => break Ended::TimedOut(expiry),
                _ = stopping.wait_for(|stop| *stop), if !draining => {
                    // Finishes the request in flight, closes when idle.
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
        // hyper's connection is dropped here; the stream lives on in `stream`.
    };
    match ended {
        Ended::Closed(None) => {}
        Ended::Closed(Some(error)) => {
            tracing::debug!(message = "connection ended with an error", %peer, %error);
            if error.is_parse() || error.is_parse_too_large() {
                // hyper has answered (as JSON, see `io`); let the client read it.
                linger(&stream).await;
            }
        }
        Ended::TimedOut(Expiry::Head { partial }) => {
            metrics
                .connection_timeouts
                .with_label_values(&["header"])
                .inc();
            tracing::debug!(message = "request head not received in time", %peer, partial);
            if partial {
                let reply = io::raw_response(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "request head not received within {}",
                        humantime::format_duration(shared.header_read_timeout)
                    ),
                );
                write_all(&stream, &reply).await;
                linger(&stream).await;
            }
        }
        Ended::TimedOut(Expiry::Idle) => {
            metrics
                .connection_timeouts
                .with_label_values(&["idle"])
                .inc();
        }
    }
    metrics.connections.dec();
}

/// Resolves when the connection's current deadline has passed.
async fn watchdog(clock: &ConnClock) -> Expiry {
    loop {
        let wake = clock
            .deadline()
            .map_or_else(|| Instant::now() + clock.period(), |(at, _)| at);
        tokio::time::sleep_until(wake).await;
        if let Some(expiry) = clock.expired(Instant::now()) {
            return expiry;
        }
    }
}

/// Best effort, bounded: the client may be gone or not reading.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) {
    let write = async {
        while !bytes.is_empty() {
            if stream.writable().await.is_err() {
                return;
            }
            match stream.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Closes after an error answer without resetting it away: closing a socket
/// with unread input sends RST, which can destroy the answer before the
/// client reads it. So: FIN, then read and drop what the client still sends,
/// for at most a second.
async fn linger(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut total = 0usize;
        while total < 1 << 20 {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// The router as one connection's hyper service: each request gets the
/// client's address, a body deadline, and a response body that tells the
/// clock when it is done.
struct ConnService {
    shared: Arc<Shared>,
    clock: Arc<ConnClock>,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(self.clock.clone());
        let timeouts = self
            .shared
            .metrics
            .connection_timeouts
            .with_label_values(&["body"]);
        let mut req = req.map(|body| {
            axum::body::Body::new(DeadlineBody::new(
                body,
                self.shared.body_read_timeout,
                timeouts,
            ))
        });
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let app = self.shared.app.clone();
        Box::pin(async move {
            let response = match app.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| TrackedBody::new(body, in_flight)))
        })
    }
}
