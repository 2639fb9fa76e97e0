//! docker-compose.yml must stay consistent with config/surge.toml (and with
//! scripts/stack, the no-Docker stack): a user who runs `docker compose up`
//! and then `cargo run -- ...` with the default configuration must reach every
//! service. No services or Docker needed: the files are parsed and compared.
//!
//! The checks live in `check_compose`, which returns every problem found, so a
//! second set of tests can feed it deliberately broken copies and prove that
//! each property is actually checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value as Yaml;

fn repo() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

fn read(path: &str) -> String {
    let file = repo().join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
}

fn load_compose() -> Yaml {
    serde_yaml::from_str(&read("docker-compose.yml"))
        .unwrap_or_else(|e| panic!("docker-compose.yml is not valid YAML: {e}"))
}

fn load_settings() -> toml::Value {
    toml::from_str(&read("config/surge.toml"))
        .unwrap_or_else(|e| panic!("config/surge.toml is not valid TOML: {e}"))
}

fn load_topics() -> toml::Value {
    toml::from_str(&read("config/topics.toml"))
        .unwrap_or_else(|e| panic!("config/topics.toml is not valid TOML: {e}"))
}

fn load_prometheus() -> Yaml {
    serde_yaml::from_str(&read("config/prometheus/prometheus.yml"))
        .unwrap_or_else(|e| panic!("config/prometheus/prometheus.yml is not valid YAML: {e}"))
}

// ------------------------------------------------------------------ parsing --

/// host:port of a URL (`scheme://[user[:password]@]host[:port][/path]`) or of a
/// bare `host:port`, with the user, password and path when present.
#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    host: String,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    path: String,
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, String::new()),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(n.to_string()), Some(p.to_string())),
            None => (Some(u.to_string()), None),
        },
        None => (None, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((h, p)) if !hostport.ends_with(']') => (
            h.to_string(),
            Some(
                p.parse::<u16>()
                    .map_err(|e| format!("bad port `{p}` in `{s}`: {e}"))?,
            ),
        ),
        _ => (hostport.to_string(), None),
    };
    if host.is_empty() {
        return Err(format!("no host in `{s}`"));
    }
    Ok(Endpoint {
        host,
        port,
        user,
        password,
        path,
    })
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]")
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn service<'a>(compose: &'a Yaml, name: &str) -> Option<&'a Yaml> {
    compose.get("services")?.get(name)
}

/// A service's environment, whether written as a mapping or as a `KEY=value` list.
fn environment(svc: &Yaml) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match svc.get("environment") {
        Some(Yaml::Mapping(m)) => {
            for (k, v) in m {
                if let Some(k) = scalar(k) {
                    env.insert(k, scalar(v).unwrap_or_default());
                }
            }
        }
        Some(Yaml::Sequence(items)) => {
            for item in items.iter().filter_map(scalar) {
                let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
                env.insert(k.to_string(), v.to_string());
            }
        }
        _ => {}
    }
    env
}

/// One published port: `[host_ip:]published:target[/protocol]` or the long syntax.
#[derive(Debug, Clone, PartialEq)]
struct Published {
    host_ip: Option<String>,
    published: u16,
    target: u16,
}

fn published_ports(svc: &Yaml) -> Result<Vec<Published>, String> {
    let mut out = Vec::new();
    let Some(Yaml::Sequence(ports)) = svc.get("ports") else {
        return Ok(out);
    };
    for p in ports {
        match p {
            Yaml::Mapping(_) => {
                let num = |key: &str| -> Result<u16, String> {
                    let v = p
                        .get(key)
                        .and_then(scalar)
                        .ok_or_else(|| format!("port entry {p:?} has no `{key}`"))?;
                    v.parse()
                        .map_err(|e| format!("port entry {p:?}: bad `{key}` {v}: {e}"))
                };
                out.push(Published {
                    host_ip: p.get("host_ip").and_then(scalar),
                    published: num("published")?,
                    target: num("target")?,
                });
            }
            other => {
                let s = scalar(other).ok_or_else(|| format!("unreadable port entry {other:?}"))?;
                let s = s.split('/').next().unwrap_or_default();
                let parts: Vec<&str> = s.rsplitn(3, ':').collect(); // target, published, host_ip
                let num = |x: &str| {
                    x.parse::<u16>()
                        .map_err(|e| format!("port entry `{s}`: bad port `{x}`: {e}"))
                };
                match parts.as_slice() {
                    [target, published, host_ip] => out.push(Published {
                        host_ip: Some(host_ip.to_string()),
                        published: num(published)?,
                        target: num(target)?,
                    }),
                    [target, published] => {
                        out.push(Published { host_ip: None, published: num(published)?, target: num(target)? })
                    }
                    _ => return Err(format!("port entry `{s}` publishes no host port (a random one is useless to config/surge.toml)")),
                }
            }
        }
    }
    Ok(out)
}

