//! Shared by the integration tests: the stack's settings, unique names so
//! tests never see each other's data, and a way to run the `surge` binary.
//! The services come from `scripts/stack up` (scripts/test does that).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub mod coupon;
pub mod dlq;
pub mod gateway;
pub mod orders;
pub mod payments;
pub mod stranger;

use surge_core::{Names, Settings};
use surge_schemas::{Contract, Registry, TopicCodec};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// config/surge.toml with the environment's overrides, as a surge process sees it.
pub fn settings() -> Settings {
    Settings::load(Some(&repo_root().join("config/surge.toml"))).expect("config/surge.toml loads")
}

/// The codec of `T` as surge's processes connect it with `settings`: under
/// the subject of the settings' topic prefix.
pub async fn codec<T: Contract>(settings: &Settings) -> TopicCodec<T> {
    let subject = Names::from_settings(settings).subject(T::TOPIC);
    TopicCodec::connect(&Registry::new(&settings.registry.url), &subject)
        .await
        .unwrap_or_else(|e| panic!("registry: {subject}: {e}"))
}

/// Creates `topic` (one partition: the records stay in order) and writes
/// `msgs` to it with surge's own codec, each under its contract key (the
/// interop tests' records for stock readers).
pub async fn produce_to_new_topic<T: Contract>(codec: &TopicCodec<T>, topic: &str, msgs: &[T]) {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let factory = surge_kafka::ClientFactory::new(settings().kafka.clone());
    factory
        .admin()
        .unwrap()
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let producer: FutureProducer = factory.idempotent_producer("interop-test").unwrap();
    for msg in msgs {
        let payload = codec.encode(msg).unwrap();
        producer
            .send(
                FutureRecord::to(topic).key(msg.key()).payload(&payload),
                std::time::Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// A new, empty PostgreSQL database next to the one `admin_url` names (the
/// sinks' tables are not prefixed, so a test that compares whole tables
/// needs its own); returns its URL.
pub async fn fresh_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = unique("db").replace('-', "_");
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(&format!("create database {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// A name no other test (or earlier run) uses: `t-<what>-<random>`.
pub fn unique(what: &str) -> String {
    format!(
        "t-{what}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Runs `surge ARGS` from the repository root with extra environment.
pub fn surge(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_surge"))
        .current_dir(repo_root())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run the surge binary");
    eprintln!(
        "$ surge {}\n--- stdout\n{}--- stderr\n{}--- exit {:?}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The /metrics address the newest process logging to `log` announced
/// (processes in tests bind port 0).
pub fn metrics_address(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap();
    text.rsplit("metrics and health address=")
        .next()
        .filter(|_| text.contains("metrics and health address="))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in {}", log.display()))
        .to_string()
}

/// A minimal HTTP/1.0 GET for /metrics and /health: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the first series starting with `series` in a /metrics body (-1 when absent).
pub fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

/// Waits until the log file `log` contains `needle`; panics after `within`.
pub fn wait_for_log(log: &std::path::Path, needle: &str, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if std::fs::read_to_string(log).is_ok_and(|l| l.contains(needle)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("{} never said {needle:?}", log.display());
}
