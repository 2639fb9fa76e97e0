//! A bad configuration stops the process at start and says where. No services needed.

mod common;

use common::{stderr, stdout, surge};

#[test]
fn unknown_key_in_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("surge.toml");
    std::fs::write(
        &file,
        "[kafka]\nclient_id = \"x\"\n\n[registry]\nurll = \"http://x\"\n",
    )
    .unwrap();
    let out = surge(&["--config", file.to_str().unwrap(), "config"], &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains("line 5") && err.contains("unknown key `urll`") && err.contains("url"),
        "{err}"
    );
}

#[test]
fn bad_env_value_names_the_variable() {
    let out = surge(
        &["config"],
        &[("SURGE_KAFKA__SECURITY_PROTOCOL", "carrier-pigeon")],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("SURGE_KAFKA__SECURITY_PROTOCOL"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn env_overrides_file_and_secrets_are_redacted() {
    let out = surge(
        &["config"],
        &[
            ("SURGE_KAFKA__BOOTSTRAP_SERVERS", "b1:9092,b2:9092"),
            ("SURGE_KAFKA__SASL_PASSWORD", "hunter2"),
            ("SURGE_GATEWAY__ADMIN_TOKEN", "gw-token-77"),
            ("SURGE_PG_SIM__ADMIN_TOKEN", "sim-token-78"),
            (
                "SURGE_POSTGRES__URL",
                "postgres://surge:pg-pass-79@db:5432/surge",
            ),
            ("SURGE_REDIS__URL", "redis://:redis-pass-80@cache:6379"),
        ],
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("bootstrap_servers = \"b1:9092,b2:9092\""),
        "{text}"
    );
    for secret in [
        "hunter2",
        "gw-token-77",
        "sim-token-78",
        "pg-pass-79",
        "redis-pass-80",
    ] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
    assert!(
        text.contains("postgres://surge:<redacted>@db:5432/surge")
            && text.contains("redis://:<redacted>@cache:6379"),
        "{text}"
    );
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let out = surge(&["--config", "/nonexistent/surge.toml", "config"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("/nonexistent/surge.toml"));
}

#[test]
fn an_unknown_section_from_the_environment_names_the_variable() {
    let out = surge(&["config"], &[("SURGE_BOGUS__X", "1")]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains("environment variable SURGE_BOGUS__X") && !err.contains("surge.toml"),
        "{err}"
    );
}

#[test]
fn values_out_of_range_stop_the_process_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("surge.toml");
    std::fs::write(&file, "[pipelines.coupon]\ninject_abort_ratio = 7.5\n").unwrap();
    let out = surge(&["--config", file.to_str().unwrap(), "config"], &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains("line 2") && err.contains("pipelines.coupon.inject_abort_ratio"),
        "{err}"
    );
    for (var, value) in [
        ("SURGE_GATEWAY__MAX_CONNECTIONS", "0"),
        ("SURGE_GATEWAY__HEADER_READ_TIMEOUT", "0s"),
        ("SURGE_REGISTRY__URL", "notaurl"),
        ("SURGE_REGISTRY__COMPATIBILITY", "SIDEWAYS"),
        ("SURGE_TOPICS__NAME_PREFIX", "a/b"),
        ("SURGE_LOG__LEVEL", "info,,,=x["),
    ] {
        let out = surge(&["config"], &[(var, value)]);
        assert_eq!(out.status.code(), Some(78), "{var}={value}");
        assert!(stderr(&out).contains(var), "{var}: {}", stderr(&out));
    }
}

#[test]
fn a_loadgen_ratio_above_1_is_a_usage_error() {
    let out = surge(&["loadgen", "--duplicate-ratio", "2"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--duplicate-ratio") && err.contains("between 0 and 1"),
        "{err}"
    );
}