/// Bind-mount sources of a service (short `src:dst[:mode]` or long syntax);
/// named volumes are left out.
fn bind_sources(svc: &Yaml) -> Vec<String> {
    let mut out = Vec::new();
    let Some(Yaml::Sequence(volumes)) = svc.get("volumes") else {
        return out;
    };
    for v in volumes {
        let source = match v {
            Yaml::Mapping(_) => v.get("source").and_then(scalar),
            other => scalar(other).and_then(|s| s.split(':').next().map(str::to_string)),
        };
        if let Some(src) = source {
            if src.starts_with("./") || src.starts_with("../") || src.starts_with('/') {
                out.push(src);
            }
        }
    }
    out
}

fn toml_str<'a>(v: &'a toml::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `NAME://host:port` entries of a Kafka listener list, by listener name.
fn listeners(list: &str) -> BTreeMap<String, Endpoint> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .filter_map(|l| {
            let (name, _) = l.trim().split_once("://")?;
            let mut ep = parse_endpoint(l.trim()).ok().or_else(|| {
                // `NAME://:9092` binds every interface.
                let port = l.trim().rsplit_once(':')?.1.parse().ok()?;
                Some(Endpoint {
                    host: String::new(),
                    port: Some(port),
                    user: None,
                    password: None,
                    path: String::new(),
                })
            })?;
            if ep.host == "0.0.0.0" {
                ep.host.clear();
            }
            Some((name.to_string(), ep))
        })
        .collect()
}

// ------------------------------------------------------------------- checks --

/// Checks that `name` publishes `want` (from config/surge.toml's `what`) on
/// loopback, and returns the container port it maps to.
fn check_published(
    problems: &mut Vec<String>,
    compose: &Yaml,
    name: &str,
    what: &str,
    want: &Endpoint,
) -> Option<u16> {
    let Some(svc) = service(compose, name) else {
        problems.push(format!(
            "docker-compose.yml has no `{name}` service, but config/surge.toml's {what} needs one"
        ));
        return None;
    };
    let Some(want_port) = want.port else {
        problems.push(format!(
            "config/surge.toml's {what} `{}` names no port",
            want.host
        ));
        return None;
    };
    if !is_loopback(&want.host) {
        problems.push(format!(
            "config/surge.toml's {what} points at host `{}`, but docker-compose.yml's `{name}` is published on loopback",
            want.host
        ));
    }
    let ports = match published_ports(svc) {
        Ok(p) => p,
        Err(e) => {
            problems.push(format!("docker-compose.yml service `{name}`: {e}"));
            return None;
        }
    };
    match ports.iter().find(|p| p.published == want_port) {
        Some(p) => {
            if p.host_ip.as_deref().is_some_and(|ip| !is_loopback(ip)) || p.host_ip.is_none() {
                problems.push(format!(
                    "docker-compose.yml service `{name}` publishes port {want_port} on {} instead of 127.0.0.1 \
                     (scripts/stack binds loopback only)",
                    p.host_ip.as_deref().unwrap_or("every interface")
                ));
            }
            Some(p.target)
        }
        None => {
            let got: Vec<String> = ports.iter().map(|p| p.published.to_string()).collect();
            problems.push(format!(
                "port mismatch: config/surge.toml's {what} uses port {want_port}, but docker-compose.yml service \
                 `{name}` publishes host port(s) [{}]",
                got.join(", ")
            ));
            None
        }
    }
}

fn expect_env(
    problems: &mut Vec<String>,
    env: &BTreeMap<String, String>,
    svc: &str,
    key: &str,
    want: &str,
    why: &str,
) {
    match env.get(key) {
        Some(v) if v.trim().eq_ignore_ascii_case(want) => {}
        Some(v) => problems.push(format!(
            "docker-compose.yml `{svc}`: {key} is `{v}`, expected `{want}` ({why})"
        )),
        None => problems.push(format!(
            "docker-compose.yml `{svc}`: {key} is not set, expected `{want}` ({why})"
        )),
    }
}

