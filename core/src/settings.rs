//! Settings: built-in defaults, then a TOML file (config/surge.toml), then
//! environment variables `SURGE_<SECTION>__<KEY>` (double underscore between
//! levels). Unknown keys and bad values stop the process at start, with the
//! file line or the variable that is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole configuration of a surge process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The Kafka cluster.
    pub kafka: KafkaSettings,
    /// The schema registry (Confluent-compatible API).
    pub registry: RegistrySettings,
    /// PostgreSQL, the record of truth for reads and reports.
    pub postgres: PostgresSettings,
    /// Redis, the read cache.
    pub redis: RedisSettings,
    /// Where the declarative topic list lives and cluster-wide overrides for it.
    pub topics: TopicsSettings,
    /// Logging.
    pub log: LogSettings,
    /// The exactly-once pipelines, one section each.
    pub pipelines: PipelinesSettings,
    /// The sinks that keep the stores equal to the result topics.
    pub sinks: SinksSettings,
    /// The HTTP gateway (`surge gateway`).
    pub gateway: GatewaySettings,
    /// The order saga's rules for accepting an order.
    pub orders: OrdersSettings,
    /// The payment provider the payment pipeline charges through.
    pub payment: PaymentSettings,
    /// `surge pg-sim`, the payment gateway simulator.
    pub pg_sim: PgSimSettings,
}

/// How the payment pipeline talks to the payment provider (`[payment]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// Root URL of the provider's API (pg-sim's by default).
    pub url: String,
    /// One HTTP call; past it the outcome is unknown and the call is retried
    /// with the same idempotency key. No transaction waits on a call.
    #[serde(with = "humantime_serde")]
    pub call_timeout: std::time::Duration,
    /// Calls in flight at once, across every owned partition.
    pub max_in_flight: usize,
    /// First retry delay after an unknown outcome; doubles per attempt ...
    #[serde(with = "humantime_serde")]
    pub retry_initial: std::time::Duration,
    /// ... up to this.
    #[serde(with = "humantime_serde")]
    pub retry_max: std::time::Duration,
    /// How long the provider remembers an idempotency key (its documented
    /// retention). A key is never sent again once this window, less
    /// `lookup_margin`, has passed since the request: the attempt is
    /// resolved by looking the payment up instead.
    #[serde(with = "humantime_serde")]
    pub key_retention: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub lookup_margin: std::time::Duration,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8090".into(),
            call_timeout: std::time::Duration::from_secs(5),
            max_in_flight: 64,
            retry_initial: std::time::Duration::from_millis(100),
            retry_max: std::time::Duration::from_secs(5),
            key_retention: std::time::Duration::from_secs(24 * 3600),
            lookup_margin: std::time::Duration::from_secs(3600),
        }
    }
}

/// `surge pg-sim`: an HTTP payment gateway with real providers'
/// Idempotency-Key rules, a ledger in PostgreSQL and fault knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgSimSettings {
    /// Where the API, /admin/faults, /metrics and /health are served.
    pub listen: std::net::SocketAddr,
    /// PostgreSQL schema of the ledger (in the [postgres] database).
    pub schema: String,
    /// How long an idempotency key is remembered.
    #[serde(with = "humantime_serde")]
    pub key_retention: std::time::Duration,
    /// Bearer token for /admin/faults. Unset: the admin endpoint is open
    /// (pg-sim is a test double; bind it to loopback).
    pub admin_token: Option<String>,
    /// Faults at start; changed at run time with PUT /admin/faults.
    pub faults: PgSimFaults,
}

impl Default for PgSimSettings {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8090)),
            schema: "pgsim".into(),
            key_retention: std::time::Duration::from_secs(24 * 3600),
            admin_token: None,
            faults: PgSimFaults::default(),
        }
    }
}

/// pg-sim's fault knobs: ratios are probabilities per request in 0..=1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgSimFaults {
    /// Median added latency of a charge or refund, in milliseconds ...
    #[serde(deserialize_with = "lenient_f64")]
    pub latency_median_ms: f64,
    /// ... with a log-normal spread (sigma; 0 = always the median).
    #[serde(deserialize_with = "lenient_f64")]
    pub latency_sigma: f64,
    /// Charges declined (a stored 402 with one of `decline_codes`).
    #[serde(deserialize_with = "lenient_f64")]
    pub decline_ratio: f64,
    pub decline_codes: Vec<String>,
    /// 500 before anything is done (nothing stored: a retry is a first try).
    #[serde(deserialize_with = "lenient_f64")]
    pub error_before_ratio: f64,
    /// 500 after the charge or refund was applied and its answer stored.
    #[serde(deserialize_with = "lenient_f64")]
    pub error_after_ratio: f64,
    /// No answer within `hang`, after the charge or refund was applied.
    #[serde(deserialize_with = "lenient_f64")]
    pub timeout_after_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub hang: std::time::Duration,
    /// 409 as if another request with the key were in flight.
    #[serde(deserialize_with = "lenient_f64")]
    pub conflict_ratio: f64,
}

impl Default for PgSimFaults {
    fn default() -> Self {
        Self {
            latency_median_ms: 0.0,
            latency_sigma: 0.0,
            decline_ratio: 0.0,
            decline_codes: ["insufficient_funds", "card_declined", "expired_card"]
                .map(String::from)
                .to_vec(),
            error_before_ratio: 0.0,
            error_after_ratio: 0.0,
            timeout_after_ratio: 0.0,
            hang: std::time::Duration::from_secs(30),
            conflict_ratio: 0.0,
        }
    }
}

/// What the order saga accepts (`[orders]`). An order that breaks a rule is
/// REJECTED with the rule in its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersSettings {
    /// The most lines one order may have.
    pub max_lines: usize,
    /// The most units of one line.
    pub max_quantity: i32,
    /// ISO 4217 codes an order may be placed in.
    pub currencies: Vec<String>,
    /// An order whose payment has not resolved this long after it was
    /// requested is cancelled (stock and coupon released; a charge that
    /// succeeds afterwards is refunded).
    #[serde(with = "humantime_serde")]
    pub payment_timeout: std::time::Duration,
}

impl Default for OrdersSettings {
    fn default() -> Self {
        Self {
            max_lines: 100,
            max_quantity: 10_000,
            currencies: ["KRW", "USD", "EUR", "JPY", "GBP"]
                .map(String::from)
                .to_vec(),
            payment_timeout: std::time::Duration::from_secs(600),
        }
    }
}

/// One section per sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksSettings {
    /// coupon-result → PostgreSQL.
    pub postgres: SinkSettings,
    /// coupon-result → the Redis read cache.
    pub redis: SinkSettings,
}

impl Default for SinksSettings {
    fn default() -> Self {
        Self {
            postgres: SinkSettings::with_metrics_port(9467),
            redis: SinkSettings::with_metrics_port(9468),
        }
    }
}

