//! The gateway with the broker gone: issue calls, and a batch Kafka takes
//! nothing of, answer 503 within a bounded time (never 202 for a command
//! Kafka did not take); once the broker is
//! back, every request that got 202 — before, during or after the outage,
//! retried with its Idempotency-Key after a 503 (for one sent without a
//! key, the requestId its 503 named) — has exactly one decision.
//! The pipeline is also restarted during the outage and must wait for the
//! broker rather than exit. Its own test binary: stopping the broker must not
//! hit other tests.

mod common;

use common::orders::stack;

use std::process::Command;
use std::time::{Duration, Instant};

use common::coupon::Fixture;
use common::gateway::spawn_gateway;
use serde_json::json;

/// The broker stopped for the length of a scope: started again when it ends,
/// also when an assertion fails inside it, so that a failure here does not
/// leave every later test binary without a broker.
struct BrokerOutage;

impl BrokerOutage {
    fn begin() -> Self {
        stack(&["down", "kafka"]);
        BrokerOutage
    }

    /// Starts the broker again (what dropping the guard does).
    fn end(self) {}
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        // No assertion here: a panic while unwinding would abort the binary.
        let _ = Command::new(common::repo_root().join("scripts/stack"))
            .args(["up", "kafka"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_broker_down_issue_calls_get_503_in_time_and_every_202_is_decided() {
    let fx = Fixture::new("gateway-down").await;
    let pipeline = fx.spawn_pipeline("0", &[]);
    let _pg = fx.spawn_sink("postgres", &[]);
    let gw = spawn_gateway(&fx, &[("SURGE_GATEWAY__PRODUCE_TIMEOUT", "3s")]).await;
    let coupon = format!("{}down", fx.prefix);
    gw.create_coupon(&coupon, 12).await;
    let issue = format!("/coupons/{coupon}/issue");
    let mut accepted = Vec::new();
    for u in 0..5 {
        let key = format!("{}before-{u}", fx.prefix);
        let (status, _) = gw
            .post(
                &issue,
                &[("idempotency-key", &key)],
                json!({ "userId": format!("u{u}") }),
            )
            .await;
        assert_eq!(status, 202);
        accepted.push(key);
    }

    // The pipeline is restarted while the broker is away: it must wait for
    // the broker (retrying init_transactions), not exit into the outage. A
    // 2 s call timeout makes each attempt time out well inside the outage.
    drop(pipeline);
    let outage = BrokerOutage::begin();
    let short_calls = [("SURGE_PIPELINES__COUPON__TRANSACTION_CALL_TIMEOUT", "2s")];
    let mut pipeline = fx.spawn_pipeline("0", &short_calls);
    let mut refused = Vec::new();
    for u in 0..5 {
        // The last one without a key: the 503 names the id the gateway made.
        let key = (u < 4).then(|| format!("{}during-{u}", fx.prefix));
        let headers: Vec<(&str, &str)> = key
            .as_deref()
            .map(|k| ("idempotency-key", k))
            .into_iter()
            .collect();
        let started = Instant::now();
        let (status, body) = gw
            .post(&issue, &headers, json!({ "userId": format!("d{u}") }))
            .await;
        let took = started.elapsed();
        assert_eq!(status, 503, "broker down: {body}");
        let id = body["requestId"]
            .as_str()
            .unwrap_or_else(|| panic!("the 503 names its request id: {body}"))
            .to_string();
        if let Some(key) = &key {
            assert_eq!(&id, key, "{body}");
        }
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("Idempotency-Key: {id}"))),
            "{body}"
        );
        assert!(
            took < Duration::from_secs(5),
            "answered in {took:?} (produce_timeout 3 s)"
        );
        refused.push((id, format!("d{u}")));
    }
    // A batch Kafka takes nothing of is 503 too, every item UNAVAILABLE.
    let batch_keys: Vec<String> = (0..2).map(|i| format!("{}batch-{i}", fx.prefix)).collect();
    let batch = json!({ "requests": batch_keys.iter().enumerate().map(|(i, k)| json!({
        "couponId": coupon, "userId": format!("b{i}"), "requestId": k })).collect::<Vec<_>>() });
    let started = Instant::now();
    let (status, body) = gw.post("/coupon-requests", &[], batch.clone()).await;
    assert_eq!(status, 503, "broker down: {body}");
    assert_eq!(body["accepted"], 0, "{body}");
    for r in body["results"].as_array().unwrap() {
        assert_eq!(r["status"], "UNAVAILABLE", "{body}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        pipeline.try_wait().unwrap().is_none(),
        "a pipeline started during the outage keeps waiting for the broker"
    );
    outage.end();
    // Retried whole with the same requestIds until Kafka takes them.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = gw.post("/coupon-requests", &[], batch.clone()).await;
        if status == 202 {
            break;
        }
        assert!(status == 503 || status == 207, "{status}: {body}");
        assert!(
            Instant::now() < deadline,
            "the batch never accepted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    accepted.extend(batch_keys);

    // Clients retry a 503 with the same key until it is accepted.
    for (key, user) in &refused {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, _) = gw
                .post(
                    &issue,
                    &[("idempotency-key", key)],
                    json!({ "userId": user }),
                )
                .await;
            if status == 202 {
                break;
            }
            assert_eq!(status, 503);
            assert!(
                Instant::now() < deadline,
                "{key} never accepted after the broker came back"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        accepted.push(key.clone());
    }
    // Every 202 is decided. The pipeline plays its part under a supervisor:
    // a static member whose session expired while the broker was away may
    // be fenced on rejoining (librdkafka#3437) and then exits with 3, as it
    // does for any fencing; like systemd or Kubernetes, the test restarts it.
    let deadline = Instant::now() + Duration::from_secs(180);
    for key in &accepted {
        loop {
            if let Some(status) = pipeline.try_wait().unwrap() {
                assert_eq!(
                    status.code(),
                    Some(3),
                    "the pipeline only ever exits fenced"
                );
                pipeline = fx.spawn_pipeline("0", &short_calls);
            }
            let (status, d) = gw.get(&format!("/coupon-requests/{key}")).await;
            if status == 200 && d["status"] == "DECIDED" {
                assert_eq!(
                    d["outcome"], "ISSUED",
                    "12 units for 12 distinct users: {d}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{key} not decided: {status} {d}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let decisions = fx
        .decisions(1 + accepted.len(), Duration::from_secs(60))
        .await;
    for key in &accepted {
        assert_eq!(
            decisions.iter().filter(|d| &d.request_id == key).count(),
            1,
            "{key}: one decision"
        );
    }
}
