//! `surge pg-sim` as a child process of the real binary, on a free port,
//! with its ledger in a fresh PostgreSQL schema per test: the
//! Idempotency-Key rules (replay, reuse, in flight, expiry), refunds that
//! never exceed their charge, each fault's promise about what is stored,
//! the admin knobs, bad input, and the HTTP client (surge-payment-gateway)
//! against all of it. Each test checks the ledger, not only the answers.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::coupon::{signal, Instance};
use common::{repo_root, wait_for_log};
use serde_json::{json, Value};
use sqlx::PgPool;
use surge_payment_gateway::{Charge, HttpGateway, Outcome, PaymentGateway, Refund, UnknownKind};

struct Sim {
    process: Instance,
    url: String,
    http: reqwest::Client,
    schema: String,
    db: PgPool,
    token: Option<String>,
}

/// One HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    replayed: bool,
    text: String,
    json: Value,
}

/// Starts `surge pg-sim` on 127.0.0.1:0 with a schema of its own and waits
/// until /health says the ledger is ready.
async fn spawn_sim(env: &[(&str, &str)]) -> Sim {
    let schema = format!(
        "pgsim_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let logs: PathBuf = repo_root().join("target/test-logs").join(&schema);
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("pg-sim.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_surge"))
        .current_dir(repo_root())
        .arg("pg-sim")
        .env("SURGE_PG_SIM__LISTEN", "127.0.0.1:0")
        .env("SURGE_PG_SIM__SCHEMA", &schema)
        .envs(env.iter().copied())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("spawn surge pg-sim");
    let process = Instance(child);
    wait_for_log(&log, "pg-sim listening address=", Duration::from_secs(30));
    let url = format!("http://{}", common::metrics_address(&log));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{url}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < deadline,
            "pg-sim not healthy in 30 s; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&common::settings().postgres.url)
        .await
        .expect("postgres");
    let token = env
        .iter()
        .find(|(k, _)| *k == "SURGE_PG_SIM__ADMIN_TOKEN")
        .map(|(_, v)| v.to_string());
    Sim {
        process,
        url,
        http,
        schema,
        db,
        token,
    }
}