/// How one sink runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSettings {
    /// Stable identity of this instance (static group membership: a restart
    /// takes its place at once). Two live instances must differ.
    pub instance_id: String,
    /// Consumer group; defaults to `surge-sink-<name>` (with the topics name prefix).
    pub group_id: Option<String>,
    /// Largest number of records written in one store transaction.
    pub max_batch_records: usize,
    /// How long a batch may wait to fill before it is written (e.g. "200ms").
    #[serde(with = "humantime_serde")]
    pub max_batch_wait: std::time::Duration,
    /// Longest wait between retries while the store is unavailable.
    #[serde(with = "humantime_serde")]
    pub max_retry_backoff: std::time::Duration,
    /// Where /metrics and /health are served.
    pub metrics_listen: std::net::SocketAddr,
}

impl SinkSettings {
    fn with_metrics_port(port: u16) -> Self {
        Self {
            instance_id: "0".into(),
            group_id: None,
            max_batch_records: 2000,
            max_batch_wait: std::time::Duration::from_millis(200),
            max_retry_backoff: std::time::Duration::from_secs(5),
            metrics_listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self::with_metrics_port(9467)
    }
}

/// One section per pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesSettings {
    /// coupon-issue → coupon-result (and redemption replies).
    pub coupon: PipelineSettings,
    /// inventory-commands → inventory-result (and stock replies).
    pub inventory: PipelineSettings,
    /// The order saga: order-create, order-cancel, order-replies → commands,
    /// payment-request, order-status.
    pub order: PipelineSettings,
    /// payment-request → the payment provider → order-replies.
    pub payment: PipelineSettings,
}

impl Default for PipelinesSettings {
    fn default() -> Self {
        Self {
            coupon: PipelineSettings::with_metrics_port(9464),
            inventory: PipelineSettings::with_metrics_port(9469),
            order: PipelineSettings::with_metrics_port(9465),
            payment: PipelineSettings::with_metrics_port(9466),
        }
    }
}

/// How one exactly-once pipeline runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Identity of this instance. Stable across restarts: it names the
    /// transactional.id and the static group member, so a restarted instance
    /// fences its own zombie. Two live instances must differ.
    pub instance_id: String,
    /// Consumer group; defaults to `surge-<pipeline>` (with the topics name prefix).
    pub group_id: Option<String>,
    /// Commit the open transaction after this long (e.g. "100ms").
    #[serde(with = "humantime_serde")]
    pub commit_interval: std::time::Duration,
    /// ... or after this many input records, whichever comes first.
    pub max_batch_records: usize,
    /// ... or, once the open transaction is this old, as soon as the input
    /// has run dry (a poll finds nothing waiting). A request then waits about
    /// this plus one commit instead of the whole `commit_interval` when the
    /// pipeline keeps up, while a backlog still commits in full batches.
    /// Equal to `commit_interval`: batches close on the interval and size only.
    #[serde(with = "humantime_serde")]
    pub min_commit_interval: std::time::Duration,
    /// Timeout of one transaction call (commit, abort, send offsets).
    #[serde(with = "humantime_serde")]
    pub transaction_call_timeout: std::time::Duration,
    /// Where /metrics and /health are served.
    pub metrics_listen: std::net::SocketAddr,
    /// Fault injection for tests and `surge chaos`: the probability that a
    /// batch is aborted instead of committed, as if the processor had failed.
    #[serde(deserialize_with = "lenient_f64")]
    pub inject_abort_ratio: f64,
    /// `[pipelines.coupon]` only: how long, in the input's log time, a
    /// decided request id that issued nothing is remembered (a retry after
    /// it is decided again); ISSUED ones are remembered forever. Unset: 7
    /// days, coupon-issue's retention in config/topics.toml. Must be > 0.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Option<std::time::Duration>,
}

impl PipelineSettings {
    fn with_metrics_port(port: u16) -> Self {
        Self {
            instance_id: "0".into(),
            group_id: None,
            commit_interval: std::time::Duration::from_millis(100),
            max_batch_records: 5000,
            min_commit_interval: std::time::Duration::from_millis(20),
            transaction_call_timeout: std::time::Duration::from_secs(30),
            metrics_listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            inject_abort_ratio: 0.0,
            dedupe_window: None,
        }
    }
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self::with_metrics_port(9464)
    }
}

/// How to reach Kafka. Typed settings for the common cases; `librdkafka`
/// passes anything else straight to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Prefix of every client.id this process uses.
    pub client_id: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism when SASL is used, e.g. `SCRAM-SHA-512` or `PLAIN`.
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// SASL password (prefer the environment: `SURGE_KAFKA__SASL_PASSWORD`).
    pub sasl_password: Option<String>,
    /// CA certificate file for TLS.
    pub ssl_ca_location: Option<PathBuf>,
    /// Client certificate file for mutual TLS.
    pub ssl_certificate_location: Option<PathBuf>,
    /// Client key file for mutual TLS.
    pub ssl_key_location: Option<PathBuf>,
    /// Raw librdkafka properties, applied last (escape hatch). Values may be
    /// written as strings, numbers or booleans.
    #[serde(deserialize_with = "scalar_map")]
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "surge".into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            librdkafka: BTreeMap::new(),
        }
    }
}

/// A float written as a number (TOML) or a string (environment variables stay strings).
fn lenient_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum F {
        N(f64),
        S(String),
    }
    match F::deserialize(d)? {
        F::N(n) => Ok(n),
        F::S(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a number"))),
    }
}

/// A map whose values are any TOML/env scalar, kept as the string librdkafka wants.
fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        B(bool),
        I(i64),
        F(f64),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::B(b) => b.to_string(),
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The librdkafka spelling.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }
}

/// The schema registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Root of the Confluent-compatible API.
    pub url: String,
    /// Compatibility level set on every subject surge registers.
    pub compatibility: String,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081/apis/ccompat/v7".into(),
            compatibility: "BACKWARD".into(),
        }
    }
}

/// PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// Connection URL.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: "postgres://surge:surge@127.0.0.1:5432/surge".into(),
            max_connections: 8,
        }
    }
}

/// Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// Connection URL.
    pub url: String,
    /// First segment of every key surge writes (`<keyspace>:coupon:<id>`, ...),
    /// so several deployments or tests can share one Redis.
    pub keyspace: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            keyspace: "surge".into(),
        }
    }
}

