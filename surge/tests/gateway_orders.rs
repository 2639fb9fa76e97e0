//! The gateway's order half over real HTTP against the real stack: orders,
//! cancels and product admin commands are answered 202 and are, decoded
//! with surge's own codecs, exactly the records on order-create,
//! order-cancel and inventory-commands (keyed and partitioned by their
//! contract key); an Idempotency-Key is the order id; bad bodies get a 4xx
//! naming the field and produce nothing; and a poll of a coupon request
//! tells "never sent here" (404) from "accepted, not decided" (PENDING),
//! also when Redis is gone (PENDING: it cannot tell) and a marker write
//! fails (still 202).
//!
//! No pipeline runs here unless a test starts one: what is checked is what
//! the gateway writes, not what the saga decides (order_sale.rs does that).

mod common;

use std::time::{Duration, Instant};

use common::coupon::Fixture;
use common::gateway::{spawn_gateway, Gateway, ADMIN_TOKEN};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use surge_redis::Keyspace;
use surge_schemas::coupon::{CouponAction, CouponCommand};
use surge_schemas::inventory::{InventoryAction, InventoryCommand};
use surge_schemas::order::{OrderCancel, OrderCreate, OrderItem};
use surge_schemas::{Contract, Money, TopicCodec};

/// One record as read back: partition, key, value bytes.
struct Raw {
    partition: i32,
    key: String,
    payload: Vec<u8>,
}

/// Every committed record of the fixture's `T::TOPIC` (all partitions),
/// read until `want` arrived and nothing more came for 2 s; the topic's
/// partition count alongside.
fn read_topic<T: Contract>(fx: &Fixture, want: usize) -> (Vec<Raw>, i32) {
    let topic = fx.topic(T::TOPIC);
    let consumer: BaseConsumer = fx
        .factory
        .read_committed_consumer_config("test-reader", &common::unique("reader"))
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    let mut last = Instant::now();
    while Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
            out.push(Raw {
                partition: m.partition(),
                key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                payload: m.payload().unwrap_or_default().to_vec(),
            });
            last = Instant::now();
        }
        if out.len() >= want && last.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    (out, partitions)
}

/// The records of `T::TOPIC` decoded with surge's codec, each checked to be
/// keyed by its contract key and on the partition murmur2 of it selects.
async fn records<T: Contract>(fx: &Fixture, want: usize) -> Vec<T> {
    let codec: TopicCodec<T> = common::codec(&fx.settings).await;
    let (raw, partitions) = read_topic::<T>(fx, want);
    let mut out = Vec::new();
    for r in raw {
        let msg = codec.decode(Some(&r.payload)).await.expect("decodes");
        assert_eq!(r.key, msg.key(), "{}: keyed by the contract key", T::TOPIC);
        assert_eq!(
            r.partition,
            surge_kafka::partition_for(r.key.as_bytes(), partitions),
            "{}: murmur2 partition of {}",
            T::TOPIC,
            r.key
        );
        out.push(msg);
    }
    out
}

