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
        ],
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("bootstrap_servers = \"b1:9092,b2:9092\""),
        "{text}"
    );
    assert!(
        !text.contains("hunter2") && text.contains("<redacted>"),
        "{text}"
    );
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let out = surge(&["--config", "/nonexistent/surge.toml", "config"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("/nonexistent/surge.toml"));
}
