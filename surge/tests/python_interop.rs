//! A data team's client reads surge's records: Python confluent-kafka with its
//! AvroDeserializer and the registry, nothing from surge. Covers a union of
//! records with timestamps (coupon-issue), decimal money (order-create), and
//! the two topics data teams read, coupon-result and order-status, field for
//! field (tests/interop/records.rs; java_interop.rs holds Java to the same).
//!
//! The interpreter is the stranger's (tests/common/stranger.rs): `SURGE_PYTHON`,
//! else `.stack/venv/bin/python`, checked to import confluent-kafka's Avro
//! serializer.

mod common;
#[path = "../../tests/interop/records.rs"]
mod records;

use std::process::Command;
use std::time::Duration;

use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision};
use surge_schemas::order::{OrderCreate, OrderItem, OrderStatus};
use surge_schemas::{Contract, Money};

/// The `count` records the Python reader printed, one JSON object each.
fn read_with_python(topic: &str, count: usize) -> Vec<serde_json::Value> {
    let settings = common::settings();
    let mut child = Command::new(common::stranger::python())
        .arg(common::repo_root().join("tests/interop/read_with_confluent_kafka.py"))
        .args([
            &settings.kafka.bootstrap_servers,
            &settings.registry.url,
            topic,
            &count.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    // A deadline of our own, whatever the reader does.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the Python reader did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("python output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python reader failed: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad JSON from python ({e}): {line} / {stderr}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_python_decodes_a_coupon_command() {
    let codec = common::codec::<CouponCommand>(&common::settings()).await;
    let topic = common::unique("interop-coupon");
    let msg = CouponCommand {
        request_id: "req-42".into(),
        coupon_id: "flash-7".into(),
        requested_at: surge_schemas::now(),
        command: CouponAction::Issue {
            user_id: "user-9".into(),
        },
    };
    common::produce_to_new_topic(&codec, &topic, std::slice::from_ref(&msg)).await;
    let got = &read_with_python(&topic, 1)[0];
    assert_eq!(got["key"], "flash-7");
    let v = &got["value"];
    assert_eq!(v["requestId"], "req-42");
    assert_eq!(v["couponId"], "flash-7");
    assert_eq!(
        v["requestedAt"],
        msg.requested_at.timestamp_millis(),
        "timestamp-millis decodes to the same instant"
    );
    assert_eq!(
        v["command"]["userId"], "user-9",
        "the union branch decodes to the IssueRequest record"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_python_decodes_decimal_money() {
    let codec = common::codec::<OrderCreate>(&common::settings()).await;
    let topic = common::unique("interop-order");
    let msg = OrderCreate {
        order_id: "o-1".into(),
        user_id: "u-1".into(),
        items: vec![
            OrderItem {
                product_id: "p-1".into(),
                quantity: 2,
                unit_price: Money(1999),
            },
            OrderItem {
                product_id: "p-2".into(),
                quantity: 1,
                unit_price: Money(-5),
            },
        ],
        currency: "EUR".into(),
        coupon_id: None,
        requested_at: surge_schemas::now(),
    };
    common::produce_to_new_topic(&codec, &topic, std::slice::from_ref(&msg)).await;
    let v = &read_with_python(&topic, 1)[0]["value"];
    assert_eq!(v["items"][0]["unitPrice"], "19.99");
    assert_eq!(v["items"][1]["unitPrice"], "-0.05");
    assert_eq!(v["items"][0]["quantity"], 2);
    assert!(v["couponId"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_python_decodes_coupon_decisions() {
    let codec = common::codec::<CouponDecision>(&common::settings()).await;
    let topic = common::unique("interop-coupon-result");
    let msgs = records::coupon_decisions(surge_schemas::now());
    common::produce_to_new_topic(&codec, &topic, &msgs).await;
    let got = read_with_python(&topic, msgs.len());
    let keys: Vec<&str> = msgs.iter().map(|m| m.key()).collect();
    let want: Vec<_> = msgs.iter().map(records::decision_json).collect();
    records::assert_read("confluent-kafka (Python)", &got, &keys, &want);
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_python_decodes_order_statuses() {
    let codec = common::codec::<OrderStatus>(&common::settings()).await;
    let topic = common::unique("interop-order-status");
    let msgs = records::order_statuses(surge_schemas::now());
    common::produce_to_new_topic(&codec, &topic, &msgs).await;
    let got = read_with_python(&topic, msgs.len());
    let keys: Vec<&str> = msgs.iter().map(|m| m.key()).collect();
    let want: Vec<_> = msgs.iter().map(records::status_json).collect();
    records::assert_read("confluent-kafka (Python)", &got, &keys, &want);
}