/// POST with JSON; (status, Location header, body).
async fn post(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Option<String>, Value) {
    let mut r = gw.http.post(format!("{}{path}", gw.url)).json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let response = r.send().await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (
        status,
        location,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A `surge_gateway_*` series of the gateway's /metrics.
async fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    gw.metric(series).await
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_cancels_and_product_commands_are_their_records_on_kafka() {
    let fx = Fixture::new("gw-orders").await;
    let gw = spawn_gateway(&fx, &[]).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let admin = ("authorization", bearer.as_str());
    let started = surge_schemas::now();
    let (p1, p2) = (format!("{}p1", fx.prefix), format!("{}p2", fx.prefix));

    // Products: a create (fresh request id) and an adjust (the key's).
    let (status, location, created) = post(
        &gw,
        "/admin/products",
        &[admin],
        json!({ "productId": p1, "stock": 10 }),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let create_request = created["requestId"].as_str().unwrap().to_string();
    assert_eq!(
        uuid::Uuid::parse_str(&create_request)
            .unwrap()
            .get_version_num(),
        7
    );
    assert_eq!(created["productId"], p1.as_str());
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["poll"], format!("/products/{p1}"));
    assert_eq!(
        location.as_deref(),
        Some(format!("/products/{p1}").as_str())
    );
    let adjust_key = format!("{}adjust-1", fx.prefix);
    let (status, _, adjusted) = post(
        &gw,
        &format!("/admin/products/{p1}/stock"),
        &[admin, ("idempotency-key", adjust_key.as_str())],
        json!({ "delta": -3, "reason": "damaged" }),
    )
    .await;
    assert_eq!(status, 202, "{adjusted}");
    assert_eq!(adjusted["requestId"], adjust_key.as_str());
    assert_eq!(adjusted["productId"], p1.as_str());

    // An order with a fresh id, and one whose Idempotency-Key is its id (sent twice).
    let order_body = json!({
        "userId": "buyer-1",
        "items": [
            { "productId": p1, "quantity": 2, "unitPrice": "12.50" },
            { "productId": p2, "quantity": 1, "unitPrice": "7" },
        ],
        "currency": "KRW",
        "couponId": "coupon-9",
    });
    let (status, location, placed) = post(&gw, "/orders", &[], order_body.clone()).await;
    assert_eq!(status, 202, "{placed}");
    let order_id = placed["orderId"].as_str().unwrap().to_string();
    assert_eq!(
        uuid::Uuid::parse_str(&order_id).unwrap().get_version_num(),
        7
    );
    assert_eq!(placed["status"], "PENDING");
    assert_eq!(placed["poll"], format!("/orders/{order_id}"));
    assert_eq!(
        location.as_deref(),
        Some(format!("/orders/{order_id}").as_str())
    );
    let order_key = format!("{}order-key", fx.prefix);
    let plain = json!({
        "userId": "buyer-2",
        "items": [{ "productId": p2, "quantity": 3, "unitPrice": "0.5" }],
        "currency": "EUR",
    });
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (status, _, body) = post(
            &gw,
            "/orders",
            &[("idempotency-key", order_key.as_str())],
            plain.clone(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1], "one key, one order");
    assert_eq!(answers[0]["orderId"], order_key.as_str());
    assert_eq!(answers[0]["poll"], format!("/orders/{order_key}"));

    // Cancels: with a reason and a fresh request id; without, under a key.
    let (status, location, cancelled) = post(
        &gw,
        &format!("/orders/{order_id}/cancel"),
        &[],
        json!({ "userId": "buyer-1", "reason": "changed my mind" }),
    )
    .await;
    assert_eq!(status, 202, "{cancelled}");
    let cancel_request = cancelled["requestId"].as_str().unwrap().to_string();
    assert_eq!(
        uuid::Uuid::parse_str(&cancel_request)
            .unwrap()
            .get_version_num(),
        7
    );
    assert_eq!(cancelled["orderId"], order_id.as_str());
    assert_eq!(cancelled["status"], "PENDING");
    assert_eq!(cancelled["poll"], format!("/orders/{order_id}"));
    assert_eq!(
        location.as_deref(),
        Some(format!("/orders/{order_id}").as_str())
    );
    let cancel_key = format!("{}cancel-key", fx.prefix);
    let (status, _, cancelled_2) = post(
        &gw,
        &format!("/orders/{order_key}/cancel"),
        &[("idempotency-key", cancel_key.as_str())],
        json!({ "userId": "buyer-2" }),
    )
    .await;
    assert_eq!(status, 202, "{cancelled_2}");
    assert_eq!(cancelled_2["requestId"], cancel_key.as_str());
    assert_eq!(cancelled_2["orderId"], order_key.as_str());
    let finished = surge_schemas::now();
    let in_window = |t: chrono::DateTime<chrono::Utc>| started <= t && t <= finished;

    // order-create: the fresh order, then the keyed one twice (the saga
    // dedupes order ids; the gateway keeps no table).
    let creates: Vec<OrderCreate> = records(&fx, 3).await;
    assert_eq!(creates.len(), 3, "{creates:?}");
    let first = creates.iter().find(|c| c.order_id == order_id).unwrap();
    assert_eq!(first.user_id, "buyer-1");
    assert_eq!(first.currency, "KRW");
    assert_eq!(first.coupon_id.as_deref(), Some("coupon-9"));
    assert_eq!(
        first.items,
        vec![
            OrderItem {
                product_id: p1.clone(),
                quantity: 2,
                unit_price: Money(1250)
            },
            OrderItem {
                product_id: p2.clone(),
                quantity: 1,
                unit_price: Money(700)
            },
        ]
    );
    assert!(in_window(first.requested_at), "{first:?}");
    let keyed: Vec<&OrderCreate> = creates.iter().filter(|c| c.order_id == order_key).collect();
    assert_eq!(keyed.len(), 2, "{creates:?}");
    for c in keyed {
        assert_eq!(c.user_id, "buyer-2");
        assert_eq!(c.currency, "EUR");
        assert_eq!(c.coupon_id, None);
        assert_eq!(
            c.items,
            vec![OrderItem {
                product_id: p2.clone(),
                quantity: 3,
                unit_price: Money(50)
            }]
        );
        assert!(in_window(c.requested_at));
    }

    // order-cancel.
    let cancels: Vec<OrderCancel> = records(&fx, 2).await;
    assert_eq!(cancels.len(), 2, "{cancels:?}");
    let c = cancels
        .iter()
        .find(|c| c.request_id == cancel_request)
        .unwrap();
    assert_eq!(
        (c.order_id.as_str(), c.user_id.as_str(), c.reason.as_deref()),
        (order_id.as_str(), "buyer-1", Some("changed my mind"))
    );
    assert!(in_window(c.requested_at));
    let c = cancels.iter().find(|c| c.request_id == cancel_key).unwrap();
    assert_eq!(
        (c.order_id.as_str(), c.user_id.as_str(), c.reason.as_deref()),
        (order_key.as_str(), "buyer-2", None)
    );

    // inventory-commands.
    let commands: Vec<InventoryCommand> = records(&fx, 2).await;
    assert_eq!(commands.len(), 2, "{commands:?}");
    let create = commands
        .iter()
        .find(|c| c.request_id == create_request)
        .unwrap();
    assert_eq!(create.product_id, p1);
    assert_eq!(create.command, InventoryAction::CreateProduct { stock: 10 });
    assert!(in_window(create.requested_at));
    let adjust = commands
        .iter()
        .find(|c| c.request_id == adjust_key)
        .unwrap();
    assert_eq!(adjust.product_id, p1);
    assert_eq!(
        adjust.command,
        InventoryAction::AdjustStock {
            delta: -3,
            reason: Some("damaged".into())
        }
    );

    // Every accepted id is marked, with the default TTL (24 h).
    let keys = Keyspace::new(fx.prefix.trim_end_matches('-'));
    let mut redis = redis::Client::open(fx.settings.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for id in [
        &order_id,
        &order_key,
        &cancel_request,
        &cancel_key,
        &create_request,
        &adjust_key,
    ] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(keys.accepted(id))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!((86_000..=86_400).contains(&ttl), "{id}: marker TTL {ttl} s");
    }
    assert_eq!(
        metric(&gw, "surge_gateway_accepted_marker_failures_total").await,
        Some(0.0)
    );
}

/// (what, path, headers, body, status, field)
type Case<'a> = (
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    String,
    u16,
    Option<&'a str>,
);

#[tokio::test(flavor = "multi_thread")]
async fn bad_order_and_product_bodies_get_a_4xx_naming_the_field_and_produce_nothing() {
    let fx = Fixture::new("gw-orders-bad").await;
    let gw = spawn_gateway(&fx, &[]).await;
    let json_ct = ("content-type", "application/json");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let admin = ("authorization", bearer.as_str());
    let long = "x".repeat(129);
    let order = |items: &str| format!(r#"{{"userId":"u1","currency":"KRW","items":[{items}]}}"#);
    let good_line = r#"{"productId":"p1","quantity":1,"unitPrice":"1.00"}"#;
    let cancel = "/orders/o1/cancel".to_string();
    let orders = "/orders".to_string();
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("malformed JSON", orders.clone(), vec![json_ct], "{\"userId\":".into(), 400, None),
        ("an array body", orders.clone(), vec![json_ct], "[]".into(), 400, None),
        ("missing userId", orders.clone(), vec![json_ct], r#"{"currency":"KRW","items":[]}"#.into(), 400, Some("userId")),
        ("missing items", orders.clone(), vec![json_ct], r#"{"userId":"u1","currency":"KRW"}"#.into(), 400, Some("items")),
        ("no lines", orders.clone(), vec![json_ct], order(""), 400, Some("items")),
        ("missing currency", orders.clone(), vec![json_ct], format!(r#"{{"userId":"u1","items":[{good_line}]}}"#), 400, Some("currency")),
        ("empty currency", orders.clone(), vec![json_ct], format!(r#"{{"userId":"u1","currency":"","items":[{good_line}]}}"#), 400, Some("currency")),
        ("null couponId", orders.clone(), vec![json_ct], format!(r#"{{"userId":"u1","currency":"KRW","couponId":null,"items":[{good_line}]}}"#), 400, Some("couponId")),
        ("orderId in the body", orders.clone(), vec![json_ct], format!(r#"{{"userId":"u1","currency":"KRW","orderId":"o","items":[{good_line}]}}"#), 400, Some("orderId")),
        ("quantity 0", orders.clone(), vec![json_ct], order(&format!(r#"{good_line},{{"productId":"p2","quantity":0,"unitPrice":"1"}}"#)), 400, Some("items[1].quantity")),
        ("quantity beyond int", orders.clone(), vec![json_ct], order(r#"{"productId":"p2","quantity":2147483648,"unitPrice":"1"}"#), 400, Some("items[0].quantity")),
        ("missing productId", orders.clone(), vec![json_ct], order(r#"{"quantity":1,"unitPrice":"1"}"#), 400, Some("items[0].productId")),
        ("three decimals", orders.clone(), vec![json_ct], order(r#"{"productId":"p2","quantity":1,"unitPrice":"1.005"}"#), 400, Some("items[0].unitPrice")),
        ("price as a number", orders.clone(), vec![json_ct], order(r#"{"productId":"p2","quantity":1,"unitPrice":12.5}"#), 400, Some("items[0].unitPrice")),
        ("price beyond 18 digits", orders.clone(), vec![json_ct], order(r#"{"productId":"p2","quantity":1,"unitPrice":"12345678901234567"}"#), 400, Some("items[0].unitPrice")),
        ("unknown line field", orders.clone(), vec![json_ct], order(r#"{"productId":"p2","quantity":1,"unitPrice":"1","size":"L"}"#), 400, Some("items[0].size")),
        ("oversized Idempotency-Key", orders.clone(), vec![json_ct, ("idempotency-key", long.as_str())], order(good_line), 400, Some("Idempotency-Key")),
        ("order without content type", orders.clone(), vec![], order(good_line), 415, None),
        ("cancel without a body", cancel.clone(), vec![json_ct], String::new(), 400, None),
        ("cancel without userId", cancel.clone(), vec![json_ct], r#"{"reason":"x"}"#.into(), 400, Some("userId")),
        ("cancel with a null reason", cancel.clone(), vec![json_ct], r#"{"userId":"u1","reason":null}"#.into(), 400, Some("reason")),
        ("cancel of an oversized order id", format!("/orders/{long}/cancel"), vec![json_ct], r#"{"userId":"u1"}"#.into(), 400, Some("orderId")),
        ("product without a token", "/admin/products".into(), vec![json_ct], r#"{"productId":"p","stock":1}"#.into(), 401, None),
        ("product with a wrong token", "/admin/products".into(), vec![json_ct, ("authorization", "Bearer nope")], r#"{"productId":"p","stock":1}"#.into(), 403, None),
        ("product stock without a token", "/admin/products/p/stock".into(), vec![json_ct], r#"{"delta":1}"#.into(), 401, None),
        ("negative product stock", "/admin/products".into(), vec![json_ct, admin], r#"{"productId":"p","stock":-1}"#.into(), 400, Some("stock")),
        ("missing productId on create", "/admin/products".into(), vec![json_ct, admin], r#"{"stock":1}"#.into(), 400, Some("productId")),
        ("zero product delta", "/admin/products/p/stock".into(), vec![json_ct, admin], r#"{"delta":0}"#.into(), 400, Some("delta")),
        ("delta not a number", "/admin/products/p/stock".into(), vec![json_ct, admin], r#"{"delta":"1"}"#.into(), 400, Some("delta")),
        ("oversized product id", format!("/admin/products/{long}/stock"), vec![json_ct, admin], r#"{"delta":1}"#.into(), 400, Some("productId")),
    ];
    let mut failures = Vec::new();
    for (what, path, headers, body, status, field) in &cases {
        let mut r = gw.http.post(format!("{}{path}", gw.url)).body(body.clone());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let response = r.send().await.unwrap();
        let got = response.status().as_u16();
        let is_json = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
        let text = response.text().await.unwrap();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let error_ok = json["error"].as_str().is_some_and(|e| !e.is_empty());
        if got != *status || !is_json || !error_ok || json["field"].as_str() != *field {
            failures.push(format!(
                "{what}: want {status} field {field:?}, got {got} {text}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Every new route is in the document, and nothing refused reached Kafka.
    let (status, doc) = gw.get("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/orders",
        "/orders/{orderId}/cancel",
        "/admin/products",
        "/admin/products/{productId}/stock",
    ] {
        assert!(doc["paths"][path]["post"].is_object(), "{path}");
    }
    assert_eq!(read_topic::<OrderCreate>(&fx, 0).0.len(), 0);
    assert_eq!(read_topic::<OrderCancel>(&fx, 0).0.len(), 0);
    assert_eq!(read_topic::<InventoryCommand>(&fx, 0).0.len(), 0);
}

/// A database of the test's own, with the schema `surge sink postgres`
/// migrates to: a poll asks PostgreSQL when Redis has no decision, so its
/// tables must exist, and migrating the shared database from a test would
/// pin whatever migrations this checkout holds. Dropped by [`drop_database`].
async fn private_database(fx: &Fixture) -> (String, String) {
    let name = common::unique("gwdb").replace('-', "_");
    let shared = fx.settings.postgres.url.clone();
    let (base, _) = shared.rsplit_once('/').expect("a database in the URL");
    let url = format!("{base}/{name}");
    let admin = sqlx::PgPool::connect(&shared).await.unwrap();
    sqlx::query(&format!("create database {name}"))
        .execute(&admin)
        .await
        .unwrap();
    // The sink migrates at start; wait for the table the gateway reads.
    let sink = fx.spawn_sink("postgres", &[("SURGE_POSTGRES__URL", url.as_str())]);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: Option<(String,)> = sqlx::query_as(
            "select table_name::text from information_schema.tables where table_name = 'coupon_decisions'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if found.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the sink did not migrate {name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.close().await;
    drop(sink);
    (name, url)
}

async fn drop_database(fx: &Fixture, name: &str) {
    let admin = sqlx::PgPool::connect(&fx.settings.postgres.url)
        .await
        .unwrap();
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poll_tells_never_sent_from_not_yet_decided() {
    let fx = Fixture::new("gw-accepted").await;
    let (database, pg_url) = private_database(&fx).await;
    let pg = ("SURGE_POSTGRES__URL", pg_url.as_str());
    let gw = spawn_gateway(&fx, &[pg]).await;
    let coupon = format!("{}c1", fx.prefix);

    // Never sent: 404, naming the id and saying why.
    let (status, body) = gw.get("/coupon-requests/never-sent-anywhere").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["field"], "requestId");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("straight to Kafka"), "{error}");

    // Accepted here, no pipeline to decide it: PENDING.
    let (status, accepted) = gw
        .post(
            &format!("/coupons/{coupon}/issue"),
            &[],
            json!({ "userId": "u1" }),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["requestId"].as_str().unwrap();
    let (status, body) = gw.get(&format!("/coupon-requests/{id}")).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("PENDING")),
        "{body}"
    );
    assert_eq!(body["requestId"], id);

    // Produced straight to Kafka: 404 until decided, then its decision.
    let direct = format!("{}direct-1", fx.prefix);
    fx.produce(&[CouponCommand {
        request_id: direct.clone(),
        coupon_id: coupon.clone(),
        requested_at: surge_schemas::now(),
        command: CouponAction::Issue {
            user_id: "u2".into(),
        },
    }])
    .await;
    let (status, body) = gw.get(&format!("/coupon-requests/{direct}")).await;
    assert_eq!(status, 404, "{body}");
    let pipeline = fx.spawn_pipeline("0", &[]);
    let redis_sink = fx.spawn_sink("redis", &[]);
    let pg_sink = fx.spawn_sink("postgres", &[pg]);
    let decided = gw.decision(&direct, Duration::from_secs(90)).await;
    assert_eq!(decided["outcome"], "UNKNOWN_COUPON", "{decided}");
    let decided = gw.decision(id, Duration::from_secs(30)).await;
    assert_eq!(decided["outcome"], "UNKNOWN_COUPON", "{decided}");

    // Redis unreachable: the marker cannot be written (still 202, counted)
    // nor read, so an unknown id is PENDING — the gateway cannot tell.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_redis = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let blind = spawn_gateway(&fx, &[pg, ("SURGE_REDIS__URL", dead_redis.as_str())]).await;
    assert_eq!(
        metric(&blind, "surge_gateway_accepted_marker_failures_total").await,
        Some(0.0),
        "present from the start"
    );
    let (status, body) = blind
        .post(
            &format!("/coupons/{coupon}/issue"),
            &[],
            json!({ "userId": "u3" }),
        )
        .await;
    assert_eq!(status, 202, "a failed marker never fails the 202: {body}");
    assert_eq!(
        metric(&blind, "surge_gateway_accepted_marker_failures_total").await,
        Some(1.0)
    );
    let (status, body) = blind.get("/coupon-requests/never-sent-either").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("PENDING")),
        "{body}"
    );
    // Decided is decided, Redis or not (PostgreSQL answers).
    let decided = blind.decision(&direct, Duration::from_secs(60)).await;
    assert_eq!(decided["source"], "postgres", "{decided}");
    assert_eq!(decided["outcome"], "UNKNOWN_COUPON", "{decided}");
    drop((blind, gw, pipeline, redis_sink, pg_sink));
    drop_database(&fx, &database).await;
}