impl Sim {
    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("pg-sim answers");
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            replayed,
            text,
            json,
        }
    }

    async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request).await
    }

    async fn charge(&self, key: &str, body: &Value) -> Reply {
        self.post("/v1/charges", Some(key), body).await
    }

    async fn refund(&self, key: &str, body: &Value) -> Reply {
        self.post("/v1/refunds", Some(key), body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    /// PUT /admin/faults with the configured token; asserts 200.
    async fn faults(&self, changes: Value) -> Value {
        let mut request = self
            .http
            .put(format!("{}/admin/faults", self.url))
            .body(changes.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let reply = self.send(request).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json
    }

    /// Ledger rows under `key`.
    async fn payments(&self, key: &str) -> Vec<(String, String, String, i64)> {
        sqlx::query_as(&format!(
            "select id, kind, status, amount_minor from {}.payments where key = $1 order by created_at",
            self.schema
        ))
        .bind(key)
        .fetch_all(&self.db)
        .await
        .unwrap()
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("select count(*) from {}.{table}", self.schema))
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.get("/metrics").await.text
    }

    /// Drops the test's schema (a failed test leaves it for a look) and
    /// hands back the process (killed when dropped).
    async fn finish(self) -> Instance {
        sqlx::query(&format!("drop schema {} cascade", self.schema))
            .execute(&self.db)
            .await
            .unwrap();
        self.process
    }
}

fn charge_body(order: &str, amount: &str) -> Value {
    json!({ "orderId": order, "userId": "user-1", "amount": amount, "currency": "KRW" })
}

fn refund_body(charge_key: &str, order: &str, amount: &str) -> Value {
    json!({ "chargeKey": charge_key, "orderId": order, "amount": amount, "currency": "KRW" })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_is_replayed_byte_for_byte_and_a_changed_request_is_refused() {
    let sim = spawn_sim(&[]).await;
    // Every series exists before the first request.
    let metrics = sim.metrics().await;
    for outcome in [
        "approved",
        "declined",
        "replayed",
        "conflict",
        "key_reused",
        "bad_request",
        "error_before",
        "error_after",
        "timeout_after",
    ] {
        for endpoint in ["charges", "refunds"] {
            let series = format!(
                "surge_pgsim_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}}"
            );
            assert_eq!(common::metric(&metrics, &series), 0.0, "{series}");
        }
    }

    let body = charge_body("order-1", "12.30");
    let first = sim.charge("pay-1", &body).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(!first.replayed);
    let j = &first.json;
    assert!(j["id"].as_str().unwrap().starts_with("ch_"));
    assert_eq!(
        (
            &j["key"],
            &j["kind"],
            &j["status"],
            &j["amount"],
            &j["currency"],
            &j["orderId"],
            &j["userId"]
        ),
        (
            &json!("pay-1"),
            &json!("CHARGE"),
            &json!("APPROVED"),
            &json!("12.30"),
            &json!("KRW"),
            &json!("order-1"),
            &json!("user-1")
        )
    );
    chrono::DateTime::parse_from_rfc3339(j["createdAt"].as_str().unwrap()).unwrap();

    // The same request (12.3 is 12.30) is the same answer, marked as a replay.
    let again = sim.charge("pay-1", &charge_body("order-1", "12.3")).await;
    assert_eq!(again.status, 200);
    assert!(again.replayed);
    assert_eq!(again.text, first.text, "a replay is the stored bytes");

    // A different body, or the other endpoint, under the key: 422, nothing stored.
    let changed = sim.charge("pay-1", &charge_body("order-1", "12.31")).await;
    assert_eq!(
        (changed.status, changed.json["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let other = sim
        .refund("pay-1", &refund_body("pay-1", "order-1", "1.00"))
        .await;
    assert_eq!(
        (other.status, other.json["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let rows = sim.payments("pay-1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, j["id"].as_str().unwrap());
    assert_eq!(rows[0].3, 1230);

    // A decline is a stored answer too, replayed as such.
    sim.faults(json!({ "decline_ratio": 1.0 })).await;
    let declined = sim.charge("pay-2", &charge_body("order-2", "5.00")).await;
    assert_eq!(declined.status, 402, "{}", declined.text);
    assert_eq!(declined.json["status"], "DECLINED");
    let code = declined.json["code"].as_str().unwrap();
    assert!(
        ["insufficient_funds", "card_declined", "expired_card"].contains(&code),
        "{code}"
    );
    sim.faults(json!({ "decline_ratio": 0.0 })).await;
    let replayed = sim.charge("pay-2", &charge_body("order-2", "5.00")).await;
    assert_eq!((replayed.status, replayed.replayed), (402, true));
    assert_eq!(replayed.text, declined.text);

    // Lookup reads the ledger: the stored body, whatever its status.
    let found = sim.get("/v1/payments/pay-1").await;
    assert_eq!((found.status, &found.text), (200, &first.text));
    let found = sim.get("/v1/payments/pay-2").await;
    assert_eq!((found.status, &found.text), (200, &declined.text));
    let missing = sim.get("/v1/payments/never-used").await;
    assert_eq!(
        (missing.status, missing.json["error"].as_str()),
        (404, Some("payment_not_found"))
    );
    assert_eq!(sim.count("payments").await, 2);

    let metrics = sim.metrics().await;
    let m = |outcome: &str| {
        common::metric(
            &metrics,
            &format!("surge_pgsim_requests_total{{endpoint=\"charges\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        (m("approved"), m("declined"), m("replayed"), m("key_reused")),
        (1.0, 1.0, 2.0, 1.0)
    );
    assert_eq!(
        common::metric(
            &metrics,
            "surge_pgsim_charged_minor_total{currency=\"KRW\"}"
        ),
        1230.0
    );

    // SIGTERM stops it cleanly.
    let mut process = sim.finish().await;
    signal(&process, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "pg-sim ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_with_one_key_charge_once() {
    let sim = spawn_sim(&[("SURGE_PG_SIM__FAULTS__LATENCY_MEDIAN_MS", "1000")]).await;
    let body = charge_body("order-c", "30.00");
    let racing = futures::future::join_all((0..10).map(|_| sim.charge("pay-c", &body)));
    let probe = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // While it is in flight there is no payment to look up, and another
        // body under the key is still a reused key.
        let looked = sim.get("/v1/payments/pay-c").await;
        let other = sim.charge("pay-c", &charge_body("order-c", "31.00")).await;
        (looked, other)
    };
    let (replies, (looked, other)) = tokio::join!(racing, probe);
    assert_eq!(looked.status, 404, "{}", looked.text);
    assert_eq!(other.status, 422, "{}", other.text);
    let ok: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "{replies:?}");
    assert!(!ok[0].replayed);
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(
            (r.status, r.json["error"].as_str()),
            (409, Some("request_in_flight")),
            "{}",
            r.text
        );
    }
    let rows = sim.payments("pay-c").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, ok[0].json["id"].as_str().unwrap());
    // Afterwards the key replays.
    let after = sim.charge("pay-c", &body).await;
    assert_eq!((after.status, after.replayed), (200, true));
    assert_eq!(after.text, ok[0].text);
    let _ = sim.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refunds_never_exceed_the_charge() {
    let sim = spawn_sim(&[]).await;
    assert_eq!(
        sim.charge("ch-1", &charge_body("order-r", "10.00"))
            .await
            .status,
        200
    );

    let r1 = sim
        .refund("rf-1", &refund_body("ch-1", "order-r", "4.00"))
        .await;
    assert_eq!(r1.status, 200, "{}", r1.text);
    assert!(r1.json["id"].as_str().unwrap().starts_with("rf_"));
    assert_eq!(
        (&r1.json["kind"], &r1.json["status"], &r1.json["chargeKey"]),
        (&json!("REFUND"), &json!("APPROVED"), &json!("ch-1"))
    );
    assert_eq!(
        sim.refund("rf-2", &refund_body("ch-1", "order-r", "4.00"))
            .await
            .status,
        200
    );
    let over = sim
        .refund("rf-3", &refund_body("ch-1", "order-r", "2.01"))
        .await;
    assert_eq!(
        (over.status, over.json["code"].as_str()),
        (402, Some("amount_exceeds_charge")),
        "{}",
        over.text
    );
    // The decline is stored: a retry replays it even though 2.01 no longer fits either way.
    let again = sim
        .refund("rf-3", &refund_body("ch-1", "order-r", "2.01"))
        .await;
    assert_eq!(
        (again.status, again.replayed, &again.text),
        (402, true, &over.text)
    );
    assert_eq!(
        sim.refund("rf-4", &refund_body("ch-1", "order-r", "2.00"))
            .await
            .status,
        200
    );

    let unknown = sim
        .refund("rf-5", &refund_body("no-such-charge", "order-r", "1.00"))
        .await;
    assert_eq!(
        (unknown.status, unknown.json["code"].as_str()),
        (402, Some("charge_not_found"))
    );
    let currency = sim
        .refund("rf-6", &json!({ "chargeKey": "ch-1", "orderId": "order-r", "amount": "0.01", "currency": "USD" }))
        .await;
    assert_eq!(
        (currency.status, currency.json["code"].as_str()),
        (402, Some("currency_mismatch"))
    );
    // Refund declines never come from decline_ratio.
    sim.faults(json!({ "decline_ratio": 1.0 })).await;
    assert_eq!(
        sim.charge("ch-2", &charge_body("order-s", "10.00"))
            .await
            .status,
        402
    );
    let declined_charge = sim
        .refund("rf-7", &refund_body("ch-2", "order-s", "1.00"))
        .await;
    assert_eq!(
        declined_charge.json["code"], "charge_not_found",
        "a declined charge cannot be refunded"
    );
    sim.faults(json!({ "decline_ratio": 0.0 })).await;

    // Ten refunds of 3.00 at once against a 10.00 charge: exactly three fit.
    assert_eq!(
        sim.charge("ch-3", &charge_body("order-t", "10.00"))
            .await
            .status,
        200
    );
    let keys: Vec<String> = (0..10).map(|i| format!("rf-t-{i}")).collect();
    let body = refund_body("ch-3", "order-t", "3.00");
    let replies = futures::future::join_all(keys.iter().map(|k| sim.refund(k, &body))).await;
    let approved = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(approved, 3, "{replies:?}");
    assert!(replies
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| r.status == 402 && r.json["code"] == "amount_exceeds_charge"));

    // The ledger agrees: per charge, approved refunds <= approved charges.
    let per_order: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
        "select order_id,
                coalesce(sum(amount_minor) filter (where kind = 'CHARGE' and status = 'APPROVED'), 0)::bigint,
                coalesce(sum(amount_minor) filter (where kind = 'REFUND' and status = 'APPROVED'), 0)::bigint
         from {}.payments group by order_id order by order_id",
        sim.schema
    ))
    .fetch_all(&sim.db)
    .await
    .unwrap();
    assert_eq!(
        per_order,
        vec![
            ("order-r".to_string(), 1000, 1000),
            ("order-s".to_string(), 0, 0),
            ("order-t".to_string(), 1000, 900),
        ]
    );
    let _ = sim.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_after_applying_is_replayed_on_retry() {
    let sim = spawn_sim(&[]).await;
    sim.faults(json!({ "error_after_ratio": 1.0 })).await;
    let body = charge_body("order-e", "7.00");
    let failed = sim.charge("pay-e", &body).await;
    assert_eq!(
        (failed.status, failed.json["error"].as_str()),
        (500, Some("internal_error")),
        "{}",
        failed.text
    );
    let rows = sim.payments("pay-e").await;
    assert_eq!(rows.len(), 1, "the charge is applied despite the 500");
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2.as_str()),
        ("CHARGE", "APPROVED")
    );

    // Replays skip the faults; with the knob back at 0 the retry gets the 200.
    sim.faults(json!({ "error_after_ratio": 0.0 })).await;
    let retry = sim.charge("pay-e", &body).await;
    assert_eq!(
        (retry.status, retry.replayed),
        (200, true),
        "{}",
        retry.text
    );
    assert_eq!(retry.json["id"].as_str(), Some(rows[0].0.as_str()));
    assert_eq!(sim.payments("pay-e").await.len(), 1);
    let _ = sim.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_before_stores_nothing_and_the_retry_charges_once() {
    let sim = spawn_sim(&[]).await;
    sim.faults(json!({ "error_before_ratio": 1.0 })).await;
    let body = charge_body("order-b", "8.00");
    for _ in 0..2 {
        let failed = sim.charge("pay-b", &body).await;
        assert_eq!(
            (failed.status, failed.json["error"].as_str()),
            (500, Some("internal_error"))
        );
    }
    assert_eq!(sim.count("payments").await, 0);
    assert_eq!(sim.count("idempotency").await, 0, "the key stays free");
    // A free key takes any body: nothing was promised under it.
    sim.faults(json!({ "error_before_ratio": 0.0 })).await;
    let retry = sim.charge("pay-b", &charge_body("order-b", "8.50")).await;
    assert_eq!(
        (retry.status, retry.replayed),
        (200, false),
        "{}",
        retry.text
    );
    let rows = sim.payments("pay-b").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].3, 850);
    let metrics = sim.metrics().await;
    assert_eq!(
        common::metric(
            &metrics,
            "surge_pgsim_requests_total{endpoint=\"charges\",outcome=\"error_before\"}"
        ),
        2.0
    );
    let _ = sim.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_left_by_a_dead_pg_sim_is_taken_over_and_a_live_one_is_not() {
    let sim = spawn_sim(&[]).await;
    let body = charge_body("order-d", "3.00");
    // The hash pg-sim gives this request, learned from a probe under another key.
    assert_eq!(sim.charge("pay-probe", &body).await.status, 200);
    let hash: String = sqlx::query_scalar(&format!(
        "select request_hash from {}.idempotency where key = 'pay-probe'",
        sim.schema
    ))
    .fetch_one(&sim.db)
    .await
    .unwrap();
    // What a pg-sim killed between claiming a key and completing it leaves
    // behind; with the default hang (30 s) a claim is abandoned after 120 s.
    for (key, age) in [("pay-dead", 121.0), ("pay-live", 10.0)] {
        sqlx::query(&format!(
            "insert into {}.idempotency (key, endpoint, request_hash, state, claim_id, claimed_at)
             values ($1, '/v1/charges', $2, 'in_flight', gen_random_uuid(),
                     now() - make_interval(secs => $3))",
            sim.schema
        ))
        .bind(key)
        .bind(&hash)
        .bind(age)
        .execute(&sim.db)
        .await
        .unwrap();
    }
    let dead = sim.charge("pay-dead", &body).await;
    assert_eq!((dead.status, dead.replayed), (200, false), "{}", dead.text);
    assert_eq!(sim.payments("pay-dead").await.len(), 1);
    let live = sim.charge("pay-live", &body).await;
    assert_eq!(
        (live.status, live.json["error"].as_str()),
        (409, Some("request_in_flight")),
        "{}",
        live.text
    );
    assert_eq!(sim.get("/v1/payments/pay-live").await.status, 404);
    assert!(sim.payments("pay-live").await.is_empty());
    let _ = sim.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_key_charges_again_and_lookup_answers_the_latest() {
    let sim = spawn_sim(&[("SURGE_PG_SIM__KEY_RETENTION", "2s")]).await;
    let first = sim.charge("pay-x", &charge_body("order-x", "1.00")).await;
    assert_eq!(first.status, 200);
    assert!(
        sim.charge("pay-x", &charge_body("order-x", "1.00"))
            .await
            .replayed
    );
    assert_eq!(
        sim.charge("pay-x", &charge_body("order-x", "2.00"))
            .await
            .status,
        422
    );

    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Forgotten: a new request, even with another body, and it is charged.
    let second = sim.charge("pay-x", &charge_body("order-x", "2.00")).await;
    assert_eq!(
        (second.status, second.replayed),
        (200, false),
        "{}",
        second.text
    );
    assert_ne!(second.json["id"], first.json["id"]);
    let rows = sim.payments("pay-x").await;
    assert_eq!(
        rows.iter().map(|r| (r.0.clone(), r.3)).collect::<Vec<_>>(),
        vec![
            (first.json["id"].as_str().unwrap().to_string(), 100),
            (second.json["id"].as_str().unwrap().to_string(), 200),
        ],
        "both payments stay in the ledger"
    );
    // Lookup never forgets and answers the latest payment under the key.
    let found = sim.get("/v1/payments/pay-x").await;
    assert_eq!((found.status, &found.text), (200, &second.text));
    // The new use is remembered as usual.
    let again = sim.charge("pay-x", &charge_body("order-x", "2.00")).await;
    assert_eq!((again.replayed, &again.text), (true, &second.text));
    let _ = sim.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_faults_round_trip_validate_and_need_the_token() {
    let sim = spawn_sim(&[("SURGE_PG_SIM__ADMIN_TOKEN", "s3cret")]).await;
    let url = format!("{}/admin/faults", sim.url);

    let none = sim.send(sim.http.get(&url)).await;
    assert_eq!(
        (none.status, none.json["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let challenge = sim.http.get(&url).send().await.unwrap();
    assert_eq!(challenge.headers()["www-authenticate"], "Bearer");
    let wrong = sim.send(sim.http.get(&url).bearer_auth("nope")).await;
    assert_eq!(
        (wrong.status, wrong.json["error"].as_str()),
        (403, Some("forbidden"))
    );
    let put_wrong = sim
        .send(
            sim.http
                .put(&url)
                .bearer_auth("nope")
                .body(r#"{"decline_ratio":1}"#),
        )
        .await;
    assert_eq!(put_wrong.status, 403);
    // The scheme is case-insensitive.
    let start = sim
        .send(sim.http.get(&url).header("Authorization", "bearer s3cret"))
        .await;
    assert_eq!(start.status, 200, "{}", start.text);
    assert_eq!(start.json["hang"], "30s");
    assert_eq!(start.json["decline_ratio"], 0.0);
    assert_eq!(
        start.json["decline_codes"],
        json!(["insufficient_funds", "card_declined", "expired_card"])
    );

    let changed = sim
        .faults(json!({ "decline_ratio": 0.5, "hang": "2s", "latency_median_ms": 5, "decline_codes": ["do_not_honor"] }))
        .await;
    let mut expected = start.json.clone();
    expected["decline_ratio"] = json!(0.5);
    expected["hang"] = json!("2s");
    expected["latency_median_ms"] = json!(5.0);
    expected["decline_codes"] = json!(["do_not_honor"]);
    assert_eq!(changed, expected);
    let read = sim.send(sim.http.get(&url).bearer_auth("s3cret")).await;
    assert_eq!(read.json, expected);

    for bad in [
        r#"{"decline_ratio": 1.5}"#,
        r#"{"conflict_ratio": -0.1}"#,
        r#"{"latency_median_ms": -1}"#,
        r#"{"no_such_knob": 1}"#,
        r#"{"hang": "soon"}"#,
        r#"[1]"#,
        "not json",
    ] {
        let reply = sim
            .send(sim.http.put(&url).bearer_auth("s3cret").body(bad))
            .await;
        assert_eq!(
            (reply.status, reply.json["error"].as_str()),
            (400, Some("invalid_faults")),
            "{bad}: {}",
            reply.text
        );
        assert!(!reply.json["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty());
    }
    let after = sim.send(sim.http.get(&url).bearer_auth("s3cret")).await;
    assert_eq!(after.json, expected, "a refused change changes nothing");
    // Payments need no admin token (half of them are declined now).
    let paid = sim.charge("pay-a", &charge_body("order-a", "1.00")).await;
    assert!([200, 402].contains(&paid.status), "{}", paid.text);
    let _ = sim.finish().await;
}

/// Path, Idempotency-Key, body, and the error code and field it must get.
type BadRequest<'a> = (&'a str, Option<&'a str>, Value, &'a str, Option<&'a str>);

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_400_naming_the_field_and_store_nothing() {
    let sim = spawn_sim(&[]).await;
    let good = charge_body("order-m", "1.00");
    let long_key = "k".repeat(256);
    let cases: Vec<BadRequest> = vec![
        (
            "/v1/charges",
            None,
            good.clone(),
            "idempotency_key_required",
            None,
        ),
        (
            "/v1/charges",
            Some(""),
            good.clone(),
            "idempotency_key_required",
            None,
        ),
        (
            "/v1/charges",
            Some(&long_key),
            good.clone(),
            "idempotency_key_required",
            None,
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!({ "userId": "u", "amount": "1.00", "currency": "KRW" }),
            "invalid_request",
            Some("orderId"),
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!({ "orderId": "o", "amount": "1.00", "currency": "KRW" }),
            "invalid_request",
            Some("userId"),
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!({ "orderId": "o", "userId": "u", "amount": "12.345", "currency": "KRW" }),
            "invalid_request",
            Some("amount"),
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!({ "orderId": "o", "userId": "u", "amount": "0", "currency": "KRW" }),
            "invalid_request",
            Some("amount"),
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!({ "orderId": "o", "userId": "u", "amount": 12.3, "currency": "KRW" }),
            "invalid_request",
            Some("amount"),
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!({ "orderId": "o", "userId": "u", "amount": "1e3", "currency": "KRW" }),
            "invalid_request",
            Some("amount"),
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!({ "orderId": "o", "userId": "u", "amount": "1.00", "currency": "won" }),
            "invalid_request",
            Some("currency"),
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!({ "orderId": "", "userId": "u", "amount": "1.00", "currency": "KRW" }),
            "invalid_request",
            Some("orderId"),
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!({ "orderId": "o", "userId": "u", "amount": "1.00", "currency": "KRW", "tip": "1" }),
            "invalid_request",
            Some("tip"),
        ),
        (
            "/v1/charges",
            Some("k-bad"),
            json!("just a string"),
            "invalid_request",
            None,
        ),
        (
            "/v1/refunds",
            Some("k-bad"),
            json!({ "orderId": "o", "amount": "1.00", "currency": "KRW" }),
            "invalid_request",
            Some("chargeKey"),
        ),
        (
            "/v1/refunds",
            Some("k-bad"),
            json!({ "chargeKey": "c", "orderId": "o", "amount": "-1.00", "currency": "KRW" }),
            "invalid_request",
            Some("amount"),
        ),
    ];
    for (path, key, body, error, field) in &cases {
        let reply = sim.post(path, *key, body).await;
        assert_eq!(reply.status, 400, "{path} {body}: {}", reply.text);
        assert_eq!(
            reply.json["error"].as_str(),
            Some(*error),
            "{body}: {}",
            reply.text
        );
        assert_eq!(
            reply.json["field"].as_str(),
            *field,
            "{body}: {}",
            reply.text
        );
        assert!(!reply.json["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty());
    }
    let not_json = sim
        .send(
            sim.http
                .post(format!("{}/v1/charges", sim.url))
                .header("Idempotency-Key", "k-bad")
                .body("{oops"),
        )
        .await;
    assert_eq!(
        (not_json.status, not_json.json["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(sim.count("payments").await, 0);
    assert_eq!(sim.count("idempotency").await, 0);
    // Nothing was stored under the key: a good request with it is a first request.
    let fine = sim.charge("k-bad", &good).await;
    assert_eq!((fine.status, fine.replayed), (200, false), "{}", fine.text);
    let metrics = sim.metrics().await;
    assert_eq!(
        common::metric(
            &metrics,
            "surge_pgsim_requests_total{endpoint=\"charges\",outcome=\"bad_request\"}"
        ),
        (cases.iter().filter(|c| c.0 == "/v1/charges").count() + 1) as f64
    );
    let unknown_route = sim.get("/v1/nothing").await;
    assert_eq!(
        (unknown_route.status, unknown_route.json["error"].as_str()),
        (404, Some("not_found"))
    );
    let _ = sim.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_client_reads_answers_unknowns_and_lookups() {
    let sim = spawn_sim(&[]).await;
    let gw = HttpGateway::new(&sim.url, Duration::from_secs(5)).unwrap();
    let charge = Charge {
        key: "pay-1".into(),
        order_id: "order-h".into(),
        user_id: "user-h".into(),
        amount: 1230,
        currency: "KRW".into(),
    };
    let Ok(Outcome::Approved { provider_id }) = gw.charge(&charge).await else {
        panic!("charge not approved");
    };
    assert_eq!(sim.payments("pay-1").await[0].0, provider_id);
    assert_eq!(
        gw.charge(&charge).await,
        Ok(Outcome::Approved {
            provider_id: provider_id.clone()
        }),
        "a retry is the same charge"
    );
    assert_eq!(
        gw.lookup("pay-1").await,
        Ok(Some(Outcome::Approved {
            provider_id: provider_id.clone()
        }))
    );
    assert_eq!(gw.lookup("never used / odd?key").await, Ok(None));

    let refund = Refund {
        key: "ref-1".into(),
        charge_key: "pay-1".into(),
        order_id: "order-h".into(),
        amount: 230,
        currency: "KRW".into(),
    };
    assert!(
        matches!(gw.refund(&refund).await, Ok(Outcome::Approved { provider_id }) if provider_id.starts_with("rf_"))
    );
    let too_much = Refund {
        key: "ref-2".into(),
        amount: 1001,
        ..refund.clone()
    };
    assert!(
        matches!(gw.refund(&too_much).await, Ok(Outcome::Declined { code, .. }) if code == "amount_exceeds_charge")
    );
    assert!(
        matches!(gw.lookup("ref-2").await, Ok(Some(Outcome::Declined { code, .. })) if code == "amount_exceeds_charge")
    );

    // A key reused for another body is our bug: unknown, never a decline.
    let reused = gw
        .charge(&Charge {
            amount: 999,
            ..charge.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(reused.kind, UnknownKind::Transport);
    assert!(
        reused.detail.contains("idempotency_key_reused"),
        "{}",
        reused.detail
    );

    sim.faults(json!({ "decline_ratio": 1.0, "decline_codes": ["expired_card"] }))
        .await;
    let second = Charge {
        key: "pay-2".into(),
        ..charge.clone()
    };
    assert!(
        matches!(gw.charge(&second).await, Ok(Outcome::Declined { code, .. }) if code == "expired_card")
    );
    assert!(
        matches!(gw.lookup("pay-2").await, Ok(Some(Outcome::Declined { code, .. })) if code == "expired_card")
    );

    let third = Charge {
        key: "pay-3".into(),
        ..charge.clone()
    };
    sim.faults(json!({ "decline_ratio": 0.0, "conflict_ratio": 1.0 }))
        .await;
    assert_eq!(
        gw.charge(&third).await.unwrap_err().kind,
        UnknownKind::InFlight
    );
    sim.faults(json!({ "conflict_ratio": 0.0, "error_before_ratio": 1.0 }))
        .await;
    assert_eq!(
        gw.charge(&third).await.unwrap_err().kind,
        UnknownKind::ServerError
    );
    assert_eq!(gw.lookup("pay-3").await, Ok(None), "nothing was done");

    // The answer never comes in time, but the charge is made: lookup finds it.
    sim.faults(json!({ "error_before_ratio": 0.0, "timeout_after_ratio": 1.0, "hang": "3s" }))
        .await;
    let impatient = HttpGateway::new(&sim.url, Duration::from_millis(500)).unwrap();
    let started = Instant::now();
    assert_eq!(
        impatient.charge(&third).await.unwrap_err().kind,
        UnknownKind::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let rows = sim.payments("pay-3").await;
    assert_eq!(rows.len(), 1);
    let approved = Outcome::Approved {
        provider_id: rows[0].0.clone(),
    };
    assert_eq!(impatient.lookup("pay-3").await, Ok(Some(approved.clone())));
    sim.faults(json!({ "timeout_after_ratio": 0.0 })).await;
    assert_eq!(impatient.charge(&third).await, Ok(approved));
    assert_eq!(sim.payments("pay-3").await.len(), 1);

    // Nobody listening: unknown, not "no payment".
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nowhere = HttpGateway::new(&format!("http://{closed}"), Duration::from_secs(1)).unwrap();
    assert_eq!(
        nowhere.charge(&charge).await.unwrap_err().kind,
        UnknownKind::Transport
    );
    assert_eq!(
        nowhere.lookup("pay-1").await.unwrap_err().kind,
        UnknownKind::Transport
    );
    // A wrong base path answers 404 without payment_not_found: unknown too.
    let wrong_path =
        HttpGateway::new(&format!("{}/typo", sim.url), Duration::from_secs(1)).unwrap();
    assert_eq!(
        wrong_path.lookup("pay-1").await.unwrap_err().kind,
        UnknownKind::Transport
    );
    let _ = sim.finish().await;
}
