//! `surge dlq list|replay` on the real stack, the "after a fix" story end to
//! end with the coupon pipeline:
//!
//! - two records that can never decode (truncated, bad magic byte) and one
//!   written by a newer upstream writer whose schema (v2 of CouponCommand,
//!   one more optional field) was not registered yet: all three are
//!   dead-lettered, and `list` shows reason and provenance;
//! - the v2 schema is registered (the fix);
//! - a replay is stopped by a test hook with its transaction open (its records
//!   acknowledged by the broker), and a second replay fences it and replays
//!   everything; a third replays nothing. coupon-issue holds each dead
//!   letter's bytes exactly once more (read_committed), on its source
//!   partition with the original key and headers and `surge.dlq.replay-of`,
//!   while the fenced replay's copies exist only as aborted records;
//! - the restarted pipeline decides the late record and dead-letters the two
//!   hopeless ones again, as new dead letters naming the ones they replay.
//!
//! And `replay --offsets` on five dead letters: it replays exactly the two it
//! names, once each, to their source partitions (the other three not at
//! all); the same command again replays and writes nothing; a selection
//! overlapping a replayed letter replays only the new one.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use common::coupon::{create, issue, signal, Fixture};
use common::dlq::{read_all, wait_for, Raw};
use common::{stderr, stdout, surge, wait_for_log};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use surge_core::names::COUPON;
use surge_schemas::coupon::{CouponCommand, Outcome};
use surge_schemas::{Contract, Registry};

const REPLAY_OF: &str = "surge.dlq.replay-of";

/// CouponCommand with one more optional field (a compatible v2), whose
/// `doc` makes its content new to the registry (a new schema id).
fn v2_schema(tag: &str) -> String {
    let mut schema: serde_json::Value = serde_json::from_str(CouponCommand::SCHEMA_JSON).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "channel",
            "type": ["null", "string"],
            "default": null,
            "doc": format!("Where the request came from (test {tag})."),
        }));
    schema.to_string()
}

/// `cmd` as the v2 writer frames it, under schema id `id`.
fn v2_bytes(schema: &str, id: u32, cmd: &CouponCommand) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    let mut value = cmd.to_avro();
    let Value::Record(fields) = &mut value else {
        panic!("a record")
    };
    fields.push((
        "channel".into(),
        Value::Union(1, Box::new(Value::String("app".into()))),
    ));
    let body = GenericDatumWriter::builder(&schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .unwrap();
    surge_schemas::wire::frame(id, &body)
}

async fn send(producer: &FutureProducer, topic: &str, bytes: &[u8], trace: &str) {
    send_keyed(producer, topic, "c1", bytes, trace).await
}

async fn send_keyed(producer: &FutureProducer, topic: &str, key: &str, bytes: &[u8], trace: &str) {
    let record =
        FutureRecord::to(topic)
            .key(key)
            .payload(bytes)
            .headers(OwnedHeaders::new().insert(Header {
                key: "trace",
                value: Some(trace),
            }));
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// The line of `list` for the dead letter at `offset`.
fn line_of<'a>(text: &'a str, dlq: &str, offset: i64) -> &'a str {
    let start = format!("{dlq}/0/{offset} ");
    text.lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no line for {start:?} in:\n{text}"))
}

