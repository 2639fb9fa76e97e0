//! Whether Kafka answers, decided in one place and logged on change only:
//! one WARN when an outage starts, one INFO when it ends, the
//! `surge_gateway_kafka_reachable` gauge in between. librdkafka's own
//! connection complaints (a line per retry, ~25 a second when the broker
//! is gone) are routed here by [`GatewayContext`] and logged at debug.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::state::AppState;

/// After an outage, librdkafka re-learns leaders and its producer id for a
/// while, warning as it goes; that is still the outage.
const AFTERMATH: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    NotYet,
    Up { recovered: Option<Instant> },
    Down { since: Instant },
}

pub struct KafkaLink {
    /// Unix time of the last successful metadata round trip (for /health).
    seen: AtomicI64,
    reach: Mutex<Reach>,
    gauge: IntGauge,
}

impl KafkaLink {
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(0);
        Self {
            seen: AtomicI64::new(0),
            reach: Mutex::new(Reach::NotYet),
            gauge,
        }
    }

    fn reach(&self) -> std::sync::MutexGuard<'_, Reach> {
        self.reach.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kafka answered.
    pub fn up(&self) {
        self.seen
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
        let mut reach = self.reach();
        *reach = match *reach {
            Reach::Up { .. } => return,
            Reach::NotYet => {
                tracing::info!(message = "Kafka reachable");
                Reach::Up { recovered: None }
            }
            Reach::Down { since } => {
                tracing::info!(
                    message = "Kafka reachable again",
                    outage = %humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()))
                );
                Reach::Up {
                    recovered: Some(Instant::now()),
                }
            }
        };
        self.gauge.set(1);
    }

    /// Kafka did not answer; `error` says how.
    pub fn down(&self, error: &str) {
        let mut reach = self.reach();
        if matches!(*reach, Reach::Down { .. }) {
            tracing::debug!(message = "Kafka still unreachable", error);
            return;
        }
        tracing::warn!(
            message = "Kafka unreachable: commands get 503 until it is back (logged once; see surge_gateway_kafka_reachable)",
            error
        );
        *reach = Reach::Down {
            since: Instant::now(),
        };
        self.gauge.set(0);
    }

    /// An outage is known, or ended less than [`AFTERMATH`] ago: Kafka
    /// client errors now are expected (logged at debug, the outage once).
    pub fn in_outage(&self) -> bool {
        match *self.reach() {
            Reach::Down { .. } => true,
            Reach::Up {
                recovered: Some(at),
            } => at.elapsed() < AFTERMATH,
            _ => false,
        }
    }

    /// Seconds since Kafka last answered, `None` before the first answer.
    pub fn age_secs(&self) -> Option<i64> {
        let at = self.seen.load(Ordering::Relaxed);
        (at > 0).then(|| chrono::Utc::now().timestamp() - at)
    }
}

/// The producer's librdkafka callbacks: outages go to the [`KafkaLink`],
/// everything else is logged as rdkafka's default context would.
pub struct GatewayContext {
    link: std::sync::Arc<KafkaLink>,
}

impl GatewayContext {
    pub fn new(link: std::sync::Arc<KafkaLink>) -> Self {
        Self { link }
    }
}

impl ClientContext for GatewayContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // FAIL is a broker connection failing (refused, reset, timed out),
        // repeated every reconnect backoff; during an outage and its
        // aftermath everything librdkafka says is the outage (logged once);
        // and what it says it is retrying (`...: retrying`) is transient.
        // All of that is debug.
        if fac == "FAIL" || self.link.in_outage() || message.ends_with("retrying") {
            tracing::debug!(target: "librdkafka", message, fac);
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", message, fac),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", message, fac),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", message, fac)
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", message, fac),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.link.down(reason),
            // One broker's connection dropping (idle reaping, a restart) is
            // retried by librdkafka; all of them dropping is the case above.
            Some(RDKafkaErrorCode::BrokerTransportFailure) | Some(RDKafkaErrorCode::Resolve) => {
                tracing::debug!(message = "Kafka connection failed", %error, reason)
            }
            _ if self.link.in_outage() => {
                tracing::debug!(message = "Kafka client error", %error, reason)
            }
            _ => tracing::warn!(message = "Kafka client error", %error, reason),
        }
    }
}

/// Asks the producer's cluster for metadata every 2 s: the gateway's one
/// judge of whether Kafka answers.
pub fn watch(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let s = state.clone();
            let answer = tokio::task::spawn_blocking(move || {
                s.producer
                    .client()
                    .fetch_metadata(Some(&s.coupon_issue), Duration::from_secs(2))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match answer {
                Ok(()) => state.kafka.up(),
                Err(error) => state.kafka.down(&error),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_follows_transitions() {
        let gauge = IntGauge::new("g", "g").unwrap();
        let link = KafkaLink::new(gauge.clone());
        assert_eq!(gauge.get(), 0);
        assert!(!link.in_outage(), "not known down before the first answer");
        link.up();
        assert_eq!(gauge.get(), 1);
        assert!(!link.in_outage());
        link.down("refused");
        link.down("refused");
        assert_eq!(gauge.get(), 0);
        assert!(link.in_outage());
        link.up();
        assert_eq!(gauge.get(), 1);
        assert!(link.in_outage(), "its aftermath");
        assert!(link.age_secs().is_some());
    }
}
