//! A stranger's producer breaks the key contract, and the order side still
//! keeps one book per order and one per product.
//!
//! An order sale (3 products with little stock, 40 orders, some cancelled)
//! goes half through the gateway (murmur2 of the contract key, as Java
//! clients partition) and half through a default-configured Python
//! confluent-kafka producer: librdkafka's default partitioner (CRC32 of the
//! key, a random partition for no key) with keys that disagree with the
//! contract key — `orderId:userId`, no key, another order's id — on
//! order-create and order-cancel, and the same on inventory-commands for
//! stock top-ups (`AdjustStock`, which upstream product admins may write,
//! README "Producing to surge"), keyed `productId:…`, not at all, or by
//! another product's id.
//!
//! Proven from the outside: the Python records really landed off their
//! owner partition (delivery reports against murmur2 of the contract key);
//! each of those has exactly one byte-identical copy on its owner naming
//! where it came from (`surge.forwarded.from`), nothing else is copied, and
//! the pipelines' counters say so; every order has one history, on its own
//! partition, ending in exactly one terminal state (a PAID order may be
//! cancelled once: refunded); every cancel is answered once; every top-up is
//! applied once, on the product's partition; no product is oversold though
//! demand exceeds supply; and `surge verify --orders` passes with the
//! provider's ledger and both stores.
//!
//! The interpreter is `SURGE_PYTHON` (scripts/test sets it from
//! scripts/lib/ensure-python-interop), else `.stack/venv/bin/python`; without
//! a Python that imports confluent-kafka's Avro serializer the test FAILS.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::coupon::Fixture;
use common::gateway::{spawn_gateway, Gateway, ADMIN_TOKEN};
use common::orders::{spawn, Tail};
use common::payments::{spawn_payment, start_pg_sim};
use common::stranger::{librdkafka_default_partition, python, read_all, run_python_producer, Rec};
use common::{stderr, stdout, surge};
use futures::StreamExt;
use serde_json::json;
use surge_kafka::partition_for;
use surge_schemas::inventory::{InventoryCommand, InventoryEvent, InventoryOutcome};
use surge_schemas::order::{OrderCancel, OrderCreate, OrderEvent, OrderState, OrderStatus};
use surge_schemas::{Contract, TopicCodec};

const PRODUCTS: usize = 3;
/// Initial units per product: with the top-ups 9, against about 20 asked.
const STOCK: i64 = 4;
/// One top-up per product through the gateway.
const GATEWAY_TOPUP: i64 = 2;
/// Top-ups of one unit per product through Python, one per kind of key.
const PYTHON_TOPUPS: usize = 3;
const ORDERS: usize = 40;
const PRICE: &str = "12.50";
const CURRENCY: &str = "EUR";

/// How a Python record is keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyKind {
    /// The contract key with more appended (`orderId:userId`,
    /// `productId:topup-1`): a team keying by what it thinks is unique.
    Compound,
    /// No key at all: librdkafka picks a random partition.
    None,
    /// Another order's or product's id: a key that disagrees with the value.
    Other,
}

fn kind_for(j: usize) -> KeyKind {
    match j % 3 {
        0 => KeyKind::Compound,
        1 => KeyKind::None,
        _ => KeyKind::Other,
    }
}

/// One record for the Python producer.
#[derive(Debug, Clone)]
struct PyRecord {
    /// Unique per record; the script sends it as header `x-request-id`.
    id: String,
    topic: String,
    key: Option<String>,
    kind: KeyKind,
    /// What the contract says the key is (orderId, productId).
    contract_key: String,
    /// `type` and the value's fields, as the script reads them.
    fields: serde_json::Value,
}

impl PyRecord {
    fn json(&self) -> serde_json::Value {
        let mut v = self.fields.clone();
        let m = v.as_object_mut().expect("fields are an object");
        m.insert("id".into(), json!(self.id));
        m.insert("topic".into(), json!(self.topic));
        m.insert("key".into(), json!(self.key));
        v
    }
}

#[derive(Debug, Clone)]
struct Order {
    id: String,
    user: String,
    /// (product, quantity)
    items: Vec<(String, i32)>,
    /// Sent by Python with this kind of key; `None`: through the gateway.
    python: Option<KeyKind>,
}

