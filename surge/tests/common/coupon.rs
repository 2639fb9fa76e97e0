//! Harness for the coupon pipeline tests: an isolated topic set (random
//! prefix), pipeline instances as child processes of the real binary,
//! request producers, and the invariant checks of DESIGN.md (1–4), computed
//! from what a read_committed consumer sees on coupon-result and from the
//! log order of coupon-issue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_core::Settings;
use surge_kafka::ClientFactory;
use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision, Outcome};
use surge_schemas::{Registry, TopicCodec};

use super::{repo_root, unique};

pub struct Fixture {
    pub prefix: String,
    pub settings: Settings,
    pub factory: ClientFactory,
    pub commands: TopicCodec<CouponCommand>,
    pub results: TopicCodec<CouponDecision>,
    pub logs: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl Fixture {
    /// Fresh topics (all of config/topics.toml under a random prefix).
    pub async fn new(what: &str) -> Self {
        Self::with_env(what, &[]).await
    }

    pub async fn with_env(what: &str, env: &[(&str, &str)]) -> Self {
        let prefix = format!("{}-", unique(what));
        let out = super::surge(&["topics", "apply"], &[("SURGE_TOPICS__NAME_PREFIX", prefix.as_str())]);
        assert!(out.status.success(), "topics apply failed");
        let mut settings = super::settings();
        settings.topics.name_prefix = prefix.clone();
        let registry = Registry::new(&settings.registry.url);
        let logs = repo_root().join("target/test-logs").join(prefix.trim_end_matches('-'));
        std::fs::create_dir_all(&logs).unwrap();
        Self {
            factory: ClientFactory::new(settings.kafka.clone()),
            commands: TopicCodec::connect(&registry).await.unwrap(),
            results: TopicCodec::connect(&registry).await.unwrap(),
            prefix,
            settings,
            logs,
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// Another handle on an existing fixture's topics (e.g. for a producer task).
    pub async fn reuse(prefix: &str) -> Self {
        let mut settings = super::settings();
        settings.topics.name_prefix = prefix.to_string();
        let registry = Registry::new(&settings.registry.url);
        Self {
            factory: ClientFactory::new(settings.kafka.clone()),
            commands: TopicCodec::connect(&registry).await.unwrap(),
            results: TopicCodec::connect(&registry).await.unwrap(),
            prefix: prefix.to_string(),
            logs: repo_root().join("target/test-logs").join(prefix.trim_end_matches('-')),
            settings,
            extra_env: Vec::new(),
        }
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Starts `surge pipeline coupon` as instance `instance` (its own metrics port).
    /// The process is SIGKILLed when the handle drops (a failed test leaks nothing).
    pub fn spawn_pipeline(&self, instance: &str, env: &[(&str, &str)]) -> Instance {
        let log = self.logs.join(format!("pipeline-{instance}.log"));
        let file = File::options().create(true).append(true).open(&log).unwrap();
        Command::new(env!("CARGO_BIN_EXE_surge"))
            .current_dir(repo_root())
            .args(["pipeline", "coupon"])
            .env("SURGE_TOPICS__NAME_PREFIX", &self.prefix)
            .env("SURGE_PIPELINES__COUPON__INSTANCE_ID", instance)
            .env("SURGE_PIPELINES__COUPON__METRICS_LISTEN", "127.0.0.1:0")
            .env("SURGE_LOG__LEVEL", "info,librdkafka=warn")
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .map(Instance)
            .expect("spawn surge pipeline coupon")
    }

    /// Produces commands in order, keyed by coupon (one coupon's commands keep their order).
    pub async fn produce(&self, commands: &[CouponCommand]) {
        let mut cfg = self.factory.base("test-producer");
        cfg.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "5").set("partitioner", "murmur2_random");
        let producer: FutureProducer = cfg.create().unwrap();
        let topic = self.topic("coupon-issue");
        // Enqueue strictly in order (one coupon's commands must keep their
        // order), then wait for the deliveries.
        let mut inflight = std::collections::VecDeque::with_capacity(commands.len());
        for c in commands {
            let payload = self.commands.encode(c).unwrap();
            let mut record = FutureRecord::to(&topic).key(&c.coupon_id).payload(&payload);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        inflight.push_back(delivery);
                        break;
                    }
                    Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        if let Some(d) = inflight.pop_front() {
                            d.await.unwrap().map_err(|(e, _)| e).expect("produce");
                        }
                    }
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
        }
        for d in inflight {
            d.await.unwrap().map_err(|(e, _)| e).expect("produce");
        }
    }

    /// Raw records of `topic` (all partitions, read_committed) until `want` arrived and it went quiet.
    pub fn read_raw(&self, topic: &str, want: usize, timeout: Duration) -> Vec<(i32, i64, Vec<u8>)> {
        // A group id is required by librdkafka even for assign(); it never commits.
        let cfg = self.factory.read_committed_consumer_config("test-reader", &unique("reader"));
        let consumer: BaseConsumer = cfg.create().unwrap();
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut last_arrival = Instant::now();
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    out.push((m.partition(), m.offset(), m.payload().unwrap_or_default().to_vec()));
                    last_arrival = Instant::now();
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
            if out.len() >= want && last_arrival.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        out
    }

    /// Every decision on coupon-result, in partition order.
    pub async fn decisions(&self, want: usize, timeout: Duration) -> Vec<CouponDecision> {
        let raw = self.read_raw(&self.topic("coupon-result"), want, timeout);
        let mut out = Vec::with_capacity(raw.len());
        for (_, _, bytes) in raw {
            out.push(self.results.decode(Some(&bytes)).await.expect("coupon-result decodes"));
        }
        out
    }

    /// coupon-issue as the pipeline saw it: (partition, offset, command), per partition in log order.
    pub async fn issue_log(&self, want: usize) -> Vec<(i32, i64, CouponCommand)> {
        let raw = self.read_raw(&self.topic("coupon-issue"), want, Duration::from_secs(60));
        let mut out = Vec::with_capacity(raw.len());
        for (p, o, bytes) in raw {
            out.push((p, o, self.commands.decode(Some(&bytes)).await.expect("coupon-issue decodes")));
        }
        out.sort_by_key(|(p, o, _)| (*p, *o));
        out
    }
}

pub fn now() -> chrono::DateTime<chrono::Utc> {
    surge_schemas::now()
}

pub fn create(coupon: &str, stock: i64) -> CouponCommand {
    CouponCommand {
        request_id: format!("create-{coupon}"),
        coupon_id: coupon.into(),
        requested_at: now(),
        command: CouponAction::Create { stock, active_from: None, active_until: None },
    }
}

pub fn issue(request: &str, coupon: &str, user: &str) -> CouponCommand {
    CouponCommand { request_id: request.into(), coupon_id: coupon.into(), requested_at: now(), command: CouponAction::Issue { user_id: user.into() } }
}

/// A flash sale: `coupons` coupons with `stock` each, then `requests` issue
/// requests from `users` users spread over the coupons; about 5% re-send an
/// earlier request id (upstream retries), the rest are new requests (some
/// from users who already asked: DUPLICATE).
pub fn flash_sale(coupons: usize, stock: i64, users: usize, requests: usize, seed: u64) -> Vec<CouponCommand> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out: Vec<CouponCommand> = (0..coupons).map(|c| create(&format!("coupon-{c}"), stock)).collect();
    let mut sent: Vec<usize> = Vec::new();
    for i in 0..requests {
        if !sent.is_empty() && rng.random_bool(0.05) {
            let again = out[sent[rng.random_range(0..sent.len())]].clone();
            out.push(again);
            continue;
        }
        let coupon = rng.random_range(0..coupons);
        let user = rng.random_range(0..users);
        sent.push(out.len());
        out.push(issue(&format!("req-{i}"), &format!("coupon-{coupon}"), &format!("user-{user}")));
    }
    out
}

