//! The coupon pipeline on the real stack, run as the real binary.

mod common;

use std::time::Duration;

use common::coupon::{check_invariants, flash_sale, Fixture};
use surge_schemas::coupon::Outcome;

#[tokio::test(flavor = "multi_thread")]
async fn a_small_sale_is_decided_exactly_once_first_come_first_served() {
    let fx = Fixture::new("coupon-small").await;
    let commands = flash_sale(3, 20, 60, 2_000, 7);
    fx.produce(&commands).await;
    let mut child = fx.spawn_pipeline("0", &[]);
    let log = fx.issue_log(commands.len()).await;
    let distinct = log
        .iter()
        .map(|(_, _, c)| c.request_id.clone())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let decisions = fx.decisions(distinct, Duration::from_secs(120)).await;

    // Operators see the same story on /metrics and /health.
    std::thread::sleep(Duration::from_millis(300));
    let addr = common::metrics_address(&fx.logs.join("pipeline-0.log"));
    let (status, metrics) = common::http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    let value = |series: &str| common::metric(&metrics, series);
    assert_eq!(
        value("surge_pipeline_decisions_total{outcome=\"ISSUED\",pipeline=\"coupon\"}"),
        60.0,
        "{metrics}"
    );
    assert!(value("surge_pipeline_transactions_committed_total{pipeline=\"coupon\"}") >= 1.0);
    assert_eq!(
        value("surge_pipeline_records_in_total{pipeline=\"coupon\"}"),
        commands.len() as f64
    );
    assert!(
        metrics.contains("surge_pipeline_consumer_lag_records"),
        "lag against the LSO is exported"
    );
    let (status, health) = common::http_get(&addr, "/health");
    assert_eq!(status, 200, "{health}");

    common::coupon::signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM ends the pipeline with exit 0, got {status}"
    );

    let violations = check_invariants(&log, &decisions);
    assert!(violations.is_empty(), "{violations:#?}");
    let issued = decisions
        .iter()
        .filter(|d| d.outcome == Outcome::Issued)
        .count();
    assert_eq!(issued, 60, "3 coupons × 20 stock, 60 users asking");
    assert!(decisions.iter().any(|d| d.outcome == Outcome::Duplicate));
    assert!(decisions.iter().any(|d| d.outcome == Outcome::SoldOut));
    assert_eq!(
        decisions.len(),
        distinct,
        "retried request ids got no second decision"
    );
}