/// The HTTP gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Where the API is served (also /metrics, /health, /openapi.json).
    pub listen: std::net::SocketAddr,
    /// Bearer token for /admin endpoints. Unset: admin endpoints answer 403.
    /// Set it from the environment (SURGE_GATEWAY__ADMIN_TOKEN), not in a file.
    pub admin_token: Option<String>,
    /// Largest accepted request body; larger bodies get 413. A batch of
    /// issue requests may be larger (see `max_batch_body_bytes`).
    pub max_body_bytes: usize,
    /// Most issue requests in one `POST /coupon-requests` (a batch).
    pub max_batch_requests: usize,
    /// Batch calls handled at once; more wait, unread, for a turn. Bounds
    /// the memory batches can hold (this × `max_batch_body_bytes`).
    pub max_batch_calls: usize,
    /// How long a request may wait for Kafka to acknowledge its command
    /// before the gateway answers 503.
    #[serde(with = "humantime_serde")]
    pub produce_timeout: std::time::Duration,
    /// A request head (request line and headers) must arrive within this,
    /// counted from the connection's accept or from the first byte of a
    /// request on a kept-alive connection. Past it the connection is closed
    /// (with 408 when part of a head had arrived).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: std::time::Duration,
    /// A request body must arrive in full within this, counted from the end
    /// of its head; past it the answer is 408 and the connection is closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: std::time::Duration,
    /// A kept-alive connection with no request for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: std::time::Duration,
    /// Open client connections at most. At the cap the gateway stops
    /// accepting: new connections wait in the listen backlog and are served
    /// as others close (the timeouts above bound how long that takes).
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; larger
    /// heads, or more than 100 headers, get 431.
    pub max_header_bytes: usize,
    /// Failed admin authentications (a wrong token) one client address may
    /// make in a burst; after that every admin request from it gets 429
    /// until the bucket refills. Successful requests never use it up.
    pub admin_auth_burst: u32,
    /// One more failed admin authentication is allowed per this interval.
    #[serde(with = "humantime_serde")]
    pub admin_auth_refill: std::time::Duration,
    /// How long the gateway remembers (in Redis, best effort) that it
    /// accepted a request id, so that a poll can tell "accepted, not decided
    /// yet" (PENDING) from "never sent here" (404). 0 turns the markers
    /// off: every undecided id then reads as PENDING.
    #[serde(with = "humantime_serde")]
    pub accepted_marker_ttl: std::time::Duration,
}

/// The most bytes one request of a batch can take as JSON: its three ids
/// at their longest (128 characters), each character written as the 12
/// bytes of an escaped surrogate pair (`\ud83d\ude00`), plus the names and
/// punctuation.
pub const BATCH_ITEM_BYTES: usize = 3 * 128 * 12 + 96;

impl GatewaySettings {
    /// The body limit of a batch (`POST /coupon-requests`): room for
    /// `max_batch_requests` of the largest requests, never below
    /// `max_body_bytes`.
    pub fn max_batch_body_bytes(&self) -> usize {
        self.max_body_bytes
            .max(self.max_batch_requests.saturating_mul(BATCH_ITEM_BYTES))
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_token: None,
            max_body_bytes: 16 * 1024,
            max_batch_requests: 500,
            max_batch_calls: 64,
            produce_timeout: std::time::Duration::from_secs(5),
            header_read_timeout: std::time::Duration::from_secs(5),
            body_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            max_connections: 4096,
            max_header_bytes: 16 * 1024,
            admin_auth_burst: 10,
            admin_auth_refill: std::time::Duration::from_secs(6),
            accepted_marker_ttl: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// The declarative topic list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsSettings {
    /// The topics file, relative to the working directory.
    pub file: PathBuf,
    /// Overrides every topic's replication factor (3 on a 3-broker cluster).
    pub replication_factor: Option<i32>,
    /// Overrides every topic's min.insync.replicas.
    pub min_insync_replicas: Option<i32>,
    /// Prefix added to every topic name (isolates tests and tenants).
    pub name_prefix: String,
}

impl Default for TopicsSettings {
    fn default() -> Self {
        Self {
            file: "config/topics.toml".into(),
            replication_factor: None,
            min_insync_replicas: None,
            name_prefix: String::new(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing filter, e.g. `info` or `surge=debug,rdkafka=warn`. `RUST_LOG` wins when set.
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that cannot be used; the message says where and why.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SettingsError {
    pub message: String,
}

/// The compatibility levels of the Confluent schema registry API
/// (`PUT /config/<subject>`), the values `registry.compatibility` may take.
pub const COMPATIBILITY_LEVELS: &[&str] = &[
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
];

/// Kafka's longest topic name (249 characters; longer names are refused).
const MAX_TOPIC_NAME: usize = 249;

/// A value serde accepted that a rule below refuses: the keys it is about
/// (the first is the one named; a rule across keys lists the others, so
/// that whichever of them was set can be pointed at) and what is wrong.
#[derive(Debug)]
struct Invalid {
    keys: Vec<String>,
    problem: String,
}

impl Invalid {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            keys: vec![key.into()],
            problem: problem.into(),
        }
    }

    /// A rule across keys: `also` are the other keys it depends on.
    fn across(key: impl Into<String>, also: &[String], problem: impl Into<String>) -> Self {
        let mut keys = vec![key.into()];
        keys.extend(also.iter().cloned());
        Self {
            keys,
            problem: problem.into(),
        }
    }

    /// The error, naming where the value came from: the environment
    /// variable, else the file line, else only the key (a default).
    fn explain(self, file: Option<&(PathBuf, String)>, env: &[(String, String)]) -> SettingsError {
        let paths: Vec<Vec<String>> = self
            .keys
            .iter()
            .map(|k| k.split('.').map(String::from).collect())
            .collect();
        for (key, path) in self.keys.iter().zip(&paths) {
            if let Some(var) = env_source(path, env) {
                return SettingsError {
                    message: format!(
                        "bad setting in environment variable {var} (key `{key}`): {}",
                        self.problem
                    ),
                };
            }
        }
        if let Some((file, text)) = file {
            for (key, path) in self.keys.iter().zip(&paths) {
                if let Some(line) = locate(text, path) {
                    return SettingsError {
                        message: format!(
                            "bad setting in {}, key `{key}`: {}",
                            at_line(file, text, line),
                            self.problem
                        ),
                    };
                }
            }
            return SettingsError {
                message: format!(
                    "bad setting in {}, key `{}`: {}",
                    file.display(),
                    self.keys[0],
                    self.problem
                ),
            };
        }
        SettingsError {
            message: format!("bad setting `{}`: {}", self.keys[0], self.problem),
        }
    }
}

/// `<file> line <n> (`<the line>`)`.
fn at_line(file: &Path, text: &str, line: usize) -> String {
    let content = text.lines().nth(line - 1).unwrap_or_default().trim();
    if content.is_empty() {
        format!("{} line {line}", file.display())
    } else {
        format!("{} line {line} (`{content}`)", file.display())
    }
}

/// At least 1.
fn positive(key: String, value: usize) -> Result<(), Invalid> {
    if value == 0 {
        return Err(Invalid::new(key, "must be at least 1"));
    }
    Ok(())
}

/// More than zero.
fn nonzero(key: String, value: std::time::Duration) -> Result<(), Invalid> {
    if value.is_zero() {
        return Err(Invalid::new(key, "must be more than 0"));
    }
    Ok(())
}

/// A probability: a number in 0..=1 (NaN is not one).
fn ratio(key: String, value: f64) -> Result<(), Invalid> {
    if !(0.0..=1.0).contains(&value) {
        return Err(Invalid::new(
            key,
            format!("must be a number between 0 and 1, got {value}"),
        ));
    }
    Ok(())
}

/// What an absolute URL of one setting must look like.
struct UrlRule {
    /// Accepted schemes (lower case).
    schemes: &'static [&'static str],
    /// Schemes that need a host (`scheme://host...`).
    with_host: &'static [&'static str],
    /// Schemes that need a path (`unix:///run/redis.sock`).
    with_path: &'static [&'static str],
}

