//! A stranger's producer, and a topic read whole: shared by the misrouting
//! tests (misrouted_records, misrouted_orders).
//!
//! The stranger is a default-configured Python confluent-kafka producer
//! (librdkafka's default partitioner: CRC32 of the key, a random partition
//! for no key), run from a script under tests/interop over a JSON file of
//! records. The interpreter is `SURGE_PYTHON` (scripts/test sets it from
//! scripts/lib/ensure-python-interop), else `.stack/venv/bin/python`; without
//! a Python that imports confluent-kafka's Avro serializer a test FAILS.
//! Reading a topic whole gives every committed record with its key, headers
//! and CreateTime, so a test can compare forwarded copies with originals.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::coupon::Fixture;

/// The header the engine puts on a forwarded copy: "<partition>:<offset>" of the original.
pub const FORWARDED_FROM: &str = "surge.forwarded.from";

/// The Python interpreter with confluent-kafka's Avro serializer; panics
/// when there is none.
pub fn python() -> String {
    let python = std::env::var("SURGE_PYTHON").unwrap_or_else(|_| {
        let venv = super::repo_root().join(".stack/venv/bin/python");
        assert!(
            venv.exists(),
            "no Python with confluent-kafka: run scripts/test (it creates {} with \
             scripts/lib/ensure-python-interop) or set SURGE_PYTHON",
            venv.display()
        );
        venv.display().to_string()
    });
    let ok = Command::new(&python)
        .args([
            "-c",
            "import confluent_kafka.schema_registry.avro, fastavro",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} cannot import confluent_kafka's Avro serializer: run scripts/lib/ensure-python-interop"
    );
    python
}

/// One record of a topic, as a read_committed consumer sees it.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// CreateTime, ms.
    pub timestamp: Option<i64>,
}

impl Rec {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// (partition, offset) of the original when this is a forwarded copy.
    pub fn forwarded_from(&self) -> Option<(i32, i64)> {
        let text =
            std::str::from_utf8(self.header(FORWARDED_FROM)?).expect("forwarded.from is text");
        let (p, o) = text
            .split_once(':')
            .unwrap_or_else(|| panic!("bad {FORWARDED_FROM}: {text:?}"));
        Some((p.parse().expect("partition"), o.parse().expect("offset")))
    }

    /// Every header but [`FORWARDED_FROM`], in order.
    pub fn other_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.headers
            .iter()
            .filter(|(k, _)| k != FORWARDED_FROM)
            .cloned()
            .collect()
    }
}

/// Where librdkafka's default partitioner (`consistent_random`) puts a keyed
/// record: CRC32 of the key. librdkafka's own function, as the Python client
/// runs it.
pub fn librdkafka_default_partition(key: &[u8], partitions: i32) -> i32 {
    // SAFETY: a pure function of the key bytes; it reads neither the topic
    // handle nor the opaques (rdkafka_msg.c).
    unsafe {
        rdkafka::bindings::rd_kafka_msg_partitioner_consistent(
            std::ptr::null(),
            key.as_ptr() as *const std::ffi::c_void,
            key.len(),
            partitions,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

/// Every committed record of `topic` with its key and headers, up to the
/// end of each partition, sorted by (partition, offset).
pub fn read_all(fx: &Fixture, topic: &str) -> Vec<Rec> {
    let mut cfg = fx
        .factory
        .read_committed_consumer_config("test-reader", &super::unique("reader"));
    cfg.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = cfg.create().unwrap();
    let n = fx.partitions(topic);
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut at_end = HashSet::new();
    let mut out = Vec::new();
    while at_end.len() < n as usize {
        assert!(Instant::now() < deadline, "{topic}: no end in 60 s");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Rec {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                    timestamp: m.timestamp().to_millis(),
                });
            }
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// Runs `tests/interop/<script> ARGS... FILE` with [`python`] after writing
/// `records` to `file` as one JSON list; waits at most 120 s, panics unless
/// it exits 0, and returns the JSON object it printed per line (its
/// delivery reports, in delivery order).
pub fn run_python_producer(
    script: &str,
    args: &[&str],
    records: &[serde_json::Value],
    file: &Path,
) -> Vec<serde_json::Value> {
    let python = python();
    std::fs::write(file, serde_json::to_vec(records).unwrap()).unwrap();
    let mut child = Command::new(&python)
        .arg(super::repo_root().join("tests/interop").join(script))
        .args(args)
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {python}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the Python producer did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Python producer failed: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad JSON from python ({e}): {line} / {stderr}"))
        })
        .collect()
}
