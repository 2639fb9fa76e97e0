//! surge through the stack's SASL_SSL listener only (SCRAM-SHA-512 over
//! TLS, with the CA `scripts/stack up` made): `surge topics apply`, the
//! coupon pipeline, the PostgreSQL sink and the gateway each get nothing
//! but the settings of <stack dir>/sasl_ssl.env (bootstrap 127.0.0.1:9094,
//! security_protocol sasl_ssl, the user, its password, the CA file). A
//! coupon created and requests sent through the gateway are decided by the
//! pipeline, written by the sink and read back through the gateway from
//! PostgreSQL: if any of them failed to connect, nothing would be decided.
//! A wrong password stops each process at once with exit 78, naming SASL;
//! so does a CA that did not sign the broker's certificate (naming the
//! failed TLS handshake in librdkafka's words) and a missing CA file
//! (naming the file).

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::coupon::{Fixture, Instance};
use common::gateway::spawn_gateway;
use common::repo_root;
use serde_json::json;

/// The SASL_SSL settings `scripts/stack up` wrote; a missing file fails the
/// test (never a silent skip).
fn sasl_ssl_env() -> Vec<(String, String)> {
    let dir = std::env::var_os("SURGE_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".stack"));
    let file = dir.join("sasl_ssl.env");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the stack's SASL_SSL listener settings are missing; run scripts/stack up",
            file.display()
        )
    });
    let env: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{} has no {key}; run scripts/stack up", file.display()))
    };
    assert_eq!(get("SURGE_KAFKA__SECURITY_PROTOCOL"), "sasl_ssl");
    assert_eq!(get("SURGE_KAFKA__SASL_MECHANISM"), "SCRAM-SHA-512");
    assert!(!get("SURGE_KAFKA__SASL_USERNAME").is_empty());
    assert!(!get("SURGE_KAFKA__SASL_PASSWORD").is_empty());
    let ca = get("SURGE_KAFKA__SSL_CA_LOCATION");
    assert!(
        std::path::Path::new(ca).is_file(),
        "the CA file {ca} is missing; run scripts/stack up"
    );
    // The SASL_SSL listener, never the PLAINTEXT one the rest of the suite uses.
    let plaintext = common::settings().kafka.bootstrap_servers;
    let servers = get("SURGE_KAFKA__BOOTSTRAP_SERVERS");
    assert!(
        servers
            .split(',')
            .all(|s| !plaintext.split(',').any(|p| p == s)),
        "{servers} overlaps the PLAINTEXT listener {plaintext}"
    );
    env
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Waits for `process` to stop by itself before `deadline`; its exit status
/// and log (`<fx.logs>/<name>.log`).
fn exits_by_itself(
    fx: &Fixture,
    name: &str,
    process: &mut Instance,
    deadline: Instant,
    why: &str,
) -> (ExitStatus, String) {
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still runs 30 s after starting with {why}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(fx.logs.join(format!("{name}.log"))).unwrap();
    (status, log)
}

