//! `surge chaos` as users run it, scaled for CI: a spread sale of 40,000
//! requests while two coupon pipelines (a third of their batches aborted on
//! purpose) and both sinks are killed 8 times, and the broker is SIGKILLed
//! and restarted once. The command must end with verify passing on the
//! topics and both stores, and its report must show the chaos it claims.
//! (The 1,000,000-request, 30-kill, 3-broker-restart run is in the README.)

mod common;

use common::coupon::Fixture;
use common::{stdout, surge};

#[tokio::test(flavor = "multi_thread")]
async fn a_sale_survives_kills_aborts_and_a_broker_restart() {
    let fx = Fixture::new("chaos").await;
    let logs = fx.logs.join("chaos");
    let out = surge(
        &[
            "chaos",
            "--scenario",
            "spread",
            "--coupons",
            "4",
            "--stock",
            "1500",
            "--users",
            "5000",
            "--requests",
            "40000",
            "--rate",
            "2500",
            "--kills",
            "8",
            "--broker-restarts",
            "1",
            "--wait",
            "300",
            "--logs",
            logs.to_str().unwrap(),
        ],
        &[
            ("SURGE_TOPICS__NAME_PREFIX", fx.prefix.as_str()),
            ("SURGE_REDIS__KEYSPACE", fx.prefix.trim_end_matches('-')),
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verify: OK"), "{text}");
    assert!(
        text.contains("postgres and redis equal to the topic"),
        "{text}"
    );
    assert!(
        text.contains("ISSUED          6000"),
        "4 coupons × 1,500 all issued: {text}"
    );
    assert!(text.contains("broker restarts     1"), "{text}");
    let kills: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("  kills               "))
        .map(|l| {
            l.split(", ")
                .filter_map(|p| p.split(' ').next()?.parse::<usize>().ok())
                .sum()
        })
        .expect("kills line");
    assert_eq!(kills, 8, "{text}");
    let aborted: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("  transactions        "))
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .expect("transactions line");
    assert!(aborted > 0, "injected aborts happened: {text}");
    assert!(text.contains("chaos: PASSED"), "{text}");
}