/// One input topic read whole, with the contract key of every record's value.
struct TopicLog {
    topic: String,
    partitions: i32,
    records: Vec<Rec>,
    contract_key: HashMap<(i32, i64), String>,
}

async fn topic_log<T: Contract>(fx: &Fixture) -> TopicLog {
    let topic = fx.topic(T::TOPIC);
    let codec: TopicCodec<T> = common::codec(&fx.settings).await;
    let records = read_all(fx, &topic);
    let mut contract_key = HashMap::new();
    for r in &records {
        let v = codec
            .decode(Some(&r.payload))
            .await
            .unwrap_or_else(|e| panic!("{topic} {}:{} decodes: {e}", r.partition, r.offset));
        contract_key.insert((r.partition, r.offset), v.key().to_string());
    }
    TopicLog {
        partitions: fx.partitions(&topic),
        topic,
        records,
        contract_key,
    }
}

/// Checks (a) and (b) on one input topic for the Python records sent to it
/// (record, delivery partition, offset); the positions that landed off
/// their owner, and how many of them per kind of key.
fn check_routing(
    log: &TopicLog,
    sent: &[(&PyRecord, i32, i64)],
) -> (BTreeSet<(i32, i64)>, BTreeMap<KeyKind, usize>) {
    let topic = &log.topic;
    let n = log.partitions;
    let at: HashMap<(i32, i64), &Rec> = log
        .records
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let owner = |pos: &(i32, i64)| partition_for(log.contract_key[pos].as_bytes(), n);

    // (a) Where the stranger's records landed.
    let mut misrouted = BTreeSet::new();
    let mut by_kind: BTreeMap<KeyKind, usize> = BTreeMap::new();
    for (r, p, o) in sent {
        let rec = at
            .get(&(*p, *o))
            .unwrap_or_else(|| panic!("{topic}: {} delivered at {p}:{o}, not in the log", r.id));
        assert_eq!(
            rec.header("x-request-id"),
            Some(r.id.as_bytes()),
            "{topic} {p}:{o}: the record delivered there, the stranger's headers intact"
        );
        assert!(rec.forwarded_from().is_none(), "{topic} {p}:{o}");
        assert_eq!(
            log.contract_key[&(*p, *o)],
            r.contract_key,
            "{topic} {p}:{o}: the value's contract key"
        );
        assert_eq!(
            rec.key.as_deref(),
            r.key.as_deref().map(str::as_bytes),
            "{topic} {p}:{o}"
        );
        if let Some(key) = &rec.key {
            assert_eq!(
                *p,
                librdkafka_default_partition(key, n),
                "{topic}: {} placed by librdkafka's default partitioner (CRC32 of the key)",
                r.id
            );
        }
        if *p != owner(&(*p, *o)) {
            misrouted.insert((*p, *o));
            *by_kind.entry(r.kind).or_default() += 1;
        }
    }

    // (b) Each misrouted record has exactly one copy, on its owner, the same
    //     bytes, key, headers and CreateTime plus where it came from; nothing
    //     else is copied, and nothing but the stranger's misrouted records
    //     sits off its owner (the gateway's and the saga's never do).
    let mut copied: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut off_owner: BTreeSet<(i32, i64)> = BTreeSet::new();
    for r in &log.records {
        let pos = (r.partition, r.offset);
        match r.forwarded_from() {
            Some(from) => {
                let original = at.get(&from).unwrap_or_else(|| {
                    panic!("{topic}: copy at {pos:?} names {from:?}, not in the log")
                });
                assert_eq!(
                    r.partition,
                    owner(&pos),
                    "{topic}: a copy lands on the owner"
                );
                assert_eq!(
                    r.payload, original.payload,
                    "{topic}: a copy has the original bytes"
                );
                assert_eq!(r.key, original.key, "{topic}: a copy has the original key");
                assert_eq!(
                    r.other_headers(),
                    original.headers,
                    "{topic}: a copy keeps the original headers"
                );
                assert!(
                    r.timestamp.is_some() && r.timestamp == original.timestamp,
                    "{topic}: a copy keeps the original CreateTime: {:?} vs {:?}",
                    r.timestamp,
                    original.timestamp
                );
                *copied.entry(from).or_default() += 1;
            }
            None if r.partition != owner(&pos) => {
                off_owner.insert(pos);
            }
            None => {}
        }
    }
    assert_eq!(
        off_owner, misrouted,
        "{topic}: only the Python records that landed off their owner sit off it"
    );
    assert_eq!(
        copied.keys().copied().collect::<BTreeSet<_>>(),
        misrouted,
        "{topic}: exactly the misrouted records are forwarded"
    );
    let twice: Vec<_> = copied.iter().filter(|(_, k)| **k != 1).collect();
    assert!(
        twice.is_empty(),
        "{topic}: forwarded more than once: {twice:?}"
    );
    (misrouted, by_kind)
}

