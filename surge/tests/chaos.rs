//! `surge chaos` as users run it, scaled for CI: a spread sale of 40,000
//! requests and an order sale of 600 orders (pg-sim declining, slow, failing
//! after charging, timing out) while two coupon pipelines, the inventory,
//! order and payment pipelines (a third of every pipeline's batches aborted
//! on purpose), pg-sim and both sinks are killed 8 times, and the broker is
//! SIGKILLed and restarted once. The command must end with verify passing on
//! the topics and both stores for coupons and for orders (with pg-sim's
//! ledger), and its report must show the chaos it claims.
//! (The 1,000,000-request, 30-kill, 3-broker-restart run is in the README.)

mod common;

use common::coupon::Fixture;
use common::{stdout, surge};

#[tokio::test(flavor = "multi_thread")]
async fn a_sale_survives_kills_aborts_and_a_broker_restart() {
    // A database of its own: verify --orders compares whole tables.
    let db = common::fresh_database(&common::settings().postgres.url).await;
    let fx = Fixture::new("chaos").await;
    let logs = fx.logs.join("chaos");
    let out = surge(
        &[
            "chaos",
            "--scenario",
            "spread",
            "--coupons",
            "4",
            "--stock",
            "1500",
            "--users",
            "5000",
            "--requests",
            "40000",
            "--rate",
            "2500",
            "--kills",
            "8",
            "--broker-restarts",
            "1",
            "--orders",
            "600",
            "--wait",
            "300",
            "--logs",
            logs.to_str().unwrap(),
        ],
        &[
            ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
            ("SURGE_REDIS__KEYSPACE", fx.prefix.trim_end_matches('-')),
            ("SURGE_POSTGRES__URL", db.as_str()),
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verify: OK"), "{text}");
    assert!(
        text.contains("postgres and redis equal to the topic"),
        "{text}"
    );
    assert!(
        text.contains("ISSUED          6000"),
        "4 coupons × 1,500 all issued: {text}"
    );
    assert!(text.contains("broker restarts     1"), "{text}");
    let kills: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("  kills               "))
        .map(|l| {
            l.split(", ")
                .filter_map(|p| p.split(' ').next()?.parse::<usize>().ok())
                .sum()
        })
        .expect("kills line");
    assert_eq!(kills, 8, "{text}");
    let aborted: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("  transactions        "))
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .expect("transactions line");
    assert!(aborted > 0, "injected aborts happened: {text}");
    // The order half held too: sagas, stock, coupons, money and both stores.
    assert!(text.contains("orders     600"), "{text}");
    assert!(
        text.contains("verify: OK — one terminal state per order")
            && text.contains("every PAID order charged once")
            && text.contains(
                "postgres and redis hold exactly what order-status and inventory-result say"
            ),
        "{text}"
    );
    assert!(text.contains("chaos: PASSED"), "{text}");
}
