//! A stranger's producer breaks the key contract, and the coupon pipeline
//! still keeps one book per coupon.
//!
//! One flash sale (3 coupons × 20 units, 300 users) goes half through the
//! gateway (murmur2 of couponId, as Java clients partition) and half through
//! a default-configured Python confluent-kafka producer: librdkafka's default
//! partitioner (CRC32 of the key, a random partition for no key) with keys
//! `couponId:userId`, no key, or another coupon's id. The engine must decide
//! every request on the partition murmur2(couponId in the VALUE) selects,
//! forwarding the others there unchanged with `surge.forwarded.from`.
//!
//! Proven from the outside: the Python records really landed off their
//! owner (delivery reports, read back from coupon-issue); each of those has
//! exactly one byte-identical copy on the owner partition naming where it came
//! from, and nothing else is copied; /metrics counts exactly those; every
//! request has one decision, and every decision of a coupon was taken on its
//! owner partition; no coupon oversold or leaks, no user holds a coupon
//! twice, the units went to the first distinct users in the owner
//! partition's log order; and `surge verify` passes with PostgreSQL and Redis
//! equal to the topic.
//!
//! The interpreter is `SURGE_PYTHON` (scripts/test sets it from
//! scripts/lib/ensure-python-interop), else `.stack/venv/bin/python`; without
//! a Python that imports confluent-kafka's Avro serializer the test FAILS.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::coupon::{check_invariants, Fixture};
use common::gateway::{spawn_gateway, Gateway};
use common::stranger::{librdkafka_default_partition, python, read_all, run_python_producer, Rec};
use common::{stdout, surge};
use futures::StreamExt;
use serde_json::json;
use surge_kafka::partition_for;
use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision, Outcome};
use surge_schemas::Contract;

const COUPONS: usize = 3;
const STOCK: i64 = 20;
const USERS: usize = 300;

/// How a Python request is keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum KeyKind {
    /// `couponId:userId`: a team keying by what it thinks is unique.
    CouponUser,
    /// No key at all: librdkafka picks a random partition.
    None,
    /// Another coupon's id: a key that disagrees with the value.
    WrongCoupon,
}

#[derive(Debug, Clone)]
struct PyRecord {
    request: String,
    coupon: String,
    user: String,
    key: Option<String>,
    kind: KeyKind,
}

/// Where and what the Python producer writes.
struct PythonRun {
    bootstrap: String,
    registry: String,
    topic: String,
    file: std::path::PathBuf,
}

/// Runs the Python producer over `records`; (request id, partition, offset) per delivery.
fn produce_with_python(run: &PythonRun, records: &[PyRecord]) -> Vec<(String, i32, i64)> {
    let list: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            json!({ "requestId": r.request, "couponId": r.coupon, "userId": r.user, "key": r.key })
        })
        .collect();
    run_python_producer(
        "produce_with_confluent_kafka.py",
        &[&run.bootstrap, &run.registry, &run.topic],
        &list,
        &run.file,
    )
    .iter()
    .map(|v| {
        (
            v["requestId"].as_str().unwrap().to_string(),
            v["partition"].as_i64().unwrap() as i32,
            v["offset"].as_i64().unwrap(),
        )
    })
    .collect()
}