/// Every inconsistency between docker-compose.yml, config/surge.toml,
/// config/topics.toml, config/prometheus/prometheus.yml and the files the
/// compose file mounts from `repo`. Empty when all is well.
fn check_compose(
    compose: &Yaml,
    settings: &toml::Value,
    topics: &toml::Value,
    prometheus: &Yaml,
    repo: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut endpoint = |path: &[&str]| -> Option<Endpoint> {
        let what = path.join(".");
        match toml_str(settings, path).map(parse_endpoint) {
            Some(Ok(ep)) => Some(ep),
            Some(Err(e)) => {
                problems.push(format!("config/surge.toml's {what}: {e}"));
                None
            }
            None => {
                problems.push(format!("config/surge.toml has no {what}"));
                None
            }
        }
    };
    let bootstrap: Vec<Option<Endpoint>> = toml_str(settings, &["kafka", "bootstrap_servers"])
        .map(|s| {
            s.split(',')
                .map(|b| parse_endpoint(b.trim()).ok())
                .collect()
        })
        .unwrap_or_default();
    let registry_url = endpoint(&["registry", "url"]);
    let postgres_url = endpoint(&["postgres", "url"]);
    let redis_url = endpoint(&["redis", "url"]);
    if bootstrap.is_empty() || bootstrap.iter().any(Option::is_none) {
        problems.push(
            "config/surge.toml's kafka.bootstrap_servers is missing or not a host:port list".into(),
        );
    }

    // ---- kafka: ports, listeners, KRaft, single-node settings like scripts/stack.
    let kafka_env = service(compose, "kafka")
        .map(environment)
        .unwrap_or_default();
    let listen = listeners(kafka_env.get("KAFKA_LISTENERS").map_or("", String::as_str));
    let advertised = listeners(
        kafka_env
            .get("KAFKA_ADVERTISED_LISTENERS")
            .map_or("", String::as_str),
    );
    for b in bootstrap.iter().flatten() {
        let Some(target) = check_published(
            &mut problems,
            compose,
            "kafka",
            "kafka.bootstrap_servers",
            b,
        ) else {
            continue;
        };
        // The listener on that container port must advertise the address the
        // host client bootstrapped with, or the client is redirected away.
        match listen.iter().find(|(_, ep)| ep.port == Some(target)) {
            None => problems.push(format!(
                "docker-compose.yml `kafka` publishes {:?} -> container port {target}, but KAFKA_LISTENERS has no listener on {target}",
                b.port
            )),
            Some((name, _)) => match advertised.get(name) {
                Some(ad) if ad.port == b.port && is_loopback(&ad.host) => {}
                Some(ad) => problems.push(format!(
                    "docker-compose.yml `kafka`: listener {name} advertises {}:{}, but host clients bootstrap at {}:{} \
                     (config/surge.toml kafka.bootstrap_servers)",
                    ad.host,
                    ad.port.map_or("?".into(), |p| p.to_string()),
                    b.host,
                    b.port.map_or("?".into(), |p| p.to_string())
                )),
                None => problems.push(format!(
                    "docker-compose.yml `kafka`: listener {name} (container port {target}) is not in KAFKA_ADVERTISED_LISTENERS"
                )),
            },
        }
    }
    if let Some(svc) = service(compose, "kafka") {
        match svc.get("image").and_then(scalar) {
            Some(img) if img.starts_with("apache/kafka:") => {}
            other => problems.push(format!(
                "docker-compose.yml `kafka` image is {other:?}, expected apache/kafka:<version>"
            )),
        }
        let roles = kafka_env
            .get("KAFKA_PROCESS_ROLES")
            .cloned()
            .unwrap_or_default();
        let roles: BTreeSet<&str> = roles.split(',').map(str::trim).collect();
        if !(roles.contains("controller") && roles.contains("broker")) {
            problems.push(format!(
                "docker-compose.yml `kafka` is not a combined KRaft node: KAFKA_PROCESS_ROLES is {:?}, expected broker,controller",
                kafka_env.get("KAFKA_PROCESS_ROLES")
            ));
        }
        for key in kafka_env
            .keys()
            .filter(|k| k.to_ascii_uppercase().contains("ZOOKEEPER"))
        {
            problems.push(format!(
                "docker-compose.yml `kafka` sets {key}: the stack is KRaft, no ZooKeeper"
            ));
        }
        for (key, why) in [
            (
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "one broker, like scripts/stack",
            ),
            (
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
                "one broker, like scripts/stack",
            ),
            (
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "one broker, like scripts/stack",
            ),
        ] {
            expect_env(&mut problems, &kafka_env, "kafka", key, "1", why);
        }
        expect_env(
            &mut problems,
            &kafka_env,
            "kafka",
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
            "false",
            "topics come from config/topics.toml via `surge topics apply`",
        );
    }
    if let Some(Yaml::Mapping(services)) = compose.get("services") {
        for (name, svc) in services {
            let name = scalar(name).unwrap_or_default();
            let image = svc.get("image").and_then(scalar).unwrap_or_default();
            if name.contains("zookeeper") || image.contains("zookeeper") {
                problems.push(format!("docker-compose.yml has a ZooKeeper service `{name}` ({image}): the stack is KRaft"));
            }
        }
        // config/topics.toml's defaults must be satisfiable by the brokers here.
        let brokers = services
            .values()
            .filter(|s| {
                s.get("image")
                    .and_then(scalar)
                    .is_some_and(|i| i.starts_with("apache/kafka"))
            })
            .count() as i64;
        let rf = topics
            .get("defaults")
            .and_then(|d| d.get("replication_factor"))
            .and_then(toml::Value::as_integer);
        if let Some(rf) = rf {
            if rf > brokers {
                problems.push(format!(
                    "config/topics.toml's defaults.replication_factor is {rf}, but docker-compose.yml runs {brokers} Kafka broker(s)"
                ));
            }
        }
    }

    // ---- registry: port, KafkaSQL storage on the kafka service (as scripts/stack).
    if let Some(url) = &registry_url {
        check_published(&mut problems, compose, "registry", "registry.url", url);
    }
    if let Some(svc) = service(compose, "registry") {
        let env = environment(svc);
        expect_env(
            &mut problems,
            &env,
            "registry",
            "APICURIO_STORAGE_KIND",
            "kafkasql",
            "schema ids must survive restarts, independent of PostgreSQL",
        );
        let servers = env
            .get("APICURIO_KAFKASQL_BOOTSTRAP_SERVERS")
            .cloned()
            .unwrap_or_default();
        if !servers.split(',').any(|s| s.trim().starts_with("kafka:")) {
            problems.push(format!(
                "docker-compose.yml `registry`: APICURIO_KAFKASQL_BOOTSTRAP_SERVERS is `{servers}`, expected the kafka service's internal listener (kafka:<port>)"
            ));
        }
    }

    // ---- postgres: port and credentials of postgres.url.
    if let Some(url) = &postgres_url {
        check_published(&mut problems, compose, "postgres", "postgres.url", url);
        if let Some(svc) = service(compose, "postgres") {
            let env = environment(svc);
            let db = url
                .path
                .trim_start_matches('/')
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string();
            for (key, want, part) in [
                ("POSTGRES_USER", url.user.clone(), "user"),
                ("POSTGRES_PASSWORD", url.password.clone(), "password"),
                ("POSTGRES_DB", Some(db), "database"),
            ] {
                match want {
                    Some(want) => match env.get(key) {
                        Some(got) if *got == want => {}
                        got => problems.push(format!(
                            "postgres {part} mismatch: config/surge.toml's postgres.url has `{want}`, docker-compose.yml \
                             `postgres` {key} is {}",
                            got.map_or("not set".to_string(), |g| format!("`{g}`"))
                        )),
                    },
                    None => problems.push(format!("config/surge.toml's postgres.url names no {part}")),
                }
            }
        }
    }

    // ---- redis: port.
    if let Some(url) = &redis_url {
        check_published(&mut problems, compose, "redis", "redis.url", url);
    }

    // ---- every file mounted from the repository exists.
    if let Some(Yaml::Mapping(services)) = compose.get("services") {
        for (name, svc) in services {
            let name = scalar(name).unwrap_or_default();
            for src in bind_sources(svc) {
                if src.starts_with('/') {
                    problems.push(format!("docker-compose.yml `{name}` mounts absolute host path `{src}`; use a path in the repo"));
                } else if !repo.join(&src).exists() {
                    problems.push(format!("docker-compose.yml `{name}` mounts `{src}`, which does not exist in the repo"));
                }
            }
        }
    }

    // ---- Prometheus scrapes every metrics port config/surge.toml gives a process.
    let targets: BTreeSet<u16> = prometheus
        .get("scrape_configs")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
        .filter(|job| job.get("job_name").and_then(scalar).as_deref() == Some("surge"))
        .filter_map(|job| job.get("static_configs")?.as_sequence())
        .flatten()
        .filter_map(|sc| sc.get("targets")?.as_sequence())
        .flatten()
        .filter_map(|t| parse_endpoint(&scalar(t)?).ok()?.port)
        .collect();
    if targets.is_empty() {
        problems
            .push("config/prometheus/prometheus.yml has no `surge` job with static targets".into());
    }
    if let Some(toml::Value::Table(pipelines)) = settings.get("pipelines") {
        for (name, p) in pipelines {
            let Some(listen) = p.get("metrics_listen").and_then(toml::Value::as_str) else {
                continue;
            };
            match parse_endpoint(listen).ok().and_then(|e| e.port) {
                Some(port) if targets.contains(&port) => {}
                Some(port) => problems.push(format!(
                    "config/surge.toml's pipelines.{name}.metrics_listen uses port {port}, which config/prometheus/prometheus.yml \
                     does not scrape (targets {targets:?})"
                )),
                None => problems.push(format!("config/surge.toml's pipelines.{name}.metrics_listen `{listen}` has no port")),
            }
        }
    }

    problems
}

