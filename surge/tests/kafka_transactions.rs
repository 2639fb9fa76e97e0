//! Against the real broker and registry: an Avro record produced inside a
//! committed transaction is read back, byte-exact and decodable, by a
//! read_committed consumer; one from an aborted transaction is not (while a
//! read_uncommitted consumer does see it, so the abort really wrote data).

mod common;

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_kafka::ClientFactory;
use surge_schemas::coupon::{CouponAction, CouponCommand};

fn command(request_id: &str) -> CouponCommand {
    CouponCommand {
        request_id: request_id.into(),
        coupon_id: "flash-1".into(),
        requested_at: surge_schemas::now(),
        command: CouponAction::Issue {
            user_id: format!("user-of-{request_id}"),
        },
    }
}

fn read_all(factory: &ClientFactory, topic: &str, isolation: &str, want: usize) -> Vec<Vec<u8>> {
    let mut cfg = factory.read_committed_consumer_config("test", &common::unique("group"));
    cfg.set("isolation.level", isolation);
    let consumer: BaseConsumer = cfg.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Read until `want` records arrived, then a little longer to catch extras.
    let mut quiet_until = None;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.payload().unwrap_or_default().to_vec()),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
        if out.len() >= want {
            let until = *quiet_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
            if Instant::now() > until {
                break;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_records_are_visible_and_aborted_ones_are_not() {
    let settings = common::settings();
    let factory = ClientFactory::new(settings.kafka.clone());
    let topic = common::unique("txn");
    let admin = factory.admin().unwrap();
    admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });

    let codec = common::codec::<CouponCommand>(&settings).await;
    let committed: Vec<CouponCommand> =
        (0..3).map(|i| command(&format!("committed-{i}"))).collect();
    let aborted = command("aborted-0");

    let payloads: Vec<Vec<u8>> = committed.iter().map(|c| codec.encode(c).unwrap()).collect();
    let aborted_payload = codec.encode(&aborted).unwrap();
    let (f, t) = (factory.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = f
            .transactional_producer_config("test", &common::unique("txid"))
            .create()
            .unwrap();
        let timeout = Duration::from_secs(30);
        producer.init_transactions(timeout).unwrap();
        producer.begin_transaction().unwrap();
        producer
            .send(BaseRecord::to(&t).key("flash-1").payload(&aborted_payload))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(timeout).unwrap();
        producer.abort_transaction(timeout).unwrap();
        producer.begin_transaction().unwrap();
        for p in &payloads {
            producer
                .send(BaseRecord::to(&t).key("flash-1").payload(p))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.commit_transaction(timeout).unwrap();
    })
    .await
    .unwrap();

    let (f, t) = (factory.clone(), topic.clone());
    let (visible, uncommitted) = tokio::task::spawn_blocking(move || {
        (
            read_all(&f, &t, "read_committed", 3),
            read_all(&f, &t, "read_uncommitted", 4),
        )
    })
    .await
    .unwrap();

    let mut decoded = Vec::new();
    for bytes in &visible {
        assert_eq!(bytes[0], 0, "Confluent magic byte");
        assert_eq!(
            u32::from_be_bytes(bytes[1..5].try_into().unwrap()),
            codec.schema_id(),
            "schema id in the header"
        );
        decoded.push(codec.decode(Some(bytes)).await.unwrap());
    }
    assert_eq!(
        decoded, committed,
        "read_committed sees exactly the committed records, in order"
    );
    assert_eq!(
        uncommitted.len(),
        4,
        "the aborted record was written (read_uncommitted sees it)"
    );
    let seen_aborted = codec.decode(Some(&uncommitted[0])).await.unwrap();
    assert_eq!(seen_aborted, aborted);
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_bytes_are_classified_not_retried() {
    let settings = common::settings();
    let codec = common::codec::<CouponCommand>(&settings).await;
    let good = codec.encode(&command("r")).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..3].to_vec()),
        ("bad_magic", [&[1u8][..], &good[1..]].concat()),
        (
            "unknown_schema_id",
            [&[0u8, 0x7f, 0xff, 0xff, 0xf0][..], &good[5..]].concat(),
        ),
        ("bad_avro_body", good[..good.len() - 4].to_vec()),
    ];
    for (expected, bytes) in cases {
        let err = codec.decode(Some(&bytes)).await.unwrap_err();
        assert_eq!(err.reason_code(), expected, "{err}");
        assert!(
            err.is_poison(),
            "{expected} must go to the dead-letter topic, not be retried"
        );
    }
}