/// Asks through the gateway with our own request id (the Idempotency-Key).
async fn ask(gw: &Gateway, request: &str, coupon: &str, user: &str) {
    let (status, body) = gw
        .post(
            &format!("/coupons/{coupon}/issue"),
            &[("idempotency-key", request)],
            json!({ "userId": user }),
        )
        .await;
    assert_eq!(status, 202, "{request}: {body}");
    assert_eq!(body["requestId"], request, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sale_half_through_a_default_partitioned_python_producer_keeps_one_book_per_coupon() {
    // Fail before anything starts when there is no Python to be the stranger.
    python();
    let fx = Fixture::new("misrouted").await;
    let issue_topic = fx.topic(CouponCommand::TOPIC);
    let result_topic = fx.topic(CouponDecision::TOPIC);
    let n = fx.partitions(&issue_topic);
    assert!(n > 1, "coupon-issue needs partitions to misroute to");
    let owner = |coupon: &str| partition_for(coupon.as_bytes(), n);

    // Coupons whose owners differ and are not partition 0, so misrouted
    // records land both before and after their owner in partition order.
    let mut coupons: Vec<String> = Vec::new();
    for salt in 0.. {
        let id = format!("{}c{salt}", fx.prefix);
        let p = owner(&id);
        if p > 0 && coupons.iter().all(|c| owner(c) != p) {
            coupons.push(id);
        }
        if coupons.len() == COUPONS {
            break;
        }
    }
    eprintln!(
        "coupons and owners: {:?}",
        coupons.iter().map(|c| (c, owner(c))).collect::<Vec<_>>()
    );

    let _pipeline = fx.spawn_pipeline("0", &[]);
    let _pg = fx.spawn_sink("postgres", &[]);
    let _redis = fx.spawn_sink("redis", &[]);
    let gw = spawn_gateway(&fx, &[]).await;
    for c in &coupons {
        gw.create_coupon(c, STOCK).await;
    }
    // Requests only once every coupon exists (else: UNKNOWN_COUPON).
    let deadline = Instant::now() + Duration::from_secs(60);
    for c in &coupons {
        while gw.get(&format!("/coupons/{c}")).await.0 != 200 {
            assert!(Instant::now() < deadline, "{c} not created in 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The sale: user u asks for coupon u % 3, even users through the
    // gateway, odd users through Python. Every 10th user asks a second time
    // through the other channel (another request id: one unit per user), and
    // every 20th Python request is sent twice (same request id, no key the
    // second time: one decision per request). The first 60 users' Python
    // requests (10 per coupon) go first and are decided before the rest, so
    // forwarded copies are among the winners; everything else is sent
    // through both channels at once, interleaving in the log.
    let mut via_gateway: Vec<(String, String, String)> = Vec::new(); // (request, coupon, user)
    let mut first_wave: Vec<PyRecord> = Vec::new();
    let mut via_python: Vec<PyRecord> = Vec::new();
    let mut retries: Vec<PyRecord> = Vec::new();
    for u in 0..USERS {
        let c = u % COUPONS;
        let (coupon, user) = (coupons[c].clone(), format!("user-{u}"));
        if u % 2 == 0 {
            via_gateway.push((format!("{}gw-{u}", fx.prefix), coupon.clone(), user.clone()));
        } else {
            let kind = match (u / 2) % 5 {
                0 => KeyKind::None,
                1 => KeyKind::WrongCoupon,
                _ => KeyKind::CouponUser,
            };
            let key = match kind {
                KeyKind::CouponUser => Some(format!("{coupon}:{user}")),
                KeyKind::None => None,
                KeyKind::WrongCoupon => Some(coupons[(c + 1) % COUPONS].clone()),
            };
            let r = PyRecord {
                request: format!("{}py-{u}", fx.prefix),
                coupon: coupon.clone(),
                user: user.clone(),
                key,
                kind,
            };
            if u % 20 == 1 {
                retries.push(PyRecord {
                    key: None,
                    kind: KeyKind::None,
                    ..r.clone()
                });
            }
            if u < 60 {
                first_wave.push(r);
            } else {
                via_python.push(r);
            }
        }
        if u % 10 == 0 {
            via_python.push(PyRecord {
                request: format!("{}py2-{u}", fx.prefix),
                coupon: coupon.clone(),
                user: user.clone(),
                key: Some(format!("{coupon}:{user}")),
                kind: KeyKind::CouponUser,
            });
        }
        if u % 10 == 5 {
            via_gateway.push((format!("{}gw2-{u}", fx.prefix), coupon, user));
        }
    }
    via_python.extend(retries);

    let run = |wave: &str| PythonRun {
        bootstrap: fx.settings.kafka.bootstrap_servers.clone(),
        registry: fx.settings.registry.url.clone(),
        topic: issue_topic.clone(),
        file: fx.logs.join(format!("python-requests-{wave}.json")),
    };
    let (first_run, second_run) = (run("first"), run("second"));
    let records = first_wave.clone();
    let mut deliveries =
        tokio::task::spawn_blocking(move || produce_with_python(&first_run, &records))
            .await
            .expect("python producer task");
    for r in &first_wave {
        gw.decision(&r.request, Duration::from_secs(60)).await;
    }
    let records = via_python.clone();
    let python_task =
        tokio::task::spawn_blocking(move || produce_with_python(&second_run, &records));
    futures::stream::iter(&via_gateway)
        .for_each_concurrent(16, |(r, c, u)| ask(&gw, r, c, u))
        .await;
    deliveries.extend(python_task.await.expect("python producer task"));
    via_python.splice(0..0, first_wave);
    assert_eq!(
        deliveries.len(),
        via_python.len(),
        "every Python record delivered"
    );

    // Every request id has been sent; expect one decision each plus the creates.
    let mut requests: BTreeMap<String, (String, String)> = BTreeMap::new(); // id → (coupon, user)
    for (r, c, u) in &via_gateway {
        requests.insert(r.clone(), (c.clone(), u.clone()));
    }
    for r in &via_python {
        requests.insert(r.request.clone(), (r.coupon.clone(), r.user.clone()));
    }
    let want = requests.len() + COUPONS;
    let raw = fx.read_raw(&result_topic, want, Duration::from_secs(90));
    let mut decided: Vec<(i32, CouponDecision)> = Vec::with_capacity(raw.len());
    for (p, _, bytes) in &raw {
        decided.push((*p, fx.results.decode(Some(bytes)).await.unwrap()));
    }
    let issue_log = read_all(&fx, &issue_topic);
    let at: HashMap<(i32, i64), &Rec> = issue_log
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let mut command_at: HashMap<(i32, i64), CouponCommand> = HashMap::new();
    for r in &issue_log {
        let c = fx.commands.decode(Some(&r.payload)).await.unwrap();
        command_at.insert((r.partition, r.offset), c);
    }

    // A. The stranger's records really landed off their owner: for every
    //    kind of key, on partitions before and after the owner.
    let kind_of: HashMap<&str, KeyKind> = via_python
        .iter()
        .map(|r| (r.request.as_str(), r.kind))
        .collect();
    let mut misrouted: BTreeSet<(i32, i64)> = BTreeSet::new();
    let mut misrouted_kinds: BTreeMap<KeyKind, usize> = BTreeMap::new();
    let mut misrouted_coupons: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut before, mut after) = (0, 0);
    let mut python_positions: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for (request, p, o) in &deliveries {
        let c = command_at
            .get(&(*p, *o))
            .unwrap_or_else(|| panic!("{request}: delivered at {p}:{o}, not in coupon-issue"));
        assert_eq!(&c.request_id, request, "record at {p}:{o}");
        let rec = at[&(*p, *o)];
        assert!(rec.forwarded_from().is_none());
        assert!(
            rec.headers.iter().any(|(k, _)| k == "x-sender"),
            "the stranger's headers arrived: {:?}",
            rec.headers
        );
        if let Some(key) = &rec.key {
            assert_eq!(
                *p,
                librdkafka_default_partition(key, n),
                "{request}: placed by librdkafka's default partitioner (CRC32 of the key)"
            );
        }
        python_positions.entry(request).or_default().push((*p, *o));
        let home = owner(&c.coupon_id);
        if *p != home {
            misrouted.insert((*p, *o));
            *misrouted_kinds
                .entry(kind_of[request.as_str()])
                .or_default() += 1;
            *misrouted_coupons.entry(&c.coupon_id).or_default() += 1;
            if *p < home {
                before += 1;
            } else {
                after += 1;
            }
        }
    }
    let python_ids = python_positions.len();
    eprintln!(
        "python: {} records ({python_ids} request ids, {} resent), {} off their owner \
         ({before} before it, {after} after it), by key {misrouted_kinds:?}, by coupon {misrouted_coupons:?}",
        deliveries.len(),
        deliveries.len() - python_ids,
        misrouted.len()
    );
    for kind in [KeyKind::CouponUser, KeyKind::None, KeyKind::WrongCoupon] {
        assert!(
            misrouted_kinds.get(&kind).copied().unwrap_or(0) > 0,
            "no {kind:?} record landed off its owner: the test proves nothing for it"
        );
    }
    assert_eq!(
        misrouted_coupons.len(),
        COUPONS,
        "every coupon has misrouted records"
    );
    assert!(
        before > 0 && after > 0,
        "misrouted records before ({before}) and after ({after}) their owner"
    );

    // B. Each misrouted record has exactly one copy, on its owner, the same
    //    bytes, key and headers plus where it came from; nothing else is
    //    copied, and nothing but the stranger's records sits off its owner.
    let mut copied: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut off_owner: BTreeSet<(i32, i64)> = BTreeSet::new();
    for r in &issue_log {
        let c = &command_at[&(r.partition, r.offset)];
        match r.forwarded_from() {
            Some(from) => {
                let original = at.get(&from).unwrap_or_else(|| {
                    panic!(
                        "copy at {}:{} names {from:?}, not in the log",
                        r.partition, r.offset
                    )
                });
                assert_eq!(
                    r.partition,
                    owner(&c.coupon_id),
                    "a copy lands on the owner"
                );
                assert_eq!(r.payload, original.payload, "a copy has the original bytes");
                assert_eq!(r.key, original.key, "a copy has the original key");
                assert_eq!(
                    r.other_headers(),
                    original.headers,
                    "a copy keeps the original headers"
                );
                assert!(
                    r.timestamp.is_some() && r.timestamp == original.timestamp,
                    "a copy keeps the original CreateTime: {:?} vs {:?}",
                    r.timestamp,
                    original.timestamp
                );
                *copied.entry(from).or_default() += 1;
            }
            None if r.partition != owner(&c.coupon_id) => {
                off_owner.insert((r.partition, r.offset));
            }
            None => {}
        }
    }
    assert_eq!(
        off_owner, misrouted,
        "only the Python records sit off their owner"
    );
    assert_eq!(
        copied.keys().copied().collect::<BTreeSet<_>>(),
        misrouted,
        "exactly the misrouted records are forwarded"
    );
    let twice: Vec<_> = copied.iter().filter(|(_, k)| **k != 1).collect();
    assert!(twice.is_empty(), "forwarded more than once: {twice:?}");

    // C. The pipeline counts what it forwarded (one instance, nothing aborted).
    let addr = common::metrics_address(&fx.logs.join("pipeline-0.log"));
    let (status, body) = common::http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    let forwarded = common::metric(&body, "surge_pipeline_forwarded_records_total");
    eprintln!("surge_pipeline_forwarded_records_total = {forwarded}");
    assert!(forwarded > 0.0, "forwarded counter: {forwarded}");
    assert_eq!(
        forwarded as usize,
        misrouted.len(),
        "the counter is the number of misrouted records"
    );

    // D. One decision per request id, each taken on its coupon's owner
    //    partition, about the record that sits there.
    let mut per_request: HashMap<&str, usize> = HashMap::new();
    for (_, d) in &decided {
        *per_request.entry(d.request_id.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = per_request.iter().filter(|(_, k)| **k > 1).collect();
    assert!(doubled.is_empty(), "more than one decision: {doubled:?}");
    let missing: Vec<_> = requests
        .keys()
        .filter(|r| !per_request.contains_key(r.as_str()))
        .collect();
    assert!(missing.is_empty(), "no decision: {missing:?}");
    assert_eq!(
        decided.len(),
        want,
        "the requests and the creates, nothing else"
    );
    let mut issued: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    let mut by_user: HashMap<(&str, &str), Vec<&CouponDecision>> = HashMap::new();
    for (result_partition, d) in &decided {
        let home = owner(&d.coupon_id);
        assert_eq!(
            *result_partition, home,
            "{}: coupon-result partition",
            d.request_id
        );
        assert_eq!(
            d.source_partition, home,
            "{}: decided off its owner",
            d.request_id
        );
        let source = &command_at[&(d.source_partition, d.source_offset)];
        assert_eq!(
            source.request_id, d.request_id,
            "a decision names its record"
        );
        if let Some(positions) = python_positions.get(d.request_id.as_str()) {
            if positions.iter().all(|p| misrouted.contains(p)) {
                let from = at[&(d.source_partition, d.source_offset)].forwarded_from();
                assert!(
                    from.is_some_and(|f| positions.contains(&f)),
                    "{}: decided from a copy of its own record ({from:?})",
                    d.request_id
                );
            }
        }
        if let CouponAction::Issue { user_id } = &source.command {
            assert_eq!(d.user_id.as_deref(), Some(user_id.as_str()));
            assert_eq!(
                requests[&d.request_id],
                (d.coupon_id.clone(), user_id.clone()),
                "a decision is about the coupon in the value, never the key's"
            );
            by_user
                .entry((d.coupon_id.as_str(), user_id.as_str()))
                .or_default()
                .push(d);
        }
        if d.outcome == Outcome::Issued {
            issued
                .entry(d.coupon_id.as_str())
                .or_default()
                .push((d.sequence.unwrap(), d.user_id.as_deref().unwrap()));
        }
    }

    // E. Per coupon: exactly the stock (100 distinct users asked for 20),
    //    sequences 1..=20, one unit per user, and the units went to the
    //    first distinct users in the owner partition's log order.
    for coupon in &coupons {
        let mut got = issued.remove(coupon.as_str()).unwrap_or_default();
        got.sort();
        assert_eq!(got.len() as i64, STOCK, "{coupon}: ISSUED = stock");
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=STOCK).collect::<Vec<_>>(),
            "{coupon}: one book, sequences 1..=stock"
        );
        let holders: HashSet<&str> = got.iter().map(|(_, u)| *u).collect();
        assert_eq!(holders.len() as i64, STOCK, "{coupon}: one unit per user");
        let home = owner(coupon);
        let mut seen = HashSet::new();
        let mut asked = Vec::new();
        for r in issue_log.iter().filter(|r| r.partition == home) {
            let c = &command_at[&(r.partition, r.offset)];
            if &c.coupon_id != coupon || !seen.insert(c.request_id.as_str()) {
                continue;
            }
            if let CouponAction::Issue { user_id } = &c.command {
                if !asked.contains(&user_id.as_str()) {
                    asked.push(user_id.as_str());
                }
            }
        }
        assert!(asked.len() as i64 >= STOCK);
        assert_eq!(
            got.iter().map(|(_, u)| *u).collect::<Vec<_>>(),
            asked[..STOCK as usize].to_vec(),
            "{coupon}: first come first served in the owner partition's order"
        );
    }
    assert!(issued.is_empty(), "ISSUED for unknown coupons: {issued:?}");
    // Winners decided from a copy whose original sits on a partition before
    // the owner: a replay of coupon-issue in (partition, offset) order meets
    // the original first, so only ordering by where a record was decided
    // gets FCFS right for these.
    let (mut copied_winners, mut copied_winners_from_before) = (0, 0);
    for (_, d) in decided.iter().filter(|(_, d)| d.outcome == Outcome::Issued) {
        if let Some((p, _)) = at[&(d.source_partition, d.source_offset)].forwarded_from() {
            copied_winners += 1;
            if p < d.source_partition {
                copied_winners_from_before += 1;
            }
        }
    }
    eprintln!(
        "ISSUED from forwarded copies: {copied_winners} of {}, {copied_winners_from_before} of them \
         copies of a record on a partition before the owner",
        STOCK * COUPONS as i64
    );
    assert!(
        copied_winners_from_before > 0,
        "no unit went to a copy of a record before its owner: FCFS by decided order is untested"
    );
    let mut asked_twice = 0;
    for ((coupon, user), ds) in &by_user {
        let units = ds.iter().filter(|d| d.outcome == Outcome::Issued).count();
        assert!(units <= 1, "{coupon}/{user}: {units} units");
        if ds.len() > 1 {
            asked_twice += 1;
            if units == 1 {
                assert!(
                    ds.iter()
                        .all(|d| d.outcome == Outcome::Issued || d.outcome == Outcome::Duplicate),
                    "{coupon}/{user}: the other request is a DUPLICATE: {ds:?}"
                );
            }
        }
    }
    assert_eq!(
        asked_twice,
        USERS / 5,
        "users who asked through both channels"
    );

    // The audit `surge verify` runs, on the same data.
    let log: Vec<(i32, i64, CouponCommand)> = issue_log
        .iter()
        .map(|r| {
            (
                r.partition,
                r.offset,
                command_at[&(r.partition, r.offset)].clone(),
            )
        })
        .collect();
    let decisions: Vec<CouponDecision> = decided.iter().map(|(_, d)| d.clone()).collect();
    let violations = check_invariants(&log, &decisions);
    assert!(violations.is_empty(), "{violations:#?}");

    // The gateway's reads agree, also for a request it never saw.
    for coupon in &coupons {
        let (status, c) = gw.get(&format!("/coupons/{coupon}")).await;
        assert_eq!(status, 200);
        assert_eq!(
            (
                c["stock"].as_i64(),
                c["issued"].as_i64(),
                c["remaining"].as_i64()
            ),
            (Some(STOCK), Some(STOCK), Some(0)),
            "{c}"
        );
    }
    let stranger = deliveries
        .iter()
        .find(|(_, p, o)| misrouted.contains(&(*p, *o)))
        .map(|(r, _, _)| r.clone())
        .unwrap();
    let d = gw.decision(&stranger, Duration::from_secs(60)).await;
    assert_eq!(d["couponId"], requests[&stranger].0.as_str(), "{d}");

    // F. The product's own check: invariants hold, both stores equal the topic.
    let out = surge(
        &["verify", "--coupons", &fx.prefix, "--wait", "60"],
        &[
            ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
            ("SURGE_REDIS__KEYSPACE", fx.prefix.trim_end_matches('-')),
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("verify: OK")
            && text.contains(&format!("ISSUED          {}", STOCK * COUPONS as i64))
            && text.contains("postgres and redis equal to the topic"),
        "{text}"
    );
}

/// `surge verify` started while misrouted records wait for the pipeline
/// (as `surge chaos` runs it right after a load): it reads coupon-issue
/// before any copy exists, waits for the decisions, and must replay FCFS
/// with the copies forwarded meanwhile, where they were decided. Every unit
/// here goes to a forwarded copy, so a replay without them expects none.
#[tokio::test(flavor = "multi_thread")]
async fn verify_counts_the_copies_forwarded_while_it_waits() {
    python();
    let fx = Fixture::new("misrouted-verify").await;
    let topic = fx.topic(CouponCommand::TOPIC);
    let n = fx.partitions(&topic);
    let coupon = format!("{}late", fx.prefix);
    let home = partition_for(coupon.as_bytes(), n);
    fx.produce(&[common::coupon::create(&coupon, 3)]).await;
    // Keys `couponId:userId` that CRC32 puts off the owner: all misrouted.
    let records: Vec<PyRecord> = (0..)
        .map(|u| PyRecord {
            request: format!("{}py-{u}", fx.prefix),
            coupon: coupon.clone(),
            user: format!("user-{u}"),
            key: Some(format!("{coupon}:user-{u}")),
            kind: KeyKind::CouponUser,
        })
        .filter(|r| librdkafka_default_partition(r.key.as_deref().unwrap().as_bytes(), n) != home)
        .take(12)
        .collect();
    let run = PythonRun {
        bootstrap: fx.settings.kafka.bootstrap_servers.clone(),
        registry: fx.settings.registry.url.clone(),
        topic: topic.clone(),
        file: fx.logs.join("python-requests.json"),
    };
    let sent = records.clone();
    let deliveries = tokio::task::spawn_blocking(move || produce_with_python(&run, &sent))
        .await
        .unwrap();
    assert_eq!(deliveries.len(), records.len());
    assert!(
        deliveries.iter().all(|(_, p, _)| *p != home),
        "{deliveries:?}"
    );

    // verify first: it reads the log (no copies yet) and waits; then the pipeline.
    let log = fx.logs.join("verify.log");
    let mut verify = fx.spawn(
        "verify",
        &[
            "verify",
            "--coupons",
            &fx.prefix,
            "--wait",
            "90",
            "--no-stores",
        ],
        &[],
    );
    common::wait_for_log(&log, "[verify] waiting", Duration::from_secs(60));
    let _pipeline = fx.spawn_pipeline("0", &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = verify.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "verify did not finish");
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("--- verify.log\n{text}");
    assert!(status.success(), "{text}");
    assert!(
        text.contains("12 more records of those requests (forwarded copies)")
            && text.contains("ISSUED          3")
            && text.contains("verify: OK"),
        "{text}"
    );
}