fn check_repo_files(compose: &Yaml) -> Vec<String> {
    check_compose(
        compose,
        &load_settings(),
        &load_topics(),
        &load_prometheus(),
        &repo(),
    )
}

fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "docker-compose.yml is inconsistent with the project's config:\n  - {}",
        problems.join("\n  - ")
    );
}

fn set(compose: &mut Yaml, path: &[&str], value: Yaml) {
    let mut v = compose;
    for k in path {
        v = v
            .get_mut(*k)
            .unwrap_or_else(|| panic!("no `{k}` in docker-compose.yml along {path:?}"));
    }
    *v = value;
}

fn assert_reported(problems: &[String], needles: &[&str]) {
    assert!(
        problems
            .iter()
            .any(|p| needles.iter().all(|n| p.contains(n))),
        "expected a problem mentioning {needles:?}, got: {problems:#?}"
    );
}

// -------------------------------------------------------------------- tests --

#[test]
fn compose_matches_config() {
    assert_no_problems(&check_repo_files(&load_compose()));
}

#[test]
fn grafana_dashboard_is_valid_json_on_surge_metrics() {
    let text = read("config/grafana/dashboards/surge-overview.json");
    let dash: serde_json::Value =
        serde_json::from_str(&text).expect("surge-overview.json is not valid JSON");
    let exprs: Vec<&str> = dash["panels"]
        .as_array()
        .expect("dashboard has no panels array")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for metric in [
        "surge_pipeline_records_in_total",
        "surge_pipeline_transactions_committed_total",
        "surge_pipeline_transactions_aborted_total",
        "surge_pipeline_consumer_lag_records",
        "surge_pipeline_dlq_records_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no dashboard panel queries {metric}; queries: {exprs:#?}"
        );
    }
}

