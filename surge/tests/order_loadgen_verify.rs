//! The order half's own proof tools, as an operator would run them:
//! `surge loadgen --orders --target gateway` posts an order sale (products
//! and coupons by the admin API, coupon requests, orders, cancels) through
//! the gateway while the four pipelines, pg-sim and both sinks run, and `surge verify --orders` passes
//! on the result (invariant 5 with the provider's ledger, and both stores
//! equal to order-status and inventory-result) — then fails, naming them,
//! once a row and a key are altered behind the sinks' backs.

mod common;

use common::coupon::{signal, Fixture};
use common::orders::spawn;
use common::payments::{spawn_payment, start_pg_sim};
use common::{stderr, stdout, surge};
use redis::AsyncCommands;
use surge_redis::Keyspace;

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_orders_then_verify_orders_passes_and_catches_altered_stores() {
    // A database of its own: verify compares whole tables, and pg-sim's
    // ledger and the sinks' tables then live in it.
    let db = common::fresh_database(&common::settings().postgres.url).await;
    let fx = Fixture::with_env("order-verify", &[("SURGE_POSTGRES__URL", db.as_str())]).await;
    let sim = start_pg_sim(&fx, &[("decline_ratio", "0.1"), ("latency_median_ms", "5")]);
    let mut processes = vec![
        spawn(&fx, "order"),
        spawn(&fx, "inventory"),
        spawn(&fx, "coupon"),
        spawn_payment(&fx, &sim, &[]),
        fx.spawn_sink("postgres", &[]),
        fx.spawn_sink("redis", &[]),
    ];
    let mut gateway = common::gateway::spawn_gateway(&fx, &[]).await;
    let keyspace = fx.prefix.trim_end_matches('-').to_string();
    let env = [
        ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
        ("SURGE_POSTGRES__URL", db.as_str()),
        ("SURGE_REDIS__KEYSPACE", keyspace.as_str()),
        ("SURGE_GATEWAY__ADMIN_TOKEN", common::gateway::ADMIN_TOKEN),
    ];
    let manifest = fx.logs.join("manifest.json");
    let out = surge(
        &[
            "loadgen",
            "--orders",
            "1500",
            "--target",
            "gateway",
            "--gateway-url",
            &gateway.url,
            "--users",
            "300",
            "--products",
            "10",
            "--waves",
            "5",
            "--wave-pause-ms",
            "100",
            "--id-prefix",
            "sale",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(m["scenario"], "orders");
    assert_eq!(m["orders"], 1500);
    assert_eq!(m["target"], gateway.url.as_str());

    let verify = |wait: &str| {
        surge(
            &[
                "verify",
                "--orders",
                "--wait",
                wait,
                "--ledger-schema",
                &sim.schema,
            ],
            &env,
        )
    };
    let out = verify("180");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("verify: OK"), "{text}");
    assert!(
        text.contains("postgres and redis hold exactly what order-status and inventory-result say"),
        "{text}"
    );
    assert!(text.contains("orders     1500"), "{text}");
    for state in ["PAID", "PAYMENT_FAILED", "REJECTED", "CANCELLED"] {
        assert!(text.contains(state), "no {state}: {text}");
    }

    // What the gateway will read: an order with its lines and whole history,
    // the same from both stores.
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let (paid,): (String,) =
        sqlx::query_as("select order_id from orders where state = 'PAID' limit 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let from_pg = surge_postgres::reads::order(&pool, &paid)
        .await
        .unwrap()
        .unwrap();
    let keys = Keyspace::new(&keyspace);
    let mut conn = redis::Client::open(fx.settings.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let from_redis = surge_redis::reads::order(&mut conn, &keys, &paid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from_pg, from_redis);
    assert!(!from_pg.lines.is_empty(), "{from_pg:?}");
    let states: Vec<&str> = from_pg.history.iter().map(|h| h.state.as_str()).collect();
    assert_eq!(
        states,
        ["CREATED", "PAYMENT_PENDING", "PAID"],
        "{from_pg:?}"
    );

    // The gateway serves the same order and stock, and tells an order it
    // never accepted (404) from one it did.
    let (status, body) = gateway.get(&format!("/orders/{paid}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "PAID", "{body}");
    assert_eq!(body["source"], "redis", "{body}");
    assert_eq!(
        body["total"],
        surge_schemas::Money(from_pg.total_minor).to_string(),
        "{body}"
    );
    assert_eq!(
        body["lines"].as_array().unwrap().len(),
        from_pg.lines.len(),
        "{body}"
    );
    let history: Vec<&str> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["CREATED", "PAYMENT_PENDING", "PAID"], "{body}");
    let (status, body) = gateway.get("/orders/never-sent-anywhere").await;
    assert_eq!(
        (status, &body["field"]),
        (404, &serde_json::json!("orderId")),
        "{body}"
    );
    let (some_product,): (String,) =
        sqlx::query_as("select product_id from product_stock order by product_id limit 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let stock = surge_postgres::reads::product_stock(&pool, &some_product)
        .await
        .unwrap()
        .unwrap();
    let (status, body) = gateway.get(&format!("/products/{some_product}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["available"],
            &body["reserved"],
            &body["sold"],
            &body["created"]
        ),
        (
            &serde_json::json!(stock.available),
            &serde_json::json!(stock.reserved),
            &serde_json::json!(stock.sold),
            &serde_json::json!(stock.created)
        ),
        "{body}"
    );
    assert_eq!(gateway.get("/products/no-such-product").await.0, 404);
    signal(&gateway.process, "TERM");
    assert!(gateway.process.wait().unwrap().success());

    // Altered behind the sinks' backs: verify names both.
    sqlx::query("update orders set total_minor = total_minor + 1 where order_id = $1")
        .bind(&paid)
        .execute(&pool)
        .await
        .unwrap();
    let (product,): (String,) = sqlx::query_as("select product_id from product_stock limit 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let _: () = conn.del(keys.product(&product)).await.unwrap();
    let out = verify("0");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains(&format!("postgres: order {paid} differs (totalMinor:")),
        "{text}"
    );
    assert!(
        text.contains(&format!("redis: product {product} missing")),
        "{text}"
    );

    for p in &mut processes {
        signal(p, "TERM");
        assert!(p.wait().unwrap().success());
    }
}
