//! Crash test: 100,000 requests over several coupons with limited stock; the
//! pipeline (the real binary) is SIGKILLed at random moments, at least 10
//! times, and restarted. A read_committed consumer must then see exactly one
//! decision per request id, no oversell, no leaked stock, at most one ISSUED
//! per (coupon, user), and the ISSUED set equal to the first distinct users
//! in the log order of coupon-issue.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::coupon::{check_invariants, flash_sale, signal, Fixture};
use rand::Rng;

const REQUESTS: usize = 100_000;
const KILLS: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let fx = Fixture::new("coupon-crash").await;
    // 8 coupons × 1,500 stock, 4,000 users: most coupons sell out, some users repeat.
    let commands = flash_sale(8, 1_500, 4_000, REQUESTS, 42);
    let distinct: usize = commands
        .iter()
        .map(|c| c.request_id.as_str())
        .collect::<HashSet<_>>()
        .len();

    let started = Instant::now();
    // Requests keep arriving while the pipeline dies and restarts.
    let producer = {
        let fx_commands = commands.clone();
        let prefix = fx.prefix.clone();
        tokio::spawn(async move {
            let fx = Fixture::reuse(&prefix).await;
            for chunk in fx_commands.chunks(10_000) {
                fx.produce(chunk).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    let mut kills = 0;
    let mut rng = rand::rng();
    while kills < KILLS {
        let mut child = fx.spawn_pipeline("0", &[]);
        let alive = Duration::from_millis(rng.random_range(800..4_000));
        tokio::time::sleep(alive).await;
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "pipeline exited on its own with {status}; see {}",
                fx.logs.display()
            );
        }
        signal(&child, "KILL");
        child.wait().unwrap();
        kills += 1;
        eprintln!("kill {kills}: SIGKILL after {alive:?}");
    }
    producer.await.unwrap();

    let mut child = fx.spawn_pipeline("0", &[]);
    let log = fx.issue_log(commands.len()).await;
    assert_eq!(
        log.len(),
        commands.len(),
        "every request reached coupon-issue"
    );
    let decisions = fx.decisions(distinct, Duration::from_secs(600)).await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    eprintln!(
        "{} decisions for {distinct} distinct requests after {kills} kills in {:?}",
        decisions.len(),
        started.elapsed()
    );

    let violations = check_invariants(&log, &decisions);
    assert!(
        violations.is_empty(),
        "after {kills} SIGKILLs: {violations:#?}"
    );
}
