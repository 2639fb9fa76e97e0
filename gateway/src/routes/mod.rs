//! The router, one module per area: coupons, orders (`POST /orders`,
//! `POST /orders/{orderId}/cancel`, `GET /orders/{orderId}`), products
//! (`GET /products/{productId}`), admin (coupons and products, behind the
//! token), ops.

pub mod admin;
pub mod coupon_batch;
pub mod coupons;
pub mod ops;
pub mod orders;
pub mod products;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use crate::api;
use crate::state::AppState;

/// Every route, JSON errors for everything else, the body limit, and
/// request metrics.
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.settings.max_body_bytes;
    Router::new()
        .merge(coupons::routes(&state))
        .merge(orders::routes())
        .merge(products::routes())
        .merge(admin::routes(&state))
        .merge(ops::routes())
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::wrong_method)
        .layer(middleware::from_fn(api::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Counts requests by route template (bounded label values) and status.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    state
        .metrics
        .requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}

/// An [`AppState`] for in-process tests of the router: nothing behind it
/// answers — Kafka, Redis and PostgreSQL are unreachable addresses, the
/// codecs offline — so a command is 503 after `produce_timeout`, and
/// accepted markers and Idempotency-Key claims are off.
#[cfg(test)]
pub(crate) mod testing {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use axum::body::Bytes;
    use http_body::{Frame, SizeHint};
    use rdkafka::ClientConfig;
    use surge_core::settings::GatewaySettings;
    use surge_redis::Keyspace;
    use surge_schemas::TopicCodec;

    use crate::kafka::{GatewayContext, KafkaLink};
    use crate::metrics::GatewayMetrics;
    use crate::reads::Cache;
    use crate::state::{AppState, Inner, OrderTopics, Topic};
    use crate::throttle::AdminThrottle;

    pub const ADMIN_TOKEN: &str = "in-process-token";

    /// Test settings: an admin token, a short produce_timeout, no markers.
    pub fn settings() -> GatewaySettings {
        GatewaySettings {
            admin_token: Some(ADMIN_TOKEN.into()),
            produce_timeout: Duration::from_millis(300),
            accepted_marker_ttl: Duration::ZERO,
            ..Default::default()
        }
    }

    pub fn state(settings: GatewaySettings) -> AppState {
        let metrics = GatewayMetrics::new();
        let kafka = Arc::new(KafkaLink::new(metrics.kafka_reachable.clone()));
        let producer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set(
                "message.timeout.ms",
                settings.produce_timeout.as_millis().max(1).to_string(),
            )
            .create_with_context(GatewayContext::new(kafka.clone()))
            .expect("a producer needs no broker to be made");
        let postgres = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://surge@127.0.0.1:1/surge")
            .expect("postgres URL");
        fn topic<T: surge_schemas::Contract>(name: &str, id: u32) -> Topic<T> {
            Topic {
                name: name.to_string(),
                codec: TopicCodec::offline(id),
            }
        }
        AppState(Arc::new(Inner {
            producer,
            commands: TopicCodec::offline(1),
            coupon_issue: "coupon-issue".into(),
            orders: OrderTopics {
                create: topic("order-create", 2),
                cancel: topic("order-cancel", 3),
                inventory: topic("inventory-commands", 4),
            },
            redis: Cache::new(redis::Client::open("redis://127.0.0.1:1").expect("redis URL")),
            keys: Keyspace::new("in-process"),
            postgres,
            admin_token: settings.admin_token.clone(),
            admin_throttle: AdminThrottle::new(
                settings.admin_auth_burst,
                settings.admin_auth_refill,
            ),
            produce_timeout: settings.produce_timeout,
            settings,
            metrics,
            kafka,
        }))
    }

    /// A request body that declares `self.0` bytes (as a Content-Length
    /// does) and never sends one.
    pub struct Declared(pub u64);

    impl http_body::Body for Declared {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::testing::{self, Declared, ADMIN_TOKEN};
    use super::*;

    /// The router's answer to `req` within `within` (else `None`), as
    /// status, headers and JSON body.
    async fn answer(
        app: &Router,
        req: Request<Body>,
        within: Duration,
    ) -> Option<(StatusCode, axum::http::HeaderMap, Value)> {
        let response = tokio::time::timeout(within, app.clone().oneshot(req))
            .await
            .ok()?
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Some((parts.status, parts.headers, json))
    }

    fn post(path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
        let mut r = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(body).unwrap()
    }

    fn json_body(v: Value) -> Body {
        Body::from(v.to_string())
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_at_once_unread() {
        let state = testing::state(testing::settings());
        let limit = state.settings.max_body_bytes as u64;
        let batch_limit = state.settings.max_batch_body_bytes() as u64;
        let app = router(state);
        for (path, declared) in [
            ("/coupons/c1/issue", limit + 1),
            ("/coupons/c1/issue", 99_999_999_999),
            ("/orders", 20_000),
            ("/coupon-requests", batch_limit + 1),
        ] {
            let req = post(path, &[], Body::new(Declared(declared)));
            let (status, headers, body) = answer(&app, req, Duration::from_secs(2))
                .await
                .unwrap_or_else(|| panic!("{path} {declared}: no answer without the body"));
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path} {declared}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            let error = body["error"].as_str().unwrap();
            assert!(error.contains(&declared.to_string()), "{error}");
        }
        // At the limit (or under the batch's larger one) the body is waited for.
        for (path, declared) in [
            ("/coupons/c1/issue", limit),
            ("/coupon-requests", limit + 1),
        ] {
            let req = post(path, &[], Body::new(Declared(declared)));
            assert!(
                answer(&app, req, Duration::from_millis(200))
                    .await
                    .is_none(),
                "{path} {declared}: answered before the body came"
            );
        }
    }

    #[tokio::test]
    async fn a_503_names_the_request_id_to_retry_with() {
        let app = router(testing::state(testing::settings()));
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let admin = ("authorization", bearer.as_str());
        let order = json!({ "userId": "u1", "currency": "EUR",
            "items": [{ "productId": "p1", "quantity": 1, "unitPrice": "1.00" }] });
        let cases: Vec<(&str, Vec<(&str, &str)>, Value)> = vec![
            ("/coupons/c1/issue", vec![], json!({ "userId": "u1" })),
            (
                "/coupons/c1/issue",
                vec![("idempotency-key", "chosen-1")],
                json!({ "userId": "u1" }),
            ),
            ("/orders", vec![], order),
            ("/orders/o1/cancel", vec![], json!({ "userId": "u1" })),
            (
                "/admin/coupons",
                vec![admin],
                json!({ "couponId": "c1", "stock": 1 }),
            ),
            (
                "/admin/coupons/c1/stock",
                vec![admin],
                json!({ "delta": 1 }),
            ),
            (
                "/admin/products",
                vec![admin],
                json!({ "productId": "p1", "stock": 1 }),
            ),
            (
                "/admin/products/p1/stock",
                vec![admin],
                json!({ "delta": 1 }),
            ),
        ];
        let answers = futures::future::join_all(cases.iter().map(|(path, headers, body)| {
            let req = post(path, headers, json_body(body.clone()));
            answer(&app, req, Duration::from_secs(10))
        }))
        .await;
        for ((path, headers, _), got) in cases.iter().zip(answers) {
            let (status, _, body) = got.unwrap_or_else(|| panic!("{path}: no answer"));
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
            let id = body["requestId"]
                .as_str()
                .unwrap_or_else(|| panic!("{path}: no requestId: {body}"));
            match headers.iter().find(|(k, _)| *k == "idempotency-key") {
                Some((_, key)) => assert_eq!(id, *key, "{path}"),
                None => assert!(uuid::Uuid::parse_str(id).is_ok(), "{path}: {id}"),
            }
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains(&format!("Idempotency-Key: {id}")),
                "{path}: {error}"
            );
            let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(
                keys,
                ["error", "requestId"],
                "{path}: the Unavailable schema"
            );
        }
    }

    #[tokio::test]
    async fn two_idempotency_keys_are_400_naming_the_header() {
        let app = router(testing::state(testing::settings()));
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let order = json!({ "userId": "u1", "currency": "EUR",
            "items": [{ "productId": "p1", "quantity": 1, "unitPrice": "1.00" }] });
        for (path, body) in [
            ("/coupons/c1/issue", json!({ "userId": "u1" })),
            ("/orders", order),
            ("/orders/o1/cancel", json!({ "userId": "u1" })),
            ("/admin/coupons", json!({ "couponId": "c1", "stock": 1 })),
            ("/admin/coupons/c1/stock", json!({ "delta": 1 })),
            ("/admin/products", json!({ "productId": "p1", "stock": 1 })),
            ("/admin/products/p1/stock", json!({ "delta": 1 })),
        ] {
            let req = post(
                path,
                &[
                    ("authorization", bearer.as_str()),
                    ("idempotency-key", "two-a"),
                    ("idempotency-key", "two-b"),
                ],
                json_body(body),
            );
            // Refused before anything is sent: no wait for Kafka.
            let (status, _, body) = answer(&app, req, Duration::from_millis(250))
                .await
                .unwrap_or_else(|| panic!("{path}: sent on to Kafka"));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert_eq!(body["field"], "Idempotency-Key", "{path}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("exactly one Idempotency-Key header"),
                "{path}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn another_authorization_scheme_is_401_and_no_guess() {
        let state = testing::state(surge_core::settings::GatewaySettings {
            admin_auth_burst: 2,
            ..testing::settings()
        });
        let app = router(state.clone());
        let create = |auth: Option<&str>| {
            post(
                "/admin/coupons",
                &auth
                    .map(|a| ("authorization", a))
                    .into_iter()
                    .collect::<Vec<_>>(),
                json_body(json!({ "couponId": "c1", "stock": 1 })),
            )
        };
        // More than the burst of wrong tokens, none of them a guess.
        for auth in [
            "Basic abc",
            "basic Zm9vOmJhcg==",
            "Bearer",
            "Bearer ",
            "Token x",
        ]
        .into_iter()
        .map(Some)
        .chain([None])
        {
            let (status, headers, body) = answer(&app, create(auth), Duration::from_secs(2))
                .await
                .unwrap();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer", "{auth:?}");
            assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
        }
        assert_eq!(state.metrics.admin_auth_failures.get(), 0);
        // The burst is whole: two wrong bearer tokens are 403, the third 429.
        for want in [
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            let (status, _, body) =
                answer(&app, create(Some("Bearer nope")), Duration::from_secs(2))
                    .await
                    .unwrap();
            assert_eq!(status, want, "{body}");
        }
        assert_eq!(state.metrics.admin_auth_failures.get(), 2);
    }
}