#[test]
fn wrong_kafka_port_is_reported() {
    let mut compose = load_compose();
    set(
        &mut compose,
        &["services", "kafka", "ports"],
        Yaml::Sequence(vec!["127.0.0.1:19092:9092".into()]),
    );
    let problems = check_repo_files(&compose);
    assert_reported(
        &problems,
        &["port mismatch", "kafka.bootstrap_servers", "9092", "19092"],
    );
}

#[test]
fn wrong_ports_of_other_services_are_reported() {
    for (svc, what, wrong) in [
        ("registry", "registry.url", "127.0.0.1:18081:8080"),
        ("postgres", "postgres.url", "127.0.0.1:15432:5432"),
        ("redis", "redis.url", "127.0.0.1:16379:6379"),
    ] {
        let mut compose = load_compose();
        set(
            &mut compose,
            &["services", svc, "ports"],
            Yaml::Sequence(vec![wrong.into()]),
        );
        assert_reported(&check_repo_files(&compose), &["port mismatch", what, svc]);
    }
    // Published on every interface instead of loopback.
    let mut compose = load_compose();
    set(
        &mut compose,
        &["services", "redis", "ports"],
        Yaml::Sequence(vec!["6379:6379".into()]),
    );
    assert_reported(&check_repo_files(&compose), &["redis", "every interface"]);
}

