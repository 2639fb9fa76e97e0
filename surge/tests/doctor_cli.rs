//! `surge doctor` against the whole stack: every dependency answers and a
//! transactional Avro round trip works.

mod common;

use common::{stdout, surge, unique};

#[test]
fn doctor_passes_on_the_stack() {
    let topic = unique("doctor");
    let out = surge(&["doctor", "--topic", &topic], &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for check in ["kafka", "registry", "transactions", "postgres", "redis"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "{check} ok: {text}"
        );
    }
}

#[test]
fn doctor_fails_when_a_dependency_is_missing() {
    // Nothing listens on port 1: the Redis check must fail and the exit code say so.
    let out = surge(
        &["doctor", "--topic", &unique("doctor")],
        &[("SURGE_REDIS__URL", "redis://127.0.0.1:1")],
    );
    assert!(!out.status.success());
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("redis")),
        "{}",
        stdout(&out)
    );
}
