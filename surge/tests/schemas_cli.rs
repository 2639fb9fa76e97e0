//! `surge schemas register | check` against the real registry. Each test
//! uses its own subject prefix (SURGE_TOPICS__NAME_PREFIX), so subjects are
//! fresh and tests never see each other's versions.

mod common;

use std::path::Path;

use common::{stdout, surge, unique};

/// A copy of schemas/ where `coupon-result.avsc` gets one more field.
fn schemas_with_extra_result_field(dir: &Path, field: serde_json::Value) {
    let src = common::repo_root().join("schemas");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "avsc") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let file = dir.join("coupon-result.avsc");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    schema["fields"].as_array_mut().unwrap().push(field);
    std::fs::write(&file, serde_json::to_string_pretty(&schema).unwrap()).unwrap();
}

#[test]
fn register_sets_backward_and_check_accepts_compatible_and_names_breaking_fields() {
    let prefix = format!("{}-", unique("schemas"));
    let env = [("SURGE_TOPICS__NAME_PREFIX", prefix.as_str())];

    let out = surge(&["schemas", "register"], &env);
    assert!(out.status.success());
    for topic in [
        "coupon-issue",
        "coupon-result",
        "order-create",
        "order-cancel",
        "payment-request",
        "order-status",
        "inventory-commands",
        "inventory-result",
        "order-replies",
    ] {
        let line = format!("{prefix}{topic}-value");
        assert!(stdout(&out).contains(&line), "{line} registered");
    }
    assert_eq!(stdout(&out).matches("compatibility BACKWARD").count(), 9);

    // Registering again changes nothing (same ids).
    let again = surge(&["schemas", "register"], &env);
    assert!(again.status.success());
    assert_eq!(stdout(&again), stdout(&out));

    // Unchanged schemas are compatible.
    let out = surge(&["schemas", "check"], &env);
    assert!(out.status.success());
    assert_eq!(stdout(&out).matches("compatible with version 1").count(), 9);

    // A new optional field with a default is a compatible change.
    let ok_dir = tempfile::tempdir().unwrap();
    schemas_with_extra_result_field(
        ok_dir.path(),
        serde_json::json!({"name": "channel", "type": ["null", "string"], "default": null, "doc": "Where the request came from."}),
    );
    let out = surge(
        &["schemas", "check", "--dir", ok_dir.path().to_str().unwrap()],
        &env,
    );
    assert!(
        out.status.success(),
        "adding a field with a default is BACKWARD compatible"
    );

    // A new required field is not: check fails and names the field.
    let bad_dir = tempfile::tempdir().unwrap();
    schemas_with_extra_result_field(
        bad_dir.path(),
        serde_json::json!({"name": "channel", "type": "string", "doc": "Where the request came from."}),
    );
    let out = surge(
        &[
            "schemas",
            "check",
            "--dir",
            bad_dir.path().to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{prefix}coupon-result-value")) && text.contains("INCOMPATIBLE"),
        "{text}"
    );
    assert!(
        text.contains("field `CouponDecision.channel`: added without a default"),
        "{text}"
    );
    assert_eq!(
        text.matches("INCOMPATIBLE").count(),
        1,
        "only coupon-result changed: {text}"
    );

    // And the registry refuses to register it.
    let out = surge(
        &[
            "schemas",
            "register",
            "--dir",
            bad_dir.path().to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("REJECTED") && stdout(&out).contains("CouponDecision.channel"),
        "{}",
        stdout(&out)
    );
}
