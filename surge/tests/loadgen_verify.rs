//! The product's own proof tools: `surge loadgen` drives a sale through the
//! running pipeline, `surge verify` passes on the result, and fails, naming
//! the violation, once a forged decision is slipped into coupon-result.

mod common;

use std::time::Duration;

use common::coupon::{signal, Fixture};
use common::{stdout, surge};
use surge_schemas::coupon::Outcome;

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_then_verify_passes_and_forged_decisions_fail_it() {
    let fx = Fixture::new("verify").await;
    let env = [("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str())];
    let mut pipeline = fx.spawn_pipeline("0", &[]);
    let manifest = fx.logs.join("manifest.json");
    let out = surge(
        &[
            "loadgen",
            "--scenario",
            "spread",
            "--coupons",
            "5",
            "--stock",
            "50",
            "--users",
            "400",
            "--requests",
            "3000",
            "--id-prefix",
            "sale",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
        &env,
    );
    assert!(out.status.success());
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(m["recordsSent"], 3005, "5 creates + 3,000 requests");

    let out = surge(&["verify", "--wait", "120", "--no-stores"], &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("verify: OK") && text.contains("ISSUED          250"),
        "5 coupons × 50 stock all issued: {text}"
    );
    signal(&pipeline, "TERM");
    assert!(pipeline.wait().unwrap().success());

    // Forge: the same ISSUED decision twice, and a 51st unit of a 50-unit coupon.
    let decisions = fx.decisions(1, Duration::from_secs(30)).await;
    let issued = decisions
        .iter()
        .find(|d| d.outcome == Outcome::Issued && d.coupon_id == "sale-0")
        .unwrap()
        .clone();
    let mut extra = issued.clone();
    extra.request_id = "forged".into();
    extra.user_id = Some("intruder".into());
    extra.sequence = Some(51);
    let producer = fx.factory.idempotent_producer("forger").unwrap();
    let records = [issued.clone(), extra]
        .iter()
        .map(|d| (d.coupon_id.clone(), fx.results.encode(d).unwrap()))
        .collect::<Vec<_>>();
    surge_kafka::produce_in_order(&producer, &fx.topic("coupon-result"), records, |_| {})
        .await
        .unwrap();

    let out = surge(&["verify", "--no-stores"], &env);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("verify: FAILED"), "{text}");
    assert!(
        text.contains(&format!(
            "more than one decision, e.g. [\"{} of {} ×2\"]",
            issued.request_id, issued.coupon_id
        )),
        "{text}"
    );
    assert!(
        text.contains("decision(s) for requests never sent") && text.contains("forged"),
        "{text}"
    );
    assert!(
        text.contains("sale-0: oversold, 52 ISSUED for stock 50"),
        "{text}"
    );
}