/// Runs the Python producer over `records`; (id, topic, partition, offset) per delivery.
fn produce_with_python(
    bootstrap: &str,
    registry: &str,
    file: &std::path::Path,
    records: &[PyRecord],
) -> Vec<(String, String, i32, i64)> {
    let list: Vec<serde_json::Value> = records.iter().map(PyRecord::json).collect();
    let deliveries: Vec<(String, String, i32, i64)> = run_python_producer(
        "produce_orders_with_confluent_kafka.py",
        &[bootstrap, registry],
        &list,
        file,
    )
    .iter()
    .map(|v| {
        (
            v["id"].as_str().unwrap().to_string(),
            v["topic"].as_str().unwrap().to_string(),
            v["partition"].as_i64().unwrap() as i32,
            v["offset"].as_i64().unwrap(),
        )
    })
    .collect();
    assert_eq!(
        deliveries.len(),
        records.len(),
        "every Python record delivered"
    );
    deliveries
}

fn ms_now() -> i64 {
    surge_schemas::now().timestamp_millis()
}

async fn place(gw: &Gateway, o: &Order) {
    let items: Vec<serde_json::Value> = o
        .items
        .iter()
        .map(|(p, q)| json!({ "productId": p, "quantity": q, "unitPrice": PRICE }))
        .collect();
    let (status, body) = gw
        .post(
            "/orders",
            &[("idempotency-key", o.id.as_str())],
            json!({ "userId": o.user, "items": items, "currency": CURRENCY }),
        )
        .await;
    assert_eq!(status, 202, "{}: {body}", o.id);
    assert_eq!(body["orderId"], o.id.as_str(), "{body}");
}

async fn cancel(gw: &Gateway, request: &str, o: &Order) {
    let (status, body) = gw
        .post(
            &format!("/orders/{}/cancel", o.id),
            &[("idempotency-key", request)],
            json!({ "userId": o.user, "reason": "changed my mind" }),
        )
        .await;
    assert_eq!(status, 202, "{request}: {body}");
    assert_eq!(body["requestId"], request, "{body}");
}

async fn admin(gw: &Gateway, path: &str, request: &str, body: serde_json::Value) {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, answer) = gw
        .post(
            path,
            &[
                ("authorization", bearer.as_str()),
                ("idempotency-key", request),
            ],
            body,
        )
        .await;
    assert_eq!(status, 202, "{path} {request}: {answer}");
}