const HTTP_URL: UrlRule = UrlRule {
    schemes: &["http", "https"],
    with_host: &["http", "https"],
    with_path: &[],
};
/// sqlx's PostgreSQL URLs; the host may be left out (a socket directory in
/// the query, or libpq's default).
const POSTGRES_URL: UrlRule = UrlRule {
    schemes: &["postgres", "postgresql"],
    with_host: &[],
    with_path: &[],
};
/// The redis crate's URLs: TCP (and TLS) with a host, Unix sockets with a path.
const REDIS_URL: UrlRule = UrlRule {
    schemes: &[
        "redis",
        "rediss",
        "valkey",
        "valkeys",
        "redis+unix",
        "valkey+unix",
        "unix",
    ],
    with_host: &["redis", "rediss", "valkey", "valkeys"],
    with_path: &["redis+unix", "valkey+unix", "unix"],
};

/// Why `url` is not an absolute URL under `rule`, if it is not. The value
/// itself is never repeated: a URL may carry a password.
fn url_problem(url: &str, rule: &UrlRule) -> Option<String> {
    let schemes = rule
        .schemes
        .iter()
        .map(|s| format!("`{s}://`"))
        .collect::<Vec<_>>()
        .join(", ");
    let not_absolute = || {
        Some(format!(
            "not an absolute URL (expected one starting with {schemes})"
        ))
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("a URL must not contain spaces or control characters".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return not_absolute();
    };
    // RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    let well_formed = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !well_formed {
        return not_absolute();
    }
    let scheme = scheme.to_ascii_lowercase();
    if !rule.schemes.contains(&scheme.as_str()) {
        return Some(format!(
            "unsupported URL scheme `{scheme}://` (expected one of {schemes})"
        ));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Some("the URL's IPv6 host has no closing `]`".into());
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Some("the URL's host is not followed by `:port`".into()),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        if port.parse::<u16>().is_err() {
            return Some("the URL's port is not a number from 0 to 65535".into());
        }
    }
    if rule.with_host.contains(&scheme.as_str()) && host.is_empty() {
        return Some(format!(
            "the URL has no host (expected `{scheme}://host...`)"
        ));
    }
    let path = tail.split(['?', '#']).next().unwrap_or_default();
    if rule.with_path.contains(&scheme.as_str()) && path.trim_matches('/').is_empty() {
        return Some(format!(
            "the URL has no socket path (expected `{scheme}:///path/to/socket`)"
        ));
    }
    None
}

