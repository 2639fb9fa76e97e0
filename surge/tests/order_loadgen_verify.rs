//! The order half's own proof tools, as an operator would run them:
//! `surge loadgen --orders` sends an order sale to Kafka while the four
//! pipelines and pg-sim run, and `surge verify --orders` passes on the
//! result (invariant 5, the provider's ledger included).

mod common;

use common::coupon::{signal, Fixture};
use common::orders::spawn;
use common::payments::{spawn_payment, start_pg_sim};
use common::{stderr, stdout, surge};

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_orders_then_verify_orders_passes() {
    let fx = Fixture::new("order-verify").await;
    let sim = start_pg_sim(&fx, &[("decline_ratio", "0.1"), ("latency_median_ms", "5")]);
    let mut pipelines = vec![
        spawn(&fx, "order"),
        spawn(&fx, "inventory"),
        spawn(&fx, "coupon"),
        spawn_payment(&fx, &sim, &[]),
    ];
    let env = [("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str())];
    let manifest = fx.logs.join("manifest.json");
    let out = surge(
        &[
            "loadgen",
            "--orders",
            "1500",
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

    let out = surge(
        &[
            "verify",
            "--orders",
            "--wait",
            "180",
            "--ledger-schema",
            &sim.schema,
        ],
        &env,
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("verify: OK"), "{text}");
    assert!(text.contains("orders     1500"), "{text}");
    for state in ["PAID", "PAYMENT_FAILED", "REJECTED", "CANCELLED"] {
        assert!(text.contains(state), "no {state}: {text}");
    }
    for p in &mut pipelines {
        signal(p, "TERM");
        assert!(p.wait().unwrap().success());
    }
}
