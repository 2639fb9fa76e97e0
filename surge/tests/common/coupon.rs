//! Harness for the coupon pipeline tests: an isolated topic set (random
//! prefix), pipeline instances as child processes of the real binary,
//! request producers, and the invariant checks of DESIGN.md (1–4), computed
//! from what a read_committed consumer sees on coupon-result and from the
//! log order of coupon-issue.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_core::{Names, Settings};
use surge_kafka::ClientFactory;
use surge_schemas::coupon::{CouponAction, CouponCommand, CouponDecision};
use surge_schemas::{Contract, TopicCodec};

use super::{repo_root, unique};

pub struct Fixture {
    pub prefix: String,
    /// Topic, subject and group names under `prefix`, as the processes make them.
    pub names: Names,
    pub settings: Settings,
    pub factory: ClientFactory,
    pub commands: TopicCodec<CouponCommand>,
    pub results: TopicCodec<CouponDecision>,
    pub logs: PathBuf,
    extra_env: Vec<(String, String)>,
    /// Set on the fixture that created the topics (not on [`Self::reuse`]
    /// handles): the env `surge topics drop` runs under when it drops.
    owned_topics: Option<Vec<(String, String)>>,
}

impl Fixture {
    /// Fresh topics (all of config/topics.toml under a random prefix).
    pub async fn new(what: &str) -> Self {
        Self::with_env(what, &[]).await
    }

    pub async fn with_env(what: &str, env: &[(&str, &str)]) -> Self {
        Self::build(what, &[], env).await
    }

    /// Like [`Self::with_env`], but `surge topics apply` runs under `env`
    /// too, so every surge process of the fixture has the same settings
    /// (e.g. only the stack's SASL_SSL listener). The fixture's own clients
    /// (produce, read_raw) keep the test's settings.
    pub async fn through(what: &str, env: &[(&str, &str)]) -> Self {
        Self::build(what, env, env).await
    }

