//! Bad input and failed batches on the real stack.
//!
//! Poison: a truncated record, a wrong magic byte, an unknown schema id, a
//! schema-valid record breaking the contract and a request id reused for
//! another user go to the dead-letter topic
//! (original bytes, headers naming source and reason); a request breaking a
//! business rule gets an INVALID decision; a retry of a request as it was is
//! decided once; processing continues after each.
//!
//! Aborts: with half of all batches aborted on purpose, nothing of an aborted
//! batch is visible to read_committed consumers and every record is still
//! decided exactly once.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::coupon::{check_invariants, create, flash_sale, issue, signal, Fixture};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_schemas::coupon::{CouponAction, CouponCommand, Outcome};

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_go_to_the_dead_letter_topic_and_processing_continues() {
    let fx = Fixture::new("coupon-poison").await;
    let good = fx.commands.encode(&issue("probe", "c1", "u0")).unwrap();
    // Schema-valid but contract-breaking: an empty user id.
    let empty_user = fx.commands.encode(&issue("bad-user", "c1", "")).unwrap();
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..3].to_vec()),
        ("bad_magic", [&[9u8][..], &good[1..]].concat()),
        (
            "unknown_schema_id",
            [&[0u8, 0x7f, 0xff, 0xff, 0xf0][..], &good[5..]].concat(),
        ),
        ("contract_violation", empty_user),
        // r1's id again, for another user: a reused request id, straight
        // to Kafka (the gateway refuses it 422; a producer of its own is
        // only stopped here).
        (
            "request_id_reused",
            fx.commands.encode(&issue("r1", "c1", "u9")).unwrap(),
        ),
    ];
    let mut cfg = fx.factory.base("test-producer");
    cfg.set("partitioner", "murmur2_random");
    let producer: FutureProducer = cfg.create().unwrap();
    let topic = fx.topic("coupon-issue");
    fx.produce(&[create("c1", 10), issue("r1", "c1", "u1")])
        .await;
    for (reason, bytes) in &poison {
        let record = FutureRecord::to(&topic).key("c1").payload(bytes).headers(
            rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "trace",
                value: Some(*reason),
            }),
        );
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let negative = CouponCommand {
        request_id: "admin-bad".into(),
        coupon_id: "c2".into(),
        requested_at: common::coupon::now(),
        command: CouponAction::Create {
            stock: -5,
            active_from: None,
            active_until: None,
            discount: None,
        },
    };
    // ... and r1 sent again as it was: an upstream retry, decided once.
    fx.produce(&[negative, issue("r1", "c1", "u1"), issue("r2", "c1", "u2")])
        .await;

    let mut child = fx.spawn_pipeline("0", &[]);
    let decisions = fx.decisions(4, Duration::from_secs(60)).await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());

    let by_request: HashMap<&str, Outcome> = decisions
        .iter()
        .map(|d| (d.request_id.as_str(), d.outcome))
        .collect();
    assert_eq!(by_request.get("r1"), Some(&Outcome::Issued));
    assert_eq!(
        by_request.get("r2"),
        Some(&Outcome::Issued),
        "processing continued after the poison records"
    );
    assert_eq!(
        by_request.get("admin-bad"),
        Some(&Outcome::Invalid),
        "a rule-breaking request is decided INVALID"
    );
    let invalid = decisions
        .iter()
        .find(|d| d.request_id == "admin-bad")
        .unwrap();
    assert!(
        invalid
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("negative"),
        "{invalid:?}"
    );
    assert_eq!(
        decisions.len(),
        4,
        "create, r1, admin-bad, r2: poison records get no decision"
    );

    // The dead-letter topic holds the 4 poison records, bytes untouched.
    let cfg = fx
        .factory
        .read_committed_consumer_config("dlq-reader", &common::unique("dlq"));
    let consumer: BaseConsumer = cfg.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(
        &fx.names.dlq(surge_core::names::COUPON),
        0,
        Offset::Beginning,
    )
    .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while dead.len() < poison.len() && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let headers: HashMap<String, String> = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            dead.push((m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    assert_eq!(
        dead.len(),
        poison.len(),
        "every poison record is in the dead-letter topic"
    );
    for ((reason, bytes), (payload, headers)) in poison.iter().zip(&dead) {
        assert_eq!(payload, bytes, "{reason}: original bytes kept");
        assert_eq!(
            headers.get("surge.dlq.reason").map(String::as_str),
            Some(*reason)
        );
        assert_eq!(headers.get("surge.dlq.source.topic"), Some(&topic));
        assert!(
            headers.contains_key("surge.dlq.source.offset")
                && headers.contains_key("surge.dlq.source.partition")
        );
        assert!(!headers["surge.dlq.message"].is_empty());
        assert_eq!(
            headers.get("trace").map(String::as_str),
            Some(*reason),
            "original headers kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aborted_batches_are_invisible_and_their_records_decided_again_exactly_once() {
    let fx = Fixture::new("coupon-aborts").await;
    let commands = flash_sale(4, 300, 900, 20_000, 11);
    let distinct = commands
        .iter()
        .map(|c| c.request_id.as_str())
        .collect::<HashSet<_>>()
        .len();
    fx.produce(&commands).await;
    // Small batches so that many transactions happen, half of them aborted.
    let env = [
        ("SURGE_PIPELINES__COUPON__INJECT_ABORT_RATIO", "0.5"),
        ("SURGE_PIPELINES__COUPON__MAX_BATCH_RECORDS", "500"),
    ];
    let mut child = fx.spawn_pipeline("0", &env);
    let log = fx.issue_log(commands.len()).await;
    let decisions = fx.decisions(distinct, Duration::from_secs(300)).await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());

    let log_text = std::fs::read_to_string(fx.logs.join("pipeline-0.log")).unwrap();
    let aborts = log_text.matches("aborting transaction").count();
    assert!(
        aborts >= 5,
        "the fault injection aborted batches ({aborts} aborts)"
    );
    let violations = check_invariants(&log, &decisions);
    assert!(
        violations.is_empty(),
        "with {aborts} aborted batches: {violations:#?}"
    );
    assert_eq!(decisions.len(), distinct);
}
