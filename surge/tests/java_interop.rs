//! A data team's Java client reads surge's records: kafka-clients with
//! Apicurio's stock `AvroKafkaDeserializer` (io.apicurio:
//! apicurio-registry-avro-serde-kafka) against the registry's native v3 API,
//! nothing from surge. surge writes the Confluent framing; the deserializer
//! reads it with Apicurio headers off, the 4-byte id handler and the id taken
//! as a contentId (what the registry's ccompat API hands out). Covers the two
//! topics data teams read, coupon-result and order-status, field for field
//! (tests/interop/records.rs; python_interop.rs holds Python to the same).
//!
//! The reader is tests/interop/java, run as `java -jar SURGE_JAVA_INTEROP_JAR`,
//! else `.stack/java-interop/read-with-apicurio.jar`, which scripts/test
//! builds with Maven (scripts/lib/ensure-java-interop).

mod common;
#[path = "../../tests/interop/records.rs"]
mod records;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use surge_schemas::coupon::CouponDecision;
use surge_schemas::order::OrderStatus;
use surge_schemas::Contract;

fn reader_jar() -> String {
    std::env::var("SURGE_JAVA_INTEROP_JAR").unwrap_or_else(|_| {
        let jar = common::repo_root().join(".stack/java-interop/read-with-apicurio.jar");
        assert!(
            jar.exists(),
            "no Java reader: run scripts/test (scripts/lib/ensure-java-interop builds {}) \
             or set SURGE_JAVA_INTEROP_JAR",
            jar.display()
        );
        jar.display().to_string()
    })
}

fn java() -> String {
    std::env::var("JAVA_HOME")
        .map(|home| format!("{home}/bin/java"))
        .unwrap_or_else(|_| "java".into())
}

/// The registry's native v3 API beside the ccompat URL surge is configured
/// with (`http://host:port/apis/ccompat/v7` → `http://host:port/apis/registry/v3`).
fn registry_v3_url(ccompat: &str) -> String {
    let base = ccompat
        .find("/apis/")
        .map(|i| &ccompat[..i])
        .unwrap_or(ccompat.trim_end_matches('/'));
    format!("{base}/apis/registry/v3")
}

/// The `count` records the Java reader printed, one JSON object each.
fn read_with_java(topic: &str, count: usize) -> Vec<serde_json::Value> {
    let settings = common::settings();
    let jar = reader_jar();
    let mut child = Command::new(java())
        .args(["-jar", &jar])
        .args([
            &settings.kafka.bootstrap_servers,
            &registry_v3_url(&settings.registry.url),
            topic,
            &count.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {} -jar {jar}: {e}", java()));
    // A deadline of our own, whatever the reader does.
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the Java reader did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("java output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Java reader failed: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad JSON from Java ({e}): {line} / {stderr}"))
        })
        .collect()
}

#[test]
fn the_v3_url_sits_beside_the_ccompat_one() {
    assert_eq!(
        registry_v3_url("http://127.0.0.1:8081/apis/ccompat/v7"),
        "http://127.0.0.1:8081/apis/registry/v3"
    );
    assert_eq!(
        registry_v3_url("http://registry:8080/"),
        "http://registry:8080/apis/registry/v3"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apicurio_java_decodes_coupon_decisions() {
    let codec = common::codec::<CouponDecision>(&common::settings()).await;
    let topic = common::unique("interop-java-coupon-result");
    let msgs = records::coupon_decisions(surge_schemas::now());
    common::produce_to_new_topic(&codec, &topic, &msgs).await;
    let got = read_with_java(&topic, msgs.len());
    let keys: Vec<&str> = msgs.iter().map(|m| m.key()).collect();
    let want: Vec<_> = msgs.iter().map(records::decision_json).collect();
    records::assert_read("Apicurio AvroKafkaDeserializer (Java)", &got, &keys, &want);
}

#[tokio::test(flavor = "multi_thread")]
async fn apicurio_java_decodes_order_statuses() {
    let codec = common::codec::<OrderStatus>(&common::settings()).await;
    let topic = common::unique("interop-java-order-status");
    let msgs = records::order_statuses(surge_schemas::now());
    common::produce_to_new_topic(&codec, &topic, &msgs).await;
    let got = read_with_java(&topic, msgs.len());
    let keys: Vec<&str> = msgs.iter().map(|m| m.key()).collect();
    let want: Vec<_> = msgs.iter().map(records::status_json).collect();
    records::assert_read("Apicurio AvroKafkaDeserializer (Java)", &got, &keys, &want);
}
