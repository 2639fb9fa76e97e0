//! The dashboards show the system: Prometheus (Debian's package, from
//! scripts/lib/ensure-prometheus) scrapes a demo run of every surge process,
//! and every query of every dashboard in config/grafana/dashboards —
//! panel targets and variable queries, with Grafana's variables substituted
//! as Grafana would — parses and returns data through the HTTP API.
//!
//! Also: `promtool check config` passes on config/prometheus/prometheus.yml,
//! whose targets are exactly the processes and ports of the default
//! settings; the test scrapes with a copy of it whose targets are moved to
//! the run's ports (free ones: a developer's own processes may hold the
//! defaults), so the dashboards see the labels (`job`, `process`) the shipped
//! file gives.
//!
//! The run makes the events the panels need: an order sale (orders,
//! inventory, coupons, payments, pg-sim, refunds of cancelled paid orders),
//! coupon requests through the gateway, and one undecodable record, which
//! must show as an increase of the dead-letter counter: a counter that
//! exists at 0 before its first event.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::coupon::Fixture;
use common::gateway::{spawn_gateway, ADMIN_TOKEN};
use common::orders::{produce, spawn, Tail};
use common::payments::{spawn_payment, start_pg_sim};
use common::{repo_root, stderr, surge};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use surge_core::Settings;
use surge_schemas::coupon::CouponCommand;
use surge_schemas::order::{OrderCancel, OrderState, OrderStatus};
use surge_schemas::{Contract, TopicCodec};

/// The test Prometheus's scrape interval, and `$__rate_interval` as Grafana
/// derives it from that (4 × the scrape interval at least).
const SCRAPE_INTERVAL: &str = "1s";
const RATE_INTERVAL: &str = "4s";

/// Every process the shipped scrape config names, by its `process` label,
/// with the port the default settings give it.
fn default_ports(s: &Settings) -> BTreeMap<&'static str, u16> {
    BTreeMap::from([
        ("pipeline-coupon", s.pipelines.coupon.metrics_listen.port()),
        (
            "pipeline-inventory",
            s.pipelines.inventory.metrics_listen.port(),
        ),
        ("pipeline-order", s.pipelines.order.metrics_listen.port()),
        (
            "pipeline-payment",
            s.pipelines.payment.metrics_listen.port(),
        ),
        ("sink-postgres", s.sinks.postgres.metrics_listen.port()),
        ("sink-redis", s.sinks.redis.metrics_listen.port()),
        ("gateway", s.gateway.listen.port()),
        ("pg-sim", s.pg_sim.listen.port()),
    ])
}

