//! State restore at scale: one coupon (one partition) with a million units,
//! a million distinct users each issued one. The pipeline is then restarted
//! and must rebuild that state from the changelog before deciding anything:
//! afterwards a holder asking again is DUPLICATE, a retried request id gets
//! no second decision, and a newcomer finds the coupon SOLD_OUT.
//!
//! Prints the restore time and state size (figures, not assertions).

mod common;

use std::time::{Duration, Instant};

use common::coupon::{create, issue, signal, Fixture};
use surge_schemas::coupon::Outcome;

const USERS: usize = 1_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn restart_after_a_million_issued_restores_state_before_deciding() {
    let fx = Fixture::new("coupon-restore").await;
    let mut commands = Vec::with_capacity(USERS + 1);
    commands.push(create("mega", USERS as i64));
    commands.extend((0..USERS).map(|i| issue(&format!("r{i}"), "mega", &format!("user-{i}"))));
    let started = Instant::now();
    fx.produce(&commands).await;
    eprintln!(
        "produced {} requests in {:?}",
        commands.len(),
        started.elapsed()
    );
    drop(commands);

    let started = Instant::now();
    let mut first = fx.spawn_pipeline(
        "0",
        &[("SURGE_PIPELINES__COUPON__MAX_BATCH_RECORDS", "20000")],
    );
    let decided = fx.decisions(USERS + 1, Duration::from_secs(1_200)).await;
    signal(&first, "TERM");
    assert!(first.wait().unwrap().success());
    let issued = decided
        .iter()
        .filter(|d| d.outcome == Outcome::Issued)
        .count();
    assert_eq!(issued, USERS, "a million units, a million distinct users");
    eprintln!(
        "decided {} requests in {:?}",
        decided.len(),
        started.elapsed()
    );
    drop(decided);

    // After the restart: a holder again, a retried request id, a newcomer.
    fx.produce(&[
        issue("again-0", "mega", "user-0"),
        issue("r17", "mega", "user-17"),
        issue("late-1", "mega", "newcomer"),
    ])
    .await;
    let mut second = fx.spawn_pipeline("0", &[]);
    let decisions = fx.decisions(USERS + 1 + 2, Duration::from_secs(600)).await;
    signal(&second, "TERM");
    assert!(second.wait().unwrap().success());
    let outcome = |request: &str| {
        decisions
            .iter()
            .filter(|d| d.request_id == request)
            .map(|d| d.outcome)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        outcome("again-0"),
        vec![Outcome::Duplicate],
        "user-0 already holds the coupon"
    );
    assert_eq!(
        outcome("late-1"),
        vec![Outcome::SoldOut],
        "all million units are gone"
    );
    assert_eq!(
        outcome("r17"),
        vec![Outcome::Issued],
        "r17 was decided once, before the restart, and not again"
    );

    let log = std::fs::read_to_string(fx.logs.join("pipeline-0.log")).unwrap();
    let restore = log
        .lines()
        .filter(|l| l.contains("partitions assigned and restored"))
        .last()
        .unwrap_or_default()
        .to_string();
    let field = |name: &str| {
        restore
            .split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("?")
            .to_string()
    };
    let records: f64 = field("changelog_records").parse().unwrap_or(0.0);
    let bytes: f64 = field("state_bytes").parse().unwrap_or(0.0);
    eprintln!(
        "RESTORE: {} changelog records in {} s; state {:.1} MiB, {:.1} bytes per issued user",
        field("changelog_records"),
        field("restore_seconds"),
        bytes / 1048576.0,
        bytes / USERS as f64
    );
    assert!(
        records >= USERS as f64,
        "the restart replayed the changelog ({records} records)"
    );
}
