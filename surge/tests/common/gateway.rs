//! The gateway as a child process of the real binary, on a free port, for
//! tests that talk to it over real HTTP.

use std::time::{Duration, Instant};

use super::coupon::{Fixture, Instance};

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct Gateway {
    pub process: Instance,
    pub url: String,
    pub http: reqwest::Client,
}

/// Starts `surge gateway` on the fixture's topics and keyspace and waits
/// until /health answers 200 (Kafka reachable).
pub async fn spawn_gateway(fx: &Fixture, env: &[(&str, &str)]) -> Gateway {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec![
        ("SURGE_GATEWAY__LISTEN", listen.as_str()),
        ("SURGE_GATEWAY__ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    all.extend_from_slice(env);
    let process = fx.spawn("gateway", &["gateway"], &all);
    let url = format!("http://{listen}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http
            .get(format!("{url}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "gateway not healthy in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Gateway { process, url, http }
}

impl Gateway {
    /// POST JSON with optional extra headers; (status, body as JSON or Null).
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut r = self.http.post(format!("{}{path}", self.url)).json(&body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let response = r.send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// One sample of the gateway's /metrics (`name{labels}` as exported).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Creates a coupon through the admin API.
    pub async fn create_coupon(&self, coupon: &str, stock: i64) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let (status, body) = self
            .post(
                "/admin/coupons",
                &[("authorization", auth.as_str())],
                serde_json::json!({ "couponId": coupon, "stock": stock }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }

    /// Polls a request id until it is decided; its outcome.
    pub async fn decision(&self, request_id: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get(&format!("/coupon-requests/{request_id}")).await;
            if status == 200 && body["status"] == "DECIDED" {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{request_id} not decided: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