    async fn build(what: &str, apply_env: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let prefix = format!("{}-", unique(what));
        let mut apply = apply_env.to_vec();
        apply.push(("SURGE_TOPICS__NAME_PREFIX", prefix.as_str()));
        let out = super::surge(&["topics", "apply"], &apply);
        assert!(out.status.success(), "topics apply failed");
        let mut fx = Self::reuse(&prefix).await;
        fx.owned_topics = Some(
            apply
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        std::fs::create_dir_all(&fx.logs).unwrap();
        fx.extra_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        fx
    }

    /// Another handle on an existing fixture's topics (e.g. for a producer task).
    pub async fn reuse(prefix: &str) -> Self {
        let mut settings = super::settings();
        settings.topics.name_prefix = prefix.to_string();
        Self {
            factory: ClientFactory::new(settings.kafka.clone()),
            commands: super::codec(&settings).await,
            results: super::codec(&settings).await,
            names: Names::from_settings(&settings),
            prefix: prefix.to_string(),
            logs: repo_root()
                .join("target/test-logs")
                .join(prefix.trim_end_matches('-')),
            settings,
            extra_env: Vec::new(),
            owned_topics: None,
        }
    }

    /// The fixture's copy of topic `base`.
    pub fn topic(&self, base: &str) -> String {
        self.names.topic(base)
    }

    /// Starts `surge pipeline coupon` as instance `instance` (its own metrics port).
    /// The process is SIGKILLed when the handle drops (a failed test leaks nothing).
    pub fn spawn_pipeline(&self, instance: &str, env: &[(&str, &str)]) -> Instance {
        let log = self.logs.join(format!("pipeline-{instance}.log"));
        let file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
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

    /// Starts `surge sink <store>` (postgres | redis) on the fixture's topics,
    /// logging to `sink-<store>.log`; SIGKILLed when the handle drops.
    pub fn spawn_sink(&self, store: &str, env: &[(&str, &str)]) -> Instance {
        let metrics = format!("SURGE_SINKS__{}__METRICS_LISTEN", store.to_uppercase());
        let mut all = vec![(metrics.as_str(), "127.0.0.1:0")];
        all.extend_from_slice(env);
        self.spawn(&format!("sink-{store}"), &["sink", store], &all)
    }

    /// Starts `surge ARGS` on the fixture's topics and Redis keyspace, logging
    /// to `<name>.log`; SIGKILLed when the handle drops.
    pub fn spawn(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Instance {
        let log = self.logs.join(format!("{name}.log"));
        let file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_surge"))
            .current_dir(repo_root())
            .args(args)
            .env("SURGE_TOPICS__NAME_PREFIX", &self.prefix)
            .env("SURGE_REDIS__KEYSPACE", self.prefix.trim_end_matches('-'))
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .map(Instance)
            .unwrap_or_else(|e| panic!("spawn surge {args:?}: {e}"))
    }

    /// How many partitions `topic` has.
    pub fn partitions(&self, topic: &str) -> i32 {
        surge_kafka::TopicReader::open(&self.factory, topic, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"))
            .partitions()
    }

    /// Produces commands in order, keyed by coupon (one coupon's commands keep their order).
    pub async fn produce(&self, commands: &[CouponCommand]) {
        let producer = self.factory.idempotent_producer("test-producer").unwrap();
        // Encoded up front: the future must be Send for spawned producer tasks.
        let records: Vec<(String, Vec<u8>)> = commands
            .iter()
            .map(|c| (c.coupon_id.clone(), self.commands.encode(c).unwrap()))
            .collect();
        surge_kafka::produce_in_order(
            &producer,
            &self.topic(CouponCommand::TOPIC),
            records,
            |_| {},
        )
        .await
        .expect("produce");
    }

    /// Raw records of `topic` (all partitions, read_committed) until `want` arrived and it went quiet.
    pub fn read_raw(
        &self,
        topic: &str,
        want: usize,
        timeout: Duration,
    ) -> Vec<(i32, i64, Vec<u8>)> {
        // A group id is required by librdkafka even for assign(); it never commits.
        let cfg = self
            .factory
            .read_committed_consumer_config("test-reader", &unique("reader"));
        let consumer: BaseConsumer = cfg.create().unwrap();
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut last_arrival = Instant::now();
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    out.push((
                        m.partition(),
                        m.offset(),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
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
        let raw = self.read_raw(&self.topic(CouponDecision::TOPIC), want, timeout);
        let mut out = Vec::with_capacity(raw.len());
        for (_, _, bytes) in raw {
            out.push(
                self.results
                    .decode(Some(&bytes))
                    .await
                    .expect("coupon-result decodes"),
            );
        }
        out
    }

    /// coupon-issue as the pipeline saw it: (partition, offset, command), per partition in log order.
    pub async fn issue_log(&self, want: usize) -> Vec<(i32, i64, CouponCommand)> {
        let raw = self.read_raw(
            &self.topic(CouponCommand::TOPIC),
            want,
            Duration::from_secs(60),
        );
        let mut out = Vec::with_capacity(raw.len());
        for (p, o, bytes) in raw {
            out.push((
                p,
                o,
                self.commands
                    .decode(Some(&bytes))
                    .await
                    .expect("coupon-issue decodes"),
            ));
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
        command: CouponAction::Create {
            stock,
            active_from: None,
            active_until: None,
            discount: None,
        },
    }
}

pub fn issue(request: &str, coupon: &str, user: &str) -> CouponCommand {
    CouponCommand {
        request_id: request.into(),
        coupon_id: coupon.into(),
        requested_at: now(),
        command: CouponAction::Issue {
            user_id: user.into(),
        },
    }
}

/// A flash sale (the generator `surge loadgen` uses): `coupons` coupons with
/// `stock` each, then `requests` issue requests from `users` users, 5% of
/// them upstream retries of an earlier request id.
pub fn flash_sale(
    coupons: usize,
    stock: i64,
    users: usize,
    requests: usize,
    seed: u64,
) -> Vec<CouponCommand> {
    let scenario = surge_coupon::scenario::Scenario {
        prefix: "coupon".into(),
        coupons,
        stock,
        users,
        requests,
        duplicate_ratio: 0.05,
        seed,
    };
    scenario.commands().collect()
}

/// Checks invariants 1–4 (the same audit `surge verify` runs), with
/// coupon-issue's partition count as the topics file declares it (every
/// fixture's topics are made from it by `surge topics apply`, run from the
/// repository root).
pub fn check_invariants(
    log: &[(i32, i64, CouponCommand)],
    decisions: &[CouponDecision],
) -> Vec<String> {
    let settings = super::settings();
    let topic = Names::from_settings(&settings).topic(CouponCommand::TOPIC);
    let partitions =
        surge_kafka::topics::load(&repo_root().join(&settings.topics.file), &settings.topics)
            .expect("the topics file loads")
            .into_iter()
            .find(|t| t.name == topic)
            .expect("coupon-issue is declared")
            .partitions;
    let logged: Vec<surge_coupon::audit::Logged<'_>> = log
        .iter()
        .map(|(partition, offset, command)| surge_coupon::audit::Logged {
            partition: *partition,
            offset: *offset,
            command,
        })
        .collect();
    surge_coupon::audit::audit(&logged, partitions, decisions).violations
}

/// The fixture that created its topics deletes them, pass or fail (its
/// processes were dropped before it: they were made after it). A suite run
/// makes ~900 topics; left behind, their partitions stay open on the
/// broker, whose heap and CPU then slow every later test and benchmark.
impl Drop for Fixture {
    fn drop(&mut self) {
        let Some(env) = self.owned_topics.take() else {
            return;
        };
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = Command::new(env!("CARGO_BIN_EXE_surge"))
            .current_dir(repo_root())
            .args(["topics", "drop", "--yes"])
            .envs(env)
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("could not drop the topics under {}: {out:?}", self.prefix);
        }
    }
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
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}