impl Settings {
    /// Rules serde cannot state: ranges, formats, and rules across fields.
    fn validate(&self) -> Result<(), Invalid> {
        let p = &self.pipelines;
        if p.coupon.dedupe_window.is_some_and(|w| w.is_zero()) {
            return Err(Invalid::new(
                "pipelines.coupon.dedupe_window",
                "must be greater than 0",
            ));
        }
        for (name, section) in [
            ("coupon", &p.coupon),
            ("inventory", &p.inventory),
            ("order", &p.order),
            ("payment", &p.payment),
        ] {
            let key = |k: &str| format!("pipelines.{name}.{k}");
            if section.min_commit_interval > section.commit_interval {
                return Err(Invalid::across(
                    key("min_commit_interval"),
                    &[key("commit_interval")],
                    format!(
                        "{} ({:?}) must not exceed {} ({:?})",
                        key("min_commit_interval"),
                        section.min_commit_interval,
                        key("commit_interval"),
                        section.commit_interval
                    ),
                ));
            }
            positive(key("max_batch_records"), section.max_batch_records)?;
            ratio(key("inject_abort_ratio"), section.inject_abort_ratio)?;
        }
        for (name, section) in [
            ("inventory", &p.inventory),
            ("order", &p.order),
            ("payment", &p.payment),
        ] {
            if section.dedupe_window.is_some() {
                return Err(Invalid::new(
                    format!("pipelines.{name}.dedupe_window"),
                    "only the coupon pipeline has a dedupe window",
                ));
            }
        }
        let gw = &self.gateway;
        // A zero cap or size serves no one; a zero timeout cuts everyone off.
        for (key, value) in [
            ("max_body_bytes", gw.max_body_bytes),
            ("max_batch_requests", gw.max_batch_requests),
            ("max_batch_calls", gw.max_batch_calls),
            ("max_connections", gw.max_connections),
        ] {
            positive(format!("gateway.{key}"), value)?;
        }
        for (key, value) in [
            ("header_read_timeout", gw.header_read_timeout),
            ("body_read_timeout", gw.body_read_timeout),
            ("idle_timeout", gw.idle_timeout),
        ] {
            nonzero(format!("gateway.{key}"), value)?;
        }
        if !COMPATIBILITY_LEVELS.contains(&self.registry.compatibility.as_str()) {
            return Err(Invalid::new(
                "registry.compatibility",
                format!(
                    "unknown compatibility level `{}`; expected one of: {}",
                    self.registry.compatibility,
                    COMPATIBILITY_LEVELS
                        .iter()
                        .map(|l| format!("`{l}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        for (key, url, rule) in [
            ("registry.url", &self.registry.url, &HTTP_URL),
            ("payment.url", &self.payment.url, &HTTP_URL),
            ("postgres.url", &self.postgres.url, &POSTGRES_URL),
            ("redis.url", &self.redis.url, &REDIS_URL),
        ] {
            if let Some(problem) = url_problem(url, rule) {
                return Err(Invalid::new(key, problem));
            }
        }
        let prefix = &self.topics.name_prefix;
        if let Some(bad) = prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(Invalid::new(
                "topics.name_prefix",
                format!(
                    "the character {bad:?} is not allowed in a Kafka topic name (the prefix \
                     goes in front of every topic): use ASCII letters, digits, `.`, `_` and `-` only"
                ),
            ));
        }
        let longest = crate::names::PIPELINES
            .iter()
            .map(|p| crate::Names::default().changelog(p).len())
            .max()
            .unwrap_or(0);
        if prefix.len() + longest > MAX_TOPIC_NAME {
            return Err(Invalid::new(
                "topics.name_prefix",
                format!(
                    "too long: {} characters, and Kafka topic names end at {MAX_TOPIC_NAME} \
                     (the longest topic adds {longest})",
                    prefix.len()
                ),
            ));
        }
        if let Err(e) = crate::telemetry::log_filter(&self.log.level) {
            return Err(Invalid::new(
                "log.level",
                format!("`{}` is not a valid tracing filter: {e}", self.log.level),
            ));
        }
        Ok(())
    }

    /// Loads defaults, then `file` (when given, it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let mut text = None;
        if let Some(path) = file {
            let content = std::fs::read_to_string(path).map_err(|e| SettingsError {
                message: format!("cannot read config file {}: {e}", path.display()),
            })?;
            if let Err(e) = content.parse::<toml::Table>() {
                return Err(syntax_error(path, &content, &e));
            }
            figment = figment.merge(Toml::string(&content));
            text = Some((path.to_path_buf(), content));
        }
        let env: Vec<(String, String)> =
            env.into_iter().filter(|(k, _)| is_setting_var(k)).collect();
        // Environment values are typed like TOML ("250" is a number, "true" a
        // boolean); a variable whose field wants a string (an instance id "0",
        // a numeric password) is retried as the raw string.
        let mut raw: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            let attempt = figment.clone().merge(env_provider(&env, &raw));
            match attempt.extract::<Settings>() {
                Ok(s) => {
                    return match s.validate() {
                        Ok(()) => Ok(s),
                        Err(invalid) => Err(invalid.explain(text.as_ref(), &env)),
                    }
                }
                Err(e) => {
                    let var = env_var_for(&e.path);
                    let wants_string = matches!(&e.kind, figment::error::Kind::InvalidType(_, expected) if expected.contains("string"));
                    if wants_string && env.iter().any(|(k, _)| *k == var) && raw.insert(var) {
                        continue;
                    }
                    return Err(explain(e, text.as_ref(), &env));
                }
            }
        }
    }
}

/// `SURGE_<SECTION>__<KEY>`: only variables with a section separator are
/// settings, so `SURGE_STACK_DIR` and friends stay out of the way.
fn is_setting_var(key: &str) -> bool {
    key.strip_prefix("SURGE_")
        .is_some_and(|rest| rest.contains("__"))
}

/// The variable that sets `path`, e.g. `SURGE_KAFKA__CLIENT_ID`.
fn env_var_for(path: &[String]) -> String {
    format!(
        "SURGE_{}",
        path.iter()
            .map(|p| p.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join("__")
    )
}

fn env_provider(
    vars: &[(String, String)],
    raw: &std::collections::HashSet<String>,
) -> impl figment::Provider {
    // figment's Env reads the process environment; feed it a fixed snapshot
    // instead by building the nested map ourselves.
    let mut root = figment::value::Dict::new();
    for (key, value) in vars {
        let path: Vec<String> = key["SURGE_".len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        let value = if raw.contains(key) {
            value.clone().into()
        } else {
            parse_env_value(value)
        };
        insert(&mut root, &path, value);
    }
    Serialized::globals(root).profile(figment::Profile::Default)
}

fn insert(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry(head.clone())
                .or_insert_with(|| figment::value::Dict::new().into());
            if let figment::value::Value::Dict(_, child) = entry {
                insert(child, rest, value);
            }
        }
    }
}

fn parse_env_value(raw: &str) -> figment::value::Value {
    raw.parse::<figment::value::Value>()
        .unwrap_or_else(|_| raw.to_string().into())
}

/// A file that is not TOML: the line and column of the first mistake.
fn syntax_error(file: &Path, text: &str, e: &toml::de::Error) -> SettingsError {
    let what = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = e.span() else {
        return SettingsError {
            message: format!("bad TOML in {}: {what}", file.display()),
        };
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    SettingsError {
        message: format!(
            "bad TOML in {}, column {column}: {what}",
            at_line(file, text, line)
        ),
    }
}

/// The environment variable that set `path` or something under it, as
/// given: `SURGE_KAFKA__CLIENT_ID` for `kafka.client_id`, and for an
/// unknown section `bogus` the `SURGE_BOGUS__X` that brought it in.
fn env_source<'a>(path: &[String], env: &'a [(String, String)]) -> Option<&'a str> {
    let var = env_var_for(path);
    if let Some((k, _)) = env.iter().find(|(k, _)| k.eq_ignore_ascii_case(&var)) {
        return Some(k);
    }
    if path.is_empty() {
        return None;
    }
    let under = format!("{var}__");
    env.iter()
        .find(|(k, _)| {
            k.len() > under.len()
                && k.is_char_boundary(under.len())
                && k[..under.len()].eq_ignore_ascii_case(&under)
        })
        .map(|(k, _)| k.as_str())
}

/// `a`, `a` or `b`, or one of: `a`, `b`, `c`.
fn one_of(expected: &[&str]) -> String {
    let quoted: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
    match quoted.as_slice() {
        [] => "nothing".into(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of: {}", quoted.join(", ")),
    }
}

fn explain(
    e: figment::Error,
    file: Option<&(PathBuf, String)>,
    env: &[(String, String)],
) -> SettingsError {
    let path = e.path.clone();
    let what = match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            format!(
                "unknown key `{field}`; expected one of: {}",
                expected.join(", ")
            )
        }
        figment::error::Kind::UnknownVariant(value, expected) => {
            format!("unknown value `{value}`; expected {}", one_of(expected))
        }
        other => other.to_string(),
    };
    let key = path.join(".");
    // A value from the environment: name the variable.
    if let Some(var) = env_source(&path, env) {
        return SettingsError {
            message: format!("bad setting in environment variable {var}: {what}"),
        };
    }
    if let Some((file, text)) = file {
        if let Some(line) = locate(text, &path) {
            return SettingsError {
                message: format!(
                    "bad setting in {}, key `{key}`: {what}",
                    at_line(file, text, line)
                ),
            };
        }
        if key.is_empty() {
            return SettingsError {
                message: format!("bad setting in {}: {what}", file.display()),
            };
        }
        return SettingsError {
            message: format!("bad setting in {}, key `{key}`: {what}", file.display()),
        };
    }
    if key.is_empty() {
        return SettingsError {
            message: format!("bad setting: {what}"),
        };
    }
    SettingsError {
        message: format!("bad setting `{key}`: {what}"),
    }
}

