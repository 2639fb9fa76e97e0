//! What the gateway exports (namespace `surge`). Every series exists from
//! the start, so a dashboard or test sees 0 rather than nothing.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    /// By route template and status code.
    pub requests: IntCounterVec,
    /// Time until Kafka acknowledged a command (or gave up).
    pub produce_seconds: Histogram,
    /// 1 while the producer's cluster answers metadata requests, else 0.
    pub kafka_reachable: IntGauge,
    /// Client connections open now, and the cap.
    pub connections: IntGauge,
    pub max_connections: IntGauge,
    /// Times an accept had to wait for a connection to close (at the cap).
    pub connection_cap_waits: IntCounter,
    /// Connections cut off (header, idle) or requests refused (body) by a timeout.
    pub connection_timeouts: IntCounterVec,
    /// Admin requests with a wrong token, and admin requests refused 429.
    pub admin_auth_failures: IntCounter,
    pub admin_auth_throttled: IntCounter,
    /// Accepted-marker writes to Redis that failed (the 202 went out anyway).
    pub accepted_marker_failures: IntCounter,
    /// Requests with an Idempotency-Key that went on unchecked (Redis did not answer).
    pub idempotency_unchecked: IntCounter,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("surge".into()), None).expect("registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "HTTP requests by route and status.",
            ),
            &["route", "status"],
        )
        .expect("metric");
        let produce_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_produce_seconds",
                "Time for Kafka to acknowledge one command (acks=all).",
            )
            .buckets(vec![
                0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("metric");
        let kafka_reachable = gauge(
            "gateway_kafka_reachable",
            "1 while Kafka answers the gateway's metadata requests, 0 during an outage.",
        );
        let connections = gauge("gateway_connections", "Open client connections.");
        let max_connections = gauge(
            "gateway_max_connections",
            "The cap on open client connections ([gateway] max_connections).",
        );
        let connection_cap_waits = counter(
            "gateway_connection_cap_waits_total",
            "Accepts that waited for a connection to close because the cap was reached.",
        );
        let connection_timeouts = IntCounterVec::new(
            Opts::new(
                "gateway_connection_timeouts_total",
                "Slow or idle clients cut off: header (no complete head in time), body (408), idle.",
            ),
            &["kind"],
        )
        .expect("metric");
        for kind in ["header", "body", "idle"] {
            connection_timeouts.with_label_values(&[kind]);
        }
        let admin_auth_failures = counter(
            "gateway_admin_auth_failures_total",
            "Admin requests with a wrong token.",
        );
        let admin_auth_throttled = counter(
            "gateway_admin_auth_throttled_total",
            "Admin requests refused 429 after too many wrong tokens from their address.",
        );
        let accepted_marker_failures = counter(
            "gateway_accepted_marker_failures_total",
            "Accepted requests whose accepted marker could not be written to Redis (they were answered 202; a poll reads 404 until decided).",
        );
        let idempotency_unchecked = counter(
            "gateway_idempotency_unchecked_total",
            "Requests with an Idempotency-Key accepted without checking the key's first use (Redis did not answer).",
        );
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(produce_seconds.clone()),
            Box::new(kafka_reachable.clone()),
            Box::new(connections.clone()),
            Box::new(max_connections.clone()),
            Box::new(connection_cap_waits.clone()),
            Box::new(connection_timeouts.clone()),
            Box::new(admin_auth_failures.clone()),
            Box::new(admin_auth_throttled.clone()),
            Box::new(accepted_marker_failures.clone()),
            Box::new(idempotency_unchecked.clone()),
        ] {
            registry.register(metric).expect("register");
        }
        Self {
            registry,
            requests,
            produce_seconds,
            kafka_reachable,
            connections,
            max_connections,
            connection_cap_waits,
            connection_timeouts,
            admin_auth_failures,
            admin_auth_throttled,
            accepted_marker_failures,
            idempotency_unchecked,
        }
    }
}

impl GatewayMetrics {
    /// Every (route, status) the OpenAPI document says a route can answer,
    /// at 0: a dashboard's `rate()` then sees the first 503 or 404 as it
    /// happens instead of a series born at 1. (Statuses no route documents,
    /// such as 408 before routing, appear with their first event.)
    pub fn preregister_routes(&self, settings: &surge_core::settings::GatewaySettings) {
        let doc = crate::openapi::document(settings);
        for (method, route) in crate::openapi::ROUTES {
            let Some(responses) = doc["paths"][route][method]["responses"].as_object() else {
                continue;
            };
            for status in responses
                .keys()
                .filter(|s| s.len() == 3 && s.parse::<u16>().is_ok())
            {
                self.requests.with_label_values(&[route, status.as_str()]);
            }
        }
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_and_status_exists_at_zero() {
        let m = GatewayMetrics::new();
        m.preregister_routes(&Default::default());
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &m.registry.gather(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        for series in [
            "surge_gateway_requests_total{route=\"/orders\",status=\"202\"} 0",
            "surge_gateway_requests_total{route=\"/orders/{orderId}\",status=\"404\"} 0",
            "surge_gateway_requests_total{route=\"/coupons/{couponId}/issue\",status=\"503\"} 0",
            "surge_gateway_requests_total{route=\"/admin/coupons\",status=\"429\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
    }
}