/// A CA file that did not sign the stack's broker certificate: the system
/// bundle (which cannot hold the CA `scripts/stack` made), or else a
/// throwaway CA made with openssl in `dir`.
fn a_foreign_ca(stack_ca: &Path, dir: &Path) -> PathBuf {
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let ours = std::fs::read_to_string(stack_ca).unwrap();
    if let Ok(bundle) = std::fs::read_to_string(system) {
        if bundle.contains("BEGIN CERTIFICATE") && !bundle.contains(ours.trim()) {
            return system.to_path_buf();
        }
    }
    let (key, ca) = (dir.join("other-ca.key"), dir.join("other-ca.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "1"])
        .args(["-newkey", "rsa:2048"])
        .args(["-subj", "/CN=not the surge stack CA"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("openssl (scripts/stack installs it) to make a throwaway CA");
    assert!(
        made.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    ca
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_pipeline_sink_and_gateway_work_through_sasl_ssl_alone() {
    let owned = sasl_ssl_env();
    let env = refs(&owned);
    // topics apply, then every process, under the SASL_SSL settings only.
    let fx = Fixture::through("sasl-ssl", &env).await;
    let _pipeline = fx.spawn_pipeline("0", &[]);
    let _pg = fx.spawn_sink("postgres", &[]);
    // No Redis sink: the gateway's reads fall through to PostgreSQL, so an
    // answer proves the PostgreSQL sink consumed coupon-result.
    let gw = spawn_gateway(&fx, &[]).await;

    let coupon = format!("{}tls", fx.prefix);
    gw.create_coupon(&coupon, 3).await;
    let mut ids = Vec::new();
    for u in 0..5 {
        let (status, body) = gw
            .post(
                &format!("/coupons/{coupon}/issue"),
                &[],
                json!({ "userId": format!("user-{u}") }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["requestId"].as_str().unwrap().to_string());
    }
    let mut issued = 0;
    for id in &ids {
        let d = gw.decision(id, Duration::from_secs(90)).await;
        assert_eq!(d["couponId"], coupon.as_str(), "{d}");
        assert_eq!(d["source"], "postgres", "{d}");
        match d["outcome"].as_str() {
            Some("ISSUED") => issued += 1,
            Some("SOLD_OUT") => {}
            other => panic!("{id}: unexpected outcome {other:?}: {d}"),
        }
    }
    assert_eq!(issued, 3, "the stock, and no more");
    let (status, c) = gw.get(&format!("/coupons/{coupon}")).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        (
            c["stock"].as_i64(),
            c["issued"].as_i64(),
            c["remaining"].as_i64()
        ),
        (Some(3), Some(3), Some(0)),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_stops_each_process_naming_sasl() {
    let owned = sasl_ssl_env();
    let env = refs(&owned);
    let wrong = ("SURGE_KAFKA__SASL_PASSWORD", "not-the-password");
    // Later settings win: the wrong password replaces the file's.
    let out = common::surge(&["topics", "apply"], &[env.as_slice(), &[wrong]].concat());
    assert_eq!(
        out.status.code(),
        Some(78),
        "topics apply with a wrong password"
    );
    let said = common::stderr(&out);
    assert!(
        said.contains("SASL authentication error") && said.contains("SCRAM-SHA-512"),
        "{said}"
    );

    // The long-running processes: each must stop by itself, soon.
    let fx = Fixture::through("sasl-ssl-bad", &env).await;
    let mut processes = vec![
        ("pipeline-0", fx.spawn_pipeline("0", &[wrong])),
        ("sink-postgres", fx.spawn_sink("postgres", &[wrong])),
        (
            "gateway",
            fx.spawn("gateway", &["gateway", "--listen", "127.0.0.1:0"], &[wrong]),
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, process) in &mut processes {
        let (status, log) = exits_by_itself(&fx, name, process, deadline, "a wrong password");
        assert_eq!(status.code(), Some(78), "{name}: {log}");
        assert!(
            log.contains("SASL authentication error")
                && log.contains("SCRAM-SHA-512")
                && log.contains("refused the client"),
            "{name} did not name the refused SASL login: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_ca_or_a_missing_ca_file_stops_each_process_naming_tls() {
    let owned = sasl_ssl_env();
    let env = refs(&owned);
    let stack_ca = env
        .iter()
        .find(|(k, _)| *k == "SURGE_KAFKA__SSL_CA_LOCATION")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let foreign = a_foreign_ca(&stack_ca, tmp.path());
    let missing = tmp.path().join("no-such-ca.pem");
    let (foreign, missing) = (foreign.to_str().unwrap(), missing.to_str().unwrap());

    // Topics (through SASL_SSL, the right CA) for the processes to start on.
    let fx = Fixture::through("sasl-ssl-ca", &env).await;
    let commands: [(&str, &[&str]); 2] = [
        ("topics-apply", &["topics", "apply"]),
        ("gateway", &["gateway", "--listen", "127.0.0.1:0"]),
    ];
    // Later settings win: the CA below replaces the file's.
    for (ca, why) in [(foreign, "a foreign CA"), (missing, "a missing CA file")] {
        let mut processes: Vec<(String, Instance)> = commands
            .iter()
            .map(|(name, args)| {
                let name = format!("{name}-{}", why.replace(' ', "-"));
                let process = fx.spawn(&name, args, &[("SURGE_KAFKA__SSL_CA_LOCATION", ca)]);
                (name, process)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        for (name, process) in &mut processes {
            let (status, log) = exits_by_itself(&fx, name, process, deadline, why);
            assert_eq!(status.code(), Some(78), "{name}: {log}");
            if ca == foreign {
                // librdkafka's words for the handshake the broker's certificate failed.
                assert!(
                    log.contains("SSL handshake failed")
                        && log.contains("certificate verify failed")
                        && log.contains("refused the client"),
                    "{name} did not name the failed TLS handshake: {log}"
                );
            } else {
                // librdkafka's property, and the file named.
                assert!(
                    log.contains("ssl.ca.location failed")
                        && log.contains("kafka.ssl_ca_location")
                        && log.contains(&format!("{missing}, which cannot be opened")),
                    "{name} did not name the missing CA file: {log}"
                );
            }
        }
    }
}
