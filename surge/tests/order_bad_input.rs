//! Bad orders on the real stack, and orders a stranger's client put on the
//! wrong partition. An order-create that breaks the contract's shape (no
//! items, a quantity of 0) goes to order-pipeline-dlq; one that decodes but
//! breaks the saga's rules (a negative price, an unknown currency, 10,000
//! lines) is REJECTED with the rule in its reason; and the saga keeps
//! going. A record keyed by something else on a partition that does not own
//! its orderId is forwarded to the owner and decided there.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::coupon::{signal, Fixture};
use common::orders::{spawn, Tail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_schemas::order::{OrderCreate, OrderEvent, OrderItem, OrderState, OrderStatus};
use surge_schemas::{Contract, Money, TopicCodec};

fn order(id: &str, items: Vec<OrderItem>, currency: &str) -> OrderCreate {
    OrderCreate {
        order_id: id.into(),
        user_id: "u".into(),
        items,
        currency: currency.into(),
        coupon_id: None,
        requested_at: surge_schemas::now(),
    }
}

fn item(product: &str, quantity: i32, price: i64) -> OrderItem {
    OrderItem {
        product_id: product.into(),
        quantity,
        unit_price: Money(price),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_orders_are_rejected_or_dead_lettered_and_misrouted_ones_forwarded() {
    let fx = Fixture::new("order-bad").await;
    let codec: TopicCodec<OrderCreate> = common::codec(&fx.settings).await;
    let topic = fx.topic(OrderCreate::TOPIC);
    let mut saga = spawn(&fx, "order");

    let lines: Vec<OrderItem> = (0..10_000)
        .map(|i| item(&format!("p{i}"), 1, 100))
        .collect();
    let cases: Vec<(OrderCreate, Option<&str>)> = vec![
        (order("no-items", vec![], "KRW"), None),
        (order("zero-qty", vec![item("p", 0, 100)], "KRW"), None),
        (
            order("negative", vec![item("p", 1, -100)], "KRW"),
            Some("negative"),
        ),
        (
            order("currency", vec![item("p", 1, 100)], "ZZZ"),
            Some("currency"),
        ),
        (order("too-long", lines, "KRW"), Some("at most 100")),
        (order("good", vec![item("p", 1, 100)], "KRW"), Some("")),
    ];
    // A stranger's producer: the key is not the orderId, the partitioner
    // librdkafka's default; put it on a partition that does not own it.
    let stray = order("stray", vec![item("p", 1, 100)], "KRW");
    let owner = surge_kafka::partition_for(b"stray", 6);
    let wrong = (owner + 1) % 6;
    let producer: FutureProducer = fx.factory.base("stranger").create().unwrap();
    for (o, _) in &cases {
        let bytes = codec.encode(o).unwrap();
        producer
            .send(
                FutureRecord::to(&topic).key(&o.order_id).payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let bytes = codec.encode(&stray).unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key("u:stray")
                .partition(wrong)
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    // order-status: one record for each decodable order.
    let status_codec: TopicCodec<OrderStatus> = common::codec(&fx.settings).await;
    let mut tail = Tail::new(&fx, OrderStatus::TOPIC);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let by_order: HashMap<String, OrderStatus> = loop {
        tail.catch_up(Duration::from_secs(2));
        let all = tail.decoded(&status_codec).await;
        let m: HashMap<String, OrderStatus> = all
            .into_iter()
            .filter(|s| s.event == OrderEvent::Transition)
            .map(|s| (s.order_id.clone(), s))
            .collect();
        if m.len() >= 5 || std::time::Instant::now() > deadline {
            break m;
        }
    };
    for (o, why) in &cases {
        match why {
            None => assert!(
                !by_order.contains_key(&o.order_id),
                "{} has a status",
                o.order_id
            ),
            Some("") => assert_eq!(by_order[&o.order_id].state, OrderState::Created),
            Some(why) => {
                let s = &by_order[&o.order_id];
                assert_eq!(
                    (s.state, s.version),
                    (OrderState::Rejected, 1),
                    "{}",
                    o.order_id
                );
                assert!(
                    s.reason.as_deref().unwrap_or("").contains(why),
                    "{}: {:?}",
                    o.order_id,
                    s.reason
                );
            }
        }
    }
    assert_eq!(
        by_order["stray"].state,
        OrderState::Created,
        "the stray order is decided"
    );
    let stray_status = tail
        .records
        .iter()
        .find(|(_, _, b)| {
            futures::executor::block_on(status_codec.decode(Some(b)))
                .unwrap()
                .order_id
                == "stray"
        })
        .unwrap();
    assert_eq!(
        stray_status.0, owner,
        "and its status is on the owner's partition"
    );

    // The two shapeless orders are in the dead-letter topic, bytes untouched.
    let consumer: BaseConsumer = fx
        .factory
        .read_committed_consumer_config("dlq-reader", &common::unique("dlq"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(
        &fx.names.dlq(surge_core::names::ORDER),
        0,
        Offset::Beginning,
    )
    .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut reasons = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reasons.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let reason = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "surge.dlq.reason"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            reasons.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                reason,
            ));
        }
    }
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            (Some("no-items".into()), Some("contract_violation".into())),
            (Some("zero-qty".into()), Some("contract_violation".into())),
        ]
    );

    // The forwarded copy sits on the owner's partition with its provenance.
    let mut forwarded = Tail::new(&fx, OrderCreate::TOPIC);
    forwarded.catch_up(Duration::from_secs(2));
    let copies: Vec<i32> = forwarded
        .records
        .iter()
        .filter(|(p, _, b)| *p == owner && b == &bytes)
        .map(|(p, _, _)| *p)
        .collect();
    assert_eq!(
        copies,
        vec![owner],
        "exactly one forwarded copy, on the owner"
    );
    let log = fx.logs.join("pipeline-order.log");
    let addr = common::metrics_address(&log);
    let (_, metrics) = common::http_get(&addr, "/metrics");
    assert!(
        common::metric(&metrics, "surge_pipeline_forwarded_records_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        common::metric(&metrics, "surge_order_sagas_open{state=\"CREATED\"") >= 2.0,
        "{metrics}"
    );
    signal(&saga, "TERM");
    let status = saga.wait().unwrap();
    assert!(
        status.success(),
        "the saga stops cleanly on SIGTERM: {status}"
    );
}