/// Checks invariants 1–4 against the committed decisions and the input log.
/// Returns human-readable violations (empty = all hold).
pub fn check_invariants(log: &[(i32, i64, CouponCommand)], decisions: &[CouponDecision]) -> Vec<String> {
    let mut violations = Vec::new();
    // 1. Exactly one decision per distinct request id.
    let requested: HashSet<&str> = log.iter().map(|(_, _, c)| c.request_id.as_str()).collect();
    let mut per_request: HashMap<&str, usize> = HashMap::new();
    for d in decisions {
        *per_request.entry(d.request_id.as_str()).or_default() += 1;
    }
    let missing: Vec<&&str> = requested.iter().filter(|r| !per_request.contains_key(**r)).take(5).collect();
    if !missing.is_empty() {
        violations.push(format!("{} request(s) without a decision, e.g. {missing:?}", requested.iter().filter(|r| !per_request.contains_key(**r)).count()));
    }
    let doubled: Vec<(&&str, &usize)> = per_request.iter().filter(|(_, n)| **n > 1).take(5).collect();
    if !doubled.is_empty() {
        violations.push(format!("request(s) with more than one decision, e.g. {doubled:?}"));
    }
    let unknown = per_request.keys().filter(|r| !requested.contains(**r)).count();
    if unknown > 0 {
        violations.push(format!("{unknown} decision(s) for requests never sent"));
    }

    // 4. FCFS from the log: per coupon, stock from the (first) create, then
    //    the first `stock` distinct users in log order (first occurrence of
    //    each request id only) are the ones ISSUED, with sequences 1..stock.
    let mut stock: BTreeMap<&str, i64> = BTreeMap::new();
    let mut expected: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut seen_requests = HashSet::new();
    let mut asked: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for (_, _, c) in log {
        if !seen_requests.insert(c.request_id.as_str()) {
            continue;
        }
        match &c.command {
            CouponAction::Create { stock: s, .. } => {
                stock.entry(c.coupon_id.as_str()).or_insert(*s);
            }
            CouponAction::Issue { user_id } => {
                let Some(s) = stock.get(c.coupon_id.as_str()) else { continue };
                let users = asked.entry(c.coupon_id.as_str()).or_default();
                let first_time = users.insert(user_id.as_str());
                let winners = expected.entry(c.coupon_id.as_str()).or_default();
                if first_time && (winners.len() as i64) < *s {
                    winners.push(user_id.as_str());
                }
            }
            CouponAction::AdjustStock { .. } => {}
        }
    }
    let mut issued: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for d in decisions.iter().filter(|d| d.outcome == Outcome::Issued) {
        issued.entry(d.coupon_id.as_str()).or_default().push((d.sequence.unwrap_or(-1), d.user_id.as_deref().unwrap_or("")));
    }
    for (coupon, s) in &stock {
        let mut got = issued.remove(coupon).unwrap_or_default();
        got.sort();
        // 2. ISSUED <= stock, and = stock when enough distinct users asked.
        let distinct = asked.get(coupon).map_or(0, |u| u.len()) as i64;
        if got.len() as i64 > *s {
            violations.push(format!("{coupon}: oversold, {} ISSUED for stock {s}", got.len()));
        }
        if distinct >= *s && (got.len() as i64) < *s {
            violations.push(format!("{coupon}: leaked stock, {} ISSUED for stock {s} with {distinct} distinct users asking", got.len()));
        }
        // 3. At most one ISSUED per (coupon, user).
        let mut users = HashSet::new();
        for (_, u) in &got {
            if !users.insert(*u) {
                violations.push(format!("{coupon}: user {u} ISSUED twice"));
            }
        }
        let want: Vec<(i64, &str)> = expected.get(coupon).map_or(Vec::new(), |w| w.iter().enumerate().map(|(i, u)| (i as i64 + 1, *u)).collect());
        if got != want {
            let first_diff = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            violations.push(format!(
                "{coupon}: ISSUED is not the first distinct users in log order (first difference at sequence {}: got {:?}, expected {:?})",
                first_diff + 1,
                got.get(first_diff),
                want.get(first_diff)
            ));
        }
    }
    violations
}

/// A pipeline child process, killed on drop.
pub struct Instance(pub Child);

impl std::ops::Deref for Instance {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Instance {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends SIGKILL (or another signal) to a child.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{sig} failed");
}