/// 1-based line of `path` (section... key) in a TOML text, by a plain scan:
/// the last `[a.b]` header seen must equal the leading path segments.
fn locate(text: &str, path: &[String]) -> Option<usize> {
    let (key, sections) = path.split_last()?;
    let want = sections.join(".");
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            current = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if current == path.join(".") {
                return Some(i + 1); // a whole section is wrong (e.g. unknown section)
            }
            continue;
        }
        let Some((k, _)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        if current == want && k == key {
            return Some(i + 1);
        }
        // Dotted keys written inline: `kafka.client_id = ...` at top level.
        if current.is_empty() && k == path.join(".") {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let f = file("[kafka]\nbootstrap_servers = \"b1:9092\"\nclient_id = \"from-file\"\n");
        let env = vec![
            ("SURGE_KAFKA__CLIENT_ID".to_string(), "from-env".to_string()),
            (
                "SURGE_KAFKA__LIBRDKAFKA__SOCKET.KEEPALIVE.ENABLE".to_string(),
                "true".to_string(),
            ),
            (
                "SURGE_KAFKA__LIBRDKAFKA__SESSION.TIMEOUT.MS".to_string(),
                "6000".to_string(),
            ),
            ("SURGE_STACK_DIR".to_string(), "/not/a/setting".to_string()),
            (
                "SURGE_PIPELINES__COUPON__INSTANCE_ID".to_string(),
                "0".to_string(),
            ),
            (
                "SURGE_PIPELINES__COUPON__MAX_BATCH_RECORDS".to_string(),
                "250".to_string(),
            ),
            (
                "SURGE_PIPELINES__COUPON__INJECT_ABORT_RATIO".to_string(),
                "0.25".to_string(),
            ),
            (
                "SURGE_PIPELINES__COUPON__COMMIT_INTERVAL".to_string(),
                "20ms".to_string(),
            ),
            (
                "SURGE_TOPICS__REPLICATION_FACTOR".to_string(),
                "3".to_string(),
            ),
            (
                "SURGE_KAFKA__SASL_PASSWORD".to_string(),
                "12345".to_string(),
            ),
        ];
        let s = Settings::load_from(Some(f.path()), env).unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "b1:9092");
        assert_eq!(s.kafka.client_id, "from-env");
        assert_eq!(
            s.kafka
                .librdkafka
                .get("socket.keepalive.enable")
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(
            s.kafka
                .librdkafka
                .get("session.timeout.ms")
                .map(String::as_str),
            Some("6000")
        );
        assert_eq!(s.registry, RegistrySettings::default());
        assert_eq!(s.pipelines.coupon.instance_id, "0");
        assert_eq!(s.pipelines.coupon.max_batch_records, 250);
        assert_eq!(s.pipelines.coupon.inject_abort_ratio, 0.25);
        assert_eq!(
            s.pipelines.coupon.commit_interval,
            std::time::Duration::from_millis(20)
        );
        assert_eq!(s.topics.replication_factor, Some(3));
        assert_eq!(
            s.kafka.sasl_password.as_deref(),
            Some("12345"),
            "a numeric secret stays a string"
        );
    }

    #[test]
    fn the_shipped_config_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/surge.toml");
        Settings::load_from(Some(&path), no_env()).expect("config/surge.toml is valid");
    }

    #[test]
    fn the_coupon_dedupe_window_is_positive_and_the_coupon_pipelines_alone() {
        let s = Settings::load_from(None, no_env()).unwrap();
        assert_eq!(
            s.pipelines.coupon.dedupe_window, None,
            "unset: the pipeline's 7 days"
        );
        let f = file("[pipelines.coupon]\ndedupe_window = \"36h\"\n");
        let s = Settings::load_from(Some(f.path()), no_env()).unwrap();
        assert_eq!(
            s.pipelines.coupon.dedupe_window,
            Some(std::time::Duration::from_secs(36 * 3600))
        );
        let env = vec![(
            "SURGE_PIPELINES__COUPON__DEDUPE_WINDOW".to_string(),
            "2d".to_string(),
        )];
        let s = Settings::load_from(None, env).unwrap();
        assert_eq!(
            s.pipelines.coupon.dedupe_window,
            Some(std::time::Duration::from_secs(2 * 86400))
        );
        for (toml, why) in [
            (
                "[pipelines.coupon]\ndedupe_window = \"0s\"\n",
                "greater than 0",
            ),
            (
                "[pipelines.order]\ndedupe_window = \"1d\"\n",
                "only the coupon pipeline",
            ),
        ] {
            let f = file(toml);
            let err = Settings::load_from(Some(f.path()), no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{toml}: {err}");
        }
    }

    #[test]
    fn an_early_commit_comes_no_later_than_the_interval() {
        let s = Settings::load_from(None, no_env()).unwrap();
        assert_eq!(
            s.pipelines.order.min_commit_interval,
            std::time::Duration::from_millis(20)
        );
        // Equal to the interval is allowed: early commits are then off.
        let f = file(
            "[pipelines.payment]\ncommit_interval = \"50ms\"\nmin_commit_interval = \"50ms\"\n",
        );
        Settings::load_from(Some(f.path()), no_env()).unwrap();
        let f = file("[pipelines.inventory]\nmin_commit_interval = \"200ms\"\n");
        let err = Settings::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pipelines.inventory.min_commit_interval")
                && err.contains("must not exceed pipelines.inventory.commit_interval"),
            "{err}"
        );
    }

    #[test]
    fn a_batch_holds_at_least_one_request_and_its_body_limit_follows_its_size() {
        let s = Settings::load_from(None, no_env()).unwrap();
        assert_eq!(s.gateway.max_batch_requests, 500);
        assert_eq!(s.gateway.max_batch_body_bytes(), 500 * BATCH_ITEM_BYTES);
        let f = file("[gateway]\nmax_batch_requests = 1\n");
        let one = Settings::load_from(Some(f.path()), no_env()).unwrap();
        assert_eq!(
            one.gateway.max_batch_body_bytes(),
            one.gateway.max_body_bytes,
            "never below the single-request limit"
        );
        let f = file("[gateway]\nmax_batch_requests = 0\n");
        let err = Settings::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.max_batch_requests"), "{err}");
        let f = file("[gateway]\nmax_batch_calls = 0\n");
        let err = Settings::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.max_batch_calls"), "{err}");
    }

    #[test]
    fn unknown_key_names_the_line() {
        let f = file("[kafka]\nclient_id = \"x\"\nbootstrap_server = \"typo:9092\"\n");
        let err = Settings::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("unknown key `bootstrap_server`"), "{err}");
        assert!(
            err.contains("bootstrap_servers"),
            "suggests the right key: {err}"
        );
    }

    #[test]
    fn bad_value_names_the_line() {
        let f = file("[kafka]\nsecurity_protocol = \"tls\"\n");
        let err = Settings::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("security_protocol"), "{err}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = vec![(
            "SURGE_POSTGRES__MAX_CONNECTIONS".to_string(),
            "many".to_string(),
        )];
        let err = Settings::load_from(None, env).unwrap_err().to_string();
        assert!(err.contains("SURGE_POSTGRES__MAX_CONNECTIONS"), "{err}");
    }

    #[test]
    fn toml_syntax_error_is_reported() {
        let f = file("[kafka\nclient_id = 1\n");
        let err = Settings::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1 (`[kafka`)"), "{err}");
        assert!(!err.contains("key ``"), "no empty key: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let f = file("[kafka]\nclient_id = \"x\"\nsecurity_protocol = plaintext\n");
        let err = Settings::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3 (`security_protocol = plaintext`)"),
            "{err}"
        );
    }

    /// The error for `toml` as the file, and for `var=value` in the environment.
    fn file_error(toml: &str) -> String {
        let f = file(toml);
        Settings::load_from(Some(f.path()), no_env())
            .expect_err(toml)
            .to_string()
    }

    fn env_error(var: &str, value: &str) -> String {
        Settings::load_from(None, vec![(var.to_string(), value.to_string())])
            .expect_err(var)
            .to_string()
    }

    /// `toml` is refused naming `key` and its line; `var=value` naming the
    /// variable and the key it sets; both saying `why`.
    fn refused(toml: &str, line: usize, key: &str, var: &str, value: &str, why: &str) {
        let err = file_error(toml);
        assert!(
            err.contains(&format!("line {line} (`"))
                && err.contains(&format!("key `{key}`"))
                && err.contains(why),
            "{toml}: {err}"
        );
        let var_key = var["SURGE_".len()..]
            .replace("__", ".")
            .to_ascii_lowercase();
        let err = env_error(var, value);
        assert!(
            err.contains(&format!("environment variable {var} (key `{var_key}`)"))
                && err.contains(why),
            "{var}={value}: {err}"
        );
    }

    #[test]
    fn the_defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn an_abort_ratio_is_a_probability() {
        refused(
            "[pipelines.coupon]\ninstance_id = \"0\"\ninject_abort_ratio = 7.5\n",
            3,
            "pipelines.coupon.inject_abort_ratio",
            "SURGE_PIPELINES__ORDER__INJECT_ABORT_RATIO",
            "NaN",
            "between 0 and 1",
        );
        let err = env_error("SURGE_PIPELINES__PAYMENT__INJECT_ABORT_RATIO", "-0.1");
        assert!(
            err.contains("SURGE_PIPELINES__PAYMENT__INJECT_ABORT_RATIO")
                && err.contains("got -0.1"),
            "{err}"
        );
        let err = file_error("[pipelines.inventory]\ninject_abort_ratio = nan\n");
        assert!(
            err.contains("pipelines.inventory.inject_abort_ratio"),
            "{err}"
        );
        for ok in ["0", "1", "1.0", "0.25"] {
            let env = vec![(
                "SURGE_PIPELINES__COUPON__INJECT_ABORT_RATIO".to_string(),
                ok.to_string(),
            )];
            Settings::load_from(None, env).expect(ok);
        }
    }

    #[test]
    fn a_pipeline_batch_holds_at_least_one_record() {
        refused(
            "[pipelines.order]\nmax_batch_records = 0\n",
            2,
            "pipelines.order.max_batch_records",
            "SURGE_PIPELINES__INVENTORY__MAX_BATCH_RECORDS",
            "0",
            "at least 1",
        );
    }

    #[test]
    fn the_compatibility_level_is_a_confluent_one() {
        refused(
            "[registry]\ncompatibility = \"backwards\"\n",
            2,
            "registry.compatibility",
            "SURGE_REGISTRY__COMPATIBILITY",
            "SIDEWAYS",
            "expected one of: `BACKWARD`, `BACKWARD_TRANSITIVE`",
        );
        for level in COMPATIBILITY_LEVELS {
            let env = vec![(
                "SURGE_REGISTRY__COMPATIBILITY".to_string(),
                level.to_string(),
            )];
            let s = Settings::load_from(None, env).expect(level);
            assert_eq!(s.registry.compatibility, *level);
        }
    }

    #[test]
    fn urls_are_absolute_with_a_scheme_their_client_takes() {
        refused(
            "[registry]\nurl = \"notaurl\"\n",
            2,
            "registry.url",
            "SURGE_PAYMENT__URL",
            "notaurl",
            "not an absolute URL",
        );
        for (var, value, why) in [
            (
                "SURGE_REGISTRY__URL",
                "ftp://registry:8081",
                "scheme `ftp://`",
            ),
            ("SURGE_REGISTRY__URL", "http://", "no host"),
            ("SURGE_PAYMENT__URL", "http://pg sim:8090", "spaces"),
            ("SURGE_PAYMENT__URL", "http://pg-sim:99999", "port"),
            (
                "SURGE_POSTGRES__URL",
                "127.0.0.1:5432/surge",
                "not an absolute URL",
            ),
            (
                "SURGE_POSTGRES__URL",
                "redis://127.0.0.1:6379",
                "scheme `redis://`",
            ),
            ("SURGE_REDIS__URL", "redis://", "no host"),
            ("SURGE_REDIS__URL", "unix://", "no socket path"),
            ("SURGE_REDIS__URL", "127.0.0.1:6379", "not an absolute URL"),
        ] {
            let err = env_error(var, value);
            assert!(
                err.contains(var) && err.contains(why),
                "{var}={value}: {err}"
            );
        }
        // The value may hold a password: it is not repeated.
        let err = env_error("SURGE_POSTGRES__URL", "postgres//surge:s3cret@db/surge");
        assert!(
            err.contains("postgres.url") && !err.contains("s3cret"),
            "{err}"
        );
        let f = file("[postgres]\nurl = \"postgresql://surge:s3cret@db:5432/surge\"\n");
        Settings::load_from(Some(f.path()), no_env()).unwrap();
        for (var, value) in [
            (
                "SURGE_REGISTRY__URL",
                "https://user:pass@registry.example:443/apis/ccompat/v7",
            ),
            ("SURGE_PAYMENT__URL", "http://[::1]:8090"),
            (
                "SURGE_POSTGRES__URL",
                "postgres:///surge?host=/run/postgresql",
            ),
            ("SURGE_REDIS__URL", "rediss://:p@ss@cache:6380/0"),
            ("SURGE_REDIS__URL", "redis+unix:///run/redis.sock?db=1"),
            ("SURGE_REDIS__URL", "unix:///run/redis.sock"),
        ] {
            let env = vec![(var.to_string(), value.to_string())];
            Settings::load_from(None, env).expect(value);
        }
    }

    #[test]
    fn a_gateway_body_limit_of_zero_is_refused() {
        refused(
            "[gateway]\nmax_body_bytes = 0\n",
            2,
            "gateway.max_body_bytes",
            "SURGE_GATEWAY__MAX_BODY_BYTES",
            "0",
            "at least 1",
        );
    }

    #[test]
    fn the_gateway_serves_at_least_one_connection_with_timeouts_above_zero() {
        refused(
            "[gateway]\nlisten = \"127.0.0.1:8080\"\nmax_connections = 0\n",
            3,
            "gateway.max_connections",
            "SURGE_GATEWAY__MAX_CONNECTIONS",
            "0",
            "at least 1",
        );
        for key in ["header_read_timeout", "body_read_timeout", "idle_timeout"] {
            refused(
                &format!("[gateway]\n{key} = \"0s\"\n"),
                2,
                &format!("gateway.{key}"),
                &format!("SURGE_GATEWAY__{}", key.to_ascii_uppercase()),
                "0ms",
                "more than 0",
            );
        }
    }

    #[test]
    fn the_topic_name_prefix_holds_only_what_kafka_allows() {
        refused(
            "[topics]\nname_prefix = \"tenant a/\"\n",
            2,
            "topics.name_prefix",
            "SURGE_TOPICS__NAME_PREFIX",
            "t1:",
            "not allowed in a Kafka topic name",
        );
        let err = env_error("SURGE_TOPICS__NAME_PREFIX", &"x".repeat(240));
        assert!(
            err.contains("SURGE_TOPICS__NAME_PREFIX") && err.contains("too long"),
            "{err}"
        );
        let env = vec![(
            "SURGE_TOPICS__NAME_PREFIX".to_string(),
            "Tenant-A.run_1-".to_string(),
        )];
        let s = Settings::load_from(None, env).unwrap();
        assert_eq!(s.topics.name_prefix, "Tenant-A.run_1-");
    }

    #[test]
    fn the_log_level_is_a_valid_filter() {
        refused(
            "[log]\nlevel = \"info,,,=x[\"\n",
            2,
            "log.level",
            "SURGE_LOG__LEVEL",
            "surge=loud",
            "not a valid tracing filter",
        );
        let env = vec![(
            "SURGE_LOG__LEVEL".to_string(),
            "warn,surge=debug,rdkafka=off".to_string(),
        )];
        Settings::load_from(None, env).unwrap();
    }

    #[test]
    fn an_unknown_section_from_the_environment_names_the_variable() {
        // Even with a file: the key did not come from it.
        let f = file("[kafka]\nclient_id = \"x\"\n");
        let env = vec![("SURGE_BOGUS__X".to_string(), "1".to_string())];
        let err = Settings::load_from(Some(f.path()), env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable SURGE_BOGUS__X")
                && err.contains("unknown key `bogus`"),
            "{err}"
        );
        let env = vec![(
            "SURGE_PIPELINES__CUPON__INSTANCE_ID".to_string(),
            "1".to_string(),
        )];
        let err = Settings::load_from(Some(f.path()), env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment variable SURGE_PIPELINES__CUPON__INSTANCE_ID"),
            "{err}"
        );
        // A section of the file itself still names its line.
        let f = file("[kafka]\nclient_id = \"x\"\n\n[bogus]\nx = 1\n");
        let err = Settings::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn a_value_outside_a_list_is_named_with_the_list() {
        let err = file_error("[kafka]\nsecurity_protocol = \"tls\"\n");
        assert!(
            err.contains(
                "unknown value `tls`; expected one of: `plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl`"
            ),
            "{err}"
        );
        assert!(!err.contains("``"), "{err}");
        let err = env_error("SURGE_LOG__FORMAT", "xml");
        assert!(
            err.contains("SURGE_LOG__FORMAT") && err.contains("expected `text` or `json`"),
            "{err}"
        );
    }

    #[test]
    fn a_rule_across_keys_points_at_the_one_that_was_set() {
        // min_commit_interval is the default (20ms); the interval was set.
        let err = env_error("SURGE_PIPELINES__ORDER__COMMIT_INTERVAL", "10ms");
        assert!(
            err.contains("SURGE_PIPELINES__ORDER__COMMIT_INTERVAL")
                && err.contains("must not exceed pipelines.order.commit_interval"),
            "{err}"
        );
    }
}