fn source_of(letter: &Raw) -> String {
    format!(
        "{}/{}/{}",
        letter.header("surge.dlq.source.topic").unwrap(),
        letter.header("surge.dlq.source.partition").unwrap(),
        letter.header("surge.dlq.source.offset").unwrap()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_listed_and_replayed_exactly_once_after_the_fix() {
    let fx = Fixture::new("dlq-cli").await;
    let env = [("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str())];
    let dlq = fx.names.dlq(COUPON);
    let source = fx.topic(CouponCommand::TOPIC);
    let registry = Registry::new(&fx.settings.registry.url);
    let mut cfg = fx.factory.base("test-producer");
    cfg.set("partitioner", "murmur2_random");
    let producer: FutureProducer = cfg.create().unwrap();

    fx.produce(&[create("c1", 10)]).await;
    let good = fx.commands.encode(&issue("probe", "c1", "u0")).unwrap();
    let hopeless: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..3].to_vec()),
        ("bad_magic", [&[9u8][..], &good[1..]].concat()),
    ];
    for (reason, bytes) in &hopeless {
        send(&producer, &source, bytes, reason).await;
    }
    let mut pipeline = fx.spawn_pipeline("0", &[]);
    assert_eq!(fx.decisions(1, Duration::from_secs(90)).await.len(), 1);
    wait_for(&fx.factory, &dlq, Duration::from_secs(60), |r| r.len() == 2);

    // A v2 record written before v2 is registered: its schema id is the
    // registry's next one. Ids are global, so another process registering
    // something new in between takes it; then try again with a new record.
    let mut late: Option<(String, Vec<u8>)> = None;
    for attempt in 0..5 {
        let probe = format!(
            r#"{{"type":"record","name":"P{}","fields":[]}}"#,
            uuid::Uuid::new_v4().simple()
        );
        let taken = registry
            .register(&format!("{}probe-{attempt}-value", fx.prefix), &probe)
            .await
            .unwrap();
        let v2 = v2_schema(&format!("{}{attempt}", fx.prefix));
        let request = format!("late-{attempt}");
        let bytes = v2_bytes(
            &v2,
            taken + 1,
            &issue(&request, "c1", &format!("u-late-{attempt}")),
        );
        send(&producer, &source, &bytes, "late").await;
        let letters = wait_for(&fx.factory, &dlq, Duration::from_secs(60), |r| {
            r.iter().any(|l| l.payload == bytes)
        });
        let letter = letters.iter().find(|l| l.payload == bytes).unwrap();
        if letter.header("surge.dlq.reason") != Some("unknown_schema_id") {
            continue; // the id was someone else's by the time the pipeline read it
        }
        // The fix: the upstream team registers its schema.
        let id = registry
            .register(&fx.names.subject(CouponCommand::TOPIC), &v2)
            .await
            .unwrap();
        if id == taken + 1 {
            late = Some((request, bytes));
            break;
        }
    }
    let (late_request, late_bytes) =
        late.expect("a late-schema record dead-lettered, then its schema registered under its id");
    signal(&pipeline, "TERM");
    assert!(pipeline.wait().unwrap().success());

    let letters = read_all(&fx.factory, &dlq, true);
    let n = letters.len();
    assert!(n >= 3, "{letters:#?}");
    let late_letter = letters.iter().find(|l| l.payload == late_bytes).unwrap();

    // ---- list: reason, provenance, not replayed; counts by reason.
    let out = surge(&["dlq", "list", "--pipeline", "coupon"], &env);
    assert!(out.status.success());
    let text = stdout(&out);
    for l in &letters {
        let line = line_of(&text, &dlq, l.offset);
        let reason = l.header("surge.dlq.reason").unwrap();
        for part in [
            " pipeline=coupon ".to_string(),
            format!(" reason={reason} "),
            format!(" source={} ", source_of(l)),
            " key=\"c1\" ".to_string(),
            format!(" bytes={} ", l.payload.len()),
            " replayed=no ".to_string(),
        ] {
            assert!(line.contains(&part), "{part:?} missing from {line}");
        }
        assert!(source_of(l).starts_with(&format!("{source}/")));
        assert!(!line.contains("replay-of="), "{line}");
        let message = l.header("surge.dlq.message").unwrap();
        assert!(!message.is_empty());
        assert!(line.ends_with(&format!("message={message:?}")), "{line}");
    }
    for (reason, bytes) in &hopeless {
        let l = letters.iter().find(|l| &l.payload == bytes).unwrap();
        assert_eq!(l.header("surge.dlq.reason"), Some(*reason));
    }
    let summary = text.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!(
            "{n} dead letter(s), 0 replayed, {n} shown; by reason: "
        )),
        "{summary}"
    );
    assert!(
        summary.contains("bad_magic 1") && summary.contains("truncated 1"),
        "{summary}"
    );
    assert!(summary.contains("unknown_schema_id "), "{summary}");
    assert_eq!(
        text.lines().count(),
        n + 1,
        "one line per dead letter and the summary"
    );

    let out = surge(&["dlq", "list", "--pipeline", "coupon", "--json"], &env);
    assert!(out.status.success());
    let json: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), n, "stdout is only the dead letters");
    assert!(stderr(&out).contains(&format!("{n} dead letter(s)")));
    for (j, l) in json.iter().zip(&letters) {
        assert_eq!(j["coordinates"], format!("{dlq}/0/{}", l.offset));
        assert_eq!(j["reason"], l.header("surge.dlq.reason").unwrap());
        assert_eq!(j["pipeline"], "coupon");
        assert_eq!(j["source"]["topic"], source);
        assert_eq!(
            j["source"]["partition"].to_string(),
            l.header("surge.dlq.source.partition").unwrap()
        );
        assert_eq!(
            j["source"]["offset"].to_string(),
            l.header("surge.dlq.source.offset").unwrap()
        );
        assert_eq!(j["headers"]["trace"], l.header("trace").unwrap());
        assert!(j["headers"].get("surge.dlq.reason").is_none(), "{j}");
        assert_eq!(j["replayed"], false);
    }

    let out = surge(
        &[
            "dlq",
            "list",
            "--pipeline",
            "coupon",
            "--reason",
            "truncated",
        ],
        &env,
    );
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().next().unwrap().contains(" reason=truncated "));
    assert!(
        text.contains("1 dead letter(s) with reason truncated"),
        "{text}"
    );

    let out = surge(
        &["dlq", "list", "--pipeline", "coupon", "--limit", "1"],
        &env,
    );
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "{text}");
    line_of(&text, &dlq, letters.last().unwrap().offset);
    assert!(text.contains(&format!("{n} dead letter(s), 0 replayed, 1 shown")));

    // ---- bad arguments: a clear message, non-zero, nothing written.
    let out = surge(&["dlq", "list", "--pipeline", "nope"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid value 'nope' for '--pipeline"));
    let out = surge(
        &["dlq", "replay", "--pipeline", "coupon", "--offsets", "0:x"],
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("expected PARTITION:OFFSET"));
    let out = surge(&["dlq", "replay", "--offsets", "0:0"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--offsets needs --pipeline"));
    let out = surge(&["dlq", "replay", "--pipeline", "coupon"], &env);
    assert_eq!(out.status.code(), Some(2));
    let missing = format!("0:{}", letters.last().unwrap().offset + 1000);
    let out = surge(
        &[
            "dlq",
            "replay",
            "--pipeline",
            "coupon",
            "--offsets",
            &format!("0:{},{missing}", letters[0].offset),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("no dead letter at {missing}")),
        "{}",
        stderr(&out)
    );
    let out = surge(
        &[
            "dlq",
            "list",
            "--topic",
            &format!("{}no-such-dlq", fx.prefix),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"));

    // ---- a dry run says what it would do and writes nothing (checked below).
    let out = surge(
        &[
            "dlq",
            "replay",
            "--pipeline",
            "coupon",
            "--all",
            "--dry-run",
        ],
        &env,
    );
    assert!(out.status.success());
    let text = stdout(&out);
    for l in &letters {
        assert!(
            text.contains(&format!("would replay {dlq}/0/{} -> ", l.offset)),
            "{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "{dlq}: would replay {n}, skipped 0 already replayed"
        )),
        "{text}"
    );

    // ---- a replay held with its transaction open, then fenced by a second one.
    let held_log = fx.logs.join("replay-held.log");
    let mut held = fx.spawn(
        "replay-held",
        &["dlq", "replay", "--pipeline", "coupon", "--all"],
        &[("SURGE_TEST_DLQ_REPLAY_HOLD", "before_commit")],
    );
    wait_for_log(
        &held_log,
        "holding the transaction open",
        Duration::from_secs(60),
    );
    let out = surge(&["dlq", "replay", "--pipeline", "coupon", "--all"], &env);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{dlq}: replayed {n}, skipped 0 already replayed")),
        "{text}"
    );
    signal(&held, "KILL");
    let _ = held.wait();

    let out = surge(&["dlq", "replay", "--pipeline", "coupon", "--all"], &env);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{dlq}: replayed 0, skipped {n} already replayed")),
        "{text}"
    );
    assert!(
        !text.contains("\nreplayed ") && !text.starts_with("replayed "),
        "{text}"
    );

    // ---- coupon-issue: each dead letter's record exactly once more.
    let committed = read_all(&fx.factory, &source, true);
    let uncommitted = read_all(&fx.factory, &source, false);
    for l in &letters {
        let of = format!("{dlq}/0/{}", l.offset);
        let copies: Vec<&Raw> = committed
            .iter()
            .filter(|r| r.payload == l.payload)
            .collect();
        assert_eq!(
            copies.len(),
            2,
            "{of}: the original and one replay: {copies:#?}"
        );
        let replays: Vec<&Raw> = copies
            .iter()
            .copied()
            .filter(|r| r.header(REPLAY_OF) == Some(of.as_str()))
            .collect();
        assert_eq!(replays.len(), 1, "{of}: {copies:#?}");
        let r = replays[0];
        assert_eq!(
            r.partition.to_string(),
            l.header("surge.dlq.source.partition").unwrap(),
            "{of}: back on its source partition"
        );
        assert_eq!(r.key.as_deref(), Some(&b"c1"[..]));
        assert_eq!(
            r.header("trace"),
            l.header("trace"),
            "original headers kept"
        );
        assert_eq!(r.headers_named(REPLAY_OF).len(), 1);
        assert!(
            r.headers
                .iter()
                .all(|(k, _)| !k.starts_with("surge.dlq.") || k == REPLAY_OF),
            "{of}: no dead-letter headers on the replay: {:?}",
            r.headers
        );
        let attempts = uncommitted
            .iter()
            .filter(|r| r.header(REPLAY_OF) == Some(of.as_str()))
            .count();
        assert_eq!(
            attempts, 2,
            "{of}: the held replay's copy reached the broker but was aborted"
        );
    }

    // ---- list shows where each one went.
    let out = surge(&["dlq", "list", "--pipeline", "coupon"], &env);
    let text = stdout(&out);
    for l in &letters {
        let of = format!("{dlq}/0/{}", l.offset);
        let r = committed
            .iter()
            .find(|r| r.header(REPLAY_OF) == Some(of.as_str()))
            .unwrap();
        let line = line_of(&text, &dlq, l.offset);
        assert!(
            line.contains(&format!(" replayed={source}/{}/{}@", r.partition, r.offset)),
            "{line}"
        );
    }
    assert!(
        text.contains(&format!("{n} dead letter(s), {n} replayed")),
        "{text}"
    );

    // ---- the pipeline decides the fixed one and dead-letters the others again.
    let mut pipeline = fx.spawn_pipeline("0", &[]);
    let after = wait_for(&fx.factory, &dlq, Duration::from_secs(90), |r| {
        r.len() >= 2 * n - 1
    });
    let decisions = fx.decisions(2, Duration::from_secs(60)).await;
    signal(&pipeline, "TERM");
    assert!(pipeline.wait().unwrap().success());
    let late_decisions: Vec<_> = decisions
        .iter()
        .filter(|d| d.request_id == late_request)
        .collect();
    assert_eq!(late_decisions.len(), 1, "{decisions:#?}");
    assert_eq!(late_decisions[0].outcome, Outcome::Issued);
    let after = if after.len() == 2 * n - 1 {
        after
    } else {
        panic!("more dead letters than expected: {after:#?}")
    };
    let new: Vec<&Raw> = after.iter().skip(n).collect();
    let replayed_again: HashSet<String> = new
        .iter()
        .map(|r| {
            r.header(REPLAY_OF)
                .expect("a re-dead-lettered replay names its letter")
                .to_string()
        })
        .collect();
    let expected: HashSet<String> = letters
        .iter()
        .filter(|l| l.offset != late_letter.offset)
        .map(|l| format!("{dlq}/0/{}", l.offset))
        .collect();
    assert_eq!(
        replayed_again, expected,
        "all but the fixed one failed again"
    );
    let out = surge(&["dlq", "list", "--pipeline", "coupon", "--json"], &env);
    let json: BTreeMap<i64, serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|j| (j["offset"].as_i64().unwrap(), j))
        .collect();
    assert_eq!(json.len(), 2 * n - 1);
    for r in &new {
        let j = &json[&r.offset];
        assert_eq!(j["replayed"], false, "{j}");
        assert_eq!(j["replay_of"], r.header(REPLAY_OF).unwrap());
    }
    assert!(stderr(&out).contains(&format!("{} dead letter(s), {n} replayed", 2 * n - 1)));

    // Only the new dead letters are left to replay.
    let out = surge(
        &[
            "dlq",
            "replay",
            "--pipeline",
            "coupon",
            "--all",
            "--dry-run",
        ],
        &env,
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{dlq}: would replay {}, skipped {n} already replayed",
            n - 1
        )),
        "{text}"
    );
    for r in &new {
        assert!(
            text.contains(&format!("would replay {dlq}/0/{} -> ", r.offset)),
            "{text}"
        );
    }
}

