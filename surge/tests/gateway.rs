//! The HTTP gateway over real HTTP, with the real pipeline and sinks behind
//! it: a sale of 100 units to 1,000 users where every request polls to a
//! decision and exactly 100 are ISSUED; one Idempotency-Key sent three times
//! is one request with one decision, and the same key on another request
//! is refused 422; one request id sent straight to Kafka for three
//! coupons is three requests, each polled on its coupon's route; a batch of requests (`POST /coupon-requests`) is each
//! of its requests decided once, a reused requestId in it refused alone
//! and a bad item refusing the whole batch; a table of bad inputs,
//! each with its status and the field it names, including refused admin
//! calls; and a request polled under another coupon than its own is 404
//! naming both.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::coupon::{create, issue, Fixture};
use common::gateway::{spawn_gateway, ADMIN_TOKEN};
use common::{stdout, surge};
use futures::StreamExt;
use serde_json::json;
use surge_kafka::partition_for;
use surge_schemas::coupon::{CouponCommand, Outcome};
use surge_schemas::Contract;

#[tokio::test(flavor = "multi_thread")]
async fn a_sale_over_http_issues_exactly_the_stock_and_a_key_is_one_request() {
    let fx = Fixture::new("gateway").await;
    let _pipeline = fx.spawn_pipeline("0", &[]);
    let _pg = fx.spawn_sink("postgres", &[]);
    let _redis = fx.spawn_sink("redis", &[]);
    let gw = spawn_gateway(&fx, &[]).await;
    let coupon = format!("{}sale", fx.prefix);
    gw.create_coupon(&coupon, 100).await;

    // 1,000 distinct users ask, 50 requests in flight.
    let accepted: Vec<(String, String)> = futures::stream::iter(0..1_000)
        .map(|u| {
            let (gw, coupon) = (&gw, &coupon);
            async move {
                let user = format!("user-{u}");
                let (status, body) = gw
                    .post(
                        &format!("/coupons/{coupon}/issue"),
                        &[],
                        json!({ "userId": user }),
                    )
                    .await;
                assert_eq!(status, 202, "{body}");
                assert_eq!(body["status"], "PENDING");
                let id = body["requestId"].as_str().unwrap().to_string();
                assert_eq!(body["poll"], format!("/coupon-requests/{id}"));
                (id, user)
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let ids: HashSet<&str> = accepted.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 1_000, "every request got its own id");

    // Every request id polls to a final decision.
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut holders = HashSet::new();
    for (id, user) in &accepted {
        let d = gw.decision(id, Duration::from_secs(120)).await;
        assert_eq!(d["couponId"], coupon.as_str());
        assert_eq!(d["userId"], user.as_str());
        let outcome = d["outcome"].as_str().unwrap().to_string();
        if outcome == "ISSUED" {
            assert!(
                holders.insert(d["sequence"].as_i64().unwrap()),
                "sequences unique"
            );
        }
        *outcomes.entry(outcome).or_default() += 1;
    }
    assert_eq!(outcomes.get("ISSUED"), Some(&100), "{outcomes:?}");
    assert_eq!(outcomes.get("SOLD_OUT"), Some(&900), "{outcomes:?}");
    assert_eq!(holders, (1..=100).collect::<HashSet<i64>>());
    let (status, c) = gw.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            c["stock"].as_i64(),
            c["issued"].as_i64(),
            c["remaining"].as_i64()
        ),
        (Some(100), Some(100), Some(0)),
        "{c}"
    );

    // One Idempotency-Key, three sends: one request id, one decision.
    let key = format!("{}retry-key", fx.prefix);
    let mut answers = Vec::new();
    for _ in 0..3 {
        let (status, body) = gw
            .post(
                &format!("/coupons/{coupon}/issue"),
                &[("idempotency-key", key.as_str())],
                json!({ "userId": "latecomer" }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        answers.push(body);
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0]["requestId"], key.as_str());
    let d = gw.decision(&key, Duration::from_secs(60)).await;
    assert_eq!(d["outcome"], "SOLD_OUT");

    // The same key on a different request is refused, never handed on: not
    // for another coupon (a second request under the key the client retries
    // with), not for another user, not on another route. A poll of the key still
    // reads the one request it names.
    let other_coupon = format!("{}other", fx.prefix);
    let reuses = [
        (
            format!("/coupons/{other_coupon}/issue"),
            json!({ "userId": "latecomer" }),
        ),
        (
            format!("/coupons/{coupon}/issue"),
            json!({ "userId": "someone-else" }),
        ),
        (
            "/orders".to_string(),
            json!({ "userId": "latecomer", "currency": "KRW", "items": [{ "productId": "p", "quantity": 1, "unitPrice": "1.00" }] }),
        ),
    ];
    for (path, body) in reuses {
        let (status, answer) = gw
            .post(&path, &[("idempotency-key", key.as_str())], body)
            .await;
        assert_eq!(status, 422, "{path}: {answer}");
        assert_eq!(answer["field"], "Idempotency-Key", "{answer}");
    }
    let d = gw.decision(&key, Duration::from_secs(10)).await;
    assert_eq!(
        (d["couponId"].as_str(), d["userId"].as_str()),
        (Some(coupon.as_str()), Some("latecomer"))
    );
    let decisions = fx.decisions(1_000 + 2, Duration::from_secs(60)).await;
    assert_eq!(
        decisions.iter().filter(|d| d.request_id == key).count(),
        1,
        "three sends of one key are one decision on coupon-result"
    );
    assert_eq!(
        decisions.len(),
        1_000 + 2,
        "the create, 1,000 requests and one retried key"
    );

    // The product's own check agrees: invariants hold, both stores equal the topic.
    let out = surge(
        &["verify", "--coupons", &coupon, "--wait", "60"],
        &[
            ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
            ("SURGE_REDIS__KEYSPACE", fx.prefix.trim_end_matches('-')),
        ],
    );
    assert!(out.status.success(), "{}", stdout(&out));
}

/// A request id names a request of one coupon. A producer straight to
/// Kafka may send one id for several coupons: each is a request of its
/// own, decided by its coupon's partition whether the coupons share a
/// partition or not, and kept apart in both stores. The bare poll names
/// the coupons to ask (409) instead of answering with one of them; the
/// coupon's poll answers each exactly; the id reused on the same coupon
/// for another user is still dead-lettered; `surge verify` agrees.
#[tokio::test(flavor = "multi_thread")]
async fn one_request_id_on_several_coupons_straight_to_kafka_is_several_requests() {
    let fx = Fixture::new("gateway-ids").await;
    let n = fx.partitions(&fx.topic(CouponCommand::TOPIC));
    assert!(n > 1, "the coupon topic needs two partitions for this test");
    let coupon = |i: usize| format!("{}c{i}", fx.prefix);
    let home = coupon(0);
    let p = partition_for(home.as_bytes(), n);
    let neighbour = (1..)
        .map(coupon)
        .find(|c| partition_for(c.as_bytes(), n) == p)
        .unwrap();
    let stranger = (1..)
        .map(coupon)
        .find(|c| partition_for(c.as_bytes(), n) != p)
        .unwrap();
    let id = format!("{}shared", fx.prefix);
    let users = [
        (&home, "u-home"),
        (&neighbour, "u-neighbour"),
        (&stranger, "u-stranger"),
    ];
    let mut commands: Vec<CouponCommand> = users.iter().map(|(c, _)| create(c, 5)).collect();
    commands.extend(users.iter().map(|(c, u)| issue(&id, c, u)));
    // An upstream retry of one of them (decided once) and the id reused on
    // its own coupon for someone else (dead-lettered).
    commands.push(issue(&id, &stranger, "u-stranger"));
    commands.push(issue(&id, &home, "u-thief"));
    fx.produce(&commands).await;

    let _pipeline = fx.spawn_pipeline("0", &[]);
    let _pg = fx.spawn_sink("postgres", &[]);
    let _redis = fx.spawn_sink("redis", &[]);
    let gw = spawn_gateway(&fx, &[]).await;

    let decisions = fx.decisions(6, Duration::from_secs(60)).await;
    assert_eq!(
        decisions.len(),
        6,
        "three creates and three requests: {decisions:?}"
    );
    for (c, u) in users {
        let of_coupon: Vec<_> = decisions
            .iter()
            .filter(|d| d.request_id == id && &d.coupon_id == c)
            .collect();
        assert_eq!(of_coupon.len(), 1, "{c}: {decisions:?}");
        assert_eq!(of_coupon[0].outcome, Outcome::Issued, "{c}");
        assert_eq!(of_coupon[0].user_id.as_deref(), Some(u), "{c}");
    }
    let dlq = common::dlq::wait_for(
        &fx.factory,
        &fx.names.dlq(surge_core::names::COUPON),
        Duration::from_secs(30),
        |records| !records.is_empty(),
    );
    let reasons: Vec<_> = dlq.iter().map(|r| r.header("surge.dlq.reason")).collect();
    assert_eq!(reasons, [Some("request_id_reused")], "{dlq:#?}");

    // Each coupon's poll reads its own request, from Redis and, through a
    // gateway on an empty keyspace (no markers, no cache), from PostgreSQL.
    let keyspace = format!("{}no-cache", fx.prefix);
    let uncached = spawn_gateway(&fx, &[("SURGE_REDIS__KEYSPACE", keyspace.as_str())]).await;
    for (gw, store) in [(&gw, "redis"), (&uncached, "postgres")] {
        for (c, u) in users {
            let path = format!("/coupons/{c}/requests/{id}");
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let d = loop {
                let (status, body) = gw.get(&path).await;
                if status == 200 && body["source"] == store {
                    break body;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{path} from {store}: {status} {body}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(
                (
                    d["status"].as_str(),
                    d["couponId"].as_str(),
                    d["userId"].as_str(),
                    d["outcome"].as_str()
                ),
                (Some("DECIDED"), Some(c.as_str()), Some(u), Some("ISSUED")),
                "{path} from {store}: {d}"
            );
        }
        let (status, body) = gw
            .get(&format!("/coupons/{}c-none/requests/{id}", fx.prefix))
            .await;
        assert_eq!(
            status, 404,
            "{store}: no request of that coupon has the id: {body}"
        );
        let (status, body) = gw.get(&format!("/coupon-requests/{id}")).await;
        assert_eq!(status, 409, "{store}: {body}");
        assert_eq!(body["field"], "requestId", "{body}");
        let message = body["error"].as_str().unwrap_or_default();
        for (c, _) in users {
            assert!(
                message.contains(&format!("/coupons/{c}/requests/{id}")),
                "{store}: the 409 names the poll of {c}: {message}"
            );
        }
    }

    let out = surge(
        &[
            "verify",
            "--coupons",
            &format!("{}c", fx.prefix),
            "--wait",
            "60",
        ],
        &[
            ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
            ("SURGE_REDIS__KEYSPACE", fx.prefix.trim_end_matches('-')),
        ],
    );
    assert!(out.status.success(), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_many_requests_each_decided_once() {
    let fx = Fixture::new("gwbatch").await;
    let _pipeline = fx.spawn_pipeline("0", &[]);
    let _pg = fx.spawn_sink("postgres", &[]);
    let _redis = fx.spawn_sink("redis", &[]);
    let gw = spawn_gateway(&fx, &[("SURGE_GATEWAY__MAX_BATCH_REQUESTS", "120")]).await;
    let (a, b) = (format!("{}a", fx.prefix), format!("{}b", fx.prefix));
    gw.create_coupon(&a, 30).await;
    gw.create_coupon(&b, 30).await;
    let key = |i: usize| format!("{}k-{i}", fx.prefix);

    // 50 keyed requests for a, 50 unkeyed for b, in one call.
    let mut items: Vec<serde_json::Value> = (0..50)
        .map(|i| json!({ "couponId": a, "userId": format!("u{i}"), "requestId": key(i) }))
        .collect();
    items.extend((0..50).map(|i| json!({ "couponId": b, "userId": format!("u{i}") })));
    let (status, body) = gw
        .post("/coupon-requests", &[], json!({ "requests": items }))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 100, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["status"], "PENDING", "{r}");
        let id = r["requestId"].as_str().unwrap();
        if i < 50 {
            assert_eq!(id, key(i), "a keyed item keeps its requestId");
        }
        assert_eq!(r["poll"], format!("/coupon-requests/{id}"));
    }
    let ids: Vec<String> = results
        .iter()
        .map(|r| r["requestId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        100,
        "every unkeyed item got its own id"
    );

    // The keyed half again (a client retrying the call): the same requests.
    let (status, again) = gw
        .post("/coupon-requests", &[], json!({ "requests": items[..50] }))
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["accepted"], 50);

    // A reused requestId is refused alone; the rest of its batch goes on.
    let (status, mixed) = gw
        .post(
            "/coupon-requests",
            &[],
            json!({ "requests": [
                { "couponId": a, "userId": "someone-else", "requestId": key(0) },
                { "couponId": b, "userId": "late" },
            ] }),
        )
        .await;
    assert_eq!(status, 207, "{mixed}");
    assert_eq!(mixed["accepted"], 1);
    assert_eq!(mixed["results"][0]["status"], "REFUSED", "{mixed}");
    assert_eq!(mixed["results"][0]["field"], "requests[0].requestId");
    assert_eq!(mixed["results"][1]["status"], "PENDING", "{mixed}");
    let late = mixed["results"][1]["requestId"]
        .as_str()
        .unwrap()
        .to_string();

    // One bad item refuses the whole batch, naming it: nothing is sent.
    let never = format!("{}never", fx.prefix);
    let refusals = [
        (
            json!({ "requests": [
                { "couponId": a, "userId": "fine", "requestId": never },
                { "couponId": a, "userId": "" },
            ] }),
            "requests[1].userId",
        ),
        (json!({ "requests": [] }), "requests"),
        (
            json!({ "requests": (0..121).map(|i| json!({ "couponId": a, "userId": format!("x{i}") })).collect::<Vec<_>>() }),
            "requests",
        ),
        (
            json!({ "requests": [{ "couponId": a, "userId": "u", "requestId": null }] }),
            "requests[0].requestId",
        ),
    ];
    for (batch, field) in refusals {
        let (status, answer) = gw.post("/coupon-requests", &[], batch).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }

    // One requestId on two requests in one batch is refused whole, whatever
    // Redis says.
    let (status, twice) = gw
        .post(
            "/coupon-requests",
            &[],
            json!({ "requests": [
                { "couponId": a, "userId": "x", "requestId": never },
                { "couponId": b, "userId": "y", "requestId": never },
            ] }),
        )
        .await;
    assert_eq!(status, 400, "{twice}");
    assert_eq!(twice["field"], "requests[1].requestId", "{twice}");
    // The same request twice in one batch is a retry: both PENDING, one request.
    let again_key = format!("{}same-twice", fx.prefix);
    let item = json!({ "couponId": a, "userId": "twice-user", "requestId": again_key });
    let (status, same) = gw
        .post("/coupon-requests", &[], json!({ "requests": [item, item] }))
        .await;
    assert_eq!(status, 202, "{same}");
    assert_eq!(same["accepted"], 2, "{same}");

    // A single request and a batch item with one key and one content are one
    // request; the batch's body limit is its own, above the single one.
    let shared = format!("{}shared", fx.prefix);
    let (status, single) = gw
        .post(
            &format!("/coupons/{b}/issue"),
            &[("idempotency-key", shared.as_str())],
            json!({ "userId": "shared-user" }),
        )
        .await;
    assert_eq!(status, 202, "{single}");
    let long = "l".repeat(120);
    let mut big: Vec<serde_json::Value> = (0..119)
        .map(|i| json!({ "couponId": b, "userId": format!("{long}{i}") }))
        .collect();
    big.push(json!({ "couponId": b, "userId": "shared-user", "requestId": shared }));
    let big = json!({ "requests": big });
    assert!(big.to_string().len() > 16 * 1024, "over max_body_bytes");
    let (status, answer) = gw.post("/coupon-requests", &[], big).await;
    assert_eq!(status, 202, "{answer}");
    let big_ids: Vec<String> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requestId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(big_ids.last(), Some(&shared));
    let (status, answer) = gw
        .post(
            "/coupon-requests",
            &[],
            json!({ "requests": [{ "couponId": b, "userId": "u" }], "pad": "p".repeat(600_000) }),
        )
        .await;
    assert_eq!(status, 413, "over max_batch_body_bytes: {answer}");

    // Every accepted request decides once: 30 of each coupon's 50 (51 for
    // b) distinct users ISSUED; the retried call added no decision.
    for id in ids.iter().chain([&late]).chain(&big_ids) {
        let d = gw.decision(id, Duration::from_secs(120)).await;
        assert!(
            d["outcome"] == "ISSUED" || d["outcome"] == "SOLD_OUT",
            "{d}"
        );
    }
    let first = gw.decision(&key(0), Duration::from_secs(10)).await;
    assert_eq!(
        first["userId"], "u0",
        "the key reads its own request: {first}"
    );
    // Two creates, 101 requests, the one sent twice in a batch, 119 new
    // ones in the big batch and the shared key once: its single send and
    // its batch item are one request.
    let decisions = fx
        .decisions(2 + 101 + 1 + 120, Duration::from_secs(60))
        .await;
    assert_eq!(decisions.len(), 2 + 101 + 1 + 120, "{}", decisions.len());
    for key in [&shared, &again_key] {
        assert_eq!(
            decisions.iter().filter(|d| &d.request_id == key).count(),
            1,
            "{key}"
        );
    }
    for coupon in [&a, &b] {
        let issued = decisions
            .iter()
            .filter(|d| &d.coupon_id == coupon && d.outcome.symbol() == "ISSUED")
            .count();
        assert_eq!(issued, 30, "{coupon}");
    }
    let (status, _) = gw.get(&format!("/coupon-requests/{never}")).await;
    assert_eq!(status, 404, "the refused batch sent nothing");

    let out = surge(
        &["verify", "--coupons", &fx.prefix, "--wait", "60"],
        &[
            ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
            ("SURGE_REDIS__KEYSPACE", fx.prefix.trim_end_matches('-')),
        ],
    );
    assert!(out.status.success(), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_a_4xx_naming_what_is_wrong() {
    let fx = Fixture::new("gateway-bad").await;
    let gw = spawn_gateway(&fx, &[("SURGE_GATEWAY__MAX_BODY_BYTES", "1024")]).await;
    let json_ct = ("content-type", "application/json");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let admin = ("authorization", bearer.as_str());
    let long = "x".repeat(129);
    let huge = format!("{{\"userId\": \"{}\"}}", "a".repeat(2_000));
    let issue = "/coupons/c1/issue".to_string();
    // (what, method, path, headers, body, status, field)
    let cases: Vec<(&str, &str, String, Vec<(&str, &str)>, String, u16, Option<&str>)> = vec![
        ("malformed JSON", "POST", issue.clone(), vec![json_ct], "{\"userId\":".into(), 400, None),
        ("missing userId", "POST", issue.clone(), vec![json_ct], "{}".into(), 400, Some("userId")),
        ("empty userId", "POST", issue.clone(), vec![json_ct], "{\"userId\":\"\"}".into(), 400, Some("userId")),
        ("oversized userId", "POST", issue.clone(), vec![json_ct], format!("{{\"userId\":\"{long}\"}}"), 400, Some("userId")),
        ("userId with a space", "POST", issue.clone(), vec![json_ct], "{\"userId\":\"a b\"}".into(), 400, Some("userId")),
        ("userId not a string", "POST", issue.clone(), vec![json_ct], "{\"userId\":7}".into(), 400, Some("userId")),
        ("unknown field", "POST", issue.clone(), vec![json_ct], "{\"userId\":\"u\",\"coupon\":1}".into(), 400, Some("coupon")),
        ("oversized coupon id", "POST", format!("/coupons/{long}/issue"), vec![json_ct], "{\"userId\":\"u\"}".into(), 400, Some("couponId")),
        ("oversized Idempotency-Key", "POST", issue.clone(), vec![json_ct, ("idempotency-key", long.as_str())], "{\"userId\":\"u\"}".into(), 400, Some("Idempotency-Key")),
        ("body over the limit", "POST", issue.clone(), vec![json_ct], huge.clone(), 413, None),
        ("wrong content type", "POST", issue.clone(), vec![("content-type", "text/plain")], "{\"userId\":\"u\"}".into(), 415, None),
        ("no content type", "POST", issue.clone(), vec![], "{\"userId\":\"u\"}".into(), 415, None),
        ("admin without a token", "POST", "/admin/coupons".into(), vec![json_ct], "{\"couponId\":\"c\",\"stock\":1}".into(), 401, None),
        ("admin with a wrong token", "POST", "/admin/coupons".into(), vec![json_ct, ("authorization", "Bearer nope")], "{\"couponId\":\"c\",\"stock\":1}".into(), 403, None),
        ("admin stock without a token", "POST", "/admin/coupons/c/stock".into(), vec![json_ct], "{\"delta\":1}".into(), 401, None),
        ("admin stock with a wrong token", "POST", "/admin/coupons/c/stock".into(), vec![json_ct, ("authorization", "Bearer nope")], "{\"delta\":1}".into(), 403, None),
        ("admin stock with another scheme", "POST", "/admin/coupons/c/stock".into(), vec![json_ct, ("authorization", "Basic Zm9vOmJhcg==")], "{\"delta\":1}".into(), 401, None),
        ("two Idempotency-Keys", "POST", issue.clone(), vec![json_ct, ("idempotency-key", "two-a"), ("idempotency-key", "two-b")], "{\"userId\":\"u\"}".into(), 400, Some("Idempotency-Key")),
        ("negative stock", "POST", "/admin/coupons".into(), vec![json_ct, admin], "{\"couponId\":\"c\",\"stock\":-1}".into(), 400, Some("stock")),
        ("stock not a number", "POST", "/admin/coupons".into(), vec![json_ct, admin], "{\"couponId\":\"c\",\"stock\":\"5\"}".into(), 400, Some("stock")),
        ("bad activeFrom", "POST", "/admin/coupons".into(), vec![json_ct, admin], "{\"couponId\":\"c\",\"stock\":1,\"activeFrom\":\"tomorrow\"}".into(), 400, Some("activeFrom")),
        ("window ends before it starts", "POST", "/admin/coupons".into(), vec![json_ct, admin], "{\"couponId\":\"c\",\"stock\":1,\"activeFrom\":\"2026-01-02T00:00:00Z\",\"activeUntil\":\"2026-01-01T00:00:00Z\"}".into(), 400, Some("activeUntil")),
        ("zero delta", "POST", "/admin/coupons/c/stock".into(), vec![json_ct, admin], "{\"delta\":0}".into(), 400, Some("delta")),
        ("unknown coupon", "GET", "/coupons/never-created".into(), vec![], String::new(), 404, Some("couponId")),
    ];
    let mut failures = Vec::new();
    for (what, method, path, headers, body, status, field) in &cases {
        let mut r = match *method {
            "POST" => gw.http.post(format!("{}{path}", gw.url)).body(body.clone()),
            _ => gw.http.get(format!("{}{path}", gw.url)),
        };
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let response = r.send().await.unwrap();
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        let error_ok = json["error"].as_str().is_some_and(|e| !e.is_empty());
        let field_ok = json["field"].as_str() == *field;
        if got != *status || !error_ok || !field_ok {
            failures.push(format!(
                "{what}: want {status} field {field:?}, got {got} {text}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Every documented route is served (no framework 404/405), and only JSON errors come back.
    for (method, template) in surge_gateway::openapi::ROUTES {
        let path = template
            .replace("{couponId}", "c1")
            .replace("{requestId}", "r1");
        let r = match *method {
            "post" => gw
                .http
                .post(format!("{}{path}", gw.url))
                .header("content-type", "application/json")
                .body("{}"),
            _ => gw.http.get(format!("{}{path}", gw.url)),
        };
        let response = r.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(
            !(status == 405 || (status == 404 && text.is_empty())),
            "{method} {template} is not served: {status}"
        );
    }
    let (status, doc) = gw.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_polled_under_another_coupon_is_404_saying_so() {
    let fx = Fixture::new("gateway-other-coupon").await;
    let gw = spawn_gateway(&fx, &[]).await;
    let (c1, c6) = (format!("{}c1", fx.prefix), format!("{}c6", fx.prefix));
    let key = format!("{}key-001", fx.prefix);
    let (status, body) = gw
        .post(
            &format!("/coupons/{c1}/issue"),
            &[("idempotency-key", key.as_str())],
            json!({ "userId": "u1" }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // No pipeline runs: accepted, undecided, PENDING on its own coupon...
    let (status, body) = gw.get(&format!("/coupons/{c1}/requests/{key}")).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("PENDING")),
        "{body}"
    );
    // ... and 404 on another one, without denying that the gateway took it.
    let (status, body) = gw.get(&format!("/coupons/{c6}/requests/{key}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["field"], "requestId", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("no request {key} of coupon {c6} is decided")),
        "{error}"
    );
    assert!(
        error.contains(&format!("/coupons/{c1}/requests/{key}")),
        "names where it is: {error}"
    );
    assert!(!error.contains("was not accepted"), "{error}");
}
