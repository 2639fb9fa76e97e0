//! Ownership changes on the real stack.
//!
//! Zombie: an instance paused (SIGSTOP) in the middle of a transaction, whose
//! work moves on to another instance, must not commit anything once it
//! wakes: it is fenced and exits non-zero (3), and the decisions stay exactly
//! once. Covered for both ways work moves: a replacement with the same
//! identity (transactional.id epoch bump), and another member taking its
//! partitions after its session expired (group generation fencing, KIP-447).
//!
//! Rebalance: two instances share the group; one stops and another starts
//! mid-stream; the invariants hold.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::coupon::{check_invariants, flash_sale, signal, Fixture, Instance};
use surge_schemas::coupon::CouponCommand;

/// Short sessions so that work moves within seconds of a member going silent.
const FAST_GROUP: [(&str, &str); 1] = [("SURGE_KAFKA__LIBRDKAFKA__SESSION.TIMEOUT.MS", "6000")];

fn wait_exit(child: &mut Instance, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Produces `commands` in chunks, a little at a time, from a task.
fn trickle(
    prefix: String,
    commands: Vec<CouponCommand>,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let fx = Fixture::reuse(&prefix).await;
        for c in commands.chunks(chunk) {
            fx.produce(c).await;
            tokio::time::sleep(pause).await;
        }
    })
}

async fn zombie_is_fenced(replacement_instance: &str, what: &str) {
    let fx = Fixture::with_env(what, &FAST_GROUP).await;
    let commands = flash_sale(4, 400, 1_200, 30_000, 5);
    let distinct = commands
        .iter()
        .map(|c| c.request_id.as_str())
        .collect::<HashSet<_>>()
        .len();
    let producer = trickle(
        fx.prefix.clone(),
        commands.clone(),
        1_000,
        Duration::from_millis(200),
    );

    // A keeps its transactions open for seconds, so the pause lands inside one.
    let slow = [
        ("SURGE_PIPELINES__COUPON__COMMIT_INTERVAL", "3s"),
        ("SURGE_PIPELINES__COUPON__MAX_BATCH_RECORDS", "1000000"),
    ];
    let mut zombie = fx.spawn_pipeline("0", &slow);
    tokio::time::sleep(Duration::from_secs(6)).await;
    signal(&zombie, "STOP");
    let mut successor = fx.spawn_pipeline(replacement_instance, &[]);
    // Long enough for the successor to own all partitions (session timeout 6 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    signal(&zombie, "CONT");
    let code = wait_exit(&mut zombie, Duration::from_secs(60));

    producer.await.unwrap();
    let log = fx.issue_log(commands.len()).await;
    let decisions = fx.decisions(distinct, Duration::from_secs(300)).await;
    signal(&successor, "TERM");
    assert_eq!(
        wait_exit(&mut successor, Duration::from_secs(60)),
        Some(0),
        "the successor shuts down cleanly"
    );

    let zombie_log = std::fs::read_to_string(fx.logs.join("pipeline-0.log")).unwrap();
    assert_eq!(
        code,
        Some(3),
        "the woken zombie must exit 3 (fenced); its log:\n{}",
        &zombie_log[zombie_log.len().saturating_sub(3000)..]
    );
    assert!(
        zombie_log.contains("fenced"),
        "the zombie says it was fenced"
    );
    let violations = check_invariants(&log, &decisions);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_replaced_by_the_same_identity_is_fenced() {
    zombie_is_fenced("0", "zombie-same-id").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_whose_partitions_moved_to_another_member_is_fenced() {
    zombie_is_fenced("1", "zombie-other-id").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_instance_stops_and_another_starts_mid_stream() {
    let fx = Fixture::with_env("rebalance", &FAST_GROUP).await;
    let commands = flash_sale(6, 500, 2_000, 40_000, 9);
    let distinct = commands
        .iter()
        .map(|c| c.request_id.as_str())
        .collect::<HashSet<_>>()
        .len();
    let producer = trickle(
        fx.prefix.clone(),
        commands.clone(),
        2_000,
        Duration::from_millis(300),
    );

    let mut a = fx.spawn_pipeline("a", &[]);
    let mut b = fx.spawn_pipeline("b", &[]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(&a, "TERM");
    assert_eq!(
        wait_exit(&mut a, Duration::from_secs(60)),
        Some(0),
        "a stops cleanly mid-stream"
    );
    let mut c = fx.spawn_pipeline("c", &[]);

    producer.await.unwrap();
    let log = fx.issue_log(commands.len()).await;
    let decisions = fx.decisions(distinct, Duration::from_secs(300)).await;
    for child in [&mut b, &mut c] {
        signal(child, "TERM");
        assert_eq!(wait_exit(child, Duration::from_secs(60)), Some(0));
    }
    // a's partitions moved on: beyond b's first assignment, b or c was assigned more.
    let assignments: usize = ["pipeline-b.log", "pipeline-c.log"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(fx.logs.join(f))
                .unwrap_or_default()
                .matches("partitions assigned")
                .count()
        })
        .sum();
    assert!(
        assignments >= 2,
        "a's partitions were reassigned after it stopped ({assignments} assignments in b and c)"
    );
    let violations = check_invariants(&log, &decisions);
    assert!(violations.is_empty(), "{violations:#?}");
}