/// `<partition>:<offset>` of a dead letter, as `--offsets` takes it.
fn coord_arg(letter: &Raw) -> String {
    format!("{}:{}", letter.partition, letter.offset)
}

/// `<dlq>/<partition>/<offset>` of a dead letter, as `replay-of` and the CLI name it.
fn coordinates(dlq: &str, letter: &Raw) -> String {
    format!("{dlq}/{}/{}", letter.partition, letter.offset)
}

/// The records of `on` (the source topic) that replay `of`.
fn replays_of<'a>(on: &'a [Raw], of: &str) -> Vec<&'a Raw> {
    on.iter()
        .filter(|r| r.header(REPLAY_OF) == Some(of))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_by_offsets_replays_exactly_the_chosen_dead_letters_once() {
    let fx = Fixture::new("dlq-offsets").await;
    let env = [("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str())];
    let dlq = fx.names.dlq(COUPON);
    let source = fx.topic(CouponCommand::TOPIC);
    let mut cfg = fx.factory.base("test-producer");
    cfg.set("partitioner", "murmur2_random");
    let producer: FutureProducer = cfg.create().unwrap();

    // Five records that can never decode, each with bytes of its own (so
    // each letter's copies on coupon-issue are told apart by payload) and a
    // key of its own (so they sit on different source partitions, and a
    // replay going back to the wrong one shows).
    let good = fx.commands.encode(&issue("probe", "c1", "u0")).unwrap();
    let bad: Vec<Vec<u8>> = vec![
        good[..2].to_vec(),
        good[..3].to_vec(),
        good[..4].to_vec(),
        [&[7u8][..], &good[1..]].concat(),
        [&[9u8][..], &good[1..]].concat(),
    ];
    for (i, bytes) in bad.iter().enumerate() {
        send_keyed(
            &producer,
            &source,
            &format!("k{i}"),
            bytes,
            &format!("t{i}"),
        )
        .await;
    }
    let mut pipeline = fx.spawn_pipeline("0", &[]);
    let letters = wait_for(&fx.factory, &dlq, Duration::from_secs(90), |r| {
        r.len() >= bad.len()
    });
    // Stopped before any replay: the replays stay on coupon-issue as written
    // (a running pipeline would dead-letter them again, which the other test covers).
    signal(&pipeline, "TERM");
    assert!(pipeline.wait().unwrap().success());
    assert_eq!(
        letters.len(),
        bad.len(),
        "one dead letter per record: {letters:#?}"
    );
    for bytes in &bad {
        assert_eq!(
            letters.iter().filter(|l| &l.payload == bytes).count(),
            1,
            "{letters:#?}"
        );
    }
    let originals = read_all(&fx.factory, &source, true);
    assert_eq!(originals.len(), bad.len(), "{originals:#?}");

    // Two of the five, not adjacent, named out of order and one twice: a
    // letter named twice is still one letter, replayed once.
    let chosen = [&letters[3], &letters[1]];
    let others = [&letters[0], &letters[2], &letters[4]];
    let offsets = format!(
        "{},{},{}",
        coord_arg(chosen[0]),
        coord_arg(chosen[1]),
        coord_arg(chosen[0])
    );
    let replay = [
        "dlq",
        "replay",
        "--pipeline",
        "coupon",
        "--offsets",
        &offsets,
    ];
    let out = surge(&replay, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{dlq}: replayed 2, skipped 0 already replayed")),
        "{text}"
    );
    for l in chosen {
        assert!(
            text.contains(&format!("replayed {} -> {source}/", coordinates(&dlq, l))),
            "{text}"
        );
    }
    for l in others {
        assert!(!text.contains(&coordinates(&dlq, l)), "{text}");
    }

    // coupon-issue, read_committed as the pipeline reads it: each chosen
    // letter once more, on its source partition with its key and headers;
    // the others not at all; nothing else.
    let committed = read_all(&fx.factory, &source, true);
    assert_eq!(committed.len(), bad.len() + chosen.len(), "{committed:#?}");
    let mut replayed_to = BTreeMap::new();
    for l in chosen {
        let of = coordinates(&dlq, l);
        assert_eq!(
            committed.iter().filter(|r| r.payload == l.payload).count(),
            2,
            "{of}: the original and one replay: {committed:#?}"
        );
        let replays = replays_of(&committed, &of);
        assert_eq!(replays.len(), 1, "{of}: {committed:#?}");
        let r = replays[0];
        assert_eq!(r.payload, l.payload);
        assert_eq!(
            r.partition.to_string(),
            l.header("surge.dlq.source.partition").unwrap(),
            "{of}: back on its source partition"
        );
        assert_eq!(r.key, l.key, "{of}: its original key");
        assert_eq!(
            r.header("trace"),
            l.header("trace"),
            "{of}: its original headers"
        );
        replayed_to.insert(of, format!("{source}/{}/{}", r.partition, r.offset));
    }
    for l in others {
        let of = coordinates(&dlq, l);
        assert!(
            replays_of(&committed, &of).is_empty(),
            "{of}: {committed:#?}"
        );
        assert_eq!(
            committed.iter().filter(|r| r.payload == l.payload).count(),
            1,
            "{of}: only its original"
        );
    }
    // Exactly one committed marker per chosen letter, none for the others.
    let markers = read_all(&fx.factory, &format!("{dlq}-replayed"), true);
    let mut marked: Vec<String> = markers
        .iter()
        .map(|m| String::from_utf8_lossy(m.key.as_deref().unwrap()).into_owned())
        .collect();
    marked.sort();
    let mut want: Vec<String> = chosen
        .iter()
        .map(|l| format!("{}/{}", l.partition, l.offset))
        .collect();
    want.sort();
    assert_eq!(marked, want, "{markers:#?}");

    // list agrees: the chosen ones replayed to where they went, the others not.
    let out = surge(&["dlq", "list", "--pipeline", "coupon", "--json"], &env);
    assert!(out.status.success());
    let json: BTreeMap<String, serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|j| (j["coordinates"].as_str().unwrap().to_string(), j))
        .collect();
    assert_eq!(json.len(), bad.len());
    for (of, to) in &replayed_to {
        assert_eq!(json[of]["replayed"], true, "{}", json[of]);
        assert_eq!(json[of]["replayed_to"], to.as_str(), "{}", json[of]);
    }
    for l in others {
        let j = &json[&coordinates(&dlq, l)];
        assert_eq!(j["replayed"], false, "{j}");
    }
    assert!(stderr(&out).contains(&format!("{} dead letter(s), 2 replayed", bad.len())));

    // The same command again (README: rerunning is always safe) replays
    // nothing: both are skipped, naming where they went, and nothing at all
    // is written to coupon-issue, not even an aborted attempt.
    let uncommitted = read_all(&fx.factory, &source, false);
    let out = surge(&replay, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{dlq}: replayed 0, skipped 2 already replayed")),
        "{text}"
    );
    for (of, to) in &replayed_to {
        assert!(
            text.contains(&format!("skipped  {of}: already replayed as {to} at ")),
            "{text}"
        );
    }
    assert!(
        !text.contains("\nreplayed ") && !text.starts_with("replayed "),
        "{text}"
    );
    let again = read_all(&fx.factory, &source, true);
    assert_eq!(again.len(), committed.len(), "{again:#?}");
    assert_eq!(
        read_all(&fx.factory, &source, false).len(),
        uncommitted.len(),
        "the repeat wrote nothing to coupon-issue"
    );

    // A selection overlapping a replayed letter replays only the new one.
    let fresh = others[2];
    let offsets = format!("{},{}", coord_arg(chosen[1]), coord_arg(fresh));
    let out = surge(
        &[
            "dlq",
            "replay",
            "--pipeline",
            "coupon",
            "--offsets",
            &offsets,
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{dlq}: replayed 1, skipped 1 already replayed")),
        "{text}"
    );
    let last = read_all(&fx.factory, &source, true);
    assert_eq!(last.len(), committed.len() + 1, "{last:#?}");
    for l in chosen.iter().copied().chain([fresh]) {
        let of = coordinates(&dlq, l);
        assert_eq!(replays_of(&last, &of).len(), 1, "{of}: {last:#?}");
    }
    for l in &others[..2] {
        let of = coordinates(&dlq, l);
        assert!(replays_of(&last, &of).is_empty(), "{of}: {last:#?}");
    }
}