/// What stands in for a secret wherever settings are shown.
pub const REDACTED: &str = "<redacted>";

/// `url` with the password of its user info (`scheme://user:password@host`)
/// replaced by [`REDACTED`]; any other URL unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}@{host}{tail}"),
        None => url.to_string(),
    }
}

impl Settings {
    /// A copy fit to print or log: every password, token and secret
    /// replaced by [`REDACTED`] (the SASL password, the admin tokens, the
    /// passwords inside the PostgreSQL, Redis and registry URLs, and raw
    /// librdkafka properties that name a password or secret).
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        let hide = |v: &mut Option<String>| {
            if v.as_deref().is_some_and(|t| !t.is_empty()) {
                *v = Some(REDACTED.into());
            }
        };
        hide(&mut s.kafka.sasl_password);
        hide(&mut s.gateway.admin_token);
        hide(&mut s.pg_sim.admin_token);
        s.postgres.url = redact_url(&s.postgres.url);
        s.redis.url = redact_url(&s.redis.url);
        s.registry.url = redact_url(&s.registry.url);
        s.payment.url = redact_url(&s.payment.url);
        for (key, value) in s.kafka.librdkafka.iter_mut() {
            let k = key.to_ascii_lowercase();
            if k.contains("password")
                || k.contains("secret")
                || k.contains("sasl.oauthbearer.config")
            {
                *value = REDACTED.into();
            }
        }
        s
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_nothing_else() {
        assert_eq!(
            redact_url("postgres://surge:s3cret@db:5432/surge?sslmode=require"),
            "postgres://surge:<redacted>@db:5432/surge?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:p@ss@cache:6379/0"),
            "redis://:<redacted>@cache:6379/0"
        );
        for same in [
            "redis://127.0.0.1:6379",
            "postgres://surge@db/surge",
            "http://host/path@x",
            "not a url",
        ] {
            assert_eq!(redact_url(same), same);
        }
    }

    #[test]
    fn every_secret_is_redacted() {
        let mut s = Settings::default();
        s.kafka.sasl_password = Some("k-secret".into());
        s.gateway.admin_token = Some("gw-secret".into());
        s.pg_sim.admin_token = Some("sim-secret".into());
        s.postgres.url = "postgres://u:pg-secret@h/db".into();
        s.redis.url = "redis://:redis-secret@h:6379".into();
        s.kafka
            .librdkafka
            .insert("ssl.key.password".into(), "key-secret".into());
        let shown = toml::to_string(&s.redacted()).unwrap();
        for secret in [
            "k-secret",
            "gw-secret",
            "sim-secret",
            "pg-secret",
            "redis-secret",
            "key-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains("postgres://u:<redacted>@h/db"));
    }
}