/// A topic's records so far, decoded with their positions, sorted by (partition, offset).
async fn decoded<T: Contract>(tail: &Tail, codec: &TopicCodec<T>) -> Vec<(i32, i64, T)> {
    let mut out = Vec::with_capacity(tail.records.len());
    for (p, o, bytes) in &tail.records {
        out.push((*p, *o, codec.decode(Some(bytes)).await.expect("decodes")));
    }
    out.sort_by_key(|(p, o, _)| (*p, *o));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_sale_half_through_a_default_partitioned_python_producer_keeps_one_book_per_order_and_product(
) {
    // Fail before anything starts when there is no Python to be the stranger.
    python();
    let started = Instant::now();
    // A database of its own: verify compares the sinks' whole tables.
    let db = common::fresh_database(&common::settings().postgres.url).await;
    let fx = Fixture::with_env("misrouted-orders", &[("SURGE_POSTGRES__URL", db.as_str())]).await;
    let create_topic = fx.topic(OrderCreate::TOPIC);
    let cancel_topic = fx.topic(OrderCancel::TOPIC);
    let inventory_topic = fx.topic(InventoryCommand::TOPIC);
    let n_orders = fx.partitions(&create_topic);
    let n_stock = fx.partitions(&inventory_topic);
    assert!(
        n_orders > 1 && n_stock > 1,
        "the inputs need partitions to misroute to"
    );
    let product_owner = |p: &str| partition_for(p.as_bytes(), n_stock);

    // Products on different partitions, so a top-up keyed by another
    // product's id names a real, other book.
    let mut products: Vec<String> = Vec::new();
    for salt in 0.. {
        let id = format!("{}p{salt}", fx.prefix);
        if products
            .iter()
            .all(|p| product_owner(p) != product_owner(&id))
        {
            products.push(id);
        }
        if products.len() == PRODUCTS {
            break;
        }
    }

    let sim = start_pg_sim(&fx, &[("decline_ratio", "0.1"), ("latency_median_ms", "5")]);
    // No coupons in this sale: the coupon pipeline has nothing to do.
    let _processes = [
        spawn(&fx, "order"),
        spawn(&fx, "inventory"),
        spawn_payment(&fx, &sim, &[]),
        fx.spawn_sink("postgres", &[]),
        fx.spawn_sink("redis", &[]),
    ];
    let gw = spawn_gateway(&fx, &[]).await;
    for p in &products {
        admin(
            &gw,
            "/admin/products",
            &format!("create-{p}"),
            json!({ "productId": p, "stock": STOCK }),
        )
        .await;
    }
    // The sale only once every product exists: a top-up or a reservation
    // decided before its product's creation would be UNKNOWN_PRODUCT.
    let deadline = Instant::now() + Duration::from_secs(90);
    for p in &products {
        while gw.get(&format!("/products/{p}")).await.0 != 200 {
            assert!(Instant::now() < deadline, "{p} not created in 90 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("products created at {:?}", started.elapsed());

    // The orders: one unit of one product each, every 4th with two units of
    // the next one too — about 20 units asked per product of 9.
    let orders: Vec<Order> = (0..ORDERS)
        .map(|i| {
            let mut items = vec![(products[i % PRODUCTS].clone(), 1)];
            if i % 4 == 0 {
                items.push((products[(i + 1) % PRODUCTS].clone(), 2));
            }
            Order {
                id: format!("{}o{i}", fx.prefix),
                user: format!("user-{i}"),
                items,
                python: (i % 2 == 1).then(|| kind_for(i / 2)),
            }
        })
        .collect();
    let by_id: HashMap<&str, &Order> = orders.iter().map(|o| (o.id.as_str(), o)).collect();

    // Wave 1, through Python: the odd orders, four of them sent again (the
    // same order, unkeyed: an upstream retry is not a second order), and
    // per product one top-up of one unit per kind of key, interleaved.
    let create_fields = |o: &Order, at: i64| {
        json!({
            "type": "create",
            "orderId": o.id,
            "userId": o.user,
            "currency": CURRENCY,
            "requestedAt": at,
            "items": o.items.iter()
                .map(|(p, q)| json!({ "productId": p, "quantity": q, "unitPrice": PRICE }))
                .collect::<Vec<_>>(),
        })
    };
    let mut creates: Vec<PyRecord> = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        let Some(kind) = o.python else { continue };
        let at = ms_now();
        let key = match kind {
            KeyKind::Compound => Some(format!("{}:{}", o.id, o.user)),
            KeyKind::None => None,
            KeyKind::Other => Some(orders[(i + 7) % ORDERS].id.clone()),
        };
        let r = PyRecord {
            id: o.id.clone(),
            topic: create_topic.clone(),
            key,
            kind,
            contract_key: o.id.clone(),
            fields: create_fields(o, at),
        };
        creates.push(r.clone());
        if i % 10 == 1 {
            creates.push(PyRecord {
                id: format!("{}-resent", o.id),
                key: None,
                kind: KeyKind::None,
                ..r
            });
        }
    }
    let mut topups: Vec<PyRecord> = Vec::new();
    for (pi, p) in products.iter().enumerate() {
        for k in 0..PYTHON_TOPUPS {
            let kind = kind_for(k);
            let key = match kind {
                KeyKind::Compound => Some(format!("{p}:topup-{k}")),
                KeyKind::None => None,
                KeyKind::Other => Some(products[(pi + 1) % PRODUCTS].clone()),
            };
            let id = format!("{p}-pytop-{k}");
            topups.push(PyRecord {
                id: id.clone(),
                topic: inventory_topic.clone(),
                key,
                kind,
                contract_key: p.clone(),
                fields: json!({
                    "type": "adjust",
                    "requestId": id,
                    "productId": p,
                    "delta": 1,
                    "reason": "restocked by the warehouse service",
                    "requestedAt": ms_now(),
                }),
            });
        }
    }
    let mut wave1: Vec<PyRecord> = Vec::new();
    let mut topup_iter = topups.iter();
    for c in &creates {
        wave1.push(c.clone());
        if let Some(t) = topup_iter.next() {
            wave1.push(t.clone());
        }
    }
    wave1.extend(topup_iter.cloned());

    let bootstrap = fx.settings.kafka.bootstrap_servers.clone();
    let registry = fx.settings.registry.url.clone();
    let run = |wave: &'static str, records: Vec<PyRecord>| {
        let (bootstrap, registry) = (bootstrap.clone(), registry.clone());
        let file = fx.logs.join(format!("python-{wave}.json"));
        tokio::task::spawn_blocking(move || {
            let d = produce_with_python(&bootstrap, &registry, &file, &records);
            (records, d)
        })
    };
    // The gateway's half at the same time: the even orders and one top-up
    // per product, interleaving with Python's in the log.
    let python_task = run("wave1", wave1);
    let gateway_orders: Vec<&Order> = orders.iter().filter(|o| o.python.is_none()).collect();
    futures::stream::iter(&gateway_orders)
        .for_each_concurrent(8, |o| place(&gw, o))
        .await;
    let mut gateway_topups: Vec<String> = Vec::new();
    for p in &products {
        let request = format!("{p}-gwtop");
        admin(
            &gw,
            &format!("/admin/products/{p}/stock"),
            &request,
            json!({ "delta": GATEWAY_TOPUP, "reason": "restocked" }),
        )
        .await;
        gateway_topups.push(request);
    }
    let (mut sent, mut deliveries) = python_task.await.expect("python producer task");
    eprintln!("wave 1 sent at {:?}", started.elapsed());

    // Cancels only once every order has its first status, so none is
    // refused as unknown for having overtaken its order.
    let status_codec: TopicCodec<OrderStatus> = common::codec(&fx.settings).await;
    let mut status_tail = Tail::new(&fx, OrderStatus::TOPIC);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        status_tail.catch_up(Duration::from_millis(500));
        let seen: HashSet<String> = decoded(&status_tail, &status_codec)
            .await
            .into_iter()
            .filter(|(_, _, s)| s.event == OrderEvent::Transition)
            .map(|(_, _, s)| s.order_id)
            .collect();
        let missing: Vec<&str> = orders
            .iter()
            .map(|o| o.id.as_str())
            .filter(|id| !seen.contains(*id))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no order-status in 90 s for {missing:?}; logs in {}",
            fx.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("every order has a status at {:?}", started.elapsed());

    // Wave 2: cancels of 16 orders of every product and both channels
    // (i % 5 is 0 or 3), alternately through the gateway
    // and Python; plus, through Python, a cancel by someone who is not the
    // buyer (refused) and one cancel sent again unkeyed (one answer).
    let mut cancels: Vec<(String, String)> = Vec::new(); // (request id, order id)
    let mut gateway_cancels: Vec<(String, &Order)> = Vec::new();
    let mut python_cancels: Vec<PyRecord> = Vec::new();
    let cancel_fields = |request: &str, o: &Order, user: &str| {
        json!({
            "type": "cancel",
            "requestId": request,
            "orderId": o.id,
            "userId": user,
            "reason": "changed my mind",
            "requestedAt": ms_now(),
        })
    };
    let targets = (0..ORDERS).filter(|i| i % 5 == 0 || i % 5 == 3);
    for (j, i) in targets.enumerate() {
        let o = &orders[i];
        let request = format!("{}k{i}", fx.prefix);
        cancels.push((request.clone(), o.id.clone()));
        if j % 2 == 0 {
            gateway_cancels.push((request, o));
            continue;
        }
        let kind = kind_for(j / 2);
        let key = match kind {
            KeyKind::Compound => Some(format!("{}:{}", o.id, o.user)),
            KeyKind::None => None,
            KeyKind::Other => Some(orders[(i + 5) % ORDERS].id.clone()),
        };
        python_cancels.push(PyRecord {
            id: request.clone(),
            topic: cancel_topic.clone(),
            key,
            kind,
            contract_key: o.id.clone(),
            fields: cancel_fields(&request, o, &o.user),
        });
    }
    let resent = PyRecord {
        id: format!("{}-resent", python_cancels[0].id),
        key: None,
        kind: KeyKind::None,
        ..python_cancels[0].clone()
    };
    python_cancels.push(resent);
    let victim = &orders[2];
    let intruder_request = format!("{}k-intruder", fx.prefix);
    cancels.push((intruder_request.clone(), victim.id.clone()));
    python_cancels.push(PyRecord {
        id: intruder_request.clone(),
        topic: cancel_topic.clone(),
        key: Some(format!("{}:intruder", victim.id)),
        kind: KeyKind::Compound,
        contract_key: victim.id.clone(),
        fields: cancel_fields(&intruder_request, victim, "intruder"),
    });
    let python_task = run("wave2", python_cancels);
    futures::stream::iter(&gateway_cancels)
        .for_each_concurrent(8, |(r, o)| cancel(&gw, r, o))
        .await;
    let (more_sent, more_deliveries) = python_task.await.expect("python producer task");
    sent.extend(more_sent);
    deliveries.extend(more_deliveries);
    eprintln!("wave 2 sent at {:?}", started.elapsed());

    // Settled: every order's latest transition terminal, every cancel
    // answered, every top-up decided, and no unit still reserved (commits
    // and releases applied).
    let topup_ids: Vec<String> = gateway_topups
        .iter()
        .cloned()
        .chain(topups.iter().map(|t| t.id.clone()))
        .collect();
    let event_codec: TopicCodec<InventoryEvent> = common::codec(&fx.settings).await;
    let mut event_tail = Tail::new(&fx, InventoryEvent::TOPIC);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (statuses, events) = loop {
        status_tail.catch_up(Duration::from_millis(500));
        event_tail.catch_up(Duration::from_millis(500));
        let statuses = decoded(&status_tail, &status_codec).await;
        let events = decoded(&event_tail, &event_codec).await;
        let mut latest: HashMap<&str, &OrderStatus> = HashMap::new();
        let mut answered: HashSet<&str> = HashSet::new();
        for (_, _, s) in &statuses {
            if s.event == OrderEvent::Transition
                && latest
                    .get(s.order_id.as_str())
                    .is_none_or(|l| l.version < s.version)
            {
                latest.insert(s.order_id.as_str(), s);
            }
            if let Some(k) = &s.cancel_request_id {
                answered.insert(k.as_str());
            }
        }
        let mut stock: HashMap<&str, &InventoryEvent> = HashMap::new();
        let mut decided: HashSet<&str> = HashSet::new();
        for (_, _, e) in &events {
            stock.insert(e.product_id.as_str(), e);
            decided.insert(e.request_id.as_str());
        }
        let topups_waiting = topup_ids
            .iter()
            .filter(|t| !decided.contains(t.as_str()))
            .count();
        let open = orders
            .iter()
            .filter(|o| {
                !latest
                    .get(o.id.as_str())
                    .is_some_and(|s| s.state.is_terminal())
            })
            .count();
        let unanswered = cancels
            .iter()
            .filter(|(k, _)| !answered.contains(k.as_str()))
            .count();
        let reserved: i64 = stock.values().map(|e| e.reserved).sum();
        if open == 0 && unanswered == 0 && topups_waiting == 0 && reserved == 0 {
            break (statuses, events);
        }
        assert!(
            Instant::now() < deadline,
            "not settled in 120 s: {open} orders open, {unanswered} cancels unanswered, \
             {topups_waiting} top-ups undecided, {reserved} units reserved; logs in {}",
            fx.logs.display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("settled at {:?}", started.elapsed());

    // (a) + (b) on each input the stranger wrote to.
    let mut misrouted: BTreeMap<String, BTreeSet<(i32, i64)>> = BTreeMap::new();
    let mut by_kind: BTreeMap<KeyKind, usize> = BTreeMap::new();
    let sent_by_id: HashMap<&str, &PyRecord> = sent.iter().map(|r| (r.id.as_str(), r)).collect();
    for log in [
        topic_log::<OrderCreate>(&fx).await,
        topic_log::<OrderCancel>(&fx).await,
        topic_log::<InventoryCommand>(&fx).await,
    ] {
        let here: Vec<(&PyRecord, i32, i64)> = deliveries
            .iter()
            .filter(|(_, t, _, _)| *t == log.topic)
            .map(|(id, _, p, o)| (sent_by_id[id.as_str()], *p, *o))
            .collect();
        assert!(!here.is_empty(), "{}: Python wrote nothing", log.topic);
        let (off, kinds) = check_routing(&log, &here);
        eprintln!(
            "{}: {} Python records, {} off their owner, by key {kinds:?}",
            log.topic,
            here.len(),
            off.len()
        );
        assert!(
            !off.is_empty(),
            "{}: no Python record landed off its owner: the test proves nothing there",
            log.topic
        );
        for (k, v) in kinds {
            *by_kind.entry(k).or_default() += v;
        }
        misrouted.insert(log.topic.clone(), off);
    }
    for kind in [KeyKind::Compound, KeyKind::None, KeyKind::Other] {
        assert!(
            by_kind.get(&kind).copied().unwrap_or(0) > 0,
            "no {kind:?} record landed off its owner: the test proves nothing for it"
        );
    }

    // The pipelines count what they forwarded (one instance each, nothing
    // restarted): the saga its two public inputs, the inventory its one.
    let forwarded = |pipeline: &str| {
        let addr = common::metrics_address(&fx.logs.join(format!("pipeline-{pipeline}.log")));
        let (status, body) = common::http_get(&addr, "/metrics");
        assert_eq!(status, 200);
        common::metric(&body, "surge_pipeline_forwarded_records_total")
    };
    let saga_forwarded =
        misrouted[create_topic.as_str()].len() + misrouted[cancel_topic.as_str()].len();
    assert_eq!(
        forwarded("order"),
        saga_forwarded as f64,
        "the saga's forwarded counter is the number of misrouted orders and cancels"
    );
    assert_eq!(
        forwarded("inventory"),
        misrouted[inventory_topic.as_str()].len() as f64,
        "the inventory's forwarded counter is the number of misrouted top-ups"
    );

    // (c) One book per order: all of an order's statuses on its partition,
    //     versions 1, 2, 3 … (one first transition, however often it was
    //     sent), exactly one terminal state, or PAID then CANCELLED (refund).
    let n_status = fx.partitions(&fx.topic(OrderStatus::TOPIC));
    let mut history: HashMap<&str, Vec<&OrderStatus>> = HashMap::new();
    let mut answers: HashMap<&str, Vec<&OrderStatus>> = HashMap::new();
    for (p, o, s) in &statuses {
        assert!(
            by_id.contains_key(s.order_id.as_str()),
            "order-status {p}:{o} for an order never sent: {s:?}"
        );
        assert_eq!(
            *p,
            partition_for(s.order_id.as_bytes(), n_status),
            "{}: a status off the order's partition, a second book",
            s.order_id
        );
        if s.event == OrderEvent::Transition {
            history.entry(s.order_id.as_str()).or_default().push(s);
        }
        if let Some(k) = &s.cancel_request_id {
            answers.entry(k.as_str()).or_default().push(s);
        }
    }
    let mut final_state: HashMap<&str, OrderState> = HashMap::new();
    let mut by_final: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &orders {
        let h = &history[o.id.as_str()];
        let versions: Vec<i32> = h.iter().map(|s| s.version).collect();
        assert_eq!(
            versions,
            (1..=h.len() as i32).collect::<Vec<_>>(),
            "{}: one history",
            o.id
        );
        let states: Vec<OrderState> = h.iter().map(|s| s.state).collect();
        // Nothing follows the terminal state but a refund of a paid order.
        let terminals: Vec<OrderState> =
            states.iter().copied().filter(|s| s.is_terminal()).collect();
        let tail_is = |want: &[OrderState]| states.ends_with(want);
        let well_ended = match terminals.as_slice() {
            [end] => tail_is(&[*end]),
            [OrderState::Paid, OrderState::Cancelled] => {
                tail_is(&[OrderState::Paid, OrderState::Cancelled])
            }
            _ => false,
        };
        assert!(
            well_ended,
            "{}: not one terminal decision: {states:?}",
            o.id
        );
        let last = *states.last().unwrap();
        final_state.insert(o.id.as_str(), last);
        *by_final.entry(last.symbol()).or_default() += 1;
    }
    eprintln!("final states: {by_final:?}");
    for state in ["PAID", "REJECTED"] {
        assert!(
            by_final.contains_key(state),
            "no {state} order: {by_final:?}"
        );
    }
    for (request, order) in &cancels {
        let got = answers
            .get(request.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(got.len(), 1, "{request} ({order}): answers {got:?}");
        assert_eq!(&got[0].order_id, order, "{request}");
    }
    assert_eq!(
        answers[intruder_request.as_str()][0].event,
        OrderEvent::CancelRefused,
        "a cancel by someone other than the buyer is refused"
    );

    // (c) One book per product, never oversold: every decision on its
    //     partition, about a command read from the product's partition of
    //     inventory-commands; conserved; each top-up applied once; nothing
    //     sold beyond what was created though demand exceeded it; sold is
    //     exactly what the PAID orders bought.
    let n_result = fx.partitions(&fx.topic(InventoryEvent::TOPIC));
    let mut last: BTreeMap<&str, &InventoryEvent> = BTreeMap::new();
    let mut applied: HashMap<&str, usize> = HashMap::new();
    let mut created: HashMap<&str, usize> = HashMap::new();
    let mut insufficient = 0;
    for (p, o, e) in &events {
        let product = e.product_id.as_str();
        assert!(products.iter().any(|x| x == product), "{p}:{o}: {e:?}");
        assert_eq!(
            *p,
            partition_for(product.as_bytes(), n_result),
            "{product}: inventory-result off its partition, a second book"
        );
        assert_eq!(
            e.source_partition,
            product_owner(product),
            "{product}: {} decided off its owner",
            e.request_id
        );
        assert!(
            e.is_conserved() && e.available >= 0 && e.reserved >= 0 && e.sold >= 0,
            "{product}: not conserved after {}: {e:?}",
            e.request_id
        );
        match e.outcome {
            InventoryOutcome::Adjusted => *applied.entry(e.request_id.as_str()).or_default() += 1,
            InventoryOutcome::Created => *created.entry(product).or_default() += 1,
            InventoryOutcome::InsufficientStock => insufficient += 1,
            InventoryOutcome::UnknownProduct | InventoryOutcome::Invalid => {
                panic!("{product}: {e:?}")
            }
            _ => {}
        }
        last.insert(product, e);
    }
    for id in &topup_ids {
        assert_eq!(
            applied.get(id.as_str()).copied(),
            Some(1),
            "top-up {id} applied once"
        );
    }
    assert_eq!(
        applied.len(),
        topup_ids.len(),
        "no other adjustment: {applied:?}"
    );
    assert!(
        insufficient > 0,
        "no reservation was refused: demand never exceeded stock, oversell untested"
    );
    for p in &products {
        assert_eq!(
            created.get(p.as_str()).copied(),
            Some(1),
            "{p}: created once"
        );
        let e = last[p.as_str()];
        let paid: i64 = orders
            .iter()
            .filter(|o| final_state[o.id.as_str()] == OrderState::Paid)
            .flat_map(|o| o.items.iter())
            .filter(|(product, _)| product == p)
            .map(|(_, q)| i64::from(*q))
            .sum();
        eprintln!(
            "{p}: created {} available {} reserved {} sold {} (PAID orders bought {paid})",
            e.created, e.available, e.reserved, e.sold
        );
        assert_eq!(
            e.created,
            STOCK + GATEWAY_TOPUP + PYTHON_TOPUPS as i64,
            "{p}: every top-up counted once"
        );
        assert_eq!(e.reserved, 0, "{p}: nothing left reserved");
        assert_eq!(e.sold, paid, "{p}: sold = what the PAID orders bought");
        assert!(paid <= e.created, "{p}: oversold, {paid} of {}", e.created);
    }

    // The product's own audit: invariant 5 with the provider's ledger, and
    // both stores equal to order-status and inventory-result.
    let keyspace = fx.prefix.trim_end_matches('-').to_string();
    let out = surge(
        &[
            "verify",
            "--orders",
            "--wait",
            "60",
            "--ledger-schema",
            &sim.schema,
        ],
        &[
            ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
            ("SURGE_POSTGRES__URL", db.as_str()),
            ("SURGE_REDIS__KEYSPACE", keyspace.as_str()),
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("verify: OK")
            && text.contains(&format!("orders     {ORDERS}"))
            && text.contains(
                "postgres and redis hold exactly what order-status and inventory-result say"
            ),
        "{text}"
    );
    eprintln!("done at {:?}", started.elapsed());
}