#[test]
fn broken_kafka_settings_are_reported() {
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "KAFKA_PROCESS_ROLES",
            "broker",
            &["KRaft", "KAFKA_PROCESS_ROLES"],
        ),
        (
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "3",
            &["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "`3`"],
        ),
        (
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
            "2",
            &["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "`2`"],
        ),
        (
            "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
            "true",
            &["KAFKA_AUTO_CREATE_TOPICS_ENABLE", "topics.toml"],
        ),
        (
            "KAFKA_ADVERTISED_LISTENERS",
            "PLAINTEXT://kafka:9092,INTERNAL://kafka:29092",
            &["advertises kafka:9092"],
        ),
    ];
    for (key, value, needles) in cases {
        let mut compose = load_compose();
        set(
            &mut compose,
            &["services", "kafka", "environment", key],
            value.into(),
        );
        assert_reported(&check_repo_files(&compose), needles);
    }
    let mut compose = load_compose();
    let env = compose["services"]["kafka"]["environment"]
        .as_mapping_mut()
        .expect("kafka environment is a mapping");
    env.insert("KAFKA_ZOOKEEPER_CONNECT".into(), "zookeeper:2181".into());
    assert_reported(
        &check_repo_files(&compose),
        &["KAFKA_ZOOKEEPER_CONNECT", "no ZooKeeper"],
    );
}

#[test]
fn broken_postgres_and_registry_settings_are_reported() {
    let mut compose = load_compose();
    set(
        &mut compose,
        &["services", "postgres", "environment", "POSTGRES_PASSWORD"],
        "secret".into(),
    );
    assert_reported(
        &check_repo_files(&compose),
        &["postgres password mismatch", "secret"],
    );

    let mut compose = load_compose();
    set(
        &mut compose,
        &["services", "postgres", "environment", "POSTGRES_DB"],
        "shop".into(),
    );
    assert_reported(
        &check_repo_files(&compose),
        &["postgres database mismatch", "shop"],
    );

    let mut compose = load_compose();
    set(
        &mut compose,
        &[
            "services",
            "registry",
            "environment",
            "APICURIO_STORAGE_KIND",
        ],
        "mem".into(),
    );
    assert_reported(
        &check_repo_files(&compose),
        &["APICURIO_STORAGE_KIND", "mem"],
    );

    let mut compose = load_compose();
    set(
        &mut compose,
        &[
            "services",
            "registry",
            "environment",
            "APICURIO_KAFKASQL_BOOTSTRAP_SERVERS",
        ],
        "localhost:9092".into(),
    );
    assert_reported(
        &check_repo_files(&compose),
        &["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS", "localhost:9092"],
    );
}

#[test]
fn missing_mounted_file_is_reported() {
    let mut compose = load_compose();
    set(
        &mut compose,
        &["services", "prometheus", "volumes"],
        Yaml::Sequence(vec![
            "./config/prometheus/nope.yml:/etc/prometheus/prometheus.yml:ro".into(),
        ]),
    );
    assert_reported(
        &check_repo_files(&compose),
        &[
            "prometheus",
            "./config/prometheus/nope.yml",
            "does not exist",
        ],
    );
}

#[test]
fn endpoint_parsing() {
    let pg = parse_endpoint("postgres://surge:pw@127.0.0.1:5432/surge").unwrap();
    assert_eq!(
        (
            pg.user.as_deref(),
            pg.password.as_deref(),
            pg.host.as_str(),
            pg.port,
            pg.path.as_str()
        ),
        (Some("surge"), Some("pw"), "127.0.0.1", Some(5432), "/surge")
    );
    let reg = parse_endpoint("http://127.0.0.1:8081/apis/ccompat/v7").unwrap();
    assert_eq!((reg.host.as_str(), reg.port), ("127.0.0.1", Some(8081)));
    let b = parse_endpoint("127.0.0.1:9092").unwrap();
    assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", Some(9092)));
    assert!(parse_endpoint("redis://127.0.0.1:notaport").is_err());
}