fn prometheus_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SURGE_PROMETHEUS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // Outside scripts/test: the same script (idempotent).
    let out = Command::new(repo_root().join("scripts/lib/ensure-prometheus"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/lib/ensure-prometheus");
    assert!(out.status.success(), "scripts/lib/ensure-prometheus failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn promtool_check_config(promtool: &Path, config: &Path) {
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(config)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check config {}:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `surge` job's targets of a scrape config: process label → target.
fn surge_targets(config: &Yaml) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let jobs = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j["job_name"].as_str() == Some("surge"))
        .expect("a `surge` job");
    for sc in job["static_configs"].as_sequence().expect("static_configs") {
        let process = sc["labels"]["process"]
            .as_str()
            .unwrap_or_else(|| panic!("static config without a `process` label: {sc:?}"));
        let targets = sc["targets"].as_sequence().expect("targets");
        assert_eq!(targets.len(), 1, "one target per process: {sc:?}");
        let previous = out.insert(
            process.to_string(),
            targets[0].as_str().expect("target").to_string(),
        );
        assert!(previous.is_none(), "process {process} listed twice");
    }
    out
}

/// The shipped config with the scrape interval and every target moved to this run's.
fn test_config(shipped: &Yaml, actual: &BTreeMap<&str, String>, own: &str) -> Yaml {
    let mut config = shipped.clone();
    config["global"]["scrape_interval"] = SCRAPE_INTERVAL.into();
    config["global"]["evaluation_interval"] = SCRAPE_INTERVAL.into();
    for job in config["scrape_configs"].as_sequence_mut().unwrap() {
        let surge = job["job_name"].as_str() == Some("surge");
        for sc in job["static_configs"].as_sequence_mut().unwrap() {
            let target = if surge {
                let process = sc["labels"]["process"].as_str().unwrap();
                actual[process].clone()
            } else {
                own.to_string()
            };
            sc["targets"] = Yaml::Sequence(vec![target.into()]);
        }
    }
    config
}

/// Prometheus as a child process; killed (by its pid) when dropped.
struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(binary: &Path, config: &Path, data: &Path, port: u16, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self
                .http
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query: the API's answer (status, data or error).
    async fn query(&self, expr: &str) -> Json {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("prometheus answers");
        response.json().await.expect("a JSON answer")
    }

    /// The result series of a query that must succeed.
    async fn series(&self, expr: &str) -> Vec<Json> {
        let answer = self.query(expr).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of a single-series query (None when it has no series).
    async fn value(&self, expr: &str) -> Option<f64> {
        let series = self.series(expr).await;
        series
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse().ok())
    }

    async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(Option<f64>) -> bool,
        expr: &str,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.value(expr).await;
            if check(v) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: `{expr}` is {v:?} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// One query of a dashboard: where it is, and the expression as written.
struct Query {
    dashboard: String,
    place: String,
    expr: String,
}

/// Every dashboard in config/grafana/dashboards: (file name, JSON).
fn dashboards() -> Vec<(String, Json)> {
    let dir = repo_root().join("config/grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
            out.push((name, json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn panels<'a>(list: &'a Json, out: &mut Vec<&'a Json>) {
    for p in list.as_array().into_iter().flatten() {
        out.push(p);
        // Rows hold their panels (collapsed or not).
        panels(&p["panels"], out);
    }
}

/// Every panel target and every variable query of every dashboard.
fn queries(dashboards: &[(String, Json)]) -> (Vec<Query>, usize) {
    let mut out = Vec::new();
    let mut panel_count = 0;
    for (name, d) in dashboards {
        let mut all = Vec::new();
        panels(&d["panels"], &mut all);
        for p in all {
            if p["type"] == "row" {
                continue;
            }
            panel_count += 1;
            let title = p["title"].as_str().unwrap_or("?");
            let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            assert!(!targets.is_empty(), "{name}: panel {title:?} has no query");
            assert_eq!(
                p["datasource"]["uid"], "prometheus",
                "{name}: panel {title:?} is not on the provisioned datasource"
            );
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: panel {title:?} has a target without expr"));
                out.push(Query {
                    dashboard: name.clone(),
                    place: format!("panel {title:?} {}", t["refId"]),
                    expr: expr.to_string(),
                });
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or_default();
            // label_values(metric, label): what Grafana asks /api/v1/series for.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| {
                    panic!("{name}: variable {}: unexpected query {q:?}", v["name"])
                });
            let (metric, label) = inner.rsplit_once(',').expect("label_values(metric, label)");
            out.push(Query {
                dashboard: name.clone(),
                place: format!("variable {}", v["name"]),
                expr: format!("count by ({}) ({})", label.trim(), metric.trim()),
            });
        }
    }
    (out, panel_count)
}

/// Grafana's interpolation for a dashboard showing everything: each
/// variable at its "All" value (allValue, a regex), the built-in intervals
/// from the scrape interval.
fn interpolate(expr: &str, dashboard: &Json) -> String {
    let mut vars: Vec<(String, String)> = vec![
        ("__rate_interval".into(), RATE_INTERVAL.into()),
        ("__interval".into(), SCRAPE_INTERVAL.into()),
        ("__range".into(), "15m".into()),
    ];
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = v["name"].as_str().unwrap().to_string();
        let all = v["allValue"].as_str().unwrap_or(".*").to_string();
        vars.push((name, all));
    }
    // Longest names first, so $__rate_interval is not read as $__r...
    vars.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut out = expr.to_string();
    for (name, value) in &vars {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("[[{name}]]"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(
        !out.contains('$'),
        "`{expr}` uses a variable the dashboard does not define: `{out}`"
    );
    out
}

/// Sends an order-cancel for the first order order-status shows PAID: the
/// saga asks the payment pipeline for a refund, which pg-sim approves.
async fn cancel_a_paid_order(fx: &Fixture) {
    let codec: TopicCodec<OrderStatus> = common::codec(&fx.settings).await;
    let mut tail = Tail::new(fx, OrderStatus::TOPIC);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tail.catch_up(Duration::from_millis(300));
        let statuses = tail.decoded(&codec).await;
        if let Some(paid) = statuses.iter().find(|s| s.state == OrderState::Paid) {
            let cancel = OrderCancel {
                request_id: format!("dash-cancel-{}", paid.order_id),
                order_id: paid.order_id.clone(),
                user_id: paid.user_id.clone(),
                reason: Some("dashboards test: a refund".into()),
                requested_at: surge_schemas::now(),
            };
            produce(fx, &[cancel]).await;
            return;
        }
        assert!(Instant::now() < deadline, "no order PAID within 30 s");
    }
}

async fn http_get(url: &str) -> u16 {
    reqwest::get(url).await.map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_returns_data_from_a_demo_run() {
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:>5.1} s] {what}", t0.elapsed().as_secs_f64());

    // ---- The shipped scrape config: valid, and exactly the default processes and ports.
    let prometheus_bin = prometheus_binary();
    let promtool = prometheus_bin.with_file_name("promtool");
    let shipped_path = repo_root().join("config/prometheus/prometheus.yml");
    promtool_check_config(&promtool, &shipped_path);
    let shipped: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(&shipped_path).unwrap()).unwrap();
    let defaults = default_ports(&Settings::default());
    assert_eq!(
        defaults,
        default_ports(
            &Settings::load_from(
                Some(&repo_root().join("config/surge.toml")),
                std::iter::empty()
            )
            .expect("config/surge.toml loads")
        ),
        "config/surge.toml and core/src/settings.rs disagree on a port"
    );
    let shipped_ports: BTreeMap<String, u16> = surge_targets(&shipped)
        .into_iter()
        .map(|(process, target)| {
            let port = target.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
            (
                process,
                port.unwrap_or_else(|| panic!("target {target} has no port")),
            )
        })
        .collect();
    let wanted: BTreeMap<String, u16> = defaults.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(
        shipped_ports, wanted,
        "config/prometheus/prometheus.yml must scrape exactly the default processes and ports"
    );

    // ---- The dashboards: provisioned from config/grafana/dashboards, unique uids.
    let dashboards = dashboards();
    let uids: BTreeSet<&str> = dashboards
        .iter()
        .map(|(_, d)| d["uid"].as_str().expect("a uid"))
        .collect();
    assert_eq!(
        uids.len(),
        dashboards.len(),
        "dashboard uids must be unique"
    );
    let (queries, panel_count) = queries(&dashboards);
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for (name, d) in &dashboards {
        let title = d["title"].as_str().unwrap();
        assert!(
            readme.contains(title),
            "README.md does not list dashboard {title:?} ({name})"
        );
    }
    // The figures issue 14 asks for, each on some panel.
    let all_exprs: String = queries
        .iter()
        .map(|q| q.expr.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for metric in [
        "surge_pipeline_records_in_total",
        "surge_pipeline_decisions_total",
        "surge_pipeline_commit_duration_seconds_bucket",
        "surge_pipeline_transactions_aborted_total",
        "surge_pipeline_dlq_records_total",
        "surge_pipeline_consumer_lag_records",
        "surge_pipeline_open_transaction_age_seconds",
        "surge_pipeline_state_bytes",
        "surge_pipeline_last_restore_duration_seconds",
        "surge_sink_records_total",
        "surge_sink_consumer_lag_records",
        "surge_gateway_requests_total",
        "surge_gateway_produce_seconds_bucket",
        "surge_order_sagas_open",
        "surge_payment_calls_total",
        "surge_pgsim_requests_total",
    ] {
        assert!(all_exprs.contains(metric), "no dashboard shows {metric}");
    }
    step(&format!(
        "{} dashboards, {panel_count} panels, {} queries",
        dashboards.len(),
        queries.len()
    ));

    // ---- Every process, on the real stack, under a fresh topic prefix.
    let fx = Fixture::new("dashboards").await;
    let sim = start_pg_sim(&fx, &[("latency_median_ms", "2"), ("decline_ratio", "0.1")]);
    let _processes = [
        spawn(&fx, "coupon"),
        spawn(&fx, "inventory"),
        spawn(&fx, "order"),
        spawn_payment(&fx, &sim, &[]),
        fx.spawn_sink("postgres", &[]),
        fx.spawn_sink("redis", &[]),
    ];
    let gw = spawn_gateway(&fx, &[]).await;
    let mut actual: BTreeMap<&str, String> = BTreeMap::new();
    for (process, log) in [
        ("pipeline-coupon", "pipeline-coupon.log"),
        ("pipeline-inventory", "pipeline-inventory.log"),
        ("pipeline-order", "pipeline-order.log"),
        ("pipeline-payment", "pipeline-payment.log"),
        ("sink-postgres", "sink-postgres.log"),
        ("sink-redis", "sink-redis.log"),
    ] {
        let log = fx.logs.join(log);
        common::wait_for_log(&log, "metrics and health address=", Duration::from_secs(60));
        actual.insert(process, common::metrics_address(&log));
    }
    actual.insert("gateway", gw.url.trim_start_matches("http://").to_string());
    actual.insert("pg-sim", sim.url.trim_start_matches("http://").to_string());
    step("surge processes started");

    // ---- Prometheus on a copy of the shipped config, scraping this run.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let own = format!("127.0.0.1:{port}");
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(
        &config_path,
        serde_yaml::to_string(&test_config(&shipped, &actual, &own)).unwrap(),
    )
    .unwrap();
    promtool_check_config(&promtool, &config_path);
    let prom = Prometheus::start(
        &prometheus_bin,
        &config_path,
        &dir.path().join("data"),
        port,
        &fx.logs.join("prometheus.log"),
    );
    prom.wait_ready(Duration::from_secs(30)).await;
    let processes = actual.len() as f64;
    prom.wait_until(
        "every surge process scraped",
        Duration::from_secs(30),
        |v| v == Some(processes),
        r#"count(up{job="surge"} == 1)"#,
    )
    .await;
    // One more scrape: the counters' zeros are stored before any event.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    step("prometheus scrapes every process");

    // ---- The events the panels show.
    // One record that does not decode: dead-lettered by the coupon pipeline.
    let producer = fx.factory.idempotent_producer("test-producer").unwrap();
    surge_kafka::produce_in_order(
        &producer,
        &fx.topic(CouponCommand::TOPIC),
        vec![("dash-poison".to_string(), b"not an avro record".to_vec())],
        |_| {},
    )
    .await
    .expect("produce the undecodable record");
    let env = [
        ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
        ("SURGE_GATEWAY__ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let manifest = fx.logs.join("manifest-gateway.json");
    let out = surge(
        &[
            "loadgen",
            "--target",
            "gateway",
            "--gateway-url",
            &gw.url,
            "--requests",
            "300",
            "--users",
            "100",
            "--stock",
            "50",
            "--concurrency",
            "16",
            "--id-prefix",
            "dash-gw",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest = fx.logs.join("manifest-orders.json");
    let out = surge(
        &[
            "loadgen",
            "--orders",
            "120",
            "--users",
            "60",
            "--products",
            "5",
            "--waves",
            "4",
            "--wave-pause-ms",
            "150",
            "--id-prefix",
            "dash-sale",
            "--manifest",
            manifest.to_str().unwrap(),
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A refund for sure (the sale's own cancels may all come before payment):
    // cancel an order that is PAID.
    cancel_a_paid_order(&fx).await;
    // Reads and a 404 as well as the commands.
    assert_eq!(
        http_get(&format!("{}/coupons/never-created", gw.url)).await,
        404
    );
    assert_eq!(http_get(&format!("{}/health", gw.url)).await, 200);
    step("traffic sent");

    // The dead letter moved a counter that existed at 0: an increase, not a
    // series born at 1 that rate() and increase() cannot see.
    prom.wait_until(
        "the undecodable record counted",
        Duration::from_secs(30),
        |v| v.is_some_and(|v| v > 0.0),
        r#"sum(increase(surge_pipeline_dlq_records_total{pipeline="coupon",reason="bad_magic"}[1m]))"#,
    )
    .await;

    // ---- Every query of every dashboard parses and returns data.
    let by_name: BTreeMap<&str, &Json> = dashboards.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let mut pending: Vec<(&Query, String)> = queries
        .iter()
        .map(|q| (q, interpolate(&q.expr, by_name[q.dashboard.as_str()])))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let mut still = Vec::new();
        for (q, expr) in pending {
            let answer = prom.query(&expr).await;
            assert_eq!(
                answer["status"], "success",
                "{} {}: `{expr}` does not evaluate: {answer}",
                q.dashboard, q.place
            );
            let result = answer["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if result.is_empty() {
                still.push((q, expr));
            } else if result.iter().all(|r| r["value"][1] == "NaN") {
                // Data, but nothing observed in the window (a histogram
                // with no new observation): worth seeing, not a failure.
                eprintln!("  only NaN now: {} {}", q.dashboard, q.place);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "{} queries return no data:\n{}",
                pending.len(),
                pending
                    .iter()
                    .map(|(q, e)| format!("  {} {}: {e}", q.dashboard, q.place))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    step(&format!("all {} queries return data", queries.len()));
}
